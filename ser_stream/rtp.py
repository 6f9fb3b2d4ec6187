"""RTP over UDP: G.711 telephone audio from a tap, one monitor stream per SSRC.

Framing is RFC 3550; payload types 0 (PCMU, μ-law) and 8 (PCMA, A-law) at
8 kHz are RFC 3551's. Packets are put back in sequence order by a small
jitter buffer. When a packet is still missing once ``jitter_packets`` later
ones are waiting, it is declared lost: its time is played as silence and
counted. A packet that arrives after its slot was played is counted late and
dropped. A sender that restarts its sequence numbers (a relay failing over, a
phone re-inviting) is followed once two consecutive packets agree on the new
numbering (RFC 3550 appendix A.1). Comfort noise (RFC 3389) and telephone
events (RFC 4733) are packets of the call without audio: they keep it in
sequence and alive, and their time is silence. A call belongs to the address
its first packet came from (RFC 3550 §8.2); with ``allowed_senders``, packets
from any other address are dropped before they are read. A call that sends nothing has its
time played as silence as it passes (``FILL_AFTER_SECONDS``), as a phone plays
it; one that sends nothing for ``idle_seconds`` (after comfort noise, a longer
pause) is closed, which publishes its last utterance. RTCP sharing the port
(RFC 5761) is ignored. Packets that hold more samples than their timestamps
advance (an SRTP call's authentication tag, another codec labelled G.711) are
played whole, and the call is named in a warning.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from ser_stream.errors import MAX_PORT, RecentKeys, SerStreamError, StreamRefused, host_port, port_number
from ser_stream.g711 import G711_PACKET_SAMPLES, G711_SAMPLE_RATE, alaw_decode, mulaw_decode
from ser_stream.sources import Sink, add_warning

PAYLOAD_DECODERS = {0: mulaw_decode, 8: alaw_decode}
COMFORT_NOISE = 13  # RFC 3389: the sender is quiet (silence suppression); its time is played as silence
# RFC 4733 telephone events (DTMF keys) travel on a dynamic payload type (101 by custom) of the call's SSRC. Without
# the SDP that names it, a dynamic type whose payload is whole 4-byte events is taken for one (a G.711 payload is
# 80 or more bytes); anything else on a dynamic type is another codec, which is bad here.
DYNAMIC_PAYLOAD_TYPES = range(96, 128)
EVENT_BYTES = 4
MAX_EVENT_PAYLOAD = 16 * EVENT_BYTES
NO_AUDIO = np.zeros(0, dtype=np.float32)
HEADER = struct.Struct("!BBHII")
DISCONTINUITY_SAMPLES = G711_SAMPLE_RATE  # a longer timestamp jump is a discontinuity: at most 1 s of silence stands for it
# A call that sends nothing for this long (silence suppression without comfort noise, an outage) has its time played
# as silence as it passes, as a phone plays it: its last utterance ends half a second after the speech, not when the
# next packet comes (1.9 s later, or a call's end), and an outage longer than DISCONTINUITY_SAMPLES keeps the call's clock.
# Longer than any jitter the buffer absorbs (5 packets, 100 ms): a late packet still plays, after the silence.
FILL_AFTER_SECONDS = 0.25
# RFC 3389 lets a sender mark a pause with one comfort-noise packet and send nothing more until speech resumes: a call
# whose last packet was comfort noise is closed only after this long (at least --call-idle), not split in two.
COMFORT_NOISE_PAUSE_SECONDS = 30.0
# How far a packet's sequence number may be from those being played and still belong to them (RFC 3550
# appendix A.1's values). Up to 100 behind the next one to play (2 s of 20 ms packets, twenty jitter windows)
# it is a late packet, dropped and counted. Less than 3000 ahead of the highest one received (60 s) it follows
# a gap of real loss: a gap longer than --call-idle (2 s by default, 100 packets) closes the call before the
# next packet comes, so 3000 is generous (it allows --call-idle up to 60 s), yet small beside the 65536 numbers,
# so that a restart almost anywhere else is recognised. A packet outside both is held, not played: if the next
# packet continues it, the sender restarted its numbering and playback follows (a resync); otherwise it was a
# stray and is dropped as late.
MAX_MISORDER = 100
MAX_DROPOUT = 3000
CALL_IDLE_SECONDS = 2.0  # --call-idle's default, for rtp: calls and --ingest alike: a call silent this long is ended
MAX_CALL_IDLE_SECONDS = 60.0  # the longest --call-idle: MAX_DROPOUT packets of 20 ms
# G.711 timestamps count 8 kHz samples, but some gateways stamp them at 16, 24, 32 or 48 kHz. A sender whose first
# CLOCK_EVIDENCE pairs of consecutive audio packets each step by the same whole multiple of the earlier packet's
# samples keeps that clock: its timestamps are divided by it (re-clocked), and its stream's warning says so. With the
# default jitter window (5 packets) the clock is known before the first packet plays.
CLOCK_RATIOS = (1, 2, 3, 4, 6)
CLOCK_EVIDENCE = 4
# A call that begins to play before its clock is learnt (a word, then a pause) takes the one its waiting packets say
# if this many consecutive pairs of them agree: one step of twice a packet is as likely an 8 kHz sender's skip.
FIRST_CLOCK_PAIRS = 2
PAUSE_STEP = 0  # a step between waiting packets ahead past every ratio's: a pause, which says no clock
STAMP_SLACK = 8  # samples a sender's stamps of two packets may be off their audio (160 × n ± 3 each), at its clock's ratio
LONGEST_PACKET_SAMPLES = 480  # 60 ms: the longest G.711 packets telephony sends, for packets not yet seen
# A sender whose timestamps still skip ahead at one packet in this many, though no packet is missing, keeps no clock
# of those (random steps): its call is stretched with silence, which its stream's warning says. Silence suppression
# skips once a pause, far more rarely.
CLOCK_SKIP_SHARE = 4
# A sender whose timestamps, over the steady steps of its call (audio packet to audio packet, none missing, less than
# a packet off), advance this share less than its packets hold (170 where 160: SRTP's authentication tag read as
# audio, another codec labelled G.711, a clock running slow) is told about once OVERLONG_EVIDENCE_SECONDS of its audio
# has played, and again in its stream's warning; one whose timestamps advance this share more, a clock running fast,
# in its stream's warning. Judged over the call, not packet by packet: a sender that stamps its packets a few samples
# early or late (160 × n ± 3) steps back at every other packet, yet its steps add up to its audio. A real clock is off
# by parts per million; SRTP's shortest tag (4 bytes) makes 164 of 160, 2.4 %.
CLOCK_MISMATCH_SHARE = 0.01
# Each packet is still played whole: the samples are the sender's (a slow clock's audio is all real), so only the
# call's length, not what is heard, follows the clock.
OVERLONG_EVIDENCE_SECONDS = 2.0


class RtpError(SerStreamError):
    """A datagram that is not a usable G.711 RTP packet; the receiver skips it and goes on. ``kind`` names the fault
    without the datagram's numbers: a sender is told once per kind, not once per length, padding or payload type."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes

    @property
    def is_audio(self) -> bool:
        """G.711 audio, as opposed to comfort noise or a telephone event, which only mark the call's time."""
        return self.payload_type in PAYLOAD_DECODERS

    @property
    def event_end(self) -> int | None:
        """Where a telephone event's key hold has reached, in the sender's clock (its start plus its duration so
        far), or None for another packet."""
        if not is_telephone_event(self.payload_type, self.payload):
            return None
        return (self.timestamp + int.from_bytes(self.payload[-2:], "big")) & 0xFFFFFFFF


