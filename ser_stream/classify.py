"""Offline classification of recorded files: one utterance label per file."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ser_stream.audiofile import (
    MEMORY_BUDGET_RATE,
    WHOLE_FILE_SECONDS,
    audio_info,
    narrow_band,
    read_audio,
    read_until_damage,
    rounding_floor,
    truncation,
    undecoded,
)
from ser_stream.clips import BlockReading, clip_windows, stream_file_windows
from ser_stream.errors import AudioInputError, SerStreamError, bytes_as_text, shown
from ser_stream.features import SAMPLE_RATE, spectrogram
from ser_stream.inference import EmotionModel
from ser_stream.utterances import UtteranceLabel, average_windows
from ser_stream.windows import TRIM_FLOOR, TRIM_FRAME, TRIM_THRESHOLD_DB, frame_energies


@dataclass(frozen=True)
class FileResult:
    """One file's label, or the one-line reason it could not be classified."""

    path: str
    utterance: UtteranceLabel | None = None
    error: str | None = None
    warning: str | None = None  # classified, but not all is as it should be (a file cut short)

    def to_json(self) -> str:
        if self.utterance is None:
            return json.dumps({"path": bytes_as_text(self.path), "error": self.error})
        fields = asdict(self.utterance)
        result = {
            "path": bytes_as_text(self.path),
            "label": fields["label"],
            "confidence": round(fields["confidence"], 6),
            "probabilities": {k: round(v, 6) for k, v in fields["probabilities"].items()},
            "windows": fields["windows"],
        }
        return json.dumps(result | ({"warning": self.warning} if self.warning else {}))

    def to_text(self) -> str:
        if self.utterance is None:
            return f"{shown(self.path)}: error: {self.error}"
        top = sorted(self.utterance.probabilities.items(), key=lambda item: -item[1])[:3]
        best = ", ".join(f"{label} {p:.2f}" for label, p in top)
        warning = f" (warning: {self.warning})" if self.warning else ""
        count = self.utterance.windows
        return f"{shown(self.path)}: {self.utterance.label} ({best}; {count} window{'' if count == 1 else 's'}){warning}"


WINDOWS_PER_BATCH = 32


# Files of more samples than 10 minutes of 16 kHz mono (all channels counted: 38 MB of float32) are read in
# blocks (three passes) of 30 s of 16 kHz mono's worth of samples, whatever the rate or channel count, and never
# held whole (measured: 60 s of 192 kHz 6-channel took 261 MB in all, as a 4 s file does; 876 MB with 30 s blocks).
def classify_file(path: str | Path, model: EmotionModel, in_memory_seconds: float = WHOLE_FILE_SECONDS) -> FileResult:
    """Read, window and classify one file; any input problem becomes ``FileResult.error``.

    Spectrograms are made ``WINDOWS_PER_BATCH`` at a time, so a long file never holds all of them (0.28 MB each).
    """
    try:
        info = audio_info(path)
        warnings = [truncation(path, info), narrow_band(path, info.samplerate)]
        floor = rounding_floor(info)  # rounding noise is not sound: trimming and the silence warning both say so
        if info.frames * info.channels <= in_memory_seconds * MEMORY_BUDGET_RATE:
            try:
                audio, sample_rate = read_audio(path)
            except AudioInputError as error:  # a FLAC cut short fails the whole read: what decodes is classified
                audio, sample_rate = read_until_damage(path, info, error)
            warnings.append(undecoded(path, info, audio.size))
            outputs, loudness = _predict_in_batches(clip_windows(audio, sample_rate, model.metadata.window, floor), model, WINDOWS_PER_BATCH)
        else:
            reading = BlockReading()
            outputs, loudness = _predict_in_batches(stream_file_windows(path, model.metadata.window, reading=reading), model, WINDOWS_PER_BATCH)
            warnings.append(undecoded(path, info, reading.frames))
        if not np.all(np.isfinite(outputs)):
            raise AudioInputError(f"{shown(path)}: the model's outputs for it are not finite numbers; no label")
        warnings.append(mostly_silent(loudness, floor))
        said = [without_path(warning, path) for warning in warnings if warning is not None]
        return FileResult(str(path), utterance=average_windows(outputs), warning="; ".join(w for w in said if w) or None)
    except SerStreamError as error:
        return FileResult(str(path), error=without_path(str(error), path))


def without_path(message: str | None, path: str | Path) -> str | None:
    """A message about ``path`` without the path in front: the result names it already."""
    prefix = f"{shown(path)}: "
    return message[len(prefix) :] if message is not None and message.startswith(prefix) else message


def _predict_in_batches(windows: Iterable[NDArray[np.float32]], model: EmotionModel, batch: int) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Window audio → outputs, ``batch`` spectrograms at a time, so a long file never holds all of them; with each
    window's loudest 25 ms (mean square), for ``mostly_silent``."""
    remaining = iter(windows)
    outputs, loudness = [], []
    while chunk := list(itertools.islice(remaining, batch)):
        outputs.append(model.predict(np.stack([spectrogram(window, SAMPLE_RATE) for window in chunk])))
        loudness += [float(frame_energies(window, TRIM_FRAME).max(initial=0.0)) for window in chunk]
    return np.concatenate(outputs), np.asarray(loudness)


def mostly_silent(loudness: NDArray[np.float64], floor: float = TRIM_FLOOR) -> str | None:
    """A warning when most of a file's windows hold no sound (none of their 25 ms frames within 40 dB of the file's
    loudest and over its format's rounding ``floor``, as trimming judges silence): its label is then mostly the
    network's reading of silence. Two clicks 30 s apart were once labelled fearful 0.24 from 58 windows, 56 of them silence."""
    silent = int(np.count_nonzero(loudness < max(loudness.max(initial=0.0) * 10 ** (-TRIM_THRESHOLD_DB / 10), floor)))
    if silent * 2 <= loudness.size:
        return None
    return (
        f"{silent} of its {loudness.size} windows hold no sound: classify takes a file as one utterance, pauses "
        "included; for a recording of many, use the monitor (its voice detector cuts them)"
    )


