"""The study's scoring command line, kept for people migrating from it: a thin wrapper over ``stages.predict``.

    python scripts/evaluate_with_logits.py --checkpoint checkpoints/calibrated_v1/seed_42/final \\
        --test_csv data/processed/grouped_split/dev_metadata.csv --temperature 1.0 \\
        --output_csv results/calibration/seed_42_dev_uncalibrated.csv

Writes the predictions CSV of the pipeline (clip_id, group_id, label, ground_truth_token, logit_A,
logit_B, p_speech, predicted_token, ...) with ``p_speech`` at the given temperature, and prints the
study's summary lines. A temperature never changes ``predicted_token`` (dividing both logits by T > 0
keeps the larger one larger). ``--checkpoint none`` scores the base model (zero-shot).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from speech_calibration import params as params_mod
from speech_calibration.calibration.calibrators import TemperatureScaling
from speech_calibration.data.audio import load_clips
from speech_calibration.data import schema
from speech_calibration.errors import UserError  # noqa: E402
from speech_calibration.cli import run
from speech_calibration.fileio import write_csv
from speech_calibration.model.scoring import Scorer, predictions_frame


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="adapter folder, or 'none' for the base model")
    p.add_argument("--test_csv", type=Path, required=True, help="a metadata CSV (data contract)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--output_csv", type=Path, required=True)
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args(argv)
    if not args.temperature > 0:
        raise UserError(f"--temperature: {args.temperature} must be positive")
    params = params_mod.load(args.params)
    scorer = Scorer(params, None if args.checkpoint == "none" else Path(args.checkpoint))
    meta = schema.read_metadata(args.test_csv, require_both_classes=False)
    frame = predictions_frame(meta, scorer.score(load_clips(list(meta["audio_file"]), 16000)), params.prompt)
    frame[schema.P_SPEECH] = TemperatureScaling({"temperature": args.temperature}).predict_proba(
        frame[schema.LOGIT_A], frame[schema.LOGIT_B])
    frame["temperature"] = args.temperature
    write_csv(args.output_csv, frame)
    correct = frame[schema.PREDICTED_TOKEN] == frame[schema.GROUND_TRUTH_TOKEN]
    print(f"Overall:   {100 * correct.mean():.1f}% ({int(correct.sum())}/{len(frame)})")
    for label in schema.LABELS:
        rows = frame[schema.LABEL] == label
        if rows.any():
            print(f"{label + ':':<10} {100 * correct[rows].mean():.1f}% ({int(correct[rows].sum())}/{int(rows.sum())})")
    print(f"Wrote {args.output_csv}")


if __name__ == "__main__":
    run(main)
