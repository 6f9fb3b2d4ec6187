"""The benchmark and training tools: a missing or wrong input is one line naming it, exit status 2, before any work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ser_stream.model import file_sha256, metadata_path
from tests.conftest import refusal

# Each case: the tool (``python -m`` module), its arguments, and the input it must name. ``{missing}`` is a path
# under the test's folder that does not exist; ``{tmp}`` the folder itself; ``{model}`` the shipped model.
MISSING_MODEL = [
    ("benchmarks", ["--model", "{missing}.onnx", "--out", "{tmp}/bench.md"]),
    ("benchmarks.components", ["--model", "{missing}.onnx", "--repeats", "1"]),
    ("benchmarks.compare_models", ["{missing}.onnx", "{model}", "--rounds", "1", "--out", "{tmp}/cmp.wav"]),
    ("benchmarks.capacity", ["--model", "{missing}.onnx", "--calls", "1", "--seconds", "1", "--out", "{tmp}/calls.wav"]),
    ("benchmarks.monitor_e2e", ["--model", "{missing}.onnx", "--per-actor", "1", "--out", "{tmp}/clips.wav"]),
    ("training.ensemble", ["{missing}.onnx", "{model}", "--to", "{tmp}/ensemble.onnx"]),
    ("training.ship", ["{missing}.onnx", "--to", "{tmp}/shipped.onnx"]),
]
MISSING_DATA = [
    ("benchmarks", ["--model", "{model}", "--data", "{missing}", "--out", "{tmp}/bench.md"]),
    ("benchmarks.compare_models", ["{model}", "{model}", "--rounds", "1", "--calls", "1", "--data", "{missing}", "--out", "{tmp}/cmp.wav"]),
    ("benchmarks.capacity", ["--data", "{missing}", "--calls", "1", "--seconds", "1", "--out", "{tmp}/calls.wav"]),
    ("benchmarks.monitor_e2e", ["--data", "{missing}", "--per-actor", "1", "--out", "{tmp}/clips.wav"]),
    ("benchmarks.soak", ["--data", "{missing}", "--minutes", "0.1", "--folder", "{tmp}/soak"]),
    ("benchmarks.utterance_ends", ["--data", "{missing}", "--per-actor", "1"]),
    ("benchmarks.stream_onsets", ["--data", "{missing}", "--per-actor", "1"]),
]
MISSING_REPORT = [
    ("benchmarks", ["--render-only", "--out", "{missing}.md"]),  # the figures it renders are the .json beside --out
    ("training.calibrate", ["{missing}.json", "{missing}.json"]),
    ("training.pool", ["{missing}.json"]),
    ("training.ensemble", ["{model}", "{other}", "--to", "{tmp}/ensemble.onnx", "--evidence", "{missing}.json"]),
    ("training.ship", ["{model}", "--to", "{tmp}/shipped.onnx", "--evidence", "{missing}.json"]),
]


def filled(arguments: list[str], tmp_path: Path, model: Path, other: Path | None = None) -> list[str]:
    """The arguments with their placeholders filled; ``{other}``: a second network (an ensemble refuses one twice)."""
    return [argument.format(missing=tmp_path / "missing", tmp=tmp_path, model=model, other=other) for argument in arguments]


@pytest.fixture
def no_part_runs(monkeypatch):
    """The suite's parts are subprocesses; any of them starting means the suite did not refuse up front."""
    import benchmarks.__main__

    def part(arguments: list[str], timeout: float) -> list[dict]:
        raise AssertionError(f"a benchmark part ran: {arguments}")

    monkeypatch.setattr(benchmarks.__main__, "run_json", part)


@pytest.mark.parametrize("module, arguments", MISSING_MODEL, ids=[f"{m}-model" for m, _ in MISSING_MODEL])
def test_a_missing_model_is_one_line_naming_it(module, arguments, shipped_model, tmp_path, capsys, no_part_runs):
    line = refusal(module, filled(arguments, tmp_path, shipped_model), capsys)
    assert line == f"python -m {module}: error: {tmp_path / 'missing.onnx'}: model file not found"


