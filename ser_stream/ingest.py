"""WebSocket media-stream ingest: call audio forked by a contact-centre platform.

The framing is Twilio Media Streams': JSON text messages ``connected``,
``start`` (``start.streamSid``, ``start.tracks``, ``start.mediaFormat``),
``media`` (``media.track``, ``media.chunk``, ``media.timestamp``,
``media.payload``: base64 G.711, 8 kHz mono), ``dtmf``, ``mark`` and ``stop``.
Each track of a ``streamSid`` becomes one monitor stream: ``SID`` for a call
of one track, ``SID/inbound`` and ``SID/outbound`` for both. Missing chunks (and
timestamp jumps without them) are played as silence, so stream times stay the call's. A bad
message gets one ``error`` line back on the same connection and is skipped;
the call goes on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from ser_stream.errors import SerStreamError, StreamRefused, host_port
from ser_stream.g711 import G711_SAMPLE_RATE, alaw_decode, mulaw_decode
from ser_stream.messages import notice
from ser_stream.rtp import CALL_IDLE_SECONDS
from ser_stream.sources import Sink, add_warning

DECODERS = {"audio/x-mulaw": mulaw_decode, "audio/x-alaw": alaw_decode}
TRACKS = ("inbound", "outbound")  # Twilio's names; a call without start.tracks has the inbound one
IGNORED_EVENTS = ("connected", "dtmf", "mark")  # a key press and a mark's echo carry no audio
# Twilio sends one call per connection; a connection that opens more is refused the extras, so one
# client cannot hold the monitor's whole --max-streams.
STREAMS_PER_CONNECTION = 1
# Silence played for one gap at most: a timestamp jumping hours ahead is a sender's error, and playing it all
# would hold the call (and the worker) for as long.
MAX_GAP_SILENCE_SAMPLES = 60 * G711_SAMPLE_RATE
# A frame numbered this far behind the track is not late but renumbered (a platform restarting its count, or one
# garbled number): one chunk of 99999999 once had every later frame of the call dropped as late.
RENUMBERED_SAMPLES = G711_SAMPLE_RATE
# How long a 'start' waits for a stream of its id to finish publishing (the same call, reconnected) before it is
# refused: the old stream's last utterance ends after --min-silence and one worker step.
REJOIN_SECONDS = 5.0
# Calls paused for want of media that a connection may resume (each keeps its start message): the latest ones.
PAUSED_CALLS_KEPT = 16
# Calls whose start a connection was refused, whose media and stop are dropped unanswered: the latest ones (an older
# one's media is answered as media before its start, as it was for all of them).
REFUSED_CALLS_KEPT = 16
# The tracks of a call share its clock: a track that sends nothing while another's frames come (a leg that stopped
# sending, one that starts late) has its time played as silence up to the other's, less this allowance for the two
# legs arriving apart. Its last utterance then ends about this long after its speech, not at the call's stop, and a
# track that starts 5 s into the call is 5 s into its stream, not at 0. A leg that steadily lags the other by up to
# this costs nothing; at 0.3 s, a leg 0.5 s behind had its frames appended after the silence put in for their time,
# and its stream grew without end (90.5 s for an 8 s call).
TRACK_LAG_MS = 2000
# A leg whose frames still come after their time was played as silence is allowed their lag from then on, up to this
# (more would hold a stopped leg's last utterance as long); the part of a frame already played is dropped, counted.
MAX_TRACK_LAG_MS = 10_000
TRACK_SKEW_MS = 300  # the margin added to a lag seen, for the jitter of the two legs' arrival


class IngestError(SerStreamError):
    """One ingest message that cannot be used; the connection stays open."""


class MonitorStopping(IngestError):
    """Audio for a stream the stopping monitor has closed; the connection is closed after saying so."""


class CallRefused(IngestError):
    """A call's ``start`` refused: counted in ``refused_streams`` (unless the worker counted it already) and said as
    a warning, not only to the sender, which a platform may never read. ``call_id`` names a call that got no stream:
    the media and stop its sender goes on sending are that refused call's, not frames out of order."""

    def __init__(self, message: str, counted: bool = False, call_id: str | None = None) -> None:
        super().__init__(message)
        self.counted = counted
        self.call_id = call_id


