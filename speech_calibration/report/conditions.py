"""The conditions report: robustness of every system under acoustic conditions, calibrated and not.

Reads the variants' metadata (``data/processed/conditions/conditions_metadata.csv``, written by
``conditions_render``) and every system's scores of them, all produced by the same predict code:

- ``predictions/conditions/seeds/seed_<seed>/conditions.csv`` for each seed of ``params.yaml: seeds`` (fine-tuned),
- ``predictions/conditions/zeroshot/conditions.csv`` (the base model, no adapter),
- ``predictions/baselines_conditions/<detector>/conditions.csv`` for each VAD baseline, where present.

Each system's DEV-fitted calibrator (``models/calibrators/seed_<seed>.json``; the zero-shot model's and
the baselines' under ``models/calibrators/references/``) is applied unchanged, so the calibrated
columns measure calibration under distribution shift (batch calibration, which reads the set it is
applied to, is applied to each condition and level as its own set). A baseline that the references stage did not
calibrate is reported uncalibrated only.

Writes:

- ``metrics/conditions.json``: headline figures per system (BA_clip, BA_conditions, the sensitivity
  thresholds DT75, DT90 (ms), SNR75, SNR90 (dB) and the calibration thresholds DT_ECE10 (ms), SNR_ECE10 (dB)
  with their intervals; the fine-tuned entry averages its seeds (durations geometrically, on the log axis they
  are found on), lists their texts seed by seed, and holds no mean where a seed's threshold is censored);
- ``metrics/conditions/per_condition.csv``: per system, condition and level (and ``all``), uncalibrated
  and calibrated: n, accuracy, balanced accuracy, recall of each class, ECE (top-label, equal-width
  ``evaluate.n_bins`` bins) and NLL; the number of test groups (``n_clusters``) and intervals of balanced
  accuracy and ECE from a bootstrap over groups (or, in ``*_no_interval``, why there is none);
- ``metrics/conditions/thresholds.csv``: per system and seed, the *sensitivity* thresholds ``DT75``,
  ``DT90``, ``SNR75``, ``SNR90``: the level where the fitted balanced accuracy reaches 75 % / 90 %
  (measure ``balanced_accuracy``), and the *hit-rate* thresholds ``DT50_hit``, ``DT75_hit``, ``DT90_hit``,
  ``SNR50_hit``, ``SNR75_hit``: where P(answer SPEECH | speech clip) reaches 50 / 75 / 90 % (measure
  ``p_speech_given_speech``; a system biased towards SPEECH reaches them at any level). Intervals from a
  bootstrap over groups; a threshold outside the tested range is censored (``< 20 ms``; ``not reached
  by 1000 ms``), never extrapolated; and the *calibration* thresholds ``DT_ECE10``, ``SNR_ECE10`` (measure
  ``smooth_ece``; the number is ``conditions.ece_threshold`` in percent): coming down from the mildest level
  (longest duration, highest SNR), the first level where the smooth ECE of the dev-fitted calibrator's output
  reaches ``conditions.ece_threshold``, linear between the two levels around it on the axis of the accuracy
  thresholds (log10 duration, dB); censored in words (``never exceeds 0.10 within 20 ms to 1000 ms``,
  ``already above 0.10 at 1000 ms``), its interval from the same bootstrap over groups (a bound ``< 20 ms``:
  some resamples never exceed it; ``> 1000 ms``: some are already above at the mildest level), and
  ``chance_levels``: at how many levels (of ``n_levels``) forecasts calibrated by construction exceed the criterion
  by chance (:func:`calibrated_null`), which the text then says; at every level, the headline
  (``metrics/conditions.json``) gives the threshold no number, only its text; ``falls_below_again``: where a curve
  that reached its criterion loses it again within the range (a curve that falls with the level). Every threshold
  interval needs ``MIN_CLUSTERS`` groups (in each stratum where they are drawn by class); where there is none, ``lo`` and
  ``hi`` are empty and ``ci_text`` (and ``no_interval``) says why;
- ``metrics/conditions/calibration_under_shift.csv``: calibration under shift, per system (each seed), dimension
  and level: top-label smooth ECE, NLL and balanced accuracy of the dev-fitted calibrator's output (answered at
  its threshold; a system without a calibrator: its own output, ``calibration`` = uncalibrated), each with an
  interval from a bootstrap over groups that resamples all levels of a dimension together, and
  ``smooth_ece_calibrated_null``: the ``evaluate.ci`` quantile of the smooth ECE the same forecasts reach when each
  outcome is drawn from its own forecast (what chance alone gives on that many clips);
- ``metrics/conditions/psychometric_fits.csv``: intercept and slope of every fitted curve;
- ``metrics/conditions/paired_tests.csv``: every pair of systems, over all variants and per dimension,
  with the test group as the unit: ``n_clusters`` groups (of ``n_variants`` variants), the clustered
  exact McNemar test (:mod:`speech_calibration.stats.paired_tests`) with Holm correction across the whole
  table, the naive McNemar p-value that treats variants as independent (for contrast), and the accuracy
  difference with the expanded percentile interval of a bootstrap over the groups (each comparison's own, not
  adjusted like ``p_holm``), or, where
  the groups are too few for one, empty bounds and the reason in ``diff_interval``;
- ``plots/conditions/*.csv`` (``dvc plots`` data, one series per system) and ``*.png``; among them
  ``calibration_<dimension>.csv`` (the curves above with their bands; the seeds averaged, their band the
  interval of the seed mean, resample by resample) and ``calibration_under_shift.png`` (smooth ECE and
  balanced accuracy per level of every dimension).

Definitions. A system *answers SPEECH* when ``logit_A >= logit_B`` (its own answer); psychometric curves
and paired tests use that answer. ``BA_clip`` is the balanced accuracy over all variants (clean
included); ``BA_conditions`` is the mean over the four dimensions of each dimension's mean per-level
balanced accuracy. Psychometric curves (:mod:`speech_calibration.stats.psychometric`): ``P(answer
SPEECH)`` against log10 duration and against SNR, fitted by a logistic model, for speech clips (hit
rate) and non-speech clips (false alarms); the balanced accuracy ``(hit + 1 - false alarm) / 2`` of the
two fitted curves gives the sensitivity thresholds. A system that gives one answer at every level
holds it at 1/2, so its sensitivity thresholds are "not reached". Every interval and paired test resamples the
test groups (speakers, recordings: the unit a result generalises over), each with all the variants of all its base
clips; the sensitivity thresholds draw a group once for its speech and its non-speech clips
(:func:`~speech_calibration.stats.psychometric.fit_sensitivity`). With fewer than ``MIN_CLUSTERS`` groups there is
no interval, and the tables say so in words.
"""
from __future__ import annotations

import functools
import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from speech_calibration import layout
from speech_calibration import params as params_mod
from speech_calibration.calibration import calibrators
from speech_calibration.data import schema
from speech_calibration.data.schema import (
    BASE_CLIP_ID,
    CLEAN,
    CONDITION,
    DIMENSIONS,
    LEVEL,
    level_text,
)
from speech_calibration.errors import UserError
from speech_calibration.fileio import atomic_path, write_csv, write_json
from speech_calibration.layout import SystemFiles
from speech_calibration.parallel import map_forked
from speech_calibration.stats import metrics, paired_tests, psychometric
from speech_calibration.stats.resampling import (
    MIN_CLUSTERS,
    basic_interval,
    class_strata,
    cluster_bootstrap_replicates,
    cluster_interval,
    clusters_per_stratum,
    keyed_rng,
)

log = logging.getLogger(__name__)

