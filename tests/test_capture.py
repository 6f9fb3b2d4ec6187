"""Live capture: the microphone at the sounddevice boundary (there is no sound card here), and stdin."""

from __future__ import annotations

import io
import struct
import sys
import threading
import time
import types
from collections.abc import Callable

import numpy as np
import pytest
import soundfile

from ser_stream.errors import AudioInputError
from ser_stream.ringbuffer import RingBuffer
from ser_stream.sources import (
    DevicePolicy,
    MicSource,
    StdinSource,
    _wait_for_room,
    add_warning,
    list_devices,
    make_callback,
    mpeg_frame_length,
)
from tests.conftest import stand_in_sounddevice


class Flags:
    """What PortAudio passes as ``status``: a CallbackFlags-like object, true if any flag is set."""

    def __init__(self, input_overflow: bool = False, input_underflow: bool = False) -> None:
        self.input_overflow, self.input_underflow = input_overflow, input_underflow

    def __bool__(self) -> bool:
        return self.input_overflow or self.input_underflow


class Sink:
    def __init__(self, capacity: int) -> None:
        self.ring = RingBuffer(capacity)
        self.input_overflows = 0
        self.finished = False
        self.error = None
        self.warning = None
        self.gaps: list[tuple[int, int]] = []  # (ring position, samples): time the source marked as passed unheard

    def mark_gap(self, samples: int) -> None:
        self.gaps.append((self.ring.written, samples))


def test_callback_copies_blocks_in_order_and_counts_input_overflows_and_no_other_flag():
    sink = Sink(4096)
    callback = make_callback(sink)
    blocks = [np.arange(i * 256, (i + 1) * 256, dtype=np.float32).reshape(-1, 1) / 10000 for i in range(8)]
    for index, block in enumerate(blocks):
        callback(block, 256, None, Flags(input_overflow=index in (3, 6), input_underflow=index == 5))
    assert np.allclose(sink.ring.read(), np.concatenate(blocks)[:, 0])
    assert sink.input_overflows == 2


def test_callback_never_blocks_when_the_reader_falls_behind():
    sink = Sink(1024)
    callback = make_callback(sink)
    for i in range(10):
        callback(np.full((256, 1), i, np.float32), 256, None, Flags())
    newest = sink.ring.read()
    assert newest.size == 1024 and newest[-1] == 9  # the newest audio is kept
    assert sink.ring.overrun_samples == 10 * 256 - 1024


def test_callback_allocates_nothing_the_size_of_a_block():
    """The real-time callback copies into the preallocated ring and returns: a copy of each block (a concatenate,
    an astype) would allocate its 16 kB on PortAudio's thread."""
    import tracemalloc

    block_samples = 4096
    sink = Sink(4 * block_samples)
    callback = make_callback(sink)
    blocks = [np.full((block_samples, 1), i / 100, np.float32) for i in range(20)]
    flags = [Flags(input_overflow=i == 7) for i in range(20)]
    callback(blocks[0], block_samples, None, flags[0])  # anything done once, on the first call
    tracemalloc.start()
    try:
        for block, status in zip(blocks[1:], flags[1:]):
            callback(block, block_samples, None, status)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < block_samples * 4  # less than one block of float32
    assert sink.input_overflows == 1 and np.array_equal(sink.ring.read()[-block_samples:], blocks[-1][:, 0])


class FakeSoundDevice:
    """Stands in for the ``sounddevice`` module (a third-party boundary): each opened stream
    delivers ``blocks`` callbacks, then is unplugged (``active`` false) or goes quiet, or is healthy; one that is
    "gone" cannot be opened (PortAudio's Pa_OpenStream fails in ``InputStream()``).

    It keeps the source's clock (``monotonic``): time passes as it delivers a block (10 ms each), once it has
    gone quiet as it delivers nothing, and by ``away_seconds`` before each open after the first (the device away
    until it is reopened). On the wall clock a test process paused for 0.3 s (a loaded CI host) was a stalled
    device, reopened once more than the test made it fail."""

    BLOCK_SECONDS = 0.01

    def __init__(self, sessions: list[str], blocks: int = 20, away_seconds: float = 0.0) -> None:
        self.sessions, self.blocks, self.opened, self.delivered = list(sessions), blocks, 0, 0
        self.now, self.away_seconds, self.open_calls = 0.0, away_seconds, 0

    def monotonic(self) -> float:
        return self.now

    def query_devices(self, device, kind):
        return {"default_samplerate": 16000}

    def InputStream(self, callback, **settings):  # noqa: N802 - the module's name
        fake = self
        behaviour = self.sessions.pop(0) if self.sessions else "gone"
        if self.open_calls:
            self.now += self.away_seconds
        self.open_calls += 1
        if behaviour == "gone":
            raise RuntimeError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")

        class Stream:
            active = True

            def __enter__(self):
                fake.opened += 1
                self.running = True
                self.thread = threading.Thread(target=self.deliver)
                self.thread.start()
                return self

            def deliver(self):
                index = 0
                while self.running and (index < fake.blocks or behaviour == "healthy"):
                    callback(np.full((160, 1), index / 100, np.float32), 160, None, Flags())
                    fake.now += fake.BLOCK_SECONDS  # after the block: a watchdog never sees the time without it
                    index += 1
                    time.sleep(0.005)
                fake.delivered += index
                if behaviour == "unplugged":
                    self.active = False  # what PortAudio does when the device disappears
                while self.running and behaviour == "stalls":  # quiet: time passes, no audio comes
                    fake.now += fake.BLOCK_SECONDS
                    time.sleep(0.005)

            def __exit__(self, *exc):
                self.running = False
                self.thread.join()
                return False

        return Stream()


