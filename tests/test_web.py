"""The web page in a real browser (Debian's Chromium, driven headless by Playwright) against a live monitor."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from benchmarks.clients import free_port
from ser_stream import EMOTIONS
from ser_stream.publish import Publisher
from ser_stream.record import UtteranceLog
from ser_stream.web import serve_page
from tests.conftest import monitor, utterance

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(os.environ.get("SER_STREAM_SCREENSHOTS", ""))  # set to docs/figures to refresh the README's


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (./dev.sh test installs it as root)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def wait_for_port(port: int) -> None:
    """A plain TCP probe: the monitor is listening (a WebSocket probe would count as a subscriber)."""
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("monitor did not start")


def page_utterances(page) -> list[tuple[int, str, str]]:
    return page.eval_on_selector_all(
        ".utterance", "rows => rows.map(r => [Number(r.dataset.seq), r.dataset.label, r.closest('.stream').dataset.stream])"
    )


def wait_until(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.2)


def stored_labels(database: Path) -> dict[int, str]:
    with sqlite3.connect(database) as connection:
        return {seq: json.loads(text)["label"] for seq, text in connection.execute("SELECT seq, message FROM utterances")}


def stream_cards(page) -> dict[str, tuple[str, str, int]]:
    """Each card on the page: its stream, whether it is shown live, the state it says, how many utterances it lists."""
    cards = page.eval_on_selector_all(
        "section.stream",
        "cards => cards.map(c => [c.dataset.stream, c.dataset.state, c.querySelector('.state').textContent, c.querySelectorAll('.utterance').length])",
    )
    return {stream: (shown, says, rows) for stream, shown, says, rows in cards}


class MonitorStandIn:
    """The monitor's real Publisher serving the page, fed by the test as the worker would: every message and
    every moment of a restart is the test's to choose (its own thread and event loop: Playwright owns this one)."""

    def __init__(self, log: UtteranceLog | None, port: int, queue_size: int = 10_000) -> None:
        self.log, self.loop = log, asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.publisher = Publisher("127.0.0.1", port, queue_size=queue_size)  # 10,000: the page reads all a test sends at once
        self.publisher.page = serve_page
        self.publisher.record_path = log.path if log is not None else None
        self.publisher.hello = {
            "type": "hello", "version": 1, "model": "stand-in.onnx", "labels": list(EMOTIONS), "provider": "cpu",
            "sample_rate": 8000, "window": 2.0, "hop": 0.5, "record": log is not None, "record_id": log.record_id if log is not None else None,
            "instance": "0" * 32, "started_at": "2026-12-01T00:00:00.000Z",
        }
        asyncio.run_coroutine_threadsafe(self.publisher.start(), self.loop).result(10)
        self.port = self.publisher.port
        self.url = f"http://127.0.0.1:{self.port}/"

    def publish(self, message: dict) -> None:
        """As the worker does: an utterance is stored first (and so gets its seq), then published."""
        if message["type"] == "utterance" and self.log is not None:
            message = self.log.append(message)
        self.publisher.publish_threadsafe(message)

    def publish_at_once(self, messages: list[dict]) -> None:
        """All in one turn of the event loop, as a burst from the worker: nothing is sent between them, so a
        subscriber's queue of N keeps the last N and the page is told how many were dropped before them."""
        stored = [self.log.append(m) if m["type"] == "utterance" and self.log is not None else m for m in messages]
        self.loop.call_soon_threadsafe(lambda: [self.publisher.publish(message) for message in stored])

    def queued(self) -> int:
        """Messages queued for subscribers and not yet handed to their connections (counted on the stand-in's loop)."""

        async def count() -> int:
            return sum(len(subscriber.queue) for subscriber in self.publisher.subscribers)

        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(10)

    def counters(self) -> dict[str, int]:
        """The publisher's counters as the next status would give them (read on the stand-in's loop)."""

        async def read() -> dict[str, int]:
            return self.publisher.counters()

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(10)

    def publish_unqueued(self, message: dict) -> None:
        """Published once every subscriber's queue is empty: however slowly a page reads, none of its queue is dropped."""
        deadline = time.monotonic() + 30
        while self.queued():
            assert time.monotonic() < deadline, "a subscriber took nothing for 30 s"
            time.sleep(0.005)
        self.publish(message)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.publisher.close(0.5, 0.5, 0.5), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextmanager
def serving(log: UtteranceLog | None = None, port: int = 0, queue_size: int = 10_000) -> Iterator[MonitorStandIn]:
    stand_in = MonitorStandIn(log, port, queue_size)
    try:
        yield stand_in
    finally:
        stand_in.close()


def subscribed(page) -> bool:
    """The page has its hello: what is published from now on reaches it."""
    return page.inner_text("#model") == "stand-in.onnx"


def showing_one_utterance(page, server: MonitorStandIn) -> None:
    """The page open on ``server``, subscribed, showing utterance 1 of a live stream ``call``."""
    page.goto(server.url)
    wait_until(lambda: subscribed(page), 20)
    server.publish({"type": "stream_started", "stream": "call", "t": 0.0})
    server.publish(utterance("call", 1))
    wait_until(lambda: len(page_utterances(page)) == 1, 20)


