"""Smoke training end to end: data → features → Keras → ONNX + metadata, and their parity."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ser_stream import EMOTIONS
from ser_stream.errors import ModelError, SerStreamError
from ser_stream.inference import EmotionModel
from ser_stream.model import load_metadata, metadata_path
from tests.test_model import trained_record
from training.config import TrainConfig  # no TensorFlow either
from training.recipes import RECIPES  # no TensorFlow: the recipes are plain dataclasses

pytestmark = pytest.mark.slow


def test_a_run_writes_every_artefact(smoke_run):
    for name in ("model.keras", "model.onnx", "model.json", "metrics.json", "confusion_clean.md", "confusion_clean.png", "curves.png"):
        assert (smoke_run / name).is_file(), name
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert 0.0 <= metrics["test_clean"]["mean_per_class_accuracy"] <= 1.0
    assert "| true \\ predicted | neutral | calm |" in (smoke_run / "confusion_clean.md").read_text()


def test_onnx_matches_keras_on_real_inputs(smoke_run, tiny_ravdess):
    """On windows of the bundled recording of real speech (the training clips here are generated tones), through the
    runtime's own feature path, as on the training clips' windows. Training checks each export on 16 windows of its
    own test clips (real speech in a real run) and refuses it above 1e-4."""
    import keras

    from ser_stream.audiofile import read_audio
    from ser_stream.clips import clip_spectrograms
    from ser_stream.windows import WindowConfig
    from tests.conftest import DEMO

    keras_model = keras.models.load_model(smoke_run / "model.keras")
    onnx_model = EmotionModel(smoke_run / "model.onnx", provider="cpu")
    speech = clip_spectrograms(*read_audio(DEMO), WindowConfig(2.0, 2.0))[::3]  # six windows across its 37 s
    assert len(speech) >= 5
    tones = np.concatenate([clip_spectrograms(*read_audio(path), WindowConfig()) for path in sorted(tiny_ravdess.rglob("*.wav"))[:6]])
    for inputs in (speech[..., None], tones[..., None]):
        difference = np.abs(keras_model(inputs, training=False).numpy() - onnx_model.predict(inputs))
        assert difference.max() <= 1e-4


def test_metadata_records_the_contract(smoke_run):
    metadata = load_metadata(smoke_run / "model.onnx")
    assert metadata.labels[0] == "neutral" and len(metadata.labels) == 8
    assert metadata.recipe == "paper" and metadata.protocol == "random"
    assert "CC BY-NC-SA 4.0" in metadata.licence


def test_runtime_refuses_a_model_whose_bytes_changed(smoke_run, tmp_path):
    copy = tmp_path / "model.onnx"
    shutil.copy(smoke_run / "model.onnx", copy)
    shutil.copy(metadata_path(smoke_run / "model.onnx"), metadata_path(copy))
    with open(copy, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelError, match="sha256"):
        EmotionModel(copy)


def test_runtime_refuses_a_model_trained_with_other_features(smoke_run, tmp_path):
    copy = tmp_path / "model.onnx"
    shutil.copy(smoke_run / "model.onnx", copy)
    metadata = json.loads(metadata_path(smoke_run / "model.onnx").read_text())
    metadata["features"]["n_fft"] = 1024
    metadata_path(copy).write_text(json.dumps(metadata))
    with pytest.raises(ModelError, match="different feature parameters \\(n_fft\\)"):
        EmotionModel(copy)


def test_runtime_refuses_a_model_without_metadata(smoke_run, tmp_path):
    copy = tmp_path / "model.onnx"
    shutil.copy(smoke_run / "model.onnx", copy)
    with pytest.raises(ModelError, match="metadata model.json is missing"):
        EmotionModel(copy)


def test_a_corrupt_model_file_is_refused_with_a_clear_message(tmp_path):
    from ser_stream.windows import WindowConfig
    from training.export import write_metadata

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not a protobuf")
    write_metadata(broken, WindowConfig(), "paper", "random", {}, "none")
    with pytest.raises(ModelError, match="onnxruntime cannot load it"):
        EmotionModel(broken)


def test_a_trained_network_s_onnx_file_records_the_labels_features_and_window_it_was_trained_on(smoke_run):
    from ser_stream.features import feature_parameters

    metadata = load_metadata(smoke_run / "model.onnx")
    assert trained_record(smoke_run / "model.onnx") == {"labels": list(EMOTIONS), "features": feature_parameters(), "window_seconds": metadata.window_seconds}


def test_int8_quantisation_runs_and_reports_accuracy_and_speed_side_by_side(smoke_run, tiny_ravdess, tmp_path):
    from tests.test_training_tools import held_out_copy
    from training.quantize import main as quantize_main

    out = tmp_path / "model.int8.onnx"
    assert quantize_main([str(held_out_copy(smoke_run / "model.onnx", tmp_path / "model.onnx")), "--data", str(tiny_ravdess), "--test-actors", "2",
                          "--calibration-clips", "8", "--repeats", "1", "--out", str(out)]) == 0
    report = json.loads((tmp_path / "model.int8.quantization.json").read_text())
    assert out.is_file() and report["size_bytes"]["int8"] < report["size_bytes"]["fp32"]
    assert report["clips"] == 16  # actor 2's clips, never used for calibration
    for key in ("wideband", "telephone"):
        assert 0.0 <= report[key]["int8"]["mean_per_class_accuracy"] <= 1.0
    for key in ("ms_per_window_batch1", "ms_per_window_batch32"):  # above 1: int8 is the faster
        assert report[key]["speedup"] == round(report[key]["fp32"] / report[key]["int8"], 2) > 0
    assert trained_record(out) == trained_record(smoke_run / "model.onnx")  # kept through quantisation


def clean_windows(spectrograms: np.ndarray, clips: int):
    """A FeatureSet of clean windows, split evenly among ``clips`` clips (one per emotion, one per actor)."""
    from training.dataset import FeatureSet

    windows = len(spectrograms)
    return FeatureSet(
        spectrograms=spectrograms.astype(np.float16),
        window_clip=np.repeat(np.arange(clips), windows // clips).astype(np.int32),
        window_variant=np.zeros(windows, np.int8),
        window_is_eval=np.ones(windows, bool),
        clip_labels=np.arange(clips, dtype=np.int32),
        clip_actors=np.arange(1, clips + 1, dtype=np.int32),
        clip_names=[f"clip{i}" for i in range(clips)],
    )


def test_each_epoch_draws_the_recipes_windows_of_every_clip_unless_the_command_overrides_it():
    from collections import Counter
    from pathlib import Path

    from training.recipes import RECIPES
    from training.train import TrainConfig, TrainingBatches

    clips, windows_each = 4, 3
    features = clean_windows(np.zeros((clips * windows_each, 260, 270)), clips)
    improved = RECIPES["improved"]
    assert improved.windows_per_clip == 1
    for override, expected in ((None, improved.windows_per_clip), (3, 3)):
        config = TrainConfig(data=Path("unused"), out=Path("unused"), windows_per_clip=override)
        batches = TrainingBatches(features, np.arange(clips), improved, config)
        picked_clips = Counter(int(features.window_clip[window]) for window, _ in batches.epoch_picks)
        assert picked_clips == {clip: expected for clip in range(clips)}


def test_training_images_are_frequency_warped_only_when_the_recipe_or_the_command_asks():
    from pathlib import Path

    from training.recipes import RECIPES
    from training.train import TrainConfig, TrainingBatches

    clips = 4
    rows = np.linspace(0.0, 1.0, 260, dtype=np.float32)[:, None]  # brightness rises with frequency
    features = clean_windows(np.repeat((rows * np.ones((1, 270), np.float32))[None], clips, axis=0), clips)
    improved = RECIPES["improved"]
    for override, warped in ((0.0, False), (0.1, True)):
        config = TrainConfig(data=Path("unused"), out=Path("unused"), frequency_warp=override)
        images, _, _ = TrainingBatches(features, np.arange(clips), improved, config)[0]
        unchanged = np.allclose(images[..., 0], features.spectrograms.astype(np.float32), atol=1e-3)
        assert unchanged is not warped, override


def test_the_spectral_mean_channel_keeps_the_input_and_adds_it_with_each_frequencys_window_mean_removed():
    from training.network import SpectralMeanChannel, build_model
    from training.recipes import RECIPES

    rng = np.random.default_rng(0)
    spectrograms = rng.random((2, 260, 270, 1), dtype=np.float32)
    spectrograms[1, 40] += 0.5  # one speaker's voice: a louder band all window long
    channels = SpectralMeanChannel()(spectrograms).numpy()
    assert channels.shape == (2, 260, 270, 2)
    np.testing.assert_array_equal(channels[..., 0], spectrograms[..., 0])
    np.testing.assert_allclose(channels[..., 1].mean(axis=2), 0.0, atol=1e-5)
    np.testing.assert_allclose(channels[1, 40, :, 1], spectrograms[1, 40, :, 0] - spectrograms[1, 40, :, 0].mean(), atol=1e-5)
    model = build_model(RECIPES["improved-cmn"])
    assert model.input_shape == (None, 260, 270, 1) and model.output_shape == (None, 8)
    assert not any(isinstance(layer, SpectralMeanChannel) for layer in build_model(RECIPES["improved"]).layers)


def test_style_mixing_recolours_training_examples_with_a_partners_statistics_and_is_the_identity_otherwise():
    from training.network import StyleMixing, build_model
    from training.recipes import RECIPES

    rng = np.random.default_rng(0)
    spectrograms = rng.random((16, 260, 270, 1), dtype=np.float32) * rng.uniform(0.2, 1.0, (16, 260, 1, 1)).astype(np.float32)
    mixing = StyleMixing(axes=(2, 3), probability=1.0, seed=0)
    np.testing.assert_array_equal(mixing(spectrograms, training=False).numpy(), spectrograms)
    mixing.enabled = False  # while batch norm is re-estimated
    np.testing.assert_array_equal(mixing(spectrograms, training=True).numpy(), spectrograms)
    mixing.enabled = True
    restyled = mixing(spectrograms, training=True).numpy()
    own_mean, own_spread = spectrograms.mean(axis=2), spectrograms.std(axis=2)
    new_mean, new_spread = restyled.mean(axis=2), restyled.std(axis=2)
    assert not np.allclose(new_mean, own_mean, atol=1e-3)  # each row's colour is changed ...
    # ... to a blend of its own and one other example's, row by row: between the batch's extremes
    assert np.all(new_mean >= own_mean.min(axis=0) - 1e-4) and np.all(new_mean <= own_mean.max(axis=0) + 1e-4)
    assert np.all(new_spread <= own_spread.max(axis=0) + 1e-3)
    centred = (spectrograms - spectrograms.mean(axis=2, keepdims=True)) / spectrograms.std(axis=2, keepdims=True)
    np.testing.assert_allclose((restyled - new_mean[:, :, None]) / new_spread[:, :, None], centred, atol=2e-3)  # the shape kept
    frequency_mixing = build_model(RECIPES["improved-freqmix"]).get_layer("frequency_style_mixing")
    frequency_mixing.probability = 1.0  # the recipe's mixing too recolours each frequency row, keeping its shape in time
    restyled = frequency_mixing(spectrograms, training=True).numpy()
    new_mean, new_spread = restyled.mean(axis=2), restyled.std(axis=2)
    assert not np.allclose(new_mean, own_mean, atol=1e-3)
    np.testing.assert_allclose((restyled - new_mean[:, :, None]) / new_spread[:, :, None], centred, atol=2e-3)
    never = StyleMixing(axes=(2, 3), probability=0.0, seed=0)
    np.testing.assert_allclose(never(spectrograms, training=True).numpy(), spectrograms, atol=1e-6)
    for recipe, count in (("improved-freqmix", 1), ("improved-mixstyle", 2), ("improved", 0)):
        model = build_model(RECIPES[recipe])
        assert sum(isinstance(layer, StyleMixing) for layer in model.layers) == count, recipe
        assert model.input_shape == (None, 260, 270, 1) and model.output_shape == (None, 8)


def test_a_recipe_without_cosine_decay_trains_at_its_constant_learning_rate():
    from training.train import learning_rate_for

    assert learning_rate_for(RECIPES["paper"], epochs=500, steps_per_epoch=30) == 1e-3


def test_the_sgd_recipe_trains_by_sgd_with_nesterov_momentum_and_nothing_else_changes():
    import keras

    from training.train import make_optimizer

    optimizer = make_optimizer(RECIPES["improved-sgd"], 0.05)
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.nesterov and optimizer.momentum == 0.9
    assert replace(RECIPES["improved-sgd"], name="improved", sgd_momentum=0.0, learning_rate=2e-3) == RECIPES["improved"]


def test_weight_decay_shrinks_kernels_only_and_a_reloaded_checkpoint_still_spares_the_rest(tmp_path):
    import keras

    from training.train import make_optimizer, spare_from_decay

    assert isinstance(make_optimizer(RECIPES["improved"], 1e-3), keras.optimizers.Adam)  # no decay: plain Adam

    def one_zero_gradient_step(model, optimizer):
        before = {weight.path: weight.numpy().copy() for weight in model.trainable_weights}
        optimizer.apply_gradients([(keras.ops.zeros_like(weight), weight) for weight in model.trainable_weights])
        return {weight.path: (before[weight.path], weight.numpy()) for weight in model.trainable_weights}

    def check(changes):  # a zero gradient moves nothing but the decay: kernels × (1 − lr × 0.5), the rest kept
        for path, (before, after) in changes.items():
            factor = 1 - 0.1 * 0.5 if path.endswith("kernel") else 1.0
            np.testing.assert_allclose(after, before * factor, rtol=1e-6, err_msg=path)

    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3), keras.layers.BatchNormalization(), keras.layers.Flatten(), keras.layers.Dense(3)])
    for weight in model.trainable_weights:
        weight.assign(np.full(weight.shape, 0.5, dtype=np.float32))
    optimizer = make_optimizer(RECIPES["improved-wd"], 0.1)
    model.compile(optimizer=optimizer, loss="mse")
    check(one_zero_gradient_step(model, optimizer))
    model.save(tmp_path / "last.keras")
    reloaded = keras.models.load_model(tmp_path / "last.keras")
    spare_from_decay(reloaded.optimizer)
    check(one_zero_gradient_step(reloaded, reloaded.optimizer))


def test_an_ensemble_outputs_the_mean_of_its_members_and_keeps_the_runtime_contract(members, tiny_ravdess, tmp_path):
    from training.ensemble import demo_inputs
    from training.ensemble import main as ensemble_main
    from training.score import main as score_main

    report = tmp_path / "fold.json"
    assert score_main(["--data", str(tiny_ravdess), "--actors", "2", "--model", str(members[0]), "--model", str(members[1]), "--out", str(report)]) == 0
    merged = tmp_path / "ensemble.onnx"
    assert ensemble_main([*map(str, members), "--to", str(merged), "--evidence", str(report)]) == 0

    inputs = demo_inputs()
    outputs = [EmotionModel(path, provider="cpu").predict(inputs) for path in members]
    assert np.abs(outputs[0] - outputs[1]).max() > 0.01  # the members really differ
    together = EmotionModel(merged, provider="cpu")
    assert np.abs(together.predict(inputs) - np.mean(outputs, axis=0)).max() <= 1e-5
    metadata = together.metadata
    assert [m["sha256"] for m in metadata.metrics["members"]] == [load_metadata(m).sha256 for m in members]
    held_out = metadata.metrics["held_out_evaluations"]["actors-02"]
    assert held_out["test_clean"]["clips"] == 16 and 0.0 <= held_out["test_clean"]["mean_per_class_accuracy"] <= 1.0
    assert trained_record(merged) == trained_record(members[0]) == trained_record(members[1])


def test_an_ensemble_unpacks_into_members_that_regrow_it(shipped_model, tmp_path):
    from training.ensemble import demo_inputs
    from training.ensemble import main as ensemble_main

    listed = load_metadata(shipped_model).metrics["members"]
    assert ensemble_main([str(shipped_model), "--unpack", str(tmp_path / "members")]) == 0
    members = sorted((tmp_path / "members").glob("member*.onnx"))
    assert [m.name for m in members] == [f"member{i}.onnx" for i in range(len(listed))]
    for index, (member, summary) in enumerate(zip(members, listed)):
        metadata = load_metadata(member)  # hash and feature contract hold for each file on its own
        assert metadata.recipe == summary["recipe"] and metadata.metrics["held_out_evaluations"] == summary["held_out_evaluations"]
        assert metadata.metrics["unpacked_from"]["member"] == index and metadata.metrics["unpacked_from"]["sha256"] == summary["sha256"]
        assert trained_record(member) == trained_record(shipped_model)

    inputs = demo_inputs()
    outputs = [EmotionModel(member, provider="cpu").predict(inputs) for member in members]
    assert min(np.abs(a - b).max() for a, b in itertools.combinations(outputs, 2)) > 0.01  # each is a different network
    regrown = tmp_path / "regrown.onnx"
    assert ensemble_main([*map(str, members), "--to", str(regrown)]) == 0
    assert np.abs(EmotionModel(regrown, provider="cpu").predict(inputs) - EmotionModel(shipped_model, provider="cpu").predict(inputs)).max() <= 1e-5
    regrown_members = load_metadata(regrown).metrics["members"]
    assert regrown_members[0]["unpacked_from"]["file"] == listed[0]["file"]
    assert [member["held_out_evaluations"] for member in regrown_members] == [summary["held_out_evaluations"] for summary in listed]


def test_unpacking_a_single_network_is_refused_in_one_line(smoke_run, tmp_path, capsys):
    from training.ensemble import main as ensemble_main

    with pytest.raises(SystemExit) as stopped:
        ensemble_main([str(smoke_run / "model.onnx"), "--unpack", str(tmp_path / "members")])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "not an ensemble" in error and str(smoke_run / "model.onnx") in error
    assert not (tmp_path / "members").exists()


def test_an_ensemble_refuses_members_that_cut_windows_differently(smoke_run, shipped_model, tmp_path, capsys):
    from tests.test_training_tools import model_copy
    from training.ensemble import main as ensemble_main

    other = model_copy(smoke_run / "model.onnx", tmp_path / "other.onnx", window_seconds=1.5)  # a network of 1.5 s windows
    with pytest.raises(SystemExit) as stopped:
        ensemble_main([str(shipped_model), str(other), "--to", str(tmp_path / "ensemble.onnx")])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and str(other) in error and "window 1.5 s" in error
    assert not (tmp_path / "ensemble.onnx").exists()


def test_an_ensemble_refuses_members_that_hop_differently(members, tmp_path, capsys):
    """The merged model cuts its windows at one hop: a member judged at another is not the network it was judged as."""
    from tests.conftest import refusal
    from tests.test_training_tools import model_copy

    other_hop = model_copy(members[1], tmp_path / "other-hop.onnx", hop_seconds=0.25)
    line = refusal("training.ensemble", [str(members[0]), str(other_hop), "--to", str(tmp_path / "ensemble.onnx")], capsys)
    assert line == (f"python -m training.ensemble: error: {other_hop}: window 2.0 s / hop 0.25 s differs from {members[0]}'s 2.0 s / "
                    "0.5 s; an ensemble needs one window")
    assert not (tmp_path / "ensemble.onnx").exists()


def test_shipping_a_model_in_place_replaces_its_evidence_and_keeps_its_bytes(smoke_run, tmp_path):
    from training.ship import main as ship_main

    model = tmp_path / "ser_cnn.onnx"
    shutil.copy(smoke_run / "model.onnx", model)
    shutil.copy(metadata_path(smoke_run / "model.onnx"), metadata_path(model))
    before = load_metadata(model)
    assert ship_main([str(model), "--to", str(model), "--evidence", str(smoke_run / "metrics.json")]) == 0
    after = load_metadata(model)
    assert after.sha256 == before.sha256
    evidence = after.metrics["held_out_evaluations"]["random"]
    assert evidence["test_clean"] == json.loads((smoke_run / "metrics.json").read_text())["test_clean"]
    assert evidence["training"]["epochs"] == 2


def test_an_ensemble_refuses_evidence_that_is_not_a_score_report(smoke_run, shipped_model, tmp_path, capsys):
    from training.ensemble import main as ensemble_main

    report = tmp_path / "metrics.json"
    shutil.copy(smoke_run / "metrics.json", report)  # a training run's metrics, not a training.score report
    with pytest.raises(SystemExit) as stopped:
        ensemble_main([str(shipped_model), str(smoke_run / "model.onnx"), "--to", str(tmp_path / "ensemble.onnx"), "--evidence", str(report)])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and str(report) in error and "not a training.score report" in error
    assert list(tmp_path.glob("ensemble*")) == []


def test_shipping_refuses_evidence_that_is_not_a_runs_metrics(smoke_run, tmp_path, capsys):
    from training.ship import main as ship_main

    model = tmp_path / "ser_cnn.onnx"
    shutil.copy(smoke_run / "model.onnx", model)
    shutil.copy(metadata_path(smoke_run / "model.onnx"), metadata_path(model))
    before = metadata_path(model).read_text()
    evidence = tmp_path / "notes.json"
    evidence.write_text("not json")
    with pytest.raises(SystemExit) as stopped:
        ship_main([str(model), "--to", str(model), "--evidence", str(evidence)])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and str(evidence) in error and "not a training run's metrics.json" in error
    assert metadata_path(model).read_text() == before


def test_a_warm_restart_starts_each_split_from_the_earlier_runs_model_and_records_it(smoke_run, tiny_ravdess, tmp_path):
    import keras

    from training.__main__ import main

    out = tmp_path / "restart"
    # No further epochs: the run must export exactly the weights it started from.
    assert main(["--data", str(tiny_ravdess), "--out", str(out), "--recipe", "paper", "--protocol", "random", "--epochs", "0", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache"), "--init-from", str(smoke_run.parent)]) == 0
    earlier, restarted = (keras.models.load_model(folder / "model.keras", compile=False) for folder in (smoke_run, out / "random"))
    for earlier_weights, restarted_weights in zip(earlier.get_weights(), restarted.get_weights(), strict=True):
        np.testing.assert_array_equal(earlier_weights, restarted_weights)
    training = json.loads((out / "random" / "metrics.json").read_text())["training"]
    assert training["initialised_from"] == str(smoke_run) and training["earlier_epochs"] == 2


def test_a_warm_restart_refuses_an_earlier_run_without_the_split_before_training(smoke_run, tiny_ravdess, tmp_path, capsys):
    from training.__main__ import main

    out = tmp_path / "restart"
    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(tiny_ravdess), "--out", str(out), "--protocol", "all", "--cache-dir", str(tmp_path / "cache"), "--init-from", str(smoke_run.parent)])
    assert stopped.value.code == 2
    missing = smoke_run.parent / "all" / "model.keras"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m training: error: --init-from {smoke_run.parent}: no model for split all ({missing} is missing)"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda run: (run / "checkpoints" / "state.json").write_text("[]"), "{state}: not a run's checkpoint state (not a JSON object)"),
        (lambda run: (run / "checkpoints" / "state.json").write_text('{"epoch": "two", "history": {}}'), "{state}: not a run's checkpoint state ('epoch' is not a count of epochs)"),
        (lambda run: (run / "checkpoints" / "state.json").write_text('{"epoch": 2, "history": {"loss": "low"}}'), "{state}: not a run's checkpoint state ('history' is not lists of numbers by metric)"),
        (lambda run: (run / "checkpoints" / "state.json").write_bytes(b'{"epoch": 2, "hist'), "{state}: not a run's checkpoint state (not valid JSON)"),
    ],
    ids=["not-an-object", "epoch-not-a-count", "history-not-numbers", "truncated"],
)
def test_a_resume_from_a_damaged_checkpoint_state_is_one_line_naming_the_file(smoke_run, tiny_ravdess, tmp_path, capsys, damage, reason):
    import shutil

    from training.__main__ import main

    out = tmp_path / "run"
    shutil.copytree(smoke_run, out / "random")
    damage(out / "random")
    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(tiny_ravdess), "--out", str(out), "--recipe", "paper", "--protocol", "random", "--epochs", "3", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache"), "--resume"])
    assert stopped.value.code == 2
    state = out / "random" / "checkpoints" / "state.json"
    assert capsys.readouterr().err.splitlines()[-1] == f"python -m training: error: {reason.format(state=state)}"


@pytest.mark.parametrize(
    ("metrics_text", "reason"),
    [
        ('{"epochs_run": "2"}', "not a training run's metrics.json ('epochs_run' is not a count of epochs)"),
        ('{"split": "random"}', "not a training run's metrics.json (no 'epochs_run' key)"),
        ('{"epochs_run": 2', "not a training run's metrics.json (not valid JSON)"),
    ],
    ids=["epochs-not-a-count", "no-epochs", "truncated"],
)
def test_a_warm_restart_refuses_an_earlier_run_whose_metrics_do_not_count_its_epochs(smoke_run, tiny_ravdess, tmp_path, capsys, metrics_text, reason):
    import shutil

    from training.__main__ import main

    earlier = tmp_path / "earlier"
    shutil.copytree(smoke_run, earlier / "random")
    metrics_path = earlier / "random" / "metrics.json"
    metrics_path.write_text(metrics_text)
    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(tiny_ravdess), "--out", str(tmp_path / "restart"), "--recipe", "paper", "--protocol", "random", "--epochs", "0", "--cache-dir", str(tmp_path / "cache"), "--init-from", str(earlier)])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"python -m training: error: --init-from {earlier}: {metrics_path}: {reason}"


def test_scoring_at_another_hop_cuts_that_many_windows_and_an_ensemble_refuses_it_as_evidence(smoke_run, members, tiny_ravdess, tmp_path, capsys):
    from dataclasses import replace

    import soundfile

    from tests.conftest import speechlike
    from training.ensemble import main as ensemble_main
    from training.score import clip_inputs
    from training.score import main as score_main

    model = EmotionModel(smoke_run / "model.onnx", provider="cpu")
    clip = tmp_path / "five-seconds.wav"
    soundfile.write(clip, speechlike(5.0, 16000), 16000)
    own_window = model.metadata.window
    finer_window = replace(own_window, hop_seconds=own_window.hop_seconds / 2)
    own, finer = (clip_inputs(clip, window, "clean", seed=0) for window in (own_window, finer_window))
    assert len(finer) > len(own) > 2
    assert all(any(np.array_equal(window, other) for other in finer) for window in own)  # the finer hop sees every window the model's does

    report = tmp_path / "fold-finer-hop.json"
    assert score_main(["--data", str(tiny_ravdess), "--actors", "2", "--variants", "clean", "--hop", "0.25", "--model", str(members[0]), "--model", str(members[1]), "--out", str(report)]) == 0
    assert json.loads(report.read_text())["hop_seconds"] == 0.25
    with pytest.raises(SystemExit) as stopped:
        ensemble_main([*map(str, members), "--to", str(tmp_path / "ensemble.onnx"), "--evidence", str(report)])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and str(report) in error and "0.25 s hop" in error


def test_test_time_views_add_the_windows_of_each_view_of_the_clip_and_the_report_names_them(smoke_run, tiny_ravdess, tmp_path):
    import soundfile

    from tests.conftest import speechlike
    from tests.test_training_tools import held_out_copy
    from training.augment import frequency_warp
    from training.score import clip_inputs
    from training.score import main as score_main

    clip = tmp_path / "twelve-seconds.wav"
    soundfile.write(clip, speechlike(12.0, 16000), 16000)
    window = EmotionModel(smoke_run / "model.onnx", provider="cpu").metadata.window
    own = clip_inputs(clip, window, "clean", seed=0)
    slower, faster = (clip_inputs(clip, window, "clean", seed=0, views=(view,))[len(own):] for view in ("slower", "faster"))
    assert len(slower) > len(own) > len(faster)  # 5 % slower is 5 % longer: more windows at the same hop
    lower_higher = clip_inputs(clip, window, "clean", seed=0, views=("lower", "higher"))
    assert len(lower_higher) == 3 * len(own)
    np.testing.assert_array_equal(lower_higher[: len(own)], own)  # the clip as heard comes first, unchanged
    np.testing.assert_array_equal(lower_higher[len(own) : 2 * len(own)], [frequency_warp(image, 0.95) for image in own])
    line = clip_inputs(clip, window, "clean", seed=0, views=("telephone",))[len(own):]
    below_200_hz = slice(0, 13)  # rows 15.4 Hz apart; the line's band starts at 300 Hz
    assert line.shape == own.shape and line[:, below_200_hz].mean() < 0.75 * own[:, below_200_hz].mean()

    report = tmp_path / "views.json"
    assert score_main(["--data", str(tiny_ravdess), "--actors", "2", "--variants", "clean", "--test-time", "slower", "faster", "--model", str(held_out_copy(smoke_run / "model.onnx", tmp_path / "model.onnx")), "--out", str(report)]) == 0
    written = json.loads(report.read_text())
    assert written["test_time_views"] == ["slower", "faster"]
    assert all(len(clip["window_probabilities"]) >= 3 for clip in written["clean_clips"])


def test_removing_speaker_profiles_leaves_every_speaker_the_mean_profile_and_keeps_what_moves_within_a_speaker():
    from training.dataset import FeatureSet, remove_speaker_profiles

    rng = np.random.default_rng(0)
    rows = np.linspace(0.2, 0.6, 260, dtype=np.float32)[:, None]
    voices = {1: rows + 0.1, 2: rows - 0.1}  # two speakers' average spectra
    emotion = rng.uniform(-0.05, 0.05, (6, 260, 270)).astype(np.float32)  # what differs from window to window
    clip_actors = np.array([1, 1, 1, 2, 2, 2], dtype=np.int32)
    spectrograms = np.stack([voices[actor] + emotion[i] for i, actor in enumerate(clip_actors)]).astype(np.float16)
    features = FeatureSet(
        spectrograms=spectrograms.copy(), window_clip=np.arange(6, dtype=np.int32), window_variant=np.zeros(6, np.int8),
        window_is_eval=np.ones(6, bool), clip_labels=np.zeros(6, np.int32), clip_actors=clip_actors, clip_names=[str(i) for i in range(6)],
    )
    remove_speaker_profiles(features)
    profiles = [features.spectrograms[clip_actors == actor].astype(np.float32).mean(axis=(0, 2)) for actor in (1, 2)]
    np.testing.assert_allclose(profiles[0], profiles[1], atol=2e-3)  # the voices' difference is gone
    np.testing.assert_allclose(profiles[0], rows[:, 0], atol=4e-3)  # the mean voice is what is left (float16 rounding)
    within = features.spectrograms[1].astype(np.float32) - features.spectrograms[0].astype(np.float32)
    np.testing.assert_allclose(within, spectrograms[1].astype(np.float32) - spectrograms[0].astype(np.float32), atol=2e-3)


def test_a_recipe_that_needs_every_clip_of_a_speaker_cannot_train_a_model_to_ship():
    from pathlib import Path

    from training.config import TrainConfig, TrainConfigError

    with pytest.raises(TrainConfigError, match="^recipe: improved-spknorm needs each speaker's profile"):
        TrainConfig(data=Path("unused"), out=Path("unused"), recipe="improved-spknorm", protocol="all", keep="last")


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_builds_the_runtime_contract_with_the_papers_three_convolutions_at_its_widths(name):
    import keras

    from training.network import build_model

    recipe = RECIPES[name]
    model = build_model(recipe)
    assert model.input_shape == (None, 260, 270, 1) and model.output_shape == (None, 8)
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.filters for layer in convolutions] == list(recipe.filters) and all(layer.kernel_size == (5, 5) for layer in convolutions)
    assert convolutions[0].strides == (recipe.first_stride,) * 2 and all(layer.strides == (1, 1) for layer in convolutions[1:])
    assert RECIPES["paper"].filters == (32, 64, 32)  # as published


def layer_plan(model) -> list[tuple]:
    """Each layer of ``model`` after its input, with the settings a paper would give for it."""
    import keras

    plan: list[tuple] = []
    for layer in model.layers[1:]:
        if isinstance(layer, keras.layers.Conv2D):
            plan.append(("conv", layer.filters, layer.kernel_size, layer.strides, layer.padding))
        elif isinstance(layer, keras.layers.BatchNormalization):
            plan.append(("batch norm", layer.momentum))
        elif isinstance(layer, keras.layers.Activation):
            plan.append((layer.get_config()["activation"],))
        elif isinstance(layer, keras.layers.MaxPooling2D):
            plan.append(("max pool", layer.pool_size, layer.strides))
        elif isinstance(layer, keras.layers.Dropout):
            plan.append(("dropout", layer.rate))
        elif isinstance(layer, keras.layers.Dense):
            plan.append(("dense", layer.units, layer.get_config()["activation"]))
        else:
            plan.append((type(layer).__name__,))
    return plan


def test_the_papers_network_is_three_blocks_of_unpadded_5x5_convolution_relu_and_5x5_pooling_by_3_then_dropout_dense_dropout_softmax():
    """As published (dense width not given: 128). The improved recipe adds batch norm (momentum 0.9) before each ReLU
    and strides its first convolution by 2."""
    from training.network import build_model

    def block(filters: int, stride: int, batch_norm: bool) -> list[tuple]:
        return [("conv", filters, (5, 5), (stride, stride), "valid"), *([("batch norm", 0.9)] if batch_norm else []), ("relu",), ("max pool", (5, 5), (3, 3))]

    head = [("Flatten",), ("dropout", 0.25), ("dense", 128, "relu"), ("dropout", 0.5), ("dense", len(EMOTIONS), "softmax")]
    assert layer_plan(build_model(RECIPES["paper"])) == [*block(32, 1, False), *block(64, 1, False), *block(32, 1, False), *head]
    assert layer_plan(build_model(RECIPES["improved"])) == [*block(32, 2, True), *block(64, 1, True), *block(32, 1, True), *head]


def test_a_networks_seed_draws_its_starting_weights_the_same_every_time_and_another_seed_draws_others():
    from training.network import build_model

    def weights(seed: int) -> list[np.ndarray]:
        return build_model(RECIPES["improved-narrow"], seed=seed).get_weights()

    first, again, other = weights(0), weights(0), weights(1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_mel_rows_give_low_frequencies_more_rows_keep_values_in_range_and_export_with_parity(tmp_path):
    from ser_stream.windows import WindowConfig
    from training.export import export_onnx, parity
    from training.network import MelFrequencyRows, build_model, mel_rows_matrix
    from training.recipes import RECIPES

    weights = mel_rows_matrix()
    assert weights.shape == (260, 260) and (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)  # every row a weighted mean: [0, 1] stays [0, 1]
    row_hz = (weights * np.arange(260)).sum(axis=1) * 8000 / 520
    assert np.all(np.diff(row_hz) > 0) and row_hz[0] < 5 and row_hz[-1] > 3950
    assert (row_hz < 1000).sum() > 1.7 * 65  # linear rows below 1 kHz: 65

    spectrograms = np.zeros((2, 260, 270, 1), np.float32)
    spectrograms[0] = 0.4  # flat: stays flat
    spectrograms[1, 13] = 1.0  # a 200 Hz tone: lands on the mel row centred nearest 200 Hz
    rows = MelFrequencyRows()(spectrograms).numpy()
    np.testing.assert_allclose(rows[0], 0.4, atol=1e-6)
    assert rows[1, :, 0, 0].argmax() == np.abs(row_hz - 200.0).argmin()
    assert 0.0 <= rows.min() and rows.max() <= 1.0

    model = build_model(RECIPES["improved-mel"])
    assert model.input_shape == (None, 260, 270, 1) and model.output_shape == (None, 8)
    export_onnx(model, tmp_path / "mel.onnx", WindowConfig())
    assert parity(model, tmp_path / "mel.onnx", np.random.default_rng(0).random((4, 260, 270, 1), dtype=np.float32)) <= 1e-4
    assert not any(isinstance(layer, MelFrequencyRows) for layer in build_model(RECIPES["improved"]).layers)


@pytest.mark.parametrize(
    "options, reason",
    [
        (["--recipe", "improved"], "random was trained as recipe 'paper', this run trains 'improved'; start from a run of the same recipe"),
        (["--recipe", "paper", "--window", "1.5"], "random was trained on 2.0 s windows, this run cuts 1.5 s; start from a run of the same --window"),
    ],
    ids=["other-recipe", "other-window"],
)
def test_a_warm_restart_from_an_earlier_run_of_another_recipe_or_window_is_refused_in_one_line(smoke_run, tiny_ravdess, tmp_path, capsys, options, reason):
    """An earlier run of another window length, or of a recipe with the same weights' shapes, was once loaded all the same."""
    from training.__main__ import main

    with pytest.raises(SystemExit) as stopped:  # smoke_run trained the paper network on 2 s windows
        main(["--data", str(tiny_ravdess), "--out", str(tmp_path / "restart"), "--protocol", "random", "--epochs", "1", "--cache-dir", str(tmp_path / "cache"), "--init-from", str(smoke_run.parent), *options])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"python -m training: error: --init-from {smoke_run.parent}: {reason}"
    assert not (tmp_path / "restart").exists()


