"""The publisher's bookkeeping: ingest admission given back and refilled, late joiners told what is live, a catch-up
followed by every live message in the order published, what a shutdown cuts off counted, a worker that fails ending the
monitor with its reason."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import functools
import json
import os
import socket
import struct
import sys
import threading
import types
from collections.abc import Callable

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import ser_stream.publish
from ser_stream.publish import AccessConfig, Keepalive, Publisher, RateLimit, Subscriber
from ser_stream.record import UtteranceLog, read_since
from tests.conftest import utterance


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


def test_a_subscriber_to_one_stream_still_gets_the_messages_of_no_stream():
    """protocol.md: ``?stream=ID`` keeps that stream's messages "plus those of no stream": the status, and an error or
    warning without a ``stream`` (the monitor falling behind, a --record failure) are about every stream."""

    async def scenario() -> list[dict]:
        publisher = Publisher("127.0.0.1", 0)
        publisher.hello = {"type": "hello"}
        await publisher.start()
        try:
            async with connect(f"ws://127.0.0.1:{publisher.port}/?stream=a") as subscriber:
                received = [json.loads(await asyncio.wait_for(subscriber.recv(), 10))]  # hello: it is subscribed
                for message in (
                    {"type": "window", "stream": "b", "n": 1},
                    {"type": "status", "overruns": 0},
                    {"type": "warning", "message": "the monitor is 3.4 s behind live audio"},
                    {"type": "error", "message": "--record calls.db: an utterance was not stored"},
                    {"type": "warning", "stream": "b", "message": "about b"},
                    {"type": "warning", "stream": "a", "message": "about a"},
                ):
                    publisher.publish(message)
                while received[-1].get("stream") != "a":
                    received.append(json.loads(await asyncio.wait_for(subscriber.recv(), 10)))
        finally:
            await publisher.close(0)
        return received

    assert asyncio.run(asyncio.wait_for(scenario(), 60)) == [
        {"type": "hello"},
        {"type": "status", "overruns": 0},
        {"type": "warning", "message": "the monitor is 3.4 s behind live audio"},
        {"type": "error", "message": "--record calls.db: an utterance was not stored"},
        {"type": "warning", "stream": "a", "message": "about a"},
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


def window(stream: str, utterance_id: int, t_start: float) -> dict:
    return {"type": "window", "stream": stream, "utterance": utterance_id, "t_start": t_start, "t_end": t_start + 2.0}


END = {"type": "warning", "message": "END"}


def caught_up_while_publishing(tmp_path, monkeypatch, publish_meanwhile: Callable[[Callable, Callable], None],
                               queue_size: int = 512) -> tuple[list[dict], int]:
    """What a ``?since=0`` subscriber receives, up to an END warning, and the publisher's drop count, when
    ``publish_meanwhile(publish, store)`` runs on the monitor's loop after the catch-up has read its first page: what
    the monitor publishes while a long catch-up is read (a page of one stands in for 500). Three utterances of an
    earlier call are stored, and published, before the subscriber connects."""
    log = UtteranceLog(tmp_path / "calls.db")

    async def scenario() -> tuple[list[dict], int]:
        publisher = Publisher("127.0.0.1", 0, queue_size=queue_size)
        publisher.record_path = log.path
        publisher.hello = {"type": "hello"}
        await publisher.start()
        for number in (1, 2, 3):
            publisher.publish(log.append(utterance("earlier-call", number, t_start=0.0, t_end=2.0, windows=1)))
        loop = asyncio.get_running_loop()

        def pages_with_the_monitor_publishing(path, since, stream=None, until=None, **reading):
            pages = read_since(path, since, stream, until, page=1, **reading)
            yield next(pages)

            async def monitor() -> None:
                publish_meanwhile(publisher.publish, log.append)  # stored first, then published, as the outbox does
                publisher.publish(END)

            asyncio.run_coroutine_threadsafe(monitor(), loop).result(10)
            yield from pages

        monkeypatch.setattr(ser_stream.publish, "read_since", pages_with_the_monitor_publishing)
        received: list[dict] = []
        try:
            async with connect(f"ws://127.0.0.1:{publisher.port}/?since=0", max_queue=None) as subscriber:
                while received[-1:] != [END]:
                    received.append(json.loads(await asyncio.wait_for(subscriber.recv(), 10)))
        finally:
            await publisher.close(0)
        return received, publisher.dropped_total

    try:
        return asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        log.close()


def described(messages: list[dict]) -> list[str]:
    return [" ".join(str(part) for part in (m["type"], m.get("stream"), m.get("id", m.get("utterance"))) if part is not None) for m in messages]


def test_a_call_that_starts_during_a_catch_up_is_received_in_the_order_published(tmp_path, monkeypatch):
    """Its utterance, stored while the catch-up read on, was replayed before its stream_started (still queued), and
    the page took the call for one that had ended."""

    def new_call(publish, store) -> None:
        publish({"type": "stream_started", "stream": "new-call", "t": 0.0})
        publish(window("new-call", 1, 0.0))
        publish(store(utterance("new-call", 1, t_start=0.0, t_end=2.0, windows=1)))

    received, dropped = caught_up_while_publishing(tmp_path, monkeypatch, new_call)
    assert described(received) == [
        "hello", "utterance earlier-call 1", "utterance earlier-call 2", "utterance earlier-call 3", "caught_up",
        "stream_started new-call", "window new-call 1", "utterance new-call 1", "warning",
    ]
    assert dropped == 0


def test_a_stream_restarted_under_its_id_during_a_catch_up_has_every_window_received(tmp_path, monkeypatch):
    """An RTP sender resuming after its idle end, an ingest call reconnecting: the new instance's windows of its
    utterance 1 were skipped, uncounted, as those of the earlier instance's utterance 1, which the catch-up replayed."""

    def resumed(publish, store) -> None:
        publish({"type": "stream_started", "stream": "rtp-0000beef", "t": 0.0})
        publish(window("rtp-0000beef", 1, 0.0))
        publish(store(utterance("rtp-0000beef", 1, t_start=0.0, t_end=2.0, windows=1)))
        publish({"type": "stream_ended", "stream": "rtp-0000beef", "t": 5.0})
        publish({"type": "stream_started", "stream": "rtp-0000beef", "t": 0.0})
        for t_start in (0.0, 0.5, 1.0):  # its utterance 1, still being spoken
            publish(window("rtp-0000beef", 1, t_start))

    received, dropped = caught_up_while_publishing(tmp_path, monkeypatch, resumed)
    after_catch_up = received[described(received).index("caught_up") + 1 :]
    assert [(m["type"], m.get("t_start")) for m in after_catch_up] == [
        ("stream_started", None), ("window", 0.0), ("utterance", 0.0), ("stream_ended", None),
        ("stream_started", None), ("window", 0.0), ("window", 0.5), ("window", 1.0), ("warning", None),
    ]
    assert dropped == 0


