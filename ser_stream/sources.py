"""Audio sources: each runs its own thread (or PortAudio's) and only writes blocks into a ring buffer.

``file:PATH`` (read in blocks, never loaded whole but for a small MP3: ``audiofile.sample_blocks``;
``--pace realtime|fast``),
``stdin`` (s16le PCM, raw or in a WAV stream), ``mic`` / ``mic:DEVICE`` (sounddevice).
``rtp:HOST:PORT`` (many calls, one stream each) lives in ``ser_stream.rtp``.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import numpy as np

from ser_stream.audiofile import (
    MISSING_SECONDS,
    STREAMED_DATA_SIZE,
    ChannelMixer,
    audio_info,
    block_frames,
    mono_blocks,
    refused_file_format,
    require_file,
    truncation,
    undecoded,
    unread_format,
)
from ser_stream.errors import AudioInputError, one_line, shown
from ser_stream.features import check_sample_rate
from ser_stream.ringbuffer import RingBuffer

BLOCK_SECONDS = 0.05
READ_SECONDS = 1.0  # file sources decode this much at a time
STDIN_SAMPLE_RATE = 16000  # --source stdin without --rate
MAX_STDIN_CHANNELS = 64  # --channels: a frame of more is not a recording (and would make each read enormous)
WAV_CHUNK_LIMIT = 1 << 20  # a stdin WAV's chunks before its audio (fmt, LIST…) are read whole only up to this size
# MPEG audio frames (MP3 and its layers I and II): bitrates in kbit/s by [MPEG-1?][layer - 1][index], sample rates in Hz
# by [version bits][index]. Index 0 is the rare "free" bitrate, whose frame length no header gives: not taken for MP3.
MPEG_BITRATES = (
    ((0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256), (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
     (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)),
    ((0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448), (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
     (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)),
)
MPEG_SAMPLE_RATES = {0b00: (11025, 12000, 8000), 0b10: (22050, 24000, 16000), 0b11: (44100, 48000, 32000)}  # 0b01: reserved


class Sink(Protocol):
    """What a source writes into: its stream's ring buffer and counters."""

    ring: RingBuffer
    input_overflows: int
    finished: bool
    error: str | None  # the stream failed
    warning: str | None  # something the user should know; the stream itself was fine

    def mark_gap(self, samples: int) -> None:
        """``samples`` of the stream's time passed unheard after what was written so far (a device away)."""


def add_warning(sink: Sink, warning: str, replacing: str | None = None) -> None:
    """Add ``warning`` to what the stream says at its end, after '; ', or in place of ``replacing`` (an earlier
    count of the same fault): a renumbered call that then went quiet once said only that it went quiet."""
    if replacing and sink.warning and replacing in sink.warning:
        sink.warning = sink.warning.replace(replacing, warning, 1)
    else:
        sink.warning = f"{sink.warning}; {warning}" if sink.warning else warning


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # file, stdin, mic, rtp
    target: str = ""


def parse_source(text: str) -> SourceSpec:
    """``file:PATH``, ``stdin``, ``mic`` or ``mic:DEVICE`` → a spec; a clear error otherwise."""
    kind, _, target = text.partition(":")
    if kind == "file" and target:
        return SourceSpec("file", target)
    if text == "stdin":  # not "stdin:", which reads as a target left out
        return SourceSpec("stdin")
    if text == "mic" or (kind == "mic" and target):
        return SourceSpec("mic", target)
    host, _, port = target.rpartition(":")
    if kind == "rtp" and host and port.isascii() and port.isdigit():  # '²' is a digit to isdigit; the range is parse_address's
        return SourceSpec("rtp", target)
    hint = f" (for the file, --source file:{text})" if os.path.isfile(text) else ""
    raise AudioInputError(f"source {text!r} is not file:PATH, stdin, mic, mic:DEVICE or rtp:HOST:PORT{hint}")


def _wait_for_room(sink: Sink, count: int, stop: threading.Event) -> bool:
    """Patient sources (files, pipes) never overrun: they wait for the reader. False if stopped first: the block is not
    written. Written anyway, into a ring full by design (read ahead), it overwrote 50 ms, said at each stop as audio
    lost to overruns."""
    while sink.ring.free() < count:
        if stop.is_set():
            return False
        time.sleep(0.002)
    return True