def test_a_warm_restart_refuses_an_earlier_model_of_another_network(smoke_run, tiny_ravdess, tmp_path, capsys):
    from training.__main__ import main

    earlier = tmp_path / "earlier"
    shutil.copytree(smoke_run, earlier / "random")
    metrics = json.loads((earlier / "random" / "metrics.json").read_text())
    (earlier / "random" / "metrics.json").write_text(json.dumps({key: value for key, value in metrics.items() if key != "recipe"}))  # as older runs
    with pytest.raises(SystemExit) as stopped:  # smoke_run trained the paper network, without batch norm
        main(["--data", str(tiny_ravdess), "--out", str(tmp_path / "restart"), "--recipe", "improved", "--protocol", "random", "--epochs", "1", "--cache-dir", str(tmp_path / "cache"), "--init-from", str(earlier)])
    assert stopped.value.code == 2
    message = capsys.readouterr().err.splitlines()[-1]
    assert message.startswith(f"python -m training: error: --init-from {earlier}: {earlier / 'random' / 'model.keras'} is not a network of recipe improved")


@pytest.fixture(scope="module")
def two_actor_report(smoke_run, tiny_ravdess, tmp_path_factory):
    """The smoke model scored on actors 1 and 2 by ``training.score``: the report's path."""
    from tests.test_training_tools import held_out_copy
    from training.score import main as score_main

    folder = tmp_path_factory.mktemp("score")
    report_path = folder / "two-actors.json"
    model = held_out_copy(smoke_run / "model.onnx", folder / "model.onnx")
    assert score_main(["--data", str(tiny_ravdess), "--actors", "1", "2", "--variants", "clean", "--model", str(model), "--out", str(report_path)]) == 0
    return report_path


