"""The live monitor end to end: a real file → `ser-stream monitor` → real WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from benchmarks.clients import free_port, stalled_client, subscriber_when_up
from ser_stream import EMOTIONS
from tests.conftest import (
    DEMO,
    PACKET_SAMPLES,
    SHIPPED_MODEL,
    call_monitor,
    rtp,
    run_worker,
    speechlike,
    spoken,
    stand_in_sounddevice,
    taken_ipv6_loopback_port,
    undocumented_fields,
)

pytestmark = pytest.mark.slow


def start_monitor(path: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", f"file:{path}", "--no-dashboard", "--ws", f"127.0.0.1:{port}", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def no_utterance(stream: str, seconds: float) -> str:
    """The end warning of a stream that gave no utterance (the silence and tones these tests play)."""
    return f"{stream}: no utterance in its {seconds:.1f} s: the voice detector heard no speech, or none long enough to label"


async def collect(port: int) -> list[dict]:
    """Connect (retrying while the monitor starts) and read every message until the server closes."""
    async with await subscriber_when_up(port, max_queue=None) as ws:
        return [json.loads(text) async for text in ws]


def subscribed_run(path: Path) -> list[dict]:
    """Every message a subscriber the monitor waited for receives while it plays ``path`` as fast as it can."""
    port = free_port()
    process = start_monitor(path, port, "--pace", "fast", "--await-subscribers", "1")
    try:
        messages = asyncio.run(collect(port))
    finally:
        process.wait(timeout=60)
    errors = process.stderr.read()
    assert process.returncode == 0, errors
    assert "ser-stream: waiting for 1 subscriber(s) before the sources start (--await-subscribers)\n" in errors  # not a silent hold
    return messages


def test_each_clip_becomes_one_utterance_at_its_boundaries(clips_with_silence, shipped_model):
    path, bounds = clips_with_silence
    messages = subscribed_run(path)
    hello = messages[0]
    assert hello["type"] == "hello" and hello["version"] == 1 and hello["labels"] == list(EMOTIONS)
    assert {"model", "provider", "sample_rate", "window", "hop"} <= set(hello)
    # a restart is told apart by its instance; a stream's t = 0 is placed on the wall clock
    from datetime import datetime

    started = next(m for m in messages if m["type"] == "stream_started")
    assert re.fullmatch(r"[0-9a-f]{32}", hello["instance"])
    assert datetime.fromisoformat(hello["started_at"]) <= datetime.fromisoformat(started["started_at"])
    assert hello["started_at"].endswith("Z") and started["started_at"].endswith("Z")
    assert {m["stream_started_at"] for m in messages if m["type"] == "utterance"} == {started["started_at"]}
    windows = [m for m in messages if m["type"] == "window"]
    utterances = [m for m in messages if m["type"] == "utterance"]
    assert windows and all(set(w["probabilities"]) == set(EMOTIONS) for w in windows)
    assert all(abs(sum(w["probabilities"].values()) - 1) < 1e-3 for w in windows)
    assert len(utterances) == len(bounds)
    for utterance, (start, end) in zip(utterances, bounds):
        assert abs(utterance["t_start"] - start) <= 0.3 and abs(utterance["t_end"] - end) <= 0.3
        assert utterance["label"] in EMOTIONS and utterance["windows"] >= 1
        assert utterance["label"] == max(utterance["probabilities"], key=utterance["probabilities"].get)
        own = [w for w in windows if w["utterance"] == utterance["id"]]
        assert len(own) == utterance["windows"]
        mean = {e: np.mean([w["probabilities"][e] for w in own]) for e in EMOTIONS}
        assert all(abs(mean[e] - utterance["probabilities"][e]) < 1e-3 for e in EMOTIONS)
    types = [m["type"] for m in messages]
    assert undocumented_fields(messages) == []
    assert {"hello", "stream_started", "window", "utterance", "status", "stream_ended"} <= set(types)
    assert types.count("stream_started") == 1 and types.count("stream_ended") == 1
    assert types.index("stream_started") < types.index("window") and types[-1] in ("stream_ended", "status")


def test_a_subscriber_that_never_reads_stalls_no_one(clips_with_silence, shipped_model, tmp_path):
    """Two subscribers read while a third, a raw socket, completes the handshake and never reads a byte nor answers
    the closing handshake. The test closes that socket only once the monitor has exited: a monitor that waited for
    it would never exit (the guard below), and the readers must get everything meanwhile."""
    path, bounds = clips_with_silence
    long_file = tmp_path / "long.wav"
    audio, rate = soundfile.read(path, dtype="float32")
    soundfile.write(long_file, np.tile(audio, 3), rate)
    port = free_port()
    process = start_monitor(long_file, port, "--pace", "fast", "--await-subscribers", "3")

    async def stalled_subscriber() -> socket.socket:
        for _ in range(600):  # while the monitor starts, as subscriber_when_up retries
            try:
                return await asyncio.to_thread(stalled_client, port)
            except OSError:
                await asyncio.sleep(0.1)
        raise RuntimeError(f"no monitor on port {port} after 60 s")

    async def three_subscribers():
        return await asyncio.gather(collect(port), collect(port), stalled_subscriber())

    try:
        *readers, stalled = asyncio.run(three_subscribers())
        try:  # a hang guard, not a time limit: the stalled subscriber is still connected, and never will read
            process.wait(timeout=60)
        finally:
            stalled.close()
    finally:
        process.kill()  # nothing, once it has exited
        process.wait()
    assert process.returncode == 0, process.stderr.read()
    for messages in readers:
        assert len([m for m in messages if m["type"] == "utterance"]) == 3 * len(bounds)
        assert not [m for m in messages if m["type"] == "dropped"]  # the readers lost nothing
        assert [m for m in messages if m["type"] == "status"][-1]["subscribers"] == 3  # the stalled one was there to the end


def test_publisher_drops_oldest_for_a_stalled_subscriber_and_reports_it():
    """In-process, real websockets: 5000 messages of 8 kB. One subscriber reads as they come; the other reads
    nothing until the last is published: its queue then holds the newest, and when it does read it is told, in a
    ``dropped`` message before the next one it gets, how many it lost (docs/protocol.md, Slow subscribers)."""
    from ser_stream.publish import Publisher

    async def scenario():
        publisher = Publisher("127.0.0.1", 0, queue_size=32)
        publisher.hello = {"type": "hello"}
        await publisher.start()
        reader = await connect(f"ws://127.0.0.1:{publisher.port}/", max_queue=None)
        small = socket.socket()  # a small receive buffer, so the kernel does not take everything in its place
        small.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        small.setblocking(False)
        await asyncio.get_running_loop().sock_connect(small, ("127.0.0.1", publisher.port))
        # reads nothing for now; uncompressed, as deflate would shrink the padding to nothing
        late = await connect(f"ws://127.0.0.1:{publisher.port}/", sock=small, max_queue=1, compression=None)
        await reader.recv()
        while len(publisher.subscribers) < 2:
            await asyncio.sleep(0.01)
        for index in range(5000):
            publisher.publish({"type": "window", "stream": "s", "n": index, "pad": "x" * 8000})
            if index % 4 == 0:
                await asyncio.sleep(0.001)  # a steady stream, as the worker produces it
        received = []
        while len(received) < 5000:
            message = json.loads(await asyncio.wait_for(reader.recv(), 10))
            if message["type"] == "window":
                received.append(message["n"])
        stalled = next(s for s in publisher.subscribers if s.connection.remote_address[1] == small.getsockname()[1])
        queued = [json.loads(text)["n"] for text in stalled.queue]
        late_messages: list[dict] = []
        try:  # until every message is accounted for: received, or counted in a dropped notice
            while sum(m.get("count", 1) for m in late_messages if m["type"] in ("window", "dropped")) < 5000:
                late_messages.append(json.loads(await asyncio.wait_for(late.recv(), 10)))
        except TimeoutError:
            pass
        dropped = publisher.dropped_total
        await reader.close()
        await late.close()
        await publisher.close(0)
        return received, queued, late_messages, dropped

    received, queued, late_messages, dropped = asyncio.run(scenario())
    assert received == list(range(5000))  # the reader lost nothing, in order
    assert queued == list(range(5000 - 32, 5000))  # the stalled one holds the newest 32: the oldest were dropped
    assert late_messages[0] == {"type": "hello"}
    notices = [m["count"] for m in late_messages if m["type"] == "dropped"]
    windows = [m["n"] for m in late_messages if m["type"] == "window"]
    assert notices and len(windows) + sum(notices) == 5000 and sum(notices) == dropped  # each lost one was counted, and told
    assert windows == sorted(windows) and windows[-32:] == queued  # what it got came in order, the newest last
    after_notice = [late_messages[i + 1] for i, m in enumerate(late_messages) if m["type"] == "dropped"]
    assert all(m["type"] == "window" for m in after_notice)  # each notice came just before a message
    skipped_at = [m["n"] for previous, m in zip(late_messages, late_messages[1:]) if m["type"] == "window"
                  and previous["type"] == "window" and m["n"] != previous["n"] + 1]
    assert skipped_at == []  # no message went missing without a notice first


def test_a_subscriber_that_sends_messages_keeps_its_connection_and_closes_cleanly():
    """Nothing read what subscribers sent: past 16 frames the server stopped reading the connection, missed the
    client's pongs and close frame, and cut it off 40 s later (1011); a close after them took 10 s and ended 1006."""
    from ser_stream.publish import Publisher

    async def scenario():
        publisher = Publisher("127.0.0.1", 0)
        publisher.hello = {"type": "hello"}
        await publisher.start()
        chatty = await connect(f"ws://127.0.0.1:{publisher.port}/", close_timeout=2)
        await chatty.recv()
        for index in range(200):  # an application-level ping a second, for a few minutes
            await chatty.send(json.dumps({"type": "ping", "n": index}))
        while not publisher.subscribers:
            await asyncio.sleep(0.01)
        publisher.publish({"type": "window", "stream": "s", "n": 1})
        received = json.loads(await asyncio.wait_for(chatty.recv(), 5))
        pong_waiter = await chatty.ping()  # the server still reads: it answers a ping
        await asyncio.wait_for(pong_waiter, 5)
        await chatty.close()
        await publisher.close(0)
        return received, chatty.close_code, len(publisher.subscribers)

    received, close_code, left = asyncio.run(scenario())
    assert received == {"type": "window", "stream": "s", "n": 1}
    assert close_code == 1000 and left == 0  # the server read the close frame and answered it


def test_a_subscriber_that_stopped_reading_is_cut_off_at_shutdown_instead_of_holding_it():
    """websockets waits ``close_timeout`` for a closing handshake; a stalled client never answers one. Here that
    wait is an hour: close() returns only because it cuts the stalled client off (the guard is 30 s)."""
    from ser_stream.publish import Publisher

    async def scenario():
        publisher = Publisher("127.0.0.1", 0)
        publisher.hello = {"type": "hello"}
        await publisher.start()
        stalled = await asyncio.to_thread(stalled_client, publisher.port)
        reader = await connect(f"ws://127.0.0.1:{publisher.port}/")
        await reader.recv()
        while len(publisher.connections) < 2:
            await asyncio.sleep(0.01)
        for connection in publisher.connections:
            connection.close_timeout = 3600
        try:
            await asyncio.wait_for(publisher.close(drain_seconds=0, close_seconds=0.2), 30)
            closed = "returned"
        except TimeoutError:
            closed = "still waiting after 30 s"
        await reader.wait_closed()
        stalled.settimeout(5)
        try:  # what reaches the stalled client: the close frame it never answered, then the end of the connection
            while stalled.recv(4096):
                pass
            ending = "closed"
        except ConnectionResetError:
            ending = "closed"
        except TimeoutError:
            ending = "still open"
        stalled.close()
        return closed, reader.close_code, ending, len(publisher.connections)

    closed, reader_code, stalled_ending, still_open = asyncio.run(scenario())
    assert closed == "returned"
    assert reader_code == 1001  # a reading subscriber is told the monitor is going away
    assert stalled_ending == "closed" and still_open == 0


