"""RTP ingest: packet parsing, the jitter buffer, and real ffmpeg senders into the monitor."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from benchmarks.clients import free_port, subscriber_when_up
from ser_stream.errors import SerStreamError
from ser_stream.g711 import alaw_encode, mulaw_decode, mulaw_encode
from ser_stream.pipeline import MonitorConfig, Stream
from ser_stream.rtp import (
    CLOCK_RATIOS,
    FILL_AFTER_SECONDS,
    MAX_DROPOUT,
    MAX_MISORDER,
    STAMP_SLACK,
    JitterBuffer,
    RtpConfig,
    RtpError,
    RtpPacket,
    RtpReceiver,
    audio_samples,
    is_rtcp,
    parse_address,
    parse_packet,
)
from tests.conftest import PACKET_SAMPLES, rtp, taken_ipv6_loopback_port, undocumented_fields


def tone_payload(hz: float) -> bytes:
    """One 20 ms packet's μ-law payload of a tone: two senders told apart by pitch."""
    return mulaw_encode(0.3 * np.sin(2 * np.pi * hz * np.arange(PACKET_SAMPLES) / 8000)).tobytes()


def tone_packets(count: int, start_sequence: int = 0) -> list[RtpPacket]:
    t = np.arange(count * PACKET_SAMPLES) / 8000
    codes = mulaw_encode(0.3 * np.sin(2 * np.pi * 440 * t)).tobytes()
    return [
        RtpPacket(0, (start_sequence + i) & 0xFFFF, (i * PACKET_SAMPLES) & 0xFFFFFFFF, 7,
                  codes[i * PACKET_SAMPLES:(i + 1) * PACKET_SAMPLES])
        for i in range(count)
    ]


def played(jitter: JitterBuffer, packets: list[RtpPacket]) -> np.ndarray:
    blocks = [block for packet in packets for block in jitter.push(packet)] + jitter.flush()
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def test_parses_the_header_and_skips_csrc_extension_and_padding():
    payload = bytes(range(160))
    packet = parse_packet(rtp(513, 80000, payload, payload_type=8, ssrc=0xCAFEBABE, csrc=2, extension_words=3, padding=4))
    assert (packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc) == (8, 513, 80000, 0xCAFEBABE)
    assert packet.payload == payload


@pytest.mark.parametrize(
    ("datagram", "reason", "kind"),
    [
        (b"\x80\x00\x00", "shorter than the 12-byte RTP header", "short datagram"),
        (b"\x40" + bytes(11) + b"\xff" * 10, "RTP version 1", "not RTP version 2"),
        (rtp(1, 0, b"\xff" * 160, payload_type=96), "payload type 96 is not G.711", "unsupported payload type"),
        (rtp(1, 0, b"", csrc=0, extension_words=0)[:13], "header extension runs past", "bad header extension"),
        (rtp(1, 0, b"", csrc=0, extension_words=2)[:-4], "header is longer than the datagram", "header longer than the datagram"),
        (rtp(1, 0, b"\xff" * 4)[:-1] + b"\x09", None, None),  # no padding bit: a plain payload
        (bytes([0xA0]) + rtp(1, 0, b"\xff" * 4)[1:-1] + b"\x40", "padding of 64 bytes", "bad padding"),
        (bytes([0xA0]) + rtp(1, 0, b"\xff" * 4)[1:-1] + b"\x00", "padding of 0 bytes", "bad padding"),
    ],
)
def test_bad_datagrams_are_named(datagram, reason, kind):
    if reason is None:
        assert len(parse_packet(datagram).payload) == 4
        return
    with pytest.raises(RtpError, match=reason) as raised:
        parse_packet(datagram)
    assert raised.value.kind == kind


def test_rtcp_on_the_same_port_is_recognised():
    assert is_rtcp(bytes([0x80, 200]) + bytes(26))  # sender report
    assert not is_rtcp(rtp(1, 0, b"\xff" * 160))


def test_in_order_packets_play_back_exactly():
    packets = tone_packets(20)
    audio = played(JitterBuffer(5), packets)
    assert np.array_equal(audio, mulaw_decode(b"".join(p.payload for p in packets)))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_reordering_within_the_jitter_window_is_undone(data):
    depth = data.draw(st.integers(2, 8))
    packets = tone_packets(30, start_sequence=data.draw(st.integers(0, 0xFFFF)))  # wraps around 65535 sometimes
    # each packet may arrive up to depth-1 places late, the call's first one too
    keys = [i + data.draw(st.floats(0, depth - 1.01)) for i in range(len(packets))]
    arrival = [packets[i] for i in sorted(range(len(packets)), key=lambda i: keys[i])]
    jitter = JitterBuffer(depth)
    audio = played(jitter, arrival)
    assert np.array_equal(audio, mulaw_decode(b"".join(p.payload for p in packets)))
    assert (jitter.lost, jitter.late) == (0, 0)


def test_a_lost_packet_becomes_counted_silence_of_its_length():
    packets = tone_packets(20)
    jitter = JitterBuffer(5)
    audio = played(jitter, packets[:7] + packets[8:])
    assert jitter.lost == 1 and audio.size == 20 * PACKET_SAMPLES
    assert np.all(audio[7 * PACKET_SAMPLES:8 * PACKET_SAMPLES] == 0)
    assert np.array_equal(audio[8 * PACKET_SAMPLES:], mulaw_decode(b"".join(p.payload for p in packets[8:])))


def test_a_packet_later_than_the_jitter_window_is_counted_and_dropped():
    packets = tone_packets(20)
    jitter = JitterBuffer(3)
    audio = played(jitter, packets[:5] + packets[6:12] + [packets[5]] + packets[12:])
    assert (jitter.lost, jitter.late) == (0, 1)  # it did arrive: late, not lost as well
    assert audio.size == 20 * PACKET_SAMPLES  # its time was already played as silence


def test_a_delayed_packet_already_played_as_silence_counts_late_not_also_lost():
    """A packet 300 ms late was counted lost when its slot played and late when it came: rtp_lost_packets, which
    counts packets that never arrived, went up by one for it, and the stream's warning said one was lost."""
    packets = tone_packets(40)
    receiver, stream = heard_as_one_call(packets[:10] + packets[11:26] + [packets[10]] + packets[26:])
    assert (receiver.counters()["rtp_lost_packets"], receiver.counters()["rtp_late_packets"]) == (0, 1)
    assert stream.warning is not None and "0 packet(s) lost (played as silence), 1 arrived too late" in stream.warning
    assert stream.ring.read().size == 40 * PACKET_SAMPLES


@pytest.mark.parametrize("far", [False, True], ids=["after-its-slot", "far-out-of-sequence"])
def test_a_late_packet_that_arrives_three_times_counts_one_late_packet(far):
    """rtp_late_packets counts packets, as rtp_lost_packets does: a late packet sent again (a network that duplicates,
    a sender that re-sends) was counted once for every copy, so one late packet read as three."""
    packets = tone_packets(40)
    late = packets[10]
    if far:  # numbered 200 before the call's: a lone packet far out of sequence (a stray)
        late = RtpPacket(late.payload_type, (late.sequence - 200) & 0xFFFF, late.timestamp, late.ssrc, late.payload)
    receiver, stream = heard_as_one_call(packets[:10] + packets[11:26] + [late, packets[26], late, packets[27], late] + packets[28:])
    assert (receiver.counters()["rtp_lost_packets"], receiver.counters()["rtp_late_packets"]) == (int(far), 1)
    assert stream.warning is not None and f"{int(far)} packet(s) lost (played as silence), 1 arrived too late" in stream.warning
    assert stream.ring.read().size == 40 * PACKET_SAMPLES


def test_duplicates_are_played_once():
    packets = tone_packets(6)
    jitter = JitterBuffer(3)
    audio = played(jitter, [packets[0], packets[2], packets[2], packets[1], packets[1], *packets[3:]])
    assert (jitter.duplicates, jitter.late) == (2, 0)  # a copy of a packet already played is a duplicate, not late
    assert np.array_equal(audio, mulaw_decode(b"".join(p.payload for p in packets)))


def restarted(before: int, after: int, start_sequence: int, restart_sequence: int, new_timestamp: int | None) -> list[RtpPacket]:
    """A tone whose sender renumbers its packets (and maybe its timestamps) after ``before`` of them."""
    packets = tone_packets(before + after, start_sequence)
    offset = 0 if new_timestamp is None else new_timestamp - before * PACKET_SAMPLES
    return packets[:before] + [
        RtpPacket(p.payload_type, (restart_sequence + i) & 0xFFFF, (p.timestamp + offset) & 0xFFFFFFFF, p.ssrc, p.payload)
        for i, p in enumerate(packets[before:])
    ]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(3000, 0x10000 - 101), st.integers(1, 8),
       st.none() | st.integers(0, 0xFFFFFFFF))
def test_a_sender_that_restarts_its_sequence_numbers_keeps_playing(start, jump, depth, new_timestamp):
    """More than 100 behind or 3000 ahead (a relay failing over from 30049 to 100, say): followed, nothing lost.
    (Numbers and clock both a little behind the call's are old packets sent again: the next test.)"""
    steps_back = jump > 0x10000 - MAX_DROPOUT
    clock_back = new_timestamp is not None and 0 < (50 * PACKET_SAMPLES - new_timestamp) & 0xFFFFFFFF <= MAX_DROPOUT * PACKET_SAMPLES
    assume(not (steps_back and clock_back))
    packets = restarted(50, 100, start, start + 50 + jump, new_timestamp)
    jitter = JitterBuffer(depth)
    audio = played(jitter, packets)
    assert np.array_equal(audio, mulaw_decode(b"".join(p.payload for p in packets)))  # no silence for the renumbering
    assert (jitter.resyncs, jitter.lost, jitter.late) == (1, 0, 0)


@pytest.mark.parametrize("copies", [2, 50], ids=["a-pair", "a-second"])
def test_old_packets_sent_again_far_behind_the_call_are_dropped_as_late_not_taken_for_a_restart(copies):
    """Copies of packets played 200 numbers earlier once passed for a restarted numbering: 50 packets counted lost,
    the call a second longer, and (a second of them) their audio played again as a new utterance."""
    packets = tone_packets(400)
    stale = packets[100 : 100 + copies]
    jitter = JitterBuffer(5)
    audio = played(jitter, packets[:300] + stale + packets[300:])
    assert np.array_equal(audio, mulaw_decode(b"".join(p.payload for p in packets)))
    assert (jitter.resyncs, jitter.lost, jitter.late) == (0, 0, copies)


@pytest.mark.parametrize("ratio", [2, 6])
def test_a_sender_whose_clock_runs_at_16_or_48_khz_is_re_clocked_and_its_stream_warning_says_so(ratio):
    """Timestamps stepping 320 a 20 ms packet (a 16 kHz clock) once stretched a call to twice its length."""
    packets = tone_packets(100)
    fast_clock = [RtpPacket(p.payload_type, p.sequence, p.timestamp * ratio, p.ssrc, p.payload) for p in packets]
    jitter = JitterBuffer(5)
    audio = played(jitter, fast_clock[:40] + [fast_clock[41], fast_clock[40]] + fast_clock[42:60] + fast_clock[61:])  # one swap, one loss
    expected = mulaw_decode(b"".join(p.payload for p in packets))
    expected[60 * PACKET_SAMPLES : 61 * PACKET_SAMPLES] = 0  # the lost packet's 20 ms, played as silence
    assert np.array_equal(audio, expected)
    assert (jitter.clock_ratio, jitter.lost, jitter.late, jitter.clock_skips) == (ratio, 1, 0, 0)
    _, stream = heard_as_one_call(fast_clock)
    assert stream.warning == f"rtp-1234abcd: the timestamps ran at {8 * ratio} kHz, not G.711's 8 kHz (re-clocked: played at its length)"


@pytest.mark.parametrize("ratio", [2, 6])
def test_a_16_or_48_khz_clock_whose_stamps_wander_a_few_samples_is_re_clocked_all_the_same(ratio):
    """Stamps taken from the sender's clock a few samples either side of the audio's (±3 at its rate, as
    STAMP_SLACK allows an 8 kHz sender) were never learnt as a faster clock: each step read as a skip, and 100
    packets played as 25480 samples, most of them silence, instead of 16000."""
    wander = np.random.default_rng(ratio).integers(-3, 4, 100)
    packets = [RtpPacket(0, p.sequence, p.timestamp * ratio + int(wander[i]), p.ssrc, p.payload) for i, p in enumerate(tone_packets(100))]
    jitter = JitterBuffer(5)
    audio = played(jitter, packets)
    assert jitter.clock_ratio == ratio and (jitter.lost, jitter.late) == (0, 0)
    assert np.array_equal(audio, mulaw_decode(b"".join(p.payload for p in packets)))


