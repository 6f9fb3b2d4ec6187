"""A recorded clip → the spectrograms of its windows: shared by offline
classification and training, so both see a clip the same way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile
from numpy.typing import NDArray

from ser_stream.audiofile import audio_info, file_name, to_mono
from ser_stream.errors import AudioInputError, shown
from ser_stream.features import SAMPLE_RATE, SILENCE_DB, resample_to_canonical, spectrogram
from ser_stream.resampler import StreamResampler
from ser_stream.utterances import UtteranceConfig
from ser_stream.windows import (
    TRIM_FRAME_SECONDS,
    TRIM_MARGIN_SECONDS,
    TRIM_THRESHOLD_DB,
    WindowConfig,
    cut_windows,
    frame_energies,
    trim_bounds,
    window_starts,
)

# A clip must hold at least this much sound, as an utterance must in the live monitor: a label for a
# click or for digital silence would be the network's guess at nothing, given with a confidence.
MIN_SOUND_SECONDS = UtteranceConfig().min_speech_seconds
SILENT_PEAK = 10 ** (SILENCE_DB / 20)  # the feature code's digital-silence level, as an amplitude
TRIM_FRAME = int(TRIM_FRAME_SECONDS * SAMPLE_RATE)  # trim_silence's energy frame at the canonical rate
TRIM_MARGIN = int(TRIM_MARGIN_SECONDS * SAMPLE_RATE)


def check_sound(samples: int, peak: float) -> None:
    """Refuse a clip that is silent throughout or whose sound (first to last loud frame) is too short to classify."""
    if samples < MIN_SOUND_SECONDS * SAMPLE_RATE:
        raise AudioInputError(f"only {samples / SAMPLE_RATE:.2f} s of sound once silence is trimmed; at least {MIN_SOUND_SECONDS} s is needed")
    if peak < SILENT_PEAK:
        raise AudioInputError(f"silent throughout (peak below {SILENCE_DB:.0f} dBFS, any DC offset aside): nothing to classify")


def clip_spectrograms(
    audio: NDArray[np.floating], sample_rate: int, config: WindowConfig
) -> NDArray[np.float32]:
    """Remove the DC offset, resample, trim leading/trailing silence, cut windows → [n, 260, 270] spectrograms."""
    canonical = resample_to_canonical(without_dc(audio), sample_rate)
    first, last, sound = trim_bounds(frame_energies(canonical, TRIM_FRAME), TRIM_FRAME, canonical.size, margin=TRIM_MARGIN)
    check_sound(sound, float(np.max(np.abs(canonical), initial=0.0)))
    windows, _ = cut_windows(canonical[first:last], config)  # as trim_silence would cut it
    return np.stack([spectrogram(window, SAMPLE_RATE) for window in windows])


def without_dc(audio: NDArray[np.floating]) -> NDArray[np.floating]:
    """``audio`` less its mean, a DC offset (a cheap sound card's), before resampling and trimming.

    The spectrogram removes each frame's mean, so the network never sees an
    offset; trimming and the sound check must not hear one either, or a quiet
    offset keeps a file's silences and a file of nothing else gets a label.
    Removed at the input rate: resampled, an offset rings at the file's edges.
    """
    samples = np.asarray(audio)
    return samples - samples.mean(dtype=np.float64).astype(samples.dtype) if samples.size else samples


def _input_blocks(path: str | Path, block_seconds: float) -> Iterator[NDArray[np.float32]]:
    """A file, block by block, as mono audio at its own rate; ``AudioInputError`` at a NaN or infinite sample."""
    info = audio_info(path)
    block = max(1, int(block_seconds * info.samplerate))
    for samples in soundfile.blocks(file_name(path), blocksize=block, dtype="float32", always_2d=True):
        mono = to_mono(samples)
        if not np.all(np.isfinite(mono)):
            raise AudioInputError(f"{shown(path)}: contains NaN or infinite samples")
        yield mono


def _canonical_blocks(path: str | Path, block_seconds: float, offset: float = 0.0) -> Iterator[NDArray[np.float32]]:
    """A file less its DC ``offset``, block by block, as mono canonical-rate audio (never whole in memory)."""
    resampler = StreamResampler(int(audio_info(path).samplerate), SAMPLE_RATE)
    for mono in _input_blocks(path, block_seconds):
        yield resampler.process(mono - np.float32(offset))
    yield resampler.flush()


def stream_file_windows(
    path: str | Path,
    config: WindowConfig,
    block_seconds: float = 30.0,
    threshold_db: float = TRIM_THRESHOLD_DB,
    margin_seconds: float = TRIM_MARGIN_SECONDS,
) -> Iterator[NDArray[np.float32]]:
    """The windows ``clip_spectrograms`` would cut from a file, as audio, reading it twice in blocks.

    Pass 1 measures 25 ms frame energies to find the leading and trailing
    silence exactly as ``trim_silence`` does; pass 2 cuts the windows of the
    trimmed span as the audio arrives. Memory stays at a block and a window
    whatever the file's length.
    """
    count, total_sum = 0, 0.0  # pass 0: the DC offset, at the file's own rate, as without_dc measures it
    for mono in _input_blocks(path, block_seconds):
        count, total_sum = count + mono.size, total_sum + float(np.sum(mono, dtype=np.float64))
    offset = total_sum / count if count else 0.0
    energies: list[NDArray[np.float64]] = []
    carry = np.zeros(0, dtype=np.float32)
    total = 0
    peak = 0.0
    for canonical in _canonical_blocks(path, block_seconds, offset):
        total += canonical.size
        peak = max(peak, float(np.max(np.abs(canonical), initial=0.0)))
        joined = np.concatenate([carry, canonical])
        whole = joined.size // TRIM_FRAME * TRIM_FRAME
        energies.append(frame_energies(joined[:whole], TRIM_FRAME))
        carry = joined[whole:]
    energy = np.concatenate(energies) if energies else np.zeros(0)
    first, last, sound = trim_bounds(energy, TRIM_FRAME, total, threshold_db, margin=int(margin_seconds * SAMPLE_RATE))
    check_sound(sound, peak)
    if last - first <= config.window_samples:  # one (padded) window: only its span is held, never the file
        span, position = [], 0
        for canonical in _canonical_blocks(path, block_seconds, offset):
            lo, hi = max(first - position, 0), min(last - position, canonical.size)
            if hi > lo:
                span.append(canonical[lo:hi])
            position += canonical.size
        yield cut_windows(np.concatenate(span), config)[0][0]
        return
    starts = iter(window_starts(last - first, config))
    start = next(starts, None)
    buffer, buffer_start, position = np.zeros(0, dtype=np.float32), 0, 0  # buffer holds trimmed samples from buffer_start
    for canonical in _canonical_blocks(path, block_seconds, offset):
        lo, hi = max(first, position), min(last, position + canonical.size)
        position += canonical.size
        if hi > lo:
            buffer = np.concatenate([buffer, canonical[lo - (position - canonical.size) : hi - (position - canonical.size)]])
        while start is not None and start + config.window_samples <= buffer_start + buffer.size:
            yield buffer[start - buffer_start : start - buffer_start + config.window_samples]
            start = next(starts, None)
        keep_from = start if start is not None else buffer_start + buffer.size
        buffer, buffer_start = buffer[keep_from - buffer_start :], keep_from
