"""Shared fixtures: generated audio, the RAVDESS folder when present, the shipped model."""

from __future__ import annotations

import importlib
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import soundfile

if TYPE_CHECKING:
    from ser_stream.record import UtteranceLog

REPO = Path(__file__).resolve().parent.parent
RAVDESS = REPO.parent / "shared" / "data" / "ravdess16k"
SHIPPED_MODEL = REPO / "models" / "ser_cnn.onnx"
DEMO = REPO / "ser_stream" / "demo" / "demo.flac"


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


def run_worker(model, audio: np.ndarray, rate: int, block: int | None = None, config=None, detector=None) -> list[dict]:
    """Every message a worker emits for one live stream fed ``audio`` ``block`` samples at a time (a second by
    default), a step after each, then ended."""
    import threading

    from ser_stream.pipeline import MonitorConfig, Stream, Worker

    messages: list[dict] = []
    config = config or MonitorConfig()
    worker = Worker(model, config, messages.append)
    stream = Stream("live", rate, config, detector=detector)
    worker.add_stream(stream)
    block = block or rate
    for start in range(0, audio.size, block):
        stream.ring.write(audio[start : start + block])
        worker.step()
    stream.finished = True
    worker.run(threading.Event(), until_all_ended=True)
    assert worker.crash is None
    return messages
