"""A rich terminal view of the same messages subscribers get; it renders on its own clock."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ser_stream import EMOTIONS
from ser_stream.errors import shown
from ser_stream.messages import Message

COLOURS = {
    "neutral": "white", "calm": "cyan", "happy": "yellow", "sad": "blue",
    "angry": "red", "fearful": "magenta", "disgust": "green", "surprised": "bright_yellow",
}


MAX_STREAM_ROWS = 24  # more active streams are summarised in one line


def untrusted(name: str) -> Text:
    """A stream id or file name as plain text: never read as rich markup (``[/]`` once killed the dashboard's
    refresh thread), control characters escaped so they cannot drive the terminal."""
    return Text(shown(name))


@dataclass
class StreamRow:
    """What the dashboard shows for one active stream."""

    current: tuple[str, float] = ("-", 0.0)  # top label of its latest window
    last: Message | None = None  # its latest utterance
    utterances: int = 0


def bar(value: float, width: int = 24) -> str:
    filled = int(round(max(0.0, min(1.0, value)) * width))
    return "█" * filled + "·" * (width - filled)


class DashboardState:
    """The latest of everything, updated by ``handle`` from any thread."""

    def __init__(self, hello: Message) -> None:
        self.hello = hello
        self.lock = threading.Lock()
        self.window: dict[str, float] = {}
        self.utterance: dict[str, float] = {}
        self.recent: deque[Message] = deque(maxlen=8)
        self.status: Message = {}
        self.streams: dict[str, StreamRow] = {}  # active streams only: endless calls keep this bounded
        self.streams_started = 0
        self.streams_ended = 0
        self.level = 0.0

    def handle(self, message: Message) -> None:
        with self.lock:
            kind = message.get("type")
            if kind == "window":
                self.window = message["probabilities"]
                row = self.streams.get(message["stream"])
                if row is not None:
                    row.current = max(self.window.items(), key=lambda item: item[1])
            elif kind == "utterance":
                self.utterance = message["probabilities"]
                self.recent.appendleft(message)
                row = self.streams.get(message["stream"])
                if row is not None:
                    row.last, row.utterances = message, row.utterances + 1
            elif kind == "status":
                self.status = message
            elif kind == "stream_started":
                self.streams[message["stream"]] = StreamRow()
                self.streams_started += 1
            elif kind == "stream_ended":
                self.streams_ended += self.streams.pop(message["stream"], None) is not None

    def render(self) -> Group:
        with self.lock:
            bars = Table.grid(padding=(0, 1))
            bars.add_column("emotion", width=10)
            bars.add_column("window")
            bars.add_column("utterance")
            bars.add_row("", Text("current window", style="bold"), Text("current utterance", style="bold"))
            for emotion in EMOTIONS:
                colour = COLOURS[emotion]
                w, u = self.window.get(emotion, 0.0), self.utterance.get(emotion, 0.0)
                bars.add_row(emotion, Text(f"{bar(w)} {w:4.2f}", style=colour), Text(f"{bar(u)} {u:4.2f}", style=colour))
            recent = Table("stream", "time", "label", "conf.", box=None)
            for message in self.recent:
                recent.add_row(
                    untrusted(message["stream"]), f"{message['t_start']:7.1f}–{message['t_end']:.1f} s",
                    Text(message["label"], style=COLOURS.get(message["label"], "white")), f"{message['confidence']:.2f}",
                )
            calls = Table("stream", "now", "conf.", "last utterance", "utterances", box=None)
            shown = sorted(self.streams.items())[:MAX_STREAM_ROWS]
            for stream_id, row in shown:
                label, confidence = row.current
                last = row.last
                calls.add_row(
                    untrusted(stream_id), Text(label, style=COLOURS.get(label, "white")), f"{confidence:.2f}" if label != "-" else "",
                    Text(f"{last['label']} {last['confidence']:.2f} at {last['t_end']:.1f} s", style=COLOURS.get(last["label"], "white")) if last else "",
                    str(row.utterances),
                )
            if len(self.streams) > len(shown):
                calls.add_row(f"… {len(self.streams) - len(shown)} more", "", "", "", "")
            status: dict[str, Any] = self.status
            totals = Text(
                f"streams active {len(self.streams)}  started {self.streams_started}  ended {self.streams_ended}  "
                f"utterances {status.get('utterances', 0)}  subscribers {status.get('subscribers', 0)}  "
                f"subscriber drops {status.get('subscriber_drops', 0)}"
            )
            latency = status.get("latency_ms", {})
            stats = Text(
                f"level {bar(min(1.0, self.level * 5), 12)}  "
                f"latency median {latency.get('median', 0):.0f} ms p95 {latency.get('p95', 0):.0f} ms  "
                f"overruns {status.get('overruns', 0)}  input overflows {status.get('input_overflows', 0)}  "
                f"queue {status.get('queue_depth', 0)}  windows {status.get('windows', 0)}  "
                f"provider {self.hello.get('provider', '?')}"
            )
        return Group(
            Panel(bars, title="ser-stream: emotions (latest window and utterance, any stream)"),
            Panel(Group(calls, totals), title="streams"),
            Panel(recent, title="last utterances"),
            stats,
        )


class Dashboard:
    """Refreshes a rich ``Live`` a few times a second from ``DashboardState``; never blocks the worker."""

    def __init__(self, state: DashboardState, console: Console | None = None, refresh_per_second: float = 4.0) -> None:
        self.state, self.console, self.refresh = state, console or Console(), refresh_per_second
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.level_source: Any = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dashboard", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with Live(self.state.render(), console=self.console, refresh_per_second=self.refresh, transient=False) as live:
            while not self._stop.wait(1.0 / self.refresh):
                if self.level_source is not None:
                    self.state.level = self.level_source()
                live.update(self.state.render())
            live.update(self.state.render())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        time.sleep(0)
