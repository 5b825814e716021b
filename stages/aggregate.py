"""Stage ``aggregate``: the fine-tuned seeds together, beside the zero-shot model and the VAD baselines.

Reads every seed's test and calibration metrics and the reference systems'; writes
``metrics/summary.json`` (mean, SD and t-interval across seeds, for ``dvc metrics``),
``metrics/summary.txt`` (the study's summary lines and one table of every system) and the pooled
reliability and per-seed plots (:mod:`speech_calibration.report.summary`), with a block per evaluation set
(``metrics/eval_sets/<name>.json``). Params: ``seeds``, ``evaluate.references``, ``evaluate.ci``,
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