def run_mic(fake: FakeSoundDevice, monkeypatch, until: Callable[[Sink], bool] = lambda sink: False) -> tuple[Sink, MicSource]:
    """The microphone source on ``fake``, its clock, until it ends by itself or ``until(sink)``, then stopped."""
    import ser_stream.sources

    monkeypatch.setattr(ser_stream.sources, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    source = MicSource("", None, DevicePolicy(stall_seconds=0.3, reopen_attempts=2, reopen_delay_seconds=0.05), sounddevice=fake)
    sink, stop = Sink(1 << 16), threading.Event()
    thread = threading.Thread(target=source.run, args=(sink, stop))
    thread.start()
    deadline = time.monotonic() + 60  # a hang, not slowness: the test's outcome waits on no wall-clock time
    while thread.is_alive() and not until(sink) and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join()
    return sink, source


def test_an_unplugged_device_that_cannot_be_reopened_ends_the_stream_with_one_error(monkeypatch):
    sink, source = run_mic(FakeSoundDevice(["unplugged"]), monkeypatch)
    assert sink.finished and sink.ring.available() == 20 * 160  # what it captured before is kept
    assert sink.error == (
        "mic: audio device failed (Error opening InputStream: Device unavailable [PaErrorCode -9985]); gave up after 2 reopen attempt(s) in a row"
    )
    assert source.failures[0] == "the audio device stopped (unplugged or failed)" and len(source.failures) == 3


def test_a_device_that_glitches_now_and_then_is_reopened_each_time_however_often(monkeypatch):
    """The reopen attempts counted over the stream's life: on the third glitch of a month (each reopen working) the
    microphone was given up for good, with a 'gave up' error."""
    fake = FakeSoundDevice(["unplugged"] * 5 + ["healthy"])
    sink, source = run_mic(fake, monkeypatch, until=lambda sink: fake.opened == 6 and sink.ring.available() > 5 * 20 * 160)
    assert sink.error is None and len(source.failures) == 5
    assert sink.warning.startswith("mic: the device failed 5 time(s) and was reopened (the audio device stopped (unplugged or failed))")


def test_a_failing_device_is_named_in_its_line():
    """With --source mic:1 --source mic:2, either one's failure read 'mic: audio device failed …'."""
    source = MicSource("2", None, DevicePolicy(stall_seconds=0.3, reopen_attempts=0, reopen_delay_seconds=0.05), sounddevice=FakeSoundDevice([]))
    sink = Sink(1 << 16)
    source.run(sink, threading.Event())
    assert sink.error is not None and sink.error.startswith("mic:2: audio device failed (Error opening InputStream")


def test_a_device_that_goes_quiet_is_reopened_and_the_stream_goes_on(monkeypatch):
    fake = FakeSoundDevice(["stalls", "healthy"], blocks=10)
    sink, source = run_mic(fake, monkeypatch, until=lambda sink: fake.opened == 2 and sink.ring.available() > 10 * 160)
    assert sink.error is None and sink.finished
    assert fake.opened == 2 and sink.ring.available() == fake.delivered * 160 > 10 * 160  # audio from both sessions
    assert sink.warning.startswith("mic: the device failed 1 time(s) and was reopened (no audio from the device for 0.3 s); ")
    assert sink.warning.endswith(" s went unheard while it was away (its time still passed)")  # the quiet, at least


def test_a_reopened_device_marks_the_time_it_was_away_as_a_gap_where_its_audio_stopped(monkeypatch):
    """Stream time is the wall clock's: the time from the last audio heard to the reopen once vanished, so every
    later time came that much early and speech on both sides of the outage was heard as one utterance."""
    fake = FakeSoundDevice(["unplugged", "stalls", "healthy"], away_seconds=1.5)
    sink, source = run_mic(fake, monkeypatch, until=lambda sink: fake.opened == 3 and sink.ring.written > 2 * 20 * 160)
    assert sink.error is None and len(source.failures) == 2
    (unplugged_at, unplugged_away), (stalled_at, stalled_away) = sink.gaps
    assert (unplugged_at, stalled_at) == (20 * 160, 2 * 20 * 160)  # where each session's audio stopped
    assert 1.5 * 16000 <= unplugged_away <= 1.51 * 16000  # away, and at most the block a look at the clock missed
    assert stalled_away >= (0.3 + 1.5) * 16000  # the quiet before it was given up for gone, too
    unheard = (unplugged_away + stalled_away) / 16000
    assert sink.warning == (f"mic: the device failed 2 time(s) and was reopened (no audio from the device for 0.3 s); {unheard:.2f} s "
                            "went unheard while it was away (its time still passed)")


def test_a_device_stopped_before_it_was_reopened_marks_no_gap(monkeypatch):
    fake = FakeSoundDevice(["unplugged"], away_seconds=1.5)
    sink, source = run_mic(fake, monkeypatch)  # it is never back
    assert sink.gaps == [] and sink.error is not None


class LookupRecorder:
    """A ``sounddevice`` stand-in that has one device, index 3, and records what it was asked for."""

    def __init__(self) -> None:
        self.asked: list[object] = []

    def query_devices(self, device=None, kind=None):
        self.asked.append(device)
        if device in (None, 3):
            return {"default_samplerate": 16000}
        raise ValueError(f"No input device matching {device!r}")  # what sounddevice says for an unknown name


def test_a_device_given_as_a_digit_that_is_not_ascii_is_a_name_to_look_up_not_a_crash():
    """`mic:²` once stopped every stream with a ValueError traceback: '²'.isdigit() is True, int('²') fails."""
    fake = LookupRecorder()
    assert MicSource("3", sounddevice=fake).device == 3
    with pytest.raises(AudioInputError) as refused:
        MicSource("²", sounddevice=fake)
    assert fake.asked == [3, "²"]
    assert str(refused.value) == "mic:²: no such input device (No input device matching '²'); `ser-stream devices` lists them"


def test_portaudio_that_cannot_start_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    """sounddevice raises its PortAudioError (not an OSError) at import when Pa_Initialize fails."""
    from ser_stream.cli import main

    stand_in_sounddevice(
        "class PortAudioError(Exception):\n    pass\n"
        "raise PortAudioError('Error initializing PortAudio: Host error [PaErrorCode -9999]')\n", tmp_path, monkeypatch
    )
    assert main(["devices"]) == 2
    assert capsys.readouterr().err == (
        "ser-stream: error: microphone input: PortAudio could not start (Error initializing PortAudio: Host error "
        "[PaErrorCode -9999]); check that the sound system is running and an input device is present\n"
    )
    with pytest.raises(AudioInputError, match=r"^microphone input: PortAudio could not start"):
        MicSource("")


def test_portaudio_that_aborts_while_starting_is_one_line_not_the_end_of_the_process(tmp_path, monkeypatch, capsys):
    """An ALSA without its alsa.conf (a slim container) makes PortAudio abort in Pa_Initialize: `devices`, and a
    monitor with a mic source beside others, died of SIGABRT (exit 134) and printed nothing."""
    from ser_stream.cli import main

    stand_in_sounddevice("import os\nos.abort()  # as PortAudio's failed assertion does\n", tmp_path, monkeypatch)
    assert main(["devices"]) == 2
    assert capsys.readouterr().err == (
        "ser-stream: error: microphone input: PortAudio could not start (it died of SIGABRT while starting); check the sound "
        "system's configuration (ALSA: is /usr/share/alsa/alsa.conf there, or ALSA_CONFIG_PATH set to a missing file?)\n"
    )
    with pytest.raises(AudioInputError, match=r"^microphone input: PortAudio could not start \(it died of SIGABRT"):
        MicSource("")


def test_device_names_are_listed_escaped_one_line_each(monkeypatch):
    """A device name comes from a driver or a USB descriptor: it must not drive the terminal or forge a line."""
    devices = [{"name": "USB Mic\x1b[2J\nfake: line", "max_input_channels": 1, "default_samplerate": 48000.0},
               {"name": "Speakers", "max_input_channels": 0, "default_samplerate": 48000.0},
               {"name": "Built-in", "max_input_channels": 2, "default_samplerate": 44100.0}]
    monkeypatch.setitem(sys.modules, "sounddevice", types.SimpleNamespace(query_devices=lambda: devices))
    assert list_devices() == [
        "0: 'USB Mic\\x1b[2J\\nfake: line' (1 ch, 48000 Hz)",
        "2: Built-in (2 ch, 44100 Hz)",
    ]


def test_devices_without_an_input_device_says_so_on_stderr_and_exits_1(monkeypatch, capsys):
    """It once printed "no input devices found" on stdout with exit 0, like a device of that name."""
    from ser_stream.cli import main

    outputs_only = [{"name": "Speakers", "max_input_channels": 0, "default_samplerate": 48000.0}]
    monkeypatch.setitem(sys.modules, "sounddevice", types.SimpleNamespace(query_devices=lambda: outputs_only))
    assert main(["devices"]) == 1
    assert capsys.readouterr() == ("", "ser-stream: error: no audio input devices found; check that a microphone is connected and the sound system sees it\n")
    monkeypatch.setitem(sys.modules, "sounddevice", types.SimpleNamespace(query_devices=lambda: [{**outputs_only[0], "max_input_channels": 1}]))
    assert main(["devices"]) == 0
    assert capsys.readouterr() == ("0: Speakers (1 ch, 48000 Hz)\n", "")


def read_stdin(data: bytes, sample_rate: int = 16000, channels: int = 1) -> Sink:
    """Everything a stdin source makes of ``data``, as its stream's sink holds it at the end."""
    sink = Sink(1 << 20)
    StdinSource(sample_rate, channels, stream=io.BytesIO(data)).run(sink, threading.Event())
    assert sink.finished
    return sink


def tone(seconds: float, sample_rate: int) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def wav_bytes(audio: np.ndarray, sample_rate: int, subtype: str | None = "PCM_16", file_format: str = "WAV", endian: str = "FILE") -> bytes:
    """``audio`` as a WAV file's bytes (int16 samples are written as they are), or another ``file_format``'s."""
    out = io.BytesIO()
    soundfile.write(out, audio, sample_rate, subtype=subtype, format=file_format, endian=endian)
    return out.getvalue()


def arecord_header(sample_rate: int, channels: int) -> bytes:
    """The header `arecord -f S16_LE` writes to a pipe: sizes it cannot know yet, a LIST chunk before the data."""
    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, 2 * channels * sample_rate, 2 * channels, 16)
    info = b"INFOISFT" + struct.pack("<I", 6) + b"alsa\x00\x00"
    return (b"RIFF" + struct.pack("<I", 0x7FFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"LIST" + struct.pack("<I", len(info)) + info + b"data" + struct.pack("<I", 0x7FFFFFFF - 80))


def test_a_wav_stream_on_stdin_has_its_header_skipped_not_heard_as_audio():
    """`arecord -f S16_LE -r 16000 | ser-stream monitor --source stdin` writes a WAV header unless told -t raw."""
    pcm = (tone(1.0, 16000) * 32767).astype("<i2")
    written = wav_bytes(pcm, 16000)
    size_at = written.index(b"data") + 4
    unsized = written[:size_at] + bytes(4) + written[size_at + 4 :]  # a pipe's writer may put 0 there: to the end
    extensible = wav_bytes(pcm, 16000, "PCM_16", "WAVEX")  # WAVE_FORMAT_EXTENSIBLE: 16-bit PCM by its sub-format
    for stream in (written, arecord_header(16000, 1) + pcm.tobytes(), unsized, extensible):
        sink = read_stdin(stream)
        assert sink.error is None and sink.warning is None
        np.testing.assert_array_equal(sink.ring.read(), pcm.astype(np.float32) / 32768.0)  # the samples, and only them


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (wav_bytes(np.zeros((4410, 2), np.float32), 44100),
         "stdin: the stream is a WAV of 44100 Hz, 2 channels, 16-bit PCM, not the 16000 Hz, 1 channel, 16-bit PCM expected; "
         "give --rate 44100 --channels 2, or pipe raw PCM (arecord -t raw)"),
        (wav_bytes(np.zeros(1600, np.float32), 16000, "FLOAT"),
         "stdin: the stream is a WAV of 16000 Hz, 1 channel, 32-bit float, not the 16000 Hz, 1 channel, 16-bit PCM expected; "
         "send 16-bit PCM (arecord -f S16_LE, sox … -b 16 -e signed)"),
        (wav_bytes(np.zeros(1600, np.float32), 16000, "ULAW"),
         "stdin: the stream is a WAV of 16000 Hz, 1 channel, μ-law, not the 16000 Hz, 1 channel, 16-bit PCM expected; "
         "send 16-bit PCM (arecord -f S16_LE, sox … -b 16 -e signed)"),
        (wav_bytes(np.zeros(1600, np.float32), 16000)[:30], "stdin: the stream ended inside its WAV header"),
        (wav_bytes(np.zeros(1600, np.float32), 16000, endian="BIG"),
         "stdin: the stream is a big-endian (RIFX) WAV; send little-endian 16-bit PCM (arecord -f S16_LE)"),
        (b"RIFF" + struct.pack("<I", 0x7FFFFFFF) + b"WAVE" + b"LIST" + struct.pack("<I", 1 << 30) + bytes(100),  # not read whole
         "stdin: the stream's WAV header has a 1073741824-byte LIST chunk; send raw PCM (arecord -t raw)"),
        (wav_bytes(np.zeros((160, 65), np.float32), 16000),
         "stdin: the stream is a WAV of 16000 Hz, 65 channels, 16-bit PCM, not the 16000 Hz, 1 channel, 16-bit PCM expected; "
         "stdin takes 1 to 64 channels: mix or pick channels first (sox … remix 1-64)"),
    ],
    ids=["rate-and-channels", "float", "mu-law", "cut-short", "big-endian", "huge-chunk", "65-channels"],
)
def test_a_wav_stream_that_is_not_what_was_asked_for_is_refused_naming_both(stream, reason):
    sink = read_stdin(stream)
    assert sink.error == reason
    assert sink.ring.available() == 0  # nothing of it was played as audio


