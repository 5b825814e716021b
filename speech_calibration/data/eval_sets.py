"""Your own evaluation sets: validated where they enter, and tracked by content.

``params.yaml: eval_sets`` maps a name to a folder that holds ``metadata.csv`` (the splits' columns:
``clip_id, audio_path, label, group_id``, optional ``duration_s, snr_db, source`` and any of your own)
and the audio it lists, in or below that folder. The folder, not the CSV, is the unit because DVC
can only track files it is told about: the ``eval_set@<name>`` stage depends on the whole folder,
so editing the CSV or any audio file in it re-runs that stage, and only the stages that read its
output follow (when the output changed).

:func:`validate` decodes every clip once (missing, undecodable, empty, NaN or infinite: one line naming
the CSV row and the file's absolute path), refuses a clip too short to give the model an audio token (under
20.0625 ms: :mod:`speech_calibration.data.short_clips`), applies ``audio.long_clips`` to the durations before any
model is loaded, and returns the *manifest*: the metadata with each clip's audio path resolved, its
decoded duration and the SHA-256 of its file, written to ``data/eval_sets/<name>/metadata.csv`` by
:func:`write_manifest`. Every system scores the manifest, so a changed file changes the manifest's
hash and re-runs exactly the scoring and reporting of that set.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from speech_calibration import layout
from speech_calibration.data import content_hash, long_clips, schema, short_clips
from speech_calibration.data.audio import MODEL_RATE, check_whole, load_clips, probe_clips
from speech_calibration.errors import UserError
from speech_calibration.fileio import atomic_dir, write_csv
from speech_calibration.params import SPLITS

log = logging.getLogger(__name__)

SHA256 = "sha256"  # manifest column: the audio file's content hash


def input_csv(name: str, folder: str | os.PathLike) -> Path:
    """The set's ``metadata.csv``, or a one-line error naming the ``eval_sets`` key and what to give instead."""
    folder = Path(folder)
    key = f"eval_sets.{name}"
    if folder.is_file():
        raise UserError(f"{key}: {folder} is a file; give the folder that holds {layout.EVAL_SET_INPUT_CSV} "
                        "and the audio it lists (DVC then tracks the whole folder)")
    if not folder.is_dir():
        raise UserError(f"{key}: {folder}: no such folder (relative paths are from the project root)")
    csv = layout.eval_set_input_csv(folder)
    if not csv.is_file():
        raise UserError(f"{csv}: not found; an evaluation set's folder holds {layout.EVAL_SET_INPUT_CSV} with the "
                        f"columns {', '.join(schema.METADATA_REQUIRED)}")
    return csv


def validate(name: str, folder: str | os.PathLike, window_s, policy: str) -> pd.DataFrame:
    """The manifest of one evaluation set (see the module doc); every problem is a one-line :class:`UserError`.

    ``window_s``: the model's audio window in seconds, or a function that reads it, called only once every
    clip has decoded (so a bad file stops the stage before anything of the model is read).
    """
    csv = input_csv(name, folder)
    meta = schema.read_metadata(csv, check_audio=False, require_both_classes=False)  # headers: read once, below
    if meta.empty:
        raise UserError(f"eval_sets.{name}: {csv} has no rows; list the set's clips there, one a row")
    places = schema.clip_places(csv, meta)
    root = os.path.abspath(folder)
    for place, file in zip(places, meta["audio_file"]):
        if not os.path.abspath(file).startswith(root + os.sep):
            raise UserError(f"{place}: {os.path.abspath(file)} lies outside the set's folder {root}, so DVC would not "
                            "see it change; move the audio into the folder (paths relative to the CSV)")
    files = list(meta["audio_file"])
    header = [info.frames / info.samplerate for info in probe_clips(files, places)]
    audios = load_clips(files, MODEL_RATE, places)  # every clip decoded once, here
    durations = [len(a) / MODEL_RATE for a in audios]
    check_whole(files, header, durations, places)
    short_clips.check([len(a) for a in audios], durations, places)
    long_clips.report(durations, places, window_s() if callable(window_s) else window_s, policy, f"eval set {name}")
    classes = set(meta[schema.LABEL])
    if len(classes) < 2:
        log.warning("eval set %s: every clip is %s, so its ROC-AUC and the other class's accuracy are undefined",
                    name, next(iter(classes)))
    out = meta.drop(columns=["audio_file"]).copy()
    out[schema.AUDIO_PATH] = [os.path.abspath(f) for f in meta["audio_file"]]
    out[schema.DURATION_S] = [round(d, 6) for d in durations]
    out[SHA256] = [content_hash.sha256(f) for f in files]
    first: dict[str, int] = {}
    for j, digest in enumerate(out[SHA256]):
        i = first.setdefault(digest, j)
        if i != j:
            raise UserError(f"{places[j]}: audio file {files[j]} has the same content as {files[i]}, listed at "
                            f"{places[i]}; a recording may be listed once in a set (remove one of the two rows)")
    return out


