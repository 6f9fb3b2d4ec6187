"""Audio → model input: the one function that training and serving both call.

Every constant that shapes the model input lives here and is written into the
model's metadata (the window length, from ``windows``, travels there too); the
runtime refuses a model whose metadata disagrees (see ``ser_stream.model``).
The silence trimming that training and classify share (``windows.TRIM_*``) is
not in the metadata: a model trained on clips trimmed otherwise is not told apart.

Choices the paper leaves open, and why:
- Canonical rate 8 kHz, so the spectrogram covers 0–4 kHz. That band carries
  pitch, formants and energy, the cues of emotion, and it is exactly what a
  telephone line delivers: wideband and 8 kHz call audio give the model the
  same picture.
- 270 STFT frames spread evenly over the window whatever its length (the paper
  resized an image to 270 columns; we place the frames instead of resizing).
- 520-point frames (65 ms, a fast FFT size) give 261 bins from 0 to 4 kHz; the
  top one is dropped to keep 260 rows, row 0 being 0 Hz.
- Log power relative to the window's own peak, with a fixed 60 dB range, so the
  input does not depend on microphone gain; frames have their mean removed so
  a DC offset cannot become the peak.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np
import scipy.fft
import scipy.signal
from numpy.typing import NDArray

from ser_stream.errors import AudioInputError

SAMPLE_RATE = 8000
N_FFT = 520
N_BINS = 260  # height of the model input
N_FRAMES = 270  # width of the model input
TOP_DB = 60.0
# A window whose loudest bin is below this level is treated as digital silence
# and renders (near) black rather than amplifying rounding noise to full range.
SILENCE_DB = -100.0
# Beyond any scale a float file is written at (±1, ±32768, ±2^31); past ~1e16 a window's power overflows float32.
MAX_AMPLITUDE = 1e12
MIN_SAMPLES = 64  # shorter windows carry nothing a 65 ms frame could resolve
FEATURE_VERSION = 1
DB_PER_OCTAVE = np.float32(10.0 * np.log10(2.0))


def feature_parameters() -> dict[str, float | int | str]:
    """Every parameter that shapes the model input, as written into model metadata."""
    return {
        "version": FEATURE_VERSION,
        "sample_rate": SAMPLE_RATE,
        "n_fft": N_FFT,
        "n_bins": N_BINS,
        "n_frames": N_FRAMES,
        "top_db": TOP_DB,
        "silence_db": SILENCE_DB,
        "window": "hann",
        "scale": "log power relative to window peak, frame mean removed",
    }


# Rates audio may arrive at. Below 1 kHz nothing of speech's pitch survives (and a few bytes
# would claim hours of audio); above 1 MHz no audio interface records. The polyphase ratio to
# 8 kHz is exact where its denominator is at most 1000 (every standard rate: 8, 11.025, 16,
# 22.05, 32, 44.1, 48, 96, 192 kHz); others are the nearest such ratio (47952 Hz: 166/995, 8000.032 Hz,
# so 0.0004 % slow; 8001 Hz: 1/1, 0.0125 %), a filter of thousands of taps being the price of exact.
MIN_INPUT_RATE = 1_000
MAX_INPUT_RATE = 1_000_000


def check_sample_rate(sample_rate: int, source: str | None = None) -> None:
    """Refuse a sample rate this code cannot turn into the model's input; the error names ``source`` when given."""
    if not MIN_INPUT_RATE <= sample_rate <= MAX_INPUT_RATE:
        named = f"{source}: " if source else ""
        raise AudioInputError(f"{named}sample rate {sample_rate} Hz is outside {MIN_INPUT_RATE}–{MAX_INPUT_RATE} Hz, the rates this reads")


def resample_to_canonical(audio: NDArray[np.floating], sample_rate: int) -> NDArray[np.float32]:
    """Polyphase-resample mono audio to ``SAMPLE_RATE``; a no-op at that rate."""
    check_sample_rate(sample_rate)
    samples = np.asarray(audio, dtype=np.float32)
    if sample_rate == SAMPLE_RATE:
        return samples
    ratio = Fraction(SAMPLE_RATE, int(sample_rate)).limit_denominator(1000)
    return scipy.signal.resample_poly(samples, ratio.numerator, ratio.denominator).astype(np.float32)


