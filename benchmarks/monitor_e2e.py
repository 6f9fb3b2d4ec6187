"""End-to-end monitor benchmark: clips of chosen actors, separated by silence, through
`ser-stream monitor` to a real WebSocket client.

Reports the real-time factor (from the stream's start to its end, so excluding
process start-up and model loading), the utterance latency end to end on the
subscriber's clock (median, p95: from the true end of a clip's speech plus the
VAD's configured silence to the receipt of its utterance; a clip without an
utterance ending there counts as infinitely late, and the same figures over the
clips that have one), how many clips became
exactly one utterance, and the label accuracy of those utterances. Run:

    .venv/bin/python -m benchmarks.monitor_e2e --actors 3 5 7 20 --model runs/.../model.onnx --pace fast
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import numpy as np
import soundfile
from numpy.typing import NDArray
from websockets.exceptions import ConnectionClosedError

from benchmarks.clients import free_port, strict_json, subscriber_when_up
from benchmarks.clip_file import write_clips_with_silence
from ser_stream.cli import OneLineParser, output_file, whole_number
from ser_stream.errors import SerStreamError, shown
from ser_stream.inference import EmotionModel
from ser_stream.messages import latency_summary
from ser_stream.utterances import UtteranceConfig
from training.ravdess import RavdessClip, require_actors, scan

LISTEN_SECONDS = 30.0  # how long the monitor may take to start (load its model) and listen
MIN_SILENCE = UtteranceConfig().min_silence_seconds
MATCH_SECONDS = 0.3  # an utterance ending this close to a clip's end reports that clip


def match_clip_ends(clip_ends: NDArray[np.float64], every_end: NDArray[np.float64], utterances: list[tuple[float, float]],
                    zero: float) -> dict:
    """Match one stream's utterances, as (stream-time end, receipt time), to the clip ends they report.

    An utterance reports the nearest of ``every_end`` within ``MATCH_SECONDS``; only ``clip_ends`` count.
    A counted clip's latency runs from its true end plus the VAD's silence (``zero`` is stream time 0 on
    the receiver's clock) to the receipt of its first match; a clip without a match is infinitely late,
    one with two or more is duplicated.
    """
    received: list[list[float]] = [[] for _ in clip_ends]
    other = 0
    for t_end, receipt in utterances:
        nearest = float(every_end[np.argmin(np.abs(every_end - t_end))]) if every_end.size else np.inf
        if abs(nearest - t_end) > MATCH_SECONDS:
            other += 1
            continue
        index = np.flatnonzero(clip_ends == nearest)
        if index.size:  # else a clip end that does not count (cut by a call's start or end): neither missing nor extra
            received[int(index[0])].append(receipt)
    return {
        "latencies_ms": [(min(times) - (zero + end + MIN_SILENCE)) * 1000.0 if times else np.inf for times, end in zip(received, clip_ends)],
        "missing": sum(not times for times in received),
        "duplicated": sum(len(times) > 1 for times in received),
        "other_utterances": other,
    }


def chosen_clips(data: Path, actors: list[int], per_actor: int) -> list[RavdessClip]:
    """``per_actor`` clips of each of ``actors``, spread over their 60 (so over emotions), actor by actor.

    ``DatasetError`` before anything is read when ``data`` is not a RAVDESS folder or lacks one of the actors.
    """
    clips, _ = scan(data)
    require_actors(data, clips, actors)
    chosen = []
    for actor in actors:
        chosen += [c for c in clips if c.actor == actor][:: max(1, 60 // per_actor)][:per_actor]
    return chosen


def build_file(data: Path, actors: list[int], per_actor: int, out: Path) -> list[tuple[float, float, str]]:
    """Write ``chosen_clips`` to ``out`` (``write_clips_with_silence``); where each clip's speech lies, and its emotion."""
    clips = chosen_clips(data, actors, per_actor)
    bounds = write_clips_with_silence([clip.path for clip in clips], out)
    return [(start, end, clip.emotion) for (start, end), clip in zip(bounds, clips)]


class MonitorFailed(Exception):
    """The monitor published no whole stream; ``status``: its exit status (2: it refused its options)."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status

    @classmethod
    def saying(cls, reason: str, errors: IO[bytes], status: int) -> MonitorFailed:
        """The failure, with the monitor's own last line on stderr (``errors``, the file it wrote) after ``reason``."""
        errors.seek(0)
        said = errors.read().decode(errors="replace").strip().splitlines()
        return cls(f"{reason}: {shown(said[-1])}" if said else reason, status)


async def listen(port: int, monitor: subprocess.Popen[bytes]) -> list[dict]:
    """Every message the monitor publishes, each with its time of receipt, until it closes the connection."""
    messages: list[dict] = []
    async with await subscriber_when_up(port, seconds=LISTEN_SECONDS, monitor=monitor, max_queue=None) as ws:
        try:
            async for text in ws:
                messages.append(dict(json.loads(text), received=time.monotonic()))
        except ConnectionClosedError:  # it died mid-stream: what it published is kept, and its stderr says why
            pass
    return messages


def monitor_messages(command: list[str], port: int) -> list[dict]:
    """Run the monitor ``command`` (publishing on ``port``) to its end; every message it published.

    ``MonitorFailed`` with its own last line on stderr when it published no whole stream: it once failed
    unheard (its stderr thrown away) and the benchmark waited 30 s to end in a traceback."""
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stderr=errors)
        reason: str | None = None
        try:
            messages = asyncio.run(listen(port, process))
            process.wait(timeout=LISTEN_SECONDS)  # it exits once its stream has ended
        except subprocess.TimeoutExpired:  # every message is in; it is stopped below
            pass
        except RuntimeError as error:  # it never listened: it exited (MonitorExited), or it was still starting
            messages, reason = [], str(error)
        finally:
            if process.poll() is None:
                process.kill()
            status = process.wait()
        if {"stream_started", "stream_ended", "status"} <= {message["type"] for message in messages}:
            return messages
        raise MonitorFailed.saying(reason or f"the monitor exited with status {status} before its stream ended", errors, status)


