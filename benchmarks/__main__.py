"""The benchmark suite: every figure issue 5 asks for, in one run, written into docs/benchmarks.md.

    .venv/bin/python -m benchmarks [--model M] [--keras K] [--data D] [--held-out-actors 3 5 7 20] [--calls 40 50 60 ...]
    .venv/bin/python -m benchmarks --quick --out /tmp/bench.md      # seconds: the smoke run the tests use

Runs, each as its own process (so one cannot warm the next): the component
timings (features; onnxruntime against Keras; the scipy path against the
paper's image path), int8 against fp32 (accuracy on held-out speakers and
speed), the monitor end to end with ``--pace fast`` and in real time (real-time
factor, utterance latency), and the capacity ladder (concurrent real-time
calls, latency, CPU and peak memory; it stops at the first load not sustained). The generated tables replace what lies
between the ``benchmarks:begin``/``benchmarks:end`` markers of the output file;
the analysis around them is written by hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.clients import figures_from_json, strict_json
from ser_stream.cli import OneLineParser, output_file
from ser_stream.errors import SerStreamError, shown
from training.reports import read_json

BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"
FOLD0_RUN = "runs/improved-actors-e40-16spk"  # the one-network run of docs/results.md whose fold 0 the figures use
TARGETS = {"features_ms": 2.0, "fp32_ms": 4.0, "int8_ms": 2.0, "rtf": 100.0, "streams": 50, "latency_p95_ms": 150.0, "rss_mb": 500.0}


def run_json(arguments: list[str], timeout: float) -> list[dict]:
    """Run a benchmark module; return the JSON objects it printed (one per line or one indented block).

    ``RuntimeError`` naming the part and, from its stderr, why, when it fails or outlasts ``timeout`` seconds."""
    try:
        result = subprocess.run([sys.executable, "-m", *arguments], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{' '.join(arguments)}: still running after {timeout:.0f} s; stopped") from None
    if result.returncode != 0:
        said = result.stderr.strip().splitlines()
        why = f": {shown(said[-1])}" if said else ""
        raise RuntimeError(f"{' '.join(arguments)} failed (exit status {result.returncode}){why}")
    text, objects, decoder, index = result.stdout, [], json.JSONDecoder(), 0
    while (start := text.find("{", index)) != -1:
        try:
            value, index = decoder.raw_decode(text, start)
            objects.append(figures_from_json(value))
        except json.JSONDecodeError:
            index = start + 1
    if not objects:
        raise RuntimeError(f"{' '.join(arguments)} printed no figures")
    return objects


def machine() -> str:
    model = "unknown CPU"
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import onnxruntime

    return (f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}")


def verdict(value: float, target: float, lower_is_better: bool = True) -> str:
    if math.isnan(value):
        return "**missed** (nothing measured)"
    if math.isinf(value):
        return "**missed** (a clip without an utterance at its end counts as ∞)"
    met = value <= target if lower_is_better else value >= target
    if met:
        return "met"
    ratio = value / target if lower_is_better else target / max(value, 1e-9)
    return f"**missed** ({ratio:.1f}× off)"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m benchmarks", description="the benchmark suite")
    parser.add_argument("--model", type=Path, default=None, help=f"default: {FOLD0_RUN}/fold0-*/model.onnx if trained, else the shipped one")
    parser.add_argument("--keras", type=Path, default=None, help="the same model as .keras, for the Keras baseline")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ravdess16k"), help="the RAVDESS folder the parts read clips from")
    parser.add_argument("--held-out-actors", type=int, nargs="+", default=[3, 5, 7, 20], help="speakers --model never heard")
    parser.add_argument("--calls", type=int, nargs="+", default=[40, 50, 60, 70, 80, 100, 120])
    parser.add_argument("--call-seconds", type=float, default=60.0)
    parser.add_argument("--realtime-per-actor", type=int, default=25, help="clips per held-out actor in the real-time run (4 actors × 25: a p95 of 100)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of every part, in seconds")
    parser.add_argument("--out", type=output_file(".md"), default="docs/benchmarks.md", help="the figures go beside it as .json")
    parser.add_argument("--render-only", action="store_true", help="rewrite the section from the .json beside --out; measure nothing")
    args = parser.parse_args(argv)
    try:
        hand_written(args.out)  # before anything is measured or read, not at the end of a run of minutes
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if args.render_only:
        saved = args.out.with_suffix(".json")
        try:
            markdown = render(figures_from_json(read_json(saved, "the figures of a benchmark run")))
        except SerStreamError as error:
            parser.exit(2, f"{parser.prog}: error: {error} (--render-only renders the figures a full run saved beside --out)\n")
        except (KeyError, TypeError) as error:  # an older or hand-edited file
            reason = f"no {error} figure" if isinstance(error, KeyError) else "figures of another shape"
            parser.exit(2, f"{parser.prog}: error: {shown(saved)}: not the figures of a benchmark run ({reason})\n")
        write_section(args.out, markdown)
        return 0
    if args.model is None:
        fold0 = sorted(Path(FOLD0_RUN).glob("fold0-*/model.onnx"))
        args.model = fold0[0] if fold0 else Path("models/ser_cnn.onnx")  # trained on every actor: not reported as held out
    if args.keras is not None and not args.keras.is_file():
        parser.exit(2, f"{parser.prog}: error: --keras {shown(args.keras)}: no such file\n")
    try:  # what every part reads, checked before any part runs: a bad input is one line here, not a part's traceback
        check_inputs(args.model, args.data, args.held_out_actors)
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    figures: dict[str, object] = {"machine": machine(), "date": datetime.date.today().isoformat(), "model": str(args.model),
                                  "held_out": set(args.held_out_actors) <= never_heard(args.model)}
    try:
        with tempfile.TemporaryDirectory(prefix="ser_stream_bench.") as folder:
            measure(figures, args, Path(folder))
    except RuntimeError as error:  # a part failed: its own reason in one line, not a traceback of this process
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    markdown = render(figures)
    print(markdown)
    write_section(args.out, markdown)
    (args.out.with_suffix(".json")).write_text(strict_json(figures, indent=1) + "\n")
    return 0


def never_heard(model: Path) -> set[int]:
    """The actors ``model`` was not trained on, from its metadata (a fold of the actors protocol); none when it does not say."""
    try:
        metadata = json.loads(model.with_suffix(".json").read_text())
        split = str(metadata.get("metrics", {}).get("split", "")) if metadata.get("protocol") == "actors" else ""
    except (OSError, ValueError, AttributeError):
        return set()
    found = re.search(r"actors((?:-\d+)+)$", split)
    return {int(actor) for actor in found.group(1).strip("-").split("-")} if found else set()


def measure(figures: dict[str, object], args: argparse.Namespace, scratch: Path) -> None:
    """Run every part, each its own process; temporary files go to ``scratch``."""
    model = ["--model", str(args.model)]
    data = ["--data", str(args.data)]
    quick = args.quick
    components = ["benchmarks.components", *model, "--repeats", "2" if quick else "60"]
    if args.keras:
        components += ["--keras", str(args.keras)]
    figures["components"] = run_json(components, 900)[0]
    int8_out = scratch / "int8.onnx"
    quantize = ["training.quantize", str(args.model), *data, "--test-actors", *map(str, args.held_out_actors), "--out", str(int8_out)]
    if quick:
        quantize += ["--calibration-clips", "16", "--repeats", "1"]
    if not figures["held_out"]:  # a model trained on every actor (the shipped one): reported as heard, not held out
        quantize.append("--heard-test-actors")
    figures["int8"] = run_json(quantize, 1800)[-1]
    e2e = ["benchmarks.monitor_e2e", *model, *data, "--actors", *map(str, args.held_out_actors), "--out", str(scratch / "clips.wav")]
    figures["fast"] = run_json([*e2e, "--per-actor", "1" if quick else "15", "--pace", "fast"], 1800)[0]
    figures["realtime"] = run_json([*e2e, "--per-actor", "1" if quick else str(args.realtime_per_actor), "--pace", "realtime"], 3600)[0]
    calls = [2] if quick else args.calls
    seconds = 8.0 if quick else args.call_seconds
    capacity = ["benchmarks.capacity", *model, *data, "--calls", *map(str, calls), "--seconds", str(seconds), "--until-failure",
                "--out", str(scratch / "calls.wav")]
    figures["capacity"] = run_json(capacity, 3600)[1:]


def check_inputs(model: Path, data: Path, held_out_actors: list[int]) -> None:
    """The model loads, and ``data`` holds clips of every actor a part plays; else the project's error, naming the input."""
    from benchmarks.capacity import CALL_ACTORS
    from ser_stream.inference import EmotionModel
    from training.ravdess import require_actors, scan

    EmotionModel(model, provider="cpu")
    clips, _ = scan(data)
    require_actors(data, clips, [*held_out_actors, *CALL_ACTORS])