def test_a_sender_without_a_steady_clock_is_played_stretched_and_its_stream_warning_says_so():
    steps = np.random.default_rng(0).integers(161, 800, 100)  # each step more than a packet's 160 samples, none a multiple
    receiver, streams, _ = receiver_with_streams()
    try:
        for index in range(100):
            receiver.receive(rtp(index, int(steps[:index].sum()), tone_payload(300)), "127.0.0.1:4000")
        receiver.close_idle(time.monotonic() + 10)
    finally:
        receiver.socket.close()
    (stream,) = streams["rtp-1234abcd"]
    assert stream.warning is not None and stream.warning.startswith("rtp-1234abcd: the timestamps skipped ahead at ")
    assert stream.warning.endswith("played as silence: the sender keeps no steady clock")
    pauses, paused_streams, _ = receiver_with_streams()  # silence suppression: one skip a pause is no fault
    try:
        for index in range(100):
            pauses.receive(rtp(index, 160 * index + (8000 if index >= 50 else 0), tone_payload(300)), "127.0.0.1:4000")
        pauses.close_idle(time.monotonic() + 10)
    finally:
        pauses.socket.close()
    assert paused_streams["rtp-1234abcd"][0].warning is None



def test_a_sender_whose_clock_runs_two_percent_fast_plays_back_to_back_and_its_stream_warning_says_so():
    """Timestamps stepping 163 a 160-sample packet, none missing, once put 3 zero samples between every two packets,
    which changed most of such a call's labels; a lost packet among them is still played as silence."""
    packets = [RtpPacket(0, p.sequence, 163 * p.sequence, p.ssrc, p.payload) for p in tone_packets(100)]
    jitter = JitterBuffer(5)
    assert np.array_equal(played(jitter, packets), mulaw_decode(b"".join(p.payload for p in packets)))
    lossy = JitterBuffer(5)
    audio = played(lossy, packets[:50] + packets[51:])
    assert lossy.lost == 1 and audio.size == 100 * PACKET_SAMPLES + 6  # the gap's timestamps hold 2 × 163 - 160
    assert np.all(audio[50 * PACKET_SAMPLES:51 * PACKET_SAMPLES + 6] == 0)
    _, stream = heard_as_one_call(packets)
    assert stream.ring.read().size == 100 * PACKET_SAMPLES
    assert stream.warning == ("rtp-1234abcd: the timestamps ran ahead of the audio at 99 of 100 packets, by less than a "
                              "packet each (0.04 s in all): the sender's clock runs fast (played back to back, not padded "
                              "with silence)")

def test_the_reviewers_restart_plays_all_of_its_audio():
    jitter = JitterBuffer(5)
    audio = played(jitter, restarted(50, 1500, 30000, 100, None))
    assert audio.size == 1550 * PACKET_SAMPLES and jitter.resyncs == 1


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(1, 2998), st.integers(1, 8))
def test_a_forward_jump_counts_as_lost_what_its_silence_holds(start, skipped, depth):
    """Less than 3000 past the highest received is loss: at most 1 s (50 packets) of silence, and that many counted."""
    packets = tone_packets(40 + skipped, start)
    arrived = packets[:20] + packets[20 + skipped:]
    jitter = JitterBuffer(depth)
    audio = played(jitter, arrived)
    silence = min(skipped * PACKET_SAMPLES, 8000)
    assert audio.size == 40 * PACKET_SAMPLES + silence
    assert np.all(audio[20 * PACKET_SAMPLES:20 * PACKET_SAMPLES + silence] == 0)
    assert (jitter.lost, jitter.late) == (min(skipped, 50), 0)
    assert jitter.resyncs == 0


@pytest.mark.parametrize(("before", "after"), [(80, 160), (160, 80), (80, 480), (240, 240)], ids=["10-20ms", "20-10ms", "10-60ms", "30ms"])
def test_packets_lost_where_the_sender_changes_its_packet_length_are_each_counted(before, after):
    """Two 10 ms packets lost just before the sender went over to 20 ms packets: their 20 ms of silence was counted
    as one packet lost, taken to be as long as the packet after the gap."""
    sizes = [before] * 6 + [after] * 6
    codes = mulaw_encode(0.3 * np.sin(2 * np.pi * 440 * np.arange(sum(sizes)) / 8000)).tobytes()
    offsets = np.cumsum([0, *sizes])
    packets = [RtpPacket(0, index, int(offsets[index]), 7, codes[offsets[index]:offsets[index + 1]]) for index in range(len(sizes))]
    jitter = JitterBuffer(3)
    audio = played(jitter, packets[:4] + packets[6:])  # packets 4 and 5, of the earlier length, never arrive
    assert (jitter.lost, jitter.late) == (2, 0)
    assert audio.size == sum(sizes) and not audio[offsets[4]:offsets[6]].any()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(3000, 0x10000 - 101), st.integers(1, 8), st.integers(1, 28),
       st.integers(0, 0xFFFFFFFF))
def test_a_lone_packet_far_out_of_sequence_is_dropped_without_a_resync(start, distance, depth, position, timestamp):
    """One stray packet (or two, not one after the other) does not move playback: it is dropped and counted late."""
    packets = tone_packets(30, start)
    stray = RtpPacket(0, (packets[position].sequence + distance) & 0xFFFF, timestamp, 7, b"\x00" * PACKET_SAMPLES)
    # Numbered up to MAX_MISORDER + 1 before the call's first and stamped no further behind it than that many packets
    # at a clock a sender may keep, the two are the call's first packets, overtaken (_starts_call), not strays: not
    # drawn (a random run drew -101, stamped -16000: exactly 100 packets before the call's first)
    behind = (packets[0].sequence - stray.sequence) & 0xFFFF
    assume(behind > MAX_MISORDER + 1 or (packets[0].timestamp - timestamp) & 0xFFFFFFFF > behind * PACKET_SAMPLES * max(CLOCK_RATIOS) + STAMP_SLACK * max(CLOCK_RATIOS))
    follower = RtpPacket(0, (stray.sequence + 1) & 0xFFFF, timestamp, 7, b"\x00" * PACKET_SAMPLES)
    jitter = JitterBuffer(depth)
    audio = played(jitter, packets[:position] + [stray, packets[position], follower] + packets[position + 1:])
    assert np.array_equal(audio, mulaw_decode(b"".join(p.payload for p in packets)))
    assert (jitter.lost, jitter.late) == (0, 2)
    assert jitter.resyncs == 0


def test_a_stray_packet_still_held_when_the_call_ends_is_counted_late():
    packets = tone_packets(10)
    jitter = JitterBuffer(3)
    audio = played(jitter, [*packets, RtpPacket(0, 20000, 0, 7, b"\x00" * PACKET_SAMPLES)])
    assert audio.size == 10 * PACKET_SAMPLES and jitter.late == 1
    assert jitter.resyncs == 0


def test_receiver_counts_a_restarted_call_as_a_resync_and_plays_it_on():
    streams: dict[str, Stream] = {}

    def open_stream(stream_id: str, sample_rate: int) -> Stream:
        streams[stream_id] = Stream(stream_id, sample_rate, MonitorConfig())
        return streams[stream_id]

    receiver = RtpReceiver(RtpConfig(port=0), open_stream, [].append)
    try:
        for packet in restarted(50, 100, 30000, 100, None):
            receiver.receive(rtp(packet.sequence, packet.timestamp, packet.payload, ssrc=5), "127.0.0.1:4000")
        receiver.close_idle(time.monotonic() + 60)
    finally:
        receiver.socket.close()
    stream = streams["rtp-00000005"]
    assert stream.finished and stream.ring.read().size == 150 * PACKET_SAMPLES
    assert receiver.counters() == {"rtp_bad_packets": 0, "rtp_lost_packets": 0, "rtp_late_packets": 0, "rtp_refused_packets": 0,
                                   "rtp_resyncs": 1, "rtp_wrong_sender_packets": 0, "rtp_not_allowed_packets": 0}
    assert stream.warning is not None and "restarted 1 time(s)" in stream.warning


@pytest.fixture
def receiver_clock(monkeypatch) -> list[float]:
    """The RTP receiver's monotonic clock, as a one-element list the test moves."""
    import types

    import ser_stream.rtp

    clock = [1000.0]
    monkeypatch.setattr(ser_stream.rtp, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    return clock


def test_a_call_refused_a_stream_is_counted_reported_once_by_name_and_tried_again_a_second_later(receiver_clock):
    """At --max-streams a flood of SSRCs cannot make streams; a refused call starts once there is room. One line
    once stood for every call a sender was refused, naming none, and a call taken late did not say it missed its start."""
    from ser_stream.errors import StreamRefused
    from ser_stream.rtp import REFUSED_RETRY_SECONDS

    clock = receiver_clock
    streams: dict[str, Stream] = {}
    attempts: list[str] = []
    reports: list[str] = []
    room = threading.Event()

    def open_stream(stream_id: str, sample_rate: int) -> Stream:
        attempts.append(stream_id)
        if not room.is_set():
            raise StreamRefused(stream_id, "1 streams are open, the most this monitor takes (--max-streams)")
        streams[stream_id] = Stream(stream_id, sample_rate, MonitorConfig())
        return streams[stream_id]

    receiver = RtpReceiver(RtpConfig(port=0), open_stream, reports.append)
    payload = mulaw_encode(np.zeros(PACKET_SAMPLES)).tobytes()
    try:
        for sequence in range(20):
            for ssrc in (7, 8):  # two calls from one sender
                receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES, payload, ssrc=ssrc), "127.0.0.1:4000")
        assert attempts == ["rtp-00000007", "rtp-00000008"] and receiver.counters()["rtp_refused_packets"] == 40
        assert reports == [
            f"rtp packet from 127.0.0.1:4000 skipped: call rtp-0000000{ssrc} has no stream: 1 streams are open, "
            "the most this monitor takes (--max-streams) (further ones are only counted)" for ssrc in (7, 8)
        ]
        room.set()
        clock[0] += REFUSED_RETRY_SECONDS + 0.4
        for sequence in range(20, 30):
            receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES, payload, ssrc=7), "127.0.0.1:4000")
    finally:
        receiver.socket.close()
    assert attempts == ["rtp-00000007", "rtp-00000008", "rtp-00000007"] and receiver.counters()["rtp_refused_packets"] == 40
    assert "rtp-00000007" in streams and len(reports) == 3
    assert reports[2] == ("call rtp-00000007 from 127.0.0.1:4000 got a stream 1.4 s after it was first refused: "
                          "what it sent before was not analysed, and its times count from now")


