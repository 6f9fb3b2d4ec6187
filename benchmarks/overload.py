"""Overload: a monitor given more real-time calls than its CPU can follow, does it say so honestly, and recover?

A sender process plays ``--calls`` real-time calls (G.711 μ-law RTP, 20 ms packets on an absolute schedule, one SSRC
each, the audio of ``benchmarks.capacity`` rotated per call) for ``--seconds``, then only the first
``--recover-calls`` of them for ``--recover-seconds`` more, into `ser-stream monitor --source rtp:...`. One
WebSocket subscriber records every message; /healthz is asked once a second (its status code and how long it took
to answer); the monitor's CPU and memory are read from /proc once a second, and the kernel's count of datagrams it
dropped at the RTP socket from /proc/net/udp.

An utterance's **true lateness** runs, on the sender's clock, from when the audio that closed it had been spoken to
the subscriber's receipt of it, less how late the sender itself sent the packet holding that audio (a late sender is
not the monitor's lateness). An utterance ending at a clip's end was closed by the VAD's ``--min-silence`` after the
clip's speech (capacity's measure); any other, cut by an overrun or split, counts from its own end, which had to
arrive before it was published: for those the figure is a lower bound, never an overstatement. It is set against the
utterance's own ``latency_ms``, and the status's ``behind_seconds`` against the true lateness of the utterances
received near it. An utterance whose closing silence was never sent (its call stopped) was closed by its stream's
end, ``--call-idle`` later, which ``latency_ms`` rightly leaves out: those are counted apart. The monitor is given
``--max-streams`` enough for every call. Utterances are put in the phase (overloaded, recovering) in which their closing audio was spoken; the timeline's
10 s buckets go by receipt, what an operator saw then. Also counted: the warnings published (behind live audio, live
audio being lost to overruns as it happens, caught up and what was lost meanwhile, each call's audio lost to overruns,
all against the status's ``overrun_samples``), /healthz answers that were
not 200, utterances that fall outside the speech sent, and utterances per call (fairness). Run:

    .venv/bin/python -m benchmarks.overload --calls 300 --seconds 90 --recover-calls 20 --recover-seconds 60 --out-json docs/overload-300.json
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.capacity import call_audio, call_packet, process_stats
from benchmarks.clients import MonitorExited, free_port, strict_json, subscriber_when_up
from benchmarks.monitor_e2e import MATCH_SECONDS, MIN_SILENCE, MonitorFailed
from ser_stream.cli import OneLineParser, output_file
from ser_stream.errors import SerStreamError
from ser_stream.g711 import G711_PACKET_SAMPLES, G711_SAMPLE_RATE
from ser_stream.inference import EmotionModel
from ser_stream.messages import BEHIND_CAUGHT_UP_SECONDS, latency_summary
from ser_stream.pipeline import MonitorConfig

PHASES = ("overloaded", "recovering")
CALL_ENDED = "closed_by_its_calls_end"  # not a phase: utterances whose closing silence came after their call stopped
PACKET_SECONDS = G711_PACKET_SAMPLES / G711_SAMPLE_RATE
SPEECH_TOLERANCE = 0.3  # an utterance starting and ending this close to a clip's speech lies inside it (as capacity matches)
GRACE_SECONDS = 90.0  # after the calls end, how long the subscriber waits for the monitor to end their streams and catch up
BUCKET_SECONDS = 10.0
SUBSCRIBER_QUEUE = 65536  # the recorder's queue at the monitor: at 300 calls 600 window messages a second come with the rest
BEHIND_SAID = re.compile(r"the monitor is ([\d.]+) s behind live audio")
CAUGHT_UP_SAID = re.compile(r"the monitor has caught up with live audio \((.*)\)")  # how far behind it was; what was lost
CAUGHT_UP_BEHIND = re.compile(r"it was up to ([\d.]+) s behind")
CAUGHT_UP_LOSS = re.compile(r"([\d.]+) s of audio from (\d+) streams? was lost to overruns meanwhile")
LIVE_LOSS_SAID = re.compile(r"the monitor is (?:still )?losing live audio to overruns: ([\d.]+) s of audio from (\d+) streams?")
OVERRUN_LOSS_SAID = re.compile(r"(\S+): ([\d.]+) s of its audio was lost to overruns, (once|\d+ times)")


def send_phases(codes: bytes, phases: Sequence[tuple[int, float]], port: int, start_at: float, lateness: Connection) -> None:
    """Sender process: every 20 ms one μ-law packet per call of the phase, on one absolute schedule from ``start_at``.

    A phase of fewer calls keeps the first of them, their audio and numbering going on. Packet k holds the audio of
    [20k, 20k + 20) ms and leaves at ``start_at`` + 20(k + 1) ms; how late each tick's packets left is sent back.
    """
    period = len(codes) // G711_PACKET_SAMPLES
    most_calls = max(calls for calls, _ in phases)
    offsets = [round(call * period / most_calls) for call in range(most_calls)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    target = ("127.0.0.1", port)
    late: list[float] = []
    errors = 0
    tick = 0
    for calls, seconds in phases:
        for _ in range(round(seconds / PACKET_SECONDS)):
            due = start_at + (tick + 1) * PACKET_SECONDS
            if (delay := due - time.monotonic()) > 0:
                time.sleep(delay)
            late.append(time.monotonic() - due)
            for call in range(calls):
                try:
                    sock.sendto(call_packet(codes, period, offsets[call], tick, call), target)
                except OSError:  # a full send buffer: the packet is lost, as on a network, and counted here
                    errors += 1
            tick += 1
    sock.close()
    lateness.send({"late_seconds": late, "send_errors": errors, "offsets": offsets})


def udp_drops(port: int) -> int | None:
    """Datagrams the kernel dropped at the UDP socket bound to ``port`` (its receive buffer was full), or None."""
    with open("/proc/net/udp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port:
                return int(fields[-1])
    return None


class Watcher:
    """Once a second: /healthz (its status code, or None for no answer, and how long it took) and the monitor's /proc."""

    def __init__(self, pid: int, ws_port: int, rtp_port: int) -> None:
        self.pid, self.ws_port, self.rtp_port = pid, ws_port, rtp_port
        self.health: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            asked = time.monotonic()
            try:
                self.samples.append({"at": asked, **process_stats(self.pid), "udp_drops": udp_drops(self.rtp_port)})
            except (OSError, KeyError, ValueError):
                pass  # the monitor has just exited
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ws_port}/healthz", timeout=10) as answer:
                    code: int | None = answer.status
                    body = json.loads(answer.read())
            except urllib.error.HTTPError as error:
                code, body = error.code, None
            except (OSError, ValueError):
                code, body = None, None
            self.health.append({"at": asked, "code": code, "answer_seconds": time.monotonic() - asked,
                                "behind_seconds": body.get("behind_seconds") if isinstance(body, dict) else None})
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - asked)))


