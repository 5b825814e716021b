"""How the conditions report's paired tests behave at the group level, with few groups: a simulation.

Two systems answer the variants of ``clips`` base clips in each of ``groups`` test groups (speakers), ``levels``
variants a clip. Each group has its own difference between the systems, drawn from N(0, ``spread``) on the
log-odds scale, so over new groups the two systems are equal: the null the paired tests are about. Per run it
records whether the clustered exact McNemar test (sign flips of the groups' differences) rejects at 0.05, and
whether the percentile interval of the accuracy difference from a bootstrap over groups covers 0; clustered by
base clip instead (the report's unit before groups) for contrast.

    python -m benchmarks.group_paired_tests [--runs 1000] [--groups 5 8 12]

Prints one line per setting; the figures in README.md (Statistics, Conditions) come from this script.
"""
from __future__ import annotations

import argparse

import numpy as np
from scipy.special import expit

from speech_calibration.stats import paired_tests


def simulate(groups: int, *, clips: int = 4, levels: int = 6, spread: float = 1.0, runs: int = 1000,
             n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    rejected = {"groups": 0, "base clips": 0}
    covered = {"groups": 0, "base clips": 0}
    with_interval = {"groups": 0, "base clips": 0}
    level = np.linspace(-1.5, 1.5, levels)
    for _ in range(runs):
        difference = rng.normal(0, spread, groups)  # each group's own, mean 0 over groups
        ease = rng.normal(0, 1, groups)[:, None, None] + rng.normal(0, 1, (groups, clips))[:, :, None] + level + 0.5
        u = rng.random((groups, clips, levels))  # one draw for both systems: their answers are correlated
        right_1 = (u < expit(ease + difference[:, None, None] / 2)).ravel()
        right_2 = (u < expit(ease - difference[:, None, None] / 2)).ravel()
        units = {"groups": np.repeat(np.arange(groups), clips * levels),
                 "base clips": np.repeat(np.arange(groups * clips), levels)}
        for unit, clusters in units.items():
            rejected[unit] += paired_tests.clustered_mcnemar(right_1, right_2, clusters).p_value <= 0.05
            d = paired_tests.clustered_bootstrap_difference(right_1, right_2, clusters, n_boot=n_boot, rng=rng)
            if not np.isnan(d.lo):
                with_interval[unit] += 1
                covered[unit] += d.lo <= 0 <= d.hi
    out = {}
    for unit in units:
        out[f"rejects at 0.05 ({unit})"] = rejected[unit] / runs
        out[f"interval covers 0 ({unit})"] = covered[unit] / max(with_interval[unit], 1)
        out[f"runs with an interval ({unit})"] = with_interval[unit] / runs
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