def test_receiver_makes_one_stream_per_ssrc_closes_idle_calls_and_counts_bad_packets(receiver_clock):
    """The receiver's thread runs on the test's clock: on the wall clock, a sweep that came between FILL_AFTER_SECONDS
    and idle_seconds of quiet (0.25 to 0.3 s) first played that quiet as silence, 1607 samples, on most idle runs."""
    clock = receiver_clock
    streams: dict[str, Stream] = {}
    reports: list[str] = []

    def open_stream(stream_id: str, sample_rate: int) -> Stream:
        assert sample_rate == 8000
        streams[stream_id] = Stream(stream_id, sample_rate, MonitorConfig())
        return streams[stream_id]

    receiver = RtpReceiver(RtpConfig(port=0, idle_seconds=0.3), open_stream, reports.append)
    stop = threading.Event()
    thread = threading.Thread(target=receiver.run, args=(stop,))
    thread.start()
    try:
        tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(1600) / 8000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for i in range(10):
                sender.sendto(rtp(i, i * 160, mulaw_encode(tone[i * 160:(i + 1) * 160]).tobytes(), ssrc=1), ("127.0.0.1", receiver.port))
                sender.sendto(rtp(i, i * 160, alaw_encode(tone[i * 160:(i + 1) * 160]).tobytes(), payload_type=8, ssrc=2), ("127.0.0.1", receiver.port))
            for _ in range(3):
                sender.sendto(b"\x80\x00", ("127.0.0.1", receiver.port))
                sender.sendto(rtp(0, 0, b"\x00" * 160, payload_type=18), ("127.0.0.1", receiver.port))
        deadline = time.monotonic() + 60  # a hang, not slowness: nothing here waits on the wall clock
        while receiver.bad_packets < 6 and time.monotonic() < deadline:  # the last datagram sent is the sixth bad one
            time.sleep(0.01)
        assert len(streams) == 2 and not any(stream.finished for stream in streams.values())  # no time has passed
        clock[0] += 1.0  # a second of quiet: past idle_seconds
        while not all(stream.finished for stream in streams.values()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert all(stream.finished for stream in streams.values())  # closed by the idle timeout, before stop
    finally:
        stop.set()
        thread.join()
    assert sorted(streams) == ["rtp-00000001", "rtp-00000002"]
    for stream in streams.values():
        audio = stream.ring.read()
        assert audio.size == 1600 and np.max(np.abs(audio - tone)) < 0.02  # G.711 is within 2 % at this level
    assert receiver.bad_packets == 6
    assert len(reports) == 2  # once per sender and reason
    assert any("shorter than the 12-byte RTP header" in line for line in reports)
    assert any("payload type 18 is not G.711" in line for line in reports)


@pytest.mark.slow
@pytest.mark.parametrize("lost", ["stdout", "stderr"])
def test_when_the_reader_of_the_monitors_output_goes_away_it_stops_cleanly_and_says_so(shipped_model, lost):
    """`--print-utterances | head -n 1`: the RTP thread that printed the next warning died of the BrokenPipeError,
    and the monitor ran on, taking no more calls, its status saying nothing."""
    rtp_port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", f"rtp:127.0.0.1:{rtp_port}", "--no-dashboard",
         "--ws", "127.0.0.1:0", *(["--print-utterances"] if lost == "stdout" else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    kept, gone = (process.stderr, process.stdout) if lost == "stdout" else (process.stdout, process.stderr)
    assert kept is not None and gone is not None and process.stderr is not None
    while "WebSocket" not in process.stderr.readline():  # up and listening
        assert process.poll() is None
    gone.close()  # the reader goes away
    for _ in range(2):  # each from a new sender: each is warned of, and the warning is printed
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"not rtp", ("127.0.0.1", rtp_port))
    try:
        assert process.wait(timeout=60) == 1
    finally:
        process.kill()
    said = kept.read()
    assert f"ser-stream: error: {lost} (BrokenPipeError: Broken pipe) could not be written: the monitor stopped" in said
    assert "Traceback" not in said


@pytest.mark.slow
def test_ffmpeg_senders_become_streams_with_utterances_at_the_clip_boundaries(clips_with_silence, shipped_model):
    """Three real RTP senders at once (Debian's ffmpeg, μ-law and A-law), plus junk datagrams on the same port."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (./dev.sh test installs it as root)")
    path, bounds = clips_with_silence
    port, rtp_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", f"rtp:127.0.0.1:{rtp_port}", "--no-dashboard",
         "--ws", f"127.0.0.1:{port}", "--call-idle", "1.0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )

    async def scenario() -> list[dict]:
        subscriber = await subscriber_when_up(port)
        senders = [
            await asyncio.create_subprocess_exec(
                "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(path), "-ar", "8000", "-ac", "1",
                "-c:a", codec, "-f", "rtp", f"rtp://127.0.0.1:{rtp_port}",
            )
            for codec in ("pcm_mulaw", "pcm_mulaw", "pcm_alaw")
        ]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
            junk.sendto(b"not rtp", ("127.0.0.1", rtp_port))
        messages: list[dict] = []
        ended = 0
        while ended < 3:
            message = json.loads(await asyncio.wait_for(subscriber.recv(), 60))
            messages.append(message)
            ended += message["type"] == "stream_ended"
        for sender in senders:
            assert await sender.wait() == 0
        await subscriber.close()
        return messages

    try:
        messages = asyncio.run(scenario())
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    streams = {m["stream"] for m in messages if m["type"] == "stream_started"}
    assert len(streams) == 3 and all(s.startswith("rtp-") for s in streams)
    exact = 0
    for stream in streams:
        spans = [(m["t_start"], m["t_end"]) for m in messages if m["type"] == "utterance" and m["stream"] == stream]
        exact += len(spans) == len(bounds)
        # A-law's coarse steps at low level make Silero hear a 0.5 s pause inside the quiet 'sad' clip
        # (ffmpeg's A-law file gives the same split offline), so spans closer than 0.2 s are one clip.
        merged = [list(spans[0])]
        for start, end in spans[1:]:
            if start - merged[-1][1] < 0.2:
                merged[-1][1] = end
            else:
                merged.append([start, end])
        assert len(merged) == len(bounds), (stream, spans)
        for (start, end), (clip_start, clip_end) in zip(merged, bounds):
            assert abs(start - clip_start) <= 0.3 and abs(end - clip_end) <= 0.3
    assert exact >= 2  # the two μ-law calls: exactly one utterance per clip
    assert "rtp packet from 127.0.0.1" in stderr and "shorter than the 12-byte RTP header" in stderr
    status = [m for m in messages if m["type"] == "status"][-1]
    assert status["rtp_bad_packets"] == 1 and status["rtp_lost_packets"] == 0 and status["overruns"] == 0
    assert undocumented_fields(messages) == []


def heard_as_one_call(packets: list[RtpPacket]) -> tuple[RtpReceiver, Stream]:
    """The receiver and the one stream it made of ``packets``, sent in that order by one sender, its call then
    closed as idle."""
    receiver, streams, _ = receiver_with_streams()
    try:
        for packet in packets:
            receiver.receive(rtp(packet.sequence, packet.timestamp, packet.payload, packet.payload_type), "127.0.0.1:4000")
        receiver.close_idle(time.monotonic() + 10)
    finally:
        receiver.socket.close()
    (stream,) = streams["rtp-1234abcd"]
    return receiver, stream


def receiver_with_streams(**config) -> tuple[RtpReceiver, dict[str, list[Stream]], list[str]]:
    """A receiver whose calls open plain streams (every stream opened, by id, in order) and whose reports are kept."""
    streams: dict[str, list[Stream]] = {}
    reports: list[str] = []

    def open_stream(stream_id: str, sample_rate: int) -> Stream:
        streams.setdefault(stream_id, []).append(Stream(stream_id, sample_rate, MonitorConfig()))
        return streams[stream_id][-1]

    return RtpReceiver(RtpConfig(port=0, **config), open_stream, reports.append), streams, reports


def send(receiver: RtpReceiver, first: int, count: int, ssrc: int = 9, payload_type: int = 0) -> None:
    """Packets ``first`` to ``first + count - 1`` of one call, each 20 ms of tone (or comfort noise), in order."""
    payload = tone_payload(440) if payload_type == 0 else b"\x40"
    for sequence in range(first, first + count):
        receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES, payload, payload_type=payload_type, ssrc=ssrc), "127.0.0.1:4000")


def test_a_call_that_sends_nothing_has_its_time_played_as_silence_as_it_passes():
    """Silence suppression without comfort noise left the last utterance open until the next packet (1.9 s later,
    or the call's end), and an outage of 5 s was played as 1 s, shifting every later time 4 s early and counting
    50 of its 250 packets lost."""
    receiver, streams, _ = receiver_with_streams(idle_seconds=10.0)
    try:
        send(receiver, 0, 50)  # 1 s of speech, then nothing: a pause, or the network failing
        stream, call = streams["rtp-00000009"][0], receiver.calls[9]
        receiver.close_idle(call.last_packet + FILL_AFTER_SECONDS - 0.01)
        assert stream.ring.available() == 50 * PACKET_SAMPLES  # packets late within the jitter: nothing played yet
        receiver.close_idle(call.last_packet + FILL_AFTER_SECONDS + 0.6)
        assert stream.ring.available() == 50 * PACKET_SAMPLES + int(0.6 * 8000)  # the pause passes as it happens
        receiver.close_idle(call.last_packet + FILL_AFTER_SECONDS + 5.0)
        send(receiver, 300, 50)  # 250 packets (5 s) never came; the call goes on in sequence and in time
        receiver.close_idle(time.monotonic() + 60)
    finally:
        receiver.socket.close()
    assert stream.ring.read().size == 350 * PACKET_SAMPLES  # 7 s: the call's own length, its later times true
    assert receiver.counters()["rtp_lost_packets"] == 250


def test_a_sweep_after_the_thread_was_descheduled_hears_the_queued_packets_before_judging_calls_quiet(receiver_clock):
    """The sweep ran on the first datagram after a stall: every other call, its packets still in the socket, was
    padded with the stall's silence, which its queued packets then followed (past --call-idle: closed while sending)."""
    clock = receiver_clock
    receiver, streams, _ = receiver_with_streams(idle_seconds=2.0)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind(("127.0.0.1", 0))
            for ssrc in (1, 2):  # both calls under way
                receiver.receive(rtp(0, 0, tone_payload(440), ssrc=ssrc), f"127.0.0.1:{sender.getsockname()[1]}")
            for sequence in range(1, 51):  # what arrived while the thread was away
                for ssrc in (1, 2):
                    sender.sendto(rtp(sequence, sequence * PACKET_SAMPLES, tone_payload(440), ssrc=ssrc), ("127.0.0.1", receiver.port))
        time.sleep(0.2)  # in the socket's buffer
        clock[0] += 1.0  # the thread comes back a second later
        receiver.sweep()
        receiver.close_idle(clock[0] + 60)
    finally:
        receiver.socket.close()
    for ssrc in (1, 2):  # every packet, and no silence among them (0.75 s of it once, at the first sweep)
        assert streams[f"rtp-0000000{ssrc}"][0].ring.read().size == 51 * PACKET_SAMPLES, ssrc



def test_a_network_stall_without_loss_is_said_in_the_calls_warning(receiver_clock):
    """Packets held up 0.5 s in the network and then delivered at once play after the 0.25 s of silence their wait
    was played as: the call grows by it (as designed), which nothing said."""
    clock = receiver_clock
    receiver, streams, _ = receiver_with_streams(idle_seconds=10.0)
    try:
        for sequence in range(50):
            receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES, tone_payload(440), ssrc=9), "127.0.0.1:4000")
            clock[0] += 0.02
        for _ in range(5):  # the stall: nothing arrives for 0.5 s
            clock[0] += 0.1
            receiver.close_idle(clock[0])
        for sequence in range(50, 100):  # every packet, in a burst, none lost
            receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES, tone_payload(440), ssrc=9), "127.0.0.1:4000")
        receiver.close_idle(clock[0] + 60)
    finally:
        receiver.socket.close()
    (stream,) = streams["rtp-00000009"]
    filled = stream.ring.read().size - 100 * PACKET_SAMPLES
    assert filled > 0 and receiver.counters()["rtp_lost_packets"] == 0
    assert stream.warning == (f"rtp-00000009: {filled / 8000:.2f} s of silence were played while packets were delayed; "
                              "later times are late by that much")

def test_a_late_copy_mid_pause_does_not_cut_the_pause_short(receiver_clock):
    """The silence a pause is played as counted from the last datagram heard, a dropped late copy included, but kept
    the count already played: 1.25 s of a 7 s pause went missing and every later time moved early."""
    clock = receiver_clock
    receiver, streams, _ = receiver_with_streams(idle_seconds=10.0)
    try:
        for sequence in range(50):  # 1 s of speech, then a 7 s pause (silence suppression: the clock runs on)
            receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES, tone_payload(440), ssrc=9), "127.0.0.1:4000")
            clock[0] += 0.02
        for tenth in range(70):
            if tenth == 20:  # 2 s in, a copy of the last packet, delayed in the network: dropped
                receiver.receive(rtp(49, 49 * PACKET_SAMPLES, tone_payload(440), ssrc=9), "127.0.0.1:4000")
            clock[0] += 0.1
            receiver.close_idle(clock[0])
        for sequence in range(400, 450):  # speech again, its timestamps 7 s on
            receiver.receive(rtp(sequence - 350, sequence * PACKET_SAMPLES, tone_payload(440), ssrc=9), "127.0.0.1:4000")
            clock[0] += 0.02
        receiver.close_idle(clock[0] + 60)
    finally:
        receiver.socket.close()
    assert streams["rtp-00000009"][0].ring.read().size == 450 * PACKET_SAMPLES  # 9 s: the call's own length


def test_a_call_paused_by_one_comfort_noise_packet_stays_one_call(receiver_clock):
    """RFC 3389 lets a sender send one comfort-noise packet and nothing until speech resumes: after --call-idle
    the call was closed and resumed as a second stream, its times from 0 and its utterance ids again from 1.
    (On the test's clock: on the wall clock, last + 2.0 - last came out under 2.0 when last was just under a power
    of two, a quarter of the times between 4094 and 4096 s, and the call was not closed.)"""
    clock = receiver_clock
    receiver, streams, _ = receiver_with_streams(idle_seconds=2.0)
    try:
        send(receiver, 0, 50)
        send(receiver, 50, 1, payload_type=13)  # "I am quiet now"
        clock[0] += 4.0
        receiver.close_idle(clock[0])
        assert 9 in receiver.calls  # a pause it announced, not a call gone
        send(receiver, 250, 50)  # speech again, 4 s on
        clock[0] += 2.0
        receiver.close_idle(clock[0])  # after audio, --call-idle ends it as before
        assert 9 not in receiver.calls
    finally:
        receiver.socket.close()
    assert len(streams["rtp-00000009"]) == 1


def test_comfort_noise_and_telephone_events_are_rtp_packets_that_carry_no_audio():
    """RFC 3389 comfort noise (PT 13) and RFC 4733 events (a dynamic PT, usually 101) belong to a G.711 call."""
    comfort_noise = parse_packet(rtp(7, 160, b"\x40", payload_type=13))
    key_five = parse_packet(rtp(8, 320, bytes([5, 0x8A, 0x03, 0x20]), payload_type=101))
    assert (comfort_noise.payload_type, key_five.payload_type) == (13, 101)
    assert not comfort_noise.is_audio and not key_five.is_audio and parse_packet(rtp(9, 480, b"\xff" * 160)).is_audio
    with pytest.raises(RtpError, match="payload type 101 is not G.711"):  # a dynamic PT whose payload is no event
        parse_packet(rtp(9, 480, b"\xff" * 161, payload_type=101))