ALL = "all"
# the unit every interval and paired test resamples: the test group (speaker or recording) of a base clip, with all the
# variants of all its clips, so that an interval speaks of new speakers and recordings, not new clips of these ones
CLUSTER, UNIT = schema.GROUP_ID, "groups"
UNCALIBRATED, CALIBRATED = "uncalibrated", "calibrated"
FINETUNED = "finetuned"
# psychometric dimensions: the level as a number on the fitted axis, and how a threshold is written
HIT_CRITERIA = {"duration": (0.5, 0.75, 0.9), "snr": (0.5, 0.75)}  # P(answer SPEECH | speech clip)
BA_CRITERIA = (0.75, 0.9)  # balanced accuracy: the sensitivity thresholds
HIT, BALANCED = "p_speech_given_speech", "balanced_accuracy"  # what a threshold measures
LEVEL_UNITS = {"duration": "ms", "snr": "dB", "reverb": "s", "band": ""}


def fmt_ms(x: float) -> str:
    v = 10.0 ** x
    return f"{v:.0f} ms" if v >= 10 else f"{v:.1f} ms"


def fmt_db(x: float) -> str:
    return f"{x:.1f} dB"


@dataclass(frozen=True)
class Axis:
    dimension: str
    column: str  # plot data column
    name: str  # threshold name prefix: DT / SNR
    unit: str
    fmt: object

    def x(self, levels: Sequence[str]) -> np.ndarray:
        values = np.array([float(v) for v in levels])
        return np.log10(values) if self.dimension == "duration" else values

    def display(self, x: float) -> float:
        return 10.0 ** x if self.dimension == "duration" else x


AXES = (Axis("duration", "duration_ms", "DT", "ms", fmt_ms), Axis("snr", "snr_db", "SNR", "dB", fmt_db))


@dataclass
class System:
    name: str  # seed_42 | ensemble | zeroshot | <detector>
    kind: str  # finetuned | ensemble | zeroshot | baseline
    seed: int | None
    predictions: Path
    calibration: Path | None


@dataclass
class Scored:
    """One system's scores aligned to the metadata rows."""

    system: System
    p: np.ndarray  # p(SPEECH) at temperature 1
    p_cal: np.ndarray | None  # calibrated p(SPEECH), None without a calibrator
    threshold_cal: float
    z: np.ndarray | None = None  # the log-odds of SPEECH behind p (logit_A - logit_B), for the unclipped NLL
    z_cal: np.ndarray | None = None  # behind p_cal

    def forecasts(self) -> dict[str, Forecast]:
        """{uncalibrated, and calibrated where there is a calibrator: its forecasts}."""
        out = {UNCALIBRATED: Forecast(self.p, 0.5, self.z)}
        if self.p_cal is not None:
            out[CALIBRATED] = Forecast(self.p_cal, self.threshold_cal, self.z_cal)
        return out


class Forecast(NamedTuple):
    """One system's p(SPEECH) per variant, the threshold it answers SPEECH from, and the log-odds behind ``p`` where
    known (the NLL is then computed from them, unclipped: :func:`~speech_calibration.stats.metrics.nll`)."""

    p: np.ndarray
    threshold: float
    log_odds: np.ndarray | None = None


# ---------------------------------------------------------------------------------------- inputs
def discover_systems(seeds: Sequence[int]) -> list[System]:
    """The fine-tuned seeds and the zero-shot model (both required), the seed ensemble where the references stage
    calibrated it, and every baseline that scored the variants.

    A baseline's calibrator is the one the references stage fitted, where it did; else it is reported
    uncalibrated only.
    """
    name = layout.CONDITIONS_SET

    def csv(system: str):
        return layout.conditions_predictions_dir(system) / f"{name}.csv"

    systems = [System(layout.seed_system(s), FINETUNED, s, csv(layout.seed_system(s)), layout.seed_files(s).calibrator)
               for s in seeds]
    ensemble = SystemFiles(layout.ENSEMBLE, reference=True).calibrator  # fitted where evaluate.references lists it
    if csv(layout.ENSEMBLE).is_file() and ensemble.is_file():
        systems.append(System(layout.ENSEMBLE, layout.ENSEMBLE, None, csv(layout.ENSEMBLE), ensemble))
    systems.append(System(layout.ZEROSHOT, "zeroshot", None, csv(layout.ZEROSHOT),
                          SystemFiles(layout.ZEROSHOT, reference=True).calibrator))
    baselines_dir = layout.baselines_set_dir(name)
    if baselines_dir.is_dir():
        for folder in sorted(p for p in baselines_dir.iterdir() if p.is_dir()):
            if (folder / f"{name}.csv").is_file():
                calibrator = SystemFiles(f"{layout.BASELINES}/{folder.name}", reference=True).calibrator
                systems.append(System(folder.name, "baseline", None, folder / f"{name}.csv",
                                      calibrator if calibrator.is_file() else None))
    return systems


def read_variants(path: Path) -> pd.DataFrame:
    """The variants' metadata, validated by the data contract, with condition and level as text."""
    meta = schema.read_metadata(path, check_audio=False)
    missing = [c for c in (BASE_CLIP_ID, CONDITION, LEVEL) if c not in meta.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; re-run the conditions_render stage")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=[BASE_CLIP_ID, CONDITION, LEVEL])
    for col in (BASE_CLIP_ID, CONDITION, LEVEL):
        meta[col] = raw[col].to_numpy()
    bad = ~meta[CONDITION].isin((CLEAN, *DIMENSIONS)).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1
        raise UserError(f"{path} row {row}: condition '{meta[CONDITION].iloc[row - 1]}' is not one of "
                        f"{', '.join((CLEAN, *DIMENSIONS))}")
    return meta


def score_system(system: System, meta: pd.DataFrame) -> Scored:
    """Read one system's predictions, check they cover exactly the variants, and apply its calibrator."""
    preds = schema.read_predictions(system.predictions)
    ids = meta[schema.CLIP_ID]
    missing = sorted(set(ids) - set(preds[schema.CLIP_ID]))
    extra = sorted(set(preds[schema.CLIP_ID]) - set(ids))
    if missing or extra:
        what = f"lacks clip '{missing[0]}'" if missing else f"has clip '{extra[0]}' not in the variants"
        raise UserError(f"{system.predictions}: {what} ({len(missing)} missing, {len(extra)} extra); the predictions "
                        "are stale, re-run the predict_conditions stages (dvc repro)")
    preds = preds.set_index(schema.CLIP_ID).loc[ids.to_numpy()]
    mismatch = preds[schema.LABEL].to_numpy() != meta[schema.LABEL].to_numpy()
    if mismatch.any():
        cid = ids.iloc[int(np.flatnonzero(mismatch)[0])]
        raise UserError(f"{system.predictions}: clip '{cid}' has a different label than the variants' metadata; "
                        "re-run the predict_conditions stages")
    a, b = preds[schema.LOGIT_A].to_numpy(float), preds[schema.LOGIT_B].to_numpy(float)
    z = a - b
    p = metrics.sigmoid(z)  # = metrics.p_speech_from_logits(a, b)
    p_cal, z_cal, thr = None, None, 0.5
    if system.calibration is not None:
        cal = calibrators.load(system.calibration)
        z_cal = per_set_log_odds(cal, a, b, meta)
        p_cal = metrics.sigmoid(z_cal)  # = cal.predict_proba, set by set
        thr = cal.threshold
    return Scored(system, p, p_cal, thr, z, z_cal)


def per_set_log_odds(cal: calibrators.Calibrator, a: np.ndarray, b: np.ndarray, meta: pd.DataFrame) -> np.ndarray:
    """The calibrated log-odds of SPEECH of every variant; a per-batch calibrator (batch calibration) sees each
    (condition, level) as its own set, since that is where a shift moves the prior."""
    if not cal.per_batch:
        return np.asarray(cal.log_odds(a, b), dtype=float)
    out = np.empty(len(a))
    for idx in meta.groupby([CONDITION, LEVEL], sort=False).indices.values():
        out[idx] = cal.log_odds(a[idx], b[idx])
    return out


# -------------------------------------------------------------------------------------- metrics
def variant_order(meta: pd.DataFrame, cfg: params_mod.Conditions) -> list[tuple[str, str]]:
    """(condition, level) in report order, only those present: clean, then each dimension's levels as configured."""
    wanted = [(CLEAN, CLEAN)]
    wanted += [("duration", level_text(v)) for v in cfg.durations_ms]
    wanted += [("snr", level_text(v)) for v in cfg.snr_db]
    wanted += [("reverb", level_text(v)) for v in cfg.t60_s]
    wanted += [("band", v) for v in cfg.band]
    present = set(zip(meta[CONDITION], meta[LEVEL]))
    order = [w for w in wanted if w in present]
    unknown = sorted(present - set(order))
    if unknown:
        raise UserError(f"{layout.conditions_csv()}: variants {unknown[0][0]} {unknown[0][1]} are not among the levels of "
                        "the params file's conditions; re-run the conditions_render stage (dvc repro conditions_render)")
    return order


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float, n_bins: int,
                           log_odds: np.ndarray | None = None) -> dict[str, float]:
    pred = metrics.predict(p, threshold)
    conf, correct = metrics.top_label(y, p, threshold)
    return {
        "n": int(len(y)), "n_speech": int(np.sum(y == 1)), "n_nonspeech": int(np.sum(y == 0)),
        "accuracy": float(metrics.accuracy(y, pred)),
        "balanced_accuracy": float(metrics.balanced_accuracy(y, pred)),
        "recall_speech": float(metrics.class_accuracy(y, pred, 1)),
        "recall_nonspeech": float(metrics.class_accuracy(y, pred, 0)),
        "ece": float(metrics.ece(conf, correct, n_bins)),
        "nll": float(metrics.nll(y, p, log_odds=log_odds)),
    }


