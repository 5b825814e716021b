"""Stage ``baselines`` (and ``baselines_conditions@<set>``): the reference detectors' scores, Silero VAD and WebRTC VAD.

Scores every dev and test clip, or with ``--conditions NAME`` the variants of
``data/processed/conditions/NAME_metadata.csv``, with each detector switched on in ``params.yaml:
baselines``, in the predictions schema (:mod:`speech_calibration.vad.scoring`), so the same
calibration and metrics code reads them like an LLM's. A detector switched off has no folder at all.
Params: ``baselines`` (detector keys).

    python -m stages.baselines                    # predictions/baselines/<detector>/{dev,test}.csv
    python -m stages.baselines --conditions NAME  # predictions/baselines_NAME/<detector>/NAME.csv
"""
from __future__ import annotations

from collections.abc import Sequence

from speech_calibration import layout, params
from speech_calibration.cli import parser, run
from speech_calibration.data import schema
from speech_calibration.errors import UserError
from speech_calibration.vad.detectors import torch_threads
from speech_calibration.vad.scoring import build_detectors, score_sets


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--conditions", metavar="NAME",
                   help=f"score {layout.conditions_csv('NAME')} into {layout.baselines_set_dir('NAME')}/<detector>/NAME.csv "
                        "instead of dev and test")
    args = p.parse_args(argv)
    config = params.load(args.params).baselines
    if args.conditions is not None:
        name = args.conditions
        if not name or "/" in name or name in (".", ".."):
            raise UserError(f"--conditions {name!r}: expected a plain name such as conditions "
                            f"(the file {layout.conditions_csv('<name>')})")
        metas = {name: schema.read_metadata(layout.conditions_csv(name), require_both_classes=False)}
        out_dir = layout.baselines_set_dir(name)
    else:
        metas = schema.read_splits(layout.SPLIT_DIR, ("dev", "test"))
        out_dir = layout.BASELINES_DIR
    with torch_threads(1):  # Silero runs one 32 ms window at a time: more threads only add overhead
        score_sets(metas, build_detectors(config), out_dir)


if __name__ == "__main__":
    run(main)
