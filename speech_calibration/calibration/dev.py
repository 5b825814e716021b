"""Calibrating one system on its DEV predictions only, and reporting dev before and after.

Reads ``predictions/<system>/dev.csv`` (and ``dev_content_free.csv`` when present, for ``contextual``
and as an ``auto`` candidate); never the test split. Writes, for ``<system>`` = ``seed_42`` (reference
systems: see :class:`speech_calibration.layout.SystemFiles`):

* ``models/calibrators/<system>.json``: the fitted calibrator, the artifact that evaluate, conditions and
  the study's wrappers apply (:func:`speech_calibration.calibration.calibrators.load`);
* ``metrics/calibration/<system>.json``: ``method_requested``, ``method_fitted``, the scalar ``params``,
  dev NLL / ECE / Brier / accuracy ``uncalibrated`` and ``calibrated``, and ``notes``: a sentence for a
  degenerate fit (a constant map, or a dev NLL above the uncalibrated one) saying what happened and why;
* ``metrics/calibration/<system>_optimal_temp.txt``: the temperature as ``%.6f`` (the study's file);
  ``1.000000`` for ``none``; ``nan`` when the method has no temperature (platt, beta, isotonic, contextual);
* ``plots/calibration/<system>_dev_reliability.csv`` and ``.png``: dev reliability before/after.
"""
from __future__ import annotations

import logging

import numpy as np

from speech_calibration.calibration.calibrators import Calibrator
from speech_calibration.calibration.fitting import fit
from speech_calibration.data import schema
from speech_calibration.errors import UserError
from speech_calibration.fileio import write_csv, write_json, write_text
from speech_calibration.layout import SystemFiles
from speech_calibration.params import Calibration
from speech_calibration.report.reliability import plot_reliability, reliability_rows, rows_frame
from speech_calibration.stats import metrics

log = logging.getLogger(__name__)

DEV_SUMMARY_KEYS = ("accuracy", "balanced_accuracy", "roc_auc", "nll", "brier", "ece", "ece_smooth")


def temperature_text(cal: Calibrator) -> str:
    """The study's ``optimal_temp.txt`` content: ``%.6f`` and a newline (``nan`` without a temperature)."""
    return f"{cal.temperature:.6f}\n"


def dev_summary(y: np.ndarray, p: np.ndarray, n_bins: int, threshold: float = 0.5, *, log_odds=None) -> dict[str, float]:
    """The dev metrics of ``DEV_SUMMARY_KEYS``; ``log_odds`` (behind ``p``) is what ROC-AUC ranks and what the NLL is
    computed from, unclipped (:func:`~speech_calibration.stats.metrics.binary_metrics`)."""
    m = metrics.binary_metrics(y, p, n_bins=n_bins, threshold=threshold, decomposition=False, score=log_odds)
    return {k: round(float(m[k]), 6) for k in DEV_SUMMARY_KEYS}


# Why a fitted map can end above the uncalibrated dev NLL, by method (none cannot: it is the identity).
WORSE_NLL_REASON = {
    "temperature": "calibration.temperature_bounds leave out T = 1, so the fit could not keep the model's own scale",
    "platt": "platt fits Platt's smoothed targets, not the 0/1 labels, so it pulls confident right answers "
             "away from 0 and 1",
    "beta": "beta fits Platt's smoothed targets, not the 0/1 labels, so it pulls confident right answers "
            "away from 0 and 1",
    "isotonic": "isotonic clips p(SPEECH) to [eps, 1 - eps], which costs its confident right answers (unclipped, "
                "its pool-adjacent-violators fit is the non-decreasing map of the logits with the least dev NLL, "
                "so it could not end above the uncalibrated one)",
    "contextual": "contextual uses no labels: it removes the A/B prior of the content-free inputs, whatever "
                  "dev says",
    "batch": "batch uses no labels: it removes the mean answer distribution of the set, whatever the set's "
             "true class balance is",
}
CONSTANT_SPREAD = 1e-6  # a calibrated p(SPEECH) whose range on dev is below this is reported as constant


def fit_notes(method: str, p_after: np.ndarray, y: np.ndarray, before: dict, after: dict,
              temperature_bounds: tuple[float, float] | None = None) -> list[str]:
    """Sentences for the report when a fit is degenerate: constant on dev, or worse than no calibration there.

    The dev NLLs are computed from the log-odds, unclipped (:func:`dev_summary`), as the fits minimise them. A
    temperature fit can then raise the dev NLL only where ``temperature_bounds`` leave out T = 1, and its sentence
    says so only then."""
    notes = []
    if p_after.size and float(np.ptp(p_after)) < CONSTANT_SPREAD:
        if before["roc_auc"] < 0.5:
            why = (f"the dev logits rank the classes the wrong way (dev ROC-AUC {before['roc_auc']:.3f} < 0.5) and no "
                   "method here may turn them round (each is non-decreasing in logit_A - logit_B)")
        else:
            why = f"the dev logits carry no ranking the map could use (dev ROC-AUC {before['roc_auc']:.3f})"
        notes.append(f"{method} collapsed to a constant p(SPEECH) = {float(p_after[0]):.3f} on dev: {why}; every "
                     f"clip gets the same answer, so its calibrated ROC-AUC is 0.5 (ties) and one class is never chosen")
    bounds_keep_1 = temperature_bounds is not None and temperature_bounds[0] <= 1.0 <= temperature_bounds[1]
    if after["nll"] > before["nll"] + 1e-9 and method in WORSE_NLL_REASON and not (method == "temperature"
                                                                                and bounds_keep_1):
        notes.append(f"{method} raised the dev NLL from {before['nll']:.4f} to {after['nll']:.4f}: "
                     f"{WORSE_NLL_REASON[method]}")
    return notes


