"""GET /metrics: what a Prometheus scraper reads of the monitor — its status, its health now, its process."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import typing

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.clients import subscriber_when_up
from ser_stream.messages import Status
from ser_stream.metrics import STATUS_GAUGES, STATUS_HELP, MonitorCollector, exposition, metrics_registry
from ser_stream.publish import Publisher
from tests.conftest import call_monitor

HELLO = {"type": "hello", "instance": "ab" * 16, "started_at": "2026-12-02T06:00:00.000Z", "model": "ser_cnn.onnx", "provider": "cpu"}
STATUS = {"type": "status", "overruns": 2, "overrun_samples": 16000, "input_overflows": 0, "nonfinite_samples": 0, "queue_depth": 7,
          "behind_seconds": 3.5, "latency_ms": {"median": 41.5, "p95": 88.0}, "streams": 3, "windows": 120, "utterances": 9,
          "refused_streams": 1, "subscribers": 2, "rtp_lost_packets": 4, "a_field_added_later": 5, "a_flag": True,
          "a_fraction_added_later": 2.5}
REPORT = {"status": "ok", "instance": HELLO["instance"], "started_at": HELLO["started_at"], "streams": 1, "queue_depth": 0,
          "behind_seconds": 0.25, "outbox": 0, "outbox_full_waits": 0, "outbox_drops": 0, "seconds_since_worker_step": 0.01}


def scraped(status: dict | None, report: dict = REPORT, healthy: bool = True) -> dict[str, tuple[str, str, dict]]:
    """Metric sample name → (family type, family help, {labels as a sorted tuple: value})."""
    registry = metrics_registry(MonitorCollector(lambda: (status, time.monotonic() - 0.5), lambda: (healthy, report), HELLO))
    body, content_type = exposition(registry, None)
    assert content_type.startswith("text/plain; version=0.0.4")
    samples: dict[str, tuple[str, str, dict]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            kind, help_text, values = samples.setdefault(sample.name, (family.type, family.documentation, {}))
            values[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[name][2][tuple(sorted(labels.items()))]


def test_every_status_field_has_its_own_help_line():
    fields = set(typing.get_type_hints(Status)) - {"type", "latency_ms"}
    assert fields - STATUS_HELP.keys() == set(), "a status field a scraper would see without its own HELP"
    assert STATUS_GAUGES <= fields


def test_a_scraper_reads_the_status_totals_as_counters_and_what_goes_up_and_down_as_gauges():
    samples = scraped(STATUS)
    assert samples["ser_stream_windows_total"][0] == "counter" and value(samples, "ser_stream_windows_total") == 120
    assert value(samples, "ser_stream_overrun_samples_total") == 16000 and value(samples, "ser_stream_rtp_lost_packets") == 4
    assert samples["ser_stream_subscribers"][0] == "gauge" and value(samples, "ser_stream_subscribers") == 2
    assert value(samples, "ser_stream_utterance_latency_seconds", quantile="0.5") == 0.0415  # the status's ms, in seconds
    assert value(samples, "ser_stream_utterance_latency_seconds", quantile="0.95") == 0.088
    assert 0.5 <= value(samples, "ser_stream_status_age_seconds") < 60
    assert samples["ser_stream_overruns_total"][1] == STATUS_HELP["overruns"]
    # a packet declared lost that arrives late after all is taken off the total: a counter never goes down
    assert samples["ser_stream_rtp_lost_packets"][0] == "gauge" and "ser_stream_rtp_lost_packets_total" not in samples
    # a field this code does not know yet is exposed all the same, as a total; a true/false one is not a figure
    assert samples["ser_stream_a_field_added_later_total"][1] == "The status field a_field_added_later (docs/protocol.md)"
    assert value(samples, "ser_stream_a_fraction_added_later_total") == 2.5  # not only whole numbers
    assert not [name for name in samples if "a_flag" in name]


def test_what_health_reads_now_wins_over_the_last_status_and_the_state_is_one_of_four():
    samples = scraped(STATUS, healthy=False, report={**REPORT, "status": "stalled", "seconds_since_worker_step": 6.2})
    assert value(samples, "ser_stream_streams") == 1 and value(samples, "ser_stream_queue_depth") == 0  # the status said 3 and 7
    assert value(samples, "ser_stream_behind_seconds") == 0.25 and value(samples, "ser_stream_seconds_since_worker_step") == 6.2
    assert value(samples, "ser_stream_healthy") == 0
    assert {labels[0][1]: v for labels, v in samples["ser_stream_worker_state"][2].items()} == {
        "starting": 0, "ok": 0, "stalled": 1, "failed": 0}
    assert samples["ser_stream_outbox_full_waits_total"][0] == "counter"


def test_each_health_figure_is_a_gauge_or_a_total_as_it_can_go_down_or_not():
    samples = scraped(STATUS, report={**REPORT, "outbox": 5, "outbox_full_waits": 2, "outbox_drops": 1})
    kinds = {name: samples[f"ser_stream_{name}"][0] for name in ("streams", "queue_depth", "behind_seconds", "outbox", "seconds_since_worker_step")}
    kinds |= {name: samples[f"ser_stream_{name}_total"][0] for name in ("outbox_full_waits", "outbox_drops")}
    assert kinds == {"streams": "gauge", "queue_depth": "gauge", "behind_seconds": "gauge", "outbox": "gauge",
                     "seconds_since_worker_step": "gauge", "outbox_full_waits": "counter", "outbox_drops": "counter"}
    assert value(samples, "ser_stream_outbox") == 5 and value(samples, "ser_stream_outbox_drops_total") == 1


def test_a_scraper_that_asks_for_openmetrics_gets_it_and_one_that_asks_for_nothing_gets_prometheus_text():
    registry = metrics_registry(MonitorCollector(lambda: (STATUS, time.monotonic()), lambda: (True, REPORT), HELLO))
    body, content_type = exposition(registry, "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0") and body.endswith(b"# EOF\n")
    families = {family.name: family for family in openmetrics_families(body.decode())}  # the parser refuses text without # EOF
    assert families["ser_stream_windows"].type == "counter" and families["ser_stream_windows"].samples[0].value == 120
    plain, plain_type = exposition(registry, None)
    assert plain_type.startswith("text/plain; version=0.0.4") and b"# EOF" not in plain


def test_before_the_first_status_a_scraper_gets_the_run_its_health_and_its_process():
    samples = scraped(None, report={**REPORT, "status": "starting", "seconds_since_worker_step": None})
    info = samples["ser_stream_run_info"][2]
    assert [dict(labels) for labels in info] == [{"instance": HELLO["instance"], "model": "ser_cnn.onnx", "provider": "cpu", "version": "0.1.0"}]
    assert value(samples, "ser_stream_start_time_seconds") == 1796191200.0  # 2026-12-02T06:00:00Z
    assert value(samples, "ser_stream_worker_state", state="starting") == 1
    assert "ser_stream_seconds_since_worker_step" not in samples and "ser_stream_windows_total" not in samples
    assert value(samples, "process_open_fds") > 0 and value(samples, "process_resident_memory_bytes") > 0


def get(port: int, path: str = "/metrics", **headers: str) -> tuple[int, dict[str, str], str]:
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    client.request("GET", path, headers=headers)
    response = client.getresponse()
    answer = response.status, dict(response.getheaders()), response.read().decode()
    client.close()
    return answer


def test_metrics_are_served_behind_the_host_check_and_with_a_token_only_to_a_scraper_that_sends_it():
    from ser_stream.publish import AccessConfig

    async def scenario() -> list[tuple[int, dict[str, str], str]]:
        publisher = Publisher("127.0.0.1", 0, access=AccessConfig(token="s3cret"))
        publisher.hello = HELLO
        publisher.metrics = lambda accept: (b"ser_stream_healthy 1.0\n", f"text/plain; asked={accept}")
        await publisher.start()
        host = f"127.0.0.1:{publisher.port}"
        try:
            return [
                await asyncio.to_thread(get, publisher.port, Host=host),
                await asyncio.to_thread(get, publisher.port, Host=host, Authorization="Bearer wrong"),
                await asyncio.to_thread(get, publisher.port, Host=host, Authorization="Bearer s3cret", Accept="application/openmetrics-text"),
                await asyncio.to_thread(get, publisher.port, "/metrics?token=s3cret", Host="attacker.example"),  # DNS rebinding
                (publisher.counters()["refused_token"], {}, ""),
            ]
        finally:
            await publisher.close(0)

    without, wrong, right, rebound, refused = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert without[0] == wrong[0] == 401 and without[1]["WWW-Authenticate"] == "Bearer"
    assert without[2] == "missing or wrong token: send Authorization: Bearer TOKEN\n"
    assert right[0] == 200 and right[2] == "ser_stream_healthy 1.0\n"
    assert right[1]["Content-Type"] == "text/plain; asked=application/openmetrics-text" and right[1]["Cache-Control"] == "no-store"
    assert rebound[0] == 403 and refused[0] == 2


def test_a_monitor_taking_calls_serves_its_figures_to_a_scraper(shipped_model):
    with call_monitor(shipped_model) as (port, _):
        async def hello_then_metrics() -> tuple[dict, str]:
            async with await subscriber_when_up(port) as subscriber:
                hello = json.loads(await subscriber.recv())
                while json.loads(await subscriber.recv())["type"] != "status":  # the figures are the latest status's
                    pass
            return hello, (await asyncio.to_thread(get, port))[2]

        hello, body = asyncio.run(asyncio.wait_for(hello_then_metrics(), 60))
    samples = {sample.name: sample for family in text_string_to_metric_families(body) for sample in family.samples}
    assert samples["ser_stream_run_info"].labels["instance"] == hello["instance"]
    assert samples["ser_stream_healthy"].value == 1 and samples["ser_stream_streams"].value == 0
    assert samples["ser_stream_rtp_lost_packets"].value == 0 and samples["ser_stream_utterances_total"].value == 0
    assert samples["process_open_fds"].value > 0


def test_the_figures_are_the_workers_latest_status_with_what_the_outbox_would_add_read_now():
    """A --record database held by another writer stalls the outbox: the figures read from what it handed on stood
    still for 9 s while their age said under a second. They come from the worker, record failures and subscribers now."""
    from types import SimpleNamespace

    from ser_stream.monitor import Delivery, status_now
    from ser_stream.pipeline import MonitorConfig, Worker

    said: list[dict] = []
    worker = Worker(None, MonitorConfig(), said.append)  # type: ignore[arg-type]  # never steps: no model needed
    publisher = Publisher("127.0.0.1", 0)
    worker.extra_counters.append(publisher.counters)  # as the monitor's: the status counts the subscribers
    delivery = Delivery(publisher, None, SimpleNamespace(failures=4), None, None, False)  # type: ignore[arg-type]
    assert status_now(worker, delivery)[0] is None
    before = time.monotonic()
    worker.publish_status(force=True)
    publisher.subscribers = {"a", "b", "c"}  # type: ignore[assignment]  # connected since the worker built its status
    status, built_at = status_now(worker, delivery)
    assert status is not None and before <= built_at <= time.monotonic()
    assert status["subscribers"] == 3 and status["record_failures"] == 4
    assert said[-1]["subscribers"] == 0  # as the worker built it
    assert {key: value for key, value in status.items() if key != "record_failures"} == {**said[-1], "subscribers": 3}


def test_a_model_name_that_is_not_utf8_is_a_label_with_its_bytes_escaped_not_a_failed_scrape():
    odd = {**HELLO, "model": "m\udcffodel.onnx"}  # a file name of byte 0xff, as Python reads it
    registry = metrics_registry(MonitorCollector(lambda: (STATUS, time.monotonic()), lambda: (True, REPORT), odd))
    body, _ = exposition(registry, None)
    info = next(family for family in text_string_to_metric_families(body.decode()) if family.name == "ser_stream_run_info")
    assert info.samples[0].labels["model"] == "m\\xffodel.onnx"


def test_figures_that_cannot_be_written_are_a_500_saying_why_and_one_warning():
    warnings: list[str] = []

    def broken(accept: str | None) -> tuple[bytes, str]:
        raise UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")

    async def scenario() -> list[tuple[int, dict[str, str], str]]:
        publisher = Publisher("127.0.0.1", 0)
        publisher.hello, publisher.metrics, publisher.warn = HELLO, broken, warnings.append
        await publisher.start()
        try:
            return [await asyncio.to_thread(get, publisher.port, Host=f"127.0.0.1:{publisher.port}") for _ in range(2)]
        finally:
            await publisher.close(0)

    answers = asyncio.run(asyncio.wait_for(scenario(), 60))
    reason = "GET /metrics failed (UnicodeEncodeError: 'utf-8' codec can't encode character '\\udcff' in position 0: surrogates not allowed): please report it"
    assert [(status, body) for status, _, body in answers] == [(500, reason + "\n")] * 2
    assert warnings == [reason]
