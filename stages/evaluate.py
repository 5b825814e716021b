"""Stage ``evaluate@<seed>``: apply a seed's dev-fitted calibrator to its TEST predictions; report both side by side.

Reads ``predictions/seeds/seed_<seed>/test.csv`` and ``models/calibrators/seed_<seed>.json``; writes
``metrics/test/seed_<seed>.json`` (clip-bootstrap intervals, paired calibrated-minus-uncalibrated
deltas), ``evaluation/seed_<seed>/`` and the test reliability plot
(:mod:`speech_calibration.report.evaluation`). Params: ``evaluate.n_bins``, ``n_bootstrap``, ``ci``,
``bootstrap_seed``.

    python -m stages.evaluate --seed 42
"""
from __future__ import annotations

from collections.abc import Sequence

from speech_calibration import layout, params
from speech_calibration.cli import parser, run
from speech_calibration.report.evaluation import evaluate_system


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--seed", type=int, required=True, help="evaluate predictions/seeds/seed_<seed>/test.csv")
    args = p.parse_args(argv)
    evaluate_system(layout.seed_files(args.seed), params.load(args.params).evaluate)


if __name__ == "__main__":
    run(main)
