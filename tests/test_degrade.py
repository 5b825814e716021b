"""Each robustness variant is what it claims: exact duration cut, SNR, band-limiting, T60; the render stage end to end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import signal

import stages.conditions_render as conditions_render
from speech_calibration import cli
from speech_calibration import params as params_mod
from speech_calibration.data import degrade, schema
from speech_calibration.data.audio import load_audio, write_audio
from speech_calibration.data.signal import rms
from speech_calibration.data.variants import render_clip, variant_id
from speech_calibration.errors import UserError
from speech_calibration.parallel import WORKERS_ENV
from speech_calibration.stats.resampling import keyed_rng
from tests.model_helpers import tiny_model_dir, write_params

SR = 16000
ROOT = Path(__file__).resolve().parents[1]


def speech_like(seconds: float = 1.5, seed: int = 0, silence_s: float = 0.2) -> np.ndarray:
    """Amplitude-modulated harmonics (syllable-rate envelope) between stretches of silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    x = 0.1 * voiced * envelope + 0.002 * rng.standard_normal(len(t))
    pad = np.zeros(int(silence_s * SR))
    return np.concatenate([pad, x, pad])


# ---------------------------------------------------------------------------------------- duration
@pytest.mark.parametrize("ms", [20, 40, 60, 80, 100, 200, 500, 1000])
def test_duration_cut_is_exact_length_and_the_clip_s_loudest(ms):
    """A word at 0.2-0.5 s of a 1.3 s clip that is quiet elsewhere (its centre, 0.65 s, a pause): the cut holds the
    word, not the pause a centre cut would take."""
    rng = np.random.default_rng(1)
    x = 0.001 * rng.standard_normal(int(SR * 1.3))
    word = slice(int(0.2 * SR), int(0.5 * SR))
    x[word] += 0.1 * np.sin(2 * np.pi * 150 * np.arange(word.stop - word.start) / SR)
    out, start, n = degrade.duration_variant(x, SR, ms, 2.0, -60.0, np.random.default_rng(0))
    assert n == round(ms * SR / 1000) and len(out) == 2 * SR
    segment = out[start:start + n]
    energy = [float(np.sum(x[s:s + n] ** 2)) for s in range(len(x) - n + 1)]
    first = int(np.argmax(energy))
    assert np.array_equal(segment, x[first:first + n])  # the loudest window of the clip, sample for sample ...
    if n <= word.stop - word.start:
        assert word.start <= first and first + n <= word.stop  # ... inside the word
    assert abs((start + (start + n - 1)) / 2 - (len(out) - 1) / 2) <= 1  # and in the container's middle
    pad = np.concatenate([out[:start], out[start + n:]])
    assert abs(20 * np.log10(rms(pad)) - (-60.0)) < 0.5  # low-level noise around it


def test_loudest_cut_of_equal_windows_is_the_centre_and_a_longer_cut_is_refused():
    assert degrade.loudest_cut(np.zeros(100), 10)[1] == 45  # digital silence: every window alike, the centre
    assert degrade.loudest_cut(np.ones(101), 11)[1] == 45
    bursts = np.zeros(100)
    bursts[[10, 94]] = 1.0  # windows holding one burst start at 1..10 or 85..90: the start nearest 45 is 10
    assert degrade.loudest_cut(bursts, 10)[1] == 10


def test_every_band_and_reverb_variant_is_at_its_clean_clip_s_level():
    x = speech_like(seed=4)
    for condition, level, y in render_clip(x, "clip", params_mod.Conditions(), SR):
        if condition in ("band", "reverb"):
            assert rms(y) == pytest.approx(rms(x), rel=1e-9), (condition, level)


def test_duration_longer_than_clip_is_rejected_and_skipped():
    with pytest.raises(ValueError):
        degrade.loudest_cut(np.zeros(100), 101)
    cfg = params_mod.Conditions()
    variants = render_clip(speech_like(0.05, silence_s=0.0), "short", cfg, SR)  # 50 ms clip
    durations = [lv for c, lv, _ in variants if c == "duration"]
    assert durations == ["20", "40"]