async def record(port: int, monitor: subprocess.Popen[bytes], start_sender: Callable[[float], None], seconds: float) -> tuple[float, list[dict], int]:
    """Connect, start the calls, record every message but windows (counted, and returned) until the calls' streams have ended and
    the worker is behind no more, or ``GRACE_SECONDS`` after the calls end."""
    async with await subscriber_when_up(port, monitor=monitor, max_queue=None, max_size=None) as ws:
        start_at = time.monotonic() + 1.0
        start_sender(start_at)
        until = start_at + seconds + GRACE_SECONDS
        messages: list[dict] = []
        started: set[str] = set()
        ended: set[str] = set()
        windows = 0
        while time.monotonic() < until:
            try:
                text = await asyncio.wait_for(ws.recv(), max(0.01, until - time.monotonic()))
            except TimeoutError:
                break
            message = json.loads(text)
            if message["type"] == "window":
                windows += 1
                continue
            messages.append(dict(message, received=time.monotonic()))
            if message["type"] == "stream_started":
                started.add(message["stream"])
            elif message["type"] == "stream_ended":
                ended.add(message["stream"])
            elif (message["type"] == "status" and time.monotonic() > start_at + seconds and started and ended >= started
                  and message["behind_seconds"] == 0):
                break
        return start_at, messages, windows


def call_of(stream: str) -> int:
    """The call (from 0) an RTP stream id names: ``rtp-00000001`` is call 0, as the sender numbers SSRCs."""
    return int(stream.removeprefix("rtp-"), 16) - 1


def phase_of(spoken: float, phases: Sequence[tuple[int, float]]) -> str:
    """The phase in which audio spoken ``spoken`` seconds after the calls began was spoken; "after" past the last."""
    boundary = 0.0
    for name, (_, seconds) in zip(PHASES, phases):
        boundary += seconds
        if spoken < boundary:
            return name
    return "after"


