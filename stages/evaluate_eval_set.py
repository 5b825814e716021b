"""Stage ``evaluate_eval_set@<name>``: every system on one of your evaluation sets, with its dev-fitted calibrator.

Reads the set's manifest (``data/eval_sets/<name>/metadata.csv``), every system's scores of it
(``predictions/eval_sets/<name>/``: the seeds, the zero-shot model, the detectors that scored it; the seed
ensemble is the seeds' logits averaged, when ``evaluate.references`` lists it) and
each system's calibrator from ``models/calibrators/``, applied unchanged, exactly as on test. Writes
``metrics/eval_sets/<name>.json``: uncalibrated beside calibrated per system, the seeds' mean and spread,
and group-bootstrap intervals where the set has enough groups (:mod:`speech_calibration.report.eval_sets`).
Params: ``seeds``, ``evaluate`` (bins, bootstrap, ci, references), ``eval_sets.<name>``.

    python -m stages.evaluate_eval_set --name mine
"""
from __future__ import annotations

from collections.abc import Sequence

from speech_calibration import params
from speech_calibration.cli import parser, run
from speech_calibration.report.eval_sets import evaluate_set


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--name", required=True, help="the set's key under eval_sets in params.yaml")
    args = p.parse_args(argv)
    config = params.load(args.params)
    params.eval_set_folder(config, args.name, args.params)
    evaluate_set(args.name, config.seeds, config.evaluate.references, config.evaluate)


if __name__ == "__main__":
    run(main)
