"""Calls coming and going through the worker: ids reused, calls refused, and the order subscribers hear of them."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import numpy as np
import pytest

from ser_stream import pipeline
from ser_stream.errors import StreamRefused
from ser_stream.g711 import mulaw_encode
from ser_stream.pipeline import MonitorConfig, Stream, Worker
from ser_stream.record import read_since
from ser_stream.rtp import RESUMED_PACKETS_HELD, RtpConfig, RtpReceiver
from tests.conftest import PACKET_SAMPLES, rtp, spoken, undocumented_fields

SILENCE = mulaw_encode(np.zeros(PACKET_SAMPLES)).tobytes()  # no speech, so no window ever reaches a model



def silent_end(stream: str, seconds: float) -> str:
    """The end warning of a call that gave no utterance: these tests' calls send silence."""
    return f"{stream}: no utterance in its {seconds:.1f} s: the voice detector heard no speech, or none long enough to label"

def monitor_opener(worker: Worker):
    """What the monitor hands its RTP receiver and ingest: build a stream, then give it to the worker."""

    def open_call_stream(stream_id: str, sample_rate: int) -> Stream:
        stream = Stream(stream_id, sample_rate, worker.config)
        worker.add_stream(stream)
        return stream

    return open_call_stream


def a_call_just_closed_for_idling(messages: list[dict]) -> tuple[Worker, RtpReceiver]:
    """A call of 1 s (50 packets, SSRC 5) that paused just past --call-idle while the worker was busy: it is closed,
    its stream still being published, so whatever it sends now waits for that stream's end."""
    worker = Worker(None, MonitorConfig(), messages.append)  # type: ignore[arg-type]  # silence: no window reaches it
    receiver = RtpReceiver(RtpConfig(port=0, idle_seconds=2.0), monitor_opener(worker), worker.warn)  # as the monitor wires it
    for sequence in range(50):
        receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES, SILENCE, ssrc=5), "127.0.0.1:4000")
    worker.step()
    receiver.close_idle(time.monotonic() + 2.1)
    return worker, receiver


def test_a_call_that_resumes_while_its_last_stream_is_still_ending_loses_no_audio():
    """A caller pauses just past --call-idle while the worker is busy: the call's packets wait for the old
    stream's end (no refusal, no second lost), then play in the next stream."""
    messages: list[dict] = []
    worker, receiver = a_call_just_closed_for_idling(messages)
    try:
        for sequence in range(50, 100):  # the caller speaks again before the worker's next step
            receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES + 17000, SILENCE, ssrc=5), "127.0.0.1:4000")
        worker.step()  # publishes the old stream's end
        for sequence in range(100, 110):
            receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES + 17000, SILENCE, ssrc=5), "127.0.0.1:4000")
        receiver.close_idle(time.monotonic() + 60)
        worker.step()
        worker.step()
    finally:
        receiver.socket.close()
    events = [(m["type"], m["t"]) for m in messages if m["type"] in ("stream_started", "stream_ended")]
    assert events == [("stream_started", 0.0), ("stream_ended", 1.0), ("stream_started", 0.0), ("stream_ended", 1.2)]
    assert receiver.counters()["rtp_refused_packets"] == 0 and worker.refused_streams == 0
    assert [m["message"] for m in messages if m["type"] == "warning"] == [  # nothing lost: only the silence played is said
        silent_end("rtp-00000005", 1.0), silent_end("rtp-00000005", 1.2)]


def test_a_resumed_call_waits_with_at_most_five_seconds_of_packets_while_its_last_stream_ends_and_the_rest_are_counted_and_named():
    """Packets of a call that resumes while its old stream is still ending are held, 250 at most (5 s of 20 ms):
    what comes beyond them before the old stream's end is dropped, counted (``rtp_refused_packets``) and named in one
    warning as the call resumes (it was only counted: an operator reading warnings never learnt of it)."""
    messages: list[dict] = []
    worker, receiver = a_call_just_closed_for_idling(messages)
    try:
        for sequence in range(50, 50 + RESUMED_PACKETS_HELD + 30):  # 5.6 s before the worker's next step
            receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES + 17000, SILENCE, ssrc=5), "127.0.0.1:4000")
        assert receiver.counters()["rtp_refused_packets"] == 30
        worker.step()  # publishes the old stream's end
        receiver.close_idle(time.monotonic() + 60)  # the held packets open the next stream; it goes idle
        worker.run(threading.Event(), until_all_ended=True)
    finally:
        receiver.socket.close()
    events = [(m["type"], m["t"]) for m in messages if m["type"] in ("stream_started", "stream_ended")]
    assert events == [("stream_started", 0.0), ("stream_ended", 1.0), ("stream_started", 0.0), ("stream_ended", 5.0)]
    assert receiver.counters()["rtp_refused_packets"] == 30 and worker.refused_streams == 0
    assert [(m.get("stream"), m["message"]) for m in messages if m["type"] == "warning"] == [
        ("rtp-00000005", silent_end("rtp-00000005", 1.0)),  # the old stream's end (these calls send silence)
        (None, "call rtp-00000005 from 127.0.0.1:4000 resumed while its last stream was still ending: "
               "30 packet(s) (0.60 s of audio) were dropped (beyond the 250 held meanwhile, 5 s of 20 ms packets)"),
        ("rtp-00000005", silent_end("rtp-00000005", 5.0)),
    ]


