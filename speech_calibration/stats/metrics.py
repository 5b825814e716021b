"""Metrics of a binary SPEECH / NONSPEECH classifier: pure, documented functions of arrays.

Conventions used by every function here:

* ``y`` is the true class, 1 = SPEECH (the positive class), 0 = NONSPEECH; ``p`` is the predicted
  probability of SPEECH; ``pred`` is the predicted class (1 = SPEECH).
* Every function reduces over the **last axis**. A 1-D input gives a scalar (the point estimate);
  a 2-D input of shape ``(B, n)`` -- one bootstrap resample per row, see :mod:`speech_calibration.stats.resampling` -- gives
  ``B`` values with the same code, so the confidence intervals use exactly the point-estimate code.
* A metric that is undefined for the data (e.g. SPEECH accuracy with no SPEECH clip, ROC-AUC with one
  class) is **NaN**, never an exception; each such case is documented on the function.
* Calibration errors take a generic ``(prob, outcome)`` pair: the probability a forecast gave to an
  event and whether the event happened. The headline numbers are **top-label** (Guo et al. 2017):
  ``prob`` = confidence of the predicted class, ``outcome`` = the prediction was correct
  (:func:`top_label`). Passing ``prob=p, outcome=y`` instead measures the calibration of p(SPEECH)
  itself (class-wise).

Estimators of the calibration error (all ``>= 0``; 0 is perfect calibration):

``ece``           equal-width binned ECE, ``sum_b n_b/n * |mean conf_b - mean outcome_b|`` over ``n_bins`` bins of [0, 1]
                  (bins ``[lo, hi)``, the last one closed). On ``(p, y)`` it equals torchmetrics'
                  ``binary_calibration_error``; on the top-label pair that the headline ECE uses it equals its
                  ``multiclass_calibration_error`` with two classes (tests/test_metrics.py, l1, l2 and max norms)
``ece_mass``      the same with equal-mass bins (sorted by confidence, split into ``n_bins`` groups of (almost) equal size;
                  a run of equal confidences is never split, so ties can merge bins: see ``_mass_ends``)
``ece_debiased``  Kumar, Liang & Ma (2019) debiased estimate of the l2 (RMS) calibration error over equal-mass bins:
                  ``sqrt(max(0, sum_b n_b/n * [(mean outcome_b - mean conf_b)^2 - ybar_b (1 - ybar_b) / (n_b - 1)]))``
``ece_smooth``    SmoothECE (Blasiok & Nakkiran 2024): the kernel-smoothed residual integrated over [0, 1] at the
                  bandwidth sigma* that equals its own value (reflected Gaussian kernel, as the ``relplot`` package)
``mce``           maximum calibration error: the largest ``|mean conf_b - mean outcome_b|`` over non-empty equal-width bins
"""
from __future__ import annotations

import functools
import math

import numpy as np

NLL_EPS = 1e-12  # probabilities are clipped to [eps, 1 - eps] before the log: one certain error costs 27.6 nats


