"""The ONNX model contract and the metadata that travels beside the model file.

Input ``spectrogram`` [N, 260, 270, 1] float32 in [0, 1]; output
``probabilities`` [N, 8] in ``EMOTIONS`` order. The metadata JSON records the
feature parameters, window, labels and the file's sha256; ``load_verified``
(what the runtime loads a model through) refuses a model that does not match
this code or whose bytes changed, and returns the bytes it hashed. The ONNX
file keeps its own copy of what it was trained on (labels, features, window:
``CONTRACT_PROPERTY``), inside the bytes the sha256 covers, so an edited JSON
cannot feed the network windows of another length unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import stat
import sys
import sysconfig
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ser_stream import EMOTIONS
from ser_stream.errors import AudioInputError, ModelError, shown
from ser_stream.features import N_BINS, N_FRAMES, feature_parameters
from ser_stream.windows import WindowConfig

INPUT_NAME = "spectrogram"
OUTPUT_NAME = "probabilities"
INPUT_SHAPE = (N_BINS, N_FRAMES, 1)
METADATA_VERSION = 1
CONTRACT_PROPERTY = "ser_stream.contract"  # the ONNX file's metadata_props entry holding ``trained_contract``'s JSON
MODEL_FILE = "ser_cnn.onnx"
INSTALLED_MODELS = Path("share") / "ser-stream" / "models"  # where a wheel puts models/ (pyproject's data-files)


def installed_data_folders() -> tuple[str, ...]:
    """Where pip may have put the package's data files: the environment's data folder (``/usr/local`` for
    Debian's system Python, whose ``sys.prefix`` is ``/usr``), the prefix, the user's (``pip install --user``)."""
    folders = [sysconfig.get_path("data"), sys.prefix]
    folders += [sysconfig.get_path("data", scheme) for scheme in sysconfig.get_scheme_names() if scheme.endswith("_user")]
    return tuple(dict.fromkeys(folders))


def default_model_path(package_dir: Path = Path(__file__).resolve().parent, bases: tuple[str, ...] | None = None) -> Path:
    """The shipped model: in models/ beside the package in a checkout (or an editable install), else where
    ``pip install`` put it under the environment's or the user's data folder; if it is in neither, the
    checkout's path, which the missing-model error then names."""
    checkout = package_dir.parent / "models" / MODEL_FILE
    if checkout.is_file():
        return checkout
    for base in bases if bases is not None else installed_data_folders():
        installed = Path(base) / INSTALLED_MODELS / MODEL_FILE
        if installed.is_file():
            return installed
    return checkout


DEFAULT_MODEL = default_model_path()


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


def trained_contract(labels: list[str], features: dict[str, Any], window_seconds: float) -> str:
    """What a network was trained on and must be fed, as the JSON an ONNX file keeps in ``CONTRACT_PROPERTY``."""
    return json.dumps({"labels": list(labels), "features": features, "window_seconds": float(window_seconds)}, sort_keys=True)


def check_trained_contract(model_path: str | Path, metadata: ModelMetadata, embedded: str | None) -> None:
    """``ModelError`` where the metadata JSON says other than the ONNX file's own record (``embedded``; files
    exported before it was kept have none, and pass): a JSON edited to 1 s windows once ran a 2 s network unnoticed.

    The JSON's labels and features were already held to this code's, so a record differing in them is a network
    this code cannot feed (no edit of the JSON helps); a differing window is the JSON's to restore."""
    if embedded is None:
        return
    try:
        recorded = json.loads(embedded)
        trained = {name: recorded[name] for name in ("labels", "features", "window_seconds")}
        if not isinstance(trained["features"], dict):
            raise TypeError
    except (ValueError, TypeError, KeyError):
        raise ModelError(f"{shown(model_path)}: its {CONTRACT_PROPERTY} record is not readable; export it again") from None
    incompatible = []
    if trained["labels"] != metadata.labels:
        incompatible.append(f"labels {shown(json.dumps(trained['labels']))} (this code: {shown(json.dumps(metadata.labels))})")
    differing = [
        f"{shown(name)} {recorded_value(trained['features'], name)} (this code: {recorded_value(metadata.features, name)})"
        for name in sorted(set(trained["features"]) | set(metadata.features), key=str)
        if trained["features"].get(name, MISSING) != metadata.features.get(name, MISSING)
    ]
    if differing:
        incompatible.append(f"feature parameter{'s' if len(differing) > 1 else ''} {', '.join(differing)}")
    if incompatible:
        raise ModelError(
            f"{shown(model_path)}: the network was trained on {' and '.join(incompatible)}; it is incompatible with this code "
            "(retrain it, or re-export it with this code)"
        )
    if trained["window_seconds"] != metadata.window_seconds:
        raise ModelError(
            f"{shown(metadata_path(model_path))}: says window_seconds {shown(str(metadata.window_seconds))}, but the network in "
            f"{shown(Path(model_path).name)} was trained on window_seconds {shown(str(trained['window_seconds']))}; "
            "restore the metadata (the window is the network's, not a setting)"
        )


def recorded_value(features: dict[str, Any], name: str) -> str:
    """A feature parameter as a one-line error shows it: its JSON, or ``absent``."""
    return shown(json.dumps(features[name])) if name in features else "absent"


def metadata_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# The JSON types that can hold each ModelMetadata annotation, and how an error names them.
JSON_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "list[str]": ((list,), f"a list of {len(EMOTIONS)} strings"),
    "dict[str, Any]": ((dict,), "an object"),
    "float": ((int, float), "a number of seconds"),
    "str": ((str,), "a string"),
    "int": ((int,), "a whole number"),
}


