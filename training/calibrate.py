"""Per-class output weights fitted on held-out speakers, judged on speakers they were not fitted on.

On voices it has never heard, the network's outputs lean towards some classes
(over the five folds the shipped recipe said "happy" 196 times and "sad" 85
times for 160 clips of each). Scaling each class's output by a weight and
renormalising every window is the cheapest fix there is: eight numbers, no
retraining. Whether it helps new speakers, or only the ones it was fitted on,
is what this measures: each fold's weights are fitted on the other folds'
held-out clips only, and scored on its own.

    python -m training.calibrate runs/clips/fold*.json [--variant clean]

The reports are ``training.score --out`` files, one per fold, each holding
every held-out clip's window outputs.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.optimize
from numpy.typing import NDArray

from ser_stream import EMOTIONS
from ser_stream.cli import OneLineParser, output_file
from ser_stream.errors import shown
from training import evaluate
from training.reports import ReportError, read_json, require_keys


@dataclass(frozen=True)
class HeldOutClips:
    """One fold's held-out clips: every window's outputs, the clip each belongs to, and the clips' labels."""

    name: str
    window_probabilities: NDArray[np.float64]  # [windows, 8]
    window_clip: NDArray[np.int64]  # clip index of each window, ascending
    labels: NDArray[np.int64]  # [clips]
    clip_names: tuple[str, ...] = ()  # to refuse a clip scored in two folds' reports


def read_report(path: Path, variant: str) -> HeldOutClips:
    """The clips of one ``training.score`` report; ``ReportError`` naming the file if it has no window outputs."""
    key = f"{variant}_clips"
    what = f"a training.score report with {variant} window outputs"
    clips = require_keys(read_json(path, what), path, what, (key,))[key]
    try:
        windows = [np.asarray(clip["window_probabilities"], dtype=np.float64) for clip in clips]
        labels = [EMOTIONS.index(clip["label"]) for clip in clips]
    except (KeyError, TypeError, ValueError):  # not a list of clips, a clip without outputs or label, an unknown label
        raise ReportError(f"{shown(path)}: not {what} ({key!r} is not a list of clips, each with its label and window outputs)") from None
    if not clips or any(w.ndim != 2 or len(w) == 0 or w.shape[1] != len(EMOTIONS) for w in windows):
        raise ReportError(f"{shown(path)}: not {what} ({key!r} holds no clips, or a clip without {len(EMOTIONS)} outputs per window)")
    outputs = np.concatenate(windows)
    if not np.all(np.isfinite(outputs)) or outputs.min() < 0 or outputs.max() > 1 or not np.all(outputs.sum(axis=1) > 0):
        raise ReportError(f"{shown(path)}: not {what} (its window outputs are not probabilities: NaN, outside 0 to 1, or all zero)")
    return HeldOutClips(
        name=path.stem,
        window_probabilities=outputs,
        window_clip=np.repeat(np.arange(len(clips)), [len(w) for w in windows]),
        labels=np.asarray(labels),
        clip_names=tuple(str(clip.get("clip", "")) for clip in clips),
    )