def calibrate_system(files: SystemFiles, cfg: Calibration, n_bins: int, *, allow_fallback: bool = False) -> Calibrator:
    """Fit ``cfg`` on the system's dev split, write its calibrator and dev report; return the calibrator (a caller in
    the same command cannot read it back from ``files.calibrator`` until the command ends:
    :func:`speech_calibration.fileio.outputs_together`).

    ``allow_fallback``: a reference system without content-free logits gets ``none`` instead of
    ``contextual`` (recorded in the calibrator's ``info``) rather than an error.
    """
    frame = schema.read_predictions(files.predictions("dev"))
    a, b = frame[schema.LOGIT_A].to_numpy(float), frame[schema.LOGIT_B].to_numpy(float)
    y, groups = schema.label_to_int(frame[schema.LABEL]), frame[schema.GROUP_ID].to_numpy()
    content_free = schema.read_content_free(files.content_free("dev"))
    method, fallback = cfg.method, None
    if method == "contextual" and content_free is None:
        if not allow_fallback:
            raise UserError(f"{files.content_free('dev')}: file not found; calibration.method=contextual needs the "
                            "content-free logits the predict stage writes (re-run predict, or choose another method)")
        method = "none"
        fallback = (f"contextual needs content-free inputs, which {files.system} has none of "
                    f"({files.content_free('dev')}); used none")
        log.info("%s: %s", files.system, fallback)
    try:
        cal = fit(method, a, b, y, content_free=content_free, groups=groups,
                  temperature_bounds=tuple(cfg.temperature_bounds), tune_threshold=cfg.tune_threshold)
    except UserError as err:  # name the file the dev logits came from
        raise UserError(f"{files.predictions('dev')}: {err}") from None
    if fallback:
        cal.info = {**cal.info, "fallback": fallback}
    if cal.method == "contextual":  # which content-free inputs set the bias (predict writes silence and noise)
        cal.info = {**cal.info, "content_free_inputs": schema.content_free_inputs(files.content_free("dev"))}
    p_before = metrics.p_speech_from_logits(a, b)
    p_after = cal.predict_proba(a, b)
    z_before, z_after = a - b, cal.log_odds(a, b)
    result = {
        "system": files.system,
        "method_requested": cfg.method,
        "method_fitted": cal.method,
        "params": cal.scalar_params(),
        "threshold": cal.threshold,
        "dev": {"n": int(y.size), "n_speech": int(y.sum()),
                "uncalibrated": dev_summary(y, p_before, n_bins, log_odds=z_before),
                "calibrated": dev_summary(y, p_after, n_bins, log_odds=z_after)},
    }
    if "content_free_inputs" in cal.info:
        result["content_free_inputs"] = cal.info["content_free_inputs"]
    if cal.threshold != 0.5 or cfg.tune_threshold:
        result["dev"]["tuned_threshold"] = dev_summary(y, p_after, n_bins, cal.threshold, log_odds=z_after)
    notes = fit_notes(cal.method, p_after, y, result["dev"]["uncalibrated"], result["dev"]["calibrated"],
                      tuple(cfg.temperature_bounds))
    if notes:
        result["notes"] = notes
        for note in notes:
            log.warning("%s: %s", files.system, note)
    cal.save(files.calibrator)
    write_json(files.calibration_json, result)
    write_text(files.optimal_temp, temperature_text(cal))
    rows = reliability_rows(files.system, {"uncalibrated": p_before, "calibrated": p_after}, y, n_bins=n_bins,
                            kinds=("predicted",))
    write_csv(files.reliability("dev", "csv"), rows_frame(rows))
    legend = {k: f"{k} (ECE {result['dev'][k]['ece']:.3f}, NLL {result['dev'][k]['nll']:.3f})"
              for k in ("uncalibrated", "calibrated")}
    plot_reliability(files.reliability("dev", "png"), rows, title=f"{files.system} dev: {cal.describe()}", legend=legend)
    before, after = result["dev"]["uncalibrated"], result["dev"]["calibrated"]
    log.info("%s: %s; dev NLL %.4f -> %.4f, ECE %.4f -> %.4f, Brier %.4f -> %.4f, accuracy %.1f%% -> %.1f%%",
             files.system, cal.describe(), before["nll"], after["nll"], before["ece"], after["ece"], before["brier"],
             after["brier"], 100 * before["accuracy"], 100 * after["accuracy"])
    if "selected_by" in cal.info:
        log.info("%s: auto chose %s: %s", files.system, cal.method, cal.info["reason"])
    return cal
