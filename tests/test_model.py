"""Loading a model and its metadata: anything wrong with the pair is one line naming the file and the reason."""

from __future__ import annotations

import ctypes.util
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from ser_stream.errors import ModelError, shown
from ser_stream.inference import EmotionModel
from ser_stream.model import CONTRACT_PROPERTY, file_sha256, load_metadata, metadata_path
from tests.conftest import speechlike


def resealed(model: Path) -> None:
    """The metadata beside ``model`` given the sha256 of the ONNX file as it now is (after the test changed it)."""
    metadata_path(model).write_text(json.dumps({**json.loads(metadata_path(model).read_text()), "sha256": file_sha256(model)}))


def copy_of_model(shipped_model: Path, folder: Path, name: str = "model.onnx") -> Path:
    copy = folder / name
    shutil.copy(shipped_model, copy)
    shutil.copy(metadata_path(shipped_model), metadata_path(copy))
    return copy


def with_field(name: str, value: Any) -> Any:
    def change(metadata: dict[str, Any]) -> dict[str, Any]:
        return {**metadata, name: value}

    return change


def without_field(name: str) -> Any:
    def change(metadata: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in metadata.items() if key != name}

    return change


@pytest.mark.parametrize(
    "damage, reason",
    [
        (b'{"labels": "\xff"}', r"unreadable model metadata \('utf-8' codec can't decode byte 0xff in position 12: invalid start byte\)"),
        (b'{"labels": ', r"unreadable model metadata \(Expecting value: line 1 column 12 \(char 11\)\)"),
        (b"[1, 2]", r"model metadata is not a JSON object \(a list\)"),
        (with_field("bogus", 1), r"unknown field 'bogus'"),
        (lambda metadata: {**metadata, "bogus": 1, "extra": 2}, r"unknown fields 'bogus', 'extra'"),
        (b"[" * 100_000, r"unreadable model metadata \(maximum recursion depth exceeded.*\)"),
        (with_field("metadata_version", "1"), r"metadata_version is '1' \(a string\), this code reads 1"),
        (with_field("metadata_version", 2), r"metadata version 2, this code reads 1"),
        (with_field("metadata_version", 0), r"metadata version 0, this code reads 1"),
        (without_field("sha256"), r"field 'sha256' is missing"),
        (with_field("sha256", 5), r"field 'sha256' is 5 \(a number\), expected a string"),
        (with_field("sha256", None), r"field 'sha256' is null, expected a string"),
        (with_field("labels", None), r"field 'labels' is null, expected a list of 8 strings"),
        (with_field("labels", 8), r"field 'labels' is 8 \(a number\), expected a list of 8 strings"),
        (with_field("features", None), r"field 'features' is null, expected an object"),
        (with_field("features", []), r"field 'features' is a list, expected an object"),
        (with_field("window_seconds", "2"), r"field 'window_seconds' is '2' \(a string\), expected a number of seconds"),
        (with_field("window_seconds", "2" * 1000), r"field 'window_seconds' is '2{40}' \(a string\), expected a number of seconds"),
        (with_field("hop_seconds", None), r"field 'hop_seconds' is null, expected a number of seconds"),
        (with_field("hop_seconds", True), r"field 'hop_seconds' is true, expected a number of seconds"),
        (with_field("metrics", "good"), r"field 'metrics' is 'good' \(a string\), expected an object"),
        (with_field("licence", ["CC"]), r"field 'licence' is a list, expected a string"),
        (with_field("output_name", "logits"), r"output_name is logits, this code feeds and reads 'probabilities'"),
        (with_field("input_name", "mel"), r"input_name is mel, this code feeds and reads 'spectrogram'"),
    ],
    ids=[
        "not-utf8", "not-json", "json-list", "unknown-field", "unknown-fields", "nested-100000-deep", "version-as-string", "newer-version", "version-0", "no-sha256",
        "sha256-int", "sha256-null", "labels-null", "labels-int", "features-null", "features-list",
        "window-string", "window-a-long-string", "hop-null", "hop-bool", "metrics-string", "licence-list", "output-name", "input-name",
    ],
)
def test_damaged_metadata_is_one_line_naming_the_json_and_the_field(shipped_model, tmp_path, damage, reason):
    model = copy_of_model(shipped_model, tmp_path)
    if isinstance(damage, bytes):
        metadata_path(model).write_bytes(damage)
    else:
        metadata_path(model).write_text(json.dumps(damage(json.loads(metadata_path(model).read_text()))))
    with pytest.raises(ModelError, match=rf"^{re.escape(str(metadata_path(model)))}: {reason}$"):
        load_metadata(model)


