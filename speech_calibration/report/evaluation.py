"""Evaluating one system on TEST with its dev-fitted calibrator, uncalibrated and calibrated side by side.

For ``<system>`` = ``seed_42`` (reference systems: ``metrics/references/test/<system>.json`` and
``evaluation/references/<system>/``), :func:`evaluate_system` writes:

* ``metrics/test/<system>.json``: ``{"uncalibrated": {...}, "calibrated": {...}, "delta_ci": {...}}``;
  each block holds accuracy, acc_speech, acc_nonspeech, balanced_accuracy, roc_auc, brier (+ Murphy
  reliability / resolution / uncertainty / within_bin), nll, ece, ece_mass, ece_debiased, ece_smooth, mce
  (estimators: :mod:`speech_calibration.stats.metrics`), ``ci``: clip-level intervals of ``CI_KEYS`` (accuracy's
  exact binomial, :func:`~speech_calibration.stats.resampling.binomial_interval`; ROC-AUC's and the ECEs' from a
  clip bootstrap, the ECEs' reflected about the estimate, :func:`~speech_calibration.stats.resampling.basic_interval`),
  and ``ci_group``: all from a bootstrap over test groups (expanded,
  :func:`~speech_calibration.stats.resampling.expanded_level`), or the reason there is none;
  ``delta_ci`` / ``delta_ci_group``: paired calibrated-minus-uncalibrated ECE, smooth ECE, NLL,
  Brier and accuracy (clip / group bootstrap) with a verdict (better / worse / no clear difference);
  ``group_bootstrap``: how the groups were resampled and the rule for an interval; ``per_group``: each
  metric on each test group alone; ``tuned_threshold`` when a dev-tuned decision threshold exists;
* ``evaluation/<system>/test_calibrated.csv``: the test predictions with uncalibrated and calibrated
  p(SPEECH) and predicted tokens; ``evaluation/<system>/per_group.csv``: the ``per_group`` block as a table;
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
    stratum_label,
)
from speech_calibration.fileio import write_csv, write_json
from speech_calibration.layout import SystemFiles
from speech_calibration.params import Evaluate
from speech_calibration.report.reliability import plot_reliability, reliability_rows, rows_frame
from speech_calibration.stats import metrics
from speech_calibration.stats.resampling import (
    MIN_CLUSTERS,
    MIN_DISTINCT,
    basic_interval,
    binomial_interval,
    bootstrap_replicates,
    class_strata,
    cluster_bootstrap_replicates,
    cluster_interval,
    clusters_per_stratum,
    composition_strata,
    expanded_level,
    expansion_clusters,
    interval_summary,
    paired_difference,
    paired_difference_text,
)

log = logging.getLogger(__name__)

CI_KEYS = ("accuracy", "roc_auc", "ece", "ece_mass", "ece_smooth")  # not ece_debiased: see ECE_INTERVALS
ACCURACY_INTERVAL = (
    "accuracy: the exact binomial (Clopper-Pearson) interval of the right answers over the clips, not a bootstrap "
    "one, which has no width when every clip is right (or wrong); any other ci with one value in every resample "
    "has none, and says so")
ECE_INTERVALS = (
    "ece, ece_mass and ece_smooth: basic bootstrap intervals [2 x - q_hi, 2 x - q_lo] (x the estimate, q the "
    "percentiles of the resampled values), kept within [0, 1], so it can lie below x (none where [0, 1] would shut "
    "it to one value): a resample repeats clips, the repeats look surer of "
    "themselves, so the resampled values sit above the estimate as the estimate sits above the truth; reflecting "
    "corrects much of that, not all: on small test sets these intervals are still too short (coverage measured in "
    "README.md, What the numbers claim); ece_debiased has none: its correction for bin noise assumes distinct clips")
DELTA_KEYS = ("ece", "ece_smooth", "nll", "brier", "accuracy")
SERIES = ("uncalibrated", "calibrated")
GROUP_KEYS = ("accuracy", "acc_speech", "acc_nonspeech", "balanced_accuracy", "roc_auc", "ece", "nll", "brier")


def _r(x) -> float:
    return round(float(x), 6)


def _rounded(block: dict) -> dict:
    return {k: _r(v) if isinstance(v, float) else v for k, v in block.items()}


def per_group_metrics(y: np.ndarray, series: dict[str, np.ndarray], groups: np.ndarray, *, n_bins: int = 15,
                      scores: dict[str, np.ndarray] | None = None) -> dict:
    """``{group: {"n", "n_speech", <series>: {metric: value}}}``: every ``GROUP_KEYS`` metric on each group's clips alone
    (``scores``: each series' log-odds, which ROC-AUC ranks and the NLL is computed from, as in :func:`evaluate_arrays`)."""
    out = {}
    for g in dict.fromkeys(np.asarray(groups).tolist()):
        idx = np.flatnonzero(np.asarray(groups) == g)
        out[str(g)] = {"n": int(idx.size), "n_speech": int(np.sum(y[idx])), **{
            name: {k: _r(v) for k, v in metrics.binary_metrics(y[idx], p[idx], n_bins=n_bins, decomposition=False,
                                                               score=_part(scores, name, idx)).items()
                   if k in GROUP_KEYS} for name, p in series.items()}}
    return out


def _accuracy_interval(y: np.ndarray, pred: np.ndarray, ci: float) -> dict:
    """The clip-level interval of the accuracy of ``pred``: exact binomial over the clips (:data:`ACCURACY_INTERVAL`)."""
    return binomial_interval(int(np.sum(np.asarray(pred) == np.asarray(y))), len(y), ci)


def _reflected(key: str, interval: dict, point: float) -> dict:
    """``interval`` as reported for metric ``key``: reflected about ``point`` for a plug-in calibration error."""
    return basic_interval(interval, float(point)) if key in metrics.PLUG_IN_CALIBRATION_ERRORS else interval


def _part(scores: dict[str, np.ndarray] | None, name: str, idx=slice(None)) -> np.ndarray | None:
    """Series ``name``'s log-odds at ``idx`` (all by default), or None without log-odds (ROC-AUC then ranks p)."""
    return None if scores is None else scores[name][idx]


def evaluate_arrays(y: np.ndarray, p_uncal: np.ndarray, p_cal: np.ndarray, *, threshold: float = 0.5, n_bins: int = 15,
                    n_bootstrap: int = 2000, ci: float = 0.95, seed: int = 0, groups: np.ndarray | None = None,
                    log_odds: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """The metrics JSON of one system (see the module doc) from labels and the two p(SPEECH) columns.

    ``log_odds``: the log-odds of SPEECH behind ``p_uncal`` and ``p_cal``, which ROC-AUC ranks instead of the
    probabilities (which are exactly 0 or 1 past about ±37, where a temperature could break their ties) and the NLL
    is computed from, unclipped (:func:`~speech_calibration.stats.metrics.binary_metrics`).

    With ``groups`` (each clip's group) also the group-level view: ``ci_group`` per series and
    ``delta_ci_group`` from a bootstrap over groups (stratified by the classes a group holds where the
    design needs it, :func:`~speech_calibration.stats.resampling.class_strata`), with the same seed, and
    ``per_group``: every metric on each group alone.
    """
    series = {"uncalibrated": np.asarray(p_uncal, float), "calibrated": np.asarray(p_cal, float)}
    scores = None if log_odds is None else dict(zip(SERIES, (np.asarray(z, float) for z in log_odds)))
    tuned = threshold != 0.5
    point = {name: metrics.binary_metrics(y, p, n_bins=n_bins, score=_part(scores, name)) for name, p in series.items()}

    def stat(idx):
        out = {}
        yb = y[idx]
        for name, p in series.items():
            m = metrics.binary_metrics(yb, p[idx], n_bins=n_bins, decomposition=False, score=_part(scores, name, idx))
            out.update({f"{name}/{k}": v for k, v in m.items()})
        return out

    reps = bootstrap_replicates(stat, len(y), n_boot=n_bootstrap, seed=seed)
    result: dict = {"n": int(len(y)), "n_speech": int(np.sum(y)), "n_bootstrap": n_bootstrap, "ci_level": ci,
                    "clip_bootstrap": {  # what "ci" and "delta_ci" are, said in the file that holds them
                        "resampled": "single clips: ci and delta_ci describe these clips, whose speakers and recordings "
                                     "are the test groups at hand; ci_group and delta_ci_group speak of new groups",
                        "delta_ci_p": "two-sided bootstrap p of calibrated minus uncalibrated = 0: "
                                      "(1 + count) / (B + 1) in the smaller tail of the B resampled differences, "
                                      "doubled (at most 1)",
                        "accuracy_interval": ACCURACY_INTERVAL,
                        "ece_intervals": ECE_INTERVALS}}
    for name, p in series.items():
        block = {k: _r(v) for k, v in point[name].items()}
        block["ci"] = {k: _rounded(_accuracy_interval(y, metrics.predict(p), ci) if k == "accuracy"  # ACCURACY_INTERVAL
                                   else _reflected(k, interval_summary(reps[f"{name}/{k}"], ci), point[name][k]))
                       for k in CI_KEYS}
        result[name] = block
    result["delta_ci"] = {
        k: _rounded(paired_difference(
            point["uncalibrated"][k], point["calibrated"][k], reps[f"uncalibrated/{k}"], reps[f"calibrated/{k}"], ci=ci,
            lower_is_better=k in metrics.LOWER_IS_BETTER))
        for k in DELTA_KEYS}
    if groups is not None:
        groups = np.asarray(groups)
        n_groups = len(set(groups.tolist()))
        strata = class_strata(y, groups)
        greps = cluster_bootstrap_replicates(stat, groups, strata=strata, n_boot=n_bootstrap, seed=seed)
        composition = composition_strata(y, groups)
        holding = clusters_per_stratum(composition, groups, stratum_label)
        per_stratum = holding if strata is not None else None  # each stratum varies only among its own groups
        result["group_bootstrap"] = {
            "n_groups": n_groups,
            "resampled": "whole test groups" + (", within strata of the classes a group holds" if strata is not None else ""),
            "groups_holding": holding,
            "rule": f"an interval needs >= {MIN_CLUSTERS} groups" + (" in each stratum" if strata is not None else "")
                    + f" and >= {MIN_DISTINCT} distinct resampled values",
            "ece_intervals": "reflected about the estimate as in clip_bootstrap.ece_intervals"}
        smallest = expansion_clusters(n_groups, per_stratum)
        if smallest >= MIN_CLUSTERS:  # an expanded percentile interval (cluster_interval) reads the replicates wider
            level = expanded_level(ci, n_groups, per_stratum)
            result["group_bootstrap"]["rule"] += (f"; read at the {100 * level:.1f} % level for {100 * ci:g} %, "
                                                  f"expanded for {smallest} groups"
                                                  + (" (the smallest stratum)" if per_stratum else ""))
        result["group_bootstrap"]["delta_ci_group_p"] = (
            "two-sided p of calibrated minus uncalibrated = 0 over groups: (1 + count) / (B + 1) in the smaller tail of "
            "the B resampled differences, doubled, then read as a Student t with G - 1 degrees of freedom (as the "
            "interval is expanded); a verdict other than 'no clear difference' needs both the interval and p")
        for name in SERIES:
            result[name]["ci_group"] = {k: _rounded(_reflected(k, cluster_interval(
                greps[f"{name}/{k}"], n_groups, ci, per_stratum=per_stratum), point[name][k])) for k in CI_KEYS}
        # a calibrator that keeps every answer (temperature scaling) leaves accuracy unchanged in every resample
        same_answers = np.array_equal(metrics.predict(series["uncalibrated"]), metrics.predict(series["calibrated"]))
        result["delta_ci_group"] = {
            k: _rounded(paired_difference(
                point["uncalibrated"][k], point["calibrated"][k], greps[f"uncalibrated/{k}"], greps[f"calibrated/{k}"],
                ci=ci, lower_is_better=k in metrics.LOWER_IS_BETTER, n_clusters=n_groups, per_stratum=per_stratum,
                constant_ok=same_answers and k == "accuracy"))
            for k in DELTA_KEYS}
        result["per_group"] = per_group_metrics(y, series, groups, n_bins=n_bins, scores=scores)
    if tuned:
        pred = metrics.predict(series["calibrated"], threshold)
        result["tuned_threshold"] = {
            "threshold": _r(threshold), "accuracy": _r(metrics.accuracy(y, pred)),
            "acc_speech": _r(metrics.class_accuracy(y, pred, 1)), "acc_nonspeech": _r(metrics.class_accuracy(y, pred, 0)),
            "balanced_accuracy": _r(metrics.balanced_accuracy(y, pred)),
            "ci": {"accuracy": _rounded(_accuracy_interval(y, pred, ci))}}
    return result


def evaluate_system(files: SystemFiles, cfg: Evaluate, calibrator: calibrators.Calibrator | None = None) -> dict:
    """Evaluate one system on test with its dev-fitted calibrator (``calibrator``, or the one saved in
    ``files.calibrator``); write its files (see the module doc)."""
    cal = calibrators.load(files.calibrator) if calibrator is None else calibrator
    path = files.predictions("test")
    df = read_predictions(path)
    y = label_to_int(df[LABEL])
    for cls in (SPEECH, NONSPEECH):
        if cls not in set(df[LABEL]):
            log.warning("%s: no %s clip: %s accuracy and ROC-AUC are undefined (NaN / null)", path, cls, cls)
    a, b = df[LOGIT_A].to_numpy(float), df[LOGIT_B].to_numpy(float)
    p_uncal = metrics.p_speech_from_logits(a, b)
    p_cal = cal.predict_proba(a, b)
    groups = df[GROUP_ID].astype(str).to_numpy()
    result = {"system": files.system, "method_fitted": cal.method, "n_groups": int(df[GROUP_ID].nunique()), **evaluate_arrays(
        y, p_uncal, p_cal, threshold=cal.threshold, n_bins=cfg.n_bins, n_bootstrap=cfg.n_bootstrap, ci=cfg.ci,
        seed=cfg.bootstrap_seed, groups=groups, log_odds=(a - b, cal.log_odds(a, b)))}
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

    # per group: one row per group and series (the metrics JSON's per_group block), tuned-threshold accuracy beside
    rows = []
    for g, block in result["per_group"].items():
        idx = np.flatnonzero(groups == g)
        for name in SERIES:
            row = {"group_id": g, "n": block["n"], "n_speech": block["n_speech"], "series": name, **block[name]}
            if name == "calibrated" and cal.threshold != 0.5:
                row["accuracy_tuned"] = float(metrics.accuracy(y[idx], metrics.predict(p_cal[idx], cal.threshold)))
            rows.append(row)
    write_csv(files.per_group_csv, pd.DataFrame(rows))

    rel = reliability_rows(files.system, {"uncalibrated": p_uncal, "calibrated": p_cal}, y, n_bins=cfg.n_bins)
    write_csv(files.reliability("test", "csv"), rows_frame(rel))
    plot_reliability(files.reliability("test", "png"), rel, kinds=("predicted", "SPEECH", "NONSPEECH"),
                     title=f"{files.system} test ({cal.method})",
                     legend={k: f"{k} (ECE {result[k]['ece']:.3f})" for k in SERIES})
    u, c, d, g = result["uncalibrated"], result["calibrated"], result["delta_ci"]["ece"], result["delta_ci_group"]["ece"]
    log.info("%s test (%d clips in %d groups): accuracy %.1f%% -> %.1f%%, ROC-AUC %.3f -> %.3f, ECE %.3f -> %.3f "
             "(delta %+.3f; paired clip bootstrap [%+.3f, %+.3f]: %s on these clips; paired group bootstrap: %s)",
             files.system, result["n"], result["n_groups"], 100 * u["accuracy"], 100 * c["accuracy"], u["roc_auc"],
             c["roc_auc"], u["ece"], c["ece"], d["delta"], d["lo"], d["hi"], d["verdict"], paired_difference_text(g))
    return result
