"""Stage ``predict@<seed>`` (and ``predict_zeroshot``, ``predict_conditions*``, ``predict_eval_set*``): the A/B answer
logits of every clip.

Loads the base model (``model.name_or_path``) and, unless ``--zero-shot``, the seed's adapter once, and
scores in one process, or in several under torchrun (:mod:`speech_calibration.model.scoring`): one forward
pass per batch, no text generation. Beside each set, ``<set>_content_free.csv`` holds the logits of two
content-free inputs (digital silence and a short white noise) for contextual calibration. A clip longer than
the model's audio window is handled as ``audio.long_clips`` says. Every metadata CSV, and its audio files'
headers, are checked before the model loads, so a wrong path or a bad row costs no model load (a clip too long
for the window, or audio that does not decode, is found while scoring). Params: ``model``, ``prompt``, ``predict``,
``audio.long_clips``.

    python -m stages.predict --seed 42                 # dev, test -> predictions/seeds/seed_42/
    python -m stages.predict --zero-shot               # the base model alone -> predictions/zeroshot/
    python -m stages.predict --seed 42 --conditions    # the condition variants -> predictions/conditions/seeds/seed_42/
    python -m stages.predict --seed 42 --set mine      # an evaluation set -> predictions/eval_sets/mine/seed_42/
    torchrun --standalone --nproc_per_node 4 -m stages.predict --seed 42   # the same CSVs, one process per GPU
"""
from __future__ import annotations

from collections.abc import Sequence

from speech_calibration import layout, params
from speech_calibration.cli import parser, run
from speech_calibration.data import schema
from speech_calibration.model.scoring import Scorer, score_csvs


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--seed", type=int, help="score with the adapter trained with this seed (models/seed_<seed>)")
    who.add_argument("--zero-shot", action="store_true", help="score with the base model alone, no adapter")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--conditions", action="store_true",
                      help=f"score the condition variants ({layout.conditions_csv()}) instead of dev and test")
    what.add_argument("--set", metavar="NAME", help=f"score the evaluation set NAME ({layout.eval_set_csv('NAME')}, "
                                                    "from the eval_set stage) instead of dev and test")
    args = p.parse_args(argv)
    config = params.load(args.params)
    system = layout.ZEROSHOT if args.zero_shot else layout.seed_system(args.seed)
    if args.conditions:
        csvs = {layout.CONDITIONS_SET: layout.conditions_csv()}
        out_dir = layout.conditions_predictions_dir(system)
    elif args.set is not None:
        params.eval_set_folder(config, args.set, args.params)
        csvs = {args.set: layout.eval_set_csv(args.set)}
        out_dir = layout.eval_set_predictions_dir(args.set, system)
    else:
        csvs = {"dev": layout.split_csv("dev"), "test": layout.split_csv("test")}
        out_dir = layout.predictions_dir(system)
    for csv in csvs.values():  # checked before the model loads (score_csvs reads them again, cheaply)
        schema.read_metadata(csv, require_both_classes=False)
    scorer = Scorer(config, None if args.zero_shot else layout.adapter_dir(args.seed))
    score_csvs(config, scorer, csvs, out_dir)


if __name__ == "__main__":
    run(main)
