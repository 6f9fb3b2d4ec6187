"""Copy a trained split's ONNX model into models/ with its metadata, adding held-out evaluation figures.

    python -m training.ship runs/improved-all/all --evidence runs/improved-actors/fold0-*/metrics.json
    python -m training.ship models/ser_cnn.onnx --evidence …   # same bytes, new evidence (e.g. more folds)
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from ser_stream.cli import OneLineParser, output_file
from ser_stream.errors import SerStreamError, shown
from ser_stream.model import DEFAULT_MODEL, ModelMetadata, load_metadata, metadata_path
from training.reports import METRICS, ReportError, read_json, require_keys


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m training.ship")
    parser.add_argument("split", type=Path, help="a run's split folder holding model.onnx and model.json, or an .onnx file beside its metadata")
    parser.add_argument("--evidence", type=Path, nargs="*", default=[], help="metrics.json files of held-out evaluations of the same recipe")
    parser.add_argument("--to", type=output_file(".onnx"), default=str(DEFAULT_MODEL), help="its metadata is written beside it as .json")
    args = parser.parse_args(argv)
    source = args.split if args.split.suffix == ".onnx" else args.split / "model.onnx"
    evidence = {}
    evidence_files: dict[str, Path] = {}  # split → the metrics.json that evaluated it
    try:
        metadata: ModelMetadata = load_metadata(source)
        for path in args.evidence:
            metrics = require_keys(read_json(path, METRICS), path, METRICS, ("split",))
            split = str(metrics["split"])
            if not any(key.startswith("test_") for key in metrics):
                raise ReportError(f"{shown(path)}: not held-out evidence (split {split!r} has no test_* scores)")
            if split in evidence_files:
                raise ReportError(f"{shown(path)}: split {split!r} again, already evaluated by {shown(evidence_files[split])}; give each split once")
            evidence_files[split] = path
            evidence[split] = {k: v for k, v in metrics.items() if k.startswith("test_") or k in ("best_epoch", "weights", "training")}
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    metrics = dict(metadata.metrics, held_out_evaluations=evidence)
    args.to.parent.mkdir(parents=True, exist_ok=True)
    if not (args.to.exists() and args.to.samefile(source)):
        shutil.copyfile(source, args.to)
    metadata_path(args.to).write_text(replace(metadata, metrics=metrics).to_json())
    load_metadata(args.to)  # the copy verifies
    print(f"shipped {args.to} ({metadata.sha256[:12]}…) with {len(evidence)} held-out evaluation(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
