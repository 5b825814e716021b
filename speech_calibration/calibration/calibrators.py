"""Post-hoc calibrators of the two-token SPEECH / NONSPEECH answer: one class per method, one registry.

Everything works on the logit difference ``z = logit_A - logit_B``: with two answer tokens,
``p(SPEECH) = softmax([logit_A, logit_B])[0] = sigmoid(z)``. Each method maps ``z`` to a calibrated
p(SPEECH):

=============================  ==================================================================================
:class:`NoCalibration`         ``sigmoid(z)`` (identity)
:class:`TemperatureScaling`    ``sigmoid(z / T)``, ``T > 0`` (Guo et al. 2017) -- ``softmax([a, b] / T)``
:class:`PlattScaling`          ``sigmoid(slope * z + bias)``, ``slope >= 0`` (Platt 1999): the bias moves the boundary
:class:`BetaCalibration`       ``sigmoid(c + a ln p - b ln(1 - p))``, ``p = sigmoid(z)``, ``a, b >= 0`` (Kull et al. 2017)
:class:`IsotonicCalibration`   a non-decreasing step-linear map of ``z`` (sklearn ``IsotonicRegression``), clipped
                               to [eps, 1 - eps]
:class:`ContextualCalibration` ``sigmoid(z - log(pbar_A / pbar_B))``, ``pbar`` the mean answer distribution on
                               content-free inputs (silence, noise): Zhao et al. (2021); needs no labels
:class:`BatchCalibration`      ``sigmoid(z - logit(mean sigmoid(z)))`` over the set being scored: Zhou et al.
                               (2024); needs no labels, and is applied per set (per condition and level)
=============================  ==================================================================================

Each reads like a scikit-learn estimator: ``fit`` on dev, ``predict_proba`` / ``log_odds`` / ``predict``
anywhere, ``threshold`` the decision threshold on the calibrated p(SPEECH) (0.5 unless tuned on dev),
``to_dict`` / ``from_dict`` and ``save`` / :func:`load` for the artifact file. Choosing a method by
cross-validation (``auto``) and tuning the threshold live in :mod:`.fitting`.

Fitting minimises the dev NLL with a bounded optimiser (``scipy.optimize``: bounded Brent for the one
temperature, L-BFGS-B with box constraints for the others). ``platt`` and ``beta`` use Platt's smoothed
targets ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)`` instead of 1 and 0, so a dev set that the model
separates perfectly gives a finite fit instead of an infinitely steep one.

Dividing both logits by ``T > 0`` never changes which is larger, so **temperature scaling cannot change
two-token accuracy** (nor ROC-AUC); only a method that moves the boundary (``platt``, ``beta``,
``isotonic``, ``contextual``) or a tuned threshold can fix a model whose ranking is good but whose
boundary is off. ``tests/test_calibration.py`` checks each method against data drawn with known parameters.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from speech_calibration.calibration.methods import FITTED
from speech_calibration.errors import UserError
from speech_calibration.fileio import write_json
from speech_calibration.stats import metrics

log = logging.getLogger(__name__)

ISOTONIC_EPS = 1e-3  # isotonic outputs are clipped to [eps, 1 - eps]: a confident error then costs 6.9 nats, not infinity
PARAM_BOUND = 1e3  # box constraint of every slope / bias
DEFAULT_TEMPERATURE_BOUNDS = (0.01, 100.0)
PRIOR_CLIP = 1e-12  # a prior p(SPEECH) is clipped to [clip, 1 - clip], so its log-odds stay finite
REFIT = "re-run dvc repro calibrate@<seed> (or the stage that wrote the file) to fit it again"


# ------------------------------------------------------------------------------------- basic maps
def logit_difference(logit_a, logit_b) -> np.ndarray:
    """``z = logit_A - logit_B``: the log-odds of SPEECH at temperature 1."""
    return np.asarray(logit_a, dtype=float) - np.asarray(logit_b, dtype=float)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _beta_features(z: np.ndarray) -> np.ndarray:
    """``[ln p, -ln(1 - p)]`` of ``p = sigmoid(z)``, computed stably from ``z``."""
    return np.stack([-_softplus(-z), _softplus(z)], axis=-1)


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


def _optimizer_info(res) -> dict[str, Any]:
    return {} if res.success else {"optimizer": str(res.message)}


def _real(value: Any) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool, not a string), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:  # an integer past float's range
        return None
    return value if math.isfinite(value) else None


def _number(key: str, value: Any, many: bool) -> float | list[float]:
    """``value`` as a float (a list of floats if ``many``); a UserError naming ``key`` if it is not finite and real."""
    if many and not isinstance(value, list):
        raise UserError(f"calibrator: {key} is {value!r}, not a list of numbers; {REFIT}")
    for i, v in enumerate(value if many else [value]):
        if _real(v) is None:
            raise UserError(f"calibrator: {key}{f'[{i}]' if many else ''} is {v!r}, not a finite number; {REFIT}")
    return [float(v) for v in value] if many else float(value)


def _outside(params: dict[str, Any], **ranges: tuple[float, float]) -> str | None:
    """The first of ``params`` outside its closed range in ``ranges``, in words; None if each is inside."""
    for key, (lo, hi) in ranges.items():
        if not lo <= params[key] <= hi:
            return f"params.{key} is {params[key]!r}, not in [{lo:g}, {hi:g}] where the fit keeps it"
    return None


# -------------------------------------------------------------------------------------- the base
class Calibrator:
    """A calibration map of the two answer logits to p(SPEECH), plus a decision threshold.

    ``params`` holds the fitted parameters (plain numbers and lists, so the artifact is JSON);
    ``info`` how it was chosen and fitted (auto's cross-validation table, optimiser notes), not needed
    to apply it. Subclasses set ``method`` and ``required`` and implement ``_fit`` and ``_log_odds``, and
    ``_check_params`` where their fit constrains the parameters.
    """

    method: ClassVar[str] = ""
    required: ClassVar[tuple[str, ...]] = ()  # the keys of ``params``, exactly
    lists: ClassVar[tuple[str, ...]] = ()  # those of them that hold a list of numbers, not one number
    per_batch: ClassVar[bool] = False  # True: the map depends on the set it is applied to (apply it per set)

    def __init__(self, params: dict[str, Any] | None = None, threshold: float = 0.5, info: dict[str, Any] | None = None):
        self.params = dict(params or {})
        self.threshold = float(threshold)
        self.info = dict(info or {})

    # ---- fitting
    def fit(self, logit_a, logit_b, y=None, *, content_free: tuple[np.ndarray, np.ndarray] | None = None,
            temperature_bounds: tuple[float, float] = DEFAULT_TEMPERATURE_BOUNDS) -> Calibrator:
        """Fit on dev logits and labels (1 = SPEECH, 0 = NONSPEECH); returns ``self``.

        ``content_free``: the (logit_A, logit_B) of the content-free inputs (contextual calibration only).
        """
        z = logit_difference(logit_a, logit_b)
        self.params, self.info = {}, {}
        self._fit(z, None if y is None else np.asarray(y, dtype=np.int64), content_free=content_free,
                  bounds=(float(temperature_bounds[0]), float(temperature_bounds[1])))
        return self

    def _fit(self, z: np.ndarray, y: np.ndarray | None, *, content_free, bounds) -> None:
        raise NotImplementedError

    # ---- applying
    def _log_odds(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def log_odds(self, logit_a, logit_b) -> np.ndarray:
        """Calibrated log-odds of SPEECH."""
        return self._log_odds(logit_difference(logit_a, logit_b))

    def predict_proba(self, logit_a, logit_b) -> np.ndarray:
        """Calibrated p(SPEECH) of each clip."""
        return metrics.sigmoid(self.log_odds(logit_a, logit_b))

    def predict(self, logit_a, logit_b) -> np.ndarray:
        """Predicted class, 1 = SPEECH where the calibrated p(SPEECH) >= ``threshold``.

        Decided on the log-odds scale (log-odds >= logit(threshold)), where a logit difference too small for a
        float64 probability near 0.5 still decides by its sign (tests/test_invariants.py).
        """
        cut = 0.0 if self.threshold == 0.5 else float(metrics.logit(self.threshold))
        return (self.log_odds(logit_a, logit_b) >= cut).astype(np.int64)

    # ---- reporting
    def describe(self) -> str:
        """One line for logs and plot titles, e.g. ``temperature T=1.2345``."""
        text = self._describe()
        return text + (f", threshold {self.threshold:.3f}" if self.threshold != 0.5 else "")

    def _describe(self) -> str:
        return self.method

    def scalar_params(self) -> dict[str, float]:
        """The scalar parameters (what ``dvc exp show`` can tabulate)."""
        return {k: float(v) for k, v in self.params.items() if isinstance(v, (int, float))}

    @property
    def temperature(self) -> float:
        """The temperature this map divides the logits by; NaN for a method that has none."""
        return math.nan

    # ---- the artifact
    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params, "threshold": self.threshold, "info": self.info}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Calibrator:
        """Rebuild a calibrator from :meth:`to_dict`'s output, refusing one that its method's fit could not have written.

        ``params`` must hold exactly the method's ``required`` keys, each a finite real number (a list of them for
        ``lists``), within what the fit guarantees (:meth:`_check_params`); ``threshold`` must be in [0, 1].
        """
        if not isinstance(d, dict) or "method" not in d:
            raise UserError(f"calibrator: expected a mapping with a 'method' key; {REFIT}")
        method = d["method"]
        if not isinstance(method, str) or method not in REGISTRY:
            raise UserError(f"calibrator: method {method!r} is not one of {', '.join(FITTED)}; {REFIT}")
        cls = REGISTRY[method]
        params, info = d.get("params", {}), d.get("info", {})
        if not isinstance(params, dict):
            raise UserError(f"calibrator: params is {params!r}, not a mapping of parameter names to numbers; {REFIT}")
        missing = [k for k in cls.required if k not in params]
        if missing:
            raise UserError(f"calibrator: method '{method}' needs parameter(s) {', '.join(missing)}; {REFIT}")
        extra = [k for k in params if k not in cls.required]
        if extra:
            raise UserError(f"calibrator: params.{extra[0]} is not a parameter of method '{method}' (it takes "
                            f"{', '.join(cls.required) or 'none'}); {REFIT}")
        params = {key: _number(f"params.{key}", params[key], key in cls.lists) for key in cls.required}
        problem = cls._check_params(params)
        if problem:
            raise UserError(f"calibrator: {problem}; {REFIT}")
        threshold = _number("threshold", d.get("threshold", 0.5), False)
        if not 0.0 <= threshold <= 1.0:
            raise UserError(f"calibrator: threshold {threshold} is not in [0, 1]; {REFIT}")
        if not isinstance(info, dict):
            raise UserError(f"calibrator: info is {info!r}, not a mapping; {REFIT}")
        return cls(params, threshold, info)

    @classmethod
    def _check_params(cls, params: dict[str, Any]) -> str | None:
        """What in ``params`` (finite numbers, the right keys) this method's fit could not have written; None if nothing."""
        return None

    def save(self, path: str | os.PathLike) -> None:
        """Write the calibrator as JSON, atomically (read it back with :func:`load`)."""
        write_json(path, self.to_dict())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r}, threshold={self.threshold!r})"


