"""The message schema (ser_stream/messages.py) and docs/protocol.md, which documents it field by field."""

from __future__ import annotations

import re

from ser_stream.messages import MESSAGE_TYPES
from tests.conftest import REPO


def protocol_rows() -> dict[str, str]:
    """Each message type's fields cell in docs/protocol.md's Server → subscriber table, by type."""
    text = (REPO / "docs" / "protocol.md").read_text()
    table = text[text.index("## Server → subscriber"):]
    table = table[:table.index("\n\n", table.index("| type |"))]
    rows = {}
    for line in table.splitlines():
        if match := re.match(r"\| `([a-z_]+)` \|", line):
            rows[match.group(1)] = line.rsplit("|", 2)[1]  # the last cell: the fields
    return rows


def test_every_field_of_every_message_and_every_status_counter_is_named_in_the_protocol_document():
    """The tests check every message they receive against messages.py alone: a field added there (a new status
    counter, say) and sent went out undocumented, every test passing."""
    rows = protocol_rows()
    assert sorted(rows) == sorted(MESSAGE_TYPES)
    unnamed = [
        f"{message_type}.{field}"
        for message_type, definition in MESSAGE_TYPES.items()
        for field in sorted(definition.__required_keys__ | definition.__optional_keys__)
        if field != "type" and f"`{field}`" not in rows[message_type]
    ]
    assert unnamed == []


def test_the_status_latency_p95_is_one_of_the_latencies_measured_as_the_benchmarks_is():
    """The status's p95 was interpolated (numpy's default) while the benchmarks' was an observed latency."""
    from collections import deque
    from types import SimpleNamespace

    from ser_stream.pipeline import Worker

    def status_latency(latencies_ms: list[float]) -> dict[str, float]:
        return Worker.latency_summary(SimpleNamespace(latencies_ms=deque(latencies_ms)))  # type: ignore[arg-type]

    assert status_latency([10.0, 20.0, 30.0, 40.0, 1000.0]) == {"median": 30.0, "p95": 1000.0}  # interpolated: 808.0
    assert status_latency([]) == {"median": 0.0, "p95": 0.0}


def test_a_message_with_a_field_its_type_does_not_define_is_a_field_problem():
    """The tests check every message they receive with ``field_problem``: were an unknown field let through, a field
    sent but never defined (nor documented) would pass them all."""
    from ser_stream.messages import field_problem

    assert field_problem({"type": "dropped", "count": 1}) is None
    assert field_problem({"type": "dropped", "count": 1, "extra": 0}) == "dropped: missing [], unknown ['extra']"
    assert field_problem({"type": "dropped"}) == "dropped: missing ['count'], unknown []"
    assert field_problem({"type": "gossip"}) == "unknown type 'gossip'"


def test_an_utterance_unstored_or_stored_has_its_seq_first():
    """protocol.md: ``seq`` is always an utterance's first key (null for one --record could not store)."""
    from ser_stream.messages import numbered
    from tests.conftest import utterance

    assert list(numbered(utterance("call"), None))[:2] == list(numbered(utterance("call"), 7))[:2] == ["seq", "type"]


def test_the_latency_median_of_an_even_count_is_the_mean_of_the_middle_two_and_none_measured_is_nan():
    """The status's and the benchmarks' median: [10, 20, 30, 40] is 25 (it was once taken as the p95 is, 30); with no
    latency at all there is no figure (NaN), not a zero that reads as instant."""
    import math

    from ser_stream.messages import latency_summary

    assert latency_summary([10.0, 20.0, 30.0, 40.0]) == {"median": 25.0, "p95": 40.0}
    assert latency_summary([12.34, 56.78], decimals=2) == {"median": 34.56, "p95": 56.78}
    assert all(math.isnan(value) for value in latency_summary([]).values())


def test_wall_clock_times_are_utc_iso_8601_to_the_millisecond():
    """protocol.md: ``started_at`` (hello, stream_started) and ``stream_started_at`` are UTC, ISO 8601 to the
    millisecond, ``2026-12-01T04:40:12.345Z``: two calls a moment apart on one reused id are told apart by it."""
    from datetime import UTC, datetime

    from ser_stream.messages import utc_now

    stamp = utc_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
    assert datetime.fromisoformat(stamp).tzinfo == UTC


def test_latencies_are_summarised_to_a_tenth_of_a_millisecond_unless_asked_for_more():
    """The benchmarks' figures are to 0.1 ms (the status asks for 0.01 ms itself)."""
    from ser_stream.messages import latency_summary

    assert latency_summary([12.34, 56.78]) == {"median": 34.6, "p95": 56.8}


def test_a_notice_about_a_stream_names_it_before_its_message_and_one_about_none_has_no_stream_field():
    """protocol.md: an error or warning's ``stream`` comes before its ``message`` on the wire, and is absent (not
    null) for a notice about no stream."""
    from ser_stream.messages import notice

    assert list(notice("warning", "lost 3 packets", "call").items()) == [("type", "warning"), ("stream", "call"), ("message", "lost 3 packets")]
    assert notice("error", "database unreadable") == {"type": "error", "message": "database unreadable"}


def test_probabilities_are_sent_as_plain_floats_to_five_decimals():
    """numpy's float32 is no JSON number (``json.dumps`` refuses it), and its digits past the fifth only lengthen every
    window and utterance message."""
    import json

    import numpy as np

    from ser_stream.messages import rounded

    probabilities = rounded({"angry": np.float32(0.123456789), "calm": np.float64(0.876543211)})
    assert json.dumps(probabilities) == '{"angry": 0.12346, "calm": 0.87654}'


def test_hello_says_the_protocol_version_protocol_md_documents():
    from ser_stream.messages import PROTOCOL_VERSION

    assert (REPO / "docs" / "protocol.md").read_text().splitlines()[0] == f"# WebSocket protocol, version {PROTOCOL_VERSION}"
