"""speech_calibration.calibration: each method recovers known parameters; what temperature can and cannot do."""
from __future__ import annotations

import json

import numpy as np
import pytest

from speech_calibration.calibration import calibrators as C
from speech_calibration.calibration.calibrators import DEFAULT_TEMPERATURE_BOUNDS
from speech_calibration.calibration.fitting import best_threshold, fit
from speech_calibration.calibration.methods import AUTO, FITTED, METHODS
from speech_calibration.errors import UserError
from speech_calibration.stats import metrics as M


def draw(n, rng, scale=3.0):
    """Clips with a true log-odds z and labels drawn from sigmoid(z)."""
    z = rng.normal(0.0, scale, n)
    y = (rng.uniform(size=n) < M.sigmoid(z)).astype(np.int64)
    return z, y


def shifted_threshold(n, rng, groups=4):
    """A model that ranks perfectly (ROC-AUC ~ 1) but puts its boundary in the middle of the SPEECH clips:
    SPEECH logit differences ~ N(0, 0.5) (half answered B), NONSPEECH ~ N(-4, 0.5); logits on a large offset."""
    y = np.tile([1, 0], n // 2)
    z = np.where(y == 1, rng.normal(0.0, 0.5, n), rng.normal(-4.0, 0.5, n))
    a = rng.normal(12.0, 1.0, n)
    return a, a - z, y, np.arange(n) % groups


@pytest.mark.parametrize("true_t", [0.5, 2.0])
def test_temperature_recovers_the_temperature_data_were_drawn_with(true_t):
    rng = np.random.default_rng(0)
    z, y = draw(20000, rng)
    # the model's logits are the true log-odds times T: dividing by T gives the truth back
    cal = fit("temperature", z * true_t + 5.0, np.full(z.size, 5.0), y)
    assert cal.params["temperature"] == pytest.approx(true_t, rel=0.05)
    assert cal.method == "temperature" and cal.threshold == 0.5


def test_platt_and_beta_recover_known_maps():
    rng = np.random.default_rng(1)
    z, y = draw(20000, rng)
    cal = fit("platt", 2.0 * z - 1.5, np.zeros(z.size), y)  # truth: z = 0.5 * z_obs + 0.75
    assert cal.params["slope"] == pytest.approx(0.5, rel=0.05)
    assert cal.params["bias"] == pytest.approx(0.75, abs=0.1)
    beta = fit("beta", z, np.zeros(z.size), y)  # already calibrated: the fitted map is close to the identity
    grid = np.linspace(-6, 6, 101)
    np.testing.assert_allclose(beta.predict_proba(grid, np.zeros(101)), M.sigmoid(grid), atol=0.03)
    # data drawn from a beta map with a = 2, b = 0.5, c = 0.3 give those parameters back
    p = M.sigmoid(z)
    y2 = (rng.uniform(size=z.size) < M.sigmoid(0.3 + 2 * np.log(p) - 0.5 * np.log1p(-p))).astype(np.int64)
    beta2 = fit("beta", z, np.zeros(z.size), y2)
    assert (beta2.params["a"], beta2.params["b"], beta2.params["c"]) == pytest.approx((2, 0.5, 0.3), abs=0.15)


def test_temperature_never_changes_the_decision_accuracy_or_ranking():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 3, 500), rng.normal(0, 3, 500)
    y = rng.integers(0, 2, 500)
    p1 = M.p_speech_from_logits(a, b)
    for t in (0.3, 0.5, 0.9, 1.7, 25.0):  # (far smaller T saturate p to exactly 0.0 / 1.0 in float64: ties)
        pt = C.TemperatureScaling({"temperature": t}).predict_proba(a, b)
        np.testing.assert_array_equal(M.predict(pt), M.predict(p1))
        assert M.accuracy(y, M.predict(pt)) == M.accuracy(y, M.predict(p1))
        assert M.roc_auc(y, pt) == pytest.approx(M.roc_auc(y, p1), abs=1e-12)


