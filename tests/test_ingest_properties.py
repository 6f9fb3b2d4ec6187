"""Properties of ingest framing (Twilio Media Streams): each track of each call gets exactly its own audio.

Frames of any size (odd byte counts, empty payloads), both tracks of a call interleaved any way, several calls
on connections of their own, and malformed frames among them: a real WebSocket client, the real publisher and
``MediaIngest``, the streams read back from their ring buffers.
"""

from __future__ import annotations

import asyncio
import json
import string
from typing import Any

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from ser_stream.g711 import mulaw_decode
from ser_stream.ingest import MediaIngest
from ser_stream.pipeline import MonitorConfig, Stream
from tests.test_ingest_calls import LAST_FRAME, LAST_REPLY, SID, audio, call, media, serving, start

# A real server each example: kept to a few dozen
PROPERTY = settings(max_examples=25, deadline=None)

# 10, 20, 30 or 60 ms, or any size to 480 bytes (odd ones, none): under 2 s of audio a track
frame_payloads = st.lists((st.sampled_from([80, 160, 240, 480]) | st.integers(0, 480)).flatmap(lambda size: st.binary(min_size=size, max_size=size)),
                          min_size=1, max_size=30)


def framed(payloads: list[bytes], track: str | None = None, sid: str = SID, numbered: str = "both") -> list[str]:
    """A track's media frames as Twilio sends them: chunk numbers from 1, timestamps in whole ms from 0."""
    frames, samples = [], 0
    for chunk, payload in enumerate(payloads, start=1):
        frames.append(media(payload, chunk if numbered in ("both", "chunk") else None,
                            samples // 8 if numbered in ("both", "timestamp") else None, track, sid))
        samples += len(payload)
    return frames


def heard(payloads: list[bytes]) -> np.ndarray:
    return mulaw_decode(b"".join(payloads))


@PROPERTY
@given(frame_payloads, st.sampled_from(["both", "chunk", "timestamp"]))
@example([bytes([code] * 4) for code in range(0, 240, 30)], "timestamp")  # 0.5 ms frames: whole ms stamp every other one
def test_frames_of_any_size_play_exactly_the_calls_audio(payloads, numbered):
    """1 to 480 bytes a frame (odd counts too), or none, numbered by chunk, timestamp or both: no gap, no repeat."""
    opened, replies, ingest, _ = call([start(), *framed(payloads, numbered=numbered), json.dumps({"event": "stop", "streamSid": SID})])
    assert replies == [] and opened[SID].finished
    assert np.array_equal(audio(opened[SID]), heard(payloads))
    assert ingest.counters() == {"ingest_gaps": 0, "ingest_late_chunks": 0, "ingest_renumbered": 0,
                                 "ingest_rejected_messages": 0, "ingest_refused_media": 0}


@PROPERTY
@given(frame_payloads, frame_payloads, st.data())
def test_both_tracks_interleaved_any_way_each_get_exactly_their_own_audio(inbound, outbound, data):
    """However the platform interleaves the caller's and the agent's frames (one leg up to the whole call ahead)."""
    sent = {"inbound": framed(inbound, "inbound"), "outbound": framed(outbound, "outbound")}
    legs = ["inbound"] * len(inbound) + ["outbound"] * len(outbound)
    order = data.draw(st.permutations(legs) | st.sampled_from([legs, legs[::-1]]))  # or one leg's frames all first
    frames = [start(["inbound", "outbound"])] + [sent[track].pop(0) for track in order]
    opened, replies, ingest, _ = call(frames)
    assert replies == []
    assert np.array_equal(audio(opened[f"{SID}/inbound"]), heard(inbound))
    assert np.array_equal(audio(opened[f"{SID}/outbound"]), heard(outbound))
    assert ingest.counters()["ingest_gaps"] == ingest.counters()["ingest_late_chunks"] == 0


MALFORMED = {
    "not JSON": "{\"event\": \"media\"",
    "no event": json.dumps({"streamSid": SID}),
    "no payload": json.dumps({"event": "media", "streamSid": SID, "media": {"chunk": "1"}}),
    "no streamSid": json.dumps({"event": "media", "media": {"payload": ""}}),
    "chunk not a number": json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "", "chunk": "x"}}),
    "a track not started": media(b"\x01\x02", track="outbound"),
    "another call's media": media(b"\x01\x02", sid="MZ-never-started"),
    "another call's stop": json.dumps({"event": "stop", "streamSid": "MZ-never-started"}),
    "unknown event": json.dumps({"event": "hangup", "streamSid": SID}),
    "a second call's start": start(sid="MZ-second"),
}


