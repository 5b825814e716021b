"""The multi-seed summary: the fine-tuned seeds together, beside the zero-shot model and the VAD baselines.

Reads ``metrics/test/seed_<seed>.json`` and ``metrics/calibration/seed_<seed>.json`` for every seed
(all required), ``metrics/references/{test,calibration}/<system>.json`` for every system of
``evaluate.references`` (absent ones are skipped with a log line), and ``evaluation/seed_<seed>/test_calibrated.csv``.
:func:`aggregate` writes:

* ``metrics/headline/<system>/{uncalibrated,calibrated}.json`` (what ``dvc metrics show``, ``dvc metrics diff`` and
  ``dvc exp show`` print): seven test metrics with short keys (:data:`HEADLINE_KEYS`) per system and series, for
  ``fine_tuned`` (the mean over seeds), each seed and every reference system; the same for every system on each
  evaluation set, in ``metrics/headline/eval_sets/<name>/``;
* ``metrics/summary.json`` (the detail, an ordinary output): per metric and series (uncalibrated / calibrated)
  the mean, SD and Student-t interval across seeds (clipped to the metric's range, as in the text);
  the fitted parameters and paired deltas per seed; the reference systems' metrics; ``group_level``:
  every system's group-bootstrap intervals, or the reason there are none; ``per_group``: each metric on
  each test group (fine-tuned: mean, SD, t-interval over seeds);
* ``metrics/summary.txt``: the study's summary lines (``Overall:   83.3% ± 0.0%``, ``SPEECH:``,
  ``NONSPEECH:``, ``ECE:``, ``ROC-AUC:``) per series, the paired calibration effect per seed, one
  table of every system with the same columns, and the group-level view (intervals or why none, and
  the per-group table) with the same numbers as the JSON;
* ``metrics/summary.txt`` also carries the ``learning_curve`` stage's table (``metrics/learning_curve.txt``), where it
  exists: how much dev data each calibration method needs;
* with evaluation sets (``params.yaml: eval_sets``), each set's ``metrics/eval_sets/<name>.json`` as a block of
  both files: every system on the set, uncalibrated beside calibrated, and its group-level intervals;
* ``plots/summary/reliability_pooled.csv`` / ``.png``: reliability of the test clips of all seeds pooled;
* ``plots/summary/per_seed.csv`` / ``.png``: accuracy, ECE and NLL per seed, uncalibrated vs calibrated;
* ``plots/summary/risk_coverage.csv``: the risk-coverage curve (selective prediction) of the seeds pooled and of
  every reference system, uncalibrated and calibrated; its area is ``aurc`` in the metrics.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from speech_calibration import layout
from speech_calibration.errors import UserError
from speech_calibration.fileio import atomic_dir, write_csv, write_json, write_text
from speech_calibration.layout import SystemFiles
from speech_calibration.report.reliability import (
    plot_per_seed,
    plot_reliability,
    reliability_rows,
    rows_frame,
)
from speech_calibration.stats import metrics
from speech_calibration.stats.resampling import paired_difference_text, t_interval

log = logging.getLogger(__name__)

SERIES = ("uncalibrated", "calibrated")
AGG_KEYS = ("accuracy", "acc_speech", "acc_nonspeech", "balanced_accuracy", "roc_auc", "brier", "nll", "ece",
            "ece_mass", "ece_debiased", "ece_smooth", "mce", "brier_reliability", "brier_resolution", "aurc")
# the headline files' short keys, so that `dvc metrics show` and `dvc exp show` of them fit a terminal
HEADLINE_KEYS = (("acc", "accuracy"), ("bacc", "balanced_accuracy"), ("auc", "roc_auc"), ("ece", "ece"),
                 ("sece", "ece_smooth"), ("nll", "nll"), ("brier", "brier"))
PERCENT = {"accuracy", "acc_speech", "acc_nonspeech", "balanced_accuracy"}
BOUNDED = PERCENT | {"roc_auc", "brier", "ece", "ece_mass", "ece_debiased", "ece_smooth", "mce", "aurc"}  # metrics in [0, 1]
# (label, key) of the study's summary lines, in the study's order
STUDY_LINES = (("Overall", "accuracy"), ("SPEECH", "acc_speech"), ("NONSPEECH", "acc_nonspeech"), ("ECE", "ece"),
               ("ROC-AUC", "roc_auc"))
EXTRA_LINES = (("Balanced", "balanced_accuracy"), ("smECE", "ece_smooth"), ("ECE(mass)", "ece_mass"),
               ("RMSCE(db)", "ece_debiased"), ("NLL", "nll"), ("Brier", "brier"), ("AURC", "aurc"))
TABLE_COLUMNS = (("Overall", "accuracy"), ("SPEECH", "acc_speech"), ("NONSPEECH", "acc_nonspeech"),
                 ("ROC-AUC", "roc_auc"), ("ECE", "ece"), ("smECE", "ece_smooth"), ("NLL", "nll"), ("Brier", "brier"),
                 ("AURC", "aurc"))
GROUP_COLUMNS = (("Overall", "accuracy"), ("SPEECH", "acc_speech"), ("NONSPEECH", "acc_nonspeech"),
                 ("ROC-AUC", "roc_auc"), ("ECE", "ece"), ("NLL", "nll"), ("Brier", "brier"))
AURC_NOTE = ("AURC = area under the risk-coverage curve: the mean error rate of the k most confident clips over every "
             "k (a system that may abstain on its least confident clips; lower is better: 0 only without errors, and "
             "with them least when every error is less confident than every correct answer). Temperature scaling keeps "
             "the order of the confidences, so it leaves AURC as it was, except where rounding ties confidences at 0 or 1.")
ESTIMATORS_NOTE = ("Calibration error estimators (on small samples they disagree, so all are shown): ECE = equal-width "
                   "bins (evaluate.n_bins) of the top-label confidence; ECE(mass) = equal-mass bins; RMSCE(db) = the "
                   "debiased root-mean-square error of Kumar et al. 2019 (bin sampling noise subtracted, so near 0 when "
                   "the miscalibration is within noise); smECE = smooth ECE of Blasiok & Nakkiran 2024 (no bins).")
TEMPERATURE_NOTE = ("Note: temperature scaling divides both answer logits by T > 0, which never changes which is larger: "
                    "two-token accuracy, per-class accuracy and ROC-AUC are unchanged by construction. Only a method that "
                    "moves the decision boundary (platt, beta, isotonic, contextual) or a dev-tuned threshold can change them.")


# ------------------------------------------------------------------------------------------ formatting
def fmt_value(key: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}%" if key in PERCENT else f"{value:.3f}"


def fmt_mean_sd(key: str, mean: float, sd: float | None) -> str:
    """``83.3% ± 0.0%`` for accuracies, ``0.170 ± 0.010`` otherwise; ``± n/a`` when the SD is undefined (one seed)."""
    sd_text = "n/a" if sd is None or (isinstance(sd, float) and math.isnan(sd)) else fmt_value(key, sd)
    return f"{fmt_value(key, mean)} ± {sd_text}"


NONNEGATIVE = {"nll", "brier_reliability", "brier_resolution"}  # metrics in [0, inf)


def seed_interval(values: Sequence[float], key: str, ci: float) -> dict[str, float]:
    """Mean, SD and Student-t interval across seeds, clipped to the metric's range ([0, 1] for ``BOUNDED``, [0, inf)
    for ``NONNEGATIVE``), since a t-interval ignores it. summary.txt and summary.json both use it."""
    t = t_interval(values, ci)
    if key in BOUNDED or key in NONNEGATIVE:
        t["lo"] = max(t["lo"], 0.0)
    if key in BOUNDED:
        t["hi"] = min(t["hi"], 1.0)
    return t


def study_lines(per_seed: Sequence[Mapping[str, float]], *, ci: float = 0.95, extra: bool = False,
                with_interval: bool = False) -> list[str]:
    """The study's summary lines (``Overall:   83.3% ± 0.0%`` ...) from one metrics dict per seed."""
    lines = []
    for label, key in STUDY_LINES + (EXTRA_LINES if extra else ()):
        t = seed_interval([_num(m.get(key)) for m in per_seed], key, ci)
        text = f"{label + ':':<11}{fmt_mean_sd(key, t['mean'], t['sd'])}"
        if with_interval and t["k"] >= 2 and t["sd"] == 0:  # a zero-width interval would claim certainty
            text = f"{text:<28}[the {t['k']} seeds agree: no spread to make a t-CI of]"
        elif with_interval and t["k"] >= 2:
            text = f"{text:<28}[{int(round(100 * ci))}% t-CI {fmt_value(key, t['lo'])}, {fmt_value(key, t['hi'])}]"
        lines.append(text)
    return lines


