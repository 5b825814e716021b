"""Fitting a calibrator on dev: one method by name, ``auto`` (the method with the lowest held-out NLL), and
an optional decision threshold tuned for balanced accuracy.

``fit(method, logit_A, logit_B, y, ...)`` is the one entry point the pipeline and the study's wrapper
scripts use; it returns a fitted :class:`~speech_calibration.calibration.calibrators.Calibrator`.
"""
from __future__ import annotations

import logging

import numpy as np

from speech_calibration.calibration.calibrators import (
    DEFAULT_TEMPERATURE_BOUNDS,
    REGISTRY,
    Calibrator,
    logit_difference,
)
from speech_calibration.calibration.methods import AUTO, LABEL_FREE, METHODS
from speech_calibration.errors import UserError
from speech_calibration.stats import metrics


def _fit_one(method: str, z: np.ndarray, y: np.ndarray, content_free, bounds) -> Calibrator:
    if method not in REGISTRY:
        raise UserError(f"calibration.method: '{method}' is not one of {', '.join(METHODS)}")
    return REGISTRY[method]().fit(z, np.zeros_like(z), y, content_free=content_free, temperature_bounds=bounds)


MAX_LOGIT_GAP = 1e6  # |logit_A - logit_B| beyond this is a damaged file: a model's answer logits differ by tens


def _check_inputs(logit_a, logit_b, y) -> tuple[np.ndarray, np.ndarray]:
    z = logit_difference(logit_a, logit_b)
    y = np.asarray(y)
    if z.ndim != 1 or y.shape != z.shape:
        raise UserError(f"calibration: logit_A, logit_B and labels must be 1-D of one length, got {np.shape(logit_a)}, "
                        f"{np.shape(logit_b)}, {y.shape}")
    if not np.all(np.isfinite(z)):
        raise UserError("calibration: the logits must be finite numbers")
    if np.any(far := np.abs(z) > MAX_LOGIT_GAP):
        i = int(np.argmax(far))
        raise UserError(f"calibration: row {i + 1} has logit_A - logit_B = {z[i]:.4g}, beyond +-{MAX_LOGIT_GAP:g}, which no "
                        "model's answer logits reach; the file is damaged (re-run the stage that wrote it)")
    if y.dtype.kind not in "iub" or not np.isin(y, (0, 1)).all():
        raise UserError("calibration: labels must be 0 (NONSPEECH) or 1 (SPEECH)")
    return z, y.astype(np.int64)


def cross_validated_nll(method: str, z: np.ndarray, y: np.ndarray, folds: np.ndarray, content_free=None,
                        bounds=DEFAULT_TEMPERATURE_BOUNDS) -> float:
    """Pooled held-out NLL of ``method``: for each fold, fit on the others and predict the fold."""
    z_cal = np.empty_like(z)
    for f in np.unique(folds):
        held = folds == f
        cal = _fit_one(method, z[~held], y[~held], content_free, bounds)
        z_cal[held] = cal.log_odds(z[held], np.zeros(int(held.sum())))
    return float(metrics.nll(y, metrics.sigmoid(z_cal), log_odds=z_cal))


def _folds(y: np.ndarray, groups) -> tuple[np.ndarray, str]:
    if groups is not None and len(np.unique(np.asarray(groups))) >= 2:
        _, folds = np.unique(np.asarray(groups), return_inverse=True)
        return folds.ravel(), "leave-one-group-out"
    k = int(min(5, len(y)))
    return np.arange(len(y)) % k, f"{k}-fold by clip (fewer than two groups)"


def _fit_auto(z, y, content_free, groups, bounds) -> Calibrator:
    # batch is no candidate: its prior comes from the set it is applied to, and a held-out dev group is not test
    candidates = [m for m in REGISTRY if m != "batch" and (m != "contextual" or content_free is not None)]
    folds, scheme = _folds(y, groups)
    with quiet():
        cv = {m: cross_validated_nll(m, z, y, folds, content_free, bounds) for m in candidates}
    best = min(candidates, key=lambda m: (cv[m], candidates.index(m)))  # ties go to the simpler (earlier) method
    ranked = sorted(candidates, key=lambda m: cv[m])
    runner = ranked[1] if ranked[0] == best and len(ranked) > 1 else ranked[0]
    reason = (f"lowest {scheme} dev NLL: {best} {cv[best]:.4f} vs next best {runner} {cv[runner]:.4f}"
              + ("" if content_free is not None else "; contextual not a candidate (no content-free logits)"))
    cal = _fit_one(best, z, y, content_free, bounds)
    cal.info = {**cal.info, "selected_by": "auto", "cv_scheme": scheme, "cv_nll": cv, "reason": reason}
    return cal


