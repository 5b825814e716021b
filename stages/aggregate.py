"""Stage ``aggregate``: the fine-tuned seeds together, beside the seed ensemble, the zero-shot model and the VADs.

Reads every seed's ``metrics/test/`` and ``metrics/calibration/`` JSONs, the reference systems' in
``metrics/references/``, every system's ``test_calibrated.csv`` under ``evaluation/``, each evaluation set's
``metrics/eval_sets/<name>.json`` and ``metrics/learning_curve.txt``. Writes
``metrics/headline/<system>/{uncalibrated,calibrated}.json`` (``fine_tuned``, each seed, each reference system;
the same per evaluation set in ``metrics/headline/eval_sets/<name>/``: the only files ``dvc.yaml`` declares as
metrics, read by ``dvc metrics show`` and ``dvc exp show``), ``metrics/summary.json`` (the detail: mean, SD and
t-interval across seeds, group-level intervals, per-group tables; an ordinary cached output),
``metrics/summary.txt`` (the study's summary lines and one table of every system, with a block per evaluation
set and the learning-curve table) and ``plots/summary/`` (pooled reliability, per-seed and risk-coverage plots)
(:mod:`speech_calibration.report.summary`). Params: ``seeds``, ``evaluate.references``, ``evaluate.ci``,
``evaluate.n_bins``, ``eval_sets``.

    python -m stages.aggregate
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from speech_calibration import layout, params
from speech_calibration.cli import parser, run
from speech_calibration.report.summary import aggregate

log = logging.getLogger("stages.aggregate")


def main(argv: Sequence[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    config = params.load(args.params)
    summary = aggregate(config.seeds, config.evaluate.references, ci=config.evaluate.ci, n_bins=config.evaluate.n_bins,
                        eval_sets=list(config.eval_sets))
    log.info("wrote %s and %s (%d seeds, %d reference systems)", layout.SUMMARY_TXT, layout.SUMMARY_JSON,
             len(config.seeds), len(summary["references"]))


if __name__ == "__main__":
    run(main)
