"""The dev-size learning curve (speech_calibration/calibration/learning_curve.py, stages/learning_curve.py).

Synthetic logits frames in the predictions schema: the full-dev point equals the calibrators the calibrate stage
writes, subsets are whole groups with both classes, logits drawn at a known temperature give a curve that
improves and narrows with dev size, a seed without content-free logits stops the stage, pooling counts draws,
and bad params are rejected by key.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from speech_calibration import layout, params
from speech_calibration.calibration import calibrators
from speech_calibration.calibration.dev import calibrate_system
from speech_calibration.calibration.learning_curve import (
    CURVE_METHODS,
    Cell,
    Split,
    _fmt,
    _interval,
    draw_group_subsets,
    pool,
    scores,
    subset_clips,
    summarise,
    system_curve,
)
from speech_calibration.data import schema
from speech_calibration.errors import UserError
from speech_calibration.stats import metrics
from speech_calibration.stats.resampling import MIN_DISTINCT
from stages import learning_curve as stage

BOUNDS = (0.01, 100.0)


def frame(n_groups: int, per_group: int, rng: np.random.Generator, *, temperature: float = 3.0, prefix: str = "dev",
          single_class: bool = False) -> pd.DataFrame:
    """Clips whose true log-odds are ``u``, labels drawn from sigmoid(u), logits ``temperature * u`` (overconfident).

    ``single_class``: even groups hold only SPEECH, odd ones only NONSPEECH (speakers vs sources)."""
    n = n_groups * per_group
    group = np.repeat(np.arange(n_groups), per_group)
    u = rng.normal(0.0, 1.5, n)
    y = (rng.random(n) < metrics.sigmoid(u)).astype(int)
    if single_class:
        y = (group % 2 == 0).astype(int)
        u = np.where(y == 1, 1.0, -1.0) + rng.normal(0.0, 1.0, n)
    z = temperature * u
    return pd.DataFrame({
        schema.CLIP_ID: [f"{prefix}_{i:04d}" for i in range(n)], schema.GROUP_ID: [f"{prefix}_g{g:02d}" for g in group],
        schema.LABEL: np.where(y == 1, schema.SPEECH, schema.NONSPEECH),
        schema.GROUND_TRUTH_TOKEN: np.where(y == 1, "A", "B"), schema.LOGIT_A: z / 2 + 5.0, schema.LOGIT_B: -z / 2 + 5.0})


def write_system(seed: int, rng: np.random.Generator) -> None:
    files = layout.seed_files(seed)
    for split, groups in (("dev", 6), ("test", 4)):
        path = files.predictions(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame(groups, 6, rng, prefix=split).to_csv(path, index=False)
    pd.DataFrame({"input": ["silence", "noise"], schema.LOGIT_A: [9.0, 8.0], schema.LOGIT_B: [8.5, 8.6]}).to_csv(
        files.content_free("dev"), index=False)


# ------------------------------------------------------------------------------------------------------ tests
def test_the_largest_size_equals_the_full_dev_fit_of_the_calibrate_stage(tmp_path, monkeypatch):
    """The stage end to end; its ``all`` row of every method is the test score of the calibrator that
    ``calibrate_system`` (what stages/calibrate.py runs) writes for that method, to the last bit."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("speech_calibration.calibration.dev.plot_reliability", lambda *a, **k: None)  # not under test
    write_system(1, np.random.default_rng(0))
    config = {"seeds": [1], "learning_curve": {"sizes": [12, "all"], "repeats": 10, "seed": 3}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(config))
    stage.main([])
    result = json.loads(layout.LEARNING_CURVE_JSON.read_text())
    for path in (layout.LEARNING_CURVE_TXT, layout.LEARNING_CURVE_CSV, layout.LEARNING_CURVE_PNG):
        assert path.stat().st_size > 0
    assert "temperature" in layout.LEARNING_CURVE_TXT.read_text()
    p = params.load(tmp_path / "params.yaml")
    for seed in p.seeds:
        files = layout.seed_files(seed)
        test = Split.from_frame(schema.read_predictions(files.predictions("test")))
        rows = {r["method"]: r for r in result["per_seed"][files.system]["rows"] if r["size"] == "all"}
        assert set(rows) == set(CURVE_METHODS)
        for method in CURVE_METHODS:
            calibrate_system(files, params.Calibration(method=method, temperature_bounds=list(BOUNDS)), p.evaluate.n_bins)
            cal = calibrators.load(files.calibrator)
            expected = scores(test.y, cal.log_odds(test.logit_a, test.logit_b))
            row = rows[method]
            assert (row["n_repeats"], row["n_dev_mean"], row["test_nll"]["lo"]) == (1, 36.0, None)
            assert row["test_nll"]["mean"] == float(expected["nll"]), method
            assert row["test_ece_smooth"]["mean"] == float(expected["ece_smooth"]), method


