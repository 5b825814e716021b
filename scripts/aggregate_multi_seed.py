"""The study's multi-seed aggregation command line: a thin wrapper over :mod:`speech_calibration.stats.metrics`
and :mod:`speech_calibration.report.summary`.

    python scripts/aggregate_multi_seed.py --model_name calibrated_v1 --seeds 42 123 456 \\
        --predictions_dir results/calibration --test_pattern "seed_{seed}_test_calibrated.csv" \\
        --output_file results/calibration/multi_seed_calibrated_summary.txt

For each seed reads ``<predictions_dir>/<test_pattern with {seed}>`` and prints (and writes) the study's
summary lines, mean ± SD over seeds: ``Overall:``, ``SPEECH:``, ``NONSPEECH:``, ``ECE:``, ``ROC-AUC:``.
A CSV needs ``ground_truth_token`` (A/B or SPEECH/NONSPEECH) and a score: p(SPEECH) is taken from
``p_speech`` (e.g. at the calibrated temperature), else ``prob_A``, else ``sigmoid(logit_A - logit_B)``; the
prediction from ``predicted_token`` when present, else ``p >= 0.5``. A ``label`` column must agree with the token
on every row, with the study's answers (A = SPEECH, B = NONSPEECH), and no ``clip_id`` may repeat.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python scripts/...` from anywhere

from speech_calibration.cli import run  # noqa: E402
from speech_calibration.data.study_tables import predicted_speech, probabilities, read_logits_table  # noqa: E402
from speech_calibration.errors import UserError  # noqa: E402
from speech_calibration.fileio import check_writable, write_text  # noqa: E402
from speech_calibration.report.summary import study_lines  # noqa: E402
from speech_calibration.stats import metrics  # noqa: E402


def seed_metrics(path: Path, n_bins: int) -> dict[str, float]:
    """The metrics of one seed's test CSV (see the module doc for the columns used)."""
    df, a, b, y = read_logits_table(path)
    p = probabilities(df, path)
    m = metrics.binary_metrics(y, metrics.p_speech_from_logits(a, b) if p is None else p, n_bins=n_bins,
                               decomposition=False)
    pred = predicted_speech(df, path)
    if pred is not None:
        m.update(accuracy=metrics.accuracy(y, pred), acc_speech=metrics.class_accuracy(y, pred, 1),
                 acc_nonspeech=metrics.class_accuracy(y, pred, 0), balanced_accuracy=metrics.balanced_accuracy(y, pred))
    return {k: float(v) for k, v in m.items()} | {"n": len(y)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name", required=True)
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--predictions_dir", type=Path, required=True)
    p.add_argument("--test_pattern", default="seed_{seed}_test_calibrated.csv",
                   help="file name per seed, with {seed} (default: %(default)s)")
    p.add_argument("--output_file", type=Path, required=True)
    p.add_argument("--n_bins", type=int, default=15, help="ECE bins (default: %(default)s)")
    args = p.parse_args(argv)
    if args.n_bins < 2:
        raise UserError(f"--n_bins: {args.n_bins} must be at least 2")
    repeated = sorted({s for s in args.seeds if args.seeds.count(s) > 1})
    if repeated:
        raise UserError(f"--seeds: {', '.join(map(str, repeated))} given twice; list each seed once")
    check_writable(args.output_file)
    if "{seed}" not in args.test_pattern:
        raise UserError(f"--test_pattern '{args.test_pattern}' must contain {{seed}}, e.g. seed_{{seed}}_test_calibrated.csv")
    try:
        files = {s: args.predictions_dir / args.test_pattern.format(seed=s) for s in args.seeds}
    except (KeyError, IndexError, ValueError) as err:
        raise UserError(f"--test_pattern '{args.test_pattern}': only {{seed}} may be substituted ({err})") from None
    per_seed = {s: seed_metrics(f, args.n_bins) for s, f in files.items()}
    n = {m["n"] for m in per_seed.values()}
    lines = [f"Model: {args.model_name}", f"Seeds: {', '.join(map(str, args.seeds))} (k={len(args.seeds)}); "
             f"test clips per seed: {', '.join(map(str, sorted(n)))}", "Mean ± SD across seeds:", ""]
    lines += study_lines(list(per_seed.values()))
    lines += ["", "Per seed:"]
    for s, m in per_seed.items():
        lines.append(f"  seed {s}: Overall {100 * m['accuracy']:.1f}%, SPEECH {100 * m['acc_speech']:.1f}%, "
                     f"NONSPEECH {100 * m['acc_nonspeech']:.1f}%, ECE {m['ece']:.3f}, ROC-AUC {m['roc_auc']:.3f}")
    text = "\n".join(lines) + "\n"
    write_text(args.output_file, text)
    print(text + f"Saved: {args.output_file}")


if __name__ == "__main__":
    run(main)
