"""Shared fixtures: generated audio, the RAVDESS folder when present, the shipped model; RTP packets, a monitor
process and utterance messages for the tests that need them."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import soundfile
from hypothesis import settings

from ser_stream import EMOTIONS

if TYPE_CHECKING:
    from ser_stream.record import UtteranceLog

REPO = Path(__file__).resolve().parent.parent
RAVDESS = REPO.parent / "shared" / "data" / "ravdess16k"
SHIPPED_MODEL = REPO / "models" / "ser_cnn.onnx"
DEMO = REPO / "ser_stream" / "demo" / "demo.flac"

# CI draws the same examples every run: a property a random draw finds broken fails a developer's run, which can look
# into it, not a CI run of an unrelated change (two key holds 16009 samples long once failed one in a few hundred).
# Loaded here, before the test modules' own @settings are made from it.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def taken_ipv6_loopback_port(kind: int) -> socket.socket:
    """A socket bound to a free port on ::1 (``kind``: SOCK_STREAM or SOCK_DGRAM), to find that port taken; a skip
    where this machine has no IPv6 loopback."""
    taken = socket.socket(socket.AF_INET6, kind)
    try:
        taken.bind(("::1", 0))
    except OSError as error:
        taken.close()
        pytest.skip(f"no IPv6 loopback here ({error.strerror})")
    return taken


def speechlike(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """A voiced, pitch-gliding harmonic signal with syllable-rate amplitude modulation."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 20) if k * 180 < sample_rate / 2)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    signal = voice * envelope + 0.01 * rng.standard_normal(t.size)
    return (0.3 * signal / np.max(np.abs(signal))).astype(np.float32)


def spoken(seconds: float, sample_rate: int, start: float = 1.4) -> np.ndarray:
    """``seconds`` of real speech from the bundled demo recording (1.4–6.7 s is one stretch of talk), at
    ``sample_rate``: a voice detector hears it as speech, where it hears no voice in ``speechlike``."""
    import scipy.signal

    audio, rate = soundfile.read(DEMO, dtype="float32")
    piece = audio[int(start * rate) : int((start + seconds) * rate)]
    return piece if sample_rate == rate else scipy.signal.resample_poly(piece, sample_rate, rate).astype(np.float32)


def undocumented_fields(messages: list[dict]) -> list[str]:
    """What in these messages differs from their definitions in ``ser_stream.messages``: a missing or unknown field.
    docs/protocol.md is not read here; test_messages.py checks that it names every field those definitions have."""
    from ser_stream.messages import field_problem

    return [problem for message in messages if (problem := field_problem(message)) is not None]


PACKET_SAMPLES = 160  # 20 ms at 8 kHz, what telephony sends


def rtp(sequence: int, timestamp: int, payload: bytes, payload_type: int = 0, ssrc: int = 0x1234ABCD,
        csrc: int = 0, extension_words: int | None = None, padding: int = 0) -> bytes:
    """One RTP packet (RFC 3550) as a sender puts it on the wire: ``csrc`` contributing sources, a header extension
    of ``extension_words`` and ``padding`` bytes when given."""
    first = 0x80 | csrc | (0x10 if extension_words is not None else 0) | (0x20 if padding else 0)
    header = struct.pack("!BBHII", first, payload_type, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
    header += b"\x00\x00\x00\x01" * csrc
    if extension_words is not None:
        header += struct.pack("!HH", 0xBEDE, extension_words) + b"\xAA" * (4 * extension_words)
    tail = (b"\x00" * (padding - 1) + bytes([padding])) if padding else b""
    return header + payload + tail


def monitor(port: int, *arguments: str) -> subprocess.Popen[str]:
    """``ser-stream monitor`` in a process of its own, publishing on ``port``, its stderr kept for the test to read."""
    return subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--no-dashboard", "--ws", f"127.0.0.1:{port}", *arguments],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def stand_in_sounddevice(source: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module named sounddevice with ``source`` as its code, imported in place of the real one from now on (its
    import is how PortAudio starts: ``source`` plays a PortAudio that fails or aborts there)."""
    (folder / "sounddevice.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)


def utterance(stream: str, number: int = 1, t_start: float = 0.5, t_end: float = 2.5, windows: int = 5) -> dict:
    """An utterance message as the monitor publishes it (before ``seq``): utterance ``number`` of ``stream``, sad."""
    probabilities = dict.fromkeys(EMOTIONS, 0.05) | {"sad": 0.65}
    return {"type": "utterance", "stream": stream, "stream_started_at": "2026-12-01T04:40:12.512Z", "id": number, "t_start": t_start,
            "t_end": t_end, "label": "sad", "confidence": 0.65, "probabilities": probabilities, "windows": windows, "latency_ms": 3.0}


@pytest.fixture
def open_log() -> Iterator[Callable[[Path], UtteranceLog]]:
    """Opens a --record database (``open_log(path)``); each one is closed when the test ends, however it ends: one
    left open held the database and its -wal and -shm for the rest of the session."""
    from ser_stream.record import UtteranceLog

    logs: list[UtteranceLog] = []

    def opened(path: Path) -> UtteranceLog:
        logs.append(UtteranceLog(path))
        return logs[-1]

    yield opened
    for log in logs:
        log.close()


@pytest.fixture
def ravdess() -> Path:
    if not RAVDESS.is_dir():
        pytest.skip(f"RAVDESS not found at {RAVDESS}")
    return RAVDESS


@pytest.fixture
def shipped_model() -> Path:
    if not SHIPPED_MODEL.is_file():
        pytest.skip("no shipped model in models/")
    return SHIPPED_MODEL


@pytest.fixture(scope="session")
def shipped_member0(tmp_path_factory) -> Path:
    """The shipped model's first network, unpacked once for the session (each test unpacked the pair again)."""
    from training.ensemble import main as ensemble_main

    if not SHIPPED_MODEL.is_file():
        pytest.skip("no shipped model in models/")
    folder = tmp_path_factory.mktemp("shipped-members")
    assert ensemble_main([str(SHIPPED_MODEL), "--unpack", str(folder)]) == 0
    return folder / "member0.onnx"