def test_a_catch_up_counts_as_dropped_only_what_its_subscriber_never_receives(tmp_path, monkeypatch):
    """Live utterances that overflowed the queue during a catch-up were counted, and announced, as dropped although
    the catch-up replayed every one: a page said it had lost what it showed. Now the queue's 8 are what it gets."""

    def busy(publish, store) -> None:
        for number in range(1, 31):
            publish(store(utterance("live-call", number, t_start=0.0, t_end=2.0, windows=1)))

    received, dropped = caught_up_while_publishing(tmp_path, monkeypatch, busy, queue_size=8)
    live = [m["id"] for m in received if m.get("stream") == "live-call"]
    told = sum(m["count"] for m in received if m["type"] == "dropped")
    assert (live, told, dropped) == (list(range(24, 31)), 23, 23)  # the oldest 23 dropped; the newest 7 and END kept


def stalled_subscriber(port: int, receive_buffer: int | None = 4096, path: str = "/") -> socket.socket:
    """A subscriber that connects and never reads again (a frozen browser tab, a client behind a dead link); its
    socket receives into ``receive_buffer`` bytes (None: the system's default, as a browser's)."""
    client = socket.socket()
    if receive_buffer is not None:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    client.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    return client


async def stalled_with_a_queue(publisher: Publisher) -> tuple[socket.socket, Subscriber]:
    """A stalled subscriber of ``publisher`` (its socket, and the publisher's record of it) with 100 or more messages
    waiting in its queue: published until its socket's buffers are full."""
    client = await asyncio.to_thread(stalled_subscriber, publisher.port)
    while not publisher.subscribers:
        await asyncio.sleep(0.01)
    subscriber = next(iter(publisher.subscribers))
    number = 0
    while len(subscriber.queue) < 100:
        publisher.publish({"type": "warning", "message": f"{number} " + "x" * 1000})
        number += 1
        await asyncio.sleep(0)
    return client, subscriber