def test_a_score_report_breaks_the_held_out_clips_down_by_actor(two_actor_report):
    report = json.loads(two_actor_report.read_text())
    by_actor = report["clean_by_actor"]
    assert sorted(by_actor) == ["01", "02"] and [by_actor[a]["clips"] for a in ("01", "02")] == [16, 16]
    correct = sum(scores["accuracy"] * scores["clips"] for scores in by_actor.values())
    assert correct == pytest.approx(report["clean"]["accuracy"] * report["clean"]["clips"])


def test_a_score_report_keeps_every_clips_window_outputs_and_they_reproduce_its_scores(two_actor_report):
    from training.calibrate import fold_scores, read_report

    report_path = two_actor_report
    report = json.loads(report_path.read_text())
    assert len(report["clean_clips"]) == 32 and all(len(clip["window_probabilities"][0]) == 8 for clip in report["clean_clips"])
    rescored = fold_scores(read_report(report_path, "clean"), np.zeros(8))  # unit weights: the network's own outputs
    assert rescored["accuracy"] == pytest.approx(report["clean"]["accuracy"])
    assert rescored["mean_per_class_accuracy"] == pytest.approx(report["clean"]["mean_per_class_accuracy"])


def test_folds_balanced_by_voice_hold_out_as_many_men_as_women_and_every_actor_once():
    from pathlib import Path

    from training.train import TrainConfig, make_splits

    features = clean_windows(np.zeros((20, 260, 270)), 20)  # one clip for each of actors 1-20
    for balance_voices in (False, True):
        config = TrainConfig(data=Path("unused"), out=Path("unused"), balance_voices=balance_voices)
        splits = make_splits(features, config)
        held_out = [features.clip_actors[split.test] for split in splits]
        assert sorted(np.concatenate(held_out)) == list(range(1, 21))
        for split in splits:
            assert not set(split.train) & (set(split.test) | set(split.validation)) and len(split.train) == 14
        if balance_voices:
            for split, actors in zip(splits, held_out):
                assert sorted(actors % 2) == [0, 0, 1, 1]  # odd-numbered RAVDESS actors are male
                assert sorted(features.clip_actors[split.validation] % 2) == [0, 1]
    default = make_splits(features, TrainConfig(data=Path("unused"), out=Path("unused")))
    assert [s.name for s in default][2] == "fold2-actors-01-09-11-13"  # the folds of every run so far, unchanged


@pytest.mark.parametrize("balance_voices", [False, True])
def test_a_fold_is_the_same_split_whether_it_alone_or_every_fold_is_trained(balance_voices):
    """An all-folds run once drew each fold's validation speakers after the folds before it: its "fold2" trained and
    validated on other speakers than `--fold 2` (every documented run's) did, under the same name."""
    from pathlib import Path

    from training.train import TrainConfig, make_splits

    features = clean_windows(np.zeros((20, 260, 270)), 20)  # one clip for each of actors 1-20
    every = make_splits(features, TrainConfig(data=Path("unused"), out=Path("unused"), balance_voices=balance_voices))
    for fold, split in enumerate(every):
        (alone,) = make_splits(features, TrainConfig(data=Path("unused"), out=Path("unused"), balance_voices=balance_voices, fold=fold))
        assert alone.name == split.name
        for part in ("train", "validation", "test"):
            assert np.array_equal(getattr(alone, part), getattr(split, part)), (fold, part)
    if not balance_voices:  # `--fold 2`'s split as every run so far trained it
        assert every[2].name == "fold2-actors-01-09-11-13" and sorted(features.clip_actors[every[2].validation]) == [12, 17]


def test_a_random_split_that_leaves_nothing_to_test_is_refused_in_one_line():
    """One clip of each emotion once trained, scored nothing and exported a model without a word."""
    from pathlib import Path

    from training.train import TrainConfig, make_splits

    features = clean_windows(np.zeros((8, 260, 270)), 8)  # one clip of each emotion
    with pytest.raises(SerStreamError) as refused:
        make_splits(features, TrainConfig(data=Path("unused"), out=Path("unused"), protocol="random"))
    assert str(refused.value) == "--protocol random: 8 clips leave none to test on (a quarter of each emotion's, rounded); give at least 3 clips of an emotion"


def test_a_random_split_deals_each_emotion_a_shuffled_quarter_to_test_a_tenth_of_the_rest_to_validate_and_every_clip_once():
    """The paper's protocol (docs/results.md), drawn alike by training and ``training.score --random-split``."""
    from training.dataset import random_split

    labels = np.concatenate([np.full(96 if emotion == 0 else 192, emotion) for emotion in range(len(EMOTIONS))])  # RAVDESS's counts
    test_sets = set()
    for seed in range(3):
        split = random_split(labels, seed)
        parts = [set(split[part].tolist()) for part in ("train", "validation", "test")]
        assert sum(map(len, parts)) == len(labels) and set.union(*parts) == set(range(len(labels)))  # no clip in two parts, none left out
        for emotion in range(len(EMOTIONS)):
            clips = int(np.sum(labels == emotion))
            tested = int(np.sum(labels[split["test"]] == emotion))
            assert tested == round(clips * 0.25), (seed, emotion)
            assert np.sum(labels[split["validation"]] == emotion) == round((clips - tested) * 0.1), (seed, emotion)
        test_sets.add(tuple(split["test"].tolist()))
    assert len(test_sets) == 3  # each seed draws its own quarter, not the first in file order


def test_a_random_split_rounds_each_emotions_quarter_and_the_tenth_of_its_rest_to_the_nearest_clip_and_lists_each_part_sorted():
    """RAVDESS's counts (multiples of 4) need no rounding; the counts left when clips are left out (unreadable,
    silent) do, and a quarter or a tenth cut down (or up) instead of rounded tested or validated on other clips."""
    from training.dataset import random_split

    labels = np.repeat(np.arange(len(EMOTIONS)), [3, 5, 8, 9, 11, 13, 15, 17])
    split = random_split(labels, 0)
    assert [int(np.sum(labels[split["test"]] == emotion)) for emotion in range(len(EMOTIONS))] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert [int(np.sum(labels[split["validation"]] == emotion)) for emotion in range(len(EMOTIONS))] == [0, 0, 1, 1, 1, 1, 1, 1]
    assert all(np.all(np.diff(indices) > 0) for indices in split.values())  # clip indices in order


def test_a_random_split_of_a_seed_is_the_one_every_run_so_far_drew_with_it():
    """Models record the test clips they were scored on; a split drawn otherwise for the same seed would make
    ``training.score --random-split`` refuse every model trained before."""
    from training.dataset import random_split

    labels = np.concatenate([np.full(96 if emotion == 0 else 192, emotion) for emotion in range(len(EMOTIONS))])  # RAVDESS's counts
    assert random_split(labels, 0)["test"][:8].tolist() == [5, 8, 9, 10, 11, 13, 16, 19]


def write_tone(path: Path, samples: int) -> Path:
    """A clip of steady sound at the canonical rate, so trimming keeps every one of its ``samples``."""
    import soundfile

    seconds = np.arange(samples) / 8000
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 220 * seconds) + 0.1 * np.sin(2 * np.pi * 1300 * seconds)).astype(np.float32), 8000, subtype="FLOAT")
    return path


def test_training_trains_on_a_finer_hop_but_scores_each_clip_on_the_windows_classify_cuts_a_short_clip_on_its_one_window(tmp_path):
    """4.00025 s: the last window starts 16002 samples in, 2.00025 s, which does not come back from seconds to
    samples by truncation; 1.5 s: one window, centred in silence, that starts before the clip."""
    from ser_stream.audiofile import read_audio
    from ser_stream.clips import clip_spectrograms
    from ser_stream.windows import WindowConfig
    from training.dataset import build_features
    from training.ravdess import parse_name

    long = write_tone(tmp_path / "03-01-05-01-01-01-01.wav", 32002)
    short = write_tone(tmp_path / "03-01-05-01-02-01-01.wav", 12000)
    features = build_features([parse_name(long), parse_name(short)], WindowConfig(), ("clean",), 0, None, workers=1)
    served = [clip_spectrograms(*read_audio(path), WindowConfig()) for path in (long, short)]
    for index, windows in enumerate(served):
        scored = features.spectrograms[features.eval_windows(np.array([index]))]
        assert scored.shape == windows.shape, index
        np.testing.assert_allclose(scored.astype(np.float32), windows, atol=1e-3)  # stored as float16
    assert [len(windows) for windows in served] == [6, 1]
    assert features.windows_of(np.array([0]), ("clean",)).size == 10  # every 0.25 s, and the last aligned to the end


def test_each_training_variant_is_its_own_version_of_the_clip_the_telephone_one_without_the_lows_a_phone_line_drops(tiny_ravdess, tmp_path):
    """And each clip's noise and line are drawn for it: the same audio under another actor's name is augmented otherwise."""
    import shutil

    from ser_stream.windows import WindowConfig
    from training.dataset import build_features
    from training.ravdess import parse_name, scan

    clip = scan(tiny_ravdess)[0][0]
    twin = parse_name(shutil.copy(clip.path, tmp_path / clip.path.name.replace(f"-{clip.actor:02d}.", "-24.")))
    variants = ("clean", "telephone", "noisy")
    features = build_features([clip, twin], WindowConfig(), variants, 0, None, workers=1)
    (clean, line, noisy), (twin_clean, _, twin_noisy) = (
        [features.spectrograms[features.windows_of(np.array([index]), (variant,))].astype(np.float32) for variant in variants] for index in (0, 1)
    )
    below_200_hz = slice(0, 13)  # rows 15.4 Hz apart; the line's band starts at 300 Hz
    assert line.shape == clean.shape == noisy.shape
    assert line[:, below_200_hz].mean() < 0.75 * clean[:, below_200_hz].mean()
    assert not np.allclose(noisy, clean, atol=0.01) and not np.allclose(noisy, line, atol=0.01)
    assert np.array_equal(twin_clean, clean) and not np.array_equal(twin_noisy, noisy)


def test_the_feature_cache_is_kept_apart_for_other_variants_another_seed_and_audio_of_the_same_size(tiny_ravdess, tmp_path):
    """The cache is named by what the features depend on: a run asking for other variants or another seed once got
    the features of the run before it, and audio replaced by audio of the same size is other audio."""
    import shutil

    import soundfile

    from ser_stream.windows import WindowConfig
    from training.dataset import VARIANTS, build_features
    from training.ravdess import scan

    data = tmp_path / "data"
    shutil.copytree(tiny_ravdess / "Actor_01", data / "Actor_01")
    clips = scan(data)[0][:1]
    cache = tmp_path / "cache"
    clean = build_features(clips, WindowConfig(), ("clean",), 0, cache, workers=1)
    both = build_features(clips, WindowConfig(), ("clean", "noisy"), 0, cache, workers=1)
    assert sorted(set(both.window_variant.tolist())) == [VARIANTS.index("clean"), VARIANTS.index("noisy")]
    reseeded = build_features(clips, WindowConfig(), ("clean", "noisy"), 1, cache, workers=1)
    assert not np.array_equal(reseeded.spectrograms, both.spectrograms)  # the noise drawn again
    audio, rate = soundfile.read(clips[0].path, dtype="float32")
    info = soundfile.info(clips[0].path)
    stamp = clips[0].path.stat()
    soundfile.write(clips[0].path, audio[::-1], rate, subtype=info.subtype)  # the same size, other sound
    os.utime(clips[0].path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))
    assert clips[0].path.stat().st_size == stamp.st_size
    reversed_clip = build_features(clips, WindowConfig(), ("clean",), 0, cache, workers=1)
    assert not np.array_equal(reversed_clip.spectrograms, clean.spectrograms)


def test_features_of_one_clip_that_cannot_be_learned_from_name_it_alone(tmp_path):
    import soundfile

    from ser_stream.windows import WindowConfig
    from training.dataset import build_features
    from training.ravdess import parse_name

    silent = tmp_path / "03-01-05-01-01-01-01.wav"
    soundfile.write(silent, np.zeros(16000, np.float32), 16000)
    with pytest.raises(SerStreamError) as refused:
        build_features([parse_name(silent)], WindowConfig(), ("clean",), 0, None, workers=1)
    assert str(refused.value).startswith(f"none of the 1 clips can be learned from: {silent}: silent throughout")
    assert "more)" not in str(refused.value)


def test_the_digest_of_a_set_of_test_clips_does_not_depend_on_the_order_they_are_listed_in():
    """Training records it of its test clips in split order; ``training.score --random-split`` holds its own to it."""
    from training.dataset import clip_names_sha256

    names = ["03-01-05-01-01-01-01.wav", "03-01-02-01-01-01-02.wav", "03-01-08-02-02-01-03.flac"]
    assert clip_names_sha256(names) == clip_names_sha256(reversed(names)) != clip_names_sha256(names[:2])