def test_stdin_source_reads_raw_pcm_and_reports_a_trailing_partial_frame(clips_with_silence, shipped_model):
    path, bounds = clips_with_silence
    audio, rate = soundfile.read(path, dtype="int16")
    raw = audio.tobytes() + b"\x01"  # one odd byte at the end
    result = subprocess.run(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", "stdin", "--rate", str(rate), "--no-dashboard",
         "--print-utterances", "--ws", "127.0.0.1:0"],
        input=raw, capture_output=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    utterances = [m for m in lines if m["type"] == "utterance"]
    warnings = [m for m in lines if m["type"] == "warning"]
    assert len(utterances) == len(bounds)
    assert len(warnings) == 1 and "1 byte(s)" in warnings[0]["message"]
    assert undocumented_fields(lines) == []
    assert not [m for m in lines if m["type"] == "error"]
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "Ctrl-C", "SIGHUP"])
def test_sigterm_publishes_what_is_complete_and_exits_cleanly(clips_with_silence, shipped_model, stop_signal):
    path, bounds = clips_with_silence
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", f"file:{path}", "--no-dashboard",
         "--print-utterances", "--ws", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal would start it
    )
    first = process.stdout.readline()  # real-time pace: the first utterance arrives after ~5 s
    process.send_signal(stop_signal)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert json.loads(first)["type"] == "utterance"
    assert "Traceback" not in err
    # a clean stop, but the file was cut short, which the run once did not say: it passed for a whole one
    assert {"type": "warning", "stream": path.name, "message": f"{path.name}: stopped before the end of its file; what came after was not heard"} in [
        json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stdin_monitor_stopped_while_its_pipe_is_still_open_exits_cleanly(clips_with_silence, shipped_model, stop_signal):
    """`arecord | ser-stream monitor --source stdin`, stopped before arecord: the reader was blocked in stdin's
    buffered reader and the interpreter died at shutdown ("could not acquire lock for <stdin>", exit 134)."""
    path, _ = clips_with_silence
    audio, rate = soundfile.read(path, dtype="int16")
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", "stdin", "--rate", str(rate), "--no-dashboard",
         "--print-utterances", "--ws", "127.0.0.1:0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal would start it
    )
    process.stdin.write(audio.tobytes())
    process.stdin.flush()  # and the pipe stays open, as arecord keeps it
    first = process.stdout.readline()
    process.send_signal(stop_signal)
    try:
        process.wait(timeout=30)
    finally:
        process.stdin.close()
    err = process.stderr.read().decode()
    assert process.returncode == 0, err
    assert json.loads(first)["type"] == "utterance"
    assert "Fatal Python error" not in err and "Traceback" not in err


def test_two_streams_share_one_worker_and_a_subscriber_can_follow_one(clips_with_silence, shipped_model, tmp_path):
    path, bounds = clips_with_silence
    audio, rate = soundfile.read(path, dtype="float32")
    between = int((bounds[0][1] + bounds[1][0]) / 2 * rate)  # in the silence after the first clip
    other = tmp_path / "second.wav"
    soundfile.write(other, np.concatenate([audio[between:], audio[:between]]), rate)  # the same clips, in another order
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", f"file:{path}", "--source", f"file:{other}",
         "--pace", "fast", "--no-dashboard", "--ws", f"127.0.0.1:{port}", "--await-subscribers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )

    async def subscribe(query: str) -> list[dict]:
        async with await subscriber_when_up(port, f"/{query}") as ws:
            return [json.loads(text) async for text in ws]

    async def both():
        return await asyncio.gather(subscribe(""), subscribe("?stream=second.wav"))

    try:
        everything, only_second = asyncio.run(both())
    finally:
        process.wait(timeout=120)
    assert process.returncode == 0, process.stderr.read()
    for stream in ("four_clips.wav", "second.wav"):
        utterances = [m for m in everything if m["type"] == "utterance" and m["stream"] == stream]
        windows = [m for m in everything if m["type"] == "window" and m["stream"] == stream]
        assert len(utterances) == len(bounds)
        # The shared batches do not mix the streams up: each utterance is the mean of the windows published for it.
        for utterance in utterances:
            own = [w for w in windows if w["utterance"] == utterance["id"]]
            assert len(own) == utterance["windows"]
            mean = {e: np.mean([w["probabilities"][e] for w in own]) for e in EMOTIONS}
            assert all(abs(mean[e] - utterance["probabilities"][e]) < 1e-3 for e in EMOTIONS)
    assert {m.get("stream") for m in only_second if "stream" in m} == {"second.wav"}
    results = ("window", "utterance")
    assert [m for m in only_second if m["type"] in results] == [m for m in everything if m["type"] in results and m["stream"] == "second.wav"]