# ----------------------------------------------------------------------------------------- helpers
def _f(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


def _safe_div(num, den) -> np.ndarray:
    num, den = np.broadcast_arrays(_f(num), _f(den))
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out if out.ndim else out[()]


def _mean(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis; NaN (without numpy's warning) where it is empty."""
    if x.shape[-1] == 0:
        return np.full(x.shape[:-1], np.nan)[()]
    return np.mean(x, axis=-1)


def _rows(x: np.ndarray) -> np.ndarray:
    """View ``x`` as 2-D ``(rows, n)``."""
    return x.reshape(int(np.prod(x.shape[:-1], dtype=np.int64)), x.shape[-1])


def _unrows(values: np.ndarray, like: np.ndarray):
    out = values.reshape(like.shape[:-1])
    return out if out.ndim else out[()]


def sigmoid(z) -> np.ndarray:
    """The logistic function ``1 / (1 + exp(-z))``, computed as ``(1 + tanh(z / 2)) / 2`` (no overflow for any ``z``).

    Its absolute error is about 1e-16 everywhere, so its relative error grows as ``sigmoid(z)`` nears 0
    (about 1e-8 at ``z = -20``, 2e-4 at ``z = -30``).
    """
    z = _f(z)
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def logit(p) -> np.ndarray:
    """The log-odds ``log(p / (1 - p))``, the inverse of :func:`sigmoid`, as ``log(p) - log1p(-p)``.

    ``log1p(-p)`` stays accurate where ``1 - p`` would round; ``p = 0`` gives ``-inf`` and ``p = 1``
    ``+inf`` (clip ``p`` first where a finite value is needed).
    """
    p = _f(p)
    return np.log(p) - np.log1p(-p)


def p_speech_from_logits(logit_a, logit_b) -> np.ndarray:
    """p(SPEECH) = softmax([logit_A, logit_B])[0] = sigmoid(logit_A - logit_B) (the temperature-1 model)."""
    return sigmoid(_f(logit_a) - _f(logit_b))


def predict(p, threshold: float = 0.5) -> np.ndarray:
    """Predicted class: 1 (SPEECH) where ``p >= threshold``, else 0 (NONSPEECH)."""
    return (_f(p) >= threshold).astype(np.int64)


def top_label(y, p, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) of the predicted class: ``conf = p`` where SPEECH is predicted else ``1 - p``."""
    p = _f(p)
    pred = predict(p, threshold)
    conf = np.where(pred == 1, p, 1.0 - p)
    correct = (pred == np.asarray(y)).astype(float)
    return conf, correct


# ------------------------------------------------------------------------------------- classification
def accuracy(y, pred) -> np.ndarray:
    """Fraction of clips whose predicted class equals the true class. NaN for zero clips."""
    y, pred = np.asarray(y), np.asarray(pred)
    if y.shape[-1] == 0:
        return np.full(y.shape[:-1], np.nan)[()]
    return np.mean(y == pred, axis=-1)


def class_accuracy(y, pred, cls: int) -> np.ndarray:
    """Accuracy on the clips of one true class (its recall): ``#(y == cls and pred == cls) / #(y == cls)``.

    ``cls=1`` is the SPEECH accuracy, ``cls=0`` the NONSPEECH accuracy. NaN when no clip has class ``cls``.
    """
    y, pred = np.asarray(y), np.asarray(pred)
    mask = y == cls
    return _safe_div(np.sum(mask & (pred == cls), axis=-1), np.sum(mask, axis=-1))


def balanced_accuracy(y, pred) -> np.ndarray:
    """Mean of SPEECH and NONSPEECH accuracy. NaN when one class is absent."""
    return 0.5 * (class_accuracy(y, pred, 1) + class_accuracy(y, pred, 0))


def average_ranks(x) -> np.ndarray:
    """Ranks 1..n along the last axis, ties given their average rank (as ``scipy.stats.rankdata``)."""
    x = _rows(_f(x))
    rows, n = x.shape
    order = np.argsort(x, axis=-1, kind="mergesort")
    xs = np.take_along_axis(x, order, axis=-1)
    pos = np.broadcast_to(np.arange(n), (rows, n))
    new = np.ones((rows, n), dtype=bool)
    new[:, 1:] = xs[:, 1:] != xs[:, :-1]
    first = np.maximum.accumulate(np.where(new, pos, 0), axis=-1)
    end = np.ones((rows, n), dtype=bool)
    end[:, :-1] = new[:, 1:]
    last = np.flip(np.minimum.accumulate(np.flip(np.where(end, pos, n), axis=-1), axis=-1), axis=-1)
    ranks = np.empty_like(x)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=-1)
    return ranks


def roc_auc(y, score) -> np.ndarray:
    """Area under the ROC curve of ``score`` for the positive class SPEECH (Mann-Whitney U / (n1 n0)).

    ``AUC = (sum of the ranks of SPEECH clips - n1 (n1 + 1) / 2) / (n1 n0)`` with average ranks for ties,
    equal to ``sklearn.metrics.roc_auc_score``. NaN when one class is absent (sklearn raises there).
    """
    y = _f(y)
    ranks = average_ranks(score).reshape(np.shape(score))
    n1 = np.sum(y, axis=-1)
    n0 = y.shape[-1] - n1
    u = np.sum(ranks * y, axis=-1) - n1 * (n1 + 1) / 2.0
    return _safe_div(u, n1 * n0)


# ---------------------------------------------------------------------------------- selective prediction
def risk_coverage(conf, correct) -> np.ndarray:
    """Selective risk at every coverage ``k / n``: the expected error rate of the ``k`` most confident clips.

    Clips are ranked by ``conf`` (the top-label confidence, :func:`top_label`), most confident first; within a
    run of equal confidences every order is equally likely, so the errors of a partly covered run count in
    proportion (the expectation over those orders, exact). Returns shape ``(..., n)``: entry ``k - 1`` is the
    risk at coverage ``k / n``.
    """
    conf, err = _f(conf), 1.0 - _f(correct)
    n = conf.shape[-1]
    order = np.argsort(-conf, axis=-1, kind="stable")
    c = np.take_along_axis(conf, order, axis=-1)
    e = np.take_along_axis(err, order, axis=-1)
    pos = np.broadcast_to(np.arange(n), c.shape)
    first = np.concatenate([np.ones(c.shape[:-1] + (1,), bool), c[..., 1:] != c[..., :-1]], axis=-1)
    last = np.concatenate([c[..., 1:] != c[..., :-1], np.ones(c.shape[:-1] + (1,), bool)], axis=-1)
    start = np.maximum.accumulate(np.where(first, pos, 0), axis=-1)
    end = np.flip(np.minimum.accumulate(np.flip(np.where(last, pos, n), axis=-1), axis=-1), axis=-1)
    cum = np.cumsum(e, axis=-1)
    before = np.where(start > 0, np.take_along_axis(cum, np.maximum(start - 1, 0), axis=-1), 0.0)
    run = np.take_along_axis(cum, end, axis=-1) - before
    expected_errors = before + (pos - start + 1) * run / (end - start + 1)
    return expected_errors / (pos + 1)


def aurc(conf, correct) -> np.ndarray:
    """Area under the risk-coverage curve: the mean of :func:`risk_coverage` over the ``n`` coverages (lower is
    better; for a perfect ranking of ``m`` errors among ``n`` clips it is ``(1/n) sum_{j=1..m} j / (n - m + j)``).
    NaN for zero clips."""
    return _mean(risk_coverage(conf, correct))


# ---------------------------------------------------------------------------------- proper scores
def brier(y, p) -> np.ndarray:
    """Brier score of p(SPEECH): ``mean((p - y)^2)`` (the one-class form, in [0, 1]; 0.25 for p = 0.5). NaN for zero clips."""
    return _mean((_f(p) - _f(y)) ** 2)


def nll(y, p, eps: float = NLL_EPS, *, log_odds=None) -> np.ndarray:
    """Mean negative log-likelihood ``-mean(y log p + (1 - y) log(1 - p))`` in nats. NaN for zero clips.

    From ``p`` alone, ``p`` is clipped to ``[eps, 1 - eps]``, so one confident error costs at most ``-log(eps)``
    (27.6 nats). Given ``log_odds``, the (finite) log-odds of SPEECH behind ``p`` (``p = sigmoid(log_odds)``), it is
    computed from them instead, without clipping: ``mean(y softplus(-z) + (1 - y) softplus(z))``, so an error
    at log-odds ``z`` costs its full ``|z|`` nats and more (the NLL the calibrators minimise).
    """
    y = _f(y)
    if log_odds is not None:
        z = _f(log_odds)
        return _mean(y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z))
    p = np.clip(_f(p), eps, 1.0 - eps)
    return -_mean(y * np.log(p) + (1.0 - y) * np.log1p(-p))


# --------------------------------------------------------------------------------------- binning
def _width_bins(prob: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin index of each value: bins ``[k/n_bins, (k+1)/n_bins)``, the last one closed at 1."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, prob, side="right") - 1, 0, n_bins - 1)


def _mass_sizes(n: int, n_bins: int) -> np.ndarray:
    """Sizes of ``min(n_bins, n)`` contiguous groups of (almost) equal size (``np.array_split``'s rule)."""
    k = max(1, min(n_bins, n))
    return np.array([n // k + 1] * (n % k) + [n // k] * (k - n % k))


def _mass_ends(ps: np.ndarray, n_bins: int, min_count: int = 1) -> np.ndarray:
    """Ends of the equal-mass bins of sorted forecasts ``ps`` (rows, n): bin ``k`` holds sorted items
    ``ends[k-1] .. ends[k] - 1`` (``ends[-1] = 0``), shape ``(rows, min(n_bins, n))``, non-decreasing, the last ``n``.

    A run of equal forecasts is never split. Bin ``k`` would end after the first ``e_k`` items (``e_k`` the
    cumulative :func:`_mass_sizes`); it ends instead at the first boundary between distinct forecasts at or after
    ``e_k`` (``n`` counts as one). A run of ties reaching past the next ``e_k`` therefore leaves the bins after it
    empty (count 0; every estimator skips them). With ``min_count=2`` a bin of one item (possible only right after
    such a run) joins the bin before it. The bins depend on the sorted forecasts only, never on the row order.
    """
    rows, n = ps.shape
    pos = np.arange(n + 1)
    edge = np.ones((rows, n + 1), dtype=bool)  # edge[:, j]: a bin may end after the first j sorted items
    edge[:, 1:n] = ps[:, 1:] != ps[:, :-1]
    next_edge = np.flip(np.minimum.accumulate(np.flip(np.where(edge, pos, n), axis=-1), axis=-1), axis=-1)
    ends = next_edge[:, np.cumsum(_mass_sizes(n, n_bins))]
    if min_count == 2:
        for k in range(1, ends.shape[1]):  # a lone item after a run of ties joins the bin before it
            single = (ends[:, k] - ends[:, k - 1] == 1)[:, None]
            ends = np.where(single & (ends == ends[:, k - 1 : k]), ends[:, k : k + 1], ends)
    elif min_count != 1:
        raise ValueError(f"min_count must be 1 or 2, got {min_count}")
    return ends


def _bin_stats(prob, outcome, n_bins: int, strategy: str, min_count: int = 1):
    """Per-bin (count, sum of prob, sum of outcome), each of shape ``(rows, bins)``; a bin may be empty (count 0).

    ``mass`` bins are those of :func:`_mass_ends` (with ``min_count=2`` and ``n_bins <= n // 2``, as
    :func:`debiased_ece` calls it, at least 2 items in every non-empty bin).
    """
    prob, outcome = _rows(_f(prob)), _rows(_f(outcome))
    rows, n = prob.shape
    if strategy == "width":
        idx = _width_bins(prob, n_bins)
        size = rows * n_bins
    elif strategy == "mass":
        if n == 0:
            z = np.zeros((rows, 1))
            return z, z, z
        order = np.argsort(prob, axis=-1, kind="mergesort")
        prob = np.take_along_axis(prob, order, axis=-1)
        outcome = np.take_along_axis(outcome, order, axis=-1)
        ends = _mass_ends(prob, n_bins, min_count)
        n_bins = ends.shape[1]
        starts = np.zeros((rows, n), dtype=np.int64)  # +1 at the first item of every bin after the first
        np.add.at(starts, (np.repeat(np.arange(rows), n_bins - 1), np.minimum(ends[:, :-1], n - 1).ravel()),
                  (ends[:, :-1] < n).ravel().astype(np.int64))
        idx = np.cumsum(starts, axis=-1)
        size = rows * n_bins
    else:
        raise ValueError(f"strategy must be 'width' or 'mass', got {strategy!r}")
    flat = (np.arange(rows)[:, None] * n_bins + idx).ravel()
    count = np.bincount(flat, minlength=size).reshape(rows, n_bins).astype(float)
    s_prob = np.bincount(flat, weights=prob.ravel(), minlength=size).reshape(rows, n_bins)
    s_out = np.bincount(flat, weights=outcome.ravel(), minlength=size).reshape(rows, n_bins)
    return count, s_prob, s_out


def binned_calibration_error(prob, outcome, n_bins: int = 15, strategy: str = "width", norm: str = "l1") -> np.ndarray:
    """Binned calibration error of forecasts ``prob`` of events ``outcome`` (0/1).

    With ``conf_b`` and ``acc_b`` the mean forecast and mean outcome of the ``n_b`` items in bin ``b`` (of ``n``):
    ``l1 = sum_b n_b/n |conf_b - acc_b|`` (ECE), ``l2 = sqrt(sum_b n_b/n (conf_b - acc_b)^2)`` (RMSCE),
    ``max = max_b |conf_b - acc_b|`` over non-empty bins (MCE). ``strategy``: ``width`` (bins of [0, 1] of
    equal width) or ``mass`` (equal counts, except that equal forecasts always share a bin: :func:`_mass_ends`).
    Every value is independent of the order of the items, up to floating-point rounding (the bins' sums run in
    item order). NaN for zero items.
    """
    prob = _f(prob)
    count, s_prob, s_out = _bin_stats(prob, outcome, n_bins, strategy)
    n = count.sum(axis=-1)
    gap = np.abs(_safe_div(s_prob - s_out, count))  # NaN in empty bins
    if norm == "l1":
        value = _safe_div(np.abs(s_prob - s_out).sum(axis=-1), n)
    elif norm == "l2":
        value = np.sqrt(_safe_div(np.nansum(count * gap**2, axis=-1), n))
    elif norm == "max":
        value = np.where(n > 0, np.max(np.where(count > 0, gap, -np.inf), axis=-1), np.nan)
    else:
        raise ValueError(f"norm must be 'l1', 'l2' or 'max', got {norm!r}")
    return _unrows(np.asarray(value, dtype=float), prob)


def ece(prob, outcome, n_bins: int = 15) -> np.ndarray:
    """Equal-width binned expected calibration error (l1); see :func:`binned_calibration_error`."""
    return binned_calibration_error(prob, outcome, n_bins, "width", "l1")


def ece_equal_mass(prob, outcome, n_bins: int = 15) -> np.ndarray:
    """Equal-mass binned expected calibration error (l1): ``min(n_bins, n)`` bins of (almost) equal count, ties kept
    together (a bin ends at the first change of forecast at or after its equal-mass quantile; see :func:`_mass_ends`)."""
    return binned_calibration_error(prob, outcome, n_bins, "mass", "l1")


def mce(prob, outcome, n_bins: int = 15) -> np.ndarray:
    """Maximum calibration error over non-empty equal-width bins."""
    return binned_calibration_error(prob, outcome, n_bins, "width", "max")


def debiased_ece(prob, outcome, n_bins: int = 15) -> np.ndarray:
    """Debiased estimate of the l2 (RMS) calibration error, Kumar, Liang & Ma (2019), "Verified uncertainty calibration".

    The plug-in ``sum_b w_b (ybar_b - conf_b)^2`` overestimates the squared error: ``ybar_b`` is a mean of
    ``n_b`` Bernoulli draws, so ``E[(ybar_b - conf_b)^2] = (mu_b - conf_b)^2 + Var(ybar_b)``. Subtracting
    ``ybar_b (1 - ybar_b) / (n_b - 1)`` in every bin gives the squared term ``sum_b w_b [(ybar_b - conf_b)^2 -
    ybar_b (1 - ybar_b) / (n_b - 1)]``; the square root of its positive part is returned. Given the forecasts (the
    bins depend on them only) and outcomes drawn independently with true rates ``mu_i``, the squared term has
    expectation ``sum_b w_b [(mu_b - conf_b)^2 - s_b^2 / (n_b - 1)]``, with ``mu_b`` and ``s_b^2`` the mean and the
    variance of the ``mu_i`` in bin ``b``: it is unbiased for the squared error of the binned forecaster when every
    item of a bin has the same true rate, and lower by ``s_b^2 / (n_b - 1)`` per bin otherwise (both checked by
    Monte Carlo in tests/test_metrics.py). The square root and the clipping at 0 add their own bias.
    Bins are equal-mass, ``min(n_bins, n // 2)`` of them so that every bin holds at least 2 items (ties kept
    together, and a lone item after a run of ties joined to the bin before it: :func:`_mass_ends`).
    NaN for fewer than 2 items.
    """
    prob = _f(prob)
    n = prob.shape[-1]
    if n < 2:
        return np.full(prob.shape[:-1], np.nan)[()]
    return _unrows(np.sqrt(np.maximum(_debiased_square(prob, outcome, n_bins), 0.0)), prob)


def _debiased_square(prob, outcome, n_bins: int) -> np.ndarray:
    """The squared term of :func:`debiased_ece` before clipping, per row (rows,), for ``n >= 2`` items."""
    n = prob.shape[-1]
    count, s_prob, s_out = _bin_stats(prob, outcome, min(n_bins, n // 2), "mass", min_count=2)
    ybar, cbar = _safe_div(s_out, count), _safe_div(s_prob, count)  # NaN in the empty bins, which nansum skips
    with np.errstate(invalid="ignore"):
        return np.nansum(count / n * ((ybar - cbar) ** 2 - ybar * (1.0 - ybar) / (count - 1.0)), axis=-1)


# ------------------------------------------------------------------------------------- smooth ECE
_SMECE_SIGMA_MIN = 1e-3  # as relplot: below this bandwidth the search stops


@functools.cache
def _blas_controller():
    """threadpoolctl's handle on the BLAS that numpy loaded, found once per process."""
    from threadpoolctl import ThreadpoolController  # lazy: only smooth ECE uses it

    return ThreadpoolController()


def _one_blas_thread():
    """A context in which BLAS runs on one thread. Smooth ECE's products, ``(rows, U) @ (U, <= 4096)`` in float32
    with ``U <= n`` distinct forecasts, are too small for threads to pay: on two busy cores they run three times
    slower with two. BLAS threads split rows and columns, never the sum, so no value changes."""
    return _blas_controller().limit(limits=1, user_api="blas")


_KERNEL_FLOOR = 1e-20  # kernel terms below this (before normalising) are set to 0: see _kernel
_REFLECTION_REACH = math.sqrt(2.0 * math.log(1e30))  # a reflected term farther than this many sigmas is below 1e-30
_KERNEL_CACHED_MAX = 2**20  # entries (4 MiB of float32) of the largest kernel kept: the cache holds at most 256 MiB


def _grid_size(sigma: float) -> int:
    """Midpoints of the integration grid of [0, 1]: step <= sigma / 3, so the midpoint rule is exact to ~1e-6 here."""
    return min(max(math.ceil(3.0 / sigma), 48), 4096)


def _smooth_at(sigma: float, keys_f: np.ndarray, v: np.ndarray) -> np.ndarray:
    """smECE_sigma for every row of ``v`` (rows, U), float32: ``int_0^1 |sum_u v_u K_sigma(t, f_u)| dt`` (midpoint
    rule)."""
    large = keys_f.size * _grid_size(sigma) > _KERNEL_CACHED_MAX  # a large corpus's kernel is built and let go
    kernel = (_kernel.__wrapped__ if large else _kernel)(float(sigma), keys_f.tobytes())
    g = v @ kernel
    return np.mean(np.abs(g), axis=-1, dtype=np.float64)


@functools.lru_cache(maxsize=64)
def _kernel(sigma: float, keys: bytes) -> np.ndarray:
    """The reflected Gaussian kernel ``K_sigma(t, f_u)`` (normalised) at the midpoints ``t`` of the integration grid of
    [0, 1], as a read-only float32 ``(U, m)`` matrix, for the forecasts ``f`` whose float64 bytes are ``keys``.

    Cached, the last 64 of at most ``_KERNEL_CACHED_MAX`` entries each: the resamples of one set of forecasts (a
    bootstrap, one level of a condition) hold the same distinct forecasts and the bandwidth grids are fixed, so most
    kernels recur from one call to the next (56 % of them in the conditions stage).
    """
    keys_f = np.frombuffer(keys, dtype=np.float64)
    m = _grid_size(sigma)
    t = (np.arange(m) + 0.5) / m
    c = 1.0 / (sigma * np.sqrt(2.0 * np.pi))
    k = np.exp(-0.5 * ((t[:, None] - keys_f[None, :]) / sigma) ** 2)
    # reflections at 0 and 1 keep the kernel's mass in [0, 1]; added only to the forecasts where one reaches the grid
    # (above exp(-_REFLECTION_REACH**2 / 2) = 1e-30 somewhere, where the floor below is 1e-20)
    for centre in (-keys_f, 2.0 - keys_f):
        near = np.flatnonzero(np.abs(centre - np.clip(centre, t[0], t[-1])) < _REFLECTION_REACH * sigma)
        if len(near) == len(centre):
            k += np.exp(-0.5 * ((t[:, None] - centre[None, :]) / sigma) ** 2)
        elif len(near):
            k[:, near] += np.exp(-0.5 * ((t[:, None] - centre[None, near]) / sigma) ** 2)
    k[k < _KERNEL_FLOOR] = 0.0  # far tails: in float32 their products with the residuals would be subnormal
    kernel = (c * k).T.astype(np.float32)
    kernel.flags.writeable = False
    return kernel


def _distinct_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``(a, b)`` pairs, sorted by ``a`` then ``b``, as a ``(U, 2)`` array, and the index of each pair among them.

    The same as ``np.unique(np.stack([a, b], axis=1), axis=0, return_inverse=True)`` (for values that are not NaN),
    through three 1-D sorts instead of one sort of pair records, which is an order of magnitude slower on the
    ``B * n`` pairs of a bootstrap matrix.
    """
    values_a, code_a = np.unique(a, return_inverse=True)
    values_b, code_b = np.unique(b, return_inverse=True)
    codes, inverse = np.unique(code_a.ravel() * len(values_b) + code_b.ravel(), return_inverse=True)
    keys = np.stack([values_a[codes // len(values_b)], values_b[codes % len(values_b)]], axis=1)
    return keys, inverse.ravel()


def _crossing(sigmas: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the bracket ``sigmas[j-1] < sigma* <= sigmas[j]`` where ``values - sigma`` turns non-positive."""
    h = values - sigmas[:, None]  # (L, rows); decreasing in sigma
    below = h <= 0
    j = np.where(below.any(axis=0), np.argmax(below, axis=0), len(sigmas) - 1)
    return j, h


def smooth_ece(prob, outcome) -> np.ndarray:
    """SmoothECE (Blasiok & Nakkiran 2024, "Smooth ECE: principled reliability diagrams via kernel smoothing").

    With residuals ``r_i = outcome_i - prob_i`` and a Gaussian kernel reflected at 0 and 1,
    ``K_s(t, f) = phi_s(t - f) + phi_s(t + f) + phi_s(t - 2 + f)``, the smoothed calibration error at
    bandwidth ``s`` is ``smECE_s = int_0^1 |(1/n) sum_i r_i K_s(t, prob_i)| dt`` (the kernel-smoothed residual
    weighted by the kernel density estimate). SmoothECE is ``smECE_s*`` at the fixed point ``smECE_s* = s*``
    (unique, since ``smECE_s`` decreases in ``s``); below ``s = 0.001`` the value at 0.001 is returned, as
    ``relplot.smECE`` does. Equal within 2e-4 to the formula above integrated independently (dense grid,
    brentq), also with forecasts piled up near 1; within 2e-3 of ``relplot.smECE`` on forecasts spread over
    (0, 1), while near 0 or 1 relplot, which evaluates its reflected kernel on a grid, is more than 1e-3 off that
    formula (the near-one case of tests/test_metrics.py).

    Rows of a 2-D input (bootstrap resamples) are evaluated together: the kernel is computed once per
    distinct (prob, outcome) pair and a bandwidth grid (coarse, then refined around the crossings) is
    shared by all rows; the fixed point is interpolated linearly in log bandwidth. NaN for zero items.
    """
    prob, outcome = _f(prob), _f(outcome)
    p2, o2 = _rows(prob), _rows(outcome)
    rows, n = p2.shape
    if n == 0:
        return np.full(prob.shape[:-1], np.nan)[()]
    keys, inverse = _distinct_pairs(p2.ravel(), o2.ravel())
    flat = np.repeat(np.arange(rows), n) * len(keys) + inverse
    counts = np.bincount(flat, minlength=rows * len(keys)).reshape(rows, len(keys))
    v = counts * (keys[:, 1] - keys[:, 0])[None, :] / n  # weighted residual of each distinct pair, per row
    with _one_blas_thread():
        value = _fixed_point(keys[:, 0], v.astype(np.float32))
    return _unrows(value, prob)


def _fixed_point(keys_f: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per row of ``v`` (rows, U; float32, as the kernel), the bandwidth where ``smECE_s = s`` (:func:`smooth_ece`), at
    forecasts ``keys_f``."""
    rows = v.shape[0]
    # coarse pass from wide to narrow bandwidths, stopping once every row has crossed (smECE_s > s). A row that has
    # crossed is not evaluated at narrower bandwidths: smECE_s decreases in s, so it stays above them (inf stands in)
    coarse = np.geomspace(1.0, _SMECE_SIGMA_MIN, 13)
    s_coarse = []
    open_rows = np.arange(rows)  # rows not crossed yet
    for s in coarse:
        values = np.full(rows, np.inf)
        values[open_rows] = _smooth_at(s, keys_f, v if len(open_rows) == rows else v[open_rows])
        s_coarse.append(values)
        open_rows = open_rows[values[open_rows] <= s]
        if not len(open_rows):
            break
    coarse = coarse[: len(s_coarse)][::-1]
    s_coarse = np.stack(s_coarse[::-1])
    j_coarse, _ = _crossing(coarse, s_coarse)
    # fine pass inside each row's coarse bracket (rows sharing a bracket share the grid)
    n_fine = 7
    fine = np.empty((rows, n_fine))
    s_fine = np.empty((n_fine, rows))
    for jc in np.unique(j_coarse):
        sel = j_coarse == jc
        grid = np.geomspace(coarse[max(jc - 1, 0)], coarse[jc], n_fine)
        fine[sel] = grid
        s_fine[:, sel] = np.stack([_smooth_at(s, keys_f, v[sel]) for s in grid])
    h = s_fine - fine.T
    below = h <= 0
    j = np.where(below.any(axis=0), np.argmax(below, axis=0), n_fine - 1)
    r = np.arange(rows)
    h_hi, h_lo = h[j, r], h[np.maximum(j - 1, 0), r]
    ls_hi, ls_lo = np.log(fine[r, j]), np.log(fine[r, np.maximum(j - 1, 0)])
    # linear interpolation of h = smECE_s - s in log s between the bracketing grid points
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(h_lo > h_hi, h_lo / (h_lo - h_hi), 1.0)
    sigma_star = np.exp(ls_lo + np.clip(w, 0.0, 1.0) * (ls_hi - ls_lo))
    value = sigma_star.copy()
    # at the fixed point the value equals the bandwidth; where no crossing exists use the grid end
    at_min = (coarse[0] <= _SMECE_SIGMA_MIN * 1.0001) & (s_coarse[0] <= coarse[0])
    value[at_min] = s_coarse[0][at_min]
    no_cross = s_coarse[-1] > coarse[-1]
    value[no_cross] = s_coarse[-1][no_cross]
    return value


# ----------------------------------------------------------------------- Brier decomposition
def brier_decomposition(y, p, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Murphy (1973) decomposition of the Brier score over ``n_bins`` equal-width bins of p(SPEECH).

    With ``pbar_b``, ``ybar_b`` the mean forecast and outcome rate in bin ``b`` and ``ybar`` the base rate:
    ``reliability = sum_b n_b/n (pbar_b - ybar_b)^2`` (lower is better), ``resolution = sum_b n_b/n (ybar_b - ybar)^2``
    (higher is better), ``uncertainty = ybar (1 - ybar)``. For forecasts that take one value per bin,
    ``brier = reliability - resolution + uncertainty`` exactly; for continuous forecasts binning leaves a
    small remainder, reported as ``within_bin = brier - (reliability - resolution + uncertainty)``. Every term is
    NaN for zero clips.
    """
    y, p = _f(y), _f(p)
    if p.shape[-1] == 0:
        return {k: np.full(p.shape[:-1], np.nan)[()] for k in ("reliability", "resolution", "uncertainty", "within_bin")}
    count, s_p, s_y = _bin_stats(p, y, n_bins, "width")
    n = count.sum(axis=-1, keepdims=True)
    ybar = s_y.sum(axis=-1, keepdims=True) / n
    pb, yb = _safe_div(s_p, count), _safe_div(s_y, count)
    rel = np.nansum(count / n * (pb - yb) ** 2, axis=-1)
    res = np.nansum(count / n * (yb - ybar) ** 2, axis=-1)
    unc = (ybar * (1.0 - ybar))[:, 0]
    b = np.mean((_rows(p) - _rows(y)) ** 2, axis=-1)
    out = {"reliability": rel, "resolution": res, "uncertainty": unc, "within_bin": b - (rel - res + unc)}
    return {k: _unrows(v, p) for k, v in out.items()}


# ------------------------------------------------------------------------------ all at once
CALIBRATION_ERRORS = ("ece", "ece_mass", "ece_debiased", "ece_smooth", "mce")
# plug-in estimates of a calibration error, whose intervals the reports reflect about the estimate
# (resampling.basic_interval): on bootstrap resamples, whose repeated clips look surer of themselves, they sit
# above the estimate (measured: benchmarks/ece_intervals.py, README "What the numbers claim")
PLUG_IN_CALIBRATION_ERRORS = ("ece", "ece_mass", "ece_smooth")
LOWER_IS_BETTER = {"brier", "nll", *CALIBRATION_ERRORS, "brier_reliability", "aurc"}


def calibration_errors(conf, correct, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Every calibration-error estimator of forecasts ``conf`` of events ``correct``."""
    return {
        "ece": ece(conf, correct, n_bins),
        "ece_mass": ece_equal_mass(conf, correct, n_bins),
        "ece_debiased": debiased_ece(conf, correct, n_bins),
        "ece_smooth": smooth_ece(conf, correct),
        "mce": mce(conf, correct, n_bins),
    }


def binary_metrics(y, p, *, n_bins: int = 15, threshold: float = 0.5, decomposition: bool = True,
                   score=None) -> dict[str, np.ndarray]:
    """All metrics of one system: classification at ``threshold``, ranking, proper scores, calibration errors.

    ``score``: the log-odds of SPEECH behind ``p``, where known. ROC-AUC ranks them, since they rank the clips as
    ``p`` does but never round (``p`` is exactly 0 or 1 once the log-odds pass about ±37, and near ±30 log-odds
    1e-3 apart already give the same ``p``: such clips would tie, and a temperature could break the ties), and the
    NLL is computed from them, unclipped (:func:`nll`).

    Keys: ``accuracy, acc_speech, acc_nonspeech, balanced_accuracy, roc_auc, brier, nll``, the
    top-label calibration errors ``ece, ece_mass, ece_debiased, ece_smooth, mce`` and ``aurc`` (selective
    prediction by top-label confidence); with ``decomposition``
    also ``brier_reliability, brier_resolution, brier_uncertainty, brier_within_bin``. Works on 1-D
    arrays (floats) or on ``(B, n)`` bootstrap resamples (arrays of ``B``).
    """
    y, p = np.asarray(y), _f(p)
    if p.shape[-1] == 0:  # no clips: every metric is undefined
        keys = ["accuracy", "acc_speech", "acc_nonspeech", "balanced_accuracy", "roc_auc", "brier", "nll",
                *CALIBRATION_ERRORS, "aurc"] + (["brier_reliability", "brier_resolution", "brier_uncertainty",
                                         "brier_within_bin"] if decomposition else [])
        return {k: np.full(p.shape[:-1], np.nan)[()] for k in keys}
    pred = predict(p, threshold)
    out = {
        "accuracy": accuracy(y, pred),
        "acc_speech": class_accuracy(y, pred, 1),
        "acc_nonspeech": class_accuracy(y, pred, 0),
        "balanced_accuracy": balanced_accuracy(y, pred),
        "roc_auc": roc_auc(y, p if score is None else _f(score)),
        "brier": brier(y, p),
        "nll": nll(y, p, log_odds=score),
    }
    conf, correct = top_label(y, p, threshold)
    out.update(calibration_errors(conf, correct, n_bins))
    out["aurc"] = aurc(conf, correct)
    if decomposition:
        out.update({f"brier_{k}": v for k, v in brier_decomposition(y, p, n_bins).items()})
    return out


def reliability_table(prob, outcome, n_bins: int = 15, strategy: str = "width") -> dict[str, np.ndarray]:
    """Reliability-diagram data (1-D inputs): per non-empty bin its edges, count, mean forecast and observed rate.

    Equal-width bins are given by their edges; equal-mass bins (:func:`_mass_ends`) by their smallest and largest
    forecast. Empty arrays for zero items.
    """
    prob, outcome = _f(prob), _f(outcome)
    count, s_prob, s_out = (a[0] for a in _bin_stats(prob, outcome, n_bins, strategy))
    keep = count > 0
    if strategy == "width":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        lo, hi = edges[:-1][keep], edges[1:][keep]
    else:
        ps = np.sort(prob)
        ends = np.cumsum(count).astype(int)[keep]
        lo, hi = ps[ends - count[keep].astype(int)], ps[ends - 1]
    return {"bin_lo": lo, "bin_hi": hi, "count": count[keep].astype(int),
            "confidence": s_prob[keep] / count[keep], "observed": s_out[keep] / count[keep]}