@pytest.mark.parametrize(("sent", "dropped"), [
    (40, "40 packet(s) (0.80 s of audio) were dropped (held for its next stream when the monitor stopped)"),
    (RESUMED_PACKETS_HELD + 30, "280 packet(s) (5.60 s of audio) were dropped (250 held for its next stream when the monitor stopped, 30 beyond those)"),
], ids=["held", "held and beyond"])
def test_packets_of_a_resumed_call_still_held_when_the_monitor_stops_are_counted_refused_and_named(sent, dropped):
    """The monitor stops while a resumed call's packets wait for its old stream's end: they are never heard, counted
    (``rtp_refused_packets``) with any beyond those held, and named in one warning (they were only counted)."""
    messages: list[dict] = []
    _, receiver = a_call_just_closed_for_idling(messages)
    try:
        for sequence in range(50, 50 + sent):
            receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES + 17000, SILENCE, ssrc=5), "127.0.0.1:4000")
        assert receiver.counters()["rtp_refused_packets"] == sent - min(sent, RESUMED_PACKETS_HELD)  # held, not refused
        stop = threading.Event()
        stop.set()
        receiver.run(stop)  # the monitor is stopping: the receiver's thread closes its calls and its socket
    finally:
        receiver.socket.close()
    assert receiver.counters()["rtp_refused_packets"] == sent
    assert [(m.get("stream"), m["message"]) for m in messages if m["type"] == "warning"] == [
        (None, f"call rtp-00000005 from 127.0.0.1:4000 resumed while its last stream was still ending: {dropped}"),
    ]


def test_an_rtp_call_refused_for_many_retries_counts_as_one_refused_stream(monkeypatch):
    """refused_streams counts calls: one call refused while it keeps sending is one, however often it is retried;
    its packets are counted in rtp_refused_packets."""
    from ser_stream import rtp as rtp_module

    monkeypatch.setattr(rtp_module, "REFUSED_RETRY_SECONDS", 0.05)
    worker = Worker(None, MonitorConfig(max_streams=1), [].append)  # type: ignore[arg-type]
    opener, tried = monitor_opener(worker), []

    def open_stream(stream_id: str, sample_rate: int):
        tried.append(stream_id)
        return opener(stream_id, sample_rate)

    receiver = RtpReceiver(RtpConfig(port=0), open_stream, [].append)
    try:
        for sequence in range(30):  # 0.6 s: the refused call is tried again about ten times
            receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES, SILENCE, ssrc=1), "10.0.0.1:4000")
            receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES, SILENCE, ssrc=2), "10.0.0.2:4000")
            time.sleep(0.02)
            receiver.close_idle(time.monotonic())
    finally:
        receiver.socket.close()
    assert tried.count("rtp-00000002") >= 3  # retried: the count below is of calls, not of tries
    assert worker.refused_streams == 1 and receiver.counters()["rtp_refused_packets"] == 30
    with pytest.raises(StreamRefused):
        worker.add_stream(Stream("rtp-00000003", 8000, worker.config))  # another call: counted
    assert worker.refused_streams == 2


def test_a_call_over_the_stream_limit_is_refused_before_a_stream_is_built(monkeypatch):
    """A flood of new SSRCs at --max-streams costs each packet a check, not the construction of a stream."""
    built: list[str] = []

    class CountedStream(Stream):
        def __init__(self, stream_id: str, sample_rate: int, config: MonitorConfig, detector=None) -> None:
            built.append(stream_id)
            super().__init__(stream_id, sample_rate, config, detector)

    monkeypatch.setattr(pipeline, "Stream", CountedStream)
    worker = Worker(None, MonitorConfig(max_streams=1), [].append)  # type: ignore[arg-type]
    assert worker.open_stream("rtp-00000001", 8000).stream_id == "rtp-00000001"
    receiver = RtpReceiver(RtpConfig(port=0), worker.open_stream, [].append)
    try:
        for ssrc in range(2, 1002):
            receiver.receive(rtp(0, 0, SILENCE, ssrc=ssrc), f"198.51.100.7:{1024 + ssrc}")
    finally:
        receiver.socket.close()
    assert built == ["rtp-00000001"] and receiver.counters()["rtp_refused_packets"] == 1000
    assert worker.refused_streams == 1000 and list(worker.streams) == ["rtp-00000001"]