def load(path: str | os.PathLike) -> Calibrator:
    """The calibrator saved at ``path`` by :meth:`Calibrator.save`; a clear one-line error if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found; run the calibrate stage first (dvc repro calibrate)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err}); {REFIT}") from None
    try:
        return Calibrator.from_dict(data)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None


# ------------------------------------------------------------------------------------- the methods
class NoCalibration(Calibrator):
    """``p = sigmoid(z)``: the model's own softmax over A/B."""

    method = "none"

    def _fit(self, z, y, *, content_free, bounds) -> None:
        pass

    def _log_odds(self, z):
        return z

    def _describe(self) -> str:
        return "no calibration"

    @property
    def temperature(self) -> float:
        return 1.0


class TemperatureScaling(Calibrator):
    """``p = sigmoid(z / T)``; ``T`` minimises the dev NLL within ``calibration.temperature_bounds``."""

    method = "temperature"
    required = ("temperature",)

    def _fit(self, z, y, *, content_free, bounds) -> None:
        from scipy.optimize import minimize_scalar

        sign = np.where(y == 1, 1.0, -1.0)
        lo, hi = math.log(bounds[0]), math.log(bounds[1])
        res = minimize_scalar(lambda log_t: float(np.mean(_softplus(-sign * z / math.exp(log_t)))), bounds=(lo, hi),
                              method="bounded", options={"xatol": 1e-7})
        t = float(math.exp(res.x))
        self.params = {"temperature": t}
        if min(res.x - lo, hi - res.x) < 1e-3:
            lower = res.x - lo < hi - res.x
            self.info["at_bound"] = True
            self.info["bound"] = "lower" if lower else "upper"
            # The dev NLL is convex in 1/T, with slope -mean(sign * z) / 2 at 1/T = 0: where that mean is <= 0 it only
            # falls as T grows, and its infimum is p(SPEECH) = 0.5 everywhere (T -> infinity).
            margin = float(np.mean(sign * z))
            if lower and np.all(sign * z > 0):
                why = ("sharper is always better on dev: every dev clip is on the right side (the classes are "
                       "separated), so the fit wants T -> 0; widen the bounds or choose another method")
            elif lower:
                wrong = int(np.sum(sign * z <= 0))
                why = (f"the dev NLL is lowest below the bound, though {wrong} of {len(z)} dev clips are on the wrong "
                       "side: the logits are small for how well they separate the classes; widen the bounds (a lower "
                       "first value) or choose another method")
            elif margin <= 0:
                why = (f"no temperature beats p(SPEECH) = 0.5 on dev: logit_A - logit_B, signed by the true class, "
                       f"averages {margin:.3g} <= 0, so the logits lean as far the wrong way as the right way, however "
                       "well they rank (a model biased towards one answer can rank perfectly); wider bounds cannot "
                       "help; a method that moves the decision boundary can (platt, beta, contextual)")
            else:
                why = "the dev NLL still falls at the bound; widen the bounds or choose another method"
            log.warning("temperature %.4g is at the %s bound of calibration.temperature_bounds %s: %s", t,
                        self.info["bound"], list(bounds), why)

    @classmethod
    def _check_params(cls, params):
        t = params["temperature"]
        return None if t > 0 else f"params.temperature is {t!r}, not > 0"

    def _log_odds(self, z):
        return z / self.params["temperature"]

    def _describe(self) -> str:
        return f"temperature T={self.params['temperature']:.4f}"

    @property
    def temperature(self) -> float:
        return float(self.params["temperature"])


