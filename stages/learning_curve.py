"""Stage ``learning_curve``: how much dev data each calibration method needs.

Every calibration method is refitted on random dev subsets of whole groups (``learning_curve.sizes`` clips,
``learning_curve.repeats`` subsets each; ``all`` = the full-dev fit) and scored on the full test set, for every
seed (:mod:`speech_calibration.calibration.learning_curve`). Reads ``predictions/seeds/seed_<s>/{dev,test}.csv`` and
``dev_content_free.csv``; writes ``metrics/learning_curve.json``, the table ``metrics/learning_curve.txt`` and
``plots/learning_curve/learning_curve.{csv,png}``. Params: ``seeds``, ``learning_curve``,
``calibration.temperature_bounds``, ``evaluate.ci``.

    python -m stages.learning_curve
"""
from __future__ import annotations

from collections.abc import Sequence

from speech_calibration import params
from speech_calibration.calibration.learning_curve import run_learning_curve
from speech_calibration.cli import parser, run


def main(argv: Sequence[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    run_learning_curve(params.load(args.params))


if __name__ == "__main__":
    run(main)
