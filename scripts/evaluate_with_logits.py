"""The study's scoring command line, kept for people migrating from it: a thin wrapper over
:mod:`speech_calibration.model.scoring`.

    python scripts/evaluate_with_logits.py --checkpoint checkpoints/calibrated_v1/seed_42/final \\
        --test_csv data/processed/grouped_split/dev_metadata.csv --temperature 1.0 \\
        --output_csv results/calibration/seed_42_dev_uncalibrated.csv

Writes the predictions CSV of the pipeline (clip_id, group_id, label, ground_truth_token, logit_A,
logit_B, p_speech, predicted_token, ...) with ``p_speech`` at the given temperature, and prints the
study's summary lines. A temperature never changes ``predicted_token`` (dividing both logits by T > 0
keeps the larger one larger). ``--checkpoint none`` scores the base model (zero-shot).
``--calibrator models/calibrators/seed_42.json`` applies a calibrator the pipeline fitted (any method)
instead of a temperature; its decision threshold then sets ``predicted_token``.

The clips are scored by the predict stage's own function (:func:`speech_calibration.model.scoring.score_csvs`),
so the logits are predict's: a clip longer than the model's audio window is refused, truncated or scored
as windows as ``audio.long_clips`` says, and a bad audio file's error names its CSV row. The CSV, its audio
files' headers and the ``--calibrator`` file are checked before the model loads (a clip too long for the window,
or audio that does not decode, is found while scoring).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python scripts/...` from anywhere

from speech_calibration import params as params_mod  # noqa: E402
from speech_calibration.calibration import calibrators  # noqa: E402
from speech_calibration.cli import run  # noqa: E402
from speech_calibration.data import schema  # noqa: E402
from speech_calibration.errors import UserError  # noqa: E402
from speech_calibration.fileio import check_writable, write_csv  # noqa: E402
from speech_calibration.model.scoring import Scorer, score_csvs  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="adapter folder, or 'none' for the base model")
    p.add_argument("--test_csv", type=Path, required=True, help="a metadata CSV (data contract)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--temperature", type=float, default=1.0, help="divide both logits by T (default: %(default)s)")
    how.add_argument("--calibrator", type=Path, help="apply a calibrator file the calibrate stage wrote")
    p.add_argument("--output_csv", type=Path, required=True)
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args(argv)
    if not (args.temperature > 0 and math.isfinite(args.temperature)):
        raise UserError(f"--temperature: {args.temperature} must be a positive finite number")
    check_writable(args.output_csv)
    params = params_mod.load(args.params)
    schema.read_metadata(args.test_csv, require_both_classes=False)  # inputs checked before the model loads
    cal = (calibrators.load(args.calibrator) if args.calibrator is not None
           else calibrators.TemperatureScaling({"temperature": args.temperature}))
    scorer = Scorer(params, None if args.checkpoint == "none" else Path(args.checkpoint))
    name = args.test_csv.stem
    frame = score_csvs(params, scorer, {name: args.test_csv}, None)[name]  # predict's frame, no predict files
    frame[schema.P_SPEECH] = cal.predict_proba(frame[schema.LOGIT_A], frame[schema.LOGIT_B])
    frame["temperature"] = cal.temperature
    if args.calibrator is not None:
        speech = cal.predict(frame[schema.LOGIT_A], frame[schema.LOGIT_B]) == 1
        frame[schema.PREDICTED_TOKEN] = [params.prompt.speech_answer if s else params.prompt.nonspeech_answer
                                         for s in speech]
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