class PlattScaling(Calibrator):
    """``p = sigmoid(slope * z + bias)`` with ``slope >= 0``, fitted to Platt's smoothed targets."""

    method = "platt"
    required = ("slope", "bias")

    def _fit(self, z, y, *, content_free, bounds) -> None:
        x = np.stack([z, np.ones_like(z)], axis=1)
        w, res = _fit_logistic(x, _smoothed_targets(y), [1.0, 0.0], [(0.0, PARAM_BOUND), (-PARAM_BOUND, PARAM_BOUND)])
        self.params = {"slope": float(w[0]), "bias": float(w[1])}
        self.info = _optimizer_info(res)

    @classmethod
    def _check_params(cls, params):
        return _outside(params, slope=(0.0, PARAM_BOUND), bias=(-PARAM_BOUND, PARAM_BOUND))

    def _log_odds(self, z):
        return self.params["slope"] * z + self.params["bias"]

    def _describe(self) -> str:
        return f"platt slope={self.params['slope']:.3f} bias={self.params['bias']:.3f}"


class BetaCalibration(Calibrator):
    """``p = sigmoid(c + a ln p0 - b ln(1 - p0))``, ``p0 = sigmoid(z)``, ``a, b >= 0``."""

    method = "beta"
    required = ("a", "b", "c")

    def _fit(self, z, y, *, content_free, bounds) -> None:
        x = np.concatenate([_beta_features(z), np.ones((len(z), 1))], axis=1)
        w, res = _fit_logistic(x, _smoothed_targets(y), [1.0, 1.0, 0.0],
                               [(0.0, PARAM_BOUND), (0.0, PARAM_BOUND), (-PARAM_BOUND, PARAM_BOUND)])
        self.params = {"a": float(w[0]), "b": float(w[1]), "c": float(w[2])}
        self.info = _optimizer_info(res)

    @classmethod
    def _check_params(cls, params):
        return _outside(params, a=(0.0, PARAM_BOUND), b=(0.0, PARAM_BOUND), c=(-PARAM_BOUND, PARAM_BOUND))

    def _log_odds(self, z):
        f = _beta_features(z)
        return self.params["c"] + self.params["a"] * f[..., 0] + self.params["b"] * f[..., 1]

    def _describe(self) -> str:
        q = self.params
        return f"beta a={q['a']:.3f} b={q['b']:.3f} c={q['c']:.3f}"


