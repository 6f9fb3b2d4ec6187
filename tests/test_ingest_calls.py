"""One ingest call as Twilio forks it: its tracks, its chunk numbers and timestamps, the events it may send besides audio.

A real WebSocket client talks to the real publisher and ``MediaIngest``; the
streams are the pipeline's own, read back from their ring buffers (no worker).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import threading
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ser_stream.g711 import mulaw_decode, mulaw_encode
from ser_stream.ingest import TRACK_LAG_MS, IngestError, MediaIngest, parse_message
from ser_stream.pipeline import MonitorConfig, Stream, Worker
from ser_stream.publish import Publisher

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
FRAME = 160  # 20 ms of 8 kHz audio, as Twilio sends


def tone_codes(hz: float) -> bytes:
    return mulaw_encode(0.3 * np.sin(2 * np.pi * hz * np.arange(FRAME) / 8000)).tobytes()


CALLER, AGENT = tone_codes(300), tone_codes(1000)


def start(tracks: list[str] | None = None, sid: str = SID) -> str:
    details: dict[str, Any] = {"streamSid": sid, "callSid": "CA1", "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}
    if tracks is not None:
        details["tracks"] = tracks
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": details})


def media(codes: bytes, chunk: int | None = None, timestamp_ms: int | None = None, track: str | None = None, sid: str = SID) -> str:
    fields: dict[str, Any] = {"payload": base64.b64encode(codes).decode()}
    if track is not None:
        fields["track"] = track
    if chunk is not None:
        fields["chunk"] = str(chunk)
    if timestamp_ms is not None:
        fields["timestamp"] = str(timestamp_ms)
    return json.dumps({"event": "media", "streamSid": sid, "media": fields})


async def serving(ingest: MediaIngest) -> Publisher:
    """A real publisher on a free port whose /ingest is ``ingest``'s."""
    publisher = Publisher("127.0.0.1", 0)
    publisher.hello = {"type": "hello"}
    publisher.ingest = ingest.handle
    await publisher.start()
    return publisher


# Sent after a scenario's frames: its error line, the last reply, says every frame before it has been handled.
LAST_FRAME = json.dumps({"event": "end-of-the-test-frames"})
LAST_REPLY = "unknown event 'end-of-the-test-frames'"


def call(frames: list[str], warnings: list[str] | None = None) -> tuple[dict[str, Stream], list[str], MediaIngest, int]:
    """Send ``frames`` on one ingest connection; the streams it opened, the error lines it got, the ingest, refusals
    counted; the operator's warnings go to ``warnings``. ``LAST_FRAME`` follows the frames and is not counted in any of these."""
    opened: dict[str, Stream] = {}
    refused: list[None] = []
    said = warnings if warnings is not None else []

    def open_stream(stream_id: str, sample_rate: int) -> Stream:
        # No worker drains these: the ring holds a whole test call, a minute of gap silence included.
        opened[stream_id] = Stream(stream_id, sample_rate, MonitorConfig(ring_seconds=90.0))
        return opened[stream_id]

    def warn(line: str, stream_id: str | None = None) -> None:
        if LAST_REPLY not in line:
            said.append(line)

    ingest = MediaIngest(open_stream, lambda: refused.append(None), warn=warn)

    async def scenario() -> list[str]:
        publisher = await serving(ingest)
        replies: list[str] = []
        async with connect(f"ws://127.0.0.1:{publisher.port}/ingest") as connection:
            for frame in [*frames, LAST_FRAME]:
                await connection.send(frame)
            while (reply := json.loads(await asyncio.wait_for(connection.recv(), 30))["message"]) != LAST_REPLY:
                replies.append(reply)
        await publisher.close()
        return replies

    replies = asyncio.run(scenario())
    ingest.rejected -= 1  # LAST_FRAME's
    return opened, replies, ingest, len(refused)


def audio(stream: Stream) -> np.ndarray:
    return stream.ring.read()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait on the event loop for ``condition()``: what the ingest does in its own time (reading the frames sent, its
    idle timer) is waited for, never a fixed time that a loaded machine can outrun. 60 s only bounds a failing test."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not condition():
        assert loop.time() < deadline, f"not {what} after 60 s"
        await asyncio.sleep(0.01)


def test_both_tracks_of_a_call_become_two_streams_each_as_long_as_the_call():
    """Twilio <Stream track="both_tracks"> interleaves caller and agent frames under one streamSid."""
    frames = [start(["inbound", "outbound"])]
    for index in range(50):  # 1 s of call
        frames += [media(CALLER, index + 1, 20 * index, "inbound"), media(AGENT, index + 1, 20 * index, "outbound")]
    frames.append(json.dumps({"event": "stop", "streamSid": SID}))
    opened, replies, _, _ = call(frames)
    assert replies == []
    assert sorted(opened) == [f"{SID}/inbound", f"{SID}/outbound"]
    for track, codes in (("inbound", CALLER), ("outbound", AGENT)):
        stream = opened[f"{SID}/{track}"]
        assert stream.finished
        heard = audio(stream)
        assert heard.size == 8000  # 1.00 s: one voice, not both interleaved
        assert np.array_equal(heard, np.tile(mulaw_decode(np.frombuffer(codes, np.uint8)), 50))


def test_the_tracks_of_a_call_keep_its_clock_when_one_stops_sending_or_starts_late():
    """An outbound leg that stopped sending held its last utterance until the call's stop (9 s); one whose first
    frame came 5 s into the call had its speech published at 0.3 s instead of 5.3 s."""
    frames = [start(["inbound", "outbound"])]
    for index in range(250):  # the caller's 5 s; the agent speaks in the first second only, then sends nothing
        frames.append(media(CALLER, index + 1, 20 * index, "inbound"))
        if index < 50:
            frames.append(media(AGENT, index + 1, 20 * index, "outbound"))
    stopped, _, _, _ = call(frames)
    assert audio(stopped[f"{SID}/inbound"]).size == 250 * FRAME
    assert audio(stopped[f"{SID}/outbound"]).size == 250 * FRAME - TRACK_LAG_MS * 8  # kept up to the call, less the lag allowed
    frames = [start(["inbound", "outbound"])]
    for index in range(300):  # the agent's leg starts 5 s into the call
        frames.append(media(CALLER, index + 1, 20 * index, "inbound"))
        if index >= 250:
            frames.append(media(AGENT, index - 249, 20 * index, "outbound"))
    late, _, ingest, _ = call(frames)
    agent = audio(late[f"{SID}/outbound"])
    assert agent.size == 300 * FRAME and not agent[: 250 * FRAME].any() and agent[250 * FRAME :].any()


def lagging_call(lag_frames: int, frames_in_call: int = 400, stall_at: int | None = None) -> list[str]:
    """A call of both tracks whose outbound frames come ``lag_frames`` after the inbound ones of the same time,
    throughout, or (``stall_at``) held back once from there and then sent at once."""
    frames = [start(["inbound", "outbound"])]
    sent = 0  # outbound frames sent so far
    for index in range(frames_in_call):
        frames.append(media(CALLER, index + 1, 20 * index, "inbound"))
        due = index + 1 - lag_frames if stall_at is None else (index + 1 if not stall_at <= index < stall_at + lag_frames else sent)
        for outbound in range(sent, max(sent, due)):
            frames.append(media(AGENT, outbound + 1, 20 * outbound, "outbound"))
        sent = max(sent, due)
    frames += [media(AGENT, outbound + 1, 20 * outbound, "outbound") for outbound in range(sent, frames_in_call)]
    return frames


@pytest.mark.parametrize(("lag_frames", "stall_at"), [(25, None), (50, None), (95, None), (50, 100)],
                         ids=["0.5 s behind", "1 s behind", "1.9 s behind", "1 s stall then a burst"])
def test_a_leg_lagging_the_other_by_up_to_two_seconds_keeps_every_frame_at_its_time(lag_frames, stall_at):
    """Silence kept the lagging leg 0.3 s behind the other; its frames, coming later than that, were appended after
    the silence played for their time, and the other leg's next frame put it in again: an 8 s call's outbound stream
    was 90.5 s at a steady 0.5 s lag, and a single 1 s stall added 0.72 s for good, uncounted."""
    opened, replies, ingest, _ = call(lagging_call(lag_frames, stall_at=stall_at))
    assert replies == [] and ingest.counters()["ingest_late_chunks"] == ingest.counters()["ingest_gaps"] == 0
    agent = audio(opened[f"{SID}/outbound"])
    assert agent.size == audio(opened[f"{SID}/inbound"]).size == 400 * FRAME
    assert np.array_equal(agent, np.tile(mulaw_decode(np.frombuffer(AGENT, np.uint8)), 400))  # every frame at its time
    assert opened[f"{SID}/outbound"].warning is None


