"""Stage ``conditions``: robustness of every system under acoustic conditions, calibrated and not.

Reads the variants' metadata (``data/processed/conditions/conditions_metadata.csv``), every system's
scores of them (the seeds, the zero-shot model, the seed ensemble and the VAD baselines that scored them) and each
system's DEV-fitted calibrator, applied unchanged. Writes ``metrics/conditions.json`` (headline per
system), the tables under ``metrics/conditions/`` (per condition and level, sensitivity, hit-rate and
calibration thresholds, calibration under shift, psychometric fits, paired tests clustered by test group)
and ``plots/conditions/`` (:mod:`speech_calibration.report.conditions`). The systems are computed, then the
figures drawn, on forked worker processes, one per CPU (``SPEECH_CALIBRATION_WORKERS=1``: one process; the files
are the same either way).
Params: ``seeds``, ``conditions`` (levels, bootstrap, ``ece_threshold``), ``evaluate.n_bins``, ``evaluate.ci``.

    python -m stages.conditions
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from speech_calibration import layout, params
from speech_calibration.cli import parser, run
from speech_calibration.report.conditions import (
    AXES,
    discover_systems,
    ece_threshold_name,
    interval_scope,
    read_variants,
    report,
    score_system,
)

log = logging.getLogger("stages.conditions")


def main(argv: Sequence[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    config = params.load(args.params)
    meta = read_variants(layout.conditions_csv())
    scored = [score_system(s, meta) for s in discover_systems(config.seeds)]
    head = report(meta, scored, config.conditions, config.evaluate.n_bins, config.evaluate.ci)
    ece_names = [ece_threshold_name(axis, config.conditions.ece_threshold) for axis in AXES]
    for name, entry in head.items():
        log.info("%s: BA_clip %.3f, BA_conditions %.3f, DT75 %s, SNR75 %s, %s", name, entry.get("BA_clip", math.nan),
                 entry.get("BA_conditions", math.nan), entry.get("DT75_text"), entry.get("SNR75_text"),
                 ", ".join(f"{key} {entry.get(key + '_text')}" for key in ece_names))
    log.info("Intervals: %s", interval_scope(meta))


if __name__ == "__main__":
    run(main)
