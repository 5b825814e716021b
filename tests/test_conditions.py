"""The conditions report end to end on simulated scores: tables, thresholds, censoring, paired tests, plots, errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from speech_calibration import layout
from speech_calibration.calibration.calibrators import PlattScaling, TemperatureScaling
from speech_calibration.cli import run
from speech_calibration.data.variants import variant_id
from speech_calibration.report import conditions
from stages import conditions as conditions_stage

ROOT = Path(__file__).resolve().parents[1]
DURATIONS = [20, 40, 60, 80, 100, 200, 500, 1000]
SNRS = [-10, -5, 0, 5, 10, 20]
T60S = ["0.3", "1", "2.5"]
BANDS = ["telephone", "lowpass", "highpass"]


def variants_frame(n_clips: int = 12) -> pd.DataFrame:
    rows = []
    for i in range(n_clips):
        base, label, group = f"c{i:02d}", ("SPEECH" if i % 2 == 0 else "NONSPEECH"), f"g{i % 3}"
        levels = [("clean", "clean")] + [("duration", str(d)) for d in DURATIONS] + [("snr", str(s)) for s in SNRS]
        levels += [("reverb", t) for t in T60S] + [("band", b) for b in BANDS]
        for condition, level in levels:
            cid = variant_id(base, condition, level)
            rows.append({"clip_id": cid, "audio_path": f"audio/{cid}.wav", "label": label, "group_id": group,
                         "base_clip_id": base, "condition": condition, "level": level})
    return pd.DataFrame(rows)


def logit_difference(meta: pd.DataFrame, kind: str, seed: int = 0) -> np.ndarray:
    """Simulated logit_A - logit_B: the fine-tuned system has DT50 ~ 100 ms and SNR50 ~ 0 dB; zero-shot says B always."""
    rng = np.random.default_rng(seed)
    speech = (meta["label"] == "SPEECH").to_numpy()
    offset = rng.uniform(-0.4, 0.4, len(meta))
    z = np.where(speech, 2.0, -2.0) + offset
    dur = (meta["condition"] == "duration").to_numpy()
    snr = (meta["condition"] == "snr").to_numpy()
    lv = pd.to_numeric(meta["level"], errors="coerce").to_numpy()
    z[dur & speech] = 4.0 * (np.log10(lv[dur & speech]) - 2.0) + offset[dur & speech]
    z[snr & speech] = 0.4 * lv[snr & speech] + offset[snr & speech]
    if kind == "zeroshot":
        z = -3.0 + offset
    return z


def write_predictions(path: Path, meta: pd.DataFrame, z: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"clip_id": meta["clip_id"], "group_id": meta["group_id"], "label": meta["label"],
                          "ground_truth_token": np.where(meta["label"] == "SPEECH", "A", "B"),
                          "logit_A": z / 2, "logit_B": -z / 2, "p_speech": 1 / (1 + np.exp(-z)),
                          "predicted_token": np.where(z >= 0, "A", "B"), "logsumexp_vocab": 5.0,
                          "condition": meta["condition"], "level": meta["level"]})
    frame.sample(frac=1.0, random_state=0).to_csv(path, index=False)  # order must not matter


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A working folder with the variants' metadata, three seeds, zero-shot and one baseline."""
    meta = variants_frame()
    folder = tmp_path / "data/processed/conditions"
    folder.mkdir(parents=True)
    meta.to_csv(folder / "conditions_metadata.csv", index=False)
    for seed in (42, 123, 456):
        write_predictions(tmp_path / f"predictions/conditions/seed_{seed}/conditions.csv", meta,
                          logit_difference(meta, "finetuned", seed))
        TemperatureScaling({"temperature": 2.0}).save(tmp_path / layout.seed_files(seed).calibrator)
    write_predictions(tmp_path / "predictions/conditions/zeroshot/conditions.csv", meta, logit_difference(meta, "zeroshot"))
    PlattScaling({"slope": 1.0, "bias": 3.5}).save(tmp_path / "models/calibrators/references/zeroshot.json")
    write_predictions(tmp_path / "predictions/baselines_conditions/silero/conditions.csv", meta,
                      np.where(meta["label"] == "SPEECH", 1.0, -1.0) * np.where(meta["condition"] == "snr", -1.0, 1.0))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_report_end_to_end(project):
    conditions_stage.main(["--params", str(ROOT / "params.yaml")])
    head = json.loads(Path("metrics/conditions.json").read_text())
    assert set(head) == {"seed_42", "seed_123", "seed_456", "zeroshot", "silero", "finetuned"}

    # thresholds: the fine-tuned system was simulated with DT50 = 100 ms and SNR50 = 0 dB
    for seed in (42, 123, 456):
        entry = head[f"seed_{seed}"]
        assert 60 < entry["DT50_ms"] < 160, entry
        assert -3 < entry["SNR50_dB"] < 3, entry
        assert entry["DT50_ms"] < entry["DT75_ms"] < entry["DT90_ms"]
    assert head["finetuned"]["n_seeds"] == 3
    assert head["finetuned"]["DT50_ms"] == pytest.approx(np.mean([head[f"seed_{s}"]["DT50_ms"] for s in (42, 123, 456)]))
    # zero-shot never answers SPEECH: censored above the range, no number
    assert head["zeroshot"]["DT50_ms"] is None and head["zeroshot"]["DT50_text"].startswith("> 1000 ms")
    assert head["zeroshot"]["SNR50_text"].startswith("> 20.0 dB")
    thresholds = pd.read_csv("metrics/conditions/thresholds.csv")
    zs = thresholds[(thresholds["system"] == "zeroshot") & (thresholds["threshold"] == "DT50")].iloc[0]
    assert zs["censored"] == "above" and np.isnan(zs["value"])

    # per-condition table: BA_clip and BA_conditions recomputed by hand from it
    table = pd.read_csv("metrics/conditions/per_condition.csv", dtype={"level": str})
    t = table[(table["system"] == "seed_42") & (table["calibration"] == "uncalibrated")]
    assert head["seed_42"]["BA_clip"] == pytest.approx(t.loc[t["condition"] == "all", "balanced_accuracy"].iloc[0])
    dims = [t.loc[t["condition"] == d, "balanced_accuracy"].mean() for d in ("duration", "snr", "reverb", "band")]
    assert head["seed_42"]["BA_conditions"] == pytest.approx(np.mean(dims))
    assert len(t) == 1 + 8 + 6 + 3 + 3 + 1
    assert {"accuracy", "balanced_accuracy", "recall_speech", "recall_nonspeech", "ece", "nll"} <= set(table.columns)
    # temperature scaling keeps the answers (same BA) and changes the probabilities (other NLL)
    cal = table[(table["system"] == "seed_42") & (table["calibration"] == "calibrated")]
    assert np.allclose(cal["balanced_accuracy"].to_numpy(), t["balanced_accuracy"].to_numpy(), equal_nan=True)
    assert not np.allclose(cal["nll"].to_numpy(), t["nll"].to_numpy())
    # the baseline has no calibrator: uncalibrated rows only
    assert set(table.loc[table["system"] == "silero", "calibration"]) == {"uncalibrated"}
    # the zero-shot Platt bias of +3.5 flips its answers to SPEECH: calibration under shift is visible
    zs_all = table[(table["system"] == "zeroshot") & (table["condition"] == "all")].set_index("calibration")
    assert zs_all.loc["uncalibrated", "recall_speech"] == 0 and zs_all.loc["calibrated", "recall_speech"] > 0.5

    # paired tests: 5 systems -> 10 pairs, over all variants and 4 dimensions, Holm across all 50
    pairs = pd.read_csv("metrics/conditions/paired_tests.csv")
    assert len(pairs) == 10 * 5
    assert (pairs["p_holm"] >= pairs["p_mcnemar"] - 1e-15).all() and (pairs["p_holm"] <= 1).all()
    row = pairs[(pairs["system_1"] == "seed_42") & (pairs["system_2"] == "zeroshot") & (pairs["scope"] == "all")].iloc[0]
    assert row["diff_lo"] <= row["accuracy_difference"] <= row["diff_hi"]
    assert row["accuracy_difference"] == pytest.approx(row["accuracy_1"] - row["accuracy_2"])

    # plots: one series per system (the seeds averaged into 'finetuned'), PNGs
    psy = pd.read_csv("plots/conditions/psychometric_duration.csv")
    assert set(psy["system"]) == {"finetuned", "zeroshot", "silero"} and (psy["n_members"][psy["system"] == "finetuned"] == 3).all()
    assert set(pd.read_csv("plots/conditions/per_condition.csv")["system"]) == {"finetuned", "zeroshot", "silero"}
    for name in ("psychometric_duration.png", "psychometric_snr.png", "per_condition.png"):
        assert Path("plots/conditions", name).stat().st_size > 1000


