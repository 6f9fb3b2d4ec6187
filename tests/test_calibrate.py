"""Per-class output weights: fitted on some folds' held-out clips, judged on another's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ser_stream import EMOTIONS
from training.calibrate import HeldOutClips, calibrated, cross_validate, fit_log_weights, read_report
from training.reports import ReportError

SAD, HAPPY = EMOTIONS.index("sad"), EMOTIONS.index("happy")


def biased_fold(name: str, seed: int, clips_per_class: int = 20, windows: int = 4, pushed_down: int = SAD) -> HeldOutClips:
    """Noisy outputs that favour the true class, with one ("sad") pushed down as a network might on new voices."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(EMOTIONS)), clips_per_class)
    window_clip = np.repeat(np.arange(labels.size), windows)
    logits = 1.5 * np.eye(len(EMOTIONS))[labels[window_clip]] + rng.normal(0, 1.0, (window_clip.size, len(EMOTIONS)))
    logits[:, pushed_down] -= 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return HeldOutClips(name, probabilities, window_clip, labels)


def test_calibrated_windows_stay_probabilities_and_unit_weights_change_nothing():
    fold = biased_fold("a", 0)
    assert np.allclose(calibrated(fold.window_probabilities, np.zeros(8)), fold.window_probabilities)
    scaled = calibrated(fold.window_probabilities, np.linspace(-1, 1, 8))
    assert np.allclose(scaled.sum(axis=1), 1.0) and np.all(scaled >= 0)
    # by hand: times weights 1, 2, 0.5, 1, …: 0.4, 0.2, 0.05, 0.1, 0.1, 0.1, 0.1, 0, summing to 1.05, divided by it
    window = np.array([[0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.0]])
    weights = np.log([1.0, 2.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert np.allclose(calibrated(window, weights), np.array([[8, 4, 1, 2, 2, 2, 2, 0]]) / 21)


def test_weights_fitted_on_other_folds_undo_a_class_bias_on_a_fold_they_never_saw():
    folds = [biased_fold(f"fold{index}", index) for index in range(3)]
    weights = np.exp(fit_log_weights(folds[1:]))
    assert weights[SAD] == weights.max() and weights[SAD] > 2.0
    rows = cross_validate(folds)
    for row in rows:
        assert row["calibrated"]["recall_sad"] > row["uncalibrated"]["recall_sad"]
    gain = np.mean([row["calibrated"]["mean_per_class_accuracy"] - row["uncalibrated"]["mean_per_class_accuracy"] for row in rows])
    assert gain > 0.05


def test_each_folds_weights_are_fitted_on_the_other_folds_alone():
    """Fitted on its own clips too, a fold would be scored on what its weights learnt: not held out."""
    folds = [biased_fold("fold0", 0), biased_fold("fold1", 1), biased_fold("fold2", 2, pushed_down=HAPPY)]
    for index, row in enumerate(cross_validate(folds)):
        fitted_on_the_others = np.exp(fit_log_weights(folds[:index] + folds[index + 1 :]))
        assert list(row["weights"].values()) == np.round(fitted_on_the_others, 3).tolist(), row["fold"]  # shown to 3 places


def clips_repeated(fold: HeldOutClips, label: int, times: int) -> HeldOutClips:
    """``fold`` with every clip of one emotion there ``times`` over."""
    clips = list(range(len(fold.labels))) + [clip for clip in range(len(fold.labels)) if fold.labels[clip] == label] * (times - 1)
    windows = [fold.window_probabilities[fold.window_clip == clip] for clip in clips]
    return HeldOutClips(fold.name, np.concatenate(windows), np.repeat(np.arange(len(clips)), [len(w) for w in windows]), fold.labels[clips])


def test_weights_are_fitted_class_balanced_so_an_emotion_with_more_clips_does_not_pull_them():
    """Balanced as mean per-class accuracy is (RAVDESS has half as many neutral clips as of any other emotion): four
    times the sad clips is the same fit."""
    fold = biased_fold("fold0", 0, clips_per_class=10)
    assert np.exp(fit_log_weights([clips_repeated(fold, SAD, 4)])) == pytest.approx(np.exp(fit_log_weights([fold])), abs=1e-3)


def test_unbiased_outputs_keep_weights_near_one():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(8), 30)
    logits = 1.5 * np.eye(8)[labels] + rng.normal(0, 1.0, (labels.size, 8))
    fold = HeldOutClips("plain", np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), np.arange(labels.size), labels)
    assert np.allclose(np.exp(fit_log_weights([fold])), 1.0, atol=0.35)


