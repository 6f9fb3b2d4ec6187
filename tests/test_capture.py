"""The microphone path at the sounddevice callback boundary (there is no sound card here)."""

from __future__ import annotations

import numpy as np

from ser_stream.ringbuffer import RingBuffer
from ser_stream.sources import make_callback


class Flags:
    """What PortAudio passes as ``status``: a CallbackFlags-like object."""

    def __init__(self, input_overflow: bool = False) -> None:
        self.input_overflow = input_overflow

    def __bool__(self) -> bool:
        return self.input_overflow


class Sink:
    def __init__(self, capacity: int) -> None:
        self.ring = RingBuffer(capacity)
        self.input_overflows = 0
        self.finished = False
        self.error = None
        self.warning = None


def test_callback_copies_blocks_in_order_and_counts_input_overflows():
    sink = Sink(4096)
    callback = make_callback(sink)
    blocks = [np.arange(i * 256, (i + 1) * 256, dtype=np.float32).reshape(-1, 1) / 10000 for i in range(8)]
    for index, block in enumerate(blocks):
        callback(block, 256, None, Flags(input_overflow=index == 3))
    assert np.allclose(sink.ring.read(), np.concatenate(blocks)[:, 0])
    assert sink.input_overflows == 1


def test_callback_never_blocks_when_the_reader_falls_behind():
    sink = Sink(1024)
    callback = make_callback(sink)
    for i in range(10):
        callback(np.full((256, 1), i, np.float32), 256, None, Flags())
    newest = sink.ring.read()
    assert newest.size == 1024 and newest[-1] == 9  # the newest audio is kept
    assert sink.ring.overrun_samples == 10 * 256 - 1024


def test_callback_does_not_reallocate_its_buffer():
    sink = Sink(2048)
    storage = sink.ring._data
    callback = make_callback(sink)
    for _ in range(50):
        callback(np.ones((128, 1), np.float32), 128, None, Flags())
    assert sink.ring._data is storage
