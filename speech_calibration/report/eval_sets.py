"""Every system on one of your evaluation sets, with its dev-fitted calibrator, exactly as on test.

Systems: each fine-tuned seed of ``params.yaml: seeds`` and the zero-shot model (both required), the seed
ensemble when ``evaluate.references`` lists it (the seeds' scores of the set, their logits averaged clip by clip
as the ``ensemble`` stage averages dev and test: :func:`speech_calibration.model.ensemble.ensemble_predictions`),
and each reference detector of ``evaluate.references`` whose scores of the set exist (a detector switched off
has none). Each is evaluated by :func:`speech_calibration.report.evaluation.evaluate_arrays`, the code
that evaluates test, with its calibrator from ``models/calibrators/`` applied unchanged (a detector
the references stage did not calibrate is reported uncalibrated beside itself), and the set's groups
for the group-level intervals. :func:`evaluate_set` writes ``metrics/eval_sets/<name>.json``:

``n``, ``n_speech``, ``n_groups``, ``group_bootstrap`` (how groups were resampled, the interval rule) and
per system ``method_fitted`` and, per series (uncalibrated / calibrated), the metrics of ``KEYS`` and
``ci_group`` (group-bootstrap intervals of accuracy, ROC-AUC and ECE, or the reason there are none),
plus ``delta_ci_group`` (calibrated minus uncalibrated ECE and NLL); ``fine_tuned``: the seeds' mean,
SD and t-interval per series and metric.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from speech_calibration import layout
from speech_calibration.calibration import calibrators
from speech_calibration.data import schema
from speech_calibration.errors import UserError
from speech_calibration.fileio import write_json
from speech_calibration.layout import SystemFiles
from speech_calibration.model.ensemble import ensemble_predictions
from speech_calibration.params import Evaluate
from speech_calibration.report.evaluation import SERIES, evaluate_arrays
from speech_calibration.report.summary import seed_interval
from speech_calibration.stats import metrics

log = logging.getLogger(__name__)

KEYS = ("accuracy", "acc_speech", "acc_nonspeech", "balanced_accuracy", "roc_auc", "ece", "ece_smooth", "nll", "brier",
        "aurc")
GROUP_KEYS = ("accuracy", "roc_auc", "ece")
DELTA_KEYS = ("ece", "nll")


def systems(name: str, seeds: Sequence[int], references: Sequence[str]) -> list[tuple[str, list[Path], Path | None]]:
    """``(system, predictions CSVs, calibrator or None)`` of every system that scores the set (see the module doc):
    one CSV a system, and the seeds' CSVs for the ensemble, whose logits are their mean."""
    def csv(system: str) -> Path:
        return layout.eval_set_predictions_dir(name, system) / f"{name}.csv"

    def calibrator(system: str) -> Path | None:
        cal = SystemFiles(system, reference=True).calibrator
        return cal if cal.is_file() else None

    out = [(layout.seed_system(s), [csv(layout.seed_system(s))], layout.seed_files(s).calibrator) for s in seeds]
    if layout.ENSEMBLE in references and seeds:
        out.append((layout.ENSEMBLE, [csv(layout.seed_system(s)) for s in seeds], calibrator(layout.ENSEMBLE)))
    out.append((layout.ZEROSHOT, [csv(layout.ZEROSHOT)], SystemFiles(layout.ZEROSHOT, reference=True).calibrator))
    for ref in references:
        if ref.startswith(f"{layout.BASELINES}/") and csv(ref).is_file():
            out.append((ref, [csv(ref)], calibrator(ref)))
    return out


def _set_scores(path: Path, ids: np.ndarray, name: str):
    """One system's scores of the set, rows in the manifest's order."""
    preds = schema.read_predictions(path)
    if set(preds[schema.CLIP_ID]) != set(ids) or len(preds) != len(ids):
        raise UserError(f"{path}: its clips are not the set's ({layout.eval_set_csv(name)}); the scores are stale, "
                        "re-run its predict_eval_set / baselines_eval_set stage (dvc repro)")
    return preds.set_index(schema.CLIP_ID).loc[ids].reset_index()


def evaluate_set(name: str, seeds: Sequence[int], references: Sequence[str], cfg: Evaluate) -> dict:
    """Evaluate every system on the set and write ``metrics/eval_sets/<name>.json`` (see the module doc)."""
    manifest = schema.read_metadata(layout.eval_set_csv(name), check_audio=False, require_both_classes=False)
    ids = manifest[schema.CLIP_ID].to_numpy()
    y = schema.label_to_int(manifest[schema.LABEL])
    groups = manifest[schema.GROUP_ID].astype(str).to_numpy()
    out: dict = {"set": name, "n": int(len(y)), "n_speech": int(y.sum()), "n_groups": int(len(set(groups))),
                 "systems": {}}
    for system, paths, cal_path in systems(name, seeds, references):
        frames = {path: _set_scores(path, ids, name) for path in paths}
        preds = frames[paths[0]] if len(paths) == 1 else ensemble_predictions(frames)
        a, b = preds[schema.LOGIT_A].to_numpy(float), preds[schema.LOGIT_B].to_numpy(float)
        p_uncal = metrics.p_speech_from_logits(a, b)
        cal = calibrators.load(cal_path) if cal_path is not None else calibrators.NoCalibration()
        result = evaluate_arrays(y, p_uncal, cal.predict_proba(a, b), threshold=cal.threshold, n_bins=cfg.n_bins,
                                 n_bootstrap=cfg.n_bootstrap, ci=cfg.ci, seed=cfg.bootstrap_seed, groups=groups,
                                 log_odds=(a - b, cal.log_odds(a, b)))
        out.setdefault("group_bootstrap", result["group_bootstrap"])
        out["systems"][system] = {
            "method_fitted": cal.method if cal_path is not None else "none (no dev-fitted calibrator)",
            **{series: {**{k: result[series][k] for k in KEYS},
                        "ci_group": {k: result[series]["ci_group"][k] for k in GROUP_KEYS}} for series in SERIES},
            "delta_ci_group": {k: result["delta_ci_group"][k] for k in DELTA_KEYS}}
        log.info("eval set %s, %s: accuracy %.3f -> %.3f, ECE %.3f -> %.3f", name, system,
                 result["uncalibrated"]["accuracy"], result["calibrated"]["accuracy"], result["uncalibrated"]["ece"],
                 result["calibrated"]["ece"])
    tuned = [out["systems"][layout.seed_system(s)] for s in seeds]
    out["fine_tuned"] = {series: {k: {kk: (round(v, 6) if isinstance(v, float) else v) for kk, v in
                                      seed_interval([np.nan if t[series][k] is None else t[series][k] for t in tuned],
                                                    k, cfg.ci).items()}
                                  for k in KEYS} for series in SERIES}
    write_json(layout.eval_set_metrics(name), out)
    return out