@pytest.mark.parametrize("module, arguments", MISSING_DATA, ids=[f"{m}-data" for m, _ in MISSING_DATA])
def test_a_missing_data_folder_is_one_line_naming_it(module, arguments, shipped_model, tmp_path, capsys, no_part_runs):
    line = refusal(module, filled(arguments, tmp_path, shipped_model), capsys)
    assert line == f"python -m {module}: error: {tmp_path / 'missing'}: not a folder"
    assert not list(tmp_path.glob("*.wav")) and not list(tmp_path.glob("soak/*.wav"))


@pytest.mark.slow  # the ensemble's second network is the smoke run's
@pytest.mark.parametrize("module, arguments", MISSING_REPORT, ids=[f"{m}-report" for m, _ in MISSING_REPORT])
def test_a_missing_report_is_one_line_naming_it(module, arguments, shipped_model, smoke_run, tmp_path, capsys):
    line = refusal(module, filled(arguments, tmp_path, shipped_model, smoke_run / "model.onnx"), capsys)
    assert line.startswith(f"python -m {module}: error: {tmp_path / 'missing.json'}: no such file")
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.md"))


@pytest.mark.parametrize(
    "content, reason",
    [
        ("{not json", "not a training.score report with clean window outputs (not valid JSON)"),
        (json.dumps({"models": ["m.onnx"], "actors": [3], "clean": {}}), "not a training.score report with clean window outputs (no 'clean_clips' key)"),
        (json.dumps([1, 2]), "not a training.score report with clean window outputs (not a JSON object)"),
        (json.dumps({"clean_clips": [{"label": "furious", "window_probabilities": [[0.125] * 8]}]}), "not a training.score report with clean window outputs"),
        (json.dumps({"clean_clips": [{"label": "calm", "window_probabilities": [[0.5, 0.5]]}]}), "not a training.score report with clean window outputs"),
    ],
    ids=["not-json", "no-window-outputs", "not-an-object", "unknown-label", "wrong-width"],
)
@pytest.mark.parametrize("module", ["training.calibrate", "training.pool"])
def test_a_report_that_is_not_a_score_report_is_one_line_with_a_plain_reason(module, content, reason, tmp_path, capsys):
    report = tmp_path / "fold0.json"
    report.write_text(content)
    line = refusal(module, [str(report), str(report)], capsys)
    assert line.startswith(f"python -m {module}: error: {report}: {reason}")
    assert "Error(" not in line and "Traceback" not in line  # a reason, not an exception's repr


@pytest.mark.slow  # the ensemble's second network is the smoke run's
@pytest.mark.parametrize(
    "module, arguments, what, key",
    [
        ("training.ensemble", ["{model}", "{other}", "--to", "{tmp}/ensemble.onnx", "--evidence", "{tmp}/evidence.json"], "a training.score report", "models"),
        ("training.ship", ["{model}", "--to", "{tmp}/shipped.onnx", "--evidence", "{tmp}/evidence.json"], "a training run's metrics.json", "split"),
    ],
    ids=["ensemble", "ship"],
)
@pytest.mark.parametrize("content, reason", [("not json", "not valid JSON"), (json.dumps({"epochs": 3}), "no '{key}' key")], ids=["not-json", "wrong-keys"])
def test_evidence_that_is_not_what_the_tool_reads_is_one_line_with_a_plain_reason(module, arguments, what, key, content, reason, shipped_model, smoke_run, tmp_path, capsys):
    evidence = tmp_path / "evidence.json"
    evidence.write_text(content)
    line = refusal(module, filled(arguments, tmp_path, shipped_model, smoke_run / "model.onnx"), capsys)
    assert line == f"python -m {module}: error: {evidence}: not {what} ({reason.format(key=key)})"
    assert not list(tmp_path.glob("*.onnx"))