def test_what_a_stalled_subscriber_still_has_queued_at_shutdown_is_counted_and_reported(capsys):
    """The shutdown cut such a subscriber off and its queue went with it, counted nowhere: the last status line had
    been written before, and subscriber_drops never grew."""
    from ser_stream.monitor import Outbox, Outputs, Sources, WorkerThread, shut_down
    from ser_stream.pipeline import MonitorConfig, Worker

    async def scenario() -> tuple[int, int, int]:
        publisher = Publisher("127.0.0.1", 0)
        publisher.hello = {"type": "hello"}
        await publisher.start()
        client, subscriber = await stalled_with_a_queue(publisher)
        queued, drops_before = len(subscriber.queue), publisher.dropped_total
        outbox = Outbox(lambda message: None)
        outbox.start()
        worker_thread = WorkerThread(Worker(None, MonitorConfig(), outbox.put), until_all_ended=True)  # type: ignore[arg-type]
        worker_thread.start()
        await shut_down(Sources(), worker_thread, outbox, None, publisher, None, Outputs(asyncio.get_running_loop(), asyncio.Event()))
        client.close()
        return queued, drops_before, publisher.counters()["subscriber_drops"]

    queued, drops_before, drops_after = asyncio.run(asyncio.wait_for(scenario(), 60))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert queued >= 100 and drops_before == 0
    assert 0 < drops_after <= queued  # (the drain time may have sent a few)
    assert warnings == [f"ser-stream: warning: {drops_after} message(s) still queued for subscribers that read too slowly were dropped "
                        f"at shutdown (subscriber drops {drops_after} in all)"]


@pytest.mark.parametrize("how", ["little sent: its ping goes out, unanswered", "its buffers full: the ping cannot go out"])
def test_a_subscriber_that_stops_reading_is_cut_off_and_what_was_queued_for_it_counted(how):
    """A subscriber that reads nothing answers no keepalive ping. websockets closed it (1011) and then dropped it, and
    what was queued for it went with it, counted nowhere; one whose buffers were full before its ping went out was
    never cut off at all (the ping waited behind what it did not read). Now either is cut off, counted in
    subscribers_cut_off, and its queue in subscriber_drops; publishing never waits meanwhile."""
    full = how.startswith("its buffers full")
    # full: cut off once a send has waited the ping and pong times (2.5 s), not the close time too (60 s)
    keepalive = Keepalive(ping_seconds=2.0, pong_seconds=0.5, close_seconds=60.0) if full else Keepalive(0.2, 0.2, 0.2)

    async def scenario() -> tuple[int, tuple[int, str] | None, dict[str, int]]:
        publisher = Publisher("127.0.0.1", 0, keepalive=keepalive)
        publisher.hello = {"type": "hello"}
        await publisher.start()
        client = await asyncio.to_thread(stalled_subscriber, publisher.port)
        try:
            while not publisher.subscribers:
                await asyncio.sleep(0.01)
            subscriber = next(iter(publisher.subscribers))
            number = 0
            while full and len(subscriber.queue) < 100:  # the handler waits on the connection: its buffers are full
                publisher.publish({"type": "warning", "message": f"{number} " + "x" * 1000})
                number += 1
                await asyncio.sleep(0)
            async with asyncio.timeout(30):  # (a bound for a failing test, not a measurement)
                while subscriber in publisher.subscribers:
                    publisher.publish({"type": "warning", "message": f"{number}"})
                    number += 1
                    await asyncio.sleep(0.01)
            close_sent = subscriber.connection.protocol.close_sent
            return len(subscriber.queue), None if close_sent is None else (close_sent.code, close_sent.reason), publisher.counters()
        finally:
            await publisher.close(0)
            client.close()

    queued, close_sent, counters = asyncio.run(scenario())
    # a close frame, when one can be sent, says why; one behind full buffers would never be read: none is sent
    assert close_sent == (None if full else (1011, "keepalive ping timeout"))
    assert counters["subscribers"] == 0 and counters["subscribers_cut_off"] == 1
    assert queued > 0 and counters["subscriber_drops"] == queued  # none overflowed the queue: only these were lost


LABELS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def numbered_window(number: int) -> dict:
    """A window message as a busy monitor publishes them (~230 bytes), numbered so a client can tell which it got."""
    return {"type": "window", "stream": f"rtp-{number % 100:08x}", "utterance": number, "t_start": number / 200, "t_end": number / 200 + 2,
            "probabilities": {label: round(0.125 + (-1) ** index * 0.0123, 4) for index, label in enumerate(LABELS)}}


def text_frames(client: socket.socket, last: dict) -> list[dict]:
    """The messages a raw subscriber reads from its connection, its handshake's response first (server frames are
    unmasked), up to ``last``."""
    stream = client.makefile("rb")
    while stream.readline() != b"\r\n":
        pass
    messages: list[dict] = []
    while messages[-1:] != [last]:
        first, second = stream.read(2)
        length = second & 0x7F
        if length >= 126:
            length = int.from_bytes(stream.read(2 if length == 126 else 8), "big")
        payload = stream.read(length)
        if first & 0x0F == 0x1:  # text; a ping, were the keepalive to send one, is not a message
            messages.append(json.loads(payload))
    return messages