def test_files_that_share_a_name_become_distinct_streams(clips_with_silence, shipped_model, tmp_path):
    """Two folders' call.wav, and one file given twice: three streams, each published whole, none refused."""
    path, bounds = clips_with_silence
    for folder in ("monday", "tuesday"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "call.wav").write_bytes(path.read_bytes())
    sources = [tmp_path / "monday" / "call.wav", tmp_path / "tuesday" / "call.wav", tmp_path / "monday" / "call.wav"]
    result = subprocess.run(
        [sys.executable, "-m", "ser_stream", "monitor", "--no-dashboard", "--print-utterances", "--pace", "fast",
         "--ws", "127.0.0.1:0", *[arg for source in sources for arg in ("--source", f"file:{source}")]],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    utterances = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    by_stream: dict[str, int] = {}
    for utterance in utterances:
        by_stream[utterance["stream"]] = by_stream.get(utterance["stream"], 0) + 1
    assert by_stream == {"call.wav": len(bounds), str(sources[1]): len(bounds), str(sources[0]): len(bounds)}


def test_nan_and_inf_from_a_live_source_are_played_as_silence_and_counted(clips_with_silence, shipped_model):
    from ser_stream.inference import EmotionModel

    path, bounds = clips_with_silence
    clean, rate = soundfile.read(path, dtype="float32")
    damaged = clean.copy()
    gap = int((bounds[0][1] + 0.5) * rate)  # inside the silence after the first clip
    damaged[gap : gap + 100] = np.nan
    damaged[gap + 200 : gap + 250] = np.inf
    damaged[gap + 300] = -np.inf
    model = EmotionModel(shipped_model, provider="cpu")
    expected, got = run_worker(model, clean, rate), run_worker(model, damaged, rate)
    labels = [[m["label"] for m in messages if m["type"] == "utterance"] for messages in (expected, got)]
    assert len(labels[1]) == len(bounds) and labels[1] == labels[0]  # the resampler's filter was not poisoned
    assert [m["nonfinite_samples"] for m in got if m["type"] == "status"][-1] == 151
    assert [m["nonfinite_samples"] for m in expected if m["type"] == "status"][-1] == 0
    assert [m["message"] for m in got if m["type"] == "warning"] == [
        "live: 151 samples were NaN, infinite or beyond ±1e+12 (not audio) and played as silence"]  # said at its end, as well
    assert [m for m in expected if m["type"] == "warning"] == []


def test_a_stream_that_ends_without_an_utterance_says_so_at_its_end(shipped_model):
    """A monitor run of a silent file printed nothing at all and exited 0 (classify refuses the same file as silent);
    a stream with speech says no such thing (the test above: no warning)."""
    from ser_stream.inference import EmotionModel

    model = EmotionModel(shipped_model, provider="cpu")
    noise = (np.random.default_rng(0).standard_normal(3 * 8000) * 0.01).astype(np.float32)
    for audio, rate in ((np.zeros(3 * 16000, np.float32), 16000), (noise, 8000)):
        messages = run_worker(model, audio, rate)
        assert [m["type"] for m in messages if m["type"] in ("utterance", "warning", "stream_ended")] == ["warning", "stream_ended"]
        assert next(m for m in messages if m["type"] == "warning") == {
            "type": "warning", "stream": "live",
            "message": "live: no utterance in its 3.0 s: the voice detector heard no speech, or none long enough to label"}


# What live sources hand the worker, in samples: 20, 40 and 60 ms RTP packets at 8 kHz, odd reads, half a second, and
# a mix of reads that found nothing, single samples and any size up to 3000, in turn.
BLOCK_SCHEDULES = {"160": (160,), "320": (320,), "480": (480,), "1000": (1000,), "4000": (4000,),
                   "random": (0, 1, *np.random.default_rng(7).integers(2, 3000, 40).tolist())}


@functools.cache
def shipped_emotion_model():
    """The shipped model, loaded once for the tests that compare many runs of it."""
    from ser_stream.inference import EmotionModel

    return EmotionModel(SHIPPED_MODEL, provider="cpu")


@functools.cache
def demo_published(rate: int, block_sizes: tuple[int, ...]) -> tuple[list[tuple], list[dict[str, float]], int]:
    """What the worker publishes for the demo recording's first 12.5 s (two utterances) at ``rate``, fed in
    ``block_sizes``: each utterance (id, times, label, windows), its probabilities, and how many window messages."""
    audio, own_rate = soundfile.read(DEMO, dtype="float32", frames=int(12.5 * 16000))
    if rate != own_rate:
        audio = scipy.signal.resample_poly(audio, rate, own_rate).astype(np.float32)
    messages = run_worker(shipped_emotion_model(), audio, rate, block=block_sizes)
    utterances = [m for m in messages if m["type"] == "utterance"]
    return ([(m["id"], m["t_start"], m["t_end"], m["label"], m["windows"]) for m in utterances],
            [m["probabilities"] for m in utterances], sum(m["type"] == "window" for m in messages))


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("schedule", BLOCK_SCHEDULES)
def test_the_utterances_published_are_the_same_whatever_blocks_a_live_source_delivers(shipped_model, rate, schedule):
    """A live source's block sizes depend on its device, the network or the reader; the DC blocker, the resampler and
    the voice detector each carry their state across blocks, so what is published (times, labels, windows) is what
    a second at a time gives, at 8 kHz as at 16 kHz."""
    utterances, probabilities, windows = demo_published(rate, BLOCK_SCHEDULES[schedule])
    expected_utterances, expected_probabilities, expected_windows = demo_published(rate, (rate,))
    assert [(u[1], u[2]) for u in expected_utterances] == [(0.476, 6.276), (7.836, 11.492)]  # the demo's two utterances
    assert utterances == expected_utterances and windows == expected_windows
    for got, expected in zip(probabilities, expected_probabilities):
        assert got == pytest.approx(expected, abs=1e-4)  # the resampler's joins move a sample by 1e-7 at most
    assert utterances == demo_published(16000, (16000,))[0]


def test_audio_a_live_source_lost_to_an_overrun_keeps_its_place_in_stream_time(clips_with_silence, shipped_model):
    """Four clips written while the worker is stalled overrun a 10 s ring: the oldest audio is lost and counted,
    and the clips that survive are reported where they are in the stream, not that much earlier."""
    import threading

    from ser_stream.inference import EmotionModel
    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    path, bounds = clips_with_silence
    audio, rate = soundfile.read(path, dtype="float32")
    messages: list[dict] = []
    config = MonitorConfig(ring_seconds=10.0)
    worker = Worker(EmotionModel(shipped_model, provider="cpu"), config, messages.append)
    stream = Stream("live", rate, config)
    worker.add_stream(stream)
    for start in range(0, audio.size, rate // 50):  # 20 ms blocks, none read until all are written
        stream.ring.write(audio[start : start + rate // 50])
    stream.finished = True
    worker.run(threading.Event(), until_all_ended=True)
    lost_seconds = [m["overrun_samples"] for m in messages if m["type"] == "status"][-1] / rate
    assert lost_seconds == pytest.approx(audio.size / rate - 10.0, abs=0.05)
    utterances = [m for m in messages if m["type"] == "utterance"]
    survivors = [(start, end) for start, end in bounds if end > lost_seconds + 0.5]  # whole, or their end
    assert len(utterances) == len(survivors) >= 2
    for utterance, (start, end) in zip(utterances, survivors):
        assert utterance["t_end"] == pytest.approx(end, abs=0.35)
        if start > lost_seconds:
            assert utterance["t_start"] == pytest.approx(start, abs=0.35)
        else:  # its beginning was lost: it starts after the gap, never inside it
            assert lost_seconds <= utterance["t_start"] < end
    assert [m["t"] for m in messages if m["type"] == "stream_ended"] == [pytest.approx(audio.size / rate, abs=0.01)]


def test_a_stream_that_lost_audio_to_overruns_says_how_much_and_how_often_in_its_end_warning():
    """At 400 calls the rings lost 8222 s of audio in 25200 overruns, counted in the status totals alone: no call was
    told what it had lost, as an RTP call's lost packets, a microphone's gaps and invalid samples are told."""
    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    messages: list[dict] = []
    config = MonitorConfig(ring_seconds=1.0)
    worker = Worker(EvenModel(), config, messages.append)  # type: ignore[arg-type]
    behind, kept_up = Stream("rtp-000000aa", 8000, config), Stream("rtp-000000bb", 8000, config)
    behind.warning = "rtp-000000aa: 3 packet(s) lost"  # what its RTP source had to say
    for stream in (behind, kept_up):
        worker.add_stream(stream)
        stream.ring.write(np.zeros(4000, np.float32))
    behind.ring.write(np.zeros(2 * 8000 + 4000, np.float32))  # 3 s in all, where the ring holds 1: the oldest 2 s are lost
    worker.step()
    behind.ring.write(np.zeros(12000, np.float32))  # 1.5 s more before the next read: 0.5 s lost
    for stream in (behind, kept_up):
        stream.finished = True
    worker.run(threading.Event(), until_all_ended=True)
    assert worker.crash is None
    assert [(m.get("stream"), m["message"]) for m in messages if m["type"] == "warning"] == [
        (None, "the monitor is losing live audio to overruns: 2.00 s of audio from 1 stream was lost (it fell more than 1 s behind: "
               "more streams (2 open) than its CPU can follow); that time still passes, unheard; said again at most once a minute "
               "while it goes on, and in each stream's end warning"),  # as it happened, for the whole monitor
        ("rtp-000000aa", "rtp-000000aa: 3 packet(s) lost; rtp-000000aa: 2.50 s of its audio was lost to overruns, 2 times (the "
                         "monitor fell more than 1 s behind it: more streams than its CPU can follow); that time still passed, unheard; "
                         + no_utterance("rtp-000000aa", 4.5)),
        ("rtp-000000bb", no_utterance("rtp-000000bb", 0.5))]  # lost nothing: only its silence is said


def test_live_audio_lost_to_overruns_is_said_at_once_then_at_most_once_a_minute_and_in_the_caught_up_warning(monkeypatch):
    """At 300 calls on 2 cores 29 % of all audio (7733 s) was lost from 40 s to 90 s, and no warning said so until each
    call's end: an operator was told audio was being lost only as calls ended. The worker's clock is the test's."""
    import types

    import ser_stream.pipeline
    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    clock = [1000.0]
    monkeypatch.setattr(ser_stream.pipeline, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    messages: list[dict] = []
    config = MonitorConfig(ring_seconds=2.0)  # a step reads at most a second (PUSH_LIMIT_SECONDS)
    worker = Worker(EvenModel(), config, messages.append)  # type: ignore[arg-type]
    one, two = Stream("rtp-000000aa", 8000, config), Stream("rtp-000000bb", 8000, config)
    for stream in (one, two):
        worker.add_stream(stream)

    def step_at(now: float, writes: dict[Stream, float]) -> list[str]:
        """A step at ``now`` after each stream's ring was given its seconds of audio (arrived 3 s before): the
        warnings without a stream it says."""
        clock[0], said = now, len(messages)
        for stream, seconds in writes.items():
            stream.ring.write(np.zeros(int(seconds * 8000), np.float32), arrived_at=now - 3.0)
        worker.step()
        return [m["message"] for m in messages[said:] if m["type"] == "warning" and "stream" not in m]

    assert step_at(1000.0, {one: 1.0, two: 0.5}) == []  # kept up: nothing lost, nothing said
    said = step_at(1001.0, {one: 5.0})  # 5 s where the 2 s ring holds 2: the oldest 3 s lost, said at once
    assert len(said) == 2 and said[0].startswith("the monitor is 3.0 s behind live audio: ") and said[1] == ("the monitor is losing live audio to overruns: 3.00 s of audio from 1 stream was lost (it fell more than 2 s "
                        "behind: more streams (2 open) than its CPU can follow); that time still passes, unheard; said again at most "
                        "once a minute while it goes on, and in each stream's end warning")
    # each step reads a second of each stream and leaves a second of it waiting: what comes on top of that, less the
    # second the ring has room for, is lost
    assert step_at(1011.0, {one: 2.0, two: 2.5}) == []  # 1 s and 0.5 s lost, within the minute: not said yet
    assert step_at(1040.0, {one: 2.0, two: 2.5}) == []  # 1 s and 1.5 s
    assert step_at(1061.0, {one: 2.0, two: 2.5}) == [  # 1 s and 1.5 s, a minute after the first warning
        "the monitor is still losing live audio to overruns: 6.50 s of audio from 2 streams in the 60 s since it last said so, "
        "9.50 s of audio from 2 streams since it began (2 streams open)"]
    assert step_at(1080.0, {one: 1.0}) == []  # nothing lost: nothing to say
    assert step_at(1150.0, {one: 1.0}) == []  # more than a minute on, still behind, nothing lost since: nothing to say
    assert step_at(1160.0, {one: 3.0}) == [
        "the monitor is still losing live audio to overruns: 2.00 s of audio from 1 stream in the 99 s since it last said so, "
        "11.50 s of audio from 2 streams since it began (2 streams open)"]
    caught_up: list[str] = []
    while one.ring.available() or two.ring.available() or not caught_up:
        caught_up += step_at(1170.0, {})
    assert len(caught_up) == 1
    worst = re.fullmatch(r"the monitor has caught up with live audio \(it was up to (\d+\.\d) s behind; 11\.50 s of audio from 2 "
                         r"streams was lost to overruns meanwhile\)", caught_up[0])
    assert worst is not None and float(worst[1]) >= 3.0
    assert one.ring.overrun_samples + two.ring.overrun_samples == 11.5 * 8000  # what the status counts, said in seconds


def test_loss_that_stops_while_the_monitor_is_still_behind_is_said_in_the_caught_up_warning_not_as_still_losing(monkeypatch):
    """The minute's repeat once needed only loss not yet said: a minute after the last warning, a step that lost nothing
    said "still losing", and the caught-up warning followed milliseconds later. It comes only at a step that loses
    audio; what was left unsaid when losses stopped is in the caught-up warning's total. The worker's clock is the test's."""
    import types

    import ser_stream.pipeline
    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    clock = [1000.0]
    monkeypatch.setattr(ser_stream.pipeline, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    messages: list[dict] = []
    config = MonitorConfig(ring_seconds=2.0)  # a step reads at most a second (PUSH_LIMIT_SECONDS)
    worker = Worker(EvenModel(), config, messages.append)  # type: ignore[arg-type]
    call = Stream("rtp-000000aa", 8000, config)
    worker.add_stream(call)

    def step_at(now: float, seconds: float) -> list[str]:
        """A step at ``now`` after the call's ring was given ``seconds`` of audio (arrived 3 s before): the warnings
        about losses and catching up it says."""
        clock[0], said = now, len(messages)
        if seconds:
            call.ring.write(np.zeros(int(seconds * 8000), np.float32), arrived_at=now - 3.0)
        worker.step()
        return [m["message"] for m in messages[said:] if m["type"] == "warning" and "behind live audio" not in m["message"]]

    said = step_at(1000.0, 5.0)  # 3 s lost, said at once
    assert len(said) == 1 and said[0].startswith("the monitor is losing live audio to overruns: 3.00 s of audio from 1 stream was lost")
    assert step_at(1010.0, 2.0) == []  # 1 s more lost, within the minute: not said yet
    for now in (1020.0, 1030.0, 1040.0, 1050.0, 1061.0):  # a second read, a second given: 3 s behind, nothing lost
        assert step_at(now, 1.0) == []  # a minute on, but nothing is being lost: no "still losing"
    caught_up: list[str] = []
    while call.ring.available() or not caught_up:
        caught_up += step_at(1061.0, 0.0)
    assert caught_up == ["the monitor has caught up with live audio (it was up to 3.0 s behind; 4.00 s of audio from 1 stream "
                         "was lost to overruns meanwhile)"]  # the second lost at 1010 s, never said alone, is in the total


def test_a_fast_file_stopped_while_its_source_waits_for_room_is_said_to_have_lost_nothing(tmp_path, monkeypatch):
    """A --pace fast file reads ahead until its ring is full. Stopped then (Ctrl-C: ``Sources.stop``), its source wrote
    the block it held anyway, overwriting 50 ms, and the monitor said it was losing live audio to overruns, more
    streams than its CPU can follow, then that it had caught up; the stream's end warning said 0.05 s lost to overruns."""
    import types

    import ser_stream.sources
    from ser_stream.pipeline import MonitorConfig, Stream, Worker
    from ser_stream.sources import FileSource

    path = tmp_path / "long.wav"
    soundfile.write(path, np.zeros(3 * 16000, np.float32), 16000)
    stop = threading.Event()  # set by the source's first wait for room: the ring is full
    monkeypatch.setattr(ser_stream.sources, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=lambda seconds: stop.set()))
    messages: list[dict] = []
    config = MonitorConfig(ring_seconds=1.0)
    worker = Worker(EvenModel(), config, messages.append)  # type: ignore[arg-type]
    source = FileSource(str(path), pace="fast")
    stream = Stream("long.wav", source.sample_rate, config)
    stream.live = False  # as open_sources makes a --pace fast file's
    worker.add_stream(stream)
    source.run(stream, stop)
    assert stop.is_set()
    worker.finish()  # as shut_down does once the sources have stopped
    worker.run(threading.Event(), until_all_ended=True)
    assert worker.crash is None
    assert [m["message"] for m in messages if m["type"] == "warning"] == [no_utterance("long.wav", 1.0)]  # its silence, no loss
    assert [m["overrun_samples"] for m in messages if m["type"] == "status"][-1] == 0
    assert stream.ring.written == 16000  # it read ahead to a full ring (1 s), then was stopped


def test_a_stream_that_is_not_live_is_left_out_of_the_monitors_live_loss_warnings():
    """A --pace fast file waits for room, so it cannot overrun by falling behind; audio its ring lost anyway is said in
    its own end warning, never as the monitor losing live audio (as it is left out of how far behind the monitor is)."""
    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    messages: list[dict] = []
    config = MonitorConfig(ring_seconds=1.0)
    worker = Worker(EvenModel(), config, messages.append)  # type: ignore[arg-type]
    stream = Stream("call.wav", 8000, config)
    stream.live = False
    worker.add_stream(stream)
    stream.ring.write(np.zeros(3 * 8000, np.float32))  # 3 s where the ring holds 1: 2 s lost
    worker.step()
    assert [m for m in messages if m["type"] == "warning"] == []
    stream.finished = True
    worker.run(threading.Event(), until_all_ended=True)
    assert [(m.get("stream"), m["message"]) for m in messages if m["type"] == "warning"] == [
        ("call.wav", "call.wav: 2.00 s of its audio was lost to overruns, once (the monitor fell more than 1 s behind it: more "
                     "streams than its CPU can follow); that time still passed, unheard; " + no_utterance("call.wav", 3.0))]


def test_time_a_reopened_device_was_away_passes_in_stream_time_and_ends_the_utterance_it_cut(clips_with_silence, shipped_model):
    """A microphone away from the middle of the second clip into the silence after it (the time was lost, as on a
    wall-clock device): that clip ends where its audio stopped and the later ones keep their place. The time once
    vanished: the later clips came that much early, and the second ran on into the third."""
    import threading

    from ser_stream.inference import EmotionModel
    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    path, bounds = clips_with_silence
    audio, rate = soundfile.read(path, dtype="float32")
    cut = (bounds[1][0] + bounds[1][1]) / 2
    back = bounds[1][1] + 0.75  # halfway through the 1.5 s of silence after it
    messages: list[dict] = []
    worker = Worker(EmotionModel(shipped_model, provider="cpu"), MonitorConfig(), messages.append)
    stream = Stream("mic", rate, MonitorConfig())
    worker.add_stream(stream)
    heard = [(0, round(cut * rate)), (round(back * rate), audio.size)]
    for index, (start, end) in enumerate(heard):
        if index:
            stream.mark_gap(heard[1][0] - heard[0][1])
        for block in range(start, end, rate // 50):  # 20 ms blocks, a step after each few
            stream.ring.write(audio[block : min(end, block + rate // 50)])
            if block % (rate // 5) == 0:
                worker.step()
    stream.finished = True
    worker.run(threading.Event(), until_all_ended=True)
    utterances = [(m["t_start"], m["t_end"]) for m in messages if m["type"] == "utterance"]
    assert len(utterances) == len(bounds)
    expected = [bounds[0], (bounds[1][0], cut), *bounds[2:]]
    for (start, end), (expected_start, expected_end) in zip(utterances, expected):
        assert start == pytest.approx(expected_start, abs=0.35) and end == pytest.approx(expected_end, abs=0.35)
    assert utterances[1][1] <= cut  # never into the gap
    assert [m["t"] for m in messages if m["type"] == "stream_ended"] == [pytest.approx(audio.size / rate, abs=0.01)]
    assert stream.gap_counters() == {"device_gaps": 1, "device_gap_samples": heard[1][0] - heard[0][1]}


def test_a_worker_that_fails_ends_with_the_reason_instead_of_hanging(clips_with_silence):
    import threading

    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    class BrokenModel:
        def predict(self, batch):
            raise RuntimeError("onnxruntime lost its device")

    path, _ = clips_with_silence
    audio, rate = soundfile.read(path, dtype="float32")
    worker = Worker(BrokenModel(), MonitorConfig(), lambda message: None)  # type: ignore[arg-type]
    stream = Stream("live", rate, MonitorConfig())
    worker.add_stream(stream)
    stream.ring.write(audio[: 8 * rate])
    stream.finished = True
    thread = threading.Thread(target=worker.run, args=(threading.Event(), True))
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    assert worker.crash == "RuntimeError: onnxruntime lost its device"


def test_finish_publishes_what_the_streams_hold_and_returns(clips_with_silence, shipped_model):
    """Ctrl-C: the worker thread itself closes open utterances; nothing else reads the streams."""
    import threading

    from ser_stream.errors import StreamRefused
    from ser_stream.inference import EmotionModel
    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    path, bounds = clips_with_silence
    audio, rate = soundfile.read(path, dtype="float32")
    messages: list[dict] = []
    config = MonitorConfig()
    worker = Worker(EmotionModel(shipped_model, provider="cpu"), config, messages.append)
    stream = Stream("live", rate, config)
    worker.add_stream(stream)
    cut = int(bounds[1][0] * rate) + rate // 2  # half a second into the second clip: an utterance is open
    stream.ring.write(audio[:cut])
    thread = threading.Thread(target=worker.run, args=(threading.Event(), False))  # runs until stopped, as with calls
    thread.start()
    while stream.ring.available():
        time.sleep(0.01)
    worker.finish()
    thread.join(60)
    assert not thread.is_alive() and worker.crash is None
    utterances = [m for m in messages if m["type"] == "utterance"]
    assert len(utterances) == 2 and abs(utterances[1]["t_end"] - cut / rate) <= 0.3  # the open one, cut where the audio stopped
    assert [m["type"] for m in messages].count("stream_ended") == 1
    with pytest.raises(StreamRefused, match="stream 'late' refused: the monitor is stopping"):
        worker.add_stream(Stream("late", rate, config))


def test_streams_beyond_the_limit_or_with_an_active_id_are_refused_and_counted():
    from ser_stream.errors import StreamRefused
    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    messages: list[dict] = []
    config = MonitorConfig(max_streams=2)
    worker = Worker(None, config, messages.append)  # type: ignore[arg-type]  # no window reaches the model here
    worker.add_stream(Stream("a", 8000, config))
    with pytest.raises(StreamRefused, match="stream 'a' refused: a stream of that id is still active"):
        worker.add_stream(Stream("a", 8000, config))
    worker.add_stream(Stream("b", 8000, config))
    with pytest.raises(StreamRefused, match=r"stream 'c' refused: 2 streams are open, the most this monitor takes \(--max-streams\)"):
        worker.add_stream(Stream("c", 8000, config))
    with pytest.raises(StreamRefused):
        worker.add_stream(Stream("d", 8000, config))
    worker.publish_status(force=True)
    assert messages[-1]["refused_streams"] == 3 and messages[-1]["streams"] == 2  # refusals, not the streams taken


def test_status_sums_the_counters_of_every_rtp_listener():
    """With two RTP ports, the last listener's counters overwrote the first's: 31 lost packets showed as 0."""
    from ser_stream.pipeline import MonitorConfig, Worker

    messages: list[dict] = []
    worker = Worker(None, MonitorConfig(), messages.append)  # type: ignore[arg-type]
    worker.extra_counters += [lambda: {"rtp_lost_packets": 31, "rtp_bad_packets": 30}, lambda: {"rtp_lost_packets": 0, "rtp_bad_packets": 0}]
    worker.extra_counters.append(lambda: {"record_failures": 2})
    worker.publish_status(force=True)
    assert (messages[-1]["rtp_lost_packets"], messages[-1]["rtp_bad_packets"], messages[-1]["record_failures"]) == (31, 30, 2)


def worker_at_100_s_with_a_call(monkeypatch):
    """A worker whose clock stands at 100 s, with one 8 kHz call, and the messages it emits."""
    import ser_stream.pipeline
    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    monkeypatch.setattr(ser_stream.pipeline.time, "monotonic", lambda: 100.0)
    messages: list[dict] = []
    config = MonitorConfig()
    worker = Worker(EvenModel(), config, messages.append)  # type: ignore[arg-type]
    call = Stream("call", 8000, config)
    worker.add_stream(call)
    return worker, call, messages


def test_a_worker_exactly_as_far_behind_as_the_warning_threshold_warns(monkeypatch):
    """The warning comes when being behind reaches BEHIND_WARNING_SECONDS (2 s), as the dashboard shows it from then."""
    from ser_stream.messages import BEHIND_WARNING_SECONDS

    worker, call, messages = worker_at_100_s_with_a_call(monkeypatch)
    call.ring.write(np.zeros(4 * 8000, np.float32), arrived_at=100.0 - BEHIND_WARNING_SECONDS)
    worker.step()  # a second read: the rest has waited exactly the threshold
    worker.publish_status(force=True)
    assert messages[-1]["behind_seconds"] == BEHIND_WARNING_SECONDS == 2.0
    assert [m["message"][:44] for m in messages if m["type"] == "warning"] == ["the monitor is 2.0 s behind live audio: it h"]


def test_a_worker_back_under_one_second_behind_has_caught_up_and_says_so_once(monkeypatch):
    """protocol.md: after the 2 s warning, a warning says once more when the worker is back under 1 s behind
    (BEHIND_CAUGHT_UP_SECONDS), not only once nothing at all waits: 0.75 s behind is caught up."""
    from ser_stream.messages import BEHIND_CAUGHT_UP_SECONDS

    worker, call, messages = worker_at_100_s_with_a_call(monkeypatch)
    call.ring.write(np.zeros(2 * 8000, np.float32), arrived_at=97.0)
    worker.step()  # a second read; the other has waited 3 s
    call.ring.write(np.zeros(8000, np.float32), arrived_at=99.25)
    worker.step()  # the 3 s old second read: the oldest audio waiting has waited 0.75 s
    worker.publish_status(force=True)
    assert messages[-1]["behind_seconds"] == 0.75 < BEHIND_CAUGHT_UP_SECONDS == 1.0
    said = [m["message"] for m in messages if m["type"] == "warning"]
    assert [line[:30] for line in said] == ["the monitor is 3.0 s behind li", "the monitor has caught up with"]


def test_status_counts_audio_a_device_dropped_in_open_streams_and_in_ended_ones():
    """input_overflows: blocks the sound device dropped before the monitor got them, never the other causes' counts."""
    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    messages: list[dict] = []
    config = MonitorConfig()
    worker = Worker(None, config, messages.append)  # type: ignore[arg-type]  # no window reaches the model here
    ended, still_open = Stream("mic0", 16000, config), Stream("mic1", 16000, config)
    ended.input_overflows, still_open.input_overflows, still_open.nonfinite_samples = 2, 3, 7
    worker.add_stream(ended)
    worker.add_stream(still_open)
    ended.finished = True
    worker.step()
    worker.publish_status(force=True)
    status = messages[-1]
    assert sorted(worker.streams) == ["mic1"]
    assert (status["overruns"], status["overrun_samples"], status["input_overflows"], status["nonfinite_samples"]) == (0, 0, 5, 7)


def test_time_a_device_was_away_marked_twice_at_one_place_is_one_gap_of_both_times():
    """A reopen that fails after opening marks its time again where the first mark was: ``device_gaps`` counts the
    times the device went away, so that is one gap, holding both stretches; a gap after more audio is another."""
    from ser_stream.pipeline import MonitorConfig, Stream

    mic = Stream("mic", 16000, MonitorConfig())
    mic.ring.write(np.zeros(1600, np.float32))
    mic.mark_gap(8000)
    mic.mark_gap(4000)  # the reopen failed: still away, at the same place
    assert mic.gap_counters() == {"device_gaps": 1, "device_gap_samples": 12000}
    mic.ring.write(np.zeros(1600, np.float32))
    mic.mark_gap(16000)
    assert mic.gap_counters() == {"device_gaps": 2, "device_gap_samples": 28000}


def test_a_worker_run_until_every_stream_has_ended_waits_for_its_first_stream():
    """A batch run's worker (``until_all_ended``) may start before its sources have opened their streams: it steps on
    until one has come and ended, and then stops; it would otherwise stop at once, with nothing heard."""
    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    messages: list[dict] = []
    config = MonitorConfig()
    worker = Worker(EvenModel(), config, messages.append)  # type: ignore[arg-type]
    running = threading.Thread(target=worker.run, args=(threading.Event(), True), daemon=True)
    running.start()
    steps = []
    while len(steps) < 3 and running.is_alive():  # until it has stepped a few times with no stream (or stopped)
        if worker.last_step_at is not None and worker.last_step_at not in steps:
            steps.append(worker.last_step_at)
    assert running.is_alive(), "the worker stopped before any stream came"
    late = Stream("late", 8000, config)
    worker.add_stream(late)
    late.ring.write(np.zeros(8000, np.float32))
    late.finished = True
    running.join(30)  # (a bound for a failing test)
    assert not running.is_alive() and worker.crash is None
    assert [m["type"] for m in messages if m.get("stream") == "late"] == ["stream_started", "warning", "stream_ended"]  # its silence


def test_the_dashboard_meter_reads_the_loudest_open_stream():
    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    worker = Worker(None, MonitorConfig(), lambda message: None)  # type: ignore[arg-type]
    assert worker.loudest_level() == 0.0
    for name, level in (("quiet", 0.01), ("loud", 0.3)):
        stream = Stream(name, 8000, MonitorConfig())
        stream.level = level
        worker.add_stream(stream)
    assert worker.loudest_level() == 0.3


def test_the_dashboard_meter_follows_the_level_of_the_audio_the_worker_reads():
    """The meter's level is the RMS of each stream's latest audio: a 0.5 tone reads about 0.35, the silence after it next to nothing."""
    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    worker = Worker(EvenModel(), MonitorConfig(), lambda message: None)  # type: ignore[arg-type]
    mic = Stream("mic", 16000, MonitorConfig())
    worker.add_stream(mic)
    mic.ring.write((0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32))
    worker.step()
    assert worker.loudest_level() == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
    mic.ring.write(np.zeros(16000, np.float32))
    worker.step()
    assert worker.loudest_level() < 0.05  # (the resampler still holds a few samples of the tone)


def test_a_file_named_like_a_generated_stream_id_does_not_clash_with_it(clips_with_silence, shipped_model, tmp_path):
    """`--source file:stdin1 --source stdin` once stopped start-up with a traceback (two streams 'stdin1')."""
    path, bounds = clips_with_silence
    named = tmp_path / "stdin1"
    named.write_bytes(path.read_bytes())
    audio, rate = soundfile.read(path, dtype="int16")
    result = subprocess.run(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", f"file:{named}", "--source", "stdin", "--rate", str(rate),
         "--pace", "fast", "--no-dashboard", "--print-utterances", "--ws", "127.0.0.1:0"],
        input=audio.tobytes(), capture_output=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    utterances = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert sorted({m["stream"] for m in utterances}) == ["stdin1", "stdin1#2"]
    assert all(sum(m["stream"] == s for m in utterances) == len(bounds) for s in ("stdin1", "stdin1#2"))


@pytest.fixture(scope="module")
def short_speech(tmp_path_factory) -> Path:
    """The first 8 s of the bundled demo recording: a few utterances, quick to classify."""
    from ser_stream.cli import DEMO_RECORDING

    audio, rate = soundfile.read(DEMO_RECORDING, dtype="float32")
    path = tmp_path_factory.mktemp("speech") / "short.wav"
    soundfile.write(path, audio[: 8 * rate], rate)
    return path


def test_a_source_that_fails_to_open_in_an_unforeseen_way_fails_alone_and_the_others_run(short_speech, shipped_model, monkeypatch, capsys):
    """A driver that reports no default rate (a KeyError in MicSource) once killed every stream with a traceback."""
    import types

    from ser_stream.cli import main

    monkeypatch.setitem(sys.modules, "sounddevice", types.SimpleNamespace(query_devices=lambda device, kind: {}))
    status = main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--print-utterances", "--pace", "fast",
                   "--ws", "127.0.0.1:0", "--source", f"file:{short_speech}", "--source", "mic"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1  # a stream failed
    assert {"type": "error", "stream": "mic1", "message": "mic: could not be opened (KeyError: 'default_samplerate')"} in lines
    assert [line for line in lines if line["type"] == "utterance" and line["stream"] == "short.wav"]


def test_printed_json_lines_are_utterances_errors_and_warnings_and_stderr_still_says_every_error_and_warning(
        short_speech, shipped_model, tmp_path, capsys):
    """`--print-utterances > out.jsonl`: with it, warnings went to the file alone, and the terminal showed none."""
    from ser_stream.cli import main

    cut = tmp_path / "cut.wav"
    cut.write_bytes(short_speech.read_bytes()[: 44 + 2 * 16000 * 2])  # the header (8 s) and the first two seconds
    missing = tmp_path / "missing.wav"
    status = main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--print-utterances", "--pace", "fast", "--ws", "127.0.0.1:0",
                   "--source", f"file:{short_speech}", "--source", f"file:{cut}", "--source", f"file:{missing}"])
    said = capsys.readouterr()
    lines = [json.loads(line) for line in said.out.splitlines()]
    assert status == 1  # a stream failed
    assert {line["type"] for line in lines} == {"utterance", "error", "warning"}
    told = [line for line in lines if line["type"] != "utterance"]
    assert told and [f"ser-stream: {line['type']}: {line['message']}" for line in told] == [
        line for line in said.err.splitlines() if line.startswith(("ser-stream: error:", "ser-stream: warning:"))]
    assert any(line["type"] == "warning" and line["stream"] == "cut.wav" for line in told)


def test_a_microphone_whose_portaudio_aborts_while_starting_fails_alone_and_the_others_run(short_speech, shipped_model, tmp_path, monkeypatch, capsys):
    """PortAudio aborting in Pa_Initialize (no alsa.conf) once took the whole monitor down with SIGABRT, saying nothing."""
    from ser_stream.cli import main

    stand_in_sounddevice("import os\nos.abort()  # as PortAudio's failed assertion does\n", tmp_path, monkeypatch)
    status = main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--print-utterances", "--pace", "fast",
                   "--ws", "127.0.0.1:0", "--source", f"file:{short_speech}", "--source", "mic"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1
    errors = [line["message"] for line in lines if line["type"] == "error"]
    assert len(errors) == 1 and errors[0].startswith("microphone input: PortAudio could not start (it died of SIGABRT while starting)")
    assert [line for line in lines if line["type"] == "utterance" and line["stream"] == "short.wav"]


def test_the_time_a_microphone_was_away_is_counted_in_status(shipped_model, monkeypatch, capsys):
    """Unplugged twice and reopened once: status counts the gap and the time it held, as it counts an overrun."""
    import ser_stream.sources
    from ser_stream.cli import main
    from ser_stream.sources import DevicePolicy
    from tests.test_capture import FakeSoundDevice

    monkeypatch.setitem(sys.modules, "sounddevice", FakeSoundDevice(["unplugged", "unplugged"]))
    monkeypatch.setattr(ser_stream.sources, "DevicePolicy", lambda: DevicePolicy(stall_seconds=0.3, reopen_attempts=1, reopen_delay_seconds=0.2))
    status = main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--ws", "127.0.0.1:0", "--source", "mic", "--log-status", "60"])
    statuses = [json.loads(line.removeprefix("ser-stream: status ")) for line in capsys.readouterr().err.splitlines() if line.startswith("ser-stream: status ")]
    assert status == 1  # it was not back after the second time
    assert statuses[-1]["device_gaps"] == 1 and statuses[-1]["device_gap_samples"] >= 0.2 * 16000  # the wait before the reopen, at least


def test_with_stderr_closed_a_failing_source_stops_no_other_stream_and_every_result_is_stored(short_speech, shipped_model, tmp_path, monkeypatch, capsys):
    """`monitor … 2>&-` (sys.stderr is None): the bad file's error line raised AttributeError in the thread that hands
    messages on, which stopped every stream; --record stored nothing, and the page's address went to stdout."""
    import sqlite3

    from ser_stream.cli import main

    bad = tmp_path / "nan.wav"
    audio = speechlike(2.0, 16000)
    audio[100] = np.nan
    soundfile.write(bad, audio, 16000, subtype="FLOAT")
    record = tmp_path / "calls.db"
    monkeypatch.setattr(sys, "stderr", None)
    status = main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--print-utterances", "--pace", "fast", "--ws", "127.0.0.1:0",
                   "--record", str(record), "--source", f"file:{short_speech}", "--source", f"file:{bad}"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # JSON lines only: no page address among them
    assert status == 1  # the bad file's stream failed
    assert [line["type"] for line in lines if line["stream"] == "nan.wav"] == ["error"]
    printed = [line["seq"] for line in lines if line["type"] == "utterance" and line["stream"] == "short.wav"]
    with sqlite3.connect(record) as database:
        stored = [seq for (seq,) in database.execute("SELECT seq FROM utterances WHERE stream = 'short.wav' ORDER BY seq")]
    assert printed and stored == printed


def test_with_stdout_closed_printed_utterances_are_lost_and_the_monitor_stops_saying_so(short_speech, shipped_model, monkeypatch, capsys):
    """`monitor --print-utterances >&-` (sys.stdout is None): as a stdout that closes mid-run, not an AttributeError
    ("messages could no longer be handed on")."""
    from ser_stream.cli import main

    monkeypatch.setattr(sys, "stdout", None)
    status = main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--print-utterances", "--pace", "fast", "--ws", "127.0.0.1:0",
                   "--source", f"file:{short_speech}"])
    said = capsys.readouterr().err
    assert status == 1
    assert "ser-stream: error: stdout (closed) could not be written: the monitor stopped" in said.splitlines()
    assert "AttributeError" not in said


def test_an_ipv6_port_already_taken_is_named_with_its_address_in_brackets(short_speech, shipped_model, capsys):
    """'cannot serve WebSocket on ::1:58221' read as host ::1:58221 or port 1:58221, unlike every other message."""
    import socket

    from ser_stream.cli import main

    with taken_ipv6_loopback_port(socket.SOCK_STREAM) as taken:
        taken.listen()
        port = taken.getsockname()[1]
        status = main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--ws", f"[::1]:{port}", "--source", f"file:{short_speech}"])
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1
    assert error.startswith(f"ser-stream: error: cannot serve WebSocket on [::1]:{port} (") and error.endswith("); choose another --ws\n")


def own_sockets() -> set[str]:
    """This process's open sockets, as /proc names them (``socket:[inode]``)."""
    names = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor, or another thread's)
            continue
        if name.startswith("socket:"):
            names.add(name)
    return names


def test_a_start_up_step_that_fails_lets_go_of_what_the_steps_before_it_opened(shipped_model, tmp_path, capsys):
    """A second rtp: port already taken once left the WebSocket server listening, the outbox thread running, the
    --record database open and the first RTP port bound: harmless to the command, which exits, not to a caller."""
    from ser_stream.errors import SerStreamError
    from ser_stream.monitor import MonitorOptions, run_monitor
    from ser_stream.sources import SourceSpec

    sockets_before = own_sockets()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        options = MonitorOptions(model=shipped_model, port=0, dashboard=False, record=tmp_path / "calls.db",
                                 sources=(SourceSpec("rtp", "127.0.0.1:0"), SourceSpec("rtp", f"127.0.0.1:{taken.getsockname()[1]}")))
        with pytest.raises(SerStreamError, match="cannot listen"):
            asyncio.run(run_monitor(options))
    assert [thread.name for thread in threading.enumerate() if thread.name == "outbox"] == []
    # The monitor's own sockets, not its ports: binding them again once failed if another process had taken one.
    assert own_sockets() - sockets_before == set()  # the WebSocket server's and the first RTP port's closed
    open_files = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")]
    assert not [path for path in open_files if path.startswith(str(tmp_path / "calls.db"))]  # this test's, not another's


def pty_pair(rows: int = 24, columns: int = 100) -> tuple[int, int]:
    """A pseudo-terminal (master, slave) of that size: what a program started in a terminal writes to."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    return master, slave


class TerminalReader:
    """Everything written to a pty's slave, read from its master in a thread (a full pty would block the writer)."""

    def __init__(self, master: int) -> None:
        import threading

        self.master, self.output = master, b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        import os

        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the last writer closed the slave
                return
            if not chunk:
                return
            self.output += chunk

    def wait_for(self, text: bytes, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while text not in self.output:
            assert time.monotonic() < deadline, self.output[-2000:]
            time.sleep(0.05)


@pytest.mark.parametrize("stderr_kind", ["terminal", "pipe"])
def test_printed_utterances_on_a_pipe_are_json_lines_only_with_the_dashboard_on(short_speech, shipped_model, stderr_kind):
    """`monitor --print-utterances > results.jsonl` once ended the file with the dashboard's last frame."""
    import os

    master, slave = pty_pair() if stderr_kind == "terminal" else (None, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", f"file:{short_speech}", "--pace", "fast",
         "--print-utterances", "--ws", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=slave if slave is not None else subprocess.PIPE, env={**os.environ, "TERM": "xterm"},
    )
    if slave is not None:
        os.close(slave)
        terminal = TerminalReader(master)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    lines = [json.loads(line) for line in out.decode().splitlines()]  # every line of stdout is a message
    assert [line for line in lines if line["type"] == "utterance"]
    if slave is not None:
        terminal.thread.join(10)
        os.close(master)
        assert b"latency median" in terminal.output  # the dashboard went to the terminal, on stderr
    else:
        assert "latency median" not in err.decode()  # no terminal to show it on: no dashboard


def test_with_the_dashboard_on_a_terminal_errors_go_to_a_stderr_that_is_not_that_terminal(short_speech, shipped_model, tmp_path):
    """`monitor 2> monitor.log` in a terminal: rich's Live took over sys.stderr and drew the error on the terminal,
    and the log of the exit 1 held only the address line."""
    import os

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    master, slave = pty_pair()
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", f"file:{short_speech}", "--source", f"file:{empty}",
         "--pace", "fast", "--ws", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, env={**os.environ, "TERM": "xterm"},
    )
    os.close(slave)
    terminal = TerminalReader(master)
    _, err = process.communicate(timeout=120)
    terminal.thread.join(10)
    os.close(master)
    assert process.returncode == 1
    assert f"ser-stream: error: {empty}: the file is empty (0 bytes)\n" in err.decode()  # the reason, in the log
    assert b"latency median" in terminal.output and b"the file is empty" not in terminal.output


def test_ctrl_c_while_waiting_for_subscribers_gives_the_terminal_its_cursor_back(short_speech, shipped_model):
    """The dashboard hides the cursor; Ctrl-C during --await-subscribers once left it hidden (and a traceback-free 130)."""
    import os

    master, slave = pty_pair()
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", f"file:{short_speech}", "--await-subscribers", "1",
         "--ws", "127.0.0.1:0"],
        stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "TERM": "xterm"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal would start it
    )
    os.close(slave)
    terminal = TerminalReader(master)
    terminal.wait_for(b"\x1b[?25l")  # the dashboard is up, the monitor waits for its subscriber
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    terminal.thread.join(10)
    os.close(master)
    output = terminal.output
    assert output.rfind(b"\x1b[?25h") > output.rfind(b"\x1b[?25l")  # shown again after it was last hidden
    assert b"Traceback" not in output


def test_an_empty_since_is_refused_like_any_other_that_is_not_a_seq():
    """`?since=` was silently ignored: the subscriber got live messages and no word that its catch-up was not done."""
    from websockets.exceptions import ConnectionClosedError

    from ser_stream.publish import Publisher

    async def scenario() -> tuple[int, str, list[str]]:
        publisher = Publisher("127.0.0.1", 0)
        publisher.hello = {"type": "hello"}
        await publisher.start()
        try:
            async with connect(f"ws://127.0.0.1:{publisher.port}/?since=") as refused:
                with pytest.raises(ConnectionClosedError) as closed:
                    await refused.recv()
            async with connect(f"ws://127.0.0.1:{publisher.port}/?stream=") as everything:  # an empty filter filters nothing
                first = json.loads(await everything.recv())["type"]
        finally:
            await publisher.close(0)
        return closed.value.rcvd.code, closed.value.rcvd.reason, [first]

    code, reason, received = asyncio.run(scenario())
    assert code == 1008 and reason == "?since='': not an utterance seq (a whole number, 0 to 2**63-1)"
    assert received == ["hello"]


def test_queue_depth_counts_the_windows_waiting_after_a_step_not_the_batch_just_run(clips_with_silence):
    """status.queue_depth once reported the step's own batch: always busy-looking, never what was left behind."""
    import threading

    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    path, _ = clips_with_silence
    audio, rate = soundfile.read(path, dtype="float32")
    messages: list[dict] = []
    config = MonitorConfig()
    stream = Stream("live", rate, config)
    arriving: list[np.ndarray] = []  # audio that comes in once the worker has read the ring, during its step
    read = stream.ring.read

    def read_while_more_arrives(max_samples: int | None = None, until: int | None = None) -> np.ndarray:
        block = read(max_samples, until)
        while arriving:
            stream.ring.write(arriving.pop())
        return block

    stream.ring.read = read_while_more_arrives  # type: ignore[method-assign]

    class UniformModel:
        def predict(self, batch):
            return np.full((len(batch), len(EMOTIONS)), 1 / len(EMOTIONS), np.float32)

    worker = Worker(UniformModel(), config, messages.append)  # type: ignore[arg-type]
    worker.add_stream(stream)
    stream.ring.write(audio[: 8 * rate])  # speech: windows to classify
    while stream.ring.available():  # a step reads at most a second (PUSH_LIMIT_SECONDS)
        worker.step()
    worker.publish_status(force=True)
    assert worker.windows_done > 0 and messages[-1]["queue_depth"] == 0  # all classified, nothing waits
    stream.ring.write(audio[8 * rate : 9 * rate])
    arriving.append(audio[9 * rate : 12 * rate])  # 3 s arrive while the worker works on the 1 s it read
    worker.step()
    worker.publish_status(force=True)
    hop = config.window.hop_seconds
    assert messages[-1]["queue_depth"] == int(3.0 / hop)  # 3 s unread: a window per hop of it to come
    stream.finished = True
    worker.run(threading.Event(), until_all_ended=True)
    assert worker.crash is None


class EvenModel:
    """Every window equally likely: for tests of when and where utterances are said, not of their labels."""

    def predict(self, batch):
        return np.full((len(batch), len(EMOTIONS)), 1 / len(EMOTIONS), np.float32)


def test_latency_runs_from_the_arrival_of_the_audio_that_ended_the_utterance_however_long_it_waited_in_the_ring():
    """At 300 calls on 2 cores the worker fell 7 s behind while every utterance said about 1 s: latency ran from
    when the worker read the audio, and the time it had waited in the ring went uncounted. Here the speech came
    ten minutes ago and the silence that ended its utterance 3 s ago, while the worker was busy elsewhere."""
    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    rate = 16000
    messages: list[dict] = []
    config = MonitorConfig()
    worker = Worker(EvenModel(), config, messages.append)  # type: ignore[arg-type]
    stream = Stream("live", rate, config)
    worker.add_stream(stream)
    now = time.monotonic()
    stream.ring.write(spoken(2.0, rate), arrived_at=now - 600.0)
    stream.ring.write(np.zeros(rate, np.float32), arrived_at=now - 3.0)
    stream.finished = True
    worker.run(threading.Event(), until_all_ended=True)
    assert worker.crash is None
    utterances = [m for m in messages if m["type"] == "utterance"]
    assert len(utterances) == 1
    latency = utterances[0]["latency_ms"]
    assert 3000.0 <= latency < 600_000.0  # from the silence that ended it, not from the speech it holds
    assert [m for m in messages if m["type"] == "status"][-1]["latency_ms"] == {"median": latency, "p95": latency}


def test_a_worker_behind_live_audio_says_how_far_in_status_and_warns_once_then_once_more_when_it_has_caught_up():
    """At 300 calls on 2 cores the monitor fell 8 s behind over 90 s and said nothing: no warning, /healthz ok, only
    queue_depth grew, in windows. A --pace fast file, read 10 s ahead by design, is not behind anything."""
    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    messages: list[dict] = []
    config = MonitorConfig()
    worker = Worker(EvenModel(), config, messages.append)  # type: ignore[arg-type]
    call, fast_file = Stream("call", 8000, config), Stream("call.wav", 8000, config)
    fast_file.live = False
    worker.add_stream(call)
    worker.add_stream(fast_file)
    now = time.monotonic()
    call.ring.write(np.zeros(8 * 8000, np.float32), arrived_at=now - 5.0)  # 8 s of a call, the oldest 5 s ago
    fast_file.ring.write(np.zeros(10 * 8000, np.float32), arrived_at=now - 60.0)

    def said() -> list[str]:
        return [m["message"] for m in messages if m["type"] == "warning"]

    worker.step()  # a second of each read: the rest still waits
    worker.publish_status(force=True)
    behind = messages[-1]["behind_seconds"]
    assert 5.0 <= behind < 60.0 and said() == [
        f"the monitor is {behind:.1f} s behind live audio: it has more streams (2 open) than its CPU can follow (2 cores of an "
        "Intel Xeon follow 150 or more real-time calls: docs/benchmarks.md), or the CPU is busy elsewhere; utterances come that "
        "late, and a stream 10 s behind loses its oldest audio (overruns)"]
    worker.step()
    worker.publish_status(force=True)
    assert messages[-1]["behind_seconds"] >= behind and len(said()) == 1  # still behind: said once
    while call.ring.available():
        worker.step()
    worker.publish_status(force=True)
    assert messages[-1]["behind_seconds"] == 0.0
    caught_up = said()[1:]
    assert len(caught_up) == 1
    worst = re.fullmatch(r"the monitor has caught up with live audio \(it was up to (\d+\.\d) s behind\)", caught_up[0])
    assert worst is not None and float(worst[1]) >= round(behind, 1)


def test_healthz_says_how_far_behind_live_audio_the_worker_is_and_stays_200_while_it_steps():
    from ser_stream.messages import utc_now
    from ser_stream.monitor import Outbox, worker_health
    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    config = MonitorConfig()
    worker = Worker(EvenModel(), config, lambda message: None)  # type: ignore[arg-type]
    call = Stream("call", 8000, config)
    worker.add_stream(call)
    call.ring.write(np.zeros(4 * 8000, np.float32), arrived_at=time.monotonic() - 3.0)
    worker.step()
    worker.last_step_at = time.monotonic()
    healthy, report = worker_health(worker, Outbox(lambda message: None), {"instance": "0" * 32, "started_at": utc_now()})
    assert healthy and report["status"] == "ok" and report["behind_seconds"] >= 3.0


def test_a_file_read_at_pace_fast_is_not_a_live_stream_and_one_in_real_time_is(tmp_path):
    """A fast file's ring is full by design: counted, it would have had the monitor warn of being behind live audio."""
    from ser_stream.cli import _monitor_options, build_parser
    from ser_stream.monitor import open_file_like_sources, open_sources
    from ser_stream.pipeline import MonitorConfig, Worker

    path = tmp_path / "call.wav"
    soundfile.write(path, np.zeros(8000, np.float32), 8000)
    live = {}
    for pace in ("fast", "realtime"):
        args = build_parser().parse_args(["monitor", "--source", f"file:{path}", "--pace", pace])
        options = _monitor_options(args, args.source)
        worker = Worker(EvenModel(), MonitorConfig(), lambda message: None)  # type: ignore[arg-type]
        open_sources(options, open_file_like_sources(options), worker, worker.open_stream, worker.warn, lambda line: None)
        live[pace] = [stream.live for stream in worker.streams.values()]
    assert live == {"fast": [False], "realtime": [True]}


def test_a_file_that_cannot_be_opened_beside_an_rtp_source_is_its_streams_error_and_calls_are_still_received(tmp_path):
    """Only when every source failed is there nothing to monitor: an rtp: source has not failed, and still takes calls."""
    from ser_stream.cli import _monitor_command_options, build_parser
    from ser_stream.g711 import mulaw_encode
    from ser_stream.monitor import open_file_like_sources, open_sources
    from ser_stream.pipeline import MonitorConfig, Worker

    missing = tmp_path / "missing.wav"
    options = _monitor_command_options(build_parser().parse_args(["monitor", "--source", f"file:{missing}", "--source", "rtp:127.0.0.1:0"]))
    messages: list[dict] = []
    worker = Worker(EvenModel(), MonitorConfig(), messages.append)  # type: ignore[arg-type]
    sources = open_sources(options, open_file_like_sources(options), worker, worker.open_stream, worker.warn, lambda line: None)
    try:
        [(receiver, _)] = sources.receivers
        receiver.receive(rtp(0, 0, mulaw_encode(np.zeros(PACKET_SAMPLES, np.float32)).tobytes(), ssrc=1), "127.0.0.1:4000")
    finally:
        sources.close_receivers_never_run()
    worker.step()
    assert sorted(worker.streams) == ["rtp-00000001"]  # the call, heard; the file's stream ended at once
    assert {"type": "error", "stream": "missing.wav", "message": f"{missing}: no such file"} in messages


@pytest.mark.parametrize(("given", "floor"), [([], 0.2), (["--voice-floor", "0.3"], 0.3), (["--voice-floor", "off"], None)])
def test_voice_floor_sets_where_webrtc_is_asked_and_off_leaves_silero_alone(given, floor):
    from ser_stream.cli import _monitor_options, build_parser

    args = build_parser().parse_args(["monitor", "--source", "file:call.wav", *given])
    assert _monitor_options(args, args.source).config.utterance.voice_floor == floor


def test_the_outbox_hands_messages_on_in_order_and_never_holds_up_a_thread_that_emits_while_the_database_waits():
    """The worker stored each utterance itself: a --record database held by a retention job's DELETE stalled it, and
    40 calls' audio overran (31 s of it lost in an audit)."""
    from ser_stream.monitor import Outbox

    released, handed_on = threading.Event(), []

    def deliver(message):
        if message["n"] == 0:
            released.wait(30)  # the first insert waits on another writer's lock
        handed_on.append(message["n"])

    outbox = Outbox(deliver, capacity=100)
    outbox.start()
    for n in range(100):  # the worker goes on emitting while the database is held
        outbox.put({"n": n})
    assert outbox.full_waits == 0 and handed_on == []
    released.set()
    assert outbox.close(30) and handed_on == list(range(100))


def test_a_status_log_writes_the_latest_status_as_often_as_asked_and_names_what_was_lost_since_the_line_before(monkeypatch):
    """Status went to WebSocket subscribers only: a service's log never said that 40 calls had overrun."""
    import ser_stream.monitor
    from ser_stream.monitor import StatusLog

    clock, lines = [0.0], []
    monkeypatch.setattr(ser_stream.monitor.time, "monotonic", lambda: clock[0])
    log = StatusLog(60.0, lines.append)
    quiet = {"type": "status", "overruns": 0, "refused_streams": 0, "streams": 40, "queue_depth": 0}
    log.offer(quiet)
    clock[0] = 30.0
    log.offer({**quiet, "overruns": 40})  # within the minute: not yet
    clock[0] = 61.0
    log.offer({**quiet, "overruns": 40, "refused_streams": 2})
    log.flush()  # nothing new since: nothing more
    clock[0] = 122.0
    log.offer({**quiet, "overruns": 40, "refused_streams": 2, "streams": 38})  # nothing lost since the line before: no warning
    assert lines == [
        'ser-stream: status {"overruns":0,"refused_streams":0,"streams":40,"queue_depth":0}',
        'ser-stream: status {"overruns":40,"refused_streams":2,"streams":40,"queue_depth":0}',
        "ser-stream: warning: since the last status line: overruns +40, refused streams +2",
        'ser-stream: status {"overruns":40,"refused_streams":2,"streams":38,"queue_depth":0}',
    ]


def test_a_monitor_asked_to_log_its_status_ends_its_log_with_the_runs_totals(short_speech, shipped_model):
    process = subprocess.run(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", f"file:{short_speech}", "--pace", "fast", "--no-dashboard",
         "--ws", "127.0.0.1:0", "--log-status", "3600"],
        capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == 0, process.stderr
    logged = [json.loads(line.removeprefix("ser-stream: status ")) for line in process.stderr.splitlines() if line.startswith("ser-stream: status ")]
    assert len(logged) == 2  # the first status, then, at the stop, the last one: the run's totals
    assert logged[-1]["utterances"] >= 1 and logged[-1]["overruns"] == 0 and "type" not in logged[-1]


def test_a_monitor_taking_calls_answers_healthz_with_its_instance_and_a_worker_that_steps(shipped_model):
    import http.client

    with call_monitor(shipped_model) as (port, _):
        async def hello_then_health() -> tuple[dict, int, dict]:
            async with await subscriber_when_up(port) as subscriber:
                hello = json.loads(await subscriber.recv())
            client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            for _ in range(100):  # the worker starts just after the sockets
                client.request("GET", "/healthz")
                response = client.getresponse()
                report = json.loads(response.read())
                if report["status"] != "starting":
                    break
                await asyncio.sleep(0.1)
            client.close()
            return hello, response.status, report

        hello, status, report = asyncio.run(hello_then_health())
    assert status == 200 and report["status"] == "ok" and report["instance"] == hello["instance"]
    assert report["seconds_since_worker_step"] < 5.0 and report["streams"] == 0 and report["outbox_full_waits"] == 0
    assert report["outbox"] in (0, 1)  # idle: empty, or the second's status on its way


def test_a_full_outbox_makes_the_emitting_thread_wait_rather_than_drop_a_message():
    from ser_stream.monitor import Outbox

    released, handed_on = threading.Event(), []
    outbox = Outbox(lambda message: (released.wait(30), handed_on.append(message["n"])), capacity=2)
    outbox.start()
    emitter = threading.Thread(target=lambda: [outbox.put({"n": n}) for n in range(5)])
    emitter.start()
    deadline = time.monotonic() + 60  # a bound for a failing test: a second could pass before the fourth put on a loaded machine
    while emitter.is_alive() and outbox.full_waits == 0 and time.monotonic() < deadline:
        emitter.join(0.01)
    assert emitter.is_alive() and outbox.full_waits >= 1  # it waits for room: the monitor's messages are never dropped
    released.set()
    emitter.join(30)
    assert outbox.close(30) and handed_on == list(range(5))


@pytest.mark.parametrize(("stdout", "stderr", "drawn_on"), [(True, True, "stdout"), (False, True, "stderr"), (False, False, None)])
def test_the_dashboard_draws_on_a_terminal_only(monkeypatch, stdout, stderr, drawn_on):
    """With stdout in a service's log and no --print-utterances, every stop wrote the last 23-line frame into the log."""
    import ser_stream.monitor

    monkeypatch.setattr(ser_stream.monitor, "is_terminal", lambda stream: stdout if stream is sys.stdout else stderr)
    console = ser_stream.monitor.dashboard_console()
    assert (None if console is None else "stderr" if console.stderr else "stdout") == drawn_on


@pytest.mark.parametrize("term", ["dumb", "unknown"])
def test_on_a_terminal_that_cannot_redraw_there_is_no_dashboard_and_the_monitor_says_so(short_speech, shipped_model, term):
    """TERM=dumb (Emacs' M-x shell): rich's Live drew nothing for the whole run, then its last frame, and nothing
    said why or where the utterances went."""
    import os

    master, slave = pty_pair()
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", f"file:{short_speech}", "--pace", "fast", "--ws", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env={**os.environ, "TERM": term},
    )
    os.close(slave)
    terminal = TerminalReader(master)
    assert process.wait(120) == 0
    terminal.thread.join(10)
    os.close(master)
    lines = terminal.output.decode().splitlines()
    assert (f"ser-stream: no dashboard (TERM={term} cannot draw it): utterances go to WebSocket subscribers only "
            "(--print-utterances prints them as JSON lines; --no-dashboard silences this)") in lines
    assert b"latency median" not in terminal.output


def test_demo_lists_and_takes_only_the_options_its_bundled_recording_can_use(capsys):
    """``demo --help`` once listed stdin's, the microphone's and ingest's options, which the demo never uses."""
    from ser_stream.cli import _monitor_options, build_parser

    live_only = ["--rate", "--channels", "--samplerate", "--max-ingest-connections"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    demo_help = capsys.readouterr().out
    assert "--pace" in demo_help and "--token" in demo_help and not any(option in demo_help for option in live_only)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["monitor", "--help"])
    monitor_help = capsys.readouterr().out
    assert all(option in monitor_help for option in live_only)
    for option in live_only:
        with pytest.raises(SystemExit):
            build_parser().parse_args(["demo", option, "8000"])
        assert f"unrecognized arguments: {option} 8000" in capsys.readouterr().err
    args = build_parser().parse_args(["demo", "--pace", "fast"])
    assert _monitor_options(args, ["file:demo.flac"]).stdin_rate == 16000  # the monitor's defaults stand in for what demo lacks


def test_the_help_states_the_limits_and_defaults_the_readme_states(capsys):
    """--jitter-packets' help gave its default but not its limit of 50, which only a refusal then told."""
    from ser_stream.cli import build_parser
    from training.__main__ import main as train_main

    with pytest.raises(SystemExit):
        build_parser().parse_args(["monitor", "--help"])
    assert "declared lost (1 to 50; default 5)" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        train_main(["--help"])
    training_help = " ".join(capsys.readouterr().out.split())
    for said in ("RAVDESS-layout folder (default: ../shared/data/ravdess16k)", "held-out speakers (default: 5)", "feature augmentation (default: 0)"):
        assert said in training_help


def test_the_demo_without_a_terminal_prints_its_utterances_as_json_lines():
    """`./dev.sh demo | tee demo.log`: the dashboard needs a terminal, and the demo once ran and showed nothing."""
    result = subprocess.run([sys.executable, "-m", "ser_stream", "demo", "--pace", "fast", "--ws", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    utterances = [json.loads(line) for line in result.stdout.splitlines()]
    assert utterances and all(line["type"] == "utterance" and line["label"] in EMOTIONS for line in utterances)
    assert "ser-stream: no dashboard (no terminal, or --no-dashboard): each utterance is printed as a JSON line" in result.stderr.splitlines()


def test_a_source_sampled_below_8_khz_is_warned_of_as_classify_warns_of_it(tmp_path, shipped_model, capsys):
    """classify said a 6 kHz file holds nothing above 3 kHz of the 0–4 kHz the model hears; the monitor said nothing."""
    from ser_stream.cli import main

    path = tmp_path / "low.wav"
    soundfile.write(path, speechlike(2.0, 6000), 6000)
    status = main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--pace", "fast", "--ws", "127.0.0.1:0", "--source", f"file:{path}"])
    assert status == 0
    assert ("ser-stream: warning: low.wav: sampled at 6000 Hz, so it holds nothing above 3000 Hz of the 0–4000 Hz the model "
            "hears; its label may differ from the same speech recorded at 8 kHz or more") in capsys.readouterr().err.splitlines()


def test_the_below_8_khz_warning_names_its_stream_as_a_streams_warning_does(tmp_path, shipped_model, capsys):
    """docs/protocol.md: a stream's warning carries ``stream``; this one had none, so a subscriber following another
    stream (``?stream=``) got it too, and nothing tied it to its stream but the text."""
    from ser_stream.cli import main

    path = tmp_path / "low.wav"
    soundfile.write(path, speechlike(2.0, 6000), 6000)
    status = main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--print-utterances", "--pace", "fast", "--ws", "127.0.0.1:0",
                   "--source", f"file:{path}"])
    warnings = [line for line in map(json.loads, capsys.readouterr().out.splitlines()) if line["type"] == "warning"]
    assert status == 0
    assert [(line.get("stream"), line["message"].split(":")[0]) for line in warnings] == [("low.wav", "low.wav")] * 2  # and at its end:
    assert warnings[-1]["message"] == no_utterance("low.wav", 2.0)  # speechlike sound at 6 kHz is no speech to the detector


def test_the_below_8_khz_warning_follows_its_streams_start_and_reaches_the_subscriber_the_monitor_waited_for(tmp_path, shipped_model):
    """It was emitted from the main thread as the stream was opened, before the worker announced the stream: it came
    ahead of its stream_started, and --await-subscribers' subscriber, connecting after, never got it."""
    path = tmp_path / "low.wav"
    soundfile.write(path, speechlike(2.0, 6000), 6000)
    messages = subscribed_run(path)
    said = [(m["type"], m["stream"]) for m in messages if m["type"] in ("stream_started", "warning", "stream_ended")]
    assert said == [("stream_started", "low.wav"), ("warning", "low.wav"), ("warning", "low.wav"), ("stream_ended", "low.wav")]  # 2nd: no_utterance
    assert next(m for m in messages if m["type"] == "warning")["message"].startswith("low.wav: sampled at 6000 Hz")


@pytest.mark.parametrize(("options", "said"), [([], True), (["--print-utterances"], False), (["--no-dashboard"], False)],
                         ids=["dashboard-asked", "printing", "no-dashboard"])
def test_the_monitor_without_a_terminal_says_where_its_utterances_go(short_speech, shipped_model, capsys, options, said):
    """`ser-stream monitor --source file:call.wav | cat` once printed the page's address and nothing else."""
    from ser_stream.cli import main

    status = main(["monitor", "--model", str(shipped_model), "--pace", "fast", "--ws", "127.0.0.1:0", "--source", f"file:{short_speech}", *options])
    note = ("ser-stream: no terminal for the dashboard: utterances go to WebSocket subscribers only "
            "(--print-utterances prints them as JSON lines; --no-dashboard silences this)")
    assert status == 0 and (note in capsys.readouterr().err.splitlines()) == said


@pytest.mark.parametrize("command", ["monitor", "demo"])
def test_a_start_up_error_is_the_only_line_no_note_of_where_results_would_have_gone(command, short_speech, shipped_model, capsys):
    """A port already taken: the note that utterances go to subscribers (or are printed) once came first, describing a
    run that never started, and a service's log began with it."""
    from ser_stream.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        sources = ["--source", f"file:{short_speech}"] if command == "monitor" else []
        status = main([command, "--model", str(shipped_model), "--pace", "fast", "--ws", f"127.0.0.1:{taken.getsockname()[1]}", *sources])
    said = capsys.readouterr().err.splitlines()
    assert status == 2
    assert len(said) == 1 and said[0].startswith("ser-stream: error: "), said


def test_the_demo_piped_into_tee_prints_its_utterances_there_with_the_dashboard_on_the_terminal():
    """`./dev.sh demo | tee demo.log` on a terminal: the dashboard drew on stderr and demo.log stayed empty, though the
    README says the utterances come as JSON lines."""
    result, shown = demo_with_stderr_on_a_terminal(stdout=subprocess.PIPE)
    assert result.returncode == 0, shown[-2000:]
    utterances = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert utterances and all(line["type"] == "utterance" and line["label"] in EMOTIONS for line in utterances)
    assert "last utterances" in shown  # the dashboard, on the terminal
    assert "no dashboard" not in shown


def test_the_demo_with_stdout_closed_and_its_dashboard_on_the_terminal_runs_to_the_end():
    """`ser-stream demo >&-` on a terminal: piped-stdout printing took a closed stdout for a pipe, and the demo stopped
    after its first utterance with exit 1 ("stdout (closed) could not be written")."""
    result, shown = demo_with_stderr_on_a_terminal(preexec_fn=lambda: os.close(1))
    assert result.returncode == 0, shown[-2000:]
    assert "could not be written" not in shown and "last utterances" in shown


def demo_with_stderr_on_a_terminal(**run_options) -> tuple[subprocess.CompletedProcess, str]:
    """The demo at --pace fast with stderr on a 100x40 pty (stdout as ``run_options`` say); its result, and what the
    terminal showed."""
    import pty

    controller, terminal = pty.openpty()
    drawn = bytearray()
    reader = threading.Thread(target=lambda: drain_into(controller, drawn), daemon=True)
    reader.start()
    try:
        result = subprocess.run([sys.executable, "-m", "ser_stream", "demo", "--pace", "fast", "--ws", "127.0.0.1:0"],
                                stderr=terminal, stdin=subprocess.DEVNULL, timeout=300,
                                env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "40"}, **run_options)
    finally:
        os.close(terminal)
        reader.join(timeout=10)
        os.close(controller)
    return result, drawn.decode(errors="replace")


def drain_into(descriptor: int, received: bytearray) -> None:
    """Read a pty's controller side until the terminal side is closed, so a process writing to it never blocks."""
    while True:
        try:
            chunk = os.read(descriptor, 65536)
        except OSError:  # EIO once the last writer is gone
            return
        if not chunk:
            return
        received.extend(chunk)


@pytest.mark.parametrize("after", [0.05, 0.3, 0.8])
def test_ctrl_c_while_the_monitor_is_still_loading_is_a_quiet_exit(after, short_speech):
    """Ctrl-C in the first second, while numpy and onnxruntime load, once printed a 30-line KeyboardInterrupt traceback."""
    for _ in range(5):
        process = subprocess.Popen(
            [sys.executable, "-m", "ser_stream", "monitor", "--source", f"file:{short_speech}", "--no-dashboard", "--ws", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal would start it
        )
        time.sleep(after)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        before_run = "Traceback" in err and "in run\n" not in err  # e.g. in __main__'s own `import signal`
        if "init_import_site" not in err and not before_run:
            break
        # On a loaded machine the signal can land while Python itself starts (its site module: "Fatal Python error:
        # init_import_site"; or the package's and __main__'s first imports, before run() sets its handler), as for any
        # Python program: that says nothing here, so the interrupt is sent again a little later.
        after *= 2
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    # 130, or killed by the signal itself if it came before the interpreter set its handler (a loaded machine): a shell shows both as 130
    assert process.returncode in (0, 130, -signal.SIGINT), err


def test_the_monitor_given_no_options_runs_with_its_config_dataclasses_defaults(monkeypatch):
    """--max-batch, --subscriber-queue and --max-ingest-connections's help repeated their dataclass's default as a
    literal: a default changed in one place would have left the other saying the old one."""
    import argparse
    from dataclasses import replace

    from ser_stream.cli import _monitor_command_options, build_parser
    from ser_stream.monitor import MonitorOptions
    from ser_stream.publish import AccessConfig

    monkeypatch.delenv("SER_STREAM_TOKEN", raising=False)
    parser = build_parser()
    assert _monitor_command_options(parser.parse_args(["monitor", "--ingest"])) == replace(MonitorOptions(sources=()), ingest=True)
    monitor = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction)).choices["monitor"]
    ingest_limit = next(action for action in monitor._actions if "--max-ingest-connections" in action.option_strings)
    assert ingest_limit.help is not None and ingest_limit.help.endswith(f"(default {AccessConfig.max_ingest_connections})")


def test_every_option_with_a_default_names_it_in_its_help():
    """--min-silence, --max-utterance and five more left their defaults out of --help: a user whose 15 s of speech came
    back as two utterances could not learn there that the limit is 10 s."""
    import argparse

    from ser_stream.cli import build_parser

    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    silent = [
        f"{name} {action.option_strings[0]}"
        for name, command in commands.choices.items()
        for action in command._actions
        if action.option_strings and action.help not in (None, argparse.SUPPRESS) and action.default not in (None, False, [], argparse.SUPPRESS)
        and "default" not in action.help
    ]
    assert silent == []


def test_connections_past_the_open_file_limit_are_one_warning_line_and_counted_not_a_traceback_each_second():
    """Out of descriptors (a burst of subscribers under `ulimit -n`), asyncio's accept loop logged a four-line
    traceback for each try to accept, once a second while it lasted: a review's log held thousands, and no status
    counted them. Now one warning names the limit and what to do, and each second it lasts is counted (failed_accepts)."""
    import queue
    import resource

    limit = 48  # the monitor holds ~20 at start: a few dozen subscribers are more than it may open
    port, rtp_port = free_port(), free_port(socket.SOCK_DGRAM)
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", f"rtp:127.0.0.1:{rtp_port}", "--no-dashboard",
         "--ws", f"127.0.0.1:{port}", "--log-status", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1])),
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line.rstrip("\n")) for line in process.stderr or ()], daemon=True)
    reader.start()
    seen: list[str] = []

    def next_line() -> str:
        seen.append(lines.get(timeout=60))
        return seen[-1]

    subscribers: list[socket.socket] = []
    try:
        while "WebSocket ws://" not in next_line():
            pass
        for _ in range(2 * limit):  # each asks for an upgrade and reads nothing: it holds a descriptor of the monitor's
            subscriber = socket.create_connection(("127.0.0.1", port))
            subscriber.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            subscribers.append(subscriber)
        failed_accepts, statuses = 0, 0
        while failed_accepts < 3 and statuses < 15:  # a second each: three status lines or so
            line = next_line()
            if line.startswith("ser-stream: status "):
                statuses += 1
                failed_accepts = json.loads(line.removeprefix("ser-stream: status ")).get("failed_accepts", 0)
        for subscriber in subscribers:
            subscriber.close()
        hello = asyncio.run(first_message(port))  # accepted once descriptors are free again, after those that waited
    finally:
        for subscriber in subscribers:
            subscriber.close()
        process.send_signal(signal.SIGINT)
        process.wait(60)
    reader.join(30)  # the monitor has exited: its stderr is at its end
    while not lines.empty():
        seen.append(lines.get())
    log = "\n".join(seen)
    assert "Traceback" not in log and "out of system resource" not in log, log[-2000:]
    said = [line for line in seen if "connections are not being accepted" in line]
    assert said == [
        f"ser-stream: warning: connections are not being accepted (Too many open files): the monitor has as many files and "
        f"connections open as its limit allows, {limit}: raise it (ulimit -n, systemd's LimitNOFILE=); they wait, tried "
        "again each second, each second counted in failed_accepts"
    ], log[-2000:]
    assert failed_accepts >= 3 and hello["type"] == "hello" and process.returncode == 0


