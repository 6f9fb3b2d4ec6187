"""Cutting audio into the fixed-length windows the model sees, in stream time.

Offline classification, training and the live monitor all cut windows here,
so a clip is seen the same way in training as on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ser_stream.errors import AudioInputError
from ser_stream.features import SAMPLE_RATE

# The window is fixed by training (the model sees 2 s stretched over 270 columns);
# the hop is a runtime choice: docs/benchmarks.md (window and hop trade-off).
DEFAULT_WINDOW_SECONDS = 2.0
DEFAULT_HOP_SECONDS = 0.5


@dataclass(frozen=True)
class WindowConfig:
    """Window length and hop, in seconds of audio."""

    window_seconds: float = DEFAULT_WINDOW_SECONDS
    hop_seconds: float = DEFAULT_HOP_SECONDS

    def __post_init__(self) -> None:
        if not 0.1 <= self.window_seconds <= 30.0:
            raise AudioInputError(f"window of {self.window_seconds} s is outside 0.1–30 s")
        if not 0.01 <= self.hop_seconds <= self.window_seconds:
            raise AudioInputError(
                f"hop of {self.hop_seconds} s must be at least 0.01 s and at most the window"
            )

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * SAMPLE_RATE))

    @property
    def hop_samples(self) -> int:
        return int(round(self.hop_seconds * SAMPLE_RATE))


def window_starts(n_samples: int, config: WindowConfig) -> list[int]:
    """Start offsets of the windows over ``n_samples`` of canonical-rate audio.

    Windows step by the hop; if the last one stops short of the end, one more is
    aligned to the end so the tail is always seen. Audio shorter than one window
    gives a single window at 0 (``cut_windows`` pads it).
    """
    window, hop = config.window_samples, config.hop_samples
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


def cut_windows(
    audio: NDArray[np.float32], config: WindowConfig
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Canonical-rate audio → (windows [n, window_samples], start times in seconds).

    Audio shorter than a window is centred in silence, which renders black.
    """
    if audio.size == 0:
        raise AudioInputError("audio is empty")
    window = config.window_samples
    if audio.size < window:
        lead = (window - audio.size) // 2
        audio = np.pad(audio, (lead, window - audio.size - lead))
        return audio[None, :].astype(np.float32), np.array([-lead / SAMPLE_RATE])
    starts = window_starts(audio.size, config)
    windows = np.stack([audio[start : start + window] for start in starts]).astype(np.float32)
    return windows, np.asarray(starts, dtype=np.float64) / SAMPLE_RATE


TRIM_FRAME_SECONDS = 0.025  # the energy frame that trimming and the sound check measure in
TRIM_FRAME = int(TRIM_FRAME_SECONDS * SAMPLE_RATE)  # that frame at the canonical rate
TRIM_THRESHOLD_DB = 40.0  # frames this far below the loudest count as silence
TRIM_MARGIN_SECONDS = 0.1  # kept either side of the sound, so onsets and decays are not cut
# Frames quieter than this (mean square) are never sound, however quiet the loudest: half a 16-bit step's square
# (-93.3 dBFS), 3 dB over the usual dither (TPDF of ±1 step, -96.3 dBFS; 16 kHz audio's loses 3 dB more on its way
# to the 8 kHz canonical rate). Relative to the peak alone, a voice recorded 20 dB quieter than RAVDESS's quietest
# clip kept its seconds of dither as sound. A whole step's square would also cut the faint ends of RAVDESS's six
# quietest clips and change two labels; this moves two clips' ends, by 0.03 and 0.13 s, and no label.
# Coarser formats have their own (``audiofile.rounding_floor``).
TRIM_FLOOR = 2.0**-30 / 2


def frame_energies(audio: NDArray[np.float32], frame: int) -> NDArray[np.float64]:
    """Mean square of each whole ``frame``-sample frame (a trailing partial frame is left out)."""
    n_frames = audio.size // frame
    return np.square(audio[: n_frames * frame].reshape(n_frames, frame), dtype=np.float64).mean(axis=1)


def trim_bounds(
    energy: NDArray[np.float64], frame: int, size: int, threshold_db: float = TRIM_THRESHOLD_DB, *, margin: int, floor: float = TRIM_FLOOR
) -> tuple[int, int, int]:
    """Where trimming cuts ``size`` samples whose ``frame``-sample frames have ``energy``: ``first``, ``last``
    (the frames within ``threshold_db`` of the loudest and at least ``floor``, widened by ``margin`` samples each
    side) and how many samples the sound itself spans, first loud frame to last, without the margins.

    Silent throughout (no frame over ``floor``), or under two frames: the whole audio, all of it counted as sound.
    """
    if energy.size < 2 or energy.max() <= max(floor, 1e-12):
        return 0, size, size
    active = np.flatnonzero(energy >= max(energy.max() * 10 ** (-threshold_db / 10), floor))
    start, end = int(active[0]) * frame, (int(active[-1]) + 1) * frame
    return max(0, start - margin), min(size, end + margin), end - start
