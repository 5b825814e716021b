"""The reference systems (the zero-shot model, the VAD baselines) through the same calibrate + evaluate code as a seed.

:func:`run_references` fits each system's calibrator on its dev predictions and evaluates it on test. A system of
``evaluate.references`` without predictions is skipped and listed in ``metrics/references/systems.json``: with an
INFO line for a detector that ``params.yaml: baselines`` switches (off, or not predicted yet), with
a WARNING naming the folders that do exist otherwise (a typo, or a stage not run yet). A folder holding ``dev.csv``
without ``test.csv``, or the reverse, is an error.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import fields

from speech_calibration import layout
from speech_calibration.calibration.dev import calibrate_system
from speech_calibration.errors import UserError
from speech_calibration.fileio import write_json
from speech_calibration.layout import SystemFiles
from speech_calibration.parallel import map_forked
from speech_calibration.params import Baselines, Params
from speech_calibration.report.evaluation import evaluate_system

log = logging.getLogger(__name__)


def _calibrate_and_evaluate(files: SystemFiles, params: Params) -> None:
    calibrator = calibrate_system(files, params.calibration, params.evaluate.n_bins, allow_fallback=True)
    evaluate_system(files, params.evaluate, calibrator)  # as fitted: its file goes in when the stage ends


def _detector(name: str) -> bool:
    """Whether ``name`` is ``baselines/<detector>`` for a detector that ``params.yaml: baselines`` can switch on and off
    (its absence then is no typo: switched off, or not predicted yet). Read from the code, not the params, so that
    the stage depends on no ``baselines`` key."""
    head, _, detector = name.partition("/")
    switches = {f.name for f in fields(Baselines) if f.type in (bool, "bool")}
    return head == layout.BASELINES and detector in switches


def _writer(name: str) -> str:
    """How to write ``predictions/<name>/``: the DVC stage that does."""
    stage = {layout.ZEROSHOT: "predict_zeroshot", layout.ENSEMBLE: "ensemble"}.get(name)
    if stage is None and name.partition("/")[0] == layout.BASELINES:
        stage = "baselines"
    return f"re-run `dvc repro {stage}`, which writes both" if stage else "re-run the stage that writes both"


def _predicted_systems() -> list[str]:
    """The folders under predictions/, other than the seeds', that hold a dev.csv or test.csv."""
    root = layout.PREDICTIONS_DIR
    found = {p.parent for split in ("dev", "test") for p in root.rglob(f"{split}.csv")}
    return sorted(d.relative_to(root).as_posix() for d in found if not d.is_relative_to(layout.SEED_PREDICTIONS_DIR))


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
        needed = (files.predictions("dev"), files.predictions("test"))
        missing = [p for p in needed if not p.is_file()]
        if len(missing) == 1:
            found = next(p for p in needed if p not in missing)
            raise UserError(f"{missing[0]}: file not found, though {found} exists (evaluate.references: {name}); "
                            f"{_writer(name)}")
        if missing:
            reason = f"{', '.join(map(str, missing))} absent"
            folder = layout.predictions_dir(name)
            if _detector(name):
                log.info("reference %s skipped: %s absent (baselines.%s: false, or not predicted yet)", name, folder,
                         name.partition("/")[2])
            else:
                log.warning("evaluate.references: %s skipped: %s; a typo? the systems under %s are: %s", name,
                            f"{folder} holds neither dev.csv nor test.csv" if folder.is_dir() else f"{folder} does not exist",
                            layout.PREDICTIONS_DIR, ", ".join(_predicted_systems()) or "none")
            index["skipped"][name] = reason
            continue
        present.append((name, files))
    map_forked(functools.partial(_calibrate_and_evaluate, params=params), [files for _, files in present], workers)
    index["evaluated"] = [name for name, _ in present]
    write_json(layout.REFERENCES_INDEX, index)
    return index