def stratum_sizes(strata: np.ndarray | None, base: np.ndarray) -> dict[str, int] | None:
    """``{class name: its groups}`` of a bootstrap resampled within ``strata`` (each item's stratum, as
    :func:`~speech_calibration.stats.resampling.class_strata` gives it), over the items' groups ``base``; None: not
    stratified."""
    return None if strata is None else clusters_per_stratum(strata, base, schema.stratum_label)


def _band(row: dict, replicates: np.ndarray, n_clusters: int, ci: float, measure: str,
          per_stratum: dict[str, int] | None = None) -> None:
    """Add ``<measure>_lo``, ``_hi`` (a cluster-bootstrap interval over groups) and ``_no_interval`` (why none) to ``row``;
    ``per_stratum`` (:func:`stratum_sizes`) where the groups were resampled within class strata. A calibration error's
    interval is reflected about its value in ``row`` (:func:`~speech_calibration.stats.resampling.basic_interval`)."""
    interval = cluster_interval(replicates, n_clusters, ci, unit=UNIT, per_stratum=per_stratum)
    if measure in REFLECTED:
        interval = basic_interval(interval, row[measure])
    row[f"{measure}_lo"], row[f"{measure}_hi"] = interval["lo"], interval["hi"]
    row[f"{measure}_no_interval"] = interval.get("reason", "")


def per_condition_table(y: np.ndarray, conditions: np.ndarray, levels: np.ndarray, order: list[tuple[str, str]],
                        probs: dict[str, tuple], n_bins: int, *, clusters: np.ndarray,
                        n_boot: int, ci: float, seed: int, system_name: str) -> pd.DataFrame:
    """Rows per (calibration, condition, level) in ``order`` plus ``all``; ``probs``: {calibration: :class:`Forecast`}
    (or ``(p, threshold)``).

    Each row also gives its number of groups (``n_clusters``; ``clusters``: each row's group) and intervals of
    balanced accuracy and ECE from a bootstrap over groups (by class where
    :func:`~speech_calibration.stats.resampling.class_strata` needs it: groups of one class each, and then each
    class needs enough groups), or the reason there is none
    (:func:`~speech_calibration.stats.resampling.cluster_interval`).
    """
    rows = []
    for calibration, forecast in probs.items():
        p, thr, z = Forecast(*forecast)
        for condition, level in [*order, (ALL, ALL)]:
            mask = np.ones(len(y), bool) if condition == ALL else (conditions == condition) & (levels == level)
            yy, pp, bb = y[mask], p[mask], clusters[mask]

            def stat(idx, yy=yy, pp=pp, thr=thr):
                conf, correct = metrics.top_label(yy[idx], pp[idx], thr)
                return {"balanced_accuracy": metrics.balanced_accuracy(yy[idx], metrics.predict(pp[idx], thr)),
                        "ece": metrics.ece(conf, correct, n_bins)}

            n_clusters, strata = len(set(bb.tolist())), class_strata(yy, bb)
            reps = cluster_bootstrap_replicates(stat, bb, strata=strata, n_boot=n_boot,
                                                seed=keyed_rng(seed, "per_condition", system_name, calibration, condition, level))
            row = {"calibration": calibration, "condition": condition, "level": level, "n_clusters": n_clusters,
                   **classification_metrics(yy, pp, thr, n_bins, None if z is None else z[mask])}
            for key in ("balanced_accuracy", "ece"):
                _band(row, reps[key], n_clusters, ci, key, stratum_sizes(strata, bb))
            rows.append(row)
    return pd.DataFrame(rows)


def ba_summary(table: pd.DataFrame) -> dict[str, float]:
    """BA_clip (balanced accuracy over all variants) and BA_conditions (mean over dimensions of the mean per-level BA)."""
    ba_clip = table.loc[table["condition"] == ALL, "balanced_accuracy"]
    dims = table[table["condition"].isin(DIMENSIONS)].groupby("condition")["balanced_accuracy"].mean()
    return {"BA_clip": float(ba_clip.iloc[0]) if len(ba_clip) else math.nan,
            "BA_conditions": float(dims.mean()) if len(dims) else math.nan}