def test_stereo_on_stdin_with_one_channel_wired_inverted_is_heard_not_cancelled():
    audio = tone(1.0, 16000)
    pcm = (audio * 32767).astype("<i2")
    sink = read_stdin(np.column_stack([pcm, -pcm]).tobytes(), channels=2)
    heard = sink.ring.read()
    assert heard.size == pcm.size
    assert np.sqrt(np.mean(np.square(heard))) == pytest.approx(np.sqrt(np.mean(np.square(audio))), rel=0.01)


def test_a_stdin_read_that_fails_in_any_way_ends_its_stream_with_one_error_line():
    """--channels 10000000 --rate 1000000 once asked the pipe for 1 TB at a time: MemoryError, a traceback, exit 0."""

    class Exhausted(io.BytesIO):
        def read(self, size=-1):
            raise MemoryError

    sink = Sink(1024)
    StdinSource(16000, 1, stream=Exhausted()).run(sink, threading.Event())
    assert sink.finished and sink.error == "stdin: read failed (MemoryError)"


def test_raw_pcm_on_stdin_ending_in_a_partial_frame_is_heard_whole_frames_and_the_rest_named():
    """Nothing is dropped unsaid: the byte of a frame the pipe never finished is named in the stream's warning."""
    sink = read_stdin(struct.pack("<h", 8192) + b"\x01")
    assert sink.error is None and sink.ring.read().tolist() == [0.25]
    assert sink.warning == "stdin: ended with 1 byte(s) that do not make a whole frame (ignored)"
    stereo = read_stdin(struct.pack("<hh", 8192, 8192) + b"\x01\x02\x03", channels=2)
    assert stereo.ring.read().tolist() == [0.25]
    assert stereo.warning == "stdin: ended with 3 byte(s) that do not make a whole frame (ignored)"


