"""Uncertainty of metrics: clip-level and clustered bootstrap (plain and paired), Student-t intervals across seeds.

The bootstrap is vectorised: all resamples are one ``(B, n)`` index matrix (:func:`bootstrap_indices`),
or one ``(B, clusters)`` matrix of draw counts (:func:`cluster_counts`), and the metric functions of
:mod:`speech_calibration.stats.metrics` reduce over the last axis, so ``B`` resamples cost one call, not ``B`` calls.

Bootstrap intervals are percentile intervals (the ``(1-ci)/2`` and ``(1+ci)/2`` quantiles of the replicates); over
clusters, expanded for their number (:func:`expanded_level`), since a plain percentile interval of few resampled
groups is too short (simulated: 86–92 % for a nominal 95 % at 5 to 20 equal groups, ``benchmarks/group_paired_tests.py``). A
*paired* bootstrap evaluates two systems on the same resampled clips, so the interval of their difference
accounts for the correlation between them (both are scored on the same clips). :func:`keyed_rng` gives
each resampling its own generator, named by text keys, so a result does not depend on what ran before it.

Clips of one group (speaker or recording) are not independent, so a clip-level bootstrap describes
the test groups at hand, not a new group. :func:`cluster_bootstrap_replicates` resamples whole groups
instead (within strata where :func:`class_strata` finds that the design needs them: speech-only and
non-speech-only groups separately, so every resample keeps both classes); with one clip per group and
no strata it draws exactly the resamples of the clip-level bootstrap with the same seed. A group-level
interval is honest only when the groups are many enough to vary: :func:`cluster_interval` gives one only
from ``MIN_CLUSTERS`` groups (in each stratum, where the groups are resampled within strata: a stratum of
one group is the same in every resample) and ``MIN_DISTINCT`` distinct resampled values on (else it says
why in words).
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping

import numpy as np

StatFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]

MIN_CLUSTERS = 5  # fewer groups than this: no group-level interval, a sentence saying why
MIN_DISTINCT = 20  # fewer distinct resampled values than this (but more than one): likewise
MAX_MISS = 1e-3  # stratify a cluster bootstrap by class where a resample would otherwise lose a class more often


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


def first_appearance_codes(labels) -> tuple[np.ndarray, int]:
    """Integer codes ``0..k-1`` of ``labels``, numbered in order of first appearance, and ``k``."""
    _, first, inverse = np.unique(np.asarray(labels), return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)], len(first)


def cluster_bootstrap_replicates(stat: StatFn, clusters, *, strata=None, n_boot: int = 2000,
                                 seed: int | np.random.Generator = 0) -> dict[str, np.ndarray]:
    """Replicates of ``stat`` over ``n_boot`` resamples of whole clusters (groups), drawn with replacement.

    ``clusters``: the cluster of each item (any labels); ``strata``: optionally the stratum of each item,
    constant within a cluster; the clusters of each stratum are resampled among themselves, as many as
    it has. A resample holds every item of every drawn cluster, as often as the cluster was drawn, so
    with unequal cluster sizes resamples differ in length: ``stat(idx)`` is called once per distinct
    length with the ``(b, length)`` index matrix of those resamples (the interface of
    :func:`bootstrap_replicates`), and the replicates come back in resample order.

    Clusters are numbered in order of first appearance and a stratum's draws are
    ``rng.integers(0, k, (n_boot, k))`` for its ``k`` clusters, so one cluster per item and no strata
    give exactly :func:`bootstrap_indices` with the same seed.
    """
    codes, n_clusters = first_appearance_codes(clusters)
    if n_clusters < 1:
        raise ValueError("bootstrap needs at least one item")
    rng = np.random.default_rng(seed)
    if strata is None:
        stratum_of = np.zeros(n_clusters, dtype=np.int64)
    else:
        s_codes, _ = first_appearance_codes(strata)
        stratum_of = np.full(n_clusters, -1, dtype=np.int64)
        stratum_of[codes] = s_codes
        if np.any(stratum_of[codes] != s_codes):
            raise ValueError("strata must be constant within each cluster")
    draws = np.concatenate([members[rng.integers(0, len(members), size=(n_boot, len(members)))]
                            for members in (np.flatnonzero(stratum_of == s) for s in range(stratum_of.max() + 1))],
                           axis=1)
    order = np.argsort(codes, kind="stable")  # items grouped by cluster, in item order within one
    sizes = np.bincount(codes, minlength=n_clusters)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    lengths = sizes[draws].sum(axis=1)
    parts: dict[str, np.ndarray] = {}
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        d = draws[rows].reshape(-1)
        first = np.repeat(starts[d] - np.concatenate([[0], np.cumsum(sizes[d])[:-1]]), sizes[d])
        idx = order[first + np.arange(first.size)].reshape(len(rows), int(length))
        for name, values in stat(idx).items():
            out = parts.setdefault(name, np.full(n_boot, np.nan))
            out[rows] = np.asarray(values, dtype=float)
    return parts


def composition_strata(labels, clusters) -> np.ndarray:
    """Each item's stratum: the set of labels its cluster holds (``"0"``, ``"1"`` or ``"0+1"`` for 0/1 labels)."""
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    codes, k = first_appearance_codes(clusters)
    held = [sorted({str(v) for v in labels[codes == c]}) for c in range(k)]
    return np.array(["+".join(h) for h in held], dtype=object)[codes]


