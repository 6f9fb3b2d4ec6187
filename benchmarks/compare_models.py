"""Two or more model files side by side in one run: inference time per window, then capacity.

Used to price a model change (e.g. the shipped pair against one network):
each round times every model once on the same input, so a noisy machine
slows them alike and the ratio holds; each load of the capacity benchmark
runs every model in turn.

    .venv/bin/python -m benchmarks.compare_models runs/one.onnx models/ser_cnn.onnx [--calls 80 100] [--seconds 60]

Prints one JSON line per measurement; the first model is the reference of the ratios.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.capacity import LATENCY_BOUND_MS, call_audio, run_load
from benchmarks.clients import strict_json
from benchmarks.monitor_e2e import MonitorFailed
from ser_stream.cli import OneLineParser, output_file
from ser_stream.errors import SerStreamError
from ser_stream.inference import EmotionModel
from ser_stream.model import INPUT_SHAPE
from training.timing import alternate_ms


def inference_ms(models: list[EmotionModel], batch: int, rounds: int, seed: int = 0) -> dict[str, float]:
    """Median ms per window of each model at ``batch``, the models timed alternately."""
    inputs = np.random.default_rng(seed).random((batch, *INPUT_SHAPE), dtype=np.float32)
    # keyed by place, not path: a model compared with itself is timed twice, as two contenders
    timings = alternate_ms({str(index): (partial(model.predict, inputs), batch) for index, model in enumerate(models)}, rounds)
    return {str(model.path): timings[str(index)]["median"] for index, model in enumerate(models)}


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.compare_models", description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+", help="model .onnx files, each beside its metadata")
    parser.add_argument("--rounds", type=int, default=40, help="timing rounds per batch size")
    parser.add_argument("--calls", type=int, nargs="*", default=[], help="capacity loads to run each model at (none: timing only)")
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per call at each load")
    parser.add_argument("--bound-ms", type=float, default=LATENCY_BOUND_MS)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ravdess16k"))
    parser.add_argument("--out", type=output_file(".wav"), default=None, help="where the calls' audio is written (.wav; default: a temporary folder)")
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.exit(2, f"{parser.prog}: error: give at least two models to compare\n")
    try:  # every model loads, and the calls' audio is written, before anything is timed
        models = [EmotionModel(path, provider="cpu") for path in args.models]
        if args.calls:
            with tempfile.TemporaryDirectory(prefix="ser_stream_compare.") as folder:
                codes, clips = call_audio(args.data, args.out or Path(folder) / "calls.wav")
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    reference = str(args.models[0])
    for batch in (1, 32):
        medians = inference_ms(models, batch, args.rounds)
        ratios = {path: round(ms / medians[reference], 2) for path, ms in medians.items()}
        print(strict_json({"batch": batch, "ms_per_window_median": medians, "ratio_to_first": ratios}), flush=True)
    del models  # their sessions' threads stay out of the way of the monitors measured next
    if args.calls:
        for calls in args.calls:
            for model in args.models:
                try:
                    result = run_load(calls, args.seconds, codes, clips, model, args.bound_ms)
                except MonitorFailed as failure:
                    parser.exit(2 if failure.status == 2 else 1, f"{parser.prog}: error: {failure}\n")
                print(strict_json({"model": str(model), **result}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