def test_max_clips_deals_each_emotions_clips_from_every_actor_in_turn():
    """--max-clips N once took the first N of each emotion in path order: all of them the first actor's."""
    from pathlib import Path

    from training.ravdess import parse_name
    from training.train import limit_per_emotion

    clips = [parse_name(Path(f"Actor_{actor:02d}/03-01-{emotion:02d}-01-{statement:02d}-01-{actor:02d}.wav"))
             for actor in (1, 2, 3) for emotion in (3, 4) for statement in (1, 2)]
    kept = limit_per_emotion(clips, 2)
    assert [(clip.emotion, clip.actor) for clip in kept] == [("happy", 1), ("happy", 2), ("sad", 1), ("sad", 2)]
    assert sorted(clip.actor for clip in limit_per_emotion(clips, 3) if clip.emotion == "happy") == [1, 2, 3]


def test_folds_can_train_on_the_validation_speakers_too_or_on_nested_subsets_of_the_others():
    from pathlib import Path

    from ser_stream.errors import SerStreamError
    from training.train import TrainConfig, make_splits

    features = clean_windows(np.zeros((20, 260, 270)), 20)  # one clip for each of actors 1-20

    def actors(split, part):
        return set(features.clip_actors[getattr(split, part)])

    default = make_splits(features, TrainConfig(data=Path("unused"), out=Path("unused")))
    without_validation = make_splits(features, TrainConfig(data=Path("unused"), out=Path("unused"), validation_actors=0, keep="last"))
    for ours, theirs in zip(default, without_validation):
        assert ours.name == theirs.name and np.array_equal(ours.test, theirs.test)  # the same held-out speakers
        assert len(theirs.validation) == 0 and actors(theirs, "train") == actors(ours, "train") | actors(ours, "validation")
    smaller = {count: make_splits(features, TrainConfig(data=Path("unused"), out=Path("unused"), training_actors=count)) for count in (4, 8, 14)}
    for fold, split in enumerate(default):
        assert [len(actors(smaller[count][fold], "train")) for count in (4, 8)] == [4, 8]
        assert actors(smaller[4][fold], "train") < actors(smaller[8][fold], "train") < actors(split, "train") == actors(smaller[14][fold], "train")
        assert np.array_equal(smaller[4][fold].validation, split.validation) and np.array_equal(smaller[4][fold].test, split.test)
    with pytest.raises(SerStreamError, match="^--training-actors 15: fold0-actors-03-05-07-20 has only 14 speakers left to train on$"):
        make_splits(features, TrainConfig(data=Path("unused"), out=Path("unused"), training_actors=15))


def test_a_fold_without_validation_speakers_trains_on_every_other_speaker_and_records_who(tiny_ravdess, tmp_path):
    from training.__main__ import main

    out = tmp_path / "run"
    assert main(["--data", str(tiny_ravdess), "--out", str(out), "--protocol", "actors", "--folds", "2", "--fold", "0", "--validation-actors", "0",
                 "--keep", "last", "--epochs", "1", "--batch-size", "8", "--max-clips", "4", "--cache-dir", str(tmp_path / "cache")]) == 0
    (metrics_path,) = out.glob("fold0-actors-*/metrics.json")
    metrics = json.loads(metrics_path.read_text())
    held_out = int(metrics["split"].rsplit("-", 1)[1])
    assert metrics["training"]["train_actors"] == [3 - held_out] and metrics["training"]["validation_actors"] == []
    assert metrics["weights"] == "last epoch" and "best_epoch" not in metrics and metrics["test_clean"]["clips"] == 16
    # its licence note names the one actor it heard (every model's said "actors 01-20", the held-out one's included)
    assert load_metadata(metrics_path.with_name("model.onnx")).licence.startswith(f"Trained on RAVDESS speech, actors {3 - held_out:02d} (Livingstone")


def test_a_models_licence_note_names_the_actors_it_was_trained_on_and_all_twenty_read_as_the_shipped_note(shipped_model):
    """A fold model held actors out; its note claimed them. The shipped pair, trained on all 20, keeps its note word for
    word, so training it again writes the same metadata."""
    from training.export import ravdess_note

    assert ravdess_note(list(range(1, 21)), []) == load_metadata(shipped_model).licence
    assert ravdess_note([1, 2, 4, 6, 8, 9, 10, 11, 13, 14, 15, 16, 18, 19], [12, 17]).startswith(
        "Trained on RAVDESS speech, actors 01-02, 04, 06, 08-11, 13-16, 18-19, validated on actors 12, 17 (Livingstone & Russo 2018"
    )


def test_a_model_seed_draws_another_network_and_batch_order_on_the_same_splits():
    from dataclasses import replace
    from pathlib import Path

    from training.recipes import RECIPES
    from training.train import TrainConfig, TrainingBatches, make_splits, network_seed

    features = clean_windows(np.random.default_rng(0).random((20, 260, 270)), 20)
    plain = TrainConfig(data=Path("unused"), out=Path("unused"))
    member = TrainConfig(data=Path("unused"), out=Path("unused"), model_seed=1)
    assert (network_seed(plain), network_seed(member)) == (0, 1)
    for ours, theirs in zip(make_splits(features, plain), make_splits(features, member)):
        assert ours.name == theirs.name
        for part in ("train", "validation", "test"):
            assert np.array_equal(getattr(ours, part), getattr(theirs, part))
    split = make_splits(features, plain)[0]
    order = {seed: [w for w, _ in TrainingBatches(features, split.train, RECIPES["improved"], config).epoch_picks] for seed, config in ((0, plain), (1, member))}
    assert sorted(order[0]) == sorted(order[1]) and order[0] != order[1]
    assert [w for w, _ in TrainingBatches(features, split.train, RECIPES["improved"], replace(plain, model_seed=0)).epoch_picks] == order[0]


def test_weight_averaging_keeps_the_mean_of_the_last_epochs_across_a_resume(tmp_path):
    from training.train import WeightAverage

    epoch_weights = [[np.full((2, 3), float(epoch)), np.full(4, 10.0 * epoch)] for epoch in range(6)]
    averaging = WeightAverage(tmp_path, total_epochs=6, epochs=3, resumed_after=None)
    for epoch in range(4):  # stopped after 4 of 6 epochs: only the 4th is among the last 3
        if epoch >= averaging.first_epoch:
            averaging.add(epoch_weights[epoch], epoch)
    resumed = WeightAverage(tmp_path, total_epochs=6, epochs=3, resumed_after=4)
    for epoch in (4, 5):
        resumed.add(epoch_weights[epoch], epoch)
    first, second = resumed.averaged()
    assert resumed.count == 3 and np.allclose(first, 4.0) and np.allclose(second, 40.0)  # mean of the 4th, 5th and 6th
    assert WeightAverage(tmp_path, total_epochs=6, epochs=3, resumed_after=None).count == 0  # a fresh run starts its own sum


def test_a_resume_adds_the_checkpointed_epoch_the_average_missed(tmp_path):
    from training.train import WeightAverage

    averaging = WeightAverage(tmp_path, total_epochs=4, epochs=2, resumed_after=None)
    averaging.add([np.full(2, 2.0)], 2)
    # Killed after the epoch-4 checkpoint was written but before it was summed: the resume adds it once.
    resumed = WeightAverage(tmp_path, total_epochs=4, epochs=2, resumed_after=4)
    resumed.catch_up([np.full(2, 3.0)], completed_epochs=4)
    resumed.catch_up([np.full(2, 3.0)], completed_epochs=4)
    assert resumed.count == 2 and np.allclose(resumed.averaged()[0], 2.5)


def test_an_improved_run_keeping_averaged_weights_exports_them_trained_with_its_recipes_loss_and_schedule_and_scores_both_chains(tiny_ravdess, tmp_path):
    from training.__main__ import main

    out = tmp_path / "averaged"
    assert main(["--data", str(tiny_ravdess), "--out", str(out), "--recipe", "improved", "--protocol", "random", "--epochs", "3", "--patience", "3",
                 "--keep", "average", "--average-epochs", "2", "--batch-size", "8", "--max-clips", "4", "--cache-dir", str(tmp_path / "cache")]) == 0
    metrics = json.loads((out / "random" / "metrics.json").read_text())
    assert metrics["weights"] == "mean of the last 2 epochs" and metrics["onnx_parity_max_abs_diff"] <= 1e-4
    # The improved recipe's cosine schedule spans the whole run (it once could have spanned one epoch, untested):
    # 2e-3 at the first step, half-way down at the middle one, 5 % of it at the last.
    import keras

    last = keras.models.load_model(out / "random" / "checkpoints" / "last.keras")
    assert last.loss.get_config()["label_smoothing"] == 0.05  # the improved recipe's
    # Scored clean and through the telephone chain, each with its confusion matrix, as docs/results.md reports them
    assert {"test_clean", "test_telephone"} <= set(metrics)
    assert all((out / "random" / f"confusion_{variant}.{kind}").is_file() for variant in ("clean", "telephone") for kind in ("md", "png", "csv"))
    optimizer = last.optimizer
    steps = int(optimizer.iterations.numpy())
    assert steps >= 3  # three epochs of at least one batch each
    rates = []
    for step in (0, steps // 2, steps):
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    middle = 2e-3 * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * (steps // 2) / steps)))
    np.testing.assert_allclose(rates, [2e-3, middle, 2e-3 * 0.05], rtol=1e-4)


@pytest.mark.parametrize(
    "options, reason",
    [
        (["--epochs", "0"], "argument --epochs: 0 only with --init-from (which then exports the earlier run's weights as they are)"),
        (["--epochs", "-1"], "argument --epochs: -1 must be at least 0"),
        (["--batch-size", "0"], "argument --batch-size: 0 must be at least 1"),
        (["--epochs", "x"], "argument --epochs: 'x' is not a whole number"),
        (["--fold", "9"], "argument --fold: 9 is not one of the 5 folds (0 to 4)"),
        (["--protocol", "random", "--fold", "0"], "argument --fold: only with --protocol actors (the 'random' protocol has one split)"),
        (["--protocol", "all", "--balance-voices"], "argument --balance-voices: only with --protocol actors (the 'all' protocol holds out no speakers)"),
        (["--epochs", "3", "--patience", "3", "--keep", "average", "--average-epochs", "5"], "argument --average-epochs: 5 must be at most --epochs (3)"),
        (["--epochs", "40", "--keep", "average"], "argument --patience: 15 is below --epochs (40): early stopping could end the run before the epochs --keep average averages"),
        (["--distill-weight", "0.3"], "argument --distill-weight: only with --teacher"),
        (["--teacher", "t.onnx", "--distill-weight", "2"], "argument --distill-weight: 2.0 is outside 0 to 1"),
        (["--frequency-warp", "0.5"], "argument --frequency-warp: 0.5 is outside 0 to 0.5"),
        (["--teacher", "missing.onnx"], "argument --teacher: missing.onnx: no such model file"),
        (["--epochs", "0", "--init-from", "no-such-run"], "argument --init-from: no-such-run is not a run folder"),
        (["--window", "0"], "window of 0.0 s is outside 0.1–30 s"),
        (["--validation-actors", "0", "--keep", "best"], "argument --validation-actors: 0 leaves no speakers to pick the best epoch on: use --keep last or --keep average"),
        (["--protocol", "all", "--keep", "best"], "argument --keep: best: the 'all' protocol keeps no speakers to pick the best epoch on: --keep last or --keep average"),
        (["--protocol", "random", "--validation-actors", "0", "--keep", "last"], "argument --validation-actors: only with --protocol actors (the 'random' protocol holds out no speakers)"),
        (["--protocol", "all", "--training-actors", "8"], "argument --training-actors: only with --protocol actors (the 'all' protocol holds out no speakers)"),
        (["--balance-voices", "--validation-actors", "1"], "argument --validation-actors: 1 with --balance-voices, which validates on one man and one woman: 2 or 0"),
        (["--training-actors", "0"], "argument --training-actors: 0 must be at least 1"),
        (["--seed", "-1"], "argument --seed: -1 must be at least 0"),
        (["--model-seed", "-5"], "argument --model-seed: -5 must be at least 0"),
        (["--hop", "0.3"], "argument --hop: 0.3 s is not a multiple of the training hop (0.25 s): validation and test would score fewer windows than classify cuts"),
    ],
)
def test_the_training_command_refuses_nonsense_in_one_line(tmp_path, capsys, options, reason):
    from training.__main__ import main

    with pytest.raises(SystemExit) as stopped:
        main(["--out", str(tmp_path / "run"), *options])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"python -m training: error: {reason}"


def test_without_keep_a_run_keeps_its_best_validation_epoch_where_it_validates_and_its_last_where_it_cannot(tmp_path, monkeypatch):
    import training.train
    from training.__main__ import main

    asked: list[TrainConfig] = []
    monkeypatch.setattr(training.train, "run", asked.append)
    for options in (["--protocol", "all"], ["--validation-actors", "0"], ["--protocol", "random"], ["--protocol", "actors"]):
        assert main(["--out", str(tmp_path / "run"), *options]) == 0
    assert [config.keep for config in asked] == ["last", "last", "best", "best"]


def test_averaged_weights_of_a_run_that_validates_on_nobody_are_not_refused_for_its_patience(tmp_path, monkeypatch):
    """--validation-actors 0 --keep average was refused whatever --patience: the default as below --epochs, any other
    as ignored; nothing validates there, so nothing stops the run early."""
    import training.train
    from training.__main__ import main

    asked: list[TrainConfig] = []
    monkeypatch.setattr(training.train, "run", asked.append)
    assert main(["--out", str(tmp_path / "run"), "--protocol", "actors", "--validation-actors", "0", "--keep", "average", "--epochs", "60"]) == 0
    assert [(config.keep, config.patience, config.epochs) for config in asked] == [("average", 15, 60)]


@pytest.mark.parametrize("option", ["--out", "--cache-dir"])
def test_an_output_or_cache_folder_that_is_a_file_is_refused_before_any_work(tmp_path, capsys, option):
    from training.__main__ import main

    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    paths = {"--out": tmp_path / "run", "--cache-dir": tmp_path / "cache", option: a_file}
    with pytest.raises(SystemExit) as stopped:
        main(["--out", str(paths["--out"]), "--cache-dir", str(paths["--cache-dir"])])
    assert stopped.value.code == 2
    option_name = option.removeprefix("--")
    assert capsys.readouterr().err.splitlines()[-1] == f"python -m training: error: argument --{option_name}: {a_file} is a file, not a folder to write in"


@pytest.mark.parametrize(
    "options, reason",
    [
        (["--folds", "3"], "--folds 3: {data} has only 2 actors to hold out"),
        (["--max-clips", "1"], "--folds 5: --max-clips 1 keeps clips of only 1 actors to hold out"),  # not the folder's fault
        (["--folds", "2", "--fold", "0"], "--validation-actors 2: of 2 actors, a fold holds out 1 and validates on 2, which leaves none to train on"),
        (["--folds", "2", "--validation-actors", "0", "--keep", "last", "--training-actors", "2"], "--training-actors 2: a fold has only 1 speakers left to train on"),
    ],
)
def test_folds_that_would_hold_out_or_train_on_nobody_are_refused_before_features_are_computed(tiny_ravdess, tmp_path, capsys, options, reason):
    from training.__main__ import main

    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(tiny_ravdess), "--out", str(tmp_path / "run"), "--protocol", "actors", "--cache-dir", str(tmp_path / "cache"), *options])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"python -m training: error: {reason.format(data=tiny_ravdess)}"
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


