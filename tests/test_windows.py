"""Cutting audio into windows and averaging window outputs: hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.clip_file import trim_silence
from ser_stream import EMOTIONS
from ser_stream.errors import AudioInputError
from ser_stream.utterances import average_windows
from ser_stream.windows import TRIM_FRAME, WindowConfig, cut_windows, frame_energies, trim_bounds, window_starts

RATE = 8000


def test_windows_step_by_the_hop_and_the_last_one_reaches_the_end():
    config = WindowConfig(window_seconds=2.0, hop_seconds=0.5)
    # 3.2 s: starts at 0, 0.5, 1.0 and one aligned to the end at 1.2 s.
    assert window_starts(int(3.2 * RATE), config) == [0, 4000, 8000, 9600]


def test_audio_exactly_one_window_long_gives_one_window():
    assert window_starts(16000, WindowConfig(2.0, 0.5)) == [0]


def test_short_audio_is_centred_in_one_padded_window():
    audio = np.ones(8000, np.float32)
    windows, starts = cut_windows(audio, WindowConfig(2.0, 0.5))
    assert windows.shape == (1, 16000)
    assert windows[0, :4000].sum() == 0 and windows[0, 4000:12000].sum() == 8000 and windows[0, 12000:].sum() == 0
    assert starts[0] == pytest.approx(-0.5)


def test_window_times_are_stream_seconds():
    _, starts = cut_windows(np.zeros(int(3.0 * RATE), np.float32), WindowConfig(2.0, 0.5))
    assert list(starts) == [0.0, 0.5, 1.0]


@pytest.mark.parametrize(("window", "hop"), [(0.05, 0.01), (2.0, 3.0), (2.0, 0.0)])
def test_impossible_window_settings_are_refused(window, hop):
    with pytest.raises(AudioInputError):
        WindowConfig(window, hop)


def tone_in_silence() -> np.ndarray:
    """A second of a 200 Hz tone in the middle of three seconds of silence."""
    audio = np.zeros(3 * RATE, np.float32)
    audio[RATE : 2 * RATE] = 0.5 * np.sin(2 * np.pi * 200 * np.arange(RATE) / RATE)
    return audio


def test_trim_silence_keeps_the_speech_and_a_margin():
    trimmed = trim_silence(tone_in_silence(), RATE, margin_seconds=0.1)
    assert trimmed.size == pytest.approx(1.2 * RATE, abs=0.05 * RATE)


def test_trim_silence_leaves_silence_alone():
    silence = np.zeros(RATE, np.float32)
    assert trim_silence(silence, RATE).size == RATE


def test_utterance_label_is_the_argmax_of_the_mean():
    windows = np.zeros((3, 8))
    windows[0, 0], windows[0, 4] = 0.6, 0.4  # neutral wins this window
    windows[1, 0], windows[1, 4] = 0.45, 0.55
    windows[2, 0], windows[2, 4] = 0.4, 0.6
    result = average_windows(windows)
    # means: neutral 0.4833, angry 0.5167 → angry, although neutral had the single highest window
    assert result.label == "angry"
    assert result.confidence == pytest.approx(1.55 / 3)
    assert result.probabilities["neutral"] == pytest.approx(1.45 / 3)
    assert result.windows == 3
    assert list(result.probabilities) == list(EMOTIONS)


def test_averaging_nothing_is_an_error():
    with pytest.raises(ValueError):
        average_windows(np.zeros((0, 8)))


@pytest.mark.parametrize(("seconds", "samples"), [(1.001, 8008), (2.01, 16080), (2.0, 16000)])
def test_a_window_or_hop_in_seconds_is_the_nearest_whole_number_of_samples(seconds, samples):
    """2.01 s is 16079.999… samples in floating point: truncated, each window was a sample short of it."""
    config = WindowConfig(window_seconds=seconds, hop_seconds=seconds)
    assert (config.window_samples, config.hop_samples) == (samples, samples)


def test_the_shortest_window_and_a_hop_of_a_whole_window_are_allowed():
    """0.1–30 s windows, hops from 0.01 s up to the window itself (back to back)."""
    assert window_starts(6 * RATE, WindowConfig(window_seconds=2.0, hop_seconds=2.0)) == [0, 16000, 32000]
    assert WindowConfig(window_seconds=0.1, hop_seconds=0.1).window_samples == 800


def test_audio_under_two_trim_frames_is_all_sound():
    """Too short to tell sound from silence by level: kept whole, as ``trim_bounds`` says."""
    audio = np.zeros(300, np.float32)
    audio[:200] = 0.5  # one whole 25 ms frame of sound, then 100 samples of silence
    assert trim_bounds(frame_energies(audio, TRIM_FRAME), TRIM_FRAME, audio.size, margin=800) == (0, 300, 300)
