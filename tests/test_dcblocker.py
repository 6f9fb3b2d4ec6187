"""A stream's DC blocker: the same output whatever blocks the stream comes in, its offset gone, its speech kept."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ser_stream.dcblocker import DcBlocker
from tests.test_resampler import BLOCK_SIZES, LIVE_SOURCE_RATES


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from([*LIVE_SOURCE_RATES, 47952]),
    block_sizes=st.lists(BLOCK_SIZES, min_size=1, max_size=40),
    offset=st.floats(-0.5, 0.5),
)
def test_a_stream_blocked_in_pieces_comes_out_as_blocked_all_at_once(rate, block_sizes, offset):
    """Single samples and reads that found nothing too, first among them: the offset is still the first sample's."""
    signal = (offset + 0.1 * np.random.default_rng(0).standard_normal(sum(block_sizes))).astype(np.float32)
    whole = DcBlocker(rate).process(signal)
    blocker, pieces, start = DcBlocker(rate), [], 0
    for size in block_sizes:  # empty blocks too: a read that found nothing
        pieces.append(blocker.process(signal[start : start + size]))
        start += size
    assert all(piece.dtype == np.float32 for piece in pieces)
    np.testing.assert_array_equal(np.concatenate(pieces), whole)


@pytest.mark.parametrize("rate", [1000, 8000, 48000, 1_000_000])
def test_an_offset_there_from_the_start_leaves_nothing_and_one_that_steps_is_gone_within_0_55_seconds(rate):
    """The stream is taken to have held its first sample before it began: a constant offset comes out as silence
    from the first sample (with zeros before it, 0.05 would ring for 0.47 s, a sound at a stream's start)."""
    offset = np.full(3 * rate, 0.05, np.float32)
    offset[2 * rate :] = -0.05  # a gateway's offset changing mid-call
    blocked = DcBlocker(rate).process(offset)
    assert np.abs(blocked[: 2 * rate]).max() < 1e-9
    assert np.abs(blocked[2 * rate + int(0.55 * rate) :]).max() < 1e-4  # -80 dBFS


@pytest.mark.parametrize("frequency", [60.0, 100.0, 300.0, 1000.0, 3900.0])
def test_the_voice_passes_the_dc_blocker_as_it_came(frequency):
    """Speech's lowest pitch (60 Hz) up to the top of the 8 kHz band the model hears: within 0.005 dB."""
    rate = 48000
    t = np.arange(2 * rate) / rate
    tone = (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    blocked = DcBlocker(rate).process(tone)
    gain_db = 20 * np.log10(np.std(blocked[rate:]) / np.std(tone[rate:]))
    assert abs(gain_db) < 0.005


@pytest.mark.parametrize("rate", [5, 999, 1_000_001])
def test_a_stream_rate_outside_the_rates_read_is_refused_in_one_line_naming_it(rate):
    """At 5 Hz the filter itself cannot be built (3 Hz is past its Nyquist): scipy's message, not one naming the rate."""
    from ser_stream.errors import AudioInputError

    with pytest.raises(AudioInputError, match=f"sample rate {rate} Hz is outside"):
        DcBlocker(rate)
