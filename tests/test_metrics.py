"""speech_calibration.stats.metrics: every estimator against a hand-computed example or an independent reference."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from speech_calibration.stats import metrics as M

# ---------------------------------------------------------------------------- hand-computed examples
# four forecasts, two bins: width bins [0, .5) and [.5, 1]
CONF = np.array([0.1, 0.6, 0.7, 0.9])
OUT = np.array([0.0, 0.0, 1.0, 1.0])


def test_equal_width_ece_by_hand():
    # bin [0,.5): {0.1}, conf .1, acc 0 -> |.1| * 1/4 ; bin [.5,1]: {.6,.7,.9}, conf .7333, acc .6667 -> .0667 * 3/4
    assert M.ece(CONF, OUT, n_bins=2) == pytest.approx(0.1 / 4 + (2.2 / 3 - 2 / 3) * 3 / 4)
    assert M.ece(CONF, OUT, n_bins=2) == pytest.approx(0.075)
    assert M.mce(CONF, OUT, n_bins=2) == pytest.approx(0.1)
    l2 = M.binned_calibration_error(CONF, OUT, 2, "width", "l2")
    assert l2 == pytest.approx(math.sqrt(0.25 * 0.1**2 + 0.75 * (0.2 / 3) ** 2))


def test_equal_mass_ece_by_hand():
    # sorted, two groups of two: {.1,.6}: conf .35, acc 0 ; {.7,.9}: conf .8, acc 1
    assert M.ece_equal_mass(CONF, OUT, n_bins=2) == pytest.approx(0.5 * 0.35 + 0.5 * 0.2)


def test_debiased_ece_by_hand():
    # same bins as equal mass; ybar is 0 and 1, so the variance correction is 0: sqrt(.5*.35^2 + .5*.2^2)
    assert M.debiased_ece(CONF, OUT, n_bins=2) == pytest.approx(math.sqrt(0.5 * 0.35**2 + 0.5 * 0.2**2))
    # ybar = .5 in both bins of two: plug-in l2 = .2, correction .5*.5/(2-1) = .25 > .04 -> clipped to 0
    conf, out = np.array([0.2, 0.4, 0.6, 0.8]), np.array([0.0, 1.0, 0.0, 1.0])
    assert M.binned_calibration_error(conf, out, 2, "mass", "l2") == pytest.approx(0.2)
    assert M.debiased_ece(conf, out, n_bins=2) == 0.0


def test_equal_mass_bins_never_split_a_run_of_ties_by_hand():
    # eight clips at confidence 0.7, half of them right, 2 bins: the run cannot be split, so one bin of 8 whatever
    # the row order (before the fix: 0.50 sorted as below, 0.20 interleaved)
    conf = np.full(8, 0.7)
    for out in (np.r_[np.ones(4), np.zeros(4)], np.tile([1.0, 0.0], 4)):
        assert M.ece_equal_mass(conf, out, n_bins=2) == pytest.approx(0.7 - 0.5)
        # one bin: (0.5 - 0.7)^2 - 0.5 * 0.5 / (8 - 1) = 0.04 - 0.25/7 = 0.03/7
        assert M.debiased_ece(conf, out, n_bins=2) == pytest.approx(math.sqrt(0.03 / 7))
    # n = 6, 3 bins: equal-mass ends after 2, 4, 6 items; forecasts change after items 1, 4, 6. Bin 1 ends at the first
    # change at or after 2 -> 4, bin 2 at the first at or after 4 -> 4 (empty, dropped), bin 3 at 6.
    # {.2,.5,.5,.5}: conf 1.7/4 = .425, acc 2/4 -> gap .075, weight 4/6 ; {.9,.9}: conf .9, acc 1 -> gap .1, weight 2/6
    conf, out = np.array([0.5, 0.9, 0.2, 0.5, 0.9, 0.5]), np.array([0.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    assert M.ece_equal_mass(conf, out, n_bins=3) == pytest.approx(4 / 6 * 0.075 + 2 / 6 * 0.1)
    t = M.reliability_table(conf, out, n_bins=3, strategy="mass")
    np.testing.assert_array_equal(t["count"], [4, 2])
    np.testing.assert_allclose(np.c_[t["bin_lo"], t["bin_hi"]], [[0.2, 0.5], [0.9, 0.9]])
    np.testing.assert_allclose(np.c_[t["confidence"], t["observed"]], [[0.425, 0.5], [0.9, 1.0]])
    # a lone item after a run of ties: n = 4, 2 bins, ends after 2 and 4; forecasts change after items 1, 3, 4
    conf, out = np.array([0.3, 0.6, 0.1, 0.3]), np.array([1.0, 1.0, 0.0, 1.0])
    # equal mass: {.1,.3,.3} (conf .7/3, acc 2/3, weight 3/4) and {.6} (conf .6, acc 1, weight 1/4): .75 * .4333 + .25 * .4
    assert M.ece_equal_mass(conf, out, n_bins=2) == pytest.approx(0.75 * (2 / 3 - 0.7 / 3) + 0.25 * 0.4)
    # debiased needs 2 items per bin: {.6} joins the bin before it -> one bin, conf 1.3/4 = .325, ybar .75:
    # (.75 - .325)^2 - .75 * .25 / 3 = .180625 - .0625 = .118125
    assert M.debiased_ece(conf, out, n_bins=2) == pytest.approx(math.sqrt(0.118125))


def _tied_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """(prob, outcome) pairs with many ties: a VAD-like baseline (20 of 24 confidences equal) and a few levels."""
    rng = np.random.default_rng(21)
    vad = np.r_[np.full(20, 0.93), 0.61, 0.75, 0.8, 0.99]
    levels = rng.choice([0.55, 0.7, 0.8, 0.9, 0.99], 60)
    return [(f, (rng.uniform(size=f.size) < f - 0.1).astype(float)) for f in (vad, levels, np.full(9, 0.7))]


@pytest.mark.parametrize("case", range(3))
def test_every_metric_of_forecasts_and_outcomes_ignores_the_row_order_with_ties(case):
    f, o = _tied_cases()[case]
    y, p = (o == 1).astype(int), np.where(o == 1, f, 1 - f)  # binary_metrics' inputs with the same (conf, correct)
    rng = np.random.default_rng(8)
    perms = np.stack([rng.permutation(f.size) for _ in range(5)])

    def every_metric(f, o, y, p):
        out = {f"{k}_{b}": v for b in (2, 5, 15) for k, v in M.calibration_errors(f, o, b).items()}
        out |= {f"{s}_{nm}": M.binned_calibration_error(f, o, 5, s, nm) for s in ("width", "mass") for nm in ("l1", "l2", "max")}
        out |= {"aurc": M.aurc(f, o), "risk_coverage": M.risk_coverage(f, o)}
        out |= {f"table_{s}_{k}": v for s in ("width", "mass") for k, v in M.reliability_table(f, o, 5, s).items()}
        return out | {f"binary_{k}": v for k, v in M.binary_metrics(y, p, n_bins=5).items()}

    ref = every_metric(f, o, y, p)
    for perm in perms:
        shuffled = every_metric(f[perm], o[perm], y[perm], p[perm])
        for k, v in ref.items():  # bincount sums in row order: float sums may differ in the last bits
            np.testing.assert_allclose(shuffled[k], v, rtol=1e-12, atol=1e-14, err_msg=k)
    batched = M.calibration_errors(f[perms], o[perms], 5)  # the shuffles as the rows of one (B, n) matrix
    for k, v in M.calibration_errors(f, o, 5).items():  # smooth ECE's shared bandwidth grid: within 2e-3 (its docstring)
        np.testing.assert_allclose(batched[k], np.full(len(perms), v), rtol=1e-12, atol=2e-3 if k == "ece_smooth" else 1e-14,
                                   err_msg=k)


def test_smooth_ece_by_hand():
    # one forecast 0.5 of an event that happened: the smoothed residual integrates to 0.5 at every
    # bandwidth (the reflected kernel keeps its mass in [0, 1]), so the fixed point is sigma* = 0.5
    assert M.smooth_ece(np.array([0.5]), np.array([1.0])) == pytest.approx(0.5, abs=2e-3)
    # perfectly confident and right: no residual; value at the smallest bandwidth, as relplot
    assert M.smooth_ece(np.ones(10) * 0.999, np.ones(10)) == pytest.approx(0.001, abs=1e-4)


def test_smooth_ece_matches_relplot():
    relplot = pytest.importorskip("relplot")
    rng = np.random.default_rng(3)
    for n in (24, 72, 400):
        for _ in range(3):
            f = rng.uniform(size=n)
            y = (rng.uniform(size=n) < f**1.5).astype(float)
            ref = float(relplot.smECE(f, y))
            assert M.smooth_ece(f, y) == pytest.approx(ref, abs=2e-3)


def test_smooth_ece_batched_rows_equal_single_rows():
    rng = np.random.default_rng(4)
    f = rng.uniform(0.5, 1, 30)
    y = (rng.uniform(size=30) < f).astype(float)
    idx = rng.integers(0, 30, (40, 30))
    batched = M.smooth_ece(f[idx], y[idx])
    single = np.array([M.smooth_ece(f[i], y[i]) for i in idx])
    np.testing.assert_allclose(batched, single, atol=2e-3)


def test_smooth_ece_rows_far_apart_in_one_batch_equal_single_rows():
    # a row that crosses its fixed point early (badly calibrated) is dropped from the narrower coarse bandwidths that a
    # nearly calibrated row in the same batch still needs; both must come out as they do alone
    rng = np.random.default_rng(7)
    f = np.r_[np.full(10, 0.999), rng.uniform(0.5, 1.0, 10), np.full(10, 0.9)]
    y = np.r_[np.ones(10), (rng.uniform(size=10) < 0.5), np.zeros(10)].astype(float)
    idx = np.stack([np.arange(10), np.arange(10, 20), np.arange(20, 30), rng.integers(0, 30, 10)])
    batched = M.smooth_ece(f[idx], y[idx])
    single = np.array([M.smooth_ece(f[i], y[i]) for i in idx])
    np.testing.assert_allclose(batched, single, atol=2e-3)
    assert batched[0] == pytest.approx(0.001, abs=1e-4) and batched[2] > 0.5  # the two extremes really are in it


@pytest.mark.parametrize("sigma", [0.001, 0.004, 0.03, 0.2, 1.0])
def test_smooth_ece_kernel_is_the_three_term_reflected_gaussian(sigma):
    # the kernel adds a reflection only where it reaches the grid: compare it with all three terms of the formula
    from scipy.stats import norm

    f = np.array([0.0, 0.0004, 0.003, 0.02, 0.3, 0.5, 0.97, 0.998, 0.9999, 1.0])
    m = M._grid_size(sigma)
    t = (np.arange(m) + 0.5) / m
    full = norm.pdf(t[:, None], f[None, :], sigma) + norm.pdf(t[:, None], -f[None, :], sigma) + norm.pdf(
        t[:, None], 2 - f[None, :], sigma)
    full[full < M._KERNEL_FLOOR / (sigma * np.sqrt(2 * np.pi))] = 0.0
    kernel = M._kernel.__wrapped__(sigma, f.tobytes())
    np.testing.assert_allclose(kernel, full.T, rtol=2e-6, atol=1e-30)


def test_smooth_ece_distinct_pairs_are_numpys_unique_rows():
    # smooth_ece computes its kernel once per distinct (forecast, outcome) pair, found by 1-D sorts: numpy's unique rows
    rng = np.random.default_rng(5)
    f = rng.choice([0.55, 0.7, np.nextafter(0.7, 1.0), 0.9], size=(50, 12))
    y = rng.integers(0, 2, size=(50, 12)).astype(float)
    keys, inverse = M._distinct_pairs(f.ravel(), y.ravel())
    ref_keys, ref_inverse = np.unique(np.stack([f.ravel(), y.ravel()], axis=1), axis=0, return_inverse=True)
    np.testing.assert_array_equal(keys, ref_keys)
    np.testing.assert_array_equal(inverse, ref_inverse.ravel())


def test_smooth_ece_is_the_same_with_its_kernels_cached():
    rng = np.random.default_rng(6)
    f = rng.uniform(0.5, 1, 20)
    y = (rng.uniform(size=20) < f).astype(float)
    idx = rng.integers(0, 20, (100, 20))
    M._kernel.cache_clear()
    cold = M.smooth_ece(f[idx], y[idx])
    misses = M._kernel.cache_info().misses
    warm = M.smooth_ece(f[idx], y[idx])
    assert M._kernel.cache_info().misses == misses  # every kernel of the second call came from the cache
    np.testing.assert_array_equal(warm, cold)


# ------------------------------------------------------------------------------ torchmetrics reference
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_equal_width_matches_torchmetrics(norm):
    torch = pytest.importorskip("torch")
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    rng = np.random.default_rng(0)
    for n_bins in (5, 15):
        p = rng.uniform(0.001, 0.999, 300)
        y = (rng.uniform(size=300) < p**1.3).astype(int)
        # p(SPEECH) against the label: torchmetrics' BinaryCalibrationError
        ref = tmf.binary_calibration_error(torch.tensor(p), torch.tensor(y), n_bins=n_bins, norm=norm).item()
        assert M.binned_calibration_error(p, y, n_bins, "width", norm) == pytest.approx(ref, abs=1e-6)
        # top label: torchmetrics' multiclass version (max probability, correct or not)
        probs = torch.tensor(np.stack([1 - p, p], axis=1))
        ref_top = tmf.multiclass_calibration_error(probs, torch.tensor(y), num_classes=2, n_bins=n_bins, norm=norm).item()
        conf, correct = M.top_label(y, p)
        assert M.binned_calibration_error(conf, correct, n_bins, "width", norm) == pytest.approx(ref_top, abs=1e-6)


# --------------------------------------------------------------------------- debiased vs plain
@pytest.mark.parametrize("spread", [0.0, 0.2])
def test_debiased_square_has_the_documented_expectation_given_the_forecasts(spread):
    """Monte Carlo, forecasts fixed (so the 4 equal-mass bins of 10 are fixed), outcomes drawn with true rates
    mu_i = mu_b +- spread (alternating) in bin b: E[squared term] = sum_b w_b [(mu_b - conf_b)^2 - s_b^2 / (n_b - 1)],
    with s_b^2 = spread^2 the variance of the true rates within a bin (0: unbiased for the binned forecaster)."""
    rng = np.random.default_rng(12)
    f = np.linspace(0.05, 0.95, 40)
    mu_b = np.array([0.25, 0.45, 0.6, 0.75])
    mu = np.repeat(mu_b, 10) + spread * np.tile([1.0, -1.0], 20)
    draws = 40000
    y = (rng.uniform(size=(draws, 40)) < mu).astype(float)
    sq = M._debiased_square(np.broadcast_to(f, y.shape), y, 4)
    conf_b = f.reshape(4, 10).mean(axis=1)
    expected = np.mean((mu_b - conf_b) ** 2 - spread**2 / (10 - 1))
    se = sq.std(ddof=1) / math.sqrt(draws)  # Monte-Carlo standard error of the mean, about 1e-4 here
    assert abs(sq.mean() - expected) < 4 * se
    # the test can tell a biased estimate: the plug-in square (bias sum_b w_b Var(ybar_b) ~ 0.02) is far outside
    plug_in = M.binned_calibration_error(np.broadcast_to(f, y.shape), y, 4, "mass", "l2") ** 2
    assert plug_in.mean() - expected > 50 * se
    if spread:  # and the spread term (0.04 / 9 ~ 0.0044) is resolved: not unbiased for (mu_b - conf_b)^2 then
        assert np.mean((mu_b - conf_b) ** 2) - sq.mean() > 20 * se


def test_debiased_closer_to_true_l2_error_than_plug_in():
    """Small samples of known calibration: forecasts f ~ U(0,1), P(y=1 | f) = g(f).

    The true l2 calibration error is sqrt(E[(f - g(f))^2]); the plug-in binned estimate is biased up by
    the Bernoulli noise of the bin means, the debiased one removes that bias (Kumar et al. 2019).
    """
    rng = np.random.default_rng(0)
    grid = (np.arange(100000) + 0.5) / 100000
    for g in (lambda f: f, lambda f: np.clip(f + 0.1, 0, 1)):  # calibrated, and off by ~0.1
        true = math.sqrt(np.mean((grid - g(grid)) ** 2))
        plain, debiased = [], []
        for _ in range(400):
            f = rng.uniform(size=100)
            y = (rng.uniform(size=100) < g(f)).astype(float)
            plain.append(M.binned_calibration_error(f, y, 10, "mass", "l2"))
            debiased.append(M.debiased_ece(f, y, 10))
        plain, debiased = np.array(plain), np.array(debiased)
        # closer on average (mean absolute error) and less biased
        assert np.mean(np.abs(debiased - true)) < np.mean(np.abs(plain - true))
        assert abs(debiased.mean() - true) < 0.6 * abs(plain.mean() - true)


# ------------------------------------------------------------------------- classification metrics
def test_roc_auc_and_ranks_match_references():
    sk = pytest.importorskip("sklearn.metrics")
    from scipy.stats import rankdata

    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        if y.min() == y.max():
            continue
        s = np.round(rng.normal(size=40), 1)  # ties on purpose
        assert M.roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
        np.testing.assert_allclose(M.average_ranks(s)[0], rankdata(s))


def test_accuracy_per_class_and_balanced():
    y = np.array([1, 1, 1, 1, 0, 0])
    pred = np.array([1, 1, 0, 0, 0, 0])
    assert M.accuracy(y, pred) == pytest.approx(4 / 6)
    assert M.class_accuracy(y, pred, 1) == pytest.approx(0.5)
    assert M.class_accuracy(y, pred, 0) == pytest.approx(1.0)
    assert M.balanced_accuracy(y, pred) == pytest.approx(0.75)


def test_one_class_absent_gives_documented_nan_not_a_crash():
    y = np.ones(5, dtype=int)
    p = np.array([0.9, 0.8, 0.4, 0.7, 0.6])
    m = M.binary_metrics(y, p, n_bins=15)
    assert math.isnan(m["acc_nonspeech"]) and math.isnan(m["roc_auc"]) and math.isnan(m["balanced_accuracy"])
    assert m["acc_speech"] == pytest.approx(0.8) and m["accuracy"] == pytest.approx(0.8)
    assert np.isfinite(m["ece"]) and np.isfinite(m["nll"]) and np.isfinite(m["ece_smooth"])



@pytest.mark.parametrize("shape", [(0,), (3, 0)])
def test_zero_clips_give_nan_for_every_metric(shape):
    """Zero clips: every metric, alone or in binary_metrics, is NaN (none 0), without a numpy warning."""
    e = np.zeros(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = dict(M.binary_metrics(e.astype(int), e))
        values |= {f"alone_{k}": v for k, v in M.calibration_errors(e, e).items()}
        values |= {f"alone_{k}": v for k, v in M.brier_decomposition(e, e).items()}
        values |= {"alone_brier": M.brier(e, e), "alone_nll": M.nll(e, e), "alone_aurc": M.aurc(e, e),
                   "alone_accuracy": M.accuracy(e, e), "alone_roc_auc": M.roc_auc(e, e),
                   "alone_l2_mass": M.binned_calibration_error(e, e, 15, "mass", "l2")}
        table = M.reliability_table(np.zeros(0), np.zeros(0), strategy="mass")
    for k, v in values.items():
        assert np.shape(v) == shape[:-1] and np.all(np.isnan(v)), k
    assert all(len(v) == 0 for v in table.values())


def test_sigmoid_and_logit_closed_forms():
    assert M.sigmoid(0.0) == 0.5 and M.logit(0.5) == 0.0
    assert M.sigmoid(math.log(3.0)) == pytest.approx(0.75, rel=1e-15)  # odds 3 : 1
    assert M.logit(0.75) == pytest.approx(math.log(3.0), rel=1e-15)
    assert M.logit(0.1) == pytest.approx(-math.log(9.0), rel=1e-15)
    assert M.logit(1e-300) == pytest.approx(math.log(1e-300), rel=1e-15)  # log1p keeps the tail exact
    with np.errstate(divide="ignore"):
        assert M.logit(0.0) == -np.inf and M.logit(1.0) == np.inf
    z = np.linspace(-30.0, 30.0, 601)
    assert M.sigmoid(z) == pytest.approx(1.0 / (1.0 + np.exp(-z)), rel=1e-3, abs=1e-15)
    np.testing.assert_allclose(M.logit(M.sigmoid(z[np.abs(z) <= 15])), z[np.abs(z) <= 15], atol=1e-9)  # inverses
    p = np.linspace(0.001, 0.999, 999)
    np.testing.assert_allclose(M.sigmoid(M.logit(p)), p, rtol=1e-12)
    np.testing.assert_allclose(M.sigmoid(-z) + M.sigmoid(z), 1.0, rtol=0, atol=1e-15)  # sigmoid(-z) = 1 - sigmoid(z)
    assert M.p_speech_from_logits(2.0, 2.0 - math.log(3.0)) == pytest.approx(0.75, rel=1e-15)


def test_proper_scores():
    y = np.array([1, 0])
    p = np.array([0.8, 0.4])
    assert M.brier(y, p) == pytest.approx((0.2**2 + 0.4**2) / 2)
    assert M.nll(y, p) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert np.isfinite(M.nll(np.array([1]), np.array([0.0])))  # clipped, not infinite


def test_brier_decomposition_is_exact_for_binned_forecasts():
    rng = np.random.default_rng(2)
    p = rng.choice([0.05, 0.35, 0.65, 0.95], 500)  # one forecast value per bin of 10
    y = (rng.uniform(size=500) < p).astype(int)
    d = M.brier_decomposition(y, p, n_bins=10)
    assert d["reliability"] - d["resolution"] + d["uncertainty"] == pytest.approx(M.brier(y, p), abs=1e-12)
    assert abs(d["within_bin"]) < 1e-12
    assert d["uncertainty"] == pytest.approx(y.mean() * (1 - y.mean()))


def test_batched_rows_equal_point_estimates():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 24)
    p = rng.uniform(size=24)
    idx = rng.integers(0, 24, (16, 24))
    batched = M.binary_metrics(y[idx], p[idx], n_bins=15)
    for r, i in enumerate(idx):
        single = M.binary_metrics(y[i], p[i], n_bins=15)
        for k, v in single.items():
            assert batched[k][r] == pytest.approx(v, abs=2e-3 if k == "ece_smooth" else 1e-9, nan_ok=True), k


def test_reliability_table():
    t = M.reliability_table(CONF, OUT, n_bins=2)
    np.testing.assert_array_equal(t["count"], [1, 3])
    np.testing.assert_allclose(t["confidence"], [0.1, 2.2 / 3])
    np.testing.assert_allclose(t["observed"], [0.0, 2 / 3])


def _smooth_ece_by_quadrature(f: np.ndarray, y: np.ndarray) -> float:
    """An independent smooth ECE: the formula of metrics.smooth_ece's docstring integrated on a dense grid
    (trapezoid, 10 001 points) and the fixed point smECE_s = s found by brentq."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    t = np.linspace(0.0, 1.0, 10001)
    r = y - f

    def sm(s: float) -> float:
        k = norm.pdf(t[:, None], f[None, :], s) + norm.pdf(t[:, None], -f[None, :], s) + norm.pdf(t[:, None], 2 - f[None, :], s)
        return float(np.trapezoid(np.abs(k @ r) / len(f), t))

    if sm(1e-3) <= 1e-3:
        return sm(1e-3)
    return sm(brentq(lambda s: sm(s) - s, 1e-3, 1.0, xtol=1e-10))


