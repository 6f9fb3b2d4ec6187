"""Offline classification of recorded files: one utterance label per file."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ser_stream.audiofile import (
    MEMORY_BUDGET_RATE,
    WHOLE_FILE_SECONDS,
    audio_info,
    block_frames,
    check_samples,
    mixed_blocks,
    narrow_band,
    read_audio,
    read_until_damage,
    rounding_floor,
    subtype_floor,
    to_mono,
    truncation,
    undecoded,
)
from ser_stream.clips import (
    BlockReading,
    BlockSource,
    file_source,
    loudest_power,
    stream_windows,
    trimmed_clip_and_lead_in,
)
from ser_stream.errors import AudioInputError, SerStreamError, bytes_as_text, one_line, shown
from ser_stream.features import SAMPLE_RATE, check_sample_rate, spectrogram
from ser_stream.inference import EmotionModel
from ser_stream.utterances import UtteranceConfig, UtteranceLabel, average_windows
from ser_stream.vad import SpeechHeard
from ser_stream.windows import TRIM_FLOOR, TRIM_FRAME, cut_windows, frame_energies


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
    shortfalls: list[str | None] = []  # what the file holds less of than its header promises: a refusal says it too
    try:
        info = audio_info(path)
        shortfalls.append(truncation(path, info))
        floor = rounding_floor(info)  # rounding noise is not sound: trimming and the sound check both say so
        if info.frames * info.channels <= in_memory_seconds * MEMORY_BUDGET_RATE:
            try:
                audio, sample_rate = read_audio(path)
            except AudioInputError as error:  # a FLAC cut short fails the whole read: what decodes is classified
                audio, sample_rate = read_until_damage(path, info, error)
            shortfalls.append(undecoded(path, info, audio.size))
            outputs, speech = _outputs_in_memory(audio, sample_rate, floor, model)
        else:
            reading = BlockReading()
            try:
                outputs, speech = _outputs_in_blocks(file_source(path), model, reading)
            finally:  # its first pass read the file to its end, also when the sound check refused it after
                shortfalls.append(undecoded(path, info, reading.frames) if reading.frames is not None else None)
        return _labelled(str(path), outputs, speech, [*shortfalls, narrow_band(path, info.samplerate)])
    except SerStreamError as error:
        # A file cut short before its speech is refused as silent or too short: the cut, found already, is the reason.
        return FileResult(str(path), error=said([str(error), *shortfalls], path) or str(error))


# A whole number's PCM scale as libsndfile reads a WAV of that type (int16 x → x / 32768), and the type's name there,
# whose rounding floor (``audiofile.subtype_floor``) its samples have.
PCM_FORMATS = {np.dtype(np.int16): (2.0**-15, "PCM_16"), np.dtype(np.int32): (2.0**-31, "PCM_32"), np.dtype(np.uint8): (2.0**-7, "PCM_U8")}


def classify_samples(samples: ArrayLike, sample_rate: int, model: EmotionModel, name: str = "samples",
                     in_memory_seconds: float = WHOLE_FILE_SECONDS) -> FileResult:
    """Audio already in memory (a researcher's array, a dataset loader's output) classified exactly as
    ``classify_file`` classifies a file holding it: trimmed, windowed, averaged, checked and warned about alike.

    ``samples`` is (frames,) or (frames, channels): float in [-1, 1], or int16, int32 or uint8 PCM, scaled as a WAV
    of that type is read. Any problem with it is ``FileResult.error``, one line naming ``name``, as for a file. An
    array longer than a file classify reads whole is read a block at a time, as such a file is: an hour's array
    needs no more memory than a minute's beside it (in one piece, 10 minutes of 48 kHz stereo took 534 MB more).
    """
    name = str(name)
    try:
        array, floor = _pcm_or_float(samples, name)
        rate = _whole_rate(sample_rate, name)
        check_sample_rate(rate, shown(name))
        if array.shape[0] == 0:
            raise AudioInputError(f"{shown(name)}: contains no audio samples")
        if array.size <= in_memory_seconds * MEMORY_BUDGET_RATE:
            audio = _as_float(array)
            check_samples(audio, name)
            outputs, speech = _outputs_in_memory(to_mono(audio), rate, floor, model)
        else:
            outputs, speech = _outputs_in_blocks(_array_source(array, rate, floor, name), model, BlockReading())
        return _labelled(name, outputs, speech, [narrow_band(name, rate)])
    except SerStreamError as error:
        return FileResult(name, error=said([str(error)], name) or str(error))


def _array_source(array: NDArray[Any], sample_rate: int, floor: float, name: str) -> BlockSource:
    """An array as a ``BlockSource``: scaled, mixed to mono and checked a block at a time, as a file's blocks are."""
    channels = 1 if array.ndim == 1 else array.shape[1]

    def blocks(block_seconds: float) -> Iterator[NDArray[np.float32]]:
        frames = block_frames(channels, block_seconds)
        return mixed_blocks((_as_float(array[start : start + frames]) for start in range(0, array.shape[0], frames)), name)

    return BlockSource(sample_rate, floor, blocks)