def test_metadata_of_only_the_fields_a_runtime_needs_loads(shipped_model, tmp_path):
    """labels, features, window, hop and sha256: the rest (metadata_version, recipe, metrics, licence, …) have defaults,
    so a metadata JSON written before a field was added, or by hand for a model exported elsewhere, still loads."""
    model = copy_of_model(shipped_model, tmp_path)
    metadata = json.loads(metadata_path(model).read_text())
    needed = ("labels", "features", "window_seconds", "hop_seconds", "sha256")
    metadata_path(model).write_text(json.dumps({name: metadata[name] for name in needed}))
    loaded = load_metadata(model)
    assert (loaded.window_seconds, loaded.metrics, loaded.metadata_version) == (metadata["window_seconds"], {}, 1)


def test_a_sha256_written_in_uppercase_hex_is_the_same_digest(shipped_model, tmp_path):
    """An uppercase digest in the metadata was called corruption: 'the file is corrupt or was replaced'."""
    model = copy_of_model(shipped_model, tmp_path)
    metadata_path(model).write_text(json.dumps({**json.loads(metadata_path(model).read_text()), "sha256": file_sha256(model).upper()}))
    assert EmotionModel(model, provider="cpu").predict(np.zeros((1, 260, 270), np.float32)).shape == (1, 8)
    metadata_path(model).write_text(json.dumps({**json.loads(metadata_path(model).read_text()), "sha256": "0" * 64}))
    with pytest.raises(ModelError, match=r": sha256 [0-9a-f]{12}… does not match its metadata \(000000000000…\); the file is corrupt or was replaced$"):
        load_metadata(model)


def test_the_runtime_refuses_a_model_whose_bytes_are_not_those_its_metadata_records(shipped_model, tmp_path):
    """What EmotionModel loads is checked as load_metadata checks it, all 64 hex digits: a digest agreeing in the 12
    that the error shows, and the runtime not checking at all, both ran a replaced model (a mutation audit)."""
    model = copy_of_model(shipped_model, tmp_path)
    actual = file_sha256(model)
    other = actual[:12] + ("0" if actual[12] != "0" else "1") + actual[13:]
    metadata_path(model).write_text(json.dumps({**json.loads(metadata_path(model).read_text()), "sha256": other}))
    with pytest.raises(ModelError) as refused:
        EmotionModel(model, provider="cpu")
    assert str(refused.value) == f"{model}: sha256 {actual[:12]}… does not match its metadata ({other[:12]}…); the file is corrupt or was replaced"


@pytest.mark.parametrize("own_record", [True, False], ids=["with-own-record", "exported-before-records"])
def test_metadata_recording_other_feature_parameters_than_this_codes_is_refused_naming_those_that_differ(shipped_model, tmp_path, own_record):
    """A model trained with a 80 dB range is fed 60 dB pictures by this code. Without its own record only the JSON's
    check stops it: compared as 'fewer parameters than this code's', a JSON saying top_db 80 loaded (a mutation audit)."""
    model = copy_of_model(shipped_model, tmp_path) if own_record else without_trained_record(shipped_model, tmp_path)
    metadata = json.loads(metadata_path(model).read_text())
    metadata_path(model).write_text(json.dumps({**metadata, "features": {**metadata["features"], "top_db": 80.0, "n_fft": 512}}))
    with pytest.raises(ModelError) as refused:
        EmotionModel(model, provider="cpu")
    assert str(refused.value) == (
        f"{metadata_path(model)}: model was trained with different feature parameters (n_fft, top_db); "
        "retrain it or use a matching ser-stream version"
    )


def test_a_model_without_its_metadata_is_refused_naming_the_json_it_looked_for(shipped_model, tmp_path):
    model = copy_of_model(shipped_model, tmp_path)
    metadata_path(model).unlink()
    with pytest.raises(ModelError) as refused:
        EmotionModel(model, provider="cpu")
    assert str(refused.value) == f"{model}: its metadata model.json is missing"


@pytest.mark.parametrize(
    "window_seconds, hop_seconds, reason",
    [(100, 0.5, "window of 100 s is outside 0.1–30 s"), (2.0, 0, "hop of 0 s must be at least 0.01 s and at most the window")],
)
def test_a_window_the_runtime_cannot_cut_is_refused_at_load_naming_the_metadata(
    shipped_model, tmp_path, capsys, window_seconds, hop_seconds, reason
):
    from ser_stream.cli import main

    model = copy_of_model(shipped_model, tmp_path)
    metadata = json.loads(metadata_path(model).read_text())
    metadata_path(model).write_text(json.dumps({**metadata, "window_seconds": window_seconds, "hop_seconds": hop_seconds}))
    audio = tmp_path / "good.wav"
    soundfile.write(audio, speechlike(2.5, 16000), 16000)
    assert main(["classify", "--model", str(model), str(audio)]) == 2
    assert capsys.readouterr().err == f"ser-stream: error: {metadata_path(model)}: {reason}\n"


