"""Offline classification of recorded files: one utterance label per file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ser_stream.audiofile import read_audio
from ser_stream.clips import clip_spectrograms
from ser_stream.errors import SerStreamError, shown
from ser_stream.inference import EmotionModel
from ser_stream.utterances import UtteranceLabel, average_windows


@dataclass(frozen=True)
class FileResult:
    """One file's label, or the one-line reason it could not be classified."""

    path: str
    utterance: UtteranceLabel | None = None
    error: str | None = None

    def to_json(self) -> str:
        if self.utterance is None:
            return json.dumps({"path": self.path, "error": self.error})
        fields = asdict(self.utterance)
        return json.dumps(
            {
                "path": self.path,
                "label": fields["label"],
                "confidence": round(fields["confidence"], 6),
                "probabilities": {k: round(v, 6) for k, v in fields["probabilities"].items()},
                "windows": fields["windows"],
            }
        )

    def to_text(self) -> str:
        if self.utterance is None:
            return f"{shown(self.path)}: error: {self.error}"
        top = sorted(self.utterance.probabilities.items(), key=lambda item: -item[1])[:3]
        best = ", ".join(f"{label} {p:.2f}" for label, p in top)
        return f"{shown(self.path)}: {self.utterance.label} ({best}; {self.utterance.windows} windows)"


def classify_file(path: str | Path, model: EmotionModel) -> FileResult:
    """Read, window and classify one file; any input problem becomes ``FileResult.error``."""
    try:
        audio, sample_rate = read_audio(path)
        spectrograms = clip_spectrograms(audio, sample_rate, model.metadata.window)
        return FileResult(str(path), utterance=average_windows(model.predict(spectrograms)))
    except SerStreamError as error:
        message = str(error)
        prefix = f"{shown(path)}: "
        return FileResult(str(path), error=message[len(prefix) :] if message.startswith(prefix) else message)
