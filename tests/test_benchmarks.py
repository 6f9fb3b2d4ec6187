"""Smoke runs of the benchmark scripts, so they cannot rot (their figures go to docs/, never here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_component_benchmark_runs_and_reports_every_figure(shipped_model):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.components", "--model", str(shipped_model), "--repeats", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    for key in ("features_scipy_8k_ms", "features_paper_image_ms", "onnx_batch1_ms_per_window", "onnx_batch32_ms_per_window"):
        assert figures[key]["median"] > 0
    assert figures["ratio_paper_image_to_scipy"] > 0


def test_monitor_benchmark_runs_on_a_few_clips(shipped_model, ravdess, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.monitor_e2e", "--actors", "1", "--per-actor", "3", "--out", str(tmp_path / "b.wav")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert figures["clips"] == 3 and figures["utterances"] >= 1 and figures["real_time_factor"] > 1


def test_capacity_benchmark_runs_a_small_load(shipped_model, ravdess):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.capacity", "--calls", "2", "--seconds", "8"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    header, load = (json.loads(line) for line in result.stdout.splitlines())
    assert "CPU cores" in header["machine"]
    assert load["calls"] == 2 and load["utterances_matched"] >= 2  # each call's first clip ends within 8 s
    assert load["monitor_peak_rss_mb"] > 0 and isinstance(load["sustained"], bool)