def test_shifted_threshold_is_fixed_by_platt_not_by_temperature():
    rng = np.random.default_rng(3)
    a, b, y, groups = shifted_threshold(72, rng)
    ta, tb, ty, _ = shifted_threshold(240, rng)
    p_raw = M.p_speech_from_logits(ta, tb)
    assert M.roc_auc(ty, p_raw) > 0.99
    assert 0.3 < M.class_accuracy(ty, M.predict(p_raw), 1) < 0.7  # SPEECH accuracy around 50%

    temp = fit("temperature", a, b, y)
    acc_temp = M.class_accuracy(ty, temp.predict(ta, tb), 1)
    assert acc_temp == M.class_accuracy(ty, M.predict(p_raw), 1)  # unchanged, whatever T

    platt = fit("platt", a, b, y)
    assert platt.params["bias"] > 1.0  # the bias moved the boundary towards NONSPEECH
    assert M.class_accuracy(ty, platt.predict(ta, tb), 1) > 0.95
    assert M.accuracy(ty, platt.predict(ta, tb)) > 0.95
    assert M.nll(ty, platt.predict_proba(ta, tb)) < M.nll(ty, temp.predict_proba(ta, tb))

    # a dev-tuned threshold fixes the decision as well, reported on top of temperature scaling
    tuned = fit("temperature", a, b, y, tune_threshold=True)
    assert tuned.threshold < 0.5
    assert M.class_accuracy(ty, tuned.predict(ta, tb), 1) > 0.95
    assert tuned.info["threshold"]["dev_balanced_accuracy_tuned"] > tuned.info["threshold"]["dev_balanced_accuracy_at_0.5"]

    # contextual calibration: content-free inputs (silence, noise) that the model also pushes towards B
    cf = (np.array([10.0, 11.0]), np.array([12.0, 13.0]))  # z = -2 on both
    ctx = fit("contextual", a, b, y, content_free=cf)
    assert ctx.params["bias"] == pytest.approx(-2.0, abs=1e-9)
    assert M.class_accuracy(ty, ctx.predict(ta, tb), 1) > 0.95

    # auto: leave-one-group-out picks a boundary-moving method, and says why
    auto = fit("auto", a, b, y, groups=groups, content_free=cf)
    assert auto.method in ("platt", "beta", "isotonic", "contextual")
    assert auto.info["selected_by"] == "auto" and auto.info["cv_scheme"] == "leave-one-group-out"
    assert set(auto.info["cv_nll"]) == {"none", "temperature", "platt", "beta", "isotonic", "contextual"}
    assert auto.info["cv_nll"][auto.method] == min(auto.info["cv_nll"].values())
    assert auto.method in auto.info["reason"]


def test_isotonic_matches_sklearn_and_is_clipped():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(4)
    z, y = draw(300, rng)
    cal = fit("isotonic", z, np.zeros(z.size), y)
    ref = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(z, y).predict(np.linspace(-12, 12, 200))
    got = cal.predict_proba(np.linspace(-12, 12, 200), np.zeros(200))
    np.testing.assert_allclose(got, np.clip(ref, C.ISOTONIC_EPS, 1 - C.ISOTONIC_EPS), atol=1e-12)


def test_none_is_identity_and_round_trip_through_json():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 2, 50), rng.normal(0, 2, 50)
    z, y = draw(200, rng)
    np.testing.assert_allclose(fit("none", a, b, y[:50]).predict_proba(a, b), M.p_speech_from_logits(a, b))
    for method in ("temperature", "platt", "beta", "isotonic"):
        cal = fit(method, z, np.zeros(z.size), y, tune_threshold=True)
        back = C.Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
        np.testing.assert_allclose(back.predict_proba(a, b), cal.predict_proba(a, b))
        assert back.threshold == cal.threshold and back.method == method