@PROPERTY
@given(frame_payloads, st.data())
def test_malformed_frames_anywhere_are_each_answered_and_counted_and_the_call_plays_on_whole(payloads, data):
    frames = framed(payloads)
    bad = data.draw(st.lists(st.sampled_from(sorted(MALFORMED)), max_size=8))
    for kind in bad:
        frames.insert(data.draw(st.integers(0, len(frames))), MALFORMED[kind])
    opened, replies, ingest, refused = call([start(), *frames])
    assert len(replies) == len(bad) and all("\n" not in reply for reply in replies)
    assert ingest.counters()["ingest_rejected_messages"] == len(bad) and refused == bad.count("a second call's start")
    assert list(opened) == [SID] and np.array_equal(audio(opened[SID]), heard(payloads))


@PROPERTY
@given(st.integers(1, 480), st.lists(st.binary(min_size=1, max_size=1), min_size=1, max_size=20), st.data())
def test_a_frame_whose_payload_is_not_base64_is_its_time_in_silence_answered_and_counted(size, codes, data):
    payloads = [code * size for code in codes]  # frames of one size, so that a bad one's time is known
    corrupt = data.draw(st.sets(st.integers(0, len(payloads) - 1)))
    frames = framed(payloads)
    for index in corrupt:
        fields = json.loads(frames[index])
        fields["media"]["payload"] = "!" + fields["media"]["payload"][1:]  # as long, not base64
        frames[index] = json.dumps(fields)
    opened, replies, ingest, _ = call([start(), *frames])
    expected = np.concatenate([np.zeros(size, np.float32) if index in corrupt else mulaw_decode(payload)
                               for index, payload in enumerate(payloads)])
    assert np.array_equal(audio(opened[SID]), expected)
    assert len(replies) == ingest.counters()["ingest_rejected_messages"] == len(corrupt)
    assert ingest.counters()["ingest_gaps"] == ingest.counters()["ingest_late_chunks"] == 0


def calls_on_their_connections(frames: dict[str, list[str]], order: list[str]) -> tuple[dict[str, Stream], list[str]]:
    """Each call's frames on a connection of its own, sent in ``order`` (a call's id each time it sends its next
    frame); the streams opened and every error line any connection got."""
    opened: dict[str, Stream] = {}

    def open_stream(stream_id: str, sample_rate: int) -> Stream:
        opened[stream_id] = Stream(stream_id, sample_rate, MonitorConfig(ring_seconds=90.0))
        return opened[stream_id]

    ingest = MediaIngest(open_stream)

    async def scenario() -> list[str]:
        publisher = await serving(ingest)
        connections: dict[str, Any] = {sid: await connect(f"ws://127.0.0.1:{publisher.port}/ingest") for sid in frames}
        left = {sid: list(sent) for sid, sent in frames.items()}
        for sid in order:
            await connections[sid].send(left[sid].pop(0))
        replies = []
        for connection in connections.values():
            await connection.send(LAST_FRAME)
            while (reply := json.loads(await asyncio.wait_for(connection.recv(), 30))["message"]) != LAST_REPLY:
                replies.append(reply)
            await connection.close()
        await publisher.close()
        return replies

    return opened, asyncio.run(scenario())


@PROPERTY
@given(st.lists(frame_payloads, min_size=2, max_size=3), st.data())
def test_calls_on_connections_of_their_own_sending_at_once_each_get_exactly_their_own_audio(tracks, data):
    sids = [f"MZ{letter}" for letter in string.ascii_lowercase[:len(tracks)]]
    frames = {sid: [start(sid=sid), *framed(payloads, sid=sid), json.dumps({"event": "stop", "streamSid": sid})]
              for sid, payloads in zip(sids, tracks, strict=True)}
    order = data.draw(st.permutations([sid for sid in sids for _ in frames[sid]]))
    opened, replies = calls_on_their_connections(frames, order)
    assert replies == [] and sorted(opened) == sids
    for sid, payloads in zip(sids, tracks, strict=True):
        assert opened[sid].finished and np.array_equal(audio(opened[sid]), heard(payloads))
