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
from speech_calibration.stats import paired_tests
from speech_calibration.stats.metrics import sigmoid
from speech_calibration.stats.resampling import MIN_CLUSTERS
from stages import conditions as conditions_stage

ROOT = Path(__file__).resolve().parents[1]
DURATIONS = [20, 40, 60, 80, 100, 200, 500, 1000]
SNRS = [-10, -5, 0, 5, 10, 20]
T60S = ["0.3", "1", "2.5"]
BANDS = ["telephone", "lowpass", "highpass"]
# the columns thresholds.csv and paired_tests.csv had before they said why an interval is missing: all kept
THRESHOLD_COLUMNS = {"system", "kind", "seed", "threshold", "measure", "calibration", "unit", "value", "censored", "lo",
                     "hi", "falls_below_again", "text", "ci_text", "ci"}
PAIRED_COLUMNS = {"system_1", "system_2", "scope", "n_clusters", "n_variants", "accuracy_1", "accuracy_2", "only_1_right",
                  "only_2_right", "both_right", "both_wrong", "p_clustered", "p_holm", "p_naive", "accuracy_difference",
                  "diff_lo", "diff_hi", "ci"}


def variants_frame(n_clips: int = 12, groups: int | None = None) -> pd.DataFrame:
    """Every variant of ``n_clips`` base clips, SPEECH and NONSPEECH in turn; each base clip its own group (speaker),
    or, with ``groups``, clip ``i`` in group ``i % groups`` (which then holds clips of both classes)."""
    rows = []
    for i in range(n_clips):
        base, label = f"c{i:02d}", ("SPEECH" if i % 2 == 0 else "NONSPEECH")
        group = f"g{i:02d}" if groups is None else f"g{i % groups}"
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