def test_legs_restarting_their_count_apart_or_timing_in_samples_are_paced_by_the_calls_time_and_lose_nothing():
    """The legs were paced by their raw timestamps: both restarting their count (chunk 1, timestamp 0) 60 ms apart had
    the leg still on the old clock pad the restarted one with up to 60 s of silence a frame, whose own frames then fell
    inside it and were dropped (inbound 117.96 s for an 80 s call, 999 late chunks, a false 'more than 2 s behind');
    timestamps in 8 kHz samples made a 0.5 s lag look like 4 s: audio dropped, the rest of the leg 1.82 s late."""
    frames = [start(["inbound", "outbound"])]
    events = []
    for index in range(600):  # both restart at 8 s, the outbound leg 3 frames behind the inbound one
        count = index - 400 if index >= 400 else index
        events += [(index, 0, media(CALLER, count + 1, 20 * count, "inbound")), (index + 3, 1, media(AGENT, count + 1, 20 * count, "outbound"))]
    restarted, replies, ingest, _ = call(frames + [event[2] for event in sorted(events)])
    assert replies == [] and ingest.counters() == {"ingest_gaps": 0, "ingest_late_chunks": 0, "ingest_renumbered": 2, "ingest_rejected_messages": 0, "ingest_refused_media": 0}
    for track, codes in (("inbound", CALLER), ("outbound", AGENT)):
        assert np.array_equal(audio(restarted[f"{SID}/{track}"]), np.tile(mulaw_decode(np.frombuffer(codes, np.uint8)), 600))
        assert restarted[f"{SID}/{track}"].warning == "media.chunk 1 came where 401 was due and the numbering was followed (ingest_renumbered)"
    events = []
    for index in range(400):  # timestamps in samples, the outbound leg 0.5 s behind
        events += [(index, 0, media(CALLER, index + 1, 160 * index, "inbound")), (index + 25, 1, media(AGENT, index + 1, 160 * index, "outbound"))]
    in_samples, replies, ingest, _ = call(frames + [event[2] for event in sorted(events)])
    assert replies == [] and ingest.counters()["ingest_gaps"] == ingest.counters()["ingest_late_chunks"] == 0
    for track, codes in (("inbound", CALLER), ("outbound", AGENT)):
        assert np.array_equal(audio(in_samples[f"{SID}/{track}"]), np.tile(mulaw_decode(np.frombuffer(codes, np.uint8)), 400))
        assert in_samples[f"{SID}/{track}"].warning.startswith("media.timestamp ran ahead of the audio at 399 of 399 frames")
    events = []
    for index in range(500):  # timestamps in samples, the outbound leg 3 s behind: as in ms, the second beyond 2 s is dropped
        events += [(index, 0, media(CALLER, index + 1, 160 * index, "inbound")), (index + 150, 1, media(AGENT, index + 1, 160 * index, "outbound"))]
    beyond, _, ingest, _ = call(frames + [event[2] for event in sorted(events)])
    agent = audio(beyond[f"{SID}/outbound"])
    assert agent.size == 500 * FRAME and ingest.counters()["ingest_late_chunks"] in (50, 51) and ingest.counters()["ingest_gaps"] == 0
    assert np.array_equal(agent[51 * FRAME :], np.tile(mulaw_decode(np.frombuffer(AGENT, np.uint8)), 449))
    frames = [start(["inbound", "outbound"])]
    for index in range(500):  # a leg pausing 4 s, its chunk numbers going on where its timestamps jump: the timestamp places it
        frames.append(media(CALLER, index + 1, 20 * index, "inbound"))
        if index < 50 or index >= 250:
            frames.append(media(AGENT, (index if index < 50 else index - 200) + 1, 20 * index, "outbound"))
    paused, _, ingest, _ = call(frames)
    agent = audio(paused[f"{SID}/outbound"])
    assert agent.size == 500 * FRAME and ingest.counters()["ingest_late_chunks"] == 0 and not agent[50 * FRAME : 250 * FRAME].any()
    assert np.array_equal(agent[250 * FRAME :], np.tile(mulaw_decode(np.frombuffer(AGENT, np.uint8)), 250))


def test_a_leg_lagging_more_than_two_seconds_keeps_the_calls_length_and_what_it_dropped_is_counted_and_said():
    opened, replies, ingest, _ = call(lagging_call(150, frames_in_call=500))  # 3 s behind
    agent = audio(opened[f"{SID}/outbound"])
    assert agent.size == 500 * FRAME  # the call's length, its times the call's
    late = ingest.counters()["ingest_late_chunks"]
    assert late in (50, 51)  # the second its frames came beyond the 2 s allowed (and a frame in part), once: then its lag is waited for
    assert not agent[: 50 * FRAME].any() and np.array_equal(agent[51 * FRAME :], np.tile(mulaw_decode(np.frombuffer(AGENT, np.uint8)), 449))
    assert re.fullmatch(r"its frames came more than 2 s behind the call's other track, after their time had been played as silence: "
                        r"1\.0\d s of its audio dropped \(ingest_late_chunks\); a lag of up to 3\.\d s is now waited for",
                        opened[f"{SID}/outbound"].warning)


def call_with_lag(lag_of: Callable[[int], int], frames_in_call: int) -> list[str]:
    """A call of both tracks whose outbound frame ``k`` comes right after the inbound one ``lag_of(k)`` frames later."""
    frames = [start(["inbound", "outbound"])]
    sent = 0  # outbound frames sent so far
    for index in range(frames_in_call):
        frames.append(media(CALLER, index + 1, 20 * index, "inbound"))
        while sent < frames_in_call and sent + lag_of(sent) <= index:
            frames.append(media(AGENT, sent + 1, 20 * sent, "outbound"))
            sent += 1
    return frames + [media(AGENT, outbound + 1, 20 * outbound, "outbound") for outbound in range(sent, frames_in_call)]


def test_a_leg_that_lost_audio_to_a_three_second_lag_loses_nothing_more_to_a_fifth_of_a_second_of_jitter():
    """The lag waited for after a drop is the lag seen plus 0.3 s for the legs' jitter: without it, each later
    frame a little later than the one that set it would be dropped too."""
    opened, _, ingest, _ = call(call_with_lag(lambda outbound: 150 if outbound < 300 else 160, 600))  # 3 s, then 3.2 s
    agent = audio(opened[f"{SID}/outbound"])
    assert agent.size == 600 * FRAME and ingest.counters()["ingest_late_chunks"] in (50, 51)  # the first second only
    assert np.array_equal(agent[51 * FRAME :], np.tile(mulaw_decode(np.frombuffer(AGENT, np.uint8)), 549))


def test_a_leg_whose_lag_grows_again_loses_only_what_goes_beyond_the_lag_it_is_now_allowed():
    """3 s behind, then 4 s: the second drop is the 0.7 s beyond the 3.3 s then waited for, measured from that lag, and
    4.3 s is waited for after it (measured from the first 2 s, every later frame was dropped: 5.70 s in all)."""
    opened, _, ingest, _ = call(call_with_lag(lambda outbound: 150 if outbound < 300 else 200, 700))
    agent = audio(opened[f"{SID}/outbound"])
    assert agent.size == 700 * FRAME and ingest.counters()["ingest_late_chunks"] in (85, 86)  # 51 at 3 s, 35 at 4 s
    assert np.array_equal(agent[-350 * FRAME :], np.tile(mulaw_decode(np.frombuffer(AGENT, np.uint8)), 350))
    assert opened[f"{SID}/outbound"].warning.endswith("a lag of up to 4.3 s is now waited for")


@pytest.mark.parametrize(("lag_seconds", "waited_for"), [(7, "7.3"), (13, "10.0")])
def test_a_leg_lagging_up_to_ten_seconds_loses_its_lag_beyond_two_once_and_a_longer_lag_is_waited_for_only_up_to_ten(lag_seconds, waited_for):
    """A lag beyond 10 s is not waited for: a stopped leg's last utterance would be held as long."""
    lag_frames = 50 * lag_seconds
    opened, _, ingest, _ = call(lagging_call(lag_frames, frames_in_call=lag_frames + 300))
    agent = audio(opened[f"{SID}/outbound"])
    assert agent.size == (lag_frames + 300) * FRAME
    assert opened[f"{SID}/outbound"].warning.endswith(f"a lag of up to {waited_for} s is now waited for")
    if lag_seconds < 10:  # its lag beyond the 2 s allowed, once (and a frame in part), then every frame at its time
        assert ingest.counters()["ingest_late_chunks"] == 50 * (lag_seconds - 2) + 1
        assert np.array_equal(agent[(lag_frames - 99) * FRAME :], np.tile(mulaw_decode(np.frombuffer(AGENT, np.uint8)), 399))


def test_a_leg_without_timestamps_that_paused_is_not_padded_twice_and_chunks_it_loses_later_are_still_silence():
    """A leg sending chunk numbers only, 3 s silent while the other leg's timestamps go on: the silence keeping pace
    stands for its missing chunks (they are not played again on top of it), and a later loss, after the other leg's
    last frame, is played as silence by its chunk numbers."""
    frames = [start(["inbound", "outbound"])]
    for index in range(400):
        frames.append(media(CALLER, index + 1, 20 * index, "inbound"))
        if index < 50 or index >= 200:
            frames.append(media(AGENT, index + 1, None, "outbound"))
    frames += [media(AGENT, chunk, None, "outbound") for chunk in [*range(401, 451), *range(476, 501)]]  # 476 after 450
    opened, replies, ingest, _ = call(frames)
    agent = audio(opened[f"{SID}/outbound"])
    assert replies == [] and ingest.counters()["ingest_gaps"] == 1 and agent.size < 405 * FRAME  # not 551 frames
    heard = [frame.any() for frame in agent.reshape(-1, FRAME)]
    assert sum(heard) == 325 and heard[-26:] == [False] + [True] * 25 and not any(heard[-50:-25])


