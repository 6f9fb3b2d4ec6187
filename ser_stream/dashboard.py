"""A rich terminal view of the same messages subscribers get; it renders on its own clock."""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.panel import Panel
from rich.table import Column, Table
from rich.text import Text

from ser_stream import EMOTIONS
from ser_stream.errors import shown
from ser_stream.messages import BEHIND_WARNING_SECONDS, Message, loss_counts

COLOURS = {
    "neutral": "white", "calm": "cyan", "happy": "yellow", "sad": "blue",
    "angry": "red", "fearful": "magenta", "disgust": "green", "surprised": "bright_yellow",
}


RECENT_KEPT = 50  # last utterances kept; as many are shown as the terminal has rows for
BARS_HEIGHT = 10  # the emotions panel: 8 rows and its border
ID_CELLS_WANTED = 16  # a stream id narrower than this on a narrow terminal costs the streams panel its "now" columns
# Never cut narrower than this (or its own length): cut in the middle to 12 cells, SID/inbound and SID/outbound still
# differ at their ends ("MZ1…/inbound", "MZ1…outbound"; to 8, both were "MZ…bound").
ID_CELLS_LEAST = 12


def untrusted(name: str, width: int | None = None) -> Text:
    """A stream id or file name as plain text: never read as rich markup (``[/]`` once killed the dashboard's
    refresh thread), control characters escaped so they cannot drive the terminal; cut in the middle to ``width``."""
    text = ascii(name) if quoted(name) else shown(name)
    return Text(middle_cut(text, width) if width is not None else text)


def quoted(name: str) -> bool:
    """An id itself in quotes: shown as it is, a typed ``'call\\n7'`` would look like ``call<line break>7`` escaped."""
    return len(name) >= 2 and name[0] in "'\"" and name[-1] == name[0]


def middle_cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, cut in the middle: ids differ at their ends (``SID/inbound``,
    ``SID/outbound``) as often as at their starts, so a third of the room goes to the start, the rest to the end."""
    if cell_len(text) <= width:
        return text
    head_cells = max(0, (width - 1) // 3)
    tail_cells = max(0, width - 1 - head_cells)
    head = tail = ""
    for character in text:
        if cell_len(head + character) > head_cells:
            break
        head += character
    for character in reversed(text):
        if cell_len(character + tail) > tail_cells:
            break
        tail = character + tail
    return f"{head}…{tail}"


def ids_width(names: list[str], room: int) -> int:
    """The cells stream ids get: ``room``, but never fewer than the longest needs or ``ID_CELLS_LEAST`` (the columns
    beside them give way instead, ``giving_way``)."""
    return max(room, min(ID_CELLS_LEAST, max((cell_len(shown(name)) for name in names), default=0)))


def giving_way(header: str) -> Column:
    """A column rich narrows first where the table is too wide, cutting its cells with an ellipsis (each a ``cut``):
    it narrowed every column alike, the stream ids too, which then no longer told SID/inbound from SID/outbound."""
    return Column(Text(header, no_wrap=True, overflow="ellipsis"), no_wrap=False)  # wrappable: collapsed first


def cut(text: str, style: str = "") -> Text:
    """A cell of a ``giving_way`` column: one line, cut with an ellipsis where the column is narrowed."""
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def losses(status: Message) -> list[str]:
    """Every nonzero loss or refusal counter of a status message, in its order: ``overrun samples 800``."""
    return [f"{name.replace('_', ' ')} {value}" for name, value in loss_counts(status).items() if value]


def behind_live_audio(status: Message) -> str | None:
    """``behind live audio 3.2 s`` while the worker is ``BEHIND_WARNING_SECONDS`` or more behind, else None."""
    behind = status.get("behind_seconds", 0.0)
    return f"behind live audio {behind:.1f} s" if behind >= BEHIND_WARNING_SECONDS else None


def packed(items: list[str], width: int, separator: str = "  ") -> list[str]:
    """``items`` joined into as few lines of at most ``width`` cells as they fit, never splitting an item."""
    lines = [""]
    for item in items:
        candidate = f"{lines[-1]}{separator}{item}" if lines[-1] else item
        if lines[-1] and cell_len(candidate) > width:
            lines.append(item)
        else:
            lines[-1] = candidate
    return lines


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
        self.recent: deque[Message] = deque(maxlen=RECENT_KEPT)
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

    def render(self) -> DashboardFrame:
        """A snapshot, laid out when drawn: to the terminal's size then (see ``DashboardFrame``)."""
        with self.lock:
            return DashboardFrame(
                provider=str(self.hello.get("provider", "?")),
                window=dict(self.window),
                utterance=dict(self.utterance),
                recent=list(self.recent),
                status=dict(self.status),
                streams=[(stream_id, replace(row)) for stream_id, row in sorted(self.streams.items())],
                started=self.streams_started,
                ended=self.streams_ended,
                level=self.level,
            )