def test_a_key_held_three_seconds_keeps_the_calls_time():
    """RFC 4733: a key's packets all carry its start and the audio it suppresses is not sent; at the next audio
    packet the 3 s jump was cut to 1 s, so everything after the key came 2 s early."""
    voice = tone_packets(50)
    key = [RtpPacket(101, 50 + index, 50 * PACKET_SAMPLES, 0x1234ABCD, bytes([5, 0x0A, *(400 * (index + 1)).to_bytes(2, "big")]))
           for index in range(60)]  # an update every 50 ms for 3 s
    after = [RtpPacket(0, 110 + p.sequence, 50 * PACKET_SAMPLES + 24000 + p.timestamp, p.ssrc, p.payload) for p in voice]
    _, stream = heard_as_one_call(voice + key + after)
    audio = stream.ring.read()
    assert audio.size == 100 * PACKET_SAMPLES + 24000
    assert np.all(audio[50 * PACKET_SAMPLES : 50 * PACKET_SAMPLES + 24000] == 0)
    assert np.array_equal(audio[-50 * PACKET_SAMPLES :], mulaw_decode(b"".join(p.payload for p in voice)))


def test_comfort_noise_and_telephone_events_keep_the_call_in_sequence_and_play_as_silence():
    """A pause held by comfort noise and a key press: nothing bad, nothing lost, their time is silence."""
    receiver, streams, reports = receiver_with_streams()
    t = np.arange(PACKET_SAMPLES) / 8000
    voice = mulaw_encode(0.3 * np.sin(2 * np.pi * 440 * t)).tobytes()
    sequence, timestamp = 1000, 0

    def send(payload: bytes, payload_type: int = 0, at: int | None = None) -> None:
        nonlocal sequence
        receiver.receive(rtp(sequence, timestamp if at is None else at, payload, payload_type), "10.0.0.5:40000")
        sequence += 1

    try:
        for _ in range(50):
            send(voice)
            timestamp += PACKET_SAMPLES
        send(b"\x40", payload_type=13)  # the caller goes quiet: one comfort-noise update, then 0.5 s of nothing
        timestamp += 4000
        for _ in range(50):
            send(voice)
            timestamp += PACKET_SAMPLES
        for duration in range(1, 12):  # a key held 220 ms: updates and three end packets, all at the key's start
            send(bytes([5, 0x8A if duration > 8 else 0x0A, 0, duration * 20]), payload_type=101, at=timestamp)
        timestamp += 11 * PACKET_SAMPLES
        for _ in range(50):
            send(voice)
            timestamp += PACKET_SAMPLES
        receiver.close_idle(time.monotonic() + 60)
    finally:
        receiver.socket.close()
    audio = streams["rtp-1234abcd"][0].ring.read()
    assert audio.size == 150 * PACKET_SAMPLES + 4000 + 11 * PACKET_SAMPLES
    assert np.all(audio[50 * PACKET_SAMPLES:50 * PACKET_SAMPLES + 4000] == 0)
    assert np.all(audio[-61 * PACKET_SAMPLES:-50 * PACKET_SAMPLES] == 0)
    assert set(receiver.counters().values()) == {0} and reports == []
    assert streams["rtp-1234abcd"][0].warning is None


def test_comfort_noise_during_a_pause_longer_than_call_idle_keeps_the_call_open():
    """A phone in a pause sends comfort-noise updates: the call is alive, one stream, its time runs through the pause."""
    receiver, streams, _ = receiver_with_streams(idle_seconds=0.3)
    payload = mulaw_encode(np.full(PACKET_SAMPLES, 0.1)).tobytes()
    try:
        for sequence in range(10):
            receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES, payload), "127.0.0.1:4000")
        for update in range(8):  # 0.8 s of pause, an update every 0.1 s: far past --call-idle without them
            time.sleep(0.1)
            receiver.receive(rtp(10 + update, 1600 + update * 800, b"\x40", payload_type=13), "127.0.0.1:4000")
            receiver.close_idle(time.monotonic())
        for sequence in range(18, 28):
            receiver.receive(rtp(sequence, 8000 + (sequence - 18) * PACKET_SAMPLES, payload), "127.0.0.1:4000")
        receiver.close_idle(time.monotonic())
        assert not streams["rtp-1234abcd"][0].finished
        receiver.close_idle(time.monotonic() + 60)
    finally:
        receiver.socket.close()
    assert len(streams["rtp-1234abcd"]) == 1
    assert streams["rtp-1234abcd"][0].ring.read().size == 8000 + 10 * PACKET_SAMPLES
    assert set(receiver.counters().values()) == {0}


def test_a_network_that_duplicates_every_packet_loses_nothing():
    packets = tone_packets(100)
    jitter = JitterBuffer(5)
    audio = played(jitter, [packet for packet in packets for _ in range(2)])
    assert np.array_equal(audio, mulaw_decode(b"".join(p.payload for p in packets)))
    assert (jitter.duplicates, jitter.late, jitter.lost) == (100, 0, 0)


def test_a_call_whose_first_two_packets_arrive_swapped_plays_both():
    packets = tone_packets(20)
    jitter = JitterBuffer(5)
    audio = played(jitter, [packets[1], packets[0], *packets[2:]])
    assert np.array_equal(audio, mulaw_decode(b"".join(p.payload for p in packets)))
    assert (jitter.late, jitter.lost) == (0, 0)


@pytest.mark.parametrize(("arrival", "depth"), [([2, 0, 1], 2), ([5, 0, 1, 2, 3, 4], 3), ([4, 0, 1, 2, 3], 5)])
def test_a_call_whose_first_packets_are_overtaken_by_a_later_one_starts_with_the_earliest(arrival, depth):
    """Packet 2 first, then 0 and 1 (a call's first packets held up by address resolution) with --jitter-packets 2:
    packet 0 was dropped as late, being two numbers back where only one was allowed, though it came second; mid-call
    the same order plays whole."""
    packets = tone_packets(20)
    jitter = JitterBuffer(depth)
    audio = played(jitter, [packets[index] for index in arrival] + packets[len(arrival):])
    assert np.array_equal(audio, mulaw_decode(b"".join(p.payload for p in packets)))
    assert (jitter.late, jitter.lost) == (0, 0)


@pytest.mark.parametrize("ratio", [2, 6])
@pytest.mark.parametrize(("arrival", "depth"), [([5, 0, 1, 2, 3, 4], 3), ([9, 0, 1, 2, 3, 4, 5, 6, 7, 8], 5)])
def test_a_call_stamped_at_16_or_48_khz_whose_first_packets_are_overtaken_keeps_them(arrival, depth, ratio):
    """Its clock is learnt only after four packet pairs, so before it plays its stamps step 2 or 6 times its packets:
    the stray rule above took its first packets for strays and dropped them as late (40-80 ms of every such call)."""
    packets = [RtpPacket(p.payload_type, p.sequence, p.timestamp * ratio, p.ssrc, p.payload) for p in tone_packets(40)]
    jitter = JitterBuffer(depth)
    audio = played(jitter, [packets[index] for index in arrival] + packets[len(arrival):])
    assert (jitter.late, jitter.lost) == (0, 0)
    assert np.array_equal(audio[: PACKET_SAMPLES], mulaw_decode(packets[0].payload))  # the call starts with its first packet


@pytest.mark.parametrize("ratio", [2, 6])
@pytest.mark.parametrize(("arrival", "depth"), [([1, 0], 5), ([0, 2, 1], 5), ([9, 0, 1, 2, 3, 4, 5, 6, 7, 8], 5)])
def test_a_call_stamped_at_16_or_48_khz_whose_first_packets_arrive_out_of_order_plays_at_its_length(arrival, depth, ratio):
    """Its clock was learnt from pairs of packets in the order they came, so a swap among the first ones left it
    unlearnt when the call began to play: each step of 2 or 6 times a packet was taken for a skip at 8 kHz, and 100 to
    600 ms of silence were put between its first packets. The packets waiting when it begins, in sequence, say it."""
    packets = [RtpPacket(p.payload_type, p.sequence, p.timestamp * ratio, p.ssrc, p.payload) for p in tone_packets(40)]
    jitter = JitterBuffer(depth)
    audio = played(jitter, [packets[index] for index in arrival] + packets[len(arrival):])
    assert np.array_equal(audio, mulaw_decode(b"".join(p.payload for p in packets)))
    assert (jitter.late, jitter.lost, jitter.clock_skips, jitter.clock_ratio) == (0, 0, 0, ratio)


@pytest.mark.parametrize("behind", [6, 20, 60, 99])
def test_a_stray_older_packet_before_a_call_plays_is_dropped_as_late_not_taken_for_its_start(behind):
    """An old packet of the same SSRC (before a hold), numbers behind the call's first but 3 s behind in time, came
    second: taken for the call's start (the fix above, unbounded), it played its old audio, 1 s of silence and counted
    up to 50 packets lost that never were. Its timestamp does not follow on from the call's, so it is late."""
    packets = tone_packets(50)
    first = packets[0]
    stray = RtpPacket(first.payload_type, (first.sequence - behind) & 0xFFFF, (first.timestamp - 3 * 8000) & 0xFFFFFFFF,
                      first.ssrc, bytes(reversed(first.payload)))
    jitter = JitterBuffer(5)
    audio = played(jitter, [first, stray, *packets[1:]])
    assert np.array_equal(audio, mulaw_decode(b"".join(p.payload for p in packets)))
    assert (jitter.late, jitter.lost) == (1, 0)


@pytest.mark.parametrize("behind", [1, 5])
@pytest.mark.parametrize("stamped", [-3 * 8000, -(1 << 31), 8000, 0x12345678], ids=["3s-behind", "half-the-clock-away", "1s-ahead", "an-earlier-calls"])
def test_a_stray_older_packet_numbered_within_the_jitter_window_before_a_call_plays_is_dropped_as_late(behind, stamped):
    """An old packet of the SSRC (an earlier call's, a copy from before a hold) numbered just behind the call's first,
    but its timestamp far from where its number puts it, came second: within the jitter window it was taken for the
    call's start whatever its timestamp, and the call began with its audio and up to 1 s of silence. To follow the
    first packet it was delayed seconds more than the window allows: mid-call it would be late, and so it is here."""
    packets = tone_packets(50, start_sequence=1000)
    first = packets[0]
    stray = RtpPacket(first.payload_type, (first.sequence - behind) & 0xFFFF, (first.timestamp + stamped) & 0xFFFFFFFF,
                      first.ssrc, bytes(reversed(first.payload)))
    jitter = JitterBuffer(5)
    audio = played(jitter, [first, stray, *packets[1:]])
    assert np.array_equal(audio, mulaw_decode(b"".join(p.payload for p in packets)))
    assert (jitter.late, jitter.lost) == (1, 0)


def test_a_second_sender_using_a_calls_ssrc_is_dropped_counted_and_reported_once():
    """RFC 3550 §8.2: an SSRC is its first sender's; another address sending it (a collision) is not merged in."""
    receiver, streams, reports = receiver_with_streams()
    first, second = tone_payload(300), tone_payload(1000)
    try:
        for i in range(250):
            receiver.receive(rtp(10000 + i, 50000 + PACKET_SAMPLES * i, first, ssrc=0xABCD), "10.0.0.1:16384")
            receiver.receive(rtp(40000 + i, 9000000 + PACKET_SAMPLES * i, second, ssrc=0xABCD), "10.0.0.2:16384")
        receiver.close_idle(time.monotonic() + 60)
    finally:
        receiver.socket.close()
    assert np.array_equal(streams["rtp-0000abcd"][0].ring.read(), np.tile(mulaw_decode(first), 250))
    assert receiver.counters()["rtp_wrong_sender_packets"] == 250
    assert receiver.counters()["rtp_late_packets"] == 0 and streams["rtp-0000abcd"][0].warning is None
    assert reports == [
        "rtp packet from 10.0.0.2:16384 skipped: its SSRC is that of call rtp-0000abcd from 10.0.0.1:16384 "
        "(an SSRC collision, or spoofing) (further ones are only counted)"
    ]


def test_a_third_party_that_knows_a_calls_ssrc_cannot_inject_audio_into_it():
    receiver, streams, reports = receiver_with_streams()
    victim, attacker = tone_payload(300), tone_payload(1000)
    try:
        for i in range(250):
            receiver.receive(rtp(10000 + i, 50000 + PACKET_SAMPLES * i, victim, ssrc=0xABCD), "10.0.0.1:16384")
            if i % 5 == 0:  # every 100 ms two consecutive packets: what a renumbered sender looks like
                for k in range(2):
                    receiver.receive(rtp(40000 + i + k, PACKET_SAMPLES * i, attacker, ssrc=0xABCD), "203.0.113.9:5555")
        receiver.close_idle(time.monotonic() + 60)
    finally:
        receiver.socket.close()
    assert np.array_equal(streams["rtp-0000abcd"][0].ring.read(), np.tile(mulaw_decode(victim), 250))
    counters = receiver.counters()
    assert (counters["rtp_resyncs"], counters["rtp_wrong_sender_packets"]) == (0, 100)
    assert len(reports) == 1 and "203.0.113.9:5555" in reports[0]


