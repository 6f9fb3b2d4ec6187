"""Streaming resampling equals one-shot resampling, whatever the block sizes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ser_stream.errors import AudioInputError
from ser_stream.features import resample_to_canonical
from ser_stream.resampler import StreamResampler

LIVE_SOURCE_RATES = [8000, 11025, 16000, 22050, 44100, 48000, 96000]


def stream_through(resampler: StreamResampler, signal: np.ndarray, block_sizes: list[int]) -> np.ndarray:
    """What a live source gets out: each block as it arrives, then the flush at end of stream."""
    pieces, start = [], 0
    for size in block_sizes:
        pieces.append(resampler.process(signal[start : start + size]))
        start += size
    pieces.append(resampler.process(signal[start:]))
    pieces.append(resampler.flush())
    return np.concatenate(pieces)


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from(LIVE_SOURCE_RATES),
    block_sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=12),
    tail=st.integers(0, 200),
)
def test_streamed_output_equals_one_shot_resampling_in_length_and_values(rate, block_sizes, tail):
    signal = (np.random.default_rng(0).standard_normal(sum(block_sizes) + tail) * 0.1).astype(np.float32)
    streamed = stream_through(StreamResampler(rate), signal, block_sizes)
    one_shot = resample_to_canonical(signal, rate)
    assert streamed.size == one_shot.size
    np.testing.assert_allclose(streamed, one_shot, atol=1e-5)


# What sources hand the worker: reads that found nothing, single samples, 10/20/30/60 ms packets and odd reads.
BLOCK_SIZES = st.integers(0, 2) | st.integers(0, 3000)


@settings(max_examples=40, deadline=None)
@given(rate=st.sampled_from([*LIVE_SOURCE_RATES, 47952, 12345]), block_sizes=st.lists(BLOCK_SIZES, min_size=1, max_size=40))
def test_what_comes_out_so_far_depends_only_on_how_much_went_in_whatever_the_blocks(rate, block_sizes):
    """After each block, the output covers all the input but the filter's context and the part short of a whole step
    of the ratio's denominator (the latency the module documents), however it was split; at the end, one-shot's,
    at a rate whose ratio is approximated (47952, 12345 Hz) too."""
    signal = (np.random.default_rng(1).standard_normal(sum(block_sizes)) * 0.1).astype(np.float32)
    resampler, pieces, taken = StreamResampler(rate), [], 0
    for size in block_sizes:
        pieces.append(resampler.process(signal[taken : taken + size]))
        taken += size
        held_back = 0 if resampler.passthrough else resampler.context  # at 8 kHz the blocks pass as they are
        whole_steps = taken // resampler.down * resampler.down
        determined = max(0, whole_steps - held_back) * resampler.up // resampler.down
        assert sum(piece.size for piece in pieces) == determined
    streamed = np.concatenate([*pieces, resampler.flush()])
    one_shot = resample_to_canonical(signal, rate)
    assert streamed.dtype == np.float32 and streamed.size == one_shot.size
    np.testing.assert_allclose(streamed, one_shot, atol=1e-5)


def test_flush_emits_the_last_sample_that_one_shot_rounds_up_to():
    # 6 samples at 44.1 kHz are 6 * 8000 / 44100 = 1.09 samples at 8 kHz; resample_poly takes the ceiling, 2.
    signal = np.array([0.1, -0.2, 0.3, -0.4, 0.5, -0.6], dtype=np.float32)
    streamed = stream_through(StreamResampler(44100), signal, [6])
    one_shot = resample_to_canonical(signal, 44100)
    assert one_shot.size == 2
    np.testing.assert_allclose(streamed, one_shot, atol=1e-6)


@pytest.mark.parametrize("rate", [0, 999, 1_000_001])
def test_a_rate_outside_1_khz_to_1_mhz_is_refused_by_the_stream_resampler_as_by_every_reader(rate):
    """Not a ZeroDivisionError traceback at 0 Hz, nor a filter of tens of thousands of taps built for 3 Hz."""
    with pytest.raises(AudioInputError, match=rf"^sample rate {rate} Hz is outside 1000–1000000 Hz, the rates this reads$"):
        StreamResampler(rate)


# 48 to 11.025 kHz as the module's docstring gives them; 1 kHz (8/1): its 10 input samples of filter half-length and one more.
@pytest.mark.parametrize(("rate", "latency_ms"), [(48000, 1.375), (16000, 1.375), (44100, 10.0), (22050, 20.0), (11025, 40.0), (1000, 11.0)])
def test_a_second_handed_in_at_once_comes_out_short_by_only_the_latency_the_module_documents(rate, latency_ms):
    """The filter's half-length and a sample as context, rounded up to whole steps of the ratio's denominator: more is
    latency no one asked for, less joins blocks with a filter cut short (neither changed what the tests above compare,
    at their 1e-5: a mutation audit)."""
    signal = (np.random.default_rng(2).standard_normal(rate) * 0.1).astype(np.float32)
    out = StreamResampler(rate).process(signal)
    assert out.size == 8000 - round(latency_ms * 8)
