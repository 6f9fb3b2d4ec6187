"""Bounded soak: long audio through several streams while subscribers misbehave.

`ser-stream monitor --pace fast` plays STREAMS files (MINUTES of audio in all,
RAVDESS clips of held-out speakers separated by silence) while

- READERS subscribers read everything (some follow one stream with ?stream=),
- STALLED subscribers complete the handshake and never read a byte,
- a churn client connects and disconnects in a loop, alternately closing
  cleanly, vanishing mid-message (TCP reset) and sending garbage first;

and samples the monitor's resident memory, open file descriptors and threads
every half second. It reports whether every reader got every utterance, the
churn cycles survived, the subscriber drops the monitor counted, and memory and
descriptors over time. Run:

    .venv/bin/python -m benchmarks.soak --minutes 30 --streams 4 --readers 18 --stalled 2
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from benchmarks.clients import free_port, stalled_client
from benchmarks.monitor_e2e import build_file
from ser_stream.cli import OneLineParser, output_file
from ser_stream.errors import SerStreamError, shown


def build_streams(data: Path, minutes: float, streams: int, folder: Path) -> list[Path]:
    """``streams`` files that together hold ``minutes`` of audio, each a loop of held-out clips."""
    base = folder / "clips.wav"
    build_file(data, [3, 5, 7, 20], 6, base)
    audio, rate = soundfile.read(base, dtype="float32")
    per_stream = int(minutes * 60 * rate / streams)
    looped = np.tile(audio, per_stream // audio.size + 1)[:per_stream]
    paths = []
    for index in range(streams):
        path = folder / f"call{index + 1:02d}.wav"
        soundfile.write(path, np.roll(looped, index * rate * 3), rate)  # each call at a different point
        paths.append(path)
    return paths


def sample(pid: int) -> dict[str, float] | None:
    """Memory, descriptors and threads of the monitor; None once it has exited.

    The monitor can exit between ``poll()`` and this read: its /proc entry is
    then gone, or a zombie's, which has no memory lines.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            fields = {line.split(":")[0]: line.split()[1] for line in status if line.startswith(("VmRSS", "VmHWM", "Threads"))}
        descriptors = len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return None
    if "VmRSS" not in fields:
        return None
    return {
        "rss_mb": round(int(fields["VmRSS"]) / 1024, 1),
        "peak_rss_mb": round(int(fields["VmHWM"]) / 1024, 1),
        "fds": descriptors,
        "threads": int(fields["Threads"]),
    }


async def reader(port: int, stream: str | None, subscribed: asyncio.Queue[None]) -> dict[str, int]:
    query = f"?stream={stream}" if stream else ""
    counts: dict[str, int] = {"utterance": 0, "dropped": 0, "messages": 0}
    async with connect(f"ws://127.0.0.1:{port}/{query}", max_queue=None) as ws:
        subscribed.put_nowait(None)
        async for text in ws:
            message = json.loads(text)
            counts["messages"] += 1
            if message["type"] == "utterance":
                counts["utterance"] += 1
                counts["stream:" + message["stream"]] = counts.get("stream:" + message["stream"], 0) + 1
            elif message["type"] == "dropped":
                counts["dropped"] += message["count"]
            elif message["type"] == "status":
                counts["monitor_subscriber_drops"] = message.get("subscriber_drops", 0)
                counts["monitor_failed_handshakes"] = message.get("failed_handshakes", 0)
    return counts


def monitor_closing(error: BaseException) -> bool:
    """Whether a churn cycle met the monitor's own shutdown: refused, 503 during the upgrade, or 1001 (going away)."""
    if isinstance(error, ConnectionRefusedError):
        return True
    if isinstance(error, InvalidStatus):
        return error.response.status_code == 503
    return isinstance(error, ConnectionClosed) and error.rcvd is not None and error.rcvd.code == 1001


