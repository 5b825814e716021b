"""The study's temperature-calibration command line: a thin wrapper over :mod:`speech_calibration.calibration.fitting`.

    python scripts/calibrate_temperature.py \\
        --predictions_csv results/calibration/seed_42_dev_uncalibrated.csv \\
        --output_temp results/calibration/seed_42_optimal_temp.txt \\
        --plot results/calibration/seed_42_calibration_analysis.png

Fits T by minimising the dev NLL of ``softmax([logit_A, logit_B] / T)`` (the pipeline's ``calibrate``
stage with ``calibration.method: temperature``), writes T as ``%.6f``, and prints the study's summary
lines before -> after. The CSV needs ``ground_truth_token`` (A/B or SPEECH/NONSPEECH) and ``logit_A`` and
``logit_B`` (else ``p_speech`` or ``prob_A``); a ``label`` column must agree with the token on every row, with
the study's answers (A = SPEECH, B = NONSPEECH), and no ``clip_id`` may repeat. Accuracy is printed too: with
two answer tokens it cannot change, since dividing both logits by T > 0 keeps the larger one larger.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python scripts/...` from anywhere

from speech_calibration.calibration.fitting import fit  # noqa: E402
from speech_calibration.cli import run  # noqa: E402
from speech_calibration.data.study_tables import read_logits_table  # noqa: E402
from speech_calibration.errors import UserError  # noqa: E402
from speech_calibration.fileio import check_writable, write_text  # noqa: E402
from speech_calibration.stats import metrics  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictions_csv", type=Path, required=True,
                   help="dev predictions at T=1 (logit_A, logit_B, ground_truth_token)")
    p.add_argument("--output_temp", type=Path, required=True, help="where to write the optimal temperature (%%.6f)")
    p.add_argument("--plot", type=Path, default=None, help="reliability diagram before/after (PNG)")
    p.add_argument("--n_bins", type=int, default=15, help="ECE bins (default: %(default)s)")
    p.add_argument("--bounds", type=float, nargs=2, default=(0.01, 100.0), metavar=("LOW", "HIGH"),
                   help="search range of T (default: 0.01 100)")
    args = p.parse_args(argv)
    if args.n_bins < 2:
        raise UserError(f"--n_bins: {args.n_bins} must be at least 2")
    low, high = args.bounds
    if not (math.isfinite(high) and 0 < low < high):
        raise UserError(f"--bounds: {low:g} {high:g} must be two finite numbers 0 < LOW < HIGH, e.g. --bounds 0.01 100")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise UserError(f"--plot: {args.plot} must end in .png (the reliability diagram is a PNG)")
    for out in (args.output_temp, args.plot):  # before any work
        if out is not None:
            check_writable(out)
    _, a, b, y = read_logits_table(args.predictions_csv)
    cal = fit("temperature", a, b, y, temperature_bounds=(low, high))
    t = cal.params["temperature"]
    before = metrics.binary_metrics(y, metrics.p_speech_from_logits(a, b), n_bins=args.n_bins, decomposition=False)
    after = metrics.binary_metrics(y, cal.predict_proba(a, b), n_bins=args.n_bins, decomposition=False)
    lines = [f"Optimal temperature: T={t:.6f}" + (" (at a search bound)" if cal.info.get("at_bound") else ""),
             f"Dev clips: {len(y)} ({int(y.sum())} SPEECH, {int(len(y) - y.sum())} NONSPEECH)",
             f"{'NLL:':<11}{before['nll']:.4f} -> {after['nll']:.4f}",
             f"{'ECE:':<11}{before['ece']:.4f} -> {after['ece']:.4f}",
             f"{'smECE:':<11}{before['ece_smooth']:.4f} -> {after['ece_smooth']:.4f}",
             f"{'Brier:':<11}{before['brier']:.4f} -> {after['brier']:.4f}",
             f"{'Overall:':<11}{100 * before['accuracy']:.1f}% -> {100 * after['accuracy']:.1f}% "
             "(temperature scaling cannot change two-token accuracy)",
             f"{'SPEECH:':<11}{100 * before['acc_speech']:.1f}% -> {100 * after['acc_speech']:.1f}%",
             f"{'NONSPEECH:':<11}{100 * before['acc_nonspeech']:.1f}% -> {100 * after['acc_nonspeech']:.1f}%",
             f"Saved: {args.output_temp}"]
    if args.plot is not None:
        from speech_calibration.report.reliability import plot_reliability, reliability_rows

        rows = reliability_rows(args.predictions_csv.stem, {"uncalibrated": metrics.p_speech_from_logits(a, b),
                                                            "calibrated": cal.predict_proba(a, b)}, y, n_bins=args.n_bins)
        plot_reliability(args.plot, rows, kinds=("predicted", "SPEECH", "NONSPEECH"),
                         title=f"{args.predictions_csv.name}: temperature T={t:.3f}",
                         legend={"uncalibrated": f"T=1 (ECE {before['ece']:.3f})",
                                 "calibrated": f"T={t:.3f} (ECE {after['ece']:.3f})"})
        lines.append(f"Plot: {args.plot}")
    write_text(args.output_temp, f"{t:.6f}\n")  # last: a run that stopped early leaves no temperature behind
    print("\n".join(lines))


if __name__ == "__main__":
    run(main)
