"""The benchmark script runs on the tiny default (CPU) and reports what it promises: a smoke test."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.model_helpers import ROOT, tiny_model_dir


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
        ("none", 0.0, False), ("none", 0.0, True), ("layer", 0.0, False), ("layer", 0.0, True)}
    assert all(r["clips_per_s"] > 0 for r in result["training"])
    assert "ours (best)" in done.stdout  # the table


@pytest.mark.slow
def test_bench_predict_tiny_reports_the_adapter_path_merged_and_unmerged(tmp_path, tmp_path_factory):
    """The predict stage's own path (base + a LoRA adapter with non-zero B), unmerged and merged, through the library's
    loop: in fp32 merging keeps the logits, the loop equals a plain one, and the bank runs end to end from a saved base."""
    out = tmp_path / "bench_predict.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_predict", "--model", "tiny", "--durations", "1", "--batch-sizes", "4",
         "--clips", "8", "--full-batch", "4", "--bank", "6", "--bank-batch", "4", "--no-compile",
         "--model-dir", str(tiny_model_dir(str(tmp_path_factory.getbasetemp()))), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["model"] == "tiny" and result["adapted_layers"] == 14  # 2 decoder layers x (4 attention + 3 MLP)
    eq = result["equivalence"]
    assert eq["max_abs_merged_vs_unmerged_batchN"] <= 1e-5
    assert eq["max_abs_library_vs_plain_loop_merged_batchN"] == 0.0
    assert eq["max_abs_library_vs_plain_loop_unmerged_batchN"] == 0.0
    (row,) = result["scoring"]
    for key in ("unmerged", "merged"):
        assert set(row[key]) == {"4"} and row[key]["4"] > 0
        assert row[f"{key}_x_full"] == round(row[f"{key}_best"] / row["full_window_merged"], 2)
    assert row["parts_merged"]["forward_only_clips_per_s"] > 0 and row["parts_merged"]["build_clips_per_s"] > 0
    assert result["bank"]["clips"] == 6 and result["bank"]["clips_per_s"]["merged"] > 0
    assert set(result["bank"]["end_to_end_eager_s"]) == {"load_base", "adapter_merge_prefix", "score", "total"}
    assert any(line.split()[:3] == ["clip", "unmerged", "merged"] for line in done.stdout.splitlines())  # the table


@pytest.mark.slow
def test_bench_predict_end_to_end_only_times_predicts_path_from_a_saved_base(tmp_path, tmp_path_factory):
    """``--end-to-end-only`` loads the saved base, adapts, merges and scores the bank, printing the load and the merge
    as they end, and nothing else; ``--question-first`` leaves fewer prompt tokens after the audio."""
    from speech_calibration import params as params_mod
    from speech_calibration.model import loading
    from speech_calibration.model.inputs import InputBuilder

    model_dir = tiny_model_dir(str(tmp_path_factory.getbasetemp()))
    out = tmp_path / "e2e.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_predict", "--model", "tiny", "--end-to-end-only", "--bank", "5",
         "--bank-batch", "2", "--no-compile", "--question-first", "--model-dir", str(model_dir), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert "scoring" not in result and "equivalence" not in result
    bank = result["bank"]
    assert bank["clips"] == 5 and bank["batch_size"] == 2 and "inductor_cache" not in bank  # eager: no cache to report
    seconds = bank["end_to_end_eager_s"]
    assert seconds["total"] >= seconds["load_base"] + seconds["score"] > 0
    assert [line.split(":")[1].split()[0] for line in done.stdout.splitlines() if line.startswith("end to end:")] == [
        "load_base", "adapter_merge_prefix"]
    default = InputBuilder(loading.load_processor(params_mod.Model(name_or_path=str(model_dir))), params_mod.Prompt())
    assert result["question_first"] and result["tokens_per_clip"]["after_audio"] < len(default.suffix_ids)


@pytest.mark.slow
def test_training_equivalence_compares_the_compiled_step_with_eager_beside_eagers_batching_difference():
    """``bench.training_equivalence`` (``--train-equivalence``) on the tiny model in fp32, two batches: on each, the
    compiled step gives eager's loss and adapter gradients, eager's two accumulated halves give its one pass, and
    every adapter has a gradient to compare; the model is left as it was. The compiling goes through a backend that
    counts dynamo's graphs and runs them as traced: our code under capture, without Inductor's minutes of C++ code
    generation."""
    import torch

    from benchmarks import bench
    from speech_calibration.model.inputs import InputBuilder
    from speech_calibration.params import Prompt

    graphs = []

    def counting(gm, example_inputs):  # a dynamo backend that records each captured graph and runs it as traced
        graphs.append(gm)
        return gm.forward

    cpu = torch.device("cpu")
    model, processor, _ = bench.build("tiny", cpu, torch.float32, "sdpa")
    result = bench.training_equivalence(model, InputBuilder(processor, Prompt()), cpu, torch.float32, 4, batches=2,
                                        backend=counting)
    assert graphs  # the compiled steps really ran captured graphs
    assert result["batch_size"] == 4 and len(result["runs"]) == 2
    for run in result["runs"]:
        assert run["grad_max_abs_eager"] > 1e-2 and run["loss"] > 0
        for key in ("compiled_vs_eager", "eager_two_halves_vs_one_pass"):
            assert run[key]["abs_loss"] <= 1e-5 and run[key]["grad_rel_l2"] <= 1e-5, (key, run[key])
    assert result["runs"][0]["loss"] != result["runs"][1]["loss"]  # two batches of other clips
    assert not any("lora" in name for name, _ in model.named_modules())  # left as it was: no adapter, eager, frozen
    assert all(layer._compiled_call_impl is None for layer in model.model.language_model.layers)
    assert not any(q.requires_grad for q in model.parameters()) and not model.training


@pytest.mark.slow
def test_feature_cache_memory_reports_both_ways_with_the_cache_size():
    """Each way in its own process, and the same cache size for both: 3 clips x 128 bins x 3000 frames x 4 bytes."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.feature_cache_memory", "--clips", "3", "--seconds", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout[:done.stdout.rindex("]") + 1])
    assert [r["way"] for r in rows] == ["whole", "chunked"]
    assert all(r["cache_mib"] == round(3 * 128 * 3000 * 4 / 2**20, 1) and r["peak_rss_growth_mib"] >= 0 for r in rows)
    bad = subprocess.run([sys.executable, "-m", "benchmarks.feature_cache_memory", "--seconds", "40"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--seconds in (0, 30]" in bad.stderr


@pytest.mark.slow
def test_train_determinism_tells_the_same_seed_from_another_on_the_cpu(tmp_path):
    """benchmarks.train_determinism on the tiny model (CPU): the train step from the same seed twice gives the same
    losses and adapter bit for bit, with and without our checkpointing and shared prefix, and another seed does not."""
    out = tmp_path / "determinism.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.train_determinism", "--model", "tiny", "--batch", "3",
                           "--steps", "2", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["strict"] and set(result["runs"]) == {
        "layer_checkpointing_shared_prefix", "plain"}
    for run in result["runs"].values():
        assert run["same_seed"]["adapter_bit_for_bit"] and run["same_seed"]["losses_equal"]
        assert run["same_seed"]["adapter_max_abs_diff"] == 0.0 and run["same_seed"]["adapter_tensors"] > 0
        assert not run["other_seed"]["adapter_bit_for_bit"] and run["other_seed"]["adapter_tensors_differing"] > 0
        assert run["nondeterminism_warnings"] == []



def test_group_paired_tests_simulation_shows_the_base_clip_unit_overstating_evidence():
    """On systems equal over new groups, clustering by base clip rejects far more often than by group, and its
    interval covers the truth less often; over 8 groups the expanded percentile interval covers it more often than the
    plain one: what README's figures (from this script) say, on a small run."""
    from benchmarks.group_paired_tests import simulate

    res = simulate(8, runs=150, n_boot=300)
    assert res["rejects at 0.05 (groups)"] < 0.08 < res["rejects at 0.05 (base clips)"]
    expanded = res["expanded percentile interval covers 0 (groups)"]
    assert res["expanded percentile interval covers 0 (base clips)"] < expanded
    assert res["percentile interval covers 0 (groups)"] < expanded


def test_ece_interval_simulation_shows_the_reflected_interval_covering_more_often():
    """On 24 overconfident clips (population ECE about 0.10) the percentile interval of ECE rarely covers the
    population value and the reflected (basic) one the report uses covers it far more often: what README's figures
    (from this script) say, on a small run."""
    import numpy as np

    from benchmarks.ece_intervals import population_errors, simulate

    rng = np.random.default_rng(0)
    truth = population_errors(0.5, rng, n=200_000)
    assert truth["ECE"] == pytest.approx(0.097, abs=0.005)
    res = simulate(0.5, 24, runs=60, n_boot=200, rng=rng, truth=truth)["ECE"]
    assert res["percentile"] < 0.3 < 0.6 < res["basic"]


def test_ece_interval_simulation_of_paired_differences_keeps_the_percentile_interval():
    """For calibrated minus uncalibrated ECE (both sides lean alike) the percentile interval, which delta_ci keeps,
    covers the population's difference more often than a reflected one on 24 clips: README's figures, on a small run."""
    import numpy as np

    from benchmarks.ece_intervals import population_errors, simulate_paired

    rng = np.random.default_rng(0)
    truth = population_errors(0.5, rng, n=200_000, temperature=1.5)["ECE"] - population_errors(0.5, rng, n=200_000)["ECE"]
    assert truth == pytest.approx(-0.060, abs=0.005)
    res = simulate_paired(0.5, 1.5, 24, runs=60, n_boot=200, rng=rng, truth=truth)
    assert res["basic"] < res["percentile"] and res["percentile"] > 0.8


def test_ece_interval_simulation_over_groups_shows_the_reflected_interval_covering_more_often():
    """Over 8 groups with their own shifts, the reflected group-level interval covers the ECE over new groups far
    more often than the expanded percentile one: README's figures, on a small run."""
    import numpy as np

    from benchmarks.ece_intervals import population_errors, simulate_groups

    rng = np.random.default_rng(0)
    truth = population_errors(2.0, rng, n=400_000, spread=1.0)["ECE"]
    res = simulate_groups(2.0, 8, 12, 1.0, runs=60, n_boot=300, rng=rng, truth=truth)
    assert res["with interval"] == 1.0 and res["percentile"] < 0.7 < 0.8 < res["basic"]
