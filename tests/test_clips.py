"""A recorded clip → the audio its windows are cut from: how much sound it must hold, and the same reading whole
or in blocks."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from ser_stream.clips import BlockReading, loudest_power, stream_file_windows, trimmed_clip
from ser_stream.errors import AudioInputError
from ser_stream.windows import TRIM_FRAME, WindowConfig, frame_energies
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