def _as_float(array: NDArray[Any]) -> NDArray[np.floating]:
    """PCM samples (``PCM_FORMATS``) scaled as libsndfile reads them; float ones as they are."""
    if array.dtype not in PCM_FORMATS:
        return array
    centre = 128.0 if array.dtype == np.uint8 else 0.0
    return (array.astype(np.float32) - centre) * np.float32(PCM_FORMATS[array.dtype][0])


def _pcm_or_float(samples: ArrayLike, name: str) -> tuple[NDArray[Any], float]:
    """``samples`` as a (frames, channels) or (frames,) array of PCM or float, with the mean square its format's
    rounding leaves; anything else refused, naming ``name``."""
    try:
        array = np.asarray(samples)
    except (ValueError, TypeError) as error:  # a ragged list of channels, or things that are not numbers
        raise AudioInputError(f"{shown(name)}: samples that are not one array ({one_line(error)})") from None
    if array.dtype.kind in "iu":  # big-endian PCM (np.frombuffer(data, ">i2"), AIFF) is PCM all the same
        array = array.astype(array.dtype.newbyteorder("="), copy=False)
    if array.ndim not in (1, 2):
        raise AudioInputError(f"{shown(name)}: samples of shape {array.shape}; give (frames,) or (frames, channels)")
    if array.ndim == 2 and array.shape[1] == 0:  # numpy's "negative dimensions" from the channel mixer, once
        raise AudioInputError(f"{shown(name)}: samples of shape {array.shape} hold no channels; give (frames,) or (frames, channels)")
    if array.ndim == 2 and 0 < array.shape[0] < array.shape[1]:  # torchaudio's and librosa's layout, transposed
        # (no frames at all is "contains no audio samples", as for an empty file)
        raise AudioInputError(f"{shown(name)}: samples of shape {array.shape} look like (channels, frames); give (frames, channels): samples.T")
    if array.dtype in PCM_FORMATS:
        return array, subtype_floor(PCM_FORMATS[array.dtype][1])
    if array.dtype.kind != "f":
        raise AudioInputError(f"{shown(name)}: samples of type {array.dtype}; give float samples in [-1, 1], or int16, int32 or uint8 PCM")
    return array, TRIM_FLOOR


def _whole_rate(sample_rate: object, name: str) -> int:
    """The sample rate as a whole number of Hz (16000.0 is; 16000.5, NaN and "16000" are refused, naming ``name``)."""
    if (isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.integer, np.floating))
            or not math.isfinite(sample_rate) or sample_rate != int(sample_rate)):
        given = repr(sample_rate) if isinstance(sample_rate, str) else sample_rate  # '16000', or nan without np.float32(…)
        raise AudioInputError(f"{shown(name)}: sample rate {given} is not a whole number of Hz")
    return int(sample_rate)


