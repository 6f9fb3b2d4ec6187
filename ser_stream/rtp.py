"""RTP over UDP: G.711 telephone audio from a tap, one monitor stream per SSRC.

Framing is RFC 3550; payload types 0 (PCMU, μ-law) and 8 (PCMA, A-law) at
8 kHz are RFC 3551's. Packets are put back in sequence order by a small
jitter buffer. When a packet is still missing once ``jitter_packets`` later
ones are waiting, it is declared lost: its time is played as silence and
counted. A packet that arrives after its slot was played is counted late and
dropped. A sender that restarts its sequence numbers (a relay failing over, a
phone re-inviting) is followed once two consecutive packets agree on the new
numbering (RFC 3550 appendix A.1). A stream that sends nothing for
``idle_seconds`` is closed, which publishes its last utterance. RTCP sharing
the port (RFC 5761) is ignored.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ser_stream.errors import SerStreamError, StreamRefused
from ser_stream.g711 import alaw_decode, mulaw_decode
from ser_stream.sources import Sink

PAYLOAD_DECODERS = {0: mulaw_decode, 8: alaw_decode}
RTP_SAMPLE_RATE = 8000
HEADER = struct.Struct("!BBHII")
MAX_GAP_SAMPLES = RTP_SAMPLE_RATE  # a longer timestamp jump is a discontinuity: at most 1 s of silence stands for it
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


class RtpError(SerStreamError):
    """A datagram that is not a usable G.711 RTP packet; the receiver skips it and goes on."""


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


def is_rtcp(datagram: bytes) -> bool:
    """RTCP multiplexed on the RTP port: packet types 192–223 in the second byte (RFC 5761)."""
    return len(datagram) >= 2 and datagram[0] >> 6 == 2 and 192 <= datagram[1] <= 223


def parse_packet(datagram: bytes) -> RtpPacket:
    """One UDP datagram → an ``RtpPacket``; ``RtpError`` says why it cannot be one."""
    if len(datagram) < HEADER.size:
        raise RtpError(f"{len(datagram)}-byte datagram is shorter than the 12-byte RTP header")
    first, second, sequence, timestamp, ssrc = HEADER.unpack_from(datagram)
    if first >> 6 != 2:
        raise RtpError(f"RTP version {first >> 6}, expected 2")
    offset = HEADER.size + 4 * (first & 0x0F)  # CSRC list
    if first & 0x10:  # header extension: 16-bit profile, 16-bit length in 32-bit words
        if len(datagram) < offset + 4:
            raise RtpError("header extension runs past the end of the datagram")
        offset += 4 + 4 * struct.unpack_from("!H", datagram, offset + 2)[0]
    end = len(datagram)
    if first & 0x20:  # padding: the last byte counts the padding bytes
        padding = datagram[-1]
        if padding == 0 or padding > end - offset:
            raise RtpError(f"padding of {padding} bytes does not fit the datagram")
        end -= padding
    if offset > end:
        raise RtpError("header is longer than the datagram")
    payload_type = second & 0x7F
    if payload_type not in PAYLOAD_DECODERS:
        raise RtpError(f"payload type {payload_type} is not G.711 at 8 kHz (0 μ-law or 8 A-law)")
    return RtpPacket(payload_type, sequence, timestamp, ssrc, datagram[offset:end])


class JitterBuffer:
    """One SSRC's packets back in sequence order, as 8 kHz float32 audio."""

    def __init__(self, jitter_packets: int = 5) -> None:
        self.jitter_packets = max(1, jitter_packets)
        self.pending: dict[int, RtpPacket] = {}  # keyed by extended (unwrapped) sequence number
        self.next_sequence: int | None = None
        self.next_timestamp = 0
        self.stray: RtpPacket | None = None  # far outside the window: a restarted numbering if the next one follows it
        self.lost = 0  # packets never received, played as silence
        self.late = 0  # packets that arrived after their slot was played, and strays far outside the window
        self.duplicates = 0
        self.resyncs = 0  # times the sender restarted its numbering and playback followed it

    def push(self, packet: RtpPacket) -> list[NDArray[np.float32]]:
        """Add a packet; return whatever audio is now ready, in order."""
        if self.next_sequence is None:
            self.next_sequence, self.next_timestamp = packet.sequence, packet.timestamp
        stray, self.stray = self.stray, None
        if stray is not None:
            if packet.sequence == (stray.sequence + 1) & 0xFFFF:
                return self._resync(stray, packet)
            self.late += 1  # the packet after it did not continue it
        highest = max(self.pending, default=self.next_sequence - 1)
        delta = (packet.sequence - highest) & 0xFFFF
        sequence = highest + (delta - 0x10000 if delta >= 0x8000 else delta)
        if sequence - highest >= MAX_DROPOUT or sequence < self.next_sequence - MAX_MISORDER:
            self.stray = packet
            return []
        if sequence < self.next_sequence:
            self.late += 1
            return []
        if sequence in self.pending:
            self.duplicates += 1
            return []
        self.pending[sequence] = packet
        return self._release(flush=False)

    def flush(self) -> list[NDArray[np.float32]]:
        """Everything still waiting, gaps declared lost: the stream is ending."""
        if self.stray is not None:
            self.stray = None
            self.late += 1
        return self._release(flush=True)

    def _resync(self, first: RtpPacket, second: RtpPacket) -> list[NDArray[np.float32]]:
        """Two consecutive packets far outside the window: the sender restarted its numbering, so follow it."""
        audio = self._release(flush=True)  # what the old numbering still had waiting plays first
        self.resyncs += 1
        # the new numbering's time follows straight on: its first timestamp is not a gap to fill with silence
        self.next_sequence, self.next_timestamp = first.sequence, first.timestamp
        self.pending = {first.sequence: first, first.sequence + 1: second}
        return audio + self._release(flush=False)

    def _release(self, flush: bool) -> list[NDArray[np.float32]]:
        audio: list[NDArray[np.float32]] = []
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
            samples = PAYLOAD_DECODERS[packet.payload_type](packet.payload)
            gap = (packet.timestamp - self.next_timestamp) & 0xFFFFFFFF
            silence = min(gap, MAX_GAP_SAMPLES) if gap < 0x80000000 else 0
            if silence:  # time the sender skipped (loss or silence suppression)
                audio.append(np.zeros(silence, dtype=np.float32))
            if missing:
                # as many packets as the silence played for them holds (at least one), not the sequence gap,
                # which a sender that skips ahead can make 3000 packets while at most 1 s is played
                self.lost += min(missing, max(1, -(-silence // max(1, samples.size))))
            audio.append(samples)
            self.next_sequence += 1
            self.next_timestamp = (packet.timestamp + samples.size) & 0xFFFFFFFF
        return audio


@dataclass(frozen=True)
class RtpConfig:
    host: str = "127.0.0.1"
    port: int = 5004
    jitter_packets: int = 5  # 100 ms of 20 ms packets: the most a missing packet may delay the stream
    idle_seconds: float = 2.0  # a stream silent this long is closed and its last utterance published
    receive_buffer_bytes: int = 4 << 20  # room for bursts from many calls while the thread is descheduled


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


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not host or int(port) > 65535:
        raise SerStreamError(f"rtp source {text!r} is not rtp:HOST:PORT (a port from 0 to 65535)")
    return listen_host(host, "rtp source"), int(port)


# A call refused a stream (the monitor at --max-streams) is tried again this often while it sends, so it
# starts once there is room; the SSRCs remembered are capped, so a flood of spoofed ones stays bounded.
REFUSED_RETRY_SECONDS = 1.0
REFUSED_CALLS_TRACKED = 4096


class _Call:
    def __init__(self, sink: Sink, jitter_packets: int) -> None:
        self.sink, self.jitter = sink, JitterBuffer(jitter_packets)
        self.last_packet = time.monotonic()


class RtpReceiver:
    """Receives datagrams on one UDP port and feeds one stream per SSRC.

    ``open_stream(stream_id, sample_rate)`` creates a monitor stream (it raises
    ``StreamRefused`` at the stream limit, or while a stream of that id is still
    ending: the call's packets are then dropped and counted, and opening is
    retried a second later);
    ``report(line)`` tells the user about a bad sender, once per sender and reason.
    """

    def __init__(self, config: RtpConfig, open_stream: Callable[[str, int], Sink], report: Callable[[str], None]) -> None:
        self.config, self.open_stream, self.report = config, open_stream, report
        self.socket = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, config.receive_buffer_bytes)
            self.socket.bind((config.host, config.port))
        except OSError as error:
            self.socket.close()
            raise SerStreamError(f"rtp:{config.host}:{config.port}: cannot listen ({error.strerror or error})") from None
        self.port = self.socket.getsockname()[1]
        self.socket.settimeout(0.05)
        self.calls: dict[int, _Call] = {}
        self.bad_packets = 0
        self.lost_packets = 0  # totals over every call, ended ones included
        self.late_packets = 0
        self.resyncs = 0
        self.refused_packets = 0  # packets of calls the worker had no stream for
        self._refused_until: dict[int, float] = {}  # SSRC of a refused call → when to try opening its stream again
        self._reported: set[tuple[str, str]] = set()

    def run(self, stop: threading.Event) -> None:
        last_sweep = time.monotonic()
        try:
            while not stop.is_set():
                try:
                    datagram, sender = self.socket.recvfrom(65536)
                except TimeoutError:
                    datagram = b""
                if datagram:
                    self.receive(datagram, f"{sender[0]}:{sender[1]}")
                now = time.monotonic()
                if now - last_sweep >= 0.1:
                    self.close_idle(now)
                    last_sweep = now
        finally:
            for ssrc in list(self.calls):
                self._close(ssrc)
            self.socket.close()

    def receive(self, datagram: bytes, sender: str) -> None:
        if is_rtcp(datagram):
            return
        try:
            packet = parse_packet(datagram)
        except RtpError as error:
            self.bad_packets += 1
            self._report_once(sender, str(error))
            return
        call = self.calls.get(packet.ssrc)
        if call is None:
            now = time.monotonic()
            if self._refused_until.get(packet.ssrc, 0.0) > now:
                self.refused_packets += 1
                return
            try:
                sink = self.open_stream(f"rtp-{packet.ssrc:08x}", RTP_SAMPLE_RATE)
            except StreamRefused as error:  # at --max-streams, or this SSRC's previous call is still being published
                self.refused_packets += 1
                if len(self._refused_until) < REFUSED_CALLS_TRACKED:
                    self._refused_until[packet.ssrc] = now + REFUSED_RETRY_SECONDS
                self._report_once(sender, f"its call has no stream: {error.reason}")
                return
            self._refused_until.pop(packet.ssrc, None)
            call = self.calls[packet.ssrc] = _Call(sink, self.config.jitter_packets)
        call.last_packet = time.monotonic()
        lost, late, resyncs = call.jitter.lost, call.jitter.late, call.jitter.resyncs
        for samples in call.jitter.push(packet):
            call.sink.ring.write(samples)  # live audio: a reader that falls behind loses the oldest, counted
        self.lost_packets += call.jitter.lost - lost
        self.late_packets += call.jitter.late - late
        self.resyncs += call.jitter.resyncs - resyncs

    def close_idle(self, now: float) -> None:
        self._refused_until = {ssrc: until for ssrc, until in self._refused_until.items() if until > now}
        for ssrc, call in list(self.calls.items()):
            if now - call.last_packet >= self.config.idle_seconds:
                self._close(ssrc)

    def _close(self, ssrc: int) -> None:
        call = self.calls.pop(ssrc)
        lost, late = call.jitter.lost, call.jitter.late
        for samples in call.jitter.flush():
            call.sink.ring.write(samples)
        self.lost_packets += call.jitter.lost - lost
        self.late_packets += call.jitter.late - late  # a stray still held when the call ends
        if call.jitter.lost or call.jitter.late or call.jitter.resyncs:
            call.sink.warning = (
                f"rtp-{ssrc:08x}: {call.jitter.lost} packet(s) lost (played as silence), "
                f"{call.jitter.late} arrived too late or far out of sequence (dropped), "
                f"sequence numbers restarted {call.jitter.resyncs} time(s) (followed)"
            )
        call.sink.finished = True

    def _report_once(self, sender: str, reason: str) -> None:
        if (sender, reason) not in self._reported and len(self._reported) < 1000:
            self._reported.add((sender, reason))
            self.report(f"rtp packet from {sender} skipped: {reason} (further ones are only counted)")

    def counters(self) -> dict[str, int]:
        return {
            "rtp_bad_packets": self.bad_packets,
            "rtp_lost_packets": self.lost_packets,
            "rtp_late_packets": self.late_packets,
            "rtp_refused_packets": self.refused_packets,
            "rtp_resyncs": self.resyncs,
        }
