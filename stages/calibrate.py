"""Stage ``calibrate``: fit a calibrator on a system's DEV predictions only, and report dev before/after.

    python -m stages.calibrate --seed 42           # predictions/seed_42/dev.csv
    python -m stages.calibrate --system zeroshot   # any system under predictions/ (reference systems: see stages.evaluate --references)

Reads ``predictions/<system>/dev.csv`` (and ``dev_content_free.csv`` when present, for ``contextual``
and as an ``auto`` candidate); never the test split. Params: ``calibration`` and ``evaluate.n_bins``.

Writes (``<system>`` = ``seed_42``; reference systems go under ``metrics/references`` and
``evaluation/references/<system>``, see :class:`Layout`):

* ``metrics/calibration/<system>.json``: the method, the fitted calibrator under ``"calibrator"``
  (``Calibrator.from_dict(json.load(f)["calibrator"])`` applies it to new logits), flat numeric
  ``params``, and dev NLL / ECE / Brier / accuracy ``uncalibrated`` and ``calibrated``;
* ``metrics/calibration/<system>_optimal_temp.txt``: the temperature as ``%.6f`` (the study's file);
  ``1.000000`` for ``none``; ``nan`` when the method has no temperature (platt, beta, isotonic, contextual);
* ``plots/calibration/<system>_dev_reliability.csv`` and ``.png``: dev reliability before/after.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages import calibration, metrics
from stages.cli import UserError, parser, run
from stages.fileio import write_csv, write_json, write_text

log = logging.getLogger("stages.calibrate")

PREDICTIONS_DIR = Path("predictions")
DEV_SUMMARY_KEYS = ("accuracy", "balanced_accuracy", "roc_auc", "nll", "brier", "ece", "ece_smooth")


@dataclass(frozen=True)
class Layout:
    """Where one system's calibrate / evaluate files go.

    Per-seed systems (``seed_42``) use the fixed per-file paths that dvc.yaml lists; reference systems
    (``zeroshot``, ``baselines/silero`` ...; may be absent) go under two folders the ``references``
    stage declares whole: ``metrics/references`` and ``evaluation/references``.
    """

    system: str
    reference: bool = False
    predictions_dir: Path = PREDICTIONS_DIR

    def predictions(self, split: str) -> Path:
        return self.predictions_dir / self.system / f"{split}.csv"

    def content_free(self, split: str = "dev") -> Path:
        return self.predictions_dir / self.system / f"{split}_content_free.csv"

    @property
    def _metrics(self) -> Path:
        return Path("metrics/references") if self.reference else Path("metrics")

    @property
    def _files(self) -> Path:
        return Path("evaluation/references") / self.system

    @property
    def calibration_json(self) -> Path:
        return self._metrics / "calibration" / f"{self.system}.json"

    @property
    def optimal_temp(self) -> Path:
        return self._metrics / "calibration" / f"{self.system}_optimal_temp.txt"

    @property
    def test_json(self) -> Path:
        return self._metrics / "test" / f"{self.system}.json"

    def reliability(self, split: str, ext: str) -> Path:
        if self.reference:
            return self._files / f"{split}_reliability.{ext}"
        return Path("plots") / ("calibration" if split == "dev" else split) / f"{self.system}_{split}_reliability.{ext}"

    @property
    def evaluation_dir(self) -> Path:
        return self._files if self.reference else Path("evaluation") / self.system

    @property
    def test_calibrated_csv(self) -> Path:
        return self.evaluation_dir / "test_calibrated.csv"

    @property
    def per_group_csv(self) -> Path:
        return self.evaluation_dir / "per_group.csv"


def system_name(seed: int | None, system: str | None) -> str:
    if (seed is None) == (system is None):
        raise UserError("give exactly one of --seed N or --system NAME")
    if system is not None:
        if not system or system.startswith("/") or ".." in Path(system).parts:
            raise UserError(f"--system '{system}': expected a folder name under predictions/, e.g. zeroshot or baselines/silero")
        return system
    return f"seed_{seed}"


# ------------------------------------------------------------------------------------------ reading
def read_dev(layout: Layout):
    """(frame, logit_A, logit_B, y, groups) of the system's dev predictions, validated."""
    from stages.schema import GROUP_ID, LABEL, LOGIT_A, LOGIT_B, label_to_int, read_predictions

    df = read_predictions(layout.predictions(split="dev"))
    return df, df[LOGIT_A].to_numpy(float), df[LOGIT_B].to_numpy(float), label_to_int(df[LABEL]), df[GROUP_ID].to_numpy()


