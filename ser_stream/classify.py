"""Offline classification of recorded files: one utterance label per file."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
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
from ser_stream.clips import BlockReading, stream_file_windows, trimmed_clip
from ser_stream.errors import AudioInputError, SerStreamError, bytes_as_text, shown
from ser_stream.features import SAMPLE_RATE, spectrogram
from ser_stream.inference import EmotionModel
from ser_stream.utterances import (
    VAD_FRAME_SAMPLES,
    UtteranceConfig,
    UtteranceLabel,
    WebRtcVoice,
    average_windows,
    silero_detector,
)
from ser_stream.windows import WindowConfig, cut_windows, window_starts


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
        floor = rounding_floor(info)  # rounding noise is not sound: trimming and the sound check both say so
        config = model.metadata.window
        if info.frames * info.channels <= in_memory_seconds * MEMORY_BUDGET_RATE:
            try:
                audio, sample_rate = read_audio(path)
            except AudioInputError as error:  # a FLAC cut short fails the whole read: what decodes is classified
                audio, sample_rate = read_until_damage(path, info, error)
            warnings.append(undecoded(path, info, audio.size))
            clip = trimmed_clip(audio, sample_rate, floor)
            speech = SpeechHeard(config, clip.size)
            outputs = _predict_in_batches(cut_windows(clip, config)[0], model, WINDOWS_PER_BATCH, speech)
        else:
            reading = BlockReading()
            speech = SpeechHeard(config, lambda: reading.span)
            outputs = _predict_in_batches(stream_file_windows(path, config, reading=reading), model, WINDOWS_PER_BATCH, speech)
            warnings.append(undecoded(path, info, reading.frames))
        if not np.all(np.isfinite(outputs)):
            raise AudioInputError(f"{shown(path)}: the model's outputs for it are not finite numbers; no label")
        warnings.append(little_speech(speech.windows_without_speech(), outputs.shape[0]))
        said = [without_path(warning, path) for warning in warnings if warning is not None]
        # The label is the mean of every window's outputs, speech or not: the paper's rule, and what training.score
        # measures (it cuts and averages clips as classify does); the warning says when most of them are not speech.
        return FileResult(str(path), utterance=average_windows(outputs), warning="; ".join(w for w in said if w) or None)
    except SerStreamError as error:
        return FileResult(str(path), error=without_path(str(error), path))


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


class SpeechHeard:
    """Which of a file's windows hold speech, by the monitor's voice detector and rule (Silero, with WebRTC's second
    opinion: ``UtteranceConfig``), run once over the trimmed audio the windows are cut from, as they are cut.

    ``span``: that audio's length in samples, or a function that gives it once the first window is cut (a file read
    in blocks learns it then). A window holds speech if the detector calls any of its 32 ms frames speech.
    """

    def __init__(self, window: WindowConfig, span: int | Callable[[], int], utterance: UtteranceConfig = UtteranceConfig()) -> None:
        self.window, self.span, self.utterance = window, span, utterance
        self.detector = silero_detector()
        self.voice = WebRtcVoice() if utterance.voice_floor is not None else None
        self.starts: list[int] | None = None
        self.heard = 0  # windows heard so far
        self.fed = 0  # samples of the span given to the detector, or waiting in ``pending``
        self.pending = np.zeros(0, dtype=np.float32)  # under a frame, for the next window's samples to complete
        self.frames: list[bool] = []  # each frame of the span: speech or not

    def hear(self, window: NDArray[np.float32]) -> None:
        """The next window in order: its samples not yet heard go to the detector (windows overlap by all but a hop)."""
        if self.starts is None:
            self.starts = window_starts(self.span if isinstance(self.span, int) else self.span(), self.window)
        start = self.starts[self.heard]
        self.heard += 1
        self._frames(window[self.fed - start :])
        self.fed = start + window.size

    def _frames(self, samples: NDArray[np.float32]) -> None:
        joined = np.concatenate([self.pending, samples])
        whole = joined.size // VAD_FRAME_SAMPLES * VAD_FRAME_SAMPLES
        floor = self.utterance.voice_floor
        for frame in joined[:whole].reshape(-1, VAD_FRAME_SAMPLES):
            probability = self.detector(frame)
            voiced = self.voice(frame) if self.voice is not None else False  # it adapts to every frame, as the monitor's
            self.frames.append(probability >= self.utterance.speech_threshold or (voiced and floor is not None and probability >= floor))
        self.pending = joined[whole:]

    def windows_without_speech(self) -> int:
        """How many of the windows heard hold no frame of speech (the last partial frame is heard padded with silence)."""
        if self.pending.size:
            self._frames(np.zeros(VAD_FRAME_SAMPLES - self.pending.size, dtype=np.float32))
        counted = np.concatenate([[0], np.cumsum(self.frames)])
        silent = 0
        for start in (self.starts or [])[: self.heard]:
            first, last = start // VAD_FRAME_SAMPLES, -(-(start + self.window.window_samples) // VAD_FRAME_SAMPLES)
            silent += int(counted[min(last, len(self.frames))] == counted[min(first, len(self.frames))])
        return silent


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
