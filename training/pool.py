"""Every fold's held-out clips pooled into one confusion matrix, in the paper's Table 1 form.

With five folds by actor every speaker is held out exactly once, so the pooled
matrix shows how each emotion fares on voices never heard, over all 1200
clips rather than one fold's 240.

    python -m training.pool runs/seeds/s0s1-fold*.json [--variant clean] [--png docs/figures/x.png]

The reports are ``training.score --out`` files holding every clip's window outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ser_stream.cli import OneLineParser, output_file
from training import evaluate
from training.calibrate import HeldOutClips, read_reports_or_exit


def pooled_confusion(folds: list[HeldOutClips]) -> NDArray[np.int64]:
    """Clip labels by the paper's rule (argmax of the mean window output), all folds in one matrix."""
    true = np.concatenate([fold.labels for fold in folds])
    predicted = np.concatenate(
        [np.argmax(evaluate.clip_probabilities(fold.window_probabilities, fold.window_clip, np.arange(len(fold.labels))), axis=1) for fold in folds]
    )
    return evaluate.confusion(true, predicted)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m training.pool", description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, nargs="+", help="training.score --out reports, one per fold")
    parser.add_argument("--variant", default="clean", choices=["clean", "telephone"])
    parser.add_argument("--png", type=output_file(".png"), default=None, help="also draw the matrix as a heatmap here")
    args = parser.parse_args(argv)
    folds = read_reports_or_exit(parser, args.reports, args.variant)
    matrix = pooled_confusion(folds)
    title = f"{args.variant}, {len(folds)} folds pooled"
    print(evaluate.confusion_markdown(matrix, title))
    if args.png is not None:
        evaluate.plot_confusion(matrix, args.png, f"unseen speakers, {title}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
