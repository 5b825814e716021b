"""Stage ``conditions_render``: render each test clip under acoustic conditions, one dimension at a time.

For every clip of the test split, the clean reference and one variant per level of each dimension of
``params.yaml: conditions`` (duration, SNR, reverberation, band limits; see
:mod:`speech_calibration.data.variants`), written whole to ``data/processed/conditions/``
(``audio/`` and ``conditions_metadata.csv``). The model's audio window, read from its feature-extractor config
(``model.name_or_path``), bounds the container and the clips. The clips are rendered on forked worker
processes, one per CPU (``SPEECH_CALIBRATION_WORKERS=1``: one process; the files are the same either way).
Params: ``conditions`` (rendering keys), ``data.sample_rate``, ``model.name_or_path``.

    python -m stages.conditions_render [--input CSV] [--out-dir DIR]
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from speech_calibration import layout, params
from speech_calibration.cli import parser, run
from speech_calibration.data import schema
from speech_calibration.data.variants import check_config, write_variants
from speech_calibration.model.loading import audio_window_s


def main(argv: Sequence[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--input", type=Path, default=layout.split_csv("test"),
                    help="metadata CSV of the clips to vary (default: %(default)s)")
    ap.add_argument("--out-dir", type=Path, default=layout.CONDITIONS_DIR, help="output folder (default: %(default)s)")
    args = ap.parse_args(argv)
    config = params.load(args.params)
    window = audio_window_s(config.model)
    check_config(config, args.params, window)
    write_variants(schema.read_metadata(args.input), config, args.out_dir, window)


if __name__ == "__main__":
    run(main)