class IsotonicCalibration(Calibrator):
    """A non-decreasing step-linear map of ``z`` to p(SPEECH) (sklearn), clipped to [eps, 1 - eps]."""

    method = "isotonic"
    required = ("x", "y", "eps")
    lists = ("x", "y")

    def _fit(self, z, y, *, content_free, bounds) -> None:
        from sklearn.isotonic import IsotonicRegression  # lazy: sklearn costs ~1 s of import time

        iso = IsotonicRegression(increasing=True, out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(z, y.astype(float))
        self.params = {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_],
                       "eps": ISOTONIC_EPS}

    @classmethod
    def _check_params(cls, params):
        x, y, eps = params["x"], params["y"], params["eps"]
        if not 0 < len(x) == len(y):
            return f"params.x and params.y hold {len(x)} and {len(y)} knots, not as many in each (one or more)"
        for i in range(len(x) - 1):
            if not x[i] < x[i + 1]:
                return f"params.x is not increasing: x[{i}] is {x[i]!r}, x[{i + 1}] is {x[i + 1]!r}"
            if not y[i] <= y[i + 1]:
                return f"params.y is not non-decreasing: y[{i}] is {y[i]!r}, y[{i + 1}] is {y[i + 1]!r}"
        if not 0.0 <= y[0] <= y[-1] <= 1.0:
            return f"params.y runs from {y[0]!r} to {y[-1]!r}, not within [0, 1]"
        return None if 0.0 < eps < 0.5 else f"params.eps is {eps!r}, not in (0, 0.5)"

    def _proba(self, z):
        q = self.params
        return np.clip(np.interp(z, q["x"], q["y"]), q["eps"], 1.0 - q["eps"])

    def _log_odds(self, z):
        return metrics.logit(self._proba(z))

    def predict_proba(self, logit_a, logit_b) -> np.ndarray:
        return self._proba(logit_difference(logit_a, logit_b))  # exact, without a round trip through the logit

    def _describe(self) -> str:
        return f"isotonic ({len(self.params['x'])} knots)"

    def scalar_params(self) -> dict[str, float]:
        return {**super().scalar_params(), "n_knots": float(len(self.params["x"]))}


