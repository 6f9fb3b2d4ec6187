"""Frequency warping (vocal tract length perturbation) moves sounds along the frequency axis and nothing else;
speed perturbation scales a recording's time and frequency together; the phone line, the noise and the paper's image
transform stay within the ranges docs/results.md ("Recipes") gives them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ser_stream.features import SAMPLE_RATE
from tests.conftest import speechlike
from training.augment import add_noise, frequency_warp, paper_image_transform, telephone

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


def test_a_warp_interpolates_between_rows_so_a_steady_rise_over_frequency_stays_a_steady_rise():
    """A row between two source rows takes the value between theirs, not a copy of one: no steps, no repeated rows."""
    ramp = np.repeat(np.linspace(0.0, 1.0, ROWS, dtype=np.float32)[:, None], COLUMNS, axis=1)
    for factor in (0.9, 1.1):
        assert np.all(np.diff(frequency_warp(ramp, factor)[:, 0]) > 0), factor


def test_speed_perturbation_scales_pitch_up_and_duration_down_by_its_factor():
    from training.augment import SPEED_FACTORS, change_speed

    assert SPEED_FACTORS == {"slower": 0.9, "faster": 1.1}  # Kaldi's speed perturbation
    rate = 8000
    tone = np.sin(2 * np.pi * 200 * np.arange(2 * rate) / rate).astype(np.float32)
    for factor in (*SPEED_FACTORS.values(), 1.0):
        played = change_speed(tone, factor)
        assert played.dtype == np.float32 and abs(played.size - tone.size / factor) <= 1
        spectrum = np.abs(np.fft.rfft(played * np.hanning(played.size)))
        assert np.fft.rfftfreq(played.size, 1 / rate)[np.argmax(spectrum)] == pytest.approx(200 * factor, abs=1.0)


def level_db(audio: np.ndarray, reference: np.ndarray) -> float:
    """How loud ``audio`` is against ``reference``, in dB of their RMS."""
    return float(10 * np.log10(np.mean(np.square(audio, dtype=np.float64)) / np.mean(np.square(reference, dtype=np.float64))))


def test_added_noise_is_5_to_30_db_below_the_speech_across_that_whole_range():
    speech = speechlike(2.0, SAMPLE_RATE)
    snrs = [-level_db(add_noise(speech, np.random.default_rng(seed)) - speech, speech) for seed in range(100)]
    assert 5 - 0.01 <= min(snrs) < 8 and 27 < max(snrs) <= 30 + 0.01


def test_added_noise_is_white_about_half_the_time_and_brown_ish_otherwise():
    """White noise has as much power below 500 Hz as above 2 kHz; the brown-ish kind, room rumble, 20 dB more."""
    speech = speechlike(2.0, SAMPLE_RATE)
    white = brown = 0
    for seed in range(20):
        noise = add_noise(speech, np.random.default_rng(seed)) - speech
        power = np.abs(np.fft.rfft(noise)) ** 2
        hz = np.fft.rfftfreq(noise.size, 1 / SAMPLE_RATE)
        tilt_db = 10 * np.log10(power[hz < 500].mean() / power[hz > 2000].mean())
        white += abs(tilt_db) < 3
        brown += tilt_db > 15
    assert white + brown == 20 and 5 <= white <= 15, (white, brown)


def test_the_phone_line_passes_300_to_3400_hz_and_stops_what_lies_beyond():
    """Canonical audio is 8 kHz, so above the band means 3.4–4 kHz."""
    seconds = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE

    def gain_db(frequency: float) -> float:
        tone = (0.5 * np.sin(2 * np.pi * frequency * seconds)).astype(np.float32)
        settled = slice(SAMPLE_RATE // 2, None)  # past the filter's onset
        return level_db(telephone(tone, np.random.default_rng(0))[settled], tone[settled])

    for frequency in (500, 1000, 2000, 3000):
        assert abs(gain_db(frequency)) < 1, frequency
    for frequency in (100, 3700, 3800):
        assert gain_db(frequency) < -20, frequency
    for edge in (300, 3400):  # the band's edges are where it is 3 dB down
        assert abs(gain_db(edge) + 3) < 0.5, edge


def test_the_phone_line_takes_the_voice_3_to_30_db_below_full_scale_into_its_mu_law_codec():
    """The level is what the codec's steps show: the loudest sample over the smallest step (8 in 16-bit terms) puts
    the loudest code's level in dB of full scale, the output being scaled back by the same level."""
    speech = speechlike(2.0, SAMPLE_RATE)
    levels = []
    for seed in range(100):
        magnitudes = np.abs(telephone(speech, np.random.default_rng(seed)))
        magnitudes = magnitudes[magnitudes > 0]
        levels.append(20 * np.log10(8 / 32768 * magnitudes.max() / magnitudes.min()))
    assert -30.5 <= min(levels) < -29 and -4 < max(levels) <= -2.5


