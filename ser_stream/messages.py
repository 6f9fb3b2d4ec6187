"""The JSON messages subscribers receive (protocol version 1), defined once.

docs/protocol.md documents these; the monitor's tests check every message they
receive against them (``field_problem``). Times are seconds of stream audio.
"""

# No `from __future__ import annotations`: TypedDict reads NotRequired only from evaluated annotations.
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, NotRequired, TypedDict

import numpy as np

PROTOCOL_VERSION = 1

# A worker this far behind live audio (status ``behind_seconds``) is said to be, once, in a warning, on the dashboard and
# the page; and once more when it is back under BEHIND_CAUGHT_UP_SECONDS. At one stream the oldest audio waiting has
# waited for less than one pass of the worker (milliseconds); 2 s is no pause, and leaves a 10 s ring 8 s before it overruns.
BEHIND_WARNING_SECONDS = 2.0
BEHIND_CAUGHT_UP_SECONDS = 1.0


class Hello(TypedDict):
    type: Literal["hello"]
    version: int
    model: str
    labels: list[str]
    provider: str
    sample_rate: int
    window: float
    hop: float
    record: bool  # utterances are stored: ?since=SEQ replays what a subscriber missed
    record_id: str | None  # names the --record database: seqs from another database mean nothing here
    instance: str  # names this run of the monitor: a new one after a restart, so a subscriber can tell
    started_at: str  # when this run began, UTC (ISO 8601)
    # with --record only, added for each subscriber: the last seq published (or stored before this run) when it
    # connected; later ones reach it live, earlier ones are ?since='s. A reconnect after seeing none resumes from here.
    last_seq: NotRequired[int]


class Window(TypedDict):
    type: Literal["window"]
    stream: str
    utterance: int
    t_start: float
    t_end: float
    probabilities: dict[str, float]


class Numbered(TypedDict):
    seq: int | None  # grows across all streams (and restarts, with --record); None: --record failed to store it


class UtteranceResult(TypedDict):
    """An utterance as the worker emits it; the monitor numbers it (``numbered``) before anyone receives it."""

    type: Literal["utterance"]
    stream: str
    # its stream's stream_started.started_at: tells apart the calls stored under one reused id (an RTP SSRC, a file's
    # name across restarts), and places t_start and t_end on the wall clock in the database and in a catch-up
    stream_started_at: str
    id: int
    t_start: float
    t_end: float
    label: str
    confidence: float
    probabilities: dict[str, float]
    windows: int
    latency_ms: float


class Utterance(Numbered, UtteranceResult):
    """An utterance as subscribers receive it: ``seq`` first, then the worker's result."""


class Status(TypedDict):
    type: Literal["status"]
    overruns: int  # loss counters: totals since start, ended streams included
    overrun_samples: int
    input_overflows: int
    nonfinite_samples: int
    queue_depth: int
    behind_seconds: float  # how long the oldest audio a live stream has waiting has waited for the worker
    latency_ms: dict[str, float]
    streams: int
    windows: int
    utterances: int
    refused_streams: int  # streams not taken: at --max-streams, a duplicate id, or while stopping
    subscribers: NotRequired[int]  # from the publisher: absent only where a worker runs without one
    subscriber_drops: NotRequired[int]
    subscribers_cut_off: NotRequired[int]  # gone other than by leaving (1000, 1001, no code): no keepalive answer, a stalled send, a lost network, their keepalive's 1011
    refused_token: NotRequired[int]
    refused_origin: NotRequired[int]
    refused_ingest_limit: NotRequired[int]
    refused_host: NotRequired[int]  # requests for a Host the monitor does not serve (DNS rebinding, or a missing --allow-host)
    failed_handshakes: NotRequired[int]
    failed_accepts: NotRequired[int]  # seconds, about, in which waiting connections could not be accepted (no descriptor or memory)
    failed_catch_ups: NotRequired[int]  # with --record: ?since= answered with an error line, the database unreadable
    rtp_bad_packets: NotRequired[int]  # with an rtp: source
    rtp_lost_packets: NotRequired[int]
    rtp_late_packets: NotRequired[int]
    rtp_resyncs: NotRequired[int]
    rtp_refused_packets: NotRequired[int]
    rtp_wrong_sender_packets: NotRequired[int]  # a call's SSRC from another address (a collision, or spoofing)
    rtp_not_allowed_packets: NotRequired[int]  # from an address outside --rtp-allow: dropped unread
    ingest_gaps: NotRequired[int]  # with --ingest: missing chunks or timestamp jumps, played as silence
    ingest_late_chunks: NotRequired[int]  # with --ingest: repeated or out-of-order chunks, dropped
    ingest_renumbered: NotRequired[int]  # with --ingest: chunk numbers that jumped (renumbered, garbled) and were followed
    ingest_rejected_messages: NotRequired[int]  # with --ingest: messages answered with an error (refused starts included)
    ingest_refused_media: NotRequired[int]  # with --ingest: media frames of calls whose start was refused, dropped unanswered
    record_failures: NotRequired[int]  # with --record: utterances published but not stored
    stdout_drops: NotRequired[int]  # from the monitor: lines for a stdout or stderr whose reader stopped (or fell far behind), not written
    stderr_drops: NotRequired[int]
    outbox_drops: NotRequired[int]  # from the monitor: warnings emitted on the event loop that found the outbox full, past its room for them
    device_gaps: NotRequired[int]  # with a mic source: times the device came back after failing or going quiet
    device_gap_samples: NotRequired[int]  # the time it was away, unheard (its time still passes)


