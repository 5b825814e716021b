"""speech_calibration.stats.resampling: bootstrap (plain, paired, clustered), percentile (plain and expanded) and
t-intervals, keyed generators."""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from scipy import stats as sps

from speech_calibration.stats import metrics
from speech_calibration.stats.resampling import (
    MIN_CLUSTERS,
    MIN_DISTINCT,
    basic_interval,
    binomial_interval,
    bootstrap_replicates,
    class_strata,
    cluster_bootstrap_replicates,
    cluster_counts,
    cluster_interval,
    clusters_per_stratum,
    composition_strata,
    expanded_level,
    expanded_p,
    interval_summary,
    keyed_rng,
    miss_probability,
    paired_difference,
    percentile_interval,
    t_interval,
)


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


def test_percentile_interval_interpolates_order_statistics_without_the_nans():
    # 0, 1, ..., 1000 shuffled: the quantile q sits at position q (n - 1) = 1000 q of the sorted values, whose value it is
    r = np.random.default_rng(4).permutation(np.arange(1001.0))
    assert percentile_interval(r, 0.9) == pytest.approx((50.0, 950.0))
    with_nan = np.concatenate([r[:200], [np.nan] * 7, r[200:]])
    assert percentile_interval(with_nan, 0.9) == pytest.approx((50.0, 950.0))  # NaN left out, not sorted in
    # 0, 10, 20, 30 at ci = 0.5: positions 0.25 * 3 = 0.75 and 0.75 * 3 = 2.25, interpolated: 7.5 and 22.5
    assert percentile_interval(np.array([30.0, 0.0, 20.0, 10.0]), 0.5) == pytest.approx((7.5, 22.5))
    assert percentile_interval(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))
    assert percentile_interval(np.array([0.0, 1.0]), 0.5) == (0.25, 0.75)  # interpolated between the two
    assert all(math.isnan(v) for v in percentile_interval(np.array([np.nan, np.nan])))


def test_percentile_interval_without_interpolation_takes_order_statistics_outward():
    # n = 1001 sorted values 0..1000: (n-1) q = 25 and 975 exactly
    assert percentile_interval(np.arange(1001.0)[::-1], 0.95, interpolate=False) == (25.0, 975.0)
    # n = 4: (n-1) q = 0.75 and 2.25 -> floor 0, ceil 3: the widest bracket, never interpolated
    assert percentile_interval(np.array([3.0, 1.0, 4.0, 2.0]), 0.5, interpolate=False) == (1.0, 4.0)
    # censored replicates sort at the ends and a bound that lands on one is itself censored
    censored = np.array([-np.inf] * 10 + list(range(80)) + [np.inf] * 10)
    assert percentile_interval(censored, 0.95, interpolate=False) == (-np.inf, np.inf)
    assert percentile_interval(censored, 0.5, interpolate=False) == (14.0, 65.0)  # floor(24.75) - 10, ceil(74.25) - 10
    # NaN replicates are left out here too
    assert percentile_interval(np.array([np.nan, 3.0, 1.0, 4.0, 2.0]), 0.5, interpolate=False) == (1.0, 4.0)


def test_cluster_counts_are_multinomial_draws_of_every_cluster():
    w = cluster_counts(7, 50, np.random.default_rng(0))
    assert w.shape == (50, 7) and w.dtype == np.float64 and np.all(w.sum(axis=1) == 7)
    assert np.all(w >= 0) and np.all(w == np.round(w))
    np.testing.assert_array_equal(w, cluster_counts(7, 50, np.random.default_rng(0)))
    mean = cluster_counts(4, 20000, np.random.default_rng(1)).mean(axis=0)
    np.testing.assert_allclose(mean, 1.0, atol=0.03)  # each cluster is drawn once per resample on average


def test_keyed_rng_depends_on_the_seed_and_every_key_only():
    draw = keyed_rng(7, "clip_001", "snr", "10").random(4)
    np.testing.assert_array_equal(draw, keyed_rng(7, "clip_001", "snr", "10").random(4))  # deterministic
    reference = np.random.default_rng([7, *(zlib.crc32(k.encode()) for k in ("clip_001", "snr", "10"))]).random(4)
    np.testing.assert_array_equal(draw, reference)  # the documented seeding
    others = [keyed_rng(8, "clip_001", "snr", "10"), keyed_rng(7, "clip_002", "snr", "10"),
              keyed_rng(7, "clip_001", "reverb", "10"), keyed_rng(7, "clip_001", "snr", "20"),
              keyed_rng(7, "snr", "clip_001", "10"), keyed_rng(7, "clip_001", "snr")]
    for rng in others:
        assert not np.array_equal(draw, rng.random(4))


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