def test_an_ensemble_member_that_is_not_onnx_is_one_line_naming_it(shipped_model, tmp_path, capsys):
    impostor = tmp_path / "impostor.onnx"
    impostor.write_text("a text file with an .onnx name\n")
    metadata = json.loads(metadata_path(shipped_model).read_text())
    metadata_path(impostor).write_text(json.dumps(dict(metadata, sha256=file_sha256(impostor))))  # metadata that vouches for it
    line = refusal("training.ensemble", [str(shipped_model), str(impostor), "--to", str(tmp_path / "ensemble.onnx")], capsys)
    assert line.startswith(f"python -m training.ensemble: error: {impostor}: not a readable ONNX model")
    assert not list(tmp_path.glob("ensemble*"))


@pytest.mark.parametrize("module", ["training.ensemble", "training.ship"])
def test_a_to_that_is_not_an_onnx_file_name_is_refused_before_anything_is_written(module, shipped_model, tmp_path, capsys):
    to = tmp_path / "model.json"  # its metadata would be written over it
    members = [str(shipped_model)] * (2 if module == "training.ensemble" else 1)
    line = refusal(module, [*members, "--to", str(to)], capsys)
    assert line == f"python -m {module}: error: argument --to: {to}: not a .onnx file to write"
    assert not to.exists()


@pytest.mark.parametrize(
    "module, arguments, reason",
    [
        ("benchmarks", ["--model", "{model}", "--out", "{missing}/bench.md"], "argument --out: {missing}/bench.md: no folder {missing} to write it in"),
        ("benchmarks", ["--model", "{model}", "--out", "{tmp}/bench.json"], "argument --out: {tmp}/bench.json: not a .md file to write"),
        ("benchmarks.monitor_e2e", ["--out", "{tmp}/clips.flac"], "argument --out: {tmp}/clips.flac: not a .wav file to write"),
        ("benchmarks.capacity", ["--out", "{missing}/calls.wav"], "argument --out: {missing}/calls.wav: no folder {missing} to write it in"),
        ("benchmarks", ["--model", "{model}", "--keras", "{missing}.keras", "--out", "{tmp}/bench.md"], "--keras {missing}.keras: no such file"),
        ("benchmarks.components", ["--model", "{model}", "--keras", "{missing}.keras"], "--keras {missing}.keras: no such file"),
        ("benchmarks.soak", ["--json", "{missing}/soak.json", "--folder", "{tmp}/soak"], "argument --json: {missing}/soak.json: no folder {missing} to write it in"),
        ("benchmarks.soak", ["--json", "{tmp}", "--folder", "{tmp}/soak"], "argument --json: {tmp}: not a .json file to write"),
        ("benchmarks.soak", ["--folder", "{tmp}/file"], "--folder {tmp}/file: cannot make the folder (File exists)"),
        ("training.calibrate", ["{tmp}/a.json", "{tmp}/b.json", "--out", "{missing}/weights.json"], "argument --out: {missing}/weights.json: no folder {missing} to write it in"),
        ("training.pool", ["{tmp}/a.json", "--png", "{missing}/pooled.png"], "argument --png: {missing}/pooled.png: no folder {missing} to write it in"),
        ("training.pool", ["{tmp}/a.json", "--png", "{tmp}/pooled.svg"], "argument --png: {tmp}/pooled.svg: not a .png file to write"),
    ],
    ids=["suite-out", "suite-out-suffix", "e2e-out-suffix", "capacity-out", "suite-keras", "components-keras", "soak-json", "soak-json-folder",
         "soak-folder", "calibrate-out", "pool-png", "pool-png-suffix"],
)
def test_an_output_folder_or_side_file_that_is_not_there_is_one_line_before_any_work(module, arguments, reason, shipped_model, tmp_path, capsys, no_part_runs):
    (tmp_path / "file").write_text("a file where the soak wants its folder")
    line = refusal(module, filled(arguments, tmp_path, shipped_model), capsys)
    assert line == f"python -m {module}: error: " + reason.format(missing=tmp_path / "missing", tmp=tmp_path)


