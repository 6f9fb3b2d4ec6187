"""Audio sources: each runs its own thread (or PortAudio's) and only writes blocks into a ring buffer.

``file:PATH`` (read in blocks, never loaded whole; ``--pace realtime|fast``),
``stdin`` (raw s16le PCM), ``mic`` / ``mic:DEVICE`` (sounddevice).
``rtp:HOST:PORT`` (many calls, one stream each) lives in ``ser_stream.rtp``.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import numpy as np

from ser_stream.audiofile import audio_info, check_samples, require_file, sample_blocks, to_mono
from ser_stream.errors import AudioInputError, shown
from ser_stream.features import check_sample_rate
from ser_stream.ringbuffer import RingBuffer

BLOCK_SECONDS = 0.05
READ_SECONDS = 1.0  # file sources decode this much at a time


class Sink(Protocol):
    """What a source writes into: its stream's ring buffer and counters."""

    ring: RingBuffer
    input_overflows: int
    finished: bool
    error: str | None  # the stream failed
    warning: str | None  # something the user should know; the stream itself was fine


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # file, stdin, mic, rtp
    target: str = ""


def parse_source(text: str) -> SourceSpec:
    """``file:PATH``, ``stdin``, ``mic`` or ``mic:DEVICE`` → a spec; a clear error otherwise."""
    kind, _, target = text.partition(":")
    if kind == "file" and target:
        return SourceSpec("file", target)
    if kind == "stdin" and not target:
        return SourceSpec("stdin")
    if kind == "mic":
        return SourceSpec("mic", target)
    if kind == "rtp" and target.rpartition(":")[2].isdigit() and target.rpartition(":")[0]:
        return SourceSpec("rtp", target)
    raise AudioInputError(f"source {text!r} is not file:PATH, stdin, mic, mic:DEVICE or rtp:HOST:PORT")


def _wait_for_room(sink: Sink, count: int, stop: threading.Event) -> None:
    """Patient sources (files, pipes) never overrun: they wait for the reader."""
    while sink.ring.free() < count and not stop.is_set():
        time.sleep(0.002)


class FileSource:
    """Blocks of a WAV/FLAC file, mono, at the file's rate; realtime pace sleeps to match the clock."""

    def __init__(self, path: str, pace: str = "realtime") -> None:
        info = audio_info(path)
        self.path, self.pace, self.sample_rate = path, pace, int(info.samplerate)

    def run(self, sink: Sink, stop: threading.Event) -> None:
        # Decoded a second at a time (an MP3 whole: audiofile.sample_blocks), handed on in 50 ms
        # blocks as a live source would.
        read = max(1, int(self.sample_rate * READ_SECONDS))
        block = max(1, int(self.sample_rate * BLOCK_SECONDS))
        started = time.monotonic()
        sent = 0
        try:
            for samples in sample_blocks(self.path, read):
                decoded = to_mono(samples)
                check_samples(decoded, self.path)
                for offset in range(0, decoded.size, block):
                    if stop.is_set():
                        return
                    mono = decoded[offset : offset + block]
                    _wait_for_room(sink, mono.size, stop)
                    sink.ring.write(mono)
                    sent += mono.size
                    if self.pace == "realtime":
                        delay = started + sent / self.sample_rate - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
        except AudioInputError as error:
            sink.error = str(error)
        except Exception as error:  # noqa: BLE001 - a corrupt file mid-stream ends only this stream
            sink.error = f"{shown(self.path)}: read failed ({str(error).splitlines()[0]})"
        finally:
            sink.finished = True


class StdinSource:
    """Raw little-endian 16-bit PCM from a pipe."""

    def __init__(self, sample_rate: int, channels: int = 1, stream: BinaryIO | None = None) -> None:
        if channels <= 0:
            raise AudioInputError(f"stdin: channels {channels} must be positive")
        check_sample_rate(sample_rate, "stdin")
        self.sample_rate, self.channels = sample_rate, channels
        if stream is None and sys.stdin is None:  # started with stdin closed (`<&-`)
            raise AudioInputError("stdin: closed; pipe raw PCM into it, or choose another --source")
        self.stream = stream if stream is not None else sys.stdin.buffer

    def run(self, sink: Sink, stop: threading.Event) -> None:
        frame_bytes = 2 * self.channels
        block_bytes = max(1, int(self.sample_rate * BLOCK_SECONDS)) * frame_bytes
        leftover = b""
        try:
            while not stop.is_set():
                chunk = self.stream.read(block_bytes)
                if not chunk:
                    break
                data = leftover + chunk
                usable = len(data) - len(data) % frame_bytes
                leftover = data[usable:]
                pcm = np.frombuffer(data[:usable], dtype="<i2").reshape(-1, self.channels)
                mono = (pcm.astype(np.float32) / 32768.0).mean(axis=1)
                _wait_for_room(sink, mono.size, stop)
                sink.ring.write(mono)
            if leftover:
                sink.warning = f"stdin: ended with {len(leftover)} byte(s) that do not make a whole frame (ignored)"
        except OSError as error:  # e.g. stdin open for writing only, or a read error on the pipe
            sink.error = f"stdin: read failed ({error.strerror or type(error).__name__})"
        finally:
            sink.finished = True


