"""Bad audio files: a correct result or one clear line naming the file and the reason."""

from __future__ import annotations

import io
import json
import os
import re

import numpy as np
import pytest
import soundfile

from ser_stream.audiofile import read_audio
from ser_stream.clips import clip_spectrograms
from ser_stream.errors import AudioInputError
from ser_stream.features import spectrogram
from ser_stream.windows import WindowConfig
from tests.conftest import speechlike, spoken


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000])
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_any_rate_and_sample_format_gives_model_inputs(tmp_path, rate, subtype):
    path = tmp_path / f"speech_{rate}.wav"
    soundfile.write(path, speechlike(2.5, rate), rate, subtype=subtype)
    audio, sample_rate = read_audio(path)
    assert sample_rate == rate
    spectrograms = clip_spectrograms(audio, sample_rate, WindowConfig())
    assert spectrograms.shape[1:] == (260, 270) and np.all((spectrograms >= 0) & (spectrograms <= 1))


def test_multichannel_audio_is_averaged_to_mono(tmp_path):
    path = tmp_path / "six_channels.flac"
    soundfile.write(path, np.stack([speechlike(1.0, 16000)] * 6, axis=1), 16000)
    audio, _ = read_audio(path)
    assert audio.ndim == 1 and audio.size == 16000


def test_a_truncated_wav_header_is_named_with_the_reason(tmp_path):
    good = tmp_path / "good.wav"
    soundfile.write(good, speechlike(1.0, 16000), 16000)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:30])
    with pytest.raises(AudioInputError, match=r"truncated\.wav: not a readable audio file"):
        read_audio(truncated)


def test_a_truncated_flac_body_is_named_with_the_reason(tmp_path):
    good = tmp_path / "good.flac"
    soundfile.write(good, speechlike(2.0, 16000), 16000)
    truncated = tmp_path / "cut.flac"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(AudioInputError, match=r"cut\.flac: not a readable audio file \([^\n]+\)$"):  # libsndfile's reason
        read_audio(truncated)


def test_nan_samples_in_a_float_wav_are_refused_by_name(tmp_path):
    audio = speechlike(1.0, 16000)
    audio[100] = np.nan
    path = tmp_path / "nan.wav"
    soundfile.write(path, audio, 16000, subtype="FLOAT")
    with pytest.raises(AudioInputError, match=r"nan\.wav: contains NaN"):
        read_audio(path)


@pytest.mark.parametrize("in_memory_seconds", [600.0, 0.0], ids=["whole", "in blocks"])
def test_samples_no_recording_holds_are_refused_by_name_not_labelled_nan(tmp_path, shipped_model, in_memory_seconds):
    """A damaged float file once gave {"confidence": NaN, ...}: not JSON, and exit 0."""
    from ser_stream.classify import classify_file
    from ser_stream.inference import EmotionModel

    path = tmp_path / "damaged.wav"
    soundfile.write(path, speechlike(2.0, 16000) * 1e30, 16000, subtype="FLOAT")
    result = classify_file(path, EmotionModel(shipped_model, provider="cpu"), in_memory_seconds=in_memory_seconds)
    assert result.error is not None
    assert re.fullmatch(r"samples reach \d\.\de\+(29|30), beyond ±1e\+12: not audio \(a damaged float file\?\)", result.error), result.error
    scaled = tmp_path / "int32_scale.wav"  # floats written at an integer scale are audio, and classify
    soundfile.write(scaled, speechlike(2.0, 16000) * 2**31, 16000, subtype="FLOAT")
    assert classify_file(scaled, EmotionModel(shipped_model, provider="cpu"), in_memory_seconds=in_memory_seconds).utterance is not None
    with pytest.raises(AudioInputError, match="not audio"):
        spectrogram(speechlike(2.0, 8000) * 1e30, 8000)


def test_channels_wired_in_opposite_phase_are_heard_not_cancelled(tmp_path):
    path = tmp_path / "antiphase.wav"
    speech = speechlike(2.0, 16000)
    soundfile.write(path, np.stack([speech, -speech], axis=1), 16000, subtype="FLOAT")
    audio, _ = read_audio(path)
    assert np.allclose(np.abs(audio), np.abs(speech), atol=1e-4)
    np.testing.assert_array_equal(clip_spectrograms(audio, 16000, WindowConfig()), clip_spectrograms(speech, 16000, WindowConfig()))
    stereo = tmp_path / "stereo.wav"  # ordinary stereo is still the mean of its channels
    soundfile.write(stereo, np.stack([speech, 0.5 * speech], axis=1), 16000)
    assert np.allclose(read_audio(stereo)[0], 0.75 * speech, atol=1e-4)


class OddPipe(io.RawIOBase):
    """A pipe whose reads return odd amounts, as pipes do."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes, self.position, self.reads = data, sizes, 0, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = min(size, self.sizes[self.reads % len(self.sizes)])
        self.reads += 1
        out = self.data[self.position : self.position + size]
        self.position += len(out)
        return out


def test_a_channel_wired_inverted_under_a_little_noise_is_mixed_the_same_whatever_the_read_size_its_speech_the_right_way_up(tmp_path):
    """'The mean, or the louder channel where the mean cancels' was decided per block: whole file (classify), 1 s
    (file source), 50 ms or what a pipe read gave (stdin). With independent noise at -60 dBFS on each channel the
    choice flipped from block to block, and so did the speech's polarity, mid-word; classify and the monitor
    labelled different signals."""
    import threading
    from types import SimpleNamespace

    from ser_stream.ringbuffer import RingBuffer
    from ser_stream.sources import FileSource, StdinSource

    rate = 16000
    rng = np.random.default_rng(0)
    words = speechlike(4.0, rate) * (np.sin(2 * np.pi * 0.6 * np.arange(4 * rate) / rate) > 0)  # speech, then quiet
    noise = rng.standard_normal((words.size, 2)) * 10 ** (-60 / 20)
    pcm = np.clip(np.round((np.stack([words, -words], axis=1) + noise) * 32768), -32768, 32767).astype("<i2")
    path = tmp_path / "inverted.wav"
    soundfile.write(path, pcm, rate, subtype="PCM_16")

    def heard(source) -> np.ndarray:
        sink = SimpleNamespace(ring=RingBuffer(words.size), input_overflows=0, finished=False, error=None, warning=None)
        source.run(sink, threading.Event())
        assert sink.error is None
        return sink.ring.read()

    whole, _ = read_audio(path)
    assert np.array_equal(heard(FileSource(str(path), pace="fast")), whole)
    for sizes in ([3200], [4, 1000, 7, 2400]):
        assert np.array_equal(heard(StdinSource(rate, 2, stream=OddPipe(pcm.tobytes(), sizes))), whole)
    blocks = [slice(start, start + 800) for start in range(0, words.size, 800) if np.abs(words[start : start + 800]).max() > 0.01]
    assert all(np.dot(whole[block], words[block]) > 0 for block in blocks)  # the first channel's way up throughout
    assert np.sqrt(np.mean(np.square(whole - words))) < 2e-3  # nothing cancelled: the speech, and a little noise


def test_a_file_the_user_may_not_read_is_named_with_the_reason(tmp_path):
    import shutil
    import subprocess
    import sys

    path = tmp_path / "locked.wav"
    soundfile.write(path, speechlike(1.0, 16000), 16000)
    path.chmod(0)
    expected = f"{path}: cannot be opened (Permission denied)"
    if os.geteuid() != 0:
        with pytest.raises(AudioInputError) as refused:
            read_audio(path)
        assert str(refused.value) == expected
        return
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no user to be refused")
    tmp_path.chmod(0o755)
    probe = f"from ser_stream.audiofile import read_audio\ntry:\n    read_audio({str(path)!r})\nexcept Exception as error:\n    print(error)"
    shown = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", probe],
        capture_output=True, text=True, cwd=os.getcwd(), timeout=60,
    )
    if "No module named" in shown.stderr or "Permission denied" in shown.stderr and not shown.stdout:
        pytest.skip(f"the unprivileged user cannot run this checkout's Python: {shown.stderr.strip().splitlines()[-1]}")
    assert shown.stdout.strip() == expected


def test_an_empty_wav_is_refused_by_name(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioInputError, match=r"empty\.wav: contains no audio"):
        read_audio(path)


def test_a_zero_byte_file_is_refused_by_name(tmp_path):
    path = tmp_path / "zero.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioInputError, match=r"zero\.wav: the file is empty \(0 bytes\)"):  # was libsndfile's "Format not recognised"
        read_audio(path)


def flac_metadata_alone(path) -> bytes:
    """The FLAC at ``path`` up to the end of its metadata: what an encoder given no audio writes."""
    data, at = path.read_bytes(), 4  # after 'fLaC', blocks of a 4-byte header (last-block flag, 24-bit length) each
    while not data[at] & 0x80:
        at += 4 + int.from_bytes(data[at + 1 : at + 4], "big")
    return data[: at + 4 + int.from_bytes(data[at + 1 : at + 4], "big")]


ID3V2_TAG = b"ID3\x04\x00\x00\x00\x00\x00\x00"  # an empty ID3v2.4 tag, as an encoder puts before the audio


def no_audio(kind: str, path) -> None:
    """Write to ``path`` a file of ``kind`` that holds no audio frame, as ``ffmpeg -t 0`` writes one."""
    if kind == "opus":  # soundfile writes its two header pages and nothing more
        soundfile.write(path, np.zeros(0, np.float32), 48000, format="OGG", subtype="OPUS")
    elif kind == "flac":  # its metadata, and a length of 0: unknown, as a FLAC encoded to a pipe gives
        soundfile.write(path, speechlike(1.0, 16000), 16000)
        path.write_bytes(flac_metadata_alone(path))
        flac_saying_it_holds(path, None)
    elif kind == "mp3-tag":
        path.write_bytes(ID3V2_TAG)
    elif kind == "mp3-tags":  # an ID3v1 tag too, as taggers write both: 128 bytes from 'TAG', and no frame
        path.write_bytes(ID3V2_TAG + b"TAG" + b"A title".ljust(125, b"\0"))
    elif kind == "mp3-tag-footer":  # an ID3v2.4 tag flagged as having a 10-byte footer ('3DI'), which its size leaves out
        path.write_bytes(b"ID3\x04\x00\x10\x00\x00\x00\x00" + b"3DI\x04\x00\x10\x00\x00\x00\x00")
    else:  # a tag, then an Info/Xing frame counting 0 frames
        soundfile.write(path, speechlike(1.0, 16000), 16000, format="MP3")
        encoded = path.read_bytes()
        first_frame = bytearray(encoded[: encoded.index(encoded[:2], 4)])  # up to the next frame's sync
        count = first_frame.index(b"Xing") + 8  # after 'Xing' and its flags (frames counted: flag 1)
        first_frame[count : count + 4] = bytes(4)
        path.write_bytes(ID3V2_TAG + bytes(first_frame))


@pytest.mark.parametrize("kind", ["opus", "flac", "mp3-tag", "mp3-tags", "mp3-tag-footer", "mp3-info"])
def test_a_compressed_file_that_holds_no_audio_is_said_to_hold_none(tmp_path, shipped_model, capsys, kind):
    """As an empty WAV or Vorbis file is: an empty Opus was 'malformed', an empty MP3 was a file that 'does not exist',
    an empty FLAC 'read failed (Internal psf_fseek() failed.)', in classify and the monitor alike."""
    from ser_stream.cli import main

    path = tmp_path / f"empty.{kind.split('-')[0]}"
    no_audio(kind, path)
    assert main(["classify", "--json", "--model", str(shipped_model), str(path)]) == 1
    assert json.loads(capsys.readouterr().out) == {"path": str(path), "error": "contains no audio samples"}
    assert main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--ws", "127.0.0.1:0", "--source", f"file:{path}"]) == 2
    assert capsys.readouterr().err.endswith(f"ser-stream: error: {path}: contains no audio samples\n")


def test_a_flac_of_its_metadata_alone_that_promises_audio_is_said_to_hold_none_and_to_be_cut(tmp_path):
    from ser_stream.audiofile import audio_info

    path = tmp_path / "cut.flac"
    soundfile.write(path, speechlike(2.0, 16000), 16000)
    path.write_bytes(flac_metadata_alone(path))  # was 'not a readable audio file (Internal psf_fseek() failed.)'
    with pytest.raises(AudioInputError, match=r"^.*cut\.flac: contains no audio samples, though its header promises 2\.00 s of audio: damaged or cut short$"):
        audio_info(path)


def test_an_mp3_libsndfile_cannot_open_is_not_said_to_be_missing(tmp_path):
    """libsndfile's reason for an MP3 it cannot open is 'File does not exist or is not a regular file (possibly a
    pipe?).': said of a file that is there, it sent the user looking for the wrong fault."""
    from ser_stream.audiofile import audio_info

    whole, cut = tmp_path / "whole.mp3", tmp_path / "cut.mp3"
    soundfile.write(whole, speechlike(2.0, 16000), 16000, format="MP3")
    cut.write_bytes(whole.read_bytes()[:100])  # a download stopped in its first frame
    for read in (audio_info, read_audio):
        with pytest.raises(AudioInputError, match=r"^.*cut\.mp3: not a readable audio file \(empty, damaged, or a format libsndfile cannot read\)$"):
            read(cut)