def add_clip_arguments(parser: argparse.ArgumentParser, per_actor: int) -> None:
    """The options ``chosen_clips`` takes: ``--data``, ``--actors`` (held out by the fold-0 model), ``--per-actor``."""
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ravdess16k"))
    parser.add_argument("--actors", type=int, nargs="+", default=[3, 5, 7, 20])
    parser.add_argument("--per-actor", type=whole_number(1), default=per_actor)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.monitor_e2e", description=__doc__.splitlines()[0])
    add_clip_arguments(parser, per_actor=15)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--pace", default="fast", choices=["fast", "realtime"])
    parser.add_argument("--out", type=output_file(".wav"), default=None, help="where the clips' audio is written (.wav; default: a temporary folder)")
    parser.add_argument("--window", type=float, default=None)
    parser.add_argument("--hop", type=float, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ser_stream_bench.") as folder:
        return run(parser, args, args.out or Path(folder) / "clips.wav")


def run(parser: OneLineParser, args: argparse.Namespace, out: Path) -> int:
    try:
        if args.model is not None:
            EmotionModel(args.model, provider="cpu")  # before the clips are written: a bad model is one line at once
        truth = build_file(args.data, args.actors, args.per_actor, out)
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    duration = soundfile.info(str(out)).duration
    port = free_port()
    command = [sys.executable, "-m", "ser_stream", "monitor", "--source", f"file:{out}", "--pace", args.pace,
               "--no-dashboard", "--ws", f"127.0.0.1:{port}", "--await-subscribers", "1"]
    if args.model:
        command += ["--model", str(args.model)]
    for flag, value in (("--window", args.window), ("--hop", args.hop)):
        if value is not None:
            command += [flag, str(value)]
    try:
        messages = monitor_messages(command, port)
    except MonitorFailed as failure:
        parser.exit(2 if failure.status == 2 else 1, f"{parser.prog}: error: {failure}\n")
    first = next(m for m in messages if m["type"] == "stream_started")
    utterances = [m for m in messages if m["type"] == "utterance"]
    ended = [m for m in messages if m["type"] == "stream_ended"]
    status = [m for m in messages if m["type"] == "status"][-1]
    processing_seconds = ended[0]["received"] - first["received"]
    # Stream time zero on the subscriber's clock: the receipt of stream_started, which the worker sends once it
    # has taken the stream; if that is after the source began, the clock starts late and latencies err short by as much.
    ends = np.array([end for _, end, _ in truth])
    clips = match_clip_ends(ends, ends, [(u["t_end"], u["received"]) for u in utterances], first["received"])
    untimed = {"median": float("nan"), "p95": float("nan")}
    latency = latency_summary(clips["latencies_ms"]) if args.pace == "realtime" else untimed
    # the clips an utterance ended at: the VAD may end one early (trailing speech it does not hear) or split it
    timed = latency_summary([ms for ms in clips["latencies_ms"] if np.isfinite(ms)]) if args.pace == "realtime" else untimed
    worker = latency_summary([u["latency_ms"] for u in utterances])
    matched, correct = 0, 0
    for start, end, emotion in truth:
        overlapping = [u for u in utterances if u["t_start"] < end and u["t_end"] > start]
        if len(overlapping) == 1:
            matched += 1
            correct += overlapping[0]["label"] == emotion
    print(strict_json({
        "audio_seconds": round(duration, 1),
        "processing_seconds": round(processing_seconds, 2),
        "real_time_factor": round(duration / processing_seconds, 1),
        "clips": len(truth),
        "utterances": len(utterances),
        "clips_with_exactly_one_utterance": matched,
        "label_accuracy": round(correct / max(1, matched), 3),
        "latency_ms_median": latency["median"],  # end to end, real time only (at --pace fast the clock is not the audio's)
        "latency_ms_p95": latency["p95"],
        "latency_ms_median_timed": timed["median"],  # over the clips with an utterance ending at their end
        "latency_ms_p95_timed": timed["p95"],
        "clips_missing": clips["missing"],  # no utterance ending within MATCH_SECONDS of the speech's end
        "clips_duplicated": clips["duplicated"],
        "worker_ms_median": worker["median"],  # the monitor's own latency_ms: from the arrival of the audio that closed it
        "worker_ms_p95": worker["p95"],
        "overruns": status["overruns"],
        "pace": args.pace,
        "window": args.window,
        "hop": args.hop,
        "windows": len([m for m in messages if m["type"] == "window"]),
    }, indent=2))
    return 0


if __name__ == "__main__":
    t0 = time.monotonic()
    status = main()
    print(f"wall seconds: {time.monotonic() - t0:.1f}")
    raise SystemExit(status)
