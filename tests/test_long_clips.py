"""Clips longer than the model's audio window: each audio.long_clips policy, and the window combination."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from speech_calibration.data import long_clips
from speech_calibration.errors import UserError
from speech_calibration.model.scoring import N_WINDOWS, combine_windows

SR, WINDOW = 16000, 6 * 16000
PLACES = ["a.csv row 1 (c1)", "a.csv row 2 (c2)", "a.csv row 3 (c3)"]


def clips(*seconds):
    return [np.arange(int(s * SR), dtype=np.float32) for s in seconds]


@pytest.mark.parametrize("length", [1, WINDOW - 1, WINDOW, WINDOW + 1, 2 * WINDOW, 2 * WINDOW + 7, 5 * WINDOW - 3])
def test_windows_are_full_length_and_cover_the_clip(length):
    spans = long_clips.windows_of(length, WINDOW)
    assert len(spans) == max(1, -(-length // WINDOW))
    covered = np.zeros(length, bool)
    for a, b in spans:
        covered[a:b] = True
        assert b - a == min(length, WINDOW) and 0 <= a < b <= length
    assert covered.all() and spans[-1][1] == length


def test_error_names_the_first_long_clip_and_counts_them():
    with pytest.raises(UserError, match=r"^a\.csv row 2 \(c2\): clip of 7\.00 s is longer than the model's 6 s audio "
                                        r"window \(2 clips are\).*audio\.long_clips"):
        long_clips.apply_policy(clips(3, 7, 9), PLACES, WINDOW, SR, "error")
    pieces, owner = long_clips.apply_policy(clips(3, 6), PLACES[:2], WINDOW, SR, "error")  # exactly the window fits
    assert [len(x) for x in pieces] == [3 * SR, 6 * SR] and list(owner) == [0, 1]


def test_truncate_keeps_the_first_window_and_says_how_many(caplog):
    audios = clips(3, 7, 13)
    with caplog.at_level(logging.WARNING):
        pieces, owner = long_clips.apply_policy(audios, PLACES, WINDOW, SR, "truncate")
    assert list(owner) == [0, 1, 2]
    assert [len(x) for x in pieces] == [3 * SR, WINDOW, WINDOW]
    np.testing.assert_array_equal(pieces[2], audios[2][:WINDOW])
    assert "2 of 3 clips are longer" in caplog.text and "a.csv row 2 (c2)" in caplog.text


def test_windows_split_long_clips_and_training_keeps_the_first(caplog):
    audios = clips(3, 7, 13)
    pieces, owner = long_clips.apply_policy(audios, PLACES, WINDOW, SR, "windows")
    assert list(owner) == [0, 1, 1, 2, 2, 2]
    np.testing.assert_array_equal(pieces[2], audios[1][SR:])  # the last window ends at the clip's end
    with caplog.at_level(logging.WARNING):
        train_pieces, train_owner = long_clips.apply_policy(audios, PLACES, WINDOW, SR, "windows", training=True)
    assert list(train_owner) == [0, 1, 2] and "a label covers the whole clip" in caplog.text
    assert all(len(x) <= WINDOW for x in train_pieces)


def test_report_applies_the_policy_to_durations_before_any_audio_is_scored(caplog):
    with pytest.raises(UserError, match=r"^a\.csv row 3 \(c3\): clip of 24\.00 s"):
        long_clips.report([1.0, 6.0, 24.0], PLACES, 6.0, "error", "test")
    with caplog.at_level(logging.WARNING):
        assert long_clips.report([1.0, 6.5, 24.0], PLACES, 6.0, "windows", "mine") == 2
    assert "mine: 2 of 3 clips" in caplog.text and "longest 24.00 s" in caplog.text
    assert long_clips.report([1.0, 2.0], PLACES[:2], 6.0, "error", "test") == 0


def test_combine_windows_keeps_the_window_with_the_largest_speech_log_odds():
    owner = np.array([0, 1, 1, 1, 2, 2])
    scores = {"logit_A": np.array([0.5, 1.0, 3.0, 2.0, 0.0, 1.0]),
              "logit_B": np.array([1.0, 2.0, 1.0, 2.5, 0.0, 1.0]),  # log-odds: -.5 | -1, 2, -.5 | 0, 0 (tie: first)
              "logsumexp_vocab": np.arange(6.0)}
    out = combine_windows(scores, owner, 3)
    np.testing.assert_array_equal(out["logit_A"], [0.5, 3.0, 0.0])
    np.testing.assert_array_equal(out["logit_B"], [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(out["logsumexp_vocab"], [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(out[N_WINDOWS], [1, 3, 2])
    rng = np.random.default_rng(0)  # against a loop, on random windows in random order
    owner = rng.integers(0, 20, 200)
    owner[:20] = np.arange(20)
    scores = {"logit_A": rng.normal(size=200), "logit_B": rng.normal(size=200), "logsumexp_vocab": rng.normal(size=200)}
    out = combine_windows(scores, owner, 20)
    for c in range(20):
        k = np.flatnonzero(owner == c)
        best = k[np.argmax(scores["logit_A"][k] - scores["logit_B"][k])]
        assert out["logit_A"][c] == scores["logit_A"][best] and out[N_WINDOWS][c] == len(k)


def test_combine_windows_of_an_empty_set_is_empty():
    empty = np.zeros(0)
    out = combine_windows({"logit_A": empty, "logit_B": empty, "logsumexp_vocab": empty}, np.zeros(0, dtype=int), 0)
    assert {k: v.shape for k, v in out.items()} == {"logit_A": (0,), "logit_B": (0,), "logsumexp_vocab": (0,),
                                                     N_WINDOWS: (0,)}
