"""Streaming resampling equals one-shot resampling, whatever the block sizes."""

from __future__ import annotations

import numpy as np
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from ser_stream.resampler import StreamResampler


@settings(max_examples=25, deadline=None)
@given(rate=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]), blocks=st.lists(st.integers(1, 3000), min_size=1, max_size=12))
def test_blockwise_output_matches_one_shot(rate, blocks):
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(sum(blocks)).astype(np.float32) * 0.1
    resampler = StreamResampler(rate)
    pieces, start = [], 0
    for size in blocks:
        pieces.append(resampler.process(signal[start : start + size]))
        start += size
    pieces.append(resampler.flush())
    streamed = np.concatenate(pieces)
    one_shot = scipy.signal.resample_poly(signal, 8000, rate) if rate != 8000 else signal
    assert abs(streamed.size - one_shot.size) <= 1
    n = min(streamed.size, one_shot.size)
    assert np.allclose(streamed[:n], one_shot[:n], atol=1e-5)
