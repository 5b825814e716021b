"""Uncertainty of metrics: clip-level and clustered bootstrap (plain and paired), Student-t intervals across seeds.

The bootstrap is vectorised: all resamples are one ``(B, n)`` index matrix (:func:`bootstrap_indices`),
or one ``(B, clusters)`` matrix of draw counts (:func:`cluster_counts`), and the metric functions of
:mod:`speech_calibration.stats.metrics` reduce over the last axis, so ``B`` resamples cost one call, not ``B`` calls.

Intervals are percentile intervals (the ``(1-ci)/2`` and ``(1+ci)/2`` quantiles of the replicates). A
*paired* bootstrap evaluates two systems on the same resampled clips, so the interval of their difference
accounts for the correlation between them (both are scored on the same clips). :func:`keyed_rng` gives
each resampling its own generator, named by text keys, so a result does not depend on what ran before it.

Caveat, stated in the reports: clips of one group (speaker or recording) are not independent, so a
clip-level bootstrap over a test split of few groups understates the uncertainty of a new group.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping

import numpy as np

StatFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]


def keyed_rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the text ``keys`` (in order), not on what drew before it.

    Seeded with ``[seed, crc32(key_1), crc32(key_2), ...]`` (UTF-8 keys), e.g. ``keyed_rng(7, clip_id, "snr", "10")``.
    """
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """A ``(n_boot, n)`` matrix of clip indices drawn with replacement (one resample per row)."""
    if n < 1:
        raise ValueError("bootstrap needs at least one item")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def cluster_counts(n_clusters: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap weights, shape ``(n_boot, n_clusters)``: how often each cluster is drawn (multinomial, sum ``n_clusters``)."""
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_boot).astype(np.float64)


def bootstrap_replicates(stat: StatFn, n: int, *, n_boot: int = 2000, seed: int = 0, chunk: int = 2000) -> dict[str, np.ndarray]:
    """Replicates of every statistic ``stat`` returns, over ``n_boot`` resamples of ``n`` items.

    ``stat(idx)`` gets a ``(b, n)`` index matrix and returns ``{name: array of b}``; resamples are
    processed ``chunk`` rows at a time to bound memory. The same ``seed`` gives the same resamples, so
    two calls with the same seed are paired.
    """
    idx = bootstrap_indices(n, n_boot, seed)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_boot, chunk):
        for name, values in stat(idx[start:start + chunk]).items():
            parts.setdefault(name, []).append(np.asarray(values, dtype=float))
    return {name: np.concatenate(v) for name, v in parts.items()}


def percentile_interval(replicates: np.ndarray, ci: float = 0.95, *, interpolate: bool = True) -> tuple[float, float]:
    """The ``(1-ci)/2`` and ``(1+ci)/2`` quantiles of bootstrap replicates, ignoring NaN replicates (NaN if all are NaN).

    ``interpolate=True``: linear interpolation between order statistics (``np.quantile``'s default).
    ``interpolate=False``: the order statistics themselves, at index ``floor(q (n-1))`` for the lower bound
    and ``ceil(q (n-1))`` for the upper one (of the ``n`` sorted replicates), so the interval never shrinks;
    replicates may then be ``-inf``/``+inf`` (censored below/above, sorting at the ends), and a bound
    that lands on one is itself censored, never interpolated between infinity and a number.
    """
    r = np.asarray(replicates, dtype=float)
    r = r[~np.isnan(r)]
    if r.size == 0:
        return math.nan, math.nan
    q_lo, q_hi = (1.0 - ci) / 2.0, (1.0 + ci) / 2.0
    if interpolate:
        lo, hi = np.quantile(r, [q_lo, q_hi])
    else:
        lo, hi = np.quantile(r, q_lo, method="lower"), np.quantile(r, q_hi, method="higher")
    return float(lo), float(hi)


def interval_summary(replicates: np.ndarray, ci: float = 0.95) -> dict[str, float]:
    """``{"lo", "hi"}`` of the percentile interval, and ``n_nan`` when some resamples had the metric undefined."""
    lo, hi = percentile_interval(replicates, ci)
    out = {"lo": lo, "hi": hi}
    n_nan = int(np.isnan(np.asarray(replicates, dtype=float)).sum())
    if n_nan:
        out["n_nan"] = n_nan
    return out


def paired_difference(point_a: float, point_b: float, rep_a: np.ndarray, rep_b: np.ndarray, *, ci: float = 0.95,
                      lower_is_better: bool = True) -> dict[str, float | str]:
    """Paired bootstrap of ``b - a`` (e.g. calibrated minus uncalibrated) from replicates on the same resamples.

    Returns the observed difference, its percentile interval, a two-sided bootstrap p-value
    ``min(1, 2 min(P*(d <= 0), P*(d >= 0)))`` and a verdict: ``better`` / ``worse`` when the interval
    excludes 0 in the good / bad direction, ``no clear difference`` otherwise (also when every
    replicate difference is exactly 0, e.g. the accuracy of temperature scaling).
    """
    d = np.asarray(rep_b, dtype=float) - np.asarray(rep_a, dtype=float)
    d = d[~np.isnan(d)]
    delta = float(point_b - point_a)
    lo, hi = percentile_interval(d, ci)
    if d.size == 0:
        return {"delta": delta, "lo": lo, "hi": hi, "p": math.nan, "verdict": "undefined"}
    p = float(min(1.0, 2.0 * min(np.mean(d <= 0), np.mean(d >= 0))))
    improves = hi < 0 if lower_is_better else lo > 0
    worsens = lo > 0 if lower_is_better else hi < 0
    verdict = "better" if improves else "worse" if worsens else "no clear difference"
    return {"delta": delta, "lo": lo, "hi": hi, "p": p, "verdict": verdict}


def _t_quantile(q: float, df: int) -> float:
    from scipy.special import stdtrit  # lazy: scipy.stats alone costs ~1 s of import time

    return float(stdtrit(df, q))


def t_interval(values, ci: float = 0.95) -> dict[str, float]:
    """Mean, sample SD (ddof=1) and the Student-t interval ``mean +- t_{(1+ci)/2, k-1} SD / sqrt(k)`` of ``k`` values.

    NaN values (a metric undefined for one seed) are dropped; ``k`` reports how many remained. With
    ``k = 1`` the SD and interval are NaN (one seed says nothing about seed-to-seed spread).
    """
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    k = int(v.size)
    if k == 0:
        return {"mean": math.nan, "sd": math.nan, "lo": math.nan, "hi": math.nan, "k": 0}
    mean = float(v.mean())
    if k == 1:
        return {"mean": mean, "sd": math.nan, "lo": math.nan, "hi": math.nan, "k": 1}
    sd = float(v.std(ddof=1))
    half = _t_quantile((1.0 + ci) / 2.0, k - 1) * sd / math.sqrt(k)
    return {"mean": mean, "sd": sd, "lo": mean - half, "hi": mean + half, "k": k}
