"""Stage ``tiny_model``: build the embedded default base model, a tiny randomly initialised Qwen2-Audio.

No machine here can download ``Qwen/Qwen2-Audio-7B-Instruct``, so the embedded study uses a model of
the same architecture with a few hundred thousand parameters, saved with ``save_pretrained``; train and
predict load it with the same ``from_pretrained`` code as the real checkpoint
(:mod:`speech_calibration.model.tiny`). Params: ``tiny_model``.

    python -m stages.tiny_model [--params params.yaml] [--out models/tiny-qwen2-audio]
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from speech_calibration import layout, params
from speech_calibration.cli import parser, run
from speech_calibration.model.tiny import build


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--out", type=Path, default=layout.TINY_MODEL_DIR, help="output folder (default: %(default)s)")
    args = p.parse_args(argv)
    build(params.load(args.params).tiny_model, args.out)


if __name__ == "__main__":
    run(main)