# --------------------------------------------------------------------------------------------- SNR
# The SNR is exact by construction (the noise gain is solved for it), so only float64 rounding separates the
# measurement from the target: each power is a sum of <= 24000 squares (relative error <= n eps = 24000 * 1.1e-16
# = 2.7e-12 even for naive summation), y - x loses at most eps |y| per sample (at +40 dB, 100 eps relative to the
# noise), and dB = 4.34 ln(ratio): under 3e-11 dB in all. 1e-9 dB leaves margin; observed errors are ~1e-14 dB.
SNR_TOL_DB = 1e-9


def snr_db(signal_part: np.ndarray, noise_part: np.ndarray, seg: slice) -> float:
    """10 log10(mean(signal^2) / mean(noise^2)) over ``seg``, written out here (not the library's ``power``)."""
    return float(10 * np.log10(np.mean(signal_part[seg] ** 2) / np.mean(noise_part[seg] ** 2)))


@pytest.mark.parametrize("snr", [-20, -10, -5, 0, 5, 10, 20, 40])
def test_snr_measured_over_signal_segment(snr):
    x = speech_like()
    seg = degrade.signal_segment(x, SR)
    assert seg.start >= int(0.19 * SR) and seg.stop <= len(x) - int(0.19 * SR)  # silence is not signal
    y = degrade.add_noise_at_snr(x, snr, np.random.default_rng(snr + 100), seg)
    assert snr_db(x, y - x, seg) == pytest.approx(snr, abs=SNR_TOL_DB)
    assert snr_db(x, y - x, seg) == pytest.approx(degrade.measure_snr(x, y, seg), abs=SNR_TOL_DB)  # the helper agrees
    # the noise covers the whole clip, silence included
    assert rms(y[:seg.start] - x[:seg.start]) > 0


def test_rendered_snr_variants_hold_their_snr_exactly():
    """Through the stage's own render (peak fitting included) the SNR still holds, at every level.

    A rendered variant is ``c (x + g n)``: ``n`` the white noise drawn from the variant's keyed generator, ``c`` the
    common scale of peak fitting. Regressing ``y`` on ``x`` and ``n`` recovers ``a = c`` and ``b = c g`` exactly
    (residual at rounding level), and the SNR ``10 log10(a^2 P_x / (b^2 P_n))`` over the signal segment does not
    depend on ``c``."""
    x = speech_like(seed=3)
    seg = degrade.signal_segment(x, SR)
    cfg = params_mod.Conditions()
    levels = []
    for condition, level, y in render_clip(x, "clip", cfg, SR):
        if condition != "snr":
            continue
        n = keyed_rng(cfg.seed, "clip", "snr", level).standard_normal(len(x))
        (a, b), *_ = np.linalg.lstsq(np.stack([x, n], axis=1), y, rcond=None)
        assert np.max(np.abs(y - a * x - b * n)) < 1e-12, level  # nothing but the clip and its noise
        assert a > 0 and np.max(np.abs(y)) <= 0.99 + 1e-12, level
        if np.max(np.abs(y)) < 0.99 - 1e-12:  # at the clean clip's level, so louder never means noisier ...
            assert rms(y) == pytest.approx(rms(x), rel=1e-9), level
        else:  # ... unless that level would pass the peak limit: then scaled down to it
            assert rms(y) < rms(x), level
        assert snr_db(a * x, b * n, seg) == pytest.approx(float(level), abs=SNR_TOL_DB), level
        levels.append(float(level))
    assert levels == cfg.snr_db


