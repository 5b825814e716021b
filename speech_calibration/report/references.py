"""The reference systems (the zero-shot model, the VAD baselines) through the same calibrate + evaluate code as a seed.

:func:`run_references` fits each system's calibrator on its dev predictions and evaluates it on test;
a system of ``evaluate.references`` without predictions (a switched-off detector) is skipped with a log
line and listed in ``metrics/references/systems.json``.
"""
from __future__ import annotations

import functools
import logging

from speech_calibration import layout
from speech_calibration.calibration.dev import calibrate_system
from speech_calibration.fileio import write_json
from speech_calibration.layout import SystemFiles
from speech_calibration.parallel import map_forked
from speech_calibration.params import Params
from speech_calibration.report.evaluation import evaluate_system

log = logging.getLogger(__name__)


def _calibrate_and_evaluate(files: SystemFiles, params: Params) -> None:
    calibrator = calibrate_system(files, params.calibration, params.evaluate.n_bins, allow_fallback=True)
    evaluate_system(files, params.evaluate, calibrator)  # as fitted: its file goes in when the stage ends


def run_references(params: Params, workers: int | None = None) -> dict:
    """Calibrate + evaluate every system of ``evaluate.references`` whose predictions exist; skip the others.

    The systems are independent (each bootstrap draws from a generator of its own, seeded alike) and run on up to
    ``workers`` processes (:func:`~speech_calibration.parallel.map_forked`; default one per CPU); the files are the
    same for any number.
    """
    index: dict = {"evaluated": [], "skipped": {}}
    for d in (layout.REFERENCES_METRICS_DIR, layout.REFERENCES_EVALUATION_DIR, layout.REFERENCE_CALIBRATORS_DIR):
        d.mkdir(parents=True, exist_ok=True)
    present = []
    for name in params.evaluate.references:
        files = SystemFiles(name, reference=True)
        missing = [str(p) for p in (files.predictions("dev"), files.predictions("test")) if not p.is_file()]
        if missing:
            reason = f"{', '.join(missing)} absent"
            log.info("reference %s skipped: %s (switched off or not yet predicted)", name, reason)
            index["skipped"][name] = reason
            continue
        present.append((name, files))
    map_forked(functools.partial(_calibrate_and_evaluate, params=params), [files for _, files in present], workers)
    index["evaluated"] = [name for name, _ in present]
    write_json(layout.REFERENCES_INDEX, index)
    return index