def graph_with(folder: Path, shipped_model: Path, input_type: int, outputs: int, softmax: bool = True, batch: int | str = "N",
               picture: tuple[int, int] = (260, 270), input_name: str = "spectrogram", output_name: str = "probabilities") -> Path:
    """A valid ONNX graph, under the runtime's names unless given others, with its own metadata: mean of each row,
    then a softmax (or, without ``softmax``, the raw scores); its batch dimension ``batch`` (a name: any size), its
    input [batch, *picture, 1]."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ser_stream.model import file_sha256

    graph = helper.make_graph(
        [
            helper.make_node("Cast", [input_name], ["floats"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["floats"], ["rows"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["rows", "weights"], ["scores"]),
            helper.make_node("Softmax", ["scores"], [output_name], axis=1) if softmax else helper.make_node("Identity", ["scores"], [output_name]),
        ],
        "contract",
        [helper.make_tensor_value_info(input_name, input_type, [batch, *picture, 1])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, outputs])],
        [numpy_helper.from_array(np.ones((picture[0], outputs), np.float32), "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / "contract.onnx"
    onnx.save(model, str(path))
    metadata = json.loads(metadata_path(shipped_model).read_text())
    metadata_path(path).write_text(json.dumps({**metadata, "sha256": file_sha256(path)}))
    return path


def trained_record(model: Path) -> dict[str, Any]:
    """What the ONNX file itself records it was trained on."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return json.loads(session.get_modelmeta().custom_metadata_map[CONTRACT_PROPERTY])


def test_metadata_edited_to_another_window_than_the_network_was_trained_on_is_refused_at_load(shipped_model, tmp_path, capsys):
    """The window is the network's: a JSON edited to 1 s windows once ran the 2 s network on squeezed inputs, unsaid."""
    from ser_stream.cli import main

    assert trained_record(shipped_model)["window_seconds"] == load_metadata(shipped_model).window_seconds == 2.0
    model = copy_of_model(shipped_model, tmp_path)
    metadata_path(model).write_text(json.dumps({**json.loads(metadata_path(model).read_text()), "window_seconds": 1.0, "hop_seconds": 0.25}))
    load_metadata(model)  # the JSON alone is sound: only the file's own record tells
    audio = tmp_path / "good.wav"
    soundfile.write(audio, speechlike(2.5, 16000), 16000)
    assert main(["classify", "--model", str(model), str(audio)]) == 2
    assert capsys.readouterr().err == (
        f"ser-stream: error: {metadata_path(model)}: says window_seconds 1.0, but the network in model.onnx was trained on "
        "window_seconds 2.0; restore the metadata (the window is the network's, not a setting)\n"
    )


def with_trained_record(shipped_model: Path, folder: Path, change: Any) -> Path:
    """A copy of the shipped model whose own record of what its network was trained on is ``change``d, resealed."""
    onnx = pytest.importorskip("onnx")  # the training extra; the runtime reads the record with onnxruntime

    model = copy_of_model(shipped_model, folder)
    proto = onnx.load(str(model))
    entry = next(entry for entry in proto.metadata_props if entry.key == CONTRACT_PROPERTY)
    changed = change(json.loads(entry.value))
    entry.value = changed if isinstance(changed, str) else json.dumps(changed)  # text as it is: a record that is not JSON
    onnx.save(proto, str(model))
    resealed(model)
    return model


def swapped_labels(record: dict[str, Any]) -> dict[str, Any]:
    labels = record["labels"]
    return {**record, "labels": [labels[1], labels[0], *labels[2:]]}


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda record: {**record, "features": {**record["features"], "top_db": 50.0}}, "feature parameter top_db 50.0 (this code: 60.0)"),
        (lambda record: {**record, "features": {**{k: v for k, v in record["features"].items() if k != "window"}, "n_fft": 512}},
         'feature parameters n_fft 512 (this code: 520), window absent (this code: "hann")'),
        (lambda record: {**record, "features": {**record["features"], "pre_emphasis": 0.97}},
         "feature parameter pre_emphasis 0.97 (this code: absent)"),
        (swapped_labels, 'labels ["calm", "neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"] '
                         '(this code: ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"])'),
    ],
    ids=["top-db", "n-fft-and-no-window", "a-parameter-this-code-lacks", "labels-swapped"],
)
def test_a_network_trained_on_other_labels_or_features_than_this_codes_is_named_incompatible_with_what_differs(
    shipped_model, tmp_path, change, reason
):
    """The error said 'restore the metadata (the window is the network's, not a setting)': no metadata edit helps a
    network trained on other labels or features, and it printed both whole feature dicts, leaving the reader to diff them."""
    model = with_trained_record(shipped_model, tmp_path, change)
    with pytest.raises(ModelError) as refused:
        EmotionModel(model, provider="cpu")
    assert str(refused.value) == (
        f"{model}: the network was trained on {reason}; it is incompatible with this code (retrain it, or re-export it with this code)"
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda record: {**record, "features": sorted(record["features"])},
        lambda record: {k: v for k, v in record.items() if k != "window_seconds"},
        lambda record: "",
    ],
    ids=["features-a-list", "no-window", "empty"],
)
def test_a_network_whose_own_record_cannot_be_read_is_refused_in_one_line(shipped_model, tmp_path, change):
    """Without the check that the features are an object (a mutation audit), a list of names was an AttributeError traceback."""
    model = with_trained_record(shipped_model, tmp_path, change)
    with pytest.raises(ModelError) as refused:
        EmotionModel(model, provider="cpu")
    assert str(refused.value) == f"{model}: its {CONTRACT_PROPERTY} record is not readable; export it again"