def calibrated(window_probabilities: NDArray[np.float64], log_weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each window's outputs times the class weights, renormalised: what a calibrated model would output."""
    scaled = window_probabilities * np.exp(log_weights)
    return scaled / scaled.sum(axis=-1, keepdims=True)


def clip_means(clips: HeldOutClips, log_weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """The paper's rule on calibrated windows: each clip's mean window output."""
    return evaluate.clip_probabilities(calibrated(clips.window_probabilities, log_weights), clips.window_clip, np.arange(len(clips.labels)))


def fit_log_weights(folds: list[HeldOutClips], l2: float = 1e-2) -> NDArray[np.float64]:
    """Log class weights minimising the class-balanced cross-entropy of the clips' calibrated mean outputs.

    Balanced, because the score to improve is mean per-class accuracy; a small
    L2 penalty keeps weights at 1 where the data says nothing. Weights are
    centred (only their ratios matter).
    """
    labels = np.concatenate([fold.labels for fold in folds])
    balance = len(labels) / (len(EMOTIONS) * np.bincount(labels, minlength=len(EMOTIONS)).clip(min=1))

    def loss(log_weights: NDArray[np.float64]) -> float:
        centred = log_weights - log_weights.mean()
        truth = np.concatenate([clip_means(fold, centred)[np.arange(len(fold.labels)), fold.labels] for fold in folds])
        weights = balance[labels]
        return float(-np.sum(weights * np.log(truth + 1e-9)) / weights.sum() + l2 * np.sum(centred**2))

    fitted = scipy.optimize.minimize(loss, np.zeros(len(EMOTIONS)), method="L-BFGS-B").x
    return fitted - fitted.mean()


def fold_scores(fold: HeldOutClips, log_weights: NDArray[np.float64]) -> dict[str, float]:
    predicted = np.argmax(clip_means(fold, log_weights), axis=1)
    return evaluate.scores(fold.labels, predicted)


def cross_validate(folds: list[HeldOutClips]) -> list[dict]:
    """For every fold: its scores as the network outputs them, and with weights fitted on the other folds."""
    rows = []
    for index, fold in enumerate(folds):
        others = folds[:index] + folds[index + 1 :]
        log_weights = fit_log_weights(others)
        rows.append(
            {
                "fold": fold.name,
                "uncalibrated": fold_scores(fold, np.zeros(len(EMOTIONS))),
                "calibrated": fold_scores(fold, log_weights),
                "weights": dict(zip(EMOTIONS, np.round(np.exp(log_weights), 3).tolist())),
            }
        )
    return rows


def read_reports_or_exit(parser: argparse.ArgumentParser, paths: list[Path], variant: str) -> list[HeldOutClips]:
    """Every report's clips, or the command's one-line error naming the first that is not a report."""
    try:
        folds = [read_report(path, variant) for path in paths]
    except ReportError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    scored_in: dict[str, Path] = {}
    for path, fold in zip(paths, folds):  # each fold's weights are fitted on the others: a clip in two would be fitted on itself
        again = next((name for name in fold.clip_names if name and name in scored_in), None)
        if again is not None:
            earlier = scored_in[again]
            reason = "given twice; give one report per fold" if earlier.resolve() == path.resolve() else (
                f"scores {shown(again)}, which {shown(earlier)} scores too; give one report per fold, each of other speakers"
            )
            parser.exit(2, f"{parser.prog}: error: {shown(path)}: {reason}\n")
        scored_in.update(dict.fromkeys(fold.clip_names, path))
    return folds


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m training.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, nargs="+", help="training.score --out reports, one per fold")
    parser.add_argument("--variant", default="clean", choices=["clean", "telephone"])
    parser.add_argument("--out", type=output_file(".json"), default=None, help="also write the result here as JSON")
    args = parser.parse_args(argv)
    if len(args.reports) < 2:
        parser.exit(2, f"{parser.prog}: error: cross-validation needs at least two fold reports\n")
    folds = read_reports_or_exit(parser, args.reports, args.variant)
    rows = cross_validate(folds)
    for row in rows:
        before, after = row["uncalibrated"], row["calibrated"]
        print(f"{row['fold']}: mean per-class {before['mean_per_class_accuracy']:.3f} → {after['mean_per_class_accuracy']:.3f}, accuracy {before['accuracy']:.3f} → {after['accuracy']:.3f}")
    summary = {
        key: {metric: float(np.mean([row[key][metric] for row in rows])) for metric in ("mean_per_class_accuracy", "accuracy")}
        for key in ("uncalibrated", "calibrated")
    }
    all_folds = dict(zip(EMOTIONS, np.round(np.exp(fit_log_weights(folds)), 3).tolist()))
    print(f"mean of {len(rows)} folds: {summary['uncalibrated']['mean_per_class_accuracy']:.3f} → {summary['calibrated']['mean_per_class_accuracy']:.3f}; weights fitted on all folds: {all_folds}")
    if args.out is not None:
        args.out.write_text(json.dumps({"variant": args.variant, "folds": rows, "mean": summary, "weights_all_folds": all_folds}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