def clip_ends_of(call: int, offsets: Sequence[int], clips: np.ndarray, period_packets: int, seconds: float) -> np.ndarray:
    """Where the clips' speech ends in one call's stream time, over ``seconds`` of it: the audio's ends, rotated by the
    call's offset and repeated."""
    period = period_packets * PACKET_SECONDS
    offset = offsets[call] * PACKET_SECONDS
    return np.concatenate([clips[:, 1] - offset + k * period for k in range(-1, int(seconds / period) + 2)])


def utterance_lateness(messages: list[dict], start_at: float, phases: Sequence[tuple[int, float]], sent: dict[str, Any],
                       clips: np.ndarray, period_packets: int) -> list[dict]:
    """Each utterance's true lateness beside its reported ``latency_ms`` (module docstring), its call and phase.

    ``start_at``: stream time 0 on the receiver's clock; ``sent``: the sender's report (``send_phases``). An utterance
    ending within ``MATCH_SECONDS`` of a clip's speech end was closed by the ``--min-silence`` after that end (as
    capacity counts); any other (cut by an overrun or at ``--max-utterance``, or split) counts from its own end,
    audio that had to arrive before it could be published: its lateness is then at least that.
    """
    late = sent["late_seconds"]
    seconds = sum(length for _, length in phases) + GRACE_SECONDS
    ends = {call: clip_ends_of(call, sent["offsets"], clips, period_packets, seconds) for call in range(len(sent["offsets"]))}
    rows = []
    for message in messages:
        if message["type"] != "utterance":
            continue
        call = call_of(message["stream"])
        every_end = ends.get(call, np.empty(0))
        nearest = float(every_end[np.argmin(np.abs(every_end - message["t_end"]))]) if every_end.size else np.inf
        at_clip_end = abs(nearest - message["t_end"]) <= MATCH_SECONDS
        closed = nearest + MIN_SILENCE if at_clip_end else message["t_end"]  # stream time of the audio that closed it
        # a call's audio stops when the last phase it plays in ends: an utterance whose closing silence was never sent
        # was closed by its stream's end (--call-idle later), which its latency_ms, from the last audio, leaves out
        played_until = sum(length for calls, length in phases if call < calls)
        tick = min(max(int(closed / PACKET_SECONDS), 0), len(late) - 1) if late else 0
        sent_late = max(late[tick], 0.0) if late else 0.0
        rows.append({
            "call": call,
            "phase": phase_of(closed, phases) if closed <= played_until else CALL_ENDED,
            "at_clip_end": at_clip_end,
            "spoken": closed,
            "received": message["received"] - start_at,
            "true_ms": (message["received"] - start_at - closed - sent_late) * 1000.0,
            "reported_ms": float(message["latency_ms"]),
            "t_start": message["t_start"],
            "t_end": message["t_end"],
        })
    return rows


def spread(values: Sequence[float], decimals: int = 1) -> dict[str, float]:
    """Median, p95 (as the status's: one of them) and max; NaN for none."""
    summary = latency_summary(list(values), decimals)
    return {**summary, "max": round(float(max(values)), decimals) if values else float("nan")}


def lateness_against_reported(rows: list[dict]) -> dict[str, Any]:
    """The true lateness and the reported ``latency_ms`` of ``rows``, and how much of the truth was reported."""
    true_ms = [row["true_ms"] for row in rows]
    reported_ms = [row["reported_ms"] for row in rows]
    truth, reported = spread(true_ms), spread(reported_ms)
    ratio = round(reported["median"] / truth["median"], 2) if rows and truth["median"] > 0 else float("nan")
    return {"utterances": len(rows), "true_ms": truth, "reported_ms": reported, "reported_over_true_median": ratio}


