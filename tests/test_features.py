"""The feature function: the one place model inputs come from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.signal

from ser_stream.errors import AudioInputError
from ser_stream.features import (
    N_BINS,
    N_FFT,
    N_FRAMES,
    SAMPLE_RATE,
    feature_parameters,
    model_input,
    resample_to_canonical,
    spectrogram,
)
from ser_stream.model import metadata_path
from tests.conftest import speechlike, spoken


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


def test_a_clip_shorter_than_one_frame_is_drawn_as_the_clip_followed_by_silence():
    """Padded after its end, not before its start: the Hann window weighs a frame's start and end alike, so only
    the clip's place in the frame tells them apart (a mutation audit padded it in front, unseen)."""
    clip = speechlike(0.03, SAMPLE_RATE)
    assert clip.size < N_FFT
    followed_by_silence = np.concatenate([clip, np.zeros(N_FFT - clip.size, np.float32)])
    np.testing.assert_array_equal(spectrogram(clip, SAMPLE_RATE), spectrogram(followed_by_silence, SAMPLE_RATE))
    assert not np.array_equal(spectrogram(clip, SAMPLE_RATE), spectrogram(followed_by_silence[::-1].copy(), SAMPLE_RATE))


def tone(frequency: float, seconds: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


@pytest.mark.parametrize(
    ("audio", "reason"),
    [
        (np.zeros(0, np.float32), "empty"),
        (np.zeros(10, np.float32), "too short"),
        (np.array([0.1, np.nan] * 4000, np.float32), "NaN"),
        (np.array([0.1, np.inf] * 4000, np.float32), "NaN or infinite"),
        (np.array([0.1, 2e12] * 4000, np.float32), r"^audio samples reach 2\.0e\+12, beyond ±1e\+12: not audio$"),  # just past the bound
        (np.zeros((2, 8000), np.float32), "mono"),
        (np.float32(0.5), r"^expected mono audio \(1-D\), got shape \(\)$"),  # a number, not an array: was an IndexError at 16 kHz
    ],
)
def test_unusable_audio_gets_a_clear_error(audio, reason):
    with pytest.raises(AudioInputError, match=reason):
        spectrogram(audio, 16000)


def test_model_input_layout_is_n_260_270_1():
    batch = model_input([spectrogram(speechlike(1.0, 8000), 8000)] * 3)
    assert batch.shape == (3, 260, 270, 1) and batch.dtype == np.float32
    assert model_input(batch[0, ..., 0]).shape == (1, 260, 270, 1)  # one spectrogram is a batch of one


@pytest.mark.parametrize(("rate", "shortest"), [(8000, 64), (16000, 127), (48000, 379)])
def test_8_ms_is_the_shortest_audio_that_gives_an_input_and_a_sample_less_is_refused(rate, shortest):
    """8 ms is 64 samples at 8 kHz, counted after resampling (127 at 16 kHz resample to 64); the error gives the count
    the caller handed in, at its rate. Counted before resampling, 378 samples at 48 kHz (63 at 8 kHz) passed (a mutation audit)."""
    assert spectrogram(tone(1000.0, shortest / rate, rate), rate).shape == (260, 270)
    too_short = shortest - 1
    with pytest.raises(AudioInputError, match=rf"^audio is too short: {too_short} samples at {rate} Hz \(need at least 8 ms\)$"):
        spectrogram(tone(1000.0, too_short / rate, rate), rate)


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_audio_resampled_to_8_khz_is_float32_whatever_its_rate_and_type(rate):
    """What the spectrogram computes in (float32 is its speed) and what a clip's windows are cut from."""
    canonical = resample_to_canonical(tone(1000.0, 0.1, rate).astype(np.float64), rate)
    assert canonical.dtype == np.float32 and canonical.size == 800


@pytest.mark.parametrize(("rate", "taken"), [(999, False), (1000, True), (1_000_000, True), (1_000_001, False)])
def test_audio_at_1_khz_to_1_mhz_gives_an_input_and_at_other_rates_is_refused_naming_the_rate(rate, taken):
    audio = tone(440.0, 0.1, rate)
    if taken:
        assert spectrogram(audio, rate).shape == (260, 270)
    else:
        with pytest.raises(AudioInputError, match=rf"^sample rate {rate} Hz is outside 1000–1000000 Hz, the rates this reads$"):
            spectrogram(audio, rate)


def test_the_features_are_those_the_shipped_model_was_trained_on(shipped_model):
    """The metadata beside the model records what training computed; the runtime's constants must still say the same."""
    metadata = json.loads(metadata_path(shipped_model).read_text())
    assert feature_parameters() == metadata["features"]  # TOP_DB = 80.0, say, would be caught here, not at a user's load
    assert (N_BINS, N_FRAMES) == (260, 270) == (metadata["features"]["n_bins"], metadata["features"]["n_frames"])


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
@pytest.mark.parametrize("frequency", [500.0, 3000.0])
def test_a_tone_lights_the_row_of_its_frequency_counted_up_from_0_hz_in_row_0(frequency, rate):
    """Row k is k·SAMPLE_RATE/N_FFT Hz (15.4 Hz a row): what the shipped model was trained on. The metadata records
    the parameters, not the orientation; a spectrogram flipped upside down passed every other test."""
    image = spectrogram(tone(frequency, 2.0, rate), rate)
    row_profile = image.mean(axis=1)
    peak_rows = np.flatnonzero(row_profile == row_profile.max())  # 500 Hz is row 32.5: rows 32 and 33 tie
    assert peak_rows.size and np.all(np.abs(peak_rows - frequency * N_FFT / SAMPLE_RATE) <= 0.5), peak_rows


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_a_click_lights_the_column_of_its_time_counted_from_the_start_of_the_window_in_column_0(rate):
    """Column j is the frame centred at j·(window − N_FFT)/(N_FRAMES − 1) + N_FFT/2 samples: a click 0.5 s into a
    2 s window is column 65, not 204 (time reversed)."""
    audio = np.zeros(2 * rate, np.float32)
    audio[rate // 2] = 0.5
    column_energy = spectrogram(audio, rate).sum(axis=0)
    expected = (0.5 * SAMPLE_RATE - N_FFT / 2) / ((2 * SAMPLE_RATE - N_FFT) / (N_FRAMES - 1))
    assert abs(int(column_energy.argmax()) - expected) <= 0.5
    assert np.all(column_energy[: int(expected) - 5] == 0.0) and np.all(column_energy[int(expected) + 6 :] == 0.0)


@pytest.mark.parametrize(("level_db", "brightest"), [(-20.0, 1.0), (-100.0, 1.0), (-110.0, 50 / 60), (-130.0, 0.5)])
def test_a_tone_below_the_silence_level_is_drawn_as_much_darker_as_it_is_below_it(level_db, brightest):
    """A full-scale sine's bin is 0 dB; a window whose loudest bin is under SILENCE_DB (-100 dB) is drawn against the
    floor TOP_DB under that level, not under its own peak, so near-silence is not stretched to full range. The
    metadata's silence_db means this only on that scale: a window scaled 6 dB otherwise passed every other test (a mutation audit)."""
    image = spectrogram(tone(1000.0, 2.0, SAMPLE_RATE, amplitude=10 ** (level_db / 20)), SAMPLE_RATE)  # 1 kHz: row 65's centre
    assert int(image.mean(axis=1).argmax()) == 65
    assert image.max() == pytest.approx(brightest, abs=1e-3)


def block_means(image: np.ndarray, blocks: int = 8) -> np.ndarray:
    """``image`` as ``blocks`` × ``blocks`` means (rows, then columns, split as evenly as they go)."""
    return np.array([[block.mean() for block in np.array_split(band, blocks, axis=1)] for band in np.array_split(image, blocks, axis=0)])


# A fingerprint of the spectrogram of the bundled demo's 2 s of talk from 1.4 s (16 kHz, resampled to 8 kHz): the
# values these same lines computed at commit cfd7ce2, whose features are those the shipped model's metadata records.
# A deliberate change of the features (which means retraining the model too) writes them again; feature code that
# changes them otherwise changes what the shipped model sees, and this test names it as a feature change where the
# golden test of the model's output (test_classify.py) only sees the label move. 1e-3 leaves room for float32
# rounding in other FFT and BLAS builds, and none for a flipped axis, reversed time or another log scale.
DEMO_TALK_MEAN = 0.2302
DEMO_TALK_LOUDEST_ROW = 6  # 92 Hz, the speaker's pitch
DEMO_TALK_LOUDEST_COLUMN = 187  # columns 185 and 186 within 0.001 of it
DEMO_TALK_BLOCK_MEANS = np.array([
    [0.4286, 0.5077, 0.3676, 0.4353, 0.5099, 0.5054, 0.4288, 0.0],
    [0.1233, 0.2840, 0.2792, 0.4207, 0.1816, 0.3935, 0.4017, 0.0],
    [0.0614, 0.2206, 0.1764, 0.3808, 0.1912, 0.1571, 0.2240, 0.0],
    [0.1966, 0.1777, 0.2328, 0.0675, 0.3442, 0.4073, 0.0036, 0.0],
    [0.1311, 0.2608, 0.3479, 0.0921, 0.2362, 0.2493, 0.2288, 0.0],
    [0.2078, 0.1880, 0.3213, 0.2873, 0.1780, 0.2717, 0.0508, 0.0],
    [0.1899, 0.2987, 0.3497, 0.2869, 0.2845, 0.2602, 0.2083, 0.0],
    [0.2053, 0.2494, 0.2955, 0.2322, 0.2412, 0.2749, 0.1139, 0.0],
])  # rows 0 Hz (top) to 4 kHz, columns the 2 s in order; the last quarter second is a pause


def test_the_demo_recordings_talk_gives_the_picture_the_shipped_model_was_trained_to_read():
    image = spectrogram(spoken(2.0, 16000), 16000)
    assert image.mean() == pytest.approx(DEMO_TALK_MEAN, abs=1e-3)
    assert int(image.mean(axis=1).argmax()) == DEMO_TALK_LOUDEST_ROW
    assert abs(int(image.mean(axis=0).argmax()) - DEMO_TALK_LOUDEST_COLUMN) <= 2
    np.testing.assert_allclose(block_means(image), DEMO_TALK_BLOCK_MEANS, atol=1e-3)
