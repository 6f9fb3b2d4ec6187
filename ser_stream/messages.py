"""The JSON messages subscribers receive (protocol version 1), defined once.

docs/protocol.md documents these. Times are seconds of stream audio.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

PROTOCOL_VERSION = 1


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


class Window(TypedDict):
    type: Literal["window"]
    stream: str
    utterance: int
    t_start: float
    t_end: float
    probabilities: dict[str, float]


class Utterance(TypedDict):
    seq: int  # grows across all streams (and restarts, with --record)
    type: Literal["utterance"]
    stream: str
    id: int
    t_start: float
    t_end: float
    label: str
    confidence: float
    probabilities: dict[str, float]
    windows: int
    latency_ms: float


class Status(TypedDict):
    type: Literal["status"]
    overruns: int
    overrun_samples: int
    input_overflows: int
    queue_depth: int
    latency_ms: dict[str, float]
    dropped: int
    streams: int


class StreamEvent(TypedDict):
    type: Literal["stream_started", "stream_ended"]
    stream: str
    t: float


class Dropped(TypedDict):
    type: Literal["dropped"]
    count: int


Message = dict[str, Any]


def rounded(probabilities: dict[str, float]) -> dict[str, float]:
    return {label: round(float(p), 5) for label, p in probabilities.items()}