def test_clip_level_paired_p_counts_the_smaller_tail_plus_one():
    """p = min(1, 2 (1 + count) / (B + 1)): never 0, however one-sided the resampled differences."""
    zero = np.zeros(4)
    assert paired_difference(0.0, -1.0, zero, np.array([-3.0, -2.0, -1.0, 1.0]))["p"] == pytest.approx(2 * 2 / 5)
    assert paired_difference(0.0, -1.0, zero, -np.arange(1.0, 5.0))["p"] == pytest.approx(2 * 1 / 5)
    assert paired_difference(0.0, 1.0, np.zeros(999), np.ones(999))["p"] == pytest.approx(2 / 1000)


def test_basic_interval_reflects_the_percentile_interval_about_the_estimate():
    """[2 x - hi, 2 x - lo], kept within the bounds; no interval and a NaN estimate pass through; bounds that shut
    it to one value give none."""
    assert basic_interval({"lo": 0.30, "hi": 0.50, "n_nan": 2}, 0.35) == pytest.approx({"lo": 0.20, "hi": 0.40, "n_nan": 2})
    assert basic_interval({"lo": 0.10, "hi": 0.30}, 0.12) == pytest.approx({"lo": 0.0, "hi": 0.14})  # floored at 0
    assert basic_interval({"lo": 0.10, "hi": 0.20}, 0.09) == pytest.approx({"lo": 0.0, "hi": 0.08})  # below x
    for interval, x in (({"lo": 0.05, "hi": 0.16}, 0.02), ({"lo": 0.6, "hi": 0.8}, 0.95)):  # [0, 0] and [1, 1]
        shut = basic_interval({**interval, "n_nan": 1}, x)
        assert shut["lo"] is None and shut["hi"] is None and shut["n_nan"] == 1, shut
        assert "reflected interval shuts to" in shut["reason"], shut
    none = {"lo": None, "hi": None, "reason": "3 groups: too few"}
    assert basic_interval(none, 0.2) == none
    assert all(math.isnan(v) for v in basic_interval({"lo": 0.1, "hi": 0.3}, math.nan).values())


def test_evaluate_reflects_the_ece_intervals_and_gives_none_for_the_debiased_ece():
    """The report's ECE interval is the clip-bootstrap percentile interval of the same resamples, reflected about
    the estimate; accuracy's is the exact binomial interval; ece_debiased has no interval."""
    from speech_calibration.report.evaluation import evaluate_arrays

    rng = np.random.default_rng(4)
    y = np.tile([0, 1], 40)
    p = np.clip(np.where(y == 1, 0.75, 0.25) + rng.normal(0, 0.2, 80), 0.01, 0.99)
    res = evaluate_arrays(y, p, p, n_bootstrap=500, seed=7)["uncalibrated"]

    def stat(idx):
        m = metrics.binary_metrics(y[idx], p[idx], n_bins=15, decomposition=False)
        return {"ece": m["ece"], "accuracy": m["accuracy"]}

    reps = bootstrap_replicates(stat, len(y), n_boot=500, seed=7)
    lo, hi = percentile_interval(reps["ece"])
    assert np.mean(reps["ece"]) > res["ece"]  # the resampled ECEs sit above the estimate ...
    assert (res["ci"]["ece"]["lo"], res["ci"]["ece"]["hi"]) == pytest.approx((2 * res["ece"] - hi, 2 * res["ece"] - lo),
                                                                             abs=1e-6)  # ... and the report reflects them
    exact = sps.binomtest(round(res["accuracy"] * len(y)), len(y)).proportion_ci(0.95, method="exact")
    assert (res["ci"]["accuracy"]["lo"], res["ci"]["accuracy"]["hi"]) == pytest.approx((exact.low, exact.high), abs=1e-6)
    assert "ece_debiased" in res and "ece_debiased" not in res["ci"]


