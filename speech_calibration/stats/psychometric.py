"""Psychometric curves: logistic fits of P(answer SPEECH) against a stimulus level, thresholds, clustered bootstrap.

The model is ``P(y = 1 | x) = sigmoid(a + b x)`` with ``x`` the level (log10 of the duration in ms,
or the SNR in dB). It is fitted by maximum likelihood to binomial counts ``k`` of ``n`` at each level,
with a tiny ridge penalty ``lambda/2 (a_z^2 + b_z^2)`` on the coefficients of the standardised level
so that perfectly separated data (all wrong below some level, all right above) gives a finite, steep
curve instead of diverging. Many fits run at once (one per bootstrap resample) by batched Newton steps.

The threshold at criterion ``q`` is the level where the fitted curve crosses ``q``,
``x_q = (logit(q) - a) / b``. It is reported only inside the tested range
``[x_min, x_max]``; a fitted curve already at or above ``q`` at ``x_min`` gives ``-inf``
(censored: "below the lowest level"), one still below ``q`` at ``x_max`` gives ``+inf``
(censored: "above the highest level"). Nothing is extrapolated.

Intervals come from a clustered bootstrap. The rows of a response matrix are base clips (every variant of one
clip is a row); the clusters are groups of rows (``clusters``: the conditions report passes each base clip's
group, its speaker or recording, the unit a result generalises over; without it every row is its own cluster).
Clusters are resampled with replacement, the per-level counts recomputed, the curve refitted; the interval is
the expanded percentile interval (:func:`~speech_calibration.stats.resampling.expanded_level`: wider for few
clusters) of the resampled thresholds on the extended real line (a censored resample counts
as -inf or +inf, so an interval bound can itself be censored). There is an interval only where
:func:`~speech_calibration.stats.resampling.cluster_interval` allows one (``MIN_CLUSTERS`` clusters, in
each stratum where they are drawn by the classes they hold, and ``MIN_DISTINCT`` distinct resampled
thresholds); else its bounds are NaN and ``Threshold.reason`` says why (:func:`censored_interval`).

A curve of P(answer SPEECH) on speech clips measures sensitivity and bias together: a system that
answers SPEECH to everything sits at 1 at every level. :func:`fit_sensitivity` measures sensitivity:
the hit rate ``H(x)`` (speech clips answered SPEECH) and the false-alarm rate ``F(x)`` (non-speech clips
answered SPEECH) are each fitted as above, and the balanced accuracy is ``BA(x) = (H(x) + 1 - F(x)) / 2``,
which a constant answer holds at exactly 1/2. Its threshold at ``q`` is the lowest level in
``[x_min, x_max]`` where the fitted ``BA`` reaches ``q``: ``-inf`` when it already does at ``x_min``,
``+inf`` (not reached) when it does not by ``x_max``, else found on ``GRID`` equally spaced levels with
linear interpolation between the two around the first crossing. A cluster is drawn once for its speech and
its non-speech clips (a speaker's hit rate and false alarms travel together), within the stratum of the classes
it holds where a plain resample would lose a class, so every resample refits both curves on both classes. A
curve that falls with the level (a hit rate that drops with duration, or a balanced accuracy that rises and
falls) can reach ``q`` and lose it again: ``Threshold.falls_back`` is where, so "reached below the lowest level"
is never read as "holds everywhere above it".

:func:`first_exceedance` locates, for a measure that grows towards low levels (a calibration error), the first
level where it reaches a criterion, scanning down from the highest level, between tested levels by the
same linear interpolation (:func:`first_crossing`) and with the same censoring (-inf below, +inf above).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speech_calibration.stats.metrics import sigmoid
from speech_calibration.stats.resampling import class_strata, cluster_counts, cluster_interval, first_appearance_codes

RIDGE = 1e-3
GRID = 4001  # levels on which a balanced-accuracy threshold is located
CLASSES = ("SPEECH", "NONSPEECH")  # the strata of fit_sensitivity's bootstrap, named as the labels


def fit_logistic(x: np.ndarray, k: np.ndarray, n: np.ndarray, ridge: float = RIDGE,
                 iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood (tiny ridge) ``a, b`` of ``sigmoid(a + b x)`` for binomial counts.

    ``x``: levels, shape ``(L,)``; ``k``, ``n``: successes and trials, shape ``(L,)`` or ``(B, L)``.
    Returns ``a``, ``b`` of shape ``()`` or ``(B,)``.
    """
    x = np.asarray(x, dtype=np.float64)
    single = np.ndim(k) == 1
    k = np.atleast_2d(np.asarray(k, dtype=np.float64))
    n = np.broadcast_to(np.atleast_2d(np.asarray(n, dtype=np.float64)), k.shape)
    mean, sd = float(x.mean()), float(x.std()) or 1.0
    z = (x - mean) / sd
    theta = np.zeros((k.shape[0], 2))
    total = np.maximum(n.sum(axis=1), 1.0)
    theta[:, 0] = np.log((k.sum(axis=1) + 0.5) / (total - k.sum(axis=1) + 0.5))  # start at the pooled rate
    for _ in range(iterations):
        eta = theta[:, :1] + theta[:, 1:] * z
        p = 1.0 / (1.0 + np.exp(-eta))
        r = k - n * p
        w = n * p * (1.0 - p)
        g0 = r.sum(axis=1) - ridge * theta[:, 0]
        g1 = (r * z).sum(axis=1) - ridge * theta[:, 1]
        h00 = w.sum(axis=1) + ridge
        h01 = (w * z).sum(axis=1)
        h11 = (w * z * z).sum(axis=1) + ridge
        det = h00 * h11 - h01 * h01
        step = np.stack([(h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det], axis=1)
        norm = np.linalg.norm(step, axis=1, keepdims=True)
        step *= np.minimum(1.0, 5.0 / np.maximum(norm, 1e-300))  # damped: no wild first steps
        theta += step
        if np.max(np.abs(step)) < 1e-10:
            break
    b = theta[:, 1] / sd
    a = theta[:, 0] - b * mean
    return (a[0], b[0]) if single else (a, b)


def logistic(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """The fitted curve ``sigmoid(a + b x)`` at levels ``x``."""
    return sigmoid(a + b * np.asarray(x, dtype=np.float64))


def thresholds(a: np.ndarray, b: np.ndarray, q: float, x_min: float, x_max: float) -> np.ndarray:
    """The level where ``sigmoid(a + b x) = q`` within ``[x_min, x_max]``; ``-inf``/``+inf`` when censored below/above."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    target = np.log(q / (1.0 - q))
    at_min, at_max = a + b * x_min, a + b * x_max
    with np.errstate(divide="ignore", invalid="ignore"):
        x_q = (target - a) / b
    return np.where(at_min >= target, -np.inf, np.where(at_max < target, np.inf, x_q))


@dataclass(frozen=True)
class Threshold:
    q: float
    value: float  # level units (x); -inf / +inf when censored
    lo: float  # NaN where there is no interval (``reason``)
    hi: float
    # where the fitted curve, having reached q, is below q again within the tested range (a curve that falls with
    # the level); +inf when it stays at or above q up to the highest level, or never reaches q
    falls_back: float = np.inf
    reason: str | None = None  # why there is no interval, in words (None: there is one)


def censored_interval(replicates: np.ndarray, n_clusters: int, ci: float, *,
                      per_stratum: dict[str, int] | None = None, unit: str = "groups") -> tuple[float, float, str | None]:
    """``(lo, hi, None)``: the expanded percentile interval of cluster-bootstrap replicates that may be
    ``-inf``/``+inf`` (:func:`~speech_calibration.stats.resampling.cluster_interval`; order statistics,
    :func:`~speech_calibration.stats.resampling.percentile_interval` with ``interpolate=False``), or ``(nan, nan, reason)``
    where :func:`~speech_calibration.stats.resampling.cluster_interval` gives none
    (too few clusters, named ``unit``, in some stratum with ``per_stratum``, or too few distinct replicates)."""
    interval = cluster_interval(replicates, n_clusters, ci, unit=unit, per_stratum=per_stratum, interpolate=False)
    if interval["lo"] is None:
        return np.nan, np.nan, str(interval["reason"])
    return interval["lo"], interval["hi"], None


def falls_back(values: np.ndarray, grid: np.ndarray, q: float) -> float:
    """Of one curve's ``values`` on the increasing levels ``grid``: once it has reached ``q``, the first level where it
    is below ``q`` again, linearly interpolated between the two grid levels around that fall; ``+inf`` when it never
    falls back (or never reaches ``q``)."""
    values, grid = np.asarray(values, dtype=np.float64), np.asarray(grid, dtype=np.float64)
    reached = np.flatnonzero(values >= q)
    if not reached.size:
        return np.inf
    below = np.flatnonzero(values[reached[0]:] < q)
    if not below.size:
        return np.inf
    k = int(reached[0] + below[0])  # values[k - 1] >= q > values[k]
    v0, v1 = values[k - 1], values[k]
    return float(grid[k - 1] + (v0 - q) / (v0 - v1) * (grid[k] - grid[k - 1]))


@dataclass(frozen=True)
class Curve:
    """One fitted psychometric curve with its observed rates and thresholds."""

    levels: np.ndarray  # x of each tested level
    k: np.ndarray  # successes per level
    n: np.ndarray  # trials per level
    a: float
    b: float
    thresholds: tuple[Threshold, ...]

    @property
    def observed(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.k / self.n

    def fitted(self, x: np.ndarray | None = None) -> np.ndarray:
        return logistic(self.levels if x is None else x, self.a, self.b)


def _row_weights(clusters: np.ndarray | None, n_rows: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n_rows)`` bootstrap weights of the rows: each row's cluster's draw count (every row its own cluster
    when ``clusters`` is None)."""
    if clusters is None:
        return cluster_counts(n_rows, n_boot, rng)
    codes, k = first_appearance_codes(clusters)
    return cluster_counts(k, n_boot, rng)[:, codes]


def _clusters_answered(present: np.ndarray, clusters: np.ndarray | None) -> int:
    """How many clusters hold a row with some response."""
    answered = present.any(axis=1)
    return int(answered.sum()) if clusters is None else len(set(np.asarray(clusters)[answered].tolist()))


def fit_curve(levels: np.ndarray, responses: np.ndarray, criteria: tuple[float, ...] = (), *, n_boot: int = 1000,
              ci: float = 0.95, rng: np.random.Generator | None = None, clusters: np.ndarray | None = None,
              unit: str = "groups") -> Curve:
    """Fit one curve to a rows-by-levels response matrix and bootstrap its thresholds over clusters of rows.

    ``responses``: shape ``(C, L)``, 1 where base clip ``c`` at level ``l`` was answered SPEECH, 0 where
    not, NaN where that variant does not exist. ``clusters``: the cluster of each row (its group), resampled
    whole; None: each row is its own. ``criteria``: the ``q`` of each threshold wanted. A threshold's interval
    follows :func:`censored_interval` (none from fewer than ``MIN_CLUSTERS`` clusters, called ``unit``).
    """
    levels = np.asarray(levels, dtype=np.float64)
    responses = np.asarray(responses, dtype=np.float64)
    if responses.ndim != 2 or responses.shape[1] != len(levels):
        raise ValueError(f"responses must be (clusters, {len(levels)} levels), got {responses.shape}")
    present = ~np.isnan(responses)
    hits = np.where(present, responses, 0.0)
    k, n = hits.sum(axis=0), present.sum(axis=0).astype(np.float64)
    a, b = (float(v) for v in fit_logistic(levels, k, n))
    x_min, x_max = float(levels[n > 0].min()), float(levels[n > 0].max())
    found = []
    if criteria:
        rng = rng if rng is not None else np.random.default_rng(0)
        w = _row_weights(clusters, responses.shape[0], n_boot, rng)
        a_b, b_b = fit_logistic(levels, w @ hits, w @ present.astype(np.float64))
        n_clusters = _clusters_answered(present, clusters)
        for q in criteria:
            value = float(thresholds(a, b, q, x_min, x_max))
            lo, hi, reason = censored_interval(thresholds(a_b, b_b, q, x_min, x_max), n_clusters, ci, unit=unit)
            target = np.log(q / (1.0 - q))  # a falling curve (b < 0) at or above q at x_min is below it past x_q
            fall = (target - a) / b if b < 0 and a + b * x_min >= target > a + b * x_max else np.inf
            found.append(Threshold(q, value, lo, hi, float(fall), reason))
    return Curve(levels, k, n, a, b, tuple(found))


def first_crossing(values: np.ndarray, grid: np.ndarray, q: float) -> np.ndarray:
    """Per row of ``values`` (curves on ``grid``): the first level where the curve reaches ``q``, linearly interpolated.

    ``-inf`` when the curve is already ``>= q`` at ``grid[0]``, ``+inf`` when it never reaches ``q``.
    """
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    reached = values >= q
    j = np.argmax(reached, axis=1)
    rows = np.arange(values.shape[0])
    lo = np.maximum(j - 1, 0)
    v0, v1 = values[rows, lo], values[rows, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(v1 > v0, (q - v0) / (v1 - v0), 1.0)
    x = grid[lo] + frac * (grid[j] - grid[lo])
    return np.where(~reached.any(axis=1), np.inf, np.where(j == 0, -np.inf, x))


def first_exceedance(values: np.ndarray, levels: np.ndarray, q: float) -> np.ndarray:
    """Per row of ``values`` (a measure at ``levels``): scanning from the highest level down, the first level where
    it reaches ``q``, linearly interpolated between the two levels around that crossing (:func:`first_crossing`).

    For a measure that grows as the condition gets harsher towards low levels (a calibration error against
    duration or SNR). ``+inf`` when it already reaches ``q`` at the highest level, ``-inf`` when it never does
    down to the lowest one, so that, as in :func:`thresholds`, ``-inf`` is below and ``+inf`` above the range.
    """
    levels = np.asarray(levels, dtype=np.float64)
    order = np.argsort(levels)[::-1]  # highest level first
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))[:, order]
    return -first_crossing(values, -levels[order], q)


@dataclass(frozen=True)
class Sensitivity:
    """Balanced accuracy against a level, from a fitted hit-rate and false-alarm curve, with its thresholds."""

    hit: Curve  # P(answer SPEECH) of speech clips
    false_alarm: Curve  # P(answer SPEECH) of non-speech clips
    thresholds: tuple[Threshold, ...]

    @property
    def levels(self) -> np.ndarray:
        return self.hit.levels

    @property
    def observed(self) -> np.ndarray:
        return (self.hit.observed + 1.0 - self.false_alarm.observed) / 2.0

    def fitted(self, x: np.ndarray | None = None) -> np.ndarray:
        return (self.hit.fitted(x) + 1.0 - self.false_alarm.fitted(x)) / 2.0


def _balanced(a1, b1, a0, b0, grid: np.ndarray) -> np.ndarray:
    """Balanced accuracy of the hit curve ``(a1, b1)`` and the false-alarm curve ``(a0, b0)`` on ``grid``, a row per curve.

    The logistic function through scipy's ``expit``: on the ``(resamples, GRID)`` arrays here it takes about 40 % of
    the time of :func:`~speech_calibration.stats.metrics.sigmoid`'s ``tanh`` on this project's 2-core CPU."""
    from scipy.special import expit  # lazy, as everywhere here; the conditions stage has scipy.special loaded already

    a1, b1, a0, b0 = (np.atleast_1d(np.asarray(v, dtype=np.float64))[:, None] for v in (a1, b1, a0, b0))
    return (expit(a1 + b1 * grid) + 1.0 - expit(a0 + b0 * grid)) / 2.0


def _class_weights(speech: np.ndarray, nonspeech: np.ndarray, clusters: tuple[np.ndarray, np.ndarray] | None,
                   n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int, dict[str, int] | None]:
    """Bootstrap weights of the speech rows and of the non-speech rows, the clusters with some response, and their
    number per stratum (None: not stratified).

    Each cluster is drawn once, for its rows of both classes (a speaker's hit rate and false alarms travel
    together). Where a plain resample of the clusters would lose a class too often
    (:func:`~speech_calibration.stats.resampling.class_strata`: single-class groups, few of one kind), the clusters
    are drawn within the stratum of the classes they hold (``SPEECH``, ``NONSPEECH``, ``NONSPEECH+SPEECH``), so
    every resample keeps both. Without ``clusters`` every row is a cluster of its own."""
    rows = clusters if clusters is not None else (
        [("speech", i) for i in range(len(speech))], [("nonspeech", i) for i in range(len(nonspeech))])
    members = [*rows[0], *rows[1]]
    labels = np.r_[np.ones(len(rows[0]), dtype=np.int64), np.zeros(len(rows[1]), dtype=np.int64)]
    codes, k = first_appearance_codes(np.array([str(c) for c in members], dtype=object))
    answered = np.zeros(k, dtype=bool)
    np.logical_or.at(answered, codes, np.r_[~np.isnan(np.asarray(speech, dtype=np.float64)).all(axis=1),
                                            ~np.isnan(np.asarray(nonspeech, dtype=np.float64)).all(axis=1)])
    strata = class_strata(labels, codes)
    w = np.zeros((n_boot, k))
    per_stratum: dict[str, int] | None = None
    if strata is None:
        w[:] = cluster_counts(k, n_boot, rng)
    else:
        per_stratum = {}
        stratum_of = np.empty(k, dtype=object)
        stratum_of[codes] = strata
        for stratum in dict.fromkeys(stratum_of.tolist()):
            inside = np.flatnonzero(stratum_of == stratum)
            w[:, inside] = cluster_counts(len(inside), n_boot, rng)
            name = "+".join(sorted({"1": CLASSES[0], "0": CLASSES[1]}[c] for c in str(stratum).split("+")))
            per_stratum[name] = int(answered[inside].sum())
    n_speech = len(rows[0])
    return w[:, codes[:n_speech]], w[:, codes[n_speech:]], int(answered.sum()), per_stratum


def fit_sensitivity(levels: np.ndarray, speech: np.ndarray, nonspeech: np.ndarray, criteria: tuple[float, ...], *,
                    n_boot: int = 1000, ci: float = 0.95, rng: np.random.Generator | None = None,
                    clusters: tuple[np.ndarray, np.ndarray] | None = None, unit: str = "groups") -> Sensitivity:
    """Balanced-accuracy thresholds (see the module doc) from the response matrices of speech and non-speech base clips.

    ``speech``: ``(C_s, L)`` and ``nonspeech``: ``(C_n, L)``, each 1 where that base clip at that level was
    answered SPEECH, 0 where not, NaN where the variant does not exist. ``clusters``: the cluster of each row of
    each (None: every row its own). A cluster is drawn once for its rows of both classes, within the stratum of
    the classes it holds where a plain resample would lose a class (:func:`_class_weights`), so an interval needs
    ``MIN_CLUSTERS`` clusters (``unit``), in each stratum where there are strata (:func:`censored_interval`); where
    one has fewer, the reason names it.
    """
    hit, false_alarm = fit_curve(levels, speech), fit_curve(levels, nonspeech)
    valid = (hit.n > 0) & (false_alarm.n > 0)
    if not valid.any():
        raise ValueError("no level has both speech and non-speech clips")
    grid = np.linspace(float(hit.levels[valid].min()), float(hit.levels[valid].max()), GRID)
    rng = rng if rng is not None else np.random.default_rng(0)
    w_speech, w_nonspeech, n_clusters, per_stratum = _class_weights(speech, nonspeech, clusters, n_boot, rng)
    boot = []
    for responses, w in ((speech, w_speech), (nonspeech, w_nonspeech)):
        r = np.asarray(responses, dtype=np.float64)
        present = ~np.isnan(r)
        boot.append(fit_logistic(levels, w @ np.where(present, r, 0.0), w @ present.astype(np.float64)))
    (a1_b, b1_b), (a0_b, b0_b) = boot
    point = _balanced(hit.a, hit.b, false_alarm.a, false_alarm.b, grid)
    replicates = _balanced(a1_b, b1_b, a0_b, b0_b, grid)
    found = []
    for q in criteria:
        lo, hi, reason = censored_interval(first_crossing(replicates, grid, q), n_clusters, ci, per_stratum=per_stratum,
                                           unit=unit)
        found.append(Threshold(q, float(first_crossing(point, grid, q)[0]), lo, hi, falls_back(point[0], grid, q), reason))
    return Sensitivity(hit, false_alarm, tuple(found))


def describe(value: float, x_min: float, x_max: float, fmt, *, below: str = "< {lo}",
             above: str = "not reached by {hi}") -> str:
    """A threshold as text: ``fmt(value)`` in range; censored: ``below`` / ``above`` with ``{lo}``, ``{hi}`` replaced
    by ``fmt(x_min)``, ``fmt(x_max)`` (by default ``'< ' + fmt(x_min)`` and ``'not reached by ' + fmt(x_max)``)."""
    if value == -np.inf:
        return below.format(lo=fmt(x_min), hi=fmt(x_max))
    if value == np.inf:
        return above.format(lo=fmt(x_min), hi=fmt(x_max))
    if np.isnan(value):
        return "n/a"
    return fmt(value)
