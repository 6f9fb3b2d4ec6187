"""The ring buffer: in-order delivery under any interleaving, exact overrun counts."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ser_stream.ringbuffer import RingBuffer

operations = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 40)),
        st.tuples(st.just("read"), st.one_of(st.none(), st.integers(0, 40))),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(1, 32), script=operations)
def test_reads_return_samples_in_order_and_overruns_are_counted_exactly(capacity, script):
    ring = RingBuffer(capacity)
    next_value = 0
    received: list[float] = []
    expected_lost = 0
    for op, n in script:
        if op == "write":
            # A model of the policy: unread samples beyond capacity are the oldest, and are lost.
            ring.write(np.arange(next_value, next_value + n, dtype=np.float32))
            next_value += n
        else:
            unread = next_value - (len(received) + expected_lost)
            if unread > capacity:
                expected_lost += unread - capacity
            block = ring.read(n)
            received.extend(block.tolist())
    unread = next_value - (len(received) + expected_lost)
    expected_lost += max(0, unread - capacity)
    received.extend(ring.read().tolist())
    assert ring.overrun_samples == expected_lost
    # Everything received is strictly increasing (in order, no duplicates) ...
    assert all(b > a for a, b in zip(received, received[1:]))
    # ... and every sample was either received or counted as lost.
    assert len(received) + ring.overrun_samples == next_value
    assert ring.read().size == 0


def test_overwrite_oldest_keeps_the_newest_audio():
    ring = RingBuffer(4)
    ring.write(np.arange(10, dtype=np.float32))
    assert ring.read().tolist() == [6, 7, 8, 9]
    assert ring.overrun_samples == 6


def test_each_read_that_finds_audio_overwritten_before_it_counts_one_overrun():
    """``overruns`` counts the gaps in what the reader got, however many samples each lost (``overrun_samples``)."""
    ring = RingBuffer(4)
    ring.write(np.arange(10, dtype=np.float32))
    ring.read()
    assert (ring.overruns, ring.overrun_samples) == (1, 6)
    ring.write(np.arange(10, 12, dtype=np.float32))
    assert ring.read().tolist() == [10, 11] and ring.overruns == 1  # nothing lost: no overrun
    ring.write(np.arange(12, 17, dtype=np.float32))
    assert ring.read().tolist() == [13, 14, 15, 16]
    assert (ring.overruns, ring.overrun_samples) == (2, 7)


def test_unread_audio_available_is_at_most_the_capacity_however_much_was_written():
    ring = RingBuffer(100)
    ring.write(np.zeros(300, np.float32))
    assert ring.available() == 100 and ring.free() <= 0
    assert ring.read().size == 100 and ring.available() == 0


def test_free_space_lets_a_patient_writer_avoid_overruns():
    ring = RingBuffer(8)
    ring.write(np.ones(6, np.float32))
    assert ring.free() == 2
    ring.read(4)
    assert ring.free() == 6 and ring.overruns == 0


class ReadsMidCopy(np.ndarray):
    """Ring storage that hands the reader a turn right after the writer's first store (the GIL can do the same)."""

    read_mid_copy: Callable[[], None] | None = None

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        if self.read_mid_copy is not None:
            read, self.read_mid_copy = self.read_mid_copy, None
            read()


def pause_next_write_for_a_read(ring: RingBuffer, received: list[float], max_samples: int | None = None) -> None:
    """Make the ring's next write stop after its first store while ``ring.read(max_samples)`` runs."""
    if not isinstance(ring._data, ReadsMidCopy):
        ring._data = ring._data.view(ReadsMidCopy)
    ring._data.read_mid_copy = lambda: received.extend(ring.read(max_samples).tolist())


def test_a_read_during_a_write_never_returns_the_samples_being_overwritten():
    ring = RingBuffer(8)
    ring.write(np.arange(8, dtype=np.float32))
    received: list[float] = []
    pause_next_write_for_a_read(ring, received)
    ring.write(np.arange(8, 12, dtype=np.float32))  # overwrites samples 0-3 while the reader copies 0-7
    assert received == [4, 5, 6, 7]
    assert (ring.overruns, ring.overrun_samples) == (1, 4)
    assert ring.read().tolist() == [8, 9, 10, 11]


def test_a_read_during_a_write_longer_than_the_ring_returns_only_intact_audio():
    ring = RingBuffer(4)
    ring.write(np.arange(4, dtype=np.float32))
    received: list[float] = []
    pause_next_write_for_a_read(ring, received)
    ring.write(np.arange(4, 14, dtype=np.float32))  # keeps 10-13, storing 10-11 then 12-13
    received.extend(ring.read().tolist())
    assert received == [10, 11, 12, 13]
    assert ring.overrun_samples == 10


class WritesMidRead(np.ndarray):
    """Ring storage that lets the writer store a block the moment the reader starts copying (the GIL can do the same)."""

    write_mid_read: Callable[[], None] | None = None

    def __getitem__(self, key):
        if self.write_mid_read is not None:
            write, self.write_mid_read = self.write_mid_read, None
            write()
        return super().__getitem__(key)