@pytest.mark.parametrize("case", ["spread", "near_one"])
def test_smooth_ece_equals_an_exact_computation_also_near_one(case):
    """Where relplot's grid loses kernel mass (confidences piled up near 1, like a confident VAD's), the value
    here still equals the formula computed independently."""
    rng = np.random.default_rng(11)
    f = rng.uniform(0, 1, 60) if case == "spread" else 1 - rng.exponential(0.01, 60).clip(0, 0.2)
    y = (rng.uniform(size=60) < np.clip(f - 0.05, 0, 1)).astype(float)
    exact = _smooth_ece_by_quadrature(f, y)
    assert M.smooth_ece(f, y) == pytest.approx(exact, abs=2e-4)
    if case == "near_one":  # as the docstring says, relplot's gridded kernel is off the formula here
        relplot = pytest.importorskip("relplot")
        assert abs(float(relplot.smECE(f, y)) - exact) > 1e-3


# ------------------------------------------------------------------------------------ selective prediction
@pytest.mark.parametrize("n,m", [(10, 3), (24, 0), (5, 5), (7, 1), (72, 9)])
def test_aurc_of_a_perfect_ranking_is_its_closed_form(n, m):
    """Every error less confident than every correct answer: risk at coverage k is max(0, k - (n - m)) / k."""
    conf = np.linspace(0.99, 0.51, n)
    correct = np.r_[np.ones(n - m), np.zeros(m)]
    closed = sum(j / (n - m + j) for j in range(1, m + 1)) / n
    assert M.aurc(conf, correct) == pytest.approx(closed, abs=1e-15)
    worst = M.aurc(conf[::-1].copy(), correct)  # the same clips ranked the other way round
    assert worst == pytest.approx(np.mean([min(k, m) / k for k in range(1, n + 1)]), abs=1e-15) and worst >= closed