def _num(v) -> float:
    """A metric value as a float: null (undefined, as evaluate writes NaN) is NaN."""
    return math.nan if v is None else float(v)


# ------------------------------------------------------------------------------------------ reading
def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: file not found; {what}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err}); re-run the stage that writes it") from None


# AGG_KEYS that evaluate writes as null where undefined: a class absent from the test clips (per-class and balanced
# accuracy, ROC-AUC) or fewer than 2 clips (the debiased ECE); every other one always has a value
MAY_BE_NULL = frozenset({"acc_speech", "acc_nonspeech", "balanced_accuracy", "roc_auc", "ece_debiased"})


def _rerun(path: Path) -> str:
    """How to rewrite a test metrics file: ``dvc repro evaluate@<seed>`` for a seed's, else the references stage."""
    if layout.names_a_seed(path.name):
        return f"re-run `dvc repro evaluate@{path.stem.rpartition('_')[2]}`, which writes it"
    return "re-run `dvc repro references`, which writes it"


def _block(result: dict, path: Path, series: str) -> dict:
    """``result[series]`` of the test metrics file ``path``, refused with a :class:`UserError` unless every
    :data:`AGG_KEYS` value is a number (or null, for :data:`MAY_BE_NULL`)."""
    block = result.get(series)
    if not isinstance(block, dict):
        raise UserError(f"{path}: no '{series}' block; {_rerun(path)}")
    for key in AGG_KEYS:
        if key not in block:
            raise UserError(f"{path}: no value for '{series}.{key}'; {_rerun(path)}")
        v = block[key]
        undefined = v is None or (isinstance(v, float) and math.isnan(v))
        if undefined and key not in MAY_BE_NULL:
            raise UserError(f"{path}: '{series}.{key}' is null, which evaluate never writes for it; {_rerun(path)}")
        if not undefined and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise UserError(f"{path}: '{series}.{key}' is {json.dumps(v)}, not a number; {_rerun(path)}")
    return block