def test_a_report_without_window_outputs_is_refused_by_name(tmp_path):
    report = tmp_path / "old.json"
    report.write_text(json.dumps({"models": ["m.onnx"], "actors": [1], "clean": {"mean_per_class_accuracy": 0.5}}))
    with pytest.raises(ReportError, match=r"old\.json: not a training\.score report with clean window outputs"):
        read_report(report, "clean")


def test_pooled_folds_count_every_clip_once_with_the_paper_rule(tmp_path, capsys):
    from training.pool import main as pool_main
    from training.pool import pooled_confusion

    folds = [biased_fold(f"fold{index}", index, clips_per_class=5) for index in range(2)]
    matrix = pooled_confusion(folds)
    assert matrix.sum() == 2 * 5 * len(EMOTIONS) and list(matrix.sum(axis=1)) == [10] * len(EMOTIONS)
    # clip 0 of fold 0 by hand: the argmax of its windows' mean output
    first = folds[0].window_probabilities[folds[0].window_clip == 0].mean(axis=0).argmax()
    alone = pooled_confusion([HeldOutClips("one", folds[0].window_probabilities[:4], folds[0].window_clip[:4], folds[0].labels[:1])])
    assert alone[folds[0].labels[0], first] == 1 and alone.sum() == 1
    reports = []
    for fold in folds:
        clips = [
            {"label": EMOTIONS[label], "window_probabilities": fold.window_probabilities[fold.window_clip == index].tolist()}
            for index, label in enumerate(fold.labels)
        ]
        reports.append(tmp_path / f"{fold.name}.json")
        reports[-1].write_text(json.dumps({"clean_clips": clips}))
    assert pool_main([str(path) for path in reports] + ["--png", str(tmp_path / "pooled.png")]) == 0
    assert capsys.readouterr().out.startswith("### clean, 2 folds pooled\n")  # the table says what it pools
    assert (tmp_path / "pooled.png").stat().st_size > 0


def fold_report(path, fold: HeldOutClips, names: list[str]) -> str:
    clips = [
        {"clip": name, "label": EMOTIONS[label], "window_probabilities": fold.window_probabilities[fold.window_clip == index].tolist()}
        for index, (name, label) in enumerate(zip(names, fold.labels))
    ]
    path.write_text(json.dumps({"clean_clips": clips}))
    return str(path)


def test_the_same_clip_in_two_fold_reports_is_refused_naming_both(tmp_path, capsys):
    """The same report given twice was once cross-validated: each fold's weights fitted on its own clips."""
    from training.calibrate import main

    fold = biased_fold("fold0", 0, clips_per_class=2)
    names = [f"03-01-0{label + 1}-01-01-0{index % 2 + 1}-03.wav" for index, label in enumerate(fold.labels)]
    first = fold_report(tmp_path / "fold0.json", fold, names)
    copy = fold_report(tmp_path / "fold0-copy.json", fold, names)
    for reports, reason in (([first, first], f"{first}: given twice; give one report per fold"),
                            ([first, copy], f"{copy}: scores {names[0]}, which {first} scores too; give one report per fold, each of other speakers")):
        with pytest.raises(SystemExit) as stopped:
            main(reports)
        assert stopped.value.code == 2
        assert capsys.readouterr().err == f"python -m training.calibrate: error: {reason}\n"