async def publish_while_it_does_not_read(publisher: Publisher, count: int) -> None:
    """Publish ``count`` window messages, then END, to a subscriber that reads nothing meanwhile, letting the publisher
    send after each as a monitor's loop would."""
    while not publisher.subscribers:
        await asyncio.sleep(0.01)
    for number in range(count):
        publisher.publish(numbered_window(number))
        await asyncio.sleep(0)
    publisher.publish(END)


async def read_on(client: socket.socket) -> list[dict]:
    """What a subscriber that stopped reading receives once it reads again, up to END."""
    return await asyncio.wait_for(asyncio.to_thread(text_frames, client, END), 60)  # (a bound for a failing test)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the bound is Linux's: its send buffer grows to 4 MB, its receive buffer starts at 128 KiB")
def test_a_subscriber_that_stops_reading_takes_little_unread_and_what_it_then_misses_is_counted_and_announced():
    """Linux grows a socket's send buffer to 4 MB: a subscriber that stopped reading took some 17,000 window messages
    into its connection before its queue dropped, and counted, the first; cut off, it lost them uncounted. Now its
    connection takes what the socket may hold unsent (SUBSCRIBER_UNSENT_BYTES), websockets' 32 KiB and the client's
    own receive buffer, a quarter of a megabyte; the rest overflows its queue, counted and announced: if it reads again,
    what it receives and what it is told it lost are every message published."""
    published = 20_000  # 4.6 MB

    async def scenario() -> tuple[list[dict], int, int]:
        publisher = Publisher("127.0.0.1", 0, queue_size=64)
        publisher.hello = {"type": "hello"}
        await publisher.start()
        client = await asyncio.to_thread(stalled_subscriber, publisher.port, None)
        try:
            await publish_while_it_does_not_read(publisher, published)
            receive_buffer = client.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # (it grows once the client reads)
            return await read_on(client), publisher.dropped_total, receive_buffer
        finally:
            await publisher.close(0)
            client.close()

    received, dropped, receive_buffer = asyncio.run(scenario())
    windows = [m["utterance"] for m in received if m["type"] == "window"]
    told = [m["count"] for m in received if m["type"] == "dropped"]
    # those it received up to the first it missed: handed to its connection before its queue dropped any
    taken_unread = next((got for got, number in enumerate(windows) if got != number), len(windows))
    unread_bytes = sum(len(json.dumps(numbered_window(number), separators=(",", ":"))) + 4 for number in range(taken_unread))
    # 128 KiB unsent (SUBSCRIBER_UNSENT_BYTES) and a segment past it, websockets' 32 KiB, the client's receive buffer
    cap = 2**17 + 2**16 + 2**15 + receive_buffer
    assert unread_bytes <= cap, f"{taken_unread} messages ({unread_bytes} bytes) taken unread"
    assert len(windows) + sum(told) == published and sum(told) == dropped  # nothing lost uncounted
    assert windows == [*range(taken_unread), *range(published - len(windows) + taken_unread, published)]  # the oldest dropped


def test_a_subscriber_that_pauses_for_15_s_of_a_busy_monitors_messages_then_reads_on_misses_none():
    """A client busy for 15 s (an application busy elsewhere, a browser tab frozen and restored) at 200 window messages a
    second, 100 calls speaking: the 3,000 published meanwhile wait for it, in its queue (--subscriber-queue, 8192) and
    its connection, and it receives every one. Its socket capped at 128 KiB unsent, the connection took ~1,100 of them:
    with the queue of 512 it had before, over 1,000 were dropped."""

    async def scenario() -> tuple[list[dict], int]:
        publisher = Publisher("127.0.0.1", 0)
        publisher.hello = {"type": "hello"}
        await publisher.start()
        client = await asyncio.to_thread(stalled_subscriber, publisher.port, None)
        try:
            await publish_while_it_does_not_read(publisher, 3000)
            return await read_on(client), publisher.dropped_total
        finally:
            await publisher.close(0)
            client.close()

    received, dropped = asyncio.run(scenario())
    assert [m["utterance"] for m in received if m["type"] == "window"] == list(range(3000))
    assert dropped == 0 and not [m for m in received if m["type"] == "dropped"]


@pytest.mark.parametrize("how", ["its network gone during the drain", "the keepalive cuts it off during the drain",
                                 "still stalled when the drain ends"])