def aggregate(seeds: Sequence[int], references: Sequence[str], *, ci: float = 0.95, n_bins: int = 15,
              eval_sets: Sequence[str] = ()) -> dict:
    """Build and write the summary files; return the summary JSON. ``eval_sets``: the names of your evaluation sets,
    whose ``metrics/eval_sets/<name>.json`` each get a block."""
    seed_results, seed_cal = {}, {}
    for s in seeds:
        lay = layout.seed_files(s)
        seed_results[lay.system] = _read_json(lay.test_json, f"run the evaluate stage for seed {s}")
        seed_cal[lay.system] = _read_json(lay.calibration_json, f"run the calibrate stage for seed {s}")
    ref_results, skipped = {}, {}
    for name in references:
        lay = SystemFiles(name, reference=True)
        if lay.test_json.is_file():
            ref_results[name] = {"test": _read_json(lay.test_json, ""),
                                 "calibration": _read_json(lay.calibration_json, "re-run the references stage")}
        else:
            skipped[name] = f"{lay.test_json} absent"
            log.info("reference %s skipped: %s (its predictions are absent, e.g. a switched-off detector)", name,
                     skipped[name])

    fitted = sorted({r.get("method_fitted", "?") for r in seed_results.values()})
    requested = sorted({c.get("method_requested", "?") for c in seed_cal.values()})
    summary: dict = {"seeds": list(seeds), "method_requested": requested[0] if len(requested) == 1 else requested,
                     "method_fitted": fitted, "fine_tuned": {}, "per_seed": {}, "references": {}}
    blocks = {n: {series: _block(r, SystemFiles(n).test_json, series) for series in SERIES} for n, r in seed_results.items()}
    for series in SERIES:
        summary["fine_tuned"][series] = {}
        for key in AGG_KEYS:
            vals = [_num(b[series].get(key)) for b in blocks.values()]
            t = seed_interval(vals, key, ci)
            summary["fine_tuned"][series][key] = {k: (round(v, 6) if isinstance(v, float) else v)
                                                  for k, v in t.items() if k != "k"}
    tuned = [r["tuned_threshold"] for r in seed_results.values() if "tuned_threshold" in r]
    if tuned:
        summary["fine_tuned"]["tuned_threshold"] = {
            key: {k: round(v, 6) for k, v in seed_interval([_num(t[key]) for t in tuned], key, ci).items() if k != "k"}
            for key in ("threshold", "accuracy", "acc_speech", "acc_nonspeech", "balanced_accuracy")}
    for name, r in seed_results.items():
        summary["per_seed"][name] = {
            "params": seed_cal[name].get("params", {}), "method_fitted": seed_cal[name].get("method_fitted"),
            **{series: {k: r[series].get(k) for k in ("accuracy", "acc_speech", "acc_nonspeech", "roc_auc", "ece",
                                                       "ece_smooth", "nll", "brier")} for series in SERIES},
            "delta_ci": r.get("delta_ci", {})}
    for name, rr in ref_results.items():
        r = rr["test"]
        checked = {series: _block(r, SystemFiles(name, reference=True).test_json, series) for series in SERIES}
        summary["references"][name] = {
            "method_fitted": r.get("method_fitted"), "params": rr["calibration"].get("params", {}),
            **{series: {k: block.get(k) for k in AGG_KEYS} for series, block in checked.items()}}
    summary["skipped"] = skipped
    summary["eval_sets"] = {name: _read_json(layout.eval_set_metrics(name), f"run the evaluate_eval_set@{name} stage")
                            for name in eval_sets}
    summary["group_level"] = group_level(seed_results, ref_results)
    summary["per_group"] = per_group(seed_results, ref_results, ci)
    write_json(layout.SUMMARY_JSON, summary)
    write_headlines(headlines(summary, seed_results, ref_results))
    write_text(layout.SUMMARY_TXT, summary_text(summary, seed_results, seed_cal, ref_results, ci))
    _plots(seed_results, n_bins, list(ref_results))
    return summary


# ------------------------------------------------------------------------------------------ headline
def _headline(blocks: Mapping[str, Mapping]) -> dict:
    return {series: {key: round(_num(blocks[series].get(name)), 4) for key, name in HEADLINE_KEYS} for series in SERIES}


def _seed_means(fine_tuned: Mapping[str, Mapping]) -> dict:
    return {s: {k: v["mean"] for k, v in fine_tuned[s].items()} for s in SERIES}


def headlines(summary: dict, seed_results: dict, ref_results: dict) -> dict[Path, dict]:
    """{headline file (:func:`layout.headline_json`): {acc, bacc, auc, ece, sece, nll, brier}}, rounded to 4 decimals,
    for both :data:`SERIES` of every system on test and on each evaluation set of ``summary``; ``fine_tuned``
    holds the means over seeds."""
    def files(systems: Mapping[str, Mapping], eval_set: str | None = None) -> dict[Path, dict]:
        return {layout.headline_json(system, series, eval_set): values
                for system, blocks in systems.items() for series, values in _headline(blocks).items()}

    out = files({"fine_tuned": _seed_means(summary["fine_tuned"]), **seed_results,
                 **{name: rr["test"] for name, rr in ref_results.items()}})
    for name, block in summary["eval_sets"].items():
        out |= files({"fine_tuned": _seed_means(block["fine_tuned"]), **block["systems"]}, eval_set=name)
    return out


def write_headlines(files: Mapping[Path, dict]) -> None:
    """Replace ``metrics/headline/`` whole (no file of a system or set that is gone stays behind)."""
    with atomic_dir(layout.HEADLINE_DIR) as tmp:
        for path, values in files.items():
            path = tmp / path.relative_to(layout.HEADLINE_DIR)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, values)


# ------------------------------------------------------------------------------------------ groups
def group_level(seed_results: dict, ref_results: dict) -> dict:
    """Every system's group-bootstrap intervals (``ci_group``, ``delta_ci_group`` of its test metrics), as evaluate wrote them."""
    systems = {**seed_results, **{name: rr["test"] for name, rr in ref_results.items()}}
    first = next(iter(seed_results.values()))
    return {**first.get("group_bootstrap", {}), "systems": {
        name: {**{series: r[series].get("ci_group", {}) for series in SERIES}, "delta": r.get("delta_ci_group", {})}
        for name, r in systems.items()}}


def per_group(seed_results: dict, ref_results: dict, ci: float) -> dict:
    """Each metric on each test group: the fine-tuned seeds' mean, SD and t-interval; each reference system's value."""
    groups = next(iter(seed_results.values())).get("per_group", {})
    tuned = {}
    for g, block in groups.items():
        tuned[g] = {"n": block["n"], "n_speech": block["n_speech"]}
        for series in SERIES:
            tuned[g][series] = {
                key: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in seed_interval(
                    [_num(r["per_group"][g][series].get(key)) for r in seed_results.values()], key, ci).items() if k != "k"}
                for key in block[series]}
    return {"fine_tuned": tuned, "references": {name: rr["test"].get("per_group", {}) for name, rr in ref_results.items()}}


def _interval_text(key: str, block: dict | None) -> str:
    if not block or block.get("lo") is None:
        return "none"
    return f"[{fmt_value(key, block['lo'])}, {fmt_value(key, block['hi'])}]"


def _missing_intervals(blocks) -> tuple[bool, list[str]]:
    """Whether none of these group-bootstrap results has an interval, and the reasons given where one is missing."""
    blocks = list(blocks)
    reasons = sorted({b["reason"] for b in blocks if b.get("lo") is None and b.get("reason")})
    return all(b.get("lo") is None for b in blocks), reasons


def group_lines(summary: dict, ci: float) -> list[str]:
    """The group-level view: group-bootstrap intervals where the groups allow one, else why not; the per-group table."""
    info = summary["group_level"]
    n_groups = info.get("n_groups")
    pct = int(round(100 * ci))
    out = [f"Group-level view: a new speaker or recording is a new group, and the test split has {n_groups} groups"]
    none, reasons = _missing_intervals(b for sys in info["systems"].values() for series in SERIES
                                       for b in sys[series].values())
    if n_groups is not None and none:
        out += [f"  No group-level interval: {'; '.join(reasons)}.",
                "  The table below (each metric on each group alone) is the group-level evidence."]
    else:
        out.append(f"  {pct}% group-bootstrap intervals ({info.get('resampled')}; {info.get('rule')}; 'none': see below)")
        for name, sys in info["systems"].items():
            for series in SERIES:
                cells = [f"{label} {_interval_text(key, sys[series].get(key))}"
                         for label, key in (("accuracy", "accuracy"), ("ROC-AUC", "roc_auc"), ("ECE", "ece"),
                                            ("smECE", "ece_smooth"))]
                out.append(f"  {name:<20}{series:<14}" + "; ".join(cells))
            d = sys["delta"].get("ece")
            if d:
                out.append(f"  {name:<20}{'cal - uncal':<14}ECE {d['delta']:+.3f} "
                           + (f"[{d['lo']:+.3f}, {d['hi']:+.3f}] {d['verdict']}" if d.get("lo") is not None
                              else d["verdict"]))
        if reasons:
            out.append("  none: " + "; ".join(reasons))
    out += ["", "Per test group (fine-tuned: mean ± SD over seeds; reference systems: one run each)"]
    header = f"{'group':<26}{'clips':>9}  {'system':<20}{'series':<14}" + "".join(f"{label:>16}" for label, _ in GROUP_COLUMNS)
    out += [header, "-" * len(header)]
    k = len(summary["seeds"])
    for g, block in summary["per_group"]["fine_tuned"].items():
        clips = f"{block['n']} ({block['n_speech']} S)"
        for series in SERIES:
            cells = [fmt_mean_sd(key, block[series][key]["mean"], block[series][key]["sd"]) if k > 1
                     else fmt_value(key, block[series][key]["mean"]) for _, key in GROUP_COLUMNS]
            out.append(f"{g:<26}{clips:>9}  {f'fine-tuned (k={k})':<20}{series:<14}" + "".join(f"{c:>16}" for c in cells))
        for name, groups in summary["per_group"]["references"].items():
            if g not in groups:
                continue
            for series in SERIES:
                cells = [fmt_value(key, _num(groups[g][series].get(key))) for _, key in GROUP_COLUMNS]
                out.append(f"{'':<26}{'':>9}  {name:<20}{series:<14}" + "".join(f"{c:>16}" for c in cells))
    return out


# ------------------------------------------------------------------------------------------ eval sets
def eval_set_lines(name: str, block: dict, k: int, ci: float) -> list[str]:
    """One evaluation set's block: every system, uncalibrated beside calibrated, and its group-level intervals."""
    n, n_speech = block["n"], block["n_speech"]
    out = [f"Evaluation set '{name}': {n} clips ({n_speech} SPEECH, {n - n_speech} NONSPEECH) in {block['n_groups']} "
           "groups; each system's dev-fitted calibrator, unchanged"]
    header = f"{'system':<20}{'series':<18}" + "".join(f"{label:>16}" for label, _ in TABLE_COLUMNS)
    out += [header, "-" * len(header)]
    for series in SERIES:
        agg = block["fine_tuned"][series]
        cells = [fmt_mean_sd(key, agg[key]["mean"], agg[key]["sd"]) if k > 1 else fmt_value(key, agg[key]["mean"])
                 for _, key in TABLE_COLUMNS]
        out.append(f"{f'fine-tuned (k={k})':<20}{series:<18}" + "".join(f"{c:>16}" for c in cells))
    for system, entry in block["systems"].items():
        if system.startswith("seed_"):
            continue
        for series in SERIES:
            label = series if series == "uncalibrated" else f"cal:{entry['method_fitted'].split(' ')[0]}"
            out.append(f"{system:<20}{label:<18}" + "".join(f"{fmt_value(key, _num(entry[series].get(key))):>16}"
                                                              for _, key in TABLE_COLUMNS))
    intervals = [(system, series, entry[series]["ci_group"]) for system, entry in block["systems"].items()
                 for series in SERIES]
    none, reasons = _missing_intervals(b for _, _, g in intervals for b in g.values())
    if none:
        out.append(f"  No group-level interval: {'; '.join(reasons)}.")
        return out
    out.append(f"  {int(round(100 * ci))}% group-bootstrap intervals ({block['n_groups']} groups; 'none': "
               f"{'; '.join(reasons) or 'see the rule in summary.json'})")
    for system, series, g in intervals:
        out.append(f"  {system:<20}{series:<14}" + "; ".join(f"{label} {_interval_text(key, g.get(key))}" for label, key in
                                                           (("accuracy", "accuracy"), ("ROC-AUC", "roc_auc"), ("ECE", "ece"))))
    return out


# ------------------------------------------------------------------------------------------ text
def _series_title(series: str, summary: dict, seed_cal: dict) -> str:
    if series == "uncalibrated":
        return "Uncalibrated (T = 1.0, the model's own softmax over A/B)"
    fitted = {c.get("method_fitted") for c in seed_cal.values()}
    params = "; ".join(f"{n}: " + ", ".join(f"{k}={v:.4g}" for k, v in c.get("params", {}).items())
                       for n, c in seed_cal.items())
    return f"Calibrated ({summary['method_requested']} -> {', '.join(sorted(map(str, fitted)))}, fitted on dev; {params})"