def test_raw_pcm_on_stdin_shorter_than_a_wav_header_is_still_audio():
    pcm = np.array([1000, -1000, 2000, -2000, 3000], "<i2")  # 10 bytes: fewer than the 12 read to look for a header
    np.testing.assert_array_equal(read_stdin(pcm.tobytes()).ring.read(), pcm.astype(np.float32) / 32768.0)


def encoded(file_format: str, subtype: str | None = None, endian: str = "FILE") -> bytes:
    """A second of tone as a file of ``file_format``'s bytes, as `cat call.flac |` would pipe them."""
    return wav_bytes(tone(1.0, 16000), 16000, subtype, file_format, endian)


ID3_TAG = b"ID3\x04\x00\x00\x00\x00\x00\x0a" + bytes(10)  # an ID3v2.4 tag of 10 bytes of padding, as taggers leave


@pytest.mark.parametrize(
    ("stream", "what"),
    [
        (encoded("FLAC"), "FLAC"),
        (encoded("OGG", "VORBIS"), "Ogg (Vorbis, Opus…)"),
        (encoded("OGG", "OPUS"), "Ogg (Vorbis, Opus…)"),
        (ID3_TAG + encoded("MP3"), "MP3"),
        (b"ID3\x02" + ID3_TAG[4:] + encoded("MP3"), "MP3"),  # ID3v2.2, as older iTunes tagged files
        (encoded("MP3"), "MP3"),  # libsndfile writes no tag: two frame headers in a row tell it
        (encoded("AIFF", "PCM_16"), "AIFF"),
        (encoded("AU", "PCM_16"), "AU (Sun/NeXT)"),
        (encoded("AU", "PCM_16", "LITTLE"), "AU (Sun/NeXT)"),
        (encoded("CAF", "PCM_16", "BIG"), "CAF (Core Audio Format)"),
        (encoded("CAF", "PCM_16", "LITTLE"), "CAF (Core Audio Format)"),
        (encoded("W64", "PCM_16"), "Wave64 (W64)"),
        (encoded("NIST", "PCM_16"), "NIST SPHERE"),
    ],
    ids=["flac", "ogg-vorbis", "ogg-opus", "mp3-id3", "mp3-id3v2.2", "mp3-untagged", "aiff", "au", "au-little-endian", "caf", "caf-little-endian", "w64", "nist"],
)
def test_a_compressed_or_other_non_wav_file_piped_into_stdin_is_refused_in_one_line_naming_what_it_is(stream, what):
    """`cat call.flac | ser-stream monitor --source stdin` was heard as 16-bit PCM: no utterance, no word, exit 0; so
    were an AU or a big-endian CAF (noise), and a W64, NIST or little-endian CAF (their headers played as audio)."""
    sink = read_stdin(stream)
    assert sink.error == (
        f"stdin: the stream is {what}, not 16-bit PCM (raw or WAV); decode it first "
        "(ffmpeg -i FILE -f s16le -ac 1 -ar 16000 - | ser-stream monitor --source stdin --rate 16000), or give the file as --source file:FILE"
    )
    assert sink.ring.available() == 0  # nothing of it was played as audio