def warnings_said(messages: list[dict], start_at: float) -> dict[str, Any]:
    """The behind-live-audio and caught-up warnings (when received, the seconds they said), the warnings of live audio
    being lost to overruns (when received, what each said was lost since the one before) and the calls' end warnings
    of audio lost to overruns: how many calls, the seconds and overruns they state, beside the last status's total."""
    behind, caught_up, live_loss = [], [], []
    lost_seconds: dict[str, float] = {}
    lost_times = 0
    for message in messages:
        if message["type"] != "warning":
            continue
        at = round(message["received"] - start_at, 1)
        if said := BEHIND_SAID.search(message["message"]):
            behind.append({"at": at, "seconds": float(said.group(1))})
        if said := CAUGHT_UP_SAID.search(message["message"]):
            how_far, lost = CAUGHT_UP_BEHIND.search(said.group(1)), CAUGHT_UP_LOSS.search(said.group(1))
            caught_up.append({"at": at, "was_up_to_seconds": float(how_far.group(1)) if how_far else None,
                              "lost_seconds": float(lost.group(1)) if lost else 0.0, "lost_from_streams": int(lost.group(2)) if lost else 0})
        if said := LIVE_LOSS_SAID.search(message["message"]):
            live_loss.append({"at": at, "seconds": float(said.group(1)), "streams": int(said.group(2))})
        for stream, seconds, times in OVERRUN_LOSS_SAID.findall(message["message"]):
            lost_seconds[stream] = lost_seconds.get(stream, 0.0) + float(seconds)
            lost_times += 1 if times == "once" else int(times.split()[0])
    statuses = [message for message in messages if message["type"] == "status"]
    status_lost = statuses[-1]["overrun_samples"] / G711_SAMPLE_RATE if statuses else float("nan")
    return {
        "behind": behind,
        "caught_up": caught_up,
        "live_loss": live_loss,
        "live_loss_seconds_told": round(sum(said["seconds"] for said in live_loss), 2),
        "calls_told_of_overrun_loss": len(lost_seconds),
        "overrun_loss_seconds_told": round(sum(lost_seconds.values()), 2),
        "overruns_told": lost_times,
        "status_overrun_seconds": round(status_lost, 2),
        "status_overruns": statuses[-1]["overruns"] if statuses else None,
    }


def health_summary(health: list[dict]) -> dict[str, Any]:
    """/healthz: how many answers of each code (``none``: no answer), those not 200, and how long answers took."""
    codes: dict[str, int] = {}
    for poll in health:
        codes[str(poll["code"]).lower()] = codes.get(str(poll["code"]).lower(), 0) + 1
    return {"polls": len(health), "codes": codes, "not_200": sum(poll["code"] != 200 for poll in health),
            "answer_ms": spread([poll["answer_seconds"] * 1000.0 for poll in health])}


def recovery(messages: list[dict], start_at: float, phases: Sequence[tuple[int, float]]) -> dict[str, Any]:
    """Whether the worker caught up after the drop to fewer calls, and how long after the drop: the first status
    from which ``behind_seconds`` stayed under ``BEHIND_CAUGHT_UP_SECONDS`` to the end of the recovering phase."""
    drop = phases[0][1]
    end = drop + (phases[1][1] if len(phases) > 1 else 0.0)
    statuses = [(message["received"] - start_at, message["behind_seconds"]) for message in messages if message["type"] == "status"]
    during = [(at, behind) for at, behind in statuses if drop <= at < end]
    caught_up_at = None
    for index, (at, _) in enumerate(during):
        if all(behind < BEHIND_CAUGHT_UP_SECONDS for _, behind in during[index:]):
            caught_up_at = at
            break
    return {"caught_up": caught_up_at is not None,
            "seconds_after_the_drop": round(caught_up_at - drop, 1) if caught_up_at is not None else None,
            "behind_seconds_at_the_drop": max((behind for at, behind in statuses if drop - 2.0 <= at < drop), default=None)}


def timeline(rows: list[dict], messages: list[dict], health: list[dict], start_at: float) -> list[dict[str, Any]]:
    """By 10 s of receipt: utterances received, their true and reported lateness, the status's behind_seconds,
    queue_depth and overruns, and /healthz answers."""
    statuses = [dict(message, at=message["received"] - start_at) for message in messages if message["type"] == "status"]
    polls = [dict(poll, at=poll["at"] - start_at) for poll in health]
    last = max([row["received"] for row in rows] + [status["at"] for status in statuses] + [0.0])
    buckets = []
    for begin in np.arange(0.0, last + BUCKET_SECONDS, BUCKET_SECONDS):
        inside = [row for row in rows if begin <= row["received"] < begin + BUCKET_SECONDS]
        said = [status for status in statuses if begin <= status["at"] < begin + BUCKET_SECONDS]
        asked = [poll for poll in polls if begin <= poll["at"] < begin + BUCKET_SECONDS]
        if not inside and not said:
            continue
        true = spread([row["true_ms"] for row in inside], 0)
        reported = spread([row["reported_ms"] for row in inside], 0)
        buckets.append({
            "from_s": float(begin),
            "utterances": len(inside),
            "true_ms_median": true["median"],
            "true_ms_max": true["max"],
            "reported_ms_median": reported["median"],
            "reported_ms_max": reported["max"],
            "behind_seconds_max": max((status["behind_seconds"] for status in said), default=None),
            "queue_depth_max": max((status["queue_depth"] for status in said), default=None),
            "streams": said[-1]["streams"] if said else None,
            "overruns": said[-1]["overruns"] if said else None,
            "healthz_not_200": sum(poll["code"] != 200 for poll in asked),
            "healthz_ms_max": round(max((poll["answer_seconds"] for poll in asked), default=0.0) * 1000.0),
        })
    return buckets


