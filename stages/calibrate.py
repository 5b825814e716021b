"""Stage ``calibrate@<seed>``: fit a calibrator on a seed's DEV predictions only, and report dev before/after.

Reads ``predictions/seeds/seed_<seed>/dev.csv`` (and ``dev_content_free.csv``); never the test split.
Writes the calibrator ``models/calibrators/seed_<seed>.json``, the dev metrics
``metrics/calibration/seed_<seed>.json``, the study's ``seed_<seed>_optimal_temp.txt`` and the dev
reliability plot (:mod:`speech_calibration.calibration.dev`). Params: ``calibration``, ``evaluate.n_bins``.

    python -m stages.calibrate --seed 42
"""
from __future__ import annotations

from collections.abc import Sequence

from speech_calibration import layout, params
from speech_calibration.calibration.dev import calibrate_system
from speech_calibration.cli import parser, run


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--seed", type=int, required=True, help="calibrate predictions/seeds/seed_<seed>/dev.csv")
    args = p.parse_args(argv)
    config = params.load(args.params)
    calibrate_system(layout.seed_files(args.seed), config.calibration, config.evaluate.n_bins)


if __name__ == "__main__":
    run(main)