def json_whole_number(media: dict[str, Any], name: str) -> int | None:
    """``media.chunk`` or ``media.timestamp`` (Twilio sends digits in a string) as an int; None when absent."""
    value = media.get(name)
    if value is None:
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not (text.isascii() and text.isdigit()) or len(text) > 15:
        raise IngestError(f"media.{name} {value!r:.40} is not a whole number")
    return int(text)


def parse_message(text: str | bytes) -> dict[str, Any]:
    """Validate one ingest frame; ``IngestError`` says what is wrong with it.

    ``start.tracks`` comes back filled in, ``media.chunk`` and ``media.timestamp`` as ints (or None).
    """
    if isinstance(text, bytes):
        raise IngestError("binary frame: ingest messages are JSON text")
    try:
        message = json.loads(text)
    except json.JSONDecodeError as error:
        raise IngestError(f"not JSON ({error.msg} at character {error.pos})") from None
    except ValueError:  # these two once ended the call, unsaid
        raise IngestError(f"a number in it has more than {sys.get_int_max_str_digits()} digits") from None
    except RecursionError:
        raise IngestError("its arrays or objects are nested too deeply to read") from None
    if not isinstance(message, dict) or not isinstance(message.get("event"), str):
        raise IngestError("message has no 'event' field")
    event = message["event"]
    if event == "start":
        start = message.get("start")
        if not isinstance(start, dict) or not isinstance(sid := start.get("streamSid") or message.get("streamSid"), str):
            raise CallRefused("call refused: its start message lacks start.streamSid")
        if not sid.strip():  # ?stream= of it would select every stream
            raise CallRefused("call refused: start.streamSid is empty: name the call", call_id=sid)
        try:  # JSON's "\ud800" is a str no encoding holds: it once stopped the monitor at --record's INSERT
            sid.encode("utf-8")
        except UnicodeEncodeError:
            raise CallRefused(f"call refused: start.streamSid {sid!r:.60} holds a lone surrogate, which is not text: name the call in Unicode", call_id=sid) from None
        call = f"stream {sid!r:.60} refused"
        media_format = start.get("mediaFormat", {"encoding": "audio/x-mulaw", "sampleRate": G711_SAMPLE_RATE, "channels": 1})
        # an encoding that is a JSON array or object is unhashable: looked up as it came, it raised TypeError and the
        # connection closed with 1011, the call on it ended unsaid
        if not isinstance(media_format, dict) or not isinstance(media_format.get("encoding"), str) or media_format["encoding"] not in DECODERS:
            raise CallRefused(f"{call}: unsupported media format {media_format!r:.120}: audio/x-mulaw or audio/x-alaw", call_id=sid)
        if str(media_format.get("sampleRate", G711_SAMPLE_RATE)) != str(G711_SAMPLE_RATE) or str(media_format.get("channels", 1)) != "1":  # "8000" too
            raise CallRefused(f"{call}: unsupported media format {media_format!r:.120}: sampleRate {G711_SAMPLE_RATE} and channels 1 only", call_id=sid)
        tracks = start["tracks"] = ["inbound"] if start.get("tracks") is None else start["tracks"]
        if not (isinstance(tracks, list) and tracks and all(track in TRACKS for track in tracks) and len(set(tracks)) == len(tracks)):
            raise CallRefused(f"{call}: start.tracks {tracks!r:.60}: a list of 'inbound' and/or 'outbound'", call_id=sid)
    elif event == "media":
        media = message.get("media")
        if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
            raise IngestError("media message lacks media.payload")
        if not isinstance(message.get("streamSid"), str):
            raise IngestError("media message lacks streamSid")
        media["chunk"], media["timestamp"] = json_whole_number(media, "chunk"), json_whole_number(media, "timestamp")
    elif event == "stop":
        if not isinstance(message.get("streamSid"), str):
            raise IngestError("stop message lacks streamSid")
    elif event not in IGNORED_EVENTS:
        raise IngestError(f"unknown event {event!r}")
    return message


