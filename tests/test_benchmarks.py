"""Smoke run of the benchmark suite, so it cannot rot (its figures go to docs/, never into assertions here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.__main__ import BEGIN, END

pytestmark = pytest.mark.slow


def test_the_suite_runs_every_part_and_rewrites_only_its_own_section(shipped_model, ravdess, tmp_path):
    out = tmp_path / "benchmarks.md"
    out.write_text(f"# Benchmarks\n\nhand-written analysis above\n\n{BEGIN}\nold figures\n{END}\n\nand below\n")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--model", str(shipped_model), "--held-out-actors", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "hand-written analysis above" in text and "and below" in text and "old figures" not in text
    for row in ("features, ms per 2 s window", "inference fp32, ms per window, batch 32", "inference int8",
                "real-time factor", "concurrent real-time 8 kHz calls", "peak resident memory", "image path"):
        assert row in text, row
    figures = json.loads(out.with_suffix(".json").read_text())
    assert figures["components"]["onnx_batch1_ms_per_window"]["median"] > 0
    assert figures["int8"]["clips"] == 60 and figures["capacity"][0]["calls"] == 2
    assert figures["fast"]["clips"] == 1 and figures["realtime"]["utterances"] >= 1


def test_two_models_are_timed_side_by_side_with_ratios_to_the_first(shipped_model, tmp_path, capsys):
    from benchmarks.compare_models import main as compare_main

    copy = tmp_path / "copy.onnx"
    copy.write_bytes(shipped_model.read_bytes())
    copy.with_suffix(".json").write_bytes(shipped_model.with_suffix(".json").read_bytes())
    assert compare_main([str(shipped_model), str(copy), "--rounds", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["batch"] for line in lines] == [1, 32]
    for line in lines:
        assert set(line["ms_per_window_median"]) == {str(shipped_model), str(copy)}
        assert all(ms > 0 for ms in line["ms_per_window_median"].values())
        assert line["ratio_to_first"][str(shipped_model)] == 1.0


def test_comparing_needs_two_models(shipped_model, capsys):
    from benchmarks.compare_models import main as compare_main

    with pytest.raises(SystemExit) as stopped:
        compare_main([str(shipped_model)])
    assert stopped.value.code == 2 and "at least two models" in capsys.readouterr().err


@pytest.mark.parametrize("out, reason", [("figures.json", "not a .wav file to write"), ("/no/such/folder/calls.wav", "no folder")])
def test_the_calls_audio_path_is_checked_before_anything_is_timed(shipped_model, capsys, out, reason):
    from benchmarks.compare_models import main as compare_main

    with pytest.raises(SystemExit) as stopped:
        compare_main([str(shipped_model), str(shipped_model), "--calls", "2", "--out", out])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and reason in error and "Traceback" not in error


def test_a_ladder_where_no_load_was_sustained_is_reported_as_missed_not_left_out():
    from pathlib import Path

    from benchmarks.__main__ import render

    figures = json.loads((Path(__file__).parent.parent / "docs" / "benchmarks.json").read_text())
    figures["capacity"] = [{**load, "sustained": False} for load in figures["capacity"]]
    table = render(figures)
    assert "| concurrent real-time calls sustained | none of the loads tried | ≥ 50 | **missed** |" in table
    assert "end-to-end utterance latency at" not in table


def test_vad_coverage_counts_the_clips_the_voice_detector_would_pass_over(tmp_path, capsys):
    import numpy as np
    import soundfile

    from benchmarks.vad_coverage import main as coverage_main
    from ser_stream.cli import DEMO_RECORDING

    speech, rate = soundfile.read(DEMO_RECORDING, dtype="float32")
    folder = tmp_path / "Actor_01"
    folder.mkdir()
    soundfile.write(folder / "03-01-01-01-01-01-01.wav", speech[int(0.4 * rate) : int(6.3 * rate)], rate)  # the demo's first utterance
    roar = 0.3 * np.random.default_rng(0).standard_normal(3 * rate).astype(np.float32)  # loud, and no voice in it
    soundfile.write(folder / "03-01-05-02-01-01-01.wav", roar, rate)
    assert coverage_main(["--data", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "wideband: 1 of 2 clips have under 0.25 s of VAD speech (no utterance in the monitor)"
    assert lines[1] == "  by emotion/intensity: angry/strong 1" and lines[2] == "  by actor: 01: 1"
    assert lines[3].startswith("telephone: 1 of 2 clips")
