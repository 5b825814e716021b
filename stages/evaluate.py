"""Stage ``evaluate``: apply a system's dev-fitted calibrator to its TEST predictions; report both side by side.

    python -m stages.evaluate --seed 42          # predictions/seed_42/test.csv + metrics/calibration/seed_42.json
    python -m stages.evaluate --system zeroshot
    python -m stages.evaluate --references       # calibrate + evaluate every system of evaluate.references present

Params: ``evaluate`` (``--references`` also reads ``calibration``, since it calibrates too).

Writes, for ``<system>`` = ``seed_42`` (reference systems: ``metrics/references/test/<system>.json`` and
``evaluation/references/<system>/``):

* ``metrics/test/<system>.json``: ``{"uncalibrated": {...}, "calibrated": {...}, "delta_ci": {...}}``;
  each block holds accuracy, acc_speech, acc_nonspeech, balanced_accuracy, roc_auc, brier (+ Murphy
  reliability / resolution / uncertainty / within_bin), nll, ece, ece_mass, ece_debiased, ece_smooth, mce
  (estimators: :mod:`stages.metrics`) and ``ci``: 95% clip-bootstrap intervals of accuracy, ROC-AUC and each
  ECE; ``delta_ci``: paired-bootstrap calibrated-minus-uncalibrated of ECE, smooth ECE, NLL, Brier and
  accuracy with a verdict (better / worse / no clear difference); ``tuned_threshold`` when a dev-tuned
  decision threshold exists;
* ``evaluation/<system>/test_calibrated.csv``: the test predictions with uncalibrated and calibrated
  p(SPEECH) and predicted tokens; ``evaluation/<system>/per_group.csv``: accuracy per group;
* ``plots/test/<system>_test_reliability.csv`` and ``.png``: reliability for the predicted class and per class.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stages import metrics
from stages.calibrate import PREDICTIONS_DIR, Layout, calibrate_system, system_name
from stages.calibration import Calibrator
from stages.cli import UserError, parser, run
from stages.fileio import write_csv, write_json

log = logging.getLogger("stages.evaluate")

CI_KEYS = ("accuracy", "roc_auc", "ece", "ece_mass", "ece_debiased", "ece_smooth")
DELTA_KEYS = ("ece", "ece_smooth", "nll", "brier", "accuracy")
SERIES = ("uncalibrated", "calibrated")
REFERENCES_INDEX = Path("metrics/references/systems.json")


def load_calibrator(path: Path) -> Calibrator:
    if not path.is_file():
        raise UserError(f"{path}: file not found; run the calibrate stage first (dvc repro calibrate)")
    try:
        return Calibrator.from_dict(json.loads(path.read_text())["calibrator"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a calibration result ({type(err).__name__}: {err}); re-run the calibrate stage") from None
    except UserError as err:
        raise UserError(f"{path}: {err}") from None


def _r(x) -> float:
    return round(float(x), 6)


def evaluate_arrays(y: np.ndarray, p_uncal: np.ndarray, p_cal: np.ndarray, *, threshold: float = 0.5, n_bins: int = 15,
                    n_bootstrap: int = 2000, ci: float = 0.95, seed: int = 0) -> dict:
    """The metrics JSON of one system (see the module doc) from labels and the two p(SPEECH) columns."""
    from stages.stats import bootstrap_replicates, interval_summary, paired_difference

    series = {"uncalibrated": np.asarray(p_uncal, float), "calibrated": np.asarray(p_cal, float)}
    tuned = threshold != 0.5
    point = {name: metrics.binary_metrics(y, p, n_bins=n_bins) for name, p in series.items()}

    def stat(idx):
        out = {}
        yb = y[idx]
        for name, p in series.items():
            m = metrics.binary_metrics(yb, p[idx], n_bins=n_bins, decomposition=False)
            out.update({f"{name}/{k}": v for k, v in m.items()})
        if tuned:
            out["tuned/accuracy"] = metrics.accuracy(yb, metrics.predict(series["calibrated"][idx], threshold))
        return out

    reps = bootstrap_replicates(stat, len(y), n_boot=n_bootstrap, seed=seed)
    result: dict = {"n": int(len(y)), "n_speech": int(np.sum(y)), "n_bootstrap": n_bootstrap, "ci_level": ci}
    for name in SERIES:
        block = {k: _r(v) for k, v in point[name].items()}
        block["ci"] = {k: {kk: _r(vv) if isinstance(vv, float) else vv for kk, vv in
                           interval_summary(reps[f"{name}/{k}"], ci).items()} for k in CI_KEYS}
        result[name] = block
    result["delta_ci"] = {
        k: {kk: (_r(vv) if isinstance(vv, float) else vv) for kk, vv in paired_difference(
            point["uncalibrated"][k], point["calibrated"][k], reps[f"uncalibrated/{k}"], reps[f"calibrated/{k}"], ci=ci,
            lower_is_better=k in metrics.LOWER_IS_BETTER).items()}
        for k in DELTA_KEYS}
    if tuned:
        pred = metrics.predict(series["calibrated"], threshold)
        result["tuned_threshold"] = {
            "threshold": _r(threshold), "accuracy": _r(metrics.accuracy(y, pred)),
            "acc_speech": _r(metrics.class_accuracy(y, pred, 1)), "acc_nonspeech": _r(metrics.class_accuracy(y, pred, 0)),
            "balanced_accuracy": _r(metrics.balanced_accuracy(y, pred)),
            "ci": {"accuracy": {k: _r(v) if isinstance(v, float) else v
                                for k, v in interval_summary(reps["tuned/accuracy"], ci).items()}}}
    return result


def evaluate_system(layout: Layout, cfg, *, plot: bool = True) -> dict:
    """Evaluate one system on test with its dev-fitted calibrator (``cfg``: :class:`stages.params.Evaluate`)."""
    import pandas as pd

    from stages.reliability import plot_reliability, reliability_rows, rows_frame
    from stages.schema import (GROUND_TRUTH_TOKEN, GROUP_ID, LABEL, LOGIT_A, LOGIT_B, NONSPEECH, SPEECH, label_to_int,
                               read_predictions)

    cal = load_calibrator(layout.calibration_json)
    path = layout.predictions("test")
    df = read_predictions(path)
    y = label_to_int(df[LABEL])
    for cls in (SPEECH, NONSPEECH):
        if cls not in set(df[LABEL]):
            log.warning("%s: no %s clip: %s accuracy and ROC-AUC are undefined (NaN / null)", path, cls, cls)
    a, b = df[LOGIT_A].to_numpy(float), df[LOGIT_B].to_numpy(float)
    p_uncal = metrics.p_speech_from_logits(a, b)
    p_cal = cal.predict_proba(a, b)
    result = {"system": layout.system, "method": cal.method, "n_groups": int(df[GROUP_ID].nunique()), **evaluate_arrays(
        y, p_uncal, p_cal, threshold=cal.threshold, n_bins=cfg.n_bins, n_bootstrap=cfg.n_bootstrap, ci=cfg.ci,
        seed=cfg.bootstrap_seed)}
    write_json(layout.test_json, result)

    # calibrated predictions, per clip
    token = dict(zip(df[LABEL], df[GROUND_TRUTH_TOKEN].astype(str)))
    tok_s, tok_n = token.get(SPEECH, "A"), token.get(NONSPEECH, "B")
    out = df.copy()
    out["p_speech_uncalibrated"] = p_uncal
    out["predicted_token_uncalibrated"] = np.where(metrics.predict(p_uncal) == 1, tok_s, tok_n)
    out["p_speech"] = p_cal
    out["predicted_token"] = np.where(metrics.predict(p_cal) == 1, tok_s, tok_n)
    if cal.threshold != 0.5:
        out["predicted_token_tuned"] = np.where(metrics.predict(p_cal, cal.threshold) == 1, tok_s, tok_n)
    write_csv(layout.test_calibrated_csv, out)

    # per group
    rows = []
    for g, idx in df.groupby(GROUP_ID, sort=True).indices.items():
        yy = y[idx]
        row = {"group_id": g, "n": len(idx), "n_speech": int(yy.sum()),
               "accuracy_uncalibrated": float(metrics.accuracy(yy, metrics.predict(p_uncal[idx]))),
               "accuracy_calibrated": float(metrics.accuracy(yy, metrics.predict(p_cal[idx])))}
        if cal.threshold != 0.5:
            row["accuracy_tuned"] = float(metrics.accuracy(yy, metrics.predict(p_cal[idx], cal.threshold)))
        rows.append(row)
    write_csv(layout.per_group_csv, pd.DataFrame(rows))

    rel = reliability_rows(layout.system, {"uncalibrated": p_uncal, "calibrated": p_cal}, y, n_bins=cfg.n_bins)
    write_csv(layout.reliability("test", "csv"), rows_frame(rel))
    if plot:
        plot_reliability(layout.reliability("test", "png"), rel, kinds=("predicted", "SPEECH", "NONSPEECH"),
                         title=f"{layout.system} test ({cal.method})",
                         legend={k: f"{k} (ECE {result[k]['ece']:.3f})" for k in SERIES})
    u, c, d = result["uncalibrated"], result["calibrated"], result["delta_ci"]
    log.info("%s test (%d clips): accuracy %.1f%% -> %.1f%%, ROC-AUC %.3f -> %.3f, ECE %.3f -> %.3f "
             "(paired delta %+.3f [%+.3f, %+.3f]: %s)", layout.system, result["n"], 100 * u["accuracy"], 100 * c["accuracy"],
             u["roc_auc"], c["roc_auc"], u["ece"], c["ece"], d["ece"]["delta"], d["ece"]["lo"], d["ece"]["hi"],
             d["ece"]["verdict"])
    return result


def run_references(params, predictions_dir: Path = PREDICTIONS_DIR) -> dict:
    """Calibrate + evaluate every system of ``evaluate.references`` whose predictions exist; skip the others."""
    index: dict = {"evaluated": [], "skipped": {}}
    for d in (Path("metrics/references"), Path("evaluation/references")):
        d.mkdir(parents=True, exist_ok=True)
    for name in params.evaluate.references:
        layout = Layout(name, reference=True, predictions_dir=predictions_dir)
        missing = [str(p) for p in (layout.predictions("dev"), layout.predictions("test")) if not p.is_file()]
        if missing:
            reason = f"{', '.join(missing)} absent"
            log.info("reference %s skipped: %s (switched off or not yet predicted)", name, reason)
            index["skipped"][name] = reason
            continue
        calibrate_system(layout, params.calibration, params.evaluate.n_bins, allow_fallback=True)
        evaluate_system(layout, params.evaluate)
        index["evaluated"].append(name)
    write_json(REFERENCES_INDEX, index)
    return index


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--seed", type=int, help="evaluate predictions/seed_<seed>/test.csv")
    who.add_argument("--system", help="evaluate predictions/<system>/test.csv (e.g. zeroshot)")
    who.add_argument("--references", action="store_true",
                     help="calibrate and evaluate every system of evaluate.references that has predictions")
    p.add_argument("--predictions-dir", default=str(PREDICTIONS_DIR), help="where predictions live (default: %(default)s)")
    args = p.parse_args(argv)
    from stages.params import load

    params = load(args.params)
    if args.references:
        run_references(params, Path(args.predictions_dir))
        return
    layout = Layout(system_name(args.seed, args.system), predictions_dir=Path(args.predictions_dir))
    evaluate_system(layout, params.evaluate)


if __name__ == "__main__":
    run(main)