def test_a_one_track_call_is_one_stream_named_by_its_stream_sid_and_other_tracks_are_refused_by_name():
    opened, replies, _, _ = call([start(["inbound"]), media(CALLER, 1, 0, "inbound"), media(AGENT, 2, 20, "outbound"), media(CALLER, 2, 20)])
    assert list(opened) == [SID] and audio(opened[SID]).size == 2 * FRAME
    assert replies == [f"stream {SID!r}: media for track 'outbound', which its start did not list (start.tracks: inbound)"]


def test_media_without_a_track_on_a_call_of_both_tracks_is_named_and_played_on_neither():
    frames = [start(["inbound", "outbound"]), media(CALLER, 1, 0, "inbound"), media(AGENT, 1, 0, "outbound"), media(AGENT, 2, 20)]
    opened, replies, _, _ = call(frames)
    assert replies == [f"stream {SID!r}: media without media.track, but the call has tracks inbound, outbound"]
    assert audio(opened[f"{SID}/inbound"]).size == audio(opened[f"{SID}/outbound"]).size == FRAME


def test_dtmf_and_mark_events_are_ignored_like_connected():
    """Both are documented Twilio messages: a key press, and the answer to a mark the platform was sent."""
    frames = [
        json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        start(["inbound"]),
        media(CALLER, 1, 0, "inbound"),
        json.dumps({"event": "dtmf", "streamSid": SID, "sequenceNumber": "5", "dtmf": {"track": "inbound_track", "digit": "1"}}),
        json.dumps({"event": "mark", "streamSid": SID, "sequenceNumber": "6", "mark": {"name": "greeting"}}),
        media(CALLER, 2, 20, "inbound"),
    ]
    opened, replies, ingest, _ = call(frames)
    assert replies == [] and ingest.rejected == 0
    assert audio(opened[SID]).size == 2 * FRAME