def test_risk_coverage_with_ties_is_the_mean_over_every_order_of_the_tied_clips():
    import itertools

    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(1, 7))
        conf = rng.choice([0.6, 0.75, 0.9], n)
        correct = rng.integers(0, 2, n).astype(float)
        curves = []
        for perm in itertools.permutations(range(n)):  # the ties broken every possible way
            order = sorted(range(n), key=lambda i, perm=perm: (-conf[i], perm.index(i)))
            curves.append(np.cumsum(1 - correct[order]) / np.arange(1, n + 1))
        np.testing.assert_allclose(M.risk_coverage(conf, correct), np.mean(curves, axis=0), atol=1e-12)
    same = M.risk_coverage(np.full(8, 0.7), np.r_[np.ones(6), np.zeros(2)])
    np.testing.assert_allclose(same, 0.25)  # one run of ties: the error rate at every coverage


def test_aurc_is_batched_like_every_metric_and_in_binary_metrics():
    rng = np.random.default_rng(1)
    conf, correct = rng.uniform(0.5, 1, (6, 20)).round(2), rng.integers(0, 2, (6, 20))
    np.testing.assert_allclose(M.aurc(conf, correct), [M.aurc(conf[i], correct[i]) for i in range(6)])
    # binary_metrics ranks by top-label confidence: p = .9, .2, .3, .6 -> conf .9, .8, .7, .6, right / wrong / right / wrong
    y, p = np.array([1, 1, 0, 0]), np.array([0.9, 0.2, 0.3, 0.6])
    # brute force over the thresholds .9, .8, .7, .6: error rates 0/1, 1/2, 1/3, 2/4; their mean = (4/3) / 4 = 1/3
    assert M.binary_metrics(y, p)["aurc"] == pytest.approx((0 + 1 / 2 + 1 / 3 + 2 / 4) / 4)