def read_content_free(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The (logit_A, logit_B) of the content-free inputs, or None when the file does not exist."""
    if not path.is_file():
        return None
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    missing = [c for c in ("logit_A", "logit_B") if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; the header must include input, logit_A, logit_B")
    if len(df) == 0:
        raise UserError(f"{path}: no rows; re-run the predict stage")
    a = pd.to_numeric(df["logit_A"], errors="coerce").to_numpy(float)
    b = pd.to_numeric(df["logit_B"], errors="coerce").to_numpy(float)
    bad = ~(np.isfinite(a) & np.isfinite(b))
    if bad.any():
        raise UserError(f"{path} row {int(np.flatnonzero(bad)[0]) + 1}: logit_A / logit_B is not a finite number; "
                        "re-run the predict stage")
    return a, b


def read_logits_table(path: str | Path):
    """Read a study-style predictions CSV leniently: (logit_A, logit_B, y) plus the frame.

    Needs the truth as ``ground_truth_token`` (A / B, or SPEECH / NONSPEECH) or ``label``, and the score
    as ``logit_A`` and ``logit_B``, else ``p_speech`` or ``prob_A`` (turned into ``logit_A = log(p / (1 - p))``,
    ``logit_B = 0``, p clipped to [1e-12, 1 - 1e-12]).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, dtype={"ground_truth_token": str, "label": str, "predicted_token": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    truth_col = next((c for c in ("ground_truth_token", "label") if c in df.columns), None)
    if truth_col is None:
        raise UserError(f"{path}: no ground_truth_token (or label) column; the study's CSVs carry logit_A, logit_B, "
                        "ground_truth_token")
    truth = df[truth_col].astype(str).str.strip().str.upper()
    ok = truth.isin(["A", "B", "SPEECH", "NONSPEECH"]).to_numpy()
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        raise UserError(f"{path} row {row + 1}: {truth_col} '{df[truth_col].iloc[row]}' is not one of A, B, SPEECH, NONSPEECH")
    y = truth.isin(["A", "SPEECH"]).to_numpy().astype(np.int64)
    if "logit_A" in df.columns and "logit_B" in df.columns:
        a = pd.to_numeric(df["logit_A"], errors="coerce").to_numpy(float)
        b = pd.to_numeric(df["logit_B"], errors="coerce").to_numpy(float)
        cols = "logit_A / logit_B"
    else:
        col = next((c for c in ("p_speech", "prob_A") if c in df.columns), None)
        if col is None:
            raise UserError(f"{path}: no logit_A and logit_B (or p_speech / prob_A) columns")
        p = np.clip(pd.to_numeric(df[col], errors="coerce").to_numpy(float), 1e-12, 1 - 1e-12)
        a, b, cols = np.log(p) - np.log1p(-p), np.zeros(len(p)), col
    bad = ~(np.isfinite(a) & np.isfinite(b))
    if bad.any():
        raise UserError(f"{path} row {int(np.flatnonzero(bad)[0]) + 1}: {cols} is not a finite number")
    if len(df) == 0:
        raise UserError(f"{path}: no rows")
    return df, a, b, y


# ------------------------------------------------------------------------------------------ the work
def flat_params(cal: calibration.Calibrator) -> dict[str, float]:
    """The calibrator's scalar parameters (what ``dvc exp show`` can tabulate); isotonic: its number of knots."""
    out = {k: float(v) for k, v in cal.params.items() if isinstance(v, (int, float))}
    if cal.method == "isotonic":
        out["n_knots"] = float(len(cal.params["x"]))
    return out


def temperature_text(cal: calibration.Calibrator) -> str:
    t = cal.params.get("temperature", 1.0 if cal.method == "none" else math.nan)
    return f"{t:.6f}\n"


def dev_summary(y: np.ndarray, p: np.ndarray, n_bins: int, threshold: float = 0.5) -> dict[str, float]:
    m = metrics.binary_metrics(y, p, n_bins=n_bins, threshold=threshold, decomposition=False)
    return {k: round(float(m[k]), 6) for k in DEV_SUMMARY_KEYS}


def calibrate_system(layout: Layout, cfg, n_bins: int, *, allow_fallback: bool = False, plot: bool = True) -> dict:
    """Fit ``cfg`` (a :class:`stages.params.Calibration`) on the system's dev split; write its files; return the JSON."""
    from stages.reliability import plot_reliability, reliability_rows, rows_frame

    _, a, b, y, groups = read_dev(layout)
    content_free = read_content_free(layout.content_free("dev"))
    method, fallback = cfg.method, None
    if method == "contextual" and content_free is None:
        if not allow_fallback:
            raise UserError(f"{layout.content_free('dev')}: file not found; calibration.method=contextual needs the "
                            "content-free logits the predict stage writes (re-run predict, or choose another method)")
        method = "none"
        fallback = (f"contextual needs content-free inputs, which {layout.system} has none of "
                    f"({layout.content_free('dev')}); used none")
        log.info("%s: %s", layout.system, fallback)
    cal = calibration.fit(method, a, b, y, content_free=content_free, groups=groups,
                          temperature_bounds=tuple(cfg.temperature_bounds), tune_threshold=cfg.tune_threshold)
    if fallback:
        cal.info = {**cal.info, "fallback": fallback}
    p_before = metrics.p_speech_from_logits(a, b)
    p_after = cal.predict_proba(a, b)
    result = {
        "system": layout.system,
        "method": cfg.method,
        "fitted_method": cal.method,
        "params": flat_params(cal),
        "threshold": cal.threshold,
        "calibrator": cal.to_dict(),
        "dev": {"n": int(y.size), "n_speech": int(y.sum()),
                "uncalibrated": dev_summary(y, p_before, n_bins), "calibrated": dev_summary(y, p_after, n_bins)},
    }
    if cal.threshold != 0.5 or cfg.tune_threshold:
        result["dev"]["tuned_threshold"] = dev_summary(y, p_after, n_bins, cal.threshold)
    write_json(layout.calibration_json, result)
    write_text(layout.optimal_temp, temperature_text(cal))
    rows = reliability_rows(layout.system, {"uncalibrated": p_before, "calibrated": p_after}, y, n_bins=n_bins,
                            kinds=("predicted",))
    write_csv(layout.reliability("dev", "csv"), rows_frame(rows))
    if plot:
        plot_reliability(layout.reliability("dev", "png"), rows, title=f"{layout.system} dev: {_describe(cal)}",
                         legend=_legend(result["dev"]))
    before, after = result["dev"]["uncalibrated"], result["dev"]["calibrated"]
    log.info("%s: %s; dev NLL %.4f -> %.4f, ECE %.4f -> %.4f, Brier %.4f -> %.4f, accuracy %.1f%% -> %.1f%%",
             layout.system, _describe(cal), before["nll"], after["nll"], before["ece"], after["ece"], before["brier"],
             after["brier"], 100 * before["accuracy"], 100 * after["accuracy"])
    if "selected_by" in cal.info:
        log.info("%s: auto chose %s: %s", layout.system, cal.method, cal.info["reason"])
    return result


def _describe(cal: calibration.Calibrator) -> str:
    p = cal.params
    text = {"none": "no calibration", "temperature": f"temperature T={p.get('temperature', 0):.4f}",
            "platt": f"platt slope={p.get('slope', 0):.3f} bias={p.get('bias', 0):.3f}",
            "beta": f"beta a={p.get('a', 0):.3f} b={p.get('b', 0):.3f} c={p.get('c', 0):.3f}",
            "isotonic": f"isotonic ({len(p.get('x', []))} knots)",
            "contextual": f"contextual bias={p.get('bias', 0):.3f}"}[cal.method]
    return text + (f", threshold {cal.threshold:.3f}" if cal.threshold != 0.5 else "")


def _legend(dev: dict) -> dict[str, str]:
    return {k: f"{k} (ECE {dev[k]['ece']:.3f}, NLL {dev[k]['nll']:.3f})" for k in ("uncalibrated", "calibrated")}


# ---------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--seed", type=int, help="calibrate predictions/seed_<seed>/dev.csv")
    who.add_argument("--system", help="calibrate predictions/<system>/dev.csv (e.g. zeroshot, baselines/silero)")
    p.add_argument("--predictions-dir", default=str(PREDICTIONS_DIR), help="where predictions live (default: %(default)s)")
    args = p.parse_args(argv)
    from stages.params import load

    params = load(args.params)
    layout = Layout(system_name(args.seed, args.system), predictions_dir=Path(args.predictions_dir))
    calibrate_system(layout, params.calibration, params.evaluate.n_bins)


if __name__ == "__main__":
    run(main)