@pytest.mark.parametrize("seed", range(20))
def test_raw_pcm_that_starts_like_an_mp3_frame_by_chance_is_heard_whole(seed):
    """A first sample like 0xFBFF (-1025) reads as an MPEG frame sync with valid fields; without a second frame header
    where the first frame's length ends, it is PCM, every byte of it."""
    first = b"\xff\xfb\x90\x64"  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz: a 417-byte frame
    assert mpeg_frame_length(first) == 417
    samples = np.random.default_rng(seed).integers(-3000, 3000, 8000).astype("<i2").tobytes()
    pcm = first + samples
    assert mpeg_frame_length(pcm[417:]) is None  # no second frame header where the first frame would end
    sink = read_stdin(pcm)
    assert sink.error is None and sink.warning is None
    np.testing.assert_array_equal(sink.ring.read(), np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0)


def test_raw_pcm_with_an_invalid_or_lone_frame_header_at_its_start_is_heard_not_refused():
    """The boundary: a sync with a reserved or free field is no header at all; two valid ones a frame apart are an MP3."""
    for first in (b"\xff\xff\xff\xff", b"\xff\xff\x00\x00", b"\xff\xeb\x90\x64", b"\xff\xf9\x90\x64", b"\xff\xfb\x9c\x64"):
        assert mpeg_frame_length(first) is None  # bitrate 0b1111; free bitrate; reserved version; reserved layer; reserved rate
        assert read_stdin(first + bytes(1000)).error is None
    frame = b"\xff\xfb\x90\x64" + bytes(413)
    assert read_stdin(frame + bytes(1000)).error is None  # one frame header, then silence: PCM
    assert read_stdin(frame + frame).error.startswith("stdin: the stream is MP3, not 16-bit PCM")
    assert read_stdin(frame[:300]).error is None  # the stream ends before a second header could: PCM


