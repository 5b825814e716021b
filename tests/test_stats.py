"""stages.stats: bootstrap (plain and paired) and t-intervals."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from speech_calibration.stats import metrics
from speech_calibration.stats.resampling import bootstrap_replicates, interval_summary, paired_difference, percentile_interval, t_interval


def test_t_interval_matches_closed_form():
    v = [0.83, 0.875, 0.79]
    t = t_interval(v, 0.95)
    half = sps.t.ppf(0.975, 2) * np.std(v, ddof=1) / math.sqrt(3)
    assert t["mean"] == pytest.approx(np.mean(v))
    assert t["sd"] == pytest.approx(np.std(v, ddof=1))
    assert (t["lo"], t["hi"]) == pytest.approx((np.mean(v) - half, np.mean(v) + half))
    assert t["k"] == 3


def test_t_interval_one_value_and_nans():
    one = t_interval([0.8])
    assert one["mean"] == 0.8 and math.isnan(one["sd"]) and math.isnan(one["lo"])
    assert t_interval([0.8, float("nan"), 0.9])["k"] == 2
    assert t_interval([])["k"] == 0


def test_bootstrap_is_reproducible_and_vectorised():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    seen = []

    def stat(idx):
        seen.append(idx.shape)
        return {"mean": x[idx].mean(axis=-1)}

    a = bootstrap_replicates(stat, 30, n_boot=500, seed=3)
    b = bootstrap_replicates(stat, 30, n_boot=500, seed=3, chunk=128)
    np.testing.assert_allclose(a["mean"], b["mean"])  # same seed -> same resamples, whatever the chunking
    assert seen[0] == (500, 30)  # one call for all resamples


def test_percentile_interval_covers_the_mean():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(200):
        x = rng.normal(1.0, 1.0, 60)
        reps = bootstrap_replicates(lambda idx: {"m": x[idx].mean(axis=-1)}, 60, n_boot=400, seed=int(rng.integers(1e9)))
        lo, hi = percentile_interval(reps["m"], 0.95)
        hits += lo <= 1.0 <= hi
    assert 0.88 <= hits / 200 <= 0.99


def test_interval_reports_undefined_resamples():
    s = interval_summary(np.array([0.1, np.nan, 0.3, 0.2]))
    assert s["n_nan"] == 1 and s["lo"] <= s["hi"]
    assert math.isnan(interval_summary(np.array([np.nan]))["lo"])


def test_paired_difference_verdicts():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.1, 0.2, 1000)
    same = paired_difference(0.15, 0.15, base, base)
    assert same["verdict"] == "no clear difference" and same["p"] == 1.0 and same["delta"] == 0.0
    better = paired_difference(0.15, 0.05, base, base - 0.1 + rng.normal(0, 0.01, 1000))
    assert better["verdict"] == "better" and better["hi"] < 0
    worse_acc = paired_difference(0.9, 0.8, base, base - 0.1, lower_is_better=False)
    assert worse_acc["verdict"] == "worse"


def test_paired_bootstrap_sees_a_small_consistent_gain_that_unpaired_intervals_miss():
    """Two forecasters on the same clips, one slightly better on every clip: their plain intervals overlap,
    the paired interval of the difference excludes 0."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    p1 = np.clip(np.where(y == 1, 0.7, 0.3) + rng.normal(0, 0.2, 60), 0.01, 0.99)
    p2 = np.clip(p1 + np.where(y == 1, 0.03, -0.03), 0.01, 0.99)

    def stat(idx):
        return {"a": metrics.brier(y[idx], p1[idx]), "b": metrics.brier(y[idx], p2[idx])}

    reps = bootstrap_replicates(stat, 60, n_boot=2000, seed=0)
    ia, ib = percentile_interval(reps["a"]), percentile_interval(reps["b"])
    assert ib[1] > ia[0]  # the separate intervals overlap
    d = paired_difference(metrics.brier(y, p1), metrics.brier(y, p2), reps["a"], reps["b"])
    assert d["verdict"] == "better"
