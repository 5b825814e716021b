"""The calibrate, evaluate, references and aggregate stages and the study wrappers on simulated predictions CSVs
(the predictions contract of speech_calibration/data/schema.py).

The quick tests run each stage's ``main`` (and, for errors, its command line through ``cli.run``) in this
process; the tests marked slow run the same command lines as real processes, as ``dvc repro`` does."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from speech_calibration import layout
from speech_calibration.calibration import calibrators
from speech_calibration.cli import run as cli_run
from speech_calibration.report.summary import fmt_mean_sd

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (42, 123, 456)


def write_predictions(root: Path, system: str, split: str, n: int, groups: int, rng, *, shift: float = -2.0,
                      scale: float = 3.0, content_free: bool = True) -> None:
    """A predictions CSV like predict's: SPEECH / NONSPEECH alternating, logit difference = scale * evidence + shift."""
    y = np.tile([1, 0], n // 2)
    z = scale * np.where(y == 1, 1.0, -1.0) * rng.gamma(2.0, 1.0, n) + shift + rng.normal(0, 1, n)
    a = rng.normal(10, 1, n)
    df = pd.DataFrame({
        "clip_id": [f"{system}_{split}_{i}" for i in range(n)],
        "group_id": [f"{split}_g{i % groups}" for i in range(n)],
        "label": np.where(y == 1, "SPEECH", "NONSPEECH"), "ground_truth_token": np.where(y == 1, "A", "B"),
        "logit_A": a, "logit_B": a - z, "p_speech": 1 / (1 + np.exp(-z)), "predicted_token": np.where(z >= 0, "A", "B"),
        "logsumexp_vocab": a + 1.0, "snr_db": rng.choice([0.0, 10.0], n)})
    d = root / layout.predictions_dir(system)
    d.mkdir(parents=True, exist_ok=True)
    df.to_csv(d / f"{split}.csv", index=False)
    if content_free:
        pd.DataFrame({"input": ["silence", "noise"], "logit_A": [9.0, 9.5],
                      "logit_B": [9.0 - shift, 9.5 - shift]}).to_csv(d / f"{split}_content_free.csv", index=False)


def make_project(root: Path) -> Path:
    """A folder with predictions for three seeds, zeroshot and silero (webrtc switched off), and params.yaml."""
    rng = np.random.default_rng(0)
    for s in SEEDS:
        write_predictions(root, f"seed_{s}", "dev", 72, 4, rng)
        write_predictions(root, f"seed_{s}", "test", 24, 3, rng)
    for split, n, g in (("dev", 72, 4), ("test", 24, 3)):
        write_predictions(root, "zeroshot", split, n, g, rng, shift=1.0, scale=0.5)
        write_predictions(root, "baselines/silero", split, n, g, rng, shift=0.5, scale=2.0, content_free=False)
    set_params(root)
    return root


@pytest.fixture
def project(tmp_path):
    """A fresh project folder (see :func:`make_project`) for a test that changes it."""
    return make_project(tmp_path)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A project through every stage once (temperature scaling), shared by the tests that only read it."""
    root = make_project(tmp_path_factory.mktemp("study"))
    run_all(root)
    return root


def set_params(root: Path, calibration: dict | None = None, **evaluate) -> None:
    params = {"seeds": list(SEEDS), "calibration": {"method": "temperature", **(calibration or {})},
              "evaluate": {"n_bootstrap": 300, **evaluate}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def run(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f"{args} exited {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res


def stage(root: Path, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(root, "-m", f"stages.{name}", *args, check=check)


def inproc(root: Path, name: str, *args: str) -> None:
    """Run a stage's ``main`` in this process (same code as the CLI, without the interpreter start-up)."""
    import importlib

    cwd = Path.cwd()
    os.chdir(root)
    try:
        importlib.import_module(f"stages.{name}").main(list(args))
    finally:
        os.chdir(cwd)


def inproc_cli(root: Path, capsys, name: str, *args: str) -> subprocess.CompletedProcess:
    """A stage's command line in this process (``python -m stages.<name>`` runs the same ``run(main)``): its exit
    status and stderr, as a CompletedProcess like :func:`stage`'s."""
    import importlib

    capsys.readouterr()
    cwd = Path.cwd()
    os.chdir(root)
    try:
        cli_run(importlib.import_module(f"stages.{name}").main, list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        os.chdir(cwd)
    out = capsys.readouterr()
    return subprocess.CompletedProcess([name, *args], code, out.out, out.err)


def run_all(root: Path, references: bool = True) -> None:
    for s in SEEDS:
        inproc(root, "calibrate", "--seed", str(s))
        inproc(root, "evaluate", "--seed", str(s))
    if references:
        inproc(root, "references")
    inproc(root, "aggregate")


# files every run of the four stages writes (besides the PNGs), compared between in-process and real runs
WRITTEN = ["models/calibrators/seed_42.json", "metrics/calibration/seed_42.json",
           "metrics/calibration/seed_42_optimal_temp.txt", "metrics/test/seed_123.json",
           "models/calibrators/references/zeroshot.json", "metrics/references/systems.json",
           "metrics/references/test/baselines/silero.json", "metrics/summary.json", "metrics/summary.txt",
           "evaluation/seed_456/test_calibrated.csv", "plots/summary/per_seed.csv", "plots/summary/risk_coverage.csv"]


# ------------------------------------------------------------------------------------------ end to end
def test_pipeline_writes_every_promised_file(study):
    project = study
    cal = json.loads((project / "metrics/calibration/seed_42.json").read_text())
    assert cal["method_requested"] == "temperature" and cal["method_fitted"] == "temperature"
    assert "calibrator" not in cal  # the calibrator is its own artifact
    assert set(cal["dev"]["uncalibrated"]) >= {"nll", "ece", "brier", "accuracy"}
    t = float((project / "metrics/calibration/seed_42_optimal_temp.txt").read_text())
    assert re.fullmatch(r"\d+\.\d{6}\n", (project / "metrics/calibration/seed_42_optimal_temp.txt").read_text())
    assert t == pytest.approx(cal["params"]["temperature"], abs=1e-6)
    # the calibrator file: what evaluate and conditions apply
    fitted = calibrators.load(project / layout.seed_files(42).calibrator)
    assert isinstance(fitted, calibrators.TemperatureScaling)
    assert fitted.temperature == pytest.approx(cal["params"]["temperature"], abs=1e-12) and fitted.threshold == 0.5

    res = json.loads((project / "metrics/test/seed_42.json").read_text())
    assert res["method_fitted"] == "temperature"
    for series in ("uncalibrated", "calibrated"):
        block = res[series]
        for key in ("accuracy", "acc_speech", "acc_nonspeech", "balanced_accuracy", "roc_auc", "brier",
                    "brier_reliability", "brier_resolution", "brier_uncertainty", "nll", "ece", "ece_mass",
                    "ece_debiased", "ece_smooth", "mce"):
            assert key in block, key
        assert block["ci"]["accuracy"]["lo"] <= block["accuracy"] <= block["ci"]["accuracy"]["hi"]  # exact binomial
        roc = block["ci"]["roc_auc"]  # resampled without a systematic shift: the interval holds the point value ...
        assert (roc["lo"] <= block["roc_auc"] <= roc["hi"] if roc["lo"] is not None  # ... or there is none, and why
                else roc["reason"].startswith(f"the same value ({block['roc_auc']:.4g}) in every resample")), roc
        for key in ("ece", "ece_mass", "ece_smooth"):
            # a calibration error measured on resamples (duplicated clips) sits above the estimate, so the report
            # reflects its interval about the estimate (lo = 2 x - q_hi <= x); every estimator is in [0, 1]
            lo, hi = block["ci"][key]["lo"], block["ci"][key]["hi"]
            assert 0.0 <= lo <= block[key] and lo <= hi <= 1.0, key
        assert "ece_debiased" not in block["ci"]  # its bin-noise correction does not hold on resamples
    assert set(res["delta_ci"]) >= {"ece", "nll", "brier"}
    # temperature scaling: the accuracy difference is exactly zero in every resample
    assert res["delta_ci"]["accuracy"] == {"delta": 0.0, "hi": 0.0, "lo": 0.0, "p": 1.0, "verdict": "no clear difference"}
    assert res["calibrated"]["accuracy"] == res["uncalibrated"]["accuracy"]

    out = pd.read_csv(project / "evaluation/seed_42/test_calibrated.csv")
    assert {"p_speech", "p_speech_uncalibrated", "predicted_token", "logit_A", "snr_db"} <= set(out.columns)
    assert len(out) == 24
    # the group-level view: 3 test groups are too few for an interval, so each says why; every metric per group
    assert res["group_bootstrap"]["n_groups"] == 3
    for series in ("uncalibrated", "calibrated"):
        assert all(b["lo"] is None and b["reason"].startswith("3 groups: too few") for b in res[series]["ci_group"].values())
    assert all(d["lo"] is None and d["verdict"].startswith("no interval") for d in res["delta_ci_group"].values())
    per_group = pd.read_csv(project / "evaluation/seed_42/per_group.csv")
    assert len(per_group) == 6 and sum(b["n"] for b in res["per_group"].values()) == 24
    for g, block in res["per_group"].items():
        clips = out[out["group_id"] == g]
        right = (clips["predicted_token"] == clips["ground_truth_token"]).mean()
        assert block["calibrated"]["accuracy"] == pytest.approx(right, abs=1e-6)
        row = per_group[(per_group["group_id"] == g) & (per_group["series"] == "calibrated")].iloc[0]
        assert row["accuracy"] == block["calibrated"]["accuracy"]
    rel = pd.read_csv(project / "plots/test/seed_42_test_reliability.csv")
    assert set(rel["series"]) == {"uncalibrated", "calibrated"}
    assert set(rel["kind"]) == {"predicted", "SPEECH", "NONSPEECH"}
    for png in ("plots/calibration/seed_42_dev_reliability.png", "plots/test/seed_42_test_reliability.png",
                "plots/summary/reliability_pooled.png", "plots/summary/per_seed.png",
                "evaluation/references/zeroshot/test_reliability.png"):
        assert (project / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png

    # references: zeroshot and silero through the same code, webrtc skipped
    index = json.loads((project / "metrics/references/systems.json").read_text())
    assert index["evaluated"] == ["zeroshot", "baselines/silero"] and "baselines/webrtc" in index["skipped"]
    assert (project / "metrics/references/test/baselines/silero.json").is_file()
    for system in ("zeroshot", "baselines/silero"):
        assert calibrators.load(project / "models/calibrators/references" / f"{system}.json").method == "temperature"
    assert not (project / "models/calibrators/references/baselines/webrtc.json").exists()

    summary = (project / "metrics/summary.txt").read_text()
    for label in ("Overall:", "SPEECH:", "NONSPEECH:", "ECE:", "ROC-AUC:"):
        assert re.search(rf"^{label}\s+\S+ ± \S+", summary, re.M), label
    assert re.search(r"^Overall:   \d+\.\d% ± \d+\.\d%", summary, re.M)
    assert "zeroshot" in summary and "baselines/silero" in summary and "skipped baselines/webrtc" in summary
    assert "never changes" in summary  # the temperature note
    js = json.loads((project / "metrics/summary.json").read_text())
    assert js["method_requested"] == "temperature" and js["method_fitted"] == ["temperature"]
    assert set(js["fine_tuned"]["calibrated"]["accuracy"]) == {"mean", "sd", "lo", "hi"}
    assert set(js["per_seed"]) == {"seed_42", "seed_123", "seed_456"}
    assert {e["method_fitted"] for e in js["per_seed"].values()} == {"temperature"}
    assert set(js["references"]) == {"zeroshot", "baselines/silero"}
    assert {e["method_fitted"] for e in js["references"].values()} == {"temperature"}
    # the headline files: the same numbers, short keys, one file per system and series, none for a skipped system
    headline = project / "metrics/headline"
    assert {p.parent.name for p in headline.glob("*/*.json")} == {"fine_tuned", "seed_42", "seed_123", "seed_456",
                                                                  "zeroshot", "silero"}
    for series in ("uncalibrated", "calibrated"):
        tuned = json.loads((headline / "fine_tuned" / f"{series}.json").read_text())
        assert tuned["acc"] == pytest.approx(js["fine_tuned"][series]["accuracy"]["mean"], abs=1e-4)
        assert tuned["sece"] == pytest.approx(js["fine_tuned"][series]["ece_smooth"]["mean"], abs=1e-4)
        silero = json.loads((headline / "silero" / f"{series}.json").read_text())
        assert silero["nll"] == pytest.approx(js["references"]["baselines/silero"][series]["nll"], abs=1e-4)
    # selective prediction, recomputed here from the clips: AURC = mean over k of the error rate of the k most
    # confident clips (simulated confidences have no ties); the curve's last point (every clip) is the error rate
    curves = pd.read_csv(project / "plots/summary/risk_coverage.csv")
    for system in ("zeroshot", "baselines/silero"):
        ref = json.loads((project / f"metrics/references/test/{system}.json").read_text())
        clips = pd.read_csv(project / f"evaluation/references/{system}/test_calibrated.csv")
        speech = (clips["label"] == "SPEECH").to_numpy()
        for series, column in (("uncalibrated", "p_speech_uncalibrated"), ("calibrated", "p_speech")):
            p = clips[column].to_numpy(float)
            conf, wrong = np.maximum(p, 1 - p), (p >= 0.5) != speech
            assert len(np.unique(conf)) == len(conf)
            errors = np.cumsum(wrong[np.argsort(-conf)])
            assert ref[series]["aurc"] == pytest.approx(np.mean(errors / np.arange(1, len(p) + 1)), abs=1e-6)
            risk = curves.loc[curves["system"] == f"{system} {series}", "risk"]
            assert len(risk) == ref["n"] and risk.iloc[-1] == pytest.approx(1 - ref[series]["accuracy"], abs=1e-6)
    pooled = curves[curves["system"] == "fine-tuned (3 seeds pooled) calibrated"]
    assert len(pooled) == 3 * res["n"] and pooled["coverage"].iloc[-1] == 1.0
    assert re.search(r"^AURC:\s+\d\.\d{3} ± \d\.\d{3}", summary, re.M)
    # the group-level view, the same numbers in the text and the JSON
    assert "No group-level interval: 3 groups: too few for a group-level interval" in summary
    # the paired deltas per seed: the clip bootstrap's verdict is about these clips, the group one's reason beside it
    deltas = re.findall(r"^  (?:seed_\d+| ) +(ECE|NLL|Brier|accuracy) .*$", summary, re.M)
    assert deltas == ["ECE", "NLL", "Brier", "accuracy"] * 3
    for line in re.findall(r"^  (?:seed_\d+| ) +(?:ECE|NLL|Brier|accuracy) .*$", summary, re.M):
        assert re.search(r"\] (better|worse|no clear difference) on these clips; over groups: no interval: 3 groups: "
                         "too few", line), line
    assert "The t-interval across 3 seeds covers training randomness only" in summary
    assert js["group_level"]["n_groups"] == 3 and set(js["group_level"]["systems"]) == {
        "seed_42", "seed_123", "seed_456", "zeroshot", "baselines/silero"}
    seeds = [json.loads((project / f"metrics/test/seed_{s}.json").read_text()) for s in SEEDS]
    for g, block in js["per_group"]["fine_tuned"].items():
        acc = block["calibrated"]["accuracy"]
        assert acc["mean"] == pytest.approx(np.mean([r["per_group"][g]["calibrated"]["accuracy"] for r in seeds]), abs=1e-6)
        cell = re.escape(fmt_mean_sd("accuracy", acc["mean"], acc["sd"]))
        assert re.search(rf"^{g}\s.*fine-tuned \(k=3\)\s+calibrated\s+{cell}", summary, re.M), g


@pytest.mark.slow
def test_the_stage_command_lines_write_the_same_files(project, study):
    """The real command lines, as dvc.yaml runs them, write what the in-process run writes, byte for byte."""
    twin = study
    for s in SEEDS:
        stage(project, "calibrate", "--seed", str(s))
        stage(project, "evaluate", "--seed", str(s))
    stage(project, "references")
    stage(project, "aggregate")
    for rel in WRITTEN:
        assert (project / rel).read_bytes() == (twin / rel).read_bytes(), rel
    for png in ("plots/calibration/seed_42_dev_reliability.png", "plots/summary/per_seed.png"):
        assert (project / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    for name in ("calibrate", "evaluate", "references", "aggregate"):
        res = stage(project, name, "--help")
        assert res.returncode == 0 and "usage" in res.stdout
    bad = stage(project, "evaluate", "--seed", "7", check=False)
    _one_line_error(bad, "models/calibrators/seed_7.json", "calibrate")


def test_platt_moves_the_boundary_temperature_does_not(study, tmp_path):
    """The simulated seeds put the boundary inside the SPEECH clips (shift -2): platt raises SPEECH accuracy."""
    import shutil

    temp = json.loads((study / "metrics/summary.json").read_text())["fine_tuned"]
    project = shutil.copytree(study, tmp_path / "platt")
    set_params(project, {"method": "platt"})
    run_all(project, references=False)
    platt = json.loads((project / "metrics/summary.json").read_text())["fine_tuned"]
    assert temp["calibrated"]["acc_speech"]["mean"] == temp["uncalibrated"]["acc_speech"]["mean"]
    assert platt["calibrated"]["acc_speech"]["mean"] > platt["uncalibrated"]["acc_speech"]["mean"]


def test_one_seed_says_there_is_no_interval_across_seeds(study, tmp_path):
    """With k = 1 the summary claims no t-interval across seeds and says why there is none."""
    import shutil

    project = shutil.copytree(study, tmp_path / "one_seed")
    params = yaml.safe_load((project / "params.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump({**params, "seeds": [42]}))
    inproc(project, "aggregate")
    summary = (project / "metrics/summary.txt").read_text()
    assert "(k=1)" in summary and "1 seed: no interval across seeds" in summary
    assert "Student-t" not in summary and "t-CI" not in summary and "t-interval across" not in summary
    assert re.search(r"^Overall:\s+\d+\.\d% ± n/a$", summary, re.M)


def test_the_references_are_the_same_computed_on_one_process_or_on_two(tmp_path, monkeypatch):
    """run_references computes its systems on forked workers (speech_calibration.parallel): every file it writes,
    the PNGs included, is byte for byte what one process writes."""
    from speech_calibration import params as params_mod
    from speech_calibration.report.references import run_references

    written = {}
    for workers in (1, 2):
        root = make_project(tmp_path / f"workers_{workers}")
        monkeypatch.chdir(root)
        index = run_references(params_mod.load(root / "params.yaml"), workers=workers)
        assert index["evaluated"] == ["zeroshot", "baselines/silero"], index
        written[workers] = {p.relative_to(root).as_posix(): p.read_bytes() for folder in
                            ("metrics/references", "evaluation/references", "models/calibrators/references")
                            for p in (root / folder).rglob("*") if p.is_file()}
    assert any(name.endswith(".png") for name in written[1]) and len(written[1]) > 6
    assert written[2] == written[1]


@pytest.mark.parametrize("method", ["beta", "isotonic", "contextual", "batch", "none", "auto"])
def test_every_method_runs_and_is_recorded(project, method):
    set_params(project, {"method": method, "tune_threshold": True})
    inproc(project, "calibrate", "--seed", "42")
    inproc(project, "evaluate", "--seed", "42")
    cal = json.loads((project / "metrics/calibration/seed_42.json").read_text())
    fitted = calibrators.load(project / "models/calibrators/seed_42.json")
    assert cal["method_requested"] == method and cal["method_fitted"] == fitted.method
    assert cal["threshold"] == fitted.threshold
    temp_txt = (project / "metrics/calibration/seed_42_optimal_temp.txt").read_text().strip()
    if method == "auto":
        assert "reason" in fitted.info and cal["method_fitted"] in fitted.info["cv_nll"]
    else:
        assert type(fitted) is calibrators.REGISTRY[method]
        assert temp_txt == ("1.000000" if method == "none" else "nan")
    res = json.loads((project / "metrics/test/seed_42.json").read_text())
    assert res["method_fitted"] == cal["method_fitted"]
    _check_tuned_threshold(project, method, cal["threshold"], res)
    # a VAD baseline has no content-free inputs: contextual falls back to none, recorded
    if method == "contextual":
        assert fitted.info["content_free_inputs"] == cal["content_free_inputs"] == ["silence", "noise"]
        inproc(project, "references")
        silero = json.loads((project / "metrics/references/calibration/baselines/silero.json").read_text())
        assert silero["method_requested"] == "contextual" and silero["method_fitted"] == "none"
        fallback = calibrators.load(project / "models/calibrators/references/baselines/silero.json")
        assert fallback.method == "none" and "fallback" in fallback.info


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float((np.mean(pred[y == 1] == 1) + np.mean(pred[y == 0] == 0)) / 2)


def _check_tuned_threshold(project: Path, method: str, threshold: float, res: dict) -> None:
    """calibration.tune_threshold against references computed here. On dev (logit difference shifted by -2, so
    p = 0.5 is not the best boundary until a calibrator moves it): the threshold reaches the best balanced
    accuracy of any threshold (a brute force over every dev p), and moves off 0.5 exactly when 0.5 falls short
    of it; uncalibrated ("none") it must. On test: the tuned block's accuracy, per-class and balanced accuracy
    are those recomputed at that threshold from evaluation/seed_42/test_calibrated.csv."""
    files = layout.seed_files(42)
    dev = pd.read_csv(project / files.predictions("dev"))
    p_dev = calibrators.load(project / files.calibrator).predict_proba(dev["logit_A"].to_numpy(), dev["logit_B"].to_numpy())
    y_dev = (dev["label"] == "SPEECH").to_numpy(int)
    best = max(_balanced_accuracy(y_dev, (p_dev >= t).astype(int)) for t in [*np.unique(p_dev), np.inf])
    assert _balanced_accuracy(y_dev, (p_dev >= threshold).astype(int)) == pytest.approx(best, abs=1e-12)
    at_half = _balanced_accuracy(y_dev, (p_dev >= 0.5).astype(int))
    if method == "none":
        assert at_half < best - 0.05, "the shifted dev data should need a threshold other than 0.5"
    if at_half >= best - 1e-12:  # nothing to gain: the threshold stays 0.5 and test reports no tuned block
        assert threshold == 0.5 and "tuned_threshold" not in res
        return
    assert threshold != 0.5
    out = pd.read_csv(project / files.test_calibrated_csv)
    y, p = (out["label"] == "SPEECH").to_numpy(int), out["p_speech"].to_numpy(float)
    pred, pred_half = (p >= threshold).astype(int), (p >= 0.5).astype(int)
    assert (out["predicted_token_tuned"] == np.where(pred == 1, "A", "B")).all()
    tuned = res["tuned_threshold"]
    assert tuned["threshold"] == pytest.approx(threshold, abs=1e-6)
    assert tuned["accuracy"] == pytest.approx(np.mean(pred == y), abs=1e-6)
    assert tuned["balanced_accuracy"] == pytest.approx(_balanced_accuracy(y, pred), abs=1e-6)
    assert tuned["acc_speech"] == pytest.approx(np.mean(pred[y == 1] == 1), abs=1e-6)
    assert tuned["acc_nonspeech"] == pytest.approx(np.mean(pred[y == 0] == 0), abs=1e-6)
    assert res["calibrated"]["accuracy"] == pytest.approx(np.mean(pred_half == y), abs=1e-6)  # 0.5 stays the default
    assert (pred != pred_half).any(), "the tuned threshold should change some test decision, or this check is blind"


# ------------------------------------------------------------------------------ dev only, never test
def test_calibration_never_reads_test(project):
    written = ("metrics/calibration/seed_42.json", "models/calibrators/seed_42.json")
    inproc(project, "calibrate", "--seed", "42")
    first = [(project / f).read_bytes() for f in written]
    test_csv = project / "predictions/seeds/seed_42/test.csv"
    # change the test split beyond recognition, then remove it and leave an unreadable directory in its place
    df = pd.read_csv(test_csv)
    df["logit_A"] = -df["logit_A"]
    df.to_csv(test_csv, index=False)
    inproc(project, "calibrate", "--seed", "42")
    assert [(project / f).read_bytes() for f in written] == first
    test_csv.unlink()
    test_csv.mkdir()
    test_csv.chmod(0)
    try:
        inproc(project, "calibrate", "--seed", "42")
    finally:
        test_csv.chmod(0o700)
    assert [(project / f).read_bytes() for f in written] == first


# ---------------------------------------------------------------------------------------- bad input
def _one_line_error(res: subprocess.CompletedProcess, *fragments: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_bad_inputs_end_in_one_line_and_exit_2(project, capsys):
    def cli(name, *args):
        return inproc_cli(project, capsys, name, *args)

    dev = project / "predictions/seeds/seed_42/dev.csv"
    df = pd.read_csv(dev)
    df.loc[3, "label"] = "speech?"
    df.to_csv(dev, index=False)
    _one_line_error(cli("calibrate", "--seed", "42"), "dev.csv row 4", "speech?")
    _one_line_error(cli("calibrate", "--seed", "7"), "predictions/seeds/seed_7/dev.csv", "not found")
    _one_line_error(cli("evaluate", "--seed", "123"), "models/calibrators/seed_123.json", "calibrate")
    (project / "predictions/seeds/seed_123/dev_content_free.csv").unlink()
    set_params(project, {"method": "contextual"})
    _one_line_error(cli("calibrate", "--seed", "123"), "dev_content_free.csv", "contextual")
    set_params(project, {"method": "temperatures"})
    _one_line_error(cli("calibrate", "--seed", "123"), "calibration.method", "temperatures")
    set_params(project, {"temperature_bounds": [1.0, 0.5]})
    _one_line_error(cli("calibrate", "--seed", "123"), "temperature_bounds")
    set_params(project)
    one_class = pd.read_csv(project / "predictions/seeds/seed_456/dev.csv").assign(label="SPEECH", ground_truth_token="A")
    one_class.to_csv(project / "predictions/seeds/seed_456/dev.csv", index=False)
    _one_line_error(cli("calibrate", "--seed", "456"), "predictions/seeds/seed_456/dev.csv: calibration.method=temperature",
                    "only SPEECH clips", "none, contextual, batch")
    (project / "models/calibrators").mkdir(parents=True, exist_ok=True)
    (project / "models/calibrators/seed_456.json").write_text("{not json")
    _one_line_error(cli("evaluate", "--seed", "456"), "models/calibrators/seed_456.json", "not valid JSON")
    (project / "models/calibrators/seed_456.json").write_text(json.dumps({"method": "platt", "params": {"slope": 1}}))
    _one_line_error(cli("evaluate", "--seed", "456"), "models/calibrators/seed_456.json", "bias")
    _one_line_error(cli("aggregate"), "metrics/test/seed_42.json", "evaluate")
    res = cli("calibrate")  # no --seed: argparse's usage and one error line
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].endswith("arguments are required: --seed")


def test_a_stage_that_fails_half_way_leaves_all_of_its_previous_outputs(project, capsys):
    """evaluate writes its metrics JSON, three CSVs, then its figure; run by hand with the figure's path taken by a
    folder, it fails at the figure, and the JSON and CSVs it had written do not go in: every previous output stays,
    byte for byte, with nothing beside them. Once the path is free, the same run replaces them all."""
    files = layout.seed_files(42)
    outputs = [files.test_json, files.test_calibrated_csv, files.per_group_csv, files.reliability("test", "csv"),
               files.reliability("test", "png")]
    inproc(project, "calibrate", "--seed", "42")
    inproc(project, "evaluate", "--seed", "42")
    before = {path: (project / path).read_bytes() for path in outputs}
    listing = sorted(p.name for path in outputs for p in (project / path).parent.iterdir())
    set_params(project, {"method": "platt"}, n_bins=5)  # every output changes
    inproc(project, "calibrate", "--seed", "42")
    figure = project / files.reliability("test", "png")
    figure.unlink()
    figure.mkdir()
    _one_line_error(inproc_cli(project, capsys, "evaluate", "--seed", "42"), "seed_42_test_reliability.png",
                    "is a folder")
    figure.rmdir()
    assert {path: (project / path).read_bytes() for path in outputs[:-1]} == {p: before[p] for p in outputs[:-1]}
    assert sorted(p.name for path in outputs for p in (project / path).parent.iterdir()) == \
        [n for n in listing if n != figure.name]
    assert inproc_cli(project, capsys, "evaluate", "--seed", "42").returncode == 0
    assert [path for path in outputs if (project / path).read_bytes() == before[path]] == []


@pytest.mark.parametrize("name", ["calibrate", "evaluate", "references", "aggregate"])
def test_help(project, capsys, name):
    res = inproc_cli(project, capsys, name, "--help")
    assert res.returncode == 0 and "usage" in res.stdout


# ------------------------------------------------------------------------------------ study wrappers
@pytest.mark.slow
def test_study_wrappers(project):
    res = run(project, str(ROOT / "scripts/calibrate_temperature.py"), "--predictions_csv",
              "predictions/seeds/seed_42/dev.csv", "--output_temp", "results/seed_42_optimal_temp.txt", "--plot",
              "results/seed_42_calibration_analysis.png")
    text = (project / "results/seed_42_optimal_temp.txt").read_text()
    assert re.fullmatch(r"\d+\.\d{6}\n", text)
    assert f"Optimal temperature: T={text.strip()}" in res.stdout
    assert re.search(r"^Overall:\s+(\S+) -> \1 ", res.stdout, re.M)  # unchanged
    assert (project / "results/seed_42_calibration_analysis.png").read_bytes()[:4] == b"\x89PNG"
    # same T as the pipeline's calibrate stage
    stage(project, "calibrate", "--seed", "42")
    assert float(text) == pytest.approx(float((project / "metrics/calibration/seed_42_optimal_temp.txt").read_text()),
                                        abs=1e-6)

    # the study's test CSVs: raw logits, p_speech at the calibrated temperature, ground_truth_token only
    for s in SEEDS:
        df = pd.read_csv(project / f"predictions/seeds/seed_{s}/test.csv")
        df = df[["clip_id", "ground_truth_token", "logit_A", "logit_B", "predicted_token"]].assign(
            p_speech=1 / (1 + np.exp(-(df["logit_A"] - df["logit_B"]) / 0.5)))
        df.to_csv(project / f"results/seed_{s}_test_calibrated.csv", index=False)
    res = run(project, str(ROOT / "scripts/aggregate_multi_seed.py"), "--model_name", "calibrated_v1", "--seeds", "42",
              "123", "456", "--predictions_dir", "results", "--test_pattern", "seed_{seed}_test_calibrated.csv",
              "--output_file", "results/multi_seed_calibrated_summary.txt")
    written = (project / "results/multi_seed_calibrated_summary.txt").read_text()
    for label in ("Overall:", "SPEECH:", "NONSPEECH:", "ECE:", "ROC-AUC:"):
        assert re.search(rf"^{label}\s+\d+\.\d+%? ± \d+\.\d+%?$", written, re.M), label
        assert label in res.stdout
    bad = run(project, str(ROOT / "scripts/aggregate_multi_seed.py"), "--model_name", "x", "--seeds", "1",
              "--predictions_dir", "results", "--output_file", "o.txt", check=False)
    _one_line_error(bad, "seed_1_test_calibrated.csv", "not found")
    bad = run(project, str(ROOT / "scripts/calibrate_temperature.py"), "--predictions_csv", "results/o.csv",
              "--output_temp", "t.txt", check=False)
    _one_line_error(bad, "results/o.csv")


@pytest.mark.slow
def test_study_wrappers_name_the_flag_or_the_cell_they_reject(project):
    """--bounds is the wrapper's flag, not params' calibration.temperature_bounds; a p_speech cell that is text or
    empty (beside good logits) is named by file, row and column."""
    for bounds in (("1", "0.5"), ("0", "5"), ("0.1", "inf")):
        bad = run(project, str(ROOT / "scripts/calibrate_temperature.py"), "--predictions_csv",
                  "predictions/seeds/seed_42/dev.csv", "--output_temp", "t.txt", "--bounds", *bounds, check=False)
        _one_line_error(bad, "--bounds", "0 < LOW < HIGH")
        assert "temperature_bounds" not in bad.stderr and not (project / "t.txt").exists()
    df = pd.read_csv(project / "predictions/seeds/seed_42/test.csv")
    (project / "results").mkdir()
    for seed, cell, shown in ((1, "high", "'high'"), (2, None, "missing")):
        df.assign(p_speech=df["p_speech"].astype(object).where(df.index != 4, cell)).to_csv(
            project / f"results/seed_{seed}_test.csv", index=False)
        bad = run(project, str(ROOT / "scripts/aggregate_multi_seed.py"), "--model_name", "x", "--seeds", str(seed),
                  "--predictions_dir", "results", "--test_pattern", "seed_{seed}_test.csv", "--output_file", "o.txt",
                  check=False)
        _one_line_error(bad, f"results/seed_{seed}_test.csv row 5: p_speech is {shown}", "not a probability in [0, 1]")


def _study_csv(path: Path, n: int = 16, **columns) -> Path:
    """A study-style dev/test CSV of ``n`` clips: alternating truth, logits that mostly agree with it."""
    y = np.arange(n) % 2
    z = np.where(y == 1, 1.5, -1.5) + np.linspace(-1, 1, n)
    frame = pd.DataFrame({"clip_id": [f"c{i}" for i in range(n)], "ground_truth_token": np.where(y == 1, "A", "B"),
                          "logit_A": z / 2, "logit_B": -z / 2, "predicted_token": np.where(z >= 0, "A", "B"),
                          "p_speech": 1 / (1 + np.exp(-z))})
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.assign(**columns).to_csv(path, index=False)
    return path


def test_study_wrappers_refuse_what_they_cannot_write_before_any_work(tmp_path):
    """An output that is a folder, a .pdf plot, a p_speech of 1.7, a seed given twice, --n_bins 0 and an infinite
    temperature are each one line, exit 2, no traceback (review: some were tracebacks after the work, and calibrate
    had written its temperature when the plot failed); nothing is written."""
    dev = _study_csv(tmp_path / "dev.csv")
    script = str(ROOT / "scripts/calibrate_temperature.py")
    (tmp_path / "a_folder").mkdir()
    _one_line_error(run(tmp_path, script, "--predictions_csv", "dev.csv", "--output_temp", "t.txt", "--plot", "a_folder",
                        check=False), "--plot: a_folder must end in .png")
    _one_line_error(run(tmp_path, script, "--predictions_csv", "dev.csv", "--output_temp", "t.txt", "--plot",
                        "dev.csv/x.png", check=False), "dev.csv/x.png: dev.csv is a file, not a folder")
    (tmp_path / "taken.png").mkdir()
    _one_line_error(run(tmp_path, script, "--predictions_csv", "dev.csv", "--output_temp", "t.txt", "--plot",
                        "taken.png", check=False), "taken.png: is a folder; name a file to write")
    _one_line_error(run(tmp_path, script, "--predictions_csv", "dev.csv", "--output_temp", "a_folder", check=False),
                    "a_folder: is a folder")
    assert not (tmp_path / "t.txt").exists()
    pd.read_csv(dev).drop(columns=["logit_A", "logit_B"]).assign(p_speech=lambda f: f["p_speech"].where(f.index != 3, 1.7)) \
        .to_csv(tmp_path / "p_only.csv", index=False)
    _one_line_error(run(tmp_path, script, "--predictions_csv", "p_only.csv", "--output_temp", "t.txt", check=False),
                    "p_only.csv row 4: p_speech is '1.7', not a probability in [0, 1]")
    assert not (tmp_path / "t.txt").exists()
    run(tmp_path, script, "--predictions_csv", "dev.csv", "--output_temp", "t.txt", "--plot", "r.png")
    assert (tmp_path / "t.txt").is_file() and (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"

    aggregate = str(ROOT / "scripts/aggregate_multi_seed.py")
    for s in (1, 2):
        _study_csv(tmp_path / f"results/seed_{s}_test_calibrated.csv")
    common = ("--model_name", "m", "--predictions_dir", "results", "--output_file", "summary.txt")
    _one_line_error(run(tmp_path, aggregate, *common, "--seeds", "1", "2", "1", check=False), "--seeds: 1 given twice")
    _one_line_error(run(tmp_path, aggregate, *common, "--seeds", "1", "2", "--n_bins", "0", check=False),
                    "--n_bins: 0 must be at least 2")
    _one_line_error(run(tmp_path, aggregate, "--model_name", "m", "--predictions_dir", "results", "--output_file",
                        "a_folder", "--seeds", "1", "2", check=False), "a_folder: is a folder")
    assert not (tmp_path / "summary.txt").exists()
    _one_line_error(run(tmp_path, str(ROOT / "scripts/evaluate_with_logits.py"), "--checkpoint", "none", "--test_csv",
                        "dev.csv", "--temperature", "inf", "--output_csv", "o.csv", check=False),
                    "--temperature: inf must be a positive finite number")
    _one_line_error(run(tmp_path, str(ROOT / "scripts/evaluate_with_logits.py"), "--checkpoint", "none", "--test_csv",
                        "dev.csv", "--output_csv", "a_folder", check=False), "a_folder: is a folder")
    (tmp_path / "a_file").write_text("x")
    _one_line_error(run(tmp_path, str(ROOT / "scripts/finetune_qwen_audio.py"), "--seed", "1", "--output_dir", "a_file",
                        check=False), "a_file is a file, not a folder")


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "scripts").glob("*.py")))
def test_each_study_wrapper_imports_the_library_beside_it(tmp_path, script):
    """A wrapper run as ``python scripts/<name>.py`` uses the package of its own checkout, not whichever one is
    installed or on PYTHONPATH (review: two of the four ran another checkout's code). A copy of the checkout whose
    package announces itself shows which one ran."""
    import shutil

    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "scripts", copy / "scripts")
    shutil.copytree(ROOT / "speech_calibration", copy / "speech_calibration",
                    ignore=shutil.ignore_patterns("__pycache__"))
    init = copy / "speech_calibration/__init__.py"
    init.write_text(init.read_text() + "\nimport sys as _sys\n_sys.stderr.write('this-copy-of-the-package\\n')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}  # another checkout first on the path
    res = subprocess.run([sys.executable, str(copy / "scripts" / script), "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "usage" in res.stdout, res.stderr
    assert "this-copy-of-the-package" in res.stderr


def test_headline_files_cover_test_and_every_evaluation_set():
    """``summary.headlines``: one file per system and series on test (``fine_tuned``: the seeds' mean; a detector by
    its short name) and the same for each evaluation set under ``metrics/headline/eval_sets/<name>/``, each with the
    seven short keys rounded to 4 decimals."""
    from speech_calibration.report.summary import HEADLINE_KEYS, SERIES, headlines

    def block(x):  # a system's metrics: every headline metric at x, 0.1 more when calibrated
        return {s: {name: x + (0.1 if s == "calibrated" else 0.0) for _, name in HEADLINE_KEYS} for s in SERIES}

    def seed_means(x):
        return {s: {name: {"mean": v, "sd": 0.0} for name, v in block(x)[s].items()} for s in SERIES}

    summary = {"fine_tuned": seed_means(0.5), "eval_sets": {"mine": {
        "fine_tuned": seed_means(0.3), "systems": {"seed_1": block(0.31234567), "baselines/silero": block(0.2)}}}}
    files = headlines(summary, {"seed_1": block(0.5)}, {"baselines/silero": {"test": block(0.6)}})
    where = ("fine_tuned", "seed_1", "silero", "eval_sets/mine/fine_tuned", "eval_sets/mine/seed_1",
             "eval_sets/mine/silero")
    assert {p.as_posix() for p in files} == {f"metrics/headline/{w}/{series}.json" for w in where for series in SERIES}
    assert files[Path("metrics/headline/eval_sets/mine/seed_1/uncalibrated.json")] == {k: 0.3123 for k, _ in HEADLINE_KEYS}
    assert files[Path("metrics/headline/eval_sets/mine/fine_tuned/calibrated.json")]["ece"] == 0.4
    assert files[Path("metrics/headline/eval_sets/mine/silero/uncalibrated.json")]["auc"] == 0.2
    assert files[Path("metrics/headline/silero/calibrated.json")]["auc"] == 0.7
    assert files[Path("metrics/headline/fine_tuned/uncalibrated.json")]["nll"] == 0.5


def test_summary_json_and_txt_clip_bounded_intervals_alike():
    """A t-interval across seeds ignores a metric's range: both files clip [0, 1] metrics to [0, 1], and only those."""
    from speech_calibration.report.summary import BOUNDED, seed_interval, study_lines

    raw = seed_interval([0.9, 1.0, 1.0], "accuracy", 0.95)
    assert raw["hi"] == 1.0 and raw["lo"] < 0.9
    nll = seed_interval([0.05, 0.01, 0.02, 1.5], "nll", 0.95)
    assert nll["lo"] == 0.0 and nll["hi"] > 1.0  # NLL lives in [0, inf): clipped below only
    assert seed_interval([0.5, 0.6, 0.7], "accuracy", 0.95) == seed_interval([0.5, 0.6, 0.7], "nll", 0.95)  # inside
    line = study_lines([{"accuracy": v} for v in (0.9, 1.0, 1.0)], with_interval=True)[0]
    assert line.endswith(", 100.0%]")
    assert "accuracy" in BOUNDED and "nll" not in BOUNDED


def test_summary_json_intervals_stay_in_range(study):
    from speech_calibration.report.summary import BOUNDED, NONNEGATIVE

    js = json.loads((study / "metrics/summary.json").read_text())
    for series in ("uncalibrated", "calibrated"):
        for key, agg in js["fine_tuned"][series].items():
            if (key in BOUNDED or key in NONNEGATIVE) and agg["lo"] is not None:
                assert 0.0 <= agg["lo"] <= agg["mean"] <= agg["hi"], (series, key, agg)
            if key in BOUNDED and agg["hi"] is not None:
                assert agg["hi"] <= 1.0, (series, key, agg)


def test_summary_says_the_seeds_agree_instead_of_a_zero_width_t_interval():
    from speech_calibration.report.summary import study_lines

    agree = study_lines([{"accuracy": 1.0}] * 3, with_interval=True)[0]
    assert agree.startswith("Overall:") and agree.endswith("[the 3 seeds agree: no spread to make a t-CI of]"), agree
    differ = study_lines([{"accuracy": v} for v in (0.9, 1.0, 1.0)], with_interval=True)[0]
    assert "t-CI" in differ and "agree" not in differ


def test_calibrate_temperature_refuses_what_the_stages_refuse(tmp_path):
    """A label that disagrees with its ground_truth_token (the stage reads the label, the script the token: two
    temperatures from one file) and a clip_id on two rows end in one line naming the file and the rows."""
    script = str(ROOT / "scripts/calibrate_temperature.py")
    dev = _study_csv(tmp_path / "dev.csv")
    df = pd.read_csv(dev).assign(label=lambda f: np.where(f["ground_truth_token"] == "A", "SPEECH", "NONSPEECH"))
    df.to_csv(dev, index=False)
    run(tmp_path, script, "--predictions_csv", "dev.csv", "--output_temp", "t.txt")  # agreeing columns: fine
    df.assign(label=df["label"].where(df.index != 2, "SPEECH")).to_csv(tmp_path / "mixed.csv", index=False)
    _one_line_error(run(tmp_path, script, "--predictions_csv", "mixed.csv", "--output_temp", "m.txt", check=False),
                    "mixed.csv row 3: label SPEECH but ground_truth_token B; the two must agree")
    df.assign(clip_id=df["clip_id"].where(df.index != 5, "c1")).to_csv(tmp_path / "dup.csv", index=False)
    _one_line_error(run(tmp_path, script, "--predictions_csv", "dup.csv", "--output_temp", "m.txt", check=False),
                    "dup.csv row 6: duplicate clip_id 'c1' (also row 2)")
    assert not (tmp_path / "m.txt").exists()