@dataclass
class Track:
    """One track of a call: its stream, and how far its media has come (to find gaps and repeats)."""

    sink: Sink
    decode: Callable[[bytes], NDArray[np.float32]]
    # Position: where the next frame lies, by chunk number, by timestamp and in the stream.
    next_chunk: int | None = None  # the media.chunk that follows the last one played
    start_ms: float | None = None  # the media.timestamp at which stream time 0 lies
    samples: int = 0  # written so far, gaps' silence included: the stream's time in samples
    frame_samples: int = 0  # the last readable frame's length: an unreadable one's time, played as silence
    # Renumbering: chunk numbers that jumped further than a sender can mean, followed.
    renumbered: int = 0  # times its chunk numbers jumped and were followed
    first_jump: str = ""  # the first of those jumps, for the stream's warning
    renumbering_warning: str = ""  # what the stream's warning says of them so far
    # Clock disagreement: frames whose chunk number and timestamp said different gaps.
    frames: int = 0  # frames placed with a chunk number that followed the last one's
    clock_ahead: int = 0  # of those, frames whose timestamp ran ahead of the audio by half a frame or more
    clock_ahead_samples: int = 0  # how far, in all
    clock_warning: str = ""  # what the stream's warning says of them so far
    ran_ahead: bool = False  # the last numbered frame's timestamp ran ahead of its chunk number
    chunks_ahead: int = 0  # frames whose chunk number skipped numbers where their timestamp said less was missing
    chunks_ahead_samples: int = 0  # how much more the chunk numbers said, in all
    chunks_warning: str = ""  # what the stream's warning says of them so far
    # Pacing: silence put in to keep up with the call's other track, and frames that came after it.
    padded_from: int | None = None  # where that silence began, if since its last frame
    lag_ms: float = TRACK_LAG_MS  # how far behind the call's other track its time may fall before that silence
    padded_lag_ms: float = TRACK_LAG_MS  # the lag_ms that silence was put in at
    late_samples: int = 0  # audio of its frames dropped because that silence had played their time
    lag_warning: str = ""  # what the stream's warning says of them so far

    def place(self, chunk: int | None, timestamp_ms: int | None, frame_samples: int) -> int | None:
        """Samples of silence that belong before this frame (time its timestamp skips, else chunks that never came),
        or None for a frame whose time has been played already (sent twice, or overtaken): it is dropped; or, less
        than zero, how many of its first samples are dropped because silence keeping pace with the call's other
        track played their time (the whole frame: all of them).

        Where a frame has both, the gap is the smaller of what its chunk number and its timestamp say: where chunk
        numbers follow each other nothing is missing, whatever the timestamps say (a clock running fast, another unit:
        ``clock_ahead``), and where its timestamp follows the last frame's nothing is either, whatever the chunk number
        skipped (one garbled, numbers counted across the call's tracks: ``chunks_ahead``); frames with only one of them
        are placed by it.
        Stream time follows the timestamps from the track's first one; where it cannot (a jump beyond
        ``MAX_GAP_SILENCE_SAMPLES``, a timestamp going back) it follows the audio, and later gaps are measured from there.
        Chunk numbers that jump by more than a sender can mean (a minute ahead, a second back) were renumbered,
        or one was garbled: the track follows them (``renumbered``) instead of dropping every later frame as late.
        """
        smallest = max(frame_samples // 2, G711_SAMPLE_RATE // 1000)  # ms timestamps, 20 ms frames: less is rounding
        if self._repeats(chunk, frame_samples):
            return None
        chunks_say = self._chunks_say(chunk, frame_samples)
        # its chunk number says what is missing, unless silence kept pace with the other track since its last frame
        padded_from = self.padded_from
        if timestamp_ms is None:
            self.padded_from = None
            if chunks_say is None or padded_from is not None:
                return 0
            self.frames += chunk == self.next_chunk
            return self._silence(chunks_say, smallest)
        times_say = self._times_say(timestamp_ms)
        if padded_from is None:
            if chunks_say is not None:
                followed = chunk == self.next_chunk
                self.frames += followed
                return self._silence(self._reconcile(chunks_say, times_say, timestamp_ms, smallest, followed), smallest)
            missing = times_say
        else:
            missing = times_say if chunks_say is None else self._gap_after_pacing(padded_from, chunks_say, times_say, smallest)
            played = self._played_by_pacing(padded_from, missing, smallest)
            if played is not None and played >= smallest:
                return self._drop_played(played, missing, frame_samples)
            if played is not None:  # less than rounding: the frame follows that silence
                missing = 0
        if chunk is None and -RENUMBERED_SAMPLES <= missing <= -smallest:
            return None  # without a chunk number only its time tells a repeat: played twice once, uncounted
        silence = self._silence(missing, smallest)
        if missing > MAX_GAP_SILENCE_SAMPLES or missing <= -2 * smallest:
            self._follow_audio(timestamp_ms, silence)
        self.padded_from = None
        return silence

    def _repeats(self, chunk: int | None, frame_samples: int) -> bool:
        """A chunk number a little behind the next one's is a frame sent twice or overtaken: its time was played."""
        return chunk is not None and self.next_chunk is not None and -RENUMBERED_SAMPLES < (chunk - self.next_chunk) * frame_samples < 0

    def _chunks_say(self, chunk: int | None, frame_samples: int) -> int | None:
        """The gap the chunk number says, in samples; None where there is no number to go by, or it jumped further
        than a sender can mean: the numbering is followed (counted in ``renumbered``) and the gap left to the timestamp."""
        if chunk is None or self.next_chunk is None:
            return None
        ahead = (chunk - self.next_chunk) * frame_samples
        if ahead <= -RENUMBERED_SAMPLES or ahead > MAX_GAP_SILENCE_SAMPLES:
            self.renumbered += 1
            return None
        return ahead

    def _times_say(self, timestamp_ms: int) -> int:
        """The gap the timestamp says, in samples (negative: its time was played); the track's first timestamp marks
        where its stream is now, so a track paced with silence before its first frame starts there."""
        if self.start_ms is None:
            self._follow_audio(timestamp_ms, 0)
        assert self.start_ms is not None
        return round((timestamp_ms - self.start_ms) * G711_SAMPLE_RATE / 1000) - self.samples

    def _gap_after_pacing(self, padded_from: int, chunks_say: int, times_say: int, smallest: int) -> int:
        """After silence kept pace with the other track, a numbered frame lies where the track's last frame ended plus
        the smaller gap its chunk number and timestamp say: the lag was the leg's, not the call's time."""
        since_last = self.samples + times_say - padded_from
        ran_ahead, self.ran_ahead = self.ran_ahead, since_last - chunks_say >= smallest
        # A leg that paused (its timestamp jumping past that silence once, chunk numbers going on) is placed by its
        # timestamp, the other's frames vouching for the time; timestamps running ahead frame after frame (in samples,
        # not ms) are not a pause, and once made a 0.5 s lag 4 s.
        paused = self.ran_ahead and not ran_ahead and not self.clock_ahead and padded_from + since_last >= self.samples
        gap = since_last if paused else min(chunks_say, max(since_last, 0))
        return padded_from + gap - self.samples

    def _played_by_pacing(self, padded_from: int, missing: int, smallest: int) -> int | None:
        """How much of the frame's time the silence keeping pace with the other track played, or None where the frame
        lies after that silence or well before it (a repeat, not a lag)."""
        if missing >= 0 or self.samples + missing < padded_from - smallest:
            return None
        return min(-missing, self.samples - padded_from)

    def _drop_played(self, played: int, missing: int, frame_samples: int) -> int:
        """The frame's played part, as a negative gap: it is dropped, and the lag it showed is waited for from now on,
        else the leg's frames come after their silence every time and its stream grows by the lag at each."""
        lag_seen = self.padded_lag_ms + played * 1000 / G711_SAMPLE_RATE + TRACK_SKEW_MS
        self.lag_ms = min(MAX_TRACK_LAG_MS, max(self.lag_ms, lag_seen))
        # a frame dropped whole leaves the next one's place where this one would have ended
        self.padded_from = None if played < frame_samples else self.samples + missing + frame_samples
        return -min(played, frame_samples)

    def _reconcile(self, chunks_say: int, times_say: int, timestamp_ms: int, smallest: int, followed: bool) -> int:
        """The smaller of the gaps the chunk number and the timestamp say, counting where they disagree: a real loss
        shows in both, a fast clock (or one in samples) only in timestamps, a garbled or shared numbering only in chunks.
        ``clock_ahead`` counts only frames whose chunk number ``followed`` the last one's, as ``frames`` does."""
        self.ran_ahead = times_say - chunks_say >= smallest
        if self.ran_ahead:
            if followed:  # after a real loss too the clock runs ahead, but the warning is of frames with none missing
                self.clock_ahead += 1
                self.clock_ahead_samples += times_say - chunks_say
            gap = chunks_say
        elif chunks_say - max(times_say, 0) >= smallest:
            gap = max(times_say, 0)
            self.chunks_ahead += 1
            self.chunks_ahead_samples += chunks_say - gap
        else:
            gap = chunks_say
        if abs(times_say - gap) >= smallest:
            self._follow_audio(timestamp_ms, gap)
        return gap

    def _follow_audio(self, timestamp_ms: int, silence: int) -> None:
        """Move stream time 0 so this timestamp lies where the frame is placed, after ``silence``: later gaps are
        measured from the audio, not from a clock that disagreed with it."""
        self.start_ms = timestamp_ms - (self.samples + silence) * 1000 / G711_SAMPLE_RATE

    @staticmethod
    def _silence(missing: int, smallest: int) -> int:
        """Silence for a gap: none for less than rounding, and at most ``MAX_GAP_SILENCE_SAMPLES`` (a sender's error)."""
        return min(missing, MAX_GAP_SILENCE_SAMPLES) if missing >= smallest else 0


def started_call(message: dict[str, Any]) -> str:
    """The call a ``start`` message opens: ``start.streamSid``, or the message's own ``streamSid``."""
    return str(message["start"].get("streamSid") or message["streamSid"])


def shown_size(connection: ServerConnection) -> str:
    """The connection's largest message (its fragments counted together), as a person reads it: ``64 KiB``."""
    limit = connection.protocol.max_message_size
    return "size" if limit is None else f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} byte"


