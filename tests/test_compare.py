"""``python -m training.compare``: a recipe screen's table from the runs' metrics.json files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from training.compare import main


def write_fold(run: Path, fold: int, clean: float, telephone: float | None, fitted: float | None, head: bool = False, actors: str = "01-02") -> None:
    """A finished fold's metrics.json (``telephone`` None: a run that scored clean audio only) and checkpoint state."""
    folder = run / f"fold{fold}-actors-{actors}"
    (folder / "checkpoints").mkdir(parents=True)
    metrics = {"split": folder.name}
    for variant, score in (("clean", clean), ("telephone", telephone)):
        if score is not None:
            metrics[f"test_{variant}"] = {"mean_per_class_accuracy": score, "accuracy": score + 0.01}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if fitted is not None:
        key = "probabilities_accuracy" if head else "accuracy"
        (folder / "checkpoints" / "state.json").write_text(json.dumps({"epoch": 2, "history": {key: [0.1, fitted]}}))


def test_runs_are_compared_on_the_folds_all_have_finished_with_means_and_training_fit(tmp_path, capsys):
    baseline, screen = tmp_path / "baseline", tmp_path / "screen"
    for fold, score in enumerate((0.50, 0.60, 0.40)):
        write_fold(baseline, fold, score, score - 0.02, 0.62)
    write_fold(screen, 0, 0.56, 0.55, 0.67, head=True)
    write_fold(screen, 2, 0.44, 0.40, None)  # a run whose checkpoints were cleaned away
    assert main([str(baseline), str(screen)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| mean per-class | fold 0 | fold 2 | mean | accuracy | telephone | training accuracy per window |"
    assert lines[2] == f"| {baseline} | 50.0 % | 40.0 % | **45.0 %** | 46.0 % | 43.0 % | 0.62 / 0.62 |"
    assert lines[3] == f"| {screen} | 56.0 % | 44.0 % | **50.0 %** | 51.0 % | 47.5 % | 0.67 / – |"


def test_a_mean_over_folds_one_of_which_lacks_the_figure_is_a_dash_not_the_mean_of_the_others(tmp_path, capsys):
    """Fold 1 was not scored through the telephone chain: a mean of fold 0 alone would sit beside the other runs' means of two."""
    write_fold(tmp_path / "run", 0, 0.50, 0.40, 0.62)
    write_fold(tmp_path / "run", 1, 0.60, None, 0.62)
    assert main([str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out.splitlines()[2] == f"| {tmp_path / 'run'} | 50.0 % | 60.0 % | **55.0 %** | 56.0 % | – | 0.62 / 0.62 |"


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda tmp: tmp / "missing", "{run}: not a run folder"),
        (lambda tmp: tmp, "{run}: no finished fold (no fold*-*/metrics.json)"),
    ],
    ids=["missing", "empty"],
)
def test_a_run_folder_without_finished_folds_is_one_line(tmp_path, capsys, make, reason):
    run = make(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main([str(run)])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and error == f"python -m training.compare: error: {reason.format(run=run)}\n"


def test_runs_without_a_fold_in_common_are_one_line(tmp_path, capsys):
    write_fold(tmp_path / "a", 0, 0.5, 0.5, 0.6)
    write_fold(tmp_path / "b", 1, 0.5, 0.5, 0.6)
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path / "a"), str(tmp_path / "b")])
    assert stopped.value.code == 2 and "no finished fold in common" in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda fold: (fold / "metrics.json").write_text("[1, 2]"), "{fold}/metrics.json: not a training run's metrics.json (not a JSON object)"),
        (lambda fold: (fold / "metrics.json").write_text('{"test_clean": 0.5}'), "{fold}/metrics.json: not a training run's metrics.json (test_clean.mean_per_class_accuracy is not a number)"),
        (
            lambda fold: (fold / "metrics.json").write_text('{"test_clean": {"mean_per_class_accuracy": 0.5, "accuracy": 0.5}, "test_telephone": {"mean_per_class_accuracy": "high", "accuracy": 0.5}}'),
            "{fold}/metrics.json: not a training run's metrics.json (test_telephone.mean_per_class_accuracy is not a number)",
        ),
        (lambda fold: (fold / "checkpoints" / "state.json").write_text('"done"'), "{fold}/checkpoints/state.json: not a run's checkpoint state (not a JSON object)"),
        (
            lambda fold: (fold / "checkpoints" / "state.json").write_text('{"epoch": 2, "history": {"accuracy": [0.1, null]}}'),
            "{fold}/checkpoints/state.json: not a run's checkpoint state ('history' is not lists of numbers by metric)",
        ),
        (lambda fold: ((fold / "metrics.json").unlink(), (fold / "metrics.json").mkdir()), "{fold}/metrics.json: a folder, not a file"),
        (lambda fold: (fold / "checkpoints" / "state.json").write_text("{}"), "{fold}/checkpoints/state.json: not a run's checkpoint state (no 'epoch' key)"),
        (
            lambda fold: (fold / "checkpoints" / "state.json").write_text('{"epoch": -1, "history": {"accuracy": [0.5]}}'),
            "{fold}/checkpoints/state.json: not a run's checkpoint state ('epoch' is not a count of epochs)",
        ),
    ],
    ids=["metrics-not-an-object", "score-not-a-section", "score-not-a-number", "state-not-an-object", "history-with-a-gap", "metrics-a-folder",
         "state-without-keys", "state-negative-epoch"],
)
def test_a_damaged_metrics_or_state_file_is_one_line_naming_it(tmp_path, capsys, damage, reason):
    run = tmp_path / "run"
    write_fold(run, 0, 0.5, 0.5, 0.6)
    fold = run / "fold0-actors-01-02"
    damage(fold)
    with pytest.raises(SystemExit) as stopped:
        main([str(run)])
    assert stopped.value.code == 2 and capsys.readouterr().err == f"python -m training.compare: error: {reason.format(fold=fold)}\n"