def test_the_suite_refuses_a_data_folder_without_the_actors_its_parts_play(shipped_model, tiny_ravdess, tmp_path, capsys, no_part_runs):
    line = refusal("benchmarks", ["--model", str(shipped_model), "--data", str(tiny_ravdess), "--held-out-actors", "1", "--out", str(tmp_path / "bench.md")], capsys)
    assert line == f"python -m benchmarks: error: {tiny_ravdess}: no clips of actor(s) 3, 5, 7, 20"  # the calls of the capacity part


def test_the_end_to_end_benchmark_refuses_actors_the_data_folder_lacks(tiny_ravdess, tmp_path, capsys):
    line = refusal("benchmarks.monitor_e2e", ["--data", str(tiny_ravdess), "--actors", "1", "9", "--per-actor", "1", "--out", str(tmp_path / "clips.wav")], capsys)
    assert line == f"python -m benchmarks.monitor_e2e: error: {tiny_ravdess}: no clips of actor(s) 9"
    assert not (tmp_path / "clips.wav").exists()


@pytest.mark.parametrize("level", ["0", "-3", "nan"])
def test_the_utterance_end_benchmark_refuses_a_hold_level_that_is_not_above_0_db(level, tiny_ravdess, capsys):
    line = refusal("benchmarks.utterance_ends", ["--data", str(tiny_ravdess), "--actors", "1", "--hold-db", level], capsys)
    assert line.startswith("python -m benchmarks.utterance_ends: error: argument --hold-db: ") and line.endswith(f"{level} is not a level above 0 dB (or inf)")


@pytest.mark.parametrize("module", ["benchmarks.utterance_ends", "benchmarks.vad_coverage"])
def test_the_vad_benchmarks_refuse_a_voice_floor_the_monitor_refuses(module, tiny_ravdess, capsys):
    line = refusal(module, ["--data", str(tiny_ravdess), "--actors", "1", "--voice-floor", "0.5"], capsys)
    assert line == (f"python -m {module}: error: Silero score below which WebRTC's voice detector is not asked (--voice-floor) "
                    "of 0.5 must be above 0 and at most Silero's silence threshold (0.35)")


@pytest.mark.parametrize("module", ["benchmarks.utterance_ends", "benchmarks.stream_onsets"])
def test_the_utterance_benchmarks_refuse_actors_the_data_folder_lacks(module, tiny_ravdess, capsys):
    line = refusal(module, ["--data", str(tiny_ravdess), "--actors", "1", "9", "--per-actor", "1"], capsys)
    assert line == f"python -m {module}: error: {tiny_ravdess}: no clips of actor(s) 9"


def test_rendering_figures_of_another_kind_is_one_line_naming_the_file(tmp_path, capsys):
    figures = tmp_path / "bench.json"
    figures.write_text(json.dumps({"date": "2025-01-01"}))
    line = refusal("benchmarks", ["--render-only", "--out", str(tmp_path / "bench.md")], capsys)
    assert line == f"python -m benchmarks: error: {figures}: not the figures of a benchmark run (no 'components' figure)"
    assert not (tmp_path / "bench.md").exists()


def test_the_suite_with_a_missing_model_prints_one_line_and_no_traceback_as_a_process(tmp_path):
    missing = tmp_path / "none.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--model", str(missing), "--out", str(tmp_path / "bench.md")],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"python -m benchmarks: error: {missing}: model file not found\n"


def test_the_calibration_report_reader_names_a_missing_file_with_the_projects_error(tmp_path):
    from ser_stream.errors import SerStreamError
    from training.calibrate import read_report

    with pytest.raises(SerStreamError, match=r"^.*fold3\.json: no such file$"):
        read_report(tmp_path / "fold3.json", "clean")


