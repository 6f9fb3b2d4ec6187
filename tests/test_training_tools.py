"""The tools around a trained model (quantize, score, ensemble, ship): they use the model's own window, and refuse in
one line, before any work or write, what would overwrite a model or drop or mislabel evidence."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ser_stream import EMOTIONS
from ser_stream.model import load_metadata, metadata_path
from tests.conftest import refusal

pytestmark = pytest.mark.slow


def model_copy(source: Path, to: Path, **metadata_changes: object) -> Path:
    """``source`` and its metadata copied to ``to``, with these metadata fields changed; another ``window_seconds``
    goes into the file's own record too (and its hash into the metadata), as a network trained on it would have."""
    shutil.copy(source, to)
    metadata = json.loads(metadata_path(source).read_text())
    if "window_seconds" in metadata_changes:
        import onnx

        from ser_stream.model import file_sha256
        from training.contract import record_trained_contract

        proto = onnx.load(str(to))
        record_trained_contract(proto, float(metadata_changes["window_seconds"]))  # type: ignore[arg-type]
        onnx.save(proto, str(to))
        metadata_changes = {**metadata_changes, "sha256": file_sha256(to)}
    metadata_path(to).write_text(json.dumps(dict(metadata, **metadata_changes)))
    return to


def held_out_copy(source: Path, to: Path, **metadata_changes: object) -> Path:
    """``source`` copied with metadata saying it learnt from actor 3 alone, so both of the tiny set's actors are held out:
    the smoke model heard them both, and the tools refuse to score or test a model on a speaker it heard."""
    metrics = json.loads(metadata_path(source).read_text())["metrics"]
    training = dict(metrics["training"], train_actors=[3], validation_actors=[])
    return model_copy(source, to, metrics=dict(metrics, training=training), **metadata_changes)


def held_out_network(member0: Path, folder: Path) -> Path:
    """A real trained network other than the smoke model: the shipped model's first member (``shipped_member0``), with
    metadata saying it learnt from actor 3 alone (the shipped networks heard every actor, and the tools refuse to score
    them on one)."""
    return held_out_copy(member0, folder / "shipped-member0.onnx")


def test_quantising_calibrates_on_windows_cut_the_way_the_model_cuts_them(smoke_run, tiny_ravdess, tmp_path):
    from ser_stream.audiofile import read_audio
    from ser_stream.clips import clip_spectrograms
    from ser_stream.windows import WindowConfig
    from training.quantize import main as quantize_main

    model = held_out_copy(smoke_run / "model.onnx", tmp_path / "short-windows.onnx", window_seconds=1.0, hop_seconds=0.25)
    out = tmp_path / "short-windows.int8.onnx"
    assert quantize_main([str(model), "--data", str(tiny_ravdess), "--test-actors", "2", "--calibration-clips", "16", "--repeats", "1", "--out", str(out)]) == 0
    calibration_clips = sorted((tiny_ravdess / "Actor_01").iterdir())  # all of actor 1's, so the count does not depend on the draw
    own, default = (sum(len(clip_spectrograms(*read_audio(path), window)) for path in calibration_clips) for window in (WindowConfig(1.0, 0.25), WindowConfig()))
    assert own > default
    assert json.loads(out.with_name(out.stem + ".quantization.json").read_text())["calibration_windows"] == own


@pytest.mark.parametrize(
    "options, reason",
    [
        (["--out", "{model}"], "argument --out: {model}: is the model itself; the int8 model needs a file of its own"),
        (["--out", "{tmp}/int8"], "argument --out: {tmp}/int8: not a .onnx file to write"),
        (["--calibration-clips", "0"], "argument --calibration-clips: 0 must be at least 1"),
        (["--repeats", "0"], "argument --repeats: 0 must be at least 1"),
        (["--test-actors", "2", "99"], "{data}: no clips of actor(s) 99"),
        (["--test-actors", "1", "2"], "{data}: 0 clip(s) of actors other than the test actors, --calibration-clips asks for 8; ask for fewer"),
        (["--calibration-clips", "17"], "{data}: 16 clip(s) of actors other than the test actors, --calibration-clips asks for 17; ask for fewer"),
    ],
    ids=["out-is-the-model", "out-not-onnx", "no-calibration-clips", "no-repeats", "absent-test-actor", "nothing-to-calibrate-on", "too-few-to-calibrate-on"],
)
def test_quantising_refuses_an_out_that_is_the_model_and_counts_or_actors_it_cannot_use_before_writing(smoke_run, tiny_ravdess, tmp_path, capsys, options, reason):
    model = held_out_copy(smoke_run / "model.onnx", tmp_path / "model.onnx")
    before = model.read_bytes()
    arguments = [str(model), "--data", str(tiny_ravdess), "--test-actors", "2", "--calibration-clips", "8", "--repeats", "1"]
    arguments += [option.format(model=model, tmp=tmp_path) for option in options]  # argparse keeps the last of a repeated option
    line = refusal("training.quantize", arguments, capsys)
    assert line == "python -m training.quantize: error: " + reason.format(model=model, tmp=tmp_path, data=tiny_ravdess)
    assert model.read_bytes() == before and load_metadata(model).sha256
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.json", "model.onnx"]