async def first_message(port: int) -> dict:
    async with await subscriber_when_up(port) as subscriber:
        return json.loads(await asyncio.wait_for(subscriber.recv(), 30))


def test_a_broken_stderr_written_by_two_threads_at_once_is_lost_once_and_holds_no_descriptor(monkeypatch):
    """The check for a loss ran before the lock: a thread that had passed it while another's write failed wrote and
    failed again, recording stderr lost twice (its one-line error then said twice) and leaving a /dev/null descriptor
    open for each loss. Now one writer thread writes each output, and a loss is recorded under the lock."""
    from ser_stream.monitor import Outputs

    reader, broken = os.pipe()
    os.close(reader)
    monkeypatch.setattr(sys, "stderr", os.fdopen(broken, "w"))  # its reader went away: BrokenPipeError
    loop = asyncio.new_event_loop()
    try:
        outputs = Outputs(loop, asyncio.Event())
        descriptors = len(os.listdir("/proc/self/fd"))
        start = threading.Barrier(2)

        def warn_often() -> None:
            start.wait()
            for number in range(50):
                outputs.print_line(f"ser-stream: warning: line {number}", to_stderr=True)

        writers = [threading.Thread(target=warn_often) for _ in range(2)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(60)
        outputs.close(30)
        assert outputs.lost == ["stderr (BrokenPipeError: Broken pipe)"]
        assert len(os.listdir("/proc/self/fd")) == descriptors
    finally:
        loop.close()


def full_pipe() -> tuple[int, int]:
    """A one-page (4 KiB) pipe already full, as a reader that stopped reading (`| jq` stopped with Ctrl-Z, a log
    shipper backed up) leaves it: its read end, never read here, and its write end."""
    import fcntl

    reader, writer = os.pipe()
    fcntl.fcntl(writer, fcntl.F_SETPIPE_SZ, 4096)
    os.set_blocking(writer, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(writer, b"x" * 4096)
    os.set_blocking(writer, True)
    return reader, writer


def test_a_stdout_nobody_reads_holds_up_no_subscriber_and_the_monitor_exits_saying_what_it_did_not_write(clips_with_silence, shipped_model):
    """`--print-utterances | jq` with jq stopped: the outbox thread waited in stdout's write, under the lock every line
    was written under, so subscribers (and --record) got nothing more, and the shutdown's line on stderr then held
    the event loop, and SIGTERM with it, for ever (a thread-safety review, r17: killed with SIGKILL)."""
    path, bounds = clips_with_silence
    port = free_port()
    reader, writer = full_pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--model", str(shipped_model), "--source", f"file:{path}", "--pace", "fast",
         "--no-dashboard", "--print-utterances", "--ws", f"127.0.0.1:{port}", "--await-subscribers", "1"],
        stdout=writer, stderr=subprocess.PIPE, text=True,
    )
    os.close(writer)

    async def every_message() -> list[dict]:
        messages = []
        async with await subscriber_when_up(port, monitor=process) as subscriber:  # type: ignore[arg-type]
            with contextlib.suppress(ConnectionClosed):
                while True:
                    messages.append(json.loads(await asyncio.wait_for(subscriber.recv(), 60)))
        return messages

    try:
        messages = asyncio.run(every_message())
        _, errors = process.communicate(timeout=60)
    finally:
        process.kill()
        os.close(reader)
    printed = [message for message in messages if message["type"] in ("utterance", "error", "warning")]
    types = [message["type"] for message in messages]
    assert types.count("utterance") == len(bounds)  # every one, to the subscriber
    # the stream's end, then the run's totals; a status falls due about once a second, and when one fell due in the
    # worker's last step it came between them (a loaded machine's longer steps make that likelier)
    assert types[types.index("stream_ended"):] in (["stream_ended", "status"], ["stream_ended", "status", "status"])
    assert messages[-1]["utterances"] == len(bounds)
    assert process.returncode == 1, errors
    assert errors.splitlines()[-1] == (f"ser-stream: error: stdout: {len(printed)} line(s) were not written: its reader stopped reading "
                                       "or fell 10000 lines behind (stdout_drops)")