def behind_against_truth(rows: list[dict], messages: list[dict], start_at: float, phases: Sequence[tuple[int, float]]) -> dict[str, Any]:
    """Per phase (by receipt): each status's ``behind_seconds`` beside the median true lateness of the utterances
    received within 5 s of it, as medians over the statuses that had any."""
    result: dict[str, Any] = {}
    for name in PHASES[: len(phases)]:
        pairs = []
        for message in messages:
            if message["type"] != "status" or phase_of(message["received"] - start_at, phases) != name:
                continue
            near = [row["true_ms"] for row in rows if abs(row["received"] - (message["received"] - start_at)) <= 5.0]
            if near:
                pairs.append((message["behind_seconds"], float(np.median(near)) / 1000.0))
        result[name] = {
            "statuses": len(pairs),
            "behind_seconds_median": round(float(np.median([b for b, _ in pairs])), 2) if pairs else float("nan"),
            "true_seconds_median": round(float(np.median([t for _, t in pairs])), 2) if pairs else float("nan"),
        }
    return result


def outside_speech(rows: list[dict], offsets: Sequence[int], clips: np.ndarray, period_packets: int) -> int:
    """Utterances that do not lie within the speech sent: their start and end, placed in the call audio by the call's
    rotation, not within ``SPEECH_TOLERANCE`` of one clip's speech."""
    period = period_packets * PACKET_SECONDS
    outside = 0
    for row in rows:
        start = (offsets[row["call"]] * PACKET_SECONDS + row["t_start"]) % period
        end = start + row["t_end"] - row["t_start"]
        outside += not any(start >= first - SPEECH_TOLERANCE and end <= last + SPEECH_TOLERANCE for first, last in clips)
    return outside


def fairness(rows: list[dict], calls: int, seconds: float, clips_per_call: float) -> dict[str, Any]:
    """Utterances per call of the overloaded phase (spoken in it): a worker behind should fall behind every call alike."""
    per_call = np.zeros(calls)
    for row in rows:
        if row["phase"] == PHASES[0] and row["call"] < calls:
            per_call[row["call"]] += 1
    return {"clips_each_call_played": round(clips_per_call * seconds, 1), "min": int(per_call.min()), "median": float(np.median(per_call)),
            "max": int(per_call.max()), "calls_without_one": int((per_call == 0).sum())}


