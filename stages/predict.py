"""Stage ``predict@<seed>`` (and ``predict_zeroshot``, ``predict_conditions*``): the A/B answer logits of every clip.

Loads the base model (``model.name_or_path``) and, unless ``--zero-shot``, the seed's adapter once, and
scores in one process (:mod:`speech_calibration.model.scoring`): one forward pass per batch, no text
generation. Beside each set, ``<set>_content_free.csv`` holds the logits of two content-free inputs
(digital silence and a short white noise) for contextual calibration. Params: ``model``, ``prompt``,
``predict``.

    python -m stages.predict --seed 42                 # dev, test, predict.extra_csvs -> predictions/seed_42/
    python -m stages.predict --zero-shot               # the base model alone -> predictions/zeroshot/
    python -m stages.predict --seed 42 --conditions    # the condition variants -> predictions/conditions/seed_42/
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from speech_calibration import layout, params
from speech_calibration.cli import parser, run
from speech_calibration.model.scoring import Scorer, score_csvs


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--seed", type=int, help="score with the adapter trained with this seed (models/seed_<seed>)")
    who.add_argument("--zero-shot", action="store_true", help="score with the base model alone, no adapter")
    p.add_argument("--conditions", action="store_true",
                   help=f"score the condition variants ({layout.conditions_csv()}) instead of dev and test")
    args = p.parse_args(argv)
    config = params.load(args.params)
    system = layout.ZEROSHOT if args.zero_shot else layout.seed_system(args.seed)
    if args.conditions:
        csvs = {layout.CONDITIONS_SET: layout.conditions_csv()}
        out_dir = layout.conditions_predictions_dir(system)
    else:
        csvs = {"dev": layout.split_csv("dev"), "test": layout.split_csv("test"),
                **{name: Path(path) for name, path in config.predict.extra_csvs.items()}}
        out_dir = layout.predictions_dir(system)
    scorer = Scorer(config, None if args.zero_shot else layout.adapter_dir(args.seed))
    score_csvs(config, scorer, csvs, out_dir)


if __name__ == "__main__":
    run(main)