def test_a_resumed_run_keeps_the_best_validation_epoch_it_had_unless_a_new_epoch_beats_it(tiny_ravdess, tmp_path):
    import shutil

    import keras

    from training.__main__ import main

    data = tmp_path / "three-actors"  # a held-out, a validation and a training speaker
    shutil.copytree(tiny_ravdess, data)
    (data / "Actor_03").mkdir()
    for clip in (data / "Actor_01").iterdir():
        shutil.copy(clip, data / "Actor_03" / clip.name.replace("-01.", "-03."))
    out = tmp_path / "run"
    command = ["--data", str(data), "--out", str(out), "--recipe", "paper", "--protocol", "actors", "--folds", "3", "--fold", "0",
               "--validation-actors", "1", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache")]
    assert main([*command, "--epochs", "2"]) == 0
    (split,) = out.glob("fold0-*")
    checkpoints = split / "checkpoints"
    best_before = [w.copy() for w in keras.models.load_model(checkpoints / "best.keras").get_weights()]
    assert main([*command, "--epochs", "3", "--resume"]) == 0
    scores = json.loads((checkpoints / "state.json").read_text())["history"]["val_mean_per_class_accuracy"]
    metrics = json.loads((split / "metrics.json").read_text())
    best_now = keras.models.load_model(checkpoints / "best.keras").get_weights()
    last = keras.models.load_model(checkpoints / "last.keras").get_weights()
    assert len(scores) == 3 and metrics["best_epoch"] == int(np.argmax(scores)) + 1
    if scores[2] > max(scores[:2]):  # the resumed epoch is the best: it is saved as such
        assert all(np.array_equal(a, b) for a, b in zip(best_now, last))
    else:  # the best epoch is still one from before the resume, and its weights are what best.keras holds
        assert all(np.array_equal(a, b) for a, b in zip(best_now, best_before))
        assert not all(np.array_equal(a, b) for a, b in zip(best_now, last))


@pytest.mark.parametrize(
    "options, difference",
    [
        (["--recipe", "improved"], "recipe name: 'paper' → 'improved'"),
        (["--recipe", "paper", "--windows-per-clip", "2"], "recipe windows_per_clip: 1 → 2"),
        (["--recipe", "paper", "--seed", "1"], "--model-seed 0 → 1; --seed 0 → 1"),
    ],
)
def test_a_resume_with_other_settings_than_the_checkpoints_were_trained_with_is_refused_in_one_line(smoke_run, tiny_ravdess, tmp_path, capsys, options, difference):
    import shutil

    from training.__main__ import main

    out = tmp_path / "run"
    shutil.copytree(smoke_run, out / "random")
    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(tiny_ravdess), "--out", str(out), "--protocol", "random", "--epochs", "3", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache"), "--resume", *options])
    assert stopped.value.code == 2
    message = capsys.readouterr().err.splitlines()[-1]
    assert message.startswith(f"python -m training: error: --resume {out / 'random'}: its runs were trained with other settings ({difference}")
    assert message.endswith("; use another --out")


def test_a_resume_from_a_truncated_checkpoint_is_one_line_naming_it(smoke_run, tiny_ravdess, tmp_path, capsys):
    import shutil

    from training.__main__ import main

    out = tmp_path / "run"
    shutil.copytree(smoke_run, out / "random")
    damaged = out / "random" / "checkpoints" / "last.keras"
    damaged.write_bytes(damaged.read_bytes()[:5000])  # as a run killed while writing it would have left it, before writes were atomic
    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(tiny_ravdess), "--out", str(out), "--recipe", "paper", "--protocol", "random", "--epochs", "3", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache"), "--resume"])
    assert stopped.value.code == 2
    message = capsys.readouterr().err.splitlines()[-1]
    assert message.startswith(f"python -m training: error: {damaged}: not a readable checkpoint (")
    assert message.endswith(f"); delete {damaged.parent} to start the split afresh")


def test_folds_trained_one_at_a_time_into_one_folder_are_all_in_its_summary_and_other_settings_are_refused(tiny_ravdess, tmp_path, capsys):
    from training.__main__ import main

    out = tmp_path / "run"
    common = ["--data", str(tiny_ravdess), "--out", str(out), "--protocol", "actors", "--folds", "2", "--validation-actors", "0", "--keep", "last",
              "--epochs", "1", "--batch-size", "8", "--max-clips", "4", "--cache-dir", str(tmp_path / "cache")]
    for fold in ("0", "1"):
        assert main([*common, "--fold", fold]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(name.split("-")[0] for name in summary["splits"]) == ["fold0", "fold1"]
    each = [split["test_clean"]["mean_per_class_accuracy"] for split in summary["splits"].values()]
    assert summary["mean_over_splits"]["mean_per_class_accuracy"] == pytest.approx(np.mean(each))

    with pytest.raises(SystemExit) as stopped:
        main([*common, "--fold", "0", "--recipe", "paper"])
    assert stopped.value.code == 2
    message = capsys.readouterr().err.splitlines()[-1]
    assert message.startswith(f"python -m training: error: --out {out}: its runs were trained with other settings (recipe name: 'improved' → 'paper'")


def test_training_evaluates_every_clip_on_the_windows_classify_cuts_from_it_dc_offset_and_all(tiny_ravdess, tmp_path):
    import shutil

    import soundfile

    from ser_stream.audiofile import read_audio
    from ser_stream.clips import clip_spectrograms
    from ser_stream.windows import WindowConfig
    from training.dataset import build_features
    from training.ravdess import scan

    data = tmp_path / "data"
    shutil.copytree(tiny_ravdess / "Actor_01", data / "Actor_01")
    clips = scan(data)[0][:4]
    audio, rate = read_audio(clips[0].path)
    soundfile.write(clips[0].path, audio + np.float32(0.01), rate, subtype="FLOAT")  # a sound card's DC offset
    features = build_features(clips, WindowConfig(), ("clean",), 0, None, workers=1)
    for index, clip in enumerate(clips):
        served = clip_spectrograms(*read_audio(clip.path), WindowConfig())
        trained = features.spectrograms[features.eval_windows(np.array([index]))]
        assert trained.shape == served.shape, clip.path.name
        np.testing.assert_allclose(trained.astype(np.float32), served, atol=1e-3)  # stored as float16


def test_speed_perturbed_windows_are_training_windows_only_and_a_slower_clip_gives_more_of_them(tiny_ravdess):
    from ser_stream.windows import WindowConfig
    from training.dataset import VARIANTS, build_features
    from training.ravdess import scan

    clips = scan(tiny_ravdess)[0][:3]
    features = build_features(clips, WindowConfig(), ("clean", "slower", "faster"), 0, None, workers=1)
    count = {variant: features.windows_of(np.arange(3), (variant,)).size for variant in ("clean", "slower", "faster")}
    assert count["slower"] > count["clean"] > count["faster"] > 0
    evaluated = features.window_is_eval & (features.window_variant == VARIANTS.index("clean"))
    assert np.array_equal(features.eval_windows(np.arange(3)), np.flatnonzero(evaluated))  # scored on clean audio alone


def test_the_feature_workers_are_stopped_when_computing_the_features_fails(tiny_ravdess):
    """The worker pool was shut down only when every clip's features came back: an error left its processes running."""
    import multiprocessing

    from ser_stream.windows import WindowConfig
    from training.dataset import build_features
    from training.ravdess import scan

    before = set(multiprocessing.active_children())
    with pytest.raises(ValueError) as failed:  # a variant no worker knows: no clip's fault, so no clip left out but an error
        build_features(scan(tiny_ravdess)[0][:4], WindowConfig(), ("clean", "unknown"), 0, None, workers=2)
    assert "not in tuple" in str(failed.value)
    assert set(multiprocessing.active_children()) <= before


def test_the_feature_cache_is_recomputed_when_a_clip_changes_or_the_cache_file_is_damaged(tiny_ravdess, tmp_path, capsys):
    import shutil

    import soundfile

    from ser_stream.windows import WindowConfig
    from training.dataset import build_features
    from training.ravdess import scan

    data = tmp_path / "data"
    shutil.copytree(tiny_ravdess / "Actor_01", data / "Actor_01")
    clips = scan(data)[0][:2]
    cache = tmp_path / "cache"
    first = build_features(clips, WindowConfig(), ("clean",), 0, cache, workers=1)
    (cache_file,) = cache.glob("features-*.npz")
    soundfile.write(clips[0].path, np.zeros(8000 * 6, np.float32) + 0.01 * np.random.default_rng(0).standard_normal(8000 * 6).astype(np.float32), 8000)
    changed = build_features(clips, WindowConfig(), ("clean",), 0, cache, workers=1)
    assert (changed.window_clip == 0).sum() > (first.window_clip == 0).sum()  # 6 s of new audio: more windows than 3 s had

    (new_cache,) = set(cache.glob("features-*.npz")) - {cache_file}
    new_cache.write_bytes(new_cache.read_bytes()[:1000])
    again = build_features(clips, WindowConfig(), ("clean",), 0, cache, workers=1)
    np.testing.assert_array_equal(again.spectrograms, changed.spectrograms)
    assert f"{new_cache}: not a readable feature cache" in capsys.readouterr().err


def test_clips_classify_would_refuse_are_left_out_of_training_by_name_and_the_cache_keeps_saying_so(tiny_ravdess, tmp_path, capsys):
    import shutil

    import soundfile

    from ser_stream.windows import WindowConfig
    from training.dataset import build_features
    from training.ravdess import scan

    data = tmp_path / "data"
    shutil.copytree(tiny_ravdess / "Actor_01", data / "Actor_01")
    clips = scan(data)[0][:4]
    soundfile.write(clips[1].path, np.zeros(16000 * 3, np.float32), 16000)  # digital silence labelled as an emotion
    # 0.1 s of sound in a second of silence, which classify refuses; training once measured the trimmed clip with
    # its 0.1 s margins (0.3 s) instead of its sound, and learnt from it
    tone = 0.3 * np.sin(np.arange(1600) / 3).astype(np.float32)
    soundfile.write(clips[2].path, np.concatenate([np.zeros(7200, np.float32), tone, np.zeros(7200, np.float32)]), 16000)
    cache = tmp_path / "cache"
    features = build_features(clips, WindowConfig(), ("clean",), 0, cache, workers=1)
    assert features.clip_names == [clips[0].path.name, clips[3].path.name]
    assert sorted(np.unique(features.window_clip)) == [0, 1]  # windows numbered by the clips kept
    assert features.clip_labels.tolist() == [clips[0].label_index, clips[3].label_index]
    assert [line.split(":")[0] for line in features.skipped_clips] == [str(clips[1].path), str(clips[2].path)]
    assert "silent throughout" in features.skipped_clips[0] and "of sound once silence is trimmed" in features.skipped_clips[1]
    first = capsys.readouterr().err.splitlines()
    assert first == [f"skipped {line}" for line in features.skipped_clips]
    cached = build_features(clips, WindowConfig(), ("clean",), 0, cache, workers=1)
    assert cached.skipped_clips == features.skipped_clips and capsys.readouterr().err.splitlines() == first


def test_training_on_nothing_but_clips_it_cannot_learn_from_is_one_line_naming_one(tiny_ravdess, tmp_path, capsys):
    import soundfile

    from training.__main__ import main

    data = tmp_path / "silent"
    shutil.copytree(tiny_ravdess, data)
    for clip in sorted(data.rglob("03-01-*")):
        soundfile.write(clip, np.zeros(16000, np.float32), 16000)
    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(data), "--out", str(tmp_path / "run"), "--protocol", "all", "--epochs", "1", "--cache-dir", str(tmp_path / "cache")])
    assert stopped.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    first_clip = data / "Actor_01" / "03-01-01-01-01-01-01.wav"
    assert last.startswith(f"python -m training: error: none of the 32 clips can be learned from: {first_clip}: silent throughout")
    assert last.endswith("(and 31 more)")
    assert not (tmp_path / "run" / "all").exists()


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"fold": 9}, "fold: 9 is not one of the 5 folds (0 to 4)"),
        ({"epochs": 0}, "epochs: 0 only with --init-from"),
        ({"distill_weight": 2.0}, "distill_weight: 2.0 is outside 0 to 1"),
        ({"recipe": "papr"}, "recipe: 'papr' is not one of paper, improved"),
        ({"keep": "first"}, "keep: 'first' is not one of best, last, average"),
        ({"batch_size": 0}, "batch_size: 0 must be at least 1"),
        ({"max_clips": 0}, "max_clips: 0 must be at least 1"),
    ],
)
def test_a_training_configuration_that_would_train_nothing_or_the_wrong_thing_is_refused_when_made(fields, message):
    """Code that builds a TrainConfig itself gets the same checks as the command, before any data is read."""
    from pathlib import Path

    from training.config import TrainConfig, TrainConfigError

    with pytest.raises(TrainConfigError) as refused:
        TrainConfig(data=Path("unused"), out=Path("unused"), **fields)
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda tmp: tmp / "missing", "not a folder"),
        (lambda tmp: tmp, "no RAVDESS clips found (no WAV or FLAC file named like 03-01-05-01-02-01-12.wav)"),
        (lambda tmp: (tmp / "03-01-01-01-01-01.wav").write_bytes(b"") or tmp, "no RAVDESS clips found (1 file(s) skipped, e.g. {data}/03-01-01-01-01-01.wav: expected 7 dash-separated fields, found 6)"),
    ],
    ids=["missing", "empty", "only-misnamed"],
)
def test_a_data_folder_that_cannot_be_used_is_one_line(tmp_path, capsys, make, reason):
    from training.__main__ import main

    data = make(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"python -m training: error: {data}: {reason.format(data=data)}"


@pytest.mark.parametrize("command", ["score", "quantize"])
def test_scoring_or_quantising_a_missing_model_is_one_line(tmp_path, capsys, command):
    import importlib

    main = importlib.import_module(f"training.{command}").main
    missing = tmp_path / "none.onnx"
    arguments = ["--actors", "3", "--model", str(missing)] if command == "score" else [str(missing), "--test-actors", "3"]
    with pytest.raises(SystemExit) as stopped:
        main(arguments)
    assert stopped.value.code == 2
    assert capsys.readouterr().err == f"python -m training.{command}: error: {missing}: model file not found\n"


def test_distillation_targets_mix_each_label_with_the_teachers_mean_output_on_the_same_augmented_window(smoke_run):
    from pathlib import Path

    from ser_stream.inference import EmotionModel
    from training.recipes import RECIPES
    from training.train import TrainConfig, TrainingBatches

    clips = 8
    features = clean_windows(np.random.default_rng(0).random((clips, 260, 270)).astype(np.float16), clips)
    teacher = EmotionModel(smoke_run / "model.onnx", provider="cpu")
    config = TrainConfig(data=Path("unused"), out=Path("unused"), distill_weight=0.25)
    batches = TrainingBatches(features, np.arange(clips), RECIPES["improved"], config, [teacher, teacher])
    images, targets, _ = batches[0]
    labels = [label for _, label in batches.epoch_picks[: len(images)]]
    expected = 0.75 * np.eye(8, dtype=np.float32)[labels] + 0.25 * teacher.predict(images)
    np.testing.assert_allclose(targets, expected, atol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)


def test_a_distilled_run_learns_from_its_own_splits_teacher_and_records_it(smoke_run, tiny_ravdess, tmp_path):
    from training.__main__ import main

    out = tmp_path / "student"
    teacher = str(smoke_run.parent / "{split}" / "model.onnx")  # the random split's model teaches the random split
    assert main(["--data", str(tiny_ravdess), "--out", str(out), "--recipe", "paper", "--protocol", "random", "--epochs", "1", "--batch-size", "8",
                 "--cache-dir", str(tmp_path / "cache"), "--teacher", teacher, "--distill-weight", "0.5"]) == 0
    training = json.loads((out / "random" / "metrics.json").read_text())["training"]
    assert training["teachers"][0].startswith(str(smoke_run / "model.onnx")) and training["distill_weight"] == 0.5
    assert (out / "random" / "model.onnx").is_file()


@pytest.mark.parametrize("teacher_split, reason", [("{split}", "no such model file"), ("random", "trained on split 'random' (seed 0), not 'all'")])
def test_a_teacher_that_may_have_heard_the_held_out_speakers_is_refused_in_one_line(smoke_run, tiny_ravdess, tmp_path, capsys, teacher_split, reason):
    from training.__main__ import main

    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(tiny_ravdess), "--out", str(tmp_path / "student"), "--protocol", "all", "--epochs", "1",
              "--cache-dir", str(tmp_path / "cache"), "--teacher", str(smoke_run.parent / teacher_split / "model.onnx")])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and reason in error and "Traceback" not in error
    assert not (tmp_path / "student" / "all").exists()


def test_a_teacher_or_earlier_run_that_is_not_a_model_is_one_line_naming_the_option_before_any_training(smoke_run, tiny_ravdess, tmp_path, capsys):
    """A junk --init-from model said only Keras' 'File not found', and a junk --teacher did not say which option it was."""
    from training.__main__ import main

    junk_run = tmp_path / "junk-run" / "random"
    junk_run.mkdir(parents=True)
    (junk_run / "model.keras").write_text("not a model")
    junk_teacher = tmp_path / "teacher.onnx"
    junk_teacher.write_text("not a model")
    common = ["--data", str(tiny_ravdess), "--recipe", "paper", "--protocol", "random", "--epochs", "1", "--cache-dir", str(tmp_path / "cache")]
    for option, value, expected in [
        ("--init-from", junk_run.parent, f"--init-from {junk_run.parent}: {junk_run / 'model.keras'}: not a readable Keras model ("),
        ("--teacher", junk_teacher, f"--teacher {junk_teacher}: "),
    ]:
        with pytest.raises(SystemExit) as stopped:
            main([*common, "--out", str(tmp_path / "out"), option, str(value)])
        last = capsys.readouterr().err.splitlines()[-1]
        assert stopped.value.code == 2 and last.startswith(f"python -m training: error: {expected}"), last
        assert not (tmp_path / "out").exists()


def test_spec_augment_blanks_at_most_two_bands_and_two_spans_and_leaves_the_rest():
    from training.augment import spec_augment
    from training.recipes import RECIPES

    image = np.random.default_rng(0).uniform(0.1, 1.0, (260, 270)).astype(np.float32)
    for seed in range(20):
        masked = spec_augment(image, np.random.default_rng(seed))
        blank_rows = np.flatnonzero((masked == 0).all(axis=1))
        blank_cols = np.flatnonzero((masked == 0).all(axis=0))
        assert len(blank_rows) <= 2 * 24 and len(blank_cols) <= 2 * 27
        kept = np.ones_like(image, dtype=bool)
        kept[blank_rows, :] = False
        kept[:, blank_cols] = False
        assert np.array_equal(masked[kept], image[kept]) and np.all(masked[~kept] == 0)
    assert RECIPES["improved-specaug"].spec_augment and not RECIPES["improved"].spec_augment