class WebSocketWitness(threading.Thread):
    """A plain WebSocket subscriber beside the page (its own thread and event loop: Playwright owns this one)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.utterances = port, {}

    def run(self) -> None:
        async def listen() -> None:
            async with connect(f"ws://127.0.0.1:{self.port}/", max_queue=None) as ws:
                async for text in ws:
                    message = json.loads(text)
                    if message["type"] == "utterance":
                        self.utterances[message["seq"]] = message["label"]

        asyncio.run(listen())


def test_the_page_shows_each_utterance_reconnects_and_catches_up_what_it_missed(browser, clips_with_silence, shipped_model, tmp_path):
    path, bounds = clips_with_silence
    port, database = free_port(), tmp_path / "utterances.db"
    first = monitor(port, "--source", f"file:{path}", "--record", str(database), "--await-subscribers", "2")
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    try:
        wait_for_port(port)
        witness = WebSocketWitness(port)
        witness.start()
        page.goto(f"http://127.0.0.1:{port}/")
        wait_until(lambda: len(page_utterances(page)) == len(bounds))
        witness.join(timeout=30)  # the first monitor has ended
        assert {seq: label for seq, label, _ in page_utterances(page)} == witness.utterances  # what subscribers got
        assert first.wait(timeout=60) == 0  # a file source ends the monitor: the page is left without one
        wait_until(lambda: page.inner_text("#connection") == "reconnecting…", 10)
        assert page.inner_text("#model") == "ser_cnn.onnx" and page.inner_text("#provider") == "cpu"
        assert "ended at" in page.inner_text(".stream .state")

        # the monitor comes back and classifies the file again before the page has reconnected
        second = monitor(port, "--source", f"file:{path}", "--pace", "fast", "--record", str(database), "--ingest")
        try:
            wait_until(lambda: len(page_utterances(page)) == 2 * len(bounds))
            wait_until(lambda: page.inner_text("#connection") == "live", 10)
            if SCREENSHOTS.parts:
                page.screenshot(path=str(SCREENSHOTS / "web_dashboard.png"))
            page.screenshot(path=str(tmp_path / "web_dashboard.png"))
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
        shown = page_utterances(page)
    finally:
        page.close()
        if first.poll() is None:
            first.kill()
    labels = stored_labels(database)
    assert sorted(seq for seq, _, _ in shown) == list(range(1, 2 * len(bounds) + 1))  # none missed, none twice
    assert all(label == labels[seq] for seq, label, _ in shown)  # and the caught-up ones are what was stored
    assert {stream for _, _, stream in shown} == {path.name}
    assert (tmp_path / "web_dashboard.png").stat().st_size > 10_000


def test_the_page_asks_for_the_token_once_and_then_shows_live_results(browser, clips_with_silence, shipped_model):
    path, bounds = clips_with_silence
    port = free_port()
    process = monitor(port, "--source", f"file:{path}", "--pace", "fast", "--token", "correct horse", "--await-subscribers", "1")
    page = browser.new_page()
    try:
        wait_for_port(port)
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#login.shown", timeout=20_000)
        assert page.inner_text("#connection") == "token needed"
        page.fill("#token", "correct horse")
        page.click("#login button")
        wait_until(lambda: len(page_utterances(page)) == len(bounds))
    finally:
        page.close()
        process.wait(timeout=60)
    assert process.returncode == 0


def page_watching_its_sockets(browser, init_script: str | None = None) -> tuple[Any, list[str]]:
    """A new page (``init_script`` run before its own) and the URL of every WebSocket it opens, as it opens them."""
    page = browser.new_page()
    if init_script is not None:
        page.add_init_script(init_script)
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    return page, sockets


def test_a_page_of_a_monitor_with_a_token_asks_for_it_before_connecting_so_a_right_login_is_no_refusal(browser, clips_with_silence, shipped_model):
    """A new tab (no token stored) connected without one first: every page opened counted one refused_token, and
    --log-status told the operator "refused token +1". A wrong token still counts."""
    path, bounds = clips_with_silence
    port = free_port()
    process = monitor(port, "--source", f"file:{path}", "--pace", "fast", "--token", "correct horse", "--await-subscribers", "2")
    page, sockets = page_watching_its_sockets(browser)
    try:
        wait_for_port(port)
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#login.shown", timeout=20_000)
        assert page.inner_text("#connection") == "token needed" and sockets == []  # asked before any connection
        page.evaluate("document.getElementById('login').requestSubmit()")  # Connect with nothing typed: no connection
        page.fill("#token", "wrong")
        page.click("#login button")
        wait_until(lambda: page.inner_text("#connection") == "token refused")
        page.fill("#token", " correct horse ")  # pasted with spaces: a monitor takes no token with spaces at its ends
        page.click("#login button")
        wait_until(lambda: page.inner_text("#connection") == "live")

        async def refusals() -> int:
            async with connect(f"ws://127.0.0.1:{port}/", additional_headers={"Authorization": "Bearer correct horse"}) as socket:
                while (message := json.loads(await socket.recv()))["type"] != "status":
                    pass
                return message["refused_token"]

        counted: list[int] = []  # asked from a thread of its own: Playwright's sync API holds this one's event loop
        asker = threading.Thread(target=lambda: counted.append(asyncio.run(refusals())))
        asker.start()
        asker.join(timeout=30)
        assert counted == [1]  # the wrong token, and nothing else
        wait_until(lambda: len(page_utterances(page)) == len(bounds))
    finally:
        page.close()
        process.wait(timeout=60)
    assert process.returncode == 0
    assert len(sockets) == 2  # the wrong token's and the right one's: none for the empty Connect


def test_a_token_kept_from_another_monitor_is_not_sent_to_one_that_asks_for_none(browser, shipped_model):
    """The page sent a token kept in the tab with every connection: reopened on a monitor without --token (the same
    localhost tunnel to another server), it put the other monitor's secret in the query, where logs keep it."""
    port = free_port()
    process = monitor(port, "--ingest")
    page, sockets = page_watching_its_sockets(browser, "sessionStorage.setItem('ser-stream:token', 'another monitor\\'s secret')")
    try:
        wait_for_port(port)
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#connection[data-state=open]", timeout=20_000)
    finally:
        page.close()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert sockets and all("token" not in url and "secret" not in url for url in sockets)


def test_a_page_from_another_origin_cannot_subscribe(browser, shipped_model):
    port = free_port()
    process = monitor(port, "--ingest")
    page = browser.new_page()
    try:
        wait_for_port(port)
        page.set_content("<p>elsewhere</p>")  # about:blank: a foreign (opaque) origin
        outcome = page.evaluate(
            """port => new Promise(done => {
                 const socket = new WebSocket(`ws://127.0.0.1:${port}/`);
                 socket.onopen = () => done("open");
                 socket.onerror = () => done("refused");
               })""",
            port,
        )
        page.goto(f"http://127.0.0.1:{port}/")  # the monitor's own page is fine
        page.wait_for_selector("#connection[data-state=open]", timeout=20_000)
    finally:
        page.close()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert outcome == "refused"


def test_a_monitor_back_on_another_database_is_caught_up_from_that_databases_start_not_from_a_seq_of_the_old_one(browser, tmp_path, open_log):
    """Seqs start at 1 in every --record database: asked for since=50, Tuesday's database would answer nothing."""
    monday, tuesday, wednesday = (open_log(tmp_path / f"{day}.db") for day in ("monday", "tuesday", "wednesday"))
    context = browser.new_context()  # one browser profile: its tabs share localStorage
    page = context.new_page()
    with serving(monday) as first:
        page.goto(first.url)
        wait_until(lambda: subscribed(page), 20)
        for _ in range(50):
            first.publish(utterance("monday-call"))
        wait_until(lambda: len(page_utterances(page)) == 50, 20)
        port = first.port
    for _ in range(3):  # the monitor is back on the same address, recording to a new file; calls before the page is back
        tuesday.append(utterance("tuesday-call"))
    with serving(tuesday, port) as second:
        wait_until(lambda: stream_cards(page).get("tuesday-call", ("", "", 0))[2] == 3, 20)
        for _ in range(2):
            second.publish(utterance("tuesday-call"))
        wait_until(lambda: stream_cards(page)["tuesday-call"][2] == 5, 20)
    for _ in range(7):  # a network blip: the page is away while seven more are stored
        tuesday.append(utterance("tuesday-call"))
    with serving(tuesday, port):
        wait_until(lambda: stream_cards(page)["tuesday-call"][2] == 12, 20)
        shown = page_utterances(page)
        replayed = page.eval_on_selector_all(".utterance.replayed", "rows => rows.map(r => Number(r.dataset.seq))")
    page.close()
    assert sorted(seq for seq, _, stream in shown if stream == "monday-call") == list(range(1, 51))
    assert sorted(seq for seq, _, stream in shown if stream == "tuesday-call") == list(range(1, 13))  # none missed, none twice
    assert sorted(replayed) == [1, 2, 3, 6, 7, 8, 9, 10, 11, 12]  # the live ones are not italic

    # A page opened afresh on a database this browser never watched starts live: a supervisor opening the live view
    # wants the calls now, not the weeks a database may hold, and a seq from Tuesday means nothing in it.
    for _ in range(5):
        wednesday.append(utterance("stored-call"))
    tab = context.new_page()  # the same localStorage, which remembers Tuesday's seq 12
    with serving(wednesday, port) as third:
        tab.goto(third.url)
        wait_until(lambda: subscribed(tab), 20)
        third.publish(utterance("live-call"))
        wait_until(lambda: len(page_utterances(tab)) > 0, 20)
        shown = page_utterances(tab)
    context.close()
    assert shown == [[6, "sad", "live-call"]]


