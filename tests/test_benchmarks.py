"""The benchmark script runs on the tiny default (CPU) and reports what it promises: a smoke test."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.model_helpers import ROOT


@pytest.mark.slow
def test_bench_tiny_reports_scoring_training_and_equivalence(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--model", "tiny", "--durations", "1", "--batch-sizes", "4", "8",
         "--full-batch", "4", "--clips", "16", "--generate-clips", "2", "--train-batch", "4", "--train-steps", "1",
         "--train-dropout", "0", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["model"] == "tiny" and result["device"] == "cpu"
    # the trimmed window and the full window give the same logits (fp32)
    assert result["equivalence"]["max_abs_trim_vs_full_batchN"] < 1e-4
    (row,) = result["scoring"]
    assert set(row["ours"]) == {"4", "8"} and all(v > 0 for v in row["ours"].values())
    assert row["full_window"] > 0 and row["generate"] > 0
    # the ratio is of the stored (rounded) figures, itself rounded to 2 decimals
    assert row["speedup_vs_full"] == round(max(row["ours"].values()) / row["full_window"], 2)
    assert {(r["gradient_checkpointing"], r["lora_dropout"], r["shared_prefix"]) for r in result["training"]} == {
        (False, 0.0, False), (False, 0.0, True), (True, 0.0, False), (True, 0.0, True)}
    assert all(r["clips_per_s"] > 0 for r in result["training"])
    assert "ours (best)" in done.stdout  # the table