def clusters_per_stratum(strata, clusters, name: Callable[[str], str] = str) -> dict[str, int]:
    """``{name(stratum): its number of distinct clusters}``, the strata in order of first appearance (each item's
    stratum in ``strata``, its cluster in ``clusters``)."""
    strata, clusters = np.asarray(strata), np.asarray(clusters)
    return {name(s): len(set(clusters[strata == s].tolist())) for s in dict.fromkeys(strata.tolist())}


def miss_probability(labels, clusters) -> float:
    """The chance that one unstratified cluster resample holds no item of some label, or an upper bound of it.

    A resample draws ``k`` of the ``k`` clusters with replacement, so it misses label ``c`` (held by ``m_c``
    of the clusters) with probability ``(1 - m_c / k)^k``. Returned: the sum of that over the labels. With
    two labels the sum is exact, since a resample (``k >= 1`` drawn clusters, each holding some label) cannot
    miss both at once; with more labels it is the union bound, an upper bound (it counts twice a resample
    that misses two labels).
    """
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    k = len(set(clusters.tolist()))
    return float(sum((1.0 - len(set(clusters[labels == c].tolist())) / k) ** k for c in set(labels.tolist())))


def class_strata(labels, clusters, max_miss: float = MAX_MISS) -> np.ndarray | None:
    """The strata a cluster bootstrap needs: :func:`composition_strata` where an unstratified resample would lose a
    label with probability above ``max_miss`` (:func:`miss_probability`), else None (no strata).

    So a design of speech-only speakers and non-speech-only sources is resampled within each kind (both
    classes in every resample), while groups that each hold both classes, or many one-clip groups, are
    resampled as they are.
    """
    return composition_strata(labels, clusters) if miss_probability(labels, clusters) > max_miss else None


def _count(n: int, unit: str) -> str:
    """``"3 groups"``, ``"1 group"``: ``n`` and the plural ``unit``, singular for one."""
    return f"{n} {unit[:-1] if n == 1 and unit.endswith('s') else unit}"


def expansion_clusters(n_clusters: int, per_stratum: Mapping[str, int] | None) -> int:
    """The cluster count that sets the expansion: all of them, or with strata the smallest stratum's."""
    return min(per_stratum.values()) if per_stratum else n_clusters


