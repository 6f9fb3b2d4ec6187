"""A recorded clip → the spectrograms of its windows: shared by offline
classification and training, so both see a clip the same way."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ser_stream.features import SAMPLE_RATE, resample_to_canonical, spectrogram
from ser_stream.windows import WindowConfig, cut_windows, trim_silence


def clip_spectrograms(
    audio: NDArray[np.floating], sample_rate: int, config: WindowConfig
) -> NDArray[np.float32]:
    """Resample, trim leading/trailing silence, cut windows → [n, 260, 270] spectrograms."""
    canonical = trim_silence(resample_to_canonical(audio, sample_rate), SAMPLE_RATE)
    windows, _ = cut_windows(canonical, config)
    return np.stack([spectrogram(window, SAMPLE_RATE) for window in windows])
