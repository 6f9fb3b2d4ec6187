"""Per-class output weights: fitted on some folds' held-out clips, judged on another's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ser_stream import EMOTIONS
from training.calibrate import HeldOutClips, calibrated, cross_validate, fit_log_weights, read_report
from training.reports import ReportError

SAD = EMOTIONS.index("sad")


def biased_fold(name: str, seed: int, clips_per_class: int = 20, windows: int = 4) -> HeldOutClips:
    """Noisy outputs that favour the true class, with "sad" pushed down as a network might on new voices."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(EMOTIONS)), clips_per_class)
    window_clip = np.repeat(np.arange(labels.size), windows)
    logits = 1.5 * np.eye(len(EMOTIONS))[labels[window_clip]] + rng.normal(0, 1.0, (window_clip.size, len(EMOTIONS)))
    logits[:, SAD] -= 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return HeldOutClips(name, probabilities, window_clip, labels)


def test_calibrated_windows_stay_probabilities_and_unit_weights_change_nothing():
    fold = biased_fold("a", 0)
    assert np.allclose(calibrated(fold.window_probabilities, np.zeros(8)), fold.window_probabilities)
    scaled = calibrated(fold.window_probabilities, np.linspace(-1, 1, 8))
    assert np.allclose(scaled.sum(axis=1), 1.0) and np.all(scaled >= 0)


def test_weights_fitted_on_other_folds_undo_a_class_bias_on_a_fold_they_never_saw():
    folds = [biased_fold(f"fold{index}", index) for index in range(3)]
    weights = np.exp(fit_log_weights(folds[1:]))
    assert weights[SAD] == weights.max() and weights[SAD] > 2.0
    rows = cross_validate(folds)
    for row in rows:
        assert row["calibrated"]["recall_sad"] > row["uncalibrated"]["recall_sad"]
    gain = np.mean([row["calibrated"]["mean_per_class_accuracy"] - row["uncalibrated"]["mean_per_class_accuracy"] for row in rows])
    assert gain > 0.05


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


def test_pooled_folds_count_every_clip_once_with_the_paper_rule(tmp_path):
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
    assert (tmp_path / "pooled.png").stat().st_size > 0