def test_a_stderr_nobody_reads_holds_up_nothing_and_sigterm_still_stops_the_monitor(clips_with_silence, shipped_model):
    """A stalled stderr took the same path: its first line (the page's address) held the event loop before any
    subscriber or source could start, and SIGTERM was never acted on."""
    import queue

    path, _ = clips_with_silence
    reader, writer = full_pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--model", str(shipped_model), "--source", f"file:{path}",
         "--no-dashboard", "--print-utterances", "--ws", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=writer, text=True,
    )
    os.close(writer)
    lines: queue.Queue[str] = queue.Queue()
    stdout = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or []], daemon=True)
    stdout.start()
    try:
        # up to the first utterance, printed while stderr takes nothing; a warning may come before it: on a loaded
        # machine the worker can fall 2 s behind the file (read in real time, as live audio), and says so
        printed = [json.loads(lines.get(timeout=60))]
        while printed[-1]["type"] != "utterance":
            printed.append(json.loads(lines.get(timeout=60)))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 1
        stdout.join(60)
    finally:
        process.kill()
        os.close(reader)
    said = [lines.get_nowait() for _ in range(lines.qsize())]  # after the first utterance
    assert all(message["type"] == "warning" for message in printed[:-1])
    assert any(': stopped before the end of its file' in line for line in said)  # the stop was acted on
    unwritten = re.fullmatch(r"ser-stream: error: stderr: (\d+) line\(s\) were not written: its reader stopped reading or fell 10000 lines "
                             r"behind \(stderr_drops\)\n", said[-1])
    assert unwritten is not None and int(unwritten[1]) >= 2  # the page's address, the stop's warning


