"""What the report stages make of damaged or missing inputs: the ``aggregate`` stage refuses a metrics file whose
value is missing, null or not a number (one line naming the file, the key and the stage to re-run) and keeps the
nulls evaluate writes for undefined metrics; the ``references`` stage warns of a system of ``evaluate.references``
that has no predictions folder (a typo), stays quiet for a switched-off detector, and refuses a folder that holds
only one of dev.csv and test.csv."""
from __future__ import annotations

import json
import logging
import shutil

import pytest
import yaml

from speech_calibration import params as params_mod
from speech_calibration.report.references import run_references
from tests.test_calibrate_evaluate_aggregate import _one_line_error, inproc_cli, make_project, run_all

SEED_JSON = "metrics/test/seed_42.json"
REFERENCE_JSON = "metrics/references/test/zeroshot.json"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A project through calibrate, evaluate, references and aggregate once; tests change copies of it."""
    root = make_project(tmp_path_factory.mktemp("evaluated"))
    run_all(root)
    return root


@pytest.fixture
def damaged(evaluated, tmp_path):
    """A copy of the evaluated project to damage."""
    return shutil.copytree(evaluated, tmp_path / "project")


def _edit(path, series: str, key: str, value=...) -> None:
    """Set ``series.key`` of the metrics JSON at ``path`` to ``value`` (delete it when no value is given)."""
    result = json.loads(path.read_text())
    if value is ...:
        del result[series][key]
    else:
        result[series][key] = value
    path.write_text(json.dumps(result))


def _params(root, **sections) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump({**params, **sections}))


# ------------------------------------------------------------------------------------------ aggregate
@pytest.mark.parametrize(("file", "series", "key", "value", "says"), [
    (SEED_JSON, "calibrated", "ece", "x", '"x", not a number'),
    (SEED_JSON, "calibrated", "ece", ..., "no value"),
    (SEED_JSON, "uncalibrated", "nll", None, "is null"),
    (SEED_JSON, "calibrated", "roc_auc", True, "true, not a number"),
    (REFERENCE_JSON, "uncalibrated", "brier", "0.1", '"0.1", not a number'),
])
def test_aggregate_refuses_a_missing_or_non_numeric_metric(damaged, capsys, file, series, key, value, says):
    _edit(damaged / file, series, key, value)
    fix = "dvc repro evaluate@42" if file == SEED_JSON else "dvc repro references"
    _one_line_error(inproc_cli(damaged, capsys, "aggregate"), file, f"'{series}.{key}'", says, fix)


def test_aggregate_keeps_the_nulls_evaluate_writes_for_undefined_metrics(damaged, capsys):
    """ROC-AUC and a class's accuracy are undefined (null) where a class is absent, the debiased ECE for fewer than 2
    clips: shown as n/a, and the per-seed figure leaves out the bar."""
    _edit(damaged / SEED_JSON, "calibrated", "roc_auc", None)
    _edit(damaged / SEED_JSON, "calibrated", "acc_speech", None)
    _edit(damaged / REFERENCE_JSON, "uncalibrated", "ece_debiased", None)
    res = inproc_cli(damaged, capsys, "aggregate")
    assert res.returncode == 0, res.stderr
    summary = json.loads((damaged / "metrics/summary.json").read_text())
    assert summary["per_seed"]["seed_42"]["calibrated"]["roc_auc"] is None
    assert summary["per_seed"]["seed_42"]["calibrated"]["acc_speech"] is None
    assert summary["references"]["zeroshot"]["uncalibrated"]["ece_debiased"] is None


# ------------------------------------------------------------------------------------------ references
def test_references_warn_of_a_system_without_a_folder_and_not_of_a_switched_off_detector(tmp_path, monkeypatch,
                                                                                          caplog):
    root = make_project(tmp_path)
    _params(root, evaluate={"references": ["baselines/webrtcc", "baselines/webrtc"], "n_bootstrap": 300},
            baselines={"webrtc": False})
    monkeypatch.chdir(root)
    with caplog.at_level(logging.INFO, logger="speech_calibration.report.references"):
        index = run_references(params_mod.load(root / "params.yaml"), workers=1)
    assert index == {"evaluated": [], "skipped": {
        "baselines/webrtcc": "predictions/baselines/webrtcc/dev.csv, predictions/baselines/webrtcc/test.csv absent",
        "baselines/webrtc": "predictions/baselines/webrtc/dev.csv, predictions/baselines/webrtc/test.csv absent"}}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, warned
    for part in ("evaluate.references", "baselines/webrtcc", "predictions/baselines/webrtcc does not exist",
                 "baselines/silero, zeroshot"):
        assert part in warned[0], warned[0]
    quiet = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "baselines/webrtc " in r.getMessage()]
    assert len(quiet) == 1 and "(baselines.webrtc: false, or not predicted yet)" in quiet[0], caplog.text


@pytest.mark.parametrize(("system", "split", "stage"), [("zeroshot", "test", "predict_zeroshot"),
                                                         ("baselines/silero", "dev", "baselines")])
def test_references_refuse_a_folder_with_only_one_of_dev_and_test(tmp_path, capsys, system, split, stage):
    root = make_project(tmp_path)
    (root / f"predictions/{system}/{split}.csv").unlink()
    _one_line_error(inproc_cli(root, capsys, "references"), f"predictions/{system}/{split}.csv", "file not found",
                    f"dvc repro {stage}")
    assert not (root / "metrics/references/systems.json").exists()