@pytest.fixture
def members(smoke_run, shipped_member0, tmp_path) -> list[Path]:
    """Two networks of one window for the training tools, the first a copy the test may try to overwrite."""
    from tests.test_training_tools import held_out_copy, held_out_network

    return [held_out_copy(smoke_run / "model.onnx", tmp_path / "member.onnx"), held_out_network(shipped_member0, tmp_path)]


@pytest.fixture(scope="session")
def tiny_ravdess(tmp_path_factory) -> Path:
    """A RAVDESS-layout folder of generated 3 s clips: 8 emotions × 2 actors × 2 statements, WAV and FLAC."""
    import soundfile

    root = tmp_path_factory.mktemp("ravdess")
    for actor in (1, 2):
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir()
        for emotion in range(1, 9):
            for statement in (1, 2):
                audio = np.concatenate([np.zeros(4000, np.float32), speechlike(2.0, 16000, seed=emotion * 10 + statement), np.zeros(4000, np.float32)])
                # emotions differ in pitch so a model can learn something in one epoch
                audio = np.interp(np.arange(0, audio.size, 1 + emotion / 16), np.arange(audio.size), audio).astype(np.float32)
                suffix = "wav" if statement == 1 else "flac"
                soundfile.write(folder / f"03-01-{emotion:02d}-01-{statement:02d}-01-{actor:02d}.{suffix}", audio, 16000)
    return root


@pytest.fixture(scope="session")
def smoke_run(tiny_ravdess, tmp_path_factory) -> Path:
    """One quick training run (paper recipe, random split) through to model.onnx; returns its split folder."""
    from training.__main__ import main

    out = tmp_path_factory.mktemp("run")
    cache = tmp_path_factory.mktemp("cache")
    assert main(["--data", str(tiny_ravdess), "--out", str(out), "--recipe", "paper", "--protocol", "random", "--epochs", "2", "--batch-size", "8", "--cache-dir", str(cache)]) == 0
    return out / "random"


MONITOR_CLIPS = ["Actor_03/03-01-05-02-01-01-03.flac", "Actor_05/03-01-04-01-02-02-05.flac", "Actor_07/03-01-03-02-01-01-07.flac", "Actor_20/03-01-08-01-02-01-20.flac"]


@pytest.fixture(scope="session")
def clips_with_silence(tmp_path_factory, request) -> tuple[Path, list[tuple[float, float]]]:
    """Four trimmed RAVDESS clips separated by 1.5 s of silence, and where each one's speech lies: the file the
    end-to-end benchmarks build (``benchmarks.clip_file``), of these clips."""
    from benchmarks.clip_file import write_clips_with_silence

    if not RAVDESS.is_dir():
        pytest.skip(f"RAVDESS not found at {RAVDESS}")
    path = tmp_path_factory.mktemp("audio") / "four_clips.wav"
    return path, write_clips_with_silence([RAVDESS / name for name in MONITOR_CLIPS], path)


def refusal(module: str, arguments: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the tool's ``main`` in this process; assert it stopped with status 2 and one line of stderr; return the line."""
    main = importlib.import_module("benchmarks.__main__" if module == "benchmarks" else module).main
    with pytest.raises(SystemExit) as stopped:
        main(arguments)
    captured = capsys.readouterr()
    assert stopped.value.code == 2, captured.err
    assert captured.err.count("\n") == 1 and captured.err.endswith("\n"), captured.err
    assert captured.err.startswith(f"python -m {module}: error: "), captured.err
    return captured.err.rstrip("\n")


def run_worker(model, audio: np.ndarray, rate: int, block: int | Sequence[int] | None = None, config=None, detector=None) -> list[dict]:
    """Every message a worker emits for one live stream fed ``audio`` ``block`` samples at a time (a second by
    default; a sequence of sizes: blocks of each in turn, over and over), a step after each, then ended."""
    import itertools
    import threading

    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    messages: list[dict] = []
    config = config or MonitorConfig()
    worker = Worker(model, config, messages.append)
    stream = Stream("live", rate, config, detector=detector)
    worker.add_stream(stream)
    block_sizes = itertools.cycle([block or rate] if block is None or isinstance(block, int) else block)
    start = 0
    while start < audio.size:
        size = next(block_sizes)
        stream.ring.write(audio[start : start + size])
        start += size
        worker.step()
    stream.finished = True
    worker.run(threading.Event(), until_all_ended=True)
    assert worker.crash is None
    return messages


@contextlib.contextmanager
def call_monitor(model: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """A monitor taking RTP calls on a free port (none come), stopped with SIGTERM at the end; it must exit 0."""
    from benchmarks.clients import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_stream", "monitor", "--model", str(model), "--source", "rtp:127.0.0.1:0", "--no-dashboard",
         "--ws", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        yield port, process
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors
