"""G.711 μ-law and A-law codecs (ITU-T G.711) with numpy lookup tables.

Telephone taps deliver 8-bit G.711 at 8 kHz; training passes clean speech
through the same codec so the model learns what a phone line does to a voice.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

G711_SAMPLE_RATE = 8000  # telephone audio, whether it comes by RTP or in a platform's media stream
G711_PACKET_SAMPLES = G711_SAMPLE_RATE * 20 // 1000  # a 20 ms packet, as telephony sends it
_MULAW_BIAS = 0x84


def _mulaw_decode_table() -> NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> NDArray[np.int16]:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


def _encode_table(decode: NDArray[np.int16]) -> NDArray[np.uint8]:
    """For every 16-bit value, the code whose decoded value is nearest (a value halfway between two levels takes the lower level)."""
    order = np.argsort(decode, kind="stable")
    levels = decode[order].astype(np.int32)
    values = np.arange(-32768, 32768, dtype=np.int32)
    right = np.clip(np.searchsorted(levels, values), 1, len(levels) - 1)
    left = right - 1
    nearer_left = (values - levels[left]) <= (levels[right] - values)
    return order[np.where(nearer_left, left, right)].astype(np.uint8)


MULAW_DECODE = _mulaw_decode_table()
ALAW_DECODE = _alaw_decode_table()
_MULAW_ENCODE = _encode_table(MULAW_DECODE)
_ALAW_ENCODE = _encode_table(ALAW_DECODE)


def _to_int16(audio: NDArray[np.floating]) -> NDArray[np.int32]:
    return np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int32)


def mulaw_encode(audio: NDArray[np.floating]) -> NDArray[np.uint8]:
    """Float audio in [-1, 1] → μ-law bytes."""
    return _MULAW_ENCODE[_to_int16(audio) + 32768]


def mulaw_decode(codes: NDArray[np.uint8] | bytes) -> NDArray[np.float32]:
    """μ-law bytes → float32 audio in [-1, 1]."""
    index = np.frombuffer(codes, dtype=np.uint8) if isinstance(codes, (bytes, bytearray)) else codes
    return MULAW_DECODE[index].astype(np.float32) / 32768.0


def alaw_encode(audio: NDArray[np.floating]) -> NDArray[np.uint8]:
    """Float audio in [-1, 1] → A-law bytes."""
    return _ALAW_ENCODE[_to_int16(audio) + 32768]


def alaw_decode(codes: NDArray[np.uint8] | bytes) -> NDArray[np.float32]:
    """A-law bytes → float32 audio in [-1, 1]."""
    index = np.frombuffer(codes, dtype=np.uint8) if isinstance(codes, (bytes, bytearray)) else codes
    return ALAW_DECODE[index].astype(np.float32) / 32768.0
