"""Property-based fuzzing of every parser that sees outside input: only the documented error type escapes."""

from __future__ import annotations

import asyncio
import base64
import json
import struct

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ser_stream.errors import DatasetError
from ser_stream.g711 import alaw_decode, mulaw_decode
from ser_stream.ingest import IngestError, MediaIngest, parse_message
from ser_stream.pipeline import MonitorConfig, Stream
from ser_stream.publish import first_frame
from ser_stream.rtp import COMFORT_NOISE, JitterBuffer, RtpError, RtpPacket, is_telephone_event, parse_packet
from training.ravdess import parse_name

FUZZ = settings(max_examples=300, deadline=None)


@FUZZ
@given(st.text(max_size=60), st.sampled_from(["wav", "flac", "WAV", "mp3", ""]))
def test_ravdess_names_parse_or_raise_dataset_error(stem, extension):
    try:
        clip = parse_name(f"{stem}.{extension}")
    except DatasetError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert 1 <= clip.actor <= 24


@FUZZ
@given(st.binary(max_size=2000))
def test_g711_decoders_take_any_bytes(payload):
    for decode in (mulaw_decode, alaw_decode):
        samples = decode(payload)
        assert samples.dtype == np.float32 and samples.size == len(payload)
        assert np.all(np.abs(samples) <= 1.0)


rtp_like = st.one_of(
    st.binary(max_size=200),
    st.builds(  # a plausible header with any flags, then anything
        lambda first, second, rest: struct.pack("!BB", first, second) + rest,
        st.integers(0, 255), st.integers(0, 255), st.binary(max_size=300),
    ),
)


@FUZZ
@given(rtp_like)
def test_rtp_parser_returns_a_packet_or_raises_rtp_error(datagram):
    try:
        packet = parse_packet(datagram)
    except RtpError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert packet.is_audio or packet.payload_type == COMFORT_NOISE or is_telephone_event(packet.payload_type, packet.payload)
        assert len(packet.payload) <= len(datagram) - 12


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.binary(max_size=320),
                          st.sampled_from([0, 8, 13, 101])), max_size=40),
       st.integers(1, 8))
@example([(0, 0, b"\x00\x00\x0f\xa5", 101), (1, 12005, b"\x00\x00\x0f\xa4", 101)], 1)  # two key holds: 16009 samples
def test_jitter_buffer_survives_any_packet_order_and_timestamps(packets, depth):
    """Audio, comfort noise (13) and telephone events (101) in any order, with any timestamps."""
    jitter = JitterBuffer(depth)
    played = 0
    for sequence, timestamp, payload, payload_type in packets:
        played += sum(block.size for block in jitter.push(RtpPacket(payload_type, sequence, timestamp, 1, payload)))
    played += sum(block.size for block in jitter.flush())
    # every payload byte at most once, plus at most 1 s of silence per packet for a gap before it and 1 s for a key hold
    # it carries (RFC 4733: the held key's time is played as silence; two events 12005 samples apart, each held half a
    # second, are 16009 samples of call time, which the bound of 1 s a packet, set before holds were played, refused)
    assert played <= sum(len(p) for _, _, p, _ in packets) + 2 * 8000 * len(packets)
    assert not jitter.pending


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
ingest_frames = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=50),
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {"event": st.sampled_from(["connected", "start", "media", "stop", "mark", ""]),
         "streamSid": st.sampled_from(["MZ1", "MZ2"]) | json_values},
        # every field parse_message reads may be any JSON value: an encoding that was an array once raised TypeError
        optional={"start": st.fixed_dictionaries({"streamSid": st.sampled_from(["MZ1", "MZ2"]) | json_values},
                                                 optional={"mediaFormat": json_values | st.fixed_dictionaries({}, optional={
                                                               "encoding": st.sampled_from(["audio/x-mulaw", "audio/x-alaw"]) | json_values,
                                                               "sampleRate": st.just(8000) | json_values, "channels": st.just(1) | json_values}),
                                                           "tracks": st.sampled_from([["inbound"], ["inbound", "outbound"]]) | json_values,
                                                           "customParameters": json_values}),
                  "media": st.fixed_dictionaries({}, optional={"payload": st.text(max_size=40) | st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()) | json_values,
                                                               "track": st.sampled_from(["inbound", "outbound"]) | json_values,
                                                               "chunk": json_values, "timestamp": json_values})},
    ).map(json.dumps),
)


@FUZZ
@given(ingest_frames)
def test_ingest_parser_returns_a_message_or_raises_ingest_error(frame):
    try:
        message = parse_message(frame)
    except IngestError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert isinstance(message["event"], str)


@FUZZ
@given(ingest_frames, st.text(max_size=20))
def test_a_frame_before_a_tokenless_ingest_client_is_admitted_is_read_without_error_and_its_token_taken_out(frame, token):
    """What a client without the token sends first is outside input too; a start's token never stays in the start
    handed to the call."""
    read = first_frame(frame)
    assert read.event is None or isinstance(read.event, str)
    assert (read.token is None) == (read.start is None)
    named = json.dumps({"event": "start", "start": {"streamSid": "MZ1", "customParameters": {"token": token, "agent": "a"}}})
    taken = first_frame(named)
    assert taken.event == "start" and taken.token == token and taken.start is not None
    assert json.loads(taken.start)["start"]["customParameters"] == {"agent": "a"}


# Well-formed frames of two calls (one track, both tracks), so that calls start, carry audio and stop among the rest.
call_frames = st.one_of(
    st.builds(lambda sid, tracks: json.dumps({"event": "start", "start": {"streamSid": sid, "tracks": tracks}}),
              st.sampled_from(["MZ1", "MZ2"]), st.sampled_from([["inbound"], ["inbound", "outbound"]])),
    st.builds(lambda sid, track, payload, chunk: json.dumps({"event": "media", "streamSid": sid, "media": {
                  "payload": base64.b64encode(payload).decode(), **track, **chunk}}),
              st.sampled_from(["MZ1", "MZ2"]), st.sampled_from([{}, {"track": "inbound"}, {"track": "outbound"}]),
              st.binary(max_size=160), st.sampled_from([{}, {"chunk": "1"}, {"chunk": "2"}, {"chunk": "9"}])),
    st.sampled_from(["MZ1", "MZ2"]).map(lambda sid: json.dumps({"event": "stop", "streamSid": sid})),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(ingest_frames | call_frames, max_size=12))
def test_an_ingest_connection_survives_any_sequence_of_frames(frames):
    """The handler itself, fed frame by frame as a connection would: only IngestError, never a crash; every stream
    it opened is still carried by the connection or finished, and holds exactly the audio its track counted."""
    opened: list[Stream] = []

    def open_stream(stream_id: str, sample_rate: int) -> Stream:
        opened.append(Stream(stream_id, sample_rate, MonitorConfig()))
        return opened[-1]

    ingest = MediaIngest(open_stream)
    sinks: dict = {}
    tracks: dict = {}  # every track the connection carried at some point, by id

    async def feed() -> None:
        for frame in frames:
            try:
                await ingest._handle_message(parse_message(frame), sinks)
            except IngestError:
                pass
            tracks.update({id(track): track for call in sinks.values() for track in call.values()})

    asyncio.run(feed())
    carried = {id(track.sink) for call in sinks.values() for track in call.values()}
    for stream in opened:  # still carried by the connection, or finished: none is left open with nothing to end it
        assert stream.finished == (id(stream) not in carried)
    assert all(track.sink.ring.written == track.samples for track in tracks.values())
