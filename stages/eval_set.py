"""Stage ``eval_set@<name>``: validate one of your evaluation sets and write the manifest every system scores.

Reads the folder ``params.yaml: eval_sets.<name>`` names (``metadata.csv`` and its audio): decodes every
clip once, refuses a bad one with a line naming the CSV row and the file, and applies
``audio.long_clips`` against the audio window of ``model.name_or_path`` (only its feature extractor's
config is read, no weights). Writes ``data/eval_sets/<name>/metadata.csv``: the clips with resolved audio
paths, decoded durations and a SHA-256 per file (:mod:`speech_calibration.data.eval_sets`). Warns when the set
shares recordings or group ids with the study's splits (``data/processed/grouped_split``, a dependency). Params:
``eval_sets.<name>``, ``audio.long_clips``, ``model.name_or_path``.

    python -m stages.eval_set --name mine
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from speech_calibration import params
from speech_calibration.cli import parser, run
from speech_calibration.data.eval_sets import validate, warn_overlap_with_splits, write_manifest
from speech_calibration.model.loading import audio_window_s

log = logging.getLogger("stages.eval_set")


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--name", required=True, help="the set's key under eval_sets in params.yaml")
    args = p.parse_args(argv)
    config = params.load(args.params)
    folder = params.eval_set_folder(config, args.name, args.params)
    manifest = validate(args.name, folder, lambda: audio_window_s(config.model),
                        config.audio.long_clips)
    warn_overlap_with_splits(args.name, manifest)
    path = write_manifest(args.name, manifest)
    log.info("eval set %s: %d clips in %d groups -> %s", args.name, len(manifest), manifest["group_id"].nunique(), path)


if __name__ == "__main__":
    run(main)