def test_ba_summary_by_hand():
    table = pd.DataFrame({
        "condition": ["clean", "duration", "duration", "snr", "reverb", "band", "band", "all"],
        "level": ["clean", "20", "40", "0", "1", "telephone", "lowpass", "all"],
        "balanced_accuracy": [0.9, 0.5, 0.7, 0.8, 0.6, 1.0, 0.8, 0.77]})
    out = conditions.ba_summary(table)
    assert out["BA_clip"] == 0.77
    assert out["BA_conditions"] == pytest.approx((0.6 + 0.8 + 0.6 + 0.9) / 4)


def run_cli(capsys) -> tuple[int, str]:
    """The stage's command line in this process (``python -m stages.conditions`` runs the same ``run(main)``):
    (exit status, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        run(conditions_stage.main, ["--params", str(ROOT / "params.yaml")])
    return exit_info.value.code, capsys.readouterr().err


def test_stale_predictions_are_one_line_exit_2(project, capsys):
    path = project / "predictions/conditions/seed_123/conditions.csv"
    frame = pd.read_csv(path)
    frame.iloc[1:].to_csv(path, index=False)
    code, err = run_cli(capsys)
    assert code == 2, err
    assert err.startswith("error: ") and err.strip().count("\n") == 0
    assert "seed_123/conditions.csv" in err and "predict_conditions" in err


def test_missing_calibrator_is_one_line_exit_2(project, capsys):
    (project / "models/calibrators/seed_456.json").unlink()
    code, err = run_cli(capsys)
    assert code == 2 and "models/calibrators/seed_456.json" in err and "calibrate" in err
    assert err.strip().count("\n") == 0


def test_metadata_without_condition_column_is_rejected(project, capsys):
    path = project / "data/processed/conditions/conditions_metadata.csv"
    pd.read_csv(path).drop(columns=["condition"]).to_csv(path, index=False)
    code, err = run_cli(capsys)
    assert code == 2 and "condition" in err and "conditions_render" in err
    assert err.strip().count("\n") == 0


def test_unknown_condition_is_rejected(project, capsys):
    path = project / "data/processed/conditions/conditions_metadata.csv"
    frame = pd.read_csv(path)
    frame.loc[3, "condition"] = "underwater"
    frame.to_csv(path, index=False)
    code, err = run_cli(capsys)
    assert code == 2 and "row 4" in err and "underwater" in err


def test_full_size_report_covers_every_system(tmp_path, monkeypatch):
    """The default size: 24 base clips x 21 variants x 6 systems, 1000 bootstrap resamples (its time is part
    of the pipeline's that ``python -m benchmarks.cpu_pipeline`` measures)."""
    meta = variants_frame(24)
    meta["level"] = meta["level"].astype(str)
    from speech_calibration import params as params_mod

    cfg = params_mod.Conditions(t60_s=[0.3, 1.0, 2.5])
    scored = []
    for i, name in enumerate(["seed_1", "seed_2", "seed_3", "zeroshot", "silero", "webrtc"]):
        z = logit_difference(meta, "finetuned", i)
        p = 1 / (1 + np.exp(-z))
        system = conditions.System(name, "finetuned" if name.startswith("seed") else "baseline", i, Path("x"), None)
        scored.append(conditions.Scored(system, p, 1 / (1 + np.exp(-z / 2)), 0.5))
    monkeypatch.chdir(tmp_path)
    conditions.report(meta, scored, cfg, 15, 0.95)
    head = json.loads((tmp_path / layout.CONDITIONS_JSON).read_text())
    # every system was simulated as the fine-tuned one (DT50 100 ms, SNR50 0 dB): each recovers it
    assert set(head) == {"seed_1", "seed_2", "seed_3", "zeroshot", "silero", "webrtc", "finetuned"}
    assert head["finetuned"]["n_seeds"] == 3
    for name, entry in head.items():
        assert 80 < entry["DT50_ms"] < 125 and abs(entry["SNR50_dB"]) < 1.5, (name, entry)
