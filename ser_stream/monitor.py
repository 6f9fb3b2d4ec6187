"""``ser-stream monitor``: builds sources, streams, the worker, the WebSocket server and the dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import itertools
import math
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from rich.console import Console

from ser_stream import EMOTIONS
from ser_stream.audiofile import narrow_band
from ser_stream.dashboard import Dashboard, DashboardState
from ser_stream.errors import AudioInputError, SerStreamError, bytes_as_text, host_port, one_line, shown
from ser_stream.features import SAMPLE_RATE
from ser_stream.inference import EmotionModel
from ser_stream.messages import (
    PROTOCOL_VERSION,
    Hello,
    Message,
    UtteranceResult,
    loss_counts,
    notice,
    numbered,
    utc_now,
)
from ser_stream.metrics import MonitorCollector, exposition, metrics_registry
from ser_stream.model import DEFAULT_MODEL
from ser_stream.pipeline import MonitorConfig, Stream, Worker
from ser_stream.publish import SUBSCRIBER_QUEUE, AccessConfig, Publisher
from ser_stream.record import RecordError, UtteranceLog
from ser_stream.rtp import RtpConfig, RtpReceiver, parse_address
from ser_stream.sources import STDIN_SAMPLE_RATE, SourceSpec, open_source
from ser_stream.web import serve_page
from ser_stream.windows import WindowConfig


@dataclass(frozen=True)
class MonitorOptions:
    sources: tuple[SourceSpec, ...]
    model: Path = DEFAULT_MODEL
    provider: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8765
    dashboard: bool = True
    pace: str = "realtime"
    stdin_rate: int = STDIN_SAMPLE_RATE
    stdin_channels: int = 1
    mic_rate: int | None = None
    config: MonitorConfig = field(default_factory=MonitorConfig)
    print_messages: bool = False  # headless: one JSON line per utterance, error and warning on stdout (PRINTED_TYPES)
    subscriber_queue: int = SUBSCRIBER_QUEUE
    await_subscribers: int = 0  # batch jobs: start the sources once this many subscribers are connected
    log_status_seconds: float = 0.0  # services: a status line on stderr this often (0: none), and what was lost since
    ingest: bool = False  # accept call audio at ws://HOST:PORT/ingest; run until stopped
    rtp: RtpConfig = field(default_factory=RtpConfig)  # jitter and idle settings for rtp: sources
    access: AccessConfig = field(default_factory=AccessConfig)  # token, origins, TLS, ingest limits
    allow_remote: bool = False  # listening beyond loopback must be asked for
    record: Path | None = None  # SQLite log of every utterance, written before it is broadcast
    # Windows are always as long as the model's (its 270 columns span one); ``config.window`` is replaced by
    # the model's, with this hop if one is given. A window length given here must equal the model's.
    window_seconds: float | None = None
    hop_seconds: float | None = None
    # Where the results go when no dashboard shows them: said once start-up has succeeded, after the page's address
    # (said before, it described a run that a start-up error then stopped).
    start_note: str | None = None


# The messages --print-utterances (and `demo` without a terminal) writes to stdout, one JSON line each.
PRINTED_TYPES = ("utterance", "error", "warning")
FINISH_SECONDS = 30.0  # after Ctrl-C or SIGTERM: time for the worker to publish what the streams hold
# A worker that has not passed over its streams for this long is stuck (a step takes milliseconds): /healthz says 503.
HEALTH_STALL_SECONDS = 5.0
# Messages waiting for the outbox thread: 40 calls make about 160 a second, so a --record database held by another
# writer for two minutes fits before the threads that emit (the worker among them; never the event loop's) wait for room.
OUTBOX_MESSAGES = 20000
# Room beyond OUTBOX_MESSAGES for messages emitted on the event loop's thread, which never waits for room (its few:
# an ingest connection's first bad frame, a refused call, a file cut short by a stop); past it they are dropped, counted.
OUTBOX_LOOP_ROOM = 1000
# Lines waiting for stdout's or stderr's writer (``LineWriter``): a reader that stops holds its output's lines here,
# never the thread that printed them; past this many (a few MB of JSON lines) the newest are dropped and counted.
OUTPUT_LINES = 10000
# An output that has written nothing for this long while lines wait for it is stalled: the shutdown drops what it still
# holds (counted, and said) instead of waiting for it.
OUTPUT_STALL_SECONDS = 2.0
# Ctrl-C or SIGTERM to stop; SIGHUP too (a terminal closed, a habit of `kill -HUP` to reload): it once ended the
# monitor at once, exit 129, its open utterances and every stream's end unpublished.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StatusLog:
    """Status for a service's log: every ``seconds`` one line with the latest status message, and, when a loss or
    refusal counter grew since the line before, a warning saying which and by how much. Status went to WebSocket
    subscribers only: an operator reading the log never saw 40 calls overrun."""

    def __init__(self, seconds: float, write: Callable[[str], None]) -> None:
        self.seconds, self.write = seconds, write
        self.latest: Message | None = None
        self.logged: Message | None = None
        self.logged_at = -math.inf
        self.counted: dict[str, int] = {}  # the loss counters as the last line had them

    def offer(self, status: Message) -> None:
        self.latest = status
        if time.monotonic() - self.logged_at >= self.seconds:
            self.flush()

    def flush(self) -> None:
        """Log the latest status now, unless it is logged already."""
        if self.latest is None or self.latest is self.logged:
            return
        status = self.latest
        self.write(f"ser-stream: status {json_line({name: value for name, value in status.items() if name != 'type'})}")
        counts = loss_counts(status)
        grown = [f"{name.replace('_', ' ')} +{count - self.counted.get(name, 0)}" for name, count in counts.items() if count > self.counted.get(name, 0)]
        if grown:
            self.write(f"ser-stream: warning: since the last status line: {', '.join(grown)}")
        self.logged, self.logged_at, self.counted = status, time.monotonic(), counts


def is_batch_run(options: MonitorOptions) -> bool:
    """Whether every source waits for the monitor (`--pace fast` files, stdin) and nothing live comes in: a run whose
    outputs may hold it back, as any Unix filter's reader does, rather than lose lines; a live run drops them, counted."""
    return not options.ingest and all(spec.kind == "stdin" or (spec.kind == "file" and options.pace == "fast") for spec in options.sources)


