#!/usr/bin/env bash
# The project's two entry points on a fresh machine; each sets up what it needs.
#   ./dev.sh demo   run the monitor on the bundled demo recording (no microphone, no network)
#   ./dev.sh test   lint, type-check and run the whole test suite (as CI does)
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PYTHON=${PYTHON:-python3}

system_packages() {
  # PortAudio for sounddevice (the runtime's only system library); with "test",
  # ffmpeg (the RTP tests' real telephony sender) and Chromium (the web page's
  # browser tests, driven by Playwright) too.
  local missing=()
  # Not grep -q: it would stop reading at the first match, and under pipefail ldconfig's SIGPIPE then
  # reads as "missing" now and then (and as root, apt-get ran again).
  ldconfig -p 2>/dev/null | grep libportaudio.so >/dev/null || missing+=(libportaudio2)
  if [ "${1:-}" = test ]; then
    command -v ffmpeg >/dev/null || missing+=(ffmpeg)
    command -v chromium >/dev/null || missing+=(chromium)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "installing ${missing[*]} (apt-get)" >&2
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "note: ${missing[*]} missing (sudo apt-get install ${missing[*]}): without PortAudio no microphone input, without ffmpeg or chromium their tests are skipped" >&2
    fi
  fi
}

usable_python() {
  # A virtual environment of Python >= 3.11 with a working pip: one cut short (Ctrl-C mid-creation, no
  # ensurepip) or made by an older Python is made again, instead of failing the same way on every run.
  "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11) or sys.prefix == sys.base_prefix)' 2>/dev/null \
    && "$1" -m pip --version >/dev/null 2>&1
}

environment() {
  local extras=$1
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    local found
    found=$("$PYTHON" -V 2>/dev/null) || found="not found"  # a missing interpreter's own complaint once split this line
    echo "dev.sh: needs Python 3.11 or newer; $PYTHON is ${found:-not found} (set PYTHON=/path/to/python3.11)" >&2
    exit 2
  fi
  if [ -e "$VENV" ] && ! usable_python "$VENV/bin/python"; then
    echo "dev.sh: $VENV is unusable (an interrupted set-up or an older Python); making it again" >&2
    rm -rf "$VENV"
  fi
  [ -e "$VENV" ] || "$PYTHON" -m venv "$VENV"  # if cut short, the check above makes it again next time
  local stamp="$VENV/.installed-${extras:-runtime}"
  local want
  want=$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing pinned dependencies into $VENV (extras: ${extras:-none})" >&2
    local target="."
    [ -n "$extras" ] && target=".[$extras]"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c requirements.lock -e "$target"
    echo "$want" > "$stamp"
  fi
}

case "${1:-}" in
  demo)
    shift
    system_packages
    environment ""
    exec "$VENV/bin/ser-stream" demo "$@"
    ;;
  test)
    shift
    system_packages test
    environment "train,dev"
    "$VENV/bin/ruff" check ser_stream training tests benchmarks
    "$VENV/bin/mypy" ser_stream training benchmarks
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  -h|--help|help)
    echo "usage: ./dev.sh demo [monitor options] | test [pytest args]   (PYTHON=python3.11 to choose the interpreter)"
    ;;
  *)
    if [ -z "${1:-}" ]; then echo "dev.sh: usage: ./dev.sh demo [monitor options] | test [pytest args]" >&2
    else echo "dev.sh: unknown command '$1'; usage: ./dev.sh demo [monitor options] | test [pytest args]" >&2; fi
    exit 2
    ;;
esac
