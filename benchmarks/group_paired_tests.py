"""How the conditions report's paired tests behave at the group level, with few groups: a simulation.

Two systems answer the variants of ``clips`` base clips in each of ``groups`` test groups (speakers), ``levels``
variants a clip. Each group has its own difference between the systems, drawn from N(0, ``spread``) on the
log-odds scale, so over new groups the two systems are equal: the null the paired tests are about. Per run it
records whether the clustered exact McNemar test (sign flips of the groups' differences) rejects at 0.05, and
whether the 95 % interval of the accuracy difference covers 0: the report's cluster-robust t interval over groups
(:func:`~speech_calibration.stats.paired_tests.clustered_difference`); the expanded percentile interval of a
bootstrap over groups (:func:`~speech_calibration.stats.resampling.cluster_interval`, what the report's other
group-level intervals are); the plain percentile interval of that bootstrap (what they all were before); and all
three clustered by base clip instead (the report's unit before groups).

    python -m benchmarks.group_paired_tests [--runs 1000] [--groups 5 8 12]

Prints one line per setting; the figures in README.md (Statistics, Conditions) come from this script.
"""
from __future__ import annotations

import argparse

import numpy as np
from scipy.special import expit

from speech_calibration.stats import paired_tests
from speech_calibration.stats.resampling import cluster_counts, cluster_interval, percentile_interval

INTERVALS = ("t", "expanded percentile", "percentile")


def bootstrap_differences(right_1: np.ndarray, right_2: np.ndarray, clusters: np.ndarray, n_boot: int,
                          rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    """The expanded and the plain percentile interval of the accuracy difference over resampled clusters (NaN, NaN
    where :func:`~speech_calibration.stats.resampling.cluster_interval` gives none)."""
    _, index = np.unique(clusters, return_inverse=True)
    d_c = np.bincount(index, weights=right_1.astype(np.float64) - right_2)
    n_c = np.bincount(index).astype(np.float64)
    w = cluster_counts(len(n_c), n_boot, rng)
    replicates = (w @ d_c) / (w @ n_c)
    interval = cluster_interval(replicates, len(n_c), interpolate=False)
    if interval["lo"] is None:
        return {"expanded percentile": (np.nan, np.nan), "percentile": (np.nan, np.nan)}
    return {"expanded percentile": (interval["lo"], interval["hi"]),
            "percentile": percentile_interval(replicates, 0.95, interpolate=False)}


def simulate(groups: int, *, clips: int = 4, levels: int = 6, spread: float = 1.0, runs: int = 1000,
             n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    units = ("groups", "base clips")
    rejected = dict.fromkeys(units, 0)
    covered = {(unit, kind): 0 for unit in units for kind in INTERVALS}
    with_interval = {(unit, kind): 0 for unit in units for kind in INTERVALS}
    level = np.linspace(-1.5, 1.5, levels)
    for _ in range(runs):
        difference = rng.normal(0, spread, groups)  # each group's own, mean 0 over groups
        ease = rng.normal(0, 1, groups)[:, None, None] + rng.normal(0, 1, (groups, clips))[:, :, None] + level + 0.5
        u = rng.random((groups, clips, levels))  # one draw for both systems: their answers are correlated
        right_1 = (u < expit(ease + difference[:, None, None] / 2)).ravel()
        right_2 = (u < expit(ease - difference[:, None, None] / 2)).ravel()
        cluster_of = {"groups": np.repeat(np.arange(groups), clips * levels),
                      "base clips": np.repeat(np.arange(groups * clips), levels)}
        for unit, clusters in cluster_of.items():
            rejected[unit] += paired_tests.clustered_mcnemar(right_1, right_2, clusters).p_value <= 0.05
            t = paired_tests.clustered_difference(right_1, right_2, clusters)
            bounds = {"t": (t.lo, t.hi), **bootstrap_differences(right_1, right_2, clusters, n_boot, rng)}
            for kind, (lo, hi) in bounds.items():
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
    args = p.parse_args(argv)
    for groups in args.groups:
        res = simulate(groups, clips=args.clips, runs=args.runs)
        print(f"{groups} groups x {args.clips} base clips, {args.runs} runs: " + "; ".join(
            f"{k} {v:.3f}" for k, v in res.items()), flush=True)


if __name__ == "__main__":
    main()
