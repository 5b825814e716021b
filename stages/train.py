"""Stage ``train@<seed>``: LoRA fine-tuning of Qwen2-Audio to answer A (SPEECH) or B (NONSPEECH).

Reads the train split, the base model named by ``model.name_or_path``, and the ``model``, ``prompt``,
``lora``, ``train`` and ``audio.long_clips`` params. Only the answer token is supervised. Writes the adapter with
``save_pretrained`` (``PeftModel.from_pretrained`` opens it) plus ``train_info.json`` into
``models/seed_<seed>/``, and dvclive curves into ``metrics/train/seed_<seed>/``
(:mod:`speech_calibration.model.training`).

    python -m stages.train --seed 42
    torchrun --standalone --nproc_per_node 4 -m stages.train --seed 42   # data-parallel, one process per GPU
"""
from __future__ import annotations

from collections.abc import Sequence

from speech_calibration import layout, params
from speech_calibration.cli import parser, run
from speech_calibration.model.training import train


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--seed", type=int, required=True, help="random seed (one of params.yaml's seeds)")
    args = p.parse_args(argv)
    train(params.load(args.params), args.seed, layout.adapter_dir(args.seed), layout.train_live_dir(args.seed))


if __name__ == "__main__":
    run(main)