def without_trained_record(shipped_model: Path, folder: Path) -> Path:
    """A copy of the shipped model as exported before ONNX files kept their own record, resealed."""
    onnx = pytest.importorskip("onnx")  # the training extra; the runtime reads the record with onnxruntime

    model = copy_of_model(shipped_model, folder)
    proto = onnx.load(str(model))
    del proto.metadata_props[:]
    onnx.save(proto, str(model))
    resealed(model)
    return model


def test_a_model_exported_before_files_kept_their_own_record_still_loads(shipped_model, tmp_path):
    model = without_trained_record(shipped_model, tmp_path)
    assert EmotionModel(model, provider="cpu").metadata.window_seconds == 2.0


@pytest.mark.parametrize("own_record", [True, False], ids=["with-own-record", "exported-before-records"])
def test_metadata_whose_labels_are_this_codes_in_another_order_is_refused_naming_both_orders(shipped_model, tmp_path, own_record):
    """The label order is which output is which emotion: a network read in another order labels every file wrongly.
    A model without its own record has only the JSON's check to stop it."""
    model = copy_of_model(shipped_model, tmp_path) if own_record else without_trained_record(shipped_model, tmp_path)
    metadata = json.loads(metadata_path(model).read_text())
    labels = metadata["labels"]
    metadata_path(model).write_text(json.dumps({**metadata, "labels": [labels[1], labels[0], *labels[2:]]}))
    with pytest.raises(ModelError) as refused:
        EmotionModel(model, provider="cpu")
    assert str(refused.value) == (
        f"{metadata_path(model)}: labels ['calm', 'neutral', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised'] "
        "differ from this code's ['neutral', 'calm', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised']"
    )