def audio_samples(packet: RtpPacket) -> int:
    """The 8 kHz samples a packet's payload holds: one a byte for G.711, none for comfort noise or an event."""
    return len(packet.payload) if packet.is_audio else 0


def is_telephone_event(payload_type: int, payload: bytes) -> bool:
    """An RFC 4733 payload on a dynamic payload type: whole 4-byte events (key, end flag and volume, duration)."""
    return payload_type in DYNAMIC_PAYLOAD_TYPES and 0 < len(payload) <= MAX_EVENT_PAYLOAD and len(payload) % EVENT_BYTES == 0


def is_rtcp(datagram: bytes) -> bool:
    """RTCP multiplexed on the RTP port: packet types 192–223 in the second byte (RFC 5761)."""
    return len(datagram) >= 2 and datagram[0] >> 6 == 2 and 192 <= datagram[1] <= 223


def parse_packet(datagram: bytes) -> RtpPacket:
    """One UDP datagram → an ``RtpPacket``; ``RtpError`` says why it cannot be one."""
    if len(datagram) < HEADER.size:
        raise RtpError("short datagram", f"{len(datagram)}-byte datagram is shorter than the 12-byte RTP header")
    first, second, sequence, timestamp, ssrc = HEADER.unpack_from(datagram)
    if first >> 6 != 2:
        raise RtpError("not RTP version 2", f"RTP version {first >> 6}, expected 2")
    offset = HEADER.size + 4 * (first & 0x0F)  # CSRC list
    if first & 0x10:  # header extension: 16-bit profile, 16-bit length in 32-bit words
        if len(datagram) < offset + 4:
            raise RtpError("bad header extension", "header extension runs past the end of the datagram")
        offset += 4 + 4 * struct.unpack_from("!H", datagram, offset + 2)[0]
    end = len(datagram)
    if first & 0x20:  # padding: the last byte counts the padding bytes
        padding = datagram[-1]
        if padding == 0 or padding > end - offset:
            raise RtpError("bad padding", f"padding of {padding} bytes does not fit the datagram")
        end -= padding
    if offset > end:
        raise RtpError("header longer than the datagram", "header is longer than the datagram")
    payload_type, payload = second & 0x7F, datagram[offset:end]
    if payload_type not in PAYLOAD_DECODERS and payload_type != COMFORT_NOISE and not is_telephone_event(payload_type, payload):
        raise RtpError(
            "unsupported payload type",
            f"payload type {payload_type} is not G.711 at 8 kHz (0 μ-law or 8 A-law), comfort noise (13) or telephone events (RFC 4733)"
        )
    return RtpPacket(payload_type, sequence, timestamp, ssrc, payload)


