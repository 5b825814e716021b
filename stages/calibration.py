"""Post-hoc calibration of the two-token SPEECH / NONSPEECH answer: fit on dev, apply anywhere.

Everything works on the logit difference ``z = logit_A - logit_B``: with two answer tokens,
``p(SPEECH) = softmax([logit_A, logit_B])[0] = sigmoid(z)``. Each method is a map of ``z`` to a
calibrated p(SPEECH):

``none``         ``sigmoid(z)``                                              (identity)
``temperature``  ``sigmoid(z / T)``, ``T > 0``  (Guo et al. 2017)             -- softmax([a, b] / T)
``platt``        ``sigmoid(slope * z + bias)``, ``slope >= 0`` (Platt 1999)   -- the bias moves the decision boundary
``beta``         ``sigmoid(c + a ln p - b ln(1 - p))``, ``p = sigmoid(z)``, ``a, b >= 0`` (Kull et al. 2017)
``isotonic``     a non-decreasing step-linear map of ``z`` (sklearn ``IsotonicRegression``), clipped to [eps, 1 - eps]
``contextual``   ``sigmoid(z - log(pbar_A / pbar_B))`` where ``pbar`` is the mean answer distribution on content-free
                 inputs (silence, noise): Zhao et al. (2021) remove the A/B prior in log space; needs no labels
``auto``         the method with the lowest leave-one-group-out NLL on dev (recorded in ``info``)

Two facts the tests check and the reports state: dividing both logits by ``T > 0`` never changes which
is larger, so **temperature scaling cannot change two-token accuracy** (nor ROC-AUC); only a method
that moves the boundary (``platt``, ``beta``, ``isotonic``, ``contextual``) or a tuned decision
threshold can fix a model whose ranking is good (high ROC-AUC) but whose boundary is off.

Fitting minimises the dev NLL with a bounded optimiser (``scipy.optimize``: bounded Brent for the one
temperature, L-BFGS-B with box constraints for the others). ``platt`` and ``beta`` use Platt's smoothed
targets ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)`` instead of 1 and 0, so a dev set that the model
separates perfectly gives a finite fit instead of an infinitely steep one.

A fitted :class:`Calibrator` is plain data (``to_dict`` / ``from_dict``) and applies itself with numpy only.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from stages import metrics
from stages.cli import UserError

log = logging.getLogger("stages.calibration")

METHODS = ("temperature", "platt", "beta", "isotonic", "contextual", "none", "auto")
FITTED_METHODS = ("none", "temperature", "platt", "beta", "isotonic", "contextual")  # what a Calibrator can hold
LABEL_FREE = ("none", "contextual")
ISOTONIC_EPS = 1e-3  # isotonic outputs are clipped to [eps, 1 - eps]: a confident error then costs 6.9 nats, not infinity
PARAM_BOUND = 1e3  # box constraint of every slope / bias


# ------------------------------------------------------------------------------------- basic maps
def logit_difference(logit_a, logit_b) -> np.ndarray:
    """``z = logit_A - logit_B``: the log-odds of SPEECH at temperature 1."""
    return np.asarray(logit_a, dtype=float) - np.asarray(logit_b, dtype=float)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _beta_features(z: np.ndarray) -> np.ndarray:
    """``[ln p, -ln(1 - p)]`` of ``p = sigmoid(z)``, computed stably from ``z``."""
    return np.stack([-_softplus(-z), _softplus(z)], axis=-1)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


# -------------------------------------------------------------------------------------- Calibrator
@dataclass
class Calibrator:
    """A fitted calibration map of the two answer logits to p(SPEECH), plus a decision threshold.

    ``method`` is one of :data:`FITTED_METHODS`; ``params`` its fitted parameters (``temperature``;
    ``slope, bias``; ``a, b, c``; ``x, y, eps``; ``bias, p_speech_content_free``; nothing for ``none``);
    ``threshold`` the decision threshold on the calibrated p(SPEECH) (0.5 unless tuned on dev);
    ``info`` how it was chosen and fitted (auto's cross-validation table, optimiser notes) -- not needed to apply it.
    """

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.5
    info: dict[str, Any] = field(default_factory=dict)

    def calibrated_logit(self, logit_a, logit_b) -> np.ndarray:
        """Calibrated log-odds of SPEECH (for ``isotonic``, the log-odds of its clipped probability)."""
        z = logit_difference(logit_a, logit_b)
        m, q = self.method, self.params
        if m == "none":
            return z
        if m == "temperature":
            return z / q["temperature"]
        if m == "platt":
            return q["slope"] * z + q["bias"]
        if m == "beta":
            f = _beta_features(z)
            return q["c"] + q["a"] * f[..., 0] + q["b"] * f[..., 1]
        if m == "contextual":
            return z - q["bias"]
        if m == "isotonic":
            p = np.clip(np.interp(z, q["x"], q["y"]), q["eps"], 1.0 - q["eps"])
            return _logit(p)
        raise UserError(f"calibrator method '{m}' is not one of {', '.join(FITTED_METHODS)}")

    def predict_proba(self, logit_a, logit_b) -> np.ndarray:
        """Calibrated p(SPEECH) of each clip."""
        if self.method == "isotonic":  # exact, without a round trip through the logit
            z = logit_difference(logit_a, logit_b)
            q = self.params
            return np.clip(np.interp(z, q["x"], q["y"]), q["eps"], 1.0 - q["eps"])
        return metrics.sigmoid(self.calibrated_logit(logit_a, logit_b))

    def predict(self, logit_a, logit_b) -> np.ndarray:
        """Predicted class, 1 = SPEECH where the calibrated p(SPEECH) >= ``threshold``."""
        return metrics.predict(self.predict_proba(logit_a, logit_b), self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        """Rebuild a calibrator from :meth:`to_dict`'s output, checking the method and its parameters."""
        if not isinstance(d, dict) or "method" not in d:
            raise UserError("calibrator: expected a mapping with a 'method' key (metrics/calibration/<system>.json "
                            "'calibrator'); re-run the calibrate stage")
        method = d["method"]
        if method not in FITTED_METHODS:
            raise UserError(f"calibrator: method '{method}' is not one of {', '.join(FITTED_METHODS)}")
        params = dict(d.get("params") or {})
        missing = [k for k in _REQUIRED[method] if k not in params]
        if missing:
            raise UserError(f"calibrator: method '{method}' needs parameter(s) {', '.join(missing)}; "
                            "re-run the calibrate stage")
        threshold = float(d.get("threshold", 0.5))
        if not 0.0 <= threshold <= 1.0:
            raise UserError(f"calibrator: threshold {threshold} is not in [0, 1]")
        return cls(method=method, params=params, threshold=threshold, info=dict(d.get("info") or {}))


_REQUIRED = {"none": (), "temperature": ("temperature",), "platt": ("slope", "bias"), "beta": ("a", "b", "c"),
             "isotonic": ("x", "y", "eps"), "contextual": ("bias",)}


# ------------------------------------------------------------------------------------------ fitting
def _smoothed_targets(y: np.ndarray) -> np.ndarray:
    """Platt's (1999) targets: ``(N+ + 1) / (N+ + 2)`` for positives, ``1 / (N- + 2)`` for negatives."""
    n_pos = float(np.sum(y == 1))
    n_neg = float(np.sum(y == 0))
    return np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))