@pytest.mark.parametrize(("k", "n", "ci"), [(0, 12, 0.95), (12, 12, 0.95), (7, 24, 0.95), (1, 1, 0.9), (40, 41, 0.99)])
def test_binomial_interval_is_clopper_pearson_as_scipy_computes_it(k, n, ci):
    exact = sps.binomtest(k, n).proportion_ci(ci, method="exact")
    assert binomial_interval(k, n, ci) == pytest.approx({"lo": exact.low, "hi": exact.high}, abs=1e-12)


def test_every_clip_right_gives_an_accuracy_interval_with_width_and_a_constant_statistic_none():
    """12 of 12 right: the bootstrap's accuracy is 1 in every resample, the exact interval reaches 0.735; a metric
    with one value in every resample (here ROC-AUC 1: every resample ranks perfectly) has no clip interval, and says
    why."""
    from speech_calibration.report.evaluation import evaluate_arrays

    y = np.tile([0, 1], 6)
    p = np.where(y == 1, 0.9, 0.1)
    res = evaluate_arrays(y, p, p, n_bootstrap=200, seed=0)["uncalibrated"]
    assert res["accuracy"] == 1.0 and res["ci"]["accuracy"] == pytest.approx({"lo": 0.735, "hi": 1.0}, abs=1e-3)
    roc = res["ci"]["roc_auc"]
    assert roc["lo"] is None and roc["reason"].startswith("the same value (1) in every resample"), roc
    assert interval_summary(np.array([0.5, np.nan, 0.5]))["n_nan"] == 1


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


