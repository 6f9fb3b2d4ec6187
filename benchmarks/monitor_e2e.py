"""End-to-end monitor benchmark: clips of chosen actors, separated by silence, through
`ser-stream monitor` to a real WebSocket client.

Reports the real-time factor, the utterance latency (median, p95; from the arrival
of the audio that ended an utterance to its message, i.e. excluding the VAD's
configured silence), how many clips became exactly one utterance, and the label
accuracy of those utterances. Run:

    .venv/bin/python -m benchmarks.monitor_e2e --actors 3 5 7 20 --model runs/.../model.onnx --pace fast
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile
from websockets.asyncio.client import connect

from ser_stream.audiofile import read_audio
from ser_stream.cli import OneLineParser, output_file
from ser_stream.errors import DatasetError, SerStreamError, shown
from ser_stream.inference import EmotionModel
from ser_stream.windows import trim_silence
from training.ravdess import scan

GAP_SECONDS = 1.5


def build_file(data: Path, actors: list[int], per_actor: int, out: Path) -> list[tuple[float, float, str]]:
    """Write ``per_actor`` clips of each of ``actors`` to ``out``, separated by silence; where each clip's speech lies.

    ``DatasetError`` before anything is read when ``data`` is not a RAVDESS folder or lacks one of the actors.
    """
    clips, _ = scan(data)
    missing = [actor for actor in actors if not any(clip.actor == actor for clip in clips)]
    if missing:
        raise DatasetError(f"{shown(data)}: no clips of actor(s) {', '.join(map(str, missing))}")
    chosen = []
    for actor in actors:
        chosen += [c for c in clips if c.actor == actor][:: max(1, 60 // per_actor)][:per_actor]
    pieces, truth, t = [np.zeros(int(GAP_SECONDS * 16000), np.float32)], [], GAP_SECONDS
    for clip in chosen:
        audio, rate = read_audio(clip.path)
        speech = trim_silence(audio, rate, threshold_db=30.0, margin_seconds=0.0)
        truth.append((t, t + speech.size / rate, clip.emotion))
        t += speech.size / rate + GAP_SECONDS
        pieces += [speech, np.zeros(int(GAP_SECONDS * 16000), np.float32)]
    soundfile.write(out, np.concatenate(pieces), 16000)
    return truth


async def listen(port: int) -> list[dict]:
    for _ in range(300):
        try:
            async with connect(f"ws://127.0.0.1:{port}/", max_queue=None) as ws:
                return [dict(json.loads(text), received=time.monotonic()) async for text in ws]
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("monitor did not start")


def positive(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.monitor_e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ravdess16k"))
    parser.add_argument("--actors", type=int, nargs="+", default=[3, 5, 7, 20])
    parser.add_argument("--per-actor", type=positive, default=15)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--pace", default="fast", choices=["fast", "realtime"])
    parser.add_argument("--out", type=output_file(".wav"), default="/tmp/ser_stream_bench.wav", help="where the clips' audio is written (.wav)")
    parser.add_argument("--window", type=float, default=None)
    parser.add_argument("--hop", type=float, default=None)
    args = parser.parse_args(argv)
    try:
        if args.model is not None:
            EmotionModel(args.model, provider="cpu")  # the monitor would fail on it unheard (its stderr is not shown)
        truth = build_file(args.data, args.actors, args.per_actor, args.out)
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    duration = soundfile.info(str(args.out)).duration
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "ser_stream", "monitor", "--source", f"file:{args.out}", "--pace", args.pace,
               "--no-dashboard", "--ws", f"127.0.0.1:{port}", "--await-subscribers", "1"]
    if args.model:
        command += ["--model", str(args.model)]
    for flag, value in (("--window", args.window), ("--hop", args.hop)):
        if value is not None:
            command += [flag, str(value)]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    messages = asyncio.run(listen(port))
    process.wait()
    first = next(m for m in messages if m["type"] == "stream_started")
    utterances = [m for m in messages if m["type"] == "utterance"]
    ended = [m for m in messages if m["type"] == "stream_ended"]
    status = [m for m in messages if m["type"] == "status"][-1]
    processing_seconds = ended[0]["received"] - first["received"]
    latencies = np.array([u["latency_ms"] for u in utterances])
    matched, correct = 0, 0
    for start, end, emotion in truth:
        overlapping = [u for u in utterances if u["t_start"] < end and u["t_end"] > start]
        if len(overlapping) == 1:
            matched += 1
            correct += overlapping[0]["label"] == emotion
    print(json.dumps({
        "audio_seconds": round(duration, 1),
        "processing_seconds": round(processing_seconds, 2),
        "real_time_factor": round(duration / processing_seconds, 1),
        "clips": len(truth),
        "utterances": len(utterances),
        "clips_with_exactly_one_utterance": matched,
        "label_accuracy": round(correct / max(1, matched), 3),
        "latency_ms_median": round(float(np.median(latencies)), 1),
        "latency_ms_p95": round(float(np.percentile(latencies, 95)), 1),
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