class quiet:
    """Silence the calibrators' warnings while refitting many times (cross-validation folds, the learning curve's
    subsets), where a temperature at a bound is expected."""

    logger = logging.getLogger("speech_calibration.calibration.calibrators")

    def __enter__(self):
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def best_threshold(p: np.ndarray, y: np.ndarray) -> float:
    """The decision threshold on p(SPEECH) that maximises dev balanced accuracy.

    Candidates are 0.5, the midpoints between consecutive distinct probabilities, and the two that give one answer
    to every clip (the lowest probability: all SPEECH; just above the highest: none), whose balanced accuracy is
    1/2, so a ranking worse than chance never gets a threshold below that; among equally good thresholds the one
    closest to 0.5 wins (so a threshold that changes nothing stays 0.5).
    """
    u = np.unique(np.asarray(p, dtype=float))
    cand = np.concatenate([[0.5], (u[1:] + u[:-1]) / 2.0, u[:1], np.nextafter(u[-1:], np.inf)])
    preds = (p[None, :] >= cand[:, None]).astype(np.int64)
    score = metrics.balanced_accuracy(np.broadcast_to(y, preds.shape), preds)
    best = np.nanmax(score)
    ok = np.flatnonzero(score >= best - 1e-12)
    return float(cand[ok[np.argmin(np.abs(cand[ok] - 0.5))]])


def fit(method: str, logit_a, logit_b, y, *, content_free: tuple[np.ndarray, np.ndarray] | None = None, groups=None,
        temperature_bounds: tuple[float, float] = DEFAULT_TEMPERATURE_BOUNDS, tune_threshold: bool = False) -> Calibrator:
    """Fit a calibrator of ``method`` on dev logits and labels (1 = SPEECH, 0 = NONSPEECH).

    ``content_free``: the (logit_A, logit_B) arrays of the content-free inputs (``contextual``, and a
    candidate of ``auto``). ``groups``: the dev group of each clip (``auto``'s leave-one-group-out CV).
    ``tune_threshold``: also choose the decision threshold on dev (see :func:`best_threshold`).
    """
    if method not in METHODS:
        raise UserError(f"calibration.method: '{method}' is not one of {', '.join(METHODS)}")
    z, y = _check_inputs(logit_a, logit_b, y)
    if len(np.unique(y)) < 2:
        only = (f"dev holds only {'SPEECH' if y[0] == 1 else 'NONSPEECH'} clips ({y.size})" if y.size
                else "dev holds no clips")
        if method not in LABEL_FREE:
            raise UserError(f"calibration.method={method}: {only}; fitting needs both classes (give dev clips of "
                            f"both, or choose a method that needs no labels: {', '.join(LABEL_FREE)})")
        if tune_threshold:
            raise UserError(f"calibration.tune_threshold: {only}; tuning the threshold needs both classes")
    lo, hi = (float(v) for v in temperature_bounds)
    if not 0 < lo < hi:
        raise UserError(f"calibration.temperature_bounds: {list(temperature_bounds)} must be two numbers 0 < low < high")
    if method == AUTO:
        cal = _fit_auto(z, y, content_free, groups, (lo, hi))
    else:
        cal = _fit_one(method, z, y, content_free, (lo, hi))
    if tune_threshold:
        p = cal.predict_proba(z, np.zeros_like(z))
        t = best_threshold(p, y)
        cal.threshold = t
        cal.info = {**cal.info, "threshold": {
            "dev_balanced_accuracy_at_0.5": float(metrics.balanced_accuracy(y, metrics.predict(p, 0.5))),
            "dev_balanced_accuracy_tuned": float(metrics.balanced_accuracy(y, metrics.predict(p, t)))}}
    return cal
