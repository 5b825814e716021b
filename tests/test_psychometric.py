"""Psychometric fits: known curves give their thresholds back; censored thresholds are reported as such."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize

from speech_calibration.stats import psychometric as ps
from speech_calibration.stats.resampling import MIN_CLUSTERS

DURATIONS = np.log10([20, 40, 60, 80, 100, 200, 500, 1000.0])
SNRS = np.array([-10, -5, 0, 5, 10, 20.0])


def simulate(levels, a, b, clusters, seed=0, missing=0.0):
    rng = np.random.default_rng(seed)
    resp = (rng.random((clusters, len(levels))) < ps.logistic(levels, a, b)).astype(float)
    resp[rng.random(resp.shape) < missing] = np.nan
    return resp


def true_threshold(a, b, q):
    return (np.log(q / (1 - q)) - a) / b


@pytest.mark.parametrize("a,b", [(-8.0, 4.5), (-9.0, 5.0)])
def test_duration_thresholds_recovered(a, b):
    resp = simulate(DURATIONS, a, b, clusters=600, seed=1, missing=0.05)
    curve = ps.fit_curve(DURATIONS, resp, (0.5, 0.75, 0.9), n_boot=400, rng=np.random.default_rng(2))
    assert abs(curve.a - a) < 0.15 * abs(a) and abs(curve.b - b) < 0.15 * b
    for t in curve.thresholds:
        truth = true_threshold(a, b, t.q)
        assert DURATIONS.min() < truth < DURATIONS.max()
        assert abs(10 ** t.value - 10 ** truth) / 10 ** truth < 0.1  # within 10% in ms
        assert t.lo <= truth <= t.hi  # the 95% interval covers it
        assert t.lo < t.value < t.hi


def test_snr_thresholds_recovered_and_interval_narrows_with_data():
    a, b = 0.5, 0.4  # SNR50 = -1.25 dB, SNR75 = 1.5 dB
    widths = []
    for clusters in (30, 600):
        curve = ps.fit_curve(SNRS, simulate(SNRS, a, b, clusters, seed=3), (0.5, 0.75), n_boot=500,
                             rng=np.random.default_rng(4))
        t50 = curve.thresholds[0]
        widths.append(t50.hi - t50.lo)
    assert abs(t50.value - true_threshold(a, b, 0.5)) < 0.5
    assert widths[1] < widths[0] / 2


def test_censored_below_and_above():
    # always SPEECH: every threshold lies below the shortest duration tested
    curve = ps.fit_curve(DURATIONS, np.ones((10, 8)), (0.5, 0.9), n_boot=200)
    for t in curve.thresholds:
        assert t.value == -np.inf and t.lo == -np.inf
        assert ps.describe(t.value, DURATIONS.min(), DURATIONS.max(), lambda x: f"{10 ** x:.0f} ms") == "< 20 ms"
    # never SPEECH: above the highest SNR tested
    curve = ps.fit_curve(SNRS, np.zeros((10, 6)), (0.5,), n_boot=200)
    t = curve.thresholds[0]
    assert t.value == np.inf and t.hi == np.inf
    assert ps.describe(t.value, SNRS.min(), SNRS.max(), lambda x: f"{x:g} dB") == "not reached by 20 dB"


def test_curve_that_only_reaches_75_percent_censors_dt90():
    # a ceiling near 0.8: DT50 and DT75 are in range, DT90 is not reached by 1000 ms
    p = np.array([0.05, 0.2, 0.4, 0.55, 0.62, 0.72, 0.78, 0.8])
    resp = (np.random.default_rng(0).random((2000, 8)) < p).astype(float)
    curve = ps.fit_curve(DURATIONS, resp, (0.5, 0.9), n_boot=200)
    assert np.isfinite(curve.thresholds[0].value)
    assert curve.thresholds[1].value == np.inf  # 'not reached by 1000 ms', not an extrapolated number


def test_thresholds_function_edges():
    x_min, x_max = 0.0, 1.0
    # curve crosses 0.5 at 0.5
    assert ps.thresholds(-2.0, 4.0, 0.5, x_min, x_max) == pytest.approx(0.5)
    # decreasing curve already above 0.5 at x_min: censored below; flat below: censored above
    assert ps.thresholds(2.0, -1.0, 0.5, x_min, x_max) == -np.inf
    assert ps.thresholds(-1.0, 0.0, 0.5, x_min, x_max) == np.inf


def test_fit_matches_direct_optimisation_of_the_same_likelihood():
    rng = np.random.default_rng(5)
    x = DURATIONS
    n = rng.integers(5, 20, size=len(x)).astype(float)
    k = rng.binomial(n.astype(int), ps.logistic(x, -7, 4)).astype(float)
    a, b = ps.fit_logistic(x, k, n)
    z_mean, z_sd = x.mean(), x.std()

    def objective(theta):  # negative penalised log-likelihood in the standardised coordinates
        eta = theta[0] + theta[1] * (x - z_mean) / z_sd
        return -np.sum(k * eta - n * np.logaddexp(0, eta)) + ps.RIDGE / 2 * np.sum(theta ** 2)

    ref = optimize.minimize(objective, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    b_ref = ref[1] / z_sd
    assert a == pytest.approx(ref[0] - b_ref * z_mean, abs=1e-5) and b == pytest.approx(b_ref, abs=1e-5)


def test_batched_fit_equals_single_fits():
    rng = np.random.default_rng(6)
    n = np.full((5, len(SNRS)), 12.0)
    k = rng.binomial(12, ps.logistic(SNRS, 0.2, 0.3), size=(5, len(SNRS))).astype(float)
    a, b = ps.fit_logistic(SNRS, k, n)
    for i in range(5):
        ai, bi = ps.fit_logistic(SNRS, k[i], n[i])
        assert a[i] == pytest.approx(ai) and b[i] == pytest.approx(bi)


def test_separable_data_gives_a_finite_steep_curve_between_the_levels():
    resp = np.tile([0, 0, 0, 0, 1, 1, 1, 1.0], (20, 1))
    curve = ps.fit_curve(DURATIONS, resp, (0.5,), n_boot=100)
    assert np.isfinite(curve.b) and curve.b > 5
    assert DURATIONS[3] < curve.thresholds[0].value < DURATIONS[4]


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError):
        ps.fit_curve(DURATIONS, np.ones((3, 5)))


# ------------------------------------------------------------------------------- sensitivity (balanced accuracy)
def test_first_crossing_matches_brentq_on_a_closed_form_curve():
    grid = np.linspace(0.0, 3.0, ps.GRID)
    a1, b1, a0, b0 = -4.0, 3.0, -1.0, -1.5  # hits rise, false alarms fall

    def ba(x):
        return (ps.logistic(x, a1, b1) + 1.0 - ps.logistic(x, a0, b0)) / 2.0

    for q in (0.6, 0.75, 0.9):
        found = ps.first_crossing(ba(grid), grid, q)[0]
        assert found == pytest.approx(optimize.brentq(lambda x: ba(x) - q, 0.0, 3.0), abs=1e-6)
    assert ps.first_crossing(ba(grid), grid, 0.2)[0] == -np.inf  # already there at the lowest level
    assert ps.first_crossing(ba(grid), grid, 0.999)[0] == np.inf  # never reached
    # not monotone: the first crossing, not the last
    bump = np.exp(-((grid - 1.0) ** 2) / 0.1)
    assert ps.first_crossing(bump, grid, 0.5)[0] == pytest.approx(1.0 - np.sqrt(0.1 * np.log(2)), abs=1e-6)


def test_sensitivity_threshold_recovered_from_hits_and_false_alarms():
    """Hits rise with duration, false alarms fall: the fitted balanced accuracy crosses 75 % where the truth does."""
    a1, b1, a0, b0 = -8.0, 4.5, 1.0, -1.5
    speech = simulate(DURATIONS, a1, b1, clusters=800, seed=5)
    nonspeech = simulate(DURATIONS, a0, b0, clusters=800, seed=6)
    sens = ps.fit_sensitivity(DURATIONS, speech, nonspeech, (0.75, 0.9), n_boot=300, rng=np.random.default_rng(7))

    def ba(x):
        return (ps.logistic(x, a1, b1) + 1.0 - ps.logistic(x, a0, b0)) / 2.0

    for t in sens.thresholds:
        truth = optimize.brentq(lambda x: ba(x) - t.q, DURATIONS.min(), DURATIONS.max())
        assert abs(10 ** t.value - 10 ** truth) / 10 ** truth < 0.1
        assert t.lo <= truth <= t.hi
    np.testing.assert_allclose(sens.observed, (speech.mean(0) + 1 - nonspeech.mean(0)) / 2)


@pytest.mark.parametrize("answer", [1.0, 0.0])
def test_a_constant_answer_never_reaches_a_sensitivity_threshold(answer):
    """Always SPEECH: the hit-rate thresholds sit below the range (bias), balanced accuracy stays at 1/2."""
    speech, nonspeech = np.full((12, 8), answer), np.full((12, 8), answer)
    sens = ps.fit_sensitivity(DURATIONS, speech, nonspeech, (0.75, 0.9), n_boot=200)
    assert np.allclose(sens.fitted(DURATIONS), 0.5, atol=1e-3)
    for t in sens.thresholds:
        assert t.value == t.lo == t.hi == np.inf
        assert ps.describe(t.value, DURATIONS.min(), DURATIONS.max(), lambda x: f"{10 ** x:.0f} ms") == "not reached by 1000 ms"
    hit = ps.fit_curve(DURATIONS, speech, (0.5,), n_boot=200)
    assert hit.thresholds[0].value == (-np.inf if answer else np.inf)


def test_a_curve_that_falls_with_the_level_says_where_it_loses_the_criterion():
    """Speech always answered SPEECH, false alarms rising with duration: the balanced accuracy starts near 1 and falls
    to 1/2, so DT75 is reached below the range ("< 20 ms") and lost again where the fitted BA falls through 75 %
    (brentq on the fitted curves). A hit rate that falls with duration does the same; a rising one never falls back."""
    a0, b0 = -9.0, 4.0  # false alarms: 50 % at 10^(9/4) = 178 ms
    speech, nonspeech = np.ones((400, 8)), simulate(DURATIONS, a0, b0, clusters=400, seed=8)
    sens = ps.fit_sensitivity(DURATIONS, speech, nonspeech, (0.75,), n_boot=100, rng=np.random.default_rng(9))
    t = sens.thresholds[0]
    assert t.value == -np.inf and DURATIONS.min() < t.falls_back < DURATIONS.max()
    fitted = optimize.brentq(lambda x: sens.fitted(np.array([x]))[0] - 0.75, DURATIONS.min(), DURATIONS.max())
    assert t.falls_back == pytest.approx(fitted, abs=2e-3)
    falling_hits = ps.fit_curve(DURATIONS, simulate(DURATIONS, 9.0, -4.0, clusters=400, seed=10), (0.5,), n_boot=100)
    t = falling_hits.thresholds[0]
    assert t.value == -np.inf
    assert t.falls_back == pytest.approx(-falling_hits.a / falling_hits.b)  # where the fitted curve is 1/2
    rising = ps.fit_curve(DURATIONS, simulate(DURATIONS, -8.0, 4.5, clusters=400, seed=11), (0.5,), n_boot=100)
    assert np.isfinite(rising.thresholds[0].value) and rising.thresholds[0].falls_back == np.inf


def test_falls_back_interpolates_between_grid_levels():
    grid = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    assert ps.falls_back(np.array([0.2, 0.8, 0.9, 0.6, 0.9]), grid, 0.75) == pytest.approx(2.0 + 0.15 / 0.3)
    assert ps.falls_back(np.array([0.2, 0.8, 0.9, 0.95, 0.99]), grid, 0.75) == np.inf  # holds once reached
    assert ps.falls_back(np.array([0.2, 0.3, 0.1, 0.3, 0.2]), grid, 0.75) == np.inf  # never reached


# ---------------------------------------------------------------------------------- too few groups for an interval
def staircase(n_clips: int) -> np.ndarray:
    """Base clip ``c`` (of ``n_clips``) answered SPEECH from duration level ``2 + c % 5`` up, plus one lapse at the
    top level for clips 1, 4, 7, ...: clips that differ, so resampling them moves the fitted curve."""
    resp = np.array([[float(j >= 2 + c % 5) for j in range(len(DURATIONS))] for c in range(n_clips)])
    resp[1::3, -1] = 0.0
    return resp


@pytest.mark.parametrize("n_clips", [1, MIN_CLUSTERS - 1])
def test_too_few_groups_give_no_threshold_interval_and_say_why(n_clips):
    """Without ``clusters`` every base clip is its own group. One is the same in every resample (lo = value = hi before
    this rule); MIN_CLUSTERS - 1 vary, but too little: either way the bounds are NaN and the reason says how many
    groups there were."""
    curve = ps.fit_curve(DURATIONS, staircase(n_clips), (0.5, 0.75), n_boot=300, rng=np.random.default_rng(3))
    groups = "1 group" if n_clips == 1 else f"{n_clips} groups"
    for t in curve.thresholds:
        assert np.isfinite(t.value)  # the point estimate is still given
        assert np.isnan(t.lo) and np.isnan(t.hi), t
        assert t.reason.startswith(f"{groups}: too few for a group-level interval"), t.reason
        assert f"needs >= {MIN_CLUSTERS} groups" in t.reason


def test_base_clips_of_one_group_are_resampled_together():
    """2 * MIN_CLUSTERS base clips give an interval as groups of their own, but none as the clips of two groups (a
    speaker's clips are not independent of each other), and the reason counts groups, in the unit given; the point
    estimate does not depend on the grouping. So for the two classes of a sensitivity threshold."""
    resp = staircase(2 * MIN_CLUSTERS)
    alone = ps.fit_curve(DURATIONS, resp, (0.5,), n_boot=500, rng=np.random.default_rng(3))
    assert alone.thresholds[0].reason is None
    two = np.array(["spk_a", "spk_b"] * MIN_CLUSTERS)
    grouped = ps.fit_curve(DURATIONS, resp, (0.5,), n_boot=500, rng=np.random.default_rng(3), clusters=two,
                           unit="speakers")
    t = grouped.thresholds[0]
    assert t.value == alone.thresholds[0].value and np.isnan(t.lo) and np.isnan(t.hi)
    assert t.reason.startswith("2 speakers: too few for a speaker-level interval"), t.reason
    sens = ps.fit_sensitivity(DURATIONS, resp, 1.0 - resp, (0.75,), n_boot=300, rng=np.random.default_rng(4),
                              clusters=(two, two))
    assert sens.thresholds[0].reason.startswith("2 groups: too few"), sens.thresholds[0]


def _width(t) -> float:
    return t.hi - t.lo


def test_a_groups_copies_of_one_clip_widen_the_interval_as_one_group_would():
    """Six groups, each with three copies of one base clip's responses: resampled as groups (``clusters``) the
    threshold varies as much as six clips would, more than eighteen clips drawn one by one. So for the sensitivity
    threshold, whose groups each hold speech and non-speech clips: a group is drawn once for both of its classes,
    every row of it with that group's weight."""
    one = staircase(6)
    copies, groups = np.repeat(one, 3, axis=0), np.repeat([f"g{i}" for i in range(6)], 3)
    rows = ps.fit_curve(DURATIONS, copies, (0.5,), n_boot=1000, rng=np.random.default_rng(3)).thresholds[0]
    grouped = ps.fit_curve(DURATIONS, copies, (0.5,), n_boot=1000, rng=np.random.default_rng(3), clusters=groups)
    assert rows.reason is None and grouped.thresholds[0].reason is None
    assert _width(grouped.thresholds[0]) > 1.3 * _width(rows)
    nonspeech = 1.0 - np.repeat(staircase(6)[::-1], 3, axis=0)
    w_s, w_n, n_groups, per_stratum = ps._class_weights(copies, nonspeech, (groups, groups), 200, np.random.default_rng(0))
    assert (n_groups, per_stratum) == (6, None)  # every group holds both classes: no resample can lose one
    np.testing.assert_array_equal(w_s, w_n)  # the same draw for a group's speech and non-speech rows
    np.testing.assert_array_equal(w_s[:, 0::3], w_s[:, 1::3])  # every row of a group: the group's weight
    assert (w_s[:, 0::3].sum(axis=1) == 6).all()  # six groups drawn per resample
    sens = ps.fit_sensitivity(DURATIONS, copies, nonspeech, (0.75,), n_boot=1000, rng=np.random.default_rng(4),
                              clusters=(groups, groups)).thresholds[0]
    apart = ps.fit_sensitivity(DURATIONS, copies, nonspeech, (0.75,), n_boot=1000, rng=np.random.default_rng(4)).thresholds[0]
    assert sens.reason is None and apart.reason is None and _width(sens) > 1.3 * _width(apart)


def test_enough_groups_with_varied_responses_give_a_threshold_interval():
    curve = ps.fit_curve(DURATIONS, staircase(MIN_CLUSTERS), (0.5,), n_boot=500, rng=np.random.default_rng(3))
    t = curve.thresholds[0]
    assert t.reason is None and t.lo < t.value < t.hi


def test_sensitivity_needs_enough_groups_of_each_class():
    """The groups of speech and of non-speech clips are resampled apart: 6 speech groups are enough, 3 non-speech ones
    are not, and the reason names the non-speech side only. With MIN_CLUSTERS of each there is an interval."""
    speech = staircase(6)
    few_nonspeech = 1.0 - staircase(MIN_CLUSTERS + 2)[[0, 1, 4]]  # false alarms at short durations, falling
    sens = ps.fit_sensitivity(DURATIONS, speech, few_nonspeech, (0.75,), n_boot=300, rng=np.random.default_rng(4))
    t = sens.thresholds[0]
    assert np.isnan(t.lo) and np.isnan(t.hi)
    assert t.reason.startswith("3 NONSPEECH groups: too few"), t.reason
    assert "SPEECH group" not in t.reason.replace("NONSPEECH", "") and "within each class stratum" in t.reason
    both = ps.fit_sensitivity(DURATIONS, speech, 1.0 - staircase(MIN_CLUSTERS + 2)[[0, 1, 2, 4, 6]], (0.75,), n_boot=500,
                              rng=np.random.default_rng(4))
    t = both.thresholds[0]
    assert t.reason is None and t.lo <= t.value <= t.hi and t.lo < t.hi


def test_one_odd_group_does_not_take_the_sensitivity_interval_away():
    """20 groups with speech and non-speech clips, and one speech-only group: a plain resample of the 21 hardly ever
    loses a class, so the groups are drawn as one set (as the per-condition tables draw them) and the threshold keeps
    its interval (review: stratifying by what a group holds gave '1 SPEECH group: too few'). Single-class groups,
    few of a kind, are drawn within their class."""
    speech = staircase(21)
    nonspeech = 1.0 - staircase(20)[::-1]
    groups = np.array([f"g{i}" for i in range(21)])
    sens = ps.fit_sensitivity(DURATIONS, speech, nonspeech, (0.75,), n_boot=500, rng=np.random.default_rng(4),
                              clusters=(groups, groups[:20])).thresholds[0]
    assert sens.reason is None and sens.lo <= sens.value <= sens.hi
    _, _, n_groups, per_stratum = ps._class_weights(speech, nonspeech, (groups, groups[:20]), 10, np.random.default_rng(0))
    assert (n_groups, per_stratum) == (21, None)
    apart = (np.array([f"s{i}" for i in range(6)]), np.array([f"n{i}" for i in range(3)]))
    _, _, n_groups, per_stratum = ps._class_weights(staircase(6), 1.0 - staircase(3), apart, 10, np.random.default_rng(0))
    assert (n_groups, per_stratum) == (9, {"SPEECH": 6, "NONSPEECH": 3})
