"""The ONNX file's own record of what its network was trained on and must be fed.

The metadata JSON beside a model says the same, but anyone can edit it; the
record inside the file is covered by the sha256 the JSON keeps, so the runtime
can hold the JSON to it (``ser_stream.model.check_trained_contract``). No
TensorFlow here: the ensemble tool writes it too (the quantiser keeps it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx

from ser_stream import EMOTIONS
from ser_stream.cli import output_file
from ser_stream.errors import ModelError, one_line, shown
from ser_stream.features import feature_parameters
from ser_stream.model import (
    CONTRACT_PROPERTY,
    ModelMetadata,
    check_trained_contract,
    load_verified,
    metadata_path,
    regular_file,
    trained_contract,
)


def record_trained_contract(proto: onnx.ModelProto, window_seconds: float) -> None:
    """Keep in the file itself what its network was trained on and must be fed (this code's labels and feature
    parameters, and its window): the runtime holds the metadata JSON to it (``CONTRACT_PROPERTY``)."""
    kept = [(entry.key, entry.value) for entry in proto.metadata_props if entry.key != CONTRACT_PROPERTY]
    del proto.metadata_props[:]
    for key, value in [*kept, (CONTRACT_PROPERTY, trained_contract(list(EMOTIONS), feature_parameters(), window_seconds))]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value



def recorded_contract(proto: onnx.ModelProto) -> str | None:
    """The file's own record (``CONTRACT_PROPERTY``), or None for a file exported before it was kept."""
    return next((entry.value for entry in proto.metadata_props if entry.key == CONTRACT_PROPERTY), None)


def load_checked_model(path: Path) -> tuple[ModelMetadata, onnx.ModelProto]:
    """A model's metadata and graph, held to each other as the runtime holds them (sha256, and the file's own record
    of its window) before a tool works on them: tools that checked only the sha256 made, from a JSON edited to 1 s,
    members, an int8 model and a shipped pair that the runtime then refused."""
    metadata, model_bytes = load_verified(path)
    try:
        proto = onnx.load_from_string(model_bytes)
        onnx.checker.check_model(proto)
    except Exception as error:  # protobuf's DecodeError, onnx's ValidationError, ...: the reason, not the type, is the user's
        raise ModelError(f"{shown(path)}: not a readable ONNX model ({one_line(error)})") from None
    check_trained_contract(path, metadata, recorded_contract(proto))
    return metadata, proto


def check_metadata_writable(model_path: Path) -> None:
    """``ModelError`` if the metadata .json beside ``model_path`` could not be written as a file: a folder of that
    name once stopped ship and ensemble with a traceback after the model was written."""
    try:
        regular_file(metadata_path(model_path), "metadata file to write")
    except ModelError as error:
        raise ModelError(f"{shown(model_path)}: its metadata {error}") from None


def model_output(text: str) -> Path:
    """An argparse type: a .onnx file to write (``output_file``) whose metadata .json beside it can be written too."""
    path = output_file(".onnx")(text)
    try:
        check_metadata_writable(path)
    except ModelError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return path


def put_in_place(staged: Path, to: Path) -> None:
    """Move a model written under a temporary name (``staged``, its metadata beside it) to ``to``, once the pair loads
    as the runtime will load it: a tool that fails part-way leaves the file it would replace as it was."""
    load_checked_model(staged)
    check_metadata_writable(to)
    try:
        staged.replace(to)
        metadata_path(staged).replace(metadata_path(to))
    except OSError as error:
        raise ModelError(f"{shown(to)}: cannot put the model there ({error.strerror or type(error).__name__})") from None
