"""Invariants that hold for any input, checked on inputs that hypothesis draws (and shrinks when one fails).

- top-label ECE <= sqrt(Brier), for equal-width and equal-mass bins alike: per bin, |mean(conf - correct)|
  <= sqrt(mean((conf - correct)^2)) (Jensen), then the weighted mean of the square roots <= the square root
  of the weighted mean (Jensen again); and for two classes (conf - correct)^2 = (p - y)^2 for every clip;
- every calibrator, fitted on any dev data, gives probabilities in [0, 1] for any finite logits;
- temperature scaling never changes a calibrator's decision: sign(z / T) = sign(z) for T > 0, on the float32
  logits a model emits and the temperatures ``calibration.temperature_bounds`` allows;
- nor the ROC-AUC that the metrics report, however large the logits: it ranks the log-odds, not the
  probabilities, which round to exactly 0 or 1 past about ±37;
- the paired difference of a system with itself is exactly 0, with a zero-width interval and no verdict;
- a cluster bootstrap with one clip per group (the groups named anyhow, in any order) gives exactly the clip
  bootstrap's replicates with the same seed, for every metric.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from speech_calibration.calibration import calibrators
from speech_calibration.calibration.fitting import fit
from speech_calibration.calibration.methods import FITTED
from speech_calibration.report.evaluation import evaluate_arrays
from speech_calibration.stats import metrics
from speech_calibration.stats.resampling import (
    bootstrap_replicates,
    cluster_bootstrap_replicates,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
probabilities = st.floats(0.0, 1.0, allow_nan=False)
logits32 = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def forecasts(draw, min_size=1, max_size=60):
    n = draw(st.integers(min_size, max_size))
    p = draw(arrays(np.float64, n, elements=probabilities))
    y = draw(arrays(np.int64, n, elements=st.integers(0, 1)))
    return p, y


@SETTINGS
@given(forecasts(), st.integers(2, 30))
def test_top_label_ece_never_exceeds_root_brier(data, n_bins):
    p, y = data
    conf, correct = metrics.top_label(y, p)
    bound = np.sqrt(metrics.brier(y, p)) + 1e-12
    assert metrics.ece(conf, correct, n_bins) <= bound
    assert metrics.ece_equal_mass(conf, correct, n_bins) <= bound


@st.composite
def dev_sets(draw):
    """Dev logits and labels with both classes, as the fit needs them."""
    n = draw(st.integers(4, 40))
    a = draw(arrays(np.float64, n, elements=st.floats(-30, 30, allow_nan=False)))
    y = draw(arrays(np.int64, n, elements=st.integers(0, 1)))
    y[:2] = [0, 1]
    return a, y


@SETTINGS
@given(dev_sets(), arrays(np.float64, st.integers(1, 50), elements=logits32), st.sampled_from(FITTED))
def test_every_calibrated_probability_is_in_the_unit_interval(dev, logits, method):
    a, y = dev
    content_free = (np.array([0.3, -0.2]), np.array([0.0, 0.1]))
    cal = fit(method, a, np.zeros_like(a), y, content_free=content_free)
    p = cal.predict_proba(logits, np.zeros_like(logits))
    assert np.all((p >= 0.0) & (p <= 1.0))


@SETTINGS
@given(arrays(np.float32, st.integers(1, 50), elements=logits32), arrays(np.float32, 1, elements=logits32),
       st.floats(0.01, 100.0))
def test_temperature_scaling_never_changes_a_decision(logit_a, logit_b, temperature):
    a, b = logit_a.astype(np.float64), np.broadcast_to(logit_b.astype(np.float64), logit_a.shape)
    scaled = calibrators.TemperatureScaling({"temperature": temperature})
    assert np.array_equal(scaled.predict(a, b), calibrators.NoCalibration().predict(a, b))
    assert np.array_equal(scaled.predict(a, b), (a >= b).astype(np.int64))


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, st.integers(2, 40), elements=logits32), st.floats(0.01, 100.0), st.randoms(use_true_random=False))
def test_temperature_scaling_never_changes_the_reported_roc_auc(logits, temperature, random):
    from sklearn.metrics import roc_auc_score

    z = logits.astype(np.float64)
    y = np.array([random.randint(0, 1) for _ in z])
    y[:2] = [0, 1]
    scaled = calibrators.TemperatureScaling({"temperature": temperature})
    zero = np.zeros_like(z)
    result = evaluate_arrays(y, metrics.sigmoid(z), scaled.predict_proba(z, zero), n_bins=10, n_bootstrap=20,
                             log_odds=(z, scaled.log_odds(z, zero)))
    assert result["uncalibrated"]["roc_auc"] == result["calibrated"]["roc_auc"] == round(roc_auc_score(y, z), 6)


def test_the_roc_auc_invariant_is_not_vacuous():
    """Logits past the probabilities' rounding to 0 or 1: ranked by probability, ties appear that a temperature breaks."""
    z, y = np.array([39.0, 45.0, 50.0, 60.0, -39.0, -45.0]), np.array([0, 1, 1, 1, 0, 0])
    assert metrics.sigmoid(39.0) == 1.0 and metrics.sigmoid(-39.0) == 0.0
    by_probability = [metrics.binary_metrics(y, metrics.sigmoid(z / t))["roc_auc"] for t in (1.0, 3.0)]
    assert by_probability[0] < by_probability[1] == 1.0
    assert [metrics.binary_metrics(y, metrics.sigmoid(z / t), score=z / t)["roc_auc"] for t in (1.0, 3.0)] == [1.0, 1.0]