def _fit_logistic(x: np.ndarray, t: np.ndarray, x0: list[float], bounds: list[tuple[float, float]]) -> tuple[np.ndarray, Any]:
    """Minimise the mean cross-entropy of ``sigmoid(x @ w)`` against targets ``t`` (L-BFGS-B, box ``bounds``)."""
    from scipy.optimize import minimize  # lazy: only the calibrate stage fits

    def loss(w):
        s = x @ w
        value = np.mean(t * _softplus(-s) + (1.0 - t) * _softplus(s))
        grad = x.T @ (metrics.sigmoid(s) - t) / len(t)
        return value, grad

    res = minimize(loss, np.asarray(x0, dtype=float), jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-9})
    return res.x, res


def _fit_temperature(z: np.ndarray, y: np.ndarray, bounds: tuple[float, float]) -> Calibrator:
    from scipy.optimize import minimize_scalar

    sign = np.where(y == 1, 1.0, -1.0)
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(lambda log_t: float(np.mean(_softplus(-sign * z / math.exp(log_t)))), bounds=(lo, hi),
                          method="bounded", options={"xatol": 1e-7})
    t = float(math.exp(res.x))
    info = {}
    if min(res.x - lo, hi - res.x) < 1e-3:
        info["at_bound"] = True
        log.warning("temperature %.4g is at a bound of calibration.temperature_bounds %s: the dev NLL keeps falling "
                    "beyond it (e.g. dev is perfectly separated); widen the bounds or choose another method", t, list(bounds))
    return Calibrator("temperature", {"temperature": t}, info=info)