def centroid(profile: np.ndarray) -> float:
    return float(np.sum(np.arange(profile.size) * profile) / np.sum(profile))


def line_columns(image: np.ndarray, row: int) -> tuple[float, float]:
    """Where a vertical line in each half of the image crosses ``row``."""
    left_half = np.arange(image.shape[1]) < image.shape[1] // 2
    return centroid(np.where(left_half, image[row], 0)), centroid(np.where(left_half, 0, image[row]))


def test_the_papers_image_transform_zooms_each_axis_by_at_most_20_percent_and_shears_by_at_most_0_2_rad():
    """Measured from where lines land: a row 100 above the centre, and two columns 100 either side of it (a pair
    the horizontal flip leaves as it is)."""
    centre_row, left_column = ROWS // 2, 35
    zooms_rows, zooms_columns, shears = [], [], []
    for seed in range(60):
        across = np.zeros((ROWS, COLUMNS), np.float32)
        across[centre_row - 100] = 1.0
        moved_row = centroid(paper_image_transform(across, np.random.default_rng(seed)).mean(axis=1))
        zooms_rows.append(-100 / (moved_row - centre_row))
        down = np.zeros((ROWS, COLUMNS), np.float32)
        down[:, [left_column, COLUMNS - 1 - left_column]] = 1.0
        transformed = paper_image_transform(down, np.random.default_rng(seed))  # the same draws
        left, right = line_columns(transformed, centre_row)  # shear moves nothing on the centre row
        zooms_columns.append((COLUMNS - 1 - 2 * left_column) / (right - left))
        slope = (line_columns(transformed, centre_row + 60)[0] - line_columns(transformed, centre_row - 60)[0]) / 120
        shears.append(float(np.arctan(-slope * zooms_columns[-1] / zooms_rows[-1])))
    for zooms in (zooms_rows, zooms_columns):
        assert 0.79 <= min(zooms) < 0.85 and 1.15 < max(zooms) <= 1.21
    assert max(abs(rows - columns) for rows, columns in zip(zooms_rows, zooms_columns)) > 0.2  # each axis drawn on its own
    assert -0.21 <= min(shears) < -0.15 and 0.15 < max(shears) <= 0.21


def test_the_papers_image_transform_flips_about_half_the_images_left_to_right():
    line = np.zeros((ROWS, COLUMNS), np.float32)
    line[:, 35] = 1.0  # far left of the centre, wherever zoom and shear take it
    on_the_right = [centroid(paper_image_transform(line, np.random.default_rng(seed)).mean(axis=0)) > COLUMNS / 2 for seed in range(20)]
    assert 5 <= sum(on_the_right) <= 15, on_the_right


def test_the_papers_image_transform_fills_what_it_moves_in_from_beyond_the_edges_with_the_nearest_edge_pixels():
    """As Keras' ImageDataGenerator fills by default: a uniform image stays uniform, with no blank border."""
    uniform = np.full((ROWS, COLUMNS), 0.7, np.float32)
    for seed in range(10):
        np.testing.assert_allclose(paper_image_transform(uniform, np.random.default_rng(seed)), 0.7, atol=1e-6)


def blank_runs(blank: np.ndarray) -> list[int]:
    """The lengths of the runs of True in ``blank``."""
    edges = np.diff(np.concatenate([[0], blank.astype(int), [0]]))
    return list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


def test_spec_augment_masks_bands_of_up_to_24_rows_and_spans_of_up_to_27_columns_anywhere_two_of_each():
    from training.augment import spec_augment

    image = np.random.default_rng(0).uniform(0.1, 1.0, (ROWS, COLUMNS)).astype(np.float32)
    widest_band = widest_span = 0
    two_spans = 0
    masked_rows, masked_columns = np.zeros(ROWS, bool), np.zeros(COLUMNS, bool)
    for seed in range(1000):
        blank = spec_augment(image, np.random.default_rng(seed)) == 0
        rows, columns = blank.all(axis=1), blank.all(axis=0)
        masked_rows |= rows
        masked_columns |= columns
        bands, spans = blank_runs(rows), blank_runs(columns)
        assert len(bands) <= 2 and len(spans) <= 2
        if len(bands) == 2:  # two bands apart: each one's width seen
            widest_band = max(widest_band, *bands)
        if len(spans) == 2:
            widest_span = max(widest_span, *spans)
            two_spans += 1
    assert widest_band == 24 and widest_span == 27 and two_spans > 0
    assert masked_rows.all() and masked_columns.all()  # the edges too