def test_a_seed_without_content_free_logits_stops_the_stage_naming_the_file(tmp_path, monkeypatch):
    """The predict stage writes every seed's ``dev_content_free.csv``: one deleted is an error naming it and the
    predict stage, as ``calibration.method=contextual`` is in the calibrate stage, not a curve without contextual.
    The outputs of an earlier run are left as they were."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(4)
    for seed in (1, 2):
        write_system(seed, rng)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"seeds": [1, 2], "learning_curve": {"sizes": [12, "all"]}}))
    stage.main([])
    before = layout.LEARNING_CURVE_JSON.read_text()
    assert {r["method"] for r in json.loads(before)["pooled"]["rows"]} == set(CURVE_METHODS)
    missing = layout.seed_files(2).content_free("dev")
    missing.unlink()
    with pytest.raises(UserError) as err:
        stage.main([])
    message = str(err.value)
    assert message.startswith(f"{missing}: file not found;") and "predict@2" in message and "\n" not in message
    assert layout.LEARNING_CURVE_JSON.read_text() == before
    dev, test = (Split.from_frame(frame(4, 6, rng, prefix=p)) for p in ("dev", "test"))
    with pytest.raises(ValueError, match="contextual"):  # the library function does not drop it silently either
        system_curve(dev, test, sizes=["all"], repeats=10, seed=0, temperature_bounds=BOUNDS)


def test_pooling_puts_the_seeds_repeats_side_by_side_and_counts_draws():
    """What the table's words say: the pooled spread is over every seed's repeats, ``share_lower`` counts draws (a
    subset drawn twice counts twice), ``n_distinct_subsets`` is the most distinct subsets one seed drew."""
    def cell(method, nll, minus, n_distinct):
        nll = np.asarray(nll, dtype=float)
        return Cell(method, 8, np.full(nll.size, 8), np.ones(nll.size, int), {"nll": nll, "ece_smooth": nll / 10},
                    None if minus is None else np.asarray(minus, dtype=float), n_distinct, {"nll": 0.5, "ece_smooth": 0.1})
    seed_a = [cell("temperature", [0.3, 0.3, 0.4], None, 2), cell("platt", [0.2, 0.2, 0.5], [-0.1, -0.1, 0.1], 2)]
    seed_b = [cell("temperature", [0.6, 0.7, 0.8], None, 3), cell("platt", [0.7, 0.8, 0.9], [0.1, 0.1, 0.1], 3)]
    pooled = {c.method: c for c in pool([seed_a, seed_b])}
    assert pooled["temperature"].values["nll"].tolist() == [0.3, 0.3, 0.4, 0.6, 0.7, 0.8]
    row = summarise(pooled["platt"], 0.95)
    assert row["n_repeats"] == 6 and row["n_distinct_subsets"] == 3
    assert row["nll_minus_temperature"]["share_lower"] == pytest.approx(2 / 6)  # one subset drawn twice: 2 of 6 draws


def test_group_wise_drawing_never_splits_a_group_and_keeps_both_classes():
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 9, 15)  # groups of unequal size ...
    groups = np.repeat([f"g{i:02d}" for i in range(15)], sizes)
    y = np.repeat(np.arange(15) % 3 == 0, sizes).astype(int)  # ... each of one class, SPEECH in one group of three
    for size in (2, 5, 20, 40):
        for subset in draw_group_subsets(groups, y, size, 200, np.random.default_rng(size)):
            idx = subset_clips(groups, subset)
            chosen = set(groups[idx])
            assert set(groups[np.isin(groups, list(chosen))]) == chosen
            assert idx.size == np.isin(groups, list(chosen)).sum()  # every clip of every drawn group
            assert set(y[idx]) == {0, 1}
            assert idx.size >= size
            assert len(chosen) == len(subset)  # each group drawn at most once
    with pytest.raises(ValueError, match="fewer than"):
        draw_group_subsets(groups, y, int(sizes.sum()) + 1, 5, np.random.default_rng(0))


def test_a_size_that_cannot_be_drawn_is_reported():
    rng = np.random.default_rng(2)
    dev, test = (Split.from_frame(frame(3, 4, rng, prefix=p)) for p in ("dev", "test"))
    cells, not_drawn = system_curve(dev, test, sizes=[4, 10, 100, "all"], repeats=10, seed=0, temperature_bounds=BOUNDS,
                                    methods=("temperature",))
    assert [c.size for c in cells] == [4, "all"]
    assert "only all 3 dev groups" in not_drawn["10"]
    assert "dev holds 12 clips, fewer than 100" in not_drawn["100"]


def test_at_a_known_temperature_the_curve_improves_and_narrows_with_dev_size():
    """Logits 3x the true log-odds: temperature scaling on all of dev recovers T ~ 3 and beats no calibration on
    test, and its spread over dev subsets shrinks as the subsets grow."""
    rng = np.random.default_rng(3)
    dev = Split.from_frame(frame(80, 4, rng))
    test = Split.from_frame(frame(100, 4, rng, prefix="test"))
    cells, not_drawn = system_curve(dev, test, sizes=[8, 32, 128, "all"], repeats=60, seed=0, temperature_bounds=BOUNDS,
                                    methods=("temperature",))
    assert not_drawn == {}
    by_size = {c.size: c for c in cells}
    full = by_size["all"]
    assert full.values["nll"][0] <= full.uncalibrated["nll"]
    assert full.values["ece_smooth"][0] <= full.uncalibrated["ece_smooth"]
    t = calibrators.TemperatureScaling().fit(dev.logit_a, dev.logit_b, dev.y, temperature_bounds=BOUNDS).temperature
    assert 2.4 < t < 3.8
    width = {s: np.subtract(*np.quantile(by_size[s].values["nll"], [0.975, 0.025])) for s in (8, 32, 128)}
    assert width[8] > width[32] > width[128] > 0
    assert np.mean(by_size[8].values["nll"]) > np.mean(by_size[128].values["nll"]) >= full.values["nll"][0] - 0.01


@pytest.mark.parametrize("section, message", [
    ({"sizes": [8, "most", "all"]}, "learning_curve.sizes[1]: 'most' must be a number of dev clips"),
    ({"sizes": [8, 16]}, "learning_curve.sizes: must end with all"),
    ({"sizes": [32, 16, "all"]}, "learning_curve.sizes: must list the clip counts in increasing order"),
    ({"sizes": [1, "all"]}, "learning_curve.sizes[0]: 1 must be a number of dev clips (an integer >= 2)"),
    ({"repeats": 3}, "learning_curve.repeats: must be at least 10"),
    ({"repeat": 30}, "learning_curve.repeat: unknown key"),
])
def test_a_bad_learning_curve_param_is_rejected_by_key(section, message):
    with pytest.raises(UserError) as err:
        params.parse(params.Params, {"learning_curve": section}, "")
    assert message in str(err.value)


@pytest.mark.parametrize("distinct", [3, MIN_DISTINCT - 1, MIN_DISTINCT])
def test_an_interval_needs_as_many_distinct_values_as_every_other_interval(distinct):
    """The ``all`` row pools one fit per seed (3 values by default) and small sizes have few distinct subsets: below
    ``MIN_DISTINCT`` distinct values there is no interval, but the range and the reason in words."""
    values = np.repeat(np.arange(distinct, dtype=float) / 10, 3)  # each value three times: distinct values, not draws
    block = _interval(values, 0.95)
    assert block["mean"] == pytest.approx((distinct - 1) / 20)
    if distinct < MIN_DISTINCT:
        assert (block["lo"], block["hi"], block["min"], block["max"]) == (None, None, 0.0, (distinct - 1) / 10)
        assert block["reason"] == f"{distinct} distinct values: too few for an interval (needs >= {MIN_DISTINCT})"
        assert _fmt(block) == f"{block['mean']:.3f} (0.000 to {(distinct - 1) / 10:.3f})"
    else:
        assert block["lo"] is not None and block["lo"] < block["mean"] < block["hi"]
        assert _fmt(block).endswith("]")