def hand_written(out: Path) -> tuple[str, str]:
    """The text of ``out`` before the generated section and after it; ``SerStreamError`` where the section has its
    BEGIN marker but no END after it: everything after BEGIN was taken as the old figures and deleted."""
    previous = out.read_text() if out.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in previous:
        previous += f"\n{BEGIN}\n{END}\n"
    head, rest = previous.split(BEGIN, 1)
    if END not in rest:
        raise SerStreamError(f"{shown(out)}: has {BEGIN} but no {END} after it, so where the figures end and the hand-written "
                             f"text begins is unknown; put {END} back after the figures")
    return head, rest.split(END, 1)[1]


def write_section(out: Path, markdown: str) -> None:
    """Replace what lies between the markers; the hand-written rest of the file stays."""
    head, tail = hand_written(out)
    out.write_text(f"{head}{BEGIN}\n{markdown}\n{END}{tail}")


def capacity_of(ladder: list[dict]) -> tuple[dict | None, bool]:
    """The highest load with every lower load sustained (None: the lowest failed), and whether every load tried passed."""
    best = None
    for load in sorted(ladder, key=lambda load: load["calls"]):
        if not load["sustained"]:
            return best, False
        best = load
    return best, best is not None


def ms(value: float) -> str:
    """A latency figure: NaN (nothing measured) and infinity (a clip without an utterance at its end) in words."""
    return "none measured" if math.isnan(value) else "∞" if math.isinf(value) else f"{value}"