@dataclass
class DashboardFrame:
    """One frame of the dashboard, fitted to the terminal when rich draws it.

    The stats, every nonzero loss and a worker behind live audio come first, where rich's ``Live`` (which
    crops a frame taller than the terminal at the bottom) always shows them; the
    emotion bars next; then as many stream rows, and after them last utterances,
    as the rows left over hold. Every row is one line: long ids are cut in the middle.
    """

    provider: str
    window: dict[str, float]
    utterance: dict[str, float]
    recent: list[Message]
    status: dict[str, Any]
    streams: list[tuple[str, StreamRow]]
    started: int
    ended: int
    level: float

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width, height = options.max_width, options.size.height
        status = self.status
        latency = status.get("latency_ms", {})
        counts = [
            f"provider {self.provider}",
            f"latency median {latency.get('median', 0):.0f} ms p95 {latency.get('p95', 0):.0f} ms",
            f"queue {status.get('queue_depth', 0)}",
            f"windows {status.get('windows', 0)}",
            f"level {bar(min(1.0, self.level * 5), 8)}",
            f"streams active {len(self.streams)}", f"started {self.started}", f"ended {self.ended}",
            f"utterances {status.get('utterances', 0)}", f"subscribers {status.get('subscribers', 0)}",
        ]
        lost = losses(status)
        top = [Text(line) for line in packed(counts, width)]
        top += [Text(line, style="bold red") for line in packed(["losses:", *lost], width)] if lost else [Text("losses: none", style="dim")]
        if behind := behind_live_audio(status):  # a worker falling behind, before it loses anything
            top.append(Text(behind, style="bold red"))
        for line in top:
            line.no_wrap, line.overflow = True, "ellipsis"
        room = height - len(top) - BARS_HEIGHT
        parts: list[Any] = [*top, Panel(self._bars(width - 4), title="emotions: latest window, latest utterance (any stream)")]
        streams_panel, used = self._streams(width - 4, room - 3)
        parts.append(streams_panel)
        room -= used
        if self.recent and room - 3 >= 1:
            parts.append(Panel(self._recent(width - 4, room - 3), title="last utterances"))
        yield Group(*parts)

    def _bars(self, inner: int) -> Table:
        bar_width = max(4, min(24, (inner - 22) // 2))  # name column 10, two bars with their values, gaps
        bars = Table.grid(padding=(0, 1))
        bars.add_column("emotion", width=10, no_wrap=True)
        bars.add_column("window", no_wrap=True)
        bars.add_column("utterance", no_wrap=True)
        for emotion in EMOTIONS:
            colour = COLOURS[emotion]
            w, u = self.window.get(emotion, 0.0), self.utterance.get(emotion, 0.0)
            bars.add_row(emotion, Text(f"{bar(w, bar_width)} {w:4.2f}", style=colour), Text(f"{bar(u, bar_width)} {u:4.2f}", style=colour))
        return bars

    def _streams(self, inner: int, rows: int) -> tuple[Panel, int]:
        """The active streams in at most ``rows`` rows (the last one then says how many more there are); its height.

        Columns are as wide as what they hold and the stream id gets the rest; where that leaves an id under
        ``ID_CELLS_WANTED`` cells (a narrow terminal), the latest window's label and confidence give way to it.
        """
        # An empty table after the demo's clip ended read as a broken panel; said in a row of it, this widened the
        # id column until the headers were cut at 80 columns: it is the panel's one line instead.
        if not self.streams:
            ended = f": {self.ended} ended, their utterances below" if self.ended else ""
            return Panel(Text(f"none active{ended}", style="dim", no_wrap=True, overflow="ellipsis"), title="streams"), 3
        shown_streams = self.streams if len(self.streams) <= rows else self.streams[: max(0, rows - 1)]
        lasts = [f"{row.last['label']} {row.last['confidence']:.2f} at {row.last['t_end']:.1f} s" if row.last else "" for _, row in shown_streams]
        nows = [row.current[0] for _, row in shown_streams]
        now_cells = max([len("now"), *map(cell_len, nows)]) + len("conf.")  # two columns
        other_cells = len("last utterance") if not lasts else max(len("last utterance"), *map(cell_len, lasts))
        other_cells += len("utterances") + 2 * 3  # and each column's padding of one either side
        with_now = inner - other_cells - now_cells - 2 * 2 >= ID_CELLS_WANTED
        id_width = ids_width([stream_id for stream_id, _ in shown_streams], inner - other_cells - (now_cells + 2 * 2 if with_now else 0))
        headers: list[str | Column] = ["stream", "now", "conf.", giving_way("last utterance"), "utterances"] if with_now else [
            "stream", giving_way("last utterance"), "utterances"]
        calls = Table(*headers, box=None)
        for column in calls.columns:
            column.no_wrap = column.no_wrap or isinstance(column.header, str)  # all but the one that gives way
        for (stream_id, row), last_text in zip(shown_streams, lasts):
            label, confidence = row.current
            last = cut(last_text, COLOURS.get(row.last["label"], "white")) if row.last else cut("")
            now = [Text(label, style=COLOURS.get(label, "white")), Text(f"{confidence:.2f}" if label != "-" else "")] if with_now else []
            calls.add_row(untrusted(stream_id, id_width), *now, last, str(row.utterances))
        blanks = [""] * (len(headers) - 1)
        more = len(self.streams) - len(shown_streams)
        if more:
            calls.add_row(f"… {more} more", *blanks)
        return Panel(calls, title="streams"), 3 + max(1, len(shown_streams) + (more > 0))

    def _recent(self, inner: int, rows: int) -> Table:
        shown_recent = self.recent[:rows]
        times = [f"{m['t_start']:7.1f}–{m['t_end']:.1f} s" for m in shown_recent]
        id_width = ids_width([message["stream"] for message in shown_recent], inner - (max(map(cell_len, times)) + 9 + 5) - 2 * 4)
        recent = Table("stream", giving_way("time"), giving_way("label"), "conf.", box=None)
        for column in recent.columns:
            column.no_wrap = column.no_wrap or isinstance(column.header, str)  # all but the ones that give way
        for message, span in zip(shown_recent, times):
            recent.add_row(
                untrusted(message["stream"], id_width), cut(span),
                cut(message["label"], COLOURS.get(message["label"], "white")), f"{message['confidence']:.2f}",
            )
        return recent


def same_terminal(stream: Any, other: Any) -> bool:
    """Whether two open files (sys.stderr, which may be None or closed, and a console's) are the same terminal."""
    try:
        return os.isatty(stream.fileno()) and os.ttyname(stream.fileno()) == os.ttyname(other.fileno())
    except (AttributeError, ValueError, OSError):  # None, closed, not a file (io.UnsupportedOperation is an OSError)
        return False


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
        # On stderr (stdout carries --print-utterances' JSON lines) print() must still go to stdout, not through the display.
        # Error and warning lines go above the display only where stderr is its terminal: redirected (2> monitor.log),
        # rich's Live took over sys.stderr all the same and drew them on the terminal, and the log of an exit 1 said
        # nothing of why.
        live = Live(self.state.render(), console=self.console, refresh_per_second=self.refresh, transient=False,
                    redirect_stdout=not self.console.stderr, redirect_stderr=self.console.stderr or same_terminal(sys.stderr, self.console.file))
        with live:
            while not self._stop.wait(1.0 / self.refresh):
                if self.level_source is not None:
                    self.state.level = self.level_source()
                live.update(self.state.render())
            live.update(self.state.render())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
