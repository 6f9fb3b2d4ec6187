"""Capacity: how many concurrent real-time 8 kHz calls one monitor process sustains.

For each call count N, a sender process plays N calls as G.711 μ-law RTP
(20 ms packets, one SSRC per call, every call the same held-out speech but
rotated, so utterances end at different moments) into
`ser-stream monitor --source rtp:...`, and a WebSocket subscriber records
every utterance. A load is **sustained** when no audio was lost (no ring
overrun, no lost RTP packet) and the 95th-percentile utterance latency is
under the bound (250 ms), and at least 90 % of the clips every call played
were reported as utterances where they ended. Latency here is end to end, measured on the
sender's clock: from the true end of a clip's speech (where the sender played
it) to the subscriber's receipt of its utterance, minus the VAD's configured
silence (`--min-silence`, which the user chose to wait). The monitor's CPU
time and peak resident memory (VmHWM) are read from /proc. Run:

    .venv/bin/python -m benchmarks.capacity --calls 10 20 30 40 50 60 --seconds 60
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile

from benchmarks.clients import free_port, subscriber_when_up
from benchmarks.monitor_e2e import build_file
from ser_stream.cli import OneLineParser, output_file
from ser_stream.errors import SerStreamError
from ser_stream.g711 import mulaw_encode
from ser_stream.inference import EmotionModel
from ser_stream.utterances import UtteranceConfig

PACKET = 160  # samples per 20 ms packet at 8 kHz
MIN_SILENCE = UtteranceConfig().min_silence_seconds
CALL_ACTORS = [3, 5, 7, 20]  # every call plays these speakers, whom the fold-0 model never heard


def send_calls(codes: bytes, calls: int, seconds: float, port: int, start_at: float) -> None:
    """Sender process: every 20 ms one μ-law packet per call, on an absolute schedule from ``start_at``."""
    period = len(codes) // PACKET
    offsets = [round(call * period / calls) for call in range(calls)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target = ("127.0.0.1", port)
    for tick in range(int(seconds * 50)):
        delay = start_at + tick * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for call in range(calls):
            index = (offsets[call] + tick) % period
            header = struct.pack("!BBHII", 0x80, 0, tick & 0xFFFF, (tick * PACKET) & 0xFFFFFFFF, call + 1)
            sock.sendto(header + codes[index * PACKET:(index + 1) * PACKET], target)
    sock.close()


def process_stats(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    cpu_seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as status:
        memory = {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith(("VmHWM", "VmRSS"))}
    return {"cpu_seconds": cpu_seconds, "peak_rss_mb": memory["VmHWM"] / 1024, "rss_mb": memory["VmRSS"] / 1024}


async def subscribe(port: int, seconds: float, start_sender: Callable[[float], None]) -> tuple[float, list[dict]]:
    """Connect (the monitor is then listening for RTP too), start the calls, record until they have ended."""
    async with await subscriber_when_up(port, max_queue=None) as ws:
        start_at = time.monotonic() + 0.5
        start_sender(start_at)
        until = start_at + seconds + 4.0  # the calls end; the idle timeout closes them
        messages = []
        while time.monotonic() < until:
            try:
                text = await asyncio.wait_for(ws.recv(), max(0.01, until - time.monotonic()))
            except TimeoutError:
                break
            message = json.loads(text)
            if message["type"] in ("utterance", "status", "stream_started", "stream_ended"):
                messages.append(dict(message, received=time.monotonic()))
        return start_at, messages


def run_load(calls: int, seconds: float, codes: bytes, truth_ends: np.ndarray, model: Path | None, bound_ms: float) -> dict:
    ws_port, rtp_port = free_port(), free_port(socket.SOCK_DGRAM)
    command = [sys.executable, "-m", "ser_stream", "monitor", "--source", f"rtp:127.0.0.1:{rtp_port}", "--no-dashboard",
               "--ws", f"127.0.0.1:{ws_port}"]
    if model is not None:
        command += ["--model", str(model)]
    monitor = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    senders: list[multiprocessing.Process] = []
    before: dict[str, float] = {}

    def start_sender(start_at: float) -> None:
        before.update(process_stats(monitor.pid))
        senders.append(multiprocessing.Process(target=send_calls, args=(codes, calls, seconds, rtp_port, start_at)))
        senders[0].start()

    try:
        start_at, messages = asyncio.run(subscribe(ws_port, seconds, start_sender))
        after = process_stats(monitor.pid)
        senders[0].join()
    finally:
        monitor.send_signal(signal.SIGTERM)
        monitor.wait(timeout=30)
    period = len(codes) / 8000
    latencies = []
    expected = 0  # clip ends every call played early enough to be reported
    for call in range(calls):
        offset = round(call * (len(codes) // PACKET) / calls) * PACKET / 8000
        ends = np.concatenate([truth_ends - offset + k * period for k in range(int(seconds / period) + 2)])
        expected += int(np.sum((ends > 0.5) & (ends + MIN_SILENCE < seconds)))
    for utterance in (m for m in messages if m["type"] == "utterance"):
        call = int(utterance["stream"].removeprefix("rtp-"), 16) - 1
        offset = round(call * (len(codes) // PACKET) / calls) * PACKET / 8000
        # where this call's clip ends fall in its own time: the file's ends, rotated by the call's offset
        ends = np.concatenate([truth_ends - offset + k * period for k in range(int(seconds / period) + 2)])
        nearest = ends[np.argmin(np.abs(ends - utterance["t_end"]))]
        if abs(nearest - utterance["t_end"]) <= 0.3 and nearest + MIN_SILENCE < seconds:
            latencies.append((utterance["received"] - (start_at + nearest + MIN_SILENCE)) * 1000.0)
    status = [m for m in messages if m["type"] == "status"][-1]
    values = np.asarray(latencies) if latencies else np.zeros(1)
    result = {
        "calls": calls,
        "audio_seconds_per_call": seconds,
        "utterances": sum(m["type"] == "utterance" for m in messages),
        "utterances_matched": len(latencies),
        "utterances_expected": expected,
        "latency_ms_median": round(float(np.median(values)), 1),
        "latency_ms_p95": round(float(np.percentile(values, 95)), 1),
        "overruns": status["overruns"],
        "rtp_lost_packets": status.get("rtp_lost_packets", 0),
        "monitor_cpu_cores": round((after["cpu_seconds"] - before["cpu_seconds"]) / (seconds + 4.0), 2),
        "monitor_peak_rss_mb": round(after["peak_rss_mb"], 1),
    }
    # sustained: nothing lost, nearly every clip reported at its place (a missed or shifted one means trouble), fast enough
    result["sustained"] = (
        result["overruns"] == 0 and result["rtp_lost_packets"] == 0 and len(latencies) >= 0.9 * expected
        and result["latency_ms_p95"] < bound_ms
    )
    return result


def call_audio(data: Path, out: Path) -> tuple[bytes, np.ndarray]:
    """The μ-law bytes every call plays (12 clips of speakers the fold-0 model never heard) and where each clip's speech ends."""
    truth = build_file(data, CALL_ACTORS, 3, out)
    audio, rate = soundfile.read(out, dtype="float32")
    codes = mulaw_encode(scipy.signal.resample_poly(audio, 8000, rate)).tobytes()
    return codes[: len(codes) - len(codes) % PACKET], np.array([end for _, end, _ in truth])


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.capacity", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ravdess16k"))
    parser.add_argument("--calls", type=int, nargs="+", default=[10, 20, 30, 40, 50, 60])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per call at each load")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--bound-ms", type=float, default=250.0, help="p95 latency a sustained load must stay under")
    parser.add_argument("--out", type=output_file(".wav"), default="/tmp/ser_stream_capacity.wav", help="where the calls' audio is written (.wav)")
    args = parser.parse_args(argv)
    try:
        if args.model is not None:
            EmotionModel(args.model, provider="cpu")  # the monitor would fail on it unheard (its stderr is not shown)
        codes, truth_ends = call_audio(args.data, args.out)
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "python": platform.python_version(),
                      "call_audio_seconds": round(len(codes) / 8000, 1)}), flush=True)
    for calls in args.calls:
        print(json.dumps(run_load(calls, args.seconds, codes, truth_ends, args.model, args.bound_ms)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
