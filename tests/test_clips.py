"""A recorded clip → the audio its windows are cut from: how much sound it must hold, and the same reading whole
or in blocks."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile

from ser_stream.clips import BlockReading, loudest_power, stream_file_windows, trimmed_clip
from ser_stream.errors import AudioInputError
from ser_stream.windows import TRIM_FRAME, WindowConfig, cut_windows, frame_energies
from tests.conftest import speechlike


def burst_in_silence(seconds: float, sample_rate: int = 8000) -> np.ndarray:
    """A 440 Hz tone of ``seconds`` from 0.5 s into 2 s of digital silence (on a 25 ms frame's edge at 8 kHz)."""
    audio = np.zeros(2 * sample_rate, np.float32)
    length = round(seconds * sample_rate)
    audio[sample_rate // 2 : sample_rate // 2 + length] = 0.3 * np.sin(2 * np.pi * 440 * np.arange(length) / sample_rate)
    return audio


def test_a_quarter_second_of_sound_is_enough_to_classify_and_25_ms_less_is_not():
    """The monitor's shortest utterance, counted from the first loud 25 ms frame to the last (README)."""
    assert trimmed_clip(burst_in_silence(0.25), 8000).size > 0
    with pytest.raises(AudioInputError, match=r"^only 0\.23 s of sound once silence is trimmed; at least 0\.25 s is needed$"):
        trimmed_clip(burst_in_silence(0.225), 8000)


def test_a_file_read_in_blocks_finds_its_loudest_25_ms_as_read_whole_also_when_it_is_the_last(tmp_path):
    """The voice check hears a file at a level set by its loudest 25 ms: read in blocks, as a long file is, the last
    frame counts as read whole."""
    audio = speechlike(1.0, 8000)
    audio[-TRIM_FRAME:] = 0.9 * np.sin(2 * np.pi * 440 * np.arange(TRIM_FRAME) / 8000)
    path = tmp_path / "ends_loud.wav"
    soundfile.write(path, audio, 8000, subtype="FLOAT")
    reading = BlockReading()
    assert len(list(stream_file_windows(path, WindowConfig(), reading=reading))) == 1
    clip = trimmed_clip(audio, 8000)
    assert reading.loudest == pytest.approx(loudest_power(frame_energies(clip, TRIM_FRAME), clip), rel=1e-6)
    assert reading.loudest == pytest.approx(np.mean(np.square(audio[-TRIM_FRAME:], dtype=np.float64)), rel=1e-3)


@pytest.mark.parametrize(
    ("sound_start", "sound_seconds"),
    [(0.2, 3.0), (1.1, 3.0), (1.1, 1.0)],
    ids=["shorter-than-the-lead-in", "on-a-block-edge", "on-a-block-edge-in-one-window"],
)
def test_the_voice_check_hears_the_audio_trimmed_before_the_sound_up_to_its_lead_in_whole_or_in_blocks(tmp_path, sound_start, sound_seconds):
    """The voice check hears up to 0.48 s of the audio trimmed just before the sound first, as the monitor hears a
    file from its start: all of it when there is less (a sound 0.2 s in), and in blocks the same when the trimmed span
    starts where a block does (1.1 s in, less the 0.1 s margin, at 8 kHz and 1 s blocks) or fits one window."""
    from ser_stream.clips import trimmed_clip_and_lead_in, without_dc
    from ser_stream.vad import SPEECH_CHECK_LEAD_IN_SAMPLES

    rate = 8000  # the canonical rate: nothing is resampled, so samples can be compared
    audio = (10 ** (-70 / 20) * np.random.default_rng(0).standard_normal(int((sound_start + sound_seconds + 0.5) * rate))).astype(np.float32)
    start, length = int(sound_start * rate), int(sound_seconds * rate)
    audio[start : start + length] = 0.3 * np.sin(2 * np.pi * 440 * np.arange(length) / rate)
    first = start - int(0.1 * rate)  # the trimmed span keeps 0.1 s before the sound
    expected = without_dc(audio)[max(first - SPEECH_CHECK_LEAD_IN_SAMPLES, 0) : first]
    assert expected.size == min(first, SPEECH_CHECK_LEAD_IN_SAMPLES)
    clip, lead_in = trimmed_clip_and_lead_in(audio, rate)
    np.testing.assert_allclose(lead_in, expected, atol=1e-6)
    path = tmp_path / "sound.wav"
    soundfile.write(path, audio, rate, subtype="FLOAT")
    reading = BlockReading()
    windows = list(stream_file_windows(path, WindowConfig(), block_seconds=0.5, reading=reading))  # blocks of 8000 frames
    assert len(windows) == (1 if sound_seconds < 2 else 4)
    np.testing.assert_allclose(np.stack(windows), cut_windows(clip, WindowConfig())[0], atol=1e-6)  # the windows read whole
    np.testing.assert_allclose(reading.lead_in, expected, atol=1e-6)


def test_a_file_that_goes_away_between_the_passes_of_a_read_in_blocks_is_said_to_be_gone_in_one_line(tmp_path, monkeypatch):
    """A long file is read three times, opened afresh each time; one moved or deleted after the first (a sync client, a
    cleanup job) was `read failed (Error opening b'FILE': System error.)`, the path twice and no reason. Now it is said
    to be gone; a read that fails otherwise is still `read failed (…)`."""
    from ser_stream import clips

    path = tmp_path / "moved.wav"
    soundfile.write(path, speechlike(3.0, 8000), 8000)
    passes = []
    read = clips.mono_blocks

    def deleted_after_the_first_pass(*arguments):
        passes.append(path.exists())
        if len(passes) == 2:
            path.unlink()
        return read(*arguments)

    monkeypatch.setattr(clips, "mono_blocks", deleted_after_the_first_pass)
    with pytest.raises(AudioInputError, match=rf"^{re.escape(str(path))}: no such file: it was there when reading began$"):
        list(stream_file_windows(path, WindowConfig(), block_seconds=0.5))
    assert passes == [True, True]


@pytest.mark.parametrize("change", ["still being written", "replaced"])
def test_a_file_that_changes_between_the_passes_of_a_read_in_blocks_is_said_to_have_changed_not_read_as_other_audio(
        tmp_path, monkeypatch, change):
    """A recording still being written (or one copied over) gave the later passes other audio than the first had
    trimmed and measured: windows cut from audio the first pass never saw, without a word."""
    from ser_stream import clips

    path = tmp_path / "call.wav"
    soundfile.write(path, speechlike(3.0, 8000), 8000)
    passes = []
    read = clips.mono_blocks

    def changed_after_the_first_pass(*arguments):
        passes.append(len(passes))
        if len(passes) == 2:
            if change == "still being written":
                soundfile.write(path, speechlike(6.0, 8000), 8000)
            else:
                replacement = tmp_path / "other.wav"
                soundfile.write(replacement, speechlike(3.0, 8000, seed=1), 8000)
                replacement.replace(path)
        return read(*arguments)

    monkeypatch.setattr(clips, "mono_blocks", changed_after_the_first_pass)
    with pytest.raises(AudioInputError, match=rf"^{re.escape(str(path))}: changed while it was read \(still being written, or "
                       r"replaced\): classify it once it is complete$"):
        list(stream_file_windows(path, WindowConfig(), block_seconds=0.5))