def summary_text(summary: dict, seed_results: dict, seed_cal: dict, ref_results: dict, ci: float) -> str:
    first = next(iter(seed_results.values()))
    k = len(seed_results)
    pct = int(round(100 * ci))
    out = [f"Multi-seed summary: fine-tuned, seeds {', '.join(str(s) for s in summary['seeds'])} (k={k}); "
           f"test split: {first.get('n')} clips ({first.get('n_speech')} SPEECH, {first.get('n') - first.get('n_speech')} "
           f"NONSPEECH) in {first.get('n_groups', '?')} groups",
           f"Values: mean ± SD across seeds, [{pct}% Student-t interval across seeds, clipped to the metric's range]"
           if k >= 2 else "Values: the one seed's value, '± n/a' (1 seed: no interval across seeds, nor an SD)",
           ""]
    for series in SERIES:
        out.append(_series_title(series, summary, seed_cal))
        out += study_lines([r[series] for r in seed_results.values()], ci=ci, extra=True, with_interval=True)
        out.append("")
    if "tuned_threshold" in summary["fine_tuned"]:
        t = summary["fine_tuned"]["tuned_threshold"]
        out.append("Calibrated with the dev-tuned decision threshold (reported separately)")
        out.append(f"{'Threshold:':<11}{t['threshold']['mean']:.3f} ± {fmt_value('x', t['threshold']['sd'])}")
        for label, key in (("Overall", "accuracy"), ("SPEECH", "acc_speech"), ("NONSPEECH", "acc_nonspeech")):
            out.append(f"{label + ':':<11}{fmt_mean_sd(key, t[key]['mean'], t[key]['sd'])}")
        out.append("")
    out.append(f"Calibrated minus uncalibrated on the same test clips ({pct}% intervals: paired clip bootstrap, which "
               "describes these clips; beside it the paired group bootstrap, which is about a new group, or why it has none):")
    for name, r in seed_results.items():
        lead = f"  {name:<10} "
        for key, label in (("ece", "ECE"), ("nll", "NLL"), ("brier", "Brier"), ("accuracy", "accuracy")):
            d = r.get("delta_ci", {}).get(key)
            if d:
                scale, unit = (100.0, " pts") if key == "accuracy" else (1.0, "")
                out.append(f"{lead}{label:<9}{scale * d['delta']:+.3f}{unit} {paired_difference_text(d, scale)} on these "
                           f"clips; over groups: {_group_delta_text(r.get('delta_ci_group', {}).get(key), scale)}")
                lead = " " * len(lead)
    out += ["", ESTIMATORS_NOTE, "", AURC_NOTE]
    if "temperature" in summary.get("method_fitted", []) or summary.get("method_requested") == "temperature":
        out += ["", TEMPERATURE_NOTE]
    out += ["", "All systems on test (fine-tuned: mean ± SD over seeds; reference systems: one run each)"]
    out += _table(summary, seed_results, ref_results)
    for name, reason in summary.get("skipped", {}).items():
        out.append(f"  (skipped {name}: {reason})")
    notes = [(name, note) for name, c in seed_cal.items() for note in c.get("notes", [])]
    notes += [(name, note) for name, rr in ref_results.items() for note in rr["calibration"].get("notes", [])]
    if notes:
        out += ["", "Notes on the dev fits:"] + [f"  {name}: {note}" for name, note in notes]
    for name, block in summary.get("eval_sets", {}).items():
        out += ["", *eval_set_lines(name, block, k, ci)]
    out += ["", *group_lines(summary, ci)]
    if layout.LEARNING_CURVE_TXT.is_file():  # the learning_curve stage's table, as it wrote it
        out += ["", layout.LEARNING_CURVE_TXT.read_text().rstrip("\n")]
    out += ["", f"Caveat: the clip-bootstrap intervals above resample test clips; clips of one group (speaker / "
                f"recording) are correlated and the test split has {first.get('n_groups', '?')} groups, so they "
                "describe these groups, not a new one (the group-level view above does). "
                + (f"The t-interval across {k} seeds covers training randomness only." if k >= 2 else
                   "1 seed: no interval across seeds, so nothing here measures training randomness.")]
    return "\n".join(out) + "\n"


def _group_delta_text(d: dict | None, scale: float) -> str:
    """A paired group-bootstrap difference in words (:func:`~speech_calibration.stats.resampling.paired_difference_text`),
    or why there is none."""
    return paired_difference_text(d, scale) if d else "not computed (no groups in the test predictions)"


def _table(summary: dict, seed_results: dict, ref_results: dict) -> list[str]:
    header = f"{'system':<20}{'series':<18}" + "".join(f"{label:>16}" for label, _ in TABLE_COLUMNS)
    lines = [header, "-" * len(header)]
    k = len(seed_results)
    for series in SERIES:
        cells = []
        for _, key in TABLE_COLUMNS:
            agg = summary["fine_tuned"][series][key]
            cells.append(fmt_mean_sd(key, agg["mean"], agg["sd"]) if k > 1 else fmt_value(key, agg["mean"]))
        lines.append(f"{f'fine-tuned (k={k})':<20}{series:<18}" + "".join(f"{c:>16}" for c in cells))
    for name, rr in ref_results.items():
        for series in SERIES:
            block = rr["test"][series]
            label = series if series == "uncalibrated" else f"cal:{rr['test'].get('method_fitted')}"
            shown = f"{name} (k={k})" if name == layout.ENSEMBLE else name
            lines.append(f"{shown:<20}{label:<18}" + "".join(f"{fmt_value(key, _num(block.get(key))):>16}"
                                                               for _, key in TABLE_COLUMNS))
    if layout.ENSEMBLE in ref_results:
        lines.append(f"ensemble (k={k}): one system whose answer log-odds are the mean of the {k} seeds' (fitted on dev "
                     "and tested like the others).")
    return lines