@pytest.mark.parametrize(
    "input_type, outputs, reason",
    [
        (1, 7, r"output 'probabilities' is tensor\(float\) of shape \['N', 7\], not float32 \[N, 8\] \(one probability per emotion\)"),
        (10, 8, r"input 'spectrogram' is tensor\(float16\), not float32 \(tensor\(float\)\)"),
    ],
    ids=["seven-outputs", "float16-input"],
)
def test_a_graph_that_breaks_the_contract_is_refused_at_load_not_at_the_first_file(shipped_model, tmp_path, capsys, input_type, outputs, reason):
    from ser_stream.cli import main

    model = graph_with(tmp_path, shipped_model, input_type, outputs)
    with pytest.raises(ModelError, match=rf"^{re.escape(str(model))}: {reason}$"):
        EmotionModel(model, provider="cpu")
    audio = tmp_path / "good.wav"
    soundfile.write(audio, speechlike(2.5, 16000), 16000)
    assert main(["classify", "--model", str(model), str(audio), str(audio)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"ser-stream: error: {model}: ") and error.count("\n") == 1


@pytest.mark.parametrize(
    "graph, reason",
    [
        ({"picture": (270, 260)}, r"input shape \['N', 270, 260, 1\] is not \[N, 260, 270, 1\]"),
        ({"input_name": "mel"}, r"expected input 'spectrogram' and output 'probabilities', found \['mel'\] → \['probabilities'\]"),
        ({"output_name": "logits"}, r"expected input 'spectrogram' and output 'probabilities', found \['spectrogram'\] → \['logits'\]"),
    ],
    ids=["picture-transposed", "input-name", "output-name"],
)
def test_a_graph_fed_or_read_under_other_names_or_another_picture_is_refused_at_load_saying_which(shipped_model, tmp_path, graph, reason):
    """Without these checks each was onnxruntime's catch-all at the first run (or a StopIteration traceback)."""
    model = graph_with(tmp_path, shipped_model, 1, 8, **graph)
    with pytest.raises(ModelError, match=rf"^{re.escape(str(model))}: {reason}$"):
        EmotionModel(model, provider="cpu")


@pytest.mark.parametrize("batch", [1, 2])
def test_a_model_exported_with_a_fixed_batch_is_refused_at_load_in_one_line_naming_the_file(shipped_model, tmp_path, capsys, batch):
    """Batch 2 loaded (the check at load runs two inputs) and then failed every file but those of two windows; batch 1 was refused with
    onnxruntime's sentence cut off at 'for the following indices'."""
    from ser_stream.cli import main

    model = graph_with(tmp_path, shipped_model, 1, 8, batch=batch)
    audio = tmp_path / "good.wav"
    soundfile.write(audio, speechlike(2.5, 16000), 16000)
    assert main(["classify", "--model", str(model), str(audio)]) == 2
    assert capsys.readouterr().err == (
        f"ser-stream: error: {model}: its input's batch dimension is fixed at {batch}; export it with a dynamic batch (a named first dimension, N)\n"
    )


def test_a_network_exported_without_its_softmax_is_refused_at_load(shipped_model, tmp_path):
    """Raw scores once loaded, and classify published a confidence of 90 and negative 'probabilities'."""
    softmax = graph_with(tmp_path, shipped_model, 1, 8)
    assert EmotionModel(softmax, provider="cpu").predict(np.zeros((1, 260, 270), np.float32)).sum() == pytest.approx(1.0)
    raw = graph_with(tmp_path, shipped_model, 1, 8, softmax=False)
    with pytest.raises(ModelError, match=rf"^{re.escape(str(raw))}: its outputs are not probabilities \(on a test input they range 0 to 130 and sum to 1\.04e\+03\); export the network with its softmax$"):
        EmotionModel(raw, provider="cpu")


def test_a_network_whose_outputs_each_lie_in_0_to_1_but_do_not_sum_to_1_is_refused_at_load(shipped_model, monkeypatch):
    """One exported with a sigmoid per emotion, not a softmax: a confidence of 0.16 would not mean what it says."""
    real_session = EmotionModel._session

    class SigmoidSession:  # the shipped graph, its outputs replaced by 1.25 shared evenly among the emotions
        def __init__(self, session):
            self.session = session

        def run(self, names, feeds):
            return [np.full((len(feeds["spectrogram"]), 8), 1.25 / 8, np.float32)]

        def __getattr__(self, name):
            return getattr(self.session, name)

    monkeypatch.setattr(EmotionModel, "_session", staticmethod(lambda *given: SigmoidSession(real_session(*given))))
    with pytest.raises(ModelError, match=r": its outputs are not probabilities \(on a test input they range 0\.156 to 0\.156 and sum to 1\.25\); "):
        EmotionModel(shipped_model, provider="cpu")


def test_a_model_whose_weights_are_in_an_external_data_file_is_refused_for_the_sha256_does_not_cover_them(shipped_model, tmp_path):
    """The sha256 covered the .onnx alone, and onnxruntime read the weights beside it: negated weights passed."""
    import onnx

    model = graph_with(tmp_path, shipped_model, 1, 8)
    onnx.save(onnx.load(str(model)), str(model), save_as_external_data=True, location="contract.onnx.data", size_threshold=0)
    assert (tmp_path / "contract.onnx.data").stat().st_size > 0
    resealed(model)
    with pytest.raises(ModelError, match=rf"^{re.escape(str(model))}: keeps its weights in an external data file, which the sha256 "
                                         r"in its metadata does not cover; export the model as one file$"):
        EmotionModel(model, provider="cpu")


def test_a_model_that_gives_fewer_rows_than_windows_is_refused_at_load(shipped_model, tmp_path):
    """One that averaged its batch loaded, and a file's windows were labelled as one, differently by batch size."""
    import onnx
    from onnx import helper

    graph = onnx.load(str(graph_with(tmp_path, shipped_model, 1, 8)))
    softmax = graph.graph.node[-1]
    softmax.output[0] = "each"
    graph.graph.node.append(helper.make_node("ReduceMean", ["each"], ["probabilities"], axes=[0], keepdims=1))
    model = tmp_path / "contract.onnx"
    onnx.save(graph, str(model))
    resealed(model)
    with pytest.raises(ModelError, match=rf"^{re.escape(str(model))}: gave outputs of shape \[1, 8\] for 2 inputs; export it with one row of 8 per input$"):
        EmotionModel(model, provider="cpu")


def test_more_windows_than_max_batch_are_run_in_batches_and_give_what_each_window_gives_alone(shipped_model):
    """classify hands predict 32 windows at a time and the monitor a stream's backlog: every batch must be run."""
    from ser_stream.features import spectrogram

    windows = np.stack([spectrogram(speechlike(2.0, 8000, seed), 8000) for seed in range(5)])
    model = EmotionModel(shipped_model, provider="cpu", max_batch=2)
    one_by_one = np.concatenate([model.predict(window[None]) for window in windows])
    assert len({row.tobytes() for row in one_by_one}) == 5  # five different answers: a batch repeated or shifted shows
    np.testing.assert_allclose(model.predict(windows), one_by_one, atol=1e-5)


def test_a_model_path_that_cannot_be_looked_at_is_one_line_not_a_traceback(tmp_path):
    """Path.is_file() raises for a name too long or a folder without permission: the traceback reached the user."""
    import os

    with pytest.raises(ModelError, match=r": cannot open the model file \(File name too long\)$"):
        load_metadata(tmp_path / ("a" * 300 + ".onnx"))
    os.mkfifo(tmp_path / "pipe.onnx")
    with pytest.raises(ModelError, match=r"pipe\.onnx: not a regular file \(a pipe or device\), not a model file$"):
        load_metadata(tmp_path / "pipe.onnx")


def test_the_metadata_json_or_a_folder_given_as_the_model_is_named_for_what_it_is(shipped_model, tmp_path):
    model = copy_of_model(shipped_model, tmp_path)
    with pytest.raises(ModelError, match=rf"^{re.escape(str(metadata_path(model)))}: is the metadata JSON; give the \.onnx file beside it$"):
        load_metadata(metadata_path(model))
    shouted = shutil.copy(metadata_path(model), tmp_path / "model.JSON")  # not "sha256 … does not match its metadata"
    with pytest.raises(ModelError, match=rf"^{re.escape(str(shouted))}: is the metadata JSON; give the \.onnx file beside it$"):
        load_metadata(shouted)
    with pytest.raises(ModelError, match=rf"^{re.escape(str(tmp_path))}: is a folder, not a model file$"):
        load_metadata(tmp_path)
    with pytest.raises(ModelError, match=rf"^{re.escape(str(tmp_path / 'missing.onnx'))}: model file not found$"):
        load_metadata(tmp_path / "missing.onnx")


def test_a_model_path_with_a_line_break_is_escaped_in_the_error(shipped_model, tmp_path):
    model = copy_of_model(shipped_model, tmp_path, "two\nlines.onnx")
    metadata_path(model).write_text(json.dumps(with_field("labels", None)(json.loads(metadata_path(model).read_text()))))
    with pytest.raises(ModelError) as refused:
        EmotionModel(model, provider="cpu")
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{shown(metadata_path(model))}: field 'labels' is null")
    missing = tmp_path / "gone\nmissing.onnx"
    with pytest.raises(ModelError) as refused:
        EmotionModel(missing)
    assert str(refused.value) == f"{shown(missing)}: model file not found"


def test_asking_for_cuda_without_a_usable_gpu_blames_the_provider_not_the_model(shipped_model, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")  # no GPU, even on a machine that has one
    with pytest.raises(ModelError, match=r"^--provider cuda: no usable CUDA GPU here \(.+\); use --provider auto or cpu$") as refused:
        EmotionModel(shipped_model, provider="cuda")
    assert str(shipped_model) not in str(refused.value)


@pytest.fixture
def driver_without_cuda_libraries(monkeypatch) -> None:
    """This machine as one with an NVIDIA driver installed but not the CUDA libraries onnxruntime-gpu loads."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("needs onnxruntime-gpu, whose CUDA provider is what gets checked")
    if ctypes.util.find_library("cuda") is not None or Path("/proc/driver/nvidia/version").exists():
        pytest.skip("this machine has a real NVIDIA driver; the test fakes one where there is none")
    find_library = ctypes.util.find_library
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libcuda.so.1" if name == "cuda" else find_library(name))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.mark.parametrize("visible", ["", "-1"])
def test_cuda_visible_devices_that_hides_every_gpu_is_named_as_the_reason(driver_without_cuda_libraries, monkeypatch, visible):
    """-1 is how CUDA's own documentation hides every device; it was blamed on the libraries instead."""
    from ser_stream.inference import cuda_unavailable_reason

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert cuda_unavailable_reason() == f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"


def test_a_driver_without_the_cuda_libraries_runs_on_the_cpu_without_a_word(shipped_model, driver_without_cuda_libraries, capfd):
    model = EmotionModel(shipped_model, provider="auto")
    assert model.provider_name == "cpu"
    printed, logged = capfd.readouterr()
    assert printed == "", "the CUDA check wrote to stdout, where classify --json and monitor write their JSON"
    assert logged == "", "onnxruntime was asked for CUDA and logged its failure"


def test_asking_for_cuda_with_a_driver_but_without_the_cuda_libraries_names_what_does_not_load(
    shipped_model, driver_without_cuda_libraries, capfd
):
    with pytest.raises(ModelError) as refused:
        EmotionModel(shipped_model, provider="cuda")
    assert re.fullmatch(
        r"--provider cuda: no usable CUDA GPU here \(the CUDA or cuDNN libraries do not load \(\S+\.so[.\d]*: .+\)\); "
        r"use --provider auto or cpu",
        str(refused.value),
    ), str(refused.value)
    assert capfd.readouterr() == ("", "")


def test_the_default_model_is_the_checkouts_else_the_one_pip_installed_with_the_package(tmp_path):
    from ser_stream.model import INSTALLED_MODELS, MODEL_FILE, default_model_path

    checkout, prefix, user = tmp_path / "checkout", tmp_path / "venv", tmp_path / "user"
    package = checkout / "ser_stream"
    package.mkdir(parents=True)
    assert default_model_path(package, (str(prefix), str(user))) == checkout / "models" / MODEL_FILE  # nowhere: named where a checkout keeps it
    for base in (user, prefix):
        (base / INSTALLED_MODELS).mkdir(parents=True)
        (base / INSTALLED_MODELS / MODEL_FILE).write_bytes(b"onnx")
    assert default_model_path(package, (str(prefix), str(user))) == prefix / INSTALLED_MODELS / MODEL_FILE  # pip install
    assert default_model_path(package, (str(tmp_path / "elsewhere"), str(user))) == user / INSTALLED_MODELS / MODEL_FILE  # pip install --user
    (checkout / "models").mkdir()
    (checkout / "models" / MODEL_FILE).write_bytes(b"onnx")
    assert default_model_path(package, (str(prefix), str(user))) == checkout / "models" / MODEL_FILE  # a checkout's own first


def test_a_system_python_whose_data_folder_is_not_its_prefix_finds_the_model_pip_put_there(tmp_path, monkeypatch):
    """Debian's system Python: sys.prefix is /usr, but pip installs data files under /usr/local."""
    import sysconfig

    from ser_stream.model import INSTALLED_MODELS, MODEL_FILE, default_model_path

    local = tmp_path / "usr" / "local"
    (local / INSTALLED_MODELS).mkdir(parents=True)
    (local / INSTALLED_MODELS / MODEL_FILE).write_bytes(b"onnx")
    real_get_path = sysconfig.get_path
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *scheme: str(local) if name == "data" and not scheme else real_get_path(name, *scheme))
    monkeypatch.setattr("sys.prefix", str(tmp_path / "usr"))
    assert default_model_path(tmp_path / "site-packages" / "ser_stream") == local / INSTALLED_MODELS / MODEL_FILE


def test_the_model_is_looked_for_in_the_environments_data_folder_its_prefix_and_the_users(tmp_path, monkeypatch):
    """Where pip puts data files: the environment's (a venv), sys.prefix (in a venv the same folder; not so for a
    system Python), and the user's scheme (pip install --user)."""
    import sys
    import sysconfig

    from ser_stream.model import installed_data_folders

    monkeypatch.setattr("sys.prefix", str(tmp_path / "usr"))
    folders = installed_data_folders()
    assert {sysconfig.get_path("data"), sys.prefix, sysconfig.get_path("data", sysconfig.get_preferred_scheme("user"))} <= set(folders)
    assert len(folders) == len(set(folders))


def test_the_wheel_carries_the_shipped_model_its_metadata_and_licence_note_where_the_runtime_looks():
    """A `pip install` of the project once had no model at all: models/ sat beside the package, outside the wheel."""
    import tomllib

    from ser_stream.model import INSTALLED_MODELS, MODEL_FILE

    repo = Path(__file__).resolve().parent.parent
    data_files = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    assert sorted(data_files[INSTALLED_MODELS.as_posix()]) == sorted(f"models/{name}" for name in (MODEL_FILE, "ser_cnn.json", "README.md"))
    assert all((repo / path).is_file() for path in data_files[INSTALLED_MODELS.as_posix()])



def test_cuda_asked_for_and_not_started_by_onnxruntime_is_refused_not_run_on_the_cpu_in_silence(shipped_model, monkeypatch, capfd):
    """Where the check before loading misjudged, --provider cuda ran on the CPU, with onnxruntime's errors in red."""
    import onnxruntime

    import ser_stream.inference

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("needs onnxruntime-gpu, whose CUDA provider is what gets asked for")
    if ser_stream.inference.cuda_available():
        pytest.skip("this machine's GPU would start")
    monkeypatch.setattr(ser_stream.inference, "cuda_unavailable_reason", lambda: None)  # the check misjudges
    with pytest.raises(ModelError, match=r"^--provider cuda: onnxruntime could not start its CUDA provider here; use --provider auto or cpu$"):
        EmotionModel(shipped_model, provider="cuda")
    assert "onnxruntime" not in capfd.readouterr().err


def test_cuda_left_out_by_onnxruntime_under_auto_runs_on_the_cpu_saying_why_once_on_stderr(shipped_model, monkeypatch, tmp_path, capfd):
    """--provider cuda's twin: where the check before loading misjudged, auto ran on the CPU and nothing said why."""
    import onnxruntime

    import ser_stream.inference
    from ser_stream.cli import main

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("needs onnxruntime-gpu, whose CUDA provider is what gets asked for")
    if ser_stream.inference.cuda_available():
        pytest.skip("this machine's GPU would start")
    monkeypatch.setattr(ser_stream.inference, "cuda_unavailable_reason", lambda: None)  # the check misjudges
    model = EmotionModel(shipped_model, provider="auto")
    assert model.provider_name == "cpu" and model.cuda_not_used == "onnxruntime could not start its CUDA provider; running on the CPU"
    capfd.readouterr()
    audio = tmp_path / "good.wav"
    soundfile.write(audio, speechlike(2.5, 16000), 16000)
    assert main(["classify", "--json", "--model", str(shipped_model), str(audio)]) == 0
    printed, said = capfd.readouterr()
    assert [json.loads(line)["path"] for line in printed.splitlines()] == [str(audio)]
    assert said == "ser-stream: warning: --provider auto: onnxruntime could not start its CUDA provider; running on the CPU\n"


CUDA_FAILURE = "CUDA failure 100: no CUDA-capable device is detected ; expr=cudaSetDevice(info_.device_id);"


@pytest.fixture
def cuda_failing_at_session_creation(monkeypatch) -> None:
    """A host where the check before loading passes (driver and libraries found) but the GPU cannot be used: a
    container started without --gpus, CUDA_VISIBLE_DEVICES naming no device. onnxruntime raises when the session is
    made with CUDA; its Python wrapper then print()s its fallback banner unless told not to fall back."""
    import onnxruntime.capi.onnxruntime_inference_collection as collection

    import ser_stream.inference

    monkeypatch.setattr(ser_stream.inference, "cuda_unavailable_reason", lambda: None)
    create = collection.InferenceSession._create_inference_session

    def failing_on_cuda(session, providers, provider_options, disabled_optimizers=None):
        if providers and "CUDAExecutionProvider" in providers:
            session._fallback_providers = ["CPUExecutionProvider"]  # as the real method sets it for [CUDA, CPU]
            raise RuntimeError(CUDA_FAILURE)
        return create(session, providers, provider_options, disabled_optimizers)

    monkeypatch.setattr(collection.InferenceSession, "_create_inference_session", failing_on_cuda)


def test_cuda_failing_at_session_creation_under_auto_runs_on_the_cpu_saying_why_once_on_stderr(
    shipped_model, cuda_failing_at_session_creation, tmp_path, capfd
):
    """onnxruntime's 'EP Error … Falling back to ['CPUExecutionProvider'] and retrying.' banner went to stdout, four
    lines before classify --json's first result, and nothing said on stderr why the GPU was not used."""
    from ser_stream.cli import main

    audio = tmp_path / "good.wav"
    soundfile.write(audio, speechlike(2.5, 16000), 16000)
    assert main(["classify", "--json", "--model", str(shipped_model), str(audio)]) == 0
    printed, said = capfd.readouterr()
    assert [json.loads(line)["path"] for line in printed.splitlines()] == [str(audio)]
    assert said == f"ser-stream: warning: --provider auto: onnxruntime could not start its CUDA provider ({CUDA_FAILURE}); running on the CPU\n"


def test_cuda_asked_for_and_failing_at_session_creation_is_refused_in_one_line_naming_the_failure(
    shipped_model, cuda_failing_at_session_creation, capfd
):
    with pytest.raises(ModelError) as refused:
        EmotionModel(shipped_model, provider="cuda")
    assert str(refused.value) == f"--provider cuda: onnxruntime could not start its CUDA provider here ({CUDA_FAILURE}); use --provider auto or cpu"
    assert capfd.readouterr() == ("", "")


def test_a_model_onnxruntime_cannot_load_on_the_cpu_either_is_blamed_on_the_model_not_on_cuda(
    shipped_model, cuda_failing_at_session_creation, tmp_path
):
    model = copy_of_model(shipped_model, tmp_path)
    model.write_bytes(b"not an onnx graph")
    resealed(model)
    for provider in ("auto", "cuda"):
        with pytest.raises(ModelError, match=rf"^{re.escape(str(model))}: onnxruntime cannot load it \(.+\)$"):
            EmotionModel(model, provider=provider)


def test_a_network_whose_outputs_sum_to_1_but_go_negative_is_refused_at_load(shipped_model, monkeypatch):
    """Scores normalised by their sum, not a softmax: a 'probability' of -0.3 is none."""
    real_session = EmotionModel._session
    row = np.array([-0.3, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2], np.float32)

    class NormalisedSession:  # the shipped graph, its outputs replaced by that row
        def __init__(self, session):
            self.session = session

        def run(self, names, feeds):
            return [np.tile(row, (len(feeds["spectrogram"]), 1))]

        def __getattr__(self, name):
            return getattr(self.session, name)

    monkeypatch.setattr(EmotionModel, "_session", staticmethod(lambda *given: NormalisedSession(real_session(*given))))
    with pytest.raises(ModelError, match=r": its outputs are not probabilities \(on a test input they range -0\.3 to 0\.6 and sum to 1\); "):
        EmotionModel(shipped_model, provider="cpu")


def test_a_provider_that_is_not_auto_cpu_or_cuda_is_refused_naming_it():
    from ser_stream.inference import choose_providers

    with pytest.raises(ModelError, match="provider 'gpu' is not one of auto, cpu, cuda"):
        choose_providers("gpu")


def test_spectrograms_of_the_wrong_shape_are_refused_saying_the_shape_expected(shipped_model):
    model = EmotionModel(shipped_model, provider="cpu")
    with pytest.raises(ValueError, match=r"expected \[N, 260, 270, 1\] input, got \(1, 270, 260, 1\)"):
        model.predict(np.zeros((1, 270, 260), np.float32))
