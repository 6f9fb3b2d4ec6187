"""One file of speech clips separated by silence, with where each clip's speech lies: what the end-to-end
benchmarks play to the monitor and what the monitor's tests (``tests/conftest.py`` ``clips_with_silence``) play."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile
from numpy.typing import NDArray

from ser_stream.audiofile import read_audio
from ser_stream.features import SAMPLE_RATE
from ser_stream.windows import TRIM_FRAME_SECONDS, TRIM_MARGIN_SECONDS, TRIM_THRESHOLD_DB, frame_energies, trim_bounds

GAP_SECONDS = 1.5
FILE_RATE = 16000  # the rate of the file the monitor reads, whatever the clips' own


def trim_silence(
    audio: NDArray[np.float32],
    sample_rate: int = SAMPLE_RATE,
    threshold_db: float = TRIM_THRESHOLD_DB,
    margin_seconds: float = TRIM_MARGIN_SECONDS,
) -> NDArray[np.float32]:
    """Drop leading and trailing audio quieter than ``threshold_db`` below the peak (or 16-bit rounding noise),
    keeping a margin: ``trim_bounds`` on audio at its own rate, for tests and benchmarks that want a clip's sound.

    Classification and training trim through ``clips.trimmed_clip``, so their windows hold speech, as the
    live monitor's VAD-bounded utterances do. Returns the input unchanged when it is silent throughout.
    """
    frame = max(1, int(TRIM_FRAME_SECONDS * sample_rate))
    first, last, _ = trim_bounds(frame_energies(audio, frame), frame, audio.size, threshold_db, margin=int(margin_seconds * sample_rate))
    return audio[first:last]


def write_clips_with_silence(paths: list[Path], out: Path) -> list[tuple[float, float]]:
    """Write the speech of each clip in ``paths`` (trimmed 30 dB below its peak, no margin: without breaths and room
    tone) to ``out`` at ``FILE_RATE``, with ``GAP_SECONDS`` of silence before, between and after; where each lies."""
    pieces, bounds, t = [np.zeros(int(GAP_SECONDS * FILE_RATE), np.float32)], [], GAP_SECONDS
    for path in paths:
        audio, rate = read_audio(path)
        speech = trim_silence(audio, rate, threshold_db=30.0, margin_seconds=0.0)
        if rate != FILE_RATE:  # a 48 kHz clip written as 16 kHz samples once lasted three times its length
            common = math.gcd(FILE_RATE, rate)
            speech = scipy.signal.resample_poly(speech, FILE_RATE // common, rate // common).astype(np.float32)
        bounds.append((t, t + speech.size / FILE_RATE))
        t += speech.size / FILE_RATE + GAP_SECONDS
        pieces += [speech, np.zeros(int(GAP_SECONDS * FILE_RATE), np.float32)]
    soundfile.write(out, np.concatenate(pieces), FILE_RATE)
    return bounds