def test_refused_calls_and_rejected_messages_reach_the_operator_not_only_the_sender():
    """A call in an unsupported format, or media without a start, was refused to the sender alone (a platform may
    never read the replies): no warning, no count. An unreadable payload without a chunk number lost its time."""
    l16 = json.dumps({"event": "start", "streamSid": "MZl16", "start": {"streamSid": "MZl16", "mediaFormat": {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1}}})
    as_text = json.dumps({"event": "start", "streamSid": SID, "start": {"streamSid": SID, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": "8000", "channels": 1}}})
    garbled = json.dumps({"event": "media", "streamSid": SID, "media": {"payload": base64.b64encode(CALLER).decode()[:-3] + "!!!"}})
    frames = [l16, media(CALLER, sid="MZnostart"), media(CALLER, sid="MZnostart"), as_text, media(CALLER), garbled, media(CALLER)]
    warnings: list[str] = []
    opened, replies, ingest, refused = call(frames, warnings)
    assert refused == 1 and ingest.counters()["ingest_rejected_messages"] == 4
    assert len(warnings) == 2 and warnings[0] == (
        "ingest: stream 'MZl16' refused: unsupported media format {'encoding': 'audio/l16', 'sampleRate': 16000, 'channels': 1}: audio/x-mulaw or audio/x-alaw"
    )
    assert re.fullmatch(r"ingest connection from 127\.0\.0\.1:\d+: media for stream 'MZnostart' before its start "
                        r"\(further rejected messages are only counted: ingest_rejected_messages\)", warnings[1])
    assert replies[-1] == f"stream {SID!r}: media payload is not valid base64; its 20 ms were played as silence"
    assert audio(opened[SID]).size == 3 * FRAME  # sampleRate "8000" is 8000; the garbled frame's 20 ms kept as silence


def test_a_connections_warning_is_about_the_streams_of_its_call_and_comes_after_their_start():
    """The warning for a connection's first bad frame carried no stream once the connection had one: every ?stream=
    subscriber got it, and it was published before the call's own stream_started. A sender that never became a
    stream still gets it without one."""
    said: list[dict] = []
    worker = Worker(None, MonitorConfig(), said.append)  # type: ignore[arg-type]  # never steps: no model needed
    ingest = MediaIngest(worker.open_stream, worker.count_refused, worker.is_active, warn=worker.warn)

    async def send(publisher: Publisher, frames: list[str]) -> None:
        async with connect(f"ws://127.0.0.1:{publisher.port}/ingest") as connection:
            for frame in [*frames, LAST_FRAME]:
                await connection.send(frame)
            while json.loads(await asyncio.wait_for(connection.recv(), 30))["message"] != LAST_REPLY:
                pass

    async def scenario() -> list[dict]:
        publisher = await serving(ingest)
        await send(publisher, [start(["inbound", "outbound"]), media(CALLER, 1, 0, "inbound"), "not json"])
        before_the_start = list(said)
        await send(publisher, ["not json either"])  # no call on this connection
        await publisher.close()
        return before_the_start

    before_the_start = asyncio.run(scenario())
    worker.publish_status(force=True)  # the worker's pass that announces the call's streams
    told = [(m["type"], m.get("stream"), m.get("message", "")) for m in said if m["type"] != "status"]
    assert before_the_start == []  # held until the worker announces the call's streams
    assert [(kind, stream) for kind, stream, _ in told] == [
        ("warning", None), ("stream_started", f"{SID}/inbound"), ("warning", f"{SID}/inbound"),
        ("stream_started", f"{SID}/outbound"), ("warning", f"{SID}/outbound")]
    assert all(re.fullmatch(r"ingest connection from 127\.0\.0\.1:\d+: not JSON \(.*\) \(further rejected messages are only "
                            r"counted: ingest_rejected_messages\)", message) for kind, _, message in told if kind == "warning")


def test_the_media_and_stop_of_a_call_refused_at_max_streams_are_dropped_and_counted_not_answered_as_out_of_order():
    """A call refused at --max-streams (its sender told once, the operator warned) had every later frame answered
    'media for stream 'X' before its start' and its stop 'stop for unknown stream': the sender, which did nothing wrong,
    was told it broke the framing, the operator got a second warning saying so, and ingest_rejected_messages grew by one
    a frame, burying real errors. Media of a call never started, or of the refused one after its stop, is still answered."""
    said: list[dict] = []
    worker = Worker(None, MonitorConfig(max_streams=1), said.append)  # type: ignore[arg-type]  # never steps: no model needed
    ingest = MediaIngest(worker.open_stream, worker.count_refused, worker.is_active, warn=worker.warn)
    refused_call = [start(["inbound", "outbound"], sid="MZtwo")]
    for index in range(50):  # 1 s of both tracks
        refused_call += [media(CALLER, index + 1, 20 * index, "inbound", sid="MZtwo"), media(AGENT, index + 1, 20 * index, "outbound", sid="MZtwo")]
    refused_call += [json.dumps({"event": "stop", "streamSid": "MZtwo"}), media(CALLER, sid="MZnostart"), media(CALLER, 51, 1000, "inbound", sid="MZtwo")]

    async def send(publisher: Publisher, frames: list[str]) -> list[str]:
        async with connect(f"ws://127.0.0.1:{publisher.port}/ingest") as connection:
            for frame in [*frames, LAST_FRAME]:
                await connection.send(frame)
            replies = []
            while (reply := json.loads(await asyncio.wait_for(connection.recv(), 30))["message"]) != LAST_REPLY:
                replies.append(reply)
            return replies

    async def scenario() -> list[str]:
        publisher = await serving(ingest)
        async with connect(f"ws://127.0.0.1:{publisher.port}/ingest") as holding:  # the call that has the one stream
            await holding.send(start(sid="MZone"))
            while not worker.is_active("MZone"):
                await asyncio.sleep(0.01)
            replies = await send(publisher, refused_call)
        await publisher.close()
        return replies

    replies = asyncio.run(scenario())
    refusal = "stream 'MZtwo/inbound' refused: 1 streams are open, the most this monitor takes (--max-streams)"
    assert replies == [refusal, "media for stream 'MZnostart' before its start", "media for stream 'MZtwo' before its start"]
    ingest.rejected -= 1  # LAST_FRAME's
    assert ingest.counters()["ingest_refused_media"] == 100 and ingest.counters()["ingest_rejected_messages"] == 3
    assert worker.refused_streams == 1
    warnings = [m["message"] for m in said if m["type"] == "warning" and LAST_REPLY not in m["message"]]
    assert warnings[0] == f"ingest: {refusal}" and len(warnings) == 2
    assert re.fullmatch(r"ingest connection from 127\.0\.0\.1:\d+: media for stream 'MZnostart' before its start "
                        r"\(further rejected messages are only counted: ingest_rejected_messages\)", warnings[1])


def test_a_call_refused_on_its_connection_has_its_media_dropped_and_counted_until_it_is_taken_and_the_latest_sixteen_are_remembered():
    """A start refused for its format or for a second call on the connection: the media that follows is that call's,
    dropped and counted (ingest_refused_media), not answered; the same id taken later is a call like any other. A
    connection keeps the ids of its last 16 refused calls: an older one's media is answered as before its start."""
    l16 = json.loads(start(sid="MZl16"))
    l16["start"]["mediaFormat"] = {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1}
    frames = [json.dumps(l16), *(media(CALLER, chunk, sid="MZl16") for chunk in (1, 2, 3)), start(), media(CALLER, 1, 0),
              start(sid="MZextra"), media(CALLER, 1, 0, sid="MZextra"), media(CALLER, 2, 20), media(CALLER, 2, 20, sid="MZextra"),
              json.dumps({"event": "stop", "streamSid": SID}), start(sid="MZextra"), media(CALLER, 1, 0, sid="MZextra")]
    opened, replies, ingest, refused = call(frames)
    assert replies == ["stream 'MZl16' refused: unsupported media format {'encoding': 'audio/l16', 'sampleRate': 16000, 'channels': 1}: audio/x-mulaw or audio/x-alaw",
                       f"stream 'MZextra' refused: this connection already carries {SID!r}; one call per connection"]
    assert refused == 2 and ingest.counters()["ingest_refused_media"] == 5 and ingest.counters()["ingest_rejected_messages"] == 2
    assert audio(opened[SID]).size == 2 * FRAME and audio(opened["MZextra"]).size == FRAME  # taken once the connection was free

    many = [start()] + [start(sid=f"MZ{number}") for number in range(17)] + [media(CALLER, 1, 0, sid="MZ0"), media(CALLER, 1, 0, sid="MZ1"), media(CALLER, 1, 0, sid="MZ16")]
    _, replies, ingest, refused = call(many)
    assert refused == 17 and replies[17:] == ["media for stream 'MZ0' before its start"]
    assert ingest.counters()["ingest_refused_media"] == 2


def test_a_call_refused_again_on_its_connection_is_remembered_as_its_latest_refusal():
    """The 16 refused calls remembered are the latest refused: one refused again is kept over those refused since its
    first refusal, and its media stays dropped, not answered as before its start."""
    frames = [start(), *(start(sid=f"MZ{number}") for number in range(16)), start(sid="MZ0"), start(sid="MZ16"),
              media(CALLER, 1, 0, sid="MZ0"), media(CALLER, 1, 0, sid="MZ1")]
    _, replies, ingest, refused = call(frames)
    assert refused == 18 and replies[18:] == ["media for stream 'MZ1' before its start"]
    assert ingest.counters()["ingest_refused_media"] == 1


def test_missing_chunks_are_played_as_silence_and_counted_so_stream_time_stays_true():
    chunks = [*range(1, 11), *range(16, 21)]  # chunks 11-15 (100 ms) never arrive
    opened, replies, ingest, _ = call([start(), *(media(CALLER, chunk, 20 * (chunk - 1)) for chunk in chunks)])
    heard = audio(opened[SID])
    assert replies == []
    assert heard.size == 20 * FRAME  # 400 ms, as the call's timestamps say, not 300
    assert not heard[10 * FRAME : 15 * FRAME].any() and heard[15 * FRAME :].any()
    assert ingest.counters() == {"ingest_gaps": 1, "ingest_late_chunks": 0, "ingest_renumbered": 0, "ingest_rejected_messages": 0, "ingest_refused_media": 0}


def test_a_timestamp_jump_is_played_as_silence_and_without_timestamps_missing_chunks_are_still_filled():
    jump = [start(), media(CALLER, None, 0), media(CALLER, None, 20), media(CALLER, None, 540)]  # 500 ms never sent
    opened, _, ingest, _ = call(jump)
    assert audio(opened[SID]).size == 3 * FRAME + 4000 and ingest.counters()["ingest_gaps"] == 1
    chunks_only = [start(), media(CALLER, 1), media(CALLER, 2), media(CALLER, 5)]
    opened, _, ingest, _ = call(chunks_only)
    assert audio(opened[SID]).size == 5 * FRAME and ingest.counters()["ingest_gaps"] == 1
    in_step = [start(), *(media(CALLER, chunk, 20 * chunk + (chunk % 3)) for chunk in range(1, 30))]  # ms rounding is no gap
    opened, _, ingest, _ = call(in_step)
    assert audio(opened[SID]).size == 29 * FRAME and ingest.counters()["ingest_gaps"] == 0


@pytest.mark.parametrize("numbered", [True, False], ids=["with chunk numbers", "timestamps only"])
def test_timestamps_jittering_by_under_half_a_frame_neither_pad_nor_drop_nor_warn(numbered):
    """A frame's timestamp up to 9 ms off its 20 ms grid is rounding, not a gap (and the next one back on the grid is
    no repeat): the call plays back to back as sent."""
    jitter_ms = [0, 9, 3, 8, 0, 5]
    frames = [start(), *(media(CALLER, index + 1 if numbered else None, 20 * index + jitter_ms[index % 6]) for index in range(60))]
    opened, replies, ingest, _ = call(frames)
    heard = audio(opened[SID])
    assert replies == [] and np.array_equal(heard, np.tile(mulaw_decode(np.frombuffer(CALLER, np.uint8)), 60))
    assert ingest.counters()["ingest_gaps"] == ingest.counters()["ingest_late_chunks"] == 0 and opened[SID].warning is None


def test_a_timestamp_hours_ahead_plays_at_most_a_minute_of_silence_and_one_going_back_none():
    """A sender's clock error must not hold the call (and the worker) for hours, nor turn every later frame into a gap."""
    hours = 2 * 3600 * 1000
    ahead = [start(), media(CALLER, None, 0), *(media(CALLER, None, hours + 20 * chunk) for chunk in range(2, 10))]
    opened, _, ingest, _ = call(ahead)
    assert audio(opened[SID]).size == 9 * FRAME + 60 * 8000 and ingest.counters()["ingest_gaps"] == 1
    back = [start(), *(media(CALLER, chunk, 20 * chunk) for chunk in range(1, 10)), *(media(CALLER, chunk, 20 * (chunk - 9)) for chunk in range(10, 20))]
    opened, _, ingest, _ = call(back)
    assert audio(opened[SID]).size == 19 * FRAME and ingest.counters()["ingest_gaps"] == 0


@pytest.mark.parametrize(("timestamp_ms", "ahead", "ahead_after_a_loss"),
                         [(lambda index: round(20.4 * index), r"20 of 499 frames .* \(0\.20 s in all\)", None),
                          (lambda index: 160 * index, r"499 of 499 frames .* \(69\.86 s in all\)", r"13 of 13 frames .* \(1\.82 s in all\)")],
                         ids=["2% fast", "in samples"])
def test_timestamps_that_run_fast_over_contiguous_chunks_play_back_to_back_and_the_stream_says_so(timestamp_ms, ahead, ahead_after_a_loss):
    """A sender's clock 2 % fast, or timestamps in 8 kHz samples instead of ms, with chunk numbers saying nothing was
    missing, once put silence between frames and counted it as gaps: 10 s of a call became 79.86 s with 499 gaps."""
    opened, _, ingest, _ = call([start(), *(media(CALLER, index + 1, timestamp_ms(index)) for index in range(500))])
    heard = audio(opened[SID])
    assert heard.size == 500 * FRAME and np.array_equal(heard, np.tile(mulaw_decode(np.frombuffer(CALLER, np.uint8)), 500))
    assert ingest.counters()["ingest_gaps"] == 0
    assert re.fullmatch(r"media\.timestamp ran ahead of the audio at \d+ of 499 frames with no media\.chunk missing \([\d.]+ s in all\): "
                        r"the sender's timestamps run fast, or are not in ms \(played back to back, not padded with silence\)", opened[SID].warning)
    assert re.match(rf"media\.timestamp ran ahead of the audio at {ahead}: ", opened[SID].warning)  # 0.4 ms a frame, 140 ms a frame
    missing = [start(), *(media(CALLER, index + 1, timestamp_ms(index)) for index in [*range(10), *range(15, 20)])]  # 5 chunks lost
    opened, _, ingest, _ = call(missing)
    assert audio(opened[SID]).size == 20 * FRAME and ingest.counters()["ingest_gaps"] == 1  # a real gap still counts: 100 ms
    # the frame after the loss is not one 'with no media.chunk missing': it said '14 of 13 frames' (2.66 s)
    assert opened[SID].warning is None if ahead_after_a_loss is None else re.match(rf"media\.timestamp ran ahead of the audio at {ahead_after_a_loss}: ", opened[SID].warning)


def test_chunk_numbers_that_skip_where_timestamps_follow_on_play_back_to_back_and_the_stream_says_so():
    """Where chunk numbers said chunks were missing, their gap won over the timestamps: one garbled chunk number
    (1101 where 101 was due, 20 s ahead) put 20 s of silence into a 4 s call, and a sender numbering chunks across the
    call's tracks (1 inbound, 2 outbound, ...) doubled both streams with 398 gaps."""
    numbers = [*range(1, 101), 1101, *range(102, 201)]
    opened, replies, ingest, _ = call([start(), *(media(CALLER, chunk, 20 * index) for index, chunk in enumerate(numbers))])
    heard = audio(opened[SID])
    assert replies == [] and heard.size == 200 * FRAME and np.array_equal(heard, np.tile(mulaw_decode(np.frombuffer(CALLER, np.uint8)), 200))
    assert ingest.counters()["ingest_gaps"] == 0
    assert opened[SID].warning == (
        "media.chunk skipped numbers where media.timestamp said less was missing at 1 frame (20.00 s in all): one was garbled, "
        "or the sender numbers chunks across the call's tracks (played by the timestamps, not padded with silence); "
        "media.chunk 102 came where 1102 was due and the numbering was followed (ingest_renumbered)")
    frames = [start(["inbound", "outbound"])]
    for index in range(200):
        frames += [media(CALLER, 2 * index + 1, 20 * index, "inbound"), media(AGENT, 2 * index + 2, 20 * index, "outbound")]
    opened, replies, ingest, _ = call(frames)
    assert replies == [] and ingest.counters()["ingest_gaps"] == ingest.counters()["ingest_late_chunks"] == 0
    for track, codes in (("inbound", CALLER), ("outbound", AGENT)):
        heard = audio(opened[f"{SID}/{track}"])
        assert np.array_equal(heard, np.tile(mulaw_decode(np.frombuffer(codes, np.uint8)), 200))
        assert re.fullmatch(r"media\.chunk skipped numbers where media\.timestamp said less was missing at 199 frames \(3\.98 s in all\): .*",
                            opened[f"{SID}/{track}"].warning)
    lost = [start(), *(media(CALLER, index + 1, 20 * index) for index in [*range(10), *range(15, 20)])]  # both say 5 chunks lost
    opened, _, ingest, _ = call(lost)
    assert audio(opened[SID]).size == 20 * FRAME and ingest.counters()["ingest_gaps"] == 1 and opened[SID].warning is None


def test_repeated_and_out_of_order_chunks_are_dropped_and_counted():
    order = [1, 2, 3, 2, 3, 4, 1, 5]
    opened, replies, ingest, _ = call([start(), *(media(CALLER, chunk, 20 * (chunk - 1)) for chunk in order)])
    assert replies == [] and audio(opened[SID]).size == 5 * FRAME
    assert ingest.counters() == {"ingest_gaps": 0, "ingest_late_chunks": 3, "ingest_renumbered": 0, "ingest_rejected_messages": 0, "ingest_refused_media": 0}


def test_one_garbled_chunk_number_costs_no_later_frame_with_or_without_timestamps():
    """Chunk 99999999 once had every later frame of the call dropped as late (with timestamps), or a minute of
    silence put in and then every frame dropped (without)."""
    numbers = [*range(1, 101), 99999999, *range(102, 201)]
    with_time = [start(), *(media(CALLER, chunk, 20 * index) for index, chunk in enumerate(numbers))]
    opened, replies, ingest, _ = call(with_time)
    assert replies == [] and audio(opened[SID]).size == 200 * FRAME
    assert ingest.counters() == {"ingest_gaps": 0, "ingest_late_chunks": 0, "ingest_renumbered": 2, "ingest_rejected_messages": 0, "ingest_refused_media": 0}
    assert opened[SID].warning == "media.chunk 99999999 came where 101 was due and the numbering was followed (ingest_renumbered, 2 times in all)"
    opened, _, ingest, _ = call([start(), *(media(CALLER, chunk) for chunk in numbers)])
    assert audio(opened[SID]).size == 200 * FRAME and ingest.counters()["ingest_gaps"] == 0


def test_a_platform_restarting_its_chunk_numbers_is_followed_and_a_repeat_without_one_is_dropped_by_its_time():
    restarted = [start(), *(media(CALLER, chunk) for chunk in range(1, 151)), *(media(CALLER, chunk) for chunk in range(1, 51))]
    opened, _, ingest, _ = call(restarted)
    assert audio(opened[SID]).size == 200 * FRAME  # 3 s of it were once dropped as late
    assert ingest.counters() == {"ingest_gaps": 0, "ingest_late_chunks": 0, "ingest_renumbered": 1, "ingest_rejected_messages": 0, "ingest_refused_media": 0}
    twice = [start(), *(media(CALLER, None, 20 * index) for index in range(50) for _ in range(2))]  # each frame sent twice
    opened, _, ingest, _ = call(twice)
    assert audio(opened[SID]).size == 50 * FRAME  # once played twice, the call twice its length, uncounted
    assert ingest.counters() == {"ingest_gaps": 0, "ingest_late_chunks": 50, "ingest_renumbered": 0, "ingest_rejected_messages": 0, "ingest_refused_media": 0}


def test_a_chunk_number_exactly_a_second_behind_is_a_renumbering_and_one_frame_less_is_late():
    """The docs said a second or more behind is a renumbering, but exactly a second behind was dropped as late."""
    a_second_back = [start(), *(media(CALLER, chunk) for chunk in range(1, 101)), media(CALLER, 51), media(CALLER, 52)]
    opened, _, ingest, _ = call(a_second_back)
    assert audio(opened[SID]).size == 102 * FRAME
    assert ingest.counters()["ingest_renumbered"] == 1 and ingest.counters()["ingest_late_chunks"] == 0
    just_under = [start(), *(media(CALLER, chunk) for chunk in range(1, 101)), media(CALLER, 52)]
    opened, _, ingest, _ = call(just_under)
    assert audio(opened[SID]).size == 100 * FRAME
    assert ingest.counters()["ingest_renumbered"] == 0 and ingest.counters()["ingest_late_chunks"] == 1


@pytest.mark.parametrize(("ahead_ms", "silence"), [(9, 0), (10, 80)])
def test_without_chunk_numbers_a_timestamp_half_a_frame_ahead_or_more_is_a_gap_and_less_is_rounding(ahead_ms, silence):
    """docs/protocol.md: the timestamp jumping ahead by half a frame or more is played as silence, counted."""
    opened, _, ingest, _ = call([start(), media(CALLER, None, 0), media(CALLER, None, 20), media(AGENT, None, 40 + ahead_ms)])
    heard = audio(opened[SID])
    assert heard.size == 3 * FRAME + silence and ingest.counters()["ingest_gaps"] == (silence > 0)
    assert not heard[2 * FRAME : 2 * FRAME + silence].any() and np.array_equal(heard[-FRAME:], mulaw_decode(np.frombuffer(AGENT, np.uint8)))


def test_without_timestamps_chunks_a_minute_missing_are_a_minute_of_silence_and_one_more_is_a_renumbering():
    """A gap is played as silence up to 60 s (a minute of call lost); chunk numbers further ahead were renumbered."""
    opened, _, ingest, _ = call([start(), media(CALLER, 1), media(CALLER, 2), media(CALLER, 3003)])  # 3000 chunks of 20 ms missing
    assert audio(opened[SID]).size == 3 * FRAME + 60 * 8000 and ingest.counters()["ingest_gaps"] == 1 and ingest.counters()["ingest_renumbered"] == 0
    opened, _, ingest, _ = call([start(), media(CALLER, 1), media(CALLER, 2), media(CALLER, 3004)])
    assert audio(opened[SID]).size == 3 * FRAME and ingest.counters()["ingest_gaps"] == 0 and ingest.counters()["ingest_renumbered"] == 1


@pytest.mark.parametrize(("back_ms", "played"), [(9, True), (10, False), (1000, False), (1020, True)])
def test_without_chunk_numbers_a_timestamp_half_a_frame_to_a_second_behind_is_a_repeat_and_further_back_is_followed(back_ms, played):
    """docs/protocol.md: a frame whose timestamp is up to a second behind the track is dropped as played (from half a
    frame: less is ms rounding); one further back is the sender's clock going back, and stream time follows the audio."""
    opened, _, ingest, _ = call([start(), *(media(CALLER, None, 20 * index) for index in range(100)), media(AGENT, None, 2000 - back_ms)])
    heard = audio(opened[SID])
    assert ingest.counters()["ingest_late_chunks"] == (0 if played else 1) and ingest.counters()["ingest_gaps"] == 0
    assert np.array_equal(heard, np.concatenate([np.tile(mulaw_decode(np.frombuffer(CALLER, np.uint8)), 100), mulaw_decode(np.frombuffer(AGENT, np.uint8))[: FRAME * played]]))


def test_a_chunk_or_timestamp_that_is_not_a_whole_number_is_named_and_skipped():
    frame = json.loads(media(CALLER, 2, 20))
    frame["media"]["chunk"] = "two"
    opened, replies, _, _ = call([start(), media(CALLER, 1, 0), json.dumps(frame), media(CALLER, 2, 20)])
    assert replies == ["media.chunk 'two' is not a whole number"] and audio(opened[SID]).size == 2 * FRAME


def test_a_second_call_or_a_repeated_start_on_one_connection_is_refused_and_counted():
    opened, replies, _, refused = call([start(), start(sid="MZ-extra"), start()])
    assert list(opened) == [SID]
    assert replies == [
        f"stream 'MZ-extra' refused: this connection already carries {SID!r}; one call per connection",
        f"stream {SID!r} started twice",
    ]
    assert refused == 2


def test_error_lines_show_a_stream_sid_with_a_line_break_escaped():
    """Ingest clients choose their streamSid; one with a newline once forged a second line in the monitor's output."""
    forged = "MZ1\n[ERROR] forged log line"
    frames = [json.dumps({"event": "stop", "streamSid": forged}), media(CALLER, sid=forged), start(sid=forged), start(sid=forged)]
    _, replies, _, _ = call(frames)
    assert len(replies) == 3
    assert all("\n" not in reply and "'MZ1\\n[ERROR] forged log line'" in reply for reply in replies), replies


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(json_values | st.sampled_from(["7", "０", "²", "1" * 16, ["inbound", "inbound"], ["outbound", "inbound"], []]), st.sampled_from(["chunk", "timestamp", "tracks"]))
def test_any_chunk_timestamp_or_tracks_value_is_taken_or_named_in_one_line(value, field):
    frame = {"event": "start", "start": {"streamSid": "MZ1", field: value}} if field == "tracks" else \
        {"event": "media", "streamSid": "MZ1", "media": {"payload": "", field: value}}
    try:
        message = parse_message(json.dumps(frame))
    except IngestError as error:
        assert str(error) and "\n" not in str(error) and len(str(error)) < 200
    else:
        if field == "tracks":
            assert message["start"]["tracks"] in (["inbound"], ["outbound"], ["inbound", "outbound"], ["outbound", "inbound"])
        else:
            assert message["media"][field] is None if value is None else message["media"][field] >= 0


@pytest.mark.parametrize("value", ["12", 12])
def test_chunk_numbers_may_come_as_digits_in_a_string_or_as_numbers(value):
    assert parse_message(json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": "", "chunk": value}}))["media"]["chunk"] == 12


def test_a_chunk_number_or_timestamp_of_fifteen_digits_is_taken_and_one_of_sixteen_is_named():
    """Fifteen digits are a whole number float arithmetic holds exactly; the sixteenth is a sender's garbling."""
    fifteen = parse_message(json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": "", "chunk": "9" * 15, "timestamp": 10**14}}))
    assert (fifteen["media"]["chunk"], fifteen["media"]["timestamp"]) == (10**15 - 1, 10**14)
    with pytest.raises(IngestError, match=r"^media\.timestamp 1000000000000000 is not a whole number$"):
        parse_message(json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": "", "timestamp": 10**15}}))


def test_a_call_reconnecting_at_once_waits_for_its_old_stream_to_finish_instead_of_being_refused(monkeypatch):
    """Half of the calls that reconnected at once under their streamSid were refused ('still active'), their audio lost."""
    import time

    import ser_stream.ingest
    from ser_stream.errors import StreamRefused

    busy_until = {SID: time.monotonic() + 0.4, "STUCK": float("inf")}  # the old stream publishes its last utterance
    opened: dict[str, Stream] = {}

    def is_active(stream_id: str) -> bool:
        return time.monotonic() < busy_until.get(stream_id, 0.0)

    def open_stream(stream_id: str, sample_rate: int) -> Stream:
        if is_active(stream_id):
            raise StreamRefused(stream_id, "a stream of that id is still active")
        opened[stream_id] = Stream(stream_id, sample_rate, MonitorConfig())
        return opened[stream_id]

    monkeypatch.setattr(ser_stream.ingest, "REJOIN_SECONDS", 1.0)
    ingest = MediaIngest(open_stream, is_active=is_active)

    async def scenario() -> list[str]:
        calls: dict = {}
        await ingest._handle_message(parse_message(start()), calls)
        refusals = []
        try:
            await ingest._handle_message(parse_message(start(sid="STUCK")), {})
        except IngestError as error:
            refusals.append(str(error))
        return refusals

    refusals = asyncio.run(scenario())
    assert SID in opened  # it waited the 0.4 s, then got its stream
    assert refusals == ["stream 'STUCK' refused: a stream of that id is still active"]  # a real duplicate, after the wait


def stalling_ingest(idle_seconds: float) -> tuple[MediaIngest, list[Stream]]:
    """An ingest that ends a call after ``idle_seconds`` without media, and the streams it opens, in order."""
    opened: list[Stream] = []

    def open_stream(stream_id: str, sample_rate: int) -> Stream:
        opened.append(Stream(stream_id, sample_rate, MonitorConfig()))
        return opened[-1]

    return MediaIngest(open_stream, idle_seconds=idle_seconds), opened


def test_a_call_whose_media_stalls_with_the_connection_open_is_ended_and_begins_again_when_media_returns():
    """A stalled platform once held the call's last utterance (and a --max-streams slot) until it closed the socket."""
    # a second of idle time: the second call's frames, sent at once, are all read well within it on a loaded machine
    ingest, opened = stalling_ingest(idle_seconds=1.0)

    async def scenario() -> bool:
        publisher = await serving(ingest)
        async with connect(f"ws://127.0.0.1:{publisher.port}/ingest") as connection:
            await connection.send(start())
            for chunk in range(1, 11):
                await connection.send(media(CALLER, chunk, 20 * (chunk - 1)))
            # the platform stalls, the socket open, until the call is ended (a fixed 0.8 s could pass before the ingest
            # had even read the frames on a loaded machine)
            await until(lambda: bool(opened) and opened[0].finished, "ended while the connection is open")
            for chunk in range(11, 21):
                await connection.send(media(CALLER, chunk, 20 * (chunk - 1)))
            await until(lambda: len(opened) == 2 and opened[1].ring.available() == 10 * FRAME, "a second stream with its ten frames")
            second_running = not opened[1].finished
        await publisher.close()
        return second_running

    assert asyncio.run(scenario())  # the media after the stall began a new stream, running until the close
    assert opened[0].warning == "no media for 1 s with the connection open: the call was ended (media that comes later begins a new stream)"
    assert [stream.stream_id for stream in opened] == [SID, SID]
    assert audio(opened[0]).size == audio(opened[1]).size == 10 * FRAME and opened[1].finished  # the close ended it too


def test_the_stop_of_a_paused_call_ends_it_without_beginning_a_new_stream():
    """A paused call's media begins a new stream from its start; its stop only ends it: no stream opened to end at once."""
    ingest, opened = stalling_ingest(idle_seconds=0.05)

    async def scenario() -> list[str]:
        publisher = await serving(ingest)
        replies: list[str] = []
        async with connect(f"ws://127.0.0.1:{publisher.port}/ingest") as connection:
            await connection.send(start())
            await connection.send(media(CALLER, 1, 0))
            await until(lambda: bool(opened) and opened[0].finished, "paused for want of media")
            await connection.send(json.dumps({"event": "stop", "streamSid": SID}))
            await connection.send(media(CALLER, 2, 20))  # its start is forgotten with it: media before its start
            await connection.send(LAST_FRAME)
            while (reply := json.loads(await asyncio.wait_for(connection.recv(), 30))["message"]) != LAST_REPLY:
                replies.append(reply)
        await publisher.close()
        return replies

    assert asyncio.run(scenario()) == [f"media for stream {SID!r} before its start"]
    assert [stream.stream_id for stream in opened] == [SID]


def test_a_call_whose_stream_the_stopping_monitor_closed_is_told_so_and_its_connection_closed_with_1001():
    """docs/reliability.md: the sender is told 'the monitor is stopping' and closed (1001), not answered frame by frame."""
    opened: dict[str, Stream] = {}

    def open_stream(stream_id: str, sample_rate: int) -> Stream:
        opened[stream_id] = Stream(stream_id, sample_rate, MonitorConfig())
        return opened[stream_id]

    async def scenario() -> tuple[list[str], int | None]:
        publisher = await serving(MediaIngest(open_stream))
        replies: list[str] = []
        async with connect(f"ws://127.0.0.1:{publisher.port}/ingest") as connection:
            await connection.send(start())
            await connection.send("not json")
            replies.append(json.loads(await connection.recv())["message"])  # the start before it has been handled
            opened[SID].finished = True  # the worker closed the stream: the monitor is stopping
            await connection.send(media(CALLER, 1, 0))
            with contextlib.suppress(ConnectionClosed):
                await connection.send(LAST_FRAME)
                while (reply := json.loads(await connection.recv())["message"]) != LAST_REPLY:
                    replies.append(reply)
        await publisher.close()
        return replies, connection.close_code

    replies, close_code = asyncio.run(scenario())
    assert replies[1:] == [f"stream {SID!r}: the monitor is stopping; audio from here on is not analysed"] and close_code == 1001


def test_a_fresh_start_after_a_pause_takes_the_call_and_its_stop_ends_it():
    """A call paused by --call-idle stayed paused after a new start of its id: its first media resumed it again, a
    'started twice' refused and counted and that frame dropped; or the next stop was taken as the old call's and the
    new stream ran on until the idle timer ended it with a misleading warning."""
    ingest, opened = stalling_ingest(idle_seconds=1.0)  # a frame after a start is read well within it on a loaded machine
    refused: list[None] = []
    ingest.count_refused = lambda: refused.append(None)

    async def scenario() -> list[str]:
        publisher = await serving(ingest)
        replies: list[str] = []
        async with connect(f"ws://127.0.0.1:{publisher.port}/ingest") as connection:
            for round_number, restarted_with_media in enumerate((True, False)):
                await connection.send(start())
                for chunk in range(1, 11):
                    await connection.send(media(CALLER, chunk, 20 * (chunk - 1)))
                paused = 2 * round_number  # the stream this round's first start opened
                # paused for want of media (a fixed 0.6 s could pass before the ingest read the frames on a loaded
                # machine: the start below then came to a call still running)
                await until(lambda paused=paused: len(opened) > paused and opened[paused].finished, "paused for want of media")
                await connection.send(start())  # the platform starts the call again
                if restarted_with_media:
                    for chunk in range(1, 11):
                        await connection.send(media(CALLER, chunk, 20 * (chunk - 1)))
                await connection.send(json.dumps({"event": "stop", "streamSid": SID}))
                await until(lambda paused=paused: len(opened) > paused + 1 and opened[paused + 1].finished, "ended by its stop")
            await connection.send(LAST_FRAME)
            while (reply := json.loads(await asyncio.wait_for(connection.recv(), 30))["message"]) != LAST_REPLY:
                replies.append(reply)
        await publisher.close()
        return replies

    replies = asyncio.run(scenario())
    assert replies == [] and refused == [] and ingest.late_chunks == 0
    assert [stream.stream_id for stream in opened] == [SID] * 4 and all(stream.finished for stream in opened)
    assert [audio(stream).size for stream in opened] == [10 * FRAME, 10 * FRAME, 10 * FRAME, 0]
    assert [stream.warning for stream in opened[1::2]] == [None, None]  # ended by their stop, not 'no media for 1 s'


def test_marks_and_dtmf_without_media_do_not_keep_a_stalled_call_open():
    """--call-idle runs from a call's last media: any frame (a mark's echo every half second) once reset it."""
    ingest, opened = stalling_ingest(idle_seconds=0.3)

    async def scenario() -> bool:
        publisher = await serving(ingest)
        async with connect(f"ws://127.0.0.1:{publisher.port}/ingest") as connection:
            await connection.send(start())
            await connection.send(media(CALLER, 1, 0))
            # a mark every 0.1 s and no media, until the call is ended: 0.3 s after its media, however late the
            # ingest read it (a fixed 0.8 s could pass before it did on a loaded machine); ten seconds mean never
            for _ in range(100):
                await asyncio.sleep(0.1)
                await connection.send(json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "played"}}))
                if opened and opened[0].finished:
                    break
            ended = bool(opened) and opened[0].finished
        await publisher.close()
        return ended

    assert asyncio.run(scenario())
    assert opened[0].warning.startswith("no media for 0.3 s with the connection open: the call was ended")


def test_a_connection_remembers_its_last_sixteen_paused_calls_to_resume():
    """Each paused call keeps its start message so that its media resumes it; a connection keeps those of its last 16
    paused calls (docs/reliability.md), and an older call's media is media before its start."""
    ingest, opened = stalling_ingest(idle_seconds=0.05)
    calls = [f"MZ{number}" for number in range(17)]

    async def scenario() -> list[str]:
        publisher = await serving(ingest)
        replies: list[str] = []
        async with connect(f"ws://127.0.0.1:{publisher.port}/ingest") as connection:
            for number, sid in enumerate(calls):
                await connection.send(start(sid=sid))
                await connection.send(media(CALLER, 1, 0, sid=sid))
                while len(opened) <= number or not opened[number].finished:  # paused for want of media
                    await asyncio.sleep(0.01)
            await connection.send(media(CALLER, 2, 20, sid=calls[0]))  # the oldest: forgotten
            await connection.send(media(CALLER, 2, 20, sid=calls[1]))  # the oldest still kept: resumed
            await connection.send(LAST_FRAME)
            while (reply := json.loads(await asyncio.wait_for(connection.recv(), 30))["message"]) != LAST_REPLY:
                replies.append(reply)
        await publisher.close()
        return replies

    replies = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert replies == ["media for stream 'MZ0' before its start"]
    assert [stream.stream_id for stream in opened] == [*calls, "MZ1"]


def memory_kept_after(ingest: MediaIngest, calls: Callable[[Any, dict], Awaitable[None]]) -> tuple[int, list[str]]:
    """Memory traced once every frame ``calls`` sends over one connection (given a start padded to 60 kB to send as
    its calls' starts) has been handled, and the replies that came before that."""
    kept: list[int] = []
    replies: list[str] = []

    async def scenario() -> None:
        publisher = await serving(ingest)
        padded = json.loads(start())
        padded["start"]["customParameters"] = {"padding": "x" * 60_000}
        async with connect(f"ws://127.0.0.1:{publisher.port}/ingest") as connection:
            await calls(connection, padded)
            await connection.send(LAST_FRAME)
            while (reply := json.loads(await asyncio.wait_for(connection.recv(), 30))["message"]) != LAST_REPLY:
                replies.append(reply)
            kept.append(tracemalloc.get_traced_memory()[0])
        await publisher.close()

    tracemalloc.start()
    try:
        asyncio.run(scenario())
    finally:
        tracemalloc.stop()
    return kept[0], replies


def test_a_connection_starting_call_after_call_keeps_no_start_message_but_the_current_calls():
    """Each start was kept for the connection's life (to resume a paused call): 1500 calls of 60 kB starts held 92 MB."""

    async def calls(connection, padded: dict) -> None:
        for number in range(150):
            padded["streamSid"] = padded["start"]["streamSid"] = f"MZ{number}"
            await connection.send(json.dumps(padded))
            await connection.send(media(CALLER, 1, 0, sid=f"MZ{number}"))
            await connection.send(json.dumps({"event": "stop", "streamSid": f"MZ{number}"}))

    kept, replies = memory_kept_after(MediaIngest(lambda stream_id, rate: Stream(stream_id, rate, MonitorConfig())), calls)
    assert replies == []
    assert kept < 5_000_000  # 150 starts of 60 kB kept were 18 MB, text and parsed copies


def test_a_paused_call_whose_resumption_is_refused_keeps_no_start_message():
    """A paused call's media resumes it from its kept start; where that was refused (the connection carrying another
    call), the start stayed kept for the connection's life: a connection pausing calls and resuming them while it
    carried another held every such start it had sent, 60 kB each."""

    import weakref

    opened: weakref.WeakValueDictionary[str, Stream] = weakref.WeakValueDictionary()  # not kept alive: memory is measured
    started: set[str] = set()

    def open_stream(stream_id: str, rate: int) -> Stream:
        started.add(stream_id)
        opened[stream_id] = stream = Stream(stream_id, rate, MonitorConfig())
        return stream

    def paused(call: str) -> bool:
        return call in started and ((stream := opened.get(call)) is None or stream.finished)

    async def calls(connection, padded: dict) -> None:
        for number in range(60):
            padded["streamSid"] = padded["start"]["streamSid"] = f"MZ{number}"
            await connection.send(json.dumps(padded))
            await connection.send(media(CALLER, 1, 0, sid=f"MZ{number}"))
            await until(lambda number=number: paused(f"MZ{number}"), "paused for want of media")  # a fixed 0.25 s was outrun
            await connection.send(start(sid="MZother"))
            await connection.send(media(CALLER, 2, 20, sid=f"MZ{number}"))  # its resumption refused: one call a connection
            await connection.send(json.dumps({"event": "stop", "streamSid": "MZother"}))

    ingest = MediaIngest(open_stream, idle_seconds=0.05)
    kept, replies = memory_kept_after(ingest, calls)
    assert len(replies) == 60 and all("this connection already carries 'MZother'" in reply for reply in replies)
    assert kept < 3_000_000  # 60 starts of 60 kB kept were 5.4 MB, text and parsed copies


def test_a_frame_json_cannot_read_is_answered_and_skipped_and_the_call_goes_on():
    """A 5000-digit number (ValueError) or arrays nested 30000 deep (RecursionError) once ended the call, unsaid."""
    opened, replies, ingest, _ = call([start(), media(CALLER, 1, 0), '{"event": "media", "n": ' + "9" * 5000 + "}",
                                       "[" * 30000, media(CALLER, 2, 20)])
    assert replies == ["a number in it has more than 4300 digits", "its arrays or objects are nested too deeply to read"]
    assert ingest.rejected == 2 and audio(opened[SID]).size == 2 * FRAME  # the frame after them was heard: the call went on


@pytest.mark.parametrize("encoding", [["audio/x-mulaw"], {"name": "audio/x-mulaw"}])
def test_a_start_whose_encoding_is_an_array_or_object_is_refused_in_one_line_and_the_call_on_the_connection_goes_on(encoding):
    """An encoding that is a JSON array or object (unhashable) raised TypeError: the connection closed with 1011, the
    live call on it ended, and nothing was said or counted."""
    odd = json.loads(start(sid="MZ2"))
    odd["start"]["mediaFormat"]["encoding"] = encoding
    warnings: list[str] = []
    opened, replies, ingest, refused = call([start(), media(CALLER, 1, 0), json.dumps(odd), media(CALLER, 2, 20)], warnings)
    assert replies == [f"stream 'MZ2' refused: unsupported media format {{'encoding': {encoding!r}, 'sampleRate': 8000, 'channels': 1}}: audio/x-mulaw or audio/x-alaw"]
    assert refused == 1 and ingest.rejected == 1 and warnings == [f"ingest: {replies[0]}"]
    assert audio(opened[SID]).size == 2 * FRAME  # the frame after it was heard: the call went on


def test_a_stream_sid_that_is_not_text_is_refused_not_taken_to_the_record():
    """JSON's "\\ud800" is a str no encoding holds: at --record's INSERT it once stopped the whole monitor."""
    opened, replies, _, refused = call([start(sid="MZ\ud800")])
    assert opened == {} and refused == 1
    assert replies == ["call refused: start.streamSid 'MZ\\ud800' holds a lone surrogate, which is not text: name the call in Unicode"]


def test_a_call_renumbered_then_stalled_says_both_in_its_end_warning():
    """The stall's warning once replaced the renumbering's at the stream's end: the jump was never said."""
    messages: list[dict[str, Any]] = []
    worker = Worker(None, MonitorConfig(), messages.append)  # type: ignore[arg-type]  # silence: no window reaches it

    def open_stream(stream_id: str, sample_rate: int) -> Stream:
        stream = Stream(stream_id, sample_rate, worker.config)
        worker.add_stream(stream)
        return stream

    ingest = MediaIngest(open_stream, idle_seconds=0.2)
    silence = mulaw_encode(np.zeros(FRAME)).tobytes()

    async def scenario() -> None:
        publisher = await serving(ingest)
        async with connect(f"ws://127.0.0.1:{publisher.port}/ingest") as connection:
            await connection.send(start())
            for chunk in (1, 2, 99999999, 4):  # a garbled number, then the count going on: two jumps followed
                await connection.send(media(silence, chunk))
            # the platform stalls, the socket open, until the call is ended (a fixed 0.5 s could pass before the
            # ingest had read the frames on a loaded machine: the close then ended the call, and no stall was said)
            await until(lambda: bool(worker.streams) and all(stream.finished for stream in worker.streams.values()), "ended by the stall")
        await publisher.close()

    asyncio.run(scenario())
    for _ in range(100):
        if not worker.streams:
            break
        worker.step()
    assert [(m["type"], m.get("message")) for m in messages if m["type"] in ("warning", "stream_ended")] == [
        ("warning", "media.chunk 99999999 came where 3 was due and the numbering was followed (ingest_renumbered, 2 times in all); "
                    "no media for 0.2 s with the connection open: the call was ended (media that comes later begins a new stream); "
                    f"{SID}: no utterance in its 0.1 s: the voice detector heard no speech, or none long enough to label"),
        ("stream_ended", None),
    ]


@pytest.mark.parametrize("fragments", [1, 3], ids=["one frame", "three frames of one message, each under the limit"])
def test_a_message_over_the_size_limit_ends_the_call_with_a_warning_and_an_empty_stream_id_is_refused(fragments):
    """The 1009 close once ended the call like a clean hang-up: its lost remainder was counted and said nowhere. The
    limit is a message's: its fragments count together (the docs said per frame)."""
    from websockets.exceptions import ConnectionClosed

    opened: dict[str, Stream] = {}

    def open_stream(stream_id: str, sample_rate: int) -> Stream:
        opened[stream_id] = Stream(stream_id, sample_rate, MonitorConfig())
        return opened[stream_id]

    ingest = MediaIngest(open_stream)

    async def scenario() -> None:
        publisher = await serving(ingest)
        async with connect(f"ws://127.0.0.1:{publisher.port}/ingest", max_size=None) as connection:
            await connection.send(start())
            await connection.send(media(CALLER, 1, 0))
            too_big = media(CALLER * 500, 2, 20)  # 80 KB of payload, 107 KB of base64
            part = -(-len(too_big) // fragments)
            await connection.send(too_big if fragments == 1 else iter([too_big[i:i + part] for i in range(0, len(too_big), part)]))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(connection.recv(), 5)
        await asyncio.sleep(0.1)
        await publisher.close()

    asyncio.run(scenario())
    assert opened[SID].finished and audio(opened[SID]).size == FRAME
    assert opened[SID].warning == "the connection sent a message over the 64 KiB limit and was closed (1009); the call ended there"
    with pytest.raises(IngestError, match=r"^call refused: start\.streamSid is empty: name the call$"):
        parse_message(start(sid=""))


@pytest.mark.parametrize("bad_field", ["mediaFormat", "tracks"])
def test_a_bad_start_repeated_for_the_call_a_connection_carries_is_refused_and_the_call_plays_on_to_its_stop(bad_field):
    """A second start for the live call's own id, with a format or tracks the monitor refuses: once remembered as a
    refused call's id, so the live call's remaining media was dropped as that refused call's and its stop swallowed
    (480 of 8,480 samples heard, the stream held open until --call-idle). Only that start is refused."""
    bad = json.loads(start())
    if bad_field == "mediaFormat":
        bad["start"]["mediaFormat"] = {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1}
    else:
        bad["start"]["tracks"] = ["sideways"]
    frames = [start(), *(media(CALLER, chunk, 20 * (chunk - 1)) for chunk in (1, 2, 3)), json.dumps(bad),
              *(media(CALLER, chunk, 20 * (chunk - 1)) for chunk in range(4, 54)), json.dumps({"event": "stop", "streamSid": SID})]
    opened, replies, ingest, refused = call(frames)
    assert len(replies) == 1 and replies[0].startswith(f"stream '{SID}' refused: ")
    assert audio(opened[SID]).size == 53 * FRAME and opened[SID].finished
    assert ingest.counters()["ingest_refused_media"] == 0


def held_outbox(capacity: int) -> tuple[Any, threading.Event, list[dict]]:
    """An outbox whose first message is being handed on and held there (its --record database held by another
    writer), with ``capacity`` more behind it: full. Released by the event; what it handed on, in order."""
    from ser_stream.monitor import Outbox

    held, released, handed_on = threading.Event(), threading.Event(), []
    outbox = Outbox(lambda message: (held.set(), released.wait(120), handed_on.append(message)), capacity=capacity)
    outbox.start()
    outbox.put({"type": "window", "n": 0})
    held.wait(60)
    for number in range(1, capacity + 1):
        outbox.put({"type": "window", "n": number})
    return outbox, released, handed_on


def test_a_full_outbox_never_holds_up_the_event_loop_and_the_warnings_it_emits_there_wait_in_line():
    """An ingest connection's bad frame is warned of on the event loop's thread, which waited for room in a full
    outbox: with 20 such connections every ingest call, subscriber and /healthz froze, /healthz answering after 10.24 s
    (a thread-safety review, r17). Now the loop never waits: its warnings go in line behind what was queued."""
    outbox, released, handed_on = held_outbox(capacity=2)
    worker = Worker(None, MonitorConfig(), outbox.put)  # type: ignore[arg-type]  # never steps: no model needed
    ingest = MediaIngest(worker.open_stream, worker.count_refused, worker.is_active, warn=worker.warn)
    replies: list[str] = []

    async def scenario() -> None:
        publisher = await serving(ingest)
        for _ in range(20):  # each connection's first rejected message is warned of
            async with connect(f"ws://127.0.0.1:{publisher.port}/ingest") as connection:
                await connection.send("not json")
                replies.append(json.loads(await asyncio.wait_for(connection.recv(), 30))["message"])
        await publisher.close()

    loop_thread = threading.Thread(target=asyncio.run, args=(scenario(),))
    loop_thread.start()
    loop_thread.join(60)  # a hang guard: the loop waited for room for ever
    held_up = loop_thread.is_alive()
    released.set()
    loop_thread.join(60)
    assert not held_up and len(replies) == 20 and all(reply.startswith("not JSON") for reply in replies)
    assert outbox.close(30) and outbox.full_waits == 0
    assert [message.get("n") for message in handed_on[:3]] == [0, 1, 2]  # queued before them, handed on first
    warned = [message["message"] for message in handed_on[3:]]
    assert len(warned) == 20 and all(re.fullmatch(r"ingest connection from 127\.0\.0\.1:\d+: not JSON \(.*\) \(further rejected "
                                                  r"messages are only counted: ingest_rejected_messages\)", line) for line in warned)
    assert outbox.counters() == {"outbox_drops": 0}


def test_the_event_loops_messages_past_their_room_in_a_full_outbox_are_dropped_and_counted(monkeypatch):
    import ser_stream.monitor

    monkeypatch.setattr(ser_stream.monitor, "OUTBOX_LOOP_ROOM", 2)
    outbox, released, handed_on = held_outbox(capacity=1)

    async def warn_five_times() -> None:
        for number in range(5):
            outbox.put({"type": "warning", "message": f"warning {number}"})

    asyncio.run(asyncio.wait_for(warn_five_times(), 60))
    assert outbox.counters() == {"outbox_drops": 3} and outbox.full_waits == 0
    released.set()
    assert outbox.close(30)
    assert [message.get("n", message.get("message")) for message in handed_on] == [0, 1, "warning 0", "warning 1"]