@dataclass(frozen=True)
class DevicePolicy:
    """What the microphone source does when the device fails or goes quiet mid-stream."""

    stall_seconds: float = 2.0  # no callback for this long: the device is treated as gone
    reopen_attempts: int = 3  # tries to reopen it before the stream ends with an error
    reopen_delay_seconds: float = 1.0


class MicSource:
    """A sounddevice input stream whose callback only copies into the ring buffer.

    If PortAudio stops the stream (device unplugged, driver error) or the
    callbacks stop arriving, the device is reopened up to
    ``DevicePolicy.reopen_attempts`` times; each failure is counted and named in
    a warning at the end. When it cannot be reopened the stream ends with an
    ``error`` (the monitor's exit status is then 1).
    """

    def __init__(self, device: str = "", sample_rate: int | None = None, policy: DevicePolicy | None = None, sounddevice: Any = None) -> None:
        sounddevice = sounddevice or import_sounddevice()
        self.device: int | str | None = int(device) if device.isdigit() else (device or None)
        try:
            info: Any = sounddevice.query_devices(self.device, "input")
        except Exception as error:  # noqa: BLE001 - PortAudio errors
            what = f"mic:{device}: no such input device" if device else "mic: no default input device"
            raise AudioInputError(f"{what} ({error}); `ser-stream devices` lists them") from None
        self.sample_rate = int(sample_rate or info["default_samplerate"])
        check_sample_rate(self.sample_rate, f"mic:{device}")
        self.sounddevice = sounddevice
        self.policy = policy or DevicePolicy()
        self.failures: list[str] = []

    def run(self, sink: Sink, stop: threading.Event) -> None:
        callback, delivered = make_callback(sink, count_blocks=True)
        attempts_left = self.policy.reopen_attempts
        try:
            while not stop.is_set():
                try:
                    reason = self._capture(callback, delivered, stop)
                except Exception as error:  # noqa: BLE001 - opening or running the device failed
                    reason = f"audio device failed ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
                if reason is None:  # stopped on request
                    break
                self.failures.append(reason)
                if attempts_left == 0:
                    sink.error = f"mic: {reason}; gave up after {self.policy.reopen_attempts} reopen attempt(s)"
                    break
                attempts_left -= 1
                stop.wait(self.policy.reopen_delay_seconds)
            if self.failures and sink.error is None:
                sink.warning = f"mic: the device failed {len(self.failures)} time(s) and was reopened ({self.failures[-1]})"
        finally:
            sink.finished = True

    def _capture(self, callback: Any, delivered: list[int], stop: threading.Event) -> str | None:
        """Run one input stream until stop (None) or until it fails (the reason)."""
        with self.sounddevice.InputStream(
            device=self.device, channels=1, samplerate=self.sample_rate, dtype="float32", callback=callback
        ) as stream:
            seen, quiet_since = delivered[0], time.monotonic()
            while not stop.wait(0.1):
                if not stream.active:
                    return "the audio device stopped (unplugged or failed)"
                if delivered[0] != seen:
                    seen, quiet_since = delivered[0], time.monotonic()
                elif time.monotonic() - quiet_since > self.policy.stall_seconds:
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
    try:
        import sounddevice
    except OSError as error:
        raise AudioInputError(f"microphone input needs the PortAudio library ({error}); install libportaudio2") from None
    return sounddevice


def list_devices() -> str:
    sounddevice = import_sounddevice()
    lines = []
    for index, device in enumerate(sounddevice.query_devices()):
        if device["max_input_channels"] > 0:
            lines.append(f"{index}: {device['name']} ({device['max_input_channels']} ch, {device['default_samplerate']:.0f} Hz)")
    return "\n".join(lines) if lines else "no input devices found"


def open_source(spec: SourceSpec, pace: str, rate: int, channels: int, mic_rate: int | None) -> Any:
    if spec.kind == "file":
        require_file(spec.target)
        return FileSource(spec.target, pace)
    if spec.kind == "stdin":
        return StdinSource(rate, channels)
    return MicSource(spec.target, mic_rate)
