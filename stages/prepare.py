"""Stage ``prepare``: the corpus as three grouped splits, no group (speaker or recording) in two splits.

Writes ``data/processed/grouped_split/{train,dev,test}_metadata.csv`` (+ the embedded corpus's audio) and
``metrics/data.json`` (clips, groups and class balance per split). ``data.source`` picks where the clips
come from: ``synthetic`` (the embedded eSpeak NG corpus), ``csv`` (your one metadata CSV, split here by
group) or ``presplit`` (your three split CSVs); see :mod:`speech_calibration.data.splits`. Clips longer than the
audio window of ``model.name_or_path`` are refused or reported here, before any training, as
``audio.long_clips`` says. Audio files of a csv or presplit corpus that lie outside ``data.corpus`` (the
folder ``dvc.yaml`` makes a dep) get one warning: an edit to them would not re-run prepare. The embedded
corpus's clips are rendered on forked worker processes, one per CPU (``SPEECH_CALIBRATION_WORKERS=1``: one
process; the files are the same either way). Params: ``data``, ``model.name_or_path``, ``audio.long_clips``.

    python -m stages.prepare [--params params.yaml]
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

from speech_calibration import layout, params
from speech_calibration.cli import parser, run
from speech_calibration.data.splits import PARAM_KEYS, data_metrics, prepare
from speech_calibration.errors import UserError
from speech_calibration.fileio import write_json
from speech_calibration.model.loading import audio_window_s
from speech_calibration.params import SPLITS

log = logging.getLogger("stages.prepare")


def main(argv: Sequence[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    config = params.load(args.params)
    data = config.data
    try:
        window_s = functools.cache(lambda: audio_window_s(config.model))  # read once, after the clips decoded
        frames = prepare(data, layout.SPLIT_DIR, window=(window_s, config.audio.long_clips))
    except UserError as err:
        if str(err).startswith(PARAM_KEYS):  # names a params key: say which params file
            raise UserError(f"{args.params}: {err}") from None
        raise
    metrics = data_metrics(frames)
    write_json(layout.DATA_METRICS, metrics)
    for split in SPLITS:
        m = metrics[split]
        log.info("%s: %d clips in %d groups, %d SPEECH / %d NONSPEECH", split, m["clips"], m["groups"],
                 m["speech"], m["nonspeech"])
    log.info("wrote %s and %s", layout.SPLIT_DIR, layout.DATA_METRICS)


if __name__ == "__main__":
    run(main)
