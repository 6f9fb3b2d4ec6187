"""A recorded clip → the spectrograms of its windows: shared by offline
classification and training, so both see a clip the same way."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from numpy.typing import NDArray

from ser_stream.audiofile import (
    READ_BUDGET_SECONDS,
    audio_info,
    block_frames,
    mono_blocks,
    rounding_floor,
)
from ser_stream.errors import AudioInputError, one_line, shown
from ser_stream.features import SAMPLE_RATE, resample_to_canonical, spectrogram
from ser_stream.resampler import StreamResampler
from ser_stream.utterances import UtteranceConfig
from ser_stream.vad import SPEECH_CHECK_LEAD_IN_SAMPLES
from ser_stream.windows import (
    TRIM_FLOOR,
    TRIM_FRAME,
    TRIM_MARGIN_SECONDS,
    WindowConfig,
    cut_windows,
    frame_energies,
    trim_bounds,
    window_starts,
)

# A clip must hold at least this much sound, as an utterance must in the live monitor: a label for a
# click or for digital silence would be the network's guess at nothing, given with a confidence.
MIN_SOUND_SECONDS = UtteranceConfig().min_speech_seconds
# Quieter than this throughout (the loudest 25 ms frame's RMS), a file holds no sound worth a label: 16-bit
# dither sits near -92 dBFS and digital silence below. RAVDESS's quietest clip peaks at -54.6 dBFS, 25 dB above.
SOUND_FLOOR_DB = -80.0
TRIM_MARGIN = int(TRIM_MARGIN_SECONDS * SAMPLE_RATE)


def check_sound(samples: int, loudest_frame_power: float, floor: float = TRIM_FLOOR) -> None:
    """Refuse a clip that is silent throughout or whose sound (first to last loud frame) is too short to classify.

    Silent means no 25 ms frame (canonical rate, so 0–4 kHz) reaches ``SOUND_FLOOR_DB``, or its format's
    rounding ``floor`` where that is higher (8-bit, μ-law, A-law): digital silence, dither, a DC offset alone. Room
    noise above both is sound; ``classify`` takes a file to be speech.
    """
    if samples < MIN_SOUND_SECONDS * SAMPLE_RATE:
        raise AudioInputError(f"only {samples / SAMPLE_RATE:.2f} s of sound once silence is trimmed; at least {MIN_SOUND_SECONDS} s is needed")
    if loudest_frame_power <= 1e-30:
        raise AudioInputError("silent throughout (no sound once any DC offset is removed): nothing to classify")
    loudest_db = 10 * np.log10(loudest_frame_power)
    if loudest_frame_power < 10 ** (SOUND_FLOOR_DB / 10):
        raise AudioInputError(f"silent throughout (its loudest 25 ms is at {loudest_db:.0f} dBFS, below the {SOUND_FLOOR_DB:.0f} dBFS floor of sound): nothing to classify")
    if loudest_frame_power <= floor:
        raise AudioInputError(
            f"silent throughout (its loudest 25 ms is at {loudest_db:.0f} dBFS, within its format's rounding noise, "
            f"under {10 * np.log10(floor):.0f} dBFS): nothing to classify"
        )


def trimmed_clip(audio: NDArray[np.floating], sample_rate: int, floor: float = TRIM_FLOOR) -> NDArray[np.float32]:
    """Remove the DC offset, resample, trim leading/trailing silence → the clip's sound at the canonical rate;
    ``AudioInputError`` for a clip silent throughout or with too little sound (``check_sound``). Classification
    and training both take clips through here, so training learns from no clip classify would refuse.

    ``floor``: the file's format's rounding noise (``audiofile.rounding_floor``; the default is 16-bit's)."""
    return trimmed_clip_and_lead_in(audio, sample_rate, floor)[0]


def trimmed_clip_and_lead_in(
    audio: NDArray[np.floating], sample_rate: int, floor: float = TRIM_FLOOR
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """``trimmed_clip``, and the audio trimmed just before it (up to ``SPEECH_CHECK_LEAD_IN_SAMPLES``, none for a
    file whose sound starts with it): what the voice check hears first, as the monitor hears a file from its start."""
    canonical = resample_to_canonical(without_dc(audio), sample_rate)
    energy = frame_energies(canonical, TRIM_FRAME)
    first, last, sound = trim_bounds(energy, TRIM_FRAME, canonical.size, margin=TRIM_MARGIN, floor=floor)
    check_sound(sound, loudest_power(energy, canonical), floor)
    # as benchmarks.clip_file.trim_silence would cut it
    return canonical[first:last], canonical[max(first - SPEECH_CHECK_LEAD_IN_SAMPLES, 0) : first]


def clip_windows(audio: NDArray[np.floating], sample_rate: int, config: WindowConfig, floor: float = TRIM_FLOOR) -> NDArray[np.float32]:
    """``trimmed_clip`` cut into windows → [n, window samples] at the canonical rate."""
    windows, _ = cut_windows(trimmed_clip(audio, sample_rate, floor), config)
    return windows


def clip_spectrograms(audio: NDArray[np.floating], sample_rate: int, config: WindowConfig, floor: float = TRIM_FLOOR) -> NDArray[np.float32]:
    """``clip_windows`` → [n, 260, 270] spectrograms, all at once (0.28 MB a window: for clips, not hours)."""
    return np.stack([spectrogram(window, SAMPLE_RATE) for window in clip_windows(audio, sample_rate, config, floor)])


def loudest_power(energy: NDArray[np.float64], canonical: NDArray[np.float32]) -> float:
    """The loudest 25 ms frame's mean square; for audio shorter than a frame, that of all of it."""
    if energy.size:
        return float(energy.max())
    return float(np.mean(np.square(canonical, dtype=np.float64))) if canonical.size else 0.0


def without_dc(audio: NDArray[np.floating]) -> NDArray[np.floating]:
    """``audio`` less its mean, a DC offset (a cheap sound card's), before resampling and trimming.

    The spectrogram removes each frame's mean, so the network never sees an
    offset; trimming and the sound check must not hear one either, or a quiet
    offset keeps a file's silences and a file of nothing else gets a label.
    Removed at the input rate: resampled, an offset rings at the file's edges.
    """
    samples = np.asarray(audio)
    return samples - samples.mean(dtype=np.float64).astype(samples.dtype) if samples.size else samples


@dataclass
class BlockReading:
    """What reading a file found of it: ``stream_file_windows``'s first pass fills it before the first window is cut
    (``classify``'s in-memory path, at once). ``frames``: decoded, in frames at its own rate, for the warning that a file
    whose header promises more is damaged or cut short (``audiofile.undecoded``); the rest, for ``vad.SpeechHeard``."""

    frames: int | None = None  # None until the first pass has read the file to its end
    span: int = 0  # samples (canonical rate) of the trimmed audio the windows are cut from: known once the first is cut
    loudest: float = 0.0  # that audio's loudest 25 ms frame's mean square (``loudest_power``): known then too
    lead_in: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # the audio just before it: then too


def _input_blocks(path: str | Path, info: Any, identity: tuple[int, ...], block_seconds: float) -> Iterator[NDArray[np.float32]]:
    """A file (``info``: its ``audio_info``; ``identity``: its ``_identity`` then), block by block, as mono audio at its
    own rate, up to any damage (``audiofile.decoded_blocks``); ``AudioInputError`` at a sample that is not audio, if it
    cannot be read, or if it is no longer the file whose header was read."""
    # as many samples a block, all channels counted, as block_seconds of 16 kHz mono: 30 s blocks of 192 kHz
    # 6-channel audio once took 876 MB, and the memory a long file is read in grew with its rate and channel count
    _require_unchanged(path, identity)
    try:
        yield from mono_blocks(path, block_frames(info.channels, block_seconds), info)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        _require_unchanged(path, identity)  # moved or deleted since: libsndfile says only "System error."
        raise AudioInputError(f"{shown(path)}: read failed ({one_line(error)})") from None
    _require_unchanged(path, identity)


def _identity(path: str | Path) -> tuple[int, ...]:
    """What tells one state of a file from another: a file still being written, or replaced, changes it."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise AudioInputError(f"{shown(path)}: no such file: it was there when reading began") from None
    except OSError as error:
        raise AudioInputError(f"{shown(path)}: cannot be opened ({error.strerror})") from None
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def _require_unchanged(path: str | Path, identity: tuple[int, ...]) -> None:
    """Each pass opens the file again: one moved, deleted or rewritten since the first is said to be, not read as
    other audio (a recording still being written gave later passes more audio than the first had trimmed)."""
    if _identity(path) != identity:
        raise AudioInputError(f"{shown(path)}: changed while it was read (still being written, or replaced): classify it once it is complete")


@dataclass(frozen=True)
class BlockSource:
    """Audio that can be read block by block, as often as asked (``stream_windows`` reads it three times), and never
    whole: a file, or a long array a caller holds (``classify.classify_samples``)."""

    sample_rate: int
    floor: float  # the mean square its format's rounding leaves: not sound (``audiofile.rounding_floor``)
    blocks: Callable[[float], Iterator[NDArray[np.float32]]]  # block_seconds → its mono blocks at its own rate, checked


def file_source(path: str | Path) -> BlockSource:
    """A file as a ``BlockSource``; its header is read once, here."""
    info = audio_info(path)  # first: it says in one line why a path is no readable file
    identity = _identity(path)
    return BlockSource(int(info.samplerate), rounding_floor(info), lambda block_seconds: _input_blocks(path, info, identity, block_seconds))


def _canonical_blocks(source: BlockSource, block_seconds: float, offset: float = 0.0) -> Iterator[NDArray[np.float32]]:
    """A source less its DC ``offset``, block by block, as mono canonical-rate audio (never whole in memory)."""
    resampler = StreamResampler(source.sample_rate, SAMPLE_RATE)
    for mono in source.blocks(block_seconds):
        yield resampler.process(mono - np.float32(offset))
    yield resampler.flush()


def _part(block: NDArray[np.float32], position: int, start: int, end: int) -> NDArray[np.float32]:
    """The samples ``start`` … ``end`` of a file (canonical rate) that ``block``, starting at ``position``, holds (a
    view of it, even when empty)."""
    return block[min(max(start - position, 0), block.size) : max(min(end - position, block.size), 0)]


def stream_file_windows(
    path: str | Path,
    config: WindowConfig,
    block_seconds: float = READ_BUDGET_SECONDS,
    reading: BlockReading | None = None,
) -> Iterator[NDArray[np.float32]]:
    """The windows ``clip_spectrograms`` would cut from a file, as audio, reading it three times in blocks;
    ``reading``, if given, learns how many frames decoded."""
    return stream_windows(file_source(path), config, block_seconds, reading)


def stream_windows(
    source: BlockSource,
    config: WindowConfig,
    block_seconds: float = READ_BUDGET_SECONDS,
    reading: BlockReading | None = None,
) -> Iterator[NDArray[np.float32]]:
    """The windows ``clip_spectrograms`` would cut from a source, as audio, reading it three times in blocks;
    ``reading``, if given, learns how many frames it holds.

    Pass 0 measures the DC offset; pass 1 measures 25 ms frame energies to find the leading and trailing
    silence exactly as ``trimmed_clip`` does; pass 2 cuts the windows of the
    trimmed span as the audio arrives. Memory stays at a block and a window
    whatever the file's length.
    """
    count, total_sum = 0, 0.0  # pass 0: the DC offset, at the source's own rate, as without_dc measures it
    for mono in source.blocks(block_seconds):
        count, total_sum = count + mono.size, total_sum + float(np.sum(mono, dtype=np.float64))
    if reading is not None:
        reading.frames = count
    offset = total_sum / count if count else 0.0
    energies: list[NDArray[np.float64]] = []
    carry = np.zeros(0, dtype=np.float32)
    total = 0
    for canonical in _canonical_blocks(source, block_seconds, offset):
        total += canonical.size
        joined = np.concatenate([carry, canonical])
        whole = joined.size // TRIM_FRAME * TRIM_FRAME
        energies.append(frame_energies(joined[:whole], TRIM_FRAME))
        carry = joined[whole:]
    energy = np.concatenate(energies) if energies else np.zeros(0)
    first, last, sound = trim_bounds(energy, TRIM_FRAME, total, margin=TRIM_MARGIN, floor=source.floor)
    loudest = loudest_power(energy, carry)
    check_sound(sound, loudest, source.floor)
    if reading is not None:
        reading.span, reading.loudest = last - first, loudest
    if last - first <= config.window_samples:  # one (padded) window: only its span is held, never the file
        span, lead_in, position = [], [], 0
        for canonical in _canonical_blocks(source, block_seconds, offset):
            lead_in.append(_part(canonical, position, first - SPEECH_CHECK_LEAD_IN_SAMPLES, first).copy())  # a view would hold its block
            if (part := _part(canonical, position, first, last)).size:  # an empty view would hold its block all the same
                span.append(part)
            position += canonical.size
        if reading is not None:
            reading.lead_in = np.concatenate(lead_in)
        yield cut_windows(np.concatenate(span), config)[0][0]
        return
    starts = iter(window_starts(last - first, config))
    start = next(starts, None)
    buffer, buffer_start, position = np.zeros(0, dtype=np.float32), 0, 0  # buffer holds trimmed samples from buffer_start
    lead_in = []
    for canonical in _canonical_blocks(source, block_seconds, offset):
        lead_in.append(_part(canonical, position, first - SPEECH_CHECK_LEAD_IN_SAMPLES, first).copy())  # a view would hold its block
        if (part := _part(canonical, position, first, last)).size:
            buffer = np.concatenate([buffer, part])
        position += canonical.size
        if reading is not None and position - canonical.size <= first < position:  # the span starts here: it has come
            reading.lead_in = np.concatenate(lead_in)
        while start is not None and start + config.window_samples <= buffer_start + buffer.size:
            yield buffer[start - buffer_start : start - buffer_start + config.window_samples]
            start = next(starts, None)
        keep_from = start if start is not None else buffer_start + buffer.size
        buffer, buffer_start = buffer[keep_from - buffer_start :], keep_from