def test_a_subscriber_cut_off_during_shutdown_has_its_queue_counted_once(how):
    """Shutdown's drain counted only the subscribers still there when it ended: one whose connection was reset, or
    that the keepalive cut off, meanwhile took its queue with it, counted nowhere (close() returned 0)."""
    keepalive = Keepalive(ping_seconds=2.0, pong_seconds=0.5, close_seconds=0.2) if "keepalive" in how else Keepalive()

    async def scenario() -> tuple[int, int, dict[str, int]]:
        publisher = Publisher("127.0.0.1", 0, keepalive=keepalive)
        publisher.hello = {"type": "hello"}
        await publisher.start()
        client, subscriber = await stalled_with_a_queue(publisher)
        queued = len(subscriber.queue)

        async def reset_once_closing() -> None:
            while not publisher.closing:
                await asyncio.sleep(0)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
            client.close()

        reset = asyncio.create_task(reset_once_closing()) if "network" in how else None
        # the drain ends when the subscriber is gone; 60 s only bounds a failing test
        returned = await publisher.close(drain_seconds=0 if "stalled" in how else 60)
        if reset is not None:
            await reset
        else:
            client.close()
        return queued, returned, publisher.counters()

    queued, returned, counters = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert returned == queued == counters["subscriber_drops"]  # none overflowed its queue: only these were lost
    # close() cutting off one still stalled is the shutdown's doing; one gone during the drain went on its own
    assert counters["subscribers_cut_off"] == (0 if "stalled" in how else 1)


def test_a_subscriber_that_closes_its_connection_is_not_counted_as_cut_off():
    """Leaving is no loss: what was still queued for a subscriber that closed its connection is not counted."""

    async def scenario() -> dict[str, int]:
        # no ping while it is connected: it reads nothing after its hello (its queue full, it takes nothing more), so it
        # cannot answer one, and a ping 0.2 s in once cut it off when a loaded machine kept it connected that long
        publisher = Publisher("127.0.0.1", 0, keepalive=Keepalive(60.0, 0.2, 0.2))
        publisher.hello = {"type": "hello"}
        await publisher.start()
        try:
            async with connect(f"ws://127.0.0.1:{publisher.port}/") as subscriber:
                await subscriber.recv()
                for number in range(50):
                    publisher.publish({"type": "warning", "message": f"{number}"})
            while publisher.subscribers:
                await asyncio.sleep(0.01)
            return publisher.counters()
        finally:
            await publisher.close(0)

    counters = asyncio.run(scenario())
    assert (counters["subscribers_cut_off"], counters["subscriber_drops"]) == (0, 0)


def close_frame(code: int | None, reason: str = "") -> bytes:
    """A client's close frame, masked as a client's must be; ``None``: one without a code, as a browser's close() sends."""
    payload = b"" if code is None else code.to_bytes(2, "big") + reason.encode()
    mask = os.urandom(4)
    return bytes([0x88, 0x80 | len(payload)]) + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


@pytest.mark.parametrize(("code", "cut_off"), [(1011, True), (1002, True), (4000, True), (1000, False), (1001, False), (None, False)])
def test_a_subscriber_that_closes_abnormally_is_cut_off_with_its_queue_counted_and_one_that_leaves_is_not(code, cut_off):
    """Any close a subscriber started counted as its leaving by choice: one whose own keepalive gave up on the monitor
    (1011) took what was still queued for it with it, counted nowhere. Now a close other than 1000 (normal), 1001 (going
    away: a page reloaded or left) or one without a code ends it abnormally: it is cut off and its queue counted, as when
    the monitor cuts it off; one that leaves normally is neither, what was queued for it was not for it."""

    async def scenario() -> tuple[int, int | None, dict[str, int]]:
        publisher = Publisher("127.0.0.1", 0)
        publisher.hello = {"type": "hello"}
        await publisher.start()
        client, subscriber = await stalled_with_a_queue(publisher)
        try:
            await asyncio.to_thread(client.sendall, close_frame(code, "keepalive ping timeout" if code == 1011 else ""))
            async with asyncio.timeout(30):  # (a bound for a failing test, not a measurement)
                while subscriber.connection.protocol.close_rcvd is None:  # the monitor has read its close
                    await asyncio.sleep(0.01)
                # it does not wait for the monitor's answer, stuck behind what it did not read: it resets the connection
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                while subscriber in publisher.subscribers:
                    await asyncio.sleep(0.01)
            return len(subscriber.queue), subscriber.connection.protocol.close_rcvd.code, publisher.counters()
        finally:
            await publisher.close(0)
            client.close()

    queued, code_read, counters = asyncio.run(scenario())
    assert queued >= 100 and code_read == (1005 if code is None else code)
    assert (counters["subscribers_cut_off"], counters["subscriber_drops"]) == ((1, queued) if cut_off else (0, 0))


