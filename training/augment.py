"""Augmentations: the paper's image transforms and our audio-level channel simulations."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import scipy.ndimage
import scipy.signal
from numpy.typing import NDArray

from ser_stream.features import SAMPLE_RATE
from ser_stream.g711 import mulaw_decode, mulaw_encode

_TELEPHONE_BAND = scipy.signal.butter(4, [300, 3400], btype="bandpass", fs=SAMPLE_RATE, output="sos")


def telephone(audio: NDArray[np.float32], rng: np.random.Generator) -> NDArray[np.float32]:
    """Canonical-rate audio as a phone line delivers it: 300–3400 Hz band, level change, G.711 μ-law."""
    banded = scipy.signal.sosfilt(_TELEPHONE_BAND, audio)
    peak = float(np.max(np.abs(banded))) or 1.0
    level = 10 ** (rng.uniform(-30, -3) / 20) / peak
    return (mulaw_decode(mulaw_encode(banded * level)) / level).astype(np.float32)


def add_noise(audio: NDArray[np.float32], rng: np.random.Generator) -> NDArray[np.float32]:
    """Add white or brown-ish noise at 5–30 dB SNR (room and line noise)."""
    signal_power = float(np.mean(np.square(audio))) or 1e-8
    noise = rng.standard_normal(audio.size)
    if rng.random() < 0.5:
        noise = scipy.signal.lfilter([1.0], [1.0, -0.95], noise)
    noise *= np.sqrt(signal_power / (np.mean(np.square(noise)) * 10 ** (rng.uniform(5, 30) / 10)))
    return (audio + noise).astype(np.float32)


SPEED_FACTORS = {"slower": 0.9, "faster": 1.1}  # Kaldi's speed perturbation (Ko et al., 2015)


def change_speed(audio: NDArray[np.float32], factor: float) -> NDArray[np.float32]:
    """The audio played ``factor`` times as fast: tempo, pitch and formants all scaled, as a tape sped up.

    Another speaker's voice, roughly: what 20 training actors are short of.
    """
    ratio = Fraction(factor).limit_denominator(100)  # 0.9 → 9/10: 10 samples out for every 9 in
    return scipy.signal.resample_poly(audio, ratio.denominator, ratio.numerator).astype(np.float32)


def paper_image_transform(image: NDArray[np.float32], rng: np.random.Generator) -> NDArray[np.float32]:
    """Keras ImageDataGenerator as the paper used it: horizontal flip, zoom ±20 %, shear ≤ 0.2 rad.

    (Its fourth transform, rescale, maps 0–255 pixels to [0, 1]; our input is
    already in [0, 1], so it is the identity here.)
    """
    if rng.random() < 0.5:
        image = image[:, ::-1]
    zoom_rows, zoom_cols = rng.uniform(0.8, 1.2, size=2)
    shear = rng.uniform(-0.2, 0.2)
    matrix = np.array([[zoom_rows, 0.0], [np.tan(shear) * zoom_rows, zoom_cols]])
    centre = np.array(image.shape) / 2.0
    offset = centre - matrix @ centre
    return scipy.ndimage.affine_transform(image, matrix, offset=offset, order=1, mode="nearest").astype(
        np.float32
    )


def spec_augment(image: NDArray[np.float32], rng: np.random.Generator) -> NDArray[np.float32]:
    """SpecAugment masks: two frequency bands (≤ 24 rows) and two time spans (≤ 27 columns) set to 0."""
    image = image.copy()
    rows, cols = image.shape
    for _ in range(2):
        width = int(rng.integers(0, 25))
        start = int(rng.integers(0, rows - width + 1))
        image[start : start + width, :] = 0.0
    for _ in range(2):
        width = int(rng.integers(0, 28))
        start = int(rng.integers(0, cols - width + 1))
        image[:, start : start + width] = 0.0
    return image


def frequency_warp(image: NDArray[np.float32], factor: float) -> NDArray[np.float32]:
    """Vocal tract length perturbation on a spectrogram: stretch its frequency axis by ``factor``.

    Speakers differ most in pitch and vocal-tract length, both of which scale
    the frequencies of the same sounds; warping the rows simulates a new
    speaker (Jaitly & Hinton 2013). The warp is piecewise linear so the top
    row (4 kHz) stays put: frequency f moves to ``factor · f`` up to a
    boundary, then linearly to the top. Rows are interpolated linearly.
    """
    rows = image.shape[0]
    top = rows - 1
    boundary = 0.85 * top * min(factor, 1.0)
    output_rows = np.arange(rows, dtype=np.float64)
    source = np.where(
        output_rows <= boundary * factor,
        output_rows / factor,
        boundary + (output_rows - boundary * factor) * (top - boundary) / (top - boundary * factor),
    )
    source = np.clip(source, 0.0, top)
    lower = np.floor(source).astype(np.intp)
    upper = np.minimum(lower + 1, top)
    weight = (source - lower).astype(np.float32)[:, None]
    return (image[lower] * (1.0 - weight) + image[upper] * weight).astype(np.float32)
