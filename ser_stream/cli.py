"""Command line: argument parsing only; each command builds its pieces from a config."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ser_stream import __version__
from ser_stream.errors import SerStreamError, shown
from ser_stream.model import DEFAULT_MODEL
from ser_stream.rtp import (
    MAX_CALL_IDLE_SECONDS,
    MAX_JITTER_PACKETS,
    RtpConfig,
    SenderNetwork,
    listen_address,
    parse_address,
    sender_versions,
)
from ser_stream.sources import STDIN_SAMPLE_RATE

if TYPE_CHECKING:
    from ser_stream.monitor import MonitorOptions
    from ser_stream.publish import AccessConfig


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum`` (and at most ``maximum``); argparse names the option in its error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{value} must be at most {maximum}")
        return value

    return parse


def score_or_off(text: str) -> float | None:
    """An argparse type: a VAD score (a number; the config checks its range), or ``off``."""
    if text == "off":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor off") from None


def output_file(suffix: str, make_folders: bool = False) -> Callable[[str], Path]:
    """An argparse type: a ``suffix`` file to write, in a folder that exists, found out before any work.

    The suffix matters where a tool writes companions beside the file (a model's
    .json metadata, a benchmark's .json figures): a wrong one would overwrite them.
    With ``make_folders`` (a tool that makes the file's missing folders) only a
    file standing where a folder must be is refused.
    """

    def parse(text: str) -> Path:
        path = Path(text)
        if path.suffix.lower() != suffix or path.is_dir():
            raise argparse.ArgumentTypeError(f"{shown(text)}: not a {suffix} file to write")
        if make_folders:
            nearest = next(folder for folder in path.parents if folder.exists())  # the current folder at the latest
            if not nearest.is_dir():
                raise argparse.ArgumentTypeError(f"{shown(text)}: {shown(nearest)} is a file, not a folder to write it in")
        elif not path.parent.is_dir():
            raise argparse.ArgumentTypeError(f"{shown(text)}: no folder {shown(path.parent)} to write it in")
        else:
            nearest = path.parent
        if (reason := cannot_write_in(nearest)) is not None:
            raise argparse.ArgumentTypeError(f"{shown(text)}: cannot write in {shown(nearest)} ({reason})")
        return path

    return parse


def cannot_write_in(folder: Path) -> str | None:
    """Why no file can be written in an existing ``folder``, or None: a read-only or virtual folder (/proc) once
    failed with a traceback after a tool's work was done. Found by writing a temporary file there."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as error:
        return error.strerror or type(error).__name__


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is the one line that names the option and the reason (``--help`` has the usage)."""

    given: list[str] = []

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:  # type: ignore[override]
        self.given = list(sys.argv[1:] if args is None else args)  # a subcommand's parser gets its own share
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        unknown = self.unknown_options()
        if named := next((a for a in unknown if os.path.lexists(a)), None):
            message = f"{named} is read as an option; for the file of that name write ./{named} or put -- before it"
        elif unknown and message.startswith("the following arguments are required"):
            message = f"{unknown[0]} is not an option here, nor a file"
        self.exit(2, f"{self.prog}: error: {message}\n")

    def unknown_options(self) -> list[str]:
        """Arguments before any ``--`` that start with '-' and are no option here: argparse took ``classify
        -dash.wav`` for an unknown option and said only that FILE was required, the file unnamed."""
        before = self.given[: self.given.index("--")] if "--" in self.given else self.given
        return [a for a in before if a.startswith("-") and a != "-" and a.split("=")[0] not in self._option_string_actions]


def sample_rate(text: str) -> int:
    """An argparse type: a whole number of hertz in the range the feature code reads."""
    from ser_stream.features import MAX_INPUT_RATE, MIN_INPUT_RATE

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of hertz") from None
    if not MIN_INPUT_RATE <= value <= MAX_INPUT_RATE:
        raise argparse.ArgumentTypeError(f"{value} Hz is outside {MIN_INPUT_RATE}–{MAX_INPUT_RATE} Hz")
    return value


def named_file(what: str) -> Callable[[str], Path]:
    """An argparse type: the path of ``what``, not empty or blank. ``Path('')`` is the current folder: ``--record ''``
    and ``--model ''`` were reported as ``.``, and ``--tls-cert "$CERT" --tls-key "$KEY"`` with both unset served
    plain ws:// without a word."""

    def parse(text: str) -> Path:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"{text!r} names no file; give the {what}'s path")
        return Path(text)

    return parse


def sender_network(text: str) -> SenderNetwork:
    """An argparse type for --rtp-allow: a network (``10.0.5.0/24``, ``2001:db8::/32``) or one address."""
    import ipaddress

    if "%" in text:  # accepted by ipaddress, but a sender is matched by its address alone: fe80::1%eth1 matched too
        raise argparse.ArgumentTypeError(f"{text!r}: a scope id (%…) cannot be matched; senders are matched by address alone")
    try:
        network = ipaddress.ip_network(text.strip().removeprefix("[").removesuffix("]"), strict=True)
    except ValueError as error:  # its reason names the fault: "has host bits set", "does not appear to be …"
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    mapped = network.network_address.ipv4_mapped if isinstance(network, ipaddress.IPv6Network) else None
    if mapped is not None and network.prefixlen >= 96:  # senders' mapped addresses are matched as IPv4: so is this
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def positive_number(what: str, unit: str) -> Callable[[str], float]:
    """An argparse type: a finite number above zero, of ``what`` (``seconds``), its value shown with ``unit`` (``s``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {what}") from None
        if not 0.0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{value} {unit} must be above 0")
        return value

    return parse


positive_seconds = positive_number("seconds", "s")


def _classify(args: argparse.Namespace) -> int:
    from ser_stream.classify import classify_file
    from ser_stream.inference import EmotionModel

    if sys.stdout is None:  # started with stdout closed (>&-): print() would drop every result without a word
        raise SerStreamError("writing results to stdout failed (it is closed)")
    model = EmotionModel(args.model, provider=args.provider)
    if model.cuda_not_used is not None and sys.stderr is not None:  # print(file=None) would write it to stdout
        print(f"ser-stream: warning: --provider auto: {model.cuda_not_used}", file=sys.stderr, flush=True)
    failures = 0
    for path in args.files:  # as given (a str): --json's "path" is what the caller passed, to match on
        result = classify_file(path, model)
        failures += result.error is not None
        line = result.to_json() if args.json else result.to_text()
        out = sys.stderr if result.error is not None and not args.json else sys.stdout
        if out is None:  # stderr closed (2>&-): the error line has nowhere to go; the exit status still says it
            continue
        try:
            print(line, file=out, flush=True)
        except BrokenPipeError:
            raise
        except OSError as error:  # a full disk or a closed descriptor: the results are not where they were asked
            raise SerStreamError(f"writing results to {'stderr' if out is sys.stderr else 'stdout'} failed ({error.strerror or error})") from None
    return 1 if failures else 0


DEMO_RECORDING = Path(__file__).resolve().parent / "demo" / "demo.flac"


def _monitor_options(args: argparse.Namespace, sources: list[str]) -> MonitorOptions:
    from ser_stream.monitor import MonitorOptions
    from ser_stream.pipeline import MonitorConfig
    from ser_stream.sources import parse_source
    from ser_stream.utterances import UtteranceConfig

    host, port = listen_address(args.ws, "--ws", default_host="127.0.0.1")
    specs = tuple(parse_source(s) for s in sources)
    kinds = [spec.kind for spec in specs]
    if kinds.count("stdin") > 1:
        raise SerStreamError("--source stdin is given twice: one pipe cannot feed two streams")
    for option, value, kind in (("--rate", args.rate, "stdin"), ("--channels", args.channels, "stdin"), ("--samplerate", args.samplerate, "mic")):
        if value is not None and kind not in kinds:
            raise SerStreamError(f"{option} {value}: only with --source {kind} (other sources carry their own)")
    if args.pace == "fast" and "file" not in kinds:
        raise SerStreamError("--pace fast: only with --source file:PATH (live sources, calls and pipes arrive at their own pace)")
    config = MonitorConfig(
        utterance=UtteranceConfig(min_silence_seconds=args.min_silence, max_utterance_seconds=args.max_utterance, voice_floor=args.voice_floor),
        max_batch=args.max_batch,
        max_streams=args.max_streams,
    )
    file_like = sum(kind != "rtp" for kind in kinds)
    if file_like > args.max_streams:
        raise SerStreamError(f"{file_like} sources but --max-streams {args.max_streams}: raise --max-streams")
    return MonitorOptions(
        access=_access(args), allow_remote=args.allow_remote, record=args.record,
        sources=specs, window_seconds=args.window, hop_seconds=args.hop, model=args.model, provider=args.provider,
        host=host, port=port, dashboard=not args.no_dashboard, pace=args.pace,
        stdin_rate=args.rate or STDIN_SAMPLE_RATE, stdin_channels=args.channels or 1, mic_rate=args.samplerate, config=config,
        print_messages=args.print_utterances, subscriber_queue=args.subscriber_queue,
        await_subscribers=args.await_subscribers, log_status_seconds=args.log_status,
    )


def _access(args: argparse.Namespace) -> AccessConfig:
    import ssl

    from ser_stream.publish import AccessConfig, host_name

    tls = None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SerStreamError("--tls-cert and --tls-key go together")
    if args.tls_cert is not None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as error:
            raise SerStreamError(f"--tls-cert {args.tls_cert} / --tls-key {args.tls_key}: cannot load ({error})") from None
    if args.token is not None and not args.token.strip():  # `--token "$T"` with T unset once turned authentication off
        raise SerStreamError("--token is empty: an empty token would let anyone in; give the token, or leave the option out")
    from_environment = os.environ.get("SER_STREAM_TOKEN")
    if args.token is None and from_environment is not None and not from_environment.strip():  # an unset variable in an EnvironmentFile
        raise SerStreamError("SER_STREAM_TOKEN is set but empty: an empty token would let anyone in; give the token, or unset the variable")
    token = args.token or from_environment or None
    if token is not None and token != token.strip():  # an Authorization header's value is read without them
        named = "--token" if args.token else "SER_STREAM_TOKEN"
        raise SerStreamError(f"{named} has spaces at its start or end, which no Authorization header can carry; remove them")
    for name in args.allow_host:  # a name no Host header can carry would allow nothing, unsaid
        if host_name(name) is None:
            raise SerStreamError(f"--allow-host {name!r}: not a host name or address (NAME, or an address without port)")
    for origin in args.allow_origin:  # a browser sends scheme://host[:port], nothing else; anything else matches no page
        scheme, separator, rest = origin.partition("://")
        if scheme not in ("http", "https") or not separator or host_name(rest) is None or "/" in rest:
            raise SerStreamError(f"--allow-origin {origin!r}: not an origin (http:// or https://, a host, maybe a port, no path)")
    return AccessConfig(
        token=token, allowed_origins=tuple(args.allow_origin), allowed_hosts=tuple(args.allow_host), tls=tls,
        max_ingest_connections=args.max_ingest_connections or AccessConfig.max_ingest_connections,  # None: not given
    )


def _monitor(args: argparse.Namespace) -> int:
    """The monitor. Without a terminal for the dashboard and without --print-utterances it says where its results go
    (`monitor … | cat` once printed nothing but the page's address)."""
    from dataclasses import replace

    from ser_stream.monitor import dashboard_console, monitor, no_dashboard_terminal

    options = _monitor_command_options(args)
    if options.dashboard and not options.print_messages and dashboard_console() is None:
        stored = " and the --record database" if options.record is not None else ""
        where = "no terminal for the dashboard" if (why := no_dashboard_terminal()) == "no terminal" else f"no dashboard ({why})"
        options = replace(options, start_note=f"ser-stream: {where}: utterances go to WebSocket subscribers{stored} only "
                                              "(--print-utterances prints them as JSON lines; --no-dashboard silences this)")
    return monitor(options)


def _monitor_command_options(args: argparse.Namespace) -> MonitorOptions:
    """`monitor`'s options: those it shares with `demo`, and those for calls (rtp:, --ingest), checked against its sources."""
    from dataclasses import replace

    if not args.source and not args.ingest:
        raise SerStreamError("monitor needs at least one --source, or --ingest")
    options = _monitor_options(args, args.source)
    takes_rtp = any(spec.kind == "rtp" for spec in options.sources)
    # None: not given. A typed value is refused without calls even when it is the default (`--jitter-packets 5` with a
    # file: source was taken unsaid while 6 was refused)
    if args.jitter_packets is not None and not takes_rtp:
        raise SerStreamError(f"--jitter-packets {args.jitter_packets}: only with an rtp: source")
    if args.call_idle is not None and not (takes_rtp or args.ingest):
        raise SerStreamError(f"--call-idle {args.call_idle}: only with calls (an rtp: source, or --ingest)")
    defaults = RtpConfig()
    jitter_packets = defaults.jitter_packets if args.jitter_packets is None else args.jitter_packets
    call_idle_seconds = defaults.idle_seconds if args.call_idle is None else args.call_idle
    if call_idle_seconds > MAX_CALL_IDLE_SECONDS:  # 100000 was taken: a call gone silent held its stream for a day
        raise SerStreamError(f"--call-idle {args.call_idle}: at most {MAX_CALL_IDLE_SECONDS:g} s (an RTP sequence gap longer than that reads as a restarted numbering)")
    if args.max_ingest_connections is not None and not args.ingest:
        raise SerStreamError(f"--max-ingest-connections {args.max_ingest_connections}: only with --ingest")
    if args.await_subscribers and (takes_rtp or args.ingest):  # a call cannot wait: its packets were lost in the kernel, uncounted
        raise SerStreamError(f"--await-subscribers {args.await_subscribers}: holds back files and pipes, which can wait; calls (rtp:, --ingest) cannot")
    if args.rtp_allow and not takes_rtp:
        raise SerStreamError(f"--rtp-allow {args.rtp_allow[0]}: only with an rtp: source")
    rtp = RtpConfig(jitter_packets=jitter_packets, idle_seconds=call_idle_seconds, allowed_senders=tuple(args.rtp_allow))
    if rtp.allowed_senders:  # a source that no allowed sender could reach would wait for calls that never come
        for spec in (spec for spec in options.sources if spec.kind == "rtp"):
            versions = sender_versions(parse_address(spec.target)[0])
            if not any(network.version in versions for network in rtp.allowed_senders):
                raise SerStreamError(f"rtp:{spec.target}: hears only IPv{min(versions)} senders, and no --rtp-allow network is IPv{min(versions)}")
    return replace(options, ingest=args.ingest, rtp=rtp)


def _demo(args: argparse.Namespace) -> int:
    """The monitor on the bundled recording. Without a terminal for its dashboard (a CI log) it prints each utterance
    as a JSON line instead: it once ran its 40 seconds and showed nothing at all. With stdout piped (`./dev.sh demo |
    tee demo.log`) the lines go there too, the dashboard on stderr if that is a terminal: demo.log was once empty."""
    from dataclasses import replace

    from ser_stream.monitor import dashboard_console, is_terminal, monitor, no_dashboard_terminal

    options = _monitor_options(args, [f"file:{DEMO_RECORDING}"])
    drawn = options.dashboard and dashboard_console() is not None
    if not options.print_messages and not (drawn and (is_terminal(sys.stdout) or sys.stdout is None)):  # None: `>&-`, nothing asked
        note = None
        if not drawn:
            why = "no terminal" if not options.dashboard else no_dashboard_terminal()
            why = "no terminal, or --no-dashboard" if why == "no terminal" else why
            note = f"ser-stream: no dashboard ({why}): each utterance is printed as a JSON line"
        options = replace(options, print_messages=True, start_note=note)
    return monitor(options)


def _devices(args: argparse.Namespace) -> int:
    from ser_stream.sources import list_devices

    devices = list_devices()
    if not devices:  # exit 1, so a script that looks for a microphone first can tell
        print("ser-stream: error: no audio input devices found; check that a microphone is connected and the sound system sees it", file=sys.stderr)
        return 1
    print("\n".join(devices))
    return 0


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model and --provider, as classify and the monitor take them."""
    parser.add_argument("--model", type=named_file("model"), default=DEFAULT_MODEL, help="ONNX model with its .json metadata beside it (default: the shipped one, %(default)s)")
    parser.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"], help="where the network runs: auto (the GPU if CUDA is usable, else the CPU; the default), cpu, or cuda (refused without a usable GPU)")


def _add_monitor_arguments(parser: argparse.ArgumentParser, pace: str) -> None:
    from ser_stream.pipeline import MonitorConfig
    from ser_stream.utterances import UtteranceConfig

    _add_model_arguments(parser)
    parser.add_argument("--ws", default="127.0.0.1:8765", help="WebSocket HOST:PORT (default %(default)s; port 0 picks a free one)")
    parser.add_argument("--no-dashboard", action="store_true", help="headless: no terminal dashboard")
    parser.add_argument("--print-utterances", action="store_true", help="also print each utterance, error and warning as a JSON line on stdout (tell them by \"type\"; errors and warnings are on stderr too)")
    parser.add_argument("--pace", default=pace, choices=["realtime", "fast"], help="file sources: real time or as fast as possible (default %(default)s)")
    parser.add_argument("--window", type=float, default=None, help="window length, seconds: always the model's (its 270 columns span one window); given, it is checked against the model")
    parser.add_argument("--hop", type=float, default=None, help="hop between windows, seconds (default: the model's)")
    parser.add_argument("--min-silence", type=float, default=UtteranceConfig().min_silence_seconds, help="silence that ends an utterance, seconds (default %(default)s; counted from its last speech within 35 dB of its peak)")
    parser.add_argument("--max-utterance", type=float, default=UtteranceConfig().max_utterance_seconds, help="longest utterance, seconds (default %(default)s): longer speech is published as contiguous utterances this long (speech stopping under 0.25 s past a cut ends the piece before it instead; each stream keeps this much audio and a few seconds more: 32 kB a second, 19 MB at 600)")
    parser.add_argument("--voice-floor", type=score_or_off, default=UtteranceConfig().voice_floor, metavar="SCORE|off",
                        help="frames Silero VAD scores at least this but under its threshold are speech if WebRTC's voice detector hears a voice (it catches shouting Silero misses); off: Silero alone (default %(default)s)")
    parser.add_argument("--max-batch", type=whole_number(1), default=MonitorConfig().max_batch, help="most windows per inference batch (default %(default)s)")
    parser.add_argument("--max-streams", type=whole_number(1), default=MonitorConfig().max_streams, help="streams open at once, default %(default)s (RTP and ingest calls beyond it are refused, counted in status)")
    # literals, not MonitorOptions and AccessConfig: importing the monitor here cost every command ~0.1 s (classify
    # included); test_the_monitor_given_no_options_runs_with_its_config_dataclasses_defaults holds them equal
    parser.add_argument("--subscriber-queue", type=whole_number(1), default=8192, help="messages queued per subscriber before its oldest are dropped (default %(default)s: 40 s at 200 messages a second)")
    parser.add_argument("--await-subscribers", type=whole_number(0), default=0, help="start the sources only once N subscribers are connected")
    parser.add_argument("--log-status", type=positive_seconds, default=0.0, metavar="SECONDS",
                        help="for a service's log: a status line on stderr this often, and a warning naming any loss or refusal counted since the line before (default: none)")
    parser.add_argument("--record", type=named_file("database"), default=None, help="append every utterance to this SQLite database before broadcasting it")
    parser.add_argument("--token", default=None, help="bearer token subscribers and ingest clients must present (or SER_STREAM_TOKEN)")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN", help="browser origin allowed besides the page's own (repeatable)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME", help="host name clients reach the monitor by, besides localhost, the --ws host and --allow-origin's (repeatable)")
    parser.add_argument("--allow-remote", action="store_true", help="allow --ws / rtp: addresses other than loopback")
    parser.add_argument("--tls-cert", type=named_file("certificate"), default=None, help="serve wss:// and https:// with this certificate (PEM)")
    parser.add_argument("--tls-key", type=named_file("private key"), default=None, help="private key of --tls-cert (PEM)")


def _add_live_input_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the sources only ``monitor`` takes (stdin, mic, ingest): ``demo`` neither lists nor accepts them."""
    from ser_stream.sources import MAX_STDIN_CHANNELS

    parser.add_argument("--rate", type=sample_rate, default=None, help=f"stdin: sample rate of the s16le PCM, raw or in a WAV stream (default {STDIN_SAMPLE_RATE})")
    parser.add_argument("--channels", type=whole_number(1, MAX_STDIN_CHANNELS), default=None, help=f"stdin: channels of the PCM, 1 to {MAX_STDIN_CHANNELS} (default 1)")
    parser.add_argument("--samplerate", type=sample_rate, default=None, help="mic: capture rate (default: the device's)")
    parser.add_argument("--max-ingest-connections", type=whole_number(1), default=None, help="concurrent ingest connections accepted (default 200)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="ser-stream", description="Streaming speech emotion recognition.")
    parser.add_argument("--version", action="version", version=f"ser-stream {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    classify = commands.add_parser("classify", help="label whole audio files (WAV, FLAC, OGG, MP3…; 1 kHz to 1 MHz; any channels)")
    classify.add_argument("files", nargs="+", metavar="FILE", help="audio files, each labelled as one utterance (a folder is refused: give its files, e.g. calls/*.wav)")
    _add_model_arguments(classify)
    classify.add_argument("--json", action="store_true", help="one JSON object per file and line")
    classify.set_defaults(run=_classify)

    monitor = commands.add_parser("monitor", help="live monitor: sources → windows → emotions → WebSocket + dashboard")
    monitor.add_argument("--source", action="append", default=[], help="file:PATH, stdin, mic, mic:DEVICE or rtp:HOST:PORT (repeatable)")
    monitor.add_argument("--ingest", action="store_true", help="accept call audio (Twilio Media Streams framing) at ws://HOST:PORT/ingest; run until stopped")
    monitor.add_argument("--jitter-packets", type=whole_number(1, MAX_JITTER_PACKETS), default=None, help=f"rtp: packets that may arrive before a missing one is declared lost (1 to {MAX_JITTER_PACKETS}; default {RtpConfig().jitter_packets})")
    monitor.add_argument("--rtp-allow", action="append", type=sender_network, default=[], metavar="CIDR",
                         help="rtp: take packets only from this network or address, e.g. 10.0.5.0/24 (repeatable; default: any sender)")
    monitor.add_argument("--call-idle", type=positive_seconds, default=None, help=f"rtp and --ingest: seconds without audio that end a call (default {RtpConfig().idle_seconds})")
    _add_monitor_arguments(monitor, pace="realtime")
    _add_live_input_arguments(monitor)
    monitor.set_defaults(run=_monitor)

    demo = commands.add_parser("demo", help="the monitor on the bundled demo recording (no microphone, no network)")
    _add_monitor_arguments(demo, pace="realtime")
    demo.set_defaults(run=_demo, rate=None, channels=None, samplerate=None, max_ingest_connections=None)

    devices = commands.add_parser("devices", help="list audio input devices")
    devices.set_defaults(run=_devices)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # it loads modules too (the pipeline's defaults)
        return int(args.run(args))
    except SerStreamError as error:
        print(f"ser-stream: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except ImportError as error:  # Ctrl-C inside a C extension's import (numpy, onnxruntime) surfaces as this
        if isinstance(error.__cause__ or error.__context__, KeyboardInterrupt):
            return 130
        raise
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other command-line tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not complain either
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
