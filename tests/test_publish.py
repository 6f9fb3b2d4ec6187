"""The publisher's bookkeeping: ingest admission given back and refilled, late joiners told what is live, a worker
that fails ending the monitor with its reason."""

from __future__ import annotations

import asyncio
import json
import threading
import types

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import ser_stream.publish
from ser_stream.publish import AccessConfig, Publisher, RateLimit


async def ingest_publisher(access: AccessConfig) -> Publisher:
    """A real publisher whose /ingest holds each connection until its client closes it."""
    publisher = Publisher("127.0.0.1", 0, access=access)
    publisher.hello = {"type": "hello"}

    async def ingest(connection) -> None:
        async for _ in connection:
            pass

    publisher.ingest = ingest
    await publisher.start()
    return publisher


async def admitted(url: str) -> bool:
    """Whether an ingest connection is taken (it is then closed again), or refused with 429."""
    try:
        async with connect(url):
            return True
    except InvalidStatus as refusal:
        assert refusal.response.status_code == 429
        return False


def test_an_ingest_connection_that_ends_gives_its_slot_back():
    """With room for one call at a time, calls that follow one another are all taken; two at once are not."""

    async def scenario() -> list[bool]:
        publisher = await ingest_publisher(AccessConfig(max_ingest_connections=1))
        url = f"ws://127.0.0.1:{publisher.port}/ingest"
        taken = []
        try:
            async with connect(url):
                taken.append(await admitted(url))  # a second while the first is open
            for _ in range(3):  # one after another
                for _ in range(500):  # the handler returns just after the client's close
                    if not publisher.ingest_connections:
                        break
                    await asyncio.sleep(0.01)
                taken.append(await admitted(url))
        finally:
            await publisher.close(0)
        return taken

    assert asyncio.run(asyncio.wait_for(scenario(), 60)) == [False, True, True, True]


