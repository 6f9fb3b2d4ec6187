"""Copy a trained split's ONNX model into models/ with its metadata, adding held-out evaluation figures.

    python -m training.ship runs/improved-all/all --evidence runs/improved-actors/fold0-*/metrics.json
    python -m training.ship models/ser_cnn.onnx --evidence …   # same bytes, more evidence (e.g. more folds)

The held-out evaluations a model carries are kept unless --replace-evidence is given. An ensemble's evidence is
its members scored together: ``training.ensemble --evidence``.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ser_stream.cli import OneLineParser
from ser_stream.errors import ModelError, SerStreamError, shown
from ser_stream.model import DEFAULT_MODEL, ModelMetadata, metadata_path
from training.contract import load_checked_model, model_output, put_in_place
from training.reports import METRICS, ReportError, evaluated_recipe, read_json, recorded_window, require_keys

# What the training command sets per run beyond the recipe: evidence trained otherwise is of another model.
TRAINING_SETTINGS = ("epochs", "windows_per_clip", "frequency_warp", "batch_size")


def check_same_training(path: Path, metrics: dict[str, Any], metadata: ModelMetadata) -> None:
    """Refuse evidence of another recipe or other training settings than the model shipped; say when it cannot tell."""
    recipe = evaluated_recipe(path, metrics)
    if recipe is None:
        print(f"{shown(path)}: records no recipe; taken as evidence of {metadata.recipe!r} unchecked", file=sys.stderr)
    elif recipe != metadata.recipe:
        raise ReportError(f"{shown(path)}: evaluates recipe {recipe!r}, the model shipped is {metadata.recipe!r}; give evidence of the same recipe")
    evidence_training, shipped_training = metrics.get("training"), metadata.metrics.get("training")
    if isinstance(evidence_training, dict) and isinstance(shipped_training, dict):
        for setting in TRAINING_SETTINGS:
            if setting in evidence_training and setting in shipped_training and evidence_training[setting] != shipped_training[setting]:
                raise ReportError(
                    f"{shown(path)}: trained with {setting} {evidence_training[setting]}, the model shipped with "
                    f"{shipped_training[setting]}; give evidence trained the same way"
                )
    evidence_weights, shipped_weights = metrics.get("weights"), metadata.metrics.get("weights")
    if isinstance(evidence_weights, str) and isinstance(shipped_weights, str) and evidence_weights != shipped_weights:
        raise ReportError(f"{shown(path)}: scores the weights of the {evidence_weights}, the model shipped has those of the {shipped_weights}; give evidence trained with the same --keep")


def split_protocol(split: str) -> str:
    """The protocol that cut a split, from the name ``training.train.make_splits`` gave it."""
    return split if split in ("random", "all") else "actors"


def check_same_evaluation(path: Path, metrics: dict[str, Any], metadata: ModelMetadata) -> None:
    """Refuse evidence scored on another kind of split or on other windows than the model shipped is judged by: a model
    trained on every speaker needs folds of held-out speakers, not a random split that heard them all."""
    split = str(metrics["split"])
    wanted = "actors" if metadata.protocol == "all" else metadata.protocol
    if split_protocol(split) != wanted:
        raise ReportError(
            f"{shown(path)}: evaluates split {split!r} of the {split_protocol(split)!r} protocol, the model shipped "
            f"(protocol {metadata.protocol!r}) needs evidence of --protocol {wanted}"
        )
    window = recorded_window(path.parent)  # None for evidence without model.json beside it: not checked
    if window is not None and window != (metadata.window_seconds, metadata.hop_seconds):
        raise ReportError(
            f"{shown(path)}: scored {window[0]} s windows at a {window[1]} s hop, the model shipped cuts {metadata.window_seconds} s "
            f"at {metadata.hop_seconds} s; give evidence of the same --window and --hop"
        )


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m training.ship")
    parser.add_argument("split", type=Path, help="a run's split folder holding model.onnx and model.json, or an .onnx file beside its metadata")
    parser.add_argument("--evidence", type=Path, nargs="*", default=[], help="metrics.json files of held-out evaluations of the same recipe, added to those the model carries")
    parser.add_argument("--replace-evidence", action="store_true", help="drop the held-out evaluations the model carries; keep only --evidence's")
    parser.add_argument("--to", type=model_output, default=str(DEFAULT_MODEL), help="its metadata is written beside it as .json")
    args = parser.parse_args(argv)
    source = args.split if args.split.suffix == ".onnx" else args.split / "model.onnx"
    evidence = {}
    evidence_files: dict[str, Path] = {}  # split → the metrics.json that evaluated it
    try:
        metadata, _ = load_checked_model(source)  # a JSON that contradicts the network is refused here, not by the runtime later
        carried = metadata.metrics.get("held_out_evaluations")
        carried = {} if args.replace_evidence or not isinstance(carried, dict) else carried
        for path in args.evidence:
            metrics = require_keys(read_json(path, METRICS), path, METRICS, ("split",))
            split = str(metrics["split"])
            if not any(key.startswith("test_") for key in metrics):
                raise ReportError(f"{shown(path)}: not held-out evidence (split {split!r} has no test_* scores)")
            if "members" in metadata.metrics:  # a run's metrics score one network, not the mean of several
                raise ReportError(
                    f"{shown(path)}: evaluates one network, {shown(source)} is an ensemble; give evidence of its members "
                    "scored together (training.score --out) to python -m training.ensemble --evidence"
                )
            if split in evidence_files:
                raise ReportError(f"{shown(path)}: split {split!r} again, already evaluated by {shown(evidence_files[split])}; give each split once")
            if split in carried:
                raise ReportError(f"{shown(path)}: split {split!r} is already among the held-out evaluations {shown(source)} carries; give --replace-evidence to replace them")
            check_same_training(path, metrics, metadata)
            check_same_evaluation(path, metrics, metadata)
            evidence_files[split] = path
            evidence[split] = {k: v for k, v in metrics.items() if k.startswith("test_") or k in ("best_epoch", "weights", "training")}
        shipped = replace(metadata, metrics=dict(metadata.metrics, held_out_evaluations={**carried, **evidence}))
        staged = args.to.with_name(args.to.stem + ".shipping.onnx")
        try:  # the pair is written aside and moved into place whole: a failure leaves what --to held as it was
            shutil.copyfile(source, staged)
            metadata_path(staged).write_text(shipped.to_json())
            put_in_place(staged, args.to)
        except OSError as error:
            raise ModelError(f"--to {shown(args.to)}: cannot write it ({error.strerror or type(error).__name__})") from None
        finally:
            staged.unlink(missing_ok=True)
            metadata_path(staged).unlink(missing_ok=True)
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    kept = f", {len(carried)} of them carried over" if carried else ""
    print(f"shipped {args.to} ({metadata.sha256[:12]}…) with {len(carried) + len(evidence)} held-out evaluation(s){kept}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
