"""The ONNX file's own record of what its network was trained on and must be fed.

The metadata JSON beside a model says the same, but anyone can edit it; the
record inside the file is covered by the sha256 the JSON keeps, so the runtime
can hold the JSON to it (``ser_stream.model.check_trained_contract``). No
TensorFlow here: the ensemble tool writes it too (the quantiser keeps it).
"""

from __future__ import annotations

import onnx

from ser_stream import EMOTIONS
from ser_stream.features import feature_parameters
from ser_stream.model import CONTRACT_PROPERTY, trained_contract


def record_trained_contract(proto: onnx.ModelProto, window_seconds: float) -> None:
    """Keep in the file itself what its network was trained on and must be fed (this code's labels and feature
    parameters, and its window): the runtime holds the metadata JSON to it (``CONTRACT_PROPERTY``)."""
    kept = [(entry.key, entry.value) for entry in proto.metadata_props if entry.key != CONTRACT_PROPERTY]
    del proto.metadata_props[:]
    for key, value in [*kept, (CONTRACT_PROPERTY, trained_contract(list(EMOTIONS), feature_parameters(), window_seconds))]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value