def _outputs_in_memory(
    audio: NDArray[np.floating], sample_rate: int, floor: float, model: EmotionModel
) -> tuple[NDArray[np.float32], SpeechHeard]:
    """Mono audio held whole → its windows' outputs, and what the voice detector heard in them."""
    config = model.metadata.window
    clip, lead_in = trimmed_clip_and_lead_in(audio, sample_rate, floor)
    found = BlockReading(span=clip.size, loudest=loudest_power(frame_energies(clip, TRIM_FRAME), clip), lead_in=lead_in)
    speech = SpeechHeard(config, found, UtteranceConfig())
    return _predict_in_batches(cut_windows(clip, config)[0], model, WINDOWS_PER_BATCH, speech), speech


def _outputs_in_blocks(source: BlockSource, model: EmotionModel, reading: BlockReading) -> tuple[NDArray[np.float32], SpeechHeard]:
    """Mono audio read a block at a time (three passes) → its windows' outputs, and what the voice detector heard."""
    config = model.metadata.window
    speech = SpeechHeard(config, reading, UtteranceConfig())  # filled by the first pass, before the first window
    return _predict_in_batches(stream_windows(source, config, reading=reading), model, WINDOWS_PER_BATCH, speech), speech


def _labelled(name: str, outputs: NDArray[np.float32], speech: SpeechHeard, warnings: list[str | None]) -> FileResult:
    """The windows' outputs as one label, with every warning about them; non-finite outputs are refused."""
    if not np.all(np.isfinite(outputs)):
        raise AudioInputError(f"{shown(name)}: the model's outputs for it are not finite numbers; no label")
    warnings = [*warnings, little_speech(speech.windows_without_speech(), outputs.shape[0])]
    # The label is the mean of every window's outputs, speech or not: the paper's rule, and what training.score
    # measures (it cuts and averages clips as classify does); the warning says when most of them are not speech.
    return FileResult(name, utterance=average_windows(outputs), warning=said(warnings, name))


def said(messages: list[str | None], path: str | Path) -> str | None:
    """Messages about ``path`` as one line, without the path in front of each: the result names it already."""
    return "; ".join(message for message in (without_path(m, path) for m in messages if m is not None) if message) or None


def without_path(message: str | None, path: str | Path) -> str | None:
    """A message about ``path`` without the path in front: the result names it already."""
    prefix = f"{shown(path)}: "
    return message[len(prefix) :] if message is not None and message.startswith(prefix) else message


def _predict_in_batches(windows: Iterable[NDArray[np.float32]], model: EmotionModel, batch: int, speech: SpeechHeard) -> NDArray[np.float32]:
    """Window audio → outputs, ``batch`` spectrograms at a time, so a long file never holds all of them; each window
    is heard by ``speech`` too, in order."""
    remaining = iter(windows)
    outputs = []
    while chunk := list(itertools.islice(remaining, batch)):
        outputs.append(model.predict(np.stack([spectrogram(window, SAMPLE_RATE) for window in chunk])))
        for window in chunk:
            speech.hear(window)
    return np.concatenate(outputs)


def little_speech(without_speech: int, windows: int) -> str | None:
    """A warning when most of a file's windows hold no speech, by the voice detector: its label, the mean of all its
    windows, is then mostly the network's reading of pauses, room tone or noise. A neutral clip either side of 30 s
    of room tone was labelled angry 0.67 (the clip alone: neutral 0.97), and noise alone angry 0.74, without a word."""
    if without_speech == windows:
        return (f"no speech heard in {'its window' if windows == 1 else f'any of its {windows} windows'} (voice detector): "
                "the label is the network's reading of sound that is not speech")
    if without_speech * 2 <= windows:
        return None
    return (
        f"{without_speech} of its {windows} windows hold no speech (voice detector): the label is mostly theirs; classify takes a "
        "file as one utterance, pauses included; for a recording of many, use the monitor (its voice detector cuts them)"
    )