class JitterBuffer:
    """One SSRC's packets back in sequence order, as 8 kHz float32 audio."""

    def __init__(self, jitter_packets: int = 5) -> None:
        self.jitter_packets = max(1, jitter_packets)
        self.pending: dict[int, RtpPacket] = {}  # keyed by extended (unwrapped) sequence number
        self.next_sequence: int | None = None
        self.next_timestamp = 0
        self.stray: RtpPacket | None = None  # far outside the window: a restarted numbering if the next one follows it
        # Until the first packet plays the buffer fills to jitter_packets (or the time they take passes: ``start``),
        # so a call whose first packets arrive out of order starts with the earliest of them rather than dropping it as late.
        self.playing = False
        self.played: deque[int] = deque(maxlen=MAX_MISORDER)  # recent sequence numbers: a copy of one is a duplicate
        # recent sequence numbers counted lost: one that arrives after all was late, not lost (it was counted both)
        self.declared_lost: deque[int] = deque(maxlen=MAX_MISORDER)
        # recent packets counted late, by sequence number (within the window) or by number and timestamp (strays): a
        # copy of one is a duplicate, so that rtp_late_packets counts packets, not copies (a re-sent late packet was two)
        self.arrived_late: deque[int] = deque(maxlen=MAX_MISORDER)
        self.late_strays: deque[tuple[int, int]] = deque(maxlen=MAX_MISORDER)
        self.packet_samples = G711_PACKET_SAMPLES  # the last audio packet's length, for counting what a gap before a non-audio one held
        self.lost = 0  # packets never received, played as silence
        self.late = 0  # packets that arrived after their slot was played, and strays far outside the window
        self.duplicates = 0  # copies of a packet already waiting or played: nothing was lost
        self.resyncs = 0  # times the sender restarted its numbering and playback followed it
        self.audio_packets = 0  # played
        self.filled = 0  # silence played since the last packet because none came (``fill``): part of the next gap
        self.stalled_samples = 0  # of that silence, what packets delayed, not lost, then followed: the call grew by it
        self.clock_skips = 0  # audio packets whose timestamp skipped ahead though none was missing before them
        self.clock_silence = 0  # samples of silence those skips were played as
        self.clock_drifts = 0  # audio packets whose timestamp ran ahead by less than a packet, none missing: played on
        self.clock_drift_samples = 0  # what those steps ran ahead by in all, not played
        self.audio_samples = 0  # played from audio packets (not silence)
        self.overlong_packets = 0  # audio packets whose timestamps advanced less than the audio packet before them held
        self.overlong_samples = 0  # what those held beyond their timestamps' step: played all the same, the call longer by it
        # audio packet to audio packet, none missing, less than a packet off: how many such steps, and the samples the
        # earlier packets held; the clock is judged on these (the steps ahead and back above are all among them)
        self.steady_steps = 0
        self.steady_samples = 0
        self._last_was_audio = False  # the packet played last was audio: its length is what the next step should be
        self.clock_ratio = 1  # the sender's timestamp units per 8 kHz sample (2: a 16 kHz clock), once learnt
        self.clock_learnt = False
        self._clock_guess = (0, 0)  # (a ratio, how many consecutive packet pairs in a row stepped by it)
        self._last_audio: RtpPacket | None = None  # the last audio packet to arrive, for the step to the next
        # it began to play before its packets could say its clock (one, then its pause's silence): its next ones wait
        # as its first did, until the window's worth do, so that their steps say it, not play as skips one by one
        self.clock_unheard = False

    def late_samples(self) -> int:
        """How far the call's steady steps played behind the sender's clock (ahead of it when negative): what packets
        held beyond their timestamps' steps, less the steps ahead that were played back to back."""
        return self.overlong_samples - self.clock_drift_samples

    def clock_mismatched(self) -> bool:
        """Whether the timestamps, over 2 s of audio or more, advance CLOCK_MISMATCH_SHARE more or less than the
        packets hold: a steady mismatch, not a sender that stamps each packet a few samples early or late."""
        return (self.audio_samples >= OVERLONG_EVIDENCE_SECONDS * G711_SAMPLE_RATE
                and abs(self.late_samples()) >= CLOCK_MISMATCH_SHARE * max(1, self.steady_samples))

    def overlong(self) -> str | None:
        """What is said of a call whose packets hold more samples than their timestamps advance, over the call so
        far (see CLOCK_MISMATCH_SHARE); None otherwise."""
        if not self.clock_mismatched() or self.late_samples() < 0:
            return None
        held = self.steady_samples / self.steady_steps
        return (
            f"its packets hold more samples than their timestamps advance ({held:.0f} where "
            f"{held - self.late_samples() / self.steady_steps:.0f}, at {self.overlong_packets} of {self.audio_packets} "
            "packets): maybe SRTP (encrypted: its authentication tag read as audio), another codec than G.711, or a "
            f"sender's clock running slow; each packet is played whole, {self.late_samples() / G711_SAMPLE_RATE:.2f} s more "
            "than the sender's clock (later times are late by that much)"
        )

    def runs_fast(self) -> str | None:
        """What is said of a call whose timestamps advance more than its packets hold, over the call; None otherwise."""
        if not self.clock_mismatched() or self.late_samples() > 0:
            return None
        return (
            f"the timestamps ran ahead of the audio at {self.clock_drifts} of {self.audio_packets} packets, by less "
            f"than a packet each ({-self.late_samples() / G711_SAMPLE_RATE:.2f} s in all): the sender's clock runs "
            "fast (played back to back, not padded with silence)"
        )

    def _take_first_clock(self) -> bool:
        """The call begins to play before ``_learn_clock`` has its clock (its first packets out of order, or a word and
        a pause): take the ratio every step between the waiting packets gives, in sequence order (``_waiting_steps``;
        pauses say none), if FIRST_CLOCK_PAIRS steps or more give it (CLOCK_EVIDENCE learn it); whether one was taken.
        Taken for 8 kHz, a 16 kHz sender's steps were skips: silence among its first packets, its pause up to 1 s too
        long. Also used for the packets held after a start that said none (``clock_unheard``)."""
        ratios, pairs = set(), 0
        for _, ratio in self._waiting_steps():
            if ratio is None:
                return False  # a step that is no multiple (as _learn_clock has it): no clock to take
            if ratio != PAUSE_STEP:
                ratios.add(ratio)
                pairs += 1
        if len(ratios) != 1 or pairs < FIRST_CLOCK_PAIRS:
            return False
        (ratio,) = ratios
        self._set_clock(ratio, learnt=pairs >= CLOCK_EVIDENCE)
        return True

    def _waiting_steps(self) -> Iterator[tuple[int, int | None]]:
        """Each step between the audio packets waiting, in sequence: the later one's number and the ratio it steps by,
        PAUSE_STEP if ahead past every ratio's (a pause), None if no multiple. Across missing packets the step is
        that of as many packets as those either side (a 16 kHz word with one lost had its steps taken for skips),
        and left out where those differ in length (the missing ones may be of either)."""
        waiting = sorted(self.pending)
        for sequence, following_sequence in zip(waiting, waiting[1:]):
            packet, following = self.pending[sequence], self.pending[following_sequence]
            if not packet.is_audio or not following.is_audio or not packet.payload:
                continue
            numbers = following_sequence - sequence
            if numbers > 1 and len(following.payload) != len(packet.payload):
                continue  # the packets missing between may be of either length: no step to expect
            expected = numbers * len(packet.payload)  # G.711: a byte a sample
            step = (following.timestamp - packet.timestamp) & 0xFFFFFFFF
            ratio = round(step / expected)
            if step < 0x80000000 and step > max(CLOCK_RATIOS) * expected + STAMP_SLACK * max(CLOCK_RATIOS):
                yield following_sequence, PAUSE_STEP
            elif ratio not in CLOCK_RATIOS or abs(step - ratio * expected) > STAMP_SLACK * ratio:
                yield following_sequence, None
            else:
                yield following_sequence, ratio

    def _set_clock(self, ratio: int, learnt: bool) -> None:
        """The sender's clock, taken or learnt; once playing, the time played since the last packet (stepped at the
        old ratio) is stepped at the new one: a call that played one packet and its pause's silence before its clock
        was learnt took the silence for part of the next packet's step, and played that much again."""
        if self.playing:
            since = self.filled + (self.packet_samples if self._last_was_audio else 0)
            self.next_timestamp = (self.next_timestamp + since * (ratio - self.clock_ratio)) & 0xFFFFFFFF
        self.clock_ratio, self.clock_learnt = ratio, learnt

    def _learn_clock(self, packet: RtpPacket) -> None:
        """Watch the first consecutive audio packets' timestamp steps until CLOCK_EVIDENCE agree on a ratio."""
        last, self._last_audio = self._last_audio, packet
        if self.clock_learnt or last is None or packet.sequence != (last.sequence + 1) & 0xFFFF or not last.payload:
            return
        step = (packet.timestamp - last.timestamp) & 0xFFFFFFFF
        ratio = round(step / len(last.payload))  # G.711: a byte a sample
        # stamps a few samples off the audio's, as at 8 kHz: a step that is no exact multiple was never learnt
        if ratio not in CLOCK_RATIOS or abs(step - ratio * len(last.payload)) > STAMP_SLACK * ratio:
            self._clock_guess = (0, 0)
            return
        agreeing = self._clock_guess[1] + 1 if ratio == self._clock_guess[0] else 1
        self._clock_guess = (ratio, agreeing)
        if agreeing >= CLOCK_EVIDENCE:
            self._set_clock(ratio, learnt=True)

    def push(self, packet: RtpPacket) -> list[NDArray[np.float32]]:
        """Add a packet; return whatever audio is now ready, in order."""
        if self.next_sequence is None:
            self.next_sequence, self.next_timestamp = packet.sequence, packet.timestamp
        if packet.is_audio:
            self._learn_clock(packet)
        stray, self.stray = self.stray, None
        if stray is not None:
            if (packet.sequence, packet.timestamp) == (stray.sequence, stray.timestamp):  # a copy of it: still held
                self.stray = stray
                self.duplicates += 1
                return []
            if packet.sequence == (stray.sequence + 1) & 0xFFFF:
                if self._replayed(stray):  # old packets sent again, not a new numbering: dropped as late
                    self._stray_late(stray)
                    self._stray_late(packet)
                    return []
                return self._resync(stray, packet)
            self._stray_late(stray)  # the packet after it did not continue it
        highest = max(self.pending, default=self.next_sequence - 1)
        delta = (packet.sequence - highest) & 0xFFFF
        sequence = highest + (delta - 0x10000 if delta >= 0x8000 else delta)
        if sequence - highest >= MAX_DROPOUT or sequence < self.next_sequence - MAX_MISORDER:
            # held even if a copy of a stray already counted late (a copy again counts as a duplicate, not late):
            # the new numbering's first packet overtaken by the old one's last, then sent again, still starts a restart
            self.stray = packet
            return []
        if sequence < self.next_sequence and not self.playing and self._starts_call(packet, sequence, highest):
            # the call's first packets arrived out of order: nothing has played, so an earlier one is the call's start
            self.next_sequence, self.next_timestamp = sequence, packet.timestamp
        elif sequence < self.next_sequence:
            if sequence in self.played or sequence in self.arrived_late:
                self.duplicates += 1
            else:
                self.late += 1
                self.arrived_late.append(sequence)
                if sequence in self.declared_lost:  # its slot was played as silence either way; it did arrive
                    self.declared_lost.remove(sequence)
                    self.lost -= 1
            return []
        if sequence in self.pending:
            self.duplicates += 1
            return []
        self.pending[sequence] = packet
        return self._release(flush=False)

    def window_seconds(self) -> float:
        """How long the jitter window's packets take to come: ``jitter_packets`` of the longest audio waiting."""
        longest = max((len(waiting.payload) for waiting in self.pending.values() if waiting.is_audio), default=G711_PACKET_SAMPLES)
        return self.jitter_packets * longest / G711_SAMPLE_RATE

    def start(self) -> list[NDArray[np.float32]]:
        """The call's first packets have waited as long as the jitter window's take to come, and fewer came (a word,
        then a pause): they play, in order, as a call's first ``jitter_packets`` would have by now."""
        return self._release(flush=False, start=True)

    def fill(self, pause: int) -> list[NDArray[np.float32]]:
        """No packet has come for a while: what is waiting plays (gaps declared lost), then the silence of the
        ``pause`` so far (samples since its silence began) not yet played, the call's time passing as it does on a
        phone. The next packet's timestamp gap counts the silence played. What was played is judged after what was
        waiting plays: a packet held as it came (a missing one before it, or its clock unheard) waited, and no
        silence was played, for as long as the silence before it had been."""
        audio = self._release(flush=True) if self.pending else []
        samples = pause - self.filled
        if samples > 0:
            audio.append(np.zeros(samples, dtype=np.float32))
            self.next_timestamp = (self.next_timestamp + samples * self.clock_ratio) & 0xFFFFFFFF
            self.filled += samples
        return audio

    def flush(self) -> list[NDArray[np.float32]]:
        """Everything still waiting, gaps declared lost: the stream is ending."""
        if self.stray is not None:
            self._stray_late(self.stray)
            self.stray = None
        return self._release(flush=True)

    def _stray_late(self, packet: RtpPacket) -> None:
        """A packet far outside the window that no restart followed: counted late once, its copies duplicates."""
        if (packet.sequence, packet.timestamp) in self.late_strays:
            self.duplicates += 1
            return
        self.late += 1
        self.late_strays.append((packet.sequence, packet.timestamp))

    def _starts_call(self, packet: RtpPacket, sequence: int, highest: int) -> bool:
        """Whether a packet numbered before the first ones waiting, none played yet, is the call's start: it is within
        the jitter window of the highest (2, 0, 1 with a window of 2) and its timestamp no further behind theirs than
        its numbers and the window's delay could put it (``_within_the_window``), or its timestamp lies behind theirs
        where the sender's clock puts it (a run of first packets overtaken by a later one): by no more than its
        numbers' worth of the longest packet known, or, the clock not yet learnt, by just that many packets at one of
        CLOCK_RATIOS (a gateway stamping 48 kHz). A stray older packet of the same SSRC further back, 3 s behind in
        time but 6 to 100 numbers, is not: it was taken for the start, and the call began with its audio, 1 s of
        silence and up to 50 packets counted lost that never were."""
        assert self.next_sequence is not None
        numbers_behind = self.next_sequence - sequence
        lengths = {len(packet.payload), *(len(waiting.payload) for waiting in self.pending.values())}
        clock_behind = (self.next_timestamp - packet.timestamp) & 0xFFFFFFFF
        if sequence >= highest - self.jitter_packets:
            return self._within_the_window(clock_behind, numbers_behind, max(lengths))
        if 0 < clock_behind <= numbers_behind * max(lengths) * self.clock_ratio:
            return True
        ratios = CLOCK_RATIOS[1:] if not self.clock_learnt else ()
        return any(abs(clock_behind - numbers_behind * length * ratio) <= STAMP_SLACK * ratio for length in lengths for ratio in ratios)

    def _within_the_window(self, clock_behind: int, numbers_behind: int, longest: int) -> bool:
        """Whether a packet numbered within the jitter window, its stamp ``clock_behind`` the first waiting one's,
        could be the call's: behind it by no more than its numbers' worth of packets (60 ms ones, for those not seen)
        and the jitter window's of the longest seen (a packet delayed that much more than those after it), at the
        sender's clock or, not yet learnt, the fastest of CLOCK_RATIOS; or ahead by a few samples' stamping. A stray
        older packet further off (an earlier call's on the SSRC, or from before a hold: 3 s behind, or any stamp) was
        taken whatever its timestamp: the call began with its audio and up to 1 s of silence. Mid-call it is late."""
        ratio = self.clock_ratio if self.clock_learnt else max(CLOCK_RATIOS)
        reach = numbers_behind * max(longest, LONGEST_PACKET_SAMPLES) + self.jitter_packets * longest + STAMP_SLACK
        return clock_behind <= reach * ratio or (-clock_behind) & 0xFFFFFFFF <= STAMP_SLACK * ratio

    def _replayed(self, packet: RtpPacket) -> bool:
        """Whether a packet far outside the window is an old one sent again: its number and its timestamp both lie
        a little behind the call's (less than MAX_DROPOUT packets). Two such copies in a row once passed for a
        restarted numbering: the call jumped back, their audio was played again and 50 packets were counted lost."""
        assert self.next_sequence is not None
        behind = (self.next_sequence - packet.sequence) & 0xFFFF
        clock_behind = (self.next_timestamp - packet.timestamp) & 0xFFFFFFFF
        return 0 < behind < MAX_DROPOUT and 0 < clock_behind <= MAX_DROPOUT * self.packet_samples * self.clock_ratio

    def _resync(self, first: RtpPacket, second: RtpPacket) -> list[NDArray[np.float32]]:
        """Two consecutive packets far outside the window: the sender restarted its numbering, so follow it."""
        audio = self._release(flush=True)  # what the old numbering still had waiting plays first
        self.resyncs += 1
        # the new numbering's time follows straight on: its first timestamp is not a gap to fill with silence
        self.next_sequence, self.next_timestamp = first.sequence, first.timestamp
        self.pending = {first.sequence: first, first.sequence + 1: second}
        self.played.clear()  # numbers of the old numbering: a packet of the new one is no copy of them
        self.declared_lost.clear()
        self.arrived_late.clear()
        return audio + self._release(flush=False)

    def _release(self, flush: bool, start: bool = False) -> list[NDArray[np.float32]]:
        audio: list[NDArray[np.float32]] = []
        holding = not self.playing or (self.clock_unheard and not self.clock_learnt)
        # held after a start that said no clock, they wait for as many as can say one (FIRST_CLOCK_PAIRS steps), in a
        # window of two packets too: their one step said none, and a 16 kHz pause after a one-packet word played at 8 kHz
        waiting_for = self.jitter_packets if not self.playing else max(self.jitter_packets, FIRST_CLOCK_PAIRS + 1)
        if not flush and not start and holding and len(self.pending) < waiting_for:
            return audio
        held_back: dict[int, RtpPacket] = {}
        if holding and not self.clock_learnt:
            taken = self._take_first_clock()
            # the call's first packets say no clock and speech resumed after a pause among them: the packets after it
            # played with the word before it, at 8 kHz, and a 16 or 48 kHz pause two or six times as long
            resumed = None if taken or flush or self.playing else min(
                (sequence for sequence, ratio in self._waiting_steps() if ratio == PAUSE_STEP), default=None)
            if start and resumed is not None:
                return audio  # its pause has passed: the word waits with them, as a call's first packets do, to say it
            # held until the window's worth waited, whatever they said: held no longer; but those after the pause
            # wait to say it (``clock_unheard``), as a one-packet word's do, and the word before it plays
            self.clock_unheard = not taken and (len(self.pending) < self.jitter_packets or resumed is not None)
            if resumed is not None:
                held_back = {sequence: self.pending.pop(sequence) for sequence in sorted(self.pending) if sequence >= resumed}
        self.playing = True
        while self.pending:
            assert self.next_sequence is not None
            missing = 0
            if self.next_sequence not in self.pending:
                if not flush and len(self.pending) < self.jitter_packets:
                    break
                following = min(self.pending)
                missing = following - self.next_sequence
                self.next_sequence = following
            packet = self.pending.pop(self.next_sequence)
            samples = PAYLOAD_DECODERS[packet.payload_type](packet.payload) if packet.is_audio else NO_AUDIO
            gap = (packet.timestamp - self.next_timestamp) & 0xFFFFFFFF  # in the sender's clock
            silence = min(gap // self.clock_ratio, DISCONTINUITY_SAMPLES) if gap < 0x80000000 else 0
            back = ((-gap) & 0xFFFFFFFF) // self.clock_ratio if gap >= 0x80000000 else 0
            steady = packet.is_audio and self._last_was_audio and not missing and not self.filled
            if silence and silence < samples.size and not missing and not self.filled:
                # less than a packet ahead, nothing missing: a fast clock (steps of 163 for 160 samples), not a pause;
                # its few samples of silence between every two packets once changed most labels of such a call
                if steady:
                    self.clock_drifts += 1
                    self.clock_drift_samples += silence
                silence = 0
            if silence:  # time the sender skipped (loss or silence suppression)
                audio.append(np.zeros(silence, dtype=np.float32))
                if not missing and packet.is_audio:
                    self.clock_skips += 1
                    self.clock_silence += silence
            if self.filled and gap >= 0x80000000:  # its time was already played as silence: a stall, not a pause
                self.stalled_samples += min(self.filled, back)
            elif steady and 0 < back <= self.packet_samples:  # further back is a rewound clock, not a packet longer than its step
                self.overlong_packets += 1
                self.overlong_samples += back
            if steady and not silence and back <= self.packet_samples:
                self.steady_steps += 1
                self.steady_samples += self.packet_samples  # still the packet before's length
            self.audio_packets += packet.is_audio
            if missing:
                # as many packets as the silence played for them holds (at least one; ``fill``'s as the time passed
                # included), not the sequence gap, which a sender that skips ahead can make 3000 packets while at
                # most 1 s is played. Packets as long as the shorter of those either side: two 10 ms packets lost
                # before the sender went over to 20 ms were counted one
                held = min(samples.size, self.packet_samples) if packet.is_audio else self.packet_samples
                counted = min(missing, max(1, -(-(silence + self.filled) // max(1, held))))
                self.lost += counted
                # the numbers nearest the packet stand for those counted: a late packet is at most MAX_MISORDER behind
                self.declared_lost.extend(range(self.next_sequence - min(counted, MAX_MISORDER), self.next_sequence))
            self.filled = 0
            self._last_was_audio = packet.is_audio
            if samples.size:
                audio.append(samples)
                self.packet_samples = samples.size
                self.audio_samples += samples.size
            self.played.append(self.next_sequence)
            self.next_sequence += 1
            # a telephone event carries its key's start time, which audio sent during the key has passed: time
            # only moves back for audio (a sender that rewinds its clock), never for a packet without any
            if packet.is_audio or gap < 0x80000000:
                self.next_timestamp = (packet.timestamp + samples.size * self.clock_ratio) & 0xFFFFFFFF
            event_end = packet.event_end
            held = (event_end - self.next_timestamp) & 0xFFFFFFFF if event_end is not None else 0
            if event_end is not None and 0 < held < 0x80000000:
                # a key held: its packets all carry its start, their durations grow; the audio it suppressed is its
                # time, played as silence as it passes (at the next audio packet, a jump over 1 s was cut to 1 s:
                # a 3 s key hold took 2 s out of the call's time)
                audio.append(np.zeros(min(held // self.clock_ratio, DISCONTINUITY_SAMPLES), dtype=np.float32))
                self.next_timestamp = event_end
        self.pending.update(held_back)
        return audio


# A second of 20 ms packets: beyond it a call would be held back longer than a listener waits, and a flush of the
# buffer at a call's end could pass its stream's ring (1000 once published nothing for a whole call).
MAX_JITTER_PACKETS = 50


SenderNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=4096)  # asked for every packet: a call's 50 a second come from one host, whatever its port
def is_allowed(host: str, networks: tuple[SenderNetwork, ...]) -> bool:
    """Whether ``host`` (of ``host:port`` as host_port writes it, IPv6 in brackets) is in one of ``networks``; a
    dual-stack socket's IPv4-mapped address (``::ffff:10.0.5.7``) is taken as the IPv4 address it carries."""
    address = ipaddress.ip_address(host.strip("[]"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def sender_versions(host: str) -> frozenset[int]:
    """The IP versions of the senders a socket listening on ``host`` can hear (IPv6 if it has a colon, as RtpReceiver
    opens it): ``::`` hears IPv4 senders too (as mapped addresses), another IPv6 address only IPv6 ones."""
    if ":" not in host:
        return frozenset({4})
    address = ipaddress.IPv6Address(host)
    return frozenset({4, 6}) if address.is_unspecified else frozenset({4 if address.ipv4_mapped is not None else 6})


@dataclass(frozen=True)
class RtpConfig:
    host: str = "127.0.0.1"
    port: int = 5004
    jitter_packets: int = 5  # 100 ms of 20 ms packets: the most a missing packet may delay the stream
    idle_seconds: float = CALL_IDLE_SECONDS  # a stream silent this long is closed and its last utterance published
    receive_buffer_bytes: int = 4 << 20  # room for bursts from many calls while the thread is descheduled
    allowed_senders: tuple[SenderNetwork, ...] = ()  # --rtp-allow: only these addresses may send calls (none: any)


def listen_host(host: str, option: str) -> str:
    """A host to listen on, as the socket wants it: ``[::1]`` → ``::1``; a malformed IPv4 address is refused here,
    not reported later as a remote address or a failed name lookup."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare.replace(".", "").isdigit():
        try:
            ipaddress.IPv4Address(bare)
        except ValueError:
            raise SerStreamError(f"{option} {host!r}: not an IPv4 address") from None
    elif ":" in bare:
        try:
            ipaddress.IPv6Address(bare)
        except ValueError:
            raise SerStreamError(f"{option} {host!r}: not an IPv6 address") from None
    return bare


def listen_address(text: str, option: str, form: str = "HOST:PORT", default_host: str = "") -> tuple[str, int]:
    """``HOST:PORT`` → the host as the socket wants it (``listen_host``) and the port; ``default_host`` where the
    host is left out (none: it is required). One line naming ``option`` and the ``form`` expected otherwise."""
    host, _, port_text = text.rpartition(":")
    host, port = host or default_host, port_number(port_text)
    if port is None or not host:
        raise SerStreamError(f"{option} {text!r} is not {form} (a port from 0 to {MAX_PORT})")
    return listen_host(host, option), port


def parse_address(text: str) -> tuple[str, int]:
    """An ``rtp:`` source's ``HOST:PORT``."""
    return listen_address(text, "rtp source", "rtp:HOST:PORT")


# A call refused a stream (the monitor at --max-streams) is tried again this often while it sends, so it
# starts once there is room; the SSRCs remembered are capped, so a flood of spoofed ones stays bounded.
REFUSED_RETRY_SECONDS = 1.0
REFUSED_CALLS_TRACKED = 4096
# A call that resumes just after it was closed for going idle waits until the monitor has published the stream it
# had (the worker's next step), its packets held meanwhile: this many at most (5 s of 20 ms packets).
RESUMED_PACKETS_HELD = 250
# A sender is told about each kind of fault once, and again an hour later if it still sends them. At most
# REPORTS_TRACKED reports are remembered: a flood of spoofed senders gets that many lines an hour, the rest
# are only counted (one line says so, and until when), and once their hour is over new broken senders are reported again.
REPORT_MEMORY_SECONDS = 3600.0
REPORTS_TRACKED = 1000
# Calls refused a stream are named apart from senders' faults, at most this many an hour: a busy hour at --max-streams
# once used up the REPORTS_TRACKED reports, and a gateway that broke after it went unnamed for up to an hour, unsaid.
REFUSED_CALL_REPORTS = 200
# The receiver waits this long for a datagram before it looks for idle calls; before it does, it reads what the
# socket holds, at most DRAIN_DATAGRAMS (the 4 MB receive buffer holds about 20000 of 200 bytes).
RECEIVE_WAIT_SECONDS = 0.05
DRAIN_DATAGRAMS = 20000
# Senders outside --rtp-allow are told apart by host (a PBX sends each call from its own port) and remembered
# apart from the rest: a flood of them, which --rtp-allow is there to stop, once used up the reports of the
# allowed senders' faults for an hour.
NOT_ALLOWED_HOSTS_TRACKED = 100


class ReportBudget:
    """The reports of one family of faults: each (sender, kind) remembered for REPORT_MEMORY_SECONDS, at most
    ``capacity`` at once. Once that many are, further ones are only counted, and one line says so (at most once in
    REPORT_MEMORY_SECONDS): they went unsaid, and the family's silence read as no fault."""

    def __init__(self, capacity: int, named: str, counted_in: str) -> None:
        self.remembered = RecentKeys(REPORT_MEMORY_SECONDS, capacity)
        self.named, self.counted_in = named, counted_in  # "calls refused a stream", "rtp_refused_packets and refused_streams"
        self.full_said_at = -math.inf

    def admit(self, key: tuple[str, str], now: float) -> tuple[bool, str | None]:
        """Whether ``key`` is to be reported now (noted if so), and the line that says the budget is full, if due."""
        if self.remembered.remembers(key, now):
            return False, None
        if self.remembered.has_room():
            self.remembered.note(key, now)
            return True, None
        if now - self.full_said_at < self.remembered.seconds:
            return False, None
        self.full_said_at = now
        room_in = self.remembered.seconds - (now - (self.remembered.oldest_noted_at() or now))
        return False, (f"rtp: {self.remembered.capacity} {self.named} named in the last {self.remembered.seconds / 60:.0f} min, "
                       f"the most it names in that time: further ones are counted ({self.counted_in}), not named, "
                       f"for the next {max(1, math.ceil(room_in / 60))} min")


class CallSink(Sink, Protocol):
    ended: bool  # set by the monitor once it has published everything the stream held: its id is free again


class _Call:
    def __init__(self, sink: CallSink, jitter_packets: int, sender: str) -> None:
        self.sink, self.jitter, self.sender = sink, JitterBuffer(jitter_packets), sender
        self.last_packet = time.monotonic()  # any datagram of it: the idle close counts from here
        self.opened = self.last_packet  # its first packets play at most a jitter window's time (FILL_AFTER_SECONDS at least) after this
        self.kept_packet = self.last_packet  # the last one not dropped (late, a copy): a pause's silence counts from here
        self.pausing = False  # its last packet was comfort noise: a pause the sender announced
        self.overlong_said = False  # its packets hold more samples than their timestamps advance, and the user was told


@dataclass
class _Ending:
    """A call closed for going idle whose stream the monitor is still publishing; its SSRC's packets wait here."""

    sink: CallSink
    sender: str  # the call's, for the warning that names what was dropped
    held: list[tuple[RtpPacket, str]] = field(default_factory=list)
    dropped_packets: int = 0  # beyond RESUMED_PACKETS_HELD: counted refused, and named in a warning as the call resumes
    dropped_samples: int = 0  # the audio those held

    def held_samples(self) -> int:
        return sum(audio_samples(packet) for packet, _ in self.held)


class RtpReceiver:
    """Receives datagrams on one UDP port and feeds one stream per SSRC.

    ``open_stream(stream_id, sample_rate)`` creates a monitor stream (it raises
    ``StreamRefused`` at the stream limit: the call's packets are then dropped
    and counted, and opening is retried a second later). A call that resumes
    while the stream it had is still ending waits for that stream's ``ended``;
    ``report(line)`` tells the user about a bad sender, once per sender and kind of fault.
    """

    def __init__(self, config: RtpConfig, open_stream: Callable[[str, int], CallSink], report: Callable[[str], None]) -> None:
        self.config, self.open_stream, self.report = config, open_stream, report
        self.socket = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, config.receive_buffer_bytes)
            self.socket.bind((config.host, config.port))
        except OSError as error:
            self.socket.close()
            raise SerStreamError(f"rtp:{host_port(config.host, config.port)}: cannot listen ({error.strerror or error})") from None
        self.port = self.socket.getsockname()[1]
        self.socket.settimeout(RECEIVE_WAIT_SECONDS)
        self.calls: dict[int, _Call] = {}
        self._ending: dict[int, _Ending] = {}  # SSRC of a closed call → its stream, until the monitor has ended it
        self.bad_packets = 0
        self.lost_packets = 0  # totals over every call, ended ones included
        self.late_packets = 0
        self.resyncs = 0
        self.refused_packets = 0  # packets of calls the worker had no stream for
        self.wrong_sender_packets = 0  # a call's SSRC from another address (a collision, or spoofing): dropped
        self.not_allowed_packets = 0  # from an address outside --rtp-allow: dropped unread
        self._refused = RecentKeys(REFUSED_RETRY_SECONDS, REFUSED_CALLS_TRACKED)  # SSRCs of calls refused a stream lately
        self._refused_since = RecentKeys(REPORT_MEMORY_SECONDS, REFUSED_CALLS_TRACKED)  # when each was first refused
        # (sender, kind of fault) reported lately: senders' faults, refused calls and hosts outside --rtp-allow apart,
        # so that neither of the last two, however many, can leave a sender's fault unnamed
        self._reported = ReportBudget(REPORTS_TRACKED, "faults of senders", "rtp_bad_packets, rtp_wrong_sender_packets")
        self._refused_reported = ReportBudget(REFUSED_CALL_REPORTS, "calls refused a stream", "refused_streams, rtp_refused_packets")
        self._not_allowed_reported = ReportBudget(NOT_ALLOWED_HOSTS_TRACKED, "hosts outside --rtp-allow", "rtp_not_allowed_packets")

    def run(self, stop: threading.Event) -> None:
        last_sweep = time.monotonic()
        try:
            while not stop.is_set():
                self._hear()
                if time.monotonic() - last_sweep >= 0.1:
                    last_sweep = self.sweep()
        finally:
            for ssrc in list(self.calls):
                self._close(ssrc)
            for ssrc, ending in self._ending.items():  # the monitor is stopping: what a resumed call sent is never heard
                self.refused_packets += len(ending.held)
                self._report_resumed_loss(ssrc, ending, stopping=True)
            self.socket.close()

    def sweep(self) -> float:
        """Hear what the socket holds, then close idle calls and play quiet ones' time as silence; when, by the clock.
        After the thread was descheduled for a second, the sweep once ran on its first datagram and padded every other
        call with silence its queued packets then followed (or, past --call-idle, closed calls still sending)."""
        self._drain()
        now = time.monotonic()
        self.close_idle(now)
        return now

    def _drain(self) -> None:
        self.socket.settimeout(0.0)
        try:
            for _ in range(DRAIN_DATAGRAMS):
                if not self._hear():
                    break
        finally:
            self.socket.settimeout(RECEIVE_WAIT_SECONDS)

    def _hear(self) -> bool:
        """Read one datagram and take it in; False if none came (within the socket's timeout, or none at once)."""
        try:
            datagram, sender = self.socket.recvfrom(65536)
        except (TimeoutError, BlockingIOError):
            return False
        if datagram:
            self.receive(datagram, host_port(sender[0], sender[1]))
        return True

    def receive(self, datagram: bytes, sender: str) -> None:
        host = sender.rpartition(":")[0]
        if self.config.allowed_senders and not is_allowed(host, self.config.allowed_senders):
            self.not_allowed_packets += 1
            self._report_once(host, "its address is not in --rtp-allow", reported=self._not_allowed_reported)
            return
        if is_rtcp(datagram):
            return
        try:
            packet = parse_packet(datagram)
        except RtpError as error:
            self.bad_packets += 1
            self._report_once(sender, str(error), kind=error.kind)  # its first datagram of that kind is the one named
            return
        self._route(packet, sender)

    def _route(self, packet: RtpPacket, sender: str) -> None:
        """A packet to its call: the first audio of a new SSRC opens one; its SSRC from another address is dropped."""
        ending = self._ending.get(packet.ssrc)
        if ending is not None:
            if not ending.sink.ended:  # the call resumed just after going idle: wait for its stream's end, lose nothing
                if len(ending.held) < RESUMED_PACKETS_HELD:
                    ending.held.append((packet, sender))
                else:
                    self.refused_packets += 1
                    ending.dropped_packets += 1
                    ending.dropped_samples += audio_samples(packet)
                return
            self._resume(packet.ssrc)
        call = self.calls.get(packet.ssrc)
        if call is None:
            if not packet.is_audio:  # comfort noise or an event with no call: a call starts with its first audio
                return
            call = self._open_call(packet.ssrc, sender)
            if call is None:
                return
        elif sender != call.sender:
            self.wrong_sender_packets += 1
            self._report_once(
                sender,
                f"its SSRC is that of call rtp-{packet.ssrc:08x} from {call.sender} (an SSRC collision, or spoofing)",
                kind="another sender's SSRC",
            )
            return
        call.last_packet = time.monotonic()
        call.pausing = packet.payload_type == COMFORT_NOISE
        dropped = call.jitter.late + call.jitter.duplicates
        self._play(call, functools.partial(call.jitter.push, packet))
        if call.jitter.late + call.jitter.duplicates == dropped:  # a late copy mid-pause once restarted the fill's clock
            call.kept_packet = call.last_packet  # but not its count, and the pause lost as much as was already played
        if not call.overlong_said and call.jitter.audio_samples >= OVERLONG_EVIDENCE_SECONDS * G711_SAMPLE_RATE:
            # said while the call goes on: an encrypted call gives no utterance, and its end may be an hour away
            if overlong := call.jitter.overlong():
                call.overlong_said = True
                self.report(f"call rtp-{packet.ssrc:08x} from {sender}: {overlong}; its stream's end warning gives the call's totals")

    def _play(self, call: _Call, release: Callable[[], list[NDArray[np.float32]]]) -> None:
        """What ``release`` has the call's jitter buffer give, into its stream; the buffer's new losses into the totals."""
        lost, late, resyncs = call.jitter.lost, call.jitter.late, call.jitter.resyncs
        for samples in release():
            call.sink.ring.write(samples)  # live audio: a reader that falls behind loses the oldest, counted
        self.lost_packets += call.jitter.lost - lost
        self.late_packets += call.jitter.late - late
        self.resyncs += call.jitter.resyncs - resyncs

    def _open_call(self, ssrc: int, sender: str) -> _Call | None:
        now = time.monotonic()
        if self._refused.remembers(ssrc, now):  # opening is tried again once REFUSED_RETRY_SECONDS have passed
            self.refused_packets += 1
            return None
        try:
            sink = self.open_stream(f"rtp-{ssrc:08x}", G711_SAMPLE_RATE)
        except StreamRefused as error:  # at --max-streams, or the monitor is stopping
            self.refused_packets += 1
            self._refused.note(ssrc, now)
            if not self._refused_since.remembers(ssrc, now):
                self._refused_since.note(ssrc, now)
            # each call by name: one line for all of a sender's refused calls once named none of them
            self._report_once(sender, f"call rtp-{ssrc:08x} has no stream: {error.reason}", kind=f"no stream for {ssrc}",
                              reported=self._refused_reported)
            return None
        self._refused.forget(ssrc)
        refused_at = self._refused_since.noted_at(ssrc)
        self._refused_since.forget(ssrc)
        if refused_at is not None:  # its start was never heard: its times count from now, which nothing said
            self.report(f"call rtp-{ssrc:08x} from {sender} got a stream {now - refused_at:.1f} s after it was first refused: "
                        "what it sent before was not analysed, and its times count from now")
        call = self.calls[ssrc] = _Call(sink, self.config.jitter_packets, sender)
        return call

    def _resume(self, ssrc: int) -> None:
        """The stream a closed call had has ended: what its SSRC sent meanwhile opens the next one, in order."""
        ending = self._ending.pop(ssrc)
        self._report_resumed_loss(ssrc, ending, stopping=False)
        for packet, sender in ending.held:
            self._route(packet, sender)

    def _report_resumed_loss(self, ssrc: int, ending: _Ending, stopping: bool) -> None:
        """One warning for a call that resumed while its last stream was ending and lost packets meanwhile: those
        beyond the RESUMED_PACKETS_HELD held (said as it resumes), and, when the monitor stops first, those held too.
        Both were only counted (rtp_refused_packets): no warning named the call."""
        held, dropped = len(ending.held) if stopping else 0, ending.dropped_packets
        if not held + dropped:
            return
        samples = (ending.held_samples() if stopping else 0) + ending.dropped_samples
        if held and dropped:
            why = f"{held} held for its next stream when the monitor stopped, {dropped} beyond those"
        elif held:
            why = "held for its next stream when the monitor stopped"
        else:
            why = f"beyond the {RESUMED_PACKETS_HELD} held meanwhile, {RESUMED_PACKETS_HELD * G711_PACKET_SAMPLES // G711_SAMPLE_RATE} s of 20 ms packets"
        self.report(f"call rtp-{ssrc:08x} from {ending.sender} resumed while its last stream was still ending: "
                    f"{held + dropped} packet(s) ({samples / G711_SAMPLE_RATE:.2f} s of audio) were dropped ({why})")

    def close_idle(self, now: float) -> None:
        for ssrc, ending in list(self._ending.items()):
            if ending.sink.ended:
                self._resume(ssrc)
        for ssrc, call in list(self.calls.items()):
            quiet = now - call.last_packet
            if quiet >= (max(self.config.idle_seconds, COMFORT_NOISE_PAUSE_SECONDS) if call.pausing else self.config.idle_seconds):
                self._close(ssrc)
                continue
            if not call.jitter.playing and now - call.opened >= max(call.jitter.window_seconds(), FILL_AFTER_SECONDS):
                # fewer packets came than the window holds in the time they take (a word, then a pause): what came
                # plays, as a call's first ones would have by now. They waited for more until speech resumed, and no
                # silence was played for the pause meanwhile (then cut to 1 s). Not before FILL_AFTER_SECONDS: a
                # first packet overtaken by its second, the rest held up, is waited for as a missing one is mid-call
                # (at the window's 100 ms it was dropped as late, and the call began with its second)
                self._play(call, call.jitter.start)
            if now - call.kept_packet >= FILL_AFTER_SECONDS:  # the call's time passes as silence
                # rounded, not truncated: 0.6 s of clock differences can come out as 0.59999…, a sample short
                pause = round((now - call.kept_packet - FILL_AFTER_SECONDS) * G711_SAMPLE_RATE)
                self._play(call, functools.partial(call.jitter.fill, pause))

    def _close(self, ssrc: int) -> None:
        call = self.calls.pop(ssrc)
        self._play(call, call.jitter.flush)  # a stray still held when the call ends counts late
        jitter = call.jitter
        faults = []
        if jitter.lost or jitter.late or jitter.resyncs:
            faults.append(
                f"{jitter.lost} packet(s) lost (played as silence), "
                f"{jitter.late} arrived too late or far out of sequence (dropped), "
                f"sequence numbers restarted {jitter.resyncs} time(s) (followed)"
            )
        if jitter.clock_ratio != 1:
            faults.append(f"the timestamps ran at {8 * jitter.clock_ratio} kHz, not G.711's 8 kHz (re-clocked: played at its length)")
        if jitter.clock_skips * CLOCK_SKIP_SHARE >= max(1, jitter.audio_packets):  # silence suppression skips once a pause
            faults.append(
                f"the timestamps skipped ahead at {jitter.clock_skips} of {jitter.audio_packets} packets with none missing, "
                f"{jitter.clock_silence / G711_SAMPLE_RATE:.1f} s played as silence: the sender keeps no steady clock"
            )
        elif runs_fast := jitter.runs_fast():
            faults.append(runs_fast)
        if overlong := jitter.overlong():
            faults.append(overlong)
        if jitter.stalled_samples:
            faults.append(
                f"{jitter.stalled_samples / G711_SAMPLE_RATE:.2f} s of silence were played while packets were delayed; "
                "later times are late by that much"
            )
        if faults:
            add_warning(call.sink, f"rtp-{ssrc:08x}: " + "; ".join(faults))
        call.sink.finished = True
        self._ending[ssrc] = _Ending(call.sink, call.sender)

    def _report_once(self, sender: str, reason: str, kind: str | None = None, reported: ReportBudget | None = None) -> None:
        """One line per sender and kind of fault (``reason`` unless given), again once REPORT_MEMORY_SECONDS have passed;
        remembered in ``reported`` (default: the reports of senders' faults), and said once when that is full."""
        reported = self._reported if reported is None else reported
        named, full = reported.admit((sender, reason if kind is None else kind), time.monotonic())
        if named:
            self.report(f"rtp packet from {sender} skipped: {reason} (further ones are only counted)")
        elif full is not None:
            self.report(full)

    def counters(self) -> dict[str, int]:
        return {
            "rtp_bad_packets": self.bad_packets,
            "rtp_lost_packets": self.lost_packets,
            "rtp_late_packets": self.late_packets,
            "rtp_refused_packets": self.refused_packets,
            "rtp_resyncs": self.resyncs,
            "rtp_wrong_sender_packets": self.wrong_sender_packets,
            "rtp_not_allowed_packets": self.not_allowed_packets,
        }