def test_nll_from_the_log_odds_is_unclipped_and_equals_the_nll_of_p_where_p_does_not_round():
    """Where ``p = sigmoid(z)`` is far from 0 and 1 both forms are ``-log p`` / ``-log(1 - p)`` (an independent
    formula here); an error at 120 log-odds costs ``120 + log(1 + e^-120)`` nats from the log-odds, but only
    ``-log(1e-12)`` from p, which the clip stops at ``1 - 1e-12``."""
    rng = np.random.default_rng(5)
    z = rng.uniform(-20, 20, 200)
    y = (rng.uniform(size=200) < 0.5).astype(float)
    p = 1.0 / (1.0 + np.exp(-z))
    direct = -np.mean(np.where(y == 1, np.log(p), np.log(1.0 - p)))
    assert M.nll(y, p, log_odds=z) == pytest.approx(direct, rel=1e-9)
    assert M.nll(y, p) == pytest.approx(direct, rel=1e-9)
    assert M.nll([0.0], [1.0], log_odds=[120.0]) == pytest.approx(120.0 + np.log1p(np.exp(-120.0)), rel=1e-15)
    assert M.nll([1.0], [0.0], log_odds=[-120.0]) == pytest.approx(120.0, rel=1e-15)
    assert M.nll([0.0], [1.0]) == pytest.approx(-np.log(1e-12), rel=1e-6)
    batch = M.nll(np.tile(y, (3, 1)), np.tile(p, (3, 1)), log_odds=np.tile(z, (3, 1)))  # (B, n) resamples
    assert batch.shape == (3,) and np.allclose(batch, direct, rtol=1e-9)
    assert np.isnan(M.nll([], [], log_odds=[]))