def on_event_loop() -> bool:
    """Whether this thread runs an asyncio event loop, which must never wait: every connection, /healthz and the stop
    signals wait with it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Outbox:
    """Every message the monitor emits, handed on in order by a thread of its own (``deliver``: store, publish,
    print). The worker used to store each utterance itself: a --record database held by another writer (a
    retention job's DELETE, a VACUUM) stalled it, and with it every call's audio, which overran and was lost."""

    def __init__(self, deliver: Callable[[Message], None], capacity: int = OUTBOX_MESSAGES) -> None:
        self.deliver, self.capacity = deliver, capacity
        self.messages: deque[Message | None] = deque()  # None: the end, after every message
        self.changed = threading.Condition()
        self.full_waits = 0  # times a thread found it full and waited for room (the monitor's messages are never dropped)
        self.loop_drops = 0  # the event loop's messages that found its OUTBOX_LOOP_ROOM full too: dropped
        self.crash: str | None = None  # set if handing on a message failed (a bug): the monitor then stops, saying so
        self.thread = threading.Thread(target=self._run, name="outbox", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, message: Message) -> None:
        """Queue ``message`` from any thread; a thread that finds the outbox full waits for room, but for the event
        loop's (an ingest connection's warning, a refused call): it never waits. Its messages go in line all the same,
        in up to OUTBOX_LOOP_ROOM more; past that they are dropped and counted (``loop_drops``)."""
        from_loop = on_event_loop()  # 20 ingest connections' warnings on a full outbox once froze the loop for 10 s
        with self.changed:
            if len(self.messages) >= self.capacity:
                if from_loop:
                    if len(self.messages) >= self.capacity + OUTBOX_LOOP_ROOM:
                        self.loop_drops += 1
                        return
                else:
                    self.full_waits += 1
                    self.changed.wait_for(lambda: len(self.messages) < self.capacity)
            self.messages.append(message)
            self.changed.notify_all()

    def _take(self) -> Message | None:
        with self.changed:
            self.changed.wait_for(lambda: bool(self.messages))
            message = self.messages.popleft()
            self.changed.notify_all()  # room for a thread waiting
            return message

    def _run(self) -> None:
        try:
            while (message := self._take()) is not None:
                self.deliver(message)
        except Exception as error:  # noqa: BLE001 - as the worker's: a bug must end the monitor with a clear line, not hang it
            self.crash = f"{type(error).__name__}: {error}"
            while self._take() is not None:  # still taken, so no thread waits for room for ever
                pass

    def close(self, seconds: float) -> bool:
        """Hand on what is queued, then stop; False if that took longer than ``seconds``."""
        with self.changed:  # the end goes in line at once, whatever the room: any thread may close, the loop's too
            self.messages.append(None)
            self.changed.notify_all()
        self.thread.join(seconds)
        return not self.thread.is_alive()

    def left(self) -> tuple[int, int]:
        """The messages still queued, and how many of them are utterances: what a shutdown that gave up drops."""
        with self.changed:
            waiting = [message for message in self.messages if message is not None]
        return len(waiting), sum(message.get("type") == "utterance" for message in waiting)

    def counters(self) -> dict[str, int]:
        """For the status message: the event loop's messages dropped."""
        return {"outbox_drops": self.loop_drops}


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` stands for is this machine's loopback; a name that does not resolve is
    refused here, in one line, rather than taken for a remote address (which would ask for --allow-remote)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError) as error:
        raise SerStreamError(f"{host}: cannot resolve this host name ({getattr(error, 'strerror', None) or error})") from None
    return all(ipaddress.ip_address(str(address).split("%")[0]).is_loopback for address in addresses)


def distinct_stream_id(name: str, path: str, taken: set[str]) -> str:
    """A file stream is known by its file name; two files of one name by their paths, the same file twice by a count."""
    for candidate in (name, path):
        if candidate not in taken:
            return candidate
    count = 2
    while f"{name}#{count}" in taken:
        count += 1
    return f"{name}#{count}"


def model_windows(trained: WindowConfig, window_seconds: float | None, hop_seconds: float | None) -> WindowConfig:
    """The windows to cut for a model: its own length (a spectrogram spreads 270 columns over one window, so
    another length would stretch the time axis it learnt), at its hop unless another is asked for."""
    if window_seconds is not None and not (math.isfinite(window_seconds) and abs(window_seconds - trained.window_seconds) <= 1e-6):
        raise SerStreamError(f"--window {window_seconds}: the model was trained on {trained.window_seconds} s windows; leave --window out")
    hop = trained.hop_seconds if hop_seconds is None else hop_seconds
    try:
        return WindowConfig(trained.window_seconds, hop)
    except AudioInputError as error:
        raise SerStreamError(f"--hop {hop}: {error}") from None


def check_listening(options: MonitorOptions) -> None:
    """Refuse to listen beyond this machine unless asked; warn when that is done without a token."""
    hosts = [options.host] + [parse_address(spec.target)[0] for spec in options.sources if spec.kind == "rtp"]
    remote = [host for host in hosts if not is_loopback(host)]
    if remote and not options.allow_remote:
        # a token guards the WebSocket port only: RTP's own guard is --rtp-allow (the advice once named the token alone)
        guard = "set --token" if not is_loopback(options.host) else "name your telephony hosts with --rtp-allow CIDR"
        raise SerStreamError(f"{remote[0]} is reachable from other machines; add --allow-remote to listen there (and {guard})")
    if not is_loopback(options.host) and options.access.token is None:
        # with --ingest the larger exposure is calls pushed in (stored, counted against --max-streams): said too
        pushed = " and push calls into /ingest" if options.ingest else ""
        print(f"ser-stream: warning: --ws listens beyond loopback without --token: anyone who can reach it can subscribe{pushed}", file=sys.stderr, flush=True)
    if any(not is_loopback(host) for host in hosts[1:]) and not options.rtp.allowed_senders:  # no token can guard plain UDP
        print("ser-stream: warning: rtp: listens beyond loopback: anyone who can reach the port can send it calls (admit only your telephony hosts: --rtp-allow CIDR, or the firewall)", file=sys.stderr, flush=True)


def opened_or_failed(spec: SourceSpec, options: MonitorOptions) -> Any:
    """The opened source, or the error that stopped it opening: one bad source must not stop the others."""
    try:
        return open_source(spec, options.pace, options.stdin_rate, options.stdin_channels, options.mic_rate)
    except SerStreamError as error:
        return error
    except Exception as error:  # noqa: BLE001 - whatever a driver or library raises (a device that reports no rate) ends only this stream
        source = f"{spec.kind}:{spec.target}" if spec.target else spec.kind
        return SerStreamError(f"{shown(source)}: could not be opened ({type(error).__name__}: {one_line(error)})")


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` (sys.stdout or sys.stderr, which may be None or closed) is a terminal."""
    try:
        return stream is not None and bool(stream.isatty())
    except (ValueError, OSError):  # closed
        return False


def terminal_console() -> Console | None:
    """A console on a terminal: stdout if it is one, else stderr if that is one, else None."""
    if is_terminal(sys.stdout):
        return Console()
    if is_terminal(sys.stderr):
        return Console(stderr=True)
    return None


def dashboard_console() -> Console | None:
    """Where the dashboard draws: a terminal. With stdout not one (JSON lines piped to jq, a service's log) it goes to
    stderr if that is one, else nowhere: a log once got a 23-line box-drawn frame as text at every stop. Nowhere on a
    terminal that cannot redraw either (TERM=dumb, as Emacs' M-x shell sets, or unknown): rich's Live showed nothing
    there for the whole run, then its last frame."""
    console = terminal_console()
    return None if console is None or console.is_dumb_terminal else console


def no_dashboard_terminal() -> str:
    """Why ``dashboard_console`` found nowhere to draw, for the line that says so: ``no terminal``, or the TERM."""
    return "no terminal" if terminal_console() is None else f"TERM={shown(os.environ.get('TERM', ''))} cannot draw it"


def open_file_like_sources(options: MonitorOptions) -> list[tuple[SourceSpec, Any]]:
    """Each file, stdin and microphone source with what opening it gave: the source, or the error that stopped it.
    Only when every source failed, and no calls can come in by --ingest, is there nothing to monitor."""
    file_like = [spec for spec in options.sources if spec.kind != "rtp"]
    opened = [opened_or_failed(spec, options) for spec in file_like]
    failed = [source for source in opened if isinstance(source, SerStreamError)]
    if failed and len(failed) == len(options.sources) and not options.ingest:
        raise SerStreamError("; ".join(str(error) for error in failed))  # nothing left to monitor
    return list(zip(file_like, opened))


def hello_message(model: EmotionModel, window: WindowConfig, log: UtteranceLog | None) -> Hello:
    """The first message every subscriber gets: what this run serves (model, labels, windows, whether it records)."""
    return {
        "type": "hello",
        "version": PROTOCOL_VERSION,
        "model": model.path.name,
        "labels": list(EMOTIONS),
        "provider": model.provider_name,
        "sample_rate": SAMPLE_RATE,
        "window": window.window_seconds,
        "hop": window.hop_seconds,
        "record": log is not None,
        "record_id": log.record_id if log is not None else None,
        "instance": uuid.uuid4().hex,
        "started_at": utc_now(),
    }


async def started_publisher(options: MonitorOptions, hello: Message, log: UtteranceLog | None) -> Publisher:
    """The WebSocket server, serving the page and --record catch-up, listening; a port it cannot take is one line."""
    publisher = Publisher(options.host, options.port, options.subscriber_queue, options.access)
    publisher.record_path = options.record  # start() reads the last seq it holds: what a catch-up replays from there
    publisher.page = functools.partial(serve_page, token_required=options.access.token is not None)
    publisher.hello = hello
    try:
        await publisher.start()
    except OSError as error:
        raise SerStreamError(f"cannot serve WebSocket on {host_port(options.host, options.port)} ({error.strerror or error}); choose another --ws") from None
    return publisher


class LineWriter:
    """One output's lines (stdout or stderr), written in order by a thread of its own; whoever prints only queues them.
    Lines were written by the thread that printed them, under one lock for both outputs: a stdout whose reader stopped
    (a `| jq` paused, a log shipper backed up) held the outbox thread there, and with it every subscriber and --record,
    then the event loop's shutdown line, and so SIGTERM, for ever."""

    def __init__(self, name: str, stream: Callable[[], Any], lose: Callable[[str, Any, Exception], None], capacity: int,
                 wait_for_reader: bool = False) -> None:
        self.name, self.stream, self.lose, self.capacity = name, stream, lose, capacity
        self.wait_for_reader = wait_for_reader  # a batch run: a full queue holds the printer (never the loop) until there is room
        self.lines: deque[str] = deque()
        self.changed = threading.Condition()
        self.writing = False  # a line taken from ``lines`` and not yet written
        self.writing_counted = False  # that line counted as dropped: the shutdown gave up on it
        self.progress_at = time.monotonic()  # a line last written, or one queued for a writer with nothing to do
        self.dropped = 0  # lines not written: the queue was full (its reader stopped, or fell that far behind), or the shutdown gave up
        self.given_up = False  # the shutdown found it stalled: it is not waited for again
        self.failed = False  # a write failed (the output is lost): the thread has ended
        self.closing = False
        self.stopping = False  # the shutdown began: a printer waiting for room waits only while the reader reads
        self.thread: threading.Thread | None = None  # started with the first line

    def put(self, line: str) -> bool:
        """Queue ``line``; False if it was dropped (counted): ``capacity`` lines wait already, or the shutdown gave up
        on this output. Only in a batch run (``wait_for_reader``) does a printer other than the event loop wait for
        room instead: a `--pace fast` file piped into a reader slower than the monitor lost nothing, and still does."""
        with self.changed:
            if len(self.lines) >= self.capacity and self.wait_for_reader and not on_event_loop():
                while len(self.lines) >= self.capacity and not (self.given_up or self.failed):
                    if self.stopping:
                        self._wait_or_give_up()  # the shutdown's rule, applied before the outbox is closed
                    else:
                        self.changed.wait()
            if len(self.lines) >= self.capacity or self.given_up:  # the newest dropped: what waits is written in order, then a gap
                self.dropped += 1
                return False
            if not self.lines and not self.writing:
                self.progress_at = time.monotonic()
            self.lines.append(line)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name=f"{self.name}-writer", daemon=True)
                self.thread.start()
            self.changed.notify_all()
        return True

    def _run(self) -> None:
        while True:
            with self.changed:
                self.changed.wait_for(lambda: bool(self.lines) or self.closing)
                if not self.lines:
                    return
                line = self.lines.popleft()
                self.writing, self.writing_counted = True, False
                self.changed.notify_all()  # room: a batch run's printer waiting for it goes on
            stream = self.stream()  # at the time of writing: the dashboard's Live puts its own stderr in place while it draws
            try:
                if stream is not None:
                    stream.write(line + "\n")
                    stream.flush()
            except (OSError, ValueError) as error:  # ValueError: a stream already closed
                self.lose(self.name, stream, error)
                with self.changed:
                    self.failed, self.writing = True, False
                    self.lines.clear()  # a lost output's lines go nowhere: the loss itself is the monitor's error
                    self.changed.notify_all()
                return
            with self.changed:
                self.writing = False
                self.progress_at = time.monotonic()
                self.changed.notify_all()

    def drain(self, deadline: float) -> int:
        """Wait until every queued line is written, but not past ``deadline`` (time.monotonic()) nor once nothing has
        been written for OUTPUT_STALL_SECONDS (counted from the drain's start at the earliest: a reader that resumes
        now is given that long); what is still waiting then is dropped and counted: how many lines."""
        began = time.monotonic()
        with self.changed:
            while (self.lines or self.writing) and not self.failed and not self.given_up:
                self._wait_or_give_up(deadline, since=began)
            if self.failed or not self.given_up:
                return 0
            left = len(self.lines) + (self.writing and not self.writing_counted)
            self.dropped += left
            self.lines.clear()
            self.writing_counted = self.writing
            return left

    def _wait_or_give_up(self, deadline: float = math.inf, since: float = -math.inf) -> None:
        """Under the lock: wait for the writer, or give this output up (``given_up``) once it has written nothing for
        OUTPUT_STALL_SECONDS (from ``since`` at the earliest) or ``deadline`` (time.monotonic()) has passed. A writer
        blocked in a write stays so; the interpreter's exit does not wait for it."""
        wait = min(deadline, max(self.progress_at, since) + OUTPUT_STALL_SECONDS) - time.monotonic()
        if wait > 0:
            self.changed.wait(wait)
            return
        self.given_up = True
        self.changed.notify_all()  # a batch run's printer waiting for room drops its line instead

    def stop_waiting(self) -> None:
        """The shutdown began: a batch run's printer waiting for room (the outbox thread) gives up on this output once
        it has written nothing for OUTPUT_STALL_SECONDS, so that the outbox can hand on the rest before the record
        closes; a reader still reading is still waited for."""
        with self.changed:
            self.stopping = True
            self.changed.notify_all()

    def close(self) -> None:
        """Have the thread end once what is queued is written."""
        with self.changed:
            self.closing = True
            self.changed.notify_all()


class Outputs:
    """stdout and stderr, one line at a time from any thread, each written by its own ``LineWriter``. If one cannot be
    written (its reader went away: `| head`, a log pipe that died; a full disk), the monitor stops cleanly and says why
    on the other one: the RTP thread that printed a warning once died of the BrokenPipeError, and calls were silently
    no longer taken. One whose reader stalls silences nothing else: past OUTPUT_LINES waiting, its lines are dropped,
    counted (status ``stdout_drops``, ``stderr_drops``) and said at the end, with exit status 1."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interrupted: asyncio.Event, capacity: int = OUTPUT_LINES,
                 wait_for_reader: bool = False) -> None:
        self.loop, self.interrupted = loop, interrupted  # set, on the loop's thread, when an output is lost
        self.lost: list[str] = []  # why stdout or stderr could not be written, once each
        self.lock = threading.Lock()  # over ``lost``: two threads finding one output lost record it once
        self.writers = {
            "stdout": LineWriter("stdout", lambda: sys.stdout, self._lose, capacity, wait_for_reader),
            "stderr": LineWriter("stderr", lambda: sys.stderr, self._lose, capacity, wait_for_reader),
        }
        self.said_stdout_drops = False

    def print_line(self, text: str, to_stderr: bool) -> None:
        """One line to stdout or stderr, queued for its writer (never waited for); nothing once that output is lost.

        An output closed before the start (``2>&-``, ``>&-``: Python's None) once crashed the thread that wrote to it,
        and every stream with it. Closed stderr: its lines are dropped, as classify drops them (the exit status
        still says what failed). Closed stdout: the results asked for there (--print-utterances) are lost, as in a
        stdout that closes mid-run."""
        name, stream = ("stderr", sys.stderr) if to_stderr else ("stdout", sys.stdout)
        with self.lock:
            if any(lost.startswith(name) for lost in self.lost):
                return
            if stream is None:
                if not to_stderr:
                    self.lost.append("stdout (closed)")
                    self.loop.call_soon_threadsafe(self.interrupted.set)
                return
        if self.writers[name].put(text) or to_stderr:
            return
        with self.lock:  # said once: status stdout_drops (and --log-status's warnings) count the rest
            first, self.said_stdout_drops = not self.said_stdout_drops, True
        if first:
            self.print_line(f"ser-stream: warning: stdout: {self.writers[name].capacity} lines wait for its reader, which has stopped reading "
                            "or fallen that far behind: further lines are dropped until it catches up, counted (stdout_drops)", to_stderr=True)

    def _lose(self, name: str, stream: Any, error: Exception) -> None:
        """Record that ``name`` could not be written (once) and stop the monitor: on its writer's thread."""
        reason = f"{type(error).__name__}: {error.strerror}" if isinstance(error, OSError) and error.strerror else type(error).__name__
        with self.lock:
            if any(lost.startswith(name) for lost in self.lost):
                return
            self.lost.append(f"{name} ({reason})")
        with contextlib.suppress(OSError, ValueError):  # the interpreter's last flush goes nowhere
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, stream.fileno())
            finally:
                os.close(devnull)
        with contextlib.suppress(RuntimeError):  # a loop already closed: the run is over
            self.loop.call_soon_threadsafe(self.interrupted.set)

    def counters(self) -> dict[str, int]:
        """For the status message: lines each output's writer dropped."""
        return {"stdout_drops": self.writers["stdout"].dropped, "stderr_drops": self.writers["stderr"].dropped}

    def stop_waiting(self) -> None:
        """The shutdown began: see ``LineWriter.stop_waiting``."""
        for writer in self.writers.values():
            writer.stop_waiting()

    def drain(self, seconds: float) -> None:
        """Wait up to ``seconds`` for both outputs to write what they hold; one that writes nothing for
        OUTPUT_STALL_SECONDS meanwhile is stalled, and its lines are dropped (counted) rather than waited for."""
        deadline = time.monotonic() + seconds
        for writer in self.writers.values():
            writer.drain(deadline)

    def say_unwritten(self) -> bool:
        """A line on the other output for each output that dropped lines; whether any did."""
        dropped = {name: writer.dropped for name, writer in self.writers.items() if writer.dropped}
        for name, count in dropped.items():
            self.print_line(f"ser-stream: error: {name}: {count} line(s) were not written: its reader stopped reading or fell "
                            f"{self.writers[name].capacity} lines behind ({name}_drops)", to_stderr=name == "stdout")
        return bool(dropped)

    def close(self, seconds: float) -> None:
        """Write what is still queued (within ``seconds``, as ``drain``), then end the writers' threads."""
        self.drain(seconds)
        for writer in self.writers.values():
            writer.close()


class Delivery:
    """What the outbox's thread does with each message: store it (an utterance, with --record), publish it, show it
    on the dashboard, log it (a status, with --log-status) and print it. It numbers utterances when nothing
    stores them, and remembers the last --record failure so that one reason is reported once."""

    def __init__(self, publisher: Publisher, state: DashboardState, log: UtteranceLog | None,
                 status_log: StatusLog | None, outputs: Outputs, print_messages: bool) -> None:
        self.publisher, self.state, self.log, self.status_log = publisher, state, log, status_log
        self.outputs, self.print_messages = outputs, print_messages
        self.utterance_count = itertools.count(1)  # the seq of utterances without --record
        self.last_record_error: str | None = None  # the --record failure last reported: a new reason is reported again

    def deliver(self, message: Message) -> None:
        """Store (an utterance, with --record), publish, show and print one message: on the outbox's thread."""
        message = self.as_published(message)
        self.publisher.publish_threadsafe(message)
        self.state.handle(message)
        if message.get("type") == "status" and self.status_log is not None:
            self.status_log.offer(message)
        self.print_lines(message)

    def as_published(self, message: Message) -> Message:
        """An utterance numbered (stored first, with --record); a status with the --record failures; else as it is."""
        if message.get("type") == "status" and self.log is not None:  # counted here, by the inserts before it, not when the worker wrote it
            return {**message, "record_failures": self.log.failures}
        if message.get("type") != "utterance":
            return message
        utterance = cast(UtteranceResult, message)  # the worker's, unnumbered
        if self.log is None:
            return numbered(utterance, next(self.utterance_count))
        try:  # on disk before anyone can have seen it
            stored = self.log.append(utterance)
        except RecordError as error:  # published all the same: losing the record must not lose the result
            if self.last_record_error != str(error):
                self.last_record_error = str(error)
                self.deliver(notice("error", str(error)))
            return numbered(utterance, None)
        self.last_record_error = None
        return stored

    def print_lines(self, message: Message) -> None:
        """With --print-utterances, utterances, errors and warnings as JSON lines on stdout (told apart by ``type``);
        every error and warning as a line on stderr too, with or without it."""
        if self.print_messages and message.get("type") in PRINTED_TYPES:
            self.outputs.print_line(json_line(message), to_stderr=False)
        # on stderr too: with stdout in a file, the exit status 1 once came with no reason where one looks, and a
        # warning was in the file alone; with its severity, as the lines before and after the run have it (a log
        # grepped for "error:" found none)
        if message.get("type") in ("error", "warning"):
            self.outputs.print_line(f"ser-stream: {message['type']}: {message['message']}", to_stderr=True)


def worker_health(worker: Worker, outbox: Outbox, hello: Message) -> tuple[bool, dict[str, Any]]:
    """GET /healthz: whether the worker is alive and stepping, with what a service manager may want to log."""
    since = None if worker.last_step_at is None else round(time.monotonic() - worker.last_step_at, 3)
    status = "failed" if worker.crash else "starting" if since is None else "stalled" if since > HEALTH_STALL_SECONDS else "ok"
    return status in ("ok", "starting"), {
        "status": status, "instance": hello["instance"], "started_at": hello["started_at"], "streams": len(worker.streams),
        "queue_depth": worker.queue_depth, "behind_seconds": round(worker.behind_seconds, 2), "outbox": outbox.left()[0],
        "outbox_full_waits": outbox.full_waits, "outbox_drops": outbox.loop_drops, "seconds_since_worker_step": since,
    }


def status_now(worker: Worker, delivery: Delivery) -> tuple[Message | None, float]:
    """GET /metrics' status: the last the worker built, with what the outbox and the publisher add on its way to
    subscribers read now (``record_failures``, ``subscribers``): a --record database held by another writer stalls the
    outbox, and the figures a scraper read from it stood still for as long, said to be under a second old."""
    status, built_at = worker.latest_status
    if status is None:
        return None, built_at
    return delivery.publisher.counted_now(delivery.as_published(status)), built_at


def accept_ingest(publisher: Publisher, worker: Worker, open_call_stream: Callable[[str, int], Stream],
                  idle_seconds: float, warn: Callable[[str, str | None], None]) -> None:
    """Serve /ingest: each call connected there becomes a stream of the worker's, ended after ``idle_seconds`` of silence."""
    from ser_stream.ingest import MediaIngest

    ingest = MediaIngest(open_call_stream, worker.count_refused, worker.is_active, idle_seconds, warn=warn)
    publisher.ingest = ingest.handle
    worker.extra_counters.append(ingest.counters)


class Sources:
    """The threads that feed the worker's streams (RTP receivers, then file, stdin and microphone readers): they
    start once the awaited subscribers are in and are stopped together."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.receivers: list[tuple[RtpReceiver, threading.Thread]] = []  # listening from the start: closed if never run
        self.files_read: list[Stream] = []  # file sources' streams: one stopped before its end is said to be

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def warn_of_files_cut_short(self, emit: Callable[[Message], None]) -> None:
        """A warning for each file whose stream has not reached its end."""
        for stream in self.files_read:
            if not stream.finished:  # Ctrl-C or SIGTERM: a clean stop, but a file cut short must not pass for a whole one
                emit(notice("warning", f"{stream.stream_id}: stopped before the end of its file; what came after was not heard",
                            stream=stream.stream_id))

    async def stop(self) -> None:
        """Every source stops; each thread gets a second to."""
        self.stopping.set()
        for thread in self.threads:  # an RTP receiver flushes its jitter buffers as it stops
            if thread.is_alive():
                await asyncio.to_thread(thread.join, 1)
        self.close_receivers_never_run()

    def close_receivers_never_run(self) -> None:
        """The sockets of RTP receivers whose threads never started (a stop while awaiting subscribers, a start-up
        step that failed after them): a run closes its own, and the port stayed bound in-process."""
        for receiver, thread in self.receivers:
            if thread.ident is None:
                receiver.socket.close()


def open_sources(options: MonitorOptions, file_like: list[tuple[SourceSpec, Any]], worker: Worker,
                 open_call_stream: Callable[[str, int], Stream], warn: Callable[[str], None], say: Callable[[str], None]) -> Sources:
    """Every source's thread, not yet started: an RTP receiver (listening from here) for each rtp: source, then a
    stream of the worker's for each file-like one; one that failed to open is added as a stream ended by its error."""
    sources = Sources()
    try:
        for spec in options.sources:
            if spec.kind == "rtp":
                host, port = parse_address(spec.target)
                receiver = RtpReceiver(replace(options.rtp, host=host, port=port), open_call_stream, warn)
                worker.extra_counters.append(receiver.counters)
                say(f"ser-stream: receiving RTP (G.711) on udp://{host_port(host, receiver.port)}")
                thread = threading.Thread(target=receiver.run, args=(sources.stopping,), name=f"rtp-{receiver.port}", daemon=True)
                sources.threads.append(thread)
                sources.receivers.append((receiver, thread))
    except BaseException:  # a later port taken: the ones already bound are let go
        sources.close_receivers_never_run()
        raise
    taken: set[str] = set()
    for index, (spec, source) in enumerate(file_like):
        if spec.kind == "file":
            # a name that is not UTF-8 as \xNN text: its surrogate escapes once stopped the monitor at --record's INSERT
            stream_id = distinct_stream_id(bytes_as_text(Path(spec.target).name), bytes_as_text(spec.target), taken)
        else:
            name = spec.kind if len(file_like) == 1 else f"{spec.kind}{index}"
            stream_id = distinct_stream_id(name, name, taken)  # a file may be called 'stdin1' too
        taken.add(stream_id)
        if isinstance(source, SerStreamError):  # reported and counted as this stream's failure; the others run
            stream = Stream(stream_id, SAMPLE_RATE, worker.config)
            stream.error, stream.finished = str(source), True
            worker.add_stream(stream)
            continue
        stream = Stream(stream_id, source.sample_rate, worker.config)
        stream.start_warning = narrow_band(stream_id, source.sample_rate)  # as classify says it; the worker says it after stream_started
        stream.live = not (spec.kind == "file" and source.pace == "fast")  # read ahead: its 10 s ring is full by design
        worker.add_stream(stream)
        if spec.kind == "file":
            sources.files_read.append(stream)
        if spec.kind == "mic":
            worker.extra_counters.append(stream.gap_counters)
        sources.threads.append(threading.Thread(target=source.run, args=(stream, sources.stopping), name=f"source-{stream_id}", daemon=True))
    return sources


def print_addresses(options: MonitorOptions, publisher: Publisher, model: EmotionModel, outputs: Outputs) -> None:
    """Where to look and connect (with the port the server took), and the model serving, on stderr."""
    scheme = "s" if options.access.tls is not None else ""
    address = host_port(options.host, publisher.port)
    ingest_url = f" · ingest ws{scheme}://{address}/ingest" if options.ingest else ""
    outputs.print_line(f"ser-stream: page http{scheme}://{address}/ · WebSocket ws{scheme}://{address}/{ingest_url} · model {model.path.name} · provider {model.provider_name}", to_stderr=True)
    if model.cuda_not_used is not None:
        outputs.print_line(f"ser-stream: warning: --provider auto: {model.cuda_not_used}", to_stderr=True)
    if options.start_note is not None:
        outputs.print_line(options.start_note, to_stderr=True)
    if options.await_subscribers:  # else a run held back looks hung
        outputs.print_line(f"ser-stream: waiting for {options.await_subscribers} subscriber(s) before the sources start (--await-subscribers)", to_stderr=True)


def stop_on_signals(loop: asyncio.AbstractEventLoop, interrupted: asyncio.Event) -> None:
    """Ctrl-C, SIGTERM and SIGHUP set ``interrupted``, where the platform lets the loop handle signals."""
    for signum in STOP_SIGNALS:
        try:
            loop.add_signal_handler(signum, interrupted.set)
        except (NotImplementedError, RuntimeError):
            pass


def started_dashboard(state: DashboardState, worker: Worker) -> Dashboard | None:
    """The live view, drawing on a terminal if there is one."""
    console = dashboard_console()
    if console is None:
        return None
    dashboard = Dashboard(state, console)
    dashboard.level_source = lambda: worker.loudest_level()
    dashboard.start()
    return dashboard


class WorkerThread:
    """The worker on a thread of its own, the streams' only reader."""

    def __init__(self, worker: Worker, until_all_ended: bool) -> None:
        self.worker = worker
        self.stopping = threading.Event()  # set only if the worker does not finish in time
        self.thread = threading.Thread(target=worker.run, args=(self.stopping, until_all_ended), name="worker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    async def finish(self, seconds: float) -> bool:
        """Have the worker publish what its streams hold and return; False, and stopped, if it took over ``seconds``."""
        # The worker, in its own thread (the streams' only reader), closes the open utterances, publishes them
        # and returns; finish() also releases ingest connections waiting for room in a stream's buffer.
        self.worker.finish()
        await asyncio.to_thread(self.thread.join, seconds)
        if self.thread.is_alive():
            self.stopping.set()
            return False
        return True


async def wait_for_subscribers(publisher: Publisher, count: int, interrupted: asyncio.Event) -> None:
    """Until ``count`` subscribers are connected (--await-subscribers) or a stop is asked for."""
    while len(publisher.subscribers) < count and not interrupted.is_set():
        await asyncio.sleep(0.01)


async def wait_until_done(worker_thread: WorkerThread, outbox: Outbox, interrupted: asyncio.Event) -> None:
    """Until the worker returns (every stream ended), a stop is asked for, or messages can no longer be handed on."""
    while worker_thread.is_alive() and not interrupted.is_set() and outbox.crash is None:
        await asyncio.sleep(0.05)


async def shut_down(sources: Sources, worker_thread: WorkerThread, outbox: Outbox, status_log: StatusLog | None,
                    publisher: Publisher, log: UtteranceLog | None, outputs: Outputs) -> None:
    """Stop the sources, give the worker and then the outbox FINISH_SECONDS each to publish what they hold (saying so
    if that was not enough), then close the server (saying what subscribers cut off still had queued) and the record,
    then give stdout and stderr FINISH_SECONDS to write what they hold: one that writes nothing for
    OUTPUT_STALL_SECONDS is stalled, and what it holds is dropped, counted (``exit_status`` says it), not waited for."""

    def say(line: str) -> None:
        outputs.print_line(line, to_stderr=True)

    if log is not None:
        log.hurry()
    outputs.stop_waiting()  # a batch run's outbox held by a stalled reader: let it go on before the record closes
    await sources.stop()
    if not await worker_thread.finish(FINISH_SECONDS):
        say(f"ser-stream: warning: stopped before publishing everything (the worker was still busy after {FINISH_SECONDS:.0f} s)")
    if not await asyncio.to_thread(outbox.close, FINISH_SECONDS):
        messages, utterances = outbox.left()
        totals = "; the status line below is not the run's totals" if status_log is not None else ""
        say(f"ser-stream: warning: stopped before publishing everything: {messages} message(s), {utterances} of them utterance(s), "
            f"were still waiting to be handed on after {FINISH_SECONDS:.0f} s and were dropped{totals}")
    if outbox.loop_drops:
        say(f"ser-stream: warning: {outbox.loop_drops} message(s) emitted on the event loop (ingest connections' warnings) were dropped: "
            "the outbox was full (outbox_drops)")
    if status_log is not None:
        status_log.flush()  # the run's totals, whenever the last line was
    cut_off_queued = await publisher.close()
    if cut_off_queued:  # after the last status line: its subscriber drops did not have these
        say(f"ser-stream: warning: {cut_off_queued} message(s) still queued for subscribers that read too slowly were dropped at shutdown "
            f"(subscriber drops {publisher.dropped_total} in all)")
    if log is not None:
        log.close()
    await asyncio.to_thread(outputs.drain, FINISH_SECONDS)


def exit_status(outputs: Outputs, worker: Worker, outbox: Outbox, log: UtteranceLog | None) -> int:
    """1 if the run lost or failed anything, else 0; the first reason in one line (a stream's failure was published),
    after a line for each output whose reader stalled (its lines were dropped: said on the other output)."""
    if outputs.lost:
        for lost in outputs.lost:  # on the one still open, if either is
            outputs.print_line(f"ser-stream: error: {lost} could not be written: the monitor stopped", to_stderr=not lost.startswith("stderr"))
        return 1
    unwritten = outputs.say_unwritten()
    if worker.crash:
        outputs.print_line(f"ser-stream: error: the worker stopped: {worker.crash}", to_stderr=True)
        return 1
    if outbox.crash:
        outputs.print_line(f"ser-stream: error: messages could no longer be handed on: {outbox.crash}", to_stderr=True)
        return 1
    if log is not None and log.failures:
        outputs.print_line(f"ser-stream: error: --record {log.path}: {log.failures} utterance(s) were published but not stored", to_stderr=True)
        return 1
    return 1 if unwritten or worker.failed_streams else 0


async def run_monitor(options: MonitorOptions) -> int:
    """One monitor run: build the pipeline, start it, wait until its streams end or it is stopped, stop it, and
    return the exit status."""
    check_listening(options)
    model = EmotionModel(options.model, provider=options.provider, max_batch=options.config.max_batch)
    config = replace(options.config, window=model_windows(model.metadata.window, options.window_seconds, options.hop_seconds))
    file_like = open_file_like_sources(options)
    async with contextlib.AsyncExitStack() as undo:  # what start-up opened, closed again if a later step fails
        log = UtteranceLog(options.record) if options.record is not None else None
        if log is not None:
            undo.callback(log.close)
        hello = hello_message(model, config.window, log)
        publisher = await started_publisher(options, hello, log)
        undo.push_async_callback(publisher.close)
        state = DashboardState(hello)
        loop = asyncio.get_running_loop()
        interrupted = asyncio.Event()  # Ctrl-C, SIGTERM, or an output whose reader went away: stop cleanly
        outputs = Outputs(loop, interrupted, wait_for_reader=is_batch_run(options))
        undo.push_async_callback(asyncio.to_thread, outputs.close, FINISH_SECONDS)  # a start-up error's line comes after theirs

        def say(line: str) -> None:
            outputs.print_line(line, to_stderr=True)

        status_log = StatusLog(options.log_status_seconds, say) if options.log_status_seconds > 0 else None
        delivery = Delivery(publisher, state, log, status_log, outputs, options.print_messages)
        outbox = Outbox(delivery.deliver)
        outbox.start()
        undo.callback(outbox.close, FINISH_SECONDS)
        emit = outbox.put
        worker = Worker(model, config, emit)
        worker.extra_counters.extend([publisher.counters, outputs.counters, outbox.counters])
        publisher.warn = worker.warn  # connections it cannot accept (no descriptor left): one line, then counted
        publisher.health = lambda: worker_health(worker, outbox, hello)
        registry = metrics_registry(MonitorCollector(lambda: status_now(worker, delivery), publisher.health, hello))
        publisher.metrics = functools.partial(exposition, registry)

        open_call_stream = worker.open_stream  # limits checked before a stream is built: a flood of calls costs checks
        if options.ingest:
            accept_ingest(publisher, worker, open_call_stream, options.rtp.idle_seconds, worker.warn)  # a stream's warning after its start
        sources = open_sources(options, file_like, worker, open_call_stream, worker.warn, say)
        undo.pop_all()  # started: from here shut_down closes them, in its order
    print_addresses(options, publisher, model, outputs)
    stop_on_signals(loop, interrupted)  # before the dashboard hides the cursor: Ctrl-C from here on stops cleanly
    dashboard = started_dashboard(state, worker) if options.dashboard else None
    try:
        try:
            await wait_for_subscribers(publisher, options.await_subscribers, interrupted)
            if not interrupted.is_set():
                sources.start()
            calls_come_and_go = options.ingest or any(spec.kind == "rtp" for spec in options.sources)  # run until stopped
            worker_thread = WorkerThread(worker, until_all_ended=not calls_come_and_go)
            worker_thread.start()
            await wait_until_done(worker_thread, outbox, interrupted)
            if interrupted.is_set() and not outputs.lost:
                sources.warn_of_files_cut_short(emit)
            await shut_down(sources, worker_thread, outbox, status_log, publisher, log, outputs)
        finally:  # whatever happens, the terminal gets its cursor back
            if dashboard is not None:
                dashboard.stop()
        return exit_status(outputs, worker, outbox, log)
    finally:  # the last lines written, as far as their readers take them
        await asyncio.to_thread(outputs.close, FINISH_SECONDS)


def json_line(message: Message) -> str:
    import json

    return json.dumps(message, separators=(",", ":"))


def monitor(options: MonitorOptions) -> int:
    return asyncio.run(run_monitor(options))


