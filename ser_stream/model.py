"""The ONNX model contract and the metadata that travels beside the model file.

Input ``spectrogram`` [N, 260, 270, 1] float32 in [0, 1]; output
``probabilities`` [N, 8] in ``EMOTIONS`` order. The metadata JSON records the
feature parameters, window, labels and the file's sha256; ``load_metadata``
refuses a model that does not match this code or whose bytes changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ser_stream import EMOTIONS
from ser_stream.errors import ModelError
from ser_stream.features import N_BINS, N_FRAMES, feature_parameters
from ser_stream.windows import WindowConfig

INPUT_NAME = "spectrogram"
OUTPUT_NAME = "probabilities"
INPUT_SHAPE = (N_BINS, N_FRAMES, 1)
METADATA_VERSION = 1
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "ser_cnn.onnx"


@dataclass(frozen=True)
class ModelMetadata:
    """What a runtime must know about a model file to feed it correctly."""

    labels: list[str]
    features: dict[str, Any]
    window_seconds: float
    hop_seconds: float
    sha256: str
    recipe: str = ""
    protocol: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    training_data: str = ""
    licence: str = ""
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    metadata_version: int = METADATA_VERSION

    @property
    def window(self) -> WindowConfig:
        return WindowConfig(self.window_seconds, self.hop_seconds)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def metadata_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_metadata(model_path: str | Path) -> ModelMetadata:
    """Read and check the metadata beside ``model_path``; ``ModelError`` with the reason if unusable."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file not found")
    meta_path = metadata_path(model_path)
    if not meta_path.is_file():
        raise ModelError(f"{model_path}: its metadata {meta_path.name} is missing")
    try:
        raw = json.loads(meta_path.read_text())
        metadata = ModelMetadata(**raw)
    except (json.JSONDecodeError, TypeError) as error:
        raise ModelError(f"{meta_path}: unreadable model metadata ({error})") from None
    if metadata.metadata_version != METADATA_VERSION:
        raise ModelError(f"{meta_path}: metadata version {metadata.metadata_version}, this code reads {METADATA_VERSION}")
    if tuple(metadata.labels) != EMOTIONS:
        raise ModelError(f"{meta_path}: labels {metadata.labels} differ from this code's {list(EMOTIONS)}")
    expected = feature_parameters()
    if metadata.features != expected:
        differing = sorted(k for k in set(expected) | set(metadata.features) if expected.get(k) != metadata.features.get(k))
        raise ModelError(
            f"{meta_path}: model was trained with different feature parameters ({', '.join(differing)}); "
            "retrain it or use a matching ser-stream version"
        )
    actual = file_sha256(model_path)
    if actual != metadata.sha256:
        raise ModelError(f"{model_path}: sha256 {actual[:12]}… does not match its metadata ({metadata.sha256[:12]}…); the file is corrupt or was replaced")
    return metadata
