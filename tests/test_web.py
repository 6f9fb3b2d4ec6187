"""The web page in a real browser (Debian's Chromium, driven headless by Playwright) against a live monitor."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from benchmarks.clients import free_port

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


def monitor(port: int, *arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--no-dashboard", "--ws", f"127.0.0.1:{port}", *arguments],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


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