async def listener_gone(port: int) -> bool:
    """Whether the monitor has stopped listening: connections it had not yet accepted are then reset by the kernel."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def churn(port: int, stop: asyncio.Event) -> dict[str, Any]:
    cycles = {"clean": 0, "reset": 0, "garbage": 0, "failed": 0}
    reasons: dict[str, int] = {}
    failed_at: list[float] = []  # monotonic times, to tell a shutdown race from a failure mid-soak
    kinds = list(cycles)[:3]
    closing = 0  # cycles met by the monitor's shutdown, not counted as failures

    def count_failure(kind: str, error: BaseException) -> None:
        cycles["failed"] += 1
        frames = traceback.extract_tb(error.__traceback__)  # which step of the cycle, and where it surfaced
        reason = f"{kind}: {type(error).__name__} at soak.py:{frames[0].lineno} in {frames[-1].name}"
        reasons[reason] = reasons.get(reason, 0) + 1
        failed_at.append(time.monotonic())

    while not stop.is_set():
        kind = kinds[sum(cycles.values()) % 3]
        try:
            if kind == "clean":
                async with connect(f"ws://127.0.0.1:{port}/") as ws:
                    await ws.recv()
            else:
                reader_, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(
                    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                )
                await writer.drain()
                await reader_.readuntil(b"\r\n\r\n")
                await reader_.read(64)  # part of the first message
                if kind == "garbage":
                    writer.write(b"\x81\xfe\xff\xff not a valid masked frame")
                    await writer.drain()
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, mid-message
                writer.close()
            cycles[kind] += 1
        except (ConnectionRefusedError, InvalidStatus, ConnectionClosed) as error:
            if not monitor_closing(error):
                count_failure(kind, error)
            else:  # it has finished its files: refused, 503, or closed with 1001 right after the upgrade
                closing += 1
            await asyncio.sleep(0.05)
        except Exception as error:  # noqa: BLE001 - count, never stop the soak
            if await listener_gone(port):  # reset in the accept queue as the monitor stopped listening
                closing += 1
            else:
                count_failure(kind, error)
            await asyncio.sleep(0.05)
    return {**cycles, "while_closing": closing, "failure_reasons": reasons, "failed_at": failed_at}


async def soak(port: int, pid: int, readers: int, stalled: int, streams: list[str], process: subprocess.Popen[bytes]) -> dict:
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            await asyncio.sleep(0.1)
    baseline = sample(pid)
    if baseline is None:
        raise SystemExit(f"the monitor (pid {pid}) exited before the soak began, status {process.wait()}")
    stalled_sockets = [stalled_client(port) for _ in range(stalled)]
    following = [streams[i % len(streams)] if i % 3 == 2 else None for i in range(readers)]  # every third follows one stream
    subscribed: asyncio.Queue[None] = asyncio.Queue()
    reader_tasks = [asyncio.create_task(reader(port, stream, subscribed)) for stream in following]
    for _ in following:  # churn only once every reader is in: the monitor starts its sources at --await-subscribers
        await subscribed.get()
    stop = asyncio.Event()
    churn_task = asyncio.create_task(churn(port, stop))
    samples, started = [], time.monotonic()
    while process.poll() is None:
        measured = sample(pid)
        if measured is not None:
            samples.append({"t": round(time.monotonic() - started, 1), **measured})
        await asyncio.sleep(0.5)
    exited = time.monotonic()
    stop.set()
    counts = await asyncio.gather(*reader_tasks)
    cycles = await churn_task
    # seconds before the monitor's exit was seen (polled every 0.5 s); negative: after it
    failed_at = cycles.pop("failed_at")
    cycles["failed_seconds_before_exit"] = [round(exited - at, 2) for at in failed_at]
    cycles["failed_seconds_after_start"] = [round(at - started, 2) for at in failed_at]
    for sock in stalled_sockets:
        sock.close()
    return {"baseline": baseline, "samples": samples, "readers": list(zip(following, counts)), "churn": cycles,
            "seconds": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ravdess16k"))
    parser.add_argument("--minutes", type=float, default=30.0, help="audio in all streams together")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--readers", type=int, default=18)
    parser.add_argument("--stalled", type=int, default=2)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/ser_stream_soak"))
    parser.add_argument("--json", type=output_file(".json"), default=None, help="also write the full report (with samples) here")
    args = parser.parse_args(argv)
    try:
        args.folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file of that name, or no permission
        parser.exit(2, f"{parser.prog}: error: --folder {shown(args.folder)}: cannot make the folder ({error.strerror})\n")
    try:
        paths = build_streams(args.data, args.minutes, args.streams, args.folder)
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    port = free_port()
    command = [sys.executable, "-m", "ser_stream", "monitor", "--no-dashboard", "--pace", "fast", "--ws", f"127.0.0.1:{port}",
               "--await-subscribers", str(args.readers + args.stalled), "--subscriber-queue", "256"]
    for path in paths:
        command += ["--source", f"file:{path}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    report = asyncio.run(soak(port, process.pid, args.readers, args.stalled, [p.name for p in paths], process))
    stderr = process.stderr.read().decode() if process.stderr else ""
    full = [counts["utterance"] for stream, counts in report["readers"] if stream is None]
    per_stream: dict[str, set[int]] = {}
    for stream, counts in report["readers"]:
        if stream is not None:
            per_stream.setdefault(stream, set()).add(counts["utterance"])
    rss = [s["rss_mb"] for s in report["samples"]]
    fds = [s["fds"] for s in report["samples"]]
    summary = {
        "audio_minutes": args.minutes,
        "streams": args.streams,
        "wall_seconds": report["seconds"],
        "exit_status": process.returncode,
        "utterances_per_full_reader": sorted(set(full)),
        "every_full_reader_got_the_same": len(set(full)) == 1,
        # each ?stream= follower got exactly the utterances the full readers got for its stream
        "stream_followers_agree": all(
            counts == {next(c for st, c in report["readers"] if st is None).get("stream:" + stream, 0)}
            for stream, counts in per_stream.items()
        ),
        "reader_drops": sum(c["dropped"] for _, c in report["readers"]),
        "monitor_counted_drops": max((c.get("monitor_subscriber_drops", 0) for _, c in report["readers"]), default=0),
        # the readiness probe's connect-and-close is one (as is listener_gone's probe after a failed cycle); any other
        # is a client the monitor dropped mid-handshake
        "monitor_failed_handshakes": max((c.get("monitor_failed_handshakes", 0) for _, c in report["readers"]), default=0),
        "churn_cycles": report["churn"],
        "rss_mb": {"start": report["baseline"]["rss_mb"], "median": float(np.median(rss)) if rss else 0, "max": max(rss, default=0),
                   "last": rss[-1] if rss else 0},
        "fds": {"start": report["baseline"]["fds"], "max": max(fds, default=0), "last": fds[-1] if fds else 0},
        "threads_max": max((s["threads"] for s in report["samples"]), default=0),
        "monitor_errors": [line for line in stderr.splitlines() if "error" in line.lower()],
    }
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, **report}, indent=1))
    print(json.dumps(summary, indent=2))
    return 0 if process.returncode == 0 and summary["every_full_reader_got_the_same"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
