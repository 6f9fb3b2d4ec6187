"""Clip-level scores (the paper's mean-of-windows rule), confusion matrices and plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ser_stream import EMOTIONS


def clip_probabilities(
    window_probabilities: NDArray[np.floating], window_clip: NDArray[np.integer], clip_indices: NDArray[np.integer]
) -> NDArray[np.float64]:
    """Mean window output per clip, in the order of ``clip_indices``."""
    position = {int(c): i for i, c in enumerate(clip_indices)}
    window_row = np.fromiter((position[int(clip)] for clip in window_clip), dtype=np.intp, count=len(window_clip))
    rows = np.zeros((len(clip_indices), len(EMOTIONS)))
    np.add.at(rows, window_row, window_probabilities)
    counts = np.bincount(window_row, minlength=len(clip_indices))
    if np.any(counts == 0):
        raise ValueError("a clip has no windows")
    return rows / counts[:, None]


def confusion(true: NDArray[np.integer], predicted: NDArray[np.integer]) -> NDArray[np.int64]:
    matrix = np.zeros((len(EMOTIONS), len(EMOTIONS)), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    return matrix


def row_percentages(matrix: NDArray[np.integer]) -> NDArray[np.float64]:
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix * 100.0, totals, out=np.zeros(matrix.shape), where=totals > 0)


def whole_row_percentages(matrix: NDArray[np.integer]) -> NDArray[np.int64]:
    """Row percentages in whole numbers that sum to 100 in every row with clips (largest-remainder rounding).

    Rounding each cell alone made rows of 98 to 101 % (with 40 clips a class every clip is 2.5 %, which
    round-half-even takes down or up by turns); whole numbers keep the paper's Table 1 form to set beside it, and
    each cell stays within 1 of its exact value. Ties go to the earlier column."""
    hundredfold = np.asarray(matrix, dtype=np.int64) * 100
    totals = np.maximum(hundredfold.sum(axis=1, keepdims=True) // 100, 1)
    whole, remainder = hundredfold // totals, hundredfold % totals  # in integers: equal remainders tie exactly
    for row in range(len(whole)):
        if matrix[row].sum() > 0:
            short = 100 - int(whole[row].sum())
            whole[row, np.argsort(-remainder[row], kind="stable")[:short]] += 1
    return whole


def scores(true: NDArray[np.integer], predicted: NDArray[np.integer]) -> dict[str, float]:
    """Mean per-class accuracy (the paper's figure), overall accuracy, per-class recall."""
    matrix = confusion(true, predicted)
    recall = np.diag(row_percentages(matrix)) / 100.0
    present = matrix.sum(axis=1) > 0
    return {
        "mean_per_class_accuracy": float(recall[present].mean()),
        "accuracy": float(np.mean(true == predicted)),
        "clips": int(len(true)),
        **{f"recall_{emotion}": float(r) for emotion, r, p in zip(EMOTIONS, recall, present) if p},
    }


def confusion_markdown(matrix: NDArray[np.integer], title: str) -> str:
    """Table 1 form: rows true, columns predicted, row percentages, diagonal in bold."""
    percentages, shown_percentages = row_percentages(matrix), whole_row_percentages(matrix)
    lines = [f"### {title}", "", "| true \\ predicted | " + " | ".join(EMOTIONS) + " |", "|---" * (len(EMOTIONS) + 1) + "|"]
    for i, emotion in enumerate(EMOTIONS):
        cells = [f"**{p}**" if i == j else f"{p}" for j, p in enumerate(shown_percentages[i])]
        lines.append(f"| {emotion} | " + " | ".join(cells) + " |")
    diagonal = np.diag(percentages)[matrix.sum(axis=1) > 0]
    lines += ["", f"Mean of the diagonal: {diagonal.mean():.1f} % ({int(matrix.sum())} clips)", ""]
    return "\n".join(lines)


def plot_confusion(matrix: NDArray[np.integer], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    percentages, shown_percentages = row_percentages(matrix), whole_row_percentages(matrix)
    figure, axes = plt.subplots(figsize=(7, 6))
    image = axes.imshow(percentages, cmap="Blues", vmin=0, vmax=100)
    axes.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
    axes.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    for i in range(len(EMOTIONS)):
        for j in range(len(EMOTIONS)):
            axes.text(j, i, f"{shown_percentages[i, j]}", ha="center", va="center", color="white" if percentages[i, j] > 50 else "black", fontsize=8)
    figure.colorbar(image, ax=axes, label="% of true class")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_curves(history: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, score_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "val_loss", "probabilities_loss", "speaker_loss"):
        if history.get(key):
            loss_axes.plot(range(1, len(history[key]) + 1), history[key], label=key)
    for key in ("accuracy", "probabilities_accuracy", "speaker_accuracy", "val_clip_accuracy", "val_mean_per_class_accuracy"):
        if history.get(key):
            score_axes.plot(range(1, len(history[key]) + 1), history[key], label=key)
    loss_axes.set_xlabel("epoch")
    score_axes.set_xlabel("epoch")
    for axes in (loss_axes, score_axes):
        if axes.lines:  # a run of 0 epochs (a warm restart exported as it was) has no curves to name
            axes.legend()
        else:
            axes.text(0.5, 0.5, "no epochs trained in this run", ha="center", va="center", transform=axes.transAxes)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
