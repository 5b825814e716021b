"""Paired comparisons: exact McNemar against scipy's binomial test, Holm by hand, clustered bootstrap."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from speech_calibration.stats import paired_tests as pt
from speech_calibration.stats.resampling import MIN_CLUSTERS, cluster_counts, expanded_level


def table_vectors(both, only_1, only_2, neither):
    c1 = np.array([1] * both + [1] * only_1 + [0] * only_2 + [0] * neither, bool)
    c2 = np.array([1] * both + [0] * only_1 + [1] * only_2 + [0] * neither, bool)
    return c1, c2


@pytest.mark.parametrize("table", [(40, 3, 10, 7), (10, 5, 5, 2), (20, 0, 0, 4), (0, 1, 12, 0), (5, 25, 40, 1)])
def test_mcnemar_matches_binomtest(table):
    c1, c2 = table_vectors(*table)
    res = pt.mcnemar_exact(c1, c2)
    assert (res.both, res.only_1, res.only_2, res.neither) == table
    b, c = table[1], table[2]
    expected = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue
    assert res.p_value == pytest.approx(expected, rel=1e-12)


def test_mcnemar_hand_value():
    # b = 1, c = 9: 2 * (1 + 10) / 2^10
    assert pt.mcnemar_p(1, 9) == pytest.approx(22 / 1024)


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert np.allclose(pt.holm(p), [0.03, 0.06, 0.06, 0.02])
    assert np.allclose(pt.holm([0.5, 0.9]), [1.0, 1.0])
    out = pt.holm([0.02, np.nan, 0.04])
    assert np.isnan(out[1]) and np.allclose(out[[0, 2]], [0.04, 0.04])


def test_clustered_bootstrap_difference_equals_a_loop():
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(12), 5)
    c1 = rng.random(60) < 0.8
    c2 = rng.random(60) < 0.6
    res = pt.clustered_bootstrap_difference(c1, c2, clusters, n_boot=300, rng=np.random.default_rng(1))
    diff, lo, hi = res.diff, res.lo, res.hi
    assert res.reason is None and res.n_clusters == 12
    assert diff == pytest.approx(c1.mean() - c2.mean())
    w = cluster_counts(12, 300, np.random.default_rng(1))  # the same resamples, computed clip by clip
    reps = []
    for row in w:
        idx = np.concatenate([np.flatnonzero(clusters == c).repeat(int(m)) for c, m in enumerate(row)])
        reps.append(c1[idx].mean() - c2[idx].mean())
    tail = (1 - expanded_level(0.95, 12)) / 2  # the percentiles an expanded interval reads for 12 groups
    assert lo == pytest.approx(np.sort(reps)[int(np.floor(tail * 299))])
    assert hi == pytest.approx(np.sort(reps)[int(np.ceil((1 - tail) * 299))])
    assert lo <= diff <= hi


def test_the_same_difference_in_every_group_gives_no_interval():
    """Both systems right on the same clips: a difference of 0 in every resample of 8 groups, and no zero-width
    interval that would claim a certainty 8 groups cannot give."""
    clusters = np.repeat(np.arange(8), 4)
    c = np.tile([True, False, True, True], 8)
    res = pt.clustered_bootstrap_difference(c, c, clusters, n_boot=200)
    assert res.diff == 0.0 and np.isnan(res.lo) and np.isnan(res.hi)
    assert res.reason.startswith("the same value (0) in every resample of 8 groups"), res.reason


def test_clustering_widens_the_interval_of_correlated_variants():
    # every variant of a clip shares its outcome: 100 clusters of 10 identical rows (design effect sqrt(10) ~ 3.2);
    # 100, not 10: a difference of 0/1 outcomes over k equal clusters moves in steps of 1/k, and 10 give too few values
    rng = np.random.default_rng(3)
    per_cluster = rng.random(100) < 0.5
    clusters = np.repeat(np.arange(100), 10)
    c1 = np.repeat(per_cluster, 10)
    c2 = np.zeros(1000, bool)
    clustered = pt.clustered_bootstrap_difference(c1, c2, clusters, n_boot=500)
    independent = pt.clustered_bootstrap_difference(c1, c2, np.arange(1000), n_boot=500)
    assert clustered.reason is None and independent.reason is None
    assert (clustered.hi - clustered.lo) > 2 * (independent.hi - independent.lo)


def variants_of(n_clips: int, right_1: list[int], right_2: list[int], sizes: list[int]):
    """Correctness of two systems on ``sizes[c]`` variants of base clip ``c``: the first ``right_k[c]`` right."""
    clusters = np.repeat(np.arange(n_clips), sizes)
    c1 = np.concatenate([np.arange(n) < r for n, r in zip(sizes, right_1)])
    c2 = np.concatenate([np.arange(n) < r for n, r in zip(sizes, right_2)])
    return c1, c2, clusters


@pytest.mark.parametrize("n_clips", [1, MIN_CLUSTERS - 1])
def test_too_few_base_clips_give_no_interval_and_say_why(n_clips):
    """One base clip (40 variants, 30 right against 23: 0.175) would give the zero-width interval [0.175, 0.175];
    four vary, but too little to say anything of another clip. Either way: no bounds, the reason in words."""
    c1, c2, clusters = variants_of(n_clips, [30, 2, 9, 4][:n_clips], [23, 5, 1, 4][:n_clips], [40, 7, 11, 5][:n_clips])
    res = pt.clustered_bootstrap_difference(c1, c2, clusters, n_boot=400, rng=np.random.default_rng(4))
    assert res.diff == pytest.approx(c1.mean() - c2.mean())
    if n_clips == 1:
        assert res.diff == pytest.approx(0.175)
    assert np.isnan(res.lo) and np.isnan(res.hi) and res.n_clusters == n_clips
    clips = "1 group" if n_clips == 1 else f"{n_clips} groups"
    assert res.reason.startswith(f"{clips}: too few for a group-level interval"), res.reason
    assert f"needs >= {MIN_CLUSTERS} groups" in res.reason
    named = pt.clustered_bootstrap_difference(c1, c2, clusters, n_boot=400, rng=np.random.default_rng(4), unit="speakers")
    assert named.reason.startswith(f"{clips.replace('group', 'speaker')}: too few for a speaker-level interval")


def test_enough_base_clips_with_varied_outcomes_give_an_interval():
    """MIN_CLUSTERS base clips of unequal sizes and differences: the resampled differences take many values."""
    c1, c2, clusters = variants_of(MIN_CLUSTERS, [3, 5, 7, 2, 13], [1, 5, 2, 9, 6], [3, 6, 8, 11, 13])
    res = pt.clustered_bootstrap_difference(c1, c2, clusters, n_boot=1000, rng=np.random.default_rng(5))
    assert res.reason is None and res.n_clusters == MIN_CLUSTERS
    assert res.lo < res.diff < res.hi


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError):
        pt.mcnemar_exact(np.ones(3), np.ones(4))


# ------------------------------------------------------------------------------- clustered exact McNemar
def brute_force_sign_flip_p(d) -> float:
    """Every one of the 2^K sign patterns, enumerated: the fraction with |sum| >= the observed |sum|."""
    import itertools

    d = np.asarray(d)
    sums = np.array([abs(int(np.dot(signs, d))) for signs in itertools.product((-1, 1), repeat=len(d))])
    return float(np.mean(sums >= abs(int(d.sum()))))


def test_sign_flip_p_equals_full_enumeration():
    rng = np.random.default_rng(0)
    for _ in range(150):
        d = rng.integers(-5, 6, size=rng.integers(1, 12))
        assert pt.sign_flip_p(d) == pytest.approx(brute_force_sign_flip_p(d), abs=1e-12), d
    assert pt.sign_flip_p([]) == 1.0 and pt.sign_flip_p([0, 0]) == 1.0


@pytest.mark.parametrize("table", [(40, 3, 10, 7), (10, 5, 5, 2), (20, 0, 0, 4), (0, 1, 12, 0), (5, 25, 40, 1)])
def test_clustered_mcnemar_with_one_clip_per_cluster_is_the_exact_mcnemar(table):
    c1, c2 = table_vectors(*table)
    res = pt.clustered_mcnemar(c1, c2, np.arange(len(c1)))
    b, c = table[1], table[2]
    expected = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue
    assert res.p_value == pytest.approx(expected, rel=1e-12)
    assert (res.n_clusters, res.n_items, res.only_1, res.only_2) == (len(c1), len(c1), b, c)


def test_repeating_every_variant_leaves_the_clustered_p_and_shrinks_the_naive_one():
    """The study's audit: counting correlated variants as independent trials manufactures significance."""
    rng = np.random.default_rng(3)
    clusters = np.repeat(np.arange(24), 4)
    c1 = rng.random(96) < 0.75
    c2 = rng.random(96) < 0.6
    once = pt.clustered_mcnemar(c1, c2, clusters)
    many = pt.clustered_mcnemar(np.repeat(c1, 22), np.repeat(c2, 22), np.repeat(clusters, 22))
    assert many.p_value == once.p_value and many.n_clusters == once.n_clusters == 24
    assert many.n_items == 22 * once.n_items
    naive_once, naive_many = pt.mcnemar_exact(c1, c2).p_value, pt.mcnemar_exact(np.repeat(c1, 22), np.repeat(c2, 22)).p_value
    assert naive_many < naive_once / 1000 and once.p_value > 0.01 > naive_many


def test_clustered_mcnemar_sees_a_consistent_cluster_level_gain():
    """System 1 is right on one more variant than system 2 in each of 12 clusters: p = 2 / 2^12 exactly."""
    clusters = np.repeat(np.arange(12), 3)
    c1 = np.tile([True, True, False], 12)
    c2 = np.tile([True, False, False], 12)
    assert pt.clustered_mcnemar(c1, c2, clusters).p_value == pytest.approx(2 / 2 ** 12, rel=1e-12)
