"""How the conditions report's paired tests and group-level intervals behave with few groups: a simulation.

Two systems answer the variants of ``clips`` base clips in each of ``groups`` test groups (speakers), ``levels``
variants a clip; with ``--dominant K`` the first group has ``K`` times the others' base clips (one large speaker
or recording beside small ones). Each group has its own difference between the systems, drawn from
N(0, ``spread``) on the log-odds scale, so over new groups the two systems are equal: the null the paired tests
are about. Per run it records whether the clustered exact McNemar test (sign flips of the groups' differences)
rejects at 0.05, and whether these 95 % intervals of the accuracy difference cover 0:

- ``expanded percentile``: the report's, from a bootstrap over groups
  (:func:`~speech_calibration.stats.paired_tests.clustered_bootstrap_difference`;
  :func:`~speech_calibration.stats.resampling.expanded_level`), as every group-level interval of the project is;
- ``percentile``: the plain percentile interval of the same resamples (what they all were before);
- ``t``: a cluster-robust (CR1) Student-t interval of the ratio with ``G - 1`` degrees of freedom, for contrast
  (a common choice with few clusters, which a dominant group breaks);

and the same clustered by base clip instead (the report's unit before groups).

    python -m benchmarks.group_paired_tests [--runs 1000] [--groups 5 8 12] [--dominant 1]

Prints one line per setting; the figures in README.md (Statistics, Conditions) come from this script.
"""
from __future__ import annotations

import argparse
import math

import numpy as np
from scipy.special import expit, stdtrit

from speech_calibration.stats import paired_tests
from speech_calibration.stats.resampling import cluster_counts, cluster_interval, percentile_interval

INTERVALS = ("expanded percentile", "percentile", "t")


def cr1_t_interval(d_c: np.ndarray, n_c: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """``sum d / sum n`` +- ``t_{G-1}`` times its cluster-robust standard error,
    ``sqrt(G / (G - 1) sum_c (d_c - ratio n_c)^2) / sum n``."""
    g = len(n_c)
    ratio = d_c.sum() / n_c.sum()
    se = math.sqrt(g / (g - 1) * float(np.sum((d_c - ratio * n_c) ** 2))) / n_c.sum()
    half = float(stdtrit(g - 1, (1.0 + ci) / 2.0)) * se
    return ratio - half, ratio + half


def intervals(right_1: np.ndarray, right_2: np.ndarray, clusters: np.ndarray, n_boot: int,
              rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    """The three intervals of the accuracy difference (NaN, NaN where the report's rule gives none)."""
    _, index = np.unique(clusters, return_inverse=True)
    d_c = np.bincount(index, weights=right_1.astype(np.float64) - right_2)
    n_c = np.bincount(index).astype(np.float64)
    report = paired_tests.clustered_bootstrap_difference(right_1, right_2, clusters, n_boot=n_boot, rng=rng)
    if np.isnan(report.lo):
        return dict.fromkeys(INTERVALS, (np.nan, np.nan))
    # the same rule, on fresh resamples, for the plain percentile interval
    w = cluster_counts(len(n_c), n_boot, rng)
    replicates = (w @ d_c) / (w @ n_c)
    plain = (percentile_interval(replicates, 0.95, interpolate=False)
             if cluster_interval(replicates, len(n_c))["lo"] is not None else (np.nan, np.nan))
    return {"expanded percentile": (report.lo, report.hi), "percentile": plain, "t": cr1_t_interval(d_c, n_c)}


def simulate(groups: int, *, clips: int = 4, levels: int = 6, spread: float = 1.0, runs: int = 1000,
             n_boot: int = 1000, dominant: int = 1, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    units = ("groups", "base clips")
    rejected = dict.fromkeys(units, 0)
    covered = {(unit, kind): 0 for unit in units for kind in INTERVALS}
    with_interval = {(unit, kind): 0 for unit in units for kind in INTERVALS}
    level = np.linspace(-1.5, 1.5, levels)
    base_per_group = np.full(groups, clips)
    base_per_group[0] *= dominant
    group_of_base = np.repeat(np.arange(groups), base_per_group)
    n_base = len(group_of_base)
    for _ in range(runs):
        difference = rng.normal(0, spread, groups)[group_of_base]  # each group's own, mean 0 over groups
        ease = (rng.normal(0, 1, groups)[group_of_base] + rng.normal(0, 1, n_base))[:, None] + level + 0.5
        u = rng.random((n_base, levels))  # one draw for both systems: their answers are correlated
        right_1 = (u < expit(ease + difference[:, None] / 2)).ravel()
        right_2 = (u < expit(ease - difference[:, None] / 2)).ravel()
        cluster_of = {"groups": np.repeat(group_of_base, levels), "base clips": np.repeat(np.arange(n_base), levels)}
        for unit, clusters in cluster_of.items():
            rejected[unit] += paired_tests.clustered_mcnemar(right_1, right_2, clusters).p_value <= 0.05
            for kind, (lo, hi) in intervals(right_1, right_2, clusters, n_boot, rng).items():
                if not np.isnan(lo):
                    with_interval[unit, kind] += 1
                    covered[unit, kind] += lo <= 0 <= hi
    out = {}
    for unit in units:
        out[f"rejects at 0.05 ({unit})"] = rejected[unit] / runs
        for kind in INTERVALS:
            out[f"{kind} interval covers 0 ({unit})"] = covered[unit, kind] / max(with_interval[unit, kind], 1)
            out[f"runs with an interval, {kind} ({unit})"] = with_interval[unit, kind] / runs
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--groups", type=int, nargs="+", default=[5, 8, 12])
    p.add_argument("--clips", type=int, default=4, help="base clips per group")
    p.add_argument("--dominant", type=int, default=1, help="the first group has this many times the others' base clips")
    args = p.parse_args(argv)
    for groups in args.groups:
        res = simulate(groups, clips=args.clips, runs=args.runs, dominant=args.dominant)
        print(f"{groups} groups x {args.clips} base clips (the first x{args.dominant}), {args.runs} runs: " + "; ".join(
            f"{k} {v:.3f}" for k, v in res.items()), flush=True)


if __name__ == "__main__":
    main()
