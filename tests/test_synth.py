"""data/corpus.py and its parts (espeak, scenes, signal): real eSpeak NG speech, real rendered files.

The central checks: a SPEECH clip really carries the synthesized voice (syllabic 2-8 Hz modulation of
the 100-4000 Hz band that its session's background-only clips lack; a foreground that matches the
eSpeak utterance), the recorded SNR is the SNR in the file, and nothing but the voice tells the
classes apart (level, duration and background are shared).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import SMALL_SYNTHETIC
from scipy.signal import correlate

from speech_calibration import params
from speech_calibration.data import corpus, espeak, scenes, schema, signal
from speech_calibration.data.audio import load_audio
from speech_calibration.errors import UserError

RATE = 16000


def config(raw: dict) -> params.SyntheticData:
    return params.parse(params.SyntheticData, raw, "data.synthetic")


def syllabic_modulation(x: np.ndarray, sr: int = RATE) -> float:
    """Modulation depth of the 100-4000 Hz band's envelope (10 ms frames) at 2-8 Hz, the syllable rate."""
    spectrum = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1.0 / sr)
    spectrum[(f < 100) | (f > 4000)] = 0
    band = np.fft.irfft(spectrum, len(x))
    hop = sr // 100
    env = np.sqrt(np.mean(band[: len(band) // hop * hop].reshape(-1, hop) ** 2, axis=1))
    env = env / env.mean()
    power = np.abs(np.fft.rfft(env - env.mean())) ** 2
    fm = np.fft.rfftfreq(len(env), 0.01)
    return float(np.sqrt(2 * power[(fm >= 2) & (fm <= 8)].sum()) / len(env))


@pytest.fixture(scope="module")
def clean_corpus(tmp_path_factory):
    """A small corpus at 20 dB SNR whose NONSPEECH clips are the background alone (no events)."""
    cfg = config(SMALL_SYNTHETIC | {"snr_db": [20.0], "event_fraction": 0.0, "min_duration_s": 1.5,
                                    "max_duration_s": 2.5})
    root = tmp_path_factory.mktemp("clean")
    frames = corpus.write_corpus(cfg, root, RATE)
    return cfg, root, pd.concat(frames.values(), ignore_index=True)


# ------------------------------------------------------------------------------------- the voice
def test_speech_clips_carry_syllabic_voice_energy_their_sessions_background_lacks(clean_corpus):
    _, root, df = clean_corpus
    df = df.assign(modulation=[syllabic_modulation(load_audio(root / p)) for p in df[schema.AUDIO_PATH]])
    for group, g in df.groupby(schema.GROUP_ID):
        speech = g.loc[g[schema.LABEL] == schema.SPEECH, "modulation"]
        nonspeech = g.loc[g[schema.LABEL] == schema.NONSPEECH, "modulation"]
        assert len(speech) and len(nonspeech), group
        assert speech.min() > 0.4, (group, speech.tolist())
        assert speech.min() > 2 * nonspeech.max(), (group, speech.tolist(), nonspeech.tolist())


# libsndfile (>= 1.1, here 1.2) writes a float sample x as floor(32768 x) and reads an integer q back as q / 32768: an
# error in [0, 1/32768); older versions write round(32767 x): |error| <= (0.5 + |x|) / 32768 <= 1.49 / 32768 for the
# peak-fitted |x| <= 0.99. Either way under 1.5 LSB; a wrong gain, clip or level is hundreds of LSB.
PCM16_TOL = 1.5 / 32768


def assert_file_is_the_mix(root, df, cfg, plan, parts):
    """The WAV written for ``plan`` is ``mix(parts)`` at the clip's level, within 16-bit quantisation."""
    row = df.set_index(schema.CLIP_ID).loc[plan.clip_id]
    written = load_audio(root / row[schema.AUDIO_PATH]).astype(np.float64)
    expected = corpus.mix(parts, cfg.level_dbfs + plan.gain_db).astype(np.float64)
    assert written.shape == expected.shape == (plan.n_samples,)
    assert np.max(np.abs(expected)) <= 0.99  # nothing clipped on the way to the file
    np.testing.assert_allclose(written, expected, rtol=0, atol=PCM16_TOL)


def test_the_csv_records_each_plans_snr(clean_corpus):
    """SPEECH rows carry the SNR their plan drew; other rows NaN (the background alone: no foreground here)."""
    cfg, _, df = clean_corpus
    _, plans = corpus.plan_corpus(cfg, RATE)
    recorded = df.set_index(schema.CLIP_ID)[schema.SNR_DB]
    assert sorted(recorded.index) == sorted(p.clip_id for p in plans)
    for plan in plans:
        if plan.label == schema.SPEECH:
            assert recorded[plan.clip_id] == plan.snr_db == 20.0, plan.clip_id
        else:
            assert np.isnan(recorded[plan.clip_id]), plan.clip_id


def test_speech_foreground_is_the_espeak_utterance_at_the_recorded_snr(clean_corpus):
    cfg, root, df = clean_corpus
    sessions, plans = corpus.plan_corpus(cfg, RATE)
    plan = next(p for p in plans if p.label == schema.SPEECH)
    session = sessions[plan.split][plan.group]
    request = espeak.SpeechRequest(session.voice, plan.text, session.rate_wpm, session.pitch)
    _, (voice,) = espeak.synthesize_batch([request], seed=cfg.seed, sample_rate=RATE)
    parts = corpus.render_parts(session, plan, cfg, RATE, voice)
    fg, bg, region = parts.foreground, parts.background, parts.region
    snr = 10 * np.log10(np.mean(fg[region] ** 2) / np.mean(bg**2))
    assert snr == pytest.approx(plan.snr_db, abs=1e-6)
    # ... that SNR is the one the CSV records for the clip, and these parts are what the file holds
    assert df.set_index(schema.CLIP_ID).loc[plan.clip_id, schema.SNR_DB] == plan.snr_db
    assert_file_is_the_mix(root, df, cfg, plan, parts)
    # the dry segment is a window of the utterance: the (reverberant) foreground correlates with it
    dry = fg[region] / np.linalg.norm(fg[region])
    utterance = corpus.trim_silence(voice)
    energy = np.concatenate([[0.0], np.cumsum(utterance.astype(np.float64) ** 2)])
    window_energy = energy[len(dry):] - energy[: len(energy) - len(dry)]
    corr = correlate(utterance, dry, mode="valid", method="fft") / np.sqrt(window_energy + 1e-12)
    assert corr.max() > 0.5, corr.max()


def test_nonspeech_without_event_is_background_alone(clean_corpus):
    cfg, root, df = clean_corpus
    sessions, plans = corpus.plan_corpus(cfg, RATE)
    plan = next(p for p in plans if p.label == schema.NONSPEECH)
    parts = corpus.render_parts(sessions[plan.split][plan.group], plan, cfg, RATE)
    assert parts.foreground is None and np.isnan(plan.snr_db)
    assert np.sqrt(np.mean(parts.background**2)) == pytest.approx(1.0, rel=1e-6)
    assert_file_is_the_mix(root, df, cfg, plan, parts)


# -------------------------------------------------------------------------------- no label leaks
def test_level_and_duration_do_not_tell_the_label(clean_corpus):
    cfg, root, df = clean_corpus
    levels = np.array([20 * np.log10(np.sqrt(np.mean(load_audio(root / p) ** 2))) for p in df[schema.AUDIO_PATH]])
    lo, hi = cfg.level_dbfs - cfg.level_jitter_db - 0.05, cfg.level_dbfs + cfg.level_jitter_db + 0.05
    assert np.all((levels >= lo) & (levels <= hi)), levels
    is_speech = (df[schema.LABEL] == schema.SPEECH).to_numpy()
    d = df[schema.DURATION_S].to_numpy()
    assert d.min() >= cfg.min_duration_s and d.max() <= cfg.max_duration_s
    for values in (levels, d):  # the two classes overlap: neither feature separates them
        assert values[is_speech].min() < values[~is_speech].max()
        assert values[~is_speech].min() < values[is_speech].max()


def test_both_classes_share_each_sessions_background(clean_corpus):
    _, _, df = clean_corpus
    background = df[schema.SOURCE].str.extract(r"synthetic:(\w+)")[0]
    for _, g in df.assign(background=background).groupby(schema.GROUP_ID):
        assert g["background"].nunique() == 1 and g[schema.LABEL].nunique() == 2


# ------------------------------------------------------------------------------------------- plan
def test_plan_matches_the_configured_sizes_and_keeps_test_unseen():
    cfg = params.SyntheticData()  # the defaults: 64/6, 72/4, 24/3
    sessions, plans = corpus.plan_corpus(cfg, RATE)
    df = pd.DataFrame([{"split": p.split, "group": sessions[p.split][p.group].group_id, "label": p.label,
                        "n": p.n_samples} for p in plans])
    for split, size in cfg.sizes.items():
        part = df[df.split == split]
        assert len(part) == size.clips and part.group.nunique() == size.groups
        assert (part.label == schema.SPEECH).sum() == round(size.clips * cfg.speech_fraction)
        assert (part.groupby("group").label.nunique() == 2).all()  # both classes in every group
    assert len({p.clip_id for p in plans}) == len(plans)
    train = sessions["train"]
    for session in sessions["test"]:
        assert session.voice not in {s.voice for s in train}
        assert session.background not in {s.background for s in train}
    assert df.n.between(cfg.min_duration_s * RATE - 1, cfg.max_duration_s * RATE + 1).all()


def test_plan_is_deterministic_and_seeded():
    a, b, c = (list(map(repr, corpus.plan_corpus(params.SyntheticData(seed=seed), RATE)[1])) for seed in (1, 1, 99))
    assert a == b and a != c  # (compared as text: NaN != NaN)


def test_speech_counts_spread_the_total_and_keep_both_classes():
    assert corpus._speech_counts([11, 11, 11, 11, 10, 10], 0.5) == [6, 6, 5, 5, 5, 5]
    assert corpus._speech_counts([2, 2, 2], 0.9) == [1, 1, 1]
    assert sum(corpus._speech_counts([18, 18, 18, 18], 0.25)) == 18


def test_sentence_is_varied_english_and_seeded():
    rng = np.random.default_rng(0)
    texts = [corpus.sentence(rng, 12) for _ in range(20)]
    assert len(set(texts)) == 20
    assert all(len(t.split()) >= 12 and t[0].isupper() and t.endswith(".") for t in texts)
    assert corpus.sentence(np.random.default_rng(5), 8) == corpus.sentence(np.random.default_rng(5), 8)


# ------------------------------------------------------------------------------------ components
@pytest.mark.parametrize("family", sorted(scenes.BACKGROUNDS))
def test_every_background_renders_finite_unit_rms_and_seeded(family):
    scene = scenes.BACKGROUNDS[family].scene(np.random.default_rng(1))
    a = scenes.render_background(family, scene, np.random.default_rng(2), 8000, RATE)
    b = scenes.render_background(family, scene, np.random.default_rng(2), 8000, RATE)
    assert a.shape == (8000,) and np.isfinite(a).all()
    assert np.sqrt(np.mean(a.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-4)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("event", sorted(scenes.EVENTS))
def test_every_event_renders_finite_and_audible(event):
    x = scenes.EVENTS[event](np.random.default_rng(3), 12000, RATE)
    assert x.shape == (12000,) and np.isfinite(x).all() and np.abs(x).max() > 0.01


def test_room_response_decays_60_db_over_rt60():
    rt60 = 0.5
    h = signal.room_response(np.random.default_rng(0), rt60, drr_db=5.0, sr=RATE)
    assert h[0] == 1.0 and len(h) == int(rt60 * RATE)
    tail = h[1:].astype(np.float64) ** 2
    assert 10 * np.log10(1.0 / tail.sum()) == pytest.approx(5.0, abs=1e-3)  # direct-to-reverberant ratio
    early, late = tail[: RATE // 50].mean(), tail[-RATE // 50:].mean()  # first and last 20 ms
    assert 10 * np.log10(early / late) == pytest.approx(60 * (1 - 0.04 / rt60), abs=3.0)
    np.testing.assert_array_equal(signal.room_response(np.random.default_rng(0), 0.01, 5.0, RATE), [1.0])


def test_scale_to_snr_closed_form():
    rng = np.random.default_rng(0)
    bg, fg = rng.standard_normal(1000), np.zeros(1000)
    fg[200:400] = rng.standard_normal(200) * 7
    for snr in (-5.0, 0.0, 12.5):
        scaled = signal.scale_to_snr(bg, fg, slice(200, 400), snr)
        assert 10 * np.log10(np.mean(scaled[200:400] ** 2) / np.mean(bg**2)) == pytest.approx(snr)


def test_snr_gain_closed_form_on_either_side():
    p_signal, p_noise = 3.0, 0.5
    for snr in (-5.0, 0.0, 12.5):
        g = signal.snr_gain(p_signal, p_noise, snr, scale="signal")
        assert 10 * np.log10(g**2 * p_signal / p_noise) == pytest.approx(snr)
        g = signal.snr_gain(p_signal, p_noise, snr, scale="noise")
        assert 10 * np.log10(p_signal / (g**2 * p_noise)) == pytest.approx(snr)
    with pytest.raises(ValueError, match="scale must be 'signal' or 'noise'"):
        signal.snr_gain(p_signal, p_noise, 0.0, scale="both")


def test_mix_normalises_level_and_never_clips():
    rng = np.random.default_rng(0)
    x = corpus.mix(corpus.ClipParts(rng.standard_normal(4000)), -30.0)
    assert 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))) == pytest.approx(-30.0, abs=1e-3)
    spiky = np.zeros(4000)
    spiky[100] = 1.0
    assert np.abs(corpus.mix(corpus.ClipParts(spiky), -10.0)).max() <= 0.99 + 1e-6


# ---------------------------------------------------------------------------------------- eSpeak
def test_espeak_batch_is_deterministic_and_reports_bad_voices():
    requests = [espeak.SpeechRequest("en-us+f5", "The quick brown fox jumps over the lazy dog.", 175, 50),
                espeak.SpeechRequest("en+m3", "A second sentence, spoken by another voice.", 160, 40)]
    errors, a = espeak.synthesize_batch(requests, seed=1, sample_rate=RATE, check_voices=["en-us+f5", "en+m3"])
    _, b = espeak.synthesize_batch(requests, seed=1, sample_rate=RATE)
    assert errors == {} and len(a) == 2
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)  # breathy variants draw noise: same seed, same samples
        assert 1.0 < len(x) / RATE < 5.0 and syllabic_modulation(x) > 0.4
    errors, audio = espeak.synthesize_batch(requests, seed=1, sample_rate=RATE,
                                           check_voices=["xx-nowhere", "en-us+nosuchvariant", "en-us+m1"])
    assert set(errors) == {"xx-nowhere", "en-us+nosuchvariant"} and audio == []
    assert "no language voice 'xx-nowhere'" in errors["xx-nowhere"]
    assert "no voice variant 'nosuchvariant'" in errors["en-us+nosuchvariant"]


# ----------------------------------------------------------------------------------- params checks
@pytest.mark.parametrize("table, value, key", [
    ("voices", "en-us+m1", "data.synthetic.voices.test[0]"),
    ("backgrounds", "white", "data.synthetic.backgrounds.test[0]"),
])
def test_test_split_must_be_unseen_in_train(small_synthetic, table, value, key):
    small_synthetic[table]["test"] = [value]
    with pytest.raises(UserError) as err:
        config(small_synthetic)
    assert str(err.value).startswith(f"{key}: '{value}' is also in {table}.train")


def test_unknown_background_and_event_names(small_synthetic):
    small_synthetic["backgrounds"]["dev"] = ["rain", "thunder"]
    with pytest.raises(UserError, match=r"^data\.synthetic\.backgrounds\.dev\[1\]: unknown background 'thunder'"):
        corpus.check_names(config(small_synthetic))
    small_synthetic["backgrounds"]["dev"] = ["rain"]
    small_synthetic["events"] = ["tone", "sneeze"]
    with pytest.raises(UserError, match=r"^data\.synthetic\.events\[1\]: unknown event 'sneeze'"):
        corpus.check_names(config(small_synthetic))
