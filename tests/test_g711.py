"""G.711 codecs against the standard's reference values, and round trips."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ser_stream.g711 import ALAW_DECODE, MULAW_DECODE, alaw_decode, alaw_encode, mulaw_decode, mulaw_encode


def test_mulaw_reference_values():
    # ITU-T G.711 μ-law: 0x00 and 0x80 are the extremes, 0xFF and 0x7F are zero.
    assert MULAW_DECODE[0x00] == -32124 and MULAW_DECODE[0x80] == 32124
    assert MULAW_DECODE[0xFF] == 0 and MULAW_DECODE[0x7F] == 0
    # The first segment steps by 8 (16-bit scale) from zero; the second starts at 132.
    assert MULAW_DECODE[0xFE] == 8 and MULAW_DECODE[0xF0] == 120 and MULAW_DECODE[0xEF] == 132


def test_alaw_reference_values():
    # ITU-T G.711 A-law: 0xD5 / 0x55 are the smallest magnitudes (±8), 0xAA / 0x2A the largest.
    assert ALAW_DECODE[0xD5] == 8 and ALAW_DECODE[0x55] == -8
    assert ALAW_DECODE[0xAA] == 32256 and ALAW_DECODE[0x2A] == -32256


def test_decode_tables_are_odd_symmetric_and_monotone_per_sign():
    codes = np.arange(256)
    for table in (MULAW_DECODE, ALAW_DECODE):
        assert np.array_equal(table[codes ^ 0x80], -table[codes])  # the sign bit flips the sign, nothing else
    # μ-law: codes are the complemented magnitude, 0x80-0xFF positive from the largest down to zero (the
    # negative side mirrors each, as checked above)
    assert np.all(np.diff(MULAW_DECODE[0x80:].astype(np.int32)) < 0)
    # A-law: even bits inverted (XOR 0x55), the sign bit set for positive values, whose magnitude grows with the rest
    magnitude_order = np.argsort(codes ^ 0x55)
    positive = [code for code in magnitude_order if code & 0x80]
    assert np.all(np.diff(ALAW_DECODE[positive].astype(np.int32)) > 0) and np.all(ALAW_DECODE[positive] > 0)


@pytest.mark.parametrize(("table", "law"), [(MULAW_DECODE, "ulaw2lin"), (ALAW_DECODE, "alaw2lin")])
def test_decode_tables_equal_the_standard_librarys_codec(table, law):
    """Python's own G.711 (audioop: the standard library's to 3.12, audioop-lts from 3.13, a dev dependency) for every code."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    reference = np.frombuffer(getattr(audioop, law)(bytes(range(256)), 2), dtype=np.int16)
    assert np.array_equal(table, reference)


def test_every_code_survives_decode_then_encode():
    codes = np.arange(256, dtype=np.uint8)
    assert np.array_equal(alaw_encode(alaw_decode(codes)), codes)
    round_trip = mulaw_encode(mulaw_decode(codes))
    # μ-law has two zero codes (0x7F, 0xFF); every other code maps back to itself.
    same = round_trip == codes
    assert np.all(same | (MULAW_DECODE[codes] == 0))


@settings(deadline=None)
@given(arrays(np.float64, st.integers(1, 200), elements=st.floats(-1, 1)))
def test_round_trip_error_is_within_half_a_quantisation_step(audio):
    for encode, decode, table in ((mulaw_encode, mulaw_decode, MULAW_DECODE), (alaw_encode, alaw_decode, ALAW_DECODE)):
        decoded = decode(encode(audio)).astype(np.float64)
        levels = np.sort(table.astype(np.float64)) / 32768
        step = np.diff(levels).max()
        top = levels.max()  # beyond the largest level the codec saturates
        # half a step, plus the rounding to 16 bits that precedes encoding
        assert np.all(np.abs(decoded - np.clip(audio, -top, top)) <= step / 2 + 1 / 32768)


def test_every_16_bit_sample_is_encoded_as_a_level_nearest_to_it():
    """The encoders quantise to the nearest level (ties either way), after rounding to 16 bits: 0.3 of a 16-bit step
    below the grid still rounds up to it. Truncating instead kept every error within half a codec step plus one
    16-bit step, the bound above, but chose a level farther away."""
    values = np.arange(-32768, 32768, dtype=np.float64)
    for encode, table in ((mulaw_encode, MULAW_DECODE), (alaw_encode, ALAW_DECODE)):
        levels = np.sort(table.astype(np.float64))
        above = np.clip(np.searchsorted(levels, values), 1, levels.size - 1)
        nearest = np.minimum(np.abs(values - levels[above - 1]), np.abs(levels[above] - values))
        for offset in (0.0, 0.3, -0.3):
            assert np.array_equal(np.abs(table[encode((values + offset) / 32768)] - values), nearest), offset


def test_decode_accepts_bytes_and_gives_16_bit_values_over_32768():
    assert mulaw_decode(bytes([0x80, 0x00])).tolist() == [32124 / 32768, -32124 / 32768]
    assert alaw_decode(bytes([0xAA, 0x2A])).tolist() == [32256 / 32768, -32256 / 32768]