def test_registry_holds_one_class_per_fitted_method_and_the_artifact_file_round_trips(tmp_path):
    assert tuple(C.REGISTRY) == FITTED and set(METHODS) == set(FITTED) | {AUTO}
    for method, cls in C.REGISTRY.items():
        assert cls.method == method and issubclass(cls, C.Calibrator)
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 2, 50), rng.normal(0, 2, 50)
    z, y = draw(200, rng)
    cf = (np.array([1.0, 2.0]), np.array([2.0, 2.5]))
    for method in FITTED:
        cal = fit(method, z, np.zeros(z.size), y, content_free=cf, tune_threshold=method != "none")
        assert type(cal) is C.REGISTRY[method]
        path = tmp_path / "models/calibrators" / f"{method}.json"
        cal.save(path)
        back = C.load(path)
        assert type(back) is type(cal) and back.threshold == cal.threshold and back.params == cal.params
        np.testing.assert_array_equal(back.predict_proba(a, b), cal.predict_proba(a, b))
    assert C.TemperatureScaling({"temperature": 2.0}).temperature == 2.0
    assert C.NoCalibration().temperature == 1.0 and np.isnan(C.PlattScaling({"slope": 1, "bias": 0}).temperature)


def test_loading_a_bad_calibrator_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "seed_1.json"
    with pytest.raises(UserError, match="seed_1.json: file not found; run the calibrate stage"):
        C.load(missing)
    missing.write_text("{not json")
    with pytest.raises(UserError, match="seed_1.json: not valid JSON"):
        C.load(missing)
    missing.write_text(json.dumps({"method": "platt", "params": {"slope": 1.0}}))
    with pytest.raises(UserError, match="seed_1.json: calibrator: method 'platt' needs parameter"):
        C.load(missing)
    missing.write_text(json.dumps({"method": "temperature", "params": {"temperature": 1.0}, "threshold": 1.5}))
    with pytest.raises(UserError, match="threshold 1.5 is not in"):
        C.load(missing)


def _corrupt(path, keys, value):
    """Rewrite the JSON at ``path`` with ``value`` at ``keys`` (dict keys and list indices, outermost first)."""
    d = json.loads(path.read_text())
    target = d
    for k in keys[:-1]:
        target = target[k]
    target[keys[-1]] = value
    path.write_text(json.dumps(d))


CORRUPTED = [  # a fitted calibrator of `method`, `keys` set to `value`: what the error says after the file name
    pytest.param("platt", ("params", "slope"), "x", "params.slope is 'x', not a finite number", id="string"),
    pytest.param("platt", ("params", "slope"), float("nan"), "params.slope is nan, not a finite number", id="nan"),
    pytest.param("temperature", ("params", "temperature"), True, "params.temperature is True, not a finite", id="bool"),
    pytest.param("temperature", ("params", "temperature"), 10**400, "params.temperature is 1000", id="huge-int"),
    pytest.param("temperature", ("threshold",), "x", "threshold is 'x', not a finite number", id="threshold-string"),
    pytest.param("temperature", ("params",), [1, 2], "params is [1, 2], not a mapping", id="params-list"),
    pytest.param("temperature", ("params", "T"), 2.0, "params.T is not a parameter of method 'temperature'", id="extra"),
    pytest.param("temperature", ("info",), [1], "info is [1], not a mapping", id="info-list"),
    pytest.param("temperature", ("method",), ["platt"], "method ['platt'] is not one of", id="method-list"),
    pytest.param("temperature", ("params", "temperature"), 0, "params.temperature is 0.0, not > 0", id="temperature-0"),
    pytest.param("temperature", ("params", "temperature"), -2, "params.temperature is -2.0, not > 0", id="temperature-neg"),
    pytest.param("platt", ("params", "slope"), -1.0, "params.slope is -1.0, not in [0, 1000]", id="platt-decreasing"),
    pytest.param("beta", ("params", "b"), -0.5, "params.b is -0.5, not in [0, 1000]", id="beta-decreasing"),
    pytest.param("isotonic", ("params", "x"), 3.0, "params.x is 3.0, not a list of numbers", id="isotonic-not-list"),
    pytest.param("isotonic", ("params", "y", 1), "a", "params.y[1] is 'a', not a finite number", id="isotonic-string"),
    pytest.param("isotonic", ("params", "y"), [0.5], "params.x and params.y hold", id="isotonic-lengths"),
    pytest.param("isotonic", ("params", "x", 1), -99.0, "params.x is not increasing: x[0] is", id="isotonic-x-unsorted"),
    pytest.param("isotonic", ("params", "y", 0), 0.99, "params.y is not non-decreasing: y[0] is 0.99", id="isotonic-y-unsorted"),
    pytest.param("isotonic", ("params", "y", -1), 1.5, "params.y runs from 0.0 to 1.5, not within [0, 1]", id="isotonic-y>1"),
    pytest.param("isotonic", ("params", "eps"), 0.5, "params.eps is 0.5, not in (0, 0.5)", id="isotonic-eps"),
    pytest.param("contextual", ("params", "p_speech_content_free"), 1.0, "params.p_speech_content_free is 1.0, not in",
                 id="contextual-p"),
    pytest.param("contextual", ("params", "bias"), 3.0, "params.bias is 3.0, not logit(p_speech_content_free)",
                 id="contextual-bias"),
]