def test_with_rtp_allow_packets_from_other_addresses_are_dropped_unread_counted_and_each_sender_reported_once():
    """--rtp-allow: no token can guard UDP, so the monitor itself admits only the telephony hosts named."""
    receiver, streams, reports = receiver_with_streams(
        allowed_senders=(ipaddress.ip_network("10.0.5.0/24"), ipaddress.ip_network("2001:db8::/32")))
    payload = tone_payload(440)
    senders = {"10.0.5.7:4000": 1, "[::ffff:10.0.5.8]:4000": 2, "[2001:db8::1]:4000": 3,  # admitted (the second: dual stack)
               "203.0.113.9:5555": 4, "[2001:db9::1]:5555": 5, "10.0.6.1:4000": 6}
    try:
        for sequence in range(50):
            for sender, ssrc in senders.items():
                receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES, payload, ssrc=ssrc), sender)
        receiver.receive(b"not rtp", "203.0.113.9:5555")  # not read at all: not counted as a bad packet
        receiver.close_idle(time.monotonic() + 60)
    finally:
        receiver.socket.close()
    assert sorted(streams) == ["rtp-00000001", "rtp-00000002", "rtp-00000003"]
    assert all(np.array_equal(streams[name][0].ring.read(), np.tile(mulaw_decode(payload), 50)) for name in streams)
    counters = receiver.counters()
    assert (counters["rtp_not_allowed_packets"], counters["rtp_bad_packets"]) == (151, 0)
    assert reports == [f"rtp packet from {sender} skipped: its address is not in --rtp-allow (further ones are only counted)"
                       for sender in ("203.0.113.9", "[2001:db9::1]", "10.0.6.1")]


def test_senders_outside_rtp_allow_are_reported_by_host_and_cannot_use_up_the_reports_of_allowed_senders():
    """A flood from outside --rtp-allow (spoofed addresses, a PBX sending each call from its own port) gets a bounded
    number of lines, and the allowed senders' faults are still reported."""
    from ser_stream import rtp as rtp_module

    receiver, _, reports = receiver_with_streams(allowed_senders=(ipaddress.ip_network("10.0.5.0/24"),))
    payload = tone_payload(440)
    try:
        for port in range(4000, 4010):  # one blocked PBX, ten calls
            receiver.receive(rtp(0, 0, payload, ssrc=port), f"192.0.2.10:{port}")
        for index in range(rtp_module.REPORTS_TRACKED + 50):  # spoofed outsiders
            receiver.receive(rtp(0, 0, payload, ssrc=index), f"198.18.{index // 250}.{index % 250}:16384")
        receiver.receive(b"\x80\x00", "10.0.5.7:4000")  # an allowed phone sending a broken packet
    finally:
        receiver.socket.close()
    assert reports[0] == "rtp packet from 192.0.2.10 skipped: its address is not in --rtp-allow (further ones are only counted)"
    assert len(reports) == rtp_module.NOT_ALLOWED_HOSTS_TRACKED + 2  # and one line that says the rest are only counted
    assert reports[-2] == (f"rtp: {rtp_module.NOT_ALLOWED_HOSTS_TRACKED} hosts outside --rtp-allow named in the last 60 min, the most "
                           "it names in that time: further ones are counted (rtp_not_allowed_packets), not named, for the next 60 min")
    assert reports[-1] == ("rtp packet from 10.0.5.7:4000 skipped: 2-byte datagram is shorter than the 12-byte RTP header "
                           "(further ones are only counted)")
    assert receiver.counters()["rtp_not_allowed_packets"] == 10 + rtp_module.REPORTS_TRACKED + 50


@pytest.mark.parametrize(("written", "network"), [("::ffff:10.0.5.0/120", "10.0.5.0/24"), ("[::ffff:10.0.5.7]", "10.0.5.7/32"),
                                                  ("::ffff:0.0.0.0/96", "0.0.0.0/0"), ("2001:db8::/32", "2001:db8::/32")])
def test_an_ipv4_mapped_rtp_allow_network_is_taken_as_the_ipv4_network_it_carries(written, network):
    """A dual-stack socket's mapped senders are matched as IPv4: a network written mapped once matched nobody."""
    from ser_stream.cli import sender_network

    assert sender_network(written) == ipaddress.ip_network(network)
    receiver, streams, _ = receiver_with_streams(allowed_senders=(sender_network(written),))
    try:
        receiver.receive(rtp(0, 0, tone_payload(440), ssrc=1), "[::ffff:10.0.5.7]:4000")
        receiver.close_idle(time.monotonic() + 60)
    finally:
        receiver.socket.close()
    assert ("rtp-00000001" in streams) == (ipaddress.ip_address("10.0.5.7") in ipaddress.ip_network(network))


@pytest.mark.parametrize(("allowed", "heard"), [("127.0.0.0/8", True), ("10.0.0.0/8", False)])
def test_rtp_allow_is_applied_to_the_address_packets_come_from_on_the_socket(allowed, heard):
    receiver, streams, _ = receiver_with_streams(allowed_senders=(ipaddress.ip_network(allowed),))
    stop = threading.Event()
    thread = threading.Thread(target=receiver.run, args=(stop,))
    thread.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for sequence in range(20):
            sender.sendto(rtp(sequence, sequence * PACKET_SAMPLES, tone_payload(440), ssrc=7), ("127.0.0.1", receiver.port))
        deadline = time.monotonic() + 10
        while sum(receiver.counters().values()) + len(streams) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    stop.set()
    thread.join(5)
    assert ("rtp-00000007" in streams, receiver.counters()["rtp_not_allowed_packets"] > 0) == (heard, not heard)


def test_refused_calls_cannot_use_up_the_reports_of_senders_faults_and_a_full_budget_is_said_once(receiver_clock):
    """Each call refused a stream was named from the same thousand reports as senders' faults: a busy hour at
    --max-streams (one PBX, a thousand calls refused) used them up, and a gateway sending G.729 and a sender of 2-byte
    datagrams after it were named by no line for up to an hour, nor was the silence explained. Refused calls are named
    apart now, a bounded number an hour, and once that is reached one line says the rest are only counted, and how long."""
    from ser_stream import rtp as rtp_module
    from ser_stream.errors import StreamRefused

    def refuse(stream_id: str, sample_rate: int) -> Stream:
        raise StreamRefused(stream_id, "200 streams are open, the most this monitor takes (--max-streams)")

    reports: list[str] = []
    receiver = RtpReceiver(RtpConfig(port=0), refuse, reports.append)
    payload = tone_payload(440)
    try:
        for index in range(rtp_module.REPORTS_TRACKED + 1):  # a busy hour: every call of one PBX refused
            receiver.receive(rtp(1, 160, payload, ssrc=0x20000000 + index), "10.0.5.20:40000")
        busy_hour = list(reports)
        receiver.receive(rtp(1, 160, bytes(20), payload_type=18, ssrc=0x40000000), "10.0.5.99:5000")  # a G.729 gateway
        receiver.receive(b"\x80\x00", "10.0.5.98:5000")
        receiver_clock[0] += rtp_module.REPORT_MEMORY_SECONDS  # an hour on: refused calls are named again
        receiver.receive(rtp(1, 160, payload, ssrc=0x30000000), "10.0.5.20:40000")
    finally:
        receiver.socket.close()
    assert reports[len(busy_hour):] == [
        "rtp packet from 10.0.5.99:5000 skipped: payload type 18 is not G.711 at 8 kHz (0 μ-law or 8 A-law), "
        "comfort noise (13) or telephone events (RFC 4733) (further ones are only counted)",
        "rtp packet from 10.0.5.98:5000 skipped: 2-byte datagram is shorter than the 12-byte RTP header "
        "(further ones are only counted)",
        "rtp packet from 10.0.5.20:40000 skipped: call rtp-30000000 has no stream: 200 streams are open, the most this "
        "monitor takes (--max-streams) (further ones are only counted)",
    ]
    named = [line for line in busy_hour if "has no stream" in line]
    assert busy_hour == [*named, f"rtp: {len(named)} calls refused a stream named in the last 60 min, the most it names in that "
                                 "time: further ones are counted (refused_streams, rtp_refused_packets), not named, for the next 60 min"]
    assert named[0].startswith("rtp packet from 10.0.5.20:40000 skipped: call rtp-20000000 has no stream: ")
    assert 0 < len(named) < rtp_module.REPORTS_TRACKED and receiver.refused_packets == rtp_module.REPORTS_TRACKED + 2


def test_new_bad_senders_are_still_reported_once_the_first_thousand_are_remembered_no_longer(receiver_clock):
    """Reports are remembered for a while, at most REPORTS_TRACKED of them: a flood of spoofed senders is bounded,
    yet a sender that breaks later (a new phone, a new codec) is still told about. (On the test's clock: with 0.3 s of
    memory on the wall clock, a flood descheduled for 0.3 s forgot its first senders and named more of them.)"""
    from ser_stream import rtp as rtp_module

    receiver, _, reports = receiver_with_streams()
    try:
        for index in range(rtp_module.REPORTS_TRACKED + 50):
            receiver.receive(b"\x80\x00", f"10.1.{index // 250}.{index % 250}:16384")
        assert len(reports) == rtp_module.REPORTS_TRACKED + 1  # the flood's first ones; the rest only counted, which one line says
        assert reports[-1].startswith(f"rtp: {rtp_module.REPORTS_TRACKED} faults of senders named in the last ")
        receiver_clock[0] += rtp_module.REPORT_MEMORY_SECONDS
        receiver.receive(rtp(0, 0, b"\x00" * 160, payload_type=18), "192.0.2.67:9999")  # a G.729 phone, later
        receiver.receive(b"\x80\x00", "10.1.0.0:16384")  # the first broken sender, still broken
    finally:
        receiver.socket.close()
    assert reports[-2:] == [
        "rtp packet from 192.0.2.67:9999 skipped: payload type 18 is not G.711 at 8 kHz (0 μ-law or 8 A-law), "
        "comfort noise (13) or telephone events (RFC 4733) (further ones are only counted)",
        "rtp packet from 10.1.0.0:16384 skipped: 2-byte datagram is shorter than the 12-byte RTP header "
        "(further ones are only counted)",
    ]
    assert receiver.bad_packets == rtp_module.REPORTS_TRACKED + 52


def test_a_forward_jump_ending_in_comfort_noise_counts_as_lost_what_its_silence_holds():
    """As for audio: the silence before a comfort-noise packet (at most 1 s) holds 50 packets of 20 ms, not 2000."""
    packets = tone_packets(20)
    comfort_noise = RtpPacket(13, 2020, 2020 * PACKET_SAMPLES, 7, b"\x40")
    jitter = JitterBuffer(3)
    audio = played(jitter, [*packets, comfort_noise])
    assert audio.size == 20 * PACKET_SAMPLES + 8000 and (jitter.lost, jitter.late) == (50, 0)


def test_an_ipv6_rtp_port_already_taken_is_named_with_its_address_in_brackets():
    """'rtp:::1:5004: cannot listen' read as no address at all, unlike every other message."""
    from ser_stream.errors import SerStreamError

    with taken_ipv6_loopback_port(socket.SOCK_DGRAM) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(SerStreamError, match=rf"^rtp:\[::1\]:{port}: cannot listen \(.+\)$"):
            RtpReceiver(RtpConfig(host="::1", port=port), lambda stream_id, rate: None, [].append)  # type: ignore[arg-type,return-value]


def test_a_sender_of_bad_datagrams_of_every_length_padding_and_payload_type_is_told_once_per_kind_and_uses_up_no_reports():
    """A broken sender (an SRTP tag read as padding, a codec that is not G.711, truncated datagrams) was told about
    every datagram whose length, padding or payload type was new, each report keyed by its numbers: 170 lines a
    sender, and six such senders used up the thousand reports, after which an SSRC collision was counted unsaid."""
    from ser_stream import rtp as rtp_module

    def every_kind_with_every_number() -> list[bytes]:
        padded = [bytes([0xA0]) + rtp(1, 160, bytes(159))[1:] + bytes([padding]) for padding in range(161, 256)]
        other_codecs = [rtp(1, 160, bytes(160), payload_type=payload_type)
                        for payload_type in [*range(1, 8), *range(9, 13), *range(14, 35), *range(96, 128)]]
        return [bytes(range(length)) for length in range(1, 12)] + padded + other_codecs + [bytes([version << 6]) + bytes(171) for version in (0, 1, 3)]

    receiver, _, reports = receiver_with_streams()
    senders = [f"10.0.0.{host}:4000" for host in range(1, 7)]
    try:
        for sender in senders:
            for datagram in every_kind_with_every_number():
                receiver.receive(datagram, sender)
        receiver.receive(rtp(1, 160, tone_payload(440), ssrc=0x99), "10.0.1.1:5000")
        receiver.receive(rtp(1, 160, tone_payload(440), ssrc=0x99), "10.0.1.2:5000")  # a collision, after all that
    finally:
        receiver.socket.close()
    assert receiver.bad_packets == len(senders) * len(every_kind_with_every_number())
    first_of_each_kind = [
        "1-byte datagram is shorter than the 12-byte RTP header",
        "padding of 161 bytes does not fit the datagram",
        "payload type 1 is not G.711 at 8 kHz (0 μ-law or 8 A-law), comfort noise (13) or telephone events (RFC 4733)",
        "RTP version 0, expected 2",
    ]
    assert reports[:-1] == [f"rtp packet from {sender} skipped: {reason} (further ones are only counted)"
                            for sender in senders for reason in first_of_each_kind]
    assert len(reports) - 1 < rtp_module.REPORTS_TRACKED
    assert reports[-1].startswith("rtp packet from 10.0.1.2:5000 skipped: its SSRC is that of call rtp-00000099")