def render(figures: dict) -> str:
    from benchmarks.capacity import LATENCY_BOUND_MS  # the bound the capacity part judged by: measure sets none

    components, quantization, ladder = figures["components"], figures["int8"], figures["capacity"]
    fast_run, realtime_run = figures["fast"], figures["realtime"]  # the monitor end to end at --pace fast and in real time
    best, all_passed = capacity_of(ladder)
    actors = ", ".join(map(str, quantization["held_out_actors"]))
    speakers = f"held-out actors {actors}" if figures.get("held_out") else f"actors {actors} (the model heard them in training: not held out)"
    fp32, int8 = quantization["ms_per_window_batch32"]["fp32"], quantization["ms_per_window_batch32"]["int8"]
    timed_median, timed_p95 = realtime_run.get("latency_ms_median_timed", realtime_run["latency_ms_median"]), realtime_run.get("latency_ms_p95_timed", realtime_run["latency_ms_p95"])
    lines = [
        f"Generated by `python -m benchmarks` on {figures['date']}. Machine: {figures['machine']}.",
        f"Model: `{figures['model']}`. Medians unless noted (of an even count, the mean of the middle two); every comparison (fp32 against int8, onnxruntime against Keras, "
        "the scipy path against the image path) was timed alternately, round by round, in one run. A latency's p95 is one of the latencies "
        "measured, the one at or just above the interpolated 95th percentile (numpy's `method=\"higher\"`), so a tail is never understated by "
        "interpolating towards faster ones; a component timing's p95 (features, inference) is interpolated (numpy's default).",
        "",
        "| figure | measured | target | |",
        "|---|---|---|---|",
        f"| features, ms per 2 s window (8 kHz input; p95) | {components['features_scipy_8k_ms']['median']:.2f} ({components['features_scipy_8k_ms']['p95']:.2f}) | ≤ 2 | {verdict(components['features_scipy_8k_ms']['median'], TARGETS['features_ms'])} |",
        f"| features, ms per window from 16 kHz (resampling included) | {components['features_scipy_16k_ms']['median']:.2f} | | |",
        f"| inference fp32, ms per window, batch 1 (timed alternately with int8) | {quantization['ms_per_window_batch1']['fp32']:.2f} | | |",
        f"| inference fp32, ms per window, batch 32 (timed alternately with int8) | {fp32:.2f} | ≤ 4 | {verdict(fp32, TARGETS['fp32_ms'])} |",
        f"| inference int8, ms per window, batch 32 (timed alternately with fp32) | {int8:.2f} | ≤ 2 | {verdict(int8, TARGETS['int8_ms'])} |",
        f"| one stream from a file, `--pace fast`: real-time factor (stream start to end; process start-up and model loading excluded) | {fast_run['real_time_factor']}× | ≥ 100× | {verdict(fast_run['real_time_factor'], TARGETS['rtf'], lower_is_better=False)} |",
        f"| utterance latency, one real-time stream, median / p95 (ms, end to end on the subscriber's clock from the clip's true end + the VAD's silence; "
        f"the {realtime_run['clips'] - realtime_run['clips_missing']} of {realtime_run['clips']} clips an utterance ended at) | {ms(timed_median)} / {ms(timed_p95)} | p95 ≤ 150 | {verdict(timed_p95, TARGETS['latency_p95_ms'])} |",
        f"| the same over all {realtime_run['clips']} clips ({realtime_run['clips_missing']} without an utterance ending within 0.3 s of the speech's end count as ∞) "
        f"| {ms(realtime_run['latency_ms_median'])} / {ms(realtime_run['latency_ms_p95'])} | | |",
        f"| the same run: worker processing time (the monitor's `latency_ms`, from the arrival of the audio that closed the utterance in its ring buffer, its wait for the worker included), median / p95 | {ms(realtime_run['worker_ms_median'])} / {ms(realtime_run['worker_ms_p95'])} | | |",
    ]
    rule = f"every lower load too; every clip reported once, nothing lost, late or refused, one stream per call, p95 latency < {LATENCY_BOUND_MS:.0f} ms"
    if best is None:
        lines.append(f"| concurrent real-time 8 kHz calls sustained ({rule}) | none of the loads tried | ≥ 50 | **missed** |")
    else:
        shown_calls = f"≥ {best['calls']} (largest tried)" if all_passed else f"{best['calls']}"
        lines.append(f"| concurrent real-time 8 kHz calls sustained ({rule}) | {shown_calls} | ≥ 50 | {verdict(best['calls'], TARGETS['streams'], lower_is_better=False)} |")
    at_target = next((load for load in ladder if load["calls"] == TARGETS["streams"]), None)  # the load the targets name
    if at_target is None:
        lines += [
            "| end-to-end utterance latency at 50 calls, median / p95 (ms) | not measured | p95 ≤ 150 | not measured |",
            "| monitor peak resident memory at 50 calls (MB) | not measured | ≤ 500 at 50 | not measured |",
        ]
    else:
        lines += [
            f"| end-to-end utterance latency at 50 calls, median / p95 (ms) | {ms(at_target['latency_ms_median'])} / {ms(at_target['latency_ms_p95'])} | p95 ≤ 150 | {verdict(at_target['latency_ms_p95'], TARGETS['latency_p95_ms'])} |",
            f"| monitor peak resident memory at 50 calls (MB) | {at_target['monitor_peak_rss_mb']} | ≤ 500 at 50 | {verdict(at_target['monitor_peak_rss_mb'], TARGETS['rss_mb'])} |",
        ]
    lines += [
        "",
        "Baselines, side by side (each pair timed alternately in one run):",
        "",
        "| comparison | ratio |",
        "|---|---|",
        f"| paper's image path (matplotlib render → grayscale → resize) / our scipy path | {components['ratio_paper_image_to_scipy']}× slower |",
    ]
    if "ratio_keras_call_to_onnx_batch1" in components:
        lines += [
            f"| Keras `model(x, training=False)` / onnxruntime, batch 1 | {components['ratio_keras_call_to_onnx_batch1']}× slower ({components['keras_call_batch1_ms_per_window']['median']:.1f} vs {components['onnx_batch1_ms_per_window']['median']:.1f} ms) |",
            f"| Keras `model.predict` / onnxruntime, batch 32 | {components['keras_predict_batch32_ms_per_window']['median'] / components['onnx_batch32_ms_per_window']['median']:.1f}× slower |",
        ]
    lines += [
        f"| int8 / fp32 speed, batch 1 and 32 | {quantization['ms_per_window_batch1']['speedup']}× and {quantization['ms_per_window_batch32']['speedup']}× (above 1 = int8 faster) |",
        f"| int8 − fp32 mean per-class accuracy on {quantization['clips']} clips of {speakers} | {quantization['wideband']['change_points']:+.2f} points wideband, {quantization['telephone']['change_points']:+.2f} telephone |",
        "",
        "Capacity ladder (each load: every call real time, G.711 μ-law RTP in 20 ms packets from one sender process, a packet sent once "
        "its 20 ms were spoken; the ladder stops at the first load not sustained; latency: a clip without an utterance ending within 0.3 s of its end counts as ∞):",
        "",
        "| calls | clips played | reported once / missing / twice or more | other utterances | latency median / p95 ms | overruns "
        "| RTP packets lost / late / refused | refused streams | calls not one stream | monitor CPU (cores) | peak RSS MB | sustained |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for load in ladder:
        lines.append(
            f"| {load['calls']} | {load['clips_played']} | {load['clips_reported_once']} / {load['clips_missing']} / {load['clips_duplicated']} "
            f"| {load['other_utterances']} | {ms(load['latency_ms_median'])} / {ms(load['latency_ms_p95'])} | {load['overruns']} "
            f"| {load['rtp_lost_packets']} / {load['rtp_late_packets']} / {load['rtp_refused_packets']} | {load['refused_streams']} "
            f"| {load['calls_not_one_stream']} | {load['monitor_cpu_cores']} | {load['monitor_peak_rss_mb']} | {'yes' if load['sustained'] else 'no'} |"
        )
    lines += [
        "",
        f"End to end on {speakers}, `--pace fast`: {fast_run['audio_seconds']} s of audio in {fast_run['processing_seconds']} s, "
        f"{fast_run['clips']} clips → {fast_run['utterances']} utterances ({fast_run['clips_with_exactly_one_utterance']} clips exactly one), "
        f"label accuracy {100 * fast_run['label_accuracy']:.1f} %; real time: {realtime_run['clips']} clips, {realtime_run['clips_missing']} without an utterance "
        f"ending at the speech's end, {realtime_run['clips_duplicated']} with two or more, overruns {realtime_run['overruns']}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
