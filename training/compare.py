"""Compare training runs fold by fold on held-out speakers: a recipe screen's table, from the runs' metrics.json.

    python -m training.compare runs/improved-actors-e40-last runs/improved-advspk-actors-e40

The first run is the baseline; every run is shown on the folds all of them have
finished (a screen in progress compares like with like), clean and through the
telephone chain, with the training accuracy per window each ended at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ser_stream.cli import OneLineParser
from ser_stream.errors import shown
from ser_stream.model import OUTPUT_NAME
from training.reports import METRICS, ReportError, is_number, read_checkpoint_state, read_json, require_keys

FOLD_FOLDER = re.compile(r"fold(\d+)-")
COMPARED_VARIANTS = ("clean", "telephone")  # of the variants a run scores (training.dataset.VARIANTS), those a screen is judged on


@dataclass(frozen=True)
class FoldResult:
    """One fold of one run: mean per-class and clip accuracy per variant, and how well it fitted its training windows."""

    fold: int
    mean_per_class: dict[str, float]
    accuracy: dict[str, float]
    training_accuracy: float | None
    split: str = ""  # its folder's name, which names the held-out actors: fold 0 of another --seed is other speakers


def read_run(run: Path) -> dict[int, FoldResult]:
    """Every finished fold of a run folder (``fold<K>-…/metrics.json``); ``ReportError`` if it has none."""
    if not run.is_dir():
        raise ReportError(f"{shown(run)}: not a run folder")
    folds: dict[int, FoldResult] = {}
    fold_folders: dict[int, Path] = {}
    for metrics_path in sorted(run.glob("fold*-*/metrics.json")):
        match = FOLD_FOLDER.match(metrics_path.parent.name)
        if match is None:
            continue
        fold = int(match.group(1))
        if fold in fold_folders:
            raise ReportError(f"{shown(fold_folders[fold])} and {shown(metrics_path.parent)}: two folders for fold {fold}; keep one in the run")
        fold_folders[fold] = metrics_path.parent
        metrics = require_keys(read_json(metrics_path, METRICS), metrics_path, METRICS, ("test_clean",))
        scored = [variant for variant in COMPARED_VARIANTS if f"test_{variant}" in metrics]
        folds[fold] = FoldResult(
            fold=fold,
            mean_per_class={v: 100 * score(metrics, v, "mean_per_class_accuracy", metrics_path) for v in scored},
            accuracy={v: 100 * score(metrics, v, "accuracy", metrics_path) for v in scored},
            training_accuracy=training_accuracy(metrics_path.parent / "checkpoints" / "state.json"),
            split=metrics_path.parent.name,
        )
    if not folds:
        raise ReportError(f"{shown(run)}: no finished fold (no fold*-*/metrics.json)")
    return folds


def score(metrics: dict[str, Any], variant: str, key: str, path: Path) -> float:
    """``metrics["test_<variant>"][key]``, a fraction; ``ReportError`` naming the file if it is not a number."""
    section = metrics[f"test_{variant}"]
    value = section.get(key) if isinstance(section, dict) else None
    if not is_number(value):
        raise ReportError(f"{shown(path)}: not {METRICS} (test_{variant}.{key} is not a number)")
    return float(value)


def training_accuracy(state_path: Path) -> float | None:
    """The training accuracy per window of a run's last epoch, from its checkpoint state; None if it kept none."""
    if not state_path.is_file():
        return None  # a run whose checkpoints were cleaned away
    _, history = read_checkpoint_state(state_path)
    fitted = history.get(f"{OUTPUT_NAME}_accuracy") or history.get("accuracy")  # a run with a speaker head names its outputs
    return fitted[-1] if fitted else None


def table(runs: list[Path], results: list[dict[int, FoldResult]]) -> str:
    """A Markdown table: one row per run, a column per shared fold, then means; clean, then telephone."""
    shared = sorted(set.intersection(*(set(result) for result in results)))
    if not shared:
        raise ReportError("the runs have no finished fold in common")
    for fold in shared:  # folds were once lined up by number alone, other speakers side by side without a word
        for run, result in zip(runs[1:], results[1:]):
            theirs, ours = result[fold].split, results[0][fold].split
            if theirs and ours and theirs != ours:
                raise ReportError(
                    f"fold {fold} holds out other speakers in {shown(run)} ({shown(theirs)}) than in {shown(runs[0])} ({shown(ours)}); "
                    "compare runs of the same folds (--folds, --seed, --balance-voices)"
                )
    header = "| mean per-class | " + " | ".join(f"fold {fold}" for fold in shared) + " | mean | accuracy | telephone | training accuracy per window |"
    lines = [header, "|" + "---|" * (len(shared) + 5)]

    def mean(values: list[float]) -> str:
        """The mean over the shared folds; a dash where a fold lacks the figure."""
        return f"{sum(values) / len(values):.1f} %" if len(values) == len(shared) else "–"

    for run, result in zip(runs, results):
        folds = [result[fold] for fold in shared]
        cells = [f"{fold.mean_per_class['clean']:.1f} %" for fold in folds]
        fitted = [f"{fold.training_accuracy:.2f}" if fold.training_accuracy is not None else "–" for fold in folds]
        lines.append(
            f"| {run} | " + " | ".join(cells)
            + f" | **{mean([fold.mean_per_class['clean'] for fold in folds])}**"
            + f" | {mean([fold.accuracy['clean'] for fold in folds])}"
            + f" | {mean([fold.mean_per_class['telephone'] for fold in folds if 'telephone' in fold.mean_per_class])}"
            + f" | {' / '.join(fitted)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m training.compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders (--protocol actors), the baseline first")
    args = parser.parse_args(argv)
    try:
        print(table(args.runs, [read_run(run) for run in args.runs]))
    except ReportError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
