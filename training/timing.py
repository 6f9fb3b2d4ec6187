"""Contenders timed side by side: each round runs every one once, in turn, so a noisy machine slows them alike."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def alternate_ms(contenders: dict[str, tuple[Callable[[], object], int]], rounds: int) -> dict[str, dict[str, float]]:
    """Median and p95 ms per window of each ``(function, windows per call)``, timed alternately: one call of each per round."""
    for function, _ in contenders.values():
        function()  # warm up
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (function, per) in contenders.items():
            start = time.perf_counter()
            function()
            samples[name].append((time.perf_counter() - start) * 1000 / per)
    return {name: {"median": round(float(np.median(values)), 3), "p95": round(float(np.percentile(values, 95)), 3)}
            for name, values in samples.items()}