def test_a_subscriber_whose_own_keepalive_gives_up_on_the_monitor_is_cut_off_and_what_was_queued_for_it_counted():
    """A websockets client that stops reading stops reading its pongs too: its own keepalive (as the monitor's, every
    20 s with 20 s to answer; shorter here) can give up first, closing with 1011. The monitor took that for the client
    leaving: of 8,801 window messages published to one paused 25 s from 19 s after it connected, 3,817 were received and
    the 4,984 others counted nowhere (subscriber_drops 0, subscribers_cut_off 0). Now it is cut off, its queue counted."""

    async def scenario() -> tuple[int, int | None, dict[str, int]]:
        publisher = Publisher("127.0.0.1", 0)  # the monitor's own keepalive (20 s) does not fire
        publisher.hello = {"type": "hello"}
        await publisher.start()
        try:
            async with connect(f"ws://127.0.0.1:{publisher.port}/", ping_interval=1.0, ping_timeout=1.0, close_timeout=0.5) as client:
                await client.recv()  # its hello; from here on it reads nothing
                while not publisher.subscribers:
                    await asyncio.sleep(0.01)
                subscriber = next(iter(publisher.subscribers))
                number = 0
                while len(subscriber.queue) < 100 and subscriber in publisher.subscribers:  # its buffers full, its queue grows
                    publisher.publish(numbered_window(number))
                    number += 1
                    await asyncio.sleep(0)
                async with asyncio.timeout(30):  # (a bound for a failing test, not a measurement)
                    await client.wait_closed()  # its keepalive gave up: no pong came, behind what it did not read
                    while subscriber in publisher.subscribers:
                        await asyncio.sleep(0.01)
            close_sent = client.protocol.close_sent
            return len(subscriber.queue), None if close_sent is None else close_sent.code, publisher.counters()
        finally:
            await publisher.close(0)

    queued, client_closed_with, counters = asyncio.run(scenario())
    assert client_closed_with == 1011 and queued >= 100
    assert (counters["subscribers_cut_off"], counters["subscriber_drops"]) == (1, queued)


@pytest.mark.parametrize("connected_before", [0, 1])
def test_a_subscriber_finds_itself_counted_in_a_status_built_before_it_connected(connected_before):
    """The worker builds each status on its own thread, the publisher's counters among its fields, and the outbox's
    thread hands it to the event loop later. A subscriber that connected in between got that status, its first,
    saying one subscriber fewer than there were (0 for the only one)."""
    from ser_stream.pipeline import MonitorConfig, Worker

    async def scenario() -> list[int]:
        publisher = Publisher("127.0.0.1", 0)
        publisher.hello = {"type": "hello"}
        await publisher.start()
        built: list[dict] = []
        worker = Worker(None, MonitorConfig(), built.append)  # type: ignore[arg-type]
        worker.extra_counters.append(publisher.counters)  # as the monitor does
        url = f"ws://127.0.0.1:{publisher.port}/"
        try:
            async with contextlib.AsyncExitStack() as subscribers:
                clients = [await subscribers.enter_async_context(connect(url)) for _ in range(connected_before)]
                for client in clients:
                    await client.recv()  # hello: it is among the subscribers
                await asyncio.to_thread(worker.publish_status, True)
                clients.append(await subscribers.enter_async_context(connect(url)))
                await clients[-1].recv()
                await asyncio.to_thread(publisher.publish_threadsafe, built[-1])  # the outbox's hand-over
                return [json.loads(await asyncio.wait_for(client.recv(), 10))["subscribers"] for client in clients]
        finally:
            await publisher.close(0)

    assert asyncio.run(scenario()) == [connected_before + 1] * (connected_before + 1)


def database_descriptors(path) -> int:
    """How many of this process's open files are the database or its -wal and -shm."""
    names = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")]
    return sum(name.startswith(str(path)) for name in names)


