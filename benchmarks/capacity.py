"""Capacity: how many concurrent real-time 8 kHz calls one monitor process sustains.

For each call count N, a sender process plays N calls as G.711 μ-law RTP
(20 ms packets, one SSRC per call, every call the same held-out speech but
rotated, so utterances end at different moments) into
`ser-stream monitor --source rtp:...`, and a WebSocket subscriber records
every utterance until every call's stream has ended. A load is **sustained**
when every clip end a call played is reported by exactly one utterance ending
there (a clip without one is infinitely late), no audio was lost, late or
refused (no ring overrun; no lost, late or refused RTP packet; no refused
stream), every call was one stream (exactly one stream_started each: no call
closed and reopened), and the 95th-percentile utterance latency is under the
bound (250 ms). Latency here is end to end, measured on the sender's clock:
from the true end of a clip's speech (a packet leaves when its 20 ms of audio
has been spoken, as a phone sends it) to the subscriber's receipt of its
utterance, minus the VAD's configured silence (`--min-silence`, which the user
chose to wait). The monitor's CPU (cores, over the calls' own interval) and
peak resident memory (VmHWM) are read from /proc. Run:

    .venv/bin/python -m benchmarks.capacity --calls 10 20 30 40 50 60 --seconds 60 [--until-failure]
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
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile

from benchmarks.clients import MonitorExited, free_port, strict_json, subscriber_when_up
from benchmarks.monitor_e2e import MIN_SILENCE, MonitorFailed, build_file, match_clip_ends
from ser_stream.cli import OneLineParser, output_file
from ser_stream.errors import SerStreamError
from ser_stream.g711 import G711_PACKET_SAMPLES, G711_SAMPLE_RATE, mulaw_encode
from ser_stream.inference import EmotionModel
from ser_stream.messages import latency_summary

GRACE_SECONDS = 15.0  # after the calls end, how long the subscriber waits for their streams to end (then: missing)
CALL_ACTORS = [3, 5, 7, 20]  # every call plays these speakers, whom the fold-0 model never heard
LATENCY_BOUND_MS = 250.0  # the p95 utterance latency a sustained load stays under, unless --bound-ms says otherwise


def send_calls(codes: bytes, calls: int, seconds: float, port: int, start_at: float) -> None:
    """Sender process: every 20 ms one μ-law packet per call, on an absolute schedule from ``start_at``.

    Packet k holds the audio of [20k, 20k + 20) ms, so it leaves at ``start_at`` + 20(k + 1) ms, once spoken.
    """
    period = len(codes) // G711_PACKET_SAMPLES
    offsets = [round(call * period / calls) for call in range(calls)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target = ("127.0.0.1", port)
    for tick in range(int(seconds * 50)):
        delay = start_at + (tick + 1) * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for call in range(calls):
            sock.sendto(call_packet(codes, period, offsets[call], tick, call), target)
    sock.close()


def call_packet(codes: bytes, period: int, offset: int, tick: int, call: int) -> bytes:
    """Call ``call``'s RTP packet ``tick`` (SSRC call + 1): the μ-law ``codes`` from packet ``offset`` on, looped
    every ``period`` packets, so that the calls speak the same clips at different moments."""
    index = (offset + tick) % period
    header = struct.pack("!BBHII", 0x80, 0, tick & 0xFFFF, (tick * G711_PACKET_SAMPLES) & 0xFFFFFFFF, call + 1)
    return header + codes[index * G711_PACKET_SAMPLES:(index + 1) * G711_PACKET_SAMPLES]


def process_stats(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    cpu_seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as status:
        memory = {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith(("VmHWM", "VmRSS"))}
    return {"cpu_seconds": cpu_seconds, "peak_rss_mb": memory["VmHWM"] / 1024, "rss_mb": memory["VmRSS"] / 1024}


async def subscribe(port: int, calls: int, seconds: float, start_sender: Callable[[float], None],
                    sample: Callable[[], dict[str, float]], monitor: subprocess.Popen[bytes]) -> tuple[float, list[dict], list[dict[str, float]]]:
    """Connect (the monitor is then listening for RTP too), start the calls, record until their streams have ended.

    Also samples the monitor (``sample``) when the calls start and when they end: the interval CPU is measured over.
    """
    async with await subscriber_when_up(port, monitor=monitor, max_queue=None) as ws:
        start_at = time.monotonic() + 0.5
        start_sender(start_at)

        async def sample_at(when: float) -> dict[str, float]:
            await asyncio.sleep(max(0.0, when - time.monotonic()))
            return {"at": time.monotonic(), **sample()}

        samples = [asyncio.create_task(sample_at(start_at)), asyncio.create_task(sample_at(start_at + seconds))]
        until = start_at + seconds + GRACE_SECONDS  # the calls end; the idle timeout closes them, publishing their last utterances
        messages: list[dict] = []
        started: set[str] = set()
        ended: set[str] = set()
        status_after_end = False
        while time.monotonic() < until and not (status_after_end and len(ended) >= calls and ended >= started):
            try:
                text = await asyncio.wait_for(ws.recv(), max(0.01, until - time.monotonic()))
            except TimeoutError:
                break
            message = json.loads(text)
            kind = message["type"]
            if kind in ("utterance", "status", "stream_started", "stream_ended"):
                messages.append(dict(message, received=time.monotonic()))
            if kind == "stream_started":
                started.add(message["stream"])
            elif kind == "stream_ended":
                ended.add(message["stream"])
                status_after_end = False
            elif kind == "status":
                status_after_end = len(ended) >= calls and ended >= started  # counts that include every stream's end
        return start_at, messages, [await task for task in samples]


def judge_load(calls: int, seconds: float, period_packets: int, clips: np.ndarray, start_at: float, messages: list[dict],
               bound_ms: float) -> dict:
    """The figures of one load from what the subscriber recorded, and whether the load was sustained (module docstring).

    ``clips``: where each clip's speech starts and ends in the call audio, one (start, end) row each.
    """
    period = period_packets * G711_PACKET_SAMPLES / G711_SAMPLE_RATE
    utterances: dict[int, list[tuple[float, float]]] = {call: [] for call in range(calls)}
    stream_starts: dict[str, int] = {}
    strangers = 0  # utterances of a stream no call sent
    for message in messages:
        if message["type"] == "stream_started":
            stream_starts[message["stream"]] = stream_starts.get(message["stream"], 0) + 1
        elif message["type"] == "utterance":
            call = int(message["stream"].removeprefix("rtp-"), 16) - 1
            if call in utterances:
                utterances[call].append((message["t_end"], message["received"]))
            else:
                strangers += 1
    latencies: list[float] = []
    missing = duplicated = other = 0
    for call in range(calls):
        offset = round(call * period_packets / calls) * G711_PACKET_SAMPLES / G711_SAMPLE_RATE
        # where this call's clip ends fall in its own time: the file's ends, rotated by the call's offset
        every_clip = np.concatenate([clips - offset + k * period for k in range(-1, int(seconds / period) + 2)])
        every_end = every_clip[:, 1]
        # the clips a call played whole, silence after included (one cut by the call's start or end does not count)
        counted = every_end[(every_clip[:, 0] >= 0.0) & (every_end + MIN_SILENCE < seconds)]
        matched = match_clip_ends(counted, every_end, utterances[call], start_at)
        latencies += matched["latencies_ms"]
        missing += matched["missing"]
        duplicated += matched["duplicated"]
        other += matched["other_utterances"]
    statuses = [m for m in messages if m["type"] == "status"]
    status = statuses[-1] if statuses else {}
    summary = latency_summary(latencies)
    calls_restarted = sum(stream_starts.get(f"rtp-{call + 1:08x}", 0) != 1 for call in range(calls))
    result = {
        "calls": calls,
        "audio_seconds_per_call": seconds,
        "utterances": sum(m["type"] == "utterance" for m in messages),
        "clips_played": len(latencies),
        "clips_reported_once": len(latencies) - missing - duplicated,
        "clips_missing": missing,
        "clips_duplicated": duplicated,
        "other_utterances": other + strangers,  # ending nowhere near a clip's end (e.g. the VAD split a clip)
        "latency_ms_median": summary["median"],
        "latency_ms_p95": summary["p95"],
        "overruns": status.get("overruns"),
        "rtp_lost_packets": status.get("rtp_lost_packets"),
        "rtp_late_packets": status.get("rtp_late_packets"),
        "rtp_refused_packets": status.get("rtp_refused_packets"),
        "refused_streams": status.get("refused_streams"),
        "calls_not_one_stream": calls_restarted,  # a call with no stream_started, or closed and reopened
        "streams_not_a_call": sum(stream not in {f"rtp-{c + 1:08x}" for c in range(calls)} for stream in stream_starts),
    }
    losses = ("overruns", "rtp_lost_packets", "rtp_late_packets", "rtp_refused_packets", "refused_streams")
    result["sustained"] = bool(
        latencies and missing == 0 and duplicated == 0 and all(result[name] == 0 for name in losses)
        and calls_restarted == 0 and result["streams_not_a_call"] == 0 and summary["p95"] < bound_ms
    )
    return result


def run_load(calls: int, seconds: float, codes: bytes, clips: np.ndarray, model: Path | None, bound_ms: float) -> dict:
    ws_port, rtp_port = free_port(), free_port(socket.SOCK_DGRAM)
    command = [sys.executable, "-m", "ser_stream", "monitor", "--source", f"rtp:127.0.0.1:{rtp_port}", "--no-dashboard",
               "--ws", f"127.0.0.1:{ws_port}"]
    if model is not None:
        command += ["--model", str(model)]
    senders: list[multiprocessing.Process] = []

    def start_sender(start_at: float) -> None:
        senders.append(multiprocessing.Process(target=send_calls, args=(codes, calls, seconds, rtp_port, start_at)))
        senders[0].start()

    with tempfile.TemporaryFile() as errors:  # its stderr, for its own reason should it fail
        monitor = subprocess.Popen(command, stderr=errors)
        try:
            start_at, messages, (at_start, at_end) = asyncio.run(
                subscribe(ws_port, calls, seconds, start_sender, lambda: process_stats(monitor.pid), monitor))
            peak_rss_mb = process_stats(monitor.pid)["peak_rss_mb"]
            senders[0].join()
        except MonitorExited as exited:  # a refused option once meant a 60 s wait and a traceback, its reason unheard
            raise MonitorFailed.saying(str(exited), errors, monitor.wait()) from None
        finally:
            monitor.send_signal(signal.SIGTERM)
            monitor.wait(timeout=30)
    result = judge_load(calls, seconds, len(codes) // G711_PACKET_SAMPLES, clips, start_at, messages, bound_ms)
    result["monitor_cpu_cores"] = round((at_end["cpu_seconds"] - at_start["cpu_seconds"]) / (at_end["at"] - at_start["at"]), 2)
    result["monitor_peak_rss_mb"] = round(peak_rss_mb, 1)
    return result


def call_audio(data: Path, out: Path) -> tuple[bytes, np.ndarray]:
    """The μ-law bytes every call plays (12 clips of speakers the fold-0 model never heard) and where each clip's speech lies."""
    truth = build_file(data, CALL_ACTORS, 3, out)
    audio, rate = soundfile.read(out, dtype="float32")
    codes = mulaw_encode(scipy.signal.resample_poly(audio, G711_SAMPLE_RATE, rate)).tobytes()
    return codes[: len(codes) - len(codes) % G711_PACKET_SAMPLES], np.array([(start, end) for start, end, _ in truth])


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.capacity", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ravdess16k"))
    parser.add_argument("--calls", type=int, nargs="+", default=[10, 20, 30, 40, 50, 60])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per call at each load")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--bound-ms", type=float, default=LATENCY_BOUND_MS, help="p95 latency a sustained load must stay under")
    parser.add_argument("--out", type=output_file(".wav"), default=None, help="where the calls' audio is written (.wav; default: a temporary folder)")
    parser.add_argument("--until-failure", action="store_true", help="stop at the first load not sustained")
    args = parser.parse_args(argv)
    try:
        if args.model is not None:
            EmotionModel(args.model, provider="cpu")  # the monitor would fail on it unheard (its stderr is not shown)
        with tempfile.TemporaryDirectory(prefix="ser_stream_capacity.") as folder:
            codes, clips = call_audio(args.data, args.out or Path(folder) / "calls.wav")
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(strict_json({"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "python": platform.python_version(),
                      "call_audio_seconds": round(len(codes) / G711_SAMPLE_RATE, 1)}), flush=True)
    for calls in args.calls:
        try:
            result = run_load(calls, args.seconds, codes, clips, args.model, args.bound_ms)
        except MonitorFailed as failure:
            parser.exit(2 if failure.status == 2 else 1, f"{parser.prog}: error: {failure}\n")
        print(strict_json(result), flush=True)
        if args.until_failure and not result["sustained"]:
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