@pytest.mark.parametrize("method, keys, value, says", CORRUPTED)
def test_a_corrupted_calibrator_file_is_refused_naming_the_file_and_the_key(tmp_path, method, keys, value, says):
    """Review: a hand-edited models/calibrators/seed_42.json gave numpy tracebacks, all-NaN metrics or, with a negative
    temperature, flipped predictions; loading now refuses what the method's fit could not have written."""
    rng = np.random.default_rng(8)
    z, y = draw(200, rng)
    path = tmp_path / "models/calibrators/seed_42.json"
    fit(method, z, np.zeros(z.size), y, content_free=(np.array([1.0, 2.0]), np.array([2.0, 2.5]))).save(path)
    C.load(path)  # as fitted, it loads
    _corrupt(path, keys, value)
    with pytest.raises(UserError) as err:
        C.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: calibrator: {says}"), message
    assert message.endswith("re-run dvc repro calibrate@<seed> (or the stage that wrote the file) to fit it again")


def test_bad_inputs_are_clear_errors():
    rng = np.random.default_rng(6)
    z, y = draw(40, rng)
    with pytest.raises(UserError, match="content-free"):
        fit("contextual", z, np.zeros(40), y)
    with pytest.raises(UserError, match="only SPEECH clips .40.; fitting needs both classes .* none, contextual, batch"):
        fit("temperature", z, np.zeros(40), np.ones(40, dtype=int))
    with pytest.raises(UserError, match="calibration.method=temperature: dev holds no clips; fitting needs both"):
        fit("temperature", np.zeros(0), np.zeros(0), np.zeros(0, dtype=int))
    with pytest.raises(UserError, match="not one of"):
        fit("vector", z, np.zeros(40), y)
    with pytest.raises(UserError, match="finite"):
        fit("platt", np.r_[z[:-1], np.nan], np.zeros(40), y)
    with pytest.raises(UserError, match=r"row 3 has logit_A - logit_B = 1e\+308, beyond \+-1e\+06.*damaged"):
        fit("platt", np.r_[z[:2], 1e308, z[3:]], np.zeros(40), y)
    fit("platt", np.r_[z[:2], 1e6, z[3:]], np.zeros(40), y)  # at the bound: still fitted
    with pytest.raises(UserError, match="0 \\(NONSPEECH\\) or 1"):
        fit("platt", z, np.zeros(40), y * 2)
    with pytest.raises(UserError, match="temperature_bounds"):
        fit("temperature", z, np.zeros(40), y, temperature_bounds=(0.0, 10.0))
    with pytest.raises(UserError, match="needs parameter"):
        C.Calibrator.from_dict({"method": "platt", "params": {"slope": 1.0}})
    with pytest.raises(UserError, match="not one of"):
        C.Calibrator.from_dict({"method": "magic"})
    # label-free methods do not need both classes, unless the threshold is tuned on them
    assert fit("none", z, np.zeros(40), np.ones(40, dtype=int)).method == "none"
    with pytest.raises(UserError, match="calibration.tune_threshold: dev holds only SPEECH clips .40.; tuning the "
                                        "threshold needs both classes"):
        fit("none", z, np.zeros(40), np.ones(40, dtype=int), tune_threshold=True)