def _fit_platt(z: np.ndarray, y: np.ndarray) -> Calibrator:
    x = np.stack([z, np.ones_like(z)], axis=1)
    w, res = _fit_logistic(x, _smoothed_targets(y), [1.0, 0.0], [(0.0, PARAM_BOUND), (-PARAM_BOUND, PARAM_BOUND)])
    return Calibrator("platt", {"slope": float(w[0]), "bias": float(w[1])}, info=_opt_info(res))


def _fit_beta(z: np.ndarray, y: np.ndarray) -> Calibrator:
    x = np.concatenate([_beta_features(z), np.ones((len(z), 1))], axis=1)
    w, res = _fit_logistic(x, _smoothed_targets(y), [1.0, 1.0, 0.0],
                           [(0.0, PARAM_BOUND), (0.0, PARAM_BOUND), (-PARAM_BOUND, PARAM_BOUND)])
    return Calibrator("beta", {"a": float(w[0]), "b": float(w[1]), "c": float(w[2])}, info=_opt_info(res))


def _fit_isotonic(z: np.ndarray, y: np.ndarray) -> Calibrator:
    from sklearn.isotonic import IsotonicRegression  # lazy: sklearn costs ~1 s of import time

    iso = IsotonicRegression(increasing=True, out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(z, y.astype(float))
    return Calibrator("isotonic", {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_],
                                   "eps": ISOTONIC_EPS})


def _fit_contextual(content_free: tuple[np.ndarray, np.ndarray] | None) -> Calibrator:
    if content_free is None:
        raise UserError("calibration.method=contextual needs the logits of the content-free inputs (silence, noise), "
                        "predictions/<system>/dev_content_free.csv; choose another method for a system without them")
    a, b = (np.asarray(v, dtype=float) for v in content_free)
    if a.size == 0 or a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise UserError("contextual calibration: the content-free logits must be one or more pairs of finite numbers")
    p_a = float(np.mean(metrics.p_speech_from_logits(a, b)))  # Zhao et al. average the answer distributions
    p_a = min(max(p_a, 1e-12), 1.0 - 1e-12)
    return Calibrator("contextual", {"bias": math.log(p_a) - math.log1p(-p_a), "p_speech_content_free": p_a},
                      info={"n_content_free": int(a.size)})


def _opt_info(res) -> dict[str, Any]:
    return {} if res.success else {"optimizer": str(res.message)}


def _fit_one(method: str, z: np.ndarray, y: np.ndarray, content_free, bounds) -> Calibrator:
    if method == "none":
        return Calibrator("none")
    if method == "temperature":
        return _fit_temperature(z, y, bounds)
    if method == "platt":
        return _fit_platt(z, y)
    if method == "beta":
        return _fit_beta(z, y)
    if method == "isotonic":
        return _fit_isotonic(z, y)
    if method == "contextual":
        return _fit_contextual(content_free)
    raise UserError(f"calibration.method: '{method}' is not one of {', '.join(METHODS)}")


def _check_inputs(logit_a, logit_b, y) -> tuple[np.ndarray, np.ndarray]:
    z = logit_difference(logit_a, logit_b)
    y = np.asarray(y)
    if z.ndim != 1 or y.shape != z.shape:
        raise UserError(f"calibration: logit_A, logit_B and labels must be 1-D of one length, got {np.shape(logit_a)}, "
                        f"{np.shape(logit_b)}, {y.shape}")
    if not np.all(np.isfinite(z)):
        raise UserError("calibration: the logits must be finite numbers")
    if y.dtype.kind not in "iub" or not np.isin(y, (0, 1)).all():
        raise UserError("calibration: labels must be 0 (NONSPEECH) or 1 (SPEECH)")
    return z, y.astype(np.int64)