# Status fields that are not counts of something lost or refused: gauges, tallies of work done, the latency summary.
# Every other field is a loss or refusal counter (those there are now, and any added later) and is shown when nonzero.
# rtp_resyncs, ingest_renumbered: renumberings the call followed, nothing lost; failed_handshakes: port scans and health checks.
NOT_LOSSES = frozenset(
    {"type", "queue_depth", "behind_seconds", "latency_ms", "streams", "windows", "utterances", "subscribers", "rtp_resyncs", "ingest_renumbered",
     "failed_handshakes"}
)


def latency_summary(latencies_ms: Sequence[float], decimals: int = 1) -> dict[str, float]:
    """Median (of an even count, the mean of the middle two) and p95: an observed latency, the one at or just above the
    interpolated 95th percentile (numpy's ``method="higher"``: of the sorted latencies, number ⌈0.95 (n − 1)⌉ from 0),
    so a tail is never understated by interpolating towards faster ones; an infinite latency (a clip without an
    utterance at its end) stays infinite. The status's ``latency_ms`` and the benchmarks' latencies alike; NaN for none.
    The median was once taken that way too (30 for [10, 20, 30, 40]); the status's p95 was interpolated."""
    if not latencies_ms:
        return {"median": float("nan"), "p95": float("nan")}
    values = np.asarray(latencies_ms, dtype=np.float64)
    return {"median": round(float(np.median(values)), decimals), "p95": round(float(np.percentile(values, 95, method="higher")), decimals)}


def loss_counts(status: Mapping[str, Any]) -> dict[str, int]:
    """Every loss or refusal counter of a status message, in its order."""
    return {name: value for name, value in status.items() if name not in NOT_LOSSES and isinstance(value, int) and not isinstance(value, bool)}


class StreamEvent(TypedDict):
    type: Literal["stream_started", "stream_ended"]
    stream: str
    t: float


class StreamStarted(StreamEvent):
    started_at: str  # when the stream's source was taken, UTC (ISO 8601): its t = 0, to match a call to its records


class Dropped(TypedDict):
    type: Literal["dropped"]
    count: int


class CaughtUp(TypedDict):
    type: Literal["caught_up"]
    since: int
    last: int


class Notice(TypedDict):
    type: Literal["error", "warning"]
    stream: NotRequired[str]  # absent for a refused ?since=, a bad ingest frame, a sender that never became a stream
    message: str


MESSAGE_TYPES: dict[str, Any] = {
    "hello": Hello,
    "stream_started": StreamStarted,
    "window": Window,
    "utterance": Utterance,
    "status": Status,
    "caught_up": CaughtUp,
    "dropped": Dropped,
    "error": Notice,
    "warning": Notice,
    "stream_ended": StreamEvent,
}


def field_problem(message: dict[str, Any]) -> str | None:
    """Why ``message`` does not match its type's definition above (a missing or unknown field), or None if it does."""
    definition = MESSAGE_TYPES.get(message.get("type"))  # type: ignore[arg-type]
    if definition is None:
        return f"unknown type {message.get('type')!r}"
    missing = definition.__required_keys__ - message.keys()
    unknown = message.keys() - definition.__required_keys__ - definition.__optional_keys__
    if missing or unknown:
        return f"{message['type']}: missing {sorted(missing)}, unknown {sorted(unknown)}"
    return None


Message = Mapping[str, Any]  # any of the above, as the monitor hands it on: each is built as its TypedDict


def numbered(result: UtteranceResult, seq: int | None) -> Utterance:
    """The worker's utterance with its ``seq``, first on the wire."""
    return {"seq": seq, **result}


def notice(kind: Literal["error", "warning"], message: str, stream: str | None = None) -> Notice:
    """An error or warning line, about ``stream`` if given (its field comes before the message, as on the wire)."""
    if stream is None:
        return {"type": kind, "message": message}
    return {"type": kind, "stream": stream, "message": message}


def utc_now() -> str:
    """Now, UTC, to the millisecond (ISO 8601): stream times are seconds from a stream's start; this places them."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rounded(probabilities: dict[str, float]) -> dict[str, float]:
    return {label: round(float(p), 5) for label, p in probabilities.items()}
