"""int8 static quantisation of an exported model, judged side by side with fp32.

Calibration uses windows of training clips (speakers the evaluation never
sees); the accuracy change is measured on speaker-held-out clips, wideband and
through the telephone chain, and the speed on the same windows at batch 1 and
32, both models timed alternately in one run. Run:

    .venv/bin/python -m training.quantize runs/improved-actors/fold0-*/model.onnx --test-actors 3 5 7 20

Writes ``model.int8.onnx`` beside the model, and the comparison as JSON to
stdout and to ``model.int8.quantization.json``.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from numpy.typing import NDArray
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from ser_stream import EMOTIONS
from ser_stream.audiofile import read_audio
from ser_stream.cli import OneLineParser, output_file, whole_number
from ser_stream.clips import clip_spectrograms
from ser_stream.errors import ModelError, SerStreamError, one_line, shown
from ser_stream.features import model_input
from ser_stream.model import ModelMetadata, file_sha256, metadata_path
from ser_stream.utterances import average_windows
from training.contract import check_metadata_writable, load_checked_model, put_in_place
from training.evaluate import scores
from training.ravdess import require_actors, scan, skip_clip
from training.reports import heard_actors
from training.score import clip_inputs, clip_seed
from training.timing import alternate_ms

# Operators of a graph quantised by onnxruntime (QDQ pairs, QOperator kernels, integer convolutions).
QUANTIZED_OPERATORS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"})


class WindowReader(CalibrationDataReader):
    """Feeds calibration windows to the quantiser in small batches."""

    def __init__(self, spectrograms: NDArray[np.float32], input_name: str, batch: int = 16) -> None:
        # equal batches only: the histogram calibrators cannot stack a short last batch
        batch = max(1, min(batch, len(spectrograms)))
        whole = len(spectrograms) - len(spectrograms) % batch
        self.batches = iter([{input_name: model_input(spectrograms[i : i + batch])} for i in range(0, whole, batch)])

    def get_next(self) -> dict[str, NDArray[np.float32]] | None:
        return next(self.batches, None)


def quantize(model: Path, calibration: NDArray[np.float32], out: Path, operator_format: bool = False, unsigned_weights: bool = False) -> None:
    """Write ``model`` as int8 to ``out``, calibrated on ``calibration``, and load it; ``ModelError`` with onnxruntime's
    reason if it cannot, and then neither ``out`` nor the intermediate file stays."""
    prepared = out.with_suffix(".prep.onnx")
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the calibrator prints its progress; stdout is the report's
            quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
            input_name = session(model).get_inputs()[0].name
            quantize_static(
                str(prepared), str(out), WindowReader(calibration, input_name),
                quant_format=QuantFormat.QOperator if operator_format else QuantFormat.QDQ, per_channel=not unsigned_weights,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8 if unsigned_weights else QuantType.QInt8,
                calibrate_method=CalibrationMethod.Percentile, extra_options={"CalibPercentile": 99.99},
            )
        session(out)  # a graph onnxruntime writes but cannot load once went on to be timed, with a traceback
    except Exception as error:  # onnxruntime raises its own unexported types, and ValueError, RuntimeError...
        out.unlink(missing_ok=True)
        raise ModelError(f"{shown(model)}: onnxruntime could not quantise it ({one_line(error)})") from None
    finally:
        prepared.unlink(missing_ok=True)


def check_not_int8(model: Path, metadata: ModelMetadata, proto: onnx.ModelProto) -> None:
    """``ModelError`` if the model is already the output of a quantisation (its metadata says so, or its graph
    quantises): quantised again, onnxruntime wrote a graph it could not load, after all the work."""
    if "int8" not in metadata.metrics and not any(node.op_type in QUANTIZED_OPERATORS for node in proto.graph.node):
        return
    record = metadata.metrics.get("int8")
    source = f" (quantised from {str(record['quantized_from'])[:12]}…)" if isinstance(record, dict) and "quantized_from" in record else ""
    raise ModelError(f"{shown(model)}: is already an int8 model{source}; quantise the fp32 model it came from")


def session(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def clip_accuracy(model: onnxruntime.InferenceSession, clips: list[NDArray[np.float32]], labels: NDArray[np.int64]) -> dict[str, float]:
    name = model.get_inputs()[0].name
    # each clip labelled by the paper's rule, as classify and training.score label it
    predicted = np.array([EMOTIONS.index(average_windows(model.run(None, {name: model_input(windows)})[0]).label) for windows in clips])
    figures = scores(labels, predicted)
    return {"mean_per_class_accuracy": round(figures["mean_per_class_accuracy"], 4), "accuracy": round(figures["accuracy"], 4)}


def speed_ms(models: dict[str, onnxruntime.InferenceSession], windows: NDArray[np.float32], batch: int, repeats: int) -> dict[str, float]:
    """Median ms per window, the models timed alternately so machine noise hits both alike."""
    inputs = model_input(windows[:batch])  # fewer windows than a batch: ms per window is of as many as there are
    timings = alternate_ms({name: (partial(model.run, None, {model.get_inputs()[0].name: inputs}), len(inputs)) for name, model in models.items()}, repeats)
    return {name: timing["median"] for name, timing in timings.items()}


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m training.quantize", description="int8 static quantisation, judged against fp32 on held-out speakers")
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ravdess16k"))
    parser.add_argument("--test-actors", type=int, nargs="+", required=True, help="speakers the model never heard")
    parser.add_argument("--heard-test-actors", action="store_true",
                        help="allow test actors the model heard (a model trained on every actor): int8 against fp32 on voices it knows")
    parser.add_argument("--calibration-clips", type=whole_number(1), default=160, help="training clips whose windows calibrate")
    parser.add_argument("--repeats", type=whole_number(1), default=30)
    parser.add_argument("--out", type=output_file(".onnx"), default=None, help="default: model.int8.onnx beside the model")
    parser.add_argument("--operator-format", action="store_true", help="QLinearConv operators instead of QDQ pairs")
    parser.add_argument("--unsigned-weights", action="store_true", help="u8 weights (per tensor): the fast kernels on CPUs without VNNI")
    args = parser.parse_args(argv)
    out = args.out or args.model.with_name(args.model.stem + ".int8.onnx")
    if out.resolve() == args.model.resolve():
        parser.error(f"argument --out: {shown(out)}: is the model itself; the int8 model needs a file of its own")
    try:
        metadata, proto = load_checked_model(args.model)  # a missing model, or a JSON the network contradicts: one line, before any work
        check_not_int8(args.model, metadata, proto)
        check_metadata_writable(out)
        clips, _ = scan(args.data)
        require_actors(args.data, clips, args.test_actors)
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    training = [c for c in clips if c.actor not in args.test_actors]
    held_out = [c for c in clips if c.actor in args.test_actors]
    if len(training) < args.calibration_clips:
        parser.error(
            f"{shown(args.data)}: {len(training)} clip(s) of actors other than the test actors, "
            f"--calibration-clips asks for {args.calibration_clips}; ask for fewer"
        )
    heard = sorted(set(args.test_actors) & set(heard_actors(metadata.metrics)))
    if heard and not args.heard_test_actors:  # its accuracy change would be on voices it knows
        parser.error(f"--test-actors {' '.join(map(str, heard))}: {shown(args.model)} was trained or validated on actor(s) {', '.join(map(str, heard))}; test it on actors it has not heard")
    config = metadata.window
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(training), size=args.calibration_clips, replace=False)
    skipped: list[str] = []  # clips that cannot be read or classified: said, listed in the report, left out
    calibration_windows = []
    for i in chosen:
        try:
            calibration_windows.append(clip_spectrograms(*read_audio(training[i].path), config))
        except SerStreamError as error:
            skip_clip(training[i].path, error, skipped)
    wideband, phone, clip_labels = [], [], []
    for clip in held_out:  # as training.score takes them: the phone line seeded by the clip's name, not its place
        try:
            clip_windows = clip_inputs(clip.path, config, "clean", clip_seed(clip.path))
            line_windows = clip_inputs(clip.path, config, "telephone", clip_seed(clip.path))
        except SerStreamError as error:
            skip_clip(clip.path, error, skipped)
            continue
        wideband.append(clip_windows)
        phone.append(line_windows)
        clip_labels.append(EMOTIONS.index(clip.emotion))
    if not calibration_windows or not wideband:  # refused before the int8 model is written
        parser.exit(2, f"{parser.prog}: error: no {'calibration' if not calibration_windows else 'test'} clip could be read; see the lines above\n")
    calibration = np.concatenate(calibration_windows)
    staged = out.with_name(out.stem + ".quantizing.onnx")  # moved to --out with its metadata once all is written
    try:
        quantize(args.model, calibration, staged, args.operator_format, args.unsigned_weights)
        models = {"fp32": session(args.model), "int8": session(staged)}
        all_windows = np.concatenate(wideband)
        labels = np.asarray(clip_labels)
        report = {
            "model": str(args.model),
            "int8_model": str(out),
            "size_bytes": {"fp32": args.model.stat().st_size, "int8": staged.stat().st_size},
            "held_out_actors": args.test_actors,
            "heard_test_actors": heard,  # with --heard-test-actors: those the model was trained on after all
            "clips": len(wideband),  # those read: skipped_clips lists the others
            "calibration_windows": len(calibration),
            "format": "QOperator" if args.operator_format else "QDQ",
            "weights": "u8 per tensor" if args.unsigned_weights else "s8 per channel",
            "wideband": {name: clip_accuracy(model, wideband, labels) for name, model in models.items()},
            "telephone": {name: clip_accuracy(model, phone, labels) for name, model in models.items()},
            "ms_per_window_batch1": speed_ms(models, all_windows, 1, args.repeats * 4),
            "ms_per_window_batch32": speed_ms(models, all_windows, 32, args.repeats),
        }
        for key in ("ms_per_window_batch1", "ms_per_window_batch32"):
            report[key]["speedup"] = round(report[key]["fp32"] / report[key]["int8"], 2)
        for key in ("wideband", "telephone"):
            report[key]["change_points"] = round(
                100 * (report[key]["int8"]["mean_per_class_accuracy"] - report[key]["fp32"]["mean_per_class_accuracy"]), 2
            )
        if skipped:
            report["skipped_clips"] = skipped
        # Its own metadata, so the runtime can load it (--model): the fp32 model's, with the int8 file's hash and figures.
        quantized = {key: report[key] for key in ("format", "weights", "calibration_windows", "wideband", "telephone")}
        int8_metadata = replace(metadata, sha256=file_sha256(staged), metrics={**metadata.metrics, "int8": {"quantized_from": metadata.sha256, **quantized}})
        metadata_path(staged).write_text(int8_metadata.to_json())
        put_in_place(staged, out)
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    finally:
        staged.unlink(missing_ok=True)
        metadata_path(staged).unlink(missing_ok=True)
    text = json.dumps(report, indent=2)
    out.with_name(out.stem + ".quantization.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
