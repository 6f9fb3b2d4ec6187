"""The microphone path at the sounddevice callback boundary (there is no sound card here)."""

from __future__ import annotations

import threading
import time

import numpy as np

from ser_stream.ringbuffer import RingBuffer
from ser_stream.sources import DevicePolicy, MicSource, make_callback


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


class FakeSoundDevice:
    """Stands in for the ``sounddevice`` module (a third-party boundary): each opened stream
    delivers ``blocks`` callbacks, then is unplugged (``active`` false) or goes quiet, or is healthy."""

    def __init__(self, sessions: list[str], blocks: int = 20) -> None:
        self.sessions, self.blocks, self.opened, self.delivered = list(sessions), blocks, 0, 0

    def query_devices(self, device, kind):
        return {"default_samplerate": 16000}

    def InputStream(self, callback, **settings):  # noqa: N802 - the module's name
        fake = self
        behaviour = self.sessions.pop(0) if self.sessions else "gone"

        class Stream:
            active = True

            def __enter__(self):
                if behaviour == "gone":
                    raise RuntimeError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")
                fake.opened += 1
                self.running = True
                self.thread = threading.Thread(target=self.deliver)
                self.thread.start()
                return self

            def deliver(self):
                index = 0
                while self.running and (index < fake.blocks or behaviour == "healthy"):
                    callback(np.full((160, 1), index / 100, np.float32), 160, None, Flags())
                    index += 1
                    time.sleep(0.005)
                fake.delivered += index
                if behaviour == "unplugged":
                    self.active = False  # what PortAudio does when the device disappears

            def __exit__(self, *exc):
                self.running = False
                self.thread.join()
                return False

        return Stream()


def run_mic(fake: FakeSoundDevice, seconds: float) -> tuple[Sink, MicSource]:
    source = MicSource("", None, DevicePolicy(stall_seconds=0.3, reopen_attempts=2, reopen_delay_seconds=0.05), sounddevice=fake)
    sink, stop = Sink(1 << 16), threading.Event()
    thread = threading.Thread(target=source.run, args=(sink, stop))
    thread.start()
    thread.join(seconds)
    stop.set()
    thread.join()
    return sink, source


def test_an_unplugged_device_that_cannot_be_reopened_ends_the_stream_with_one_error():
    sink, source = run_mic(FakeSoundDevice(["unplugged"]), seconds=10)
    assert sink.finished and sink.ring.available() == 20 * 160  # what it captured before is kept
    assert sink.error == (
        "mic: audio device failed (Error opening InputStream: Device unavailable [PaErrorCode -9985]); gave up after 2 reopen attempt(s)"
    )
    assert source.failures[0] == "the audio device stopped (unplugged or failed)" and len(source.failures) == 3


def test_a_device_that_goes_quiet_is_reopened_and_the_stream_goes_on():
    fake = FakeSoundDevice(["stalls", "healthy"], blocks=10)
    sink, source = run_mic(fake, seconds=1.0)
    assert sink.error is None and sink.finished
    assert fake.opened == 2 and sink.ring.available() == fake.delivered * 160 > 10 * 160  # audio from both sessions
    assert sink.warning == "mic: the device failed 1 time(s) and was reopened (no audio from the device for 0.3 s)"