@pytest.mark.parametrize("seconds", [0.1, 0.13])  # a whole number of 50 ms reads, and not
def test_chunks_after_a_wav_streams_audio_are_not_played_as_audio(seconds):
    """libsndfile (soundfile, Audacity) writes its tags after the data: `cat call.wav |` played them as noise. The last
    read of the audio asks for what is left of it, not a whole block, whatever its length."""
    pcm = (tone(seconds, 16000) * 32767).astype("<i2").tobytes()
    tags = b"LIST" + struct.pack("<I", 26) + b"INFOISFT" + struct.pack("<I", 14) + b"libsndfile-1.2\x00\x00"
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    body = b"WAVE" + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm + tags
    sink = read_stdin(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert sink.error is None and sink.warning is None
    np.testing.assert_array_equal(sink.ring.read(), np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0)


def test_a_wav_on_stdin_that_ends_before_the_audio_its_header_promises_is_said_to_be_truncated():
    """A file source says so of a WAV cut short; on stdin (`curl … |`, a writer killed) it passed without a word."""
    pcm = (tone(3.0, 16000) * 32767).astype("<i2")
    whole = wav_bytes(pcm, 16000)
    sink = read_stdin(whole[: 44 + 16000 * 2])
    assert sink.error is None and sink.ring.available() == 16000
    assert sink.warning == "stdin: truncated: its WAV header promises 3.00 s of audio, the stream held 1.00 s; only that was heard"
    assert read_stdin(whole[:-2]).warning is None  # a sample short: a cut inside the last frame, as a file source judges


@pytest.mark.parametrize(("missing_seconds", "warned"), [(0.15, True), (0.1, True), (0.09, False)])
def test_a_wav_on_stdin_is_said_to_be_truncated_from_a_tenth_of_a_second_missing_as_a_file_is(missing_seconds, warned):
    """The threshold a file source uses (audiofile.MISSING_SECONDS): less missing is a cut inside the last frame or two."""
    whole = wav_bytes((tone(3.0, 16000) * 32767).astype("<i2"), 16000)
    sink = read_stdin(whole[: len(whole) - 2 * round(missing_seconds * 16000)])
    assert sink.error is None
    assert (sink.warning is not None and sink.warning.startswith("stdin: truncated: its WAV header promises 3.00 s")) == warned


def test_bytes_after_a_wav_streams_audio_that_are_no_chunk_of_it_are_said_to_be_unheard():
    """`cat a.wav b.wav |`: b.wav was never read, and nothing said so. The WAV's own chunks after its audio, and zero
    padding, are skipped quietly (test_chunks_after_a_wav_streams_audio_are_not_played_as_audio)."""
    first = wav_bytes((tone(1.0, 16000) * 32767).astype("<i2"), 16000)
    second = wav_bytes((tone(0.5, 16000) * 32767).astype("<i2"), 16000)
    sink = read_stdin(first + second)
    assert sink.error is None and sink.ring.available() == 16000  # the first, as before
    assert sink.warning == (f"stdin: {len(second)} bytes after the WAV's audio were not heard (not a chunk of that WAV: a second file "
                            "joined to it? pipe one WAV at a time, or raw PCM)")
    assert read_stdin(first + bytes(512)).warning is None

def fake_source_clock(monkeypatch) -> dict[str, float]:
    """The sources' clock, advanced by hand (``clock["now"]``) and by their own sleeps: no wait on the real one."""
    import ser_stream.sources as sources

    clock = {"now": 1000.0}
    fake_time = type("Time", (), {"monotonic": staticmethod(lambda: clock["now"]),
                                  "sleep": staticmethod(lambda seconds: clock.__setitem__("now", clock["now"] + seconds))})
    monkeypatch.setattr(sources, "time", fake_time)
    return clock


def ring_full_at_its_third_write(capacity: int, clock: dict[str, float], written: list) -> RingBuffer:
    """A ring with no room for the third block for 1.2 s of the source's 2 ms waits (the worker is behind); each write
    noted in ``written`` as (when written, its arrival as the source gives it, samples)."""

    class Ring(RingBuffer):
        checks_full = 600

        def free(self) -> int:
            if len(written) == 2 and self.checks_full:
                self.checks_full -= 1
                return 0
            return super().free()

        def write(self, samples, arrived_at=None):
            written.append((clock["now"], arrived_at, samples.size))
            return super().write(samples, arrived_at)

    return Ring(capacity)


def test_a_file_in_real_time_arrives_when_spoken_however_long_it_then_waits_for_room(tmp_path, monkeypatch):
    """A realtime file stands in for a live source, which would have overrun where the file waits for a worker that
    has fallen behind: its blocks were stamped when written, and that wait was left out of the latency."""
    import ser_stream.sources as sources

    path = tmp_path / "tone.wav"
    rate = 8000
    soundfile.write(path, (0.1 * np.sin(np.arange(rate + 100) / 5)).astype(np.float32), rate)  # 20 blocks and a bit
    clock = fake_source_clock(monkeypatch)
    written: list[tuple[float, float | None, int]] = []  # (when written, its arrival as the source gives it, samples)

    sink = Sink(2 * rate)
    sink.ring = ring_full_at_its_third_write(2 * rate, clock, written)
    sources.FileSource(str(path), pace="realtime").run(sink, threading.Event())
    assert sink.error is None and [size for _, _, size in written] == [400] * 20 + [100]  # 50 ms blocks, as a live source's
    assert all(when >= arrived for when, arrived, _ in written)  # none written before its last sample was spoken
    spoken = 0
    for _, arrived, size in written:
        spoken += size
        assert arrived == pytest.approx(1000.0 + spoken / rate)  # when its last sample was spoken
    third_written, third_spoken, _ = written[2]
    assert third_written >= third_spoken + 1.0  # written a second later: its latency counts that second
    assert sink.ring.arrival_of(2 * written[0][2]) == pytest.approx(third_spoken)


def test_stdin_audio_arrives_when_read_however_long_it_then_waits_for_room(monkeypatch):
    """A live pipe (arecord) kept waiting while the worker is behind has kept its audio waiting that long: the latency
    counts from the read, before any wait for room (protocol.md, latency_ms)."""

    rate = 16000
    clock = fake_source_clock(monkeypatch)
    read_at: list[float] = []  # when each read returned audio
    written: list[tuple[float, float | None, int]] = []  # (when written, its arrival as the source gives it, samples)

    class LivePipe(io.BytesIO):
        """Gives its audio as a live source does: a read returns once the block has been spoken."""

        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            clock["now"] += len(data) / 2 / rate
            if data:
                read_at.append(clock["now"])
            return data

    sink = Sink(2 * rate)
    sink.ring = ring_full_at_its_third_write(2 * rate, clock, written)
    pcm = (tone(0.5, rate) * 32767).astype("<i2").tobytes()
    StdinSource(rate, 1, stream=LivePipe(pcm)).run(sink, threading.Event())
    assert sink.error is None and sum(size for _, _, size in written) == rate // 2
    assert [arrived for _, arrived, _ in written] == pytest.approx(read_at[1:])  # after its first 12 bytes, looked at for a header
    third_written, third_read, _ = written[2]
    assert third_written >= third_read + 1.0  # written a second after it was read: its latency counts that second
    assert sink.ring.arrival_of(2 * written[0][2]) == pytest.approx(third_read)


def stopped_while_waiting_for_room(monkeypatch) -> threading.Event:
    """A stop (Ctrl-C: ``Sources.stop``) that comes while a patient source waits for the worker to make room: the
    source's first wait sets it."""
    import ser_stream.sources as sources

    stop = threading.Event()
    monkeypatch.setattr(sources, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=lambda seconds: stop.set()))
    return stop


def test_a_fast_file_stopped_while_waiting_for_room_writes_nothing_more_and_loses_nothing(tmp_path, monkeypatch):
    """A --pace fast file reads ahead until its ring is full, then waits for room. Stopped then, it wrote its block
    anyway: 50 ms of audio overwritten, said at each Ctrl-C as audio lost to overruns, for the stream and the monitor."""
    import ser_stream.sources as sources

    path = tmp_path / "long.wav"
    soundfile.write(path, tone(1.0, 8000), 8000)
    sink = Sink(1000)  # room for two 50 ms blocks (400 samples), not three
    sources.FileSource(str(path), pace="fast").run(sink, stopped_while_waiting_for_room(monkeypatch))
    assert sink.finished and sink.error is None
    assert (sink.ring.written, sink.ring.overrun_samples) == (800, 0)
    assert sink.warning is None  # cut short by the stop, not by the file: no end-of-file warning


def test_stdin_stopped_while_waiting_for_room_writes_nothing_more_and_loses_nothing(monkeypatch):
    """A pipe that gives audio faster than real time (`cat call.raw |`) waits for room as a file does; stopped then,
    it overwrote 50 ms of what the worker had not read, said as audio lost to overruns."""
    sink = Sink(2000)  # room for two 50 ms blocks at 16 kHz (800 samples), not three
    pcm = (tone(1.0, 16000) * 32767).astype("<i2").tobytes()
    StdinSource(16000, 1, stream=io.BytesIO(pcm)).run(sink, stopped_while_waiting_for_room(monkeypatch))
    assert sink.finished and sink.error is None
    assert sink.ring.written <= sink.ring.capacity and sink.ring.overrun_samples == 0  # two blocks (and a header's 12 bytes)
    assert sink.warning is None


