"""Condition variants: each test clip rendered under acoustic conditions, one dimension at a time.

For every clip of ``data/processed/grouped_split/test_metadata.csv`` this writes the clean reference
and one variant per level of each dimension of ``params.yaml: conditions`` (see :mod:`speech_calibration.data.degrade`
for what each transform does):

- ``duration``: the loudest ``durations_ms`` of the clip in the middle of a ``container_s`` container
  padded with white noise at ``container_noise_dbfs`` (a level longer than the clip is skipped, never
  padded or looped, so every duration variant is exactly its length);
- ``snr``: white noise at ``snr_db``, measured over the clip's signal segment only;
- ``reverb``: a seeded synthetic room response of T60 ``t60_s``;
- ``band``: Butterworth ``telephone`` band-pass, ``lowpass`` or ``highpass``.

Every SNR, reverb and band variant is brought back to its clean clip's RMS (then, like every variant, scaled down
only if a peak passes 0.99), so a louder or quieter clip never tells the model which condition it is.

Outputs ``data/processed/conditions/`` (written whole, atomically): ``audio/<clip_id>.wav`` and
``conditions_metadata.csv`` in the data contract of :mod:`speech_calibration.data.schema` plus ``base_clip_id``,
``condition`` and ``level`` (a number for duration in ms, SNR in dB, T60 in s; a filter name for band;
``clean`` for the reference). Variants are deterministic: each draws from a generator seeded by
``conditions.seed``, the clip id and the condition.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from speech_calibration import layout
from speech_calibration import params as params_mod
from speech_calibration.data import degrade, schema, short_clips
from speech_calibration.data.audio import load_audio, write_audio
from speech_calibration.data.schema import (
    BASE_CLIP_ID,
    CLEAN,
    CONDITION,
    DIMENSIONS,
    LEVEL,
    level_text,
)
from speech_calibration.data.signal import at_rms_of, fit_peak
from speech_calibration.errors import UserError
from speech_calibration.fileio import atomic_dir, write_csv
from speech_calibration.parallel import map_forked
from speech_calibration.stats.resampling import keyed_rng

log = logging.getLogger(__name__)



def variant_id(base: str, condition: str, level: str) -> str:
    unit = {"duration": "ms", "snr": "dB", "reverb": "s"}.get(condition, "")
    return f"{base}__{CLEAN}" if condition == CLEAN else f"{base}__{condition}_{level}{unit}"


def render_clip(x: np.ndarray, clip_id: str, cfg: params_mod.Conditions, rate: int) -> list[tuple[str, str, np.ndarray]]:
    """Every variant of one clip as ``(condition, level, samples)``; the clean reference first.

    Left out: a duration longer than the clip, and every SNR of a clip of digital silence (no signal power, so no
    noise level gives an SNR)."""
    out: list[tuple[str, str, np.ndarray]] = [(CLEAN, CLEAN, np.asarray(x, dtype=np.float64))]
    for ms in cfg.durations_ms:
        level = level_text(ms)
        if degrade.n_samples(ms, rate) > len(x):
            continue
        y, _, _ = degrade.duration_variant(x, rate, ms, cfg.container_s, cfg.container_noise_dbfs,
                                           keyed_rng(cfg.seed, clip_id, "duration", level))
        out.append(("duration", level, fit_peak(y)))
    segment = degrade.signal_segment(x, rate)
    silent = not np.any(x[segment])
    for snr in [] if silent else cfg.snr_db:
        level = level_text(snr)
        y = degrade.add_noise_at_snr(x, snr, keyed_rng(cfg.seed, clip_id, "snr", level), segment)
        out.append(("snr", level, fit_peak(at_rms_of(y, x))))  # at the clean level: louder is not noisier
    for t60 in cfg.t60_s:
        level = level_text(t60)
        rir = degrade.synthetic_rir(t60, rate, keyed_rng(cfg.seed, clip_id, "reverb", level))
        out.append(("reverb", level, fit_peak(degrade.reverberate(x, rir))))
    for kind in cfg.band:
        sos = degrade.band_filter_sos(kind, rate, cfg.band_low_hz, cfg.band_high_hz, cfg.filter_order)
        out.append(("band", kind, fit_peak(at_rms_of(degrade.band_limit(x, sos), x))))
    return out


def check_config(p: params_mod.Params, params_path: str, window: float) -> None:
    """Reject conditions that the model could not hear whole (``window``: its audio window in seconds)."""
    cfg, rate = p.conditions, p.data.sample_rate
    if cfg.durations_ms and 1000 * cfg.container_s < short_clips.MIN_MS:
        raise UserError(f"{params_path}: conditions.container_s: {cfg.container_s:g} s is shorter than "
                        f"{short_clips.MIN_MS:g} ms, the shortest clip that gives the model an audio token; lengthen it")
    if cfg.durations_ms and cfg.container_s > window:
        raise UserError(f"{params_path}: conditions.container_s: {cfg.container_s} s is longer than the model's "
                        f"{window:g} s audio window ({p.model.name_or_path}); shorten the container")
    if cfg.band and not cfg.band_high_hz < rate / 2:
        raise UserError(f"{params_path}: conditions.band_high_hz: {cfg.band_high_hz:g} Hz must be below the Nyquist "
                        f"frequency {rate / 2:g} Hz of data.sample_rate")


def render(metadata: pd.DataFrame, cfg: params_mod.Conditions, rate: int, out_dir: Path, window_s: float) -> pd.DataFrame:
    """Write every variant of every clip under ``out_dir/audio`` and return the metadata rows (clips on the CPUs'
    forked workers: each clip's generators are keyed by the clip, so the files are the same on any number)."""

    def render_one(rec: dict) -> tuple[list[dict], int, bool]:
        """One clip's rows, its duration variants left out, and whether it is digital silence with no SNR variant."""
        x = load_audio(rec["audio_file"], rate).astype(np.float64)
        if len(x) > window_s * rate:
            raise UserError(f"{rec['audio_file']}: clip of {len(x) / rate:.2f} s is longer than the model's "
                            f"{window_s:g} s audio window; the variants would be cut (drop the clip or use a model "
                            "with a longer window)")
        variants = render_clip(x, rec[schema.CLIP_ID], cfg, rate)
        rows = []
        for condition, level, y in variants:
            cid = variant_id(rec[schema.CLIP_ID], condition, level)
            rel = Path("audio") / f"{cid}.wav"
            write_audio(out_dir / rel, y.astype(np.float32), rate)
            row = {schema.CLIP_ID: cid, schema.AUDIO_PATH: rel.as_posix(), schema.LABEL: rec[schema.LABEL],
                   schema.GROUP_ID: rec[schema.GROUP_ID], schema.DURATION_S: len(y) / rate,
                   BASE_CLIP_ID: rec[schema.CLIP_ID], CONDITION: condition, LEVEL: level}
            if schema.SOURCE in rec and isinstance(rec[schema.SOURCE], str):
                row[schema.SOURCE] = rec[schema.SOURCE]
            rows.append(row)
        skipped = len(cfg.durations_ms) - sum(c == "duration" for c, _, _ in variants)
        silent = bool(cfg.snr_db) and not any(c == "snr" for c, _, _ in variants)
        return rows, skipped, silent

    done = map_forked(render_one, metadata.to_dict("records"), desc="render conditions", unit="clip")
    rows = [row for clip_rows, _, _ in done for row in clip_rows]
    skipped, silent = sum(d[1] for d in done), sum(d[2] for d in done)
    if skipped:
        log.warning("%d duration variant(s) skipped: the clip is shorter than the requested segment", skipped)
    if silent:
        log.warning("%d clip(s) of digital silence have no SNR variants: with no signal power, no noise level gives "
                    "an SNR", silent)
    return pd.DataFrame(rows)


def write_variants(metadata: pd.DataFrame, p: params_mod.Params, out_dir: Path, window_s: float) -> pd.DataFrame:
    """Render every variant into ``out_dir`` (``audio/`` and ``conditions_metadata.csv``), swapped in whole."""
    with atomic_dir(out_dir) as tmp:
        frame = render(metadata, p.conditions, p.data.sample_rate, tmp, window_s)
        csv = layout.conditions_csv(root=tmp)
        write_csv(csv, frame)
        schema.read_metadata(csv)  # the contract holds for what we wrote
    counts = frame[CONDITION].value_counts()
    log.info("%d variants of %d clips -> %s (%s)", len(frame), len(metadata), layout.conditions_csv(root=out_dir),
             ", ".join(f"{c}: {counts.get(c, 0)}" for c in (CLEAN, *DIMENSIONS)))
    return frame