# ------------------------------------------------------------------------------------------ plots
def _test_clips(files: SystemFiles) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, p uncalibrated, p calibrated) of one system's test clips, from evaluate's ``test_calibrated.csv``."""
    path = files.test_calibrated_csv
    if not path.is_file():
        raise UserError(f"{path}: file not found; run the evaluate stage for {files.system}")
    df = pd.read_csv(path, dtype={"label": str})
    missing = [c for c in ("label", "p_speech_uncalibrated", "p_speech") if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; re-run the evaluate stage")
    return ((df["label"] == "SPEECH").to_numpy(np.int64), df["p_speech_uncalibrated"].to_numpy(float),
            df["p_speech"].to_numpy(float))


def risk_coverage_rows(system: str, series: Mapping[str, np.ndarray], y: np.ndarray) -> list[dict]:
    """Plot rows of the risk-coverage curve of every series (top-label confidence ranks the clips)."""
    rows = []
    for name, p in series.items():
        risk = metrics.risk_coverage(*metrics.top_label(y, p))
        rows += [{"system": f"{system} {name}", "coverage": round((k + 1) / len(y), 6), "risk": float(r)}
                 for k, r in enumerate(risk)]
    return rows


def _plots(seed_results: dict, n_bins: int, references: Sequence[str] = ()) -> None:
    clips = [_test_clips(SystemFiles(name)) for name in seed_results]
    y = np.concatenate([c[0] for c in clips])
    series = {"uncalibrated": np.concatenate([c[1] for c in clips]), "calibrated": np.concatenate([c[2] for c in clips])}
    curves = risk_coverage_rows(f"fine-tuned ({len(seed_results)} seeds pooled)", series, y)
    for name in references:
        ry, pu, pc = _test_clips(SystemFiles(name, reference=True))
        curves += risk_coverage_rows(name, {"uncalibrated": pu, "calibrated": pc}, ry)
    write_csv(layout.SUMMARY_PLOTS_DIR / "risk_coverage.csv", pd.DataFrame(curves))
    rows = reliability_rows("fine-tuned (pooled seeds)", series, y, n_bins=n_bins)
    write_csv(layout.SUMMARY_PLOTS_DIR / "reliability_pooled.csv", rows_frame(rows))
    # "system" = seed and series, so that dvc's by-system bar template shows one bar per seed and series
    table = [{"system": f"{name} {series_name}", "seed": name, "series": series_name, "metric": key,
              "value": r[series_name].get(key)}
             for name, r in seed_results.items() for series_name in SERIES
             for key in ("accuracy", "acc_speech", "acc_nonspeech", "roc_auc", "ece", "ece_smooth", "brier", "nll")]
    plots = layout.SUMMARY_PLOTS_DIR
    write_csv(plots / "per_seed.csv", pd.DataFrame([row for row in table if row["metric"] != "nll"]))  # [0, 1] metrics
    legend = {k: f"{k} (pooled ECE {float(metrics.ece(*metrics.top_label(y, p), n_bins)):.3f})" for k, p in series.items()}
    plot_reliability(plots / "reliability_pooled.png", rows, kinds=("predicted", "SPEECH", "NONSPEECH"),
                     title=f"Test reliability, {len(seed_results)} seeds pooled ({len(y)} predictions)", legend=legend)
    plot_per_seed(plots / "per_seed.png", table, title="Per seed: uncalibrated vs calibrated (test)",
                  metrics_to_plot=(("accuracy", "accuracy"), ("acc_speech", "SPEECH accuracy"), ("ece", "ECE"),
                                   ("nll", "NLL")))