def test_a_call_whose_packets_hold_more_samples_than_their_timestamps_advance_is_said_early_and_in_its_warning():
    """An SRTP call tapped as G.711 (an encrypted payload and a 10-byte tag: 170 bytes a 160-sample step) gave no
    utterance and no word of why; its 170 samples a packet were played whole, the call 6 % longer, unsaid."""
    rng = np.random.default_rng(0)
    receiver, streams, reports = receiver_with_streams()
    try:
        for sequence in range(400):  # 8 s
            receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES, rng.bytes(170), ssrc=0x5EC), "127.0.0.1:4000")
            if sequence == 150:  # 3 s of packets: said by now, while the call goes on
                assert len(reports) == 1 and reports[0].startswith("call rtp-000005ec from 127.0.0.1:4000: its packets hold more samples")
        receiver.close_idle(time.monotonic() + 60)
    finally:
        receiver.socket.close()
    (stream,) = streams["rtp-000005ec"]
    assert len(reports) == 1 and "(170 where 160, at 94 of 95 packets): maybe SRTP (encrypted" in reports[0]
    assert reports[0].endswith("(later times are late by that much); its stream's end warning gives the call's totals")
    assert stream.warning == (
        "rtp-000005ec: its packets hold more samples than their timestamps advance (170 where 160, at 399 of 400 packets): "
        "maybe SRTP (encrypted: its authentication tag read as audio), another codec than G.711, or a sender's clock "
        "running slow; each packet is played whole, 0.50 s more than the sender's clock (later times are late by that much)"
    )
    assert stream.ring.read().size == 400 * 170 and set(receiver.counters().values()) == {0}  # played whole, nothing dropped