def test_mixup_blends_each_image_target_and_weight_with_one_partner_its_own_share_at_least_half():
    from pathlib import Path

    from training.recipes import RECIPES
    from training.train import TrainConfig, TrainingBatches

    clips = 8
    shades = np.arange(clips, dtype=np.float32) / clips  # clip c's image is the constant c / 8: its mix is readable
    features = clean_windows(np.repeat(shades[:, None, None], 260 * 270).reshape(clips, 260, 270), clips)
    config = TrainConfig(data=Path("unused"), out=Path("unused"), batch_size=clips)
    mixup = RECIPES["improved-mixup"]
    assert mixup.mixup_alpha > 0 and RECIPES["improved"].mixup_alpha == 0
    blended = 0
    for epoch in range(5):
        batches = TrainingBatches(features, np.arange(clips), mixup, config)
        batches.rng = np.random.default_rng(epoch)
        batches.on_epoch_end()
        images, targets, weights = batches[0]
        labels = [label for _, label in batches.epoch_picks]
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)
        for image, target, label in zip(images[..., 0], targets, labels):
            own = target[label]
            assert own >= 0.5 - 1e-6 and np.count_nonzero(target > 1e-6) <= 2
            partner = int(np.argmax(np.where(np.arange(8) == label, -1, target))) if own < 1 - 1e-6 else label
            np.testing.assert_allclose(image, own * shades[label] + (1 - own) * shades[partner], atol=1e-5)
            blended += own < 0.95
        assert np.all(weights > 0)
    assert blended > 0
    images, targets, _ = TrainingBatches(features, np.arange(clips), RECIPES["improved"], config)[0]
    assert set(np.unique(targets)) == {0.0, 1.0}


def test_gradient_reversal_passes_values_unchanged_and_returns_the_gradient_negated_and_scaled():
    import tensorflow as tf

    from training.network import GradientReversal

    reversal = GradientReversal()
    features = tf.constant(np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32))
    reversal.build(features.shape)
    reversal.strength.assign(0.3)
    with tf.GradientTape() as tape:
        tape.watch(features)
        passed = reversal(features)
        loss = tf.reduce_sum(passed * 2.0)
    np.testing.assert_array_equal(passed.numpy(), features.numpy())
    np.testing.assert_allclose(tape.gradient(loss, features).numpy(), -0.3 * 2.0, atol=1e-6)


def test_a_speaker_adversary_learns_the_training_actors_and_is_left_out_of_the_exported_network():
    from pathlib import Path

    from training.network import SPEAKER_OUTPUT, build_model, emotion_network
    from training.recipes import RECIPES
    from training.train import SpeakerAdversaryRamp, TrainConfig, TrainingBatches

    recipe = RECIPES["improved-advspk"]
    clips = 8
    features = clean_windows(np.random.default_rng(0).random((clips * 2, 260, 270)), clips)
    features.clip_actors[:] = [1, 1, 4, 4, 9, 9, 12, 12]
    training_clips = np.array([0, 1, 2, 3, 4, 5])  # actors 1, 4, 9: three speakers to tell apart
    batches = TrainingBatches(features, training_clips, recipe, TrainConfig(data=Path("unused"), out=Path("unused"), batch_size=6))
    images, targets, weights = batches[0]
    assert list(batches.speakers) == [1, 4, 9] and set(targets) == set(weights) == {"probabilities", SPEAKER_OUTPUT}
    actors = features.clip_actors[features.window_clip[[window for window, _ in batches.epoch_picks[:6]]]]
    np.testing.assert_array_equal(targets[SPEAKER_OUTPUT].argmax(axis=1), np.searchsorted([1, 4, 9], actors))

    model = build_model(recipe, speakers=len(batches.speakers))
    outputs = model(images)
    assert outputs[SPEAKER_OUTPUT].shape == (6, 3) and outputs["probabilities"].shape == (6, 8)
    network = emotion_network(model)
    assert network.input_shape == (None, 260, 270, 1) and network.output_shape == (None, 8)
    np.testing.assert_allclose(network(images).numpy(), outputs["probabilities"].numpy(), atol=1e-6)
    assert len(build_model(recipe).outputs) == 1 and len(build_model(RECIPES["improved"], speakers=3).outputs) == 1

    ramp = SpeakerAdversaryRamp(recipe.speaker_adversary, total_epochs=40)
    strengths = [ramp.strength_at(epoch) for epoch in range(40)]
    assert strengths[0] == 0 and all(a < b for a, b in zip(strengths, strengths[1:])) and 0.99 * recipe.speaker_adversary < strengths[-1] < recipe.speaker_adversary


def test_a_run_with_a_speaker_adversary_exports_the_runtime_contract_with_parity(tiny_ravdess, tmp_path):
    from ser_stream.inference import EmotionModel
    from training.__main__ import main

    out = tmp_path / "adversary"
    assert main(["--data", str(tiny_ravdess), "--out", str(out), "--recipe", "improved-advspk", "--protocol", "random", "--epochs", "2",
                 "--batch-size", "8", "--max-clips", "4", "--cache-dir", str(tmp_path / "cache")]) == 0
    metrics = json.loads((out / "random" / "metrics.json").read_text())
    assert metrics["onnx_parity_max_abs_diff"] <= 1e-4
    model = EmotionModel(out / "random" / "model.onnx", provider="cpu")
    assert model.predict(np.zeros((2, 260, 270, 1), np.float32)).shape == (2, 8)
    state = json.loads((out / "random" / "checkpoints" / "state.json").read_text())
    assert {"speaker_loss", "probabilities_accuracy"} <= set(state["history"])


def test_running_again_without_resume_is_refused_and_overwrite_trains_the_split_again_from_epoch_one(tiny_ravdess, tmp_path, capsys):
    """The same command without --resume once replaced a run's checkpoints, model and metrics without a word."""
    from training.__main__ import main

    out = tmp_path / "run"
    command = ["--data", str(tiny_ravdess), "--out", str(out), "--recipe", "paper", "--protocol", "random", "--batch-size", "8",
               "--max-clips", "3", "--cache-dir", str(tmp_path / "cache")]
    assert main([*command, "--epochs", "2"]) == 0
    state = out / "random" / "checkpoints" / "state.json"
    model_bytes = (out / "random" / "model.onnx").read_bytes()
    with pytest.raises(SystemExit) as stopped:
        main([*command, "--epochs", "1"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m training: error: --out {out / 'random'}: holds a run of this split (2 epochs); "
        "add --resume to carry it on, or --overwrite to train it again from epoch 1"
    )
    assert json.loads(state.read_text())["epoch"] == 2 and (out / "random" / "model.onnx").read_bytes() == model_bytes
    assert main([*command, "--epochs", "1", "--overwrite"]) == 0
    assert json.loads(state.read_text())["epoch"] == 1
    assert json.loads((out / "random" / "metrics.json").read_text())["epochs_run"] == 1


def test_a_resume_whose_last_checkpoint_is_missing_is_refused_not_started_again_from_epoch_one(smoke_run, tiny_ravdess, tmp_path, capsys):
    from training.__main__ import main

    out = tmp_path / "run"
    shutil.copytree(smoke_run.parent, out)
    (out / "random" / "checkpoints" / "last.keras").unlink()
    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(tiny_ravdess), "--out", str(out), "--recipe", "paper", "--protocol", "random", "--epochs", "3", "--batch-size", "8",
              "--cache-dir", str(tmp_path / "cache"), "--resume"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m training: error: --resume {out / 'random'}: {out / 'random' / 'checkpoints' / 'last.keras'} is missing, "
        "so it cannot carry on; --overwrite trains the split again from epoch 1"
    )


@pytest.mark.parametrize(
    "out, reason",
    [
        ("", "argument --out: '.' is the current folder: name a run folder (it gets a subfolder per split and summary.json)"),
        ("/proc/no-such-run", "--out /proc/no-such-run: cannot write there (No such file or directory)"),
    ],
)
def test_an_output_folder_that_is_the_current_one_or_cannot_be_written_is_refused_before_the_features(tiny_ravdess, tmp_path, capsys, out, reason):
    """`--out "$RUN"` with RUN unset once trained five folds into the repository; /proc/x failed after the features."""
    from training.__main__ import main

    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(tiny_ravdess), "--out", out, "--protocol", "random", "--epochs", "1", "--cache-dir", str(tmp_path / "cache")])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"python -m training: error: {reason}"
    assert not list((tmp_path / "cache").glob("features-*"))


def test_a_resumed_run_draws_the_batches_the_uninterrupted_run_would_have():
    """Its generator once started again from its seed: the first resumed epoch repeated epoch 1's order and augmentation."""
    from pathlib import Path

    from training.train import TrainConfig, TrainingBatches

    features = clean_windows(np.random.default_rng(0).random((24, 260, 270)), 8)
    config = TrainConfig(data=Path("unused"), out=Path("unused"))
    straight = TrainingBatches(features, np.arange(8), RECIPES["improved"], config)
    epochs = [straight.epoch_picks]
    for _ in range(2):
        straight.on_epoch_end()
        epochs.append(straight.epoch_picks)
    resumed = TrainingBatches(features, np.arange(8), RECIPES["improved"], config, first_epoch=2)
    assert resumed.epoch_picks == epochs[2] and epochs[2] != epochs[0]


def test_weight_averaging_carried_on_to_more_epochs_averages_the_new_last_ones_or_says_which_it_can(tmp_path):
    """A run of 6 epochs averaging 3, carried on to 8, once averaged 5 (the old sum, and the new ones added to it)."""
    from training.train import WeightAverage

    averaging = WeightAverage(tmp_path, total_epochs=6, epochs=3, resumed_after=None)
    for epoch in (3, 4, 5):
        averaging.add([np.full(2, float(epoch))], epoch)
    carried_on = WeightAverage(tmp_path, total_epochs=9, epochs=3, resumed_after=6)  # the last 3 of 9: epochs 7–9
    carried_on.catch_up([np.full(2, 5.0)], completed_epochs=6)
    for epoch in (6, 7, 8):
        carried_on.add([np.full(2, float(epoch))], epoch)
    assert carried_on.count == 3 and np.allclose(carried_on.averaged()[0], 7.0)
    fresh = WeightAverage(tmp_path, total_epochs=6, epochs=3, resumed_after=None)
    for epoch in (3, 4, 5):
        fresh.add([np.full(2, float(epoch))], epoch)
    with pytest.raises(SerStreamError) as refused:  # the last 3 of 7 start at epoch 5: epoch 5 is past, and not kept alone
        WeightAverage(tmp_path, total_epochs=7, epochs=3, resumed_after=6)
    assert str(refused.value) == (
        "--keep average: the last 3 of 7 epochs start at epoch 5, but this run is past epoch 6 and kept only the sum of "
        "epochs 4–6; use --average-epochs 2 or fewer, or --overwrite"
    )


def test_a_damaged_sum_of_weights_is_one_line_naming_it(tmp_path):
    from training.train import WeightAverage

    (tmp_path / "average.npz").write_bytes(b"not a zip")
    with pytest.raises(SerStreamError, match=r"average.npz: not a readable sum of weights \(.*\); --overwrite trains the split again"):
        WeightAverage(tmp_path, total_epochs=6, epochs=3, resumed_after=4)


def test_ctrl_c_during_training_is_one_line_saying_how_to_carry_on(tmp_path, capsys, monkeypatch):
    import training.train
    from training.__main__ import main

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.train, "run", interrupted)
    with pytest.raises(SystemExit) as stopped:
        main(["--out", str(tmp_path / "run")])
    assert stopped.value.code == 130
    assert capsys.readouterr().err.splitlines() == [
        "python -m training: interrupted; each split keeps its last whole epoch: run the same command with --resume to carry on"
    ]


def test_a_refusal_after_tensorflow_has_loaded_is_still_the_one_line_on_stderr(smoke_run, tiny_ravdess, tmp_path):
    """TensorFlow's start-up lines (oneDNN, no CUDA driver, cuInit) once came before the command's own answer."""
    import subprocess
    import sys

    out = tmp_path / "run"
    shutil.copytree(smoke_run.parent, out)
    command = [sys.executable, "-m", "training", "--data", str(tiny_ravdess), "--out", str(out), "--recipe", "paper", "--protocol", "random",
               "--epochs", "2", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache")]
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert finished.returncode == 2
    assert finished.stderr.splitlines() == [
        f"python -m training: error: --out {out / 'random'}: holds a run of this split (2 epochs); "
        "add --resume to carry it on, or --overwrite to train it again from epoch 1"
    ]


def test_tensorflows_start_up_lines_are_held_back_and_anything_else_its_import_writes_is_passed_on(tmp_path):
    """Stand-ins for keras and tensorflow that write to fd 2 on import as they do: only the line that is not start-up
    noise reaches stderr (a real import error must not be swallowed with the noise)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    written = {
        "keras": [b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
                  b"I0000 00:00:1733 12 cpu_feature_guard.cc:1] oneDNN custom operations are on. You may see slightly different results."],
        "tensorflow": [b"I0000 00:00:1733 12 cuda_executor.cc:1] Could not find cuda drivers on your machine, GPU will not be used.",
                       b"E0000 00:00:1733 12 loader.cc:1] a library that did not load"],
    }
    for name, lines in written.items():
        (tmp_path / name).mkdir()
        text = b"".join(line + b"\n" for line in lines)
        (tmp_path / name / "__init__.py").write_text(f"import os\nos.write(2, {text!r})\n")
    environment = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
    finished = subprocess.run([sys.executable, "-c", "import training.backend"], capture_output=True, text=True, env=environment, timeout=60)
    assert finished.returncode == 0 and finished.stderr.splitlines() == ["E0000 00:00:1733 12 loader.cc:1] a library that did not load"]


def test_a_data_set_missing_an_emotion_is_trained_with_a_warning_saying_which(tiny_ravdess, tmp_path, capsys):
    """Its 'mean per-class accuracy' was once over seven classes without a word."""
    from training.__main__ import main

    data = tmp_path / "no-surprise"
    shutil.copytree(tiny_ravdess, data)
    for clip in data.rglob("03-01-08-*"):
        clip.unlink()
    assert main(["--data", str(data), "--out", str(tmp_path / "run"), "--recipe", "paper", "--protocol", "random", "--epochs", "1",
                 "--batch-size", "8", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert f"warning {data}: no clips of surprised; mean per-class accuracy is over the other 7 emotions" in capsys.readouterr().err.splitlines()
    scored = json.loads((tmp_path / "run" / "random" / "metrics.json").read_text())["test_clean"]
    recalls = [value for key, value in scored.items() if key.startswith("recall_")]
    assert len(recalls) == 7 and scored["mean_per_class_accuracy"] == pytest.approx(np.mean(recalls))  # the figure, not only the warning


def three_actors(tiny_ravdess: Path, folder: Path) -> Path:
    """``tiny_ravdess`` with a third actor (actor 1's clips again): a held-out, a validation and a training speaker."""
    shutil.copytree(tiny_ravdess, folder)
    (folder / "Actor_03").mkdir()
    for clip in (folder / "Actor_01").iterdir():
        shutil.copy(clip, folder / "Actor_03" / clip.name.replace("-01.", "-03."))
    return folder


def test_a_run_logged_to_files_writes_each_message_on_one_line_and_every_file_it_leaves_out_on_stderr(tiny_ravdess, tmp_path, capsys):
    """Where stdout was not a terminal (``nohup … > log``) rich wrapped every line at 80 columns, splitting skipped
    files, epochs and results in two; a badly named file went to stdout, an unreadable one to stderr. A folder name
    with square brackets was read as rich markup: ``[old]`` vanished from the line, ``[/x]`` ended the run in a
    traceback; ``:cat:`` was printed as an emoji."""
    from training.__main__ import main

    data = three_actors(tiny_ravdess, tmp_path / "a-data-folder[/x]:cat:-whose-name-alone-is-longer-than-forty-characters")
    badly_named = data / "Actor_01" / "03-01-05-01-01-01.flac"
    shutil.copy(data / "Actor_01" / "03-01-05-01-02-01-01.flac", badly_named)
    unreadable = data / "Actor_02" / "03-01-05-02-01-02-02.wav"
    unreadable.write_bytes(b"not audio at all")
    assert main(["--data", str(data), "--out", str(tmp_path / "run"), "--recipe", "paper", "--protocol", "actors", "--folds", "3",
                 "--fold", "0", "--validation-actors", "1", "--epochs", "1", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache")]) == 0
    captured = capsys.readouterr()
    out, err = captured.out.splitlines(), captured.err.splitlines()
    assert f"skipped {badly_named}: expected 7 dash-separated fields, found 6" in err
    assert any(line.startswith(f"skipped {unreadable}: not a readable audio file") for line in err)
    assert not [line for line in out if "skipped" in line or "warning" in line]
    assert any(f" clips from {data}; computing features (" in line for line in out), out
    (epoch,) = [line for line in out if line.startswith("epoch 1/1")]
    assert len(epoch) > 80 and "val_mean_per_class_accuracy" in epoch and "val_clip_accuracy" in epoch
    (result,) = [line for line in out if ": test mean per-class accuracy" in line]
    assert len(result) > 80 and result.startswith("fold0-actors-") and " ONNX parity " in result


def test_a_resume_of_a_cosine_scheduled_run_to_other_epochs_is_refused_in_one_line(smoke_run, tiny_ravdess, tmp_path, capsys):
    """Carried on to more epochs, it once kept the learning-rate schedule of the epochs it started with while
    metrics.json recorded the new ones."""
    from training.__main__ import main
    from training.config import TrainConfig
    from training.train import run_identity

    out = tmp_path / "run"
    shutil.copytree(smoke_run, out / "random")
    state_file = out / "random" / "checkpoints" / "state.json"
    improved = TrainConfig(data=tiny_ravdess, out=out, recipe="improved", protocol="random", batch_size=8, cache_dir=tmp_path / "cache")
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps(dict(state, epochs=2, identity=run_identity(improved))))  # an improved run of 2 epochs
    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(tiny_ravdess), "--out", str(out), "--recipe", "improved", "--protocol", "random", "--epochs", "4", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache"), "--resume"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m training: error: --resume {out / 'random'}: its learning rate follows a cosine schedule over 2 epochs, not --epochs 4; "
        "resume with --epochs 2, or start a new --out with --init-from (a warm restart)"
    )
    assert json.loads(state_file.read_text())["epoch"] == state["epoch"]


def test_a_resume_names_the_same_data_folder_however_it_is_spelled(tiny_ravdess, tmp_path, monkeypatch):
    """`--data ../data` from another folder was once refused as other settings than the absolute path it was trained on."""
    from training.config import TrainConfig
    from training.train import identity_differences, run_identity

    absolute = run_identity(TrainConfig(data=tiny_ravdess, out=tmp_path / "run"))
    monkeypatch.chdir(tiny_ravdess / "Actor_01")
    relative = run_identity(TrainConfig(data=Path(".."), out=tmp_path / "run"))
    assert identity_differences(absolute, relative) == [] and identity_differences(dict(absolute, data=".."), relative) == []  # recorded as spelled, before it was resolved
    assert identity_differences(absolute, run_identity(TrainConfig(data=Path("."), out=tmp_path / "run"))) != []


def test_a_run_recorded_before_an_option_existed_resumes_as_the_same_run(tiny_ravdess, tmp_path):
    """Its identity lacks the newer option's key: that is no difference, or every older run would be refused."""
    from training.config import TrainConfig
    from training.train import identity_differences, run_identity

    now = run_identity(TrainConfig(data=tiny_ravdess, out=tmp_path / "run"))
    older = {key: value for key, value in now.items() if key != "model_seed"}  # as recorded before --model-seed
    assert identity_differences(older, now) == []
    assert identity_differences(dict(older, seed=7), now) == [f"--seed 7 → {now['seed']!r}"]


def test_an_interrupted_overwrite_leaves_none_of_the_earlier_runs_results(smoke_run, tiny_ravdess, tmp_path, monkeypatch):
    """Stopped after its first epochs, --overwrite once left the old metrics.json, model and confusion matrices beside
    the new checkpoints, where they passed for the new run's."""
    import keras

    from training.__main__ import main

    out = tmp_path / "run"
    shutil.copytree(smoke_run, out / "random")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "fit", interrupted)
    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(tiny_ravdess), "--out", str(out), "--recipe", "paper", "--protocol", "random", "--epochs", "2", "--batch-size", "8",
              "--cache-dir", str(tmp_path / "cache"), "--overwrite"])
    assert stopped.value.code == 130
    assert sorted(path.name for path in (out / "random").iterdir()) == ["checkpoints"]