def test_an_output_whose_reader_stalls_drops_what_it_cannot_hold_counts_it_and_says_so_once(monkeypatch, capsys):
    """Its writer takes lines in order; past its queue they are dropped, newest first, counted for status; the
    shutdown gives up on it once it writes nothing for OUTPUT_STALL_SECONDS, and the rest are counted too."""
    import ser_stream.monitor
    from ser_stream.monitor import Outputs

    reader, writer = full_pipe()
    stalled = os.fdopen(writer, "w")
    monkeypatch.setattr(sys, "stdout", stalled)
    monkeypatch.setattr(ser_stream.monitor, "OUTPUT_STALL_SECONDS", 0.2)
    loop = asyncio.new_event_loop()
    try:
        outputs = Outputs(loop, asyncio.Event(), capacity=3)
        for number in range(10):
            outputs.print_line(json.dumps({"type": "utterance", "n": number}), to_stderr=False)
        assert 6 <= outputs.counters()["stdout_drops"] <= 7  # 3 wait, and the first unless it was taken to be written
        outputs.drain(60)  # returns once stdout has written nothing for 0.2 s
        assert outputs.counters() == {"stdout_drops": 10, "stderr_drops": 0}  # nothing reached it: each line counted once
        assert outputs.say_unwritten()
        outputs.close(60)
        assert capsys.readouterr().err.splitlines() == [
            "ser-stream: warning: stdout: 3 lines wait for its reader, which has stopped reading or fallen that far behind: further lines "
            "are dropped until it catches up, counted (stdout_drops)",
            "ser-stream: error: stdout: 10 line(s) were not written: its reader stopped reading or fell 3 lines behind (stdout_drops)",
        ]
    finally:
        os.set_blocking(reader, False)
        with contextlib.suppress(BlockingIOError):  # the line its writer still holds goes, and the thread ends
            while os.read(reader, 65536):
                pass
        monkeypatch.undo()
        stalled.close()
        os.close(reader)
        loop.close()