def test_a_run_with_two_folders_for_one_fold_is_one_line_naming_both(tmp_path, capsys):
    run = tmp_path / "run"
    write_fold(run, 0, 0.5, 0.5, 0.6)
    shutil.copytree(run / "fold0-actors-01-02", run / "fold0-actors-01-03")  # the same fold held out on other actors
    with pytest.raises(SystemExit) as stopped:
        main([str(run)])
    error = capsys.readouterr().err
    assert stopped.value.code == 2
    assert error == f"python -m training.compare: error: {run / 'fold0-actors-01-02'} and {run / 'fold0-actors-01-03'}: two folders for fold 0; keep one in the run\n"


def test_folds_of_the_same_number_that_hold_out_other_speakers_are_refused_in_one_line(tmp_path, capsys):
    """Another --seed or --folds numbers other speakers' folds alike: they were once set side by side as one fold."""
    write_fold(tmp_path / "a", 0, 0.5, 0.5, 0.6, actors="03-05")
    write_fold(tmp_path / "b", 0, 0.5, 0.5, 0.6, actors="04-12")
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path / "a"), str(tmp_path / "b")])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        f"python -m training.compare: error: fold 0 holds out other speakers in {tmp_path / 'b'} (fold0-actors-04-12) than in "
        f"{tmp_path / 'a'} (fold0-actors-03-05); compare runs of the same folds (--folds, --seed, --balance-voices)\n"
    )


def test_the_tables_rule_has_a_cell_under_every_heading_so_markdown_shows_it_as_a_table(tmp_path, capsys):
    """A delimiter row with fewer cells than the header is not a table in GitHub's Markdown: the screen shows as text."""
    for fold in (0, 1):
        write_fold(tmp_path / "run", fold, 0.5, 0.4, 0.6)
    assert main([str(tmp_path / "run")]) == 0
    header, rule = capsys.readouterr().out.splitlines()[:2]
    assert header.count("|") == rule.count("|") and rule == "|" + "---|" * (header.count("|") - 1)


def test_a_third_run_whose_fold_holds_out_other_speakers_is_refused_like_the_second(tmp_path, capsys):
    write_fold(tmp_path / "a", 0, 0.5, 0.5, 0.6, actors="03-05")
    write_fold(tmp_path / "b", 0, 0.5, 0.5, 0.6, actors="03-05")
    write_fold(tmp_path / "c", 0, 0.5, 0.5, 0.6, actors="04-12")
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c")])
    assert stopped.value.code == 2
    assert f"fold 0 holds out other speakers in {tmp_path / 'c'} (fold0-actors-04-12)" in capsys.readouterr().err


def test_folds_numbered_10_and_up_are_compared_too(tmp_path, capsys):
    """A screen of more than ten folds: fold 10 is a fold like the others, not a folder passed over."""
    for fold, score in ((9, 0.5), (10, 0.7)):
        write_fold(tmp_path / "run", fold, score, score, 0.6)
    assert main([str(tmp_path / "run")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| mean per-class | fold 9 | fold 10 | mean |")
    assert lines[2].startswith(f"| {tmp_path / 'run'} | 50.0 % | 70.0 % | **60.0 %** |")


def test_a_run_one_epoch_long_shows_that_epochs_training_accuracy(tmp_path, capsys):
    write_fold(tmp_path / "run", 0, 0.5, 0.5, None)
    (tmp_path / "run" / "fold0-actors-01-02" / "checkpoints" / "state.json").write_text(json.dumps({"epoch": 1, "history": {"accuracy": [0.41]}}))
    assert main([str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out.splitlines()[2].endswith("| 0.41 |")