def track_streams(call_id: str, names: list[str] | dict[str, Any]) -> dict[str, str]:
    """Each track's stream id: the call's own for a call of one track, ``SID/inbound`` and ``SID/outbound`` for both."""
    return {name: call_id if len(names) == 1 else f"{call_id}/{name}" for name in names}


def shown_peer(connection: ServerConnection) -> str:
    """Where an ingest connection comes from, ``host:port``, for the operator's warning."""
    peer = connection.remote_address
    return host_port(str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else "an unknown address"


Calls = dict[str, dict[str, Track]]  # a connection's calls: streamSid → track name → its stream


class MediaIngest:
    """Turns ingest connections into streams via ``open_stream(stream_id, sample_rate) -> Sink``.

    ``count_refused`` is called for each ``start`` refused here, before it reaches ``open_stream``
    (a second call on one connection, a repeated start): status counts them with the worker's refusals.
    """

    def __init__(
        self, open_stream: Callable[[str, int], Sink], count_refused: Callable[[], None] = lambda: None,
        is_active: Callable[[str], bool] = lambda stream_id: False, idle_seconds: float = CALL_IDLE_SECONDS,
        warn: Callable[[str, str | None], None] = lambda line, stream_id: None,
    ) -> None:
        self.open_stream = open_stream
        self.count_refused = count_refused
        self.is_active = is_active
        self.idle_seconds = idle_seconds  # a call whose media stops this long (the connection open) is ended
        # The operator's line, about a stream or none: refused calls, and each connection's first rejected message
        # (about the streams of the call it carries, if any)
        self.warn = warn
        self.rejected = 0  # messages answered with an error: counted in status, not only told to the sender
        self.refused_media = 0  # media frames of calls whose start was refused: dropped unanswered (the start was)
        self.gaps = 0  # missing chunks or timestamp jumps, played as silence
        self.late_chunks = 0  # repeated or out-of-order chunks, dropped
        self.renumbered = 0  # chunk-number jumps followed (a platform renumbering, a garbled number)

    def counters(self) -> dict[str, int]:
        """For the status message."""
        return {"ingest_gaps": self.gaps, "ingest_late_chunks": self.late_chunks, "ingest_renumbered": self.renumbered,
                "ingest_rejected_messages": self.rejected, "ingest_refused_media": self.refused_media}

    async def handle(self, connection: ServerConnection, first_frame: str | None = None) -> None:
        """Serve one ingest connection; ``first_frame``, if given, was read from it already (a ``start`` that named
        the token, without it) and is handled before any other."""
        calls: Calls = {}
        # Each call's start message, to begin it again after a pause: kept only for the call carried and the paused
        # ones (a connection starting and stopping call after call once held every start it had sent, 64 KiB each).
        starts: dict[str, dict[str, Any]] = {}
        paused: dict[str, None] = {}  # calls ended for want of media while the connection stayed open, oldest first
        # Calls refused a stream, oldest first: the sender was told once, at its start; their media is dropped, counted
        # (ingest_refused_media), not answered frame by frame as media before its start, which buried real errors
        refused: dict[str, None] = {}
        warned = False  # this connection's first rejected message has been said
        loop = asyncio.get_running_loop()
        media_at = loop.time()  # a call's last media (or its start): --call-idle runs from it, not from any frame's
        try:
            while True:
                try:
                    idle_left = max(0.0, media_at + self.idle_seconds - loop.time()) if calls else None
                    text = await asyncio.wait_for(connection.recv(), idle_left) if first_frame is None else first_frame
                    first_frame = None
                except TimeoutError:  # a stalled platform once held a call's last utterance and its --max-streams slot
                    for call_id, tracks in calls.items():
                        for track in tracks.values():
                            add_warning(track.sink, f"no media for {self.idle_seconds:g} s with the connection open: the call was ended (media that comes later begins a new stream)")
                            track.sink.finished = True
                        paused[call_id] = None
                    calls.clear()
                    for forgotten in list(paused)[:-PAUSED_CALLS_KEPT]:
                        del paused[forgotten], starts[forgotten]
                    continue
                try:
                    message = parse_message(text)
                    if message["event"] in ("media", "stop") and message["streamSid"] in refused:
                        if message["event"] == "media":
                            self.refused_media += 1
                        else:  # the refused call has ended: its id is no longer remembered
                            del refused[message["streamSid"]]
                        continue
                    resumed = message.get("streamSid") if message["event"] in ("media", "stop") else None
                    if isinstance(resumed, str) and resumed in paused:  # media again: the call goes on as a new stream; a stop: it had ended
                        del paused[resumed]
                        if message["event"] == "stop":
                            del starts[resumed]
                            continue
                        resuming = starts.pop(resumed)  # kept again once the call is carried: a resumption refused (the
                        await self._handle_message(resuming, calls)  # connection carrying another call) once kept its
                        starts[resumed] = resuming  # start for the connection's life
                    if message["event"] == "start" and started_call(message) in paused:  # a fresh start takes the call: it
                        del paused[started_call(message)], starts[started_call(message)]  # stayed paused, and its next media
                        # resumed it again ('started twice', that media dropped) or its stop was swallowed as the old call's
                    if message["event"] == "media" and message["streamSid"] in calls:  # marks and DTMF once kept a call
                        media_at = loop.time()  # without audio open; media whose payload is unreadable is still its time
                    await self._handle_message(message, calls)
                    if message["event"] == "start":
                        media_at = loop.time()
                        starts[started_call(message)] = message
                        refused.pop(started_call(message), None)  # refused before, taken now
                    elif message["event"] == "stop":
                        starts.pop(message["streamSid"], None)
                except IngestError as error:
                    self.rejected += 1
                    if isinstance(error, CallRefused):  # a call lost: the operator is told each time
                        if not error.counted:
                            self.count_refused()
                        if error.call_id is not None and error.call_id not in calls:  # a bad start repeated for the
                            # call the connection carries refuses that start, not the call: its media plays on, its stop ends it
                            refused.pop(error.call_id, None)
                            refused[error.call_id] = None
                            for forgotten in list(refused)[:-REFUSED_CALLS_KEPT]:
                                del refused[forgotten]
                        self.warn(f"ingest: {error}", None)  # a call that never became a stream
                    elif not warned:  # a sender's mistakes: told once a connection, then counted
                        warned = True
                        line = f"ingest connection from {shown_peer(connection)}: {error} (further rejected messages are only counted: ingest_rejected_messages)"
                        carried: list[str | None] = [stream_id for call_id, tracks in calls.items() for stream_id in track_streams(call_id, tracks).values()]
                        for stream_id in carried or [None]:  # its call's streams' subscribers hear of it, not every stream's
                            self.warn(line, stream_id)
                    await connection.send(json.dumps(notice("error", str(error))))
                    if isinstance(error, MonitorStopping):
                        await connection.close(1001, "the monitor is stopping")
                        return
        except ConnectionClosed as closed:
            if closed.sent is not None and closed.sent.code == CloseCode.MESSAGE_TOO_BIG:  # the call's audio stops here
                for tracks in calls.values():
                    for track in tracks.values():
                        add_warning(track.sink, f"the connection sent a message over the {shown_size(connection)} limit and was closed (1009); the call ended there")
        finally:
            for tracks in calls.values():  # a call that vanished without 'stop' still ends cleanly
                for track in tracks.values():
                    track.sink.finished = True

    async def _handle_message(self, message: dict[str, Any], calls: Calls) -> None:
        event = message["event"]
        if event == "start":
            call_id = started_call(message)
            if call_id in calls:
                raise CallRefused(f"stream {call_id!r} started twice")
            if len(calls) >= STREAMS_PER_CONNECTION:
                carried = ", ".join(repr(other) for other in calls)
                raise CallRefused(f"stream {call_id!r} refused: this connection already carries {carried}; one call per connection", call_id=call_id)
            encoding = message["start"].get("mediaFormat", {}).get("encoding", "audio/x-mulaw")
            names = message["start"]["tracks"]
            tracks: dict[str, Track] = {}
            stream_ids = track_streams(call_id, names)
            # A platform reconnecting at once (a dropped socket) restarts the call under its id while the old
            # stream still publishes its last utterance: wait for it rather than refuse (half of such were refused).
            deadline = asyncio.get_running_loop().time() + REJOIN_SECONDS
            while any(map(self.is_active, stream_ids.values())) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            try:
                for name, stream_id in stream_ids.items():
                    tracks[name] = Track(self.open_stream(stream_id, G711_SAMPLE_RATE), DECODERS[encoding])
            except StreamRefused as error:  # a limit reached, or the monitor stopping: all the call's tracks or none
                for track in tracks.values():
                    track.sink.finished = True
                raise CallRefused(str(error), counted=True, call_id=call_id) from None  # the worker counted it
            calls[call_id] = tracks
        elif event == "media":
            call_id, media = message["streamSid"], message["media"]
            if call_id not in calls:
                raise IngestError(f"media for stream {call_id!r} before its start")
            track = self._track(call_id, calls[call_id], media.get("track"))
            try:
                samples = track.decode(base64.b64decode(media["payload"], validate=True))
                track.frame_samples, unreadable = samples.size, None
            except (binascii.Error, ValueError):  # its time is kept as silence, as a missing chunk's is: a frame's length
                samples = np.zeros(track.frame_samples or len(media["payload"].rstrip("=")) * 3 // 4, dtype=np.float32)
                unreadable = IngestError(f"stream {call_id!r}: media payload is not valid base64; its {samples.size / G711_SAMPLE_RATE * 1000:.0f} ms were played as silence")
            chunk = media["chunk"]
            renumbered, expected, clock_ahead, chunks_ahead = track.renumbered, track.next_chunk, track.clock_ahead, track.chunks_ahead
            gap = track.place(chunk, media["timestamp"], samples.size)
            if gap is None or gap < 0:
                self.late_chunks += 1  # its time has been played (or filled with silence) already
            if gap is not None and gap < 0:  # all or part of it came after silence kept the track up with the other
                track.late_samples += min(-gap, samples.size)
                said, track.lag_warning = track.lag_warning, (
                    f"its frames came more than {TRACK_LAG_MS / 1000:g} s behind the call's other track, after their time had "
                    f"been played as silence: {track.late_samples / G711_SAMPLE_RATE:.2f} s of its audio dropped "
                    f"(ingest_late_chunks); a lag of up to {track.lag_ms / 1000:.1f} s is now waited for")
                add_warning(track.sink, track.lag_warning, replacing=said)
                samples = samples[-gap:]
                if not samples.size:
                    if chunk is not None:
                        track.next_chunk = chunk + 1
                    return
            if gap is None:
                return
            if track.renumbered > renumbered:  # said in the stream's warning at its end, counted every time
                self.renumbered += 1
                track.first_jump = track.first_jump or f"media.chunk {chunk} came where {expected} was due"
                times = f", {track.renumbered} times in all" if track.renumbered > 1 else ""
                said, track.renumbering_warning = track.renumbering_warning, f"{track.first_jump} and the numbering was followed (ingest_renumbered{times})"
                add_warning(track.sink, track.renumbering_warning, replacing=said)
            if track.clock_ahead > clock_ahead:  # said in the stream's warning; nothing was lost
                said, track.clock_warning = track.clock_warning, (
                    f"media.timestamp ran ahead of the audio at {track.clock_ahead} of {track.frames} frames with no media.chunk "
                    f"missing ({track.clock_ahead_samples / G711_SAMPLE_RATE:.2f} s in all): the sender's timestamps run fast, "
                    "or are not in ms (played back to back, not padded with silence)")
                add_warning(track.sink, track.clock_warning, replacing=said)
            if track.chunks_ahead > chunks_ahead:  # said in the stream's warning; played by the timestamps
                said, track.chunks_warning = track.chunks_warning, (
                    f"media.chunk skipped numbers where media.timestamp said less was missing at {track.chunks_ahead} "
                    f"frame{'s' * (track.chunks_ahead != 1)} ({track.chunks_ahead_samples / G711_SAMPLE_RATE:.2f} s in all): one was garbled, or the sender "
                    "numbers chunks across the call's tracks (played by the timestamps, not padded with silence)")
                add_warning(track.sink, track.chunks_warning, replacing=said)
            if gap > 0:
                self.gaps += 1
                await self._write(call_id, track, np.zeros(gap, dtype=np.float32))
            await self._write(call_id, track, samples)
            if chunk is not None:
                track.next_chunk = chunk + 1
            if media["timestamp"] is not None:
                await self._keep_pace(call_id, calls[call_id], track)
            if unreadable is not None:
                raise unreadable
        elif event == "stop":
            call_id = message["streamSid"]
            if call_id not in calls:
                raise IngestError(f"stop for unknown stream {call_id!r}")
            for track in calls.pop(call_id).values():
                track.sink.finished = True

    async def _keep_pace(self, call_id: str, tracks: dict[str, Track], leader: Track) -> None:
        """The call's other tracks brought up to ``leader``'s time, less each one's ``lag_ms``, with silence: a track
        with no timestamp yet takes the call's start as its own.

        Each track's time is its stream's, the samples placed, not its raw timestamps: a leg whose count restarted
        (timestamps back to 0) ahead of the other once had the other, still on the old clock, pad it with up to 60 s
        of silence a frame, and timestamps in 8 kHz samples made a 0.5 s lag look like 4 s."""
        assert leader.start_ms is not None
        for track in tracks.values():
            if track is leader:
                continue
            if track.start_ms is None:
                track.start_ms = leader.start_ms
            behind = leader.samples - round(track.lag_ms * G711_SAMPLE_RATE / 1000) - track.samples
            if behind > 0:
                track.padded_from = track.samples if track.padded_from is None else track.padded_from
                track.padded_lag_ms = track.lag_ms
                await self._write(call_id, track, np.zeros(min(behind, MAX_GAP_SILENCE_SAMPLES), dtype=np.float32))

    @staticmethod
    def _track(call_id: str, tracks: dict[str, Track], name: Any) -> Track:
        """The track a media frame belongs to: the one it names, or the call's only one if it names none."""
        if name is None and len(tracks) == 1:
            return next(iter(tracks.values()))
        if isinstance(name, str) and name in tracks:
            return tracks[name]
        listed = ", ".join(tracks)
        if name is None:
            raise IngestError(f"stream {call_id!r}: media without media.track, but the call has tracks {listed}")
        raise IngestError(f"stream {call_id!r}: media for track {name!r:.40}, which its start did not list (start.tracks: {listed})")

    @staticmethod
    async def _write(call_id: str, track: Track, samples: NDArray[np.float32]) -> None:
        """Append to the track's stream, waiting for the worker to make room (TCP backpressure) rather than overwriting."""
        ring = track.sink.ring
        arrived = time.monotonic()  # the frame's, before any wait for room: the call's audio has waited that long
        while True:
            piece = samples[: ring.capacity]
            while ring.free() < piece.size and not track.sink.finished:
                await asyncio.sleep(0.005)
            if track.sink.finished:  # the worker closed the stream: the monitor is stopping
                raise MonitorStopping(f"stream {call_id!r}: the monitor is stopping; audio from here on is not analysed")
            ring.write(piece, arrived_at=arrived)
            track.samples += piece.size
            samples = samples[piece.size :]
            if not samples.size:
                return