# ---------------------------------------------------------------------------------- cluster bootstrap
def resampled(clusters, **kwargs) -> list[np.ndarray]:
    """The index rows a cluster bootstrap hands its statistic, in resample order."""
    rows = {}

    def stat(idx):
        key = len(rows)
        rows[key] = idx
        return {"row": np.arange(key * 1_000_000, key * 1_000_000 + len(idx))}

    order = cluster_bootstrap_replicates(stat, clusters, **kwargs)["row"].astype(int)
    return [rows[r // 1_000_000][r % 1_000_000] for r in order]


def test_a_cluster_resample_holds_whole_clusters_as_often_as_drawn():
    clusters = np.array(["a", "b", "b", "c", "c", "c", "d", "e", "e", "a"])  # sizes 2, 2, 3, 1, 2, unordered
    members = {c: np.flatnonzero(clusters == c) for c in set(clusters)}
    for idx in resampled(clusters, n_boot=300, seed=4):
        counts = np.bincount(idx, minlength=len(clusters))
        drawn = {c: counts[m[0]] for c, m in members.items()}
        assert all((counts[m] == drawn[c]).all() for c, m in members.items())  # every item of a cluster, alike
        assert sum(drawn.values()) == 5  # as many draws as clusters
    again = resampled(clusters, n_boot=300, seed=4)
    assert all(np.array_equal(np.sort(a), np.sort(b)) for a, b in zip(resampled(clusters, n_boot=300, seed=4), again))


def test_strata_keep_each_stratum_s_cluster_count():
    clusters = np.repeat(np.arange(7), 2)
    strata = np.repeat(["speech"] * 3 + ["noise"] * 4, 2)
    for idx in resampled(clusters, strata=strata, n_boot=200, seed=1):
        drawn = clusters[idx][::2]
        assert np.sum(drawn < 3) == 3 and np.sum(drawn >= 3) == 4
    with pytest.raises(ValueError, match="constant within each cluster"):
        cluster_bootstrap_replicates(lambda i: {"m": i.mean(-1)}, [0, 0, 1], strata=["x", "y", "y"], n_boot=5)


def _lost_a_label(labels, clusters, n_boot: int, seed: int) -> float:
    """How often an unstratified cluster resample misses some label, counted on the resamples themselves."""
    labels = np.asarray(labels)
    return float(np.mean([len(set(labels[idx])) < len(set(labels)) for idx in resampled(clusters, n_boot=n_boot,
                                                                                          seed=seed)]))


def test_class_strata_only_where_a_resample_would_lose_a_class():
    y = np.array([1] * 12 + [0] * 12)
    one_class_groups = np.repeat(np.arange(6), 4)  # 3 speech-only and 3 non-speech-only groups
    # each class is missed when all 6 draws avoid its 3 groups, 0.5^6; both at once is impossible: 2 * 0.5^6
    assert miss_probability(y, one_class_groups) == pytest.approx(2 * 0.5 ** 6)
    assert list(class_strata(y, one_class_groups)) == ["1"] * 12 + ["0"] * 12
    mixed = np.tile(np.arange(3), 8)  # every group holds both classes
    assert miss_probability(y, mixed) == 0.0 and class_strata(y, mixed) is None
    assert set(composition_strata(y, mixed)) == {"0+1"}
    assert class_strata(y, np.arange(24)) is None  # one clip per group: 2 * 0.5^24 of losing a class


@pytest.mark.parametrize("speech_groups, nonspeech_groups", [(3, 3), (2, 2), (5, 2)])
def test_miss_probability_is_the_frequency_of_resamples_that_lose_a_class(speech_groups, nonspeech_groups):
    y = np.array([1] * (2 * speech_groups) + [0] * (2 * nonspeech_groups))
    groups = np.repeat(np.arange(speech_groups + nonspeech_groups), 2)
    n_boot = 20000
    p = miss_probability(y, groups)
    tolerance = 4 * math.sqrt(p * (1 - p) / n_boot)  # 4 binomial standard errors of the measured frequency
    assert _lost_a_label(y, groups, n_boot, seed=0) == pytest.approx(p, abs=tolerance)


def test_miss_probability_bounds_the_frequency_with_more_than_two_labels():
    """Three labels, one per group: a resample can miss two at once, so the sum over labels is an upper bound."""
    labels = np.repeat([0, 1, 2], [2, 1, 1])  # groups 0, 1 hold label 0; group 2 label 1; group 3 label 2
    groups = np.arange(4)
    n_boot = 20000
    p = miss_probability(labels, groups)
    assert p == pytest.approx(0.5 ** 4 + 2 * 0.75 ** 4)
    # exact, by inclusion-exclusion: minus the resamples missing two labels (only 1 and 2 can be missed together)
    exact = p - 0.5 ** 4
    tolerance = 4 * math.sqrt(exact * (1 - exact) / n_boot)
    assert _lost_a_label(labels, groups, n_boot, seed=1) == pytest.approx(exact, abs=tolerance)
    assert p > exact + tolerance


@pytest.mark.parametrize("groups", [5, 8, 30])
def test_expanded_level_is_hesterbergs_against_scipy(groups):
    """2 Phi(sqrt(G / (G - 1)) t_{0.975, G-1}) - 1, from scipy.stats; with strata, G is the smallest stratum's."""
    z = math.sqrt(groups / (groups - 1)) * sps.t.ppf(0.975, groups - 1)
    assert expanded_level(0.95, groups) == pytest.approx(2 * sps.norm.cdf(z) - 1, rel=1e-12)
    strata = {"SPEECH": groups + 35, "NONSPEECH": groups}
    assert expanded_level(0.95, 2 * groups + 35, strata) == pytest.approx(expanded_level(0.95, groups), rel=1e-12)
    assert 0.95 < expanded_level(0.95, groups + 1) < expanded_level(0.95, groups)


def test_expanded_level_tends_to_the_nominal_one_and_the_p_value_follows_it():
    assert expanded_level(0.95, 10 ** 6) == pytest.approx(0.95, abs=1e-5)
    for groups in (5, 8, 30):
        edge = 1 - expanded_level(0.95, groups)  # the bootstrap p at which the expanded interval touches 0
        assert expanded_p(edge, groups) == pytest.approx(0.05, rel=1e-9)
        for p in (1e-4, 0.5 * edge, 0.9 * edge, 1.1 * edge, 0.2, 0.7):
            t = sps.norm.isf(p / 2) / math.sqrt(groups / (groups - 1))
            assert expanded_p(p, groups) == pytest.approx(2 * sps.t.sf(t, groups - 1), rel=1e-9)
            assert (expanded_p(p, groups) < 0.05) == (p < edge)
    assert expanded_p(0.0, 8) == 0.0 and expanded_p(1.0, 8) == 1.0


def test_over_clusters_a_verdict_needs_both_the_interval_and_p():
    """Review: an interval that just excludes 0 beside p = 0.0506 had said "better". Over clusters the verdict now
    agrees with p < 1 - ci on every case, here replicates that one resample keeps on the other side of 0."""
    d = -np.linspace(0.01, 0.1, 2000)
    d[0] = 0.001
    edge = paired_difference(0.2, 0.15, np.zeros(2000), d, n_clusters=5)
    assert edge["lo"] < edge["hi"] < 0 and edge["p"] >= 0.05 and edge["verdict"] == "no clear difference"
    rng = np.random.default_rng(5)
    for groups in (5, 8, 20):
        for shift in np.linspace(0.0, 0.06, 13):
            b = rng.normal(-shift, 0.02, 1000)
            res = paired_difference(0.0, -shift, np.zeros(1000), b, n_clusters=groups)
            assert (res["p"] < 0.05) == (res["verdict"] != "no clear difference"), (groups, shift, res)


def test_a_paired_difference_over_clusters_has_the_expanded_interval_and_p():
    rng = np.random.default_rng(4)
    a = rng.normal(0.2, 0.02, 1000)
    b = a - 0.004 + rng.normal(0, 0.01, 1000)
    clip = paired_difference(0.2, 0.196, a, b)
    grouped = paired_difference(0.2, 0.196, a, b, n_clusters=8)
    assert (grouped["lo"], grouped["hi"]) == percentile_interval(b - a, expanded_level(0.95, 8))
    assert grouped["lo"] < clip["lo"] < clip["hi"] < grouped["hi"]
    d = b - a
    tail = (1 + min(np.sum(d <= 0), np.sum(d >= 0))) / 1001  # never 0 from 1000 resamples
    assert grouped["p"] == pytest.approx(expanded_p(2 * tail, 8)) and grouped["p"] > clip["p"]


def test_cluster_interval_says_why_when_the_groups_are_too_few():
    three = cluster_interval(np.random.default_rng(0).normal(size=500), 3)
    assert three["lo"] is None and three["reason"].startswith("3 groups: too few")
    coarse = cluster_interval(np.repeat(np.arange(5.0), 100), 8)
    assert coarse["lo"] is None and "5 distinct resampled values" in coarse["reason"]
    # one value in every resample: no interval (review: BA 0.5 of a system that answers one class everywhere came out
    # as [0.5, 0.5]), unless it cannot vary by construction, as a paired difference that is 0 in every resample
    same = cluster_interval(np.full(100, 0.5), 8)
    assert same == {"lo": None, "hi": None, "reason": "the same value (0.5) in every resample of 8 groups: no spread to "
                                                      "make an interval of (a zero-width one would claim a certainty "
                                                      "that they cannot give)"}
    assert cluster_interval(np.zeros(100), 8, constant_ok=True) == {"lo": 0.0, "hi": 0.0}
    kept = paired_difference(0.8, 0.8, np.full(50, 0.7), np.full(50, 0.7), n_clusters=8, lower_is_better=False,
                             constant_ok=True)
    assert (kept["lo"], kept["hi"], kept["verdict"]) == (0.0, 0.0, "no clear difference")
    # the same zeros without the caller saying they cannot vary (two systems each right everywhere, review): none
    unsaid = paired_difference(1.0, 1.0, np.ones(50), np.ones(50), n_clusters=8, lower_is_better=False)
    assert unsaid["lo"] is None and unsaid["verdict"].startswith("no interval: the same value (0) in every resample")
    reps = np.random.default_rng(1).normal(size=400)
    assert cluster_interval(reps, MIN_CLUSTERS) == dict(zip(("lo", "hi"), percentile_interval(reps, expanded_level(0.95, 5))))
    none = paired_difference(0.1, 0.2, np.zeros(50), np.ones(50) * 0.1 + np.arange(50) % 3, n_clusters=4)
    assert none["lo"] is None and none["p"] is None and none["verdict"].startswith("no interval: 4 groups")
    one = cluster_interval(reps, 1)
    assert one["lo"] is None and one["reason"].startswith("1 group: too few")


def test_min_distinct_decides_between_too_coarse_and_an_interval():
    # 0, 1, ..., m - 1, each 20 times (n = 20 m): the 2.5% and 97.5% quantiles fall inside the runs of 0 and of m - 1
    coarse = cluster_interval(np.repeat(np.arange(MIN_DISTINCT - 1.0), 20), 50)
    assert coarse == {"lo": None, "hi": None, "reason": f"{MIN_DISTINCT - 1} distinct resampled values from 50 groups: "
                                                        f"too coarse for an interval (needs >= {MIN_DISTINCT})"}
    assert cluster_interval(np.repeat(np.arange(float(MIN_DISTINCT)), 20), 50) == {"lo": 0.0, "hi": MIN_DISTINCT - 1.0}


def test_cluster_interval_reports_the_nan_replicates_it_leaves_out():
    reps = np.concatenate([np.arange(40.0), [np.nan] * 3])  # 0..39: the value at quantile q is 39 q
    tail = (1 - expanded_level(0.95, 10)) / 2
    assert cluster_interval(reps, 10) == {"lo": pytest.approx(39 * tail), "hi": pytest.approx(39 * (1 - tail)), "n_nan": 3}
    assert cluster_interval(np.full(5, np.nan), 10) == {"lo": None, "hi": None, "reason": "undefined in every resample",
                                                        "n_nan": 5}
    assert "n_nan" not in cluster_interval(np.arange(40.0), 10)


def test_stratified_cluster_interval_needs_enough_groups_in_every_stratum():
    reps = np.random.default_rng(2).normal(size=400)
    # 31 groups in all, but the one NONSPEECH group is the same in every resample
    lone = cluster_interval(reps, 31, per_stratum={"SPEECH": 30, "NONSPEECH": 1})
    assert lone["lo"] is None and lone["reason"].startswith(
        f"1 NONSPEECH group: too few for a group-level interval (groups are resampled within each class stratum; "
        f"needs >= {MIN_CLUSTERS} groups per stratum")
    both = cluster_interval(reps, 2 * MIN_CLUSTERS, per_stratum={"SPEECH": MIN_CLUSTERS, "NONSPEECH": MIN_CLUSTERS})
    assert both == dict(zip(("lo", "hi"), percentile_interval(reps, expanded_level(0.95, MIN_CLUSTERS))))
    two_small = cluster_interval(reps, 40, per_stratum={"SPEECH": 35, "NONSPEECH": 3, "NONSPEECH+SPEECH": 2})
    assert two_small["reason"].startswith("2 NONSPEECH+SPEECH groups, 3 NONSPEECH groups: too few")
    d = paired_difference(0.1, 0.2, reps, reps + 0.1, n_clusters=31, per_stratum={"SPEECH": 30, "NONSPEECH": 1})
    assert d["lo"] is None and d["p"] is None and d["verdict"] == f"no interval: {lone['reason']}"


def _speech_and_nonspeech_groups(n_speech: int, n_nonspeech: int, seed: int = 0):
    """Speech-only groups of 4 clips and non-speech-only groups of 30 / n_nonspeech clips, noisy scores."""
    rng = np.random.default_rng(seed)
    per_nonspeech = 30 // n_nonspeech
    groups = np.array([f"s{i}" for i in range(n_speech) for _ in range(4)]
                      + [f"n{i}" for i in range(n_nonspeech) for _ in range(per_nonspeech)])
    y = np.array([1] * (4 * n_speech) + [0] * (per_nonspeech * n_nonspeech))
    z = np.where(y == 1, 2.0, -1.0) + rng.normal(0, 1.5, len(y))
    return y, 1 / (1 + np.exp(-z)), 1 / (1 + np.exp(-z / 2)), groups


def test_one_nonspeech_group_gives_no_group_interval_though_there_are_31_groups():
    from speech_calibration.report.evaluation import evaluate_arrays

    y, p_uncal, p_cal, groups = _speech_and_nonspeech_groups(30, 1)
    res = evaluate_arrays(y, p_uncal, p_cal, groups=groups, n_bootstrap=500)
    info = res["group_bootstrap"]
    assert info["n_groups"] == 31 and info["groups_holding"] == {"SPEECH": 30, "NONSPEECH": 1}
    assert "read at" not in info["rule"]  # review: it named a level for the one-group stratum, which has no interval
    # beside it, the file says what its clip-level intervals are over (review: "ci" did not say)
    assert res["clip_bootstrap"]["resampled"].startswith("single clips: ci and delta_ci describe these clips")
    assert info["resampled"] == "whole test groups, within strata of the classes a group holds"
    for series in ("uncalibrated", "calibrated"):
        for key, block in res[series]["ci_group"].items():
            assert block["lo"] is None and block["hi"] is None, (series, key)
            assert block["reason"].startswith("1 NONSPEECH group: too few for a group-level interval"), (series, key)
    for block in res["delta_ci_group"].values():
        assert block["lo"] is None and block["verdict"].startswith("no interval: 1 NONSPEECH group: too few")
    assert res["uncalibrated"]["ci"]["roc_auc"]["lo"] is not None  # the clip bootstrap still gives its interval


def test_enough_groups_of_each_class_give_a_stratified_group_interval():
    from speech_calibration.report.evaluation import evaluate_arrays

    y, p_uncal, p_cal, groups = _speech_and_nonspeech_groups(MIN_CLUSTERS + 1, MIN_CLUSTERS)
    res = evaluate_arrays(y, p_uncal, p_cal, groups=groups, n_bootstrap=500)
    info = res["group_bootstrap"]
    assert info["groups_holding"] == {"SPEECH": MIN_CLUSTERS + 1, "NONSPEECH": MIN_CLUSTERS}
    assert info["resampled"] == "whole test groups, within strata of the classes a group holds"
    level = expanded_level(0.95, MIN_CLUSTERS)  # 11 groups in two strata: expanded for the smaller one's 5
    assert info["rule"].endswith(f"; read at the {100 * level:.1f} % level for 95 %, expanded for 5 groups "
                                 "(the smallest stratum)")
    assert info["delta_ci_group_p"].startswith("two-sided p of calibrated minus uncalibrated = 0 over groups")
    for key in ("roc_auc", "ece"):
        block = res["uncalibrated"]["ci_group"][key]
        assert "reason" not in block and block["lo"] < res["uncalibrated"][key] < block["hi"], key
    assert res["delta_ci_group"]["ece"]["lo"] is not None
    # a temperature keeps every answer: accuracy is the same in every resample, an interval of zero width by
    # construction (the caller says so); alike without that, one value everywhere would give none
    accuracy = res["delta_ci_group"]["accuracy"]
    assert (accuracy["lo"], accuracy["hi"], accuracy["verdict"]) == (0.0, 0.0, "no clear difference")


def test_group_intervals_are_wider_than_clip_intervals_when_groups_differ():
    """Ten groups, half of them hard: a clip bootstrap ignores that a new group may be hard; the group one does not."""
    from speech_calibration.report.evaluation import evaluate_arrays

    rng = np.random.default_rng(0)
    groups = np.repeat([f"g{i}" for i in range(10)], 20)
    y = np.tile([0, 1], 100)
    hard = np.repeat(np.arange(10) % 2 == 0, 20)
    right = rng.random(200) < np.where(hard, 0.55, 0.97)
    p = np.where(right == (y == 1), 0.8, 0.2)
    res = evaluate_arrays(y, p, p, groups=groups, n_bootstrap=2000)
    clip, group = res["uncalibrated"]["ci"]["accuracy"], res["uncalibrated"]["ci_group"]["accuracy"]
    assert group["hi"] - group["lo"] > 1.5 * (clip["hi"] - clip["lo"])
    assert res["group_bootstrap"]["n_groups"] == 10 and res["group_bootstrap"]["resampled"] == "whole test groups"
    assert set(res["per_group"]) == {f"g{i}" for i in range(10)}


def test_clusters_per_stratum_counts_distinct_clusters_named_by_class_in_order_of_appearance():
    from speech_calibration.data.schema import stratum_label

    labels = np.array([1, 1, 0, 0, 1, 0, 1, 1])
    groups = np.array(["a", "a", "b", "b", "c", "c", "d", "e"])  # a, d, e: SPEECH only; b: NONSPEECH only; c: both
    strata = composition_strata(labels, groups)
    assert clusters_per_stratum(strata, groups, stratum_label) == {"SPEECH": 3, "NONSPEECH": 1, "NONSPEECH+SPEECH": 1}
    assert list(clusters_per_stratum(strata, groups)) == ["1", "0", "0+1"]