def test_a_text_file_named_like_audio_is_refused_by_name(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("call notes, not audio\n" * 40)
    with pytest.raises(AudioInputError, match=r"notes\.wav: not a readable audio file \(Format not recognised\.\)"):
        read_audio(path)


def test_headerless_pcm_is_refused_saying_what_it_lacks(tmp_path):
    path = tmp_path / "call.raw"
    path.write_bytes((speechlike(1.0, 8000) * 32767).astype("<i2").tobytes())
    with pytest.raises(AudioInputError, match=r"^.*call\.raw: not a readable audio file \(headerless PCM, whose rate and format nothing says; "
                       r"give it a WAV or FLAC header, or pipe it to monitor --source stdin --rate R\)$"):
        read_audio(path)


def test_an_unsupported_codec_is_refused_by_name(tmp_path):
    path = tmp_path / "codec.wav"
    soundfile.write(path, speechlike(1.0, 16000), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    fmt = data.index(b"fmt ")
    data[fmt + 8 : fmt + 10] = (0x1234).to_bytes(2, "little")  # the format tag: a codec libsndfile does not know
    path.write_bytes(bytes(data))
    with pytest.raises(AudioInputError, match=r"codec\.wav: not a readable audio file \("):
        read_audio(path)


def test_a_file_name_with_a_line_break_still_gives_one_error_line(tmp_path, shipped_model, capsys):
    from ser_stream.cli import main

    path = tmp_path / "evil\nname.wav"
    path.write_bytes(b"")
    assert main(["classify", "--model", str(shipped_model), str(path)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "evil\\nname.wav" in error and "the file is empty" in error


def test_full_scale_clipping_still_classifies(tmp_path, shipped_model):
    from ser_stream import EMOTIONS
    from ser_stream.classify import classify_file
    from ser_stream.inference import EmotionModel

    path = tmp_path / "clipped.wav"
    soundfile.write(path, np.clip(speechlike(2.0, 16000) * 50, -1, 1), 16000, subtype="PCM_16")  # a square wave, near enough
    result = classify_file(path, EmotionModel(shipped_model, provider="cpu"))
    assert result.error is None and result.utterance is not None
    assert result.utterance.label in EMOTIONS and result.utterance.windows >= 1
    probabilities = np.array(list(result.utterance.probabilities.values()))
    assert np.all(np.isfinite(probabilities)) and abs(probabilities.sum() - 1) < 1e-3


def in_silence(sound: np.ndarray, seconds: float = 3.0, sample_rate: int = 16000) -> np.ndarray:
    """``sound`` placed in the middle of digital silence, off the 25 ms frame grid."""
    audio = np.zeros(int(seconds * sample_rate), np.float32)
    start = audio.size // 2 + 13
    audio[start : start + sound.size] = sound
    return audio


@pytest.mark.parametrize("offset", [0.002, -0.05, 0.3])
@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_a_dc_offset_changes_nothing_the_same_speech_gives_the_same_windows(offset, rate):
    """An offset of 0.002 (-54 dBFS) once kept all 3 s of a clip with 1 s of speech: 18 windows instead of 3."""
    speech = in_silence(speechlike(1.0, rate), seconds=3.0, sample_rate=rate)
    plain = clip_spectrograms(speech, rate, WindowConfig())
    shifted = clip_spectrograms(speech + np.float32(offset), rate, WindowConfig())
    assert shifted.shape == plain.shape and np.abs(shifted - plain).max() < 0.02


@pytest.mark.parametrize("in_memory_seconds", [600.0, 0.0], ids=["whole", "in blocks"])
def test_silence_or_a_click_is_refused_rather_than_given_a_label(tmp_path, shipped_model, in_memory_seconds):
    """A label for digital silence or 10 ms of sound would be the network's guess at nothing."""
    from ser_stream.classify import classify_file
    from ser_stream.inference import EmotionModel

    model = EmotionModel(shipped_model, provider="cpu")
    cases = {
        "silence.wav": (np.zeros(16000, np.float32), "silent throughout (no sound once any DC offset is removed): nothing to classify"),
        # A DC offset (a cheap sound card's) is not sound: the spectrogram removes it too.
        "offset_only.wav": (np.full(16000, 0.01, np.float32), "silent throughout (no sound once any DC offset is removed): nothing to classify"),
        # What many editors export as silence: ±1 step of 16-bit dither (written as PCM_16 below).
        "dither.wav": (np.random.default_rng(1).integers(-1, 2, 16000) / 32768, "silent throughout (its loudest 25 ms is at -94 dBFS, below the -80 dBFS floor of sound): nothing to classify"),
        "hiss_at_minus_85_dbfs.wav": (np.random.default_rng(2).standard_normal(16000) * 10 ** (-85 / 20), "silent throughout (its loudest 25 ms is at -87 dBFS, below the -80 dBFS floor of sound): nothing to classify"),  # half its power is above 4 kHz
        "click_on_an_offset.wav": (in_silence(speechlike(0.01, 16000)) + 0.01, "only 0.03 s of sound once silence is trimmed; at least 0.25 s is needed"),
        "click.wav": (speechlike(0.01, 16000), "only 0.01 s of sound once silence is trimmed; at least 0.25 s is needed"),
        "one_sample.wav": (np.full(1, 0.5, np.float32), "only 0.00 s of sound once silence is trimmed; at least 0.25 s is needed"),
        # Trimming keeps 0.1 s either side of the sound; the margins are not sound, so a click in silence is still a click.
        "click_in_silence.wav": (in_silence(speechlike(0.01, 16000)), "only 0.03 s of sound once silence is trimmed; at least 0.25 s is needed"),
        "burst_in_silence.wav": (in_silence(speechlike(0.1, 16000)), "only 0.12 s of sound once silence is trimmed; at least 0.25 s is needed"),
    }
    for name, (audio, reason) in cases.items():
        soundfile.write(tmp_path / name, audio, 16000, subtype="PCM_16" if name == "dither.wav" else "FLOAT")
        assert classify_file(tmp_path / name, model, in_memory_seconds=in_memory_seconds).error == reason, name
    soundfile.write(tmp_path / "quarter.wav", speechlike(0.3, 16000), 16000)
    assert classify_file(tmp_path / "quarter.wav", model, in_memory_seconds=in_memory_seconds).utterance is not None


def test_long_files_are_read_in_blocks_with_the_same_windows(clips_with_silence):
    from ser_stream.clips import stream_file_windows
    from ser_stream.features import spectrogram

    path, _ = clips_with_silence
    audio, rate = read_audio(path)
    whole = clip_spectrograms(audio, rate, WindowConfig())
    in_blocks = np.stack([spectrogram(w, 8000) for w in stream_file_windows(path, WindowConfig(), block_seconds=0.7)])
    assert np.array_equal(whole, in_blocks)


def test_a_file_read_in_blocks_or_played_as_a_source_has_its_header_read_once(tmp_path, monkeypatch):
    """stream_file_windows read a file's header four times (once, then in each of its three passes), FileSource twice."""
    import threading
    from types import SimpleNamespace

    from ser_stream import audiofile, clips, sources
    from ser_stream.ringbuffer import RingBuffer

    path = tmp_path / "speech.wav"
    soundfile.write(path, speechlike(3.0, 16000), 16000)
    reads: list[object] = []

    def counted(path: object, real=audiofile.audio_info):  # audio_info, counting its calls
        reads.append(path)
        return real(path)

    for module in (audiofile, clips, sources):
        monkeypatch.setattr(module, "audio_info", counted)
    assert sum(1 for _ in clips.stream_file_windows(path, WindowConfig(), block_seconds=0.7)) > 1
    assert len(reads) == 1
    reads.clear()
    sink = SimpleNamespace(ring=RingBuffer(4 * 16000), input_overflows=0, finished=False, error=None, warning=None)
    sources.FileSource(str(path), pace="fast").run(sink, threading.Event())
    assert sink.finished and sink.error is None and len(reads) == 1


def test_a_file_read_in_blocks_is_read_in_blocks_of_the_same_sample_count_whatever_its_rate_and_channels(tmp_path):
    """Blocks were block_seconds at the file's own rate and channel count: 30 s of 192 kHz 6-channel audio took 876 MB."""
    from ser_stream.audiofile import MEMORY_BUDGET_RATE
    from ser_stream.clips import file_source

    for rate, channels in ((16000, 1), (48000, 6), (8000, 2)):
        path = tmp_path / f"{rate}-{channels}.wav"
        soundfile.write(path, np.tile(speechlike(3.0, rate)[:, None], (1, channels)), rate)
        sizes = [block.size for block in file_source(path).blocks(0.5)]
        assert max(sizes) * channels == int(0.5 * MEMORY_BUDGET_RATE) // channels * channels, (rate, channels)
        assert sum(sizes) == 3 * rate  # every frame, once


def test_a_file_source_reads_no_more_samples_at_a_time_than_classify_whatever_its_channels(tmp_path, monkeypatch):
    """The monitor read a second of frames whatever the channel count: 64 channels at 1 MHz took 256 MB a read, a
    source each, where classify reads 30 s of 16 kHz mono's samples at a time."""
    import threading

    from ser_stream import audiofile, sources
    from ser_stream.audiofile import MEMORY_BUDGET_RATE
    from tests.test_capture import Sink

    path = tmp_path / "64-channels.wav"
    soundfile.write(path, np.tile(speechlike(1.5, 16000)[:, None], (1, 64)), 16000)
    read_sizes: list[int] = []

    def measured(*arguments: object, real=audiofile.sample_blocks):  # sample_blocks, noting each block's samples
        for block in real(*arguments):
            read_sizes.append(block.size)
            yield block

    monkeypatch.setattr(audiofile, "sample_blocks", measured)  # what the file source's mono_blocks reads through
    sink = Sink(1 << 20)
    sources.FileSource(str(path), pace="fast").run(sink, threading.Event())
    assert sink.error is None and sink.ring.available() == 24000  # every frame, once
    assert max(read_sizes) <= 30 * MEMORY_BUDGET_RATE


def test_a_file_larger_than_memory_should_hold_is_never_loaded_whole(tmp_path):
    import tracemalloc

    from ser_stream.clips import stream_file_windows

    minute = np.tile(speechlike(2.0, 16000), 30)

    def peak_bytes(minutes: int) -> tuple[int, int]:
        path = tmp_path / f"{minutes}_minutes.wav"
        with soundfile.SoundFile(path, "w", 16000, 1, "PCM_16") as out:
            for _ in range(minutes):
                out.write(minute)
        tracemalloc.start()
        windows = sum(1 for _ in stream_file_windows(path, WindowConfig(), block_seconds=10.0))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return windows, peak

    (short_windows, short_peak), (long_windows, long_peak) = peak_bytes(2), peak_bytes(10)
    assert (short_windows, long_windows) == ((120 - 2) * 2 + 1, (600 - 2) * 2 + 1)  # every 0.5 s hop (nothing to trim)
    assert long_peak < 10 * minute.size * 4 / 5  # far below the decoded file (38 MB)
    assert long_peak < short_peak * 1.3  # and it does not grow with the file's length


def test_a_long_file_whose_sound_fits_one_window_is_not_loaded_whole_either(tmp_path):
    """A 1.5 s burst in 20 minutes of silence: the one padded window is cut from the burst's span alone."""
    import tracemalloc

    from ser_stream.clips import stream_file_windows

    path = tmp_path / "burst_in_twenty_minutes.wav"
    with soundfile.SoundFile(path, "w", 16000, 1, "PCM_16") as out:
        for minute in range(20):
            block = np.zeros(60 * 16000, np.float32)
            if minute == 10:
                block[:24000] = speechlike(1.5, 16000)
            out.write(block)
    tracemalloc.start()
    (window,) = stream_file_windows(path, WindowConfig(), block_seconds=10.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert window.size == WindowConfig().window_samples
    assert peak < 20 * 60 * 8000 * 4 / 3  # the decoded file at 8 kHz is 38 MB (loaded whole, the peak was 77 MB); blocks are a few


def test_classify_in_blocks_agrees_with_classify_in_memory(clips_with_silence, shipped_model):
    from ser_stream.classify import classify_file
    from ser_stream.inference import EmotionModel

    path, _ = clips_with_silence
    model = EmotionModel(shipped_model, provider="cpu")
    whole, in_blocks = classify_file(path, model), classify_file(path, model, in_memory_seconds=0.0)
    assert whole.utterance is not None and in_blocks.utterance is not None
    assert whole.utterance.label == in_blocks.utterance.label and whole.utterance.windows == in_blocks.utterance.windows
    assert all(abs(whole.utterance.probabilities[k] - in_blocks.utterance.probabilities[k]) < 1e-5 for k in whole.utterance.probabilities)


@pytest.mark.parametrize(
    "options, reason",
    [
        (["--ws", "127.0.0.1:99999"], "--ws '127.0.0.1:99999' is not HOST:PORT (a port from 0 to 65535)"),
        (["--min-silence", "-1"], "silence that ends an utterance (--min-silence) of -1.0 s is outside 0.1–60 s"),
        (["--min-silence", "nan"], "silence that ends an utterance (--min-silence) of nan s is outside 0.1–60 s"),
        # under the 0.1 s kept after speech it was taken as 0.1 s, unsaid (a 0.08 s pause at 0.05 joined two utterances)
        (["--min-silence", "0.05"], "silence that ends an utterance (--min-silence) of 0.05 s is outside 0.1–60 s"),
        (["--voice-floor", "0.5"], "Silero score below which WebRTC's voice detector is not asked (--voice-floor) of 0.5 must be above 0 and at most Silero's silence threshold (0.35)"),
        (["--voice-floor", "nan"], "Silero score below which WebRTC's voice detector is not asked (--voice-floor) of nan must be above 0 and at most Silero's silence threshold (0.35)"),
        (["--max-utterance", "0"], "longest utterance (--max-utterance) of 0.0 s must be above the shortest speech kept (0.25 s) and at most 600 s"),
        (["--window", "1"], "--window 1.0: the model was trained on 2.0 s windows; leave --window out"),
        (["--hop", "0"], "--hop 0.0: hop of 0.0 s must be at least 0.01 s and at most the window"),
        (["--rate", "8000"], "--rate 8000: only with --source stdin (other sources carry their own)"),
        (["--samplerate", "48000"], "--samplerate 48000: only with --source mic (other sources carry their own)"),
        (["--source", "stdin", "--source", "stdin"], "--source stdin is given twice: one pipe cannot feed two streams"),
        (["--source", "rtp:999.1.1.1:5004"], "rtp source '999.1.1.1': not an IPv4 address"),
        (["--ws", "256.0.0.1:8765"], "--ws '256.0.0.1': not an IPv4 address"),
        (["--source", "stdin", "--max-streams", "1"], "2 sources but --max-streams 1: raise --max-streams"),
        (["--jitter-packets", "10"], "--jitter-packets 10: only with an rtp: source"),
        # the default value typed out was taken unsaid without calls, any other refused
        (["--jitter-packets", "5"], "--jitter-packets 5: only with an rtp: source"),
        (["--rtp-allow", "10.0.5.0/24"], "--rtp-allow 10.0.5.0/24: only with an rtp: source"),
        (["--source", "rtp:127.0.0.1:0", "--rtp-allow", "2001:db8::/32"], "rtp:127.0.0.1:0: hears only IPv4 senders, and no --rtp-allow network is IPv4"),
        (["--source", "rtp:[::1]:0", "--rtp-allow", "10.0.5.0/24"], "rtp:[::1]:0: hears only IPv6 senders, and no --rtp-allow network is IPv6"),
        (["--call-idle", "5"], "--call-idle 5.0: only with calls (an rtp: source, or --ingest)"),
        (["--call-idle", "2"], "--call-idle 2.0: only with calls (an rtp: source, or --ingest)"),
        (["--ingest", "--call-idle", "100000"], "--call-idle 100000.0: at most 60 s (an RTP sequence gap longer than that reads as a restarted numbering)"),
        # one without the other once served plain ws:// unsaid, the key (or certificate) given for nothing
        (["--tls-key", "key.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
        (["--max-ingest-connections", "5"], "--max-ingest-connections 5: only with --ingest"),
        (["--source", "rtp:127.0.0.1:0", "--await-subscribers", "1"], "--await-subscribers 1: holds back files and pipes, which can wait; calls (rtp:, --ingest) cannot"),
        (["--ingest", "--await-subscribers", "1"], "--await-subscribers 1: holds back files and pipes, which can wait; calls (rtp:, --ingest) cannot"),
        (["--token", ""], "--token is empty: an empty token would let anyone in; give the token, or leave the option out"),
        # an Authorization header's value is read stripped: header clients were refused while ?token= got in
        (["--token", " padded "], "--token has spaces at its start or end, which no Authorization header can carry; remove them"),
        (["--allow-host", ""], "--allow-host '': not a host name or address (NAME, or an address without port)"),
        (["--allow-host", "bad host"], "--allow-host 'bad host': not a host name or address (NAME, or an address without port)"),
        (["--allow-origin", "notaurl"], "--allow-origin 'notaurl': not an origin (http:// or https://, a host, maybe a port, no path)"),
        (["--allow-origin", "https://wall.example/board"], "--allow-origin 'https://wall.example/board': not an origin (http:// or https://, a host, maybe a port, no path)"),
    ],
)
def test_a_nonsense_monitor_option_is_one_line_naming_it(tmp_path, capsys, options, reason):
    from ser_stream.cli import main

    path = tmp_path / "speech.wav"
    soundfile.write(path, speechlike(1.0, 16000), 16000)
    assert main(["monitor", "--no-dashboard", "--source", f"file:{path}", *options]) == 2
    assert capsys.readouterr().err == f"ser-stream: error: {reason}\n"


@pytest.mark.parametrize(
    ("options", "setting", "taken"),
    [(["--max-streams", "1"], lambda options: options.config.max_streams, 1),  # one file, one stream: it fits
     (["--ingest", "--call-idle", "60"], lambda options: options.rtp.idle_seconds, 60.0)],  # the longest allowed
    ids=["max-streams", "call-idle"],
)
def test_a_monitor_option_at_the_edge_of_its_range_is_taken(options, setting, taken):
    from ser_stream.cli import _monitor_command_options, build_parser

    assert setting(_monitor_command_options(build_parser().parse_args(["monitor", "--source", "file:call.wav", *options]))) == taken


def test_call_idle_just_past_60_s_is_refused():
    """The documented bound is 60 s (MAX_DROPOUT packets of 20 ms), not 60 s and a little."""
    from ser_stream.cli import _monitor_command_options, build_parser
    from ser_stream.errors import SerStreamError

    with pytest.raises(SerStreamError) as refused:
        _monitor_command_options(build_parser().parse_args(["monitor", "--ingest", "--call-idle", "60.5"]))
    assert str(refused.value) == "--call-idle 60.5: at most 60 s (an RTP sequence gap longer than that reads as a restarted numbering)"


@pytest.mark.parametrize("value", ["", " "], ids=["empty", "blank"])
def test_an_empty_token_in_the_environment_is_refused_not_taken_for_no_token(tmp_path, capsys, monkeypatch, value):
    """An unset variable in a service's EnvironmentFile (SER_STREAM_TOKEN=) turned authentication off, unsaid;
    a blank one was taken as a one-space token."""
    from ser_stream.cli import main

    monkeypatch.setenv("SER_STREAM_TOKEN", value)
    path = tmp_path / "speech.wav"
    soundfile.write(path, speechlike(1.0, 16000), 16000)
    assert main(["monitor", "--no-dashboard", "--source", f"file:{path}"]) == 2
    assert capsys.readouterr().err == (
        "ser-stream: error: SER_STREAM_TOKEN is set but empty: an empty token would let anyone in; give the token, or unset the variable\n"
    )


def test_a_token_in_the_environment_with_spaces_at_its_ends_is_refused(tmp_path, capsys, monkeypatch):
    """A stray space in an EnvironmentFile locked out every client sending the token in a header (read stripped),
    while browsers sending ?token= got in."""
    from ser_stream.cli import main

    monkeypatch.setenv("SER_STREAM_TOKEN", "padded ")
    path = tmp_path / "speech.wav"
    soundfile.write(path, speechlike(1.0, 16000), 16000)
    assert main(["monitor", "--no-dashboard", "--source", f"file:{path}"]) == 2
    assert capsys.readouterr().err == (
        "ser-stream: error: SER_STREAM_TOKEN has spaces at its start or end, which no Authorization header can carry; remove them\n"
    )


@pytest.mark.parametrize(
    "options, reason",
    [
        (["--max-batch", "0"], "argument --max-batch: 0 must be at least 1"),
        (["--max-streams", "0"], "argument --max-streams: 0 must be at least 1"),
        (["--subscriber-queue", "0"], "argument --subscriber-queue: 0 must be at least 1"),
        (["--await-subscribers", "-1"], "argument --await-subscribers: -1 must be at least 0"),
        (["--channels", "two"], "argument --channels: 'two' is not a whole number"),
        (["--voice-floor", "loud"], "argument --voice-floor: 'loud' is neither a number nor off"),
        (["--call-idle", "0"], "argument --call-idle: 0.0 s must be above 0"),
        (["--rate", "100000000"], "argument --rate: 100000000 Hz is outside 1000–1000000 Hz"),
        (["--rate", "3"], "argument --rate: 3 Hz is outside 1000–1000000 Hz"),
        (["--jitter-packets", "1000"], "argument --jitter-packets: 1000 must be at most 50"),
        (["--rtp-allow", "10.0.5.1/24"], "argument --rtp-allow: '10.0.5.1/24': 10.0.5.1/24 has host bits set"),
        (["--rtp-allow", "pbx.example"], "argument --rtp-allow: 'pbx.example': 'pbx.example' does not appear to be an IPv4 or IPv6 network"),
        (["--rtp-allow", "fe80::1%eth0"], "argument --rtp-allow: 'fe80::1%eth0': a scope id (%…) cannot be matched; senders are matched by address alone"),
        (["--record", ""], "argument --record: '' names no file; give the database's path"),  # was '--record .: …'
    ],
)
def test_a_count_or_duration_out_of_range_is_a_usage_line(capsys, options, reason):
    from ser_stream.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["monitor", "--no-dashboard", "--source", "stdin", *options])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == f"ser-stream monitor: error: {reason}\n"  # the line alone, no usage block


@pytest.mark.parametrize(
    "arguments, reason",
    [
        (["classify", "--model", "", "a.wav"], "argument --model: '' names no file; give the model's path"),  # was '.: is a folder, not a model file'
        (["monitor", "--source", "stdin", "--model", " "], "argument --model: ' ' names no file; give the model's path"),
        (["demo", "--model", ""], "argument --model: '' names no file; give the model's path"),
        # both empty (unset variables) once served plain ws:// without a word
        (["monitor", "--source", "stdin", "--tls-cert", "", "--tls-key", ""], "argument --tls-cert: '' names no file; give the certificate's path"),
        (["monitor", "--source", "stdin", "--tls-cert", "cert.pem", "--tls-key", ""], "argument --tls-key: '' names no file; give the private key's path"),
    ],
    ids=["classify-model", "monitor-model-blank", "demo-model", "tls-both", "tls-key"],
)
def test_an_empty_path_is_a_usage_line_not_read_as_the_current_folder(capsys, arguments, reason):
    """``Path('')`` is ``.``: ``--model ''`` was reported as the folder ``.``, not as a path left empty."""
    from ser_stream.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(arguments)
    assert stopped.value.code == 2
    assert capsys.readouterr().err == f"ser-stream {arguments[0]}: error: {reason}\n"


@pytest.mark.parametrize(
    "sources, reason",
    [
        (["--source", "rtp:127.0.0.1:0", "--pace", "fast"], "--pace fast: only with --source file:PATH (live sources, calls and pipes arrive at their own pace)"),
        (["--ingest", "--pace", "fast"], "--pace fast: only with --source file:PATH (live sources, calls and pipes arrive at their own pace)"),
        (["--source", "stdin:"], "source 'stdin:' is not file:PATH, stdin, mic, mic:DEVICE or rtp:HOST:PORT"),
        (["--source", "mic:"], "source 'mic:' is not file:PATH, stdin, mic, mic:DEVICE or rtp:HOST:PORT"),
        (["--source", "file:"], "source 'file:' is not file:PATH, stdin, mic, mic:DEVICE or rtp:HOST:PORT"),
        (["--source", "rtp::5004"], "source 'rtp::5004' is not file:PATH, stdin, mic, mic:DEVICE or rtp:HOST:PORT"),
    ],
)
def test_an_option_no_source_of_the_run_can_use_is_one_line_naming_it(capsys, sources, reason):
    """Once accepted without a word: --pace fast with nothing to hurry, a source spelled with an empty target."""
    from ser_stream.cli import main

    assert main(["monitor", "--no-dashboard", *sources]) == 2
    assert capsys.readouterr().err == f"ser-stream: error: {reason}\n"


def test_a_file_named_like_an_option_is_named_with_how_to_pass_it(tmp_path, shipped_model, capsys, monkeypatch):
    """argparse took `classify -dash.wav` for an unknown option and said only that FILE was required."""
    from ser_stream.cli import main

    monkeypatch.chdir(tmp_path)
    soundfile.write(tmp_path / "-dash.wav", spoken(1.0, 16000), 16000)  # speech: no warning after the label
    how = "-dash.wav is read as an option; for the file of that name write ./-dash.wav or put -- before it"
    for arguments, prog in ((["-dash.wav"], "ser-stream classify"), (["./-dash.wav", "-dash.wav"], "ser-stream")):
        with pytest.raises(SystemExit) as stopped:
            main(["classify", *arguments])
        assert stopped.value.code == 2 and capsys.readouterr().err == f"{prog}: error: {how}\n"
    for arguments in (["--", "-dash.wav"], ["./-dash.wav"]):
        assert main(["classify", *arguments]) == 0
        assert capsys.readouterr().out.endswith("; 1 window)\n")
    with pytest.raises(SystemExit):  # was "the following arguments are required: FILE"
        main(["classify", "-nothing.wav"])
    assert capsys.readouterr().err == "ser-stream classify: error: -nothing.wav is not an option here, nor a file\n"


def test_an_rtp_port_out_of_range_is_one_line():
    from ser_stream.errors import SerStreamError
    from ser_stream.rtp import parse_address

    with pytest.raises(SerStreamError, match=r"^rtp source '127\.0\.0\.1:99999' is not rtp:HOST:PORT \(a port from 0 to 65535\)$"):
        parse_address("127.0.0.1:99999")


@pytest.mark.parametrize(
    "port, rtp_reason",
    [
        ("5²", "source 'rtp:127.0.0.1:5²' is not file:PATH, stdin, mic, mic:DEVICE or rtp:HOST:PORT"),
        ("5" * 5000, f"rtp source '127.0.0.1:{'5' * 5000}' is not rtp:HOST:PORT (a port from 0 to 65535)"),
    ],
    ids=["a superscript digit", "5000 digits"],
)
def test_a_port_of_other_than_ascii_digits_or_of_thousands_of_digits_is_one_line(tmp_path, capsys, port, rtp_reason):
    """'5²'.isdigit() is True, and int() refuses it as it refuses 5000 digits: --ws and rtp: ended in a traceback."""
    from ser_stream.cli import main

    path = tmp_path / "speech.wav"
    soundfile.write(path, speechlike(1.0, 16000), 16000)
    assert main(["monitor", "--no-dashboard", "--source", f"file:{path}", "--ws", f"127.0.0.1:{port}"]) == 2
    assert capsys.readouterr().err == f"ser-stream: error: --ws '127.0.0.1:{port}' is not HOST:PORT (a port from 0 to 65535)\n"
    assert main(["monitor", "--no-dashboard", "--source", f"rtp:127.0.0.1:{port}"]) == 2
    assert capsys.readouterr().err == f"ser-stream: error: {rtp_reason}\n"


def test_a_folder_given_as_audio_is_named_as_a_folder(tmp_path):
    from ser_stream.audiofile import read_audio

    with pytest.raises(AudioInputError, match=r": is a folder, not an audio file$"):
        read_audio(tmp_path)
    with pytest.raises(AudioInputError, match=r"missing\.wav: no such file$"):
        read_audio(tmp_path / "missing.wav")


def with_header_rate(path, rate: int) -> None:
    """Rewrite a 16-bit mono WAV's header to claim another sample rate (and the byte rate to match)."""
    data = bytearray(path.read_bytes())
    data[24:28] = rate.to_bytes(4, "little")
    data[28:32] = (2 * rate).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def test_a_header_claiming_an_absurd_sample_rate_is_one_line_and_the_other_files_still_classify(tmp_path, shipped_model, capsys):
    """100 MHz once crashed resampling (and stopped the files after it); 3 Hz made 96 kB last hours."""
    from ser_stream.cli import main

    good = tmp_path / "good.wav"
    soundfile.write(good, speechlike(2.0, 16000), 16000, subtype="PCM_16")
    files = []
    for rate in (3, 100_000_000):
        path = tmp_path / f"rate{rate}.wav"
        path.write_bytes(good.read_bytes())
        with_header_rate(path, rate)
        files.append(path)
    assert main(["classify", "--model", str(shipped_model), "--json", str(files[0]), str(files[1]), str(good)]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line.get("error") for line in lines] == [
        "sample rate 3 Hz is outside 1000–1000000 Hz, the rates this reads",
        "sample rate 100000000 Hz is outside 1000–1000000 Hz, the rates this reads",
        None,
    ]
    assert lines[2]["windows"] >= 1


@pytest.mark.parametrize("rate", [3, 100_000_000])
def test_a_live_source_at_an_absurd_rate_is_refused_naming_the_source(rate):
    import io

    from ser_stream.sources import StdinSource

    with pytest.raises(AudioInputError) as refused:
        StdinSource(rate, stream=io.BytesIO())
    assert str(refused.value) == f"stdin: sample rate {rate} Hz is outside 1000–1000000 Hz, the rates this reads"


def test_a_file_name_that_is_not_utf8_is_read_as_it_is(tmp_path):
    name = os.fsdecode(b"caf\xe9.wav")  # Latin-1 on a UTF-8 system: a surrogate in Python's str
    path = os.path.join(os.fsdecode(tmp_path), name)
    soundfile.write(os.fsencode(path), speechlike(1.0, 16000), 16000)
    audio, rate = read_audio(path)
    assert rate == 16000 and audio.size == 16000


def test_classify_json_names_a_file_that_is_not_utf8_in_valid_unicode(tmp_path, shipped_model, capsys):
    """Its path came out as a lone surrogate escape (\\udce9), which strict JSON readers refuse."""
    from ser_stream.cli import main

    path = os.path.join(os.fsdecode(tmp_path), os.fsdecode(b"caf\xe9.wav"))
    soundfile.write(os.fsencode(path), speechlike(1.0, 16000), 16000)
    assert main(["classify", "--model", str(shipped_model), "--json", path, path + "-missing"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert all("\\ud" not in line for line in lines)
    named = [json.loads(line)["path"] for line in lines]
    assert named == [f"{tmp_path}/caf\\xe9.wav", f"{tmp_path}/caf\\xe9.wav-missing"]
    assert all(name.encode("utf-8") for name in named)  # no lone surrogate: encodes as UTF-8
    assert main(["classify", "--model", str(shipped_model), path, path + "-missing"]) == 1
    text = capsys.readouterr()  # the text lines name it the same way (they said 'caf\\udce9.wav', quoted)
    assert text.out.startswith(f"{tmp_path}/caf\\xe9.wav: ")
    assert text.err == f"{tmp_path}/caf\\xe9.wav-missing: error: no such file\n"


def test_a_pipe_given_as_a_file_is_named_as_a_pipe_not_as_missing(tmp_path):
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioInputError, match=r"fifo\.wav: not a regular file \(a pipe or device\)"):
        read_audio(fifo)


def test_a_broken_symbolic_link_is_named_as_one_with_its_target_not_as_missing(tmp_path, shipped_model, capsys):
    """ls lists it, so "no such file" sent the user looking for the wrong fault; classify and the monitor alike."""
    from ser_stream.cli import main

    link = tmp_path / "call.wav"
    link.symlink_to("gone.wav")  # its recording was moved or deleted
    said = f"{link}: a broken symbolic link (to gone.wav, which does not exist)"
    assert main(["classify", "--json", "--model", str(shipped_model), str(link)]) == 1
    assert json.loads(capsys.readouterr().out) == {"path": str(link), "error": "a broken symbolic link (to gone.wav, which does not exist)"}
    assert main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--ws", "127.0.0.1:0", "--source", f"file:{link}"]) == 2
    assert capsys.readouterr().err == f"ser-stream: error: {said}\n"


def test_a_file_source_that_cannot_be_opened_fails_alone_and_the_others_run(tmp_path, clips_with_silence, shipped_model, capsys):
    from ser_stream.cli import main

    good, _ = clips_with_silence
    missing = tmp_path / "missing.wav"
    status = main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--print-utterances", "--pace", "fast", "--ws", "127.0.0.1:0",
                   "--source", f"file:{missing}", "--source", f"file:{good}"])
    said = capsys.readouterr()
    lines = [json.loads(line) for line in said.out.splitlines()]
    assert status == 1  # a stream failed
    assert {"type": "error", "stream": "missing.wav", "message": f"{missing}: no such file"} in lines
    assert f"ser-stream: error: {missing}: no such file\n" in said.err  # with stdout in a file, the reason where one looks too
    assert [line["stream"] for line in lines if line["type"] == "utterance"] and all(
        line["stream"] == good.name for line in lines if line["type"] == "utterance")


def test_a_url_or_a_bare_file_name_where_a_source_is_expected_says_what_to_give_instead(tmp_path):
    """A URL was 'no such file'; an existing file given as --source a.wav was told only the source forms."""
    from ser_stream.audiofile import read_audio
    from ser_stream.sources import parse_source

    with pytest.raises(AudioInputError, match=r"^https://example\.com/a\.wav: a URL; nothing is fetched from the network: download the file first$"):
        read_audio("https://example.com/a.wav")
    path = tmp_path / "a.wav"
    soundfile.write(path, speechlike(1.0, 16000), 16000)
    with pytest.raises(AudioInputError, match=rf"^source '{path}' is not file:PATH, .* \(for the file, --source file:{path}\)$"):
        parse_source(str(path))


def test_when_every_source_fails_to_open_the_monitor_says_why_in_one_line(tmp_path, shipped_model, capsys):
    from ser_stream.cli import main

    folder, missing = tmp_path, tmp_path / "missing.wav"
    assert main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--ws", "127.0.0.1:0",
                 "--source", f"file:{missing}", "--source", f"file:{folder}"]) == 2
    assert capsys.readouterr().err == f"ser-stream: error: {missing}: no such file; {folder}: is a folder, not an audio file\n"


def test_the_monitor_cuts_windows_as_long_as_the_model_was_trained_on():
    from ser_stream.errors import SerStreamError
    from ser_stream.monitor import model_windows

    one_second = WindowConfig(1.0, 0.5)
    assert model_windows(one_second, None, None) == one_second
    assert model_windows(one_second, 1.0, 0.25) == WindowConfig(1.0, 0.25)
    with pytest.raises(SerStreamError, match=r"^--window 2\.0: the model was trained on 1\.0 s windows"):
        model_windows(one_second, 2.0, None)


def test_an_mp3_is_decoded_as_one_read_would_without_the_decoders_complaints(tmp_path, shipped_model, capfd):
    """libsndfile's MP3 decoder garbles the joins of successive reads (37 s read a second at a time: 12 libmpg123
    errors, samples off by 0.18); an MP3 of up to 10 minutes is decoded in one read, by file sources and classify."""
    from ser_stream.audiofile import sample_blocks
    from ser_stream.cli import DEMO_RECORDING, main

    path = tmp_path / "speech.mp3"
    soundfile.write(path, soundfile.read(DEMO_RECORDING, dtype="float32")[0], 16000, format="MP3")
    whole, _ = soundfile.read(path, dtype="float32", always_2d=True)
    np.testing.assert_array_equal(np.concatenate(list(sample_blocks(path, 16000))), whole)
    assert main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--pace", "fast", "--ws", "127.0.0.1:0", "--source", f"file:{path}"]) == 0
    assert main(["classify", "--model", str(shipped_model), str(path)]) == 0
    err = capfd.readouterr().err
    assert "libmpg123" not in err and "error" not in err


def mp3_without_its_length(audio: np.ndarray, rate: int, compression_level: float) -> bytes:
    """``audio`` as a constant-bitrate MP3 less the Info frame that gives its length, its first if LAME wrote one
    (some encoders write none: ffmpeg -write_xing 0, streams cut from a broadcast)."""
    from ser_stream.sources import mpeg_frame_length

    out = io.BytesIO()
    soundfile.write(out, audio, rate, format="MP3", compression_level=compression_level, bitrate_mode="CONSTANT")
    data = out.getvalue()
    first = mpeg_frame_length(data[:4])
    assert first is not None
    return data[first:] if b"Info" in data[:first] else data


@pytest.mark.parametrize("order", ["high-bitrate-first", "low-bitrate-first"])
def test_an_mp3_whose_length_no_header_gives_is_heard_to_its_end_and_not_called_damaged(tmp_path, shipped_model, order):
    """libsndfile took libmpg123's estimate of such a length (the file's size over its first frame's bitrate) and read
    no further: of two bitrates joined, 3.2 s of 6.2 s was heard and the rest dropped unsaid; the other way round,
    "damaged or cut short: its header promises 64.98 s of audio", of a whole file."""
    import threading

    from ser_stream.audiofile import audio_info, sample_blocks
    from ser_stream.classify import classify_file
    from ser_stream.inference import EmotionModel
    from ser_stream.sources import FileSource, mpeg_frame_length
    from tests.test_capture import Sink

    high, low = (mp3_without_its_length(spoken(3.0, 16000, start), 16000, level) for start, level in ((1.4, 0.0), (8.0, 0.99)))
    data = high + low if order == "high-bitrate-first" else low + high
    path = tmp_path / "joined.mp3"
    path.write_bytes(data)
    mpeg_frames, offset = 0, 0
    while (length := mpeg_frame_length(data[offset : offset + 4])) is not None:
        mpeg_frames, offset = mpeg_frames + 1, offset + length
    frames = 576 * mpeg_frames  # 16 kHz is MPEG-2: 576 samples a frame
    assert abs(audio_info(path).frames - frames) > 16000  # the estimate is seconds off
    assert sum(block.shape[0] for block in sample_blocks(path, 16000)) == frames
    assert read_audio(path)[0].size == frames
    sink = Sink(1 << 20)
    FileSource(str(path), pace="fast").run(sink, threading.Event())
    assert sink.error is None and sink.warning is None and sink.ring.available() == frames
    model = EmotionModel(shipped_model, provider="cpu")
    in_memory, in_blocks = (classify_file(path, model, in_memory_seconds=seconds) for seconds in (600.0, 0.0))
    assert in_memory.warning is None and in_blocks.warning is None
    assert in_memory.utterance is not None and in_blocks.utterance is not None
    assert in_memory.utterance.windows == in_blocks.utterance.windows >= 10  # 6 s at a 0.5 s hop, trimmed


@pytest.mark.parametrize(
    ("redirect", "status", "reason"),
    [("<&-", 2, "ser-stream: error: stdin: closed; pipe raw PCM into it, or choose another --source"),
     ("0>{tmp}/not-readable.raw", 1, "ser-stream: error: stdin: read failed (Bad file descriptor)"),
     ("0<{terminal}", 2, "ser-stream: error: stdin: a terminal, not a pipe; pipe PCM into it "
      "(arecord -f S16_LE -r 16000 -t raw | ser-stream monitor --source stdin), or choose another --source")],
    ids=["closed", "write-only", "terminal"],
)
def test_a_closed_or_unreadable_stdin_or_a_terminal_is_one_line_not_a_traceback(tmp_path, shipped_model, redirect, status, reason):
    """Once an AttributeError traceback (closed), a traceback with exit status 0 (write-only, as under nohup), and
    a silent wait for keystrokes (a terminal: `--source stdin` typed without a pipe)."""
    import shlex
    import subprocess
    import sys

    controller, terminal = os.openpty()
    command = f"exec {shlex.quote(sys.executable)} -m ser_stream monitor --source stdin --no-dashboard --ws 127.0.0.1:0 "
    command += redirect.format(tmp=tmp_path, terminal=os.ttyname(terminal))
    try:
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    finally:
        os.close(controller), os.close(terminal)
    assert result.returncode == status, result.stderr
    assert reason in result.stderr.splitlines() and "Traceback" not in result.stderr


def test_stdin_channels_beyond_what_a_recording_has_are_a_usage_line(capsys):
    """--channels 10000000 --rate 1000000 once asked the pipe for 1 TB per read: a MemoryError traceback, exit 0."""
    from ser_stream.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["monitor", "--no-dashboard", "--source", "stdin", "--rate", "1000000", "--channels", "10000000"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "ser-stream monitor: error: argument --channels: 10000000 must be at most 64\n"


@pytest.mark.parametrize("window", ["nan", "inf", "-inf"])
def test_a_window_that_is_not_a_finite_number_is_refused_by_name(tmp_path, shipped_model, capsys, window):
    """`abs(nan - 2) > 1e-6` is False: --window nan once passed the check against the model's windows."""
    from ser_stream.cli import main

    path = tmp_path / "speech.wav"
    soundfile.write(path, speechlike(1.0, 16000), 16000)
    assert main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--source", f"file:{path}", f"--window={window}"]) == 2
    assert capsys.readouterr().err == f"ser-stream: error: --window {float(window)}: the model was trained on 2.0 s windows; leave --window out\n"


def test_a_decoder_failure_without_a_message_still_ends_its_stream_with_one_line(tmp_path, monkeypatch):
    """``str(MemoryError())`` is empty: taking its first line raised IndexError inside the handler."""
    import threading
    from types import SimpleNamespace

    from ser_stream import audiofile, sources
    from ser_stream.ringbuffer import RingBuffer

    path = tmp_path / "speech.wav"
    soundfile.write(path, speechlike(1.0, 16000), 16000)

    def failing(*_: object, **__: object):
        raise MemoryError()
        yield  # a generator, as sample_blocks is

    monkeypatch.setattr(audiofile, "sample_blocks", failing)  # what the file source's mono_blocks reads through
    sink = SimpleNamespace(ring=RingBuffer(16000), input_overflows=0, finished=False, error=None, warning=None)
    sources.FileSource(str(path), pace="fast").run(sink, threading.Event())
    assert sink.finished and sink.error == f"{path}: read failed (MemoryError)"


def test_a_wav_cut_short_is_classified_on_what_it_holds_with_a_warning_saying_so(tmp_path, shipped_model, capsys):
    """libsndfile reads what is there without a word: a recording cut to a third was once labelled as if whole."""
    import subprocess
    import sys

    from ser_stream.cli import main

    good = tmp_path / "good.wav"
    soundfile.write(good, spoken(3.0, 16000), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(good.read_bytes()[: 44 + 2 * 16000])  # the header (3 s) and the first second
    assert main(["classify", "--json", str(good), str(cut)]) == 0
    whole, short = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert "warning" not in whole
    assert short["warning"] == "truncated: its header promises 3.00 s of audio, the file holds 1.00 s; only that was heard"
    assert main(["classify", str(cut)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("; 1 window) (warning: truncated: its header promises 3.00 s of audio, the file holds 1.00 s; only that was heard)")
    monitor = subprocess.run(
        [sys.executable, "-m", "ser_stream", "monitor", "--source", f"file:{cut}", "--pace", "fast", "--no-dashboard", "--print-utterances", "--ws", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=120,
    )
    assert monitor.returncode == 0, monitor.stderr
    warnings = [json.loads(line) for line in monitor.stdout.splitlines() if json.loads(line)["type"] == "warning"]
    assert [w["message"] for w in warnings] == [f"{cut}: truncated: its header promises 3.00 s of audio, the file holds 1.00 s; only that was heard"]


@pytest.mark.parametrize("in_memory_seconds", [600.0, 0.0], ids=["whole", "in blocks"])
def test_a_file_cut_short_before_its_speech_is_refused_with_the_cut_as_the_reason(tmp_path, shipped_model, in_memory_seconds, capsys):
    """A recording cut off in the silence before its speech holds nothing to classify: it was refused as "silent
    throughout" without a word of the cut classify had found (which it gives as a warning once there is speech)."""
    from ser_stream.classify import classify_file
    from ser_stream.cli import main
    from ser_stream.inference import EmotionModel

    model = EmotionModel(shipped_model, provider="cpu")
    audio = np.concatenate([np.zeros(16000, np.float32), spoken(3.0, 16000)])  # a second of silence, then talk
    soundfile.write(tmp_path / "whole.wav", audio, 16000, subtype="PCM_16")
    soundfile.write(tmp_path / "whole.flac", audio, 16000)
    (tmp_path / "cut.wav").write_bytes((tmp_path / "whole.wav").read_bytes()[: 44 + 2 * 8000])  # the header (4 s) and 0.5 s
    (tmp_path / "cut.flac").write_bytes((tmp_path / "whole.flac").read_bytes()[:1000])  # a download stopped early: three whole 4,096-frame FLAC frames, 0.77 s
    silent = "silent throughout (no sound once any DC offset is removed): nothing to classify; "
    assert classify_file(tmp_path / "cut.wav", model, in_memory_seconds=in_memory_seconds).error == (
        silent + "truncated: its header promises 4.00 s of audio, the file holds 0.50 s; only that was heard"
    )
    assert classify_file(tmp_path / "cut.flac", model, in_memory_seconds=in_memory_seconds).error == (
        silent + "damaged or cut short: its header promises 4.00 s of audio, 0.77 s could be decoded; only that was heard"
    )
    assert main(["classify", "--json", str(tmp_path / "cut.wav")]) == 1
    assert json.loads(capsys.readouterr().out)["error"].endswith("; truncated: its header promises 4.00 s of audio, the file holds 0.50 s; only that was heard")


def test_a_wav_streamed_through_a_pipe_or_a_byte_short_gets_no_truncation_warning(tmp_path, shipped_model, capsys):
    """ffmpeg and arecord writing to a pipe put a placeholder size (0xFFFFFFFF) in the header: it 'promised'
    134217.73 s, and a file one byte short 'promised 4.10 s, held 4.10 s'."""
    from ser_stream.cli import main

    good = tmp_path / "good.wav"
    soundfile.write(good, spoken(3.0, 16000), 16000, subtype="PCM_16")
    data = good.read_bytes()
    assert data[36:40] == b"data"
    streamed = tmp_path / "streamed.wav"
    streamed.write_bytes(data[:4] + b"\xff\xff\xff\xff" + data[8:40] + b"\xff\xff\xff\xff" + data[44:])
    half_streamed = tmp_path / "half-streamed.wav"
    half_streamed.write_bytes(data[:4] + b"\xff\xff\xff\x7f" + data[8:40] + b"\xff\xff\xff\x7f" + data[44:])
    byte_short = tmp_path / "byte-short.wav"
    byte_short.write_bytes(data[:-1])
    assert main(["classify", "--json", str(good), str(streamed), str(half_streamed), str(byte_short)]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [result.get("warning") for result in results] == [None] * 4
    assert len({result["label"] for result in results}) == 1 and {result["windows"] for result in results} == {results[0]["windows"]}


@pytest.mark.parametrize("format_, subtype", [("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III"), ("FLAC", "PCM_16")])
def test_a_compressed_file_cut_short_or_damaged_is_classified_on_what_decodes_with_a_warning_saying_so(tmp_path, shipped_model, capsys, format_, subtype):
    """libsndfile decodes an OGG or MP3 up to the damage without a word: half an MP3 was labelled as if whole."""
    from ser_stream.cli import main

    whole = tmp_path / f"whole.{format_.lower()}"
    soundfile.write(whole, spoken(4.0, 16000), 16000, format=format_, subtype=subtype)
    half = tmp_path / f"half.{format_.lower()}"
    data = whole.read_bytes()
    if format_ == "OGG":  # an OGG's length is read from its last page: junk in the middle, as a bad copy leaves
        half.write_bytes(data[: len(data) // 2] + bytes(range(256)) * 8 + data[len(data) // 2 + 2048 :])
    else:
        half.write_bytes(data[: len(data) // 2])
    status = main(["classify", "--json", str(whole), str(half)])
    intact, cut = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert "warning" not in intact and "error" not in intact
    assert status == 0  # a FLAC cut short failed the whole read ("lost sync") and was refused: it is read up to the cut
    assert cut["warning"].startswith("damaged or cut short: its header promises 4.00 s of audio, ")
    assert cut["warning"].endswith(" s could be decoded; only that was heard")


@pytest.mark.parametrize("format_, subtype", [("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III"), ("FLAC", "PCM_16")])
def test_a_compressed_file_cut_short_is_heard_up_to_the_damage_in_blocks_and_by_the_monitor_with_the_same_warning(tmp_path, shipped_model, format_, subtype):
    """In blocks (classify's files over 10 minutes, every monitor file), a FLAC cut short was refused whole, and
    soundfile.blocks handed on uninitialised memory past a half MP3's end: NaN, or noise labelled over 5 windows."""
    import threading
    from types import SimpleNamespace

    from ser_stream import sources
    from ser_stream.audiofile import sample_blocks
    from ser_stream.classify import classify_file
    from ser_stream.inference import EmotionModel
    from ser_stream.ringbuffer import RingBuffer

    whole = tmp_path / f"whole.{format_.lower()}"
    soundfile.write(whole, spoken(4.0, 16000), 16000, format=format_, subtype=subtype)
    half = tmp_path / f"half.{format_.lower()}"
    half.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    decoded = np.concatenate(list(sample_blocks(half, 4000)))
    assert 0 < decoded.shape[0] < 64000 and np.all(np.isfinite(decoded))
    if format_ != "OGG":  # an OGG's length is read from its last page: cut, it promises nothing more
        assert np.array_equal(decoded, np.concatenate(list(sample_blocks(half, 100_000))))  # any read size, the same
    model = EmotionModel(shipped_model, provider="cpu")
    in_memory, in_blocks = (classify_file(half, model, in_memory_seconds=seconds) for seconds in (600.0, 0.0))
    assert in_blocks.utterance is not None and in_memory.utterance is not None
    assert in_blocks.warning == in_memory.warning
    if format_ != "OGG":
        assert in_blocks.warning.startswith("damaged or cut short: its header promises 4.00 s of audio, ")
        assert in_blocks.utterance.windows == in_memory.utterance.windows
        np.testing.assert_allclose(in_blocks.utterance.confidence, in_memory.utterance.confidence, atol=1e-4)
    else:  # its end page is missing: that says it was cut
        assert in_blocks.warning.startswith("damaged or cut short: it stops before the Ogg page that ends its stream")
    sink = SimpleNamespace(ring=RingBuffer(16000 * 8), input_overflows=0, finished=False, error=None, warning=None)
    sources.FileSource(str(half), pace="fast").run(sink, threading.Event())
    assert sink.finished and sink.error is None and sink.ring.available() == decoded.shape[0]
    assert sink.warning == (f"{half}: {in_blocks.warning}" if in_blocks.warning else None)


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_an_ogg_cut_short_is_classified_with_a_warning_though_its_length_promises_no_more(tmp_path, shipped_model, subtype, capsys):
    """An Ogg file gives its length only in its last page, so one cut short promised no more than it held and was
    classified as if whole, without a word (README said otherwise). It stops before the page that ends its stream."""
    import threading
    from types import SimpleNamespace

    from ser_stream import sources
    from ser_stream.classify import classify_file
    from ser_stream.cli import main
    from ser_stream.inference import EmotionModel
    from ser_stream.ringbuffer import RingBuffer

    whole = tmp_path / "whole.ogg"
    soundfile.write(whole, spoken(4.0, 16000), 16000, format="OGG", subtype=subtype)
    data = whole.read_bytes()
    (tmp_path / "half.ogg").write_bytes(data[: len(data) // 2])
    (tmp_path / "byte_short.ogg").write_bytes(data[:-1])
    model = EmotionModel(shipped_model, provider="cpu")
    assert classify_file(whole, model).warning is None
    for name in ("half.ogg", "byte_short.ogg"):
        cut = tmp_path / name
        held = soundfile.info(str(cut)).frames / 16000
        expected = (f"damaged or cut short: it stops before the Ogg page that ends its stream (an Ogg file gives its length only "
                    f"there); {held:.2f} s could be decoded; only that was heard")
        for in_memory_seconds in (600.0, 0.0):
            assert classify_file(cut, model, in_memory_seconds=in_memory_seconds).warning == expected, (name, in_memory_seconds)
        sink = SimpleNamespace(ring=RingBuffer(16000 * 8), input_overflows=0, finished=False, error=None, warning=None)
        sources.FileSource(str(cut), pace="fast").run(sink, threading.Event())
        assert sink.finished and sink.error is None and sink.warning == f"{cut}: {expected}"
    assert main(["classify", "--json", str(tmp_path / "half.ogg")]) == 0
    assert json.loads(capsys.readouterr().out)["warning"].startswith("damaged or cut short: it stops before the Ogg page")


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_a_whole_ogg_with_bytes_after_its_last_page_is_classified_without_a_warning_as_it_was(tmp_path, shipped_model, subtype):
    """A tagger's ID3v1 tag (128 bytes) or a copy's zero padding after the page that ends the stream is no cut: such a
    file was called "damaged or cut short" (only a last page ending at the file's end counted) though all of it decodes.
    A page cut short after the tag's place is still a cut."""
    import threading
    from types import SimpleNamespace

    from ser_stream import sources
    from ser_stream.classify import classify_file
    from ser_stream.inference import EmotionModel
    from ser_stream.ringbuffer import RingBuffer

    whole = tmp_path / "whole.ogg"
    soundfile.write(whole, spoken(4.0, 16000), 16000, format="OGG", subtype=subtype)
    data = whole.read_bytes()
    tag = b"TAG" + b"A title".ljust(30, b"\0") + b"An artist".ljust(30, b"\0") + bytes(30) + b"2026" + bytes(30) + b"\xff"
    assert len(tag) == 128
    (tmp_path / "id3v1.ogg").write_bytes(data + tag)
    (tmp_path / "zeros.ogg").write_bytes(data + bytes(4096))
    model = EmotionModel(shipped_model, provider="cpu")
    reference = classify_file(whole, model)
    assert reference.utterance is not None and reference.warning is None
    for name in ("id3v1.ogg", "zeros.ogg"):
        for in_memory_seconds in (600.0, 0.0):
            result = classify_file(tmp_path / name, model, in_memory_seconds=in_memory_seconds)
            assert result.warning is None and result.utterance == reference.utterance, (name, in_memory_seconds)
        sink = SimpleNamespace(ring=RingBuffer(16000 * 8), input_overflows=0, finished=False, error=None, warning=None)
        sources.FileSource(str(tmp_path / name), pace="fast").run(sink, threading.Event())
        assert sink.finished and sink.error is None and sink.warning is None, name
    (tmp_path / "byte_short_tagged.ogg").write_bytes(data[:-1] + tag)  # its last page cut, then tagged
    assert classify_file(tmp_path / "byte_short_tagged.ogg", model).warning.startswith("damaged or cut short: it stops before the Ogg page")


def test_a_file_whose_windows_mostly_hold_no_speech_is_labelled_with_a_warning_saying_how_many(tmp_path, shipped_model):
    """The label is the mean of every window's outputs, pauses included. Two clicks 30 s apart were labelled fearful
    0.24 from 58 windows, 56 of them silence, without a word; then a clip either side of 30 s of room tone (noise at
    -50 dBFS, within 40 dB of the speech, so "sound" to a level rule) was labelled angry 0.67 from 68 windows, 60 of them
    the noise, and noise alone angry 0.74, both without a word. The voice detector tells speech from them."""
    from ser_stream.classify import classify_file
    from ser_stream.inference import EmotionModel

    model = EmotionModel(shipped_model, provider="cpu")
    room = (10 ** (-50 / 20) * np.random.default_rng(0).standard_normal(16000 * 30)).astype(np.float32)
    soundfile.write(tmp_path / "pause.wav", np.concatenate([spoken(3.0, 16000), room, spoken(3.0, 16000, start=8.0)]), 16000)
    clicks = np.zeros(16000 * 31, np.float32)
    clicks[16000 : 16000 + 80] = 0.5
    clicks[16000 * 30 : 16000 * 30 + 80] = 0.5
    soundfile.write(tmp_path / "clicks.wav", clicks, 16000)
    soundfile.write(tmp_path / "room.wav", room[: 16000 * 5], 16000)
    speech = np.concatenate([spoken(2.0, 16000), np.zeros(16000, np.float32), spoken(2.0, 16000, start=8.0)])
    soundfile.write(tmp_path / "speech.wav", speech, 16000)  # a pause inside an utterance: no warning
    for in_memory_seconds in (600.0, 1.0):  # read whole, and in blocks: the same
        pause = classify_file(tmp_path / "pause.wav", model, in_memory_seconds=in_memory_seconds)
        assert pause.utterance is not None and pause.utterance.windows == 69  # every window still counts
        assert pause.warning == (
            "56 of its 69 windows hold no speech (voice detector): the label is mostly theirs; classify takes a file as one "
            "utterance, pauses included; for a recording of many, use the monitor (its voice detector cuts them)"
        )  # the windows starting 3.5 … 31 s: wholly in the room tone and past the speech's end (3.2 s, as Silero hears it)
        far_apart = classify_file(tmp_path / "clicks.wav", model, in_memory_seconds=in_memory_seconds)
        assert far_apart.utterance is not None and far_apart.utterance.windows == 56  # 0.9 s to 30.1 s, a window per 0.5 s
        assert far_apart.warning == (
            "no speech heard in any of its 56 windows (voice detector): the label is the network's reading of sound that is not speech"
        )
        assert classify_file(tmp_path / "room.wav", model, in_memory_seconds=in_memory_seconds).warning == (
            "no speech heard in any of its 7 windows (voice detector): the label is the network's reading of sound that is not speech"
        )
        assert classify_file(tmp_path / "speech.wav", model, in_memory_seconds=in_memory_seconds).warning is None
    one = classify_file(tmp_path / "speech.wav", model, in_memory_seconds=600)
    assert one.to_text().endswith(" windows)")
    soundfile.write(tmp_path / "short.wav", spoken(1.0, 16000), 16000)
    assert classify_file(tmp_path / "short.wav", model).to_text().endswith("; 1 window)")  # was "1 windows"


@pytest.mark.parametrize("in_memory_seconds", [600.0, 0.0], ids=["whole", "in blocks"])
def test_a_window_heard_by_the_voice_detector_is_counted_once_whatever_the_windows_overlap(tmp_path, shipped_model, in_memory_seconds):
    """The detector runs once over the trimmed audio, window by window as they are cut (each brings a hop of new
    samples, and the last, aligned to the end, fewer): it hears each 32 ms frame once, in order, as one stream."""
    from ser_stream.clips import BlockReading, loudest_power, stream_file_windows, trimmed_clip_and_lead_in
    from ser_stream.utterances import UtteranceConfig
    from ser_stream.vad import SpeechHeard
    from ser_stream.windows import TRIM_FRAME, WindowConfig, cut_windows, frame_energies

    audio = np.concatenate([spoken(3.0, 16000), np.zeros(16000 * 4, np.float32), spoken(2.3, 16000, start=8.0)])
    soundfile.write(tmp_path / "two.wav", audio, 16000)
    config = WindowConfig()
    clip, lead_in = trimmed_clip_and_lead_in(audio, 16000)
    if in_memory_seconds:
        windows, speech = list(cut_windows(clip, config)[0]), SpeechHeard(config, BlockReading(span=clip.size, loudest=loudest_power(frame_energies(clip, TRIM_FRAME), clip), lead_in=lead_in), UtteranceConfig())
    else:
        reading = BlockReading()
        windows, speech = stream_file_windows(tmp_path / "two.wav", config, block_seconds=1.0, reading=reading), SpeechHeard(config, reading, UtteranceConfig())
    for window in windows:
        speech.hear(window)
    assert speech.windows_without_speech() == 4  # in the pause of 3–7 s and past the speech's end (3.2 s): 3.5 … 5.0 s
    assert len(speech.frames) == -(-clip.size // 256)  # each frame of the clip once, the last padded

@pytest.mark.parametrize("in_memory_seconds", [600.0, 0.0], ids=["whole", "in blocks"])
def test_quiet_speech_or_speech_on_one_channel_is_heard_as_speech_and_quiet_noise_still_is_not(tmp_path, shipped_model, in_memory_seconds):
    """The voice check hears a file's trimmed audio after half a second of silence and at one level. Heard as it came,
    talk 55 dB down was "no speech heard", as were RAVDESS clips 20 dB down or on one channel of a stereo file (the
    mix halves it), which the monitor published as utterances; noise as quiet, or room tone between quiet words,
    must still be told from speech."""
    from ser_stream.classify import classify_file
    from ser_stream.inference import EmotionModel

    model, quiet = EmotionModel(shipped_model, provider="cpu"), 10 ** (-55 / 20)
    talk = quiet * spoken(2.5, 16000)
    soundfile.write(tmp_path / "quiet.wav", talk, 16000, subtype="FLOAT")
    soundfile.write(tmp_path / "one_side.wav", np.stack([talk, np.zeros_like(talk)], axis=1), 16000, subtype="FLOAT")
    noise = (quiet * 0.1 * np.random.default_rng(0).standard_normal(16000 * 5)).astype(np.float32)  # -75 dBFS
    soundfile.write(tmp_path / "noise.wav", noise, 16000, subtype="FLOAT")
    room = (10 ** (-85 / 20) * np.random.default_rng(1).standard_normal(16000 * 30)).astype(np.float32)
    soundfile.write(tmp_path / "pause.wav", np.concatenate([talk, room, quiet * spoken(3.0, 16000, start=8.0)]), 16000, subtype="FLOAT")
    for name in ("quiet.wav", "one_side.wav"):
        result = classify_file(tmp_path / name, model, in_memory_seconds=in_memory_seconds)
        assert result.utterance is not None and result.warning is None, name
    assert classify_file(tmp_path / "noise.wav", model, in_memory_seconds=in_memory_seconds).warning == (
        "no speech heard in any of its 7 windows (voice detector): the label is the network's reading of sound that is not speech"
    )
    assert classify_file(tmp_path / "pause.wav", model, in_memory_seconds=in_memory_seconds).warning.startswith("56 of its 68 windows hold no speech")


@pytest.mark.parametrize("in_memory_seconds", [600.0, 0.0], ids=["whole", "in blocks"])
def test_a_short_chord_hum_or_clicks_is_warned_as_no_speech_heard_whatever_its_length_or_level(tmp_path, shipped_model, in_memory_seconds):
    """Heard after half a second of zeros, Silero called the onset of any steady sound speech, so a file's first window
    held "speech": a chord or a hum of 1–2.5 s was labelled (calm 0.70) without a warning, one of 3 s "2 of its 3
    windows", clicks "5 of 9". The voice check hears the file's own audio before the trimmed span instead, or none
    when the sound starts with the file, as the monitor does; noise is told from speech as before."""
    from ser_stream.classify import classify_file
    from ser_stream.inference import EmotionModel

    model, rate = EmotionModel(shipped_model, provider="cpu"), 16000
    rng = np.random.default_rng(0)

    def chord(seconds: float) -> np.ndarray:  # A major, each note 32 dB down, from a zero crossing
        t = np.arange(int(seconds * rate)) / rate
        return (0.025 * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63, 440.0))).astype(np.float32)

    def hum(seconds: float) -> np.ndarray:  # mains hum and its third harmonic, 40 dB down
        t = np.arange(int(seconds * rate)) / rate
        return (0.008 * np.sin(2 * np.pi * 50 * t) + 0.003 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)

    def clicks(seconds: float) -> np.ndarray:  # a 2 ms burst of noise every 0.15 s
        audio = np.zeros(int(seconds * rate), np.float32)
        for start in range(0, audio.size - 32, int(0.15 * rate)):
            audio[start : start + 32] = 0.3 * rng.standard_normal(32)
        return audio

    cases = {f"{kind.__name__}_{seconds:g}s.wav": kind(seconds) for kind in (chord, hum, clicks) for seconds in (1.0, 2.0, 2.5, 3.0)}
    cases |= {"chord_6s_-6dB.wav": 5 * chord(6.0), "clicks_6s.wav": clicks(6.0)}
    for name, audio in cases.items():
        soundfile.write(tmp_path / name, audio, rate)
        result = classify_file(tmp_path / name, model, in_memory_seconds=in_memory_seconds)
        assert result.utterance is not None, name
        windows = result.utterance.windows
        assert result.warning == (
            f"no speech heard in {'its window' if windows == 1 else f'any of its {windows} windows'} (voice detector): "
            "the label is the network's reading of sound that is not speech"
        ), name


def test_ravdess_speech_the_monitor_hears_is_heard_by_classify_whatever_its_level_or_channel(tmp_path, shipped_model, ravdess):
    """A review's cases: fearful 03-01-06-01-01-02-09 on one channel of a stereo file, calm 03-01-02-01-02-02-06
    20 dB down, and fearful 03-01-06-01-01-01-09 as it is (its loudest 25 ms at -53 dBFS; Silero scored it 0.34 at
    most, started on the trimmed audio) were "no speech heard", and the monitor published an utterance for each.
    The label is the network's and stays as it was. Fearful 03-01-06-02-02-02-06 and 03-01-06-02-02-01-20 are heard
    only with the audio trimmed before their speech heard first (the lead-in): started cold, Silero misses them."""
    from ser_stream.classify import classify_file
    from ser_stream.inference import EmotionModel

    model = EmotionModel(shipped_model, provider="cpu")
    fearful, rate = soundfile.read(ravdess / "Actor_09" / "03-01-06-01-01-02-09.flac", dtype="float32")
    soundfile.write(tmp_path / "one_side.wav", np.stack([fearful, np.zeros_like(fearful)], axis=1), rate, subtype="PCM_16")
    calm, rate = soundfile.read(ravdess / "Actor_06" / "03-01-02-01-02-02-06.flac", dtype="float32")
    soundfile.write(tmp_path / "quieter.wav", 0.1 * calm, rate, subtype="FLOAT")
    as_they_are = [ravdess / "Actor_09" / "03-01-06-01-01-01-09.flac", ravdess / "Actor_06" / "03-01-06-02-02-02-06.flac",
                   ravdess / "Actor_20" / "03-01-06-02-02-01-20.flac"]
    for path, label in ((tmp_path / "one_side.wav", "fearful"), (tmp_path / "quieter.wav", "calm"), *((path, None) for path in as_they_are)):
        for in_memory_seconds in (600.0, 0.0):
            result = classify_file(path, model, in_memory_seconds=in_memory_seconds)
            assert result.utterance is not None and result.warning is None, (path.name, in_memory_seconds, result.warning)
            assert label is None or result.utterance.label == label


def dithered(audio: np.ndarray, bits: int, seed: int = 0) -> np.ndarray:
    """``audio`` rounded to ``bits``-bit steps with TPDF dither of ±1 step, as an editor lowering a level writes it."""
    rng, scale = np.random.default_rng(seed), 2.0 ** (bits - 1)
    noise = rng.uniform(-0.5, 0.5, audio.size) + rng.uniform(-0.5, 0.5, audio.size)
    return (np.clip(np.round(audio * scale + noise), -scale, scale - 1) / scale).astype(np.float32)


@pytest.mark.parametrize("in_memory_seconds", [600.0, 0.0], ids=["whole", "in blocks"])
def test_a_quiet_or_8_bit_recording_is_trimmed_to_its_speech_not_to_its_dither(tmp_path, shipped_model, in_memory_seconds):
    """Trimming is relative to the loudest frame; a voice 45 dB down in 16-bit (or 8-bit at all) has its dither
    within 40 dB of that, and 1 s of speech in 3 s was classified as 3 windows, the silence with it."""
    from ser_stream.classify import classify_file
    from ser_stream.inference import EmotionModel

    model = EmotionModel(shipped_model, provider="cpu")
    speech = in_silence(spoken(1.0, 16000, start=2.0))  # its loudest 25 ms near -17 dBFS
    soundfile.write(tmp_path / "clean.wav", speech, 16000, subtype="FLOAT")
    reference = classify_file(tmp_path / "clean.wav", model, in_memory_seconds=in_memory_seconds).utterance
    assert reference is not None and reference.windows == 1
    cases = {"quiet_16_bit.wav": (dithered(speech * 10 ** (-45 / 20), 16), "PCM_16"), "8_bit.wav": (dithered(speech * 0.5, 8), "PCM_U8")}
    for name, (audio, subtype) in cases.items():
        soundfile.write(tmp_path / name, audio, 16000, subtype=subtype)
        result = classify_file(tmp_path / name, model, in_memory_seconds=in_memory_seconds)
        assert result.utterance is not None and result.utterance.windows == reference.windows, name
        assert result.warning is None, name
    soundfile.write(tmp_path / "8_bit_dither.wav", dithered(np.zeros(16000 * 3), 8), 16000, subtype="PCM_U8")
    assert classify_file(tmp_path / "8_bit_dither.wav", model, in_memory_seconds=in_memory_seconds).error == (
        "silent throughout (its loudest 25 ms is at -50 dBFS, within its format's rounding noise, under -45 dBFS): nothing to classify"
    )


def test_a_silent_a_law_line_is_refused_as_silent_as_mu_law_is_and_a_law_speech_is_labelled_as_its_mu_law_twin(tmp_path, shipped_model, ravdess):
    """A-law has no zero code: near zero it decodes to ±8, ±24 (16-bit terms), a step of 16 where μ-law's is 8. Its
    floor took μ-law's step, so a silent A-law line (±8 flicker, -72 dBFS) was sound: μ-law's twin was refused as
    silent, the A-law one labelled `angry` with a warning that no speech was heard."""
    from ser_stream.classify import classify_file
    from ser_stream.inference import EmotionModel

    model = EmotionModel(shipped_model, provider="cpu")
    line = (np.random.default_rng(1).standard_normal(8000 * 3) * 1e-6).astype(np.float32)  # noise at -120 dBFS
    for subtype in ("ULAW", "ALAW"):
        soundfile.write(tmp_path / f"quiet_line_{subtype}.wav", line, 8000, subtype=subtype)
    for in_memory_seconds in (600.0, 0.0):  # whole and in blocks
        assert classify_file(tmp_path / "quiet_line_ULAW.wav", model, in_memory_seconds).error == (
            "silent throughout (no sound once any DC offset is removed): nothing to classify"
        )
        assert classify_file(tmp_path / "quiet_line_ALAW.wav", model, in_memory_seconds).error == (
            "silent throughout (its loudest 25 ms is at -72 dBFS, within its format's rounding noise, under -69 dBFS): nothing to classify"
        )
    for clip in ("Actor_03/03-01-05-02-01-01-03.flac", "Actor_05/03-01-04-01-02-02-05.flac", "Actor_07/03-01-03-02-01-01-07.flac"):
        audio, rate = soundfile.read(ravdess / clip, dtype="float32")
        labels = {}
        for subtype in ("ULAW", "ALAW"):
            soundfile.write(tmp_path / f"speech_{subtype}.wav", audio, rate, subtype=subtype)
            result = classify_file(tmp_path / f"speech_{subtype}.wav", model)
            assert result.utterance is not None and result.error is None and result.warning is None, (clip, subtype, result.to_text())
            labels[subtype] = result.utterance.label
        assert labels["ALAW"] == labels["ULAW"], clip


def test_audio_sampled_below_8_khz_is_classified_with_a_warning_that_the_model_hears_more(tmp_path, shipped_model, capsys):
    from ser_stream.cli import main

    path = tmp_path / "narrow.wav"
    soundfile.write(path, spoken(3.0, 4000), 4000)
    assert main(["classify", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["warning"] == (
        "sampled at 4000 Hz, so it holds nothing above 2000 Hz of the 0–4000 Hz the model hears; "
        "its label may differ from the same speech recorded at 8 kHz or more"
    )


def test_audio_sampled_at_8_khz_is_classified_without_the_below_8_khz_warning(tmp_path, shipped_model):
    """8 kHz is telephony's rate and holds all of the 0–4000 Hz the model hears: only a rate below it is warned of."""
    from ser_stream.audiofile import narrow_band
    from ser_stream.classify import classify_file
    from ser_stream.inference import EmotionModel

    path = tmp_path / "call.wav"
    soundfile.write(path, spoken(3.0, 8000), 8000)
    result = classify_file(path, EmotionModel(shipped_model, provider="cpu"))
    assert result.utterance is not None and result.error is None and result.warning is None
    assert narrow_band("call.wav", 8000) is None and narrow_band("call.wav", 7999) is not None  # the monitor's check too


def test_classify_says_it_does_not_read_stdin_and_that_a_closed_stdout_loses_the_results(tmp_path, shipped_model):
    """`-` was 'no such file'; with stdout closed (>&-) every result was dropped and the exit status was 0."""
    import subprocess
    import sys

    path = tmp_path / "speech.wav"
    soundfile.write(path, speechlike(2.0, 16000), 16000)
    dash = subprocess.run([sys.executable, "-m", "ser_stream", "classify", "-"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert dash.returncode == 1
    assert dash.stderr == "-: error: no such file (stdin is not read here: save the audio to a file, or pipe raw PCM to monitor --source stdin)\n"
    closed = subprocess.run(f"{sys.executable} -m ser_stream classify --json {path} >&-", shell=True, capture_output=True, text=True, timeout=120)
    assert closed.returncode == 2
    assert closed.stderr == "ser-stream: error: writing results to stdout failed (it is closed)\n"


def flac_saying_it_holds(path, frames: int | None) -> None:
    """Rewrite the FLAC at ``path`` so that its STREAMINFO promises ``frames`` (None: unknown, as a FLAC encoded to a
    pipe says, 0)."""
    data = bytearray(path.read_bytes())
    total = 0 if frames is None else frames
    at = 8 + 13  # 'fLaC', the block header, then the 36-bit total within STREAMINFO's bytes 13 to 17
    data[at] = (data[at] & 0xF0) | ((total >> 32) & 0x0F)
    data[at + 1 : at + 5] = (total & 0xFFFFFFFF).to_bytes(4, "big")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("says", [None, 2 * 3 * 16000], ids=["unknown-length", "twice-its-length"])
def test_a_flac_of_unknown_or_false_length_is_classified_on_what_it_holds(tmp_path, shipped_model, says, capsys):
    """A FLAC encoded to a pipe (ffmpeg … -f flac - > x.flac) was 'read failed (Internal psf_fseek() failed.)': its
    last read fails at the real end, and the decoder could not seek back to read it in steps."""
    from ser_stream.cli import main

    path = tmp_path / "piped.flac"
    soundfile.write(path, spoken(3.0, 16000), 16000)
    flac_saying_it_holds(path, says)
    assert main(["classify", "--json", "--model", str(shipped_model), str(path)]) == 0
    classified = json.loads(capsys.readouterr().out)
    assert main(["monitor", "--model", str(shipped_model), "--no-dashboard", "--pace", "fast", "--ws", "127.0.0.1:0", "--source", f"file:{path}"]) == 0
    err = capsys.readouterr().err
    assert classified["label"] and classified["windows"] >= 2 and "error" not in classified
    if says is None:
        assert "warning" not in classified and "error" not in err  # nothing promised, nothing missing
    else:  # it promised 6 s and holds 3, all heard: said, as for any file cut short
        assert classified["warning"] == "damaged or cut short: its header promises 6.00 s of audio, 3.00 s could be decoded; only that was heard"


@pytest.mark.parametrize("says", [None, 2 * 3 * 16000], ids=["unknown-length", "twice-its-length"])
def test_a_flac_of_unknown_or_false_length_is_heard_to_its_last_frame(tmp_path, shipped_model, says):
    """Read in quarter seconds, its last, partial one fails at the real end once decoded (soundfile cannot seek there):
    up to 0.25 s was dropped unsaid, in classify and in the monitor alike (75,800 frames: 72,000 heard)."""
    import threading

    from ser_stream.classify import classify_file
    from ser_stream.inference import EmotionModel
    from ser_stream.sources import FileSource
    from tests.test_capture import Sink

    audio = spoken(3.1, 16000)  # 49,600 frames: twelve quarter seconds and 1,600 frames
    seekable, piped = tmp_path / "seekable.flac", tmp_path / "piped.flac"
    soundfile.write(seekable, audio, 16000)
    soundfile.write(piped, audio, 16000)
    flac_saying_it_holds(piped, says)
    model = EmotionModel(shipped_model, provider="cpu")
    heard, whole = classify_file(piped, model), classify_file(seekable, model)
    assert heard.utterance is not None and whole.utterance is not None
    assert heard.utterance.probabilities == pytest.approx(whole.utterance.probabilities, abs=1e-6)
    if says is not None:  # it promised 6 s and holds all of its 3.10 s
        assert heard.warning == "damaged or cut short: its header promises 6.00 s of audio, 3.10 s could be decoded; only that was heard"
    source, sink = FileSource(str(piped), pace="fast"), Sink(1 << 20)
    source.run(sink, threading.Event())
    assert sink.error is None and sink.ring.available() == audio.size
    assert np.array_equal(sink.ring.read(), soundfile.read(seekable, dtype="float32")[0])


def test_a_long_wav_that_lost_its_last_second_while_read_is_said_to_be_cut():
    """A WAV's length is exact: the 5 % allowed for compressed files' padding would let 3 s of a minute go unsaid."""
    from types import SimpleNamespace

    from ser_stream.audiofile import undecoded

    header = SimpleNamespace(format="WAV", frames=60 * 16000, samplerate=16000)
    assert undecoded("call.wav", header, decoded_frames=59 * 16000) == (
        "call.wav: damaged or cut short: its header promises 60.00 s of audio, 59.00 s could be decoded; only that was heard")


def test_a_wav_cut_while_the_monitor_reads_it_is_said_to_be_cut(tmp_path):
    """Its length was checked once, at opening: a file cut (or rotated) while it was read lost the rest unsaid."""
    import threading

    from ser_stream.sources import FileSource
    from tests.test_capture import Sink

    path = tmp_path / "call.wav"
    soundfile.write(path, speechlike(10.0, 16000), 16000)
    source = FileSource(str(path), pace="fast")
    with open(path, "r+b") as handle:  # after opening, before reading: the writer truncates it
        handle.truncate(44 + 3 * 16000 * 2)
    sink = Sink(1 << 20)
    source.run(sink, threading.Event())
    assert sink.error is None and sink.ring.available() == 3 * 16000
    assert sink.warning == f"{path}: damaged or cut short: its header promises 10.00 s of audio, 3.00 s could be decoded; only that was heard"


def ogg_page_starts(data: bytes) -> list[int]:
    """Where each page of a whole Ogg file begins, read from the pages' own lengths (never a search for 'OggS')."""
    starts, position = [], 0
    while position < len(data):
        assert data[position : position + 4] == b"OggS"
        starts.append(position)
        segments = data[position + 27 : position + 27 + data[position + 26]]
        position += 27 + len(segments) + sum(segments)
    return starts


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_an_ogg_is_whole_only_if_its_last_whole_page_ends_the_stream_and_no_page_begins_after_it(tmp_path, subtype):
    """docs/reliability.md: an Ogg file gives its length only in its last page, so a cut is told by its pages: the last
    whole one (its checksum right) must be flagged end-of-stream and no page may begin after it, while up to 64 KiB of
    bytes that are no page (a tag, a copy's zero padding) may follow. A file cut exactly where its last page begins,
    or a second stream cut short in its first page (`cat a.ogg b.ogg`, stopped), is cut."""
    from ser_stream.audiofile import ogg_stream_ended

    whole = tmp_path / "whole.ogg"
    soundfile.write(whole, spoken(2.0, 16000), 16000, format="OGG", subtype=subtype)
    data = whole.read_bytes()
    last_page = ogg_page_starts(data)[-1]
    cases = {
        "whole": (data, True),
        "64 KiB of zeros after it": (data + bytes(64 * 1024), True),
        "cut where its last page begins": (data[:last_page], False),
        "a second stream cut in its first page": (data + data[:40], False),
    }
    for name, (content, ended) in cases.items():
        path = tmp_path / f"{name}.ogg"
        path.write_bytes(content)
        assert ogg_stream_ended(path) is ended, name


def test_an_mp3_over_a_minute_long_is_decoded_bit_for_bit_as_one_whole_read(tmp_path):
    """docs/reliability.md: an MP3's samples are those of one whole read, whatever the read size; libsndfile's decoder
    changes samples at the joins of successive reads, so an MP3 of up to 10 minutes is decoded in one read, not a
    minute at a time (as a longer one is)."""
    from ser_stream.audiofile import sample_blocks

    path = tmp_path / "call.mp3"
    soundfile.write(path, speechlike(75.0, 8000), 8000, format="MP3")
    whole, _ = soundfile.read(path, dtype="float32", always_2d=True)
    np.testing.assert_array_equal(np.concatenate(list(sample_blocks(path, 8000))), whole)