def write_project(tmp_path: Path, meta: pd.DataFrame) -> None:
    """Into ``tmp_path``: the variants' metadata ``meta``, three seeds, zero-shot and one baseline."""
    folder = tmp_path / "data/processed/conditions"
    folder.mkdir(parents=True)
    meta.to_csv(folder / "conditions_metadata.csv", index=False)
    for seed in (42, 123, 456):
        write_predictions(tmp_path / f"predictions/conditions/seeds/seed_{seed}/conditions.csv", meta,
                          logit_difference(meta, "finetuned", seed))
        TemperatureScaling({"temperature": 2.0}).save(tmp_path / layout.seed_files(seed).calibrator)
    write_predictions(tmp_path / "predictions/conditions/zeroshot/conditions.csv", meta, logit_difference(meta, "zeroshot"))
    PlattScaling({"slope": 1.0, "bias": 3.5}).save(tmp_path / "models/calibrators/references/zeroshot.json")
    write_predictions(tmp_path / "predictions/baselines_conditions/silero/conditions.csv", meta,
                      np.where(meta["label"] == "SPEECH", 1.0, -1.0) * np.where(meta["condition"] == "snr", -1.0, 1.0))


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A working folder with the variants of 12 base clips, each from a speaker of its own (12 groups)."""
    write_project(tmp_path, variants_frame())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_report_end_to_end(project):
    conditions_stage.main(["--params", str(ROOT / "params.yaml")])
    head = json.loads(Path("metrics/conditions.json").read_text())
    assert set(head) == {"seed_42", "seed_123", "seed_456", "zeroshot", "silero", "finetuned"}

    # thresholds: the fine-tuned system was simulated with hit rate 50 % at 100 ms and at 0 dB, and (almost) no
    # false alarms, so balanced accuracy reaches 75 % there
    thresholds = pd.read_csv("metrics/conditions/thresholds.csv")
    for seed in (42, 123, 456):
        entry = head[f"seed_{seed}"]
        assert 60 < entry["DT75_ms"] < 160, entry
        assert -3 < entry["SNR75_dB"] < 3, entry
        assert entry["DT75_ms"] < entry["DT90_ms"]
        hit = thresholds[(thresholds["system"] == f"seed_{seed}") & (thresholds["measure"] == "p_speech_given_speech")]
        assert set(hit["threshold"]) == {"DT50_hit", "DT75_hit", "DT90_hit", "SNR50_hit", "SNR75_hit"}
        assert 60 < hit.set_index("threshold").loc["DT50_hit", "value"] < 160
    assert head["finetuned"]["n_seeds"] == 3
    dt75 = [head[f"seed_{s}"]["DT75_ms"] for s in (42, 123, 456)]
    assert head["finetuned"]["DT75_ms"] == pytest.approx(np.prod(dt75) ** (1 / 3))  # geometric: found on log10 ms
    snr75 = [head[f"seed_{s}"]["SNR75_dB"] for s in (42, 123, 456)]
    assert head["finetuned"]["SNR75_dB"] == pytest.approx(np.mean(snr75))
    assert head["finetuned"]["DT75_text"] == "; ".join(f"seed_{s}: {head[f'seed_{s}']['DT75_text']}" for s in (42, 123, 456))
    # zero-shot never answers SPEECH: balanced accuracy stays at 1/2, not reached, no number
    assert head["zeroshot"]["DT75_ms"] is None and head["zeroshot"]["DT75_text"].startswith("not reached by 1000 ms")
    assert head["zeroshot"]["SNR75_text"].startswith("not reached by 20.0 dB")
    zs = thresholds[(thresholds["system"] == "zeroshot") & (thresholds["threshold"] == "DT75")].iloc[0]
    assert zs["censored"] == "not reached" and np.isnan(zs["value"]) and zs["measure"] == "balanced_accuracy"

    # per-condition table: BA_clip and BA_conditions recomputed by hand from it
    table = pd.read_csv("metrics/conditions/per_condition.csv", dtype={"level": str})
    t = table[(table["system"] == "seed_42") & (table["calibration"] == "uncalibrated")]
    assert head["seed_42"]["BA_clip"] == pytest.approx(t.loc[t["condition"] == "all", "balanced_accuracy"].iloc[0])
    dims = [t.loc[t["condition"] == d, "balanced_accuracy"].mean() for d in ("duration", "snr", "reverb", "band")]
    assert head["seed_42"]["BA_conditions"] == pytest.approx(np.mean(dims))
    assert len(t) == 1 + 8 + 6 + 3 + 3 + 1
    # every row's unit is the base clip: 12 of them, in each level and in 'all', with an interval around the value
    assert (t["n_clusters"] == 12).all() and (t.loc[t["condition"] == "all", "n"] == 12 * 21).all()
    for key in ("balanced_accuracy", "ece"):
        has = t[f"{key}_lo"].notna()
        assert has.any() and ((t[f"{key}_lo"] <= t[key] + 1e-12) & (t[key] <= t[f"{key}_hi"] + 1e-12))[has].all()
        assert (t.loc[~has, f"{key}_no_interval"].astype(str).str.len() > 0).all()
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
    np.testing.assert_allclose(pairs["p_holm"], paired_tests.holm(pairs["p_clustered"]))  # one family of all 50
    assert (pairs["p_holm"] >= pairs["p_clustered"] - 1e-15).all() and (pairs["p_holm"] <= 1).all()
    assert (pairs["n_clusters"] == 12).all()  # base clips, not variants
    assert (pairs.loc[pairs["scope"] == "all", "n_variants"] == 12 * 21).all()
    row = pairs[(pairs["system_1"] == "seed_42") & (pairs["system_2"] == "zeroshot") & (pairs["scope"] == "all")].iloc[0]
    assert row["diff_lo"] <= row["accuracy_difference"] <= row["diff_hi"]
    assert row["accuracy_difference"] == pytest.approx(row["accuracy_1"] - row["accuracy_2"])
    assert PAIRED_COLUMNS | {"diff_interval"} <= set(pairs.columns)
    assert (pairs["diff_lo"].isna() == pairs["diff_interval"].notna()).all()  # an interval, or the reason there is none
    assert THRESHOLD_COLUMNS | {"no_interval"} <= set(thresholds.columns)
    none = thresholds["no_interval"].notna()
    assert (thresholds.loc[none, "ci_text"] == "(no interval: " + thresholds.loc[none, "no_interval"] + ")").all()
    assert thresholds.loc[none, ["lo", "hi"]].isna().all().all()

    # plots: one series per system (the seeds averaged into 'finetuned'), PNGs
    psy = pd.read_csv("plots/conditions/psychometric_duration.csv")
    assert set(psy["system"]) == {"finetuned", "zeroshot", "silero"}
    assert (psy["n_members"][psy["system"] == "finetuned"] == 3).all()
    assert set(pd.read_csv("plots/conditions/per_condition.csv")["system"]) == {"finetuned", "zeroshot", "silero"}
    sens = pd.read_csv("plots/conditions/sensitivity_duration.csv")
    zs_ba = sens.loc[sens["system"] == "zeroshot", "balanced_accuracy"]
    assert len(zs_ba) == 8 and (zs_ba == 0.5).all()  # one answer everywhere: chance
    for name in ("psychometric_duration.png", "psychometric_snr.png", "per_condition.png", "calibration_under_shift.png"):
        assert Path("plots/conditions", name).stat().st_size > 1000

    # calibration under shift: each system's curves (calibrated where it has a calibrator), its thresholds everywhere
    for dimension in ("duration", "snr", "reverb", "band"):
        frame = pd.read_csv(f"plots/conditions/calibration_{dimension}.csv")
        assert set(frame["system"]) == {"finetuned", "zeroshot", "silero (uncalibrated)"}, dimension
    shift = pd.read_csv("metrics/conditions/calibration_under_shift.csv", dtype={"level": str})
    assert len(shift) == 5 * (8 + 6 + 3 + 3) and set(shift.loc[shift["system"] == "silero", "calibration"]) == {"uncalibrated"}
    ece = thresholds[thresholds["measure"] == "smooth_ece"]
    assert len(ece) == 5 * 2 and set(ece["threshold"]) == {"DT_ECE10", "SNR_ECE10"}
    assert all("DT_ECE10_text" in entry and "SNR_ECE10_text" in entry for entry in head.values())
    # whose output each threshold measures: the answers are the system's own; an ECE threshold the calibrator's,
    # or, for the baseline without one, its own output, which its headline text says
    assert set(thresholds.loc[thresholds["measure"] != "smooth_ece", "calibration"]) == {"uncalibrated"}
    assert dict(ece.groupby("system")["calibration"].first()) == {**{f"seed_{s}": "calibrated" for s in (42, 123, 456)},
                                                                   "zeroshot": "calibrated", "silero": "uncalibrated"}
    assert head["silero"]["DT_ECE10_text"].startswith(ece.set_index(["system", "threshold"]).loc[
        ("silero", "DT_ECE10"), "text"]) and "(its own output: no dev-fitted calibrator)" in head["silero"]["DT_ECE10_text"]
    assert "calibrator)" not in head["seed_42"]["DT_ECE10_text"]
    # a calibration threshold that chance alone reaches at every level has no number in the headline, only its text
    # (12 clips a level: here every one of them; test_a_calibration_threshold_above_chance_keeps_its_number)
    assert (ece["chance_levels"] == ece["n_levels"]).all()
    for _, r in ece.iterrows():
        key, text = head[r["system"]][f"{r['threshold']}_{r['unit']}"], head[r["system"]][f"{r['threshold']}_text"]
        assert key is None and text.endswith(f"; no number in {r['threshold']}_{r['unit']}: it cannot be told from "
                                             "chance at any level"), text
    # every curve here rises with the level, so none reaches a criterion and loses it again
    assert thresholds["falls_below_again"].isna().all()
    assert conditions.interval_scope(conditions.read_variants(layout.conditions_csv())) == (
        "every interval and paired test here resamples the 12 test groups (speakers, recordings), each with all the "
        "variants of its base clips (12 in all), so that they speak of new speakers and recordings; a paired test's p "
        "cannot fall below 2 / 2^12 = 0.000488")


def test_a_calibration_threshold_above_chance_keeps_its_number():
    """The headline gives a calibration threshold its number unless chance alone crosses at every level; a sensitivity
    threshold always keeps its own."""
    row = {"measure": "smooth_ece", "calibration": "calibrated", "value": 4.0, "text": "4.0 dB", "ci_text": "[1.0 dB, 7.0 dB]",
           "chance_levels": 5, "n_levels": 6, "threshold": "SNR_ECE10", "unit": "dB"}
    assert conditions.headline_threshold(row) == (4.0, "4.0 dB [1.0 dB, 7.0 dB]")
    value, text = conditions.headline_threshold({**row, "chance_levels": 6})
    assert value is None and text == ("4.0 dB [1.0 dB, 7.0 dB]; no number in SNR_ECE10_dB: it cannot be told from "
                                      "chance at any level")
    sensitivity = {**row, "measure": "balanced_accuracy", "calibration": "uncalibrated"}
    del sensitivity["chance_levels"], sensitivity["n_levels"]
    assert conditions.headline_threshold(sensitivity) == (4.0, "4.0 dB [1.0 dB, 7.0 dB]")


def test_every_interval_and_paired_test_resamples_groups_not_base_clips(tmp_path, monkeypatch):
    """12 base clips from 3 speakers (each with clips of both classes): every table counts 3 groups and, being too
    few, gives no interval anywhere and says so; the paired tests flip the signs of 3 groups' differences, so no p
    can be below 2 / 2^3 (review: resampling base clips rejected a true group-level null in 41 % of simulations)."""
    write_project(tmp_path, variants_frame(12, groups=3))
    monkeypatch.chdir(tmp_path)
    conditions_stage.main(["--params", str(ROOT / "params.yaml")])
    table = pd.read_csv("metrics/conditions/per_condition.csv", dtype={"level": str})
    assert (table["n_clusters"] == 3).all()
    for key in ("balanced_accuracy", "ece"):
        assert table[f"{key}_lo"].isna().all()
        assert table[f"{key}_no_interval"].str.startswith("3 groups: too few for a group-level interval").all()
    shift = pd.read_csv("metrics/conditions/calibration_under_shift.csv", dtype={"level": str})
    assert (shift["n_clusters"] == 3).all() and shift["smooth_ece_lo"].isna().all()
    thresholds = pd.read_csv("metrics/conditions/thresholds.csv")
    assert thresholds["lo"].isna().all() and thresholds["hi"].isna().all()
    assert thresholds["no_interval"].str.contains(r"^3 (?:NONSPEECH\+SPEECH )?groups: too few").all(), thresholds["no_interval"]
    pairs = pd.read_csv("metrics/conditions/paired_tests.csv")
    assert (pairs["n_clusters"] == 3).all() and (pairs["p_clustered"] >= 0.25 - 1e-12).all()
    assert pairs["diff_lo"].isna().all() and pairs["diff_interval"].str.startswith("3 groups: too few").all()
    assert conditions.interval_scope(conditions.read_variants(layout.conditions_csv())).endswith(
        "2 / 2^3 = 0.25; 3 groups are too few for a group-level interval (needs >= 5), so the tables give none and say "
        "why")


@pytest.mark.parametrize("q,name", [(0.10, "DT_ECE10"), (0.05, "DT_ECE05"), (0.125, "DT_ECE12p5"), (0.005, "DT_ECE0p5"),
                                    (0.1234567, "DT_ECE12p34567")])
def test_the_calibration_threshold_is_named_by_its_criterion_unrounded(q, name):
    assert conditions.ece_threshold_name(conditions.AXES[0], q) == name


def test_a_balanced_accuracy_threshold_names_only_levels_with_both_classes():
    """No non-speech clip has a 1000 ms variant: balanced accuracy was only found up to 500 ms, and its censoring says
    so (the hit-rate threshold, of speech clips alone, still reaches 1000 ms)."""
    from speech_calibration import params as params_mod

    meta = variants_frame(12)
    meta = meta[~((meta["condition"] == "duration") & (meta["level"] == "1000") & (meta["label"] == "NONSPEECH"))]
    meta = meta.reset_index(drop=True)
    cfg = params_mod.Conditions(durations_ms=DURATIONS, snr_db=SNRS, n_bootstrap=50)
    answers = np.zeros(len(meta))  # always NONSPEECH: never reaches a sensitivity threshold
    curves = conditions.psychometric_curves(meta, answers, conditions.variant_order(meta, cfg), cfg, 0.95, "x")
    system = conditions.System("x", "baseline", None, Path("x"), None)
    rows = pd.DataFrame(conditions.threshold_rows(system, curves, 0.95)).set_index("threshold")
    assert rows.loc["DT75", "text"] == "not reached by 500 ms"
    assert rows.loc["DT50_hit", "text"] == "not reached by 1000 ms"


def test_a_balanced_accuracy_reached_at_once_and_lost_again_says_so():
    """Speech always answered SPEECH, false alarms rising with duration (as a VAD's can): DT75 is below the range, and
    its text says where the balanced accuracy falls below 75 % again, rather than reading as "holds above 20 ms"."""
    from speech_calibration import params as params_mod

    meta = variants_frame(40)
    dur = (meta["condition"] == "duration").to_numpy()
    lv = pd.to_numeric(meta["level"], errors="coerce").to_numpy()
    speech = (meta["label"] == "SPEECH").to_numpy()
    z = np.where(speech, 3.0, -3.0)
    z[dur & ~speech] = 4.0 * (np.log10(lv[dur & ~speech]) - 2.3)  # false alarms past ~200 ms
    scored = [conditions.Scored(conditions.System("vad", "baseline", None, Path("x"), None), 1 / (1 + np.exp(-z)), None,
                                0.5)]
    cfg = params_mod.Conditions(durations_ms=DURATIONS, snr_db=SNRS, n_bootstrap=100)
    curves = conditions.psychometric_curves(meta, (z >= 0).astype(float), conditions.variant_order(meta, cfg), cfg, 0.95,
                                            "vad")
    rows = pd.DataFrame(conditions.threshold_rows(scored[0].system, curves, 0.95)).set_index("threshold")
    dt75 = rows.loc["DT75"]
    assert dt75["censored"] == "below" and 100 < dt75["falls_below_again"] < 1000
    assert dt75["text"] == f"< 20 ms (below 75% again from {dt75['falls_below_again']:.0f} ms)"
    assert np.isnan(rows.loc["SNR75", "falls_below_again"])  # no false alarms in noise: it holds


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
    path = project / "predictions/conditions/seeds/seed_123/conditions.csv"
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


@pytest.mark.slow
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
    # every system was simulated as the fine-tuned one (balanced accuracy 75 % at 100 ms and 0 dB): each recovers it
    assert set(head) == {"seed_1", "seed_2", "seed_3", "zeroshot", "silero", "webrtc", "finetuned"}
    assert head["finetuned"]["n_seeds"] == 3
    for name, entry in head.items():
        assert 80 < entry["DT75_ms"] < 125 and abs(entry["SNR75_dB"]) < 1.5, (name, entry)


def test_a_constant_answer_reaches_no_sensitivity_threshold(tmp_path, monkeypatch):
    """A system that answers SPEECH to everything has every hit-rate threshold below the range ("< 20 ms": bias),
    and no sensitivity threshold ("not reached"); one that answers NONSPEECH to everything likewise reaches none."""
    from speech_calibration import params as params_mod

    meta = variants_frame(12)
    z = {"always_speech": np.full(len(meta), 3.0), "always_nonspeech": np.full(len(meta), -3.0),
         "seed_1": logit_difference(meta, "finetuned", 1)}
    scored = [conditions.Scored(conditions.System(name, "baseline", None, Path("x"), None), 1 / (1 + np.exp(-v)), None, 0.5)
              for name, v in z.items()]
    monkeypatch.chdir(tmp_path)
    conditions.report(meta, scored, params_mod.Conditions(durations_ms=DURATIONS, snr_db=SNRS, n_bootstrap=200), 15, 0.95)
    t = pd.read_csv(tmp_path / "metrics/conditions/thresholds.csv")
    for name in ("always_speech", "always_nonspeech"):
        ba = t[(t["system"] == name) & (t["measure"] == "balanced_accuracy")]
        assert set(ba["threshold"]) == {"DT75", "DT90", "SNR75", "SNR90"}
        assert (ba["censored"] == "not reached").all() and ba["text"].str.startswith("not reached").all(), ba
        assert ba["ci_text"].str.fullmatch(r"\[not reached by [^,]+, not reached by [^\]]+\]").all()
    biased = t[(t["system"] == "always_speech") & (t["measure"] == "p_speech_given_speech")]
    assert (biased["text"].str.startswith("< ")).all()  # what the hit-rate thresholds say of a constant SPEECH
    tuned = t[(t["system"] == "seed_1") & (t["threshold"] == "DT75")].iloc[0]
    assert pd.isna(tuned["censored"]) and np.isfinite(tuned["value"])  # a real threshold, inside the range


def test_the_report_is_the_same_computed_on_one_process_or_on_two(tmp_path, monkeypatch):
    """The systems are computed on forked workers (speech_calibration.parallel): every file written, the PNGs
    included, is byte for byte what one process writes."""
    from speech_calibration import params as params_mod

    meta = variants_frame(12)
    scored = [conditions.Scored(conditions.System(f"seed_{i}", "finetuned", i, Path("x"), None),
                                1 / (1 + np.exp(-logit_difference(meta, "finetuned", i))),
                                1 / (1 + np.exp(-logit_difference(meta, "finetuned", i) / 2)), 0.5) for i in (1, 2, 3)]
    scored.append(conditions.Scored(conditions.System("silero", "baseline", None, Path("x"), None),  # no calibrator
                                    1 / (1 + np.exp(-logit_difference(meta, "zeroshot"))), None, 0.5))
    cfg = params_mod.Conditions(durations_ms=DURATIONS, snr_db=SNRS, n_bootstrap=100)
    written = {}
    for workers in (1, 2):
        folder = tmp_path / f"workers_{workers}"
        folder.mkdir()
        monkeypatch.chdir(folder)
        conditions.report(meta, scored, cfg, 15, 0.95, workers=workers)
        written[workers] = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert len(written[1]) > 10 and any(name.endswith(".png") for name in written[1])
    assert written[2] == written[1]


def test_paired_table_counts_groups_so_repeated_variants_change_nothing():
    """paired_tests.csv: repeating every variant 22 times keeps n_clusters (12 groups) and p_clustered, and shrinks
    p_naive; the interval of the accuracy difference (over groups) stays where it was."""
    from speech_calibration import params as params_mod

    meta = variants_frame(12)
    y = (meta["label"] == "SPEECH").to_numpy()
    correct = {name: (logit_difference(meta, "finetuned", seed) >= 0) == y for name, seed in (("a", 1), ("b", 2))}
    correct["zeroshot"] = (logit_difference(meta, "zeroshot") >= 0) == y
    cfg = params_mod.Conditions(n_bootstrap=200)
    once = conditions.paired_table(meta, correct, cfg, 0.95)
    rep = meta.loc[meta.index.repeat(22)].reset_index(drop=True)
    many = conditions.paired_table(rep, {k: np.repeat(v, 22) for k, v in correct.items()}, cfg, 0.95)
    assert (once["n_clusters"] == 12).all() and (many["n_clusters"] == 12).all()
    assert (many["n_variants"] == 22 * once["n_variants"]).all()
    np.testing.assert_array_equal(many["p_clustered"].to_numpy(), once["p_clustered"].to_numpy())
    np.testing.assert_array_equal(many["p_holm"].to_numpy(), once["p_holm"].to_numpy())
    assert once["diff_lo"].notna().sum() >= 5
    np.testing.assert_allclose(many[["diff_lo", "diff_hi"]].to_numpy(), once[["diff_lo", "diff_hi"]].to_numpy(), rtol=1e-12)
    assert (many["diff_interval"] == once["diff_interval"]).all()
    differs = once["only_1_right"] != once["only_2_right"]
    assert differs.any() and (many["p_naive"][differs] < once["p_naive"][differs]).all()


def test_batch_calibration_sees_each_condition_and_level_as_its_own_set():
    """A prior that moves with the condition (noise pushes towards SPEECH) is removed per level, not on average."""
    from speech_calibration.calibration.calibrators import BatchCalibration, TemperatureScaling, batch_prior
    from speech_calibration.stats.metrics import sigmoid

    meta = variants_frame(12)
    z = logit_difference(meta, "finetuned", 0) + np.where(meta["condition"] == "snr", 3.0, 0.0)
    a, b = z / 2, -z / 2
    p = sigmoid(conditions.per_set_log_odds(BatchCalibration().fit(z, np.zeros(len(z))), a, b, meta))
    for (cond, level), idx in meta.groupby(["condition", "level"]).indices.items():
        np.testing.assert_allclose(p[idx], sigmoid(z[idx] - batch_prior(z[idx])), err_msg=f"{cond} {level}")
    whole = BatchCalibration().predict_proba(a, b)  # the same map over all variants at once: another answer
    assert not np.allclose(p, whole)
    temperature = TemperatureScaling({"temperature": 2.0})
    np.testing.assert_array_equal(sigmoid(conditions.per_set_log_odds(temperature, a, b, meta)),
                                  temperature.predict_proba(a, b))



# ------------------------------------------------------------------------------ calibration under shift
def right_by_design(meta: pd.DataFrame, lowered_at_snr) -> np.ndarray:
    """p(SPEECH) of a system whose top-label confidence is exactly right at every level: base clips c00-c19 answered
    with confidence 0.9 and 18 of them right, c20-c39 with 0.7 and 14 right; at SNR level s every confidence is
    lowered by ``lowered_at_snr(s)`` (same answers, so the smooth ECE there is that amount, in closed form)."""
    i = meta["base_clip_id"].str[1:].astype(int).to_numpy()
    conf = np.where(i < 20, 0.9, 0.7)
    snr = (meta["condition"] == "snr").to_numpy()
    conf = conf - np.where(snr, lowered_at_snr(pd.to_numeric(meta["level"], errors="coerce").to_numpy()), 0.0)
    wrong = np.isin(i, [0, 1, 20, 21, 22, 23, 24, 25])
    says_speech = (meta["label"] == "SPEECH").to_numpy() != wrong
    return np.where(says_speech, conf, 1.0 - conf)


def shift_of(p: np.ndarray, meta: pd.DataFrame):
    from speech_calibration import params as params_mod

    cfg = params_mod.Conditions(snr_db=SNRS, n_bootstrap=200)
    y = (meta["label"] == "SPEECH").to_numpy().astype(int)
    resamples = conditions.shift_resamples(meta, y, conditions.variant_order(meta, cfg), cfg)
    curves = conditions.shift_curves(resamples, y, p, 0.5, "calibrated")
    system = conditions.System("tuned", "finetuned", 1, Path("x"), None)
    thresholds = pd.DataFrame(conditions.calibration_threshold_rows(system, curves, 0.10, 0.95)).set_index("threshold")
    return curves, thresholds, pd.DataFrame(conditions.shift_table_rows(system, curves, 0.95))


def test_exactly_calibrated_system_never_exceeds_the_ece_threshold():
    meta = variants_frame(40)
    curves, thresholds, table = shift_of(right_by_design(meta, lambda s: 0.0 * s), meta)
    assert set(curves) == {"duration", "snr", "reverb", "band"}
    assert (table["smooth_ece"] < 1e-3).all(), table[["condition", "level", "smooth_ece"]]
    assert (table["balanced_accuracy"] == 0.8).all() and (table["n_clusters"] == 40).all()
    assert list(thresholds.index) == ["DT_ECE10", "SNR_ECE10"]
    assert (thresholds["censored"] == "never exceeds").all() and thresholds["value"].isna().all()
    # exact frequencies: no sampling noise here, but 40 clips drawn from these forecasts would exceed 0.10 by chance
    chance = " (a calibrated system exceeds 0.10 by chance in at least 5% of samples at {} levels)"
    assert thresholds.loc["DT_ECE10", "text"] == "never exceeds 0.10 within 20 ms to 1000 ms" + chance.format("8 of 8")
    assert thresholds.loc["SNR_ECE10", "text"] == "never exceeds 0.10 within -10.0 dB to 20.0 dB" + chance.format("6 of 6")
    assert (table["smooth_ece_calibrated_null"] > 0.10).all()


def test_miscalibration_growing_towards_low_snr_crosses_at_the_closed_form_level():
    """Confidence lowered by 0.02 + 0.005 (20 - s) at s dB: smooth ECE 0.10 at s = 4 dB, between the 0 and 5 dB levels
    (linear in s, so the interpolation between levels is exact)."""
    meta = variants_frame(40)

    def lowered(s):
        return 0.02 + 0.005 * (20.0 - s)

    curves, thresholds, table = shift_of(right_by_design(meta, lowered), meta)
    snr = curves["snr"]
    np.testing.assert_allclose(snr.point["smooth_ece"], lowered(np.array(SNRS, float)), atol=2e-3)
    t = thresholds.loc["SNR_ECE10"]
    assert t["censored"] == "" and t["value"] == pytest.approx(4.0, abs=0.3), t.to_dict()
    assert t["text"].startswith("4.0 dB (a calibrated system exceeds 0.10 by chance")
    # its interval: every resample moves the whole curve (the same base clips at every level), so here it is censored:
    # below where a resample never exceeds 0.10 down to -10 dB, above where one already does at 20 dB
    lo, hi = t["ci_text"][1:-1].split(", ")
    assert (t["lo"] <= t["value"] if np.isfinite(t["lo"]) else lo == "< -10.0 dB"), t["ci_text"]
    assert (t["value"] <= t["hi"] if np.isfinite(t["hi"]) else hi == "> 20.0 dB"), t["ci_text"]
    assert thresholds.loc["DT_ECE10", "censored"] == "never exceeds"  # durations were left exactly calibrated
    # the bands (a bootstrap over base clips) hold the point estimate; here every row has one, but the smooth ECE of
    # the exactly calibrated levels: its estimate is near its floor 0, every resample well above it (an error
    # estimate is biased up), so the reflected band would shut to [0, 0] and there is none, with the reason
    assert table[["nll_lo", "balanced_accuracy_lo"]].notna().all().all()
    assert table.loc[table["condition"] == "snr", "smooth_ece_lo"].notna().all()
    shut = table["smooth_ece_lo"].isna()
    assert (table.loc[shut, "smooth_ece"] < 0.01).all() and "snr" not in set(table.loc[shut, "condition"])
    assert table.loc[shut, "smooth_ece_no_interval"].str.contains("reflected interval shuts to 0").all()
    for m in conditions.SHIFT_MEASURES:
        t = table[table["condition"] == "snr"] if m == "smooth_ece" else table
        assert ((t[f"{m}_lo"] <= t[m] + 1e-12) & (t[m] <= t[f"{m}_hi"] + 1e-12)).all(), m
        assert (t[f"{m}_lo"] < t[f"{m}_hi"]).all(), m


def test_the_calibrated_null_is_the_smooth_ece_of_outcomes_drawn_from_the_forecasts():
    """calibrated_null against a plain loop over the same draws, and what it is for: on 24 clips, forecasts that are
    calibrated by construction reach a smooth ECE of 0.10 by chance; on 1000 they do not."""
    from speech_calibration.stats import metrics

    p = np.random.default_rng(0).uniform(0.5, 1.0, 24)
    got = conditions.calibrated_null(p, 0.5, 0.9, np.random.default_rng(1), draws=60)
    u = np.random.default_rng(1).random((60, len(p)))
    loop = [metrics.smooth_ece(*metrics.top_label((u[i] < p).astype(int), p, 0.5)) for i in range(60)]
    assert got == pytest.approx(float(np.quantile(loop, 0.9)), abs=1e-6)  # rows evaluated together: 3e-9 apart
    many = np.random.default_rng(0).uniform(0.5, 1.0, 1000)
    assert conditions.calibrated_null(p, 0.5, 0.95, np.random.default_rng(2)) > 0.10
    assert conditions.calibrated_null(many, 0.5, 0.95, np.random.default_rng(2)) < 0.05


def test_first_exceedance_scans_down_from_the_highest_level():
    from speech_calibration.stats.psychometric import first_exceedance

    x = np.array([20.0, -10.0, 0.0, 10.0])  # any order
    values = np.array([[0.0, 0.4, 0.2, 0.05],  # crosses 0.1 between 10 (0.05) and 0 (0.2): at 10 - 10/3
                       [0.2, 0.3, 0.3, 0.3],  # already above at the highest level
                       [0.0, 0.05, 0.0, 0.0],  # never
                       [0.0, 0.0, 0.3, 0.0]])  # the first crossing coming down, not a later one
    out = first_exceedance(values, x, 0.1)
    np.testing.assert_allclose(out[[0, 3]], [10 - 10 / 3, 10 - 10 / 3])
    assert out[1] == np.inf and out[2] == -np.inf


@pytest.mark.parametrize("value", [0.0, 1.5, -0.1])
def test_an_impossible_ece_threshold_is_rejected_naming_the_key(value):
    from speech_calibration import params as params_mod
    from speech_calibration.errors import UserError

    with pytest.raises(UserError, match=r"conditions\.ece_threshold: must be between 0 and 1"):
        params_mod.parse(params_mod.Params, {"conditions": {"ece_threshold": value}}, "")


# ---------------------------------------------------------------------------------- too few groups for an interval
def no_interval_reason(n: int, side: str = "") -> str:
    """The start of the reason for ``n`` groups (of class ``side``, where resampled by class): too few."""
    return f"{n} {side + ' ' if side else ''}group{'' if n == 1 else 's'}: too few for a group-level interval"


@pytest.mark.parametrize("n_clips", [1, MIN_CLUSTERS - 1])
def test_paired_table_with_too_few_base_clips_has_empty_bounds_and_the_reason(n_clips, tmp_path):
    """One base clip (or MIN_CLUSTERS - 1): no interval of the accuracy difference, empty in the CSV, the reason in
    ``diff_interval``; the difference itself is still there."""
    from speech_calibration import params as params_mod
    from speech_calibration.fileio import write_csv

    meta = variants_frame(n_clips)
    y = (meta["label"] == "SPEECH").to_numpy()
    correct = {name: (logit_difference(meta, "finetuned", seed) >= 0) == y for name, seed in (("a", 1), ("b", 2))}
    table = conditions.paired_table(meta, correct, params_mod.Conditions(n_bootstrap=200), 0.95)
    assert PAIRED_COLUMNS | {"diff_interval"} <= set(table.columns) and (table["n_clusters"] == n_clips).all()
    assert table[["diff_lo", "diff_hi"]].isna().all().all() and table["accuracy_difference"].notna().all()
    assert table["diff_interval"].str.startswith(no_interval_reason(n_clips)).all(), table["diff_interval"].tolist()
    write_csv(tmp_path / "paired_tests.csv", table)
    raw = pd.read_csv(tmp_path / "paired_tests.csv", dtype=str, keep_default_na=False)
    assert (raw["diff_lo"] == "").all() and (raw["diff_hi"] == "").all()


def test_thresholds_with_too_few_base_clips_say_why_in_their_text():
    """Two base clips (one speech, one non-speech): no threshold has an interval; nine (5 speech, 4 non-speech): the
    sensitivity thresholds, which resample each class apart, have none, and the reason names the non-speech side."""
    from speech_calibration import params as params_mod

    cfg = params_mod.Conditions(durations_ms=DURATIONS, snr_db=SNRS, n_bootstrap=100)
    system = conditions.System("x", "baseline", None, Path("x"), None)
    rows = {}
    for n_clips in (2, 9):
        meta = variants_frame(n_clips)
        answers = (logit_difference(meta, "finetuned", 0) >= 0).astype(float)
        curves = conditions.psychometric_curves(meta, answers, conditions.variant_order(meta, cfg), cfg, 0.95, "x")
        frame = pd.DataFrame(conditions.threshold_rows(system, curves, 0.95))
        assert THRESHOLD_COLUMNS | {"no_interval"} <= set(frame.columns)
        rows[n_clips] = frame.set_index("threshold")
    two = rows[2]
    assert len(two) == 4 + 5 and two[["lo", "hi"]].isna().all().all()
    assert (two["ci_text"] == "(no interval: " + two["no_interval"] + ")").all()
    for name in ("DT50_hit", "DT75_hit", "SNR50_hit"):  # speech clips only: one of them
        assert two.loc[name, "no_interval"].startswith(no_interval_reason(1)), two.loc[name, "no_interval"]
    for name in ("DT75", "SNR75"):  # resampled by class: one of each, both named
        assert two.loc[name, "no_interval"].startswith(
            f"{no_interval_reason(1, 'NONSPEECH').split(':')[0]}, {no_interval_reason(1, 'SPEECH')}"), two.loc[name]
    nine = rows[9]
    for name in ("DT75", "DT90", "SNR75", "SNR90"):
        assert nine.loc[name, "no_interval"].startswith(no_interval_reason(4, "NONSPEECH")), nine.loc[name, "no_interval"]
        assert "within each class stratum" in nine.loc[name, "ci_text"] and np.isnan(nine.loc[name, "lo"])


def test_a_class_stratum_with_too_few_base_clips_gives_no_band_and_names_it():
    """Nine base clips (5 speech, 4 non-speech) are resampled within class (a plain resample would lose a class too
    often), so the non-speech stratum of 4 gives no band, though 9 clips in all would be enough; 10 (5 + 5) give one."""
    from speech_calibration import params as params_mod

    for n_clips in (9, 10):
        meta = variants_frame(n_clips)
        p = sigmoid(logit_difference(meta, "finetuned", 0))
        y = (meta["label"] == "SPEECH").to_numpy().astype(int)
        _, thresholds, table = shift_of(p, meta)  # calibration under shift
        order = conditions.variant_order(meta, params_mod.Conditions(snr_db=SNRS))
        per_condition = conditions.per_condition_table(
            y, meta["condition"].to_numpy(), meta["level"].to_numpy(), order, {"uncalibrated": (p, 0.5)}, 15,
            clusters=meta["group_id"].to_numpy(), n_boot=200, ci=0.95, seed=0, system_name="x")
        whole = per_condition[per_condition["condition"] == "all"].iloc[0]
        assert (table["n_clusters"] == n_clips).all()
        if n_clips == 9:
            reason = no_interval_reason(4, "NONSPEECH")
            assert table["smooth_ece_lo"].isna().all() and table["smooth_ece_hi"].isna().all()
            assert table["smooth_ece_no_interval"].str.startswith(reason).all(), table["smooth_ece_no_interval"].tolist()
            for key in ("balanced_accuracy", "ece"):
                assert pd.isna(whole[f"{key}_lo"]) and whole[f"{key}_no_interval"].startswith(reason), whole.to_dict()
            assert thresholds["no_interval"].str.startswith(reason).all() and thresholds["lo"].isna().all()
        else:
            assert table["smooth_ece_lo"].notna().all() and (table["smooth_ece_no_interval"] == "").all()
            assert whole["ece_lo"] <= whole["ece"] <= whole["ece_hi"]  # (balanced accuracy: too few distinct values)


def test_the_nll_under_shift_is_computed_from_the_log_odds_unclipped():
    """One confident error at 200 log-odds: from the log-odds it costs 200 nats, as in metrics/test; from p (which
    rounds to 1) the clip would cap it at 27.6. Both tables of the report take the log-odds where the system has them."""
    from speech_calibration import params as params_mod

    meta = variants_frame(12)
    y = (meta["label"] == "SPEECH").to_numpy().astype(int)
    z = logit_difference(meta, "finetuned", 0)
    z[np.flatnonzero(y == 0)[0]] = 200.0  # a NONSPEECH variant (the first row of a clean clip) answered SPEECH
    p = sigmoid(z)

    def by_hand(mask):
        return float(np.mean(np.logaddexp(0.0, np.where(y[mask] == 1, -z[mask], z[mask]))))

    clean = (meta["condition"] == "clean").to_numpy()
    order = conditions.variant_order(meta, params_mod.Conditions(snr_db=SNRS))
    table = conditions.per_condition_table(
        y, meta["condition"].to_numpy(), meta["level"].to_numpy(), order,
        {"calibrated": conditions.Forecast(p, 0.5, z)}, 15, clusters=meta["group_id"].to_numpy(), n_boot=50,
        ci=0.95, seed=0, system_name="x").set_index(["condition", "level"])
    assert table.loc[("clean", "clean"), "nll"] == pytest.approx(by_hand(clean), rel=1e-12)
    assert table.loc[("all", "all"), "nll"] == pytest.approx(by_hand(np.ones(len(y), bool)), rel=1e-12)
    assert by_hand(clean) > 200.0 / clean.sum()  # the error's full cost, beyond the clip's 27.6 nats
    cfg = params_mod.Conditions(snr_db=SNRS, n_bootstrap=50)
    resamples = conditions.shift_resamples(meta, y, order, cfg)
    curves = conditions.shift_curves(resamples, y, p, 0.5, "calibrated", z)
    clipped = conditions.shift_curves(resamples, y, p, 0.5, "calibrated")
    for dimension, curve in curves.items():
        rows = resamples[dimension].rows
        for j, member in enumerate(resamples[dimension].at_level):
            mask = np.zeros(len(y), bool)
            mask[rows[member]] = True
            assert curve.point["nll"][j] == pytest.approx(by_hand(mask), rel=1e-12)
            assert clipped[dimension].point["nll"][j] <= curve.point["nll"][j] + 1e-12


def test_calibration_error_bands_are_reflected_about_the_value_and_the_others_are_not():
    """A band of ECE or smooth ECE is the expanded percentile interval over groups reflected about the row's value
    (the resampled errors sit above it); balanced accuracy and NLL keep the percentile interval."""
    from speech_calibration.stats.resampling import basic_interval, cluster_interval

    replicates = np.random.default_rng(0).normal(0.20, 0.01, 1000)
    for measure, reflected in (("ece", True), ("smooth_ece", True), ("balanced_accuracy", False), ("nll", False)):
        row = {measure: 0.15}
        conditions._band(row, replicates, 12, 0.95, measure)
        plain = cluster_interval(replicates, 12, 0.95, unit="groups")
        want = basic_interval(plain, 0.15) if reflected else plain
        assert (row[f"{measure}_lo"], row[f"{measure}_hi"]) == pytest.approx((want["lo"], want["hi"])), measure
        assert (row[f"{measure}_lo"] < 0.15) == reflected, measure  # reflected: the band reaches below the value


def test_a_variant_level_the_params_do_not_name_is_an_error_naming_the_conditions_csv():
    from speech_calibration import params as params_mod
    from speech_calibration.errors import UserError

    meta = pd.DataFrame({conditions.CONDITION: ["clean", "snr"], conditions.LEVEL: ["clean", "loud"]})
    with pytest.raises(UserError, match=r"conditions_metadata\.csv: variants snr loud are not among .* conditions_render"):
        conditions.variant_order(meta, params_mod.Conditions())