# ---------------------------------------------------------------------------------- band-limiting
def tone_gain_db(sos, f, seconds=2.0):
    t = np.arange(int(seconds * SR)) / SR
    tone = np.sin(2 * np.pi * f * t)
    out = degrade.band_limit(tone, sos)
    steady = slice(len(t) // 2, None)  # after the filter's transient
    return 20 * np.log10(rms(out[steady]) / rms(tone[steady]))


@pytest.mark.parametrize("kind,f", [("telephone", 100), ("telephone", 6000), ("telephone", 1000),
                                    ("lowpass", 6000), ("lowpass", 1000), ("highpass", 100), ("highpass", 1000)])
def test_band_filter_attenuation_matches_design(kind, f):
    sos = degrade.band_filter_sos(kind, SR, 300, 3400, 4)
    _, h = signal.sosfreqz(sos, worN=[f], fs=SR)
    expected = 20 * np.log10(abs(h[0]))  # single causal pass: |H|, not |H|^2
    assert abs(tone_gain_db(sos, f) - expected) < 0.1
    if f in (100, 6000):
        assert expected < -30  # out of band: strongly attenuated
    else:
        assert abs(expected) < 0.5  # in band: passed


def test_lowpass_is_a_butterworth_of_order_4():
    """Closed form of a bilinear (pre-warped) Butterworth: |H|^2 = 1 / (1 + (tan(pi f/fs) / tan(pi fc/fs))^(2N))."""
    sos = degrade.band_filter_sos("lowpass", SR, 300, 3400, 4)
    for f in (1000, 3400, 5000, 6000):
        ratio = np.tan(np.pi * f / SR) / np.tan(np.pi * 3400 / SR)
        expected = -10 * np.log10(1 + ratio ** 8)
        assert abs(tone_gain_db(sos, f) - expected) < 0.1


def test_band_filter_rejects_impossible_bands():
    with pytest.raises(ValueError):
        degrade.band_filter_sos("telephone", 8000, 300, 4000, 4)
    with pytest.raises(ValueError):
        degrade.band_filter_sos("notch", SR, 300, 3400, 4)


# --------------------------------------------------------------------------------------- reverb
@pytest.mark.parametrize("t60", [0.3, 1.0, 2.5])
def test_schroeder_t60_of_a_pure_exponential_decay_is_exact(t60):
    """h = 10^(-3 t / T60): the energy h^2 falls 60 dB in T60, and its backward sum is a geometric series whose
    level in dB is a line of slope -60 / T60 (cut at 3 T60, 180 dB down, the truncation is ~1e-14 dB at -35 dB)."""
    t = np.arange(int(3 * t60 * SR)) / SR
    assert degrade.schroeder_t60(10 ** (-3 * t / t60), SR) == pytest.approx(t60, rel=1e-9)
    # a faster decay is measured as such: the estimate follows the slope, it is not the 0.3/1.0/2.5 s it was built for
    assert degrade.schroeder_t60(10 ** (-3 * t / (t60 / 2)), SR) == pytest.approx(t60 / 2, rel=1e-9)


@pytest.mark.parametrize("t60", [0.3, 1.0, 2.5])
def test_synthetic_rir_t60_by_schroeder(t60):
    rir = degrade.synthetic_rir(t60, SR, np.random.default_rng(7))
    assert abs(degrade.schroeder_t60(rir, SR) - t60) / t60 < 0.10
    assert abs(np.sum(rir ** 2) - 1.0) < 1e-9


def test_reverberate_is_convolution_with_the_rir():
    rir = degrade.synthetic_rir(0.3, SR, np.random.default_rng(0))
    impulse = np.zeros(SR)
    impulse[0] = 1.0
    out = degrade.reverberate(impulse, rir)
    n = len(rir)
    assert np.allclose(out[:n] / out[0], rir / rir[0])
    assert abs(rms(out) - rms(impulse)) < 1e-12  # same RMS as the input


# -------------------------------------------------------------------------------------- stage
def test_render_is_deterministic_and_seeded():
    x = speech_like()
    cfg = params_mod.Conditions()
    a, b = render_clip(x, "c1", cfg, SR), render_clip(x, "c1", cfg, SR)
    assert [(c, lv) for c, lv, _ in a] == [(c, lv) for c, lv, _ in b]
    assert all(np.array_equal(ya, yb) for (_, _, ya), (_, _, yb) in zip(a, b))
    other = render_clip(x, "c2", cfg, SR)
    snr_a = next(y for c, lv, y in a if c == "snr")
    snr_o = next(y for c, lv, y in other if c == "snr")
    assert not np.array_equal(snr_a, snr_o)  # another clip draws other noise
    assert len(a) == variants_per_clip(cfg) and all(np.max(np.abs(y)) <= 0.99 + 1e-12 for _, _, y in a)
    levels = {"clean": ["clean"], "duration": cfg.durations_ms, "snr": cfg.snr_db, "reverb": cfg.t60_s, "band": cfg.band}
    assert [c for c, _, _ in a] == [c for c, values in levels.items() for _ in values]  # one per level, in order


def variants_per_clip(cfg: params_mod.Conditions) -> int:
    """The clean reference and one variant per level of each dimension (for a clip long enough for every duration)."""
    return 1 + len(cfg.durations_ms) + len(cfg.snr_db) + len(cfg.t60_s) + len(cfg.band)


def make_test_split(folder: Path) -> Path:
    rows = []
    for i in range(4):
        speech = i % 2 == 0
        x = speech_like(1.2, seed=i) if speech else 0.05 * np.random.default_rng(i).standard_normal(int(1.5 * SR))
        write_audio(folder / f"clip{i}.wav", x, SR)
        rows.append({"clip_id": f"clip{i}", "audio_path": f"clip{i}.wav", "label": "SPEECH" if speech else "NONSPEECH",
                     "group_id": f"g{i // 2}", "duration_s": len(x) / SR})
    path = folder / "test_metadata.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def params_with_model(tmp_path_factory) -> Path:
    """The repo's params.yaml pointed at a built tiny model: the stage reads its audio window from the model."""
    root = tmp_path_factory.mktemp("render")
    return write_params(root / "params.yaml", tiny_model_dir(str(tmp_path_factory.getbasetemp())))


def run_stage(capsys, *args) -> tuple[int, str]:
    """Run the conditions_render stage in this process as its command line does; (exit code, stderr)."""
    try:
        cli.run(conditions_render.main, list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def test_render_stage_writes_valid_metadata(tmp_path, params_with_model, capsys):
    src = make_test_split(tmp_path)
    out = tmp_path / "conditions"
    assert run_stage(capsys, "--input", str(src), "--out-dir", str(out), "--params", str(params_with_model))[0] == 0
    meta = schema.read_metadata(out / "conditions_metadata.csv")  # the data contract, audio included
    assert {"base_clip_id", "condition", "level"} <= set(meta.columns)
    assert len(meta) == 4 * variants_per_clip(params_mod.load(params_with_model).conditions)
    assert set(meta["condition"]) == {"clean", "duration", "snr", "reverb", "band"}
    assert meta.loc[meta["condition"] == "duration", "duration_s"].eq(2.0).all()
    row = meta[meta["clip_id"] == variant_id("clip0", "duration", "100")].iloc[0]
    audio = load_audio(row["audio_file"])
    assert len(audio) == 2 * SR
    assert (meta.groupby("base_clip_id")["label"].nunique() == 1).all()


def test_the_rendered_variants_are_the_same_on_one_process_or_two(tmp_path, params_with_model, capsys, monkeypatch):
    """The clips are rendered on forked workers; each clip's generators are keyed by the clip, so every file is the
    same byte for byte whether one process renders them all or two share them."""
    import hashlib

    src = make_test_split(tmp_path)
    digests = []
    for workers in ("1", "2"):
        monkeypatch.setenv(WORKERS_ENV, workers)
        out = tmp_path / f"conditions_{workers}"
        assert run_stage(capsys, "--input", str(src), "--out-dir", str(out), "--params", str(params_with_model))[0] == 0
        digests.append({p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted(out.rglob("*")) if p.is_file()})
    per_clip = variants_per_clip(params_mod.load(params_with_model).conditions)
    assert len(digests[0]) == 4 * per_clip + 1 and digests[0] == digests[1]  # every variant and the metadata CSV


def test_a_clip_of_digital_silence_gets_every_variant_but_the_snr_ones(tmp_path, params_with_model, capsys, caplog):
    """No signal power, so no noise level gives an SNR: its SNR variants are left out, with a warning, and the rest of
    its variants and every other clip's are rendered as usual."""
    src = make_test_split(tmp_path)
    write_audio(tmp_path / "silent.wav", np.zeros(int(1.5 * SR)), SR)
    meta = pd.read_csv(src)
    meta.loc[len(meta)] = {"clip_id": "silent", "audio_path": "silent.wav", "label": "NONSPEECH", "group_id": "g1",
                           "duration_s": 1.5}
    meta.to_csv(src, index=False)
    out = tmp_path / "conditions"
    assert run_stage(capsys, "--input", str(src), "--out-dir", str(out), "--params", str(params_with_model))[0] == 0
    rendered = schema.read_metadata(out / "conditions_metadata.csv")
    silent = rendered[rendered["base_clip_id"] == "silent"]
    assert set(silent["condition"]) == {"clean", "duration", "reverb", "band"}
    cfg = params_mod.load(params_with_model).conditions
    assert len(silent) == variants_per_clip(cfg) - len(cfg.snr_db)
    assert len(rendered) == 4 * variants_per_clip(cfg) + len(silent)
    assert "1 clip(s) of digital silence have no SNR variants" in caplog.text


def test_cli_missing_input_is_one_line_exit_2(tmp_path, params_with_model, capsys):
    code, err = run_stage(capsys, "--params", str(params_with_model), "--input", str(tmp_path / "nope.csv"),
                          "--out-dir", str(tmp_path / "o"))
    assert code == 2
    assert err.strip().count("\n") == 0 and "nope.csv" in err and "not found" in err


def _render_with_container(tmp_path, params_with_model, capsys, container_s: float, durations_ms: list[int]):
    """conditions_render on a test split with ``conditions.container_s`` and ``durations_ms`` replaced: (exit status,
    stderr, the params file)."""
    raw = yaml.safe_load(params_with_model.read_text())
    raw["conditions"]["container_s"] = container_s
    raw["conditions"]["durations_ms"] = durations_ms
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    code, err = run_stage(capsys, "--params", str(params), "--input", str(make_test_split(tmp_path)),
                          "--out-dir", str(tmp_path / "o"))
    return code, err, params


def test_cli_container_longer_than_window_is_rejected(tmp_path, params_with_model, capsys):
    """The window comes from the model's own feature extractor (6 s for the tiny model), not from a path."""
    code, err, _ = _render_with_container(tmp_path, params_with_model, capsys, 8.0, [20, 40])
    assert code == 2 and err.startswith("error: ")
    assert "conditions.container_s" in err and "6 s audio window" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "o").exists()


def test_cli_container_too_short_for_an_audio_token_is_rejected(tmp_path, params_with_model, capsys):
    """A 10-ms container (its durations inside it) would give every duration variant no audio token at all."""
    code, err, params = _render_with_container(tmp_path, params_with_model, capsys, 0.01, [5, 10])
    assert code == 2 and err.strip() == (f"error: {params}: conditions.container_s: 0.01 s is shorter than 20.0625 ms, "
                                         "the shortest clip that gives the model an audio token; lengthen it")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("key,value,message", [
    ("band", ["telephone", "notch"], "conditions.band[1]"),
    ("durations_ms", [20, 3000], "conditions.durations_ms"),
    ("t60_s", [0.0], "conditions.t60_s"),
    ("n_bootstrap", 10, "conditions.n_bootstrap"),
    ("snr_db", [0, 0], "conditions.snr_db"),
    ("typo_key", 1, "conditions.typo_key"),
])
def test_params_conditions_rejects_bad_values(tmp_path, key, value, message):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["conditions"][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        params_mod.load(path)