@pytest.mark.parametrize("bad", [np.nan, -0.5, 2.0], ids=["nan", "negative", "above-one"])
def test_window_outputs_that_are_not_probabilities_are_refused_by_name(tmp_path, bad):
    fold = biased_fold("fold0", 0, clips_per_class=1)
    fold.window_probabilities[0, 0] = bad
    fold_report(tmp_path / "odd.json", fold, [f"clip{i}" for i in range(len(fold.labels))])
    with pytest.raises(ReportError, match=r"odd\.json: not a training\.score report with clean window outputs \(its window outputs are not probabilities"):
        read_report(tmp_path / "odd.json", "clean")


def test_a_window_all_zero_is_refused_by_name_as_no_probabilities(tmp_path):
    """Renormalising its calibrated outputs would divide by zero."""
    fold = biased_fold("fold0", 0, clips_per_class=1)
    fold.window_probabilities[0] = 0.0
    fold_report(tmp_path / "odd.json", fold, [f"clip{i}" for i in range(len(fold.labels))])
    with pytest.raises(ReportError, match=r"odd\.json: not a training\.score report with clean window outputs \(its window outputs are not probabilities"):
        read_report(tmp_path / "odd.json", "clean")


def test_a_window_certain_of_one_emotion_is_read_as_the_probabilities_it_is(tmp_path):
    fold = biased_fold("fold0", 0, clips_per_class=1)
    fold.window_probabilities[0] = np.eye(len(EMOTIONS))[fold.labels[0]]
    fold_report(tmp_path / "sure.json", fold, [f"clip{i}" for i in range(len(fold.labels))])
    np.testing.assert_array_equal(read_report(tmp_path / "sure.json", "clean").window_probabilities, fold.window_probabilities)


@pytest.mark.parametrize("windows", [[], [0.125] * 8], ids=["no-windows", "one-window-unlisted"])
def test_a_clip_without_a_list_of_windows_of_eight_outputs_is_refused_by_name(tmp_path, windows):
    report = tmp_path / "odd.json"
    report.write_text(json.dumps({"clean_clips": [{"clip": "a.wav", "label": "sad", "window_probabilities": windows}]}))
    with pytest.raises(ReportError, match=r"odd\.json: not a training\.score report with clean window outputs \('clean_clips' holds no clips, or a clip without 8 outputs per window\)"):
        read_report(report, "clean")


def test_an_emotion_no_fold_has_clips_of_keeps_a_weight_the_calibrated_model_can_still_say_it_with():
    """Where the data says nothing the small penalty holds a weight back; unpenalised, that emotion's weight ran to 0."""
    fold = biased_fold("fold0", 0)
    kept = fold.labels != EMOTIONS.index("neutral")
    windows = kept[fold.window_clip]
    without_neutral = HeldOutClips("fold0", fold.window_probabilities[windows], np.cumsum(kept)[fold.window_clip[windows]] - 1, fold.labels[kept])
    weights = np.exp(fit_log_weights([without_neutral]))
    assert weights[EMOTIONS.index("neutral")] > 0.1 and weights.max() / weights.min() < 20


def test_calibrating_on_a_single_fold_report_is_refused_in_one_line(tmp_path, capsys):
    """Each fold's weights are fitted on the other folds: with one there are none to fit on."""
    from training.calibrate import main

    fold = biased_fold("fold0", 0, clips_per_class=1)
    report = fold_report(tmp_path / "fold0.json", fold, [f"clip{i}" for i in range(len(fold.labels))])
    with pytest.raises(SystemExit) as stopped:
        main([report])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "python -m training.calibrate: error: cross-validation needs at least two fold reports\n"


def test_a_fold_report_given_twice_however_spelled_is_said_to_be_given_twice(tmp_path, capsys, monkeypatch):
    from training.calibrate import main

    fold = biased_fold("fold0", 0, clips_per_class=1)
    fold_report(tmp_path / "fold0.json", fold, [f"clip{i}" for i in range(len(fold.labels))])
    monkeypatch.chdir(tmp_path)
    again = f"../{tmp_path.name}/fold0.json"
    with pytest.raises(SystemExit) as stopped:
        main(["fold0.json", again])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == f"python -m training.calibrate: error: {again}: given twice; give one report per fold\n"