# means over the clips, NaN only for zero clips: defined on every resample of >= 1 clip, whatever the classes
ALWAYS_DEFINED = ("ece", "brier", "nll", "accuracy")


@settings(max_examples=25, deadline=None)
@given(forecasts(min_size=6, max_size=40))
def test_the_paired_difference_of_a_system_with_itself_is_zero(data):
    p, y = data
    result = evaluate_arrays(y, p, p.copy(), n_bins=10, n_bootstrap=100, seed=0)
    checked = set()
    for key, d in result["delta_ci"].items():
        if d["verdict"] == "undefined" and key not in ALWAYS_DEFINED:  # undefined on every resample (one class only)
            continue
        assert (d["delta"], d["lo"], d["hi"]) == (0.0, 0.0, 0.0), key
        assert d["verdict"] == "no clear difference", key
        checked.add(key)
    assert checked >= set(ALWAYS_DEFINED), checked  # never an example that checks nothing


@settings(max_examples=50, deadline=None)
@given(forecasts(min_size=1, max_size=40), st.integers(0, 2 ** 32 - 1), st.randoms(use_true_random=False))
def test_a_cluster_bootstrap_with_one_clip_per_group_is_the_clip_bootstrap(data, seed, random):
    p, y = data
    names = [f"speaker-{i}" for i in range(len(y))]
    random.shuffle(names)  # group labels in no particular order: numbering follows the clips, not the names

    def stat(idx):
        return metrics.binary_metrics(y[idx], p[idx], n_bins=10, decomposition=False)

    clip = bootstrap_replicates(stat, len(y), n_boot=60, seed=seed)
    group = cluster_bootstrap_replicates(stat, np.array(names), n_boot=60, seed=seed)
    assert clip.keys() == group.keys()
    for key in clip:
        np.testing.assert_array_equal(group[key], clip[key], err_msg=key)


def test_the_decision_invariant_is_not_vacuous():
    """A logit difference too small for a float64 probability near 0.5: the decision still follows its sign."""
    a, b = np.array([-1e-30, 1e-30]), np.zeros(2)
    assert list(calibrators.TemperatureScaling({"temperature": 0.01}).predict(a, b)) == [0, 1]
    assert metrics.sigmoid(-1e-30) == 0.5  # a decision taken from the rounded probability would say SPEECH
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(metrics.predict(metrics.sigmoid(a)), [0, 1])
