"""The preallocated buffer between a capture thread (one writer) and the worker (one reader).

Policy when the reader falls behind: **overwrite oldest**. Live audio cannot
wait, and the newest audio is what a live monitor must judge; the samples the
reader lost are counted in ``overrun_samples``. Writers that can wait (files,
stdin) ask ``free()`` first and never overrun.

Lock-free for one writer and one reader, seqlock-style: the writer advances
``reserved`` to the end of its block, copies, then advances ``written``; the
reader snapshots ``written``, copies, then reads ``reserved`` and drops (and
counts) whatever a write in progress or finished during the copy overwrote.
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
        self.reserved = 0  # ``written`` plus the block being copied in; slots below reserved - capacity are stale
        self.read_position = 0  # total samples consumed or skipped by the reader
        self.overrun_samples = 0
        self.overruns = 0

    def write(self, samples: NDArray[np.float32]) -> None:
        """Copy ``samples`` in; never blocks, never allocates (beyond numpy views)."""
        end = self.written + samples.shape[0]
        kept = samples[max(0, samples.shape[0] - self.capacity) :]  # only the newest capacity samples can be kept
        # Announce the overwrite before making it, so a read copying those slots meanwhile can tell.
        self.reserved = end
        count = kept.shape[0]
        start = (end - count) % self.capacity
        first = min(count, self.capacity - start)
        self._data[start : start + first] = kept[:first]
        if first < count:
            self._data[: count - first] = kept[first:]
        self.written = end

    def free(self) -> int:
        """Samples that can be written without overwriting unread audio."""
        return self.capacity - (self.written - self.read_position)

    def available(self) -> int:
        return min(self.written - self.read_position, self.capacity)

    def read(self, max_samples: int | None = None, until: int | None = None) -> NDArray[np.float32]:
        """Copy out unread samples in order (oldest first), skipping and counting any overwritten ones; none at or
        past position ``until`` (where the stream has a gap in its time)."""
        written = self.written
        stale = self._skip_overwritten(up_to=written)
        count = written - self.read_position
        if max_samples is not None:
            count = min(count, max_samples)
        if until is not None:
            count = max(0, min(count, until - self.read_position))
        start = self.read_position % self.capacity
        first = min(count, self.capacity - start)
        out = np.empty(count, dtype=np.float32)
        out[:first] = self._data[start : start + first]
        out[first:] = self._data[: count - first]
        # The writer may have reserved over what we just copied: drop what it overwrote, or is overwriting.
        late = self._skip_overwritten(up_to=self.read_position + count)
        out = out[late:]
        self.read_position += out.shape[0]
        if stale or late:  # one gap in what this read returns, however it was found: one overrun
            self.overruns += 1
        return out

    def _skip_overwritten(self, up_to: int) -> int:
        """Move the read position past samples the writer has reserved over (not past ``up_to``); count them."""
        lost = min(self.reserved - self.capacity, up_to) - self.read_position
        if lost <= 0:
            return 0
        self.overrun_samples += lost
        self.read_position += lost
        return lost