@pytest.mark.parametrize(
    "options, reason",
    [
        (["--model", "{other}"], "{other}: window 1.5 s / hop 0.5 s differs from {model}'s 2.0 s / 0.5 s; an ensemble needs one window"),
        (["--hop", "0"], "--hop 0.0: hop of 0.0 s must be at least 0.01 s and at most the window"),
        (["--hop", "5"], "--hop 5.0: hop of 5.0 s must be at least 0.01 s and at most the window"),
        (["--out", "{tmp}"], "argument --out: {tmp}: not a .json file to write"),
        (["--out", "{tmp}/notes.txt/report.json"], "argument --out: {tmp}/notes.txt/report.json: {tmp}/notes.txt is a file, not a folder to write it in"),
        (["--out", "{tmp}/report.onnx"], "argument --out: {tmp}/report.onnx: not a .json file to write"),
    ],
    ids=["models-with-other-windows", "hop-zero", "hop-beyond-the-window", "out-a-folder", "out-under-a-file", "out-not-json"],
)
def test_scoring_refuses_models_with_other_windows_an_impossible_hop_or_an_unwritable_report_before_scoring(smoke_run, tiny_ravdess, tmp_path, capsys, monkeypatch, options, reason):
    import training.score

    model = smoke_run / "model.onnx"
    other = model_copy(model, tmp_path / "other.onnx", window_seconds=1.5)
    (tmp_path / "notes.txt").write_text("a file where the report wants a folder")
    monkeypatch.setattr(training.score, "score", lambda *args, **kwargs: pytest.fail("scored before refusing"))
    arguments = ["--data", str(tiny_ravdess), "--actors", "2", "--model", str(model), *(option.format(other=other, tmp=tmp_path) for option in options)]
    line = refusal("training.score", arguments, capsys)
    assert line == "python -m training.score: error: " + reason.format(model=model, other=other, tmp=tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt", "other.json", "other.onnx"]


@pytest.fixture
def shippable(smoke_run, tmp_path) -> tuple[Path, str]:
    """A copy of the smoke model to ship in place, and its metadata as it was."""
    model = model_copy(smoke_run / "model.onnx", tmp_path / "ser_cnn.onnx")
    return model, metadata_path(model).read_text()


def test_shipping_refuses_two_evaluations_of_the_same_split_naming_both_files(shippable, smoke_run, tmp_path, capsys):
    model, before = shippable
    again = tmp_path / "again" / "metrics.json"
    again.parent.mkdir()
    shutil.copy(smoke_run / "metrics.json", again)
    line = refusal("training.ship", [str(model), "--to", str(model), "--evidence", str(smoke_run / "metrics.json"), str(again)], capsys)
    assert line == f"python -m training.ship: error: {again}: split 'random' again, already evaluated by {smoke_run / 'metrics.json'}; give each split once"
    assert metadata_path(model).read_text() == before


def test_shipping_refuses_evidence_without_held_out_scores(shippable, tmp_path, capsys):
    model, before = shippable
    evidence = tmp_path / "metrics.json"
    evidence.write_text(json.dumps({"split": "fold9", "epochs_run": 3}))
    line = refusal("training.ship", [str(model), "--to", str(model), "--evidence", str(evidence)], capsys)
    assert line == f"python -m training.ship: error: {evidence}: not held-out evidence (split 'fold9' has no test_* scores)"
    assert metadata_path(model).read_text() == before


def evidence_copy(smoke_run: Path, to: Path, **changes: object) -> Path:
    """The smoke run's metrics.json copied to ``to``, with these fields changed (None: removed)."""
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    for key, value in changes.items():
        metrics.pop(key) if value is None else metrics.__setitem__(key, value)
    to.parent.mkdir(parents=True, exist_ok=True)
    to.write_text(json.dumps(metrics))
    return to


def test_shipping_refuses_evidence_of_another_recipe_or_other_training_settings(shippable, smoke_run, tmp_path, capsys):
    """The held-out figures shipped with a model were once taken from whatever run was named."""
    model, before = shippable
    assert json.loads((smoke_run / "metrics.json").read_text())["recipe"] == "paper" == load_metadata(model).recipe
    other_recipe = evidence_copy(smoke_run, tmp_path / "improved" / "metrics.json", recipe="improved")
    line = refusal("training.ship", [str(model), "--to", str(model), "--evidence", str(other_recipe)], capsys)
    assert line == f"python -m training.ship: error: {other_recipe}: evaluates recipe 'improved', the model shipped is 'paper'; give evidence of the same recipe"
    training = json.loads((smoke_run / "metrics.json").read_text())["training"]
    two_windows = evidence_copy(smoke_run, tmp_path / "w2" / "metrics.json", training=dict(training, windows_per_clip=2))
    line = refusal("training.ship", [str(model), "--to", str(model), "--evidence", str(two_windows)], capsys)
    assert line == f"python -m training.ship: error: {two_windows}: trained with windows_per_clip 2, the model shipped with 1; give evidence trained the same way"
    assert metadata_path(model).read_text() == before


@pytest.mark.parametrize("setting, other", [("epochs", 40), ("windows_per_clip", 2), ("frequency_warp", 0.1), ("batch_size", 16)])
def test_shipping_refuses_evidence_trained_with_another_value_of_any_training_setting(shippable, smoke_run, tmp_path, capsys, setting, other):
    """Each setting the training command takes beyond the recipe makes another model: its figures are not this one's."""
    model, before = shippable
    training = json.loads((smoke_run / "metrics.json").read_text())["training"]
    assert training[setting] != other
    evidence = evidence_copy(smoke_run, tmp_path / setting / "metrics.json", training=dict(training, **{setting: other}))
    line = refusal("training.ship", [str(model), "--to", str(model), "--evidence", str(evidence)], capsys)
    assert line == (f"python -m training.ship: error: {evidence}: trained with {setting} {other}, the model shipped with "
                    f"{training[setting]}; give evidence trained the same way")
    assert metadata_path(model).read_text() == before


def test_shipping_reads_an_older_runs_recipe_from_its_summary_and_says_when_none_is_recorded(shippable, smoke_run, tmp_path, capsys):
    from training.ship import main as ship_main

    model, before = shippable
    older = evidence_copy(smoke_run, tmp_path / "older" / "random" / "metrics.json", recipe=None)
    (older.parent.parent / "summary.json").write_text(json.dumps({"settings": {"recipe": {"name": "improved"}}}))
    line = refusal("training.ship", [str(model), "--to", str(model), "--evidence", str(older)], capsys)
    assert line.endswith(f"{older}: evaluates recipe 'improved', the model shipped is 'paper'; give evidence of the same recipe")
    (older.parent.parent / "summary.json").unlink()
    assert ship_main([str(model), "--to", str(model), "--evidence", str(older)]) == 0
    assert capsys.readouterr().err == f"{older}: records no recipe; taken as evidence of 'paper' unchecked\n"
    assert list(load_metadata(model).metrics["held_out_evaluations"]) == ["random"]



def score_report(members: list[Path], data: Path, out: Path, *options: str) -> Path:
    """``training.score --out`` of ``members`` together on actor 2, clean only."""
    from training.score import main as score_main

    assert score_main(["--data", str(data), "--actors", "2", "--variants", "clean", *options, "--out", str(out), *(f"--model={member}" for member in members)]) == 0
    return out


def test_an_ensemble_refuses_two_reports_on_the_same_actors_naming_both(members, tiny_ravdess, tmp_path, capsys):
    first = score_report(members, tiny_ravdess, tmp_path / "fold.json")
    second = tmp_path / "fold-again.json"
    shutil.copy(first, second)
    line = refusal("training.ensemble", [*map(str, members), "--to", str(tmp_path / "ensemble.onnx"), "--evidence", str(first), str(second)], capsys)
    assert line == f"python -m training.ensemble: error: {second}: scores the same actors (actors-02) as {first}; give each held-out set once"
    assert not list(tmp_path.glob("ensemble*"))


def test_scoring_refuses_an_actor_given_twice(smoke_run, tiny_ravdess, tmp_path, capsys):
    """`--actors 2 2` once wrote a report listing actor 2 twice, which the ensemble then counted as evidence twice."""
    model = held_out_copy(smoke_run / "model.onnx", tmp_path / "model.onnx")
    line = refusal("training.score", ["--data", str(tiny_ravdess), "--actors", "2", "2", "--model", str(model), "--out", str(tmp_path / "report.json")], capsys)
    assert line == "python -m training.score: error: argument --actors: 2 given more than once; give each actor once"
    assert not (tmp_path / "report.json").exists()


def test_scoring_the_random_split_scores_the_clips_its_training_run_tested_and_finds_its_figures(smoke_run, tiny_ravdess, tmp_path):
    """The paper's protocol, for models trained on it: the pair of two random-split networks could not be scored."""
    from training.score import main as score_main

    report = tmp_path / "random.json"
    assert score_main(["--data", str(tiny_ravdess), "--random-split", "0", "--model", str(smoke_run / "model.onnx"), "--variants", "clean", "--out", str(report)]) == 0
    scored, trained = json.loads(report.read_text()), json.loads((smoke_run / "metrics.json").read_text())
    assert scored["random_split_seed"] == 0 and "actors" not in scored
    assert scored["clips"] == trained["test_clean"]["clips"] == 8  # a quarter of each emotion's 4 clips
    assert scored["clean"]["mean_per_class_accuracy"] == pytest.approx(trained["test_clean"]["mean_per_class_accuracy"])


def test_scoring_the_random_split_draws_it_from_the_clips_training_kept_not_every_clip_scanned(smoke_run, tiny_ravdess, tmp_path, capsys):
    """Training leaves out a clip classify refuses (silent) before drawing its random split; training.score drew the
    split over every clip it scanned and, the number of test clips being the same, scored a test set holding clips the
    model trained on (3 of 8 here; 23 of 300 on RAVDESS with one silent file)."""
    import soundfile

    from training.dataset import clip_names_sha256
    from training.score import main as score_main

    data = tmp_path / "data"
    for actor in sorted(tiny_ravdess.iterdir()):
        (data / actor.name).mkdir(parents=True)
        for clip in actor.iterdir():
            (data / actor.name / clip.name).symlink_to(clip)
    soundfile.write(data / "Actor_01" / "03-01-05-01-01-02-01.wav", np.zeros(48000, np.float32), 16000)  # training would leave it out
    report = tmp_path / "random.json"
    assert score_main(["--data", str(data), "--random-split", "0", "--model", str(smoke_run / "model.onnx"), "--variants", "clean", "--out", str(report)]) == 0
    scored, trained = json.loads(report.read_text()), json.loads((smoke_run / "metrics.json").read_text())
    assert clip_names_sha256(clip["clip"] for clip in scored["clean_clips"]) == trained["test_clips_sha256"]
    assert scored["clean"]["mean_per_class_accuracy"] == pytest.approx(trained["test_clean"]["mean_per_class_accuracy"])
    assert "skipped " in capsys.readouterr().err and "03-01-05-01-01-02-01.wav" not in report.read_text()  # left out, and named


def test_scoring_the_random_split_holds_the_clips_not_only_their_number_to_those_training_tested(smoke_run, tiny_ravdess, tmp_path, capsys):
    """The guard compared only the number of test clips, which a split of other clips can share; a run that records
    which clips it tested is now held to them, and one from before that is checked by number with a warning saying so."""
    from training.score import main as score_main

    metrics = json.loads(metadata_path(smoke_run / "model.onnx").read_text())["metrics"]
    other = model_copy(smoke_run / "model.onnx", tmp_path / "other.onnx", metrics=dict(metrics, test_clips_sha256="0" * 64))
    line = refusal("training.score", ["--data", str(tiny_ravdess), "--random-split", "0", "--model", str(other)], capsys)
    assert line == (f"python -m training.score: error: {other}: its training run tested on other clips than the test quarter of the clips "
                    "in --data (their sha256 differs): its training clips could be among those scored; give the --data it was trained on")
    older = model_copy(smoke_run / "model.onnx", tmp_path / "older.onnx", metrics={key: value for key, value in metrics.items() if key != "test_clips_sha256"})
    assert score_main(["--data", str(tiny_ravdess), "--random-split", "0", "--model", str(older), "--variants", "clean"]) == 0
    assert capsys.readouterr().err == f"warning: {older}: records no digest of its test clips (trained before runs did); checked their number only, not which clips they are\n"


@pytest.mark.parametrize("tested", [7, 9])
def test_scoring_the_random_split_refuses_an_older_model_tested_on_another_number_of_clips(smoke_run, tiny_ravdess, tmp_path, capsys, tested):
    """A run from before test clips were recorded is held to their number: fewer than the split's is as wrong as more."""
    metrics = json.loads(metadata_path(smoke_run / "model.onnx").read_text())["metrics"]
    older = {key: value for key, value in metrics.items() if key != "test_clips_sha256"}
    model = model_copy(smoke_run / "model.onnx", tmp_path / "older.onnx", metrics=dict(older, test_clean=dict(older["test_clean"], clips=tested)))
    line = refusal("training.score", ["--data", str(tiny_ravdess), "--random-split", "0", "--model", str(model)], capsys)
    assert line == f"python -m training.score: error: {model}: tested on {tested} clips, but the clips in --data split into 8: not the clips it was trained on"

@pytest.mark.parametrize(
    "seed, changes, reason",
    [
        ("1", {}, "trained under protocol random with seed 0, not --protocol random --seed 1"),
        ("0", {"protocol": "all"}, "trained under protocol all with seed 0, not --protocol random --seed 0"),
    ],
    ids=["another-seed", "another-protocol"],
)
def test_scoring_the_random_split_refuses_a_model_that_trained_on_its_test_clips(smoke_run, tiny_ravdess, tmp_path, capsys, seed, changes, reason):
    model = model_copy(smoke_run / "model.onnx", tmp_path / "model.onnx", **changes)
    line = refusal("training.score", ["--data", str(tiny_ravdess), "--random-split", seed, "--model", str(model)], capsys)
    assert line == f"python -m training.score: error: {model}: {reason}: its training clips would be among those scored"


def test_random_split_evidence_is_refused_by_the_ensemble(members, smoke_run, tiny_ravdess, tmp_path, capsys):
    """Every speaker of a random split was heard in training: no evidence of how a model meets new voices."""
    from training.score import main as score_main

    report = tmp_path / "random.json"
    assert score_main(["--data", str(tiny_ravdess), "--random-split", "0", "--model", str(smoke_run / "model.onnx"), "--variants", "clean", "--out", str(report)]) == 0
    line = refusal("training.ensemble", [*map(str, members), "--to", str(tmp_path / "ensemble.onnx"), "--evidence", str(report)], capsys)
    assert line == (f"python -m training.ensemble: error: {report}: scores a random split of clips, whose speakers the models heard in "
                    "training: no evidence of new voices; score the members on held-out actors (training.score --actors)")
    assert not list(tmp_path.glob("ensemble*"))


@pytest.mark.parametrize(
    "first_actors, second_actors, reason",
    [
        ([1, 2], [2, 1], "{second}: scores the same actors (actors-01-02) as {first}; give each held-out set once"),
        ([2], [1, 2], "{second}: scores actor(s) 02, which {first} scores too; give held-out sets that share no actor"),
        ([2], [1, 1], "{second}: lists actor(s) 01 more than once; score each actor once"),
    ],
    ids=["same-actors-in-another-order", "overlapping-actors", "an-actor-listed-twice"],
)
def test_an_ensemble_counts_each_held_out_actor_once_in_its_evidence(members, tiny_ravdess, tmp_path, capsys, first_actors, second_actors, reason):
    """Reports of the same actors listed in another order were two evaluations, and so were sets sharing an actor."""
    scored = json.loads(score_report(members, tiny_ravdess, tmp_path / "scored.json").read_text())
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_text(json.dumps(dict(scored, actors=first_actors)))
    second.write_text(json.dumps(dict(scored, actors=second_actors)))
    line = refusal("training.ensemble", [*map(str, members), "--to", str(tmp_path / "ensemble.onnx"), "--evidence", str(first), str(second)], capsys)
    assert line == "python -m training.ensemble: error: " + reason.format(first=first, second=second)
    assert not list(tmp_path.glob("ensemble*"))


@pytest.mark.parametrize(
    "window_seconds, reason",
    [
        (1.0, "{report}: scored 1.0 s windows, the ensemble's members cut 2.0 s; give evidence of networks of their window"),
        (None, "{report}: records no window_seconds, so what it scored is unknown; score the members again with training.score --out"),
    ],
    ids=["other-window", "window-not-recorded"],
)
def test_an_ensemble_refuses_a_report_scored_on_other_windows_than_its_members_or_not_saying(members, tiny_ravdess, tmp_path, capsys, window_seconds, reason):
    """Reports recorded the hop they scored at but not the window: networks of 1 s windows were evidence for 2 s ones."""
    report = score_report(members, tiny_ravdess, tmp_path / "fold.json")
    scored = json.loads(report.read_text())
    assert scored["window_seconds"] == load_metadata(members[0]).window_seconds == 2.0
    scored.pop("window_seconds")
    report.write_text(json.dumps(scored if window_seconds is None else dict(scored, window_seconds=window_seconds)))
    line = refusal("training.ensemble", [*map(str, members), "--to", str(tmp_path / "ensemble.onnx"), "--evidence", str(report)], capsys)
    assert line == "python -m training.ensemble: error: " + reason.format(report=report)
    assert not list(tmp_path.glob("ensemble*"))


def test_an_ensemble_refuses_a_report_scored_with_test_time_views_the_merged_graph_does_not_compute(members, tiny_ravdess, tmp_path, capsys):
    report = score_report(members, tiny_ravdess, tmp_path / "views.json", "--test-time", "higher")
    line = refusal("training.ensemble", [*map(str, members), "--to", str(tmp_path / "ensemble.onnx"), "--evidence", str(report)], capsys)
    assert line == f"python -m training.ensemble: error: {report}: scored with test-time views (higher), which the merged graph does not compute; score the members without --test-time"
    assert not list(tmp_path.glob("ensemble*"))


@pytest.mark.parametrize("scored_recipes", [lambda recipes: ["improved", "improved-wide"], lambda recipes: [recipes[0]] * 2], ids=["others", "the-first-members-twice"])
def test_an_ensemble_refuses_a_report_that_scored_networks_of_other_recipes(members, tiny_ravdess, tmp_path, capsys, scored_recipes):
    """Recipes are matched as a list, not a set: two networks of the first member's recipe are not evidence for members of two."""
    report = score_report(members, tiny_ravdess, tmp_path / "fold.json")
    scored = json.loads(report.read_text())
    recipes = [load_metadata(member).recipe for member in members]
    assert scored["recipes"] == recipes and len(set(recipes)) == 2
    report.write_text(json.dumps(dict(scored, recipes=scored_recipes(recipes))))
    line = refusal("training.ensemble", [*map(str, members), "--to", str(tmp_path / "ensemble.onnx"), "--evidence", str(report)], capsys)
    assert line == (f"python -m training.ensemble: error: {report}: scores recipes {', '.join(scored_recipes(recipes))}; "
                    f"the ensemble's members are {', '.join(recipes)}")
    assert not list(tmp_path.glob("ensemble*"))


def test_an_ensemble_refuses_a_report_of_networks_of_other_model_seeds_than_its_members(members, tiny_ravdess, tmp_path, capsys):
    """Each scored network was matched to some member by recipe, epochs, windows, warp, batch and weights, not by its
    model seed: a report of the seed 0 and seed 2 fold networks was taken as evidence for members of seeds 0 and 1."""
    report = score_report(members, tiny_ravdess, tmp_path / "fold.json")
    scored = json.loads(report.read_text())
    seeds = [load_metadata(member).metrics["training"]["model_seed"] for member in members]
    assert [training["training"]["model_seed"] for training in scored["trainings"]] == seeds == [0, 0]
    other = dict(scored["trainings"][1], training=dict(scored["trainings"][1]["training"], model_seed=2))
    report.write_text(json.dumps(dict(scored, trainings=[scored["trainings"][0], other])))
    line = refusal("training.ensemble", [*map(str, members), "--to", str(tmp_path / "ensemble.onnx"), "--evidence", str(report)], capsys)
    assert line == (f"python -m training.ensemble: error: {report}: scores networks of model seeds 0, 2, the ensemble's members are of model "
                    "seeds 0, 0; give evidence of the members' own fold networks scored together")
    assert not list(tmp_path.glob("ensemble*"))


@pytest.mark.parametrize("spelling", [lambda member: member, lambda member: member.parent / "sub" / ".." / member.name], ids=["same-path", "other-spelling"])
def test_an_ensemble_refuses_to_write_over_one_of_its_members(members, tmp_path, capsys, spelling):
    (tmp_path / "sub").mkdir()
    to = spelling(members[0])
    before = members[0].read_bytes(), metadata_path(members[0]).read_text()
    line = refusal("training.ensemble", [*map(str, members), "--to", str(to)], capsys)
    assert line == f"python -m training.ensemble: error: --to {to}: is the member {members[0]}; the ensemble needs a file of its own"
    assert (members[0].read_bytes(), metadata_path(members[0]).read_text()) == before
    assert not list(tmp_path.glob("*merging*"))


def test_a_plain_report_of_the_members_written_to_a_new_folder_is_evidence_an_ensemble_accepts(members, tiny_ravdess, tmp_path):
    """The refusals above turn away only what is wrong: a plain report of the members builds the ensemble."""
    from training.ensemble import main as ensemble_main

    report = score_report(members, tiny_ravdess, tmp_path / "new-folder" / "fold.json")  # a missing folder for the report is made
    assert ensemble_main([*map(str, members), "--to", str(tmp_path / "ensemble.onnx"), "--evidence", str(report)]) == 0
    assert list(load_metadata(tmp_path / "ensemble.onnx").metrics["held_out_evaluations"]) == ["actors-02"]
    assert np.isfinite(json.loads(report.read_text())["clean"]["mean_per_class_accuracy"])


@pytest.fixture
def data_with_bad_clips(tiny_ravdess, tmp_path) -> tuple[Path, Path, Path]:
    """The tiny set plus, under actor 2, a text file named as a clip and a clip of digital silence."""
    import soundfile

    data = tmp_path / "data"
    shutil.copytree(tiny_ravdess, data)
    text = data / "Actor_02" / "03-01-01-01-01-02-02.wav"
    text.write_text("not audio")
    silent = data / "Actor_02" / "03-01-02-01-01-02-02.wav"
    soundfile.write(silent, np.zeros(32000, np.float32), 16000)
    return data, text, silent


def test_scoring_leaves_out_clips_it_cannot_read_names_them_and_scores_the_rest(smoke_run, data_with_bad_clips, tmp_path, capsys):
    """One unreadable clip once ended a whole scoring run with a traceback; a silent one with a line that named no file."""
    from training.score import main as score_main

    data, text, silent = data_with_bad_clips
    out = tmp_path / "report.json"
    model = held_out_copy(smoke_run / "model.onnx", tmp_path / "model.onnx")
    assert score_main(["--data", str(data), "--actors", "2", "--model", str(model), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    err = capsys.readouterr().err.splitlines()
    assert report["clips"] == 16 and len(report["clean_clips"]) == len(report["telephone_clips"]) == 16  # of 18
    assert [line.split(":")[0] for line in report["skipped_clips"]] == [str(text), str(silent)]
    assert all(line.startswith("skipped ") for line in err) and {line.removeprefix("skipped ") for line in err} == set(report["skipped_clips"])


def test_quantising_leaves_out_clips_it_cannot_read_and_writes_metadata_the_runtime_loads(smoke_run, data_with_bad_clips, tmp_path):
    """The int8 model once had no metadata, so `classify --model` refused it; a bad clip crashed after it was written."""
    from ser_stream.inference import EmotionModel
    from training.quantize import main as quantize_main

    data, text, silent = data_with_bad_clips
    out = tmp_path / "model.int8.onnx"
    model = held_out_copy(smoke_run / "model.onnx", tmp_path / "model.onnx")
    assert quantize_main([str(model), "--data", str(data), "--test-actors", "2", "--calibration-clips", "8", "--repeats", "1", "--out", str(out)]) == 0
    report = json.loads((tmp_path / "model.int8.quantization.json").read_text())
    assert report["clips"] == 16 and [line.split(":")[0] for line in report["skipped_clips"]] == [str(text), str(silent)]
    int8 = EmotionModel(out, provider="cpu")
    assert int8.metadata.metrics["int8"]["quantized_from"] == load_metadata(model).sha256
    assert int8.predict(np.zeros((1, 260, 270, 1), np.float32)).shape == (1, 8)


def test_an_ensemble_of_the_same_network_twice_is_refused_naming_both(members, tmp_path, capsys):
    twin = model_copy(members[0], tmp_path / "twin.onnx")
    line = refusal("training.ensemble", [str(members[0]), str(twin), "--to", str(tmp_path / "ensemble.onnx")], capsys)
    sha = load_metadata(twin).sha256
    assert line == f"python -m training.ensemble: error: {twin}: the same network as {members[0]} (sha256 {sha[:12]}…); give each member once"
    assert not (tmp_path / "ensemble.onnx").exists()


@pytest.mark.parametrize("tool", ["training.ship", "training.ensemble", "training.score", "training.calibrate"])
def test_an_output_in_a_folder_that_cannot_be_written_is_refused_before_any_work(tool, smoke_run, tmp_path, capsys):
    """/proc/x: the tools once did their work, then failed on the write with a traceback."""
    model = str(smoke_run / "model.onnx")
    arguments = {
        "training.ship": [model, "--to", "/proc/m.onnx"],
        "training.ensemble": [model, model, "--to", "/proc/e.onnx"],
        "training.score": ["--actors", "2", "--model", model, "--out", "/proc/x.json"],
        "training.calibrate": ["a.json", "b.json", "--out", "/proc/c.json"],
    }[tool]
    line = refusal(tool, arguments, capsys)
    option = "--to" if tool in ("training.ship", "training.ensemble") else "--out"
    assert line.startswith(f"python -m {tool}: error: argument {option}: /proc/") and ": cannot write in /proc (" in line


@pytest.mark.parametrize(
    "tool, options, reason",
    [
        ("training.score", ["--actors", "1", "2"], "--actors 1 2: {model} was trained or validated on actor(s) 1, 2; score it on actors it has not heard"),
        ("training.score", ["--actors", "2", "9"], "{data}: no clips of actor(s) 9"),
        ("training.quantize", ["--test-actors", "2", "--calibration-clips", "8"], "--test-actors 2: {model} was trained or validated on actor(s) 2; test it on actors it has not heard"),
    ],
    ids=["score-on-training-actors", "score-on-an-absent-actor", "quantize-tested-on-training-actors"],
)
def test_scoring_or_quantising_on_actors_the_model_heard_or_the_data_lacks_is_refused_in_one_line(tool, options, reason, smoke_run, tiny_ravdess, tmp_path, capsys):
    """The smoke model (trained on actors 1 and 2) was once scored on them as held out; an absent actor was left out silently."""
    model = model_copy(smoke_run / "model.onnx", tmp_path / "model.onnx")
    arguments = ["--data", str(tiny_ravdess), *options] + (["--model", str(model)] if tool == "training.score" else [str(model), "--repeats", "1"])
    line = refusal(tool, arguments, capsys)
    assert line == f"python -m {tool}: error: " + reason.format(model=model, data=tiny_ravdess)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.json", "model.onnx"]  # no report, no int8 model


def test_quantising_on_actors_the_model_heard_is_done_when_asked_for_and_the_report_names_them(smoke_run, tiny_ravdess, tmp_path):
    """A model trained on every actor has no unheard voice to be judged on: --heard-test-actors judges int8 on known ones."""
    from training.quantize import main as quantize_main

    model = model_copy(smoke_run / "model.onnx", tmp_path / "model.onnx")  # heard actors 1 and 2
    arguments = [str(model), "--data", str(tiny_ravdess), "--test-actors", "2", "--calibration-clips", "8", "--repeats", "1", "--heard-test-actors"]
    assert quantize_main(arguments) == 0
    report = json.loads((tmp_path / "model.int8.quantization.json").read_text())
    assert report["held_out_actors"] == report["heard_test_actors"] == [2]


def test_an_ensemble_refuses_a_report_that_scored_networks_trained_otherwise_than_its_members(members, tiny_ravdess, tmp_path, capsys):
    """A report of fold models trained for other epochs than the members once went into the ensemble's evidence."""
    report = score_report(members, tiny_ravdess, tmp_path / "fold.json")
    scored = json.loads(report.read_text())
    training = load_metadata(members[0]).metrics["training"]
    assert scored["trainings"][0]["training"] == training
    report.write_text(json.dumps(dict(scored, trainings=[{"training": dict(training, epochs=4), "weights": "best validation epoch"}, scored["trainings"][1]])))
    line = refusal("training.ensemble", [*map(str, members), "--to", str(tmp_path / "ensemble.onnx"), "--evidence", str(report)], capsys)
    assert line == f"python -m training.ensemble: error: {report}: trained with epochs 4, the model shipped with 2; give evidence trained the same way"
    assert not list(tmp_path.glob("ensemble*"))


@pytest.mark.parametrize(
    "model_changes, evidence_changes, beside, reason",
    [
        ({"protocol": "all"}, {}, {}, "evaluates split 'random' of the 'random' protocol, the model shipped (protocol 'all') needs evidence of --protocol actors"),
        ({}, {}, {"window_seconds": 1.5}, "scored 1.5 s windows at a 0.5 s hop, the model shipped cuts 2.0 s at 0.5 s; give evidence of the same --window and --hop"),
        ({}, {}, {"hop_seconds": 0.25}, "scored 2.0 s windows at a 0.25 s hop, the model shipped cuts 2.0 s at 0.5 s; give evidence of the same --window and --hop"),
        ({}, {"weights": "best validation epoch"}, {}, "scores the weights of the best validation epoch, the model shipped has those of the last epoch; give evidence trained with the same --keep"),
    ],
    ids=["random-split-for-an-all-model", "other-window", "other-hop", "other-keep"],
)
def test_shipping_refuses_evidence_of_another_protocol_window_or_kept_weights_in_one_line(smoke_run, tmp_path, capsys, model_changes, evidence_changes, beside, reason):
    """A random split's metrics.json once shipped as held-out evidence, and so did runs of another window or --keep."""
    model = model_copy(smoke_run / "model.onnx", tmp_path / "ser_cnn.onnx", **model_changes)
    before = metadata_path(model).read_text()
    evidence = evidence_copy(smoke_run, tmp_path / "evidence" / "metrics.json", **evidence_changes)
    metadata = json.loads(metadata_path(smoke_run / "model.onnx").read_text())
    (evidence.parent / "model.json").write_text(json.dumps(dict(metadata, **beside)))
    line = refusal("training.ship", [str(model), "--to", str(model), "--evidence", str(evidence)], capsys)
    assert line == f"python -m training.ship: error: {evidence}: {reason}"
    assert metadata_path(model).read_text() == before


def test_a_clips_telephone_score_does_not_depend_on_the_actors_scored_beside_it(smoke_run, tiny_ravdess):
    """The phone line was seeded by a clip's place in the list: actor 05 scored 62.5 % by telephone with actors
    3, 7 and 20, and 60.9 % alone."""
    from ser_stream.inference import EmotionModel
    from ser_stream.windows import WindowConfig
    from training.ravdess import scan
    from training.score import score

    clips, _ = scan(tiny_ravdess)
    model = [EmotionModel(smoke_run / "model.onnx", provider="cpu")]
    _, together, beside = score(model, clips, WindowConfig(), "telephone")
    _, alone, by_itself = score(model, [clip for clip in clips if clip.actor == 2], WindowConfig(), "telephone")
    assert alone["02"] == together["02"]
    assert by_itself == [clip for clip in beside if clip["actor"] == 2]


def test_int8_is_judged_on_the_inputs_training_score_builds_for_each_clip(smoke_run, tiny_ravdess, tmp_path, monkeypatch):
    """quantize seeded the phone line by a clip's place among the held-out clips, so a clip's telephone result changed
    with the actors tested beside it (training.score seeds it by the clip's name), and cut the clean windows its own way."""
    import training.quantize
    from training.ravdess import scan
    from training.score import clip_inputs, clip_seed

    judged: list[list[np.ndarray]] = []

    def recorded(model, clips, labels):
        judged.append(clips)
        score = 0.5 if len(judged) % 2 else 0.45  # fp32 judged first, then int8: 5 points worse
        return {"mean_per_class_accuracy": score, "accuracy": score}

    monkeypatch.setattr(training.quantize, "clip_accuracy", recorded)
    model = held_out_copy(smoke_run / "model.onnx", tmp_path / "model.onnx")
    assert training.quantize.main([str(model), "--data", str(tiny_ravdess), "--test-actors", "2", "--calibration-clips", "8", "--repeats", "1"]) == 0
    held_out = [clip.path for clip in scan(tiny_ravdess)[0] if clip.actor == 2]
    window = load_metadata(model).window
    assert len(judged) == 4  # wideband, then telephone, each for fp32 and int8
    for variant, inputs in (("clean", judged[0]), ("telephone", judged[2])):
        expected = [clip_inputs(path, window, variant, clip_seed(path)) for path in held_out]
        assert len(inputs) == len(expected) and all(np.array_equal(got, want) for got, want in zip(inputs, expected)), variant
    report = json.loads((tmp_path / "model.int8.quantization.json").read_text())
    assert report["wideband"]["change_points"] == report["telephone"]["change_points"] == -5.0  # int8 less fp32


def test_a_staged_model_that_does_not_load_is_not_put_over_the_good_one(shipped_model, tmp_path):
    """ship, ensemble and unpack write the pair aside and move it in only once it loads as the runtime loads it."""
    from ser_stream.errors import ModelError
    from training.contract import put_in_place

    good = model_copy(shipped_model, tmp_path / "ser_cnn.onnx")
    before = good.read_bytes(), metadata_path(good).read_text()
    staged = model_copy(shipped_model, tmp_path / "ser_cnn.shipping.onnx", sha256="0" * 64)  # bytes its metadata does not hash to
    with pytest.raises(ModelError, match=r"ser_cnn\.shipping\.onnx: sha256 .+ does not match its metadata \(000000000000…\)"):
        put_in_place(staged, good)
    assert (good.read_bytes(), metadata_path(good).read_text()) == before


def test_shipping_a_model_file_that_holds_no_graph_is_refused_in_one_line_and_writes_nothing(shipped_model, tmp_path, capsys):
    """A 0-byte .onnx decodes as an empty ModelProto: without onnx's checker (a mutation audit) it matched its sha256 and
    ship printed "shipped" over it."""
    from ser_stream.model import file_sha256

    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    metadata_path(empty).write_text(json.dumps(dict(json.loads(metadata_path(shipped_model).read_text()), sha256=file_sha256(empty))))
    line = refusal("training.ship", [str(empty), "--to", str(tmp_path / "shipped.onnx")], capsys)
    assert line.startswith(f"python -m training.ship: error: {empty}: not a readable ONNX model (")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty.json", "empty.onnx"]


def test_a_clips_output_is_the_mean_of_its_own_windows_however_many_each_clip_has():
    """The paper's rule, per clip: a clip of one window and a clip of three, listed in another order than their windows."""
    from training import evaluate

    happy, sad, calm = (np.eye(8)[EMOTIONS.index(emotion)] for emotion in ("happy", "sad", "calm"))
    window_probabilities = np.stack([sad, happy, sad, calm])
    window_clip = np.array([3, 7, 3, 3])
    clips = evaluate.clip_probabilities(window_probabilities, window_clip, np.array([7, 3]))
    assert np.allclose(clips, [happy, (2 * sad + calm) / 3])


def test_a_failed_quantisation_leaves_no_intermediate_model_behind(shipped_model, tmp_path):
    """The pre-processed model (``.prep.onnx``) was removed only when quantize_static succeeded."""
    from ser_stream.errors import ModelError
    from training.quantize import quantize

    out = tmp_path / "model.int8.onnx"
    with pytest.raises(ModelError, match="No data is collected"):  # the quantiser's own error: no window to calibrate on
        quantize(shipped_model, np.zeros((0, 260, 270), np.float32), out)
    assert list(tmp_path.iterdir()) == []


def test_a_quantised_model_onnxruntime_cannot_load_is_not_left_where_it_was_written(shipped_model, tmp_path, monkeypatch):
    import training.quantize
    from ser_stream.errors import ModelError

    def unloadable(prepared: str, out: str, *args: object, **kwargs: object) -> None:
        Path(out).write_bytes(b"not a graph")

    monkeypatch.setattr(training.quantize, "quantize_static", unloadable)
    with pytest.raises(ModelError, match="onnxruntime could not quantise it"):
        training.quantize.quantize(shipped_model, np.zeros((16, 260, 270), np.float32), tmp_path / "model.int8.onnx")
    assert list(tmp_path.iterdir()) == []


def hand_edited(source: Path, to: Path, window_seconds: float) -> Path:
    """``source`` copied with its metadata JSON alone saying another window: the file's own record and its sha256 are
    unchanged, as after an edit by hand."""
    shutil.copy(source, to)
    metadata_path(to).write_text(json.dumps(dict(json.loads(metadata_path(source).read_text()), window_seconds=window_seconds)))
    return to


@pytest.mark.parametrize("tool", ["training.ship", "training.quantize", "training.ensemble", "training.ensemble --unpack"])
def test_a_model_whose_metadata_contradicts_its_network_is_refused_by_the_tools_before_any_work(tool, smoke_run, shipped_model, tiny_ravdess, tmp_path, capsys):
    """The tools checked only the sha256: from a JSON edited to 1 s windows, unpack stamped 1 s into each member, quantize
    scored 1 s windows, and ship printed "shipped"; the runtime refused what they wrote, or ran a 2 s network on 1 s windows."""
    (tmp_path / "source").mkdir()
    source = shipped_model if tool == "training.ensemble --unpack" else held_out_copy(smoke_run / "model.onnx", tmp_path / "source" / "model.onnx")
    edited = hand_edited(source, tmp_path / "edited.onnx", window_seconds=1.0)
    arguments = {
        "training.ship": [str(edited), "--to", str(tmp_path / "shipped.onnx")],
        "training.quantize": [str(edited), "--data", str(tiny_ravdess), "--test-actors", "2", "--calibration-clips", "8", "--repeats", "1"],
        "training.ensemble": [str(edited), str(shipped_model), "--to", str(tmp_path / "ensemble.onnx")],
        "training.ensemble --unpack": [str(edited), "--unpack", str(tmp_path / "members")],
    }[tool]
    line = refusal(tool.split()[0], arguments, capsys)
    assert line.endswith(
        f": error: {metadata_path(edited)}: says window_seconds 1.0, but the network in edited.onnx was trained on window_seconds 2.0; "
        "restore the metadata (the window is the network's, not a setting)"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["edited.json", "edited.onnx", "source"]


@pytest.mark.parametrize("difference, shown_as", [(0.5, "5.00e-01"), (float("nan"), "nan")])
def test_unpacking_writes_no_member_unless_their_mean_is_the_ensembles(shipped_model, tmp_path, capsys, monkeypatch, difference, shown_as):
    """The members were written into the folder first and checked after: a failed check left them there. A mean that
    is not a number is no match either."""
    import training.ensemble

    monkeypatch.setattr(training.ensemble, "ensemble_parity", lambda members, merged, inputs: difference)
    folder = tmp_path / "members"
    line = refusal("training.ensemble", [str(shipped_model), "--unpack", str(folder)], capsys)
    assert line == f"python -m training.ensemble: error: {shipped_model}: its unpacked members' mean differs from it by {shown_as} (bound 1e-05)"
    assert list(folder.iterdir()) == []


def test_quantising_prints_only_its_report_on_stdout(smoke_run, tiny_ravdess, tmp_path, capsys):
    """onnxruntime's calibrator printed its progress on stdout, before the JSON report it promises."""
    from training.quantize import main as quantize_main

    model = held_out_copy(smoke_run / "model.onnx", tmp_path / "model.onnx")
    assert quantize_main([str(model), "--data", str(tiny_ravdess), "--test-actors", "2", "--calibration-clips", "8", "--repeats", "1"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == json.loads((tmp_path / "model.int8.quantization.json").read_text())
    assert "Collecting tensor data" in captured.err


@pytest.mark.parametrize("recorded", ["in-its-metadata", "in-its-graph"])
def test_quantising_an_int8_model_again_is_refused_before_any_work(recorded, smoke_run, tiny_ravdess, tmp_path, capsys):
    """Quantised again, an int8 model became a graph onnxruntime could not load: a traceback after the work, and the
    file left behind."""
    from ser_stream.model import file_sha256
    from training.quantize import quantize

    source = held_out_copy(smoke_run / "model.onnx", tmp_path / "model.onnx")
    metadata = json.loads(metadata_path(source).read_text())
    model = tmp_path / "model.int8.onnx"
    if recorded == "in-its-metadata":
        shutil.copy(source, model)
        metrics = dict(metadata["metrics"], int8={"quantized_from": metadata["sha256"]})
        came_from = f" (quantised from {metadata['sha256'][:12]}…)"
    else:  # a real int8 graph, its metadata not saying so
        quantize(source, np.random.default_rng(0).random((16, 260, 270), np.float32), model)
        capsys.readouterr()  # the calibrator's progress
        metrics, came_from = metadata["metrics"], ""
    metadata_path(model).write_text(json.dumps(dict(metadata, sha256=file_sha256(model), metrics=metrics)))
    out = tmp_path / "again.onnx"
    line = refusal("training.quantize", [str(model), "--data", str(tiny_ravdess), "--test-actors", "2", "--calibration-clips", "8", "--repeats", "1", "--out", str(out)], capsys)
    assert line == f"python -m training.quantize: error: {model}: is already an int8 model{came_from}; quantise the fp32 model it came from"
    assert not list(tmp_path.glob("again*"))


def test_an_int8_model_onnxruntime_cannot_load_is_one_line_and_leaves_no_file(smoke_run, tiny_ravdess, tmp_path, capsys, monkeypatch):
    """A quantised graph onnxruntime wrote but could not load was left at --out, after a traceback."""
    import training.quantize

    def unloadable(prepared: str, out: str, *args: object, **kwargs: object) -> None:
        Path(out).write_bytes(b"not a graph")

    monkeypatch.setattr(training.quantize, "quantize_static", unloadable)
    model = held_out_copy(smoke_run / "model.onnx", tmp_path / "model.onnx")
    out = tmp_path / "int8.onnx"
    with pytest.raises(SystemExit) as stopped:
        training.quantize.main([str(model), "--data", str(tiny_ravdess), "--test-actors", "2", "--calibration-clips", "8", "--repeats", "1", "--out", str(out)])
    assert stopped.value.code == 2
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.startswith(f"python -m training.quantize: error: {model}: onnxruntime could not quantise it (") and "Traceback" not in line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.json", "model.onnx"]


def test_shipping_keeps_the_evaluations_a_model_carries_unless_told_to_replace_them(shippable, smoke_run, tmp_path, capsys):
    """Shipped again without --evidence, or with other evidence, a model lost every held-out evaluation it carried."""
    from training.ship import main as ship_main

    model, _ = shippable
    carried = {"fold9": {"test_clean": {"mean_per_class_accuracy": 0.5}}}
    metadata = json.loads(metadata_path(model).read_text())
    metadata_path(model).write_text(json.dumps(dict(metadata, metrics=dict(metadata["metrics"], held_out_evaluations=carried))))
    evidence = str(smoke_run / "metrics.json")
    assert ship_main([str(model), "--to", str(model)]) == 0
    assert load_metadata(model).metrics["held_out_evaluations"] == carried
    assert ship_main([str(model), "--to", str(model), "--evidence", evidence]) == 0
    assert capsys.readouterr().out.endswith("with 2 held-out evaluation(s), 1 of them carried over\n")
    assert sorted(load_metadata(model).metrics["held_out_evaluations"]) == ["fold9", "random"]
    line = refusal("training.ship", [str(model), "--to", str(model), "--evidence", evidence], capsys)
    assert line == f"python -m training.ship: error: {evidence}: split 'random' is already among the held-out evaluations {model} carries; give --replace-evidence to replace them"
    assert ship_main([str(model), "--to", str(model), "--replace-evidence", "--evidence", evidence]) == 0
    assert list(load_metadata(model).metrics["held_out_evaluations"]) == ["random"]


def test_shipping_refuses_a_runs_metrics_as_evidence_for_an_ensemble(shipped_model, smoke_run, tmp_path, capsys):
    """An ensemble's evidence is its members scored together; ship replaced the shipped ensemble's five evaluations."""
    model = model_copy(shipped_model, tmp_path / "ser_cnn.onnx")
    before = metadata_path(model).read_text()
    evidence = smoke_run / "metrics.json"
    line = refusal("training.ship", [str(model), "--to", str(model), "--evidence", str(evidence)], capsys)
    assert line == (f"python -m training.ship: error: {evidence}: evaluates one network, {model} is an ensemble; give evidence of its members "
                    "scored together (training.score --out) to python -m training.ensemble --evidence")
    assert metadata_path(model).read_text() == before


@pytest.mark.parametrize("tool", ["training.ship", "training.ensemble"])
def test_a_to_whose_metadata_would_land_on_a_folder_is_refused_before_anything_is_written(tool, members, tmp_path, capsys):
    """--to X.onnx was checked, the X.json written beside it not: a folder of that name stopped the tool with a traceback
    after X.onnx was written."""
    to = tmp_path / "out" / "model.onnx"
    metadata_path(to).mkdir(parents=True)
    sources = members[:1] if tool == "training.ship" else members
    line = refusal(tool, [*map(str, sources), "--to", str(to)], capsys)
    assert line == f"python -m {tool}: error: argument --to: {to}: its metadata {metadata_path(to)}: is a folder, not a metadata file to write"
    assert list((tmp_path / "out").iterdir()) == [metadata_path(to)]


def test_a_confusion_matrix_shows_whole_row_percentages_that_sum_to_100_in_its_table_and_its_heatmap(tmp_path, monkeypatch):
    """Each cell was rounded alone: with 40 clips a class every clip is 2.5 %, and rows came to 98–101 %."""
    import matplotlib.axes

    from ser_stream import EMOTIONS
    from training import evaluate

    rng = np.random.default_rng(0)
    matrix = np.stack([rng.multinomial(40, np.full(len(EMOTIONS), 1 / len(EMOTIONS))) for _ in EMOTIONS])
    matrix[0] = [13, 13, 13, 1, 0, 0, 0, 0]  # 32.5, 32.5, 32.5, 2.5: 98 rounded cell by cell
    matrix[1] = 0  # a class without clips: a row of zeros
    matrix[2] = [1, 1, 4, 0, 0, 0, 0, 0]  # thirds: remainders equal exactly, unequal in floating point (17, 16, 67)
    table = evaluate.confusion_markdown(matrix, "test")
    rows = [line.split(" | ")[1:] for line in table.splitlines() if line.startswith("| ") and "true \\" not in line]
    shown = np.array([[int(cell.strip(" |*")) for cell in row] for row in rows])
    exact = 100 * matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    assert list(shown.sum(axis=1)) == [100, 0] + [100] * (len(EMOTIONS) - 2)
    assert np.all(np.abs(shown - exact) < 1)
    assert list(shown[0]) == [33, 33, 32, 2, 0, 0, 0, 0]  # the half-percents go to the earlier columns
    assert list(shown[2]) == [17, 17, 66, 0, 0, 0, 0, 0]  # and so do the thirds
    annotations: list[str] = []
    drawn = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text", lambda self, x, y, text, **kwargs: annotations.append(text) or drawn(self, x, y, text, **kwargs))
    evaluate.plot_confusion(matrix, tmp_path / "confusion.png", "test")
    assert annotations == [str(value) for value in shown.ravel()]


def test_mean_per_class_accuracy_averages_each_emotions_recall_over_the_emotions_scored():
    """The paper's figure weighs every emotion alike, whatever its clips number (not the accuracy over clips), and an
    emotion without clips is no class scored 0."""
    from training import evaluate

    four_neutral_right_one_calm_wrong = evaluate.scores(np.array([0, 0, 0, 0, 1]), np.array([0, 0, 0, 0, 0]))
    assert four_neutral_right_one_calm_wrong["mean_per_class_accuracy"] == 0.5
    assert four_neutral_right_one_calm_wrong["accuracy"] == 0.8
    assert four_neutral_right_one_calm_wrong["clips"] == 5  # clips scored, not emotions
    true = np.repeat(np.arange(7), 2)  # two clips of each emotion but surprised, one of each recognised
    predicted = np.where(np.arange(true.size) % 2 == 0, true, (true + 1) % 7)
    scores = evaluate.scores(true, predicted)
    assert scores["mean_per_class_accuracy"] == 0.5 and "recall_surprised" not in scores


def test_scoring_several_models_scores_the_mean_of_their_window_outputs(tiny_ravdess):
    """What training.score measures of an ensemble is what training.ensemble merges: the mean, not the largest output."""
    from ser_stream.windows import WindowConfig
    from training.ravdess import parse_name
    from training.score import score

    class SaysTheSame:  # stands in for an EmotionModel: the same output for every window
        def __init__(self, probabilities: list[float]) -> None:
            self.probabilities = np.array(probabilities + [0.0] * 5, np.float32)

        def predict(self, windows: np.ndarray) -> np.ndarray:
            return np.tile(self.probabilities, (len(windows), 1))

    neutral_or_calm, calm_or_happy = SaysTheSame([0.6, 0.4, 0.0]), SaysTheSame([0.0, 0.45, 0.55])
    calm_clip = parse_name(tiny_ravdess / "Actor_01" / "03-01-02-01-01-01-01.wav")
    scores, _, clips = score([neutral_or_calm, calm_or_happy], [calm_clip], WindowConfig())
    windows = np.array(clips[0]["window_probabilities"])
    assert windows.shape[1] == 8 and np.allclose(windows, [0.3, 0.425, 0.275, 0, 0, 0, 0, 0], atol=1e-6)
    assert scores["accuracy"] == 1.0  # calm, the mean's most likely; the largest output is neutral's 0.6


def test_a_clip_without_windows_is_refused_not_given_an_output_of_nothing():
    """Dividing by its count of none gave a clip an output of NaNs, which argmax reads as neutral."""
    from training import evaluate

    with pytest.raises(ValueError, match="^a clip has no windows$"):
        evaluate.clip_probabilities(np.eye(8)[:2], np.array([3, 3]), np.array([3, 5]))


def test_a_confusion_table_sets_the_diagonal_in_bold_and_means_it_over_the_emotions_with_clips():
    """Table 1's form: the share of each emotion's clips recognised, in bold, and its mean over the emotions scored
    (an emotion without clips is a row of 0 %, not a class scored 0)."""
    from training import evaluate

    matrix = np.zeros((len(EMOTIONS), len(EMOTIONS)), np.int64)
    matrix[0, :2] = [3, 1]  # neutral: 75 % recognised, 25 % taken for calm
    matrix[2, 2] = 2  # happy: 100 %
    table = evaluate.confusion_markdown(matrix, "fold 0")
    rows = [line for line in table.splitlines() if line.startswith("| ") and "true \\" not in line]
    assert rows[0] == "| neutral | **75** | 25 | 0 | 0 | 0 | 0 | 0 | 0 |"
    assert rows[2] == "| happy | 0 | 0 | **100** | 0 | 0 | 0 | 0 | 0 |"
    assert "Mean of the diagonal: 87.5 % (6 clips)" in table.splitlines()
    assert evaluate.row_percentages(matrix)[1].tolist() == [0.0] * len(EMOTIONS)


def test_a_clip_is_labelled_by_the_mean_of_all_its_window_outputs_not_its_first_window(tmp_path):
    """The paper's rule, through training.score: the first window says neutral, the clip's others calm, and calm wins."""
    import soundfile

    from ser_stream.windows import WindowConfig
    from tests.conftest import speechlike
    from training.ravdess import parse_name
    from training.score import score

    class FirstWindowNeutralOthersCalm:  # stands in for an EmotionModel
        def predict(self, windows: np.ndarray) -> np.ndarray:
            outputs = np.zeros((len(windows), len(EMOTIONS)), np.float32)
            outputs[:, EMOTIONS.index("calm")] = 1.0
            outputs[0, :2] = [0.9, 0.1]
            return outputs

    calm_clip = tmp_path / "03-01-02-01-01-01-01.wav"
    soundfile.write(calm_clip, speechlike(4.0, 16000), 16000)
    scores, _, clips = score([FirstWindowNeutralOthersCalm()], [parse_name(calm_clip)], WindowConfig())
    assert len(clips[0]["window_probabilities"]) > 2
    assert scores["accuracy"] == 1.0


def test_a_clip_is_scored_by_telephone_on_its_own_audio_through_a_phone_line_at_any_rate(tmp_path):
    """The telephone figures are of the clip without the lows a phone line drops, a line of its own for each seed, and a 48 kHz clip gives as many
    windows by telephone as clean (the line's 8 kHz audio was once read at the file's rate)."""
    import soundfile

    from ser_stream.windows import WindowConfig
    from tests.conftest import speechlike
    from training.score import clip_inputs

    clip = tmp_path / "six-seconds.wav"
    soundfile.write(clip, speechlike(6.0, 48000), 48000)
    clean, line = (clip_inputs(clip, WindowConfig(), variant, seed=0) for variant in ("clean", "telephone"))
    below_200_hz = slice(0, 13)  # rows 15.4 Hz apart; the line's band starts at 300 Hz
    assert line.shape == clean.shape and len(clean) > 2
    assert line[:, below_200_hz].mean() < 0.75 * clean[:, below_200_hz].mean()
    assert not np.array_equal(clip_inputs(clip, WindowConfig(), "telephone", seed=1), line)  # each seed its own line


def test_a_clips_phone_line_is_seeded_by_its_name_wherever_its_folder_is():
    """A copy of the data elsewhere, or scored by another path, gets the same telephone figures."""
    from training.score import clip_seed

    name = "03-01-05-01-01-01-01.wav"
    assert clip_seed(Path("/data/Actor_01") / name) == clip_seed(Path("copy/Actor_01") / name) != clip_seed(Path("/data/Actor_01/03-01-05-01-01-01-02.wav"))

def test_scoring_on_an_actor_the_model_only_validated_on_is_refused(smoke_run, tiny_ravdess, tmp_path, capsys):
    """Its weights were picked on that actor's clips: a score on them is not held out."""
    metrics = json.loads(metadata_path(smoke_run / "model.onnx").read_text())["metrics"]
    training = dict(metrics["training"], train_actors=[1], validation_actors=[2])
    model = model_copy(smoke_run / "model.onnx", tmp_path / "model.onnx", metrics=dict(metrics, training=training))
    line = refusal("training.score", ["--data", str(tiny_ravdess), "--actors", "2", "--model", str(model)], capsys)
    assert line == f"python -m training.score: error: --actors 2: {model} was trained or validated on actor(s) 2; score it on actors it has not heard"


def shipped_like(**changes: object):
    """Metadata of a model as ``training.ship`` and ``training.ensemble`` read it, with these fields changed."""
    from ser_stream.features import feature_parameters
    from ser_stream.model import ModelMetadata

    fields: dict = dict(labels=list(EMOTIONS), features=feature_parameters(), window_seconds=2.0, hop_seconds=0.5, sha256="0" * 64,
                        recipe="paper", protocol="actors", metrics={"training": {"epochs": 2}})
    return ModelMetadata(**{**fields, **changes})


def test_shipping_takes_a_training_setting_only_one_side_records_unchecked(tmp_path):
    """A model exported before a setting was recorded cannot be held to it; the evidence is not refused for it."""
    from training.ship import check_same_training

    check_same_training(tmp_path / "metrics.json", {"recipe": "paper", "training": {"epochs": 2, "batch_size": 8}}, shipped_like())
    check_same_training(tmp_path / "metrics.json", {"recipe": "paper", "training": {}}, shipped_like(metrics={"training": {"epochs": 2, "batch_size": 8}}))


def test_evidence_of_a_split_trained_on_every_speaker_is_not_taken_for_held_out_actors(tmp_path):
    """The 'all' split heard every actor: it is not a fold of held-out speakers, whatever scores it carries."""
    from training.reports import ReportError
    from training.ship import check_same_evaluation

    with pytest.raises(ReportError, match=r"evaluates split 'all' of the 'all' protocol, .* needs evidence of --protocol actors"):
        check_same_evaluation(tmp_path / "metrics.json", {"split": "all", "test_clean": {}}, shipped_like(protocol="actors"))


def test_a_report_that_records_trainings_but_not_recipes_is_taken_unchecked(tmp_path):
    """Reports before they recorded what they scored are taken unchecked, not stopped with a traceback."""
    from training.ensemble import check_scored_like_members

    check_scored_like_members(tmp_path / "fold.json", {"trainings": [{"epochs": 4}, {"epochs": 4}]}, [shipped_like(), shipped_like()])


def test_an_ensembles_evidence_may_list_its_members_networks_in_any_order(tmp_path):
    """The model seeds are the members' as a multiset: a report scoring the second member's fold network first is theirs."""
    from ser_stream.errors import ModelError
    from training.ensemble import check_scored_like_members

    members = [shipped_like(metrics={"training": {"epochs": 2, "model_seed": seed}}) for seed in (0, 1)]
    report = {"recipes": ["paper", "paper"], "trainings": [{"training": {"epochs": 2, "model_seed": seed}} for seed in (1, 0)]}
    check_scored_like_members(tmp_path / "fold.json", report, members)
    report["trainings"][0]["training"]["model_seed"] = 2
    with pytest.raises(ModelError, match="scores networks of model seeds 2, 0, the ensemble's members are of model seeds 0, 1"):
        check_scored_like_members(tmp_path / "fold.json", report, members)


def test_an_ensemble_of_one_model_is_refused_in_one_line(shipped_model, tmp_path, capsys):
    line = refusal("training.ensemble", [str(shipped_model), "--to", str(tmp_path / "ensemble.onnx")], capsys)
    assert line == "python -m training.ensemble: error: an ensemble needs at least two member models"
    assert list(tmp_path.iterdir()) == []


def test_unpacking_an_ensemble_whose_metadata_lists_no_members_is_refused_in_one_line(shipped_model, tmp_path, capsys):
    """The metadata names the members the final mean averages; one that lost that list (or another count) is not unpacked."""
    model = model_copy(shipped_model, tmp_path / "ser_cnn.onnx")
    metadata = json.loads(metadata_path(model).read_text())
    for members in (None, metadata["metrics"]["members"][1:]):
        metrics = {key: value for key, value in metadata["metrics"].items() if key != "members"}
        metadata_path(model).write_text(json.dumps(dict(metadata, metrics=metrics if members is None else dict(metrics, members=members))))
        line = refusal("training.ensemble", [str(model), "--unpack", str(tmp_path / "members")], capsys)
        assert line == f"python -m training.ensemble: error: {model}: not an ensemble written by training.ensemble (no final mean over its listed members)"
        assert not (tmp_path / "members").exists()


def test_unpacking_into_a_file_is_refused_naming_it(shipped_model, tmp_path, capsys):
    a_file = tmp_path / "members"
    a_file.write_text("notes")
    line = refusal("training.ensemble", [str(shipped_model), "--unpack", str(a_file)], capsys)
    assert line == f"python -m training.ensemble: error: --unpack {a_file}: is a file, not a folder"
    assert a_file.read_text() == "notes"


def test_unpacking_where_one_members_metadata_cannot_be_written_moves_no_member_in(shipped_model, tmp_path, capsys):
    """Every member's place is checked before any moves in: a folder in the way of the last one left the others there."""
    folder = tmp_path / "members"
    count = len(load_metadata(shipped_model).metrics["members"])
    in_the_way = folder / f"member{count - 1}.json"
    in_the_way.mkdir(parents=True)
    line = refusal("training.ensemble", [str(shipped_model), "--unpack", str(folder)], capsys)
    assert line.startswith(f"python -m training.ensemble: error: {folder / f'member{count - 1}.onnx'}: its metadata ")
    assert sorted(path.name for path in folder.iterdir()) == [in_the_way.name]


def test_a_model_is_not_moved_to_a_place_whose_metadata_cannot_be_written(shipped_model, tmp_path):
    """The pair goes in whole or not at all: the .onnx moved and its .json then failed on a folder of that name."""
    from ser_stream.errors import ModelError
    from training.contract import put_in_place

    staged = model_copy(shipped_model, tmp_path / "ser_cnn.shipping.onnx")
    to = tmp_path / "out" / "ser_cnn.onnx"
    metadata_path(to).mkdir(parents=True)
    with pytest.raises(ModelError, match="its metadata .*is a folder"):
        put_in_place(staged, to)
    assert not to.exists() and staged.exists()


def test_a_ship_that_fails_after_staging_leaves_no_staged_model_behind(shipped_model, tmp_path, capsys, monkeypatch):
    import training.ship
    from ser_stream.errors import ModelError

    def refuse(staged: Path, to: Path) -> None:
        raise ModelError(f"{to}: refused")

    monkeypatch.setattr(training.ship, "put_in_place", refuse)
    (tmp_path / "source").mkdir()
    source = model_copy(shipped_model, tmp_path / "source" / "ser_cnn.onnx")
    line = refusal("training.ship", [str(source), "--to", str(tmp_path / "shipped.onnx")], capsys)
    assert line == f"python -m training.ship: error: {tmp_path / 'shipped.onnx'}: refused"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["source"]


def test_an_ensemble_refuses_a_report_that_scored_fewer_networks_than_it_has(members, tiny_ravdess, tmp_path, capsys):
    """A report of one fold network is not evidence of the mean of two."""
    report = score_report(members, tiny_ravdess, tmp_path / "fold.json")
    scored = json.loads(report.read_text())
    report.write_text(json.dumps(dict(scored, models=scored["models"][:1])))
    line = refusal("training.ensemble", [*map(str, members), "--to", str(tmp_path / "ensemble.onnx"), "--evidence", str(report)], capsys)
    assert line == f"python -m training.ensemble: error: {report}: scores 1 model(s), the ensemble has 2"
    assert not list(tmp_path.glob("ensemble*"))


def test_an_ensemble_takes_a_report_listing_its_networks_in_another_order_or_from_before_reports_recorded_their_hop(members, tiny_ravdess, tmp_path):
    """Members are matched to a report's networks as a set, and a report without hop_seconds was scored at the default hop."""
    from training.ensemble import main as ensemble_main

    report = score_report(members, tiny_ravdess, tmp_path / "fold.json")
    scored = json.loads(report.read_text())
    assert scored["recipes"][0] != scored["recipes"][1]  # the order is visible
    reordered = {key: scored[key][::-1] for key in ("models", "recipes", "trainings")}
    report.write_text(json.dumps({**{key: value for key, value in scored.items() if key != "hop_seconds"}, **reordered}))
    assert ensemble_main([*map(str, members), "--to", str(tmp_path / "ensemble.onnx"), "--evidence", str(report)]) == 0
    assert list(load_metadata(tmp_path / "ensemble.onnx").metrics["held_out_evaluations"]) == ["actors-02"]


def test_an_ensembles_metadata_records_its_members_recipes_mixed_protocols_telephone_scores_and_parity(members, tiny_ravdess, tmp_path):
    """What the merged file's JSON says of it: members of the random and the all protocol make a mixed one."""
    from training.ensemble import PARITY_BOUND
    from training.ensemble import main as ensemble_main

    report = score_report(members, tiny_ravdess, tmp_path / "fold.json")
    scored = json.loads(report.read_text())
    report.write_text(json.dumps(dict(scored, telephone=scored["clean"])))  # the clean scores stand in for a telephone run's
    merged = tmp_path / "ensemble.onnx"
    assert ensemble_main([*map(str, members), "--to", str(merged), "--evidence", str(report)]) == 0
    metadata, recipes = load_metadata(merged), [load_metadata(member).recipe for member in members]
    assert sorted(load_metadata(member).protocol for member in members) == ["all", "random"]
    assert metadata.protocol == "mixed" and metadata.recipe == "ensemble: " + " + ".join(recipes)
    assert metadata.metrics["held_out_evaluations"]["actors-02"]["test_telephone"] == scored["clean"]
    assert 0.0 <= metadata.metrics["ensemble_parity_max_abs_diff"] <= PARITY_BOUND


def test_the_actors_a_model_heard_are_those_it_trained_or_was_validated_on_its_members_too():
    from training.reports import heard_actors

    metrics = {"training": {"train_actors": [1, 4], "validation_actors": [2]},
               "members": [{"training": {"train_actors": [4, 6], "validation_actors": [8]}}, "not a member record"]}
    assert heard_actors(metrics) == [1, 2, 4, 6, 8]
    assert heard_actors({"training": {"epochs": 2}}) == []  # not recorded: none known


def test_a_splits_recorded_window_is_its_model_json_window_and_hop_and_none_if_not_numbers(tmp_path):
    from training.reports import recorded_window

    (tmp_path / "model.json").write_text(json.dumps({"window_seconds": 2.0, "hop_seconds": 0.5}))
    assert recorded_window(tmp_path) == (2.0, 0.5)
    (tmp_path / "model.json").write_text(json.dumps({"window_seconds": "2 s", "hop_seconds": 0.5}))
    assert recorded_window(tmp_path) is None


def test_an_older_runs_recipe_is_read_from_the_summary_json_of_its_run_folder(tmp_path):
    """metrics.json lies in <run>/<split>/; summary.json, in <run>/."""
    from training.reports import evaluated_recipe

    (tmp_path / "fold0-actors-01-02").mkdir()
    (tmp_path / "summary.json").write_text(json.dumps({"settings": {"recipe": {"name": "improved"}}}))
    assert evaluated_recipe(tmp_path / "fold0-actors-01-02" / "metrics.json", {}) == "improved"
    assert evaluated_recipe(tmp_path / "fold0-actors-01-02" / "metrics.json", {"recipe": "paper"}) == "paper"
