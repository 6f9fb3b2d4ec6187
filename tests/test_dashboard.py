"""The terminal dashboard, rendered to a recording console: bars, labels, stats."""

from __future__ import annotations

from rich.console import Console

from ser_stream import EMOTIONS
from ser_stream.dashboard import DashboardState


def probabilities(top: str) -> dict[str, float]:
    return {e: (0.65 if e == top else 0.05) for e in EMOTIONS}


def test_dashboard_shows_bars_the_last_utterances_and_the_stats():
    state = DashboardState({"type": "hello", "provider": "cpu"})
    state.handle({"type": "stream_started", "stream": "call-1", "t": 0.0})
    state.handle({"type": "window", "stream": "call-1", "utterance": 1, "t_start": 0.0, "t_end": 2.0, "probabilities": probabilities("sad")})
    state.handle({"type": "utterance", "stream": "call-1", "id": 1, "t_start": 0.4, "t_end": 3.1, "label": "angry",
                  "confidence": 0.65, "probabilities": probabilities("angry"), "windows": 3, "latency_ms": 12.0})
    state.handle({"type": "status", "overruns": 2, "overrun_samples": 800, "input_overflows": 1, "queue_depth": 0,
                  "latency_ms": {"median": 12.0, "p95": 30.0}, "streams": 1, "windows": 3, "utterances": 1,
                  "subscribers": 4, "subscriber_drops": 17})
    console = Console(record=True, width=120, color_system=None)
    console.print(state.render())
    text = console.export_text()
    for emotion in EMOTIONS:
        assert emotion in text
    assert "█" in text  # bars are drawn
    assert "0.65" in text  # the window's and the utterance's top probabilities
    utterance_row = next(line for line in text.splitlines() if "call-1" in line and "–" in line)
    assert "0.4–3.1 s" in utterance_row and "angry" in utterance_row and "0.65" in utterance_row
    assert "latency median 12 ms p95 30 ms" in text
    assert "overruns 2" in text and "input overflows 1" in text and "provider cpu" in text
    assert "subscribers 4" in text and "subscriber drops 17" in text  # no loss goes unseen


def test_dashboard_has_one_row_per_active_stream_and_the_totals():
    state = DashboardState({"type": "hello", "provider": "cpu"})
    for call in ("call-a", "call-b", "call-c"):
        state.handle({"type": "stream_started", "stream": call, "t": 0.0})
    state.handle({"type": "window", "stream": "call-a", "utterance": 1, "t_start": 0.0, "t_end": 2.0, "probabilities": probabilities("fearful")})
    state.handle({"type": "utterance", "stream": "call-b", "id": 1, "t_start": 1.0, "t_end": 4.5, "label": "sad",
                  "confidence": 0.71, "probabilities": probabilities("sad"), "windows": 5, "latency_ms": 9.0})
    state.handle({"type": "stream_ended", "stream": "call-c", "t": 3.0})
    state.handle({"type": "status", "utterances": 1, "latency_ms": {}})
    console = Console(record=True, width=140, color_system=None)
    console.print(state.render())
    text = console.export_text()
    row_a = next(line for line in text.splitlines() if "call-a" in line)
    assert "fearful" in row_a and "0.65" in row_a
    row_b = next(line for line in text.splitlines() if "call-b" in line and "sad 0.71 at 4.5 s" in line)
    assert row_b.strip("│ ").split()[-1] == "1"  # its utterance count
    assert "call-c" not in text  # ended: its row is gone
    assert "streams active 2  started 3  ended 1  utterances 1" in text


def test_many_streams_are_summarised_beyond_the_row_limit():
    from ser_stream.dashboard import MAX_STREAM_ROWS

    state = DashboardState({"type": "hello"})
    for index in range(MAX_STREAM_ROWS + 6):
        state.handle({"type": "stream_started", "stream": f"rtp-{index:08x}", "t": 0.0})
    console = Console(record=True, width=140, color_system=None)
    console.print(state.render())
    assert "… 6 more" in console.export_text()


def test_hostile_stream_ids_are_shown_as_text_never_as_markup_or_terminal_controls():
    """An ingest client names its streams: `[/]` once killed the refresh thread, escapes reached the terminal."""
    import io

    hostile = ["[/]", "[bold red]HIJACK[/bold red]", "interview [final].wav", "\x1b]0;pwned\x07\x1b[2J"]
    state = DashboardState({"type": "hello", "provider": "cpu"})
    for stream in hostile:
        state.handle({"type": "stream_started", "stream": stream, "t": 0.0})
        state.handle({"type": "utterance", "stream": stream, "id": 1, "t_start": 0.0, "t_end": 1.0, "label": "calm",
                      "confidence": 0.5, "probabilities": probabilities("calm"), "windows": 1, "latency_ms": 1.0})
    terminal = io.StringIO()
    console = Console(file=terminal, force_terminal=True, width=160, record=True)
    console.print(state.render())
    text = console.export_text()
    for stream in hostile[:3]:
        assert text.count(stream) == 2  # its row among the streams and among the last utterances, verbatim
    assert "\x1b]0;" not in terminal.getvalue() and "\x1b[2J" not in terminal.getvalue()
    assert text.count(ascii(hostile[3])) == 2  # escaped where it is shown
