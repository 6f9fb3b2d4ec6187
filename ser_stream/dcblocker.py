"""Block-by-block removal of a live stream's DC offset, equal to filtering the whole stream at once.

``classify`` takes a file's mean off before it resamples and trims (``clips.without_dc``). A live stream has no
mean until it ends, so the monitor takes its offset (a cheap sound card's, a USB microphone's, a telephone
gateway's, constant or drifting) off as the audio comes, with a high-pass filter at the stream's own rate, before
the resampler (resampled, an offset rings at the stream's start, as at a file's edges). Left in, the voice
detector heard it (a quiet clip with a 0.03 offset gave no utterance) and a short utterance's padding made it a
step inside its window.
"""

from __future__ import annotations

import numpy as np
import scipy.signal
from numpy.typing import NDArray

from ser_stream.features import check_sample_rate

# Second-order Butterworth at 3 Hz: under 0.01 dB off anything from the spectrogram's first bin above 0 Hz (15.4 Hz)
# up, so speech without an offset reaches the network as classify sends it (48 RAVDESS clips: probabilities within
# 0.003), and a constant offset changes no more than rounding the audio otherwise would. A step in the offset settles
# within 0.5 s; of a drift a trace is left (of 0.02 swinging over 4 s, 1.4e-4), which the voice detector can hear
# beside the quietest speech (python -m benchmarks.dc_offset). At 10 Hz less of a drift is left, but speech without an
# offset moves more (probabilities within 0.011), and a breath pop of a few hertz that ends a RAVDESS clip, sound to
# trimming, left its utterance (0.37 s short); first order at 5 Hz took 0.4 dB off 15.4 Hz and left more of a drift.
DC_CUTOFF_HZ = 3.0
DC_FILTER_ORDER = 2


class DcBlocker:
    """One stream's DC blocker: ``process`` its blocks in order. Its state carries across them, so the output does
    not depend on how the audio was split; the stream is taken to have held its first sample before it started, so
    an offset there from the start leaves no transient. A stream (or the audio after an overrun or a device's reopen,
    which start a new blocker) whose first sample is mid-waveform gets one instead: a slow swing of up to that
    sample's value under 3 Hz, settling within about 0.4 s (a 200 Hz tone of 0.3 starting at its peak: a mean of
    -0.14 over the first 50 ms; a regression review, r17). Streams start in silence or room tone far more often."""

    def __init__(self, sample_rate: int) -> None:
        check_sample_rate(sample_rate)
        self._numerator, self._denominator = scipy.signal.butter(DC_FILTER_ORDER, DC_CUTOFF_HZ, "highpass", fs=sample_rate)
        self._state: NDArray[np.float64] | None = None  # set by the first sample

    def process(self, block: NDArray[np.float32]) -> NDArray[np.float32]:
        """The block without the stream's DC offset (filtered in float64: at 48 kHz the poles are 3e-4 from 1)."""
        if block.size == 0:
            return np.zeros(0, dtype=np.float32)
        if self._state is None:
            self._state = scipy.signal.lfilter_zi(self._numerator, self._denominator) * float(block[0])
        filtered, self._state = scipy.signal.lfilter(self._numerator, self._denominator, block, zi=self._state)
        return filtered.astype(np.float32)
