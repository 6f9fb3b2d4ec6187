"""GET /metrics: the monitor's status and health in Prometheus' text format, so a call centre's scraper and alerts
see what subscribers and ``--log-status`` see without a WebSocket client of their own."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from ser_stream import __version__
from ser_stream.errors import bytes_as_text
from ser_stream.messages import Message

PREFIX = "ser_stream_"

# Status fields that go up and down; every other number in a status is a total since the monitor started (a counter,
# exposed with _total: it never decreases). latency_ms is its own gauge, by quantile. rtp_lost_packets is a total
# that a packet declared lost and then arriving late takes back (it did arrive, and is counted late): as a counter
# it went 1 → 0 between two scrapes, which Prometheus reads as a reset, so rate() counted the whole total again.
STATUS_GAUGES = frozenset({"queue_depth", "behind_seconds", "streams", "subscribers", "rtp_lost_packets"})

# What each status field counts, for HELP (docs/protocol.md says it in full). A field missing here is still exposed,
# its HELP naming the status field, and a test fails until it has its own line.
STATUS_HELP = {
    "overruns": "Times a live stream's oldest audio was lost because the worker fell more than 10 s behind it",
    "overrun_samples": "Audio lost to overruns, in samples at each stream's own rate, summed",
    "input_overflows": "Input overflows PortAudio reported for microphone streams",
    "nonfinite_samples": "Samples that were NaN, infinite or beyond 1e12, played as silence",
    "queue_depth": "Windows waiting for the worker (0 while it keeps up)",
    "behind_seconds": "How long the oldest audio any live stream has waiting has waited for the worker",
    "streams": "Streams open now",
    "windows": "Windows classified",
    "utterances": "Utterances published",
    "refused_streams": "Calls or streams given no stream (--max-streams open, an id still active, stopping, a refused start)",
    "subscribers": "WebSocket subscribers connected",
    "subscriber_drops": "Messages dropped for subscribers that read too slowly",
    "subscribers_cut_off": "Subscribers whose connection ended other than by their leaving",
    "refused_token": "Requests refused for a missing or wrong token",
    "refused_origin": "Connections refused for an Origin not allowed",
    "refused_ingest_limit": "Ingest connections refused at --max-ingest-connections or its rate",
    "refused_host": "Requests refused for a Host the monitor does not serve",
    "failed_handshakes": "Connections that never became WebSocket connections (port scans, TCP health checks)",
    "failed_accepts": "About how many seconds connections waited and none could be accepted (no descriptor or memory left)",
    "failed_catch_ups": "?since= requests the --record database could not answer",
    "rtp_bad_packets": "Datagrams that are not G.711 RTP",
    "rtp_lost_packets": "RTP packets that never arrived, their time played as silence, since start (one that arrives late after all is taken off)",
    "rtp_late_packets": "RTP packets that arrived after their slot was played, dropped (each once, however many copies came)",
    "rtp_resyncs": "Times an RTP sender restarted its sequence numbers and the call followed",
    "rtp_refused_packets": "RTP packets of calls that got no stream",
    "rtp_wrong_sender_packets": "RTP packets with a call's SSRC from another address, dropped",
    "rtp_not_allowed_packets": "RTP packets from an address outside --rtp-allow, dropped unread",
    "ingest_gaps": "Gaps in ingest calls' media (missing chunks, timestamp jumps), played as silence",
    "ingest_late_chunks": "Repeated, out-of-order or too-late ingest chunks, dropped",
    "ingest_renumbered": "Ingest chunk numbers that jumped and were followed (nothing lost)",
    "ingest_rejected_messages": "Ingest messages answered with an error",
    "ingest_refused_media": "Ingest media frames of calls whose start was refused, dropped",
    "record_failures": "Utterances published but not stored in the --record database",
    "stdout_drops": "Lines not written to a stdout whose reader stopped reading",
    "stderr_drops": "Lines not written to a stderr whose reader stopped reading",
    "outbox_drops": "Event-loop messages dropped because the outbox and its room beyond were full",
    "device_gaps": "Times a microphone was reopened after it stopped or went quiet",
    "device_gap_samples": "Time microphones were away, in samples at their own rate, summed",
}

# /healthz's figures, which are read as the request comes, not from the last status: (name, help, counter?).
HEALTH_FIGURES = (
    ("streams", STATUS_HELP["streams"], False),
    ("queue_depth", STATUS_HELP["queue_depth"], False),
    ("behind_seconds", STATUS_HELP["behind_seconds"], False),
    ("outbox", "Messages waiting to be stored and published", False),
    ("outbox_full_waits", "Times a thread found the outbox full and waited for room", True),
    ("outbox_drops", STATUS_HELP["outbox_drops"], True),
    ("seconds_since_worker_step", "Seconds since the worker last passed over its streams", False),
)
WORKER_STATES = ("starting", "ok", "stalled", "failed")


class MonitorCollector(Collector):
    """The latest status the monitor published, its health read now, and which run and model this is."""

    def __init__(self, latest_status: Callable[[], tuple[Message | None, float]],
                 health: Callable[[], tuple[bool, dict[str, Any]]], hello: Message) -> None:
        self.latest_status, self.health, self.hello = latest_status, health, hello

    def collect(self) -> Iterator[Metric]:
        yield InfoMetricFamily(f"{PREFIX}run", "This run of the monitor and its model", value={
            "version": __version__, "instance": label(self.hello.get("instance")), "model": label(self.hello.get("model")),
            "provider": label(self.hello.get("provider")),
        })
        if isinstance(started_at := self.hello.get("started_at"), str):
            yield GaugeMetricFamily(f"{PREFIX}start_time_seconds", "When this run began, seconds since the Unix epoch",
                                    value=datetime.fromisoformat(started_at.replace("Z", "+00:00")).timestamp())
        healthy, report = self.health()
        yield GaugeMetricFamily(f"{PREFIX}healthy", "1 while the worker steps (GET /healthz 200), 0 when stalled or failed",
                                value=int(healthy))
        state = GaugeMetricFamily(f"{PREFIX}worker_state", "The worker's state as /healthz says it: 1 for the one it is in",
                                  labels=["state"])
        for name in WORKER_STATES:
            state.add_metric([name], int(report.get("status") == name))
        yield state
        for name, help_text, counter in HEALTH_FIGURES:
            if report.get(name) is not None:  # seconds_since_worker_step is null before the worker's first pass
                yield figure(name, help_text, report[name], counter)
        status, received_at = self.latest_status()
        if status is None:
            return
        yield GaugeMetricFamily(f"{PREFIX}status_age_seconds", "Seconds since the worker built the status these figures are from",
                                value=time.monotonic() - received_at)
        latency = GaugeMetricFamily(f"{PREFIX}utterance_latency_seconds", "Utterance latency over the last 1000 utterances, "
                                    "from the audio that ended each to its message (0 before the first)", labels=["quantile"])
        for quantile, key in (("0.5", "median"), ("0.95", "p95")):
            latency.add_metric([quantile], float(status["latency_ms"][key]) / 1000)
        yield latency
        for name, value in status.items():
            if name in ("type", "latency_ms") or name in report or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            yield figure(name, STATUS_HELP.get(name, f"The status field {name} (docs/protocol.md)"), value, name not in STATUS_GAUGES)


def label(value: object) -> str:
    """A label value as UTF-8 can write it: a model file name that is not UTF-8 with its bytes as \\xNN (it made every
    scrape a 500), as classify names such files."""
    return bytes_as_text(str(value if value is not None else "")).encode("utf-8", "backslashreplace").decode("utf-8")


def figure(name: str, help_text: str, value: float, counter: bool) -> Metric:
    """One figure as a counter (a total since start, exposed with _total) or a gauge."""
    family = CounterMetricFamily if counter else GaugeMetricFamily
    return family(f"{PREFIX}{name}", help_text, value=value)


def metrics_registry(collector: MonitorCollector) -> CollectorRegistry:
    """The monitor's figures and its process's (memory, CPU, open descriptors: what leaks would show in)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The registry in the format the scraper's Accept header asks for (Prometheus text, or OpenMetrics), with its type."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