def test_the_tuned_threshold_is_never_worse_than_one_answer_for_every_clip():
    """Brute force over every threshold (each distinct probability and beyond): the tuned one reaches the best dev
    balanced accuracy. A ranking worse than chance gets 1/2, one answer for every clip (review: midpoints alone gave
    0.25 here), and a useful ranking its best midpoint."""
    def ba(p, y, thr):
        return M.balanced_accuracy(y, (p >= thr).astype(int))

    rng = np.random.default_rng(5)
    cases = [(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1]))]
    cases += [(rng.random(n), rng.integers(0, 2, n)) for n in rng.integers(3, 30, 200)]
    for p, y in cases:
        if len(set(y)) < 2:
            continue
        every = [ba(p, y, thr) for thr in [*np.unique(p), np.nextafter(p.max(), np.inf)]]
        assert ba(p, y, best_threshold(p, y)) == pytest.approx(max(every), abs=1e-12)
    assert ba(*cases[0], best_threshold(*cases[0])) == 0.5


def test_temperature_at_a_bound_is_reported(caplog):
    # perfectly separated dev: the NLL keeps falling as T -> 0, so the fit hits the lower bound
    z = np.r_[np.linspace(1, 3, 20), -np.linspace(1, 3, 20)]
    y = np.r_[np.ones(20, dtype=int), np.zeros(20, dtype=int)]
    cal = fit("temperature", z, np.zeros(40), y, temperature_bounds=(0.05, 10.0))
    assert cal.params["temperature"] == pytest.approx(0.05, rel=1e-3)
    assert cal.info["at_bound"] is True and cal.info["bound"] == "lower"
    assert "every dev clip is on the right side (the classes are separated)" in caplog.text
    # tiny logits, one clip on the wrong side (review): the optimum lies below the bound, but not by separation
    caplog.clear()
    small = fit("temperature", np.array([.001, .002, .003, -.001, -.002, -.0005]), np.zeros(6), np.array([1, 1, 1, 0, 0, 1]))
    assert small.info["bound"] == "lower" and "separated" not in caplog.text
    assert "though 1 of 6 dev clips are on the wrong side" in caplog.text
    platt = fit("platt", z, np.zeros(40), y)  # Platt's smoothed targets keep the fit finite
    assert np.isfinite(platt.params["slope"]) and platt.params["slope"] < C.PARAM_BOUND


def test_temperature_at_the_upper_bound_names_the_lean_of_the_logits_not_separation(caplog):
    """The NLL keeps falling as T grows (p -> 0.5) exactly when logit_A - logit_B, signed by the true class, averages
    <= 0: logits that rank the wrong way, and logits that rank perfectly but all lean towards SPEECH."""
    ranked_wrong = (np.r_[-np.linspace(1, 3, 20), np.linspace(1, 3, 20)], np.r_[np.ones(20, int), np.zeros(20, int)])
    leaning = (np.r_[np.full(40, 3.0), np.full(60, 2.0)], np.r_[np.ones(40, int), np.zeros(60, int)])
    assert M.roc_auc(leaning[1], leaning[0]) == 1.0  # SPEECH above every NONSPEECH clip, all on SPEECH's side
    for z, y in (ranked_wrong, leaning):
        caplog.clear()
        cal = fit("temperature", z, np.zeros(len(z)), y, temperature_bounds=(0.05, 10.0))
        assert cal.params["temperature"] == pytest.approx(10.0, rel=1e-3)
        assert cal.info["bound"] == "upper"
        assert "no temperature beats p(SPEECH) = 0.5" in caplog.text and "wider bounds cannot help" in caplog.text
        assert "separated" not in caplog.text
    # logits of +-5 that are right 60 % of the time: the optimum is finite, T = 5 / ln 1.5 = 12.3, past a bound of 10
    y = np.r_[np.ones(20, int), np.zeros(20, int)]
    z = 5.0 * np.where(np.arange(40) % 20 < 12, 1.0, -1.0) * np.where(y == 1, 1.0, -1.0)
    caplog.clear()
    assert fit("temperature", z, np.zeros(40), y, temperature_bounds=(0.05, 10.0)).info["bound"] == "upper"
    assert fit("temperature", z, np.zeros(40), y).temperature == pytest.approx(5 / np.log(1.5), rel=1e-5)
    assert "widen the bounds" in caplog.text and "no temperature beats" not in caplog.text


