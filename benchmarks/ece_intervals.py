"""How often a bootstrap interval of a calibration error covers the population's value: a simulation.

Each run draws ``n`` clips: ``p(SPEECH)`` uniform on [0.02, 0.98], the true label SPEECH with probability
``sigmoid(slope * logit(p))`` (slope 1: calibrated, population ECE 0; below 1: overconfident; above 1:
underconfident). It measures the top-label ECE of the clips (equal-width bins, and equal-mass bins), bootstraps
the clips, and records whether the 95 % interval covers the population's value, which is computed from the same
distribution with the true rates in place of drawn labels (2 million forecasts):

- ``percentile``: the quantiles of the resampled values;
- ``basic``: the same quantiles reflected about the estimate, ``[2 x - hi, 2 x - lo]`` floored at 0
  (:func:`~speech_calibration.stats.resampling.basic_interval`), which ``evaluate`` and ``conditions`` report.

For equal-mass bins the population value is that of 15 bins at the confidence's quantiles (the limit of the
estimator's bins). The smooth ECE is left out: its population value needs far more clips than this can afford.

With ``--paired``, the same for the difference that ``delta_ci`` reports: the clips' forecasts after temperature
scaling by ``T`` (``--temperatures``) minus before, on the same resamples, against the population's difference
of equal-width ECEs. The report keeps these differences' percentile intervals, since both sides lean alike.

With ``--groups G ...``, the group-level interval (``ci_group``): the clips come in ``G`` groups of ``--per-group``
clips, each group with its own shift of the true log-odds, drawn from N(0, ``--spread``), so clips of one group
are not independent; the population's ECE is that over new groups, and the intervals are the report's expanded
percentile interval of a bootstrap over groups
(:func:`~speech_calibration.stats.resampling.cluster_interval`) and its reflection; runs where the report's rule
gives no interval are left out of both, and counted.

    python -m benchmarks.ece_intervals [--runs 300] [--n 24 96 400] [--slopes 1 0.5 2]
    python -m benchmarks.ece_intervals --paired [--slopes 0.5] [--temperatures 2 1.5]
    python -m benchmarks.ece_intervals --groups 8 20 [--per-group 12] [--spread 1] [--slopes 1 0.5 2]

Prints one line per setting; the figures in README.md ("What the numbers claim") come from this script.
"""
from __future__ import annotations

import argparse

import numpy as np

from speech_calibration.stats import metrics
from speech_calibration.stats.resampling import (
    basic_interval,
    bootstrap_indices,
    cluster_bootstrap_replicates,
    cluster_interval,
    percentile_interval,
)

N_BINS = 15
ESTIMATORS = {"ECE": metrics.ece, "ECE(mass)": metrics.ece_equal_mass}


def true_rate(p: np.ndarray, slope: float, shift: np.ndarray | float = 0.0) -> np.ndarray:
    return metrics.sigmoid(slope * metrics.logit(p) + shift)


def scaled(p: np.ndarray, temperature: float) -> np.ndarray:
    return metrics.sigmoid(metrics.logit(p) / temperature)


def population_errors(slope: float, rng: np.random.Generator, n: int = 2_000_000,
                      temperature: float = 1.0, spread: float = 0.0) -> dict[str, float]:
    """Each estimator's population value: ``sum_b P(b) |E[right - conf | b]|`` over its bins (of the forecasts
    scaled by ``temperature``; each forecast's true log-odds shifted by its own N(0, ``spread``) draw, its group's)."""
    p0 = rng.uniform(0.02, 0.98, n)
    q, p = true_rate(p0, slope, rng.normal(0.0, spread, n) if spread else 0.0), scaled(p0, temperature)
    conf = np.where(p >= 0.5, p, 1.0 - p)
    right = np.where(p >= 0.5, q, 1.0 - q)  # the probability that the top label is right
    width = np.minimum((conf * N_BINS).astype(int), N_BINS - 1)
    mass = np.searchsorted(np.quantile(conf, np.linspace(0, 1, N_BINS + 1)[1:-1]), conf, side="right")
    out = {}
    for name, bins in (("ECE", width), ("ECE(mass)", mass)):
        share = np.bincount(bins, minlength=N_BINS) / n
        gap = np.bincount(bins, weights=right - conf, minlength=N_BINS) / n
        out[name] = float(np.sum(np.abs(gap[share > 0])))  # sum_b P(b) |mean gap in b|
    return out


def simulate(slope: float, n: int, runs: int, n_boot: int, rng: np.random.Generator,
             truth: dict[str, float]) -> dict[str, dict[str, float]]:
    """Coverage of ``truth`` by each interval, over ``runs`` samples of ``n`` clips."""
    hits = {name: {"percentile": 0, "basic": 0} for name in ESTIMATORS}
    for _ in range(runs):
        p = rng.uniform(0.02, 0.98, n)
        y = (rng.uniform(size=n) < true_rate(p, slope)).astype(int)
        conf, right = metrics.top_label(y, p)
        idx = bootstrap_indices(n, n_boot, int(rng.integers(2**31)))
        for name, fn in ESTIMATORS.items():
            point = float(fn(conf, right, N_BINS))
            lo, hi = percentile_interval(fn(conf[idx], right[idx], N_BINS), 0.95)
            basic = basic_interval({"lo": lo, "hi": hi}, point)
            hits[name]["percentile"] += lo <= truth[name] <= hi
            hits[name]["basic"] += basic["lo"] <= truth[name] <= basic["hi"]
    return {name: {k: v / runs for k, v in h.items()} for name, h in hits.items()}