def cross_validated_nll(method: str, z: np.ndarray, y: np.ndarray, folds: np.ndarray, content_free=None,
                        bounds=(0.01, 100.0)) -> float:
    """Pooled held-out NLL of ``method``: for each fold, fit on the others and predict the fold."""
    p = np.empty_like(z)
    for f in np.unique(folds):
        held = folds == f
        cal = _fit_one(method, z[~held], y[~held], content_free, bounds)
        p[held] = cal.predict_proba(z[held], np.zeros(int(held.sum())))
    return float(metrics.nll(y, p))


def _folds(y: np.ndarray, groups) -> tuple[np.ndarray, str]:
    if groups is not None and len(np.unique(np.asarray(groups))) >= 2:
        _, folds = np.unique(np.asarray(groups), return_inverse=True)
        return folds.ravel(), "leave-one-group-out"
    k = int(min(5, len(y)))
    return np.arange(len(y)) % k, f"{k}-fold by clip (fewer than two groups)"


def _fit_auto(z, y, content_free, groups, bounds) -> Calibrator:
    candidates = [m for m in FITTED_METHODS if m != "contextual" or content_free is not None]
    folds, scheme = _folds(y, groups)
    with _quiet():
        cv = {m: cross_validated_nll(m, z, y, folds, content_free, bounds) for m in candidates}
    best = min(candidates, key=lambda m: (cv[m], candidates.index(m)))  # ties go to the simpler (earlier) method
    ranked = sorted(candidates, key=lambda m: cv[m])
    runner = ranked[1] if ranked[0] == best and len(ranked) > 1 else ranked[0]
    reason = (f"lowest {scheme} dev NLL: {best} {cv[best]:.4f} vs next best {runner} {cv[runner]:.4f}"
              + ("" if content_free is not None else "; contextual not a candidate (no content-free logits)"))
    cal = _fit_one(best, z, y, content_free, bounds)
    cal.info = {**cal.info, "selected_by": "auto", "cv_scheme": scheme, "cv_nll": cv, "reason": reason}
    return cal


class _quiet:
    """Silence this module's warnings while cross-validating (a fold's temperature at a bound is expected)."""

    def __enter__(self):
        self.level = log.level
        log.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        log.setLevel(self.level)


def best_threshold(p: np.ndarray, y: np.ndarray) -> float:
    """The decision threshold on p(SPEECH) that maximises dev balanced accuracy.

    Candidates are 0.5 and the midpoints between consecutive distinct probabilities; among equally good
    thresholds the one closest to 0.5 wins (so a threshold that changes nothing stays 0.5).
    """
    u = np.unique(np.asarray(p, dtype=float))
    cand = np.concatenate([[0.5], (u[1:] + u[:-1]) / 2.0]) if u.size > 1 else np.array([0.5])
    preds = (p[None, :] >= cand[:, None]).astype(np.int64)
    score = metrics.balanced_accuracy(np.broadcast_to(y, preds.shape), preds)
    best = np.nanmax(score)
    ok = np.flatnonzero(score >= best - 1e-12)
    return float(cand[ok[np.argmin(np.abs(cand[ok] - 0.5))]])


def fit(method: str, logit_a, logit_b, y, *, content_free: tuple[np.ndarray, np.ndarray] | None = None, groups=None,
        temperature_bounds: tuple[float, float] = (0.01, 100.0), tune_threshold: bool = False) -> Calibrator:
    """Fit a calibrator of ``method`` on dev logits and labels (1 = SPEECH, 0 = NONSPEECH).

    ``content_free``: the (logit_A, logit_B) arrays of the content-free inputs (``contextual``, and a
    candidate of ``auto``). ``groups``: the dev group of each clip (``auto``'s leave-one-group-out CV).
    ``tune_threshold``: also choose the decision threshold on dev (see :func:`best_threshold`).
    """
    if method not in METHODS:
        raise UserError(f"calibration.method: '{method}' is not one of {', '.join(METHODS)}")
    z, y = _check_inputs(logit_a, logit_b, y)
    if method not in LABEL_FREE and len(np.unique(y)) < 2:
        only = "SPEECH" if y.size and y[0] == 1 else "NONSPEECH"
        raise UserError(f"calibration.method={method}: dev holds only {only} clips ({y.size}); fitting needs both classes")
    lo, hi = (float(v) for v in temperature_bounds)
    if not 0 < lo < hi:
        raise UserError(f"calibration.temperature_bounds: {list(temperature_bounds)} must be two numbers 0 < low < high")
    if method == "auto":
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