def analyse(messages: list[dict], start_at: float, phases: Sequence[tuple[int, float]], sent: dict[str, Any], health: list[dict],
            samples: list[dict], clips: np.ndarray, period_packets: int) -> dict[str, Any]:
    """Every figure of a run (module docstring) from what was recorded."""
    late = sent["late_seconds"]
    rows = utterance_lateness(messages, start_at, phases, sent, clips, period_packets)
    statuses = [message for message in messages if message["type"] == "status"]
    by_phase: dict[str, Any] = {}
    boundary = 0.0
    for name, (calls, seconds) in zip(PHASES, phases):
        phase_rows = [row for row in rows if row["phase"] == name]
        phase_statuses = [s for s in statuses if boundary <= s["received"] - start_at < boundary + seconds]
        phase_samples = [s for s in samples if boundary <= s["at"] - start_at < boundary + seconds]
        by_phase[name] = {
            "calls": calls, "seconds": seconds, **lateness_against_reported(phase_rows),
            "behind_seconds_max": max((s["behind_seconds"] for s in phase_statuses), default=None),
            "queue_depth_max": max((s["queue_depth"] for s in phase_statuses), default=None),
            "monitor_cpu_cores": round((phase_samples[-1]["cpu_seconds"] - phase_samples[0]["cpu_seconds"])
                                       / (phase_samples[-1]["at"] - phase_samples[0]["at"]), 2) if len(phase_samples) > 1 else None,
        }
        boundary += seconds
    last = statuses[-1] if statuses else {}
    period = period_packets * PACKET_SECONDS
    dropped = [message for message in messages if message["type"] == "dropped"]
    return {
        "phases": by_phase,
        CALL_ENDED: lateness_against_reported([row for row in rows if row["phase"] == CALL_ENDED]),
        "recovery": recovery(messages, start_at, phases),
        "behind_against_true": behind_against_truth(rows, messages, start_at, phases),
        "warnings": warnings_said(messages, start_at),
        "healthz": health_summary(health),
        "losses": {name: last.get(name) for name in ("overruns", "overrun_samples", "rtp_lost_packets", "rtp_late_packets",
                                                       "rtp_refused_packets", "refused_streams", "subscriber_drops")},
        "kernel_udp_drops": samples[-1].get("udp_drops") if samples else None,
        "dropped_messages_announced": len(dropped),
        "utterances": len(rows),
        "utterances_at_a_clip_end": sum(row["at_clip_end"] for row in rows),
        "utterances_outside_the_speech_sent": outside_speech(rows, sent["offsets"], clips, period_packets),
        "fairness": fairness(rows, phases[0][0], phases[0][1], len(clips) / period),
        "streams_started": sum(message["type"] == "stream_started" for message in messages),
        "streams_ended": sum(message["type"] == "stream_ended" for message in messages),
        "monitor_peak_rss_mb": round(max((s["peak_rss_mb"] for s in samples), default=float("nan")), 1),
        "sender_late_ms": spread([seconds * 1000.0 for seconds in late]),
        "sender_ticks_over_20_ms_late": sum(seconds > PACKET_SECONDS for seconds in late),
        "sender_errors": sent["send_errors"],
        "timeline": timeline(rows, messages, health, start_at),
    }