def expanded_level(ci: float, n_clusters: int, per_stratum: Mapping[str, int] | None = None) -> float:
    """The level at which to read a cluster bootstrap's percentiles for an interval at ``ci``: Hesterberg's (2015)
    expanded percentile interval, ``2 Phi(sqrt(G / (G - 1)) t_{(1+ci)/2, G-1}) - 1``, with ``G`` clusters.

    A plain percentile interval from ``G`` resampled clusters is too short twice over: the bootstrap's variance is
    ``(G - 1) / G`` of the unbiased one, and normal quantiles stand where Student's t with ``G - 1`` degrees of
    freedom should. The expansion undoes both, as for the t interval of a mean, and tends to ``ci`` as ``G`` grows
    (for 0.95: 0.998 at 5 clusters, 0.989 at 8, 0.954 at 100). At 5 clusters the 95 % interval so reads the 0.1 %
    tails, near the extremes of 1000 resamples. Resampled within strata (``per_stratum``: each stratum's cluster
    count), ``G`` is the smallest stratum's, a conservative choice: a stratum of few clusters can hold most of the
    variance, and pooling the strata's degrees of freedom then expands too little. Checked against scipy.stats in
    tests/test_stats.py.
    """
    from scipy.special import ndtr, stdtrit  # lazy: only a stage with a group-level interval pays the import

    g = expansion_clusters(n_clusters, per_stratum)
    if g < 2:
        return ci
    z = math.sqrt(g / (g - 1)) * float(stdtrit(g - 1, (1.0 + ci) / 2.0))
    return float(2.0 * ndtr(z) - 1.0)


def expanded_p(p_bootstrap: float, n_clusters: int, per_stratum: Mapping[str, int] | None = None) -> float:
    """A two-sided bootstrap p-value read the way :func:`expanded_level` reads the interval: the normal deviate of its
    tail, shrunk by ``sqrt(G / (G - 1))``, as a Student t with ``G - 1`` degrees of freedom. So ``p < 1 - ci`` where
    the expanded interval at ``ci`` excludes 0, up to the resolution of the resamples (``p_bootstrap`` moves in
    steps of ``2 / B``, and the interval's bounds are interpolated)."""
    from scipy.special import ndtri, stdtr

    g = expansion_clusters(n_clusters, per_stratum)
    if g < 2 or p_bootstrap >= 1.0 or math.isnan(p_bootstrap):
        return p_bootstrap
    t = float(ndtri(1.0 - p_bootstrap / 2.0)) / math.sqrt(g / (g - 1))
    return float(min(1.0, 2.0 * stdtr(g - 1, -t)))


def cluster_interval(replicates: np.ndarray, n_clusters: int, ci: float = 0.95, *, unit: str = "groups",
                     per_stratum: Mapping[str, int] | None = None, interpolate: bool = True,
                     constant_ok: bool = False) -> dict[str, float | int | None | str]:
    """The expanded percentile interval of cluster-bootstrap replicates (the percentiles at :func:`expanded_level`),
    or ``lo = hi = None`` and the reason in words.

    No interval from fewer than ``MIN_CLUSTERS`` clusters, nor when the replicates take fewer than
    ``MIN_DISTINCT`` distinct values: the percentile interval of so coarse a distribution says more about
    the few clusters than about a new one. One value in every resample (a system that gives one answer to
    every clip at a level: balanced accuracy 1/2 in each) is no exception, since the zero-width interval would
    claim a certainty that these clusters cannot give, unless ``constant_ok`` says it cannot vary by
    construction (the accuracy difference of a calibrator that keeps every answer): then it is that interval. A
    censored value (``-inf``/``+inf``, a threshold below or beyond the tested range) in every resample gives the
    interval censored at both ends, which says just that.

    ``per_stratum``: ``{stratum name: its number of clusters}`` when the clusters were resampled within
    strata (:func:`cluster_bootstrap_replicates` with ``strata``); each stratum varies only among its own
    clusters, so the minimum then applies to each stratum, and the reason names those below it, smallest
    first (``"1 NONSPEECH group: too few ..."``). NaN replicates (the metric undefined in a resample) are left
    out; ``n_nan`` says how many, when there are any. ``interpolate``: as in :func:`percentile_interval`
    (``False`` for replicates that may be ``-inf``/``+inf``, censored thresholds).
    """
    r = np.asarray(replicates, dtype=float)
    n_nan = int(np.isnan(r).sum())
    r = r[~np.isnan(r)]
    distinct = int(np.unique(r).size)
    small = sorted((n, name) for name, n in (per_stratum or {}).items() if n < MIN_CLUSTERS)
    if small:
        reason = (f"{', '.join(_count(n, f'{name} {unit}') for n, name in small)}: too few for a {unit[:-1]}-level interval "
                  f"({unit} are resampled within each class stratum; needs >= {MIN_CLUSTERS} {unit} per stratum "
                  f"and >= {MIN_DISTINCT} distinct resampled values)")
    elif n_clusters < MIN_CLUSTERS:
        reason = (f"{_count(n_clusters, unit)}: too few for a {unit[:-1]}-level interval "
                  f"(needs >= {MIN_CLUSTERS} {unit} and >= {MIN_DISTINCT} distinct resampled values)")
    elif r.size == 0:
        reason = "undefined in every resample"
    elif distinct == 1 and not constant_ok and np.isfinite(r[0]):
        reason = (f"the same value ({r[0]:.4g}) in every resample of {_count(n_clusters, unit)}: no spread to make an "
                  f"interval of (a zero-width one would claim a certainty that they cannot give)")
    elif 1 < distinct < MIN_DISTINCT:
        reason = (f"{distinct} distinct resampled values from {_count(n_clusters, unit)}: too coarse for an interval "
                  f"(needs >= {MIN_DISTINCT})")
    else:
        lo, hi = percentile_interval(r, expanded_level(ci, n_clusters, per_stratum), interpolate=interpolate)
        return {"lo": lo, "hi": hi, **({"n_nan": n_nan} if n_nan else {})}
    return {"lo": None, "hi": None, "reason": reason, **({"n_nan": n_nan} if n_nan else {})}