def test_ended_streams_beyond_fifty_are_removed_and_no_card_shows_live_a_stream_that_is_not(browser, tmp_path, open_log):
    """An --ingest monitor running for days once left a card per call: 2000 calls, 1796 cards, 77k DOM nodes."""
    log = open_log(tmp_path / "calls.db")
    page = browser.new_page()
    with serving(log) as first:
        page.goto(first.url)
        wait_until(lambda: subscribed(page), 20)
        for call in range(200):
            first.publish({"type": "stream_started", "stream": f"call-{call}", "t": 0.0})
            first.publish(utterance(f"call-{call}"))
            first.publish({"type": "stream_ended", "stream": f"call-{call}", "t": 3.0})
        for call in range(60):  # still talking when the page loses the monitor
            first.publish({"type": "stream_started", "stream": f"talking-{call}", "t": 0.0})
            first.publish(utterance(f"talking-{call}"))
        wait_until(lambda: "talking-59" in stream_cards(page), 20)
        before = stream_cards(page)
        port = first.port
    log.append(utterance("while-away"))  # a call that began and ended while the page was away
    with serving(log, port) as second:
        for call in range(1, 60):  # talking-0 ended while the page was away; the others are announced again after hello
            second.publish({"type": "stream_started", "stream": f"talking-{call}", "t": 0.0})
        wait_until(lambda: "while-away" in stream_cards(page), 20)
        after = stream_cards(page)
    page.close()
    assert sorted(before) == sorted([f"call-{call}" for call in range(150, 200)] + [f"talking-{call}" for call in range(60)])
    assert all(before[f"call-{call}"] == ("ended", "ended at 3.0 s", 1) for call in range(150, 200))
    ended = {stream for stream, (shown, _, _) in after.items() if shown == "ended"}
    assert ended == {f"call-{call}" for call in range(152, 200)} | {"talking-0", "while-away"}  # the 50 that ended last
    assert after["talking-0"] == ("ended", "ended while disconnected", 1)
    assert after["while-away"] == ("ended", "ended", 1)  # known only from the catch-up: not live
    assert all(after[f"talking-{call}"] == ("started", "started", 1) for call in range(1, 60))  # live again, timeline kept


def test_a_stream_id_5000_characters_long_is_cut_short_on_its_card_and_does_not_widen_the_page(browser):
    """Ingest clients choose stream ids; one that long made its card 51,000 px wide and the page scroll sideways."""
    long_id = "<b>" + "x" * 4997
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    with serving() as server:
        page.goto(server.url)
        wait_until(lambda: subscribed(page), 20)
        for stream in (long_id, "call-2"):
            server.publish({"type": "stream_started", "stream": stream, "t": 0.0})
            server.publish(utterance(stream))
        wait_until(lambda: len(page_utterances(page)) == 2, 20)
        widths = page.evaluate("""() => {
            const card = document.querySelector("section.stream"), name = card.querySelector("h2 .name");
            return {page: document.documentElement.scrollWidth, window: innerWidth, card: card.scrollWidth, cardShown: card.clientWidth,
                    name: name.textContent, title: name.title, state: card.querySelector(".state").getBoundingClientRect().right,
                    cardRight: card.getBoundingClientRect().right};
        }""")
    page.close()
    assert widths["page"] <= widths["window"] and widths["card"] <= widths["cardShown"]
    assert widths["state"] <= widths["cardRight"]  # "started" is still on the card, beside the cut-short id
    assert widths["name"] == long_id == widths["title"]  # as text, never markup; the tooltip has all of it


def test_a_failed_stream_says_so_on_its_card_and_warnings_errors_and_losses_are_shown(browser):
    """The page once ignored `error` and `warning`: a file that could not be read looked like a clean 0 s stream,
    and of the loss counters only overruns were shown."""
    from ser_stream.messages import NOT_LOSSES, Status

    page = browser.new_page(viewport={"width": 1100, "height": 760})
    policy_violations: list[str] = []  # the page's inline script and style must still match the policy's hashes
    page.on("console", lambda message: policy_violations.append(message.text) if "Content Security Policy" in message.text else None)
    counters = [name for name in Status.__annotations__ if name not in NOT_LOSSES]
    failure = "broken.wav: read failed (<img src=x onerror=alert(1)> unexpected end of data)"
    with serving() as server:
        page.goto(server.url)
        wait_until(lambda: subscribed(page), 20)
        server.publish({"type": "stream_started", "stream": "broken.wav", "t": 0.0})
        server.publish({"type": "error", "stream": "broken.wav", "message": failure})
        server.publish({"type": "stream_ended", "stream": "broken.wav", "t": 0.0})
        server.publish({"type": "stream_started", "stream": "good.wav", "t": 0.0})
        server.publish(utterance("good.wav"))
        for sender in range(60):
            server.publish({"type": "warning", "message": f"10.0.0.{sender}:5004: not G.711 RTP (payload type 96)"})
        server.publish({"type": "warning", "stream": "rtp-0000beef", "message": "rtp-0000beef: 3 packet(s) lost"})
        server.publish({"type": "error", "message": "--record calls.db: an utterance was not stored (database is locked)"})
        quiet = {"type": "status", "latency_ms": {"median": 1.0, "p95": 2.0}, "streams": 1, "windows": 5, "utterances": 1,
                 "queue_depth": 0, "subscribers": 1} | dict.fromkeys(counters, 0)
        server.publish(quiet)
        wait_until(lambda: page.inner_text("#losses") == "no losses", 20)
        server.publish(quiet | {name: 100 + index for index, name in enumerate(counters)})
        wait_until(lambda: "record failures" in page.inner_text("#losses"), 20)
        cards = stream_cards(page)
        problems = page.eval_on_selector_all("section.stream", "cards => cards.map(c => [c.dataset.stream, c.dataset.failed || '', c.querySelector('.problem')?.textContent || ''])")
        log = page.eval_on_selector_all("#log li", "rows => rows.map(r => r.textContent)")
        losses = page.inner_text("#losses")
        injected = page.evaluate("() => document.querySelectorAll('img').length")
    page.close()
    assert cards["broken.wav"] == ("ended", "failed, ended at 0.0 s", 0)
    assert cards["good.wav"] == ("started", "started", 1)
    assert sorted(problems) == [["broken.wav", "true", failure], ["good.wav", "", ""]]  # as text: no markup ran
    assert injected == 0
    assert len(log) == 50  # bounded: the newest 50
    assert log[0] == "error: --record calls.db: an utterance was not stored (database is locked)"
    assert log[1] == "warning (rtp-0000beef): rtp-0000beef: 3 packet(s) lost"
    assert log[2] == "warning: 10.0.0.59:5004: not G.711 RTP (payload type 96)"
    for index, name in enumerate(counters):
        assert f"{name.replace('_', ' ')} {100 + index}" in losses
    assert policy_violations == []