# ---------------------------------------------------------------------------------- psychometric
def response_matrix(base: np.ndarray, levels: np.ndarray, answers: np.ndarray,
                    level_order: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(clusters x levels) answers (1 SPEECH, 0 not, NaN missing) and the cluster ids, from long rows."""
    clusters, ci = np.unique(base, return_inverse=True)
    index = {lv: j for j, lv in enumerate(level_order)}
    out = np.full((len(clusters), len(level_order)), np.nan)
    out[ci, [index[lv] for lv in levels]] = answers
    return out, clusters


def _responses(meta: pd.DataFrame, answers: np.ndarray, dimension: str, label: str,
               lv_order: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The (base clips x levels) responses of ``label``'s clips in ``dimension`` and each base clip's group."""
    mask = ((meta[CONDITION] == dimension) & (meta[schema.LABEL] == label)).to_numpy()
    if not mask.any():
        return None
    resp, base = response_matrix(meta[BASE_CLIP_ID].to_numpy()[mask], meta[LEVEL].to_numpy()[mask], answers[mask], lv_order)
    group_of = dict(zip(meta[BASE_CLIP_ID].to_numpy()[mask], meta[CLUSTER].to_numpy()[mask]))
    return resp, np.array([group_of[b] for b in base], dtype=object)


def psychometric_curves(meta: pd.DataFrame, answers: np.ndarray, order: list[tuple[str, str]],
                        cfg: params_mod.Conditions, ci: float, system_name: str) -> dict[tuple[str, str], object]:
    """Per dimension: ``(dimension, SPEECH)`` and ``(dimension, NONSPEECH)``: the P(answer SPEECH) curve of speech clips
    (hit rate, with ``HIT_CRITERIA`` thresholds) and of non-speech clips (false alarms); ``(dimension, BALANCED)``: the
    balanced-accuracy :class:`~speech_calibration.stats.psychometric.Sensitivity` with ``BA_CRITERIA`` thresholds."""
    curves = {}
    for axis in AXES:
        lv_order = [lv for c, lv in order if c == axis.dimension]
        if len(lv_order) < 2:
            continue
        x = axis.x(lv_order)
        resp = {label: _responses(meta, answers, axis.dimension, label, lv_order)
                for label in (schema.SPEECH, schema.NONSPEECH)}
        for label, r in resp.items():
            if r is None:
                continue
            criteria = HIT_CRITERIA[axis.dimension] if label == schema.SPEECH else ()
            curves[(axis.dimension, label)] = psychometric.fit_curve(
                x, r[0], criteria, n_boot=cfg.n_bootstrap, ci=ci, clusters=r[1], unit=UNIT,
                rng=keyed_rng(cfg.bootstrap_seed, "psychometric", system_name, axis.dimension, label))
        if all(r is not None for r in resp.values()):
            (speech, speech_groups), (nonspeech, nonspeech_groups) = resp[schema.SPEECH], resp[schema.NONSPEECH]
            curves[(axis.dimension, BALANCED)] = psychometric.fit_sensitivity(
                x, speech, nonspeech, BA_CRITERIA, n_boot=cfg.n_bootstrap, ci=ci,
                clusters=(speech_groups, nonspeech_groups), unit=UNIT,
                rng=keyed_rng(cfg.bootstrap_seed, "sensitivity", system_name, axis.dimension))
    return curves


def threshold_rows(system: System, curves: dict, ci: float) -> list[dict]:
    """thresholds.csv rows: the balanced-accuracy (sensitivity) thresholds ``DT75``..., then the hit-rate ones ``DT50_hit``..."""
    rows = []
    for axis in AXES:
        for measure, key, suffix in ((BALANCED, BALANCED, ""), (HIT, schema.SPEECH, "_hit")):
            curve = curves.get((axis.dimension, key))
            if curve is None:
                continue
            present = (curve.hit.n > 0) & (curve.false_alarm.n > 0) if measure == BALANCED else curve.n > 0
            valid = curve.levels[present]  # the levels the threshold was searched over
            x_min, x_max = float(valid.min()), float(valid.max())
            rows += [threshold_row(system, axis, f"{axis.name}{round(100 * t.q)}{suffix}", measure, t, x_min, x_max, ci)
                     for t in curve.thresholds]
    return rows


def threshold_row(system: System, axis: Axis, name: str, measure: str, t: psychometric.Threshold, x_min: float,
                  x_max: float, ci: float, *, censored: tuple[str, str] = ("below", "not reached"),
                  words: dict[str, str] | None = None, bound_words: dict[str, str] | None = None,
                  calibration: str = UNCALIBRATED) -> dict:
    """One thresholds.csv row: the value and interval in the level's unit (NaN where censored), ``censored`` naming
    the side (``censored[0]`` below the range, ``censored[1]`` above), and both as text
    (:func:`~speech_calibration.stats.psychometric.describe` with ``words`` for the value, ``bound_words`` for the bounds).
    Where the bootstrap over groups gives no interval (``t.reason``), ``lo`` and ``hi`` are NaN and ``ci_text``
    says why (``no_interval`` holds the reason alone; empty where there is an interval).
    ``calibration``: whose output it measures (the system's own answer, or its dev-fitted calibrator's)."""
    def text(v, w):
        return psychometric.describe(v, x_min, x_max, axis.fmt, **(w or {}))

    finite = math.isfinite(t.value)
    lost = math.isfinite(t.falls_back)  # reached, then lost again within the range
    value_text = text(t.value, words) + (f" (below {t.q:.0%} again from {axis.fmt(t.falls_back)})" if lost else "")
    return {
        "system": system.name, "kind": system.kind, "seed": system.seed,
        "threshold": name, "measure": measure, "calibration": calibration, "unit": axis.unit,
        "value": axis.display(t.value) if finite else math.nan,
        "censored": "" if finite else (censored[0] if t.value < 0 else censored[1]),
        "lo": axis.display(t.lo) if math.isfinite(t.lo) else math.nan,
        "hi": axis.display(t.hi) if math.isfinite(t.hi) else math.nan,
        "falls_below_again": axis.display(t.falls_back) if lost else math.nan,
        "text": value_text, "ci_text": (f"(no interval: {t.reason})" if t.reason
                                        else f"[{text(t.lo, bound_words)}, {text(t.hi, bound_words)}]"),
        "ci": ci, "no_interval": t.reason or "",
    }


# ------------------------------------------------------------------------------ calibration under shift
SHIFT_MEASURES = ("smooth_ece", "nll", "balanced_accuracy")
ECE = "smooth_ece"  # what a calibration threshold measures
REFLECTED = ("ece", ECE)  # this module's names of metrics.PLUG_IN_CALIBRATION_ERRORS: their bands are reflected
SHIFT_COLUMNS = {"duration": "duration_ms", "snr": "snr_db", "reverb": "t60_s", "band": "band"}  # plot data: the level


def shift_measures(y: np.ndarray, p: np.ndarray, threshold: float, log_odds: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Top-label smooth ECE, NLL (from ``log_odds``, the log-odds behind ``p``, where given) and balanced accuracy of
    p(SPEECH) answered SPEECH from ``threshold`` on (one value, or one per row of a ``(B, n)`` resample matrix)."""
    conf, correct = metrics.top_label(y, p, threshold)
    return {"smooth_ece": metrics.smooth_ece(conf, correct), "nll": metrics.nll(y, p, log_odds=log_odds),
            "balanced_accuracy": metrics.balanced_accuracy(y, metrics.predict(p, threshold))}


@dataclass(frozen=True)
class ShiftCurve:
    """One system's calibration against the levels of one dimension, with replicates of a bootstrap over groups."""

    dimension: str
    calibration: str  # calibrated (the dev-fitted calibrator) | uncalibrated (a system without one)
    levels: list[str]
    n: np.ndarray  # variants per level
    n_clusters: np.ndarray  # groups per level
    point: dict[str, np.ndarray]  # measure -> (L,)
    replicates: dict[str, np.ndarray]  # measure -> (B, L); every system resamples the same groups
    null: np.ndarray  # (L,): the smooth ECE these forecasts reach by chance when calibrated (:func:`calibrated_null`)
    per_stratum: list[dict[str, int] | None]  # per level: groups per class stratum (None: not stratified)
    clusters: tuple[int, dict[str, int] | None]  # the whole dimension's groups, and per stratum (its thresholds)


@dataclass(frozen=True)
class ShiftResamples:
    """A bootstrap over the groups of one dimension (all its levels resampled together): per level, its items in
    every resample, grouped by how many a resample holds (a group may lack a level)."""

    dimension: str
    levels: list[str]
    rows: np.ndarray  # the dimension's rows of the metadata
    at_level: list[np.ndarray]  # per level: a mask over ``rows``
    n_clusters: np.ndarray  # per level: its groups
    groups: list[list[tuple[np.ndarray, np.ndarray]]]  # per level: (resample numbers, (k, count) indices into ``rows``)
    n_boot: int
    per_stratum: list[dict[str, int] | None]  # per level: groups per class stratum (None: not stratified)
    clusters: tuple[int, dict[str, int] | None]  # the whole dimension's groups, and per stratum


def shift_resamples(meta: pd.DataFrame, y: np.ndarray, order: list[tuple[str, str]],
                    cfg: params_mod.Conditions) -> dict[str, ShiftResamples]:
    """Per dimension, the resamples of :func:`~speech_calibration.stats.resampling.cluster_bootstrap_replicates` over
    groups (stratified by class where needed), drawn once and shared by every system, so a mean over seeds,
    resample by resample, has a paired interval."""
    cond, lev, base = meta[CONDITION].to_numpy(), meta[LEVEL].to_numpy(), meta[CLUSTER].to_numpy()
    out = {}
    for dimension in DIMENSIONS:
        levels = [lv for c, lv in order if c == dimension]
        if not levels:
            continue
        rows = np.flatnonzero(cond == dimension)
        pieces = []

        def collect(idx, pieces=pieces):  # called once per resample length; the replicates say which piece and row
            pieces.append(idx)
            return {"piece": np.full(len(idx), len(pieces) - 1), "row": np.arange(len(idx))}

        strata = class_strata(y[rows], base[rows])
        where = cluster_bootstrap_replicates(collect, base[rows], strata=strata,
                                             n_boot=cfg.n_bootstrap,
                                             seed=keyed_rng(cfg.bootstrap_seed, "calibration_shift", dimension))
        number = [np.empty(len(piece), dtype=np.int64) for piece in pieces]  # resample number of each piece row
        for b, (k, r) in enumerate(zip(where["piece"].astype(int), where["row"].astype(int))):
            number[k][r] = b
        at_level, groups = [], []
        for level in levels:
            member = lev[rows] == level
            by_count: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
            for piece, num in zip(pieces, number):
                inside = member[piece]
                counts = inside.sum(axis=1)
                for count in np.unique(counts[counts > 0]):  # a resample without the level: NaN
                    sel = np.flatnonzero(counts == count)
                    by_count.setdefault(int(count), []).append((num[sel], piece[sel][inside[sel]].reshape(len(sel), count)))
            at_level.append(member)
            groups.append([(np.concatenate([n for n, _ in g]), np.concatenate([i for _, i in g])) for g in by_count.values()])
        n_clusters = np.array([len(set(base[rows][m].tolist())) for m in at_level])
        per_stratum = [stratum_sizes(None if strata is None else strata[m], base[rows][m]) for m in at_level]
        clusters = (len(set(base[rows].tolist())), stratum_sizes(strata, base[rows]))
        out[dimension] = ShiftResamples(dimension, levels, rows, at_level, n_clusters, groups, cfg.n_bootstrap,
                                        per_stratum, clusters)
    return out


NULL_DRAWS = 400  # label draws of calibrated_null


def calibrated_null(p: np.ndarray, threshold: float, quantile: float, rng: np.random.Generator,
                    draws: int = NULL_DRAWS) -> float:
    """The ``quantile`` of the top-label smooth ECE of forecasts ``p`` (answered SPEECH from ``threshold`` on) when
    every outcome is drawn from its own forecast: forecasts calibrated by construction, so what the smooth ECE of
    this many clips reaches by chance alone (it is biased up on few clips)."""
    outcomes = (rng.random((draws, len(p))) < p).astype(np.int64)
    conf, correct = metrics.top_label(outcomes, np.broadcast_to(p, outcomes.shape), threshold)
    return float(np.quantile(metrics.smooth_ece(conf, correct), quantile))


def shift_curves(resamples: dict[str, ShiftResamples], y: np.ndarray, p: np.ndarray, threshold: float,
                 calibration: str, log_odds: np.ndarray | None = None, *, ci: float = 0.95, seed: int = 0,
                 system_name: str = "") -> dict[str, ShiftCurve]:
    """Per dimension, :func:`shift_measures` at each level, and on each of its bootstrap resamples (:func:`shift_resamples`);
    and each level's :func:`calibrated_null` at quantile ``ci`` (seeded by ``seed``, the system and the level).
    ``log_odds``: behind ``p``, where known (the NLL from them, unclipped)."""
    curves = {}
    for dimension, res in resamples.items():
        yy, pp = y[res.rows], p[res.rows]
        zz = None if log_odds is None else log_odds[res.rows]
        point = {m: np.full(len(res.levels), np.nan) for m in SHIFT_MEASURES}
        reps = {m: np.full((res.n_boot, len(res.levels)), np.nan) for m in SHIFT_MEASURES}
        null = np.full(len(res.levels), np.nan)
        for j, (member, groups) in enumerate(zip(res.at_level, res.groups)):
            for m, value in shift_measures(yy[member], pp[member], threshold, None if zz is None else zz[member]).items():
                point[m][j] = value
            for which, idx in groups:
                for m, values in shift_measures(yy[idx], pp[idx], threshold, None if zz is None else zz[idx]).items():
                    reps[m][which, j] = values
            null[j] = calibrated_null(pp[member], threshold, ci,
                                      keyed_rng(seed, "calibrated_null", system_name, dimension, res.levels[j]))
        curves[dimension] = ShiftCurve(dimension, calibration, res.levels, np.array([int(m.sum()) for m in res.at_level]),
                                       res.n_clusters, point, reps, null, res.per_stratum, res.clusters)
    return curves


def shift_table_rows(system: System, curves: dict[str, ShiftCurve], ci: float) -> list[dict]:
    """calibration_under_shift.csv rows: per dimension and level, every :data:`SHIFT_MEASURES` with its interval."""
    rows = []
    for c in curves.values():
        for j, level in enumerate(c.levels):
            row = {"system": system.name, "kind": system.kind, "seed": system.seed, "calibration": c.calibration,
                   "condition": c.dimension, "level": level, "n": int(c.n[j]), "n_clusters": int(c.n_clusters[j])}
            for m in SHIFT_MEASURES:
                row[m] = float(c.point[m][j])
                _band(row, c.replicates[m][:, j], int(c.n_clusters[j]), ci, m, c.per_stratum[j])
                if m == ECE:
                    row[f"{ECE}_calibrated_null"] = float(c.null[j])
            rows.append(row)
    return rows


def ece_threshold_name(axis: Axis, q: float) -> str:
    """The calibration threshold's name: ``DT_ECE10`` is the duration where smooth ECE first exceeds 0.10 (0.05:
    ``DT_ECE05``; 0.125: ``DT_ECE12p5``, with no dot, which ``dvc metrics show`` would read as nesting)."""
    percent = round(100 * q, 9)
    if percent == int(percent):
        return f"{axis.name}_ECE{int(percent):02d}"
    return f"{axis.name}_ECE" + np.format_float_positional(percent, trim="-").replace(".", "p")


def calibration_threshold_rows(system: System, curves: dict[str, ShiftCurve], q: float, ci: float) -> list[dict]:
    """thresholds.csv rows of the calibration thresholds (measure ``smooth_ece``): per axis (duration, SNR), the
    level where smooth ECE first reaches ``q`` coming down from the mildest level
    (:func:`~speech_calibration.stats.psychometric.first_exceedance`, linear between levels on the axis of the
    accuracy thresholds), its bootstrap interval over groups, and its censoring in words. ``chance_levels``: at how
    many levels forecasts calibrated by construction exceed ``q`` in at least ``1 - ci`` of draws (of ``n_levels``)
    (:func:`calibrated_null`); the text says so where there are any, since a crossing there may be chance."""
    rows = []
    for axis in AXES:
        c = curves.get(axis.dimension)
        if c is None or len(c.levels) < 2:
            continue
        x = axis.x(c.levels)
        value = float(psychometric.first_exceedance(c.point[ECE], x, q)[0])
        n_clusters, per_stratum = c.clusters
        lo, hi, reason = psychometric.censored_interval(psychometric.first_exceedance(c.replicates[ECE], x, q), n_clusters,
                                                        ci, per_stratum=per_stratum, unit=UNIT)
        row = threshold_row(
            system, axis, ece_threshold_name(axis, q), ECE, psychometric.Threshold(q, value, lo, hi, reason=reason),
            float(x.min()), float(x.max()), ci, censored=("never exceeds", "already above"),
            words={"below": f"never exceeds {q:.2f} within {{lo}} to {{hi}}", "above": f"already above {q:.2f} at {{hi}}"},
            bound_words={"above": "> {hi}"}, calibration=c.calibration)
        row["chance_levels"] = chance = int(np.sum(c.null >= q))
        row["n_levels"] = len(c.levels)
        if chance:
            row["text"] += (f" (a calibrated system exceeds {q:.2f} by chance in at least {1 - ci:.0%} of samples at "
                            f"{chance} of {len(c.levels)} levels)")
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------ paired tests
def paired_table(meta: pd.DataFrame, correct: dict[str, np.ndarray], cfg: params_mod.Conditions, ci: float) -> pd.DataFrame:
    """Every pair of systems over all variants and per dimension, clustered by test group; Holm across the whole table.

    ``n_clusters`` (groups) is the sample size of ``p_clustered`` (the clustered exact McNemar test) and of
    the bootstrap interval of the accuracy difference; ``p_naive`` is the plain McNemar test that counts the
    ``n_variants`` variants as independent, shown for contrast only. ``p_holm`` is adjusted for the whole table;
    the interval is not (it is each comparison's own, so with many rows some exclude 0 by chance). Where the
    groups are too few for an interval (:func:`~speech_calibration.stats.paired_tests.clustered_bootstrap_difference`),
    ``diff_lo`` and ``diff_hi`` are empty and ``diff_interval`` says why (empty where there is one).
    """
    rows = []
    base = meta[CLUSTER].to_numpy()
    cond = meta[CONDITION].to_numpy()
    scopes = [ALL] + [d for d in DIMENSIONS if (cond == d).any()]
    for s1, s2 in itertools.combinations(correct, 2):
        for scope in scopes:
            mask = np.ones(len(cond), bool) if scope == ALL else cond == scope
            c1, c2 = correct[s1][mask], correct[s2][mask]
            test = paired_tests.clustered_mcnemar(c1, c2, base[mask])
            difference = paired_tests.clustered_bootstrap_difference(
                c1, c2, base[mask], n_boot=cfg.n_bootstrap, ci=ci,
                rng=keyed_rng(cfg.bootstrap_seed, "paired", s1, s2, scope), unit=UNIT)
            rows.append({"system_1": s1, "system_2": s2, "scope": scope, "n_clusters": test.n_clusters,
                         "n_variants": test.n_items, "accuracy_1": float(c1.mean()), "accuracy_2": float(c2.mean()),
                         "only_1_right": test.only_1, "only_2_right": test.only_2, "both_right": test.both,
                         "both_wrong": test.neither, "p_clustered": test.p_value,
                         "p_naive": paired_tests.mcnemar_p(test.only_1, test.only_2),
                         "accuracy_difference": difference.diff, "diff_lo": difference.lo,
                         "diff_hi": difference.hi, "ci": ci, "diff_interval": difference.reason or ""})
    table = pd.DataFrame(rows)
    if len(table):
        table.insert(table.columns.get_loc("p_clustered") + 1, "p_holm",
                     paired_tests.holm(table["p_clustered"].to_numpy()))
    return table


def interval_scope(meta: pd.DataFrame) -> str:
    """What every interval and paired test of this report generalises to, in words: new test groups (speakers,
    recordings), each resampled with every variant of all its base clips; the smallest p a sign flip of that many
    groups can give; and whether they are too few for an interval."""
    n_base, n_groups = meta[BASE_CLIP_ID].nunique(), meta[CLUSTER].nunique()
    scope = (f"every interval and paired test here resamples the {n_groups} test groups (speakers, recordings), each "
             f"with all the variants of its base clips ({n_base} in all), so that they speak of new speakers and "
             f"recordings; a paired test's p cannot fall below 2 / 2^{n_groups} = {min(1.0, 2.0 / 2 ** n_groups):.3g}")
    if n_groups < MIN_CLUSTERS:
        scope += (f"; {n_groups} groups are too few for a group-level interval (needs >= {MIN_CLUSTERS}), so the tables "
                  "give none and say why")
    return scope


# ---------------------------------------------------------------------------------- headline JSON
def headline(per_system: dict[str, dict], systems: list[System]) -> dict:
    """metrics/conditions.json: per system BA_clip, BA_conditions and the balanced-accuracy thresholds (+ text);
    fine-tuned seeds averaged (a duration in ms geometrically: its thresholds are found on log10 duration), their
    texts listed seed by seed."""
    out = {s.name: per_system[s.name] for s in systems}
    seeds = [s for s in systems if s.kind == FINETUNED]
    tuned = [per_system[s.name] for s in seeds]
    if tuned:
        agg = {"n_seeds": len(tuned)}
        for key in tuned[0]:
            values = [t.get(key) for t in tuned]
            if all(isinstance(v, (int, float)) and v is not None and math.isfinite(v) for v in values):
                agg[key] = float(10 ** np.mean(np.log10(values)) if key.endswith("_ms") else np.mean(values))
            elif key.endswith("_text"):
                agg[key] = "; ".join(f"{s.name}: {v}" for s, v in zip(seeds, values))
            else:
                agg[key] = None  # censored (or undefined) in some seed: no mean
        out[FINETUNED] = agg
    return out


# --------------------------------------------------------------------------------------- plots
def variant_label(condition: str, level: str) -> str:
    if condition in (CLEAN, ALL):
        return condition
    unit = LEVEL_UNITS[condition]
    return f"{condition} {level}{' ' + unit if unit else ''}"


def series_name(system: System) -> str:
    return FINETUNED if system.kind == FINETUNED else system.name


def _seed_mean(frame: pd.DataFrame, column: str, values: dict[str, str]) -> pd.DataFrame:
    """Average ``values`` ({out: in column}) over the members (seeds) of each series, per level."""
    return frame.groupby(["system", column], sort=False).agg(
        **{out: (col, "mean") for out, col in values.items()}, n_members=("member", "nunique")).reset_index()


def psychometric_plot_data(curves: dict[str, dict], systems: list[System], axis: Axis) -> pd.DataFrame:
    """One row per (series, level): observed hit rate, false-SPEECH rate and the fitted hit curve (seeds averaged)."""
    rows = []
    for s in systems:
        hit = curves[s.name].get((axis.dimension, schema.SPEECH))
        false = curves[s.name].get((axis.dimension, schema.NONSPEECH))
        if hit is None:
            continue
        for j, x in enumerate(hit.levels):
            rows.append({"system": series_name(s), "member": s.name, axis.column: axis.display(x),
                         "p_answer_speech": hit.observed[j], "fitted": float(hit.fitted(x)),
                         "p_false_speech": false.observed[j] if false is not None and j < len(false.levels) else math.nan})
    if not rows:
        return pd.DataFrame(columns=["system", axis.column, "p_answer_speech", "p_false_speech", "fitted", "n_members"])
    return _seed_mean(pd.DataFrame(rows), axis.column, {"p_answer_speech": "p_answer_speech",
                                                          "p_false_speech": "p_false_speech", "fitted": "fitted"})


def sensitivity_plot_data(curves: dict[str, dict], systems: list[System], axis: Axis) -> pd.DataFrame:
    """One row per (series, level): observed and fitted balanced accuracy (seeds averaged)."""
    rows = []
    for s in systems:
        sens = curves[s.name].get((axis.dimension, BALANCED))
        if sens is None:
            continue
        for j, x in enumerate(sens.levels):
            rows.append({"system": series_name(s), "member": s.name, axis.column: axis.display(x),
                         "balanced_accuracy": sens.observed[j], "fitted": float(sens.fitted(x))})
    if not rows:
        return pd.DataFrame(columns=["system", axis.column, "balanced_accuracy", "fitted", "n_members"])
    return _seed_mean(pd.DataFrame(rows), axis.column, {"balanced_accuracy": "balanced_accuracy", "fitted": "fitted"})


def per_condition_plot_data(tables: dict[str, pd.DataFrame], systems: list[System]) -> pd.DataFrame:
    rows = []
    for s in systems:
        t = tables[s.name]
        for _, r in t.iterrows():
            rows.append({"system": series_name(s), "member": s.name, "calibration": r["calibration"],
                         "variant": variant_label(r["condition"], r["level"]), "balanced_accuracy": r["balanced_accuracy"]})
    frame = pd.DataFrame(rows)
    wide = frame.pivot_table(index=["system", "variant"], columns="calibration", values="balanced_accuracy",
                             aggfunc="mean", sort=False).reset_index()
    wide = wide.rename(columns={UNCALIBRATED: "balanced_accuracy", CALIBRATED: "balanced_accuracy_calibrated"})
    if "balanced_accuracy_calibrated" not in wide:
        wide["balanced_accuracy_calibrated"] = math.nan
    return wide[["system", "variant", "balanced_accuracy", "balanced_accuracy_calibrated"]]


def calibration_plot_data(shift: dict[str, dict[str, ShiftCurve]], systems: list[System], dimension: str,
                          ci: float) -> pd.DataFrame:
    """One row per (series, level) of ``dimension``: smooth ECE, NLL and balanced accuracy with their bands.

    The fine-tuned seeds are averaged; their band is the interval of the seed mean taken resample by resample
    (every system sees the same resampled groups, :func:`shift_curves`). A system without a calibrator
    is drawn uncalibrated, as ``<name> (uncalibrated)``.
    """
    column = SHIFT_COLUMNS[dimension]
    series: dict[str, list[ShiftCurve]] = {}
    for s in systems:
        c = shift[s.name].get(dimension)
        if c is not None:
            name = series_name(s) if c.calibration == CALIBRATED else f"{series_name(s)} ({UNCALIBRATED})"
            series.setdefault(name, []).append(c)
    rows = []
    for name, members in series.items():
        first = members[0]
        for j, level in enumerate(first.levels):
            row = {"system": name, column: level if dimension == "band" else float(level), "n_members": len(members),
                   "n_clusters": int(first.n_clusters[j])}
            for m in SHIFT_MEASURES:
                row[m] = float(np.mean([c.point[m][j] for c in members]))
                _band(row, np.mean([c.replicates[m][:, j] for c in members], axis=0), int(first.n_clusters[j]), ci, m,
                      first.per_stratum[j])
            rows.append(row)
    columns = ["system", column, "n_members", "n_clusters",
               *[f"{m}{part}" for m in SHIFT_MEASURES for part in ("", "_lo", "_hi", "_no_interval")]]
    return pd.DataFrame(rows, columns=columns)


def save_calibration_png(frames: dict[str, pd.DataFrame], q: float, path: Path, ci: float = 0.95) -> None:
    """Smooth ECE (top) and balanced accuracy (bottom) per level of every dimension, one line per series, bands shaded
    (the ``ci`` intervals of the frames)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = [d for d in DIMENSIONS if len(frames.get(d, ()))]
    fig, axes = plt.subplots(2, max(1, len(dims)), figsize=(3.6 * max(1, len(dims)) + 1.8, 6.4), squeeze=False)
    names = list(dict.fromkeys(n for d in dims for n in frames[d]["system"]))
    colours = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
    for k, dimension in enumerate(dims):
        frame, column = frames[dimension], SHIFT_COLUMNS[dimension]
        categorical = dimension == "band"
        for name, sub in frame.groupby("system", sort=False):
            x = np.arange(len(sub)) if categorical else sub[column].to_numpy(float)
            for row, m in enumerate(("smooth_ece", "balanced_accuracy")):
                ax = axes[row, k]
                ax.plot(x, sub[m].to_numpy(float), "o-", color=colours[name], lw=1.4, ms=3.5,
                        label=name if (k, row) == (0, 0) else None)
                ax.fill_between(x, sub[f"{m}_lo"].to_numpy(float), sub[f"{m}_hi"].to_numpy(float),
                                color=colours[name], alpha=0.15, lw=0)
        for row in range(2):
            ax = axes[row, k]
            if categorical:
                ax.set_xticks(np.arange(frame[column].nunique()), list(dict.fromkeys(frame[column])), fontsize=8)
            elif dimension == "duration":
                ax.set_xscale("log")
            unit = LEVEL_UNITS[dimension]
            ax.set_xlabel(f"{dimension} ({unit})" if unit else dimension)
        axes[0, k].axhline(q, color="grey", lw=0.8, ls=":")
        axes[0, k].set_ylim(bottom=0)
        axes[1, k].axhline(0.5, color="grey", lw=0.8, ls=":")
        axes[1, k].set_ylim(-0.02, 1.02)
    axes[0, 0].set_ylabel("smooth ECE (dev-fitted calibrator)")
    axes[1, 0].set_ylabel("balanced accuracy")
    fig.suptitle(f"Calibration under shift: smooth ECE (dotted: threshold {q:.2f}) and balanced accuracy, "
                 f"{100 * ci:g} % bands over test groups (speakers, recordings)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.9, 0.96))
    if names:
        fig.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.905, 0.93), frameon=False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _series_colours(systems: list[System]) -> dict[str, tuple]:
    """One tab10 colour per series (:func:`series_name`), in the order of ``systems``: the same in every figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return {n: plt.cm.tab10(i % 10) for i, n in enumerate(dict.fromkeys(series_name(s) for s in systems))}


def save_psychometric_png(curves: dict[str, dict], systems: list[System], axis: Axis, path: Path) -> None:
    """The fitted psychometric curves of one axis: P(answer SPEECH) of speech and non-speech clips (left) and the
    balanced accuracy with its criteria (right), one colour per series."""
    colours = _series_colours(systems)  # and the Agg backend
    import matplotlib.pyplot as plt

    fig, (ax, ax_ba) = plt.subplots(1, 2, figsize=(11.5, 4.2))
    drawn = set()
    for s in systems:
        hit = curves[s.name].get((axis.dimension, schema.SPEECH))
        if hit is None:
            continue
        false = curves[s.name].get((axis.dimension, schema.NONSPEECH))
        sens = curves[s.name].get((axis.dimension, BALANCED))
        name, col = series_name(s), colours[series_name(s)]
        grid = np.linspace(hit.levels.min(), hit.levels.max(), 200)
        label = None if name in drawn else name
        drawn.add(name)
        ax.plot(axis.display(grid), hit.fitted(grid), color=col, lw=1.6, label=label)
        ax.plot(axis.display(hit.levels), hit.observed, "o", color=col, ms=3.5)
        if false is not None:
            ax.plot(axis.display(grid), false.fitted(grid), "--", color=col, lw=1.0)
        if sens is not None:
            ax_ba.plot(axis.display(grid), sens.fitted(grid), color=col, lw=1.6, label=label)
            ax_ba.plot(axis.display(sens.levels), sens.observed, "o", color=col, ms=3.5)
    for q in BA_CRITERIA:
        ax_ba.axhline(q, color="grey", lw=0.8, ls=":")
    for a in (ax, ax_ba):
        if axis.dimension == "duration":
            a.set_xscale("log")
        a.set_ylim(-0.02, 1.02)
        a.set_xlabel(f"{axis.dimension} ({axis.unit})")
    ax.set_ylabel("P(answer SPEECH)")
    ax.set_title("Answer SPEECH: speech clips (solid), non-speech (dashed)", fontsize=9)
    ax_ba.set_ylabel("balanced accuracy")
    ax_ba.set_title(f"Sensitivity: balanced accuracy (thresholds at {', '.join(f'{q:.0%}' for q in BA_CRITERIA)})",
                    fontsize=9)
    ax_ba.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def save_per_condition_png(per_condition: pd.DataFrame, systems: list[System], path: Path) -> None:
    """The uncalibrated balanced accuracy of every series in every variant (horizontal bars)."""
    colours = _series_colours(systems)  # and the Agg backend
    import matplotlib.pyplot as plt

    names = list(colours)
    variants = list(dict.fromkeys(per_condition["variant"]))
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * len(variants) + 1.5))
    height = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        sub = per_condition[per_condition["system"] == name].set_index("variant").reindex(variants)
        ax.barh(np.arange(len(variants)) + i * height, sub["balanced_accuracy"], height, color=colours[name], label=name)
    ax.set_yticks(np.arange(len(variants)) + 0.4 - height / 2, variants, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlim(0, 1)
    ax.set_xlabel("balanced accuracy (uncalibrated answer)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _draw(job: functools.partial) -> None:
    """Draw and save one figure (an item of :func:`~speech_calibration.parallel.map_forked`)."""
    job()


# ----------------------------------------------------------------------------------------- stage
@dataclass
class SystemReport:
    """What the report needs of one system (:func:`system_report`)."""

    table: pd.DataFrame  # per_condition_table
    shift: dict[str, ShiftCurve]  # calibration under shift, per dimension
    curves: dict  # psychometric_curves
    correct: np.ndarray  # its own answer is right, per variant (the paired tests)
    entry: dict  # its headline
    shift_rows: list[dict]
    threshold_rows: list[dict]
    fit_rows: list[dict]


def headline_threshold(row: dict) -> tuple[float | None, str]:
    """A thresholds.csv row's number and text in ``metrics/conditions.json``: no number for a calibration threshold
    that forecasts calibrated by construction cross by chance at every level (``chance_levels == n_levels``), since
    ``dvc metrics`` shows the number without the text that says so."""
    chance_only = row["measure"] == ECE and row["chance_levels"] == row["n_levels"]
    text = f"{row['text']} {row['ci_text']}" + (
        " (its own output: no dev-fitted calibrator)" if row["measure"] == ECE and row["calibration"] == UNCALIBRATED
        else "") + (f"; no number in {row['threshold']}_{row['unit']}: it cannot be told from chance at any level"
                    if chance_only else "")
    return (None if chance_only else row["value"]), text


def system_report(sc: Scored, meta: pd.DataFrame, y: np.ndarray, order: list[tuple[str, str]],
                  resamples: dict[str, ShiftResamples], cfg: params_mod.Conditions, n_bins: int, ci: float) -> SystemReport:
    """One system's tables, curves and headline. Every random draw is keyed by the system's name (``keyed_rng``), so
    the result does not depend on which other systems are computed, in which order or in which process."""
    s = sc.system
    cond, lev, groups = meta[CONDITION].to_numpy(), meta[LEVEL].to_numpy(), meta[CLUSTER].to_numpy()
    probs = sc.forecasts()
    calibration = CALIBRATED if sc.p_cal is not None else UNCALIBRATED  # the curves under shift: calibrated if it can
    forecast = probs[calibration]
    shift = shift_curves(resamples, y, forecast.p, forecast.threshold, calibration, forecast.log_odds, ci=ci,
                         seed=cfg.bootstrap_seed, system_name=s.name)
    table = per_condition_table(y, cond, lev, order, probs, n_bins, clusters=groups, n_boot=cfg.n_bootstrap, ci=ci,
                                seed=cfg.bootstrap_seed, system_name=s.name)
    answers = metrics.predict(sc.p, 0.5).astype(float)
    curves = psychometric_curves(meta, answers, order, cfg, ci, s.name)
    entry = ba_summary(table[table["calibration"] == UNCALIBRATED])
    if sc.p_cal is not None:
        entry.update({f"{k}_calibrated": v for k, v in ba_summary(table[table["calibration"] == CALIBRATED]).items()})
    rows = threshold_rows(s, curves, ci) + calibration_threshold_rows(s, shift, cfg.ece_threshold, ci)
    for r in (r for r in rows if r["measure"] in (BALANCED, ECE)):  # the headline: sensitivity and calibration thresholds
        entry[f"{r['threshold']}_{r['unit']}"], entry[f"{r['threshold']}_text"] = headline_threshold(r)
    fit_rows = [{"system": s.name, "kind": s.kind, "seed": s.seed, "dimension": dimension, "clips": label,
                 "intercept": c.a, "slope": c.b, "x": "log10(duration_ms)" if dimension == "duration" else "snr_db"}
                for (dimension, label), c in curves.items() if label != BALANCED]  # balanced: built from the other two
    return SystemReport(table, shift, curves, answers == y, entry, shift_table_rows(s, shift, ci), rows, fit_rows)


def report(meta: pd.DataFrame, scored: list[Scored], cfg: params_mod.Conditions, n_bins: int, ci: float,
           workers: int | None = None) -> dict:
    """Write every table, plot and the headline JSON of the conditions report (see the module doc).

    The systems are computed, then the figures drawn, on up to ``workers`` processes (default: one per CPU this process may use;
    :func:`~speech_calibration.parallel.map_forked`); the files written are the same for any number.
    """
    tables_dir, plots_dir = layout.CONDITIONS_TABLES_DIR, layout.CONDITIONS_PLOTS_DIR
    order = variant_order(meta, cfg)
    y = schema.label_to_int(meta[schema.LABEL])
    systems = [s.system for s in scored]
    resamples = shift_resamples(meta, y, order, cfg)
    done = map_forked(functools.partial(system_report, meta=meta, y=y, order=order, resamples=resamples, cfg=cfg,
                                        n_bins=n_bins, ci=ci), scored, workers)
    tables = {s.name: r.table for s, r in zip(systems, done)}
    shift = {s.name: r.shift for s, r in zip(systems, done)}
    curves = {s.name: r.curves for s, r in zip(systems, done)}
    correct = {s.name: r.correct for s, r in zip(systems, done)}
    per_system = {s.name: r.entry for s, r in zip(systems, done)}
    shift_rows = [row for r in done for row in r.shift_rows]
    thr_rows = [row for r in done for row in r.threshold_rows]
    fit_rows = [row for r in done for row in r.fit_rows]
    long = pd.concat([t.assign(system=n, kind=s.kind, seed=s.seed) for (n, t), s in zip(tables.items(), systems)],
                     ignore_index=True)
    long = long[["system", "kind", "seed", *[c for c in long.columns if c not in ("system", "kind", "seed")]]]
    pairs = paired_table(meta, correct, cfg, ci)
    per_cond_plot = per_condition_plot_data(tables, systems)

    write_csv(tables_dir / "per_condition.csv", long)
    write_csv(tables_dir / "thresholds.csv", pd.DataFrame(thr_rows))
    write_csv(tables_dir / "psychometric_fits.csv", pd.DataFrame(fit_rows))
    write_csv(tables_dir / "paired_tests.csv", pairs)
    for axis in AXES:
        write_csv(plots_dir / f"psychometric_{axis.dimension}.csv", psychometric_plot_data(curves, systems, axis))
        write_csv(plots_dir / f"sensitivity_{axis.dimension}.csv", sensitivity_plot_data(curves, systems, axis))
    write_csv(plots_dir / "per_condition.csv", per_cond_plot)
    write_csv(tables_dir / "calibration_under_shift.csv", pd.DataFrame(shift_rows))
    shift_plots = {d: calibration_plot_data(shift, systems, d, ci) for d in DIMENSIONS}
    for dimension, frame in shift_plots.items():
        write_csv(plots_dir / f"calibration_{dimension}.csv", frame)
    _series_colours(systems)  # imports matplotlib here, once, before the workers fork
    figures = [functools.partial(save_psychometric_png, curves, systems, axis, plots_dir / f"psychometric_{axis.dimension}.png")
               for axis in AXES]
    figures.append(functools.partial(save_per_condition_png, per_cond_plot, systems, plots_dir / "per_condition.png"))
    figures.append(functools.partial(save_calibration_png, shift_plots, cfg.ece_threshold,
                                     plots_dir / "calibration_under_shift.png", ci))
    map_forked(_draw, figures, workers)  # the figures' drawing is independent, and a third of the stage on one core
    head = headline(per_system, systems)
    write_json(layout.CONDITIONS_JSON, head)
    return head