def test_a_catch_up_that_stops_before_the_databases_end_lets_go_of_the_database(tmp_path, open_log):
    """The catch-up stops at the last utterance published when its subscriber joined; stopping there left its
    connection to the database open, one per ?since= subscriber, whenever more was stored than published."""
    log = open_log(tmp_path / "calls.db")

    async def scenario() -> tuple[list[str], int, int]:
        publisher = Publisher("127.0.0.1", 0)
        publisher.record_path = log.path
        publisher.hello = {"type": "hello"}
        await publisher.start()
        for number in (1, 2, 3):
            publisher.publish(log.append(utterance("call", number, t_start=0.0, t_end=2.0, windows=1)))
        log.append(utterance("call", 4, t_start=0.0, t_end=2.0, windows=1))  # stored, not yet published: the outbox stores first
        before = database_descriptors(log.path)
        try:
            async with connect(f"ws://127.0.0.1:{publisher.port}/?since=0") as subscriber:
                received = [json.loads(await asyncio.wait_for(subscriber.recv(), 10)) for _ in range(5)]
                await asyncio.sleep(0.2)
                during = database_descriptors(log.path)
        finally:
            await publisher.close(0)
        return described(received), before, during

    received, before, during = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert received == ["hello", "utterance call 1", "utterance call 2", "utterance call 3", "caught_up"]
    assert during == before


def database_file_descriptors(path) -> int:
    """How many of this process's open files are the database file itself (its -wal and -shm left out)."""
    names = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")]
    return sum(name == str(path) for name in names)


def stalled_mid_catch_up(port: int) -> socket.socket:
    """A ``?since=0`` subscriber that reads until its first replayed utterance (its catch-up has read a page), then
    no more, so its catch-up stalls with pages left to send, as a page reloaded by a tab that then froze."""
    client = stalled_subscriber(port, path="/?since=0")
    received = b""
    while b'"type":"utterance"' not in received:
        chunk = client.recv(4096)
        assert chunk, f"closed before any utterance came: {received[-200:]!r}"
        received += chunk
    return client


def test_catch_ups_running_at_once_leave_no_descriptor_open_on_the_database_once_they_end(tmp_path, open_log):
    """Each ?since= catch-up read the database on a connection of its own. SQLite keeps a closed connection's
    descriptor open while another connection of the process holds a lock on the file, and the writer's always does
    (WAL): every catch-up that ran at once with others left one open until the monitor exited (a review: 450 at once,
    450 descriptors for weeks; under `ulimit -n 512` thousands of "Too many open files"). Catch-ups now share a few
    connections, each lent for one page: once they end, the database has the writer's descriptor and theirs."""
    from ser_stream.record import CATCH_UP_CONNECTIONS

    log = open_log(tmp_path / "calls.db")
    for number in range(1, 1501):  # ~0.5 MB: more than a subscriber that reads nothing more takes (~0.25 MB)
        log.append(utterance("call", number))
    writer_alone = database_file_descriptors(log.path)
    running_at_once = 3 * CATCH_UP_CONNECTIONS

    async def scenario() -> tuple[int, list[dict]]:
        publisher = Publisher("127.0.0.1", 0)
        publisher.record_path = log.path
        publisher.hello = {"type": "hello"}
        await publisher.start()
        try:
            stalled = [await asyncio.to_thread(stalled_mid_catch_up, publisher.port) for _ in range(running_at_once)]
            for client in stalled:  # each catch-up stopped mid-way: its subscriber gone (a reset: it left data unread)
                client.close()
            while publisher.subscribers:  # each handler has ended its catch-up before it lets go of its subscriber
                await asyncio.sleep(0.01)
            after = database_file_descriptors(log.path)
            async with connect(f"ws://127.0.0.1:{publisher.port}/?since=1497&live=0") as reader:
                last = [json.loads(text) async for text in reader]  # catch-ups still read after the burst
        finally:
            await publisher.close(0)
        return after, last

    after, last = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert writer_alone == 1
    assert after <= writer_alone + CATCH_UP_CONNECTIONS, f"{after} descriptors on the database after {running_at_once} catch-ups ended"
    assert [m.get("seq") for m in last] == [None, 1498, 1499, 1500, None] and last[-1]["type"] == "caught_up"


def test_a_catch_up_only_subscriber_whose_database_cannot_be_read_is_told_so_without_a_promise_of_live_messages(tmp_path):
    """protocol.md: a database that cannot be read is one ``error`` line, "live messages follow" unless the subscriber
    asked for none. A ``&live=0`` catch-up (the page's, after drops) gets none: its error line says only what failed,
    then its connection is closed normally, and the failure is counted in ``failed_catch_ups``."""
    database = tmp_path / "utterances.db"
    database.write_text("not a database\n" * 100)

    async def scenario() -> tuple[list[dict], int | None, dict[str, int]]:
        publisher = Publisher("127.0.0.1", 0)
        publisher.hello = {"type": "hello"}
        publisher.record_path = database
        await publisher.start()
        try:
            async with connect(f"ws://127.0.0.1:{publisher.port}/?since=3&live=0") as catching_up:
                received = [json.loads(text) async for text in catching_up]
                closed = catching_up.close_code
        finally:
            await publisher.close(0)
        return received, closed, publisher.counters()

    received, closed, counters = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert [m["type"] for m in received] == ["hello", "error"] and closed == 1000
    message = received[1]["message"]
    assert message.startswith("?since=3: cannot read the --record database (") and message.endswith(")"), message
    assert counters["failed_catch_ups"] == 1 and counters["subscribers_cut_off"] == counters["subscriber_drops"] == 0


