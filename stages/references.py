"""Stage ``references``: the zero-shot model, the seed ensemble and the VAD baselines through the same calibrate + evaluate code.

For every system of ``evaluate.references`` whose ``predictions/<system>/{dev,test}.csv`` exist, fits
the calibrator on dev (``models/calibrators/references/<system>.json``) and evaluates it on test
(``metrics/references/``, ``evaluation/references/<system>/``); a system without predictions (a
switched-off detector) is skipped with a log line and listed in ``metrics/references/systems.json``.
The systems run on forked worker processes, one per CPU (``SPEECH_CALIBRATION_WORKERS=1``: one process; the
files are the same either way).
Params: ``calibration``, ``evaluate``.

    python -m stages.references
"""
from __future__ import annotations

from collections.abc import Sequence

from speech_calibration import params
from speech_calibration.cli import parser, run
from speech_calibration.report.references import run_references


def main(argv: Sequence[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    run_references(params.load(args.params))


if __name__ == "__main__":
    run(main)