def simulate_paired(slope: float, temperature: float, n: int, runs: int, n_boot: int, rng: np.random.Generator,
                    truth: float) -> dict[str, float]:
    """Coverage of the population's ECE difference ``truth`` (scaled minus raw) by the paired intervals."""
    hits = {"percentile": 0, "basic": 0}
    for _ in range(runs):
        p = rng.uniform(0.02, 0.98, n)
        y = (rng.uniform(size=n) < true_rate(p, slope)).astype(int)
        (c0, r0), (c1, r1) = metrics.top_label(y, p), metrics.top_label(y, scaled(p, temperature))
        idx = bootstrap_indices(n, n_boot, int(rng.integers(2**31)))
        point = float(metrics.ece(c1, r1, N_BINS) - metrics.ece(c0, r0, N_BINS))
        lo, hi = percentile_interval(metrics.ece(c1[idx], r1[idx], N_BINS) - metrics.ece(c0[idx], r0[idx], N_BINS), 0.95)
        hits["percentile"] += lo <= truth <= hi
        hits["basic"] += 2 * point - hi <= truth <= 2 * point - lo
    return {k: v / runs for k, v in hits.items()}


def simulate_groups(slope: float, groups: int, per_group: int, spread: float, runs: int, n_boot: int,
                    rng: np.random.Generator, truth: float) -> dict[str, float]:
    """Coverage of the population's ECE over new groups (``truth``) by the group-level intervals, and the share of
    runs with an interval."""
    hits, with_interval = {"percentile": 0, "basic": 0}, 0
    clusters = np.repeat(np.arange(groups), per_group)
    for _ in range(runs):
        p = rng.uniform(0.02, 0.98, groups * per_group)
        y = (rng.uniform(size=p.size) < true_rate(p, slope, rng.normal(0.0, spread, groups)[clusters])).astype(int)
        conf, right = metrics.top_label(y, p)
        point = float(metrics.ece(conf, right, N_BINS))
        reps = cluster_bootstrap_replicates(lambda idx: {"ece": metrics.ece(conf[idx], right[idx], N_BINS)}, clusters,
                                            n_boot=n_boot, seed=int(rng.integers(2**31)))["ece"]
        interval = cluster_interval(reps, groups)
        if interval["lo"] is None:
            continue
        with_interval += 1
        basic = basic_interval(interval, point)
        hits["percentile"] += interval["lo"] <= truth <= interval["hi"]
        hits["basic"] += basic["lo"] is not None and basic["lo"] <= truth <= basic["hi"]  # none: not covered
    return {**{k: v / max(with_interval, 1) for k, v in hits.items()}, "with interval": with_interval / runs}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--n", type=int, nargs="+", default=[24, 96, 400], help="clips a sample")
    p.add_argument("--slopes", type=float, nargs="+", default=[1.0, 0.5, 2.0])
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paired", action="store_true", help="the difference after minus before temperature scaling")
    p.add_argument("--temperatures", type=float, nargs="+", default=[2.0, 1.5])
    p.add_argument("--groups", type=int, nargs="+", help="group-level intervals over this many groups")
    p.add_argument("--per-group", type=int, default=12, help="clips a group")
    p.add_argument("--spread", type=float, default=1.0, help="SD of a group's shift of the true log-odds")
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    if args.groups:
        for slope in args.slopes:
            truth = population_errors(slope, rng, spread=args.spread)["ECE"]
            for g in args.groups:
                res = simulate_groups(slope, g, args.per_group, args.spread, args.runs, args.n_boot, rng, truth)
                print(f"slope {slope:g}, {g} groups x {args.per_group} clips (spread {args.spread:g}), {args.runs} runs: "
                      f"ECE over new groups {truth:.3f} covered by expanded percentile {res['percentile']:.2f}, "
                      f"reflected {res['basic']:.2f} (an interval in {res['with interval']:.0%} of runs)", flush=True)
        return
    if args.paired:
        for slope in args.slopes:
            raw = population_errors(slope, rng)["ECE"]
            for t in args.temperatures:
                truth = population_errors(slope, rng, temperature=t)["ECE"] - raw
                for n in args.n:
                    res = simulate_paired(slope, t, n, args.runs, args.n_boot, rng, truth)
                    print(f"slope {slope:g}, T {t:g}, {n} clips, {args.runs} runs: ECE difference {truth:+.3f} covered by "
                          f"percentile {res['percentile']:.2f}, basic {res['basic']:.2f}", flush=True)
        return
    for slope in args.slopes:
        truth = population_errors(slope, rng)
        for n in args.n:
            res = simulate(slope, n, args.runs, args.n_boot, rng, truth)
            print(f"slope {slope:g}, {n} clips, {args.runs} runs: " + "; ".join(
                f"{name} {truth[name]:.3f} covered by percentile {r['percentile']:.2f}, basic {r['basic']:.2f}"
                for name, r in res.items()), flush=True)


if __name__ == "__main__":
    main()