class FileSource:
    """Blocks of an audio file (WAV, FLAC, OGG, MP3…), mono, at the file's rate; realtime pace sleeps to match the clock."""

    def __init__(self, path: str, pace: str = "realtime") -> None:
        self.info = audio_info(path)
        self.path, self.pace, self.sample_rate = path, pace, int(self.info.samplerate)
        self.truncation = truncation(path, self.info)  # said as the stream's warning once it has played

    def run(self, sink: Sink, stop: threading.Event) -> None:
        # Decoded a second at a time, or less where that holds more samples than classify reads at once (many channels,
        # a high rate), or an MP3 whole (audiofile.sample_blocks); handed on in 50 ms blocks as a live source would.
        read = min(max(1, int(self.sample_rate * READ_SECONDS)), block_frames(self.info.channels))
        block = max(1, int(self.sample_rate * BLOCK_SECONDS))
        started = time.monotonic()
        sent = 0
        try:
            for decoded in mono_blocks(self.path, read, self.info):
                for offset in range(0, decoded.size, block):
                    if stop.is_set():
                        return
                    mono = decoded[offset : offset + block]
                    sent += mono.size
                    spoken: float | None = None  # at --pace fast it arrives when the worker has room for it
                    if self.pace == "realtime":  # a live source delivers a block once its last sample has been spoken
                        spoken = started + sent / self.sample_rate
                        delay = spoken - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    if not _wait_for_room(sink, mono.size, stop):  # a live source would have lost audio: the wait is lateness
                        return  # stopped (Ctrl-C): the stream was cut short, not ended
                    sink.ring.write(mono, arrived_at=spoken)
        except AudioInputError as error:
            sink.error = str(error)
        except Exception as error:  # noqa: BLE001 - a corrupt file mid-stream ends only this stream
            sink.error = f"{shown(self.path)}: read failed ({one_line(error)})"
        else:  # a WAV's header promising more, or a compressed file decoding short of its length (damaged, cut)
            sink.warning = "; ".join(w for w in (self.truncation, undecoded(self.path, self.info, sent)) if w) or None
        finally:
            sink.finished = True