def test_a_run_killed_between_writing_its_checkpoint_and_its_state_resumes_without_training_an_epoch_twice(tiny_ravdess, tmp_path, monkeypatch):
    """last.keras was renamed into place before state.json: a kill between the two left the weights of epoch 2 with
    the state of epoch 1, and the resumed run trained epoch 2 again (its weights then differed from the straight run's)."""
    import keras

    import training.train
    from training.__main__ import main

    command = ["--data", str(tiny_ravdess), "--recipe", "paper", "--protocol", "random", "--batch-size", "8", "--max-clips", "3",
               "--cache-dir", str(tmp_path / "cache"), "--epochs", "3"]
    assert main([*command, "--out", str(tmp_path / "straight")]) == 0
    real_replace, renames = os.replace, []

    def killed_before_the_second_state(source, target):
        renames.append(Path(target).name)
        if renames.count("state.json") == 2 and Path(target).name == "state.json":
            raise KeyboardInterrupt  # after epoch 2's checkpoint, before its state
        real_replace(source, target)

    monkeypatch.setattr(training.train.os, "replace", killed_before_the_second_state)
    with pytest.raises(SystemExit):
        main([*command, "--out", str(tmp_path / "killed")])
    monkeypatch.setattr(training.train.os, "replace", real_replace)
    checkpoints = tmp_path / "killed" / "random" / "checkpoints"
    assert json.loads((checkpoints / "state.json").read_text())["epoch"] == 1  # the state lagging its weights
    assert main([*command, "--out", str(tmp_path / "killed"), "--resume"]) == 0
    assert json.loads((checkpoints / "state.json").read_text())["epoch"] == 3
    assert len(json.loads((checkpoints / "state.json").read_text())["history"]["loss"]) == 3  # one entry an epoch
    straight, resumed = (keras.models.load_model(tmp_path / run / "random" / "checkpoints" / "last.keras").get_weights() for run in ("straight", "killed"))
    for ours, theirs in zip(straight, resumed, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_a_run_interrupted_and_resumed_ends_with_the_weights_of_the_uninterrupted_run(tiny_ravdess, tmp_path):
    """Keras' own random state (dropout masks) was not seeded on resume: the resumed run drew other masks."""
    import keras

    from training.__main__ import main

    command = ["--data", str(tiny_ravdess), "--recipe", "paper", "--protocol", "random", "--batch-size", "8", "--max-clips", "3", "--cache-dir", str(tmp_path / "cache")]
    assert main([*command, "--out", str(tmp_path / "straight"), "--epochs", "2"]) == 0
    assert main([*command, "--out", str(tmp_path / "resumed"), "--epochs", "1"]) == 0
    keras.utils.set_random_seed(12345)  # what else ran in this process before the resume must not matter
    assert main([*command, "--out", str(tmp_path / "resumed"), "--epochs", "2", "--resume"]) == 0
    straight, resumed = (keras.models.load_model(tmp_path / run / "random" / "checkpoints" / "last.keras").get_weights() for run in ("straight", "resumed"))
    for ours, theirs in zip(straight, resumed, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def resume_refusal(smoke_run, tiny_ravdess, tmp_path, capsys, *options: str, data=None) -> str:
    """The one line a --resume of the smoke run (copied; ``options`` added) is refused with."""
    from training.__main__ import main

    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(data or tiny_ravdess), "--out", str(tmp_path / "run"), "--recipe", "paper", "--protocol", "random",
              "--batch-size", "8", "--cache-dir", str(tmp_path / "cache"), "--resume", *options])
    assert stopped.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


def test_a_resume_on_a_data_folder_whose_clips_changed_is_refused_not_trained_on_another_split(smoke_run, tiny_ravdess, tmp_path, capsys):
    """The run recorded the folder's path, not its clips: after a clip was added the split was drawn anew, and clips it
    had tested on were trained on (and the other way round), without a word."""
    data = tmp_path / "data"
    shutil.copytree(tiny_ravdess, data)
    next(data.glob("Actor_01/*.wav")).unlink()  # the folder's clips change
    shutil.copytree(smoke_run, tmp_path / "run" / "random")
    state_file = tmp_path / "run" / "random" / "checkpoints" / "state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "identity": {**state["identity"], "data": str(data.resolve())}}))  # same path, other clips
    assert resume_refusal(smoke_run, tiny_ravdess, tmp_path, capsys, "--epochs", "3", data=data) == (
        f"python -m training: error: --resume {tmp_path / 'run' / 'random'}: the data folder no longer gives the clips this split was "
        "trained, validated and tested on (clips were added, removed or renamed); train it again with --overwrite, or into another --out"
    )


def test_a_resume_of_a_finished_split_whose_checkpoints_are_gone_is_refused_not_trained_again(smoke_run, tiny_ravdess, tmp_path, capsys):
    """Without state.json it deleted the split's model and metrics and trained it again from epoch 1."""
    shutil.copytree(smoke_run, tmp_path / "run" / "random")
    shutil.rmtree(tmp_path / "run" / "random" / "checkpoints")
    assert resume_refusal(smoke_run, tiny_ravdess, tmp_path, capsys, "--epochs", "2") == (
        f"python -m training: error: --resume {tmp_path / 'run' / 'random'}: holds a finished run without its checkpoints, so it cannot "
        "carry on; --overwrite trains the split again from epoch 1"
    )
    assert (tmp_path / "run" / "random" / "model.onnx").is_file()


def test_a_resume_to_fewer_epochs_than_were_run_is_refused(smoke_run, tiny_ravdess, tmp_path, capsys):
    """Accepted, metrics.json recorded the lower figure beside the weights of the higher."""
    shutil.copytree(smoke_run, tmp_path / "run" / "random")
    assert resume_refusal(smoke_run, tiny_ravdess, tmp_path, capsys, "--epochs", "1") == (
        f"python -m training: error: --resume {tmp_path / 'run' / 'random'}: it has run 2 epochs, more than --epochs 1; give --epochs 2 or more"
    )


def test_a_teacher_that_learnt_from_a_speaker_the_split_holds_out_is_refused(smoke_run, tiny_ravdess, tmp_path, capsys):
    """The split's name and seed were checked, not its speakers: a teacher trained on the student's validation actor
    was taken (its knowledge of that voice then picked the student's best epoch)."""
    from training.__main__ import main

    for held_out in (1, 2):  # whichever actor fold 0 holds out, its teacher heard both
        folder = tmp_path / "teachers" / f"fold0-actors-{held_out:02d}"
        folder.mkdir(parents=True)
        shutil.copy(smoke_run / "model.onnx", folder / "model.onnx")
        metadata = json.loads((smoke_run / "model.json").read_text())
        metadata["metrics"] = {**metadata["metrics"], "split": folder.name, "training": {**metadata["metrics"]["training"], "train_actors": [1, 2]}}
        (folder / "model.json").write_text(json.dumps(metadata))
    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(tiny_ravdess), "--out", str(tmp_path / "student"), "--recipe", "paper", "--protocol", "actors", "--folds", "2",
              "--fold", "0", "--validation-actors", "0", "--keep", "last", "--epochs", "1", "--batch-size", "8",
              "--cache-dir", str(tmp_path / "cache"), "--teacher", str(tmp_path / "teachers" / "{split}" / "model.onnx")])
    assert stopped.value.code == 2
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.startswith(f"python -m training: error: --teacher {tmp_path / 'teachers'}/fold0-actors-0") and line.endswith(
        ", whom this split holds out (for validation or test); train the teacher with the same --validation-actors")
    assert ": learnt from actor " in line


@pytest.mark.parametrize(
    "options, reason",
    [
        (["--protocol", "random", "--folds", "3"], "argument --folds: only with --protocol actors (the 'random' protocol holds out no speakers)"),
        (["--average-epochs", "3"], "argument --average-epochs: 3: only with --keep average"),
        (["--protocol", "all", "--keep", "last", "--patience", "5"], "argument --patience: 5: no speakers are kept for validation, so nothing stops a run early"),
    ],
    ids=["folds", "average-epochs", "patience"],
)
def test_an_option_that_would_be_ignored_is_refused_in_one_line(tmp_path, capsys, options, reason):
    from training.__main__ import main

    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(tmp_path), "--out", str(tmp_path / "run"), *options])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"python -m training: error: {reason}"


def test_an_export_that_differs_from_its_network_is_refused_not_recorded_and_shipped(smoke_run, monkeypatch):
    """The parity was only written into metrics.json: a broken export (or NaN) would have been shipped."""
    import keras

    import training.export

    network = keras.models.load_model(smoke_run / "model.keras")
    inputs = np.zeros((2, 260, 270, 1), np.float32)
    assert training.export.checked_parity(network, smoke_run / "model.onnx", inputs) <= 1e-4
    for difference in (2e-4, float("nan")):
        monkeypatch.setattr(training.export, "parity", lambda model, path, inputs, d=difference: d)
        with pytest.raises(SerStreamError, match=r"the ONNX export differs from the Keras model by .+ \(bound 1e-04\); the export is broken$"):
            training.export.checked_parity(network, smoke_run / "model.onnx", inputs)


def test_an_export_off_by_more_than_the_bound_on_a_single_output_is_refused(shipped_model):
    """The bound is on every output, not on their mean: 0.01 off on one of 16 windows' 128 outputs averages 8e-5."""
    from types import SimpleNamespace

    import onnxruntime

    import training.export
    from ser_stream.model import INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME

    inputs = np.random.default_rng(0).random((16, *INPUT_SHAPE), dtype=np.float32)
    exported = onnxruntime.InferenceSession(str(shipped_model), providers=["CPUExecutionProvider"]).run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]

    class OffOnOneOutput:  # stands in for the Keras network: the export's outputs but for one, 0.01 off
        def __call__(self, inputs: np.ndarray, training: bool = False) -> SimpleNamespace:
            outputs = exported.copy()
            outputs[3, 5] += 0.01
            return SimpleNamespace(numpy=lambda: outputs)

    with pytest.raises(SerStreamError, match=r"the ONNX export differs from the Keras model by 1\.00e-02 on test windows \(bound 1e-04\); the export is broken$"):
        training.export.checked_parity(OffOnOneOutput(), shipped_model, inputs)


