"""Frequency warping (vocal tract length perturbation) moves sounds along the frequency axis and nothing else;
speed perturbation scales a recording's time and frequency together."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.augment import frequency_warp

ROWS, COLUMNS = 260, 270


def tone_at(row: int) -> np.ndarray:
    image = np.zeros((ROWS, COLUMNS), np.float32)
    image[row] = 1.0
    return image


def test_a_factor_of_one_leaves_the_spectrogram_unchanged():
    image = np.random.default_rng(0).random((ROWS, COLUMNS), dtype=np.float32)
    np.testing.assert_array_equal(frequency_warp(image, 1.0), image)


def test_a_longer_factor_raises_a_harmonic_and_a_shorter_one_lowers_it_in_proportion():
    for row in (20, 60, 100, 180):
        for factor in (0.9, 1.1):
            warped = frequency_warp(tone_at(row), factor)
            assert abs(int(np.argmax(warped[:, 0])) - row * factor) <= 1, (row, factor)


def test_the_top_of_the_band_stays_where_it_is():
    image = np.random.default_rng(1).random((ROWS, COLUMNS), dtype=np.float32)
    for factor in (0.85, 1.15):
        warped = frequency_warp(image, factor)
        np.testing.assert_allclose(warped[-1], image[-1], atol=1e-6)
        np.testing.assert_allclose(warped[0], image[0], atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(factor=st.floats(0.8, 1.2), seed=st.integers(0, 2**16))
def test_a_warped_spectrogram_is_still_a_valid_model_input_with_time_untouched(factor, seed):
    image = np.random.default_rng(seed).random((ROWS, COLUMNS), dtype=np.float32)
    image[:, 7] = 0.0  # a silent column stays silent: warping mixes rows, never columns
    warped = frequency_warp(image, factor)
    assert warped.shape == (ROWS, COLUMNS) and warped.dtype == np.float32
    assert 0.0 <= warped.min() and warped.max() <= 1.0
    assert not warped[:, 7].any()


def test_speed_perturbation_scales_pitch_up_and_duration_down_by_its_factor():
    from training.augment import SPEED_FACTORS, change_speed

    rate = 8000
    tone = np.sin(2 * np.pi * 200 * np.arange(2 * rate) / rate).astype(np.float32)
    for factor in (*SPEED_FACTORS.values(), 1.0):
        played = change_speed(tone, factor)
        assert played.dtype == np.float32 and abs(played.size - tone.size / factor) <= 1
        spectrum = np.abs(np.fft.rfft(played * np.hanning(played.size)))
        assert np.fft.rfftfreq(played.size, 1 / rate)[np.argmax(spectrum)] == pytest.approx(200 * factor, abs=1.0)