# ------------------------------------------------------------------------------- degenerate fits, in words
def _dev_report(method, a, y, **fit_args):
    from speech_calibration.calibration.dev import dev_summary, fit_notes

    cal = fit(method, a, np.zeros_like(a), y, **fit_args)
    z_after = cal.log_odds(a, np.zeros_like(a))
    p_before, p_after = M.sigmoid(a), M.sigmoid(z_after)
    return fit_notes(cal.method, p_after, y, dev_summary(y, p_before, 15, log_odds=a),
                     dev_summary(y, p_after, 15, log_odds=z_after),
                     fit_args.get("temperature_bounds", DEFAULT_TEMPERATURE_BOUNDS))


def test_a_fit_that_collapses_to_a_constant_is_explained():
    """Logits that rank the classes the wrong way: the best non-decreasing map is a constant (slope 0)."""
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 40)
    a = np.where(y == 1, -1.0, 1.0) + rng.normal(0, 1.0, y.size)  # SPEECH clips get the lower logits
    notes = _dev_report("platt", a, y)
    assert len(notes) >= 1 and "collapsed to a constant p(SPEECH) = 0.500" in notes[0]
    assert "wrong way" in notes[0] and "< 0.5" in notes[0]


def test_a_fit_that_raises_dev_nll_is_explained_and_temperature_only_when_its_bounds_leave_out_1():
    """A model already confident and right on dev: Platt's smoothed targets cost NLL; temperature cannot."""
    y = np.repeat([0, 1], 30)
    a = np.where(y == 1, 12.0, -12.0) + np.linspace(-1, 1, y.size)
    notes = _dev_report("platt", a, y)
    assert any("raised the dev NLL" in n and "smoothed targets" in n for n in notes)
    assert _dev_report("temperature", a, y) == []
    assert any("temperature_bounds leave out T = 1" in n for n in _dev_report("temperature", a, y,
                                                                             temperature_bounds=(2.0, 10.0)))
    assert any("raised the dev NLL" in n and "clips p(SPEECH)" in n for n in _dev_report("isotonic", a, y))


def test_a_temperature_whose_bounds_keep_1_never_raises_the_dev_nll_even_past_the_clip_of_p():
    """Confident dev clips (|log-odds| ~ 20) and one error at 200 log-odds. The fit minimises the unclipped NLL, which
    T ~ 6.8 lowers (1.0 -> 0.2 nats); an NLL of p clipped at 1e-12 caps that error at 27.6 nats and would report a
    rise (0.14 -> 0.19), once blamed on the bounds. The dev NLL is computed from the log-odds, so it falls, and no
    note blames bounds that keep T = 1."""
    from speech_calibration.calibration.dev import dev_summary

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    a = np.where(y == 1, 20.0, -20.0) + rng.normal(0, 1.0, y.size)
    a[0] = 200.0  # a NONSPEECH clip answered SPEECH at 200 log-odds
    cal = fit("temperature", a, np.zeros_like(a), y)
    assert cal.temperature > 2.0
    z = cal.log_odds(a, np.zeros_like(a))
    before, after = dev_summary(y, M.sigmoid(a), 15, log_odds=a), dev_summary(y, M.sigmoid(z), 15, log_odds=z)
    assert after["nll"] < before["nll"]
    assert before["nll"] == pytest.approx(np.mean(np.logaddexp(0, np.where(y == 1, -a, a))), rel=1e-6)
    assert M.nll(y, M.sigmoid(z)) > M.nll(y, M.sigmoid(a))  # what the clipped NLL would have reported
    assert _dev_report("temperature", a, y) == []


