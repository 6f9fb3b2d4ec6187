"""The feature function: the one place model inputs come from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.signal

from ser_stream.errors import AudioInputError
from ser_stream.features import (
    N_BINS,
    N_FRAMES,
    feature_parameters,
    model_input,
    spectrogram,
)
from ser_stream.model import metadata_path
from tests.conftest import speechlike


def test_output_is_260_by_270_float32_in_unit_range():
    image = spectrogram(speechlike(2.0, 16000), 16000)
    assert image.shape == (N_BINS, N_FRAMES) == (260, 270)
    assert image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert image.max() == pytest.approx(1.0)  # the window's peak is the top of the range


def test_same_audio_gives_identical_input():
    audio = speechlike(2.0, 16000)
    assert np.array_equal(spectrogram(audio, 16000), spectrogram(audio.copy(), 16000))


@pytest.mark.parametrize("rate", [16000, 44100, 48000, 22050, 8000])
def test_same_speech_at_any_rate_gives_nearly_the_same_input(rate):
    reference = spectrogram(speechlike(2.0, 96000), 96000)
    resampled = scipy.signal.resample_poly(speechlike(2.0, 96000), rate, 96000).astype(np.float32)
    image = spectrogram(resampled, rate)
    # Mean absolute difference under 2 % of the range; energetic regions agree closely.
    assert np.mean(np.abs(image - reference)) < 0.02
    assert np.corrcoef(image.ravel(), reference.ravel())[0, 1] > 0.98


def test_input_does_not_depend_on_gain():
    audio = speechlike(2.0, 16000)
    assert np.allclose(spectrogram(audio * 0.01, 16000), spectrogram(audio, 16000), atol=1e-4)


def test_dc_offset_does_not_change_the_picture():
    audio = speechlike(2.0, 16000)
    shifted = spectrogram(audio + 0.4, 16000)
    assert np.mean(np.abs(shifted - spectrogram(audio, 16000))) < 0.01


def test_full_scale_clipping_gives_a_valid_input():
    image = spectrogram(np.clip(speechlike(2.0, 16000) * 20, -1, 1), 16000)
    assert image.shape == (260, 270) and np.all(np.isfinite(image))
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_digital_silence_renders_black():
    assert np.all(spectrogram(np.zeros(16000, np.float32), 16000) == 0.0)


def test_very_short_clip_gives_a_valid_input():
    image = spectrogram(speechlike(0.03, 16000), 16000)
    assert image.shape == (260, 270) and image.max() <= 1.0


@pytest.mark.parametrize(
    ("audio", "reason"),
    [
        (np.zeros(0, np.float32), "empty"),
        (np.zeros(10, np.float32), "too short"),
        (np.array([0.1, np.nan] * 4000, np.float32), "NaN"),
        (np.array([0.1, np.inf] * 4000, np.float32), "NaN or infinite"),
        (np.zeros((2, 8000), np.float32), "mono"),
    ],
)
def test_unusable_audio_gets_a_clear_error(audio, reason):
    with pytest.raises(AudioInputError, match=reason):
        spectrogram(audio, 16000)


def test_model_input_layout_is_n_260_270_1():
    batch = model_input([spectrogram(speechlike(1.0, 8000), 8000)] * 3)
    assert batch.shape == (3, 260, 270, 1) and batch.dtype == np.float32


def test_the_features_are_those_the_shipped_model_was_trained_on(shipped_model):
    """The metadata beside the model records what training computed; the runtime's constants must still say the same."""
    metadata = json.loads(metadata_path(shipped_model).read_text())
    assert feature_parameters() == metadata["features"]  # TOP_DB = 80.0, say, would be caught here, not at a user's load
    assert (N_BINS, N_FRAMES) == (260, 270) == (metadata["features"]["n_bins"], metadata["features"]["n_frames"])