def ordinary_calls() -> dict[str, list[RtpPacket]]:
    """Calls whose packets hold what their timestamps advance, with what telephony puts between them."""
    voice = tone_packets(450)

    def renumbered(packets: list[RtpPacket], sequence: int = 0, timestamp: int = 0, payload_type: int = 0) -> list[RtpPacket]:
        return [RtpPacket(payload_type, (sequence + i) & 0xFFFF, (timestamp + p.timestamp) & 0xFFFFFFFF, p.ssrc, p.payload)
                for i, p in enumerate(packets)]

    def of_length(samples: int) -> list[RtpPacket]:
        codes = b"".join(p.payload for p in voice)
        return [RtpPacket(8, i, i * samples, 7, codes[i * samples : (i + 1) * samples]) for i in range(len(codes) // samples)]

    comfort_noise = RtpPacket(13, 150, 150 * PACKET_SAMPLES, 7, b"\x40")
    key = [RtpPacket(101, 150 + i, 150 * PACKET_SAMPLES, 7, bytes([5, 0x8A if i > 8 else 0x0A, 0, 20 * (i + 1)])) for i in range(11)]
    one_lost, swapped = voice[:200] + voice[201:], voice[:100] + [voice[101], voice[100]] + voice[102:]
    return {
        "10 ms packets": of_length(80), "30 ms packets": of_length(240), "20 ms packets, a loss and a swap": one_lost, "swapped": swapped,
        "comfort noise, then silence suppressed": voice[:150] + [comfort_noise] + renumbered(voice[150:300], 151, 4000)
        + renumbered(voice[300:], 301, 12000),
        "a key held": voice[:150] + key + renumbered(voice[150:], 161, 11 * PACKET_SAMPLES),
        "a restarted numbering": voice[:150] + renumbered(voice[150:], 40000),
        "a restarted numbering and clock": voice[:150] + renumbered(voice[150:], 40000, 0x7000_0000),
        "a clock set back once": voice[:150] + renumbered(voice[150:], 150, -20),
        "a clock running fast": [RtpPacket(0, p.sequence, 163 * p.sequence, 7, p.payload) for p in voice],
        "a 16 kHz clock": [RtpPacket(0, p.sequence, 2 * p.timestamp, 7, p.payload) for p in voice],
        **jittered_calls(),
    }


def jittered_calls() -> dict[str, list[RtpPacket]]:
    """Calls whose senders stamp each packet a few samples early or late (from a wall clock), their steps adding up to
    their audio: every other packet steps back, yet the clock is exact."""
    voice = tone_packets(250)
    spread = np.random.default_rng(1).integers(-2, 3, len(voice))

    def stamped(offsets) -> list[RtpPacket]:
        return [RtpPacket(0, p.sequence, (p.timestamp + int(offset)) & 0xFFFFFFFF, 7, p.payload) for p, offset in zip(voice, offsets)]

    spread_out = stamped(spread)
    return {
        "timestamps 3 samples late at every other packet": stamped(3 * (np.arange(len(voice)) % 2)),
        "timestamps off by -2 to 2 samples": spread_out,
        "timestamps off by -2 to 2 samples, a swap and a loss": spread_out[:99] + [spread_out[100], spread_out[99]]
        + spread_out[101:120] + spread_out[121:],
    }


@pytest.mark.parametrize("call", list(ordinary_calls()))
def test_ordinary_calls_are_not_said_to_hold_more_samples_than_their_timestamps_advance(call):
    receiver, streams, reports = receiver_with_streams()
    try:
        for packet in ordinary_calls()[call]:
            receiver.receive(rtp(packet.sequence, packet.timestamp, packet.payload, packet.payload_type, ssrc=7), "127.0.0.1:4000")
        receiver.close_idle(time.monotonic() + 60)
    finally:
        receiver.socket.close()
    (stream,) = streams["rtp-00000007"]
    assert reports == [] and "more samples than their timestamps" not in (stream.warning or "")


@pytest.mark.parametrize("call", list(jittered_calls()))
def test_timestamps_a_few_samples_early_or_late_say_nothing_of_the_senders_clock(call):
    """Steps of 157 and 163 for 160-sample packets once counted every step back as a packet longer than its step: a
    plain G.711 call was said to be maybe SRTP 2 s in, and at its end its clock was said to run both fast and slow."""
    receiver, streams, reports = receiver_with_streams()
    try:
        for packet in jittered_calls()[call]:
            receiver.receive(rtp(packet.sequence, packet.timestamp, packet.payload, ssrc=7), "127.0.0.1:4000")
        receiver.close_idle(time.monotonic() + 60)
    finally:
        receiver.socket.close()
    (stream,) = streams["rtp-00000007"]
    assert reports == []
    assert stream.warning is None or stream.warning.startswith("rtp-00000007: 1 packet(s) lost (played as silence)")
    assert "clock" not in (stream.warning or "") and "SRTP" not in (stream.warning or "")


def test_a_steady_clock_mismatch_under_jittered_timestamps_is_said_one_way():
    """Judged over the call: SRTP's 4-byte tag (164 samples a 160-sample step) stamped ±2 samples is said to hold more
    than its timestamps advance and not also to run fast; a clock 2 % fast stamped so is said to run fast only."""
    spread = np.random.default_rng(2).integers(-2, 3, 300)
    rng = np.random.default_rng(3)
    tagged, tagged_reports = [], []
    for step, payload_bytes in ((160, 164), (163, 160)):
        receiver, streams, reports = receiver_with_streams()
        try:
            for sequence in range(300):
                timestamp = (step * sequence + int(spread[sequence])) & 0xFFFFFFFF
                receiver.receive(rtp(sequence, timestamp, rng.bytes(payload_bytes), ssrc=7), "127.0.0.1:4000")
            receiver.close_idle(time.monotonic() + 60)
        finally:
            receiver.socket.close()
        (stream,) = streams["rtp-00000007"]
        tagged.append(stream.warning or "")
        tagged_reports.append(reports)
    slow, fast = tagged
    assert "its packets hold more samples than their timestamps advance (164 where 160, at " in slow
    assert "runs fast" not in slow and len(tagged_reports[0]) == 1 and "maybe SRTP" in tagged_reports[0][0]
    assert "the sender's clock runs fast" in fast and "0.11 s in all" in fast
    assert "more samples than their timestamps" not in fast and tagged_reports[1] == []


@pytest.mark.parametrize(
    ("datagram", "payload"),
    [
        (rtp(1, 0, b""), b""),  # the header alone: a keepalive some gateways send
        (rtp(1, 0, b"", extension_words=0), b""),  # an empty header extension and nothing after it
        (rtp(1, 0, b"\xd5" * 160, csrc=15, extension_words=1), b"\xd5" * 160),  # a mixer's 15 contributing sources
        (rtp(1, 0, b"", padding=4), b""),  # padding that is all there is after the header
    ],
    ids=["header-only", "empty-extension", "fifteen-csrcs", "all-padding"],
)
def test_a_packet_whose_payload_is_empty_or_follows_the_longest_header_is_read_whole(datagram, payload):
    """A datagram exactly as long as its header is a packet with no payload, not a short or broken one."""
    assert parse_packet(datagram).payload == payload


@pytest.mark.parametrize(
    ("payload_type", "payload", "is_event"),
    [
        (96, bytes([5, 0x0A, 0, 160]), True),  # the first dynamic payload type
        (127, bytes([5, 0x0A, 0, 160]), True),  # the last
        (101, bytes([5, 0x0A, 0, 160]) * 16, True),  # 16 events, the most a packet is taken to hold
        (101, bytes([5, 0x0A, 0, 160]) * 17, False),  # longer: another codec on a dynamic type
        (101, bytes([5, 0x0A, 0, 160, 0, 0]), False),  # not whole events
        (101, b"", False),
        (95, bytes([5, 0x0A, 0, 160]), False),  # a static payload type
    ],
)
def test_a_telephone_event_is_whole_four_byte_events_on_a_dynamic_payload_type(payload_type, payload, is_event):
    datagram = rtp(1, 0, payload, payload_type=payload_type)
    if is_event:
        assert parse_packet(datagram).event_end == 160  # its timestamp (0) and its last event's duration
    else:
        with pytest.raises(RtpError, match=f"payload type {payload_type} is not G.711"):
            parse_packet(datagram)


def test_a_packet_of_several_events_reaches_as_far_as_its_last_event_holds():
    """RFC 4733: a packet may carry an earlier event's end before the current event; the current one's
    duration is the time the key hold has reached."""
    packet = parse_packet(rtp(1, 8000, bytes([5, 0x8A, 0, 160]) + bytes([6, 0x0A, 0x03, 0x20]), payload_type=101))
    assert packet.event_end == 8000 + 800


def test_rtcp_is_packet_types_192_to_223_and_nothing_else():
    """RFC 5761 §4: RTP payload types 64–95 (marker bit set: 192–223 in the second byte) are kept for RTCP."""
    rtcp = [second for second in range(256) if is_rtcp(bytes([0x80, second]) + bytes(6))]
    assert rtcp == list(range(192, 224))
    assert not is_rtcp(bytes([0x80])) and not is_rtcp(bytes([0x40, 200]) + bytes(6))  # too short; version 1


def test_a_restart_whose_first_packet_arrives_twice_is_followed_from_that_packet():
    """A copy of the held first packet of a new numbering keeps it held: its next packet still confirms the restart.
    Taken for a second stray, the copy dropped the first packet as late and the restart began one packet on."""
    packets = restarted(50, 50, 1000, 40000, None)
    jitter = JitterBuffer(5)
    audio = played(jitter, packets[:51] + [packets[50]] + packets[51:])
    assert np.array_equal(audio, mulaw_decode(b"".join(p.payload for p in packets)))
    assert (jitter.resyncs, jitter.lost, jitter.late, jitter.duplicates) == (1, 0, 0, 1)


def test_a_restart_whose_first_packet_is_overtaken_by_the_old_numbering_and_sent_again_is_followed_from_that_packet():
    """The new numbering's first packet, overtaken by the old one's last two (a relay failing over), is counted late as
    a lone stray; a copy of it that comes next still starts the restart. Taken for a duplicate and not held, the copy
    was dropped and the restart began one packet on: 20 ms of the call lost."""
    packets = restarted(50, 50, 1000, 40000, None)
    jitter = JitterBuffer(5)
    audio = played(jitter, packets[:48] + [packets[50], packets[48], packets[49]] + packets[50:])
    assert np.array_equal(audio, mulaw_decode(b"".join(p.payload for p in packets)))
    assert (jitter.resyncs, jitter.lost) == (1, 0)


@pytest.mark.parametrize("jitter_packets", [0, 1])
def test_with_a_jitter_window_of_one_packet_or_none_each_packet_plays_as_it_arrives(jitter_packets):
    packets = tone_packets(3)
    jitter = JitterBuffer(jitter_packets)
    for packet in packets:
        assert np.array_equal(np.concatenate(jitter.push(packet)), mulaw_decode(packet.payload))


def test_the_audio_a_packet_holds_is_a_sample_a_byte_of_g711_and_none_of_comfort_noise_or_an_event():
    """What a resumed call's dropped packets held, in its warning's seconds of audio."""
    assert audio_samples(parse_packet(rtp(1, 0, b"\xff" * 160))) == 160
    assert audio_samples(parse_packet(rtp(1, 0, b"\xd5" * 80, payload_type=8))) == 80
    assert audio_samples(parse_packet(rtp(1, 0, b"\x40" * 11, payload_type=13))) == 0
    assert audio_samples(parse_packet(rtp(1, 0, bytes([5, 0x0A, 0, 160]), payload_type=101))) == 0


def test_a_restart_to_the_last_sequence_number_is_followed_across_the_wrap():
    packets = restarted(50, 50, 1000, 0xFFFF, None)  # the new numbering goes 65535, 0, 1, …
    jitter = JitterBuffer(5)
    audio = played(jitter, packets)
    assert np.array_equal(audio, mulaw_decode(b"".join(p.payload for p in packets)))
    assert (jitter.resyncs, jitter.lost, jitter.late) == (1, 0, 0)


@pytest.mark.parametrize("depth", [1, 5])
@pytest.mark.parametrize(("ahead", "resyncs", "lost"), [(MAX_DROPOUT - 1, 0, 1), (MAX_DROPOUT, 1, 0)])
def test_numbers_less_than_3000_ahead_of_the_highest_are_a_gap_and_further_ahead_a_restart(depth, ahead, resyncs, lost):
    """RFC 3550 appendix A.1's MAX_DROPOUT, counted from the highest number received (the last played, none waiting)."""
    packets = tone_packets(40)
    leapt = [RtpPacket(p.payload_type, (p.sequence + ahead - 1) & 0xFFFF, p.timestamp, p.ssrc, p.payload) for p in packets[20:]]
    jitter = JitterBuffer(depth)
    audio = played(jitter, packets[:20] + leapt)
    assert np.array_equal(audio, mulaw_decode(b"".join(p.payload for p in packets)))  # timestamps run on: no silence
    assert (jitter.resyncs, jitter.lost, jitter.late) == (resyncs, lost, 0)


@pytest.mark.parametrize(("behind", "duplicates", "late"), [(MAX_MISORDER, 1, 0), (MAX_MISORDER + 1, 0, 1)])
def test_a_copy_of_a_packet_up_to_100_numbers_behind_is_a_duplicate_and_further_behind_a_stray(behind, duplicates, late):
    """RFC 3550 appendix A.1's MAX_MISORDER, counted back from the next number to play."""
    packets = tone_packets(200)
    jitter = JitterBuffer(5)
    audio = [block for packet in packets[:150] for block in jitter.push(packet)]
    assert jitter.next_sequence is not None
    audio += jitter.push(packets[jitter.next_sequence - behind])
    audio += [block for packet in packets[150:] for block in jitter.push(packet)] + jitter.flush()
    assert np.array_equal(np.concatenate(audio), mulaw_decode(b"".join(p.payload for p in packets)))
    assert (jitter.duplicates, jitter.late, jitter.lost) == (duplicates, late, 0)


def test_a_packet_before_a_short_pause_numbered_within_the_jitter_window_of_the_first_starts_the_call():
    """Within the jitter window an older packet is the call's when its timestamp is no further behind than its numbers
    and the window's delay put it (one sent before a pause of 40 ms): the call starts with it, its pause played as
    silence and the numbers between counted lost. Seconds behind, it is a stray (the test above)."""
    packets = tone_packets(50)
    first = packets[0]
    before_pause = RtpPacket(first.payload_type, (first.sequence - 5) & 0xFFFF, (first.timestamp - 7 * PACKET_SAMPLES) & 0xFFFFFFFF,
                             first.ssrc, bytes(reversed(first.payload)))
    jitter = JitterBuffer(5)
    audio = played(jitter, [first, before_pause, *packets[1:]])
    assert np.array_equal(audio[:PACKET_SAMPLES], mulaw_decode(before_pause.payload))
    assert np.array_equal(audio[-50 * PACKET_SAMPLES:], mulaw_decode(b"".join(p.payload for p in packets)))
    assert audio.size == 51 * PACKET_SAMPLES + 6 * PACKET_SAMPLES and (jitter.late, jitter.lost) == (0, 4)


def test_a_pause_played_as_silence_on_a_16_khz_clock_keeps_the_calls_length():
    """The silence played while a re-clocked sender sends nothing is its clock's time too: its next packet, stamped
    half a second on at 16 kHz, follows that silence with none added."""
    packets = tone_packets(100)
    pause = 4000
    sent = [RtpPacket(p.payload_type, p.sequence, 2 * (p.timestamp + (pause if index >= 50 else 0)), p.ssrc, p.payload)
            for index, p in enumerate(packets)]
    jitter = JitterBuffer(5)
    blocks = [block for packet in sent[:50] for block in jitter.push(packet)] + jitter.fill(pause)
    blocks += [block for packet in sent[50:] for block in jitter.push(packet)] + jitter.flush()
    audio = np.concatenate(blocks)
    assert jitter.clock_ratio == 2 and audio.size == 100 * PACKET_SAMPLES + pause
    assert np.array_equal(audio[-50 * PACKET_SAMPLES:], mulaw_decode(b"".join(p.payload for p in packets[50:])))


def test_a_call_starts_once_the_jitter_window_of_packets_waits_and_a_missing_one_is_given_up_then_too():
    """The module's promise: playing starts, and a missing packet is declared lost, once ``jitter_packets`` wait."""
    packets = tone_packets(10)
    jitter = JitterBuffer(3)
    assert jitter.push(packets[0]) == [] and jitter.push(packets[1]) == []
    assert np.array_equal(np.concatenate(jitter.push(packets[2])), mulaw_decode(b"".join(p.payload for p in packets[:3])))
    assert jitter.push(packets[4]) == [] and jitter.push(packets[5]) == []  # packet 3 is missing, two wait
    audio = np.concatenate(jitter.push(packets[6]))
    assert audio.size == 4 * PACKET_SAMPLES and not audio[:PACKET_SAMPLES].any() and jitter.lost == 1


def test_only_the_silence_that_delayed_packets_time_says_was_a_delay_counts_as_a_stall():
    """Half a second played as silence while nothing came, then packets stamped 0.2 s after the last (a real pause
    of 0.2 s, then 0.3 s of delay): 0.3 s of the silence was a stall, later times late by that much."""
    packets = tone_packets(100)
    sent = [RtpPacket(p.payload_type, p.sequence, p.timestamp + (1600 if index >= 50 else 0), p.ssrc, p.payload)
            for index, p in enumerate(packets)]
    jitter = JitterBuffer(5)
    blocks = [block for packet in sent[:50] for block in jitter.push(packet)] + jitter.fill(4000)
    blocks += [block for packet in sent[50:] for block in jitter.push(packet)] + jitter.flush()
    assert jitter.stalled_samples == 2400 and np.concatenate(blocks).size == 100 * PACKET_SAMPLES + 4000


def test_two_packets_lost_from_a_sender_stamping_a_few_samples_early_count_two():
    """Packets lost are counted by the silence played for them rounded up to whole packets: 317 samples of silence
    for two 160-sample packets (the one after them stamped 3 samples early) are two, not one."""
    packets = tone_packets(20)
    early = RtpPacket(packets[12].payload_type, packets[12].sequence, packets[12].timestamp - 3, packets[12].ssrc, packets[12].payload)
    jitter = JitterBuffer(5)
    audio = played(jitter, packets[:10] + [early] + packets[13:])
    assert jitter.lost == 2 and audio.size == 20 * PACKET_SAMPLES - 3


def test_each_pause_of_a_call_that_sends_nothing_is_played_as_silence_as_it_passes():
    """The silence played for one pause is part of that pause only: the next pause was played 0.5 s short."""
    receiver, streams, _ = receiver_with_streams()
    packets = tone_packets(100)
    try:
        for pause, start in enumerate((0, 50)):
            for packet in packets[start:start + 50]:  # each half stamped after the pauses before it
                receiver.receive(rtp(packet.sequence, packet.timestamp + pause * 4000, packet.payload), "127.0.0.1:4000")
            receiver.close_idle(receiver.calls[0x1234ABCD].kept_packet + FILL_AFTER_SECONDS + 0.5)  # 0.5 s of it
        (stream,) = streams["rtp-1234abcd"]
        assert stream.ring.read().size == 100 * PACKET_SAMPLES + 2 * 4000
    finally:
        receiver.socket.close()


@pytest.mark.parametrize(("count", "ratio", "jitter_packets"), [(1, 1, 5), (4, 1, 5), (3, 2, 5), (3, 1, 50), (1, 2, 5)],
                         ids=["one-packet", "four-packets", "three-at-16khz", "three-in-a-one-second-window", "one-at-16khz"])
def test_a_call_that_sends_a_few_packets_and_pauses_is_heard_by_the_time_its_pause_begins_and_its_pause_played_as_silence(
        receiver_clock, count, ratio, jitter_packets):
    """A word of one to four packets, then silence suppression: the packets waited in the jitter window for a fifth
    that did not come, so nothing was heard and no silence played until speech resumed (2 s on), and then the pause
    was cut to 1 s, every later time 1 s early. A call of many packets plays its pause as it passes; so does this one,
    at its sender's clock (16 kHz: its first pairs of packets say so before the clock is learnt). Its packets are heard
once the jitter window's packets would have come, but no sooner than a missing packet is given up mid-call (0.25 s
after its first), or once the pause begins to be played, if that is sooner."""
    clock = receiver_clock
    receiver, streams, _ = receiver_with_streams(idle_seconds=10.0, jitter_packets=jitter_packets)
    payload = tone_payload(440)
    try:
        first_arrival = clock[0]
        for sequence in range(count):
            receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES * ratio, payload, ssrc=9), "127.0.0.1:4000")
            clock[0] += 0.02
        (stream,), last_arrival = streams["rtp-00000009"], receiver.calls[9].kept_packet
        # the time the window's packets take to come, at least FILL_AFTER_SECONDS (or the pause's first silence),
        # and a millisecond
        clock[0] = min(first_arrival + max(jitter_packets * 0.02, FILL_AFTER_SECONDS), last_arrival + FILL_AFTER_SECONDS) + 0.001
        receiver.close_idle(clock[0])
        assert stream.ring.available() >= count * PACKET_SAMPLES  # heard, no later than a call's first ones are
        while clock[0] < last_arrival + 1.0:
            clock[0] += 0.1
            receiver.close_idle(clock[0])
        pause_so_far = round((clock[0] - last_arrival - FILL_AFTER_SECONDS) * 8000)
        assert stream.ring.available() == count * PACKET_SAMPLES + pause_so_far  # the pause passes as it happens
        while clock[0] < last_arrival + 2.0:
            clock[0] += 0.1
            receiver.close_idle(clock[0])
        resumed = count * PACKET_SAMPLES + 2 * 8000  # speech again, stamped 2 s after the word's end
        for index in range(50):
            receiver.receive(rtp(count + index, (resumed + index * PACKET_SAMPLES) * ratio, payload, ssrc=9), "127.0.0.1:4000")
        receiver.close_idle(clock[0] + 60)
    finally:
        receiver.socket.close()
    assert stream.ring.read().size == (count + 50) * PACKET_SAMPLES + 2 * 8000  # the call's own length
    assert (receiver.counters()["rtp_lost_packets"], receiver.counters()["rtp_late_packets"]) == (0, 0)


@pytest.mark.parametrize(("words", "jitter_packets"), [([0, 1, 2], 5), ([0, 1, 2], 50), ([0, 1, 2], 2), ([0, 2, 3], 5)],
                         ids=["one-packet-words", "in-a-one-second-window", "in-a-two-packet-window", "a-packet-lost-before-the-second"])