def test_unclipped_isotonic_never_raises_the_dev_nll():
    """What the isotonic note says: the pool-adjacent-violators fit, before its clip, is the non-decreasing map of the
    logits with the least NLL, and sigmoid is such a map, so only the clip can raise the dev NLL."""
    from sklearn.isotonic import IsotonicRegression

    for seed in range(5):
        z, y = draw(200, np.random.default_rng(seed))
        z = z * (1 + seed)  # from well calibrated to overconfident
        unclipped = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(z, y).predict(z)
        assert M.nll(y, unclipped, eps=1e-15) <= M.nll(y, M.sigmoid(z), eps=1e-15) + 1e-12


# ------------------------------------------------------------------------------------------ batch calibration
def test_batch_calibration_removes_an_injected_prior_shift():
    """Closed form: a model that says the same log-odds d for every clip has batch prior d, so batch calibration
    removes the shift exactly (p = 1/2). A calibrated model on balanced classes with its log-odds shifted by +2:
    with no labels, batch calibration removes most of the shift (the batch prior is not exactly the shift when
    the model is confident), and NLL and the balance of the two recalls come most of the way back."""
    from speech_calibration.calibration.calibrators import BatchCalibration, batch_prior

    cal = BatchCalibration().fit(np.zeros(10), np.zeros(10))  # the fit learns nothing
    for d in (-3.0, 0.7, 2.0):
        np.testing.assert_allclose(cal.log_odds(np.full(5, d), np.zeros(5)), 0.0, atol=1e-12)
    rng = np.random.default_rng(0)
    z_true = rng.normal(0.0, 1.5, 20000)
    z_true -= batch_prior(z_true)  # the model's own prior is exactly 1/2
    y = (rng.random(z_true.size) < M.sigmoid(z_true)).astype(int)
    shifted = z_true + 2.0
    removed = batch_prior(shifted)
    assert 1.3 < removed < 2.0
    np.testing.assert_allclose(cal.log_odds(shifted, 0 * shifted), shifted - removed)
    p = cal.predict_proba(shifted, np.zeros_like(shifted))
    nll_true, nll_shifted, nll_batch = (float(M.nll(y, q)) for q in (M.sigmoid(z_true), M.sigmoid(shifted), p))
    assert nll_batch - nll_true < 0.15 * (nll_shifted - nll_true)  # 0.556 against 0.529 (true) and 0.865 (shifted)

    def recall_gap(pred):
        return abs(np.mean(pred[y == 0] == 0) - np.mean(pred[y == 1] == 1))

    assert recall_gap(cal.predict(shifted, 0 * shifted)) < 0.5 * recall_gap((shifted >= 0).astype(int))


def test_batch_calibration_reads_the_set_it_is_applied_to_and_saves_like_any_method(tmp_path):
    from speech_calibration.calibration.calibrators import BatchCalibration, batch_prior, load

    dev = np.array([0.5, -1.0, 2.0])
    cal = BatchCalibration().fit(dev, np.zeros(3))
    assert cal.info["dev_prior_log_odds"] == pytest.approx(batch_prior(dev)) and cal.per_batch
    a, b = np.array([3.0, 1.0, -1.0]), np.zeros(3)
    both = cal.log_odds(np.r_[a, a - 5], np.r_[b, b])  # another set, another prior: another map
    assert not np.allclose(both[:3], cal.log_odds(a, b))
    cal.save(tmp_path / "batch.json")
    again = load(tmp_path / "batch.json")
    np.testing.assert_array_equal(again.predict_proba(a, b), cal.predict_proba(a, b))
    assert "batch" in C.REGISTRY and not C.REGISTRY["temperature"].per_batch
