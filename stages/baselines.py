"""Stage ``baselines`` (and ``baselines_conditions@<set>``, ``baselines_eval_set@<name>``): the reference detectors'
scores, Silero VAD and WebRTC VAD.

Scores every dev and test clip, or with ``--conditions NAME`` the variants of
``data/processed/conditions/NAME_metadata.csv``, or with ``--set NAME`` an evaluation set, with each detector switched
on in ``params.yaml: baselines``, in the predictions schema (:mod:`speech_calibration.vad.scoring`), so the same
calibration and metrics code reads them like an LLM's. A detector switched off has no folder at all.
Params: ``baselines`` (detector keys), ``eval_sets.NAME`` with ``--set``.

    python -m stages.baselines                    # predictions/baselines/<detector>/{dev,test}.csv
    python -m stages.baselines --conditions NAME  # predictions/baselines_NAME/<detector>/NAME.csv
    python -m stages.baselines --set NAME         # predictions/eval_sets/NAME/baselines/<detector>/NAME.csv
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
    out = f"{layout.eval_set_predictions_dir('NAME', layout.BASELINES)}/<detector>/NAME.csv"
    p.add_argument("--set", metavar="NAME", help=f"score the evaluation set NAME ({layout.eval_set_csv('NAME')}) into {out}")
    args = p.parse_args(argv)
    full = params.load(args.params)
    config = full.baselines
    if args.conditions is not None and args.set is not None:
        raise UserError("--conditions and --set: give one of them")
    if args.set is not None:
        params.eval_set_folder(full, args.set, args.params)
        metas = {args.set: schema.read_metadata(layout.eval_set_csv(args.set), require_both_classes=False)}
        out_dir = layout.eval_set_predictions_dir(args.set, layout.BASELINES)
    elif args.conditions is not None:
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
