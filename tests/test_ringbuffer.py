"""The ring buffer: in-order delivery under any interleaving, exact overrun counts."""

from __future__ import annotations

import numpy as np
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


@settings(max_examples=300)
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


def test_free_space_lets_a_patient_writer_avoid_overruns():
    ring = RingBuffer(8)
    ring.write(np.ones(6, np.float32))
    assert ring.free() == 2
    ring.read(4)
    assert ring.free() == 6 and ring.overruns == 0