def test_stdin_takes_1_to_64_channels_and_refuses_others_naming_the_count():
    """--channels: a frame of more than 64 is no recording (and would make each read enormous); 64 itself is taken."""
    assert StdinSource(16000, channels=64, stream=io.BytesIO()).channels == 64
    for channels in (0, 65):
        with pytest.raises(AudioInputError, match=rf"^stdin: channels {channels} must be 1 to 64$"):
            StdinSource(16000, channels=channels, stream=io.BytesIO())


def test_an_mpeg_frame_header_gives_its_length_with_its_padding_and_a_second_one_must_match_the_first():
    """An untagged MP3 on stdin is told by a second frame header where the first frame's length ends: that length counts
    the padding slot, and a second header of another version, layer or rate is no frame of the same stream."""
    first = b"\xff\xfb\x90\x64"  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz
    assert mpeg_frame_length(first) == 417
    assert mpeg_frame_length(b"\xff\xfb\x92\x64") == 418  # padded
    assert mpeg_frame_length(first, like=first) == 417
    assert mpeg_frame_length(b"\xff\xfb\x94\x64", like=first) is None  # 48 kHz
    assert mpeg_frame_length(b"\xff\xfd\x90\x64", like=first) is None  # layer II


def test_a_stereo_wav_on_stdin_cut_short_is_said_to_hold_the_seconds_it_held():
    """The seconds held count frames of both channels: a stereo stream cut at 1 s of 3 holds 1 s, not 2."""
    pcm = (np.column_stack([tone(3.0, 16000), tone(3.0, 16000)]) * 32767).astype("<i2")
    whole = wav_bytes(pcm, 16000)
    sink = read_stdin(whole[: 44 + 16000 * 4], channels=2)
    assert sink.error is None and sink.ring.available() == 16000
    assert sink.warning == "stdin: truncated: its WAV header promises 3.00 s of audio, the stream held 1.00 s; only that was heard"


def test_a_wav_on_stdin_stopped_before_its_end_is_not_said_to_be_truncated():
    """A stop (Ctrl-C) in the middle of a WAV cuts the stream short; the stream itself was whole, so no warning says it
    ended before the audio its header promises."""
    stop = threading.Event()

    class PipeStoppedAfterItsFirstBlock(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            if self.tell() > 44:  # past the header: the first block of audio has been read
                stop.set()
            return data

    sink = Sink(1 << 20)
    whole = wav_bytes((tone(3.0, 16000) * 32767).astype("<i2"), 16000)
    StdinSource(16000, 1, stream=PipeStoppedAfterItsFirstBlock(whole)).run(sink, stop)
    assert sink.finished and sink.error is None
    assert sink.ring.available() == 800  # the block read before the stop
    assert sink.warning is None


def test_a_file_in_real_time_stopped_while_it_waits_for_a_block_to_be_spoken_writes_nothing_more(tmp_path, monkeypatch):
    """Ctrl-C while a realtime file sleeps until its next block is due: the block it held is written, no later one (the
    ring has room, so only the source's own check of the stop ends it; without it the file played on to its end)."""
    import ser_stream.sources as sources

    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(1.0, 8000), 8000)
    stop = threading.Event()
    monkeypatch.setattr(sources, "time", types.SimpleNamespace(monotonic=lambda: 1000.0, sleep=lambda seconds: stop.set()))
    sink = Sink(1 << 20)
    sources.FileSource(str(path), pace="realtime").run(sink, stop)
    assert sink.finished and sink.error is None
    assert sink.ring.written == 400  # its first 50 ms block, held when the stop came
    assert sink.warning is None


class Trickle(io.BytesIO):
    """A pipe that returns at most ``most`` bytes per read, as a slow writer's pipe does."""

    def __init__(self, data: bytes, most: int) -> None:
        super().__init__(data)
        self.most = most

    def read(self, size: int | None = -1) -> bytes:
        return super().read(self.most if size is None or size < 0 else min(size, self.most))


@pytest.mark.parametrize("most", [1, 5, 7])
def test_a_wav_or_raw_stereo_on_stdin_that_trickles_in_a_few_bytes_per_read_is_heard_as_if_read_whole(most):
    """A pipe may return fewer bytes than asked: the header is gathered, frames split across reads are joined."""
    pcm = (np.column_stack([tone(0.2, 16000), tone(0.2, 16000)]) * 32767).astype("<i2")
    for data in (wav_bytes(pcm, 16000), pcm.tobytes()):
        sink = Sink(1 << 20)
        StdinSource(16000, 2, stream=Trickle(data, most)).run(sink, threading.Event())
        assert sink.finished and sink.error is None and sink.warning is None
        np.testing.assert_array_equal(sink.ring.read(), read_stdin(data, channels=2).ring.read())
        assert sink.ring.written == 3200


def test_raw_pcm_that_starts_with_riff_but_is_no_wav_is_heard_as_audio():
    """Only the whole 12 bytes of a WAV's start (RIFF, a size, WAVE) make a stream a WAV; raw PCM may spell RIFF by chance."""
    pcm = np.frombuffer(b"RIFF" + struct.pack("<I", 1000) + b"abcd", "<i2").copy()
    pcm = np.concatenate([pcm, (tone(0.1, 16000) * 32767).astype("<i2")])
    sink = read_stdin(pcm.tobytes())
    assert sink.error is None
    np.testing.assert_array_equal(sink.ring.read(), pcm.astype(np.float32) / 32768.0)


def chunk(name: bytes, body: bytes) -> bytes:
    """A RIFF chunk: its name, size and body, padded to an even length."""
    return name + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) % 2)