def test_a_run_that_early_stopping_ends_says_so_and_its_metrics_record_it(smoke_run, tiny_ravdess, tmp_path, capsys, monkeypatch):
    """A run stopped short of --epochs without a word, and its metrics.json did not say it had."""
    import training.train
    from training.__main__ import main

    def validation_that_never_improves(self, epoch, logs=None):
        logs["val_mean_per_class_accuracy"] = logs["val_clip_accuracy"] = 0.5

    monkeypatch.setattr(training.train.ClipValidation, "on_epoch_end", validation_that_never_improves)
    data = three_actors(tiny_ravdess, tmp_path / "data")
    command = ["--data", str(data), "--out", str(tmp_path / "run"), "--recipe", "paper", "--protocol", "actors", "--folds", "3", "--fold", "0",
               "--validation-actors", "1", "--epochs", "4", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache")]
    assert main([*command, "--patience", "2"]) == 0
    (split,) = (tmp_path / "run").glob("fold0-*")
    assert (
        f"{split.name}: early stopping ended the run after epoch 3 of 4 (--patience 2): validation mean per-class accuracy 0.500, "
        "best 0.500 at epoch 1, none better in the 2 epochs since"
    ) in capsys.readouterr().out.splitlines()
    metrics = json.loads((split / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and metrics["training"]["stopped_early"] is True
    assert metrics["training"]["patience"] == 2 and metrics["training"]["epochs_without_gain"] == 2
    # resumed with the --patience that stopped it, or a smaller one, it trains no more; the record says what the command asked and what stopped it
    assert main([*command, "--patience", "2", "--resume"]) == 0
    assert json.loads((split / "metrics.json").read_text())["epochs_run"] == 3
    assert main([*command, "--patience", "1", "--resume"]) == 0
    metrics = json.loads((split / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and metrics["training"]["patience"] == 1 and metrics["training"]["epochs_without_gain"] == 2
    assert json.loads((smoke_run / "metrics.json").read_text())["training"]["stopped_early"] is False  # it ran its epochs


def test_a_licence_note_names_each_actor_once_and_claims_none_that_are_not_recorded():
    """Actors listed twice or out of order are one run each; a model whose metrics record no actors makes no claim."""
    from training.export import RAVDESS_CITATION, ravdess_note

    assert ravdess_note([3, 1, 2, 2, 5], [7, 7]) == f"Trained on RAVDESS speech, actors 01-03, 05, validated on actors 07 {RAVDESS_CITATION}"
    assert ravdess_note([], []) == f"Trained on RAVDESS speech {RAVDESS_CITATION}"


def test_an_exported_network_declares_opset_17_or_later_and_keeps_its_own_record_of_the_window_its_metadata_gives(smoke_run):
    import onnx

    from ser_stream.windows import WindowConfig

    model = smoke_run / "model.onnx"
    opsets = {opset.domain: opset.version for opset in onnx.load(str(model)).opset_import}
    assert opsets.get("", opsets.get("ai.onnx", 0)) >= 17
    metadata = load_metadata(model)
    assert (metadata.window_seconds, metadata.hop_seconds) == (WindowConfig().window_seconds, WindowConfig().hop_seconds) == (2.0, 0.5)
    assert trained_record(model) == {"labels": list(EMOTIONS), "features": metadata.features, "window_seconds": 2.0}


def test_the_metadata_written_beside_a_model_records_its_window_hop_hash_and_the_actors_it_learnt_and_validated_on(tmp_path):
    from ser_stream.features import feature_parameters
    from ser_stream.model import file_sha256
    from ser_stream.windows import WindowConfig
    from training.export import ravdess_note, write_metadata

    model = tmp_path / "model.onnx"
    model.write_bytes(b"network")
    metrics = {"training": {"train_actors": [1, 2], "validation_actors": [3]}}
    written = write_metadata(model, WindowConfig(1.5, 0.25), "paper", "actors", metrics, "RAVDESS")
    assert json.loads(metadata_path(model).read_text()) == json.loads(written.to_json())
    assert (written.window_seconds, written.hop_seconds, written.sha256) == (1.5, 0.25, file_sha256(model))
    assert (written.labels, written.features, written.recipe, written.protocol, written.training_data) == (list(EMOTIONS), feature_parameters(), "paper", "actors", "RAVDESS")
    assert written.licence == ravdess_note([1, 2], [3]) and "validated on actors 03" in written.licence


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"folds": 1}, "folds: 1 must be at least 2"),
        ({"fold": 5}, "fold: 5 is not one of the 5 folds (0 to 4)"),
        ({"patience": 0}, "patience: 0 must be at least 1"),
        ({"average_epochs": 0}, "average_epochs: 0 must be at least 1"),
        ({"training_actors": 0}, "training_actors: 0 must be at least 1"),
        ({"validation_actors": -1}, "validation_actors: -1 must be at least 0"),
        ({"resume": True, "overwrite": True}, "overwrite: with --resume: carry the run on, or train it again from epoch 1, not both"),
        ({"keep": "average", "epochs": 4, "patience": 3, "average_epochs": 2}, "patience: 3 is below --epochs (4): early stopping could end the run"),
    ],
)
def test_a_training_configuration_one_past_each_limit_is_refused_when_made(fields, message):
    """Each limit at the value just past it: one fold, the fold after the last, no patience, no epochs averaged, no
    training or fewer than no validation speakers, --resume with --overwrite, a patience one below --epochs."""
    from training.config import TrainConfig, TrainConfigError

    with pytest.raises(TrainConfigError) as refused:
        TrainConfig(data=Path("unused"), out=Path("unused"), **fields)
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize(
    "fields",
    [
        {"fold": 4, "folds": 5},
        {"folds": 2},
        {"keep": "average", "epochs": 3, "patience": 3, "average_epochs": 3},  # every epoch averaged, nothing stops it early
        {"teachers": ("runs/{split}/model.onnx",), "distill_weight": 1.0},  # each split's own teacher, its output the whole target
        {"frequency_warp": 0.0, "distill_weight": 0.0},
    ],
)
def test_a_training_configuration_at_each_limit_is_accepted(fields):
    from training.config import TrainConfig

    config = TrainConfig(data=Path("unused"), out=Path("unused"), **fields)
    assert all(getattr(config, name) == value for name, value in fields.items())


def test_a_training_configuration_made_in_code_has_the_commands_defaults(tmp_path, monkeypatch):
    """Code that builds a TrainConfig with only its folders gets what the command does with only its folders."""
    import training.train
    from training.__main__ import main

    asked: list[TrainConfig] = []
    monkeypatch.setattr(training.train, "run", asked.append)
    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 0
    assert asked == [TrainConfig(data=tmp_path, out=tmp_path / "run")]
    assert (asked[0].epochs, asked[0].patience, asked[0].validation_actors, asked[0].keep) == (60, 15, 2, "best")


def test_the_paper_recipe_is_the_published_network_and_training_and_the_improved_one_is_as_documented():
    """docs/results.md: the paper's network (no batch normalisation, stride 1, flip/zoom/shear, Adam at 1e-3) and ours
    (batch normalisation, stride 2, telephone and noisy variants, label smoothing 0.05, class weights, a cosine schedule from 2e-3)."""
    paper, improved = RECIPES["paper"], RECIPES["improved"]
    assert (paper.batch_norm, paper.first_stride, paper.paper_augmentation, paper.variants) == (False, 1, True, ("clean",))
    assert (paper.learning_rate, paper.cosine_decay, paper.label_smoothing, paper.class_weights) == (1e-3, False, 0.0, False)
    assert (paper.mixup_alpha, paper.spec_augment, paper.sgd_momentum, paper.weight_decay) == (0.0, False, 0.0, 0.0)
    assert (improved.batch_norm, improved.first_stride, improved.paper_augmentation, improved.variants) == (True, 2, False, ("clean", "telephone", "noisy"))
    assert (improved.learning_rate, improved.cosine_decay, improved.label_smoothing, improved.class_weights) == (2e-3, True, 0.05, True)
    assert (improved.mixup_alpha, improved.spec_augment, improved.windows_per_clip, improved.frequency_warp) == (0.0, False, 1, 0.0)


def test_each_experimental_recipe_is_the_improved_one_with_only_what_its_name_says_changed():
    changes = {
        "improved-cmn": {"spectral_mean_channel": True},
        "improved-mel": {"mel_rows": True},
        "improved-specaug": {"spec_augment": True},
        "improved-mixup": {"mixup_alpha": 0.2},
        "improved-mixup05": {"mixup_alpha": 0.5},
        "improved-advspk": {"speaker_adversary": 0.3},
        "improved-spknorm": {"speaker_profiles_removed": True},
        "improved-wide": {"filters": (64, 128, 64)},
        "improved-paperaug": {"paper_augmentation": True},
        "improved-fine": {"first_stride": 1},
        "improved-speed": {"variants": ("clean", "telephone", "noisy", "slower", "faster")},
        "improved-narrow": {"filters": (16, 32, 16)},
        "improved-freqmix": {"style_mixing": "frequency"},
        "improved-mixstyle": {"style_mixing": "channel"},
        "improved-wd": {"weight_decay": 0.5},
        "improved-sgd": {"sgd_momentum": 0.9, "learning_rate": 0.05},
    }
    assert sorted(changes) == sorted(set(RECIPES) - {"paper", "improved"})
    for name, changed in changes.items():
        assert RECIPES[name] == replace(RECIPES["improved"], name=name, **changed), name


def test_training_windows_are_weighted_by_how_rare_their_emotion_is_where_the_recipe_asks_and_every_clip_is_trained_each_epoch():
    """Class weights: total / (8 × the emotion's clips), so each emotion weighs alike (the improved recipe); the
    paper's weighs every window 1. A last batch shorter than --batch-size is trained too."""
    from training.train import TrainingBatches

    features = clean_windows(np.zeros((5, 260, 270)), 5)
    features.clip_labels[:] = [0, 0, 0, 1, 2]  # three neutral clips, one calm, one happy
    config = TrainConfig(data=Path("unused"), out=Path("unused"), batch_size=2)
    for recipe, expected in (("improved", {0: 5 / 24, 1: 5 / 8, 2: 5 / 8}), ("paper", {0: 1.0, 1: 1.0, 2: 1.0})):
        batches = TrainingBatches(features, np.arange(5), RECIPES[recipe], config)
        assert len(batches) == 3
        seen = []
        for index in range(len(batches)):
            _, targets, weights = batches[index]
            seen += [(int(np.argmax(target)), float(weight)) for target, weight in zip(targets, weights)]
        assert sorted(label for label, _ in seen) == [0, 0, 0, 1, 2]  # every clip once
        assert all(weight == pytest.approx(expected[label]) for label, weight in seen), recipe


def test_balanced_folds_without_validation_speakers_validate_on_nobody_and_the_first_voices_are_a_man_then_a_woman():
    from training.train import first_of_each_voice, make_splits

    features = clean_windows(np.zeros((20, 260, 270)), 20)  # one clip for each of actors 1-20
    for split in make_splits(features, TrainConfig(data=Path("unused"), out=Path("unused"), balance_voices=True, validation_actors=0, keep="last")):
        assert len(split.validation) == 0 and len(split.train) == 16
    assert first_of_each_voice([4, 6, 3, 8, 5]) == [3, 4]  # RAVDESS: odd-numbered actors are male
    assert first_of_each_voice([2, 4]) == [2]


@pytest.mark.parametrize(
    "actors, fields, reason",
    [
        (3, {"folds": 3}, "--validation-actors 2: of 3 actors, a fold holds out 1 and validates on 2, which leaves none to train on"),
        (4, {"folds": 3}, "--validation-actors 2: of 4 actors, a fold holds out 2 and validates on 2, which leaves none to train on"),  # the largest fold
    ],
)
def test_folds_that_would_leave_exactly_nobody_to_train_on_are_refused_before_features(actors, fields, reason):
    from training.train import check_speakers

    config = TrainConfig(data=Path("unused"), out=Path("unused"), **fields)
    with pytest.raises(SerStreamError) as refused:
        check_speakers(set(range(1, actors + 1)), config)
    assert str(refused.value) == reason
    check_speakers(set(range(1, 6)), config)  # five: folds of 2, 2 and 1, validated on 2, leave one or more to train on


def test_weight_averaging_carried_on_from_the_first_epoch_the_new_average_needs_takes_that_checkpointed_epoch_in(tmp_path):
    """Run 5 of 6 epochs averaging 3 (epochs 4-5 summed), carried on to 7: the last 3 of 7 start at epoch 5, the
    checkpointed one, so the sum restarts from it rather than being refused."""
    from training.train import WeightAverage

    averaging = WeightAverage(tmp_path, total_epochs=6, epochs=3, resumed_after=None)
    for epoch in (3, 4):
        averaging.add([np.full(2, float(epoch))], epoch)
    carried_on = WeightAverage(tmp_path, total_epochs=7, epochs=3, resumed_after=5)
    carried_on.catch_up([np.full(2, 4.0)], completed_epochs=5)
    for epoch in (5, 6):
        carried_on.add([np.full(2, float(epoch))], epoch)
    assert carried_on.count == 3 and np.allclose(carried_on.averaged()[0], 5.0)  # the mean of epochs 5, 6 and 7


def test_a_run_scores_and_exports_its_best_validation_epochs_weights_not_its_last(tiny_ravdess, tmp_path, capsys, monkeypatch):
    """--keep best (the default where it validates): the network saved, scored and exported is the best epoch's. Its
    last epoch, the --patience'th without a better score, is its last of --epochs: it ran every epoch, not stopped early."""
    import keras

    import training.train
    from training.__main__ import main

    def validation_that_only_gets_worse(self, epoch, logs=None):
        logs["val_mean_per_class_accuracy"] = logs["val_clip_accuracy"] = 1.0 / (epoch + 1)

    monkeypatch.setattr(training.train.ClipValidation, "on_epoch_end", validation_that_only_gets_worse)
    assert main(["--data", str(three_actors(tiny_ravdess, tmp_path / "data")), "--out", str(tmp_path / "run"), "--recipe", "paper",
                 "--protocol", "actors", "--folds", "3", "--fold", "0", "--validation-actors", "1", "--epochs", "2", "--patience", "1",
                 "--batch-size", "8", "--cache-dir", str(tmp_path / "cache")]) == 0
    (split,) = (tmp_path / "run").glob("fold0-*")
    metrics = json.loads((split / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["training"]["stopped_early"] is False
    assert "early stopping" not in capsys.readouterr().out
    assert metrics["weights"] == "best validation epoch" and metrics["best_epoch"] == 1 and metrics["validation_mean_per_class_accuracy"] == 1.0
    kept, best, last = (keras.models.load_model(path).get_weights() for path in (split / "model.keras", split / "checkpoints" / "best.keras", split / "checkpoints" / "last.keras"))
    assert all(np.array_equal(ours, theirs) for ours, theirs in zip(kept, best, strict=True))  # the paper's network: no batch norm to re-estimate
    assert not all(np.array_equal(ours, theirs) for ours, theirs in zip(kept, last, strict=True))


def test_a_resumed_run_counts_the_epochs_it_had_waited_for_a_better_score_towards_its_patience(tiny_ravdess, tmp_path, monkeypatch):
    """Best at epoch 1, 2 epochs run, --patience 3, carried on to 6: early stopping ends it after epoch 4, as it would
    have ended the uninterrupted run (waiting afresh from the resume would run to epoch 5)."""
    import training.train
    from training.__main__ import main

    def validation_that_never_improves(self, epoch, logs=None):
        logs["val_mean_per_class_accuracy"] = logs["val_clip_accuracy"] = 0.5

    monkeypatch.setattr(training.train.ClipValidation, "on_epoch_end", validation_that_never_improves)
    command = ["--data", str(three_actors(tiny_ravdess, tmp_path / "data")), "--out", str(tmp_path / "run"), "--recipe", "paper", "--protocol", "actors",
               "--folds", "3", "--fold", "0", "--validation-actors", "1", "--patience", "3", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache")]
    assert main([*command, "--epochs", "2"]) == 0
    assert main([*command, "--epochs", "6", "--resume"]) == 0
    (split,) = (tmp_path / "run").glob("fold0-*")
    metrics = json.loads((split / "metrics.json").read_text())
    assert metrics["epochs_run"] == 4 and metrics["training"]["stopped_early"] is True and metrics["training"]["epochs_without_gain"] == 3


def test_a_run_interrupted_after_its_last_epoch_is_finished_by_resume_without_training_again(tiny_ravdess, tmp_path, monkeypatch):
    """Ctrl-C while the last epoch's network is scored and exported: the same command with --resume exports it. A
    random split with nothing to validate on keeps (and says it keeps) the last epoch's weights, --keep best or not."""
    import training.train
    from training.__main__ import main

    command = ["--data", str(tiny_ravdess), "--out", str(tmp_path / "run"), "--recipe", "paper", "--protocol", "random", "--epochs", "1",
               "--batch-size", "8", "--max-clips", "3", "--cache-dir", str(tmp_path / "cache")]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(training.train, "export_onnx", interrupted)
        with pytest.raises(SystemExit) as stopped:
            main(command)
    assert stopped.value.code == 130 and not (tmp_path / "run" / "random" / "model.onnx").exists()
    assert main([*command, "--resume"]) == 0
    metrics = json.loads((tmp_path / "run" / "random" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and metrics["weights"] == "last epoch"  # 3 clips an emotion leave none to validate on
    assert json.loads((tmp_path / "run" / "random" / "checkpoints" / "state.json").read_text())["epoch"] == 1
    assert (tmp_path / "run" / "random" / "model.onnx").is_file()


def test_a_teacher_of_the_same_split_drawn_with_another_seed_is_refused_in_one_line(smoke_run, tiny_ravdess, tmp_path, capsys):
    """Another --seed draws another random split under the same name: the teacher may have trained on its test clips."""
    from training.__main__ import main

    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(tiny_ravdess), "--out", str(tmp_path / "student"), "--recipe", "paper", "--protocol", "random", "--seed", "1",
              "--epochs", "1", "--max-clips", "3", "--cache-dir", str(tmp_path / "cache"), "--teacher", str(smoke_run / "model.onnx")])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m training: error: --teacher {smoke_run / 'model.onnx'}: trained on split 'random' (seed 0), not 'random' (seed 1); "
        "it may have heard this split's held-out speakers"
    )
    assert not (tmp_path / "student" / "random").exists()


def test_validation_scores_each_epoch_by_whole_clips_mean_per_class_accuracy_and_their_accuracy():
    """What picks the best epoch and stops a run early is the paper's figure, not plain accuracy: a network that
    calls every clip neutral, on three neutral clips and a calm one, scores 0.5 (neutral 1, calm 0), accuracy 0.75."""
    import keras

    from training.train import ClipValidation

    features = clean_windows(np.zeros((8, 260, 270)), 4)  # two windows a clip
    features.clip_labels[:] = [0, 0, 0, 1]
    always_neutral = keras.Sequential([keras.Input((260, 270, 1)), keras.layers.GlobalAveragePooling2D(),
                                       keras.layers.Dense(8, activation="softmax", kernel_initializer="zeros",
                                                          bias_initializer=keras.initializers.Constant([5.0] + [0.0] * 7))])
    validation = ClipValidation(features, np.arange(4), np.arange(4))
    validation.set_model(always_neutral)
    validation.on_train_begin()
    logs: dict[str, float] = {}
    validation.on_epoch_end(0, logs)
    assert logs == {"val_mean_per_class_accuracy": 0.5, "val_clip_accuracy": 0.75}


def test_a_split_folder_holding_only_a_finished_runs_metrics_is_refused_without_resume_or_overwrite(smoke_run, tiny_ravdess, tmp_path, capsys):
    """Its model.onnx moved away (shipped), its checkpoints deleted: the metrics are still a run's, not to be replaced unasked."""
    from training.__main__ import main

    (tmp_path / "run" / "random").mkdir(parents=True)
    shutil.copy(smoke_run / "metrics.json", tmp_path / "run" / "random" / "metrics.json")
    with pytest.raises(SystemExit) as stopped:
        main(["--data", str(tiny_ravdess), "--out", str(tmp_path / "run"), "--recipe", "paper", "--protocol", "random", "--epochs", "2",
              "--batch-size", "8", "--cache-dir", str(tmp_path / "cache")])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m training: error: --out {tmp_path / 'run' / 'random'}: holds a run of this split (a finished run); "
        "add --resume to carry it on, or --overwrite to train it again from epoch 1"
    )
    assert (tmp_path / "run" / "random" / "metrics.json").read_bytes() == (smoke_run / "metrics.json").read_bytes()
