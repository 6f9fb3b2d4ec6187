"""Block-by-block polyphase resampling to the canonical rate, equal to one-shot ``resample_poly``.

Live sources deliver audio in blocks at their own rate; the VAD and the
windows need one continuous canonical-rate signal. Overlap-save with the
filter's half-length as context makes the joins invisible, at a latency of
that context, rounded up to whole steps of the ratio's denominator, plus the
input short of a whole step (measured with 5 ms blocks): 1.38 ms at 48 and
16 kHz (ratios 1/6 and 1/2); 10.5-19.4 ms at 44.1 kHz, 20.5-39.4 ms at
22.05 kHz, 40.5-79.4 ms at 11.025 kHz (80/441, 160/441, 320/441: a context of
441 samples, and up to 441 more waiting for a whole step).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import scipy.signal
from numpy.typing import NDArray

from ser_stream.features import SAMPLE_RATE, check_sample_rate


class StreamResampler:
    def __init__(self, rate_in: int, rate_out: int = SAMPLE_RATE) -> None:
        check_sample_rate(rate_in)
        ratio = Fraction(rate_out, rate_in).limit_denominator(1000)
        self.up, self.down = ratio.numerator, ratio.denominator
        self.passthrough = self.up == self.down == 1
        half_length = 10 * max(self.up, self.down)  # resample_poly's default filter half-length
        context = math.ceil(half_length / self.up) + 1
        self.context = math.ceil(context / self.down) * self.down
        self._pending = np.zeros(self.context, dtype=np.float32)

    def process(self, block: NDArray[np.float32]) -> NDArray[np.float32]:
        """Feed input samples; return every output sample that is now fully determined."""
        if self.passthrough:
            return block
        signal = np.concatenate([self._pending, block])
        usable = ((signal.size - self.context) // self.down) * self.down
        if usable <= self.context:
            self._pending = signal
            return np.zeros(0, dtype=np.float32)
        resampled = scipy.signal.resample_poly(signal[: usable + self.context], self.up, self.down)
        out = resampled[self.context * self.up // self.down : usable * self.up // self.down]
        self._pending = signal[usable - self.context :]
        return out.astype(np.float32)

    def flush(self) -> NDArray[np.float32]:
        """The remaining output at end of stream (the input is padded with silence, as one-shot does)."""
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        remaining = self._pending.size - self.context
        out = self.process(np.zeros(self.context + self.down, dtype=np.float32))
        # resample_poly sizes its output as the ceiling of n_in * up / down; round() would drop its last sample.
        return out[: -(-remaining * self.up // self.down)]
