"""Keras model → ONNX file + metadata JSON, and the parity check between the two.

tf2onnx's ``from_keras`` fails on Keras 3 models, so we convert a
``tf.function`` that calls the model (``from_function``), then name the graph's
input and output as the runtime contract says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray

from ser_stream import EMOTIONS
from ser_stream.errors import SerStreamError, shown
from ser_stream.features import feature_parameters
from ser_stream.model import INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME, ModelMetadata, file_sha256, metadata_path
from ser_stream.windows import WindowConfig
from training.backend import keras, tf
from training.contract import record_trained_contract

OPSET = 17
RAVDESS_CITATION = (
    "(Livingstone & Russo 2018, PLoS ONE 13(5): e0196391), "
    "licensed CC BY-NC-SA 4.0: this model is for non-commercial use, with attribution, shared alike."
)


def ravdess_note(train_actors: list[int], validation_actors: list[int]) -> str:
    """The licence note of a model trained on these RAVDESS actors' speech: every model's said actors 01-20, a fold
    model's too, whose held-out actors it never heard. All 20 read as before (``models/ser_cnn.json``'s note)."""
    actors = f", actors {actor_ranges(train_actors)}" if train_actors else ""  # unrecorded: no claim
    validated = f", validated on actors {actor_ranges(validation_actors)}" if validation_actors else ""
    return f"Trained on RAVDESS speech{actors}{validated} {RAVDESS_CITATION}"


def actor_ranges(actors: list[int]) -> str:
    """Actor numbers as two-digit runs: [1, 2, 3, 5, 7, 8] → ``01-03, 05, 07-08``."""
    runs: list[list[int]] = []
    for actor in sorted(set(actors)):
        if runs and actor == runs[-1][-1] + 1:
            runs[-1].append(actor)
        else:
            runs.append([actor])
    return ", ".join(f"{run[0]:02d}" if len(run) == 1 else f"{run[0]:02d}-{run[-1]:02d}" for run in runs)


def export_onnx(model: keras.Model, onnx_path: Path, window: WindowConfig) -> None:
    """Write ``model`` as ONNX (opset 17) with input ``spectrogram`` and output ``probabilities``, and the
    contract it was trained on (``window``'s length among it)."""
    signature = (tf.TensorSpec((None, *INPUT_SHAPE), tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=signature)
    def serve(spectrogram: tf.Tensor) -> tf.Tensor:
        return model(spectrogram, training=False)

    import tf2onnx  # after training.backend: its own import of TensorFlow would print the start-up lines

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=OPSET)
    graph = proto.graph
    old_output = graph.output[0].name
    for node in graph.node:
        node.output[:] = [OUTPUT_NAME if name == old_output else name for name in node.output]
        node.input[:] = [OUTPUT_NAME if name == old_output else name for name in node.input]
    graph.output[0].name = OUTPUT_NAME
    old_input = graph.input[0].name
    if old_input != INPUT_NAME:
        for node in graph.node:
            node.input[:] = [INPUT_NAME if name == old_input else name for name in node.input]
        graph.input[0].name = INPUT_NAME
    record_trained_contract(proto, window.window_seconds)
    onnx.checker.check_model(proto)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(onnx_path))


def write_metadata(
    onnx_path: Path,
    window: WindowConfig,
    recipe: str,
    protocol: str,
    metrics: dict[str, Any],
    training_data: str,
) -> ModelMetadata:
    """Write the metadata JSON beside ``onnx_path`` (hash of the file as it is now); its licence note names the actors
    ``metrics`` records it trained on."""
    training = metrics.get("training") or {}
    metadata = ModelMetadata(
        labels=list(EMOTIONS),
        features=feature_parameters(),
        window_seconds=window.window_seconds,
        hop_seconds=window.hop_seconds,
        sha256=file_sha256(onnx_path),
        recipe=recipe,
        protocol=protocol,
        metrics=metrics,
        training_data=training_data,
        licence=ravdess_note(training.get("train_actors", []), training.get("validation_actors", [])),
    )
    metadata_path(onnx_path).write_text(metadata.to_json())
    return metadata


# The most an exported network's outputs may differ from the Keras model's on the same inputs (issue 2: 1e-4).
PARITY_BOUND = 1e-4


def checked_parity(model: keras.Model, onnx_path: Path, inputs: NDArray[np.float32]) -> float:
    """``parity``, refused (``SerStreamError``) above PARITY_BOUND or not a number: a broken export was once only
    recorded in metrics.json, and shipped."""
    difference = parity(model, onnx_path, inputs)
    if not difference <= PARITY_BOUND:  # NaN too
        raise SerStreamError(f"{shown(onnx_path)}: the ONNX export differs from the Keras model by {difference:.2e} on test windows "
                             f"(bound {PARITY_BOUND:.0e}); the export is broken")
    return difference


def parity(model: keras.Model, onnx_path: Path, inputs: NDArray[np.float32]) -> float:
    """Largest absolute difference between Keras and onnxruntime outputs on ``inputs``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = session.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]
    keras_out = model(inputs, training=False).numpy()
    return float(np.max(np.abs(onnx_out - keras_out)))