class ContextualCalibration(Calibrator):
    """``z - log(pbar_A / pbar_B)``: removes the A/B prior the model shows on content-free inputs (no labels)."""

    method = "contextual"
    required = ("bias", "p_speech_content_free")

    def _fit(self, z, y, *, content_free, bounds) -> None:
        if content_free is None:
            raise UserError("calibration.method=contextual needs the logits of the content-free inputs (silence, "
                            "noise), predictions/<system>/dev_content_free.csv; choose another method for a system "
                            "without them")
        a, b = (np.asarray(v, dtype=float) for v in content_free)
        if a.size == 0 or a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise UserError("contextual calibration: the content-free logits must be one or more pairs of finite numbers")
        p_a = float(np.mean(metrics.p_speech_from_logits(a, b)))  # Zhao et al. average the answer distributions
        p_a = min(max(p_a, PRIOR_CLIP), 1.0 - PRIOR_CLIP)
        self.params = {"bias": float(metrics.logit(p_a)), "p_speech_content_free": p_a}
        self.info = {"n_content_free": int(a.size)}

    @classmethod
    def _check_params(cls, params):
        p, bias = params["p_speech_content_free"], params["bias"]
        if not PRIOR_CLIP <= p <= 1.0 - PRIOR_CLIP:
            return f"params.p_speech_content_free is {p!r}, not in [{PRIOR_CLIP:g}, 1 - {PRIOR_CLIP:g}]"
        expected = float(metrics.logit(p))
        if not math.isclose(bias, expected, rel_tol=1e-9, abs_tol=1e-12):
            return f"params.bias is {bias!r}, not logit(p_speech_content_free) = {expected!r}"
        return None

    def _log_odds(self, z):
        return z - self.params["bias"]

    def _describe(self) -> str:
        return f"contextual bias={self.params['bias']:.3f}"


def batch_prior(z: np.ndarray) -> float:
    """``logit(mean(sigmoid(z)))``: the log-odds of the mean answer distribution of a batch of clips (clipped to 1e-12)."""
    p = float(np.mean(metrics.sigmoid(np.asarray(z, dtype=float)))) if np.size(z) else 0.5
    return float(metrics.logit(min(max(p, 1e-12), 1.0 - 1e-12)))


class BatchCalibration(Calibrator):
    """``z - logit(mean_batch sigmoid(z))``: removes the A/B prior of the clips scored together (no labels).

    Batch calibration (Zhou et al., ICLR 2024) estimates the contextual prior from the batch being classified
    rather than from content-free inputs: the mean answer distribution over the batch, removed from each clip.
    Unlike the other methods it reads what it is applied to: ``predict_proba`` of a set uses that set's
    prior, so a shift that moves the prior (noise, short clips) is removed where it happens; the conditions
    report applies it per condition and level. Its fit learns nothing; it records the dev batch's prior.
    """

    method = "batch"
    per_batch = True

    def _fit(self, z, y, *, content_free, bounds) -> None:
        self.params = {}
        self.info = {"dev_prior_log_odds": batch_prior(z)}

    def _log_odds(self, z):
        return z - batch_prior(z)

    def _describe(self) -> str:
        return "batch (prior of each scored set removed)"


REGISTRY: dict[str, type[Calibrator]] = {cls.method: cls for cls in (
    NoCalibration, TemperatureScaling, PlattScaling, BetaCalibration, IsotonicCalibration, ContextualCalibration,
    BatchCalibration)}