def warn_overlap_with_splits(name: str, manifest: pd.DataFrame, split_dir: str | os.PathLike = layout.SPLIT_DIR) -> None:
    """One warning line each when the set shares recordings (byte for byte) or group ids with the study's own splits
    (``split_dir``): the set would then measure clips, or speakers, the model trained or was calibrated on. Only the
    split files whose size is that of a set's file are hashed. Nothing to say before ``prepare`` wrote the splits."""
    if not all(layout.split_csv(split, split_dir).is_file() for split in SPLITS):
        return
    splits = {split: schema.read_metadata(layout.split_csv(split, split_dir), check_audio=False,
                                          require_both_classes=False) for split in SPLITS}
    sizes = {os.path.getsize(f) for f in manifest[schema.AUDIO_PATH]}
    ours = dict(zip(manifest[SHA256], manifest[schema.CLIP_ID]))
    shared = [(split, clip_id, ours[digest])
              for split, frame in splits.items() for clip_id, file in zip(frame[schema.CLIP_ID], frame["audio_file"])
              if os.path.isfile(file) and os.path.getsize(file) in sizes
              and (digest := content_hash.sha256(file)) in ours]
    if shared:
        split, theirs, mine = shared[0]
        log.warning("eval set %s: %d of its recordings are byte for byte in the study's splits (%s), e.g. its %s is "
                    "%s's %s: the set then measures clips the model trained or was calibrated on; leave them out of "
                    "the set", name, len({m for _, _, m in shared}), ", ".join(sorted({s for s, _, _ in shared})),
                    mine, split, theirs)
    groups = {g.casefold() for g in manifest[schema.GROUP_ID]}
    speakers = {split: sorted({g for g in frame[schema.GROUP_ID] if g.casefold() in groups})
                for split, frame in splits.items()}
    speakers = {split: found for split, found in speakers.items() if found}
    if speakers:
        log.warning("eval set %s: group ids also in the study's splits (%s): if they are the same speakers or "
                    "recordings, the set does not measure new ones; rename them if they only share a name", name,
                    "; ".join(f"{split}: {', '.join(found[:5])}{' ...' if len(found) > 5 else ''}"
                              for split, found in speakers.items()))


def write_manifest(name: str, manifest: pd.DataFrame) -> Path:
    """Write ``data/eval_sets/<name>/metadata.csv`` (whole folder swapped in at once). Audio paths inside the project
    are written relative to the manifest's folder, others absolute."""
    out_dir = layout.eval_set_dir(name)
    project = os.path.abspath(".")
    frame = manifest.copy()
    frame[schema.AUDIO_PATH] = [
        Path(os.path.relpath(p, os.path.abspath(out_dir))).as_posix() if p.startswith(project + os.sep) else p
        for p in frame[schema.AUDIO_PATH]]
    with atomic_dir(out_dir) as tmp:
        write_csv(tmp / layout.eval_set_csv(name).name, frame)
    return layout.eval_set_csv(name)
