"""Turning window outputs into one label per utterance (the paper's rule).

The paper labels an utterance by the mean of its windows' softmax outputs; the
offline classifier and the live monitor both call ``average_windows``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ser_stream import EMOTIONS


@dataclass(frozen=True)
class UtteranceLabel:
    """An utterance's label: argmax of the mean probability vector over its windows."""

    label: str
    confidence: float
    probabilities: dict[str, float]
    windows: int


def average_windows(window_probabilities: NDArray[np.floating]) -> UtteranceLabel:
    """Mean of [n_windows, 8] probability rows → label, its probability, the mean vector."""
    rows = np.asarray(window_probabilities, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != len(EMOTIONS) or rows.shape[0] == 0:
        raise ValueError(f"expected [n>0, {len(EMOTIONS)}] probabilities, got shape {rows.shape}")
    mean = rows.mean(axis=0)
    best = int(np.argmax(mean))
    return UtteranceLabel(
        label=EMOTIONS[best],
        confidence=float(mean[best]),
        probabilities={emotion: float(p) for emotion, p in zip(EMOTIONS, mean)},
        windows=int(rows.shape[0]),
    )