@lru_cache(maxsize=1)
def _analysis_window() -> NDArray[np.float32]:
    window = scipy.signal.get_window("hann", N_FFT, fftbins=True)
    # Scale so a full-scale sine peaks near 0 dB whatever N_FFT is.
    return (window / window.sum() * 2.0).astype(np.float32)


@lru_cache(maxsize=64)
def _frame_index(n_samples: int) -> NDArray[np.intp]:
    starts = np.round(np.linspace(0, n_samples - N_FFT, N_FRAMES)).astype(np.intp)
    return starts[:, None] + np.arange(N_FFT, dtype=np.intp)[None, :]


def not_audio(samples: NDArray[np.floating], scale_hint: str = "") -> str | None:
    """Why ``samples`` cannot be audio — NaN or infinite values, or a peak beyond ``MAX_AMPLITUDE`` — or None.

    One pass over them: their peak is NaN or infinite exactly when a sample is.
    """
    peak = float(np.max(np.abs(samples), initial=0.0))
    if not np.isfinite(peak):
        return "contains NaN or infinite samples"
    if peak > MAX_AMPLITUDE:
        return f"samples reach {peak:.1e}, beyond ±{MAX_AMPLITUDE:.0e}: not audio{scale_hint}"
    return None


def spectrogram(audio: NDArray[np.floating], sample_rate: int = SAMPLE_RATE) -> NDArray[np.float32]:
    """Mono audio at any rate → (260, 270) float32 grayscale spectrogram in [0, 1].

    Rows are frequency (row 0 = 0 Hz), columns are time. Raises
    ``AudioInputError`` for empty, too short or non-finite audio.
    """
    samples = np.asarray(audio)
    if samples.ndim != 1:
        raise AudioInputError(f"expected mono audio (1-D), got shape {samples.shape}")
    if samples.size == 0:
        raise AudioInputError("audio is empty")
    if (problem := not_audio(samples)) is not None:  # beyond MAX_AMPLITUDE its power would overflow float32: NaN out
        raise AudioInputError(f"audio {problem}")
    canonical = resample_to_canonical(samples, sample_rate)
    if canonical.size < MIN_SAMPLES:
        raise AudioInputError(
            f"audio is too short: {samples.size} samples at {sample_rate} Hz "
            f"(need at least {MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms)"
        )
    if canonical.size < N_FFT:
        canonical = np.pad(canonical, (0, N_FFT - canonical.size))
    # float32 throughout: 2.4× faster than float64, within 4e-6 of it on [0, 1].
    frames = canonical[_frame_index(canonical.size)]
    frames = frames - frames.mean(axis=1, keepdims=True)
    spectrum = scipy.fft.rfft(frames * _analysis_window(), axis=1)[:, :N_BINS]
    power = spectrum.real**2 + spectrum.imag**2
    # 10·log10 computed as (10·log10 2)·log2: the same values, and log2 is twice as fast in numpy
    decibels = DB_PER_OCTAVE * np.log2(np.maximum(power, np.float32(1e-20)))
    floor_db = max(float(decibels.max()), SILENCE_DB) - TOP_DB
    scaled = (np.maximum(decibels, np.float32(floor_db)) - np.float32(floor_db)) / np.float32(TOP_DB)
    return np.ascontiguousarray(np.clip(scaled, 0.0, 1.0).T, dtype=np.float32)


def model_input(spectrograms: list[NDArray[np.float32]] | NDArray[np.float32]) -> NDArray[np.float32]:
    """Stack spectrograms into the ONNX input layout [N, 260, 270, 1]."""
    stacked = np.asarray(spectrograms, dtype=np.float32)
    if stacked.ndim == 2:
        stacked = stacked[None]
    return stacked[..., None]