class StdinSource:
    """Little-endian 16-bit PCM from a pipe: raw, or in a WAV stream (``arecord`` writes one unless given ``-t raw``)."""

    def __init__(self, sample_rate: int, channels: int = 1, stream: BinaryIO | None = None) -> None:
        if not 0 < channels <= MAX_STDIN_CHANNELS:
            raise AudioInputError(f"stdin: channels {channels} must be 1 to {MAX_STDIN_CHANNELS}")
        check_sample_rate(sample_rate, "stdin")
        self.sample_rate, self.channels = sample_rate, channels
        if stream is None and sys.stdin is None:  # started with stdin closed (`<&-`)
            raise AudioInputError("stdin: closed; pipe raw PCM into it, or choose another --source")
        if stream is None and sys.stdin.isatty():  # it would wait for keystrokes, saying nothing
            raise AudioInputError(f"stdin: a terminal, not a pipe; pipe PCM into it (arecord -f S16_LE -r {STDIN_SAMPLE_RATE} -t raw | ser-stream monitor --source stdin), or choose another --source")
        # Unbuffered: a reader blocked in a BufferedReader holds its lock, and a monitor stopped while the pipe
        # was still open then died at interpreter shutdown ("could not acquire lock for <stdin>", exit 134).
        self.stream = stream if stream is not None else open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)

    def run(self, sink: Sink, stop: threading.Event) -> None:
        frame_bytes = 2 * self.channels
        block_bytes = max(1, int(self.sample_rate * BLOCK_SECONDS)) * frame_bytes
        try:
            # of a raw stream, its first bytes: audio; of a WAV, how much audio its header says (chunks after it, a LIST of
            # tags as libsndfile writes, were played as noise), or None: to the end
            leftover, data_left = self._skip_wav_header()
            promised = data_left
            mixer = ChannelMixer()  # one for the stream: whatever a pipe read returns, the mix is the whole stream's
            while not stop.is_set():
                chunk = self.stream.read(block_bytes if data_left is None else min(block_bytes, data_left))
                arrived = time.monotonic()  # before any wait for room: a live pipe (arecord) has kept it waiting that long
                if data_left is not None:
                    data_left -= len(chunk)
                data = leftover + chunk
                usable = len(data) - len(data) % frame_bytes
                leftover = data[usable:]
                if usable:
                    pcm = np.frombuffer(data[:usable], dtype="<i2").reshape(-1, self.channels)
                    mono = mixer.mix(pcm.astype(np.float32) / 32768.0)
                    if not _wait_for_room(sink, mono.size, stop):
                        return  # stopped: what the pipe still held goes unheard, as after any stop
                    sink.ring.write(mono, arrived_at=arrived)
                if not chunk or data_left == 0:
                    break
            if leftover:
                add_warning(sink, f"stdin: ended with {len(leftover)} byte(s) that do not make a whole frame (ignored)")
            if promised is not None and data_left and not stop.is_set():  # as a file source says of a WAV cut short
                held, seconds = promised - data_left, frame_bytes * self.sample_rate
                if data_left >= MISSING_SECONDS * seconds:
                    add_warning(sink, f"stdin: truncated: its WAV header promises {promised / seconds:.2f} s of audio, the stream held "
                                f"{held // frame_bytes / self.sample_rate:.2f} s; only that was heard")
            if promised is not None and data_left == 0 and (unheard := self._unheard_after_data(promised % 2 == 1, stop)):
                add_warning(sink, f"stdin: {unheard} bytes after the WAV's audio were not heard (not a chunk of that WAV: a second file "
                            "joined to it? pipe one WAV at a time, or raw PCM)")
        except AudioInputError as error:
            sink.error = str(error)
        except OSError as error:  # e.g. stdin open for writing only, or a read error on the pipe
            sink.error = f"stdin: read failed ({error.strerror or type(error).__name__})"
        except Exception as error:  # noqa: BLE001 - anything else ends only this stream, in one line
            sink.error = f"stdin: read failed ({one_line(error)})"
        finally:
            sink.finished = True

    def _read(self, count: int) -> bytes:
        """``count`` bytes, or fewer only at the end of the stream (a pipe may return less per read)."""
        data = b""
        while len(data) < count:
            chunk = self.stream.read(count - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def _discard(self, count: int | None, stop: threading.Event) -> tuple[int, bool]:
        """Read and drop ``count`` bytes (None: to the end), a block at a time: how many there were, and whether any
        was not zero."""
        dropped, nonzero = 0, False
        while (count is None or dropped < count) and not stop.is_set():
            chunk = self.stream.read(1 << 16 if count is None else min(1 << 16, count - dropped))
            if not chunk:
                break
            dropped, nonzero = dropped + len(chunk), nonzero or bool(chunk.strip(b"\x00"))
        return dropped, nonzero

    def _unheard_after_data(self, padded: bool, stop: threading.Event) -> int:
        """Read what follows a WAV's audio to the end of the stream: the WAV's own chunks (a LIST of tags, as libsndfile
        writes) and zero padding are skipped; the bytes of anything else are counted, for a warning. They were never
        read: a second WAV joined on (`cat a.wav b.wav |`) went unheard without a word."""
        if padded:  # a chunk of odd size is followed by a pad byte
            self._read(1)
        while not stop.is_set():
            header = self._read(8)
            name = header[:4]
            if len(header) == 8 and all(0x20 <= byte < 0x7F for byte in name) and name not in (b"RIFF", b"RF64", b"RIFX", b"data"):
                size = struct.unpack("<I", header[4:])[0]
                skipped, _ = self._discard(size, stop)
                if skipped == size:
                    self._discard(size % 2, stop)
                    continue
                return len(header) + skipped  # cut short: not a chunk after all
            rest, nonzero = self._discard(None, stop)
            return len(header) + rest if nonzero or any(header) else 0
        return 0

    def _skip_wav_header(self) -> tuple[bytes, int | None]:
        """Read past a WAV header if the stream starts with one (and it matches --rate and --channels); return
        the bytes read that are audio (the start of a raw stream) and how many bytes of audio a WAV's header says
        follow (None: to the end), or raise ``AudioInputError`` naming both.
        A compressed or AIFF file is refused naming what it is: `cat call.flac |` was once heard as PCM, unsaid."""
        start = self._read(12)
        if (file_format := refused_file_format(start)) is None and (frame_length := mpeg_frame_length(start)) is not None:
            start += self._read(frame_length + 4 - len(start))  # an MP3 without a tag: its second frame's header too
            file_format = "MP3" if mpeg_frame_length(start[frame_length:], like=start) is not None else None
        if file_format is not None:
            as_file = "" if unread_format(start) is not None else ", or give the file as --source file:FILE"
            raise AudioInputError(
                f"stdin: the stream is {file_format}, not 16-bit PCM (raw or WAV); decode it first (ffmpeg -i FILE -f s16le -ac 1 "
                f"-ar {self.sample_rate} - | ser-stream monitor --source stdin --rate {self.sample_rate}){as_file}"
            )
        if len(start) < 12 or start[:4] not in (b"RIFF", b"RF64", b"RIFX") or start[8:12] != b"WAVE":
            return start, None  # raw PCM
        if start[:4] == b"RIFX":
            raise AudioInputError("stdin: the stream is a big-endian (RIFX) WAV; send little-endian 16-bit PCM (arecord -f S16_LE)")
        wav_format: tuple[int, int, int, int] | None = None  # format tag, channels, rate, bits per sample
        data_bytes: int | None = None
        while True:
            header = self._read(8)
            if len(header) < 8:
                raise AudioInputError("stdin: the stream ended inside its WAV header")
            name, size = header[:4], struct.unpack("<I", header[4:])[0]
            if name == b"data":  # the audio follows: as much as the header says, or to the end where it cannot know
                if start[:4] == b"RIFF" and 0 < size < STREAMED_DATA_SIZE:  # a pipe's writer puts 0 or 0x7FFFFFFF there
                    data_bytes = size
                break
            if size > WAV_CHUNK_LIMIT:
                raise AudioInputError(f"stdin: the stream's WAV header has a {size}-byte {shown(name.decode('latin-1'))} chunk; send raw PCM (arecord -t raw)")
            body = self._read(size + size % 2)  # chunks are padded to an even size
            if len(body) < size:
                raise AudioInputError("stdin: the stream ended inside its WAV header")
            if name == b"fmt " and size >= 16:
                tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
                if tag == 0xFFFE and size >= 26:  # WAVE_FORMAT_EXTENSIBLE: the format is the sub-format GUID's first two bytes
                    tag = struct.unpack("<H", body[24:26])[0]
                wav_format = (tag, channels, rate, bits)
        if wav_format is None:
            raise AudioInputError("stdin: the stream is a WAV without a fmt chunk before its data; send raw PCM (arecord -t raw)")
        tag, channels, rate, bits = wav_format
        if (tag, bits) == (1, 16) and (channels, rate) == (self.channels, self.sample_rate):
            return b"", data_bytes
        found = f"{rate} Hz, {describe_channels(channels)}, {describe_wav_format(tag, bits)}"
        expected = f"{self.sample_rate} Hz, {describe_channels(self.channels)}, 16-bit PCM"
        if (tag, bits) == (1, 16) and 0 < channels <= MAX_STDIN_CHANNELS:
            what_to_do = f"give --rate {rate} --channels {channels}, or pipe raw PCM (arecord -t raw)"
        elif (tag, bits) == (1, 16):  # 16-bit PCM already: the channel count is what is refused
            what_to_do = f"stdin takes 1 to {MAX_STDIN_CHANNELS} channels: mix or pick channels first (sox … remix 1-{MAX_STDIN_CHANNELS})"
        else:
            what_to_do = "send 16-bit PCM (arecord -f S16_LE, sox … -b 16 -e signed)"
        raise AudioInputError(f"stdin: the stream is a WAV of {found}, not the {expected} expected; {what_to_do}")


def mpeg_frame_length(header: bytes, like: bytes | None = None) -> int | None:
    """The length in bytes of the MPEG audio frame whose 4-byte header ``header`` starts with, or None if it is not a
    valid one (of the same version, layer and sample rate as the header ``like``, when given).

    Raw PCM can start with a frame sync (0xFFE…) by chance (a first sample of -1 does), and about a third of such
    starts have valid header fields too; so an MP3 without a tag is taken as one only when a second frame header
    follows the first where its length says (``like``).
    """
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version, layer, bitrate_index, rate_index = (header[1] >> 3) & 3, (header[1] >> 1) & 3, header[2] >> 4, (header[2] >> 2) & 3
    if version == 0b01 or layer == 0 or bitrate_index in (0, 0b1111) or rate_index == 0b11:  # reserved, reserved, free or bad, reserved
        return None
    if like is not None and (header[1] & 0x1E, header[2] & 0x0C) != (like[1] & 0x1E, like[2] & 0x0C):
        return None
    layer_number = 4 - layer  # the bits are 0b11 for layer I, 0b01 for layer III
    bitrate = 1000 * MPEG_BITRATES[version == 0b11][layer_number - 1][bitrate_index]
    sample_rate = MPEG_SAMPLE_RATES[version][rate_index]
    padding = (header[2] >> 1) & 1
    if layer_number == 1:
        return (12 * bitrate // sample_rate + padding) * 4
    samples_per_frame = 576 if layer_number == 3 and version != 0b11 else 1152  # MPEG-2 and 2.5 layer III: half
    return samples_per_frame // 8 * bitrate // sample_rate + padding


def describe_channels(count: int) -> str:
    return "1 channel" if count == 1 else f"{count} channels"


def describe_wav_format(tag: int, bits: int) -> str:
    """A WAV format tag and sample size in words: ``16-bit PCM``, ``32-bit float``, ``μ-law``."""
    names = {1: f"{bits}-bit PCM", 3: f"{bits}-bit float", 6: "A-law", 7: "μ-law"}
    return names.get(tag, f"format 0x{tag:04x}")


@dataclass(frozen=True)
class DevicePolicy:
    """What the microphone source does when the device fails or goes quiet mid-stream."""

    stall_seconds: float = 2.0  # no callback for this long: the device is treated as gone
    reopen_attempts: int = 3  # failed reopens in a row before the stream ends with an error
    reopen_delay_seconds: float = 1.0


class MicSource:
    """A sounddevice input stream whose callback only copies into the ring buffer.

    If PortAudio stops the stream (device unplugged, driver error) or the
    callbacks stop arriving, the device is reopened, up to
    ``DevicePolicy.reopen_attempts`` times in a row: once it delivers audio
    again the count starts over, so a device that glitches now and then is
    never given up. The warning at the end counts every failure and names the
    last. When it cannot be reopened the stream ends with an ``error`` (the
    monitor's exit status is then 1).
    """

    def __init__(self, device: str = "", sample_rate: int | None = None, policy: DevicePolicy | None = None, sounddevice: Any = None) -> None:
        sounddevice = sounddevice or import_sounddevice()
        # ASCII digits only: '²'.isdigit() is True but int('²') fails; such a device is a name to look up
        self.device: int | str | None = int(device) if device.isascii() and device.isdigit() else (device or None)
        try:
            info: Any = sounddevice.query_devices(self.device, "input")
        except Exception as error:  # noqa: BLE001 - PortAudio errors
            what = f"mic:{shown(device)}: no such input device" if device else "mic: no default input device"
            raise AudioInputError(f"{what} ({error}); `ser-stream devices` lists them") from None
        self.sample_rate = int(sample_rate or info["default_samplerate"])
        check_sample_rate(self.sample_rate, f"mic:{shown(device)}")
        self.sounddevice = sounddevice
        self.policy = policy or DevicePolicy()
        self.failures: list[str] = []
        self.heard_until: float | None = None  # time.monotonic() up to which the stream's time is accounted for: heard, or a gap
        self.unheard_seconds = 0.0  # time the device was away before it was reopened, marked as gaps
        self.name = f"mic:{shown(device)}" if device else "mic"  # in its lines: mic:1 and mic:2 once both said "mic:"

    def run(self, sink: Sink, stop: threading.Event) -> None:
        callback, delivered = make_callback(sink, count_blocks=True)
        attempts_left = self.policy.reopen_attempts
        try:
            while not stop.is_set():
                before = delivered[0]
                try:
                    reason = self._capture(sink, callback, delivered, stop)
                except Exception as error:  # noqa: BLE001 - opening or running the device failed
                    reason = f"audio device failed ({one_line(error)})"
                if reason is None:  # stopped on request
                    break
                self.failures.append(reason)
                if delivered[0] != before:  # it had worked: the attempts count failures in a row, not in the stream's life
                    attempts_left = self.policy.reopen_attempts  # (the 4th glitch in a month once lost the mic for good)
                if attempts_left == 0:
                    sink.error = f"{self.name}: {reason}; gave up after {self.policy.reopen_attempts} reopen attempt(s) in a row"
                    break
                attempts_left -= 1
                stop.wait(self.policy.reopen_delay_seconds)
            if self.failures and sink.error is None:
                sink.warning = f"{self.name}: the device failed {len(self.failures)} time(s) and was reopened ({self.failures[-1]})"
                if self.unheard_seconds:
                    sink.warning += f"; {self.unheard_seconds:.2f} s went unheard while it was away (its time still passed)"
        finally:
            sink.finished = True

    def _capture(self, sink: Sink, callback: Any, delivered: list[int], stop: threading.Event) -> str | None:
        """Run one input stream until stop (None) or until it fails (the reason).

        Opened again after a failure, it first marks the time since audio was
        last heard as a gap in the stream (``Sink.mark_gap``): stream time is
        the wall clock's, and without it every later time came early by the
        outage, and speech on both sides of it was heard as one utterance.
        """
        input_stream = self.sounddevice.InputStream(
            device=self.device, channels=1, samplerate=self.sample_rate, dtype="float32", callback=callback
        )
        opened_at = time.monotonic()
        if self.heard_until is not None:  # opened, not yet started: nothing writes while the gap is marked
            away = max(0, round((opened_at - self.heard_until) * self.sample_rate))
            sink.mark_gap(away)
            self.unheard_seconds += away / self.sample_rate
        self.heard_until = opened_at
        with input_stream as stream:
            seen = delivered[0]
            while not stop.wait(0.1):
                if delivered[0] != seen:  # looked at first: the last blocks before a failure are heard time too
                    seen, self.heard_until = delivered[0], time.monotonic()
                elif not stream.active:
                    return "the audio device stopped (unplugged or failed)"
                elif time.monotonic() - self.heard_until > self.policy.stall_seconds:
                    return f"no audio from the device for {self.policy.stall_seconds:g} s"
        return None


def make_callback(sink: Sink, count_blocks: bool = False) -> Any:
    """The PortAudio callback: copy the first channel into the ring; count input overflows. Nothing else.

    With ``count_blocks`` it also returns a one-element list the callback
    increments, so a watchdog can tell a device that went quiet.
    """
    ring = sink.ring
    delivered = [0]

    def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status and status.input_overflow:
            sink.input_overflows += 1
        ring.write(indata[:, 0])
        delivered[0] += 1

    return (callback, delivered) if count_blocks else callback


def import_sounddevice() -> Any:
    if "sounddevice" not in sys.modules:  # imported already: PortAudio started in this process
        check_portaudio_starts()
    try:
        import sounddevice
    except OSError as error:  # the library itself is missing
        raise AudioInputError(f"microphone input needs the PortAudio library ({error}); install libportaudio2") from None
    except Exception as error:  # noqa: BLE001 - sounddevice raises its PortAudioError at import when Pa_Initialize fails
        raise AudioInputError(
            f"microphone input: PortAudio could not start ({one_line(error)}); check that the sound system is running and an input device is present"
        ) from None
    return sounddevice


def check_portaudio_starts() -> None:
    """Import sounddevice (which starts PortAudio) in a child process first, with this one's module path, and raise
    ``AudioInputError`` if that child dies of a signal. A PortAudio that aborts while initialising (an ALSA without its
    alsa.conf, as in a slim container) killed the whole monitor, every other stream with it, and printed nothing.
    Any other failure is left to the import here, which names it."""
    probe = subprocess.run([sys.executable, "-c", "import sys; sys.path[:] = sys.argv[1:]; import sounddevice", *sys.path],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    if probe.returncode >= 0:
        return
    try:
        died_of = signal.Signals(-probe.returncode).name
    except ValueError:
        died_of = f"signal {-probe.returncode}"
    raise AudioInputError(
        f"microphone input: PortAudio could not start (it died of {died_of} while starting); check the sound system's "
        "configuration (ALSA: is /usr/share/alsa/alsa.conf there, or ALSA_CONFIG_PATH set to a missing file?)"
    )


def list_devices() -> list[str]:
    """One line per audio input device, as ``mic:DEVICE`` takes them: its index, its name escaped, channels and rate."""
    sounddevice = import_sounddevice()
    lines = []
    for index, device in enumerate(sounddevice.query_devices()):
        if device["max_input_channels"] > 0:
            lines.append(f"{index}: {shown(device['name'])} ({device['max_input_channels']} ch, {device['default_samplerate']:.0f} Hz)")
    return lines


def open_source(spec: SourceSpec, pace: str, rate: int, channels: int, mic_rate: int | None) -> Any:
    if spec.kind == "file":
        require_file(spec.target)
        return FileSource(spec.target, pace)
    if spec.kind == "stdin":
        return StdinSource(rate, channels)
    return MicSource(spec.target, mic_rate)