def test_the_page_counts_as_losses_exactly_what_the_terminal_dashboard_does(browser):
    """The page kept its own list of counters that are no loss, and missed three the dashboard had added: RTP resyncs,
    renumbered ingest chunks and failed handshakes (port scans, health checks) were shown as losses, in red."""
    from ser_stream.dashboard import losses
    from ser_stream.messages import Status, loss_counts

    every_counter = {name: 100 + index for index, name in enumerate(Status.__annotations__) if name not in ("type", "latency_ms")}
    no_loss = {name: 0 if name in loss_counts(every_counter) else count for name, count in every_counter.items()}
    page = browser.new_page()
    with serving() as server:
        page.goto(server.url)
        wait_until(lambda: subscribed(page), 20)

        def losses_shown(counts: dict[str, int], p95: int) -> str:
            server.publish({"type": "status", "latency_ms": {"median": 1.0, "p95": p95}} | counts)
            wait_until(lambda: f"latency p95 {p95} ms" in page.inner_text("#totals"), 20)  # this status, not the one before
            return page.inner_text("#losses")

        shown = [losses_shown(no_loss, 1), losses_shown(every_counter, 2)]
    page.close()
    assert {"rtp_resyncs", "ingest_renumbered", "failed_handshakes"} <= {name for name, count in no_loss.items() if count}
    assert shown == ["no losses", "losses: " + " · ".join(losses({"type": "status"} | every_counter))]


def test_the_page_shows_a_worker_two_seconds_or_more_behind_live_audio_and_clears_it_once_caught_up(browser):
    """At 300 calls the monitor fell 8 s behind with no loss counted: the page said "no losses" throughout."""
    page = browser.new_page()
    with serving() as server:
        page.goto(server.url)
        wait_until(lambda: subscribed(page), 20)

        def behind_shown(behind: float, p95: int) -> tuple[str, bool]:
            server.publish({"type": "status", "latency_ms": {"median": 1.0, "p95": p95}, "streams": 300, "utterances": 0,
                            "queue_depth": 3600, "behind_seconds": behind, "overruns": 0})
            wait_until(lambda: f"latency p95 {p95} ms" in page.inner_text("#totals"), 20)  # this status, not the one before
            return page.text_content("#behind") or "", page.is_visible("#behind")

        shown = [behind_shown(1.9, 1), behind_shown(8.24, 2), behind_shown(0.3, 3)]
        losses = page.inner_text("#losses")
    page.close()
    assert shown == [("", False), ("behind live audio 8.2 s", True), ("", False)]
    assert losses == "no losses"


def test_a_stream_live_again_under_an_id_that_failed_before_is_not_marked_failed(browser):
    """`--source mic` after the device was fixed and the monitor restarted, an ingest call id reused: the card kept
    the red border, the old reason and, when it ended cleanly, "failed, ended at …"."""
    page = browser.new_page()
    with serving() as server:
        page.goto(server.url)
        wait_until(lambda: subscribed(page), 20)
        server.publish({"type": "stream_started", "stream": "mic", "t": 0.0})
        server.publish({"type": "error", "stream": "mic", "message": "mic: the input device is gone"})
        server.publish({"type": "stream_ended", "stream": "mic", "t": 12.0})
        wait_until(lambda: stream_cards(page).get("mic", ("", "", 0))[1] == "failed, ended at 12.0 s", 20)
        server.publish({"type": "stream_started", "stream": "mic", "t": 0.0})
        server.publish(utterance("mic"))
        wait_until(lambda: len(page_utterances(page)) == 1, 20)
        live = page.eval_on_selector("section.stream", "c => [c.dataset.failed || '', c.querySelector('.problem')?.textContent || '']")
        server.publish({"type": "stream_ended", "stream": "mic", "t": 30.0})
        wait_until(lambda: stream_cards(page)["mic"][0] == "ended", 20)
        ended = stream_cards(page)["mic"]
    page.close()
    assert live == ["", ""]
    assert ended == ("ended", "ended at 30.0 s", 1)


def test_loading_the_page_logs_no_console_error(browser):
    """Every page load logged `Failed to load resource: 404 (Not Found)`: the browser asked for /favicon.ico."""
    page = browser.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("requestfailed", lambda request: console.append(f"request failed: {request.url}"))
    with serving() as server:
        page.goto(server.url)
        wait_until(lambda: subscribed(page), 20)
        page.wait_for_load_state("networkidle")
        page.close()  # before the server stops: a page left open reconnects, and its refusal is logged as an error
    assert [line for line in console if line.startswith(("error", "request failed"))] == []


def test_every_plain_http_answer_says_its_connection_closes_so_a_client_asks_again_on_a_new_one():
    """The 204 for /favicon.ico and the page's 200 lacked the `Connection: close` and `Date` of every other answer:
    the server closes the connection after any answer but an upgrade, so curl sent its next request on a closed one
    ("Connection died, retrying a fresh connect") and Python's http.client failed (RemoteDisconnected)."""
    import http.client
    from email.utils import parsedate_to_datetime

    answers = []
    with serving() as server:
        client = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)  # one client, as a browser keeps one
        for path in ("/favicon.ico", "/", "/favicon.ico", "/nowhere", "/"):
            client.request("GET", path)
            response = client.getresponse()
            response.read()
            date = response.getheader("Date")
            answers.append((path, response.status, response.getheader("Connection"), date is not None and parsedate_to_datetime(date).tzname() == "UTC"))
        client.close()
    assert answers == [("/favicon.ico", 204, "close", True), ("/", 200, "close", True), ("/favicon.ico", 204, "close", True),
                       ("/nowhere", 404, "close", True), ("/", 200, "close", True)]


