"""Evaluating one system on TEST with its dev-fitted calibrator, uncalibrated and calibrated side by side.

For ``<system>`` = ``seed_42`` (reference systems: ``metrics/references/test/<system>.json`` and
``evaluation/references/<system>/``), :func:`evaluate_system` writes:

* ``metrics/test/<system>.json``: ``{"uncalibrated": {...}, "calibrated": {...}, "delta_ci": {...}}``;
  each block holds accuracy, acc_speech, acc_nonspeech, balanced_accuracy, roc_auc, brier (+ Murphy
  reliability / resolution / uncertainty / within_bin), nll, ece, ece_mass, ece_debiased, ece_smooth, mce
  (estimators: :mod:`speech_calibration.stats.metrics`) and ``ci``: clip-bootstrap intervals of accuracy,
  ROC-AUC and each ECE; ``delta_ci``: paired-bootstrap calibrated-minus-uncalibrated of ECE, smooth ECE,
  NLL, Brier and accuracy with a verdict (better / worse / no clear difference); ``tuned_threshold`` when
  a dev-tuned decision threshold exists;
* ``evaluation/<system>/test_calibrated.csv``: the test predictions with uncalibrated and calibrated
  p(SPEECH) and predicted tokens; ``evaluation/<system>/per_group.csv``: accuracy per group;
* ``plots/test/<system>_test_reliability.csv`` and ``.png``: reliability for the predicted class and per class.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from speech_calibration.calibration import calibrators
from speech_calibration.data.schema import (
    GROUND_TRUTH_TOKEN,
    GROUP_ID,
    LABEL,
    LOGIT_A,
    LOGIT_B,
    NONSPEECH,
    SPEECH,
    label_to_int,
    read_predictions,
)
from speech_calibration.fileio import write_csv, write_json
from speech_calibration.layout import SystemFiles
from speech_calibration.params import Evaluate
from speech_calibration.report.reliability import plot_reliability, reliability_rows, rows_frame
from speech_calibration.stats import metrics
from speech_calibration.stats.resampling import bootstrap_replicates, interval_summary, paired_difference

log = logging.getLogger(__name__)

CI_KEYS = ("accuracy", "roc_auc", "ece", "ece_mass", "ece_debiased", "ece_smooth")
DELTA_KEYS = ("ece", "ece_smooth", "nll", "brier", "accuracy")
SERIES = ("uncalibrated", "calibrated")


def _r(x) -> float:
    return round(float(x), 6)


def evaluate_arrays(y: np.ndarray, p_uncal: np.ndarray, p_cal: np.ndarray, *, threshold: float = 0.5, n_bins: int = 15,
                    n_bootstrap: int = 2000, ci: float = 0.95, seed: int = 0) -> dict:
    """The metrics JSON of one system (see the module doc) from labels and the two p(SPEECH) columns."""
    series = {"uncalibrated": np.asarray(p_uncal, float), "calibrated": np.asarray(p_cal, float)}
    tuned = threshold != 0.5
    point = {name: metrics.binary_metrics(y, p, n_bins=n_bins) for name, p in series.items()}

    def stat(idx):
        out = {}
        yb = y[idx]
        for name, p in series.items():
            m = metrics.binary_metrics(yb, p[idx], n_bins=n_bins, decomposition=False)
            out.update({f"{name}/{k}": v for k, v in m.items()})
        if tuned:
            out["tuned/accuracy"] = metrics.accuracy(yb, metrics.predict(series["calibrated"][idx], threshold))
        return out

    reps = bootstrap_replicates(stat, len(y), n_boot=n_bootstrap, seed=seed)
    result: dict = {"n": int(len(y)), "n_speech": int(np.sum(y)), "n_bootstrap": n_bootstrap, "ci_level": ci}
    for name in SERIES:
        block = {k: _r(v) for k, v in point[name].items()}
        block["ci"] = {k: {kk: _r(vv) if isinstance(vv, float) else vv for kk, vv in
                           interval_summary(reps[f"{name}/{k}"], ci).items()} for k in CI_KEYS}
        result[name] = block
    result["delta_ci"] = {
        k: {kk: (_r(vv) if isinstance(vv, float) else vv) for kk, vv in paired_difference(
            point["uncalibrated"][k], point["calibrated"][k], reps[f"uncalibrated/{k}"], reps[f"calibrated/{k}"], ci=ci,
            lower_is_better=k in metrics.LOWER_IS_BETTER).items()}
        for k in DELTA_KEYS}
    if tuned:
        pred = metrics.predict(series["calibrated"], threshold)
        result["tuned_threshold"] = {
            "threshold": _r(threshold), "accuracy": _r(metrics.accuracy(y, pred)),
            "acc_speech": _r(metrics.class_accuracy(y, pred, 1)), "acc_nonspeech": _r(metrics.class_accuracy(y, pred, 0)),
            "balanced_accuracy": _r(metrics.balanced_accuracy(y, pred)),
            "ci": {"accuracy": {k: _r(v) if isinstance(v, float) else v
                                for k, v in interval_summary(reps["tuned/accuracy"], ci).items()}}}
    return result


def evaluate_system(files: SystemFiles, cfg: Evaluate) -> dict:
    """Evaluate one system on test with its dev-fitted calibrator; write its files (see the module doc)."""
    cal = calibrators.load(files.calibrator)
    path = files.predictions("test")
    df = read_predictions(path)
    y = label_to_int(df[LABEL])
    for cls in (SPEECH, NONSPEECH):
        if cls not in set(df[LABEL]):
            log.warning("%s: no %s clip: %s accuracy and ROC-AUC are undefined (NaN / null)", path, cls, cls)
    a, b = df[LOGIT_A].to_numpy(float), df[LOGIT_B].to_numpy(float)
    p_uncal = metrics.p_speech_from_logits(a, b)
    p_cal = cal.predict_proba(a, b)
    result = {"system": files.system, "method_fitted": cal.method, "n_groups": int(df[GROUP_ID].nunique()), **evaluate_arrays(
        y, p_uncal, p_cal, threshold=cal.threshold, n_bins=cfg.n_bins, n_bootstrap=cfg.n_bootstrap, ci=cfg.ci,
        seed=cfg.bootstrap_seed)}
    write_json(files.test_json, result)

    # calibrated predictions, per clip
    token = dict(zip(df[LABEL], df[GROUND_TRUTH_TOKEN].astype(str)))
    tok_s, tok_n = token.get(SPEECH, "A"), token.get(NONSPEECH, "B")
    out = df.copy()
    out["p_speech_uncalibrated"] = p_uncal
    out["predicted_token_uncalibrated"] = np.where(metrics.predict(p_uncal) == 1, tok_s, tok_n)
    out["p_speech"] = p_cal
    out["predicted_token"] = np.where(metrics.predict(p_cal) == 1, tok_s, tok_n)
    if cal.threshold != 0.5:
        out["predicted_token_tuned"] = np.where(metrics.predict(p_cal, cal.threshold) == 1, tok_s, tok_n)
    write_csv(files.test_calibrated_csv, out)

    # per group
    rows = []
    for g, idx in df.groupby(GROUP_ID, sort=True).indices.items():
        yy = y[idx]
        row = {"group_id": g, "n": len(idx), "n_speech": int(yy.sum()),
               "accuracy_uncalibrated": float(metrics.accuracy(yy, metrics.predict(p_uncal[idx]))),
               "accuracy_calibrated": float(metrics.accuracy(yy, metrics.predict(p_cal[idx])))}
        if cal.threshold != 0.5:
            row["accuracy_tuned"] = float(metrics.accuracy(yy, metrics.predict(p_cal[idx], cal.threshold)))
        rows.append(row)
    write_csv(files.per_group_csv, pd.DataFrame(rows))

    rel = reliability_rows(files.system, {"uncalibrated": p_uncal, "calibrated": p_cal}, y, n_bins=cfg.n_bins)
    write_csv(files.reliability("test", "csv"), rows_frame(rel))
    plot_reliability(files.reliability("test", "png"), rel, kinds=("predicted", "SPEECH", "NONSPEECH"),
                     title=f"{files.system} test ({cal.method})",
                     legend={k: f"{k} (ECE {result[k]['ece']:.3f})" for k in SERIES})
    u, c, d = result["uncalibrated"], result["calibrated"], result["delta_ci"]
    log.info("%s test (%d clips): accuracy %.1f%% -> %.1f%%, ROC-AUC %.3f -> %.3f, ECE %.3f -> %.3f "
             "(paired delta %+.3f [%+.3f, %+.3f]: %s)", files.system, result["n"], 100 * u["accuracy"], 100 * c["accuracy"],
             u["roc_auc"], c["roc_auc"], u["ece"], c["ece"], d["ece"]["delta"], d["ece"]["lo"], d["ece"]["hi"],
             d["ece"]["verdict"])
    return result