def test_lines_printed_from_many_threads_reach_a_slow_reader_in_each_threads_order_and_none_is_dropped(monkeypatch):
    import ser_stream.monitor
    from ser_stream.monitor import Outputs

    monkeypatch.setattr(ser_stream.monitor, "OUTPUT_STALL_SECONDS", 60.0)  # however busy the machine, it is read

    reader, writer = os.pipe()
    slow = os.fdopen(writer, "w")
    monkeypatch.setattr(sys, "stdout", slow)
    received: list[bytes] = []
    reading = threading.Event()

    def read_when_told() -> None:
        reading.wait(60)  # the writer waits meanwhile: its pipe fills
        while chunk := os.read(reader, 4096):
            received.append(chunk)

    reader_thread = threading.Thread(target=read_when_told)
    reader_thread.start()
    loop = asyncio.new_event_loop()
    try:
        outputs = Outputs(loop, asyncio.Event())
        printers = [threading.Thread(target=lambda name=name: [outputs.print_line(f"{name} {number:04d} " + "x" * 100, to_stderr=False)
                                                               for number in range(1000)]) for name in "ab"]
        for printer in printers:
            printer.start()
        for printer in printers:
            printer.join(60)
        reading.set()
        outputs.close(60)
    finally:
        monkeypatch.undo()
        slow.close()
        reader_thread.join(60)
        os.close(reader)
        loop.close()
    lines = b"".join(received).decode().splitlines()
    assert outputs.counters()["stdout_drops"] == 0
    for name in "ab":
        assert [line.split()[1] for line in lines if line.startswith(name)] == [f"{number:04d}" for number in range(1000)]


