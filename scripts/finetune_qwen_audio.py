"""The study's training command line, kept for people migrating from it: a thin wrapper over
:mod:`speech_calibration.model.training`.

    python scripts/finetune_qwen_audio.py --seed 42 --output_dir checkpoints/calibrated_v1/seed_42 --add_mlp_targets

The base model, prompt, LoRA rank, learning rate ... come from params.yaml, as in the pipeline, except
``lora.mlp_targets``: as in the study, LoRA covers the decoder's MLP projections only with
``--add_mlp_targets``. Without the flag this run trains attention-only LoRA even where params.yaml says
``lora.mlp_targets: true`` (the repository's default), so it trains a different model from
``dvc repro train@42`` (a warning says so); pass ``--add_mlp_targets`` to train the pipeline's model.
The adapter is written to ``<output_dir>/final`` (the study's layout). Prefer ``dvc repro train@42``: it
records what was run.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python scripts/...` from anywhere

from speech_calibration import params as params_mod  # noqa: E402
from speech_calibration.cli import run  # noqa: E402
from speech_calibration.fileio import check_writable  # noqa: E402
from speech_calibration.model.training import train  # noqa: E402

log = logging.getLogger("scripts.finetune_qwen_audio")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--output_dir", type=Path, required=True, help="the adapter goes to OUTPUT_DIR/final")
    p.add_argument("--add_mlp_targets", action="store_true",
                   help="LoRA on the MLP projections too; without it lora.mlp_targets is false whatever params.yaml says")
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args(argv)
    check_writable(args.output_dir / "final", folder=True)
    params = params_mod.load(args.params)
    if params.lora.mlp_targets and not args.add_mlp_targets:
        log.warning("no --add_mlp_targets: lora.mlp_targets=false for this run, overriding %s's true (the study's "
                    "flag), so this is not the model `dvc repro train` trains; pass --add_mlp_targets for that",
                    args.params)
    lora = dataclasses.replace(params.lora, mlp_targets=args.add_mlp_targets)
    params = dataclasses.replace(params, lora=lora)
    train(params, args.seed, args.output_dir / "final", args.output_dir / "dvclive")


if __name__ == "__main__":
    run(main)