def test_words_of_one_packet_each_are_heard_once_their_pause_begins_and_the_pauses_played_as_they_pass(
        receiver_clock, words, jitter_packets):
    """An 8 kHz call of one-packet words a second apart (silence suppression): the first plays once its pause's
    silence begins, before any step between packets could say its clock, and the packets after it wait as its first
    did, for the jitter window's worth or its pause's silence. That silence was judged by the silence played before
    the packet came, which it had not yet played: the second word waited, and no silence was played for its pause,
    until the call ended or more packets came (r20 second review). So does a mid-call packet after a lost one."""
    clock = receiver_clock
    receiver, streams, _ = receiver_with_streams(idle_seconds=10.0, jitter_packets=jitter_packets)
    payload = tone_payload(440)
    try:
        start = clock[0]
        for word, sequence in enumerate(words):
            clock[0] = start + word
            receiver.receive(rtp(sequence, word * 8000, payload, ssrc=9), "127.0.0.1:4000")
            (stream,) = streams["rtp-00000009"]
            while clock[0] < start + word + 0.95:  # the receiver's checks, every 0.1 s
                clock[0] += 0.1
                receiver.close_idle(clock[0])
            # the word, and its pause as it passes: the call's time so far, from 0.25 s after the word
            assert stream.ring.available() == word * 8000 + PACKET_SAMPLES + round((clock[0] - start - word - FILL_AFTER_SECONDS) * 8000)
        receiver.close_idle(clock[0] + 60)
    finally:
        receiver.socket.close()
    assert stream.ring.read().size == 2 * 8000 + PACKET_SAMPLES + round((clock[0] - start - 2 - FILL_AFTER_SECONDS) * 8000)
    assert (receiver.counters()["rtp_lost_packets"], receiver.counters()["rtp_late_packets"]) == (words[-1] - 2, 0)


@pytest.mark.parametrize("before", [0, 50], ids=["at-the-calls-start", "mid-call"])
def test_a_packet_overtaken_by_the_next_and_arriving_in_a_burst_200_ms_later_plays_at_a_calls_start_as_mid_call(
        receiver_clock, before):
    """The packet after it comes alone, the rest 200 ms later in a burst (a network holding up a call's first
    packets, Wi-Fi waking): mid-call a missing packet is waited for until its pause's silence would begin (0.25 s),
    and so it is at the call's start. The few-packet start played the packet after it alone 100 ms after it came,
    so the call's first packet was dropped as late and the call began with its second (r20 review)."""
    clock = receiver_clock
    receiver, streams, _ = receiver_with_streams(idle_seconds=10.0)
    payloads = [tone_payload(300 + 10 * sequence) for sequence in range(before + 20)]

    def send_packet(sequence: int) -> None:
        receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES, payloads[sequence], ssrc=9), "127.0.0.1:4000")

    try:
        for sequence in range(before):
            send_packet(sequence)
            clock[0] += 0.02
        send_packet(before + 1)  # overtakes packet ``before``
        for _ in range(2):  # the receiver's checks, every 0.1 s, while the rest are held up
            clock[0] += 0.1
            receiver.close_idle(clock[0])
        clock[0] += 0.02
        for sequence in [before, *range(before + 2, before + 20)]:  # the burst
            send_packet(sequence)
        receiver.close_idle(clock[0] + 60)
    finally:
        receiver.socket.close()
    (stream,) = streams["rtp-00000009"]
    assert np.array_equal(stream.ring.read(), mulaw_decode(b"".join(payloads)))  # every packet, in order, no silence
    assert (receiver.counters()["rtp_lost_packets"], receiver.counters()["rtp_late_packets"]) == (0, 0)


@pytest.mark.parametrize(("ratio", "jitter_packets", "burst"),
                         [(6, 50, [9, 2, 14, 5, 1, 11, 7, 3, 15, 12, 4, 8, 13, 6, 10]), (6, 5, list(range(1, 16))),
                          (2, 5, list(range(1, 16)))],
                         ids=["48khz-reordered-in-a-one-second-window", "48khz-in-order", "16khz-in-order"])
def test_a_16_or_48_khz_call_that_began_to_play_on_one_packet_takes_its_clock_from_the_packets_after_it(
        receiver_clock, ratio, jitter_packets, burst):
    """A gateway stamping 16 or 48 kHz: the call's first packet comes alone and the next 15 are held up 0.3 s, then
    come in a burst. The first packet plays once its pause's silence begins (0.25 s), before any step between
    packets could say the clock; the burst's packets wait as a call's first ones do, and say it. Each played as soon
    as its turn came, the clock learnt only from four steps in the order they came, so its first ones played as
    skips and the silence played for the hold-up was counted at 8 kHz: 0.85 s of the call played as 0.89 s (16 kHz),
    1.1 s (48 kHz), or, its burst reordered in a one-second window, 2.7 s (r20 review)."""
    clock = receiver_clock
    receiver, streams, _ = receiver_with_streams(idle_seconds=10.0, jitter_packets=jitter_packets)
    payloads = [tone_payload(300 + 10 * sequence) for sequence in range(40)]

    def send_packet(sequence: int) -> None:
        receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES * ratio, payloads[sequence], ssrc=9), "127.0.0.1:4000")

    try:
        send_packet(0)
        for _ in range(3):  # the receiver's checks, every 0.1 s: the last plays packet 0 and 50 ms of silence
            clock[0] += 0.1
            receiver.close_idle(clock[0])
        for sequence in [*burst, *range(16, 40)]:
            send_packet(sequence)
        receiver.close_idle(clock[0] + 60)
    finally:
        receiver.socket.close()
    (stream,) = streams["rtp-00000009"]
    stall = round((0.3 - FILL_AFTER_SECONDS) * 8000)
    audio = stream.ring.read()
    assert audio.size == 40 * PACKET_SAMPLES + stall  # the call's audio and the silence played while it was held up
    assert np.array_equal(audio[PACKET_SAMPLES + stall:], mulaw_decode(b"".join(payloads[1:])))  # back to back
    assert (receiver.counters()["rtp_lost_packets"], receiver.counters()["rtp_late_packets"]) == (0, 0)
    assert stream.warning is not None and "0.05 s of silence were played while packets were delayed" in stream.warning


@pytest.mark.parametrize("ratio", [2, 6], ids=["16khz", "48khz"])
def test_a_16_or_48_khz_word_with_a_packet_lost_plays_its_pause_at_its_length(receiver_clock, ratio):
    """A word of four packets, its second lost, then a 2 s pause: the three that came step by their numbers' worth
    of packets at the sender's clock, across the loss too, which says the clock as the word plays. Read only between
    consecutive numbers, one step said nothing, and its steps were taken for skips: 60 ms (16 kHz) or 300 ms (48 kHz)
    of silence among its packets (r20 review)."""
    clock = receiver_clock
    receiver, streams, _ = receiver_with_streams(idle_seconds=10.0)
    payload = tone_payload(440)
    try:
        for sequence in (0, 2, 3):
            receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES * ratio, payload, ssrc=9), "127.0.0.1:4000")
            clock[0] += 0.02
        while clock[0] < receiver.calls[9].kept_packet + 2.0:  # the pause, as the receiver checks every 0.1 s
            clock[0] += 0.1
            receiver.close_idle(clock[0])
        resumed = 4 * PACKET_SAMPLES + 2 * 8000  # speech again, stamped 2 s after the word's end
        for index in range(50):
            receiver.receive(rtp(4 + index, (resumed + index * PACKET_SAMPLES) * ratio, payload, ssrc=9), "127.0.0.1:4000")
        receiver.close_idle(clock[0] + 60)
    finally:
        receiver.socket.close()
    (stream,) = streams["rtp-00000009"]
    assert stream.ring.read().size == 54 * PACKET_SAMPLES + 2 * 8000  # the call's own length, its lost packet silence
    assert (receiver.counters()["rtp_lost_packets"], receiver.counters()["rtp_late_packets"]) == (1, 0)


def speech_again_to_the_end(receiver: RtpReceiver, clock: list[float], at: float, sequence: int, stamp: int, count: int, ratio: int) -> None:
    """``count`` packets of tone to rtp-00000009, 20 ms apart from ``at``, numbered from ``sequence`` and stamped from
    ``stamp`` at the sender's clock (``ratio`` times 8 kHz), the receiver checking its calls every 0.1 s (10 ms after a
    packet); then the call's end."""
    payload = tone_payload(440)
    for index in range(count):
        clock[0] = at + index * 0.02
        receiver.receive(rtp(sequence + index, stamp + index * PACKET_SAMPLES * ratio, payload, ssrc=9), "127.0.0.1:4000")
        if index % 5 == 0:
            receiver.close_idle(clock[0] + 0.01)
    receiver.close_idle(clock[0] + 60)


def length_with_nothing_counted(receiver: RtpReceiver, streams: dict[str, list[Stream]]) -> int:
    """The samples rtp-00000009's one stream played, no packet of it counted lost or late."""
    (stream,) = streams["rtp-00000009"]
    assert (receiver.counters()["rtp_lost_packets"], receiver.counters()["rtp_late_packets"]) == (0, 0)
    return stream.ring.read().size


@pytest.mark.parametrize("ratio", [2, 6], ids=["16khz", "48khz"])
@pytest.mark.parametrize(("word", "jitter_packets"), [(1, 8), (2, 8), (3, 8), (1, 3)],
                         ids=["one-packet-word", "two-packet-word", "three-packet-word", "one-packet-word-in-a-three-packet-window"])
def test_a_16_or_48_khz_word_whose_next_packets_come_before_it_plays_keeps_its_pause_at_its_length(
        receiver_clock, ratio, word, jitter_packets):
    """A word of one to three packets, then a 0.3 s pause, and the next packets come just before the word begins to
    play (0.25 s after it): the step over the pause is no clock multiple, which a pause never is, so the steps of the
    word said no clock; the packets after the pause played with the word, at 8 kHz, and the pause as 0.6 s (16 kHz)
    or 1 s (48 kHz). The step over the pause says nothing, and the others say the clock; where they are too few (a
    word of one packet, and one after the pause), the packets after the pause wait to say it (r20 third review)."""
    clock = receiver_clock
    receiver, streams, _ = receiver_with_streams(idle_seconds=10.0, jitter_packets=jitter_packets)
    payload = tone_payload(440)
    resumed = round(0.3 * 8000)  # the first packet after the pause is stamped 0.3 s after the word's first
    try:
        start = clock[0]
        for sequence in range(word):
            receiver.receive(rtp(sequence, sequence * PACKET_SAMPLES * ratio, payload, ssrc=9), "127.0.0.1:4000")
            clock[0] += 0.02
        speech_again_to_the_end(receiver, clock, start + 0.3, word, resumed * ratio, 30, ratio)  # checked from 0.31 s
    finally:
        receiver.socket.close()
    assert length_with_nothing_counted(receiver, streams) == resumed + 30 * PACKET_SAMPLES  # the call's own length


@pytest.mark.parametrize("ratio", [2, 6], ids=["16khz", "48khz"])
def test_a_16_or_48_khz_one_packet_word_in_a_two_packet_window_keeps_its_pause_at_its_length(receiver_clock, ratio):
    """A word of one packet, then a 1 s pause, with --jitter-packets 2: the word plays once its pause's silence
    begins, and the packets after the pause wait as many as say a clock (FIRST_CLOCK_PAIRS steps), not the window's
    two: their one step said none, and the pause was played at 8 kHz after its silence had been: 1.8 s for 1 s
    (r20 third review)."""
    clock = receiver_clock
    receiver, streams, _ = receiver_with_streams(idle_seconds=10.0, jitter_packets=2)
    payload = tone_payload(440)
    try:
        start = clock[0]
        receiver.receive(rtp(0, 0, payload, ssrc=9), "127.0.0.1:4000")
        while clock[0] < start + 0.95:  # the pause, as the receiver checks every 0.1 s
            clock[0] += 0.1
            receiver.close_idle(clock[0])
        speech_again_to_the_end(receiver, clock, start + 1.0, 1, 8000 * ratio, 60, ratio)  # stamped 1 s after the word's start
    finally:
        receiver.socket.close()
    assert length_with_nothing_counted(receiver, streams) == 8000 + 60 * PACKET_SAMPLES  # the call's own length


def test_comfort_noise_or_a_key_press_of_no_call_opens_no_stream_and_the_first_audio_does():
    """A call starts with its first audio: a leg that only marks silence or keys (a muted phone) is no stream."""
    receiver, streams, reports = receiver_with_streams()
    try:
        receiver.receive(rtp(1, 0, b"\x40", payload_type=13), "127.0.0.1:4000")
        receiver.receive(rtp(2, 160, bytes([5, 0x0A, 0, 160]), payload_type=101), "127.0.0.1:4000")
        assert (streams, receiver.calls, reports) == ({}, {}, [])
        receiver.receive(rtp(3, 320, b"\xff" * PACKET_SAMPLES), "127.0.0.1:4000")
        assert list(streams) == ["rtp-1234abcd"] and list(receiver.calls) == [0x1234ABCD]
    finally:
        receiver.socket.close()


@pytest.mark.parametrize(("address", "reason"), [(":5004", "is not rtp:HOST:PORT"), ("[::1:5004", "not an IPv6 address")])
def test_an_rtp_address_without_a_whole_host_is_refused_not_heard_on_every_interface(address, reason):
    """A host left out, or an IPv6 one missing its closing bracket, would have bound every interface (``""``, ``::``)."""
    with pytest.raises(SerStreamError, match=reason):
        parse_address(address)