def basic_interval(interval: Mapping, point: float, bounds: tuple[float, float] = (0.0, 1.0)) -> dict:
    """``interval`` (a percentile interval: ``lo``, ``hi``, with any other keys) reflected about the point estimate:
    ``[2 point - hi, 2 point - lo]``, each bound kept within ``bounds`` (the basic bootstrap interval of Davison &
    Hinkley 1997, section 5.2). Where the resampled values sit above the estimate as the estimate sits above the
    truth (a plug-in calibration error: a resample repeats clips, and the repeats look surer of themselves), the
    percentile interval doubles that lean and the reflection corrects for it, in part (coverage simulated by
    ``benchmarks/ece_intervals.py``). The reflected interval need not hold the estimate (when most resampled values
    sit above twice its distance from the lower percentile). An interval without bounds (``lo`` None) is returned as
    it is; a NaN point gives NaN bounds; one that ``bounds`` would shut to a single value (every resampled value
    more than twice the estimate: ``[0, 0]``) gives none, and the reason."""
    if interval["lo"] is None:
        return dict(interval)
    low, high = bounds
    if math.isnan(point):
        lo = hi = math.nan
    else:
        lo = min(max(2.0 * point - interval["hi"], low), high)
        hi = min(max(2.0 * point - interval["lo"], low), high)
        if lo == hi:
            return {**interval, "lo": None, "hi": None,
                    "reason": f"the resampled values sit so far from the estimate ({point:.4g}) that the reflected "
                              f"interval shuts to {lo:g}: no interval"}
    return {**interval, "lo": lo, "hi": hi}


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


def interval_summary(replicates: np.ndarray, ci: float = 0.95) -> dict[str, float | str | None]:
    """``{"lo", "hi"}`` of the percentile interval, and ``n_nan`` when some resamples had the metric undefined; where
    every defined resample gives one value, ``lo = hi = None`` and the ``reason`` (a zero-width interval would claim
    a certainty that a resample of these clips cannot give, e.g. ROC-AUC 1 when every resample ranks perfectly)."""
    r = np.asarray(replicates, dtype=float)
    n_nan = int(np.isnan(r).sum())
    values = np.unique(r[~np.isnan(r)])
    if values.size == 1:
        out = {"lo": None, "hi": None, "reason": f"the same value ({values[0]:.4g}) in every resample of the clips: "
                                                 "no spread to make an interval of"}
    else:
        lo, hi = percentile_interval(r, ci)
        out = {"lo": lo, "hi": hi}
    if n_nan:
        out["n_nan"] = n_nan
    return out