def test_shipping_the_shipped_model_elsewhere_still_works(shipped_model, tmp_path, capsys):
    """The up-front checks refuse only what is wrong: a real model with no evidence ships."""
    from training.ship import main as ship_main

    copy = tmp_path / "copy.onnx"
    shutil.copy(shipped_model, copy)
    shutil.copy(metadata_path(shipped_model), metadata_path(copy))
    assert ship_main([str(copy), "--to", str(tmp_path / "shipped.onnx")]) == 0
    assert (tmp_path / "shipped.onnx").read_bytes() == shipped_model.read_bytes()


@pytest.mark.parametrize("tool", ["training", "training.score", "training.ensemble", "training.quantize", "training.compare"])
def test_a_training_tool_without_the_train_extra_says_so_in_one_line(tool, tmp_path):
    """A runtime-only install (`pip install .`) has the training package but not TensorFlow or onnx."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['tensorflow'] = sys.modules['onnx'] = None  # as if not installed\n")
    result = subprocess.run([sys.executable, "-m", tool, "--help"], capture_output=True, text=True, env={"PYTHONPATH": str(tmp_path), "PATH": ""}, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "python -m training: error: the training tools need the train extra (tensorflow, onnx not installed): "
        "pip install -c requirements.lock '.[train]'\n"
    )


REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "arguments, status, stdout, stderr",
    [
        (["--help"], 0, "usage: ./dev.sh demo [monitor options] | test [pytest args]   (PYTHON=python3.11 to choose the interpreter)\n", ""),
        (["bogus"], 2, "", "dev.sh: unknown command 'bogus'; usage: ./dev.sh demo [monitor options] | test [pytest args]\n"),
        ([], 2, "", "dev.sh: usage: ./dev.sh demo [monitor options] | test [pytest args]\n"),  # was "unknown command ''"
    ],
)
def test_dev_sh_answers_help_and_unknown_commands_in_one_line(arguments, status, stdout, stderr):
    result = subprocess.run(["bash", str(REPO / "dev.sh"), *arguments], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (status, stdout, stderr)


def test_dev_sh_refuses_a_python_older_than_3_11_before_making_anything(tmp_path):
    """A .venv made by Python 3.10 once failed on every later run, with pip blaming scipy's pin."""
    old_python = tmp_path / "python3.10"
    old_python.write_text("#!/bin/sh\ncase \"$1\" in -V) echo 'Python 3.10.13';; *) exit 1;; esac\n")
    old_python.chmod(0o755)
    before = sorted(path.name for path in REPO.iterdir())
    result = subprocess.run(["bash", str(REPO / "dev.sh"), "demo"], capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHON": str(old_python)})
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"dev.sh: needs Python 3.11 or newer; {old_python} is Python 3.10.13 (set PYTHON=/path/to/python3.11)"
    assert sorted(path.name for path in REPO.iterdir()) == before
    missing = subprocess.run(["bash", str(REPO / "dev.sh"), "demo"], capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHON": str(tmp_path / "nowhere")})
    assert missing.returncode == 2  # the shell's own complaint once split the line in two
    assert missing.stderr == f"dev.sh: needs Python 3.11 or newer; {tmp_path / 'nowhere'} is not found (set PYTHON=/path/to/python3.11)\n"



@pytest.mark.parametrize("arguments, reason", [
    (["--rate", "0"], "argument --rate: 0.0 messages a second must be above 0"),  # was a ZeroDivisionError traceback
    (["--rate", "-5"], "argument --rate: -5.0 messages a second must be above 0"),  # published nothing, saying it had
    (["--seconds", "0"], "argument --seconds: 0.0 s must be above 0"),  # a ZeroDivisionError traceback
    (["--subscriber-queue", "-1"], "argument --subscriber-queue: -1 must be at least 1"),  # hung until killed
])
def test_the_unread_subscriber_benchmark_refuses_a_rate_time_or_queue_it_cannot_measure_in_one_line(arguments, reason, capsys):
    assert refusal("benchmarks.unread_subscriber", arguments, capsys) == f"python -m benchmarks.unread_subscriber: error: {reason}"