def test_a_reused_stream_id_is_announced_started_only_after_the_old_one_ended():
    """An ingest 'start' runs on the event loop, where a message is published at once; the worker's messages wait
    their turn in the loop's queue. A new stream of an id must still never be announced before the old one's end."""
    loop_thread = threading.get_ident()
    published: list[dict] = []
    queued: list[dict] = []  # handed to the event loop from the worker thread, not yet run (call_soon_threadsafe)

    def emit(message: dict) -> None:
        (published if threading.get_ident() == loop_thread else queued).append(message)

    def worker_step() -> None:
        thread = threading.Thread(target=worker.step)
        thread.start()
        thread.join()

    def loop_runs_its_queue() -> None:
        published.extend(queued)
        queued.clear()

    worker = Worker(None, MonitorConfig(), emit)  # type: ignore[arg-type]
    first = Stream("MZreuse", 8000, worker.config)
    worker.add_stream(first)  # the first call's 'start'
    worker_step()
    loop_runs_its_queue()
    first.finished = True  # its 'stop'
    worker_step()  # the worker publishes its end and lets the id go
    worker.add_stream(Stream("MZreuse", 8000, worker.config))  # the next call's 'start', before the loop ran its queue
    loop_runs_its_queue()
    worker_step()
    loop_runs_its_queue()
    events = [m["type"] for m in published if m["type"] in ("stream_started", "stream_ended")]
    assert events == ["stream_started", "stream_ended", "stream_started"]


@pytest.mark.slow
def test_two_calls_on_one_reused_ssrc_are_told_apart_in_the_database_and_its_catch_up_by_their_streams_start(
        shipped_model, tmp_path, open_log):
    """Two calls one after another on SSRC 0x77, the same speech: stored, they were two rows of rtp-00000077,
    utterance 1, the same times, and nothing told them apart or placed them in time (a review, 2026-12-01)."""
    from ser_stream.inference import EmotionModel

    messages: list[dict] = []
    worker = Worker(EmotionModel(shipped_model, provider="cpu"), MonitorConfig(), messages.append)
    receiver = RtpReceiver(RtpConfig(port=0), monitor_opener(worker), [].append)
    speech = mulaw_encode(np.concatenate([spoken(2.0, 8000), np.zeros(4000, np.float32)])).tobytes()
    try:
        for call, sender in enumerate(("10.0.0.1:4000", "10.0.0.2:4002")):
            for sequence in range(len(speech) // PACKET_SAMPLES):
                payload = speech[sequence * PACKET_SAMPLES : (sequence + 1) * PACKET_SAMPLES]
                receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES, payload, ssrc=0x77), sender)
            receiver.close_idle(time.monotonic() + 60)  # the call ends
            for _ in range(1000):  # a hang guard: the worker publishes the stream and ends it in a few steps
                if sum(m["type"] == "stream_ended" for m in messages) > call:
                    break
                worker.step()
    finally:
        receiver.socket.close()
    log = open_log(tmp_path / "calls.db")
    # as the monitor's outbox publishes them: each utterance stored, and numbered, first
    published = [log.append(m) if m["type"] == "utterance" else m for m in messages]  # type: ignore[arg-type]
    assert undocumented_fields(published) == []
    starts = [m["started_at"] for m in published if m["type"] == "stream_started"]
    assert len(starts) == 2 and starts[0] != starts[1]
    call_of_each, started_at = [], None  # each utterance's call: the stream_started before it
    for message in published:
        if message["type"] == "stream_started":
            started_at = message["started_at"]
        elif message["type"] == "utterance":
            call_of_each.append(started_at)
            assert message["stream_started_at"] == started_at  # live, as stored
    with sqlite3.connect(tmp_path / "calls.db") as connection:
        rows = [json.loads(text) for stream, text in connection.execute("SELECT stream, message FROM utterances ORDER BY seq")]
    assert {row["stream"] for row in rows} == {"rtp-00000077"} and set(call_of_each) == set(starts)
    assert [row["stream_started_at"] for row in rows] == call_of_each
    replayed = [json.loads(text) for page in read_since(tmp_path / "calls.db", 0) for _, text in page]
    assert [message["stream_started_at"] for message in replayed] == call_of_each
