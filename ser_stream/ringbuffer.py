"""The preallocated buffer between a capture thread (one writer) and the worker (one reader).

Policy when the reader falls behind: **overwrite oldest**. Live audio cannot
wait, and the newest audio is what a live monitor must judge; the samples the
reader lost are counted in ``overrun_samples``. Writers that can wait (files,
stdin) ask ``free()`` first and never overrun.

Lock-free for one writer and one reader, seqlock-style: the writer advances
``reserved`` to the end of its block, copies, then advances ``written``; the
reader snapshots ``written``, copies, then reads ``reserved`` and drops (and
counts) whatever a write in progress or finished during the copy overwrote.

It also remembers when each write arrived (``arrival_of``): latency runs from
the arrival of the audio that ended an utterance, and audio that waited here
while the worker was behind waited that long too.
"""

from __future__ import annotations

import time

import numpy as np
from numpy.typing import NDArray

# Writes whose arrival times are kept. A write ending in the same stretch of capacity / 512 samples as the one before
# it extends that one's entry (and keeps its earlier time), so the newest half of the entries spans at least twice
# the capacity however small the writes are (a sound card's 5 ms callbacks), in 32 kB a stream.
ARRIVAL_ENTRIES = 2048


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
        self._arrival_ends = np.zeros(ARRIVAL_ENTRIES, dtype=np.int64)  # position just past each write (or run of writes)
        self._arrival_times = np.zeros(ARRIVAL_ENTRIES, dtype=np.float64)  # time.monotonic() when it arrived
        self._arrivals = 0  # entries ever made: entry i lives at i % ARRIVAL_ENTRIES
        self._arrival_stretch = max(1, -(-4 * capacity // ARRIVAL_ENTRIES))

    def write(self, samples: NDArray[np.float32], arrived_at: float | None = None) -> None:
        """Copy ``samples`` in; never blocks, never allocates (beyond numpy views). ``arrived_at``: when they reached
        the monitor (``time.monotonic()``), for a writer that may have waited for room since; by default, now."""
        arrival = time.monotonic() if arrived_at is None else arrived_at
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
        self._note_arrival(end, arrival)  # before ``written`` lets the reader see them: it may look their time up
        self.written = end

    def _note_arrival(self, end: int, arrival: float) -> None:
        latest = (self._arrivals - 1) % ARRIVAL_ENTRIES
        if self._arrivals and self._arrival_ends[latest] // self._arrival_stretch == end // self._arrival_stretch:
            self._arrival_ends[latest] = end
            return
        slot = self._arrivals % ARRIVAL_ENTRIES
        self._arrival_times[slot] = arrival  # the time first: a reader trusts an entry once its end is there
        self._arrival_ends[slot] = end
        self._arrivals += 1

    def arrival_of(self, position: int) -> float:
        """When the sample at ``position`` arrived (``write``); a write of less than capacity / 512 samples may be
        given the time of the one before it. The latest write's time for a position not written yet. Reader side."""
        made = self._arrivals
        if made == 0:
            return time.monotonic()
        low, high = max(0, made - ARRIVAL_ENTRIES // 2), made - 1  # the newest half: the writer cannot reach it meanwhile
        while low < high:  # the first entry that ends past ``position``
            middle = (low + high) // 2
            if self._arrival_ends[middle % ARRIVAL_ENTRIES] > position:
                high = middle
            else:
                low = middle + 1
        return float(self._arrival_times[low % ARRIVAL_ENTRIES])

    def waiting_since(self) -> float | None:
        """When the oldest audio still unread arrived, or None if none waits: how long the reader has kept it waiting."""
        oldest = max(self.read_position, self.reserved - self.capacity)  # what the writer overwrote no longer waits
        return self.arrival_of(oldest) if self.written > oldest else None

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