def run(phases: list[tuple[int, float]], codes: bytes, clips: np.ndarray, model: Path | None, keep: Path | None = None) -> dict[str, Any]:
    """Start the monitor, play the phases, watch it, stop it; the figures. ``keep``: where every message recorded
    (but windows) and each /healthz answer go, one JSON line each, for a second look."""
    ws_port, rtp_port = free_port(), free_port(socket.SOCK_DGRAM)
    command = [sys.executable, "-m", "ser_stream", "monitor", "--source", f"rtp:127.0.0.1:{rtp_port}", "--no-dashboard",
               "--ws", f"127.0.0.1:{ws_port}", "--log-status", "10", "--subscriber-queue", str(SUBSCRIBER_QUEUE),
               "--max-streams", str(max(phases[0][0], MonitorConfig().max_streams))]  # every call a stream: 200 by default
    if model is not None:
        command += ["--model", str(model)]
    receive_lateness, send_lateness = multiprocessing.Pipe(duplex=False)
    senders: list[multiprocessing.Process] = []

    def start_sender(start_at: float) -> None:
        senders.append(multiprocessing.Process(target=send_phases, args=(codes, phases, rtp_port, start_at, send_lateness)))
        senders[0].start()

    with tempfile.TemporaryFile() as errors:  # its stderr (the --log-status lines, the warnings), for its reason should it fail
        monitor = subprocess.Popen(command, stderr=errors)
        watcher = Watcher(monitor.pid, ws_port, rtp_port)
        watcher.thread.start()
        try:
            start_at, messages, windows = asyncio.run(record(ws_port, monitor, start_sender, sum(seconds for _, seconds in phases)))
            sent = receive_lateness.recv()
            senders[0].join()
        except MonitorExited as exited:
            raise MonitorFailed.saying(str(exited), errors, monitor.wait()) from None
        finally:
            watcher.stop.set()
            watcher.thread.join()
            monitor.send_signal(signal.SIGTERM)
            monitor.wait(timeout=60)
    health = [poll for poll in watcher.health if poll["at"] >= start_at]
    if keep is not None:
        kept = [*messages, {"type": "windows_counted", "windows": windows}, *(dict(p, type="healthz") for p in health)]
        keep.write_text("".join(strict_json(dict(line, start_at=start_at)) + "\n" for line in kept))
    result = analyse(messages, start_at, phases, sent, health, watcher.samples, clips, len(codes) // G711_PACKET_SAMPLES)
    result["monitor_exit_status"] = monitor.returncode
    result["windows_received"] = windows
    return result


def summary_lines(figures: dict[str, Any]) -> list[str]:
    """The run in a few lines for a person."""
    lines = []
    for name, phase in figures["phases"].items():
        lines.append(f"{name} ({phase['calls']} calls, {phase['seconds']:g} s): {phase['utterances']} utterances; true lateness median "
                     f"{phase['true_ms']['median']:.0f} ms, p95 {phase['true_ms']['p95']:.0f}, max {phase['true_ms']['max']:.0f}; reported "
                     f"latency_ms median {phase['reported_ms']['median']:.0f}, p95 {phase['reported_ms']['p95']:.0f}, max "
                     f"{phase['reported_ms']['max']:.0f} (reported/true {phase['reported_over_true_median']}); behind_seconds max "
                     f"{phase['behind_seconds_max']}; monitor CPU {phase['monitor_cpu_cores']} cores")
    warned, recovered, health = figures["warnings"], figures["recovery"], figures["healthz"]
    lines.append(f"warnings: behind {[w['seconds'] for w in warned['behind']]} at {[w['at'] for w in warned['behind']]} s; losing "
                 f"live audio {[w['seconds'] for w in warned['live_loss']]} s at {[w['at'] for w in warned['live_loss']]} s; caught up "
                 f"{[w['was_up_to_seconds'] for w in warned['caught_up']]} at {[w['at'] for w in warned['caught_up']]} s, "
                 f"{[w['lost_seconds'] for w in warned['caught_up']]} s lost meanwhile; "
                 f"{warned['calls_told_of_overrun_loss']} calls told of {warned['overrun_loss_seconds_told']} s lost to overruns "
                 f"(status total {warned['status_overrun_seconds']} s)")
    lines.append(f"recovery: caught up {recovered['caught_up']}, {recovered['seconds_after_the_drop']} s after the drop; /healthz "
                 f"{health['codes']}, answer ms median {health['answer_ms']['median']}, max {health['answer_ms']['max']}; peak RSS "
                 f"{figures['monitor_peak_rss_mb']} MB; utterances outside the speech sent {figures['utterances_outside_the_speech_sent']}"
                 f" of {figures['utterances']}; kernel UDP drops {figures['kernel_udp_drops']}; refused streams "
                 f"{figures['losses']['refused_streams']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.overload", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ravdess16k"))
    parser.add_argument("--calls", type=int, default=300, help="calls while overloaded (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=90.0, help="how long they play (default %(default)s)")
    parser.add_argument("--recover-calls", type=int, default=20, help="of them, how many play on (default %(default)s)")
    parser.add_argument("--recover-seconds", type=float, default=60.0, help="how long they play on (default %(default)s)")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="6 calls for 6 s, then 2 for 4 s: the machinery end to end, no overload")
    parser.add_argument("--out-json", type=output_file(".json"), default=None, help="where the figures are written (strict JSON)")
    parser.add_argument("--keep-messages", type=output_file(".jsonl"), default=None, help="where every message recorded but windows goes, a line each")
    args = parser.parse_args(argv)
    phases = [(6, 6.0), (2, 4.0)] if args.quick else [(args.calls, args.seconds), (args.recover_calls, args.recover_seconds)]
    if not 0 < phases[1][0] <= phases[0][0] or min(seconds for _, seconds in phases) <= 0:
        parser.error(f"--recover-calls {phases[1][0]}: from 1 to --calls ({phases[0][0]}), and both phases need seconds")
    try:
        if args.model is not None:
            EmotionModel(args.model, provider="cpu")  # the monitor would fail on it unheard (its stderr is not shown)
        with tempfile.TemporaryDirectory(prefix="ser_stream_overload.") as folder:
            codes, clips = call_audio(args.data, Path(folder) / "calls.wav")
    except SerStreamError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    load_at_start = [round(load, 2) for load in os.getloadavg()]  # another job sharing the CPUs shows here
    try:
        figures = run(phases, codes, clips, args.model, args.keep_messages)
    except MonitorFailed as failure:
        parser.exit(2 if failure.status == 2 else 1, f"{parser.prog}: error: {failure}\n")
    figures = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "python": platform.python_version(),
               "load_average_at_start": load_at_start,
               "phases_played": [{"calls": calls, "seconds": seconds} for calls, seconds in phases], **figures}
    if args.out_json is not None:
        args.out_json.write_text(strict_json(figures, indent=1) + "\n")
    print("\n".join(summary_lines(figures)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