class ReaderTold:
    """A stdout whose reader takes nothing until ``reading`` is set: a `| jq` paused, or slower than the monitor."""

    def __init__(self) -> None:
        self.reading = threading.Event()
        self.received: list[str] = []

    def write(self, text: str) -> None:
        self.reading.wait(60)
        self.received.append(text)

    def flush(self) -> None:
        pass


def printer_waiting_for_room(outputs) -> threading.Thread:
    """A thread printing 20 lines to stdout, found waiting for room: stdout's writer holds the first line, its queue
    the next ``capacity``. Found so a second after it started, it could still be short of filling the queue on a
    loaded machine, and the event loop's line after it was then queued instead of dropped."""
    printer = threading.Thread(target=lambda: [outputs.print_line(f"line {number:02d}", to_stderr=False) for number in range(20)])
    printer.start()
    stdout = outputs.writers["stdout"]
    with stdout.changed:
        assert stdout.changed.wait_for(lambda: stdout.writing and len(stdout.lines) == stdout.capacity, 60)
    assert printer.is_alive()  # waiting for room: nothing read yet, nothing dropped
    return printer


def test_a_batch_runs_outputs_wait_for_a_slow_reader_and_lose_nothing_but_the_event_loop_never_waits(monkeypatch):
    """`--pace fast --print-utterances | jq` with jq slower than the monitor: its sources wait for the monitor, so its
    printer waits for room rather than drop (the fix for a stalled reader first dropped them past the queue). The
    event loop still never waits: its line past the queue is dropped, counted."""
    from ser_stream.monitor import Outputs

    slow = ReaderTold()
    monkeypatch.setattr(sys, "stdout", slow)
    loop = asyncio.new_event_loop()
    try:
        outputs = Outputs(loop, asyncio.Event(), capacity=3, wait_for_reader=True)
        printer = printer_waiting_for_room(outputs)
        assert outputs.counters()["stdout_drops"] == 0

        async def from_the_loop() -> None:
            outputs.print_line("from the loop", to_stderr=False)  # returns at once though the queue is full

        loop.run_until_complete(asyncio.wait_for(from_the_loop(), 60))
        assert outputs.counters()["stdout_drops"] == 1
        slow.reading.set()
        printer.join(60)
        assert not printer.is_alive()
        outputs.close(60)
    finally:
        slow.reading.set()
        monkeypatch.undo()
        loop.close()
    assert [line for line in slow.received if line.startswith("line")] == [f"line {number:02d}\n" for number in range(20)]
    assert outputs.counters()["stdout_drops"] == 1


@pytest.mark.parametrize(("arguments", "batch"), [
    (["--source", "file:a.wav", "--pace", "fast"], True),
    (["--source", "stdin", "--source", "file:a.wav", "--pace", "fast"], True),
    (["--source", "file:a.wav"], False),  # real time: as live audio
    (["--source", "file:a.wav", "--pace", "fast", "--source", "rtp:127.0.0.1:5004"], False),
    (["--source", "file:a.wav", "--pace", "fast", "--ingest"], False),
    (["--source", "mic"], False),
])
def test_only_a_run_of_fast_files_and_stdin_without_ingest_is_a_batch_run(arguments, batch):
    from ser_stream.cli import _monitor_command_options, build_parser
    from ser_stream.monitor import is_batch_run

    assert is_batch_run(_monitor_command_options(build_parser().parse_args(["monitor", *arguments]))) is batch


def test_at_the_stop_a_batch_runs_printer_waiting_for_a_stalled_reader_gives_up_on_it_so_the_outbox_can_go_on(monkeypatch):
    """The batch rule's first version held the outbox thread, waiting for room, until the outbox's 30 s at the stop ran
    out: the record was closed under it (17 of 62 utterances stored) and the run said 45 were dropped (a regression
    review, r17). At the stop a printer waits only while the reader reads; stalled for OUTPUT_STALL_SECONDS, the output
    is given up and every line it could not take is counted."""
    import ser_stream.monitor
    from ser_stream.monitor import Outputs

    stalled = ReaderTold()
    monkeypatch.setattr(sys, "stdout", stalled)
    monkeypatch.setattr(ser_stream.monitor, "OUTPUT_STALL_SECONDS", 0.2)
    loop = asyncio.new_event_loop()
    try:
        outputs = Outputs(loop, asyncio.Event(), capacity=3, wait_for_reader=True)
        printer = printer_waiting_for_room(outputs)  # a batch run: it waits for the reader while the run goes on
        outputs.stop_waiting()
        printer.join(60)
        assert not printer.is_alive()  # the stop: the reader took nothing for 0.2 s, so the printer goes on
        outputs.drain(60)
        assert outputs.counters() == {"stdout_drops": 20, "stderr_drops": 0}  # none written, each counted once
    finally:
        stalled.reading.set()
        monkeypatch.undo()
        loop.close()