def described(value: object) -> str:
    """A JSON value as a one-line error shows it: ``null``, ``'1' (a string)``, ``3 (a number)``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"{value[:40]!r} (a string)"
    if isinstance(value, int | float):
        return f"{value} (a number)"
    return "a list" if isinstance(value, list) else "an object"


def holds(value: object, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and not isinstance(value, bool)  # JSON true is not a number


def load_metadata(model_path: str | Path) -> ModelMetadata:
    """Read and check the metadata beside ``model_path``, and the file's sha256 against it; ``ModelError`` with the
    reason if unusable. The checks of ``load_verified`` without keeping the bytes: for the tests, which read a
    model's metadata through it."""
    metadata = checked_metadata(Path(model_path))
    try:
        actual = file_sha256(model_path)
    except OSError as error:
        raise ModelError(f"{shown(model_path)}: cannot read it ({error.strerror})") from None
    check_sha256(Path(model_path), metadata, actual)
    return metadata


def load_verified(model_path: str | Path) -> tuple[ModelMetadata, bytes]:
    """The checked metadata and the model's bytes, hashed as read: what is run is what was checked (loaded from its
    path, a model was read again after hashing, and weights kept in an external data file were never hashed)."""
    metadata = checked_metadata(Path(model_path))
    try:
        model_bytes = Path(model_path).read_bytes()
    except OSError as error:
        raise ModelError(f"{shown(model_path)}: cannot read it ({error.strerror})") from None
    check_sha256(Path(model_path), metadata, hashlib.sha256(model_bytes).hexdigest())
    return metadata, model_bytes


def check_sha256(model_path: Path, metadata: ModelMetadata, actual: str) -> None:
    """``ModelError`` unless ``actual`` (hexdigest's lowercase) is the metadata's sha256, in either case of hex digit."""
    if actual != metadata.sha256.lower():  # an uppercase digest (PowerShell's Get-FileHash writes one) was called corrupt
        raise ModelError(
            f"{shown(model_path)}: sha256 {actual[:12]}… does not match its metadata ({shown(metadata.sha256[:12])}…); "
            "the file is corrupt or was replaced"
        )


def regular_file(path: Path, what: str) -> bool:
    """Whether ``path`` exists; a folder, a pipe or device, or a path that cannot be looked at (permission, a name
    too long: Path.is_file() raised those as tracebacks) is a ``ModelError`` naming it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return False
    except OSError as error:
        raise ModelError(f"{shown(path)}: cannot open the {what} ({error.strerror})") from None
    if stat.S_ISDIR(mode):
        raise ModelError(f"{shown(path)}: is a folder, not a {what}")
    if not stat.S_ISREG(mode):
        raise ModelError(f"{shown(path)}: not a regular file (a pipe or device), not a {what}")
    return True


def checked_metadata(model_path: Path) -> ModelMetadata:
    """The metadata beside ``model_path``, checked against this code (all but the sha256)."""
    if not regular_file(model_path, "model file"):
        raise ModelError(f"{shown(model_path)}: model file not found")
    if model_path.suffix.lower() == ".json":
        raise ModelError(f"{shown(model_path)}: is the metadata JSON; give the .onnx file beside it")
    meta_path = metadata_path(model_path)
    if not regular_file(meta_path, "model metadata"):
        raise ModelError(f"{shown(model_path)}: its metadata {shown(meta_path.name)} is missing")
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:  # ValueError: bad JSON or bytes that are not UTF-8
        raise ModelError(f"{shown(meta_path)}: unreadable model metadata ({error})") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{shown(meta_path)}: model metadata is not a JSON object ({described(raw)})")
    version = raw.get("metadata_version", METADATA_VERSION)
    if not holds(version, (int,)):
        raise ModelError(f"{shown(meta_path)}: metadata_version is {described(version)}, this code reads {METADATA_VERSION}")
    if version != METADATA_VERSION:
        raise ModelError(f"{shown(meta_path)}: metadata version {version}, this code reads {METADATA_VERSION}")
    known = {f.name: f for f in fields(ModelMetadata)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ModelError(f"{shown(meta_path)}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}")
    for name, spec in known.items():
        if name not in raw:
            if spec.default is MISSING and spec.default_factory is MISSING:
                raise ModelError(f"{shown(meta_path)}: field {name!r} is missing")
            continue
        types, expected_type = JSON_TYPES[str(spec.type)]
        if not holds(raw[name], types):
            raise ModelError(f"{shown(meta_path)}: field {name!r} is {described(raw[name])}, expected {expected_type}")
    metadata = ModelMetadata(**raw)
    if tuple(metadata.labels) != EMOTIONS:
        raise ModelError(f"{shown(meta_path)}: labels {metadata.labels} differ from this code's {list(EMOTIONS)}")
    for name, value, constant in (("input_name", metadata.input_name, INPUT_NAME), ("output_name", metadata.output_name, OUTPUT_NAME)):
        if value != constant:
            raise ModelError(f"{shown(meta_path)}: {name} is {shown(value)}, this code feeds and reads {constant!r}")
    expected = feature_parameters()
    if metadata.features != expected:
        differing = sorted(k for k in set(expected) | set(metadata.features) if expected.get(k) != metadata.features.get(k))
        raise ModelError(
            f"{shown(meta_path)}: model was trained with different feature parameters ({', '.join(map(shown, differing))}); "
            "retrain it or use a matching ser-stream version"
        )
    try:
        WindowConfig(metadata.window_seconds, metadata.hop_seconds)  # checked here, not blamed on each audio file
    except AudioInputError as error:
        raise ModelError(f"{shown(meta_path)}: {error}") from None
    return metadata
