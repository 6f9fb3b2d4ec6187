"""A rich terminal view of the same messages subscribers get; it renders on its own clock."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ser_stream import EMOTIONS
from ser_stream.messages import Message

COLOURS = {
    "neutral": "white", "calm": "cyan", "happy": "yellow", "sad": "blue",
    "angry": "red", "fearful": "magenta", "disgust": "green", "surprised": "bright_yellow",
}


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
        self.streams: dict[str, Message] = {}
        self.level = 0.0

    def handle(self, message: Message) -> None:
        with self.lock:
            kind = message.get("type")
            if kind == "window":
                self.window = message["probabilities"]
            elif kind == "utterance":
                self.utterance = message["probabilities"]
                self.recent.appendleft(message)
                self.streams.setdefault(message["stream"], {})["last"] = message
            elif kind == "status":
                self.status = message
            elif kind in ("stream_started", "stream_ended"):
                self.streams.setdefault(message["stream"], {})["state"] = kind.removeprefix("stream_")

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
                    message["stream"], f"{message['t_start']:7.1f}–{message['t_end']:.1f} s",
                    Text(message["label"], style=COLOURS.get(message["label"], "white")), f"{message['confidence']:.2f}",
                )
            status: dict[str, Any] = self.status
            latency = status.get("latency_ms", {})
            stats = Text(
                f"level {bar(min(1.0, self.level * 5), 12)}  "
                f"latency median {latency.get('median', 0):.0f} ms p95 {latency.get('p95', 0):.0f} ms  "
                f"overruns {status.get('overruns', 0)}  input overflows {status.get('input_overflows', 0)}  "
                f"queue {status.get('queue_depth', 0)}  windows {status.get('windows', 0)}  "
                f"provider {self.hello.get('provider', '?')}"
            )
        return Group(
            Panel(bars, title="ser-stream: emotions"),
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
