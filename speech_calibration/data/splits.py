"""The corpus as three grouped splits in the data contract (:mod:`speech_calibration.data.schema`).

:func:`prepare` writes ``data/processed/grouped_split/{train,dev,test}_metadata.csv`` (one row per clip: clip_id,
audio_path, label, group_id, duration_s, snr_db, source); :func:`data_metrics` counts clips, groups
and class balance per split (``metrics/data.json``). ``params.yaml`` ``data.source`` picks where the clips come from:

  synthetic  (default) the embedded corpus, no network: each group is one recording session, an
             eSpeak NG voice in one generated acoustic scene (:mod:`speech_calibration.data.corpus`); the audio goes to
             grouped_split/audio/<split>/<clip_id>.wav (mono PCM16 at data.sample_rate). Knobs: data.synthetic.
  csv        your corpus as one metadata CSV (data.csv.path), split here by group: data.csv.dev_groups
             and data.csv.test_groups are fractions (< 1) or counts (>= 1) of groups; train gets
             the rest. Reproducible from data.split_seed; every split holds both classes.
  presplit   your three split CSVs (data.presplit.train/dev/test), validated and copied into place.

Every input CSV is validated (columns, unique clip ids that can name a file, labels, readable audio, no group,
clip id or audio file in two splits, both classes in every split; see :mod:`speech_calibration.data.schema`), and
no recording may be listed twice, in one CSV or across the splits: not the same file, nor a byte-identical copy under
another path (:mod:`speech_calibration.data.content_hash`; only files of equal size are hashed). Audio
paths of csv and presplit corpora are rewritten so they still resolve from the new folder (absolute paths
stay absolute). The output folder is built beside its final place and swapped in whole, so a crash
leaves the previous folder untouched.

Durations of csv and presplit clips are measured, never taken from a CSV's own ``duration_s``. The checks run
cheapest first, so a bad corpus stops early: the audio files' headers (frames / sample rate, no decoding) give
the first durations and refuse a clip too short to give the model an audio token (under 20.0625 ms:
:mod:`speech_calibration.data.short_clips`); then every clip is decoded once, and its decoded length (at the model's
16 kHz) replaces the header's for the short- and long-clip checks, the written ``duration_s`` and
``metrics/data.json`` alike. A clip that decodes more than 0.05 s shorter than its header says is refused as
truncated (:func:`~speech_calibration.data.audio.check_whole`: an MP3 copy cut short keeps its Xing header's full
length, and decodes as what is left). DURATION_TOLERANCE_S (0.05 s) is what a duration rounded to one decimal is
off by, and more than the few hundredths by which lossy codecs' priming and padding, counted differently by tools,
move a length. A CSV's ``duration_s`` further than that from the header's gives one warning line naming the first
such row and both
values. A warning, not an error: the usual cause is a column left stale after the audio was trimmed or
re-encoded, the value is replaced anyway, and a duration cannot tell a wrong file from a right one.

For csv and presplit, the CSVs lie in ``data.corpus`` (params refuses them elsewhere), a dep of the prepare
stage, so an edit to them, or to audio kept there too, re-runs it (``stages/prepare.py`` warns about audio
outside).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from speech_calibration import layout
from speech_calibration.data import content_hash, corpus, long_clips, schema, short_clips
from speech_calibration.data.audio import MODEL_RATE, check_whole, load_clips, probe_clips
from speech_calibration.errors import UserError
from speech_calibration.fileio import atomic_dir, write_csv
from speech_calibration.params import SPLITS, Data

log = logging.getLogger(__name__)

LongClips = tuple  # (the model's audio window in seconds, or a function that reads it; audio.long_clips)
DURATION_TOLERANCE_S = 0.05  # a CSV's duration_s this far from the header's is reported (module doc)
SPLIT_TRIES = 256  # seeded shuffles of the groups tried by split_groups
PARAM_KEYS = ("data.synthetic.", "data.csv.", "data.presplit.")  # errors that name a params key


# ============================================================================== csv: a grouped split
def group_counts(n_groups: int, dev_groups: float, test_groups: float) -> tuple[int, int]:
    """(dev, test) group counts: a value below 1 is a fraction of the groups (at least one group),
    a value of 1 or more a count. Train must keep at least one group."""
    def count(x: float) -> int:
        return int(x) if x >= 1 else max(1, int(round(x * n_groups)))

    n_dev, n_test = count(dev_groups), count(test_groups)
    if n_dev + n_test >= n_groups:
        raise UserError(f"data.csv.dev_groups/test_groups: they take {n_dev} + {n_test} of the corpus's {n_groups} "
                        "groups; leave at least one group for train (lower them, or add groups)")
    return n_dev, n_test


def split_groups(df: pd.DataFrame, n_dev: int, n_test: int, seed: int, tries: int = SPLIT_TRIES) -> dict[str, pd.DataFrame]:
    """Split the rows of ``df`` by ``group_id`` into train/dev/test with ``n_dev`` and ``n_test`` groups.

    Stratified: of ``tries`` seeded shuffles of the groups, it keeps those that give every split both
    classes and picks the one whose splits' SPEECH fractions are closest to the corpus's (the sum of
    absolute differences; the first such shuffle wins ties). Raises :class:`UserError` if none does.
    """
    groups = np.array(sorted(df[schema.GROUP_ID].unique()))
    speech = df[schema.LABEL].eq(schema.SPEECH)
    n_speech = speech.groupby(df[schema.GROUP_ID]).sum().reindex(groups).to_numpy()
    n_clips = df.groupby(schema.GROUP_ID).size().reindex(groups).to_numpy()
    overall = n_speech.sum() / n_clips.sum()
    rng = np.random.default_rng(seed)
    best, best_score = None, np.inf
    for _ in range(tries):
        order = rng.permutation(len(groups))
        parts = {"test": order[:n_test], "dev": order[n_test:n_test + n_dev], "train": order[n_test + n_dev:]}
        score = 0.0
        for idx in parts.values():
            s, c = n_speech[idx].sum(), n_clips[idx].sum()
            if s == 0 or s == c:  # a split with one class only
                score = np.inf
                break
            score += abs(s / c - overall)
        if score < best_score:
            best, best_score = parts, score
    if best is None:
        raise UserError(f"no split of the corpus's {len(groups)} groups into {len(groups) - n_dev - n_test} train, "
                        f"{n_dev} dev and {n_test} test groups gives every split both SPEECH and NONSPEECH clips; "
                        "add groups that hold both classes or change data.csv.dev_groups/test_groups")
    return {split: df[df[schema.GROUP_ID].isin(set(groups[best[split]]))].reset_index(drop=True) for split in SPLITS}


# ========================================================================== csv and presplit: paths
def rebase_audio_paths(df: pd.DataFrame, out_dir: str | os.PathLike) -> pd.DataFrame:
    """``df`` (as :func:`schema.read_metadata` returns it) with relative audio paths rewritten relative to
    ``out_dir`` (where the new CSV will live); absolute paths stay as they are. Drops ``audio_file``."""
    out = os.path.abspath(out_dir)
    inside = [f for f in df["audio_file"] if os.path.abspath(f).startswith(out + os.sep)]
    if inside:
        raise UserError(f"{inside[0]}: an input audio file lies inside the output folder {out_dir}, which prepare "
                        "replaces; move your corpus elsewhere")
    paths = [p if Path(p).is_absolute() else Path(os.path.relpath(os.path.abspath(f), out)).as_posix()
             for p, f in zip(df[schema.AUDIO_PATH], df["audio_file"])]
    return df.drop(columns=["audio_file"]).assign(**{schema.AUDIO_PATH: paths})


def check_decodable(df: pd.DataFrame, csv: str | os.PathLike, chunk: int = 64) -> np.ndarray:
    """Decode every clip once and return its length in samples at MODEL_RATE: a file whose header is fine but whose
    samples are not (NaN, infinite, undecodable) stops here, naming its CSV row, instead of in train or predict.
    ``chunk`` clips at a time are held, so a corpus of any size fits in memory."""
    files, places = list(df["audio_file"]), list(schema.clip_places(csv, df))
    lengths = np.empty(len(files), dtype=np.int64)
    for start in range(0, len(files), chunk):
        clips = load_clips(files[start:start + chunk], places=places[start:start + chunk])
        lengths[start:start + len(clips)] = [len(clip) for clip in clips]  # the samples themselves are dropped
    return lengths


def with_durations(df: pd.DataFrame, csv: str | os.PathLike) -> pd.DataFrame:
    """``df`` with every ``duration_s`` read from its audio file's header (needs the ``audio_file`` column): the cheap
    first pass (see the module doc). A CSV value that differs by more than DURATION_TOLERANCE_S is reported in one
    warning line, and a clip too short to give the model an audio token is refused
    (:mod:`speech_calibration.data.short_clips`)."""
    places = schema.clip_places(csv, df)
    infos = probe_clips(df["audio_file"], places)
    header = np.array([info.frames / info.samplerate for info in infos], dtype=float)
    samples = np.array([short_clips.samples_at_model_rate(info.frames, info.samplerate) for info in infos],
                       dtype=np.int64)  # at the model's rate, once decoded
    if schema.DURATION_S in df.columns:
        declared = df[schema.DURATION_S].to_numpy(float)
        off = np.flatnonzero(np.abs(declared - header) > DURATION_TOLERANCE_S + 1e-9)  # NaN (not declared) is never off
        if off.size:
            i = int(off[0])
            log.warning("%s: duration_s %g differs from its audio file's %.3f s (%s) by more than %g s; prepare uses the "
                        "audio's (%d of %d rows differ); correct the column or leave it empty", places[i], declared[i],
                        header[i], df["audio_file"].iloc[i], DURATION_TOLERANCE_S, off.size, len(df))
    short_clips.check(samples, header, places)
    return df.assign(**{schema.DURATION_S: header})


def with_decoded_durations(df: pd.DataFrame, csv: str | os.PathLike, chunk: int = 64) -> pd.DataFrame:
    """``df`` (header durations, from :func:`with_durations`) with every ``duration_s`` replaced by its decoded length
    at MODEL_RATE, what the model will hear. A clip that decodes shorter than its header says is refused as truncated
    (:func:`~speech_calibration.data.audio.check_whole`), and one too short for an audio token as such."""
    places = schema.clip_places(csv, df)
    samples = check_decodable(df, csv, chunk)
    decoded = samples / MODEL_RATE
    check_whole(list(df["audio_file"]), df[schema.DURATION_S].to_numpy(float), decoded, places)
    short_clips.check(samples, decoded, places)
    return df.assign(**{schema.DURATION_S: decoded})


def check_audio_listed_once(frames: Mapping[str, pd.DataFrame], paths: Mapping[str, os.PathLike]) -> None:
    """No recording listed twice in ``frames`` (split -> frame with ``audio_file``, read from ``paths[split]``), in one
    CSV or across them: not one file, nor a byte-identical copy (module doc). Refused in one line naming both rows."""
    rows = [(split, i) for split, frame in frames.items() for i in range(len(frame))]
    files = [file for frame in frames.values() for file in frame["audio_file"]]
    duplicate = content_hash.first_duplicate(files)
    if duplicate is None:
        return
    i, j, same_file = duplicate

    def place(k: int) -> str:
        split, row = rows[k]
        return f"{paths[split]} row {row + 1} ({frames[split][schema.CLIP_ID].iloc[row]})"

    what = f"is also listed at {place(i)}" if same_file else f"has the same content as {files[i]}, listed at {place(i)}"
    fix = ("remove one of the two rows" if same_file else "remove one of the two rows; if they are two recordings "
           "that came out byte for byte the same (digital silence of one length, say), keep one: they are one clip to "
           "the model")
    raise UserError(f"{place(j)}: audio file {files[j]} {what}; a recording may be listed once ({fix})")


def _columns(df: pd.DataFrame) -> pd.DataFrame:
    """The contract's columns first, then any extra columns the user's CSV had."""
    known = [c for c in schema.METADATA_REQUIRED + schema.METADATA_OPTIONAL if c in df.columns]
    return df[known + [c for c in df.columns if c not in known]]


def _input_csv(path: str | os.PathLike, out_dir: Path, key: str) -> Path:
    """The CSV that params ``key`` names, or a one-line error naming the key (stages/prepare.py adds the params file)."""
    path = Path(path)
    if os.path.abspath(path).startswith(os.path.abspath(out_dir) + os.sep):
        raise UserError(f"{key}: {path} lies inside the output folder {out_dir}, which prepare replaces; "
                        "move it elsewhere")
    if path.is_dir():
        raise UserError(f"{key}: {path} is a folder; give the metadata CSV in it (relative paths are from the project "
                        "root)")
    if not path.is_file():
        raise UserError(f"{key}: {path}: no such file (relative paths are from the project root)")
    return path


def check_long(df: pd.DataFrame, csv: str | os.PathLike, window: LongClips | None) -> None:
    """Apply ``audio.long_clips`` to the clips' durations (``window``: the model's window in seconds and the policy)."""
    if window is not None:
        seconds = window[0]() if callable(window[0]) else window[0]
        long_clips.report(df[schema.DURATION_S].to_numpy(float), schema.clip_places(csv, df), seconds, window[1], str(csv))


def from_csv(data: Data, out_dir: Path, window: LongClips | None = None) -> dict[str, pd.DataFrame]:
    """``data.source: csv``: one metadata CSV split by group."""
    path = _input_csv(data.csv.path, out_dir, "data.csv.path")
    df = with_durations(schema.read_metadata(path, check_audio=False), path)  # it reads every header
    check_audio_listed_once({"all": df}, {"all": path})
    df = with_decoded_durations(df, path)
    check_long(df, path, window)
    n_dev, n_test = group_counts(df[schema.GROUP_ID].nunique(), data.csv.dev_groups, data.csv.test_groups)
    try:
        frames = split_groups(df, n_dev, n_test, data.split_seed)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    return {split: _columns(rebase_audio_paths(frame, out_dir)) for split, frame in frames.items()}


def from_presplit(data: Data, out_dir: Path, window: LongClips | None = None) -> dict[str, pd.DataFrame]:
    """``data.source: presplit``: three split CSVs, validated together."""
    paths = {split: _input_csv(getattr(data.presplit, split), out_dir, f"data.presplit.{split}") for split in SPLITS}
    frames = {split: with_durations(schema.read_metadata(path, check_audio=False), path)  # it reads every header
              for split, path in paths.items()}
    schema.check_disjoint_splits(frames, paths)
    check_audio_listed_once(frames, paths)
    for split, frame in frames.items():
        frames[split] = with_decoded_durations(frame, paths[split])
        check_long(frames[split], paths[split], window)
    return {split: _columns(rebase_audio_paths(frame, out_dir)) for split, frame in frames.items()}


# =============================================================================================== stage
def data_metrics(frames: Mapping[str, pd.DataFrame]) -> dict[str, dict[str, float]]:
    """Clips, groups and class balance (and durations, when known) per split and in total."""
    def summary(df: pd.DataFrame) -> dict[str, float]:
        speech = int(df[schema.LABEL].eq(schema.SPEECH).sum())
        out = {"clips": len(df), "groups": int(df[schema.GROUP_ID].nunique()), "speech": speech,
               "nonspeech": len(df) - speech, "speech_fraction": speech / len(df) if len(df) else float("nan")}
        if schema.DURATION_S in df.columns and df[schema.DURATION_S].notna().any():
            d = pd.to_numeric(df[schema.DURATION_S])
            out |= {"duration_s_total": float(d.sum()), "duration_s_mean": float(d.mean()),
                    "duration_s_min": float(d.min()), "duration_s_max": float(d.max())}
        return out

    metrics = {split: summary(df) for split, df in frames.items()}
    metrics["total"] = summary(pd.concat(list(frames.values()), ignore_index=True))
    return metrics


def warn_audio_outside_corpus(data: Data, frames: Mapping[str, pd.DataFrame], out_dir: str | os.PathLike) -> None:
    """One warning when audio files that the split CSVs (``frames``, their paths relative to ``out_dir`` as written)
    list lie outside ``data.corpus``: DVC does not see them change."""
    files = [os.path.normpath(os.path.join(out_dir, p)) for frame in frames.values() for p in frame[schema.AUDIO_PATH]]
    outside = [f for f in files if not data.in_corpus(f)]
    if outside:
        log.warning("%d of %d audio files lie outside data.corpus (%s), e.g. %s: DVC does not see them change, so an "
                    "edit to them will not re-run prepare; move them under %s (or point data.corpus at a folder that "
                    "holds the CSVs and the audio)", len(outside), len(files), data.corpus, outside[0], data.corpus)


def prepare(data: Data, out_dir: str | os.PathLike = layout.SPLIT_DIR,
            window: LongClips | None = None) -> dict[str, pd.DataFrame]:
    """Build the split folder for ``data`` in a temporary folder beside ``out_dir``, check it against the
    data contract, and swap it in whole. Returns the three metadata frames.

    ``window``: ``(the model's audio window in seconds, or a function that reads it, audio.long_clips)``: long
    clips are reported (or, for ``error``, refused) once the clips decoded and before anything is written;
    None skips that check.
    """
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        if data.source == "synthetic":
            frames = corpus.write_corpus(data.synthetic, tmp, data.sample_rate)
            for split, frame in frames.items():
                check_long(frame, layout.split_csv(split, out_dir), window)
        elif data.source == "csv":
            frames = from_csv(data, out_dir, window)
        else:
            frames = from_presplit(data, out_dir, window)
        if data.source != "synthetic":
            warn_audio_outside_corpus(data, frames, out_dir)
        for split, frame in frames.items():
            write_csv(layout.split_csv(split, tmp), frame)
        # self-check: the folder as written satisfies the contract (a failure here is a bug, not bad input)
        schema.read_splits(tmp)
    return frames
