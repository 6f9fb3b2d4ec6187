"""``python -m training``: train a recipe under a protocol; see ``--help``."""

from __future__ import annotations

from pathlib import Path

from ser_stream.cli import OneLineParser, whole_number
from ser_stream.errors import SerStreamError
from ser_stream.windows import WindowConfig
from training.config import KEEPS, PROTOCOLS, TrainConfig, TrainConfigError, validates
from training.recipes import RECIPES


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m training", description="Train the emotion CNN and export it to ONNX.")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ravdess16k"), help="RAVDESS-layout folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="run folder (one subfolder per split)")
    parser.add_argument("--recipe", default="improved", choices=list(RECIPES))
    parser.add_argument("--protocol", default="actors", choices=PROTOCOLS)
    parser.add_argument("--folds", type=int, default=5, help="--protocol actors: how many folds of held-out speakers (default: %(default)s)")
    parser.add_argument("--fold", type=int, default=None, help="only this fold of --protocol actors")
    parser.add_argument("--balance-voices", action="store_true", help="--protocol actors: hold out as many male as female actors in each fold (RAVDESS: odd actors are male)")
    parser.add_argument("--validation-actors", type=whole_number(0), default=2, help="--protocol actors: speakers kept apart for validation (0: none; then --keep last or average)")
    parser.add_argument("--training-actors", type=whole_number(1), default=None, help="--protocol actors: train on only this many of the remaining speakers (nested sets: how accuracy grows with speakers)")
    parser.add_argument("--epochs", type=whole_number(0), default=60)
    parser.add_argument("--patience", type=whole_number(1), default=15, help="early stopping on validation mean per-class accuracy")
    parser.add_argument("--seed", type=whole_number(0), default=0, help="splits (folds, the random split) and feature augmentation (default: %(default)s)")
    parser.add_argument("--model-seed", type=whole_number(0), default=None, help="initial weights and batch order (default: --seed); the same splits with another network, e.g. for an ensemble")
    parser.add_argument("--batch-size", type=whole_number(1), default=32)
    parser.add_argument("--windows-per-clip", type=whole_number(1), default=None, help="random windows of each training clip per epoch (default: the recipe's)")
    parser.add_argument("--frequency-warp", type=float, default=None, help="vocal tract length perturbation: warp each training image's frequency axis by a factor in 1 ± this (default: the recipe's)")
    parser.add_argument("--window", type=float, default=WindowConfig().window_seconds)
    parser.add_argument("--hop", type=float, default=WindowConfig().hop_seconds)
    parser.add_argument("--init-from", type=Path, default=None, help="an earlier run folder: each split starts from that run's model of the same split, with the learning-rate schedule started afresh (a warm restart)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoints")
    parser.add_argument("--overwrite", action="store_true", help="train splits the run folder already holds again from epoch 1, deleting their checkpoints (without it, or --resume, they are refused)")
    parser.add_argument("--keep", choices=KEEPS, default=None, help="weights to score and export: best validation epoch, the last, or the mean of the last --average-epochs epochs (default: best; last where no speakers are kept for validation)")
    parser.add_argument("--average-epochs", type=whole_number(1), default=10, help="--keep average: how many final epochs' weights to average")
    parser.add_argument("--teacher", action="append", default=[], metavar="MODEL.onnx",
                        help="distil: mix this model's output (the mean, if given several times) into each training window's target; "
                        "'{split}' in the path stands for the split's name, so each fold learns from its own fold's models")
    parser.add_argument("--distill-weight", type=float, default=None, help="--teacher: the teachers' share of the target (0 to 1; default 0.5)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--max-clips", type=whole_number(1), default=None, help="smoke runs: at most N clips per emotion")
    args = parser.parse_args(argv)
    if args.distill_weight is not None and not args.teacher:
        parser.error("argument --distill-weight: only with --teacher")
    keep = args.keep or ("best" if validates(args.protocol, args.validation_actors) else "last")

    try:
        config = TrainConfig(
            data=args.data, out=args.out, recipe=args.recipe, protocol=args.protocol, folds=args.folds,
            fold=args.fold, balance_voices=args.balance_voices, validation_actors=args.validation_actors,
            training_actors=args.training_actors, epochs=args.epochs, seed=args.seed, model_seed=args.model_seed, batch_size=args.batch_size,
            patience=args.patience, windows_per_clip=args.windows_per_clip, frequency_warp=args.frequency_warp,
            init_from=args.init_from, resume=args.resume, overwrite=args.overwrite, keep=keep, average_epochs=args.average_epochs,
            cache_dir=args.cache_dir, max_clips=args.max_clips, window=WindowConfig(args.window, args.hop),
            teachers=tuple(args.teacher), distill_weight=0.5 if args.distill_weight is None else args.distill_weight,
        )
    except TrainConfigError as error:  # TrainConfig checks its fields; the command names them as its options
        parser.error(f"argument --{error.option.replace('_', '-')}: {error.reason}")
    except SerStreamError as error:  # a window that cannot be cut
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    from training.train import run  # TensorFlow loads here, once the arguments are known to be usable

    try:
        run(config)
    except SerStreamError as error:  # a data folder, earlier run or model that cannot be used: one line, no traceback
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except KeyboardInterrupt:  # Ctrl-C: the last whole epoch's checkpoint is on disk (written aside, then renamed)
        parser.exit(130, f"{parser.prog}: interrupted; each split keeps its last whole epoch: run the same command with --resume to carry on\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