def binomial_interval(successes: int, n: int, ci: float = 0.95) -> dict[str, float]:
    """``{"lo", "hi"}``: the exact (Clopper-Pearson) interval of the proportion ``successes / n`` of ``n`` independent
    trials, the beta quantiles ``B((1 - ci)/2; k, n - k + 1)`` and ``B((1 + ci)/2; k + 1, n - k)``, with 0 and 1 at
    ``k = 0`` and ``k = n``; NaN bounds for ``n = 0``. Unlike a bootstrap, it has width when every trial succeeds."""
    from scipy.special import betaincinv  # lazy, as every scipy import here

    if n == 0:
        return {"lo": math.nan, "hi": math.nan}
    k, tail = int(successes), (1.0 - ci) / 2.0
    lo = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, tail))
    hi = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1.0 - tail))
    return {"lo": lo, "hi": hi}


def paired_difference(point_a: float, point_b: float, rep_a: np.ndarray, rep_b: np.ndarray, *, ci: float = 0.95,
                      lower_is_better: bool = True, n_clusters: int | None = None,
                      per_stratum: Mapping[str, int] | None = None,
                      constant_ok: bool = False) -> dict[str, float | str | None]:
    """Paired bootstrap of ``b - a`` (e.g. calibrated minus uncalibrated) from replicates on the same resamples.

    Returns the observed difference, its percentile interval, a two-sided bootstrap p-value
    ``min(1, 2 (1 + count) / (B + 1))``, ``count`` the resampled differences in the smaller tail (``d <= 0`` or
    ``d >= 0``; never 0 from ``B`` resamples; over clusters then expanded) and a verdict: ``better`` / ``worse`` when the interval
    excludes 0 in the good / bad direction (over clusters, and ``p < 1 - ci``: the two can disagree by the
    resolution of ``B`` resamples), ``no clear difference`` otherwise (also when every replicate difference is
    exactly 0, e.g. the accuracy of temperature scaling).

    With ``n_clusters`` (replicates of a cluster bootstrap; ``per_stratum`` when it was stratified) the interval
    follows :func:`cluster_interval` (expanded for the number of clusters, and the p-value with it:
    :func:`expanded_p`): where that gives none, ``lo``, ``hi`` and ``p`` are None and the verdict is
    ``no interval: <reason>``. ``constant_ok``: the caller knows the difference cannot vary (the accuracy of two
    series that give every clip the same answer), so one value in every resample is the zero-width interval.
    """
    d = np.asarray(rep_b, dtype=float) - np.asarray(rep_a, dtype=float)
    d = d[~np.isnan(d)]
    delta = float(point_b - point_a)
    if n_clusters is not None:
        interval = cluster_interval(d, n_clusters, ci, per_stratum=per_stratum, constant_ok=constant_ok)
        if interval["lo"] is None:
            return {"delta": delta, "lo": None, "hi": None, "p": None, "verdict": f"no interval: {interval['reason']}"}
        lo, hi = interval["lo"], interval["hi"]
    else:
        lo, hi = percentile_interval(d, ci)
    if d.size == 0:
        return {"delta": delta, "lo": lo, "hi": hi, "p": math.nan, "verdict": "undefined"}
    tail = (1.0 + min(np.sum(d <= 0), np.sum(d >= 0))) / (d.size + 1.0)  # never 0 from B resamples
    p = float(min(1.0, 2.0 * tail))
    if n_clusters is not None:
        p = expanded_p(p, n_clusters, per_stratum)
    improves = hi < 0 if lower_is_better else lo > 0
    worsens = lo > 0 if lower_is_better else hi < 0
    if n_clusters is not None and not p < 1.0 - ci:  # over clusters, the interval and p must agree (resolution of B)
        improves = worsens = False
    verdict = "better" if improves else "worse" if worsens else "no clear difference"
    return {"delta": delta, "lo": lo, "hi": hi, "p": p, "verdict": verdict}


def paired_difference_text(d: Mapping, scale: float = 1.0) -> str:
    """A :func:`paired_difference` in words: ``[lo, hi] verdict`` (the bounds times ``scale``), or its verdict alone
    where it has no interval (``no interval: <reason>``)."""
    return d["verdict"] if d["lo"] is None else f"[{scale * d['lo']:+.3f}, {scale * d['hi']:+.3f}] {d['verdict']}"


def _t_quantile(q: float, df: int) -> float:
    from scipy.special import (
        stdtrit,  # lazy: scipy.stats alone costs ~1 s of import time
    )

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
