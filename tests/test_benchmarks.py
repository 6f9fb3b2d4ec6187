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