def test_the_ingest_rate_limit_refills_at_its_rate_up_to_its_burst(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(ser_stream.publish, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    limit = RateLimit(rate=2.0, burst=4.0)
    assert [limit.allow() for _ in range(5)] == [True] * 4 + [False]  # the burst, then nothing
    clock[0] += 0.5  # one token, at 2 a second
    assert [limit.allow() for _ in range(2)] == [True, False]
    clock[0] += 60.0  # a long pause fills the bucket to its burst, no more
    assert [limit.allow() for _ in range(5)] == [True] * 4 + [False]


def test_a_late_subscriber_to_one_stream_is_told_of_that_stream_only():
    """A subscriber that joins mid-call gets hello and the stream_started of each live stream it asked for."""

    async def scenario() -> tuple[list[dict], list[dict]]:
        publisher = Publisher("127.0.0.1", 0)
        publisher.hello = {"type": "hello"}
        await publisher.start()
        try:
            for stream in ("a", "b", "c"):
                publisher.publish({"type": "stream_started", "stream": stream, "t": 0.0})
            publisher.publish({"type": "stream_ended", "stream": "c", "t": 1.0})
            received = {}
            for query in ("?stream=a", ""):
                async with connect(f"ws://127.0.0.1:{publisher.port}/{query}") as subscriber:
                    while not publisher.subscribers:
                        await asyncio.sleep(0.01)
                    publisher.publish({"type": "window", "stream": "b", "n": 1})
                    publisher.publish({"type": "window", "stream": "a", "n": 2})
                    received[query] = []
                    while not received[query] or received[query][-1].get("n") != 2:
                        received[query].append(json.loads(await asyncio.wait_for(subscriber.recv(), 10)))
                while publisher.subscribers:
                    await asyncio.sleep(0.01)
        finally:
            await publisher.close(0)
        return received["?stream=a"], received[""]

    one, every = asyncio.run(scenario())
    assert one == [{"type": "hello"}, {"type": "stream_started", "stream": "a", "t": 0.0}, {"type": "window", "stream": "a", "n": 2}]
    assert every == [
        {"type": "hello"},
        {"type": "stream_started", "stream": "a", "t": 0.0},
        {"type": "stream_started", "stream": "b", "t": 0.0},  # not c: it has ended
        {"type": "window", "stream": "b", "n": 1},
        {"type": "window", "stream": "a", "n": 2},
    ]


def test_a_worker_that_fails_ends_the_monitor_with_exit_1_and_its_reason_in_one_line(tmp_path, shipped_model, monkeypatch, capsys):
    import soundfile

    from ser_stream.cli import DEMO_RECORDING, main
    from ser_stream.inference import EmotionModel

    audio, rate = soundfile.read(DEMO_RECORDING, dtype="float32")
    speech = tmp_path / "speech.wav"
    soundfile.write(speech, audio[: 8 * rate], rate)  # a few utterances: windows reach the model

    loaded_fine = EmotionModel.predict  # the model is run once as it loads, to check its outputs

    def lost_once_running(self, spectrograms):
        if threading.current_thread().name == "worker":
            raise RuntimeError("CUDA error: the device was lost")
        return loaded_fine(self, spectrograms)

    monkeypatch.setattr(EmotionModel, "predict", lost_once_running)
    status = main(["monitor", "--model", str(shipped_model), "--provider", "cpu", "--no-dashboard", "--pace", "fast",
                   "--ws", "127.0.0.1:0", "--source", f"file:{speech}"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert status == 1
    assert errors == ["ser-stream: error: the worker stopped: RuntimeError: CUDA error: the device was lost"]



def test_healthz_answers_a_service_manager_200_or_503_with_its_report_behind_the_host_check():
    """There was no way to ask: GET / stayed 200 while the worker was stuck, /health was 404."""
    import http.client

    state = {"healthy": True}

    async def scenario() -> list[tuple[int, str, dict | None]]:
        publisher = Publisher("127.0.0.1", 0)
        publisher.hello = {"type": "hello"}
        publisher.health = lambda: (state["healthy"], {"status": "ok" if state["healthy"] else "stalled"})
        await publisher.start()
        answers = []

        def get(host: str) -> tuple[int, str, dict | None]:
            client = http.client.HTTPConnection("127.0.0.1", publisher.port, timeout=10)
            client.request("GET", "/healthz", headers={"Host": host})
            response = client.getresponse()
            body = response.read().decode()
            client.close()
            return response.status, response.getheader("Content-Type") or "", json.loads(body) if response.status in (200, 503) else None

        try:
            answers.append(await asyncio.to_thread(get, f"127.0.0.1:{publisher.port}"))
            state["healthy"] = False
            answers.append(await asyncio.to_thread(get, f"127.0.0.1:{publisher.port}"))
            answers.append(await asyncio.to_thread(get, "attacker.example"))  # DNS rebinding: refused as for the page
        finally:
            await publisher.close(0)
        return answers

    assert asyncio.run(asyncio.wait_for(scenario(), 60)) == [
        (200, "application/json", {"status": "ok"}),
        (503, "application/json", {"status": "stalled"}),
        (403, "text/plain; charset=utf-8", None),
    ]


def test_a_message_that_cannot_be_handed_on_ends_the_monitor_with_exit_1_and_its_reason_not_a_hang(tmp_path, shipped_model, monkeypatch, capsys):
    """The outbox thread hands on every message: had it died of a bug, every thread emitting would in time wait for room for ever."""
    import soundfile

    import ser_stream.monitor
    from ser_stream.cli import DEMO_RECORDING, main

    audio, rate = soundfile.read(DEMO_RECORDING, dtype="float32")
    speech = tmp_path / "speech.wav"
    soundfile.write(speech, audio[: 8 * rate], rate)

    handled_fine = ser_stream.monitor.DashboardState.handle

    def broken(self, message):
        if message.get("type") == "utterance":
            raise KeyError("probabilities")
        handled_fine(self, message)

    monkeypatch.setattr(ser_stream.monitor.DashboardState, "handle", broken)
    status = main(["monitor", "--model", str(shipped_model), "--provider", "cpu", "--no-dashboard", "--pace", "fast",
                   "--ws", "127.0.0.1:0", "--source", f"file:{speech}"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert status == 1
    assert errors == ["ser-stream: error: messages could no longer be handed on: KeyError: 'probabilities'"]