def test_a_wavs_own_chunks_after_its_audio_are_skipped_quietly_whatever_their_names_or_sizes():
    """Chunk names may hold a space ('id3 ', as ID3 tags in a WAV are named); an odd-sized chunk's pad byte is skipped
    before the next chunk."""
    whole = wav_bytes((tone(0.5, 16000) * 32767).astype("<i2"), 16000)
    after = chunk(b"id3 ", b"ID3\x03\x00\x00\x00\x00\x00\x01\x00") + chunk(b"LIST", b"INFOISFT" + struct.pack("<I", 5) + b"sox!\x00") + chunk(b"cue ", bytes(4))
    assert len(after) % 2 == 0 and b"\x00LIST" in after  # the 13-byte LIST chunk is followed by its pad byte
    sink = read_stdin(whole + after)
    assert sink.error is None and sink.ring.available() == 8000
    assert sink.warning is None


@pytest.mark.parametrize("after", [b"\x01\x02\x03", b"\x01" * 8, chunk(b"data", b"\x01\x02\x03\x04")],
                         ids=["three bytes", "eight bytes", "a second data chunk"])
def test_bytes_after_a_wavs_audio_that_are_no_chunk_of_it_are_counted_however_few(after):
    """A few stray bytes, or a second data chunk (audio this WAV's header did not point to), are said to be unheard."""
    whole = wav_bytes((tone(0.5, 16000) * 32767).astype("<i2"), 16000)
    sink = read_stdin(whole + after)
    assert sink.error is None and sink.ring.available() == 8000
    assert sink.warning == (f"stdin: {len(after)} bytes after the WAV's audio were not heard (not a chunk of that WAV: a second file "
                            "joined to it? pipe one WAV at a time, or raw PCM)")


@pytest.mark.parametrize("before_data", [chunk(b"LIST", b"INFOISFT" + struct.pack("<I", 5) + b"sox!\x00"), chunk(b"junk", bytes(1 << 20))],
                         ids=["odd-sized, padded", "of 1 MiB, the most read whole"])
def test_a_wav_streams_chunks_before_its_audio_are_skipped_to_the_byte(before_data):
    """A chunk of odd size is followed by a pad byte; one of up to WAV_CHUNK_LIMIT bytes is read whole and passed over."""
    pcm = (tone(0.5, 16000) * 32767).astype("<i2").tobytes()
    fmt = chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16))
    body = b"WAVE" + fmt + before_data + chunk(b"data", pcm)
    sink = read_stdin(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert sink.error is None and sink.warning is None
    np.testing.assert_array_equal(sink.ring.read(), np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0)


def test_a_wav_stream_whose_header_says_0_channels_is_not_told_to_give_channels_0():
    """--channels 0 would be refused in turn: a header of 0 channels gets the range stdin takes."""
    fmt = chunk(b"fmt ", struct.pack("<HHIIHH", 1, 0, 16000, 0, 0, 16))
    body = b"WAVE" + fmt + chunk(b"data", bytes(3200))
    sink = read_stdin(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert sink.error == ("stdin: the stream is a WAV of 16000 Hz, 0 channels, 16-bit PCM, not the 16000 Hz, 1 channel, 16-bit PCM "
                          "expected; stdin takes 1 to 64 channels: mix or pick channels first (sox … remix 1-64)")
    assert sink.ring.available() == 0


def test_an_mpeg_frame_header_needs_all_eleven_sync_bits():
    """0xFFE… starts a frame; a header with any of the sync's last three bits clear is no frame (raw PCM, then)."""
    assert mpeg_frame_length(b"\xff\xfb\x90\x64") == 417
    for second_byte in (0x1B, 0x7B, 0xBB, 0xDB):
        assert mpeg_frame_length(bytes([0xFF, second_byte, 0x90, 0x64])) is None


def test_an_mpeg_frame_header_of_layer_i_counts_4_byte_slots_and_a_second_header_must_be_of_the_same_version():
    """Layer I frames are counted in 4-byte slots; an MPEG-2 header after an MPEG-1 frame is no frame of its stream."""
    assert mpeg_frame_length(b"\xff\xff\x90\x64") == 312  # MPEG-1 layer I, 288 kbit/s, 44.1 kHz: 78 slots
    first = b"\xff\xfb\x90\x64"  # MPEG-1 layer III
    assert mpeg_frame_length(b"\xff\xf3\x90\x64") is not None  # MPEG-2 layer III: a frame of its own
    assert mpeg_frame_length(b"\xff\xf3\x90\x64", like=first) is None


def test_a_microphone_opened_at_a_rate_given_takes_that_rate_not_the_devices_default():
    """--mic-rate 8000 on a device whose default is 16 kHz: the stream is opened at 8 kHz."""
    assert MicSource("3", 8000, sounddevice=LookupRecorder()).sample_rate == 8000
    assert MicSource("3", sounddevice=LookupRecorder()).sample_rate == 16000


def test_a_patient_source_waits_only_while_the_ring_has_less_room_than_its_block():
    """A block that exactly fills the room left is written at once: waiting then for one more sample held a file
    source until the reader read, or, with no reader, for ever. Without room it waits, and a stop ends the wait."""
    sink = Sink(1000)
    sink.ring.write(np.zeros(600, np.float32))
    stopped = threading.Event()
    stopped.set()  # a wait would end at once, unwritten: only a block that needs none is written
    assert _wait_for_room(sink, 400, stopped) is True
    assert _wait_for_room(sink, 401, stopped) is False


def test_a_streams_warnings_are_joined_and_a_new_count_of_a_fault_replaces_the_one_it_said_before():
    """What a stream says at its end: each fault once, the latest count of each (a renumbered call that then went quiet
    once said only that it went quiet); a count whose earlier one was never said is added, not lost."""
    sink = Sink(16)
    add_warning(sink, "chunk numbers renumbered 1 time")
    add_warning(sink, "no media for 2 s")
    add_warning(sink, "chunk numbers renumbered 2 times", replacing="chunk numbers renumbered 1 time")
    add_warning(sink, "1 late chunk dropped", replacing="0 late chunks dropped")
    assert sink.warning == "chunk numbers renumbered 2 times; no media for 2 s; 1 late chunk dropped"
