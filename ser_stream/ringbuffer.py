"""The preallocated buffer between a capture thread (one writer) and the worker (one reader).

Policy when the reader falls behind: **overwrite oldest**. Live audio cannot
wait, and the newest audio is what a live monitor must judge; the samples the
reader lost are counted in ``overrun_samples``. Writers that can wait (files,
stdin) ask ``free()`` first and never overrun.

Lock-free for one writer and one reader: the writer copies, then advances
``written``; the reader snapshots ``written``, copies, then re-checks that the
writer did not lap it during the copy.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


class RingBuffer:
    """Fixed-capacity float32 sample buffer; positions count samples since the stream began."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._data = np.zeros(capacity, dtype=np.float32)
        self.written = 0  # total samples ever written
        self.read_position = 0  # total samples consumed or skipped by the reader
        self.overrun_samples = 0
        self.overruns = 0

    def write(self, samples: NDArray[np.float32]) -> None:
        """Copy ``samples`` in; never blocks, never allocates (beyond numpy views)."""
        count = samples.shape[0]
        if count > self.capacity:  # only the newest capacity samples can be kept
            samples = samples[count - self.capacity :]
            self.written += count - self.capacity
            count = self.capacity
        start = self.written % self.capacity
        first = min(count, self.capacity - start)
        self._data[start : start + first] = samples[:first]
        if first < count:
            self._data[: count - first] = samples[first:]
        self.written += count

    def free(self) -> int:
        """Samples that can be written without overwriting unread audio."""
        return self.capacity - (self.written - self.read_position)

    def available(self) -> int:
        return min(self.written - self.read_position, self.capacity)

    def read(self, max_samples: int | None = None) -> NDArray[np.float32]:
        """Copy out unread samples in order (oldest first), skipping and counting any overwritten ones."""
        written = self.written
        if written - self.read_position > self.capacity:
            self._count_overrun(written - self.capacity - self.read_position)
            self.read_position = written - self.capacity
        count = written - self.read_position
        if max_samples is not None:
            count = min(count, max_samples)
        start = self.read_position % self.capacity
        first = min(count, self.capacity - start)
        out = np.empty(count, dtype=np.float32)
        out[:first] = self._data[start : start + first]
        out[first:] = self._data[: count - first]
        # The writer may have lapped us while we copied: drop what it overwrote.
        lapped = self.written - self.capacity - self.read_position
        if lapped > 0:
            lost = min(lapped, count)
            self._count_overrun(lost)
            out = out[lost:]
            self.read_position += lost
        self.read_position += out.shape[0]
        return out

    def _count_overrun(self, samples: int) -> None:
        self.overrun_samples += samples
        self.overruns += 1