def test_a_read_that_finds_audio_lost_before_it_and_during_its_copy_counts_one_overrun():
    """Samples 0-3 were overwritten before the read and 4-5 while it copied: one gap in what it returns, which was
    counted as two overruns."""
    ring = RingBuffer(8)
    ring.write(np.arange(12, dtype=np.float32))
    ring._data = ring._data.view(WritesMidRead)
    ring._data.write_mid_read = lambda: ring.write(np.arange(12, 14, dtype=np.float32))
    assert ring.read().tolist() == [6, 7, 8, 9, 10, 11]
    assert (ring.overruns, ring.overrun_samples) == (1, 6)
    assert ring.read().tolist() == [12, 13] and ring.overruns == 1


def test_a_read_that_finds_audio_lost_only_during_its_copy_counts_one_overrun():
    """Nothing was lost when the read began; samples 0-1 were overwritten while it copied."""
    ring = RingBuffer(8)
    ring.write(np.arange(8, dtype=np.float32))
    ring._data = ring._data.view(WritesMidRead)
    ring._data.write_mid_read = lambda: ring.write(np.arange(8, 10, dtype=np.float32))
    assert ring.read().tolist() == [2, 3, 4, 5, 6, 7]
    assert (ring.overruns, ring.overrun_samples) == (1, 2)


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(1, 32),
    script=st.lists(
        st.tuples(st.integers(0, 40), st.one_of(st.none(), st.integers(0, 40)), st.booleans()), max_size=40
    ),
)
def test_reads_interleaved_with_writes_are_in_order_and_every_sample_is_received_or_counted(capacity, script):
    ring = RingBuffer(capacity)
    next_value = 0
    received: list[float] = []
    for write_size, read_size, read_mid_copy in script:
        if read_mid_copy:
            pause_next_write_for_a_read(ring, received, read_size)
        ring.write(np.arange(next_value, next_value + write_size, dtype=np.float32))
        next_value += write_size
        if not read_mid_copy:
            received.extend(ring.read(read_size).tolist())
    received.extend(ring.read().tolist())
    assert all(b > a for a, b in zip(received, received[1:]))
    assert len(received) + ring.overrun_samples == next_value
    newest = list(range(max(0, next_value - capacity), next_value))
    assert received[len(received) - len(newest) :] == newest  # the newest audio is never the audio lost


def arrivals_by_position(sizes: list[int]) -> list[float]:
    """The time each sample arrived when write ``i`` of ``sizes`` came at time ``i``."""
    return [float(index) for index, size in enumerate(sizes) for _ in range(size)]


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(1, 4096), sizes=st.lists(st.integers(0, 300), min_size=1, max_size=120))
def test_the_ring_knows_when_each_sample_it_holds_arrived_exactly_for_writes_of_a_512th_of_it_or_more(capacity, sizes):
    """Latency runs from the arrival of the audio that ended an utterance, which may have waited here: a write
    that is not tiny is known exactly; a tiny one (a sound card's 5 ms in a 10 s ring) no later than it came,
    nor earlier than the write a 512th of the capacity before it."""
    ring = RingBuffer(capacity)
    for index, size in enumerate(sizes):
        ring.write(np.zeros(size, np.float32), arrived_at=float(index))
    truth = arrivals_by_position(sizes)
    stretch = -(-capacity // 512)
    for position in range(max(0, len(truth) - capacity), len(truth)):
        arrived = ring.arrival_of(position)
        if all(size >= stretch for size in sizes):
            assert arrived == truth[position]
        assert truth[max(0, position - stretch)] <= arrived <= truth[position]


@pytest.mark.parametrize("largest_write", [7, 1])
def test_the_ring_remembers_arrivals_of_all_it_holds_however_many_small_writes_brought_them(largest_write):
    """Ten thousand writes of 1 to 7 samples, or of one each, into 4096: more writes than the ring keeps times of
    (at one sample a write, four times more than the newest half of its entries)."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, largest_write + 1, 10000).tolist()
    ring = RingBuffer(4096)
    for index, size in enumerate(sizes):
        ring.write(np.zeros(size, np.float32), arrived_at=float(index))
    truth = arrivals_by_position(sizes)
    for position in range(len(truth) - 4096, len(truth)):
        assert truth[position - 8] <= ring.arrival_of(position) <= truth[position]


def test_audio_the_writer_overwrote_no_longer_counts_as_waiting():
    """How long the reader has kept audio waiting runs from the oldest audio it can still read: 30 writes of 100
    samples, one a second, into a ring of 1000 that nobody reads hold the last ten, the first of which came at 20 s."""
    ring = RingBuffer(1000)
    assert ring.waiting_since() is None
    for second in range(30):
        ring.write(np.zeros(100, np.float32), arrived_at=float(second))
    assert ring.waiting_since() == 20.0
    ring.read(150)
    assert ring.waiting_since() == 21.0
    ring.read()
    assert ring.waiting_since() is None


def test_the_ring_takes_the_time_of_a_write_that_gives_none_from_the_clock():
    import time

    ring = RingBuffer(100)
    before = time.monotonic()
    ring.write(np.zeros(10, np.float32))
    assert before <= ring.arrival_of(5) <= time.monotonic()


def test_a_read_until_a_position_the_reader_has_already_passed_returns_nothing():
    """``until`` marks a gap in the stream's time: none of the audio at or past it, even when the reader is there."""
    ring = RingBuffer(100)
    ring.write(np.arange(50, dtype=np.float32))
    assert ring.read(20).size == 20
    assert ring.read(until=10).size == 0 and ring.read_position == 20
    assert list(ring.read(until=30)) == list(range(20, 30))
