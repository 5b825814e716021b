"""Paired comparisons of two systems scored on the same clips: exact McNemar (plain and clustered), Holm, bootstrap.

- **Exact McNemar**: of the discordant clips, ``b`` are right only for system 1 and ``c`` only for
  system 2; under the null each discordant clip is a fair coin, so the two-sided p-value is
  ``min(1, 2 * P(Binomial(b + c, 1/2) <= min(b, c)))`` (1 when there is no discordant clip). It treats
  every clip as independent, which the variants of one clip are not.
- **Clustered exact McNemar** (for clustered clips, e.g. every variant of every clip of one speaker): per cluster
  ``d_k = b_k - c_k``. Under the null the two systems are exchangeable within a cluster, so each ``d_k``
  is as likely as ``-d_k``, independently across clusters; the p-value is the exact probability, over
  all ``2^K`` sign flips, that ``|sum_k +-d_k| >= |sum_k d_k|`` (computed by convolving the ``K``
  two-point distributions, after dividing the ``d_k`` by their greatest common divisor). This is the
  exact permutation version of Durkalski et al.'s (2003) clustered McNemar statistic
  ``(sum d_k)^2 / sum d_k^2``, whose denominator no sign flip changes. Chosen over the chi-square
  approximations (Durkalski, Obuchowski) because it is exact at few clusters; with one clip per cluster
  it is the exact McNemar test, and repeating every clip of every cluster ``m`` times leaves it unchanged
  (tests/test_paired_tests.py shows both).
- **Holm**: the step-down family-wise correction; with ``p_(1) <= ... <= p_(m)``, the adjusted
  ``p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``.
- **Clustered bootstrap of an accuracy difference**: clusters (the conditions report's groups: all variants of a
  speaker's or recording's clips)
  are resampled with replacement; each resample's difference is ``sum_c w_c d_c / sum_c w_c n_c``
  with ``d_c`` the cluster's summed correctness difference and ``n_c`` its clip count. The expanded percentile
  interval (:func:`~speech_calibration.stats.resampling.expanded_level`: read wider for few clusters), only where
  :func:`~speech_calibration.stats.resampling.cluster_interval` allows one (``MIN_CLUSTERS`` clusters,
  ``MIN_DISTINCT`` distinct resampled differences); else none, and the reason in words.
  ``benchmarks/group_paired_tests.py`` simulates its coverage at 5 to 12 groups, equal or one holding most clips:
  93.7–95.5 % for a nominal 95 %, beside 83–92 % for the plain percentile interval and, where one group holds most
  clips, 77–85 % for a cluster-robust t interval.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import bdtr  # the binomial CDF, without scipy.stats' 1.8-s import (tested against binomtest)

from speech_calibration.stats.resampling import cluster_counts, cluster_interval


@dataclass(frozen=True)
class McNemar:
    both: int  # right for both systems
    only_1: int  # b: right only for system 1
    only_2: int  # c: right only for system 2
    neither: int
    p_value: float


def mcnemar_exact(correct_1: np.ndarray, correct_2: np.ndarray) -> McNemar:
    """Exact (binomial) two-sided McNemar test on paired correctness vectors."""
    c1, c2 = np.asarray(correct_1, dtype=bool), np.asarray(correct_2, dtype=bool)
    if c1.shape != c2.shape:
        raise ValueError(f"paired vectors differ in shape: {c1.shape} vs {c2.shape}")
    b, c = int(np.sum(c1 & ~c2)), int(np.sum(~c1 & c2))
    return McNemar(int(np.sum(c1 & c2)), b, c, int(np.sum(~c1 & ~c2)), mcnemar_p(b, c))


def mcnemar_p(b: int, c: int) -> float:
    if b + c == 0:
        return 1.0
    return float(min(1.0, 2.0 * bdtr(min(b, c), b + c, 0.5)))


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values, in the input order (NaN entries stay NaN and do not count in the family)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


@dataclass(frozen=True)
class BootstrapDifference:
    diff: float  # accuracy of system 1 minus system 2, over all clips
    lo: float  # expanded percentile interval over resampled clusters; NaN where there is none
    hi: float
    n_clusters: int
    reason: str | None = None  # why there is no interval, in words (None: there is one)


def clustered_bootstrap_difference(correct_1: np.ndarray, correct_2: np.ndarray, clusters: np.ndarray, *,
                                   n_boot: int = 1000, ci: float = 0.95, rng: np.random.Generator | None = None,
                                   unit: str = "groups") -> BootstrapDifference:
    """Accuracy of system 1 minus system 2, with an expanded percentile interval from resampling clusters.

    ``clusters``: each clip's cluster (its group: the variants of a speaker's clips form one), resampled whole.
    The interval bounds are order statistics of the resampled differences (``interpolate=False``); whether
    there is one follows :func:`~speech_calibration.stats.resampling.cluster_interval`: not from fewer than
    ``MIN_CLUSTERS`` clusters, called ``unit`` in the reason (one would give a zero-width interval that says
    nothing of another), nor from fewer than ``MIN_DISTINCT`` distinct resampled differences. Then ``lo`` and
    ``hi`` are NaN and ``reason`` says why.
    """
    diff = np.asarray(correct_1, dtype=np.float64) - np.asarray(correct_2, dtype=np.float64)
    _, index = np.unique(np.asarray(clusters), return_inverse=True)
    d_c = np.bincount(index, weights=diff)
    n_c = np.bincount(index).astype(np.float64)
    rng = rng if rng is not None else np.random.default_rng(0)
    w = cluster_counts(len(n_c), n_boot, rng)
    boot = (w @ d_c) / (w @ n_c)
    interval = cluster_interval(boot, len(n_c), ci, unit=unit, interpolate=False)
    if interval["lo"] is None:
        return BootstrapDifference(float(diff.mean()), np.nan, np.nan, len(n_c), str(interval["reason"]))
    return BootstrapDifference(float(diff.mean()), interval["lo"], interval["hi"], len(n_c))


@dataclass(frozen=True)
class ClusteredMcNemar:
    n_clusters: int
    n_items: int
    both: int
    only_1: int  # items right only for system 1 (summed over clusters)
    only_2: int
    neither: int
    statistic: int  # sum_k (b_k - c_k) = only_1 - only_2
    p_value: float


def sign_flip_p(d) -> float:
    """Exact two-sided p-value of ``sum(d)`` under independent random signs of the integers ``d`` (see the module doc)."""
    d = np.asarray(d, dtype=np.int64)
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    d = d // int(np.gcd.reduce(np.abs(d)))
    observed = abs(int(d.sum()))
    span = int(np.abs(d).sum())
    dist = np.zeros(2 * span + 1)  # P(sum = s) at index s + span
    dist[span] = 1.0
    for v in np.abs(d):
        shifted = np.zeros_like(dist)
        shifted[v:] += 0.5 * dist[:-v]
        shifted[:-v] += 0.5 * dist[v:]
        dist = shifted
    sums = np.arange(-span, span + 1)
    return float(min(1.0, dist[np.abs(sums) >= observed].sum()))


def clustered_mcnemar(correct_1: np.ndarray, correct_2: np.ndarray, clusters: np.ndarray) -> ClusteredMcNemar:
    """Clustered exact McNemar test (see the module doc) on paired correctness vectors and each item's cluster."""
    c1, c2 = np.asarray(correct_1, dtype=bool), np.asarray(correct_2, dtype=bool)
    if c1.shape != c2.shape or c1.shape != np.shape(clusters):
        raise ValueError(f"paired vectors and clusters differ in shape: {c1.shape}, {c2.shape}, {np.shape(clusters)}")
    _, index = np.unique(np.asarray(clusters), return_inverse=True)
    b_k = np.bincount(index, weights=c1 & ~c2).astype(np.int64)
    c_k = np.bincount(index, weights=~c1 & c2).astype(np.int64)
    return ClusteredMcNemar(len(b_k), int(c1.size), int(np.sum(c1 & c2)), int(b_k.sum()), int(c_k.sum()),
                            int(np.sum(~c1 & ~c2)), int(b_k.sum() - c_k.sum()), sign_flip_p(b_k - c_k))