def plain_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP GET (no upgrade), as a browser asks for the page: status, headers and body."""
    import http.client

    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        client.request("GET", path)
        response = client.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        client.close()


def test_the_page_is_index_html_whole_at_slash_or_index_html_whatever_the_query_utf8_html_and_never_cached():
    """The page is index.html byte for byte (its `…` and `→` too) at / and /index.html, with a query or without (a
    bookmark, a wallboard's URL); it is `text/html; charset=utf-8`, never sniffed as another type, and `no-store`: a
    page kept by a browser would be run against a newer monitor. The favicon's 204 may be kept for a day."""
    from ser_stream.web import PAGE

    def served(answer: tuple[int, dict[str, str], bytes]) -> tuple[int, str | None, str | None, str | None, bytes]:
        status, headers, body = answer
        return status, headers.get("Content-Type"), headers.get("X-Content-Type-Options"), headers.get("Cache-Control"), body

    page_paths = ("/", "/index.html", "/?from=wallboard", "/index.html?from=wallboard")
    with serving() as server:
        pages = {path: served(plain_get(server.port, path)) for path in page_paths}
        favicon = served(plain_get(server.port, "/favicon.ico"))
    assert pages == dict.fromkeys(page_paths, (200, "text/html; charset=utf-8", "nosniff", "no-store", PAGE.read_bytes()))
    assert favicon == (204, None, "nosniff", "max-age=86400", b"")


def test_the_pages_policy_runs_only_its_own_inline_script_and_style_and_lets_no_site_frame_it_or_take_a_form():
    """Its Content-Security-Policy: nothing by default; its one inline script and one style by their SHA-256 (an
    injected script, an event-handler attribute, a changed page: none runs); connections to its own origin only; no
    <base> to move its URLs, no form target, no site framing it (clickjacking). The page of a monitor run with
    --token, which asks for the token, has the same policy: its <meta> tag is neither script nor style."""
    import base64
    import functools
    import hashlib
    import re

    from ser_stream.web import PAGE, TOKEN_REQUIRED

    html = PAGE.read_text(encoding="utf-8")

    def digest(tag: str) -> str:
        (block,) = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return f"'sha256-{base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()}'"

    policies, pages = {}, {}
    for token_required in (False, True):
        with serving() as server:
            server.publisher.page = functools.partial(serve_page, token_required=token_required)
            status, headers, pages[token_required] = plain_get(server.port, "/")
        assert status == 200
        policies[token_required] = {name: values for name, *values in (part.split() for part in headers["Content-Security-Policy"].split(";"))}
    assert policies[False] == policies[True] == {
        "default-src": ["'none'"], "script-src": [digest("script")], "style-src": [digest("style")], "connect-src": ["'self'"],
        "img-src": ["'self'"], "base-uri": ["'none'"], "form-action": ["'none'"], "frame-ancestors": ["'none'"],
    }
    assert TOKEN_REQUIRED.encode() not in pages[False] and pages[True].count(TOKEN_REQUIRED.encode()) == 1


def test_a_page_reloaded_left_or_closed_leaves_by_choice_and_is_not_counted_as_cut_off(browser):
    """A subscriber that closes with any code but 1000, 1001 or none is counted as cut off, with what was queued for
    it: the browser closes the page's connection with 1001 (going away) when it is reloaded, navigated away from or
    closed, so none of these is counted."""
    page = browser.new_page()
    with serving() as server:
        for leave in (page.reload, lambda: page.goto("about:blank"), page.close):
            if page.url != server.url:
                page.goto(server.url)
            wait_until(lambda: subscribed(page) and len(server.publisher.subscribers) == 1, 20)
            (subscriber,) = server.publisher.subscribers
            leave()
            wait_until(lambda subscriber=subscriber: subscriber not in server.publisher.subscribers, 20)
            left_with = subscriber.connection.protocol.close_rcvd
            assert left_with is not None and left_with.code == 1001
        counters = server.publisher.counters()
    assert (counters["subscribers_cut_off"], counters["subscriber_drops"]) == (0, 0)


def test_bidi_controls_in_a_stream_id_are_shown_escaped_and_the_id_isolated(browser):
    """An ingest client names its streams: `a\\u202eevil.exe` showed as "aexe.live", its override reversing the
    id and the card's state after it. The dashboard escapes control characters; the page now does too."""
    spoofed, tricks = "a\u202eevil.exe", "\u2067x\u200f\n\\y"
    page = browser.new_page()
    with serving() as server:
        page.goto(server.url)
        wait_until(lambda: subscribed(page), 20)
        for stream in (spoofed, tricks, "מוקד-3"):
            server.publish({"type": "stream_started", "stream": stream, "t": 0.0})
        server.publish({"type": "warning", "stream": spoofed, "message": "a call that lost packets"})
        wait_until(lambda: len(stream_cards(page)) == 3 and page.is_visible("#log"), 20)
        names = page.eval_on_selector_all(
            "section.stream h2 .name", "names => names.map(n => [n.closest('.stream').dataset.stream, n.textContent, n.title, getComputedStyle(n).unicodeBidi])"
        )
        log = page.inner_text("#log li")
    page.close()
    assert sorted(names) == sorted([
        [spoofed, "'a\\u202eevil.exe'", "'a\\u202eevil.exe'", "isolate"],
        [tricks, "'\\u2067x\\u200f\\n\\\\y'", "'\\u2067x\\u200f\\n\\\\y'", "isolate"],  # a backslash of its own doubled
        ["מוקד-3", "מוקד-3", "מוקד-3", "isolate"],  # right-to-left text is no control: shown as it is, kept to its span
    ])
    assert log == "warning ('a\\u202eevil.exe'): a call that lost packets"


def test_stream_ids_that_differ_never_look_the_same_on_the_page_which_shows_them_as_the_dashboard_does(browser):
    """Backslashes were doubled only in an id with a control character, so `call\\n7` and the typed `call\\\\u000a7` both
    showed `call\\u000a7`; zero-width and other invisible characters were not escaped, so `MZ123`, `MZ1\\u200b23` and
    `MZ12\\ufeff3` all showed `MZ123`. The dashboard tells them apart: an id Python calls not printable is quoted and
    escaped (`ascii()`). The page now shows each id as the dashboard does."""
    from ser_stream.dashboard import untrusted

    ids = ["call\n7", "call\\u000a7", "MZ123", "MZ1\u200b23", "MZ12\ufeff3", "MZ\u206023", "line1\u2028line2", "a\u00a0b",
           "it's \u200b", "say \"hi\"\u200b", "both ' \" \t", "agent \U0001F469\u200d\U0001F4BB", "priv\U000F0001",
           "caf\u00e9 \u901a\u8a71 e\u0301", "\u05de\u05d5\u05e7\u05d3-3", "C:\\calls\\7", "\x7f\x85 \u00ad",
           "'call\\n7'", "'MZ1\\u200b23'", '"quoted"']  # typed in quotes: as the escaped ones would show
    page = browser.new_page()
    with serving() as server:
        page.goto(server.url)
        wait_until(lambda: subscribed(page), 20)
        for stream in ids:
            server.publish({"type": "stream_started", "stream": stream, "t": 0.0})
            server.publish({"type": "warning", "stream": stream, "message": "a call that lost packets"})
        wait_until(lambda: len(stream_cards(page)) == len(ids) and len(page.query_selector_all("#log li")) == len(ids), 20)
        names = page.eval_on_selector_all("section.stream", "cards => cards.map(c => [c.dataset.stream, c.querySelector('.name').textContent, c.querySelector('.name').title])")
        logged = page.eval_on_selector_all("#log li bdi", "names => names.map(n => n.textContent)")
        page.close()
    assert {stream: (text, title) for stream, text, title in names} == {stream: (untrusted(stream).plain,) * 2 for stream in ids}
    assert sorted(logged) == sorted(untrusted(stream).plain for stream in ids)
    assert len({text for _, text, _ in names}) == len(ids)  # no two alike


def test_message_texts_that_differ_never_look_the_same_on_the_page(browser):
    """A text's backslashes were doubled only when it held a character that is not printable: a warning with a real
    U+200B and one with the six typed characters `\\u200b` both showed `MZ1\\u200b23.wav: …` (a regression review, r16).
    A text with such a character is now shown as an id is, quoted and escaped as `ascii()` writes it, and so is a text
    that is itself in quotes: no text shown as it is looks like one escaped."""
    texts = ["MZ1\u200b23.wav: stopped early", "MZ1\\u200b23.wav: stopped early", "'MZ1\\u200b23.wav: stopped early'",
             "line\nbreak", "line\\nbreak", "said 'hi'", "\"quoted\"", "caf\u00e9 \u2026 C:\\calls"]
    page = browser.new_page()
    with serving() as server:
        page.goto(server.url)
        wait_until(lambda: subscribed(page), 20)
        for text in texts:
            server.publish({"type": "warning", "message": text})
        wait_until(lambda: len(page.query_selector_all("#log li")) == len(texts), 20)
        shown = page.eval_on_selector_all("#log li", "rows => rows.map(r => r.textContent)")[::-1]
        page.close()
    assert shown == [
        "warning: 'MZ1\\u200b23.wav: stopped early'",
        "warning: MZ1\\u200b23.wav: stopped early",
        "warning: \"'MZ1\\\\u200b23.wav: stopped early'\"",
        "warning: 'line\\nbreak'",
        "warning: line\\nbreak",
        "warning: said 'hi'",
        "warning: '\"quoted\"'",
        "warning: caf\u00e9 \u2026 C:\\calls",  # printable: as it is
    ]
    assert len(set(shown)) == len(texts)


def test_a_page_that_has_shown_no_utterance_yet_catches_up_what_was_stored_while_it_reconnected(browser, tmp_path, open_log):
    """The page kept no seq until it had shown an utterance: after a restart it reconnected without ?since= and lost
    what the monitor stored before it was back (a review: `utterances 1` in the totals, no card, no word)."""
    log = open_log(tmp_path / "calls.db")
    for _ in range(4):  # stored before the page was opened: it starts live, as a page opened afresh does
        log.append(utterance("yesterday"))
    page = browser.new_page()
    with serving(log) as first:
        page.goto(first.url)
        wait_until(lambda: subscribed(page), 20)
        port = first.port
    log.append(utterance("while-away"))  # the monitor is back on the same database, and a call ends before the page is
    with serving(log, port) as second:
        wait_until(lambda: "while-away" in stream_cards(page), 20)
        second.publish(utterance("live"))
        wait_until(lambda: "live" in stream_cards(page), 20)
        shown = page_utterances(page)
    page.close()
    assert sorted(shown) == [[5, "sad", "while-away"], [6, "sad", "live"]]  # none of yesterday's: the page started live


def header_shown(page) -> dict[str, tuple[str, bool]]:
    """The header's figures: each one's text and whether it is marked stale."""
    return page.eval_on_selector_all(
        "#totals, #losses, #behind", "spans => Object.fromEntries(spans.map(s => [s.id, [s.textContent, s.hasAttribute('data-stale')]]))"
    )


def test_while_the_monitor_is_unreachable_the_page_shows_its_live_cards_and_figures_as_unknown_until_it_is_back(browser):
    """Killed, the monitor left the page showing its calls as live and the last status as current for as long as it
    was away: only a small "reconnecting…" said anything was wrong (a review: 20 s after a SIGKILL, cards `started`)."""
    page = browser.new_page()
    with serving() as first:
        page.goto(first.url)
        wait_until(lambda: subscribed(page), 20)
        for call in ("call-1", "call-2", "call-3"):
            first.publish({"type": "stream_started", "stream": call, "t": 0.0})
        first.publish({"type": "stream_ended", "stream": "call-3", "t": 4.0})
        first.publish({"type": "status", "latency_ms": {"median": 1.0, "p95": 1}, "streams": 2, "utterances": 0,
                       "behind_seconds": 3.0, "overruns": 2})
        wait_until(lambda: page.is_visible("#behind"), 20)
        port = first.port
    wait_until(lambda: page.inner_text("#connection") == "reconnecting…", 20)
    away = stream_cards(page), header_shown(page)
    with serving(None, port) as second:
        second.publish({"type": "stream_started", "stream": "call-2", "t": 0.0})  # still live: announced after hello
        wait_until(lambda: page.inner_text("#connection") == "live" and stream_cards(page)["call-1"][0] == "ended", 20)
        second.publish({"type": "status", "latency_ms": {"median": 1.0, "p95": 2}, "streams": 1, "utterances": 0,
                        "behind_seconds": 0.0, "overruns": 0})
        wait_until(lambda: "latency p95 2 ms" in page.inner_text("#totals"), 20)
        back = stream_cards(page), header_shown(page)
    page.close()
    cards, header = away
    assert cards == {"call-1": ("unknown", "connection lost: state unknown", 0), "call-2": ("unknown", "connection lost: state unknown", 0),
                     "call-3": ("ended", "ended at 4.0 s", 0)}  # an ended call is still known to have ended
    assert header["totals"][0].startswith("as last heard: streams 2") and all(stale for _, stale in header.values())
    assert header["behind"][0] == "behind live audio 3.0 s"
    cards, header = back
    assert cards == {"call-1": ("ended", "ended while disconnected", 0), "call-2": ("started", "started", 0), "call-3": ("ended", "ended at 4.0 s", 0)}
    assert header["totals"][0].startswith("streams 1") and not any(stale for _, stale in header.values())


def call(stream: str, ended: bool = True) -> list[dict]:
    """A call's messages: its start, an utterance, and its end unless it is still going."""
    return [{"type": "stream_started", "stream": stream, "t": 0.0}, utterance(stream)] + ([{"type": "stream_ended", "stream": stream, "t": 3.0}] if ended else [])


def test_after_messages_are_dropped_a_page_of_a_recording_monitor_fetches_what_it_lost_and_settles_each_card(browser, tmp_path, open_log):
    """`dropped` was only counted: with a queue of 4 and 12 calls at once the page showed none of the 12 utterances
    stored, a call's card stayed `started` after its stream_ended was dropped, and three calls had no card."""
    log = open_log(tmp_path / "calls.db")
    page = browser.new_page()
    sockets: list[Any] = []
    open_at_once: list[int] = []  # how many of the page's sockets are open, as each one opens or closes

    def opened(socket) -> None:
        sockets.append(socket)
        open_at_once.append(sum(not s.is_closed() for s in sockets))
        socket.on("close", lambda _: open_at_once.append(sum(not s.is_closed() for s in sockets)))

    page.on("websocket", opened)
    with serving(log, queue_size=4) as server:
        page.goto(server.url)
        wait_until(lambda: subscribed(page), 20)
        server.publish({"type": "stream_started", "stream": "ends-unheard", "t": 0.0})
        wait_until(lambda: "ends-unheard" in stream_cards(page), 20)
        burst = [utterance("ends-unheard"), {"type": "stream_ended", "stream": "ends-unheard", "t": 3.0}]
        for number in range(6):
            burst += call(f"call-{number}")
        server.publish_at_once(burst + call("talking-1", ended=False) + call("talking-2", ended=False))
        wait_until(lambda: len(page_utterances(page)) == 9, 20)  # every one stored, ends-unheard's too
        for number in range(3):  # more bursts while the page catches up: one reconnect at a time, backing off
            server.publish_at_once([m for n in range(4) for m in call(f"later-{number}-{n}")])
        wait_until(lambda: len(page_utterances(page)) == 21 and "utterances fetched again" in page.inner_text("#dropped"), 30)
        cards, shown, dropped = stream_cards(page), page_utterances(page), page.inner_text("#dropped")
        wait_until(lambda: len(server.publisher.subscribers) == 1, 20)  # the connections it replaced are gone
        counters = server.publisher.counters()
    page.close()
    assert sorted(seq for seq, _, _ in shown) == list(range(1, 22))  # none missed, none twice
    assert cards["ends-unheard"] == ("ended", "ended while messages were dropped", 1)
    assert all(cards[f"call-{number}"] == ("ended", "ended", 1) for number in range(6))  # known from the database only
    assert cards["talking-1"] == cards["talking-2"] == ("started", "started", 1)
    count, said = dropped.split(" ", 1)
    assert int(count) >= 20 and said == (
        "messages dropped for this page (it read too slowly): its utterances fetched again; windows, warnings and errors among them are lost"
    )
    # at most one catch-up beside the live connection, at most one a burst, and the live connection read throughout
    assert max(open_at_once) <= 2 and 2 <= len(sockets) <= 1 + 4 and 0 not in open_at_once[:-1]
    assert counters["subscribers_cut_off"] == 0  # it closes its catch-up connection with 1000: leaving, not cut off


# A page that takes 20 ms over each message it gets, on any of its connections (a busy laptop, a slow tab): what the
# browser has received and the page not yet read waits in the browser.
SLOW_PAGE = """(() => {
  const Native = WebSocket;
  window.WebSocket = class extends Native {
    set onmessage(handler) {
      super.onmessage = (event) => { const until = performance.now() + 20; while (performance.now() < until) {} handler(event); };
    }
  };
})()"""


def test_a_slow_page_fetching_what_was_dropped_loses_nothing_else_its_connection_brought(browser, tmp_path, open_log):
    """After a `dropped` the page opened a new connection (`?since=`) and, at its hello, closed the one it had:
    Chromium threw away what that one still held unread (a review: of 312 windows and 30 warnings a slow page handled
    155 and 15, and a stream's `error` never came, its card `ended while messages were dropped` without its failure).
    Nothing counted them. The page now reads its connection throughout, fetching the dropped utterances on another."""
    log = open_log(tmp_path / "calls.db")
    page = browser.new_page()
    page.add_init_script(SLOW_PAGE)
    sockets: list[Any] = []
    page.on("websocket", lambda socket: sockets.append(socket))
    padding = "x" * 16_000  # big messages: the browser holds a backlog of them while the page reads slowly
    window = {"type": "window", "stream": "call", "utterance": 1, "t_start": 0.0, "t_end": 2.0, "probabilities": dict.fromkeys(EMOTIONS, 0.125), "pad": padding}
    with serving(log, queue_size=8) as server:
        page.goto(server.url)
        wait_until(lambda: subscribed(page), 20)
        for stream in ("call", "mic-2"):
            server.publish({"type": "stream_started", "stream": stream, "t": 0.0})
        wait_until(lambda: len(stream_cards(page)) == 2, 20)
        server.publish_at_once(  # 4 dropped: a call's start and 3 warnings
            [{"type": "stream_started", "stream": "quiet-call", "t": 0.0}] + [{"type": "warning", "stream": "call", "message": f"burst-{n}", "pad": padding} for n in range(11)]
        )
        calls = {50: {"type": "stream_started", "stream": "brief", "t": 0.0}, 60: {"type": "stream_ended", "stream": "brief", "t": 1.0},
                 70: {"type": "stream_started", "stream": "later", "t": 0.0}}  # before, during or after the catch-up
        for n in range(200):  # each one once the queues are empty: nothing more is dropped
            server.publish_unqueued(calls.get(n) or ({"type": "warning", "stream": "call", "message": f"after-{n}", "pad": padding} if n % 10 == 0 else window))
        server.publish_unqueued({"type": "error", "stream": "mic-2", "message": "microphone input: device unplugged"})
        server.publish_unqueued({"type": "stream_ended", "stream": "mic-2", "t": 3.0})
        server.publish_unqueued({"type": "warning", "message": "the last"})
        wait_until(lambda: page.inner_text("#log li") == "warning: the last" and "fetched again" in page.inner_text("#dropped"), 60)
        logged = page.eval_on_selector_all("#log li", "rows => rows.map(r => r.textContent)")
        cards, dropped = stream_cards(page), page.inner_text("#dropped")
        problem = page.eval_on_selector("[data-stream='mic-2']", "c => c.querySelector('.problem')?.textContent || ''")
        live_connection_open = not sockets[0].is_closed()
        page.close()
    assert logged == (["warning: the last", "error (mic-2): microphone input: device unplugged"]
                      + [f"warning (call): after-{n}" for n in range(190, -1, -10) if n not in calls] + [f"warning (call): burst-{n}" for n in range(10, 2, -1)])
    assert cards == {"call": ("started", "started", 0), "mic-2": ("ended", "failed, ended at 3.0 s", 0), "quiet-call": ("started", "started", 0),
                     "brief": ("ended", "ended at 1.0 s", 0), "later": ("started", "started", 0)}
    assert problem == "microphone input: device unplugged"
    assert dropped == "4 messages dropped for this page (it read too slowly): its utterances fetched again; windows, warnings and errors among them are lost"
    assert live_connection_open and len(sockets) == 2  # the catch-up's, closed once it had caught up


def test_a_pages_catch_up_after_drops_is_no_subscriber_so_every_drop_the_monitor_counts_is_one_the_page_was_told_of(
        browser, tmp_path, open_log, monkeypatch):
    """The catch-up connection (`?since=`, closed by the page at caught_up) was a full subscriber: live messages queued
    for it overflowed its queue, counted in subscriber_drops though no `dropped` ever told anyone (the page closed it
    first), and status said 2 subscribers with one page open. It now asks `&live=0`: no live messages, no queue."""
    import ser_stream.publish

    log = open_log(tmp_path / "calls.db")
    catching_up, go_on = threading.Event(), threading.Event()
    read_since = ser_stream.publish.read_since

    def held_open(*args, **kwargs):  # the catch-up waits here, its connection open, until the test has published
        catching_up.set()
        go_on.wait(30)
        yield from read_since(*args, **kwargs)

    monkeypatch.setattr(ser_stream.publish, "read_since", held_open)
    page = browser.new_page()
    with serving(log, queue_size=4) as server:
        showing_one_utterance(page, server)
        server.publish_at_once([utterance("call", number) for number in range(2, 9)])  # 3 dropped: a catch-up follows
        assert catching_up.wait(30)
        counted_while_catching_up = server.counters()
        for number in range(10):  # read by the live connection one by one: more than a queue of 4 while it catches up
            server.publish({"type": "warning", "message": f"meanwhile-{number}"})
            wait_until(lambda: page.inner_text("#log li") == f"warning: meanwhile-{number}", 20)  # noqa: B023
        go_on.set()
        wait_until(lambda: len(page_utterances(page)) == 8 and "fetched again" in page.inner_text("#dropped"), 20)
        told = page.evaluate("state.dropped")
        counted = server.counters()
        page.close()
    assert counted_while_catching_up["subscribers"] == 1
    assert told == 3 and counted["subscriber_drops"] == 3 and counted["subscribers_cut_off"] == 0


@pytest.mark.parametrize("back_on", ["another database", "no database"])
def test_utterances_dropped_before_the_monitor_came_back_on_another_database_are_said_to_be_beyond_fetching(browser, tmp_path, open_log, back_on):
    """Dropped messages not yet fetched again when the monitor restarted on another database (or without --record):
    the header said `fetching its utterances again…` for ever (a review), though they were in the old database."""
    first_log = open_log(tmp_path / "monday.db")
    page = browser.new_page()
    with serving(first_log, queue_size=4) as first:
        showing_one_utterance(page, first)
        first.publish_at_once([utterance("call", number) for number in range(2, 10)])  # 4 dropped; then the monitor stops
        port = first.port
    second_log = open_log(tmp_path / "tuesday.db") if back_on == "another database" else None
    with serving(second_log, port) as second:

        def heard_from_the_second() -> bool:  # on the connection the page keeps (one asking ?since= a Monday seq is not)
            second.publish({"type": "status", "latency_ms": {"median": 1.0, "p95": 42}, "streams": 0, "utterances": 0})
            return "latency p95 42 ms" in page.inner_text("#totals")

        wait_until(heard_from_the_second, 20)
        dropped = page.inner_text("#dropped")
        page.close()
    assert dropped == {
        "another database": "4 messages dropped for this page (it read too slowly): its utterances could not be fetched again (the monitor came back on another database)",
        "no database": "4 messages lost for this page (it read too slowly): the monitor runs without --record, so they cannot be fetched again",
    }[back_on]


def test_utterances_fetched_again_after_drops_take_their_place_in_the_timeline_newest_first(browser, tmp_path, open_log):
    """Fetched again, the dropped utterances were put on top, above the newer ones the page had meanwhile (a review:
    seqs 4, 3, 2, italic, above 8, 7, 6, 5, 1). The timeline is newest first, by seq."""
    log = open_log(tmp_path / "calls.db")
    page = browser.new_page()
    with serving(log, queue_size=4) as server:
        page.goto(server.url)
        wait_until(lambda: subscribed(page), 20)
        server.publish({"type": "stream_started", "stream": "call", "t": 0.0})
        server.publish(utterance("call", 1, 0.5, 2.5))
        wait_until(lambda: len(page_utterances(page)) == 1, 20)
        server.publish_at_once([utterance("call", number, 3.0 * number, 3.0 * number + 2) for number in range(2, 9)])  # 3 dropped
        wait_until(lambda: len(page_utterances(page)) == 8 and "fetched again" in page.inner_text("#dropped"), 20)
        timeline = page.eval_on_selector_all(
            "section.stream .utterance", "rows => rows.map(r => [Number(r.dataset.seq), r.querySelector('.time').textContent, r.classList.contains('replayed')])"
        )
        page.close()
    assert timeline == [[seq, f"{3.0 * seq:.1f}–{3.0 * seq + 2:.1f} s", seq in (2, 3, 4)] for seq in range(8, 1, -1)] + [[1, "0.5–2.5 s", False]]


def test_an_utterance_the_database_failed_to_store_stays_where_it_came_and_newer_ones_go_above_it(browser, tmp_path, open_log):
    """A live utterance --record failed to store (published with seq null) stayed above every newer row for good: rows
    were placed by seq and those without one passed over (a regression review, r16: null 2.0–3.0 s, then 4, 3, 2, 1)."""
    log = open_log(tmp_path / "calls.db")
    page = browser.new_page()
    with serving(log) as server:
        page.goto(server.url)
        wait_until(lambda: subscribed(page), 20)
        server.publish({"type": "stream_started", "stream": "call", "t": 0.0})
        server.publish(utterance("call", 1, 0.0, 1.0))  # seq 1
        server.publisher.publish_threadsafe(utterance("call", 1, 2.0, 3.0) | {"seq": None})  # not stored (disk full)
        for number in range(3):  # seqs 2, 3, 4
            server.publish(utterance("call", 1, 4.0 + 2 * number, 5.0 + 2 * number))
        wait_until(lambda: len(page_utterances(page)) == 5, 20)
        timeline = page.eval_on_selector_all("section.stream .utterance", "rows => rows.map(r => [r.dataset.seq, r.querySelector('.time').textContent])")
        page.close()
    assert timeline == [["4", "8.0–9.0 s"], ["3", "6.0–7.0 s"], ["2", "4.0–5.0 s"], ["null", "2.0–3.0 s"], ["1", "0.0–1.0 s"]]


def test_after_messages_are_dropped_a_page_of_a_monitor_without_record_says_they_are_lost_and_settles_the_cards_it_can(browser):
    """Without --record nothing can be fetched again: the page says so, and ends a card whose stream_ended was
    dropped once a status's count of live streams shows it is not live."""
    page, sockets = page_watching_its_sockets(browser)
    with serving(queue_size=4) as server:
        page.goto(server.url)
        wait_until(lambda: subscribed(page), 20)
        for number in range(5):  # one by one: nothing is dropped yet
            server.publish({"type": "stream_started", "stream": f"call-{number}", "t": 0.0})
            wait_until(lambda count=number + 1: len(stream_cards(page)) == count, 20)
        window = {"type": "window", "utterance": 1, "t_start": 0.0, "t_end": 2.0, "probabilities": dict.fromkeys(EMOTIONS, 0.125)}
        status = {"type": "status", "latency_ms": {"median": 1.0, "p95": 7}, "streams": 2, "utterances": 0}
        server.publish_at_once(
            [{"type": "stream_ended", "stream": f"call-{number}", "t": 3.0} for number in range(3)]
            + [window | {"stream": "call-0"}] * 7 + [window | {"stream": "call-3"}, window | {"stream": "call-4"}, status, status]
        )  # the last 4 reach the page: two windows of live calls, and statuses that count two
        wait_until(lambda: "latency p95 7 ms" in page.inner_text("#totals"), 20)
        cards, dropped = stream_cards(page), page.evaluate("document.getElementById('dropped')?.textContent")
    page.close()
    assert all(cards[f"call-{number}"] == ("ended", "ended while messages were dropped", 0) for number in range(3))
    assert cards["call-3"] == cards["call-4"] == ("started", "started", 0)
    assert dropped == "10 messages lost for this page (it read too slowly): the monitor runs without --record, so they cannot be fetched again"
    assert len(sockets) == 1  # no reconnect: it would lose what was queued for the page, uncounted
