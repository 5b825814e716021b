"""The seed ensemble (``speech_calibration.model.ensemble``, stage ``ensemble``): mean log-odds of the seeds' answers.

Closed forms: k identical seeds give back that seed exactly; two seeds give the mean of their log-odds, and the
answer of the sign of that mean. The stage's whole run (and the ensemble's row in every table) is part of the
shrunk study that ``dvc repro`` builds (``tests/test_dvc_workflows.py``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from speech_calibration import layout
from speech_calibration.data import schema
from speech_calibration.errors import UserError
from speech_calibration.model.ensemble import ensemble_content_free, ensemble_predictions, write_ensemble
from speech_calibration.stats.metrics import p_speech_from_logits


def predictions(a: np.ndarray, b: np.ndarray, ids=None) -> pd.DataFrame:
    n = len(a)
    y = np.arange(n) % 2 == 0
    return pd.DataFrame({
        schema.CLIP_ID: ids if ids is not None else [f"c{i}" for i in range(n)],
        schema.GROUP_ID: [f"g{i % 3}" for i in range(n)],
        schema.LABEL: np.where(y, schema.SPEECH, schema.NONSPEECH),
        schema.GROUND_TRUTH_TOKEN: np.where(y, "A", "B"),
        schema.LOGIT_A: a, schema.LOGIT_B: b, schema.P_SPEECH: p_speech_from_logits(a, b),
        schema.PREDICTED_TOKEN: np.where(a >= b, "A", "B"), schema.LOGSUMEXP_VOCAB: np.maximum(a, b) + 1.0,
        schema.SNR_DB: np.linspace(0, 20, n)})


def test_identical_seeds_give_back_the_seed():
    rng = np.random.default_rng(0)
    seed = predictions(rng.normal(size=40), rng.normal(size=40))
    ens = ensemble_predictions({Path(f"s{k}.csv"): seed.copy() for k in range(3)})
    pd.testing.assert_frame_equal(ens, seed)


def test_two_seeds_give_the_mean_log_odds_and_its_answer():
    rng = np.random.default_rng(1)
    a1, b1, a2, b2 = (rng.normal(scale=3, size=50) for _ in range(4))
    ens = ensemble_predictions({Path("s1.csv"): predictions(a1, b1), Path("s2.csv"): predictions(a2, b2)})
    log_odds = ens[schema.LOGIT_A] - ens[schema.LOGIT_B]
    np.testing.assert_allclose(log_odds, ((a1 - b1) + (a2 - b2)) / 2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ens[schema.P_SPEECH], 1 / (1 + np.exp(-log_odds)), rtol=1e-12)
    assert (ens[schema.PREDICTED_TOKEN] == np.where(log_odds >= 0, "A", "B")).all()
    assert ((a1 - b1 >= 0) != (a2 - b2 >= 0)).any()  # the seeds disagree somewhere, so the answer was really chosen
    assert (ens[schema.SNR_DB] == predictions(a1, b1)[schema.SNR_DB]).all()  # metadata carried


def test_seeds_that_scored_different_clips_are_refused():
    a = np.zeros(4)
    with pytest.raises(UserError, match=r"^s2\.csv: its clips differ from s1\.csv"):
        ensemble_predictions({Path("s1.csv"): predictions(a, a), Path("s2.csv"): predictions(a, a, ids=list("wxyz"))})


def test_content_free_logits_are_averaged():
    free = [pd.DataFrame({"input": ["silence", "noise"], "logit_A": [1.0, 2.0], "logit_B": [0.0, 4.0]}),
            pd.DataFrame({"input": ["silence", "noise"], "logit_A": [3.0, 0.0], "logit_B": [2.0, 0.0]})]
    out = ensemble_content_free({Path("a"): free[0], Path("b"): free[1]})
    assert out["logit_A"].tolist() == [2.0, 1.0] and out["logit_B"].tolist() == [1.0, 2.0]


def test_write_ensemble_writes_every_set_where_the_layout_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(2)
    seeds = [1, 2]
    sets = [(layout.predictions_dir, "dev"), (layout.predictions_dir, "test"),
            (layout.conditions_predictions_dir, layout.CONDITIONS_SET)]
    for s in seeds:
        for folder_of, name in sets:
            d = folder_of(layout.seed_system(s))
            d.mkdir(parents=True, exist_ok=True)
            predictions(rng.normal(size=6), rng.normal(size=6)).to_csv(d / f"{name}.csv", index=False)
            pd.DataFrame({"input": ["silence", "noise"], "logit_A": rng.normal(size=2),
                          "logit_B": rng.normal(size=2)}).to_csv(d / f"{name}_content_free.csv", index=False)
    assert write_ensemble(seeds) == {"dev": 6, "test": 6, layout.CONDITIONS_SET: 6}
    for folder_of, name in sets:
        ens = schema.read_predictions(folder_of(layout.ENSEMBLE) / f"{name}.csv")
        members = [pd.read_csv(folder_of(layout.seed_system(s)) / f"{name}.csv") for s in seeds]
        np.testing.assert_allclose(ens[schema.LOGIT_A], (members[0][schema.LOGIT_A] + members[1][schema.LOGIT_A]) / 2,
                                   rtol=1e-8)
        assert (folder_of(layout.ENSEMBLE) / f"{name}_content_free.csv").is_file()
    os.remove(layout.predictions_dir(layout.seed_system(2)) / "test.csv")
    with pytest.raises(UserError, match=r"predictions/seeds/seed_2/test\.csv: file not found"):
        write_ensemble(seeds)