def test_a_connection_that_never_sends_its_request_is_counted_as_a_failed_handshake(monkeypatch):
    """protocol.md: ``failed_handshakes`` counts connections that never became WebSockets, those "slower than the open
    timeout" too ("a port scanner or a health check that only opens TCP"): counted, by cause, once it has passed
    (websockets' 10 s, shortened here)."""
    monkeypatch.setattr(ser_stream.publish, "serve", functools.partial(ser_stream.publish.serve, open_timeout=0.2))

    async def scenario() -> tuple[dict[str, int], dict[str, int]]:
        publisher = Publisher("127.0.0.1", 0)
        publisher.hello = {"type": "hello"}
        await publisher.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", publisher.port)  # opens TCP, sends nothing
            assert await reader.read() == b""  # the monitor gives up on it at the open timeout
            writer.close()
            return dict(publisher.failed_handshakes), publisher.counters()
        finally:
            await publisher.close(0)

    by_cause, counters = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert by_cause == {"cancelled": 1} and counters["failed_handshakes"] == 1


def test_connections_that_cannot_be_accepted_are_counted_once_a_second_however_often_asyncio_tries():
    """protocol.md: ``failed_accepts`` is about how many seconds connections waited unaccepted, not how many tries
    asyncio's accept loop made (up to 100 a round, sometimes a few rounds a second): each failure it reports within a
    second of one counted is not counted again; and the warning is said once for each cause."""
    warnings: list[str] = []

    async def scenario() -> list[int]:
        publisher = Publisher("127.0.0.1", 0)
        publisher.warn = warnings.append
        await publisher.start()
        loop = asyncio.get_running_loop()
        assert publisher.server is not None
        listener = publisher.server.sockets[0]
        # the loop's clock, moved by hand from a whole number of seconds: from the loop's own time, start + 1.0 - start
        # came out under 1.0 when start was just under a power of two (4095-4096 s of uptime), and the failure at 1.0 s
        # was not counted
        clock = [1000.0]
        loop.time = lambda: clock[0]  # type: ignore[method-assign]
        counted = []
        try:
            start = clock[0]
            for offset in (0.0, 0.0, 0.3, 0.9, 1.0, 1.5, 2.5, 2.5):
                clock[0] = start + offset
                loop.call_exception_handler({"message": "socket.accept() out of system resource", "socket": listener,
                                             "exception": OSError(errno.EMFILE, "Too many open files")})
                counted.append(publisher.failed_accepts)
        finally:
            del loop.time
            await publisher.close(0)
        return counted

    counted = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert counted == [1, 1, 1, 1, 2, 2, 3, 3]  # at 0 s, at 1.0 s, at 2.5 s: a failure a second or more after the last counted
    assert len(warnings) == 1 and warnings[0].startswith("connections are not being accepted (Too many open files)")


def test_a_bearer_token_is_taken_whatever_the_case_of_its_scheme():
    """RFC 9110: an authentication scheme is case-insensitive; a client that writes ``bearer`` or ``BEARER`` with the
    right token is let in like one that writes ``Bearer``, and one with the wrong token is still refused (1008)."""

    async def scenario() -> tuple[list[str], int | None]:
        publisher = Publisher("127.0.0.1", 0, access=AccessConfig(token="s3cret-token"))
        publisher.hello = {"type": "hello"}
        await publisher.start()
        try:
            hellos = []
            for scheme in ("Bearer", "bearer", "BEARER"):
                async with connect(f"ws://127.0.0.1:{publisher.port}/", additional_headers={"Authorization": f"{scheme} s3cret-token"}) as ws:
                    hellos.append(json.loads(await asyncio.wait_for(ws.recv(), 10))["type"])
            async with connect(f"ws://127.0.0.1:{publisher.port}/", additional_headers={"Authorization": "bearer wrong"}) as ws:
                await ws.wait_closed()
                refused = ws.close_code
        finally:
            await publisher.close(0)
        return hellos, refused

    assert asyncio.run(asyncio.wait_for(scenario(), 60)) == (["hello"] * 3, 1008)
