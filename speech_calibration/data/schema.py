"""The data contract: column names of every file passed between stages, and their validation.

Metadata CSV (one per split, ``data/processed/grouped_split/{train,dev,test}_metadata.csv``), one row per clip:
``clip_id`` (unique), ``audio_path`` (relative to the CSV's folder, or absolute), ``label``
(SPEECH or NONSPEECH), ``group_id`` (the speaker or recording the clip came from), and optional
``duration_s``, ``snr_db``, ``source``.

Predictions CSV (``predictions/<system>/<split>.csv``), one row per clip: the identity columns,
``ground_truth_token``, the two answer-token logits, ``p_speech`` at temperature 1, the predicted
token, and the log-sum-exp of the full vocabulary at the answer position; optional metadata columns
are carried through. ``label`` and ``ground_truth_token`` must agree on every row: each label one answer token
throughout, the two labels different ones (A on SPEECH rows and B on NONSPEECH rows with the default answers;
others, or the two swapped, as ``prompt`` in params.yaml sets them).

Every reader here validates what it reads and raises a one-line :class:`UserError` naming the file,
the row and the fix. The rules that are easy to trip over:

- ids are compared exactly, so ``clip_id`` and ``group_id`` may not start or end with whitespace ("spk1 " and
  "spk1" would be two speakers), and two ``group_id`` values that differ only in case ("spk1", "SPK1") are
  refused, in one file or across splits: they are almost always one speaker spelled two ways, which would
  be counted as two groups and could sit in two splits.
- a missing value in a numeric column (``duration_s``, ``snr_db``) is an empty cell, or one of the spellings
  R, numpy and spreadsheets write for it (``NA``, ``NaN``, ``nan``, ``N/A``, ``NULL``, ``None``, ...: see
  ``MISSING_SPELLINGS``, any case); any other text there is an error.
- across the split CSVs read together, no group, no ``clip_id`` and no audio file may appear in two splits.
- a ``clip_id`` names files (the ``conditions`` stage writes ``audio/<clip_id>__<condition>_<level>.wav``), so it
  may not contain ``/`` or ``\\``, start with ``.``, contain a control character, or be longer than
  ``MAX_CLIP_ID_BYTES`` (150 bytes of UTF-8).
"""
from __future__ import annotations

import os
import unicodedata
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from speech_calibration.data.audio import probe_audio
from speech_calibration.errors import UserError
from speech_calibration.layout import SPLIT_DIR, split_csv

# ---- metadata columns
CLIP_ID = "clip_id"
AUDIO_PATH = "audio_path"
LABEL = "label"
GROUP_ID = "group_id"
DURATION_S = "duration_s"
SNR_DB = "snr_db"
SOURCE = "source"
METADATA_REQUIRED = (CLIP_ID, AUDIO_PATH, LABEL, GROUP_ID)
METADATA_OPTIONAL = (DURATION_S, SNR_DB, SOURCE)

NUMERIC_OPTIONAL = (DURATION_S, SNR_DB)
# how R, numpy, pandas and spreadsheets write a missing number; read as an empty cell in NUMERIC_OPTIONAL (any case)
MISSING_SPELLINGS = frozenset({"na", "n/a", "nan", "-nan", "null", "none", "<na>", "#n/a"})

SPEECH, NONSPEECH = "SPEECH", "NONSPEECH"
LABELS = (SPEECH, NONSPEECH)

# ---- predictions columns
GROUND_TRUTH_TOKEN = "ground_truth_token"
LOGIT_A = "logit_A"
LOGIT_B = "logit_B"
P_SPEECH = "p_speech"
PREDICTED_TOKEN = "predicted_token"
LOGSUMEXP_VOCAB = "logsumexp_vocab"  # log-sum-exp of all vocabulary logits at the answer position
PREDICTIONS_REQUIRED = (CLIP_ID, GROUP_ID, LABEL, GROUND_TRUTH_TOKEN, LOGIT_A, LOGIT_B)
PREDICTIONS_COLUMNS = PREDICTIONS_REQUIRED + (P_SPEECH, PREDICTED_TOKEN, LOGSUMEXP_VOCAB)
# the default answer tokens (params.yaml: prompt.speech_answer / nonspeech_answer), which the study's own tables and the
# VAD baselines always use
SPEECH_TOKEN, NONSPEECH_TOKEN = "A", "B"



# ---- condition variants: the metadata contract plus these columns
BASE_CLIP_ID = "base_clip_id"  # the test clip a variant was rendered from
CONDITION = "condition"  # clean | duration | snr | reverb | band
LEVEL = "level"  # a number (ms, dB, s) or a filter name, written by level_text; "clean" for the reference
CLEAN = "clean"
DIMENSIONS = ("duration", "snr", "reverb", "band")  # the order of the report


# A clip id names files: audio/<clip_id>__<condition>_<level><unit>.wav (variants.variant_id), written through a
# temporary ".<file name>.XXXXXXXX.wav" beside it (fileio.atomic_path), which must fit the 255 bytes of a file name.
MAX_VARIANT_SUFFIX_BYTES = 26  # the longest: "__duration_" + a level_text of 13 ("-1.23457e+100") + "ms"
MAX_CLIP_ID_BYTES = 150  # UTF-8: 150 + 26 + len(".wav") + 14 of the temporary name = 194 bytes, room to spare
UNSAFE_ID_CHARACTERS = ("/", "\\")  # folder separators (POSIX, Windows)


def level_text(value: float | str) -> str:
    """How a level is written in the metadata and in clip ids: ``20``, ``-5``, ``0.3``, ``telephone``."""
    return value if isinstance(value, str) else f"{float(value):g}"


def _read_csv(path: Path, missing_fix: str = "",
              unreadable_fix: str = "check the path, or write it again as a CSV with a header row") -> pd.DataFrame:
    """The CSV at ``path`` with ids read as text; ``missing_fix`` and ``unreadable_fix``: what to do when it is not
    there, or is empty or not a CSV, for the error."""
    if not path.is_file():
        raise UserError(f"{path}: file not found" + (f"; {missing_fix}" if missing_fix else ""))
    try:
        # clip and group ids are strings even when they look like numbers
        return pd.read_csv(path, dtype={CLIP_ID: str, GROUP_ID: str, LABEL: str, AUDIO_PATH: str, SOURCE: str},
                           keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        why = "the file is empty" if isinstance(err, pd.errors.EmptyDataError) else str(err).splitlines()[0]
        raise UserError(f"{path}: not a readable CSV ({why}); {unreadable_fix}") from None


def _row(df: pd.DataFrame | pd.Series, mask: np.ndarray) -> int:
    """The 1-based data row number (header is row 0) of the first True in ``mask``."""
    return int(np.flatnonzero(np.asarray(mask))[0]) + 1


def check_unique_clip_ids(ids: pd.Series, path: str | os.PathLike, shown: pd.Series | None = None) -> None:
    """A one-line :class:`UserError` naming the first row whose clip id (of ``ids``; an empty cell is no id) an earlier
    row already has, and that row; ``shown``: the ids as the file spells them, where ``ids`` are normalised."""
    dup = (ids.duplicated() & ids.notna()).to_numpy()
    if dup.any():
        row = _row(ids, dup)
        raise UserError(f"{path} row {row}: duplicate clip_id '{(ids if shown is None else shown).iloc[row - 1]}' (also "
                        f"row {_row(ids, ids == ids.iloc[row - 1])}); clip ids must be unique (remove or rename one of "
                        "the two rows)")


def _check_columns(df: pd.DataFrame, path: Path, required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserError(f"{path} header: missing column(s) {', '.join(missing)}; "
                        f"the header must include {', '.join(required)}")
    for col in required:
        blank = df[col].isna().to_numpy()
        if blank.any():
            raise UserError(f"{path} row {_row(df, blank)}: empty {col}; every row needs a {col}")


def _check_ids_and_labels(df: pd.DataFrame, path: Path) -> None:
    for col in (CLIP_ID, GROUP_ID):
        padded = (df[col] != df[col].str.strip()).to_numpy()
        if padded.any():
            row = _row(df, padded)
            raise UserError(f"{path} row {row}: {col} '{df[col].iloc[row - 1]}' has leading or trailing whitespace; "
                            "remove it (ids are compared exactly)")
    check_unique_clip_ids(df[CLIP_ID], path)
    bad = ~df[LABEL].isin(LABELS).to_numpy()
    if bad.any():
        row = _row(df, bad)
        label = df[LABEL].iloc[row - 1]
        meant = f" (here {label.strip().upper()})" if label.strip().upper() in LABELS else ""
        raise UserError(f"{path} row {row}: label '{label}' is not one of {', '.join(LABELS)} ({bad.sum()} of {len(df)} "
                        f"rows are not); write SPEECH or NONSPEECH exactly, in capitals{meant}")


def _check_label_matches_token(df: pd.DataFrame, path: Path) -> None:
    """``label`` and ``ground_truth_token`` agree on every row (see the module doc); labels already checked."""
    tokens = df[GROUND_TRUTH_TOKEN].astype(str)
    fix = "fix the row or re-run the stage that wrote the file"
    first: dict[str, tuple[str, int]] = {}  # label -> (its token, the row it was first seen in)
    for i, (label, token) in enumerate(zip(df[LABEL], tokens)):
        seen, row = first.setdefault(label, (token, i + 1))
        other = next((o for o, (t, _) in first.items() if o != label and t == token), None)
        if seen != token or other is not None:
            was = (f"row {row} ({label} too) has '{seen}'" if seen != token
                   else f"'{token}' is the token of {other} (row {first[other][1]})")
            raise UserError(f"{path} row {i + 1}: label {label} but ground_truth_token '{token}', while {was}; the two "
                            f"must agree (one answer token per label, a different one for each): {fix}")


def _clip_id_problem(clip_id: str, max_bytes: int) -> str | None:
    """What keeps ``clip_id`` from naming a file (see MAX_CLIP_ID_BYTES), or None."""
    separator = next((c for c in UNSAFE_ID_CHARACTERS if c in clip_id), None)
    if separator:
        return (f"contains '{separator}', which would put its files in another folder; use neither / nor \\ in "
                "clip ids (e.g. replace them with _)")
    if clip_id.startswith("."):
        return "starts with '.' (a hidden file, or with '..' a parent folder); start it with another character"
    control = next((c for c in clip_id if unicodedata.category(c) == "Cc"), None)
    if control:
        return f"contains the control character U+{ord(control):04X}; remove it"
    size = len(clip_id.encode("utf-8"))
    if size > max_bytes:
        return (f"is {size} bytes long in UTF-8, over the {max_bytes} a clip id may have (the conditions stage names "
                "files after it); shorten it")
    return None


def _check_clip_ids_name_files(df: pd.DataFrame, path: Path) -> None:
    """Every ``clip_id`` can name a file (see MAX_CLIP_ID_BYTES). Condition variants' ids are their base clip's id
    and a suffix of up to MAX_VARIANT_SUFFIX_BYTES."""
    max_bytes = MAX_CLIP_ID_BYTES + (MAX_VARIANT_SUFFIX_BYTES if BASE_CLIP_ID in df.columns else 0)
    for i, clip_id in enumerate(df[CLIP_ID]):
        problem = _clip_id_problem(clip_id, max_bytes)
        if problem:
            shown = clip_id if len(clip_id) <= 60 else clip_id[:40] + "..."
            raise UserError(f"{path} row {i + 1}: clip_id {shown!r} {problem}")


def _check_group_case(df: pd.DataFrame, path: Path) -> None:
    """Two group ids that differ only in case are refused (see the module doc)."""
    first: dict[str, tuple[str, int]] = {}  # casefolded id -> (its first spelling, its row)
    for i, group in enumerate(df[GROUP_ID]):
        seen, row = first.setdefault(group.casefold(), (group, i + 1))
        if seen != group:
            raise UserError(f"{path} row {i + 1}: group_id '{group}' differs only in case from '{seen}' (row {row}); "
                            "spell each group one way (they would count as two groups, and could land in two splits)")


def _numeric(df: pd.DataFrame, col: str, path: Path) -> pd.Series:
    """``col`` as floats: empty cells and MISSING_SPELLINGS are NaN; any other text, and an infinite value, an error."""
    numbers = pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col])  # True/False: text
    values = df[col].astype(float) if numbers else _parsed(df, col, path)
    infinite = np.isinf(values.to_numpy())
    if infinite.any():
        row = _row(df, infinite)
        raise UserError(f"{path} row {row}: {col} '{df[col].iloc[row - 1]}' is not a finite number; write a number, "
                        "or leave the cell empty for a missing value")
    return values


def _parsed(df: pd.DataFrame, col: str, path: Path) -> pd.Series:
    """A text column ``col`` as floats (:func:`_numeric`)."""
    text = df[col].astype(object).where(df[col].notna(), "").astype(str).str.strip()
    missing = (text.eq("") | text.str.lower().isin(MISSING_SPELLINGS)).to_numpy()
    values = pd.to_numeric(text.mask(missing), errors="coerce").astype(float)
    bad = values.isna().to_numpy() & ~missing
    if bad.any():
        row = _row(df, bad)
        raise UserError(f"{path} row {row}: {col} '{df[col].iloc[row - 1]}' is not a number; write a number, "
                        "or leave the cell empty for a missing value")
    return values


def resolve_audio_path(audio_path: str, csv_path: str | os.PathLike) -> Path:
    """An absolute ``audio_path`` as is; a relative one against the CSV's folder."""
    p = Path(audio_path)
    return p if p.is_absolute() else Path(os.path.normpath(Path(csv_path).parent / p))


def read_metadata(path: str | os.PathLike, *, check_audio: bool = True, require_both_classes: bool = True) -> pd.DataFrame:
    """Read and validate one metadata CSV.

    Returns the rows with an added column ``audio_file``: the audio path resolved against the CSV's folder.
    """
    path = Path(path)
    split = os.path.abspath(path.parent) == os.path.abspath(SPLIT_DIR)  # a split CSV: prepare writes it
    df = (_read_csv(path, "run `dvc repro prepare` first (it writes the split CSVs)",
                    "re-run `dvc repro prepare` (it writes the split CSVs)") if split
          else _read_csv(path, unreadable_fix=f"check the path, or write it with the header {','.join(METADATA_REQUIRED)} "
                                              "and one row per clip"))
    _check_columns(df, path, METADATA_REQUIRED)
    _check_ids_and_labels(df, path)
    _check_clip_ids_name_files(df, path)
    _check_group_case(df, path)
    for col in NUMERIC_OPTIONAL:
        if col in df.columns:
            df[col] = _numeric(df, col, path)
    if require_both_classes:
        present = set(df[LABEL])
        if len(df) == 0 or present != set(LABELS):
            holds = f"holds only {', '.join(sorted(present))}" if present else "has no rows"
            raise UserError(f"{path}: the split {holds}; every split needs both SPEECH and NONSPEECH clips "
                            "(move some groups between splits)")
    df["audio_file"] = [str(resolve_audio_path(p, path)) for p in df[AUDIO_PATH]]
    if check_audio:
        for i, file in enumerate(df["audio_file"]):
            try:
                probe_audio(file)
            except UserError as err:
                raise UserError(f"{path} row {i + 1}: {err}") from None
    return df


def check_disjoint_groups(splits: Mapping[str, pd.DataFrame], paths: Mapping[str, os.PathLike]) -> None:
    """No group (speaker or recording) may appear in two splits, in any case ("spk1" and "SPK1" are one group)."""
    names = list(splits)
    for i, a in enumerate(names):
        spelled = {}  # casefolded group id -> its spelling in split a
        for group in splits[a][GROUP_ID]:
            spelled.setdefault(group.casefold(), group)
        for b in names[i + 1:]:
            shared = splits[b][GROUP_ID].str.casefold().isin(spelled).to_numpy()
            if shared.any():
                row = _row(splits[b], shared)
                group = splits[b][GROUP_ID].iloc[row - 1]
                other = spelled[group.casefold()]
                also = f"'{group}'" if other == group else f"'{group}' (spelled '{other}' there)"
                raise UserError(f"{paths[b]} row {row}: group {also} is also in {a} ({paths[a]}); "
                                "a group must stay in one split (move all its clips to one split)")


def _check_unique_across(splits: Mapping[str, pd.DataFrame], paths: Mapping[str, os.PathLike], what: str, keys,
                         fix: str) -> None:
    """``keys(frame)`` (one key per row) may not share a key between two splits; the error names both rows."""
    first: dict[str, tuple[str, int]] = {}  # key -> (split, row)
    for split, frame in splits.items():
        own: dict[str, int] = {}
        for i, key in enumerate(keys(frame)):
            own.setdefault(key, i + 1)
            if key in first:
                other, row = first[key]
                raise UserError(f"{paths[split]} row {i + 1}: {what} {key} is also in {other} ({paths[other]} row {row}); "
                                f"{fix}")
        first.update({key: (split, row) for key, row in own.items()})


def check_disjoint_splits(splits: Mapping[str, pd.DataFrame], paths: Mapping[str, os.PathLike]) -> None:
    """No group, no clip id and no audio file in two splits (frames as :func:`read_metadata` returns them)."""
    check_disjoint_groups(splits, paths)
    _check_unique_across(splits, paths, "clip_id", lambda f: [f"'{c}'" for c in f[CLIP_ID]],
                         "clip ids must be unique across the splits (rename one, or remove the duplicate row)")
    _check_unique_across(splits, paths, "audio file", lambda f: [os.path.realpath(p) for p in f["audio_file"]],
                         "a clip must be in one split only (remove one of the two rows)")


def read_splits(root: str | os.PathLike = SPLIT_DIR, splits=("train", "dev", "test"), *,
                check_audio: bool = True) -> dict[str, pd.DataFrame]:
    """Read and validate the split CSVs under ``root`` together: no group, clip or audio file in two splits."""
    paths = {s: split_csv(s, root) for s in splits}
    frames = {s: read_metadata(p, check_audio=check_audio) for s, p in paths.items()}
    check_disjoint_splits(frames, paths)
    return frames


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a predictions CSV (what ``predict`` and ``baselines`` write)."""
    path = Path(path)
    df = _read_csv(path, missing_fix="run the stage that writes it first (dvc repro writes it)",
                   unreadable_fix="check the path, or re-run the stage that writes it (dvc repro)")
    _check_columns(df, path, PREDICTIONS_REQUIRED)
    if len(df) == 0:
        raise UserError(f"{path}: no rows; re-run the stage that writes it (dvc repro)")
    _check_ids_and_labels(df, path)
    _check_label_matches_token(df, path)
    for col in (LOGIT_A, LOGIT_B):
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            row = _row(df, bad)
            raise UserError(f"{path} row {row}: {col} '{df[col].iloc[row - 1]}' is not a finite number; "
                            "re-run the predict stage")
        df[col] = values
    return df


def clip_places(csv: str | os.PathLike, meta: pd.DataFrame) -> list[str]:
    """``<csv> row <n> (<clip_id>)`` for every clip of a metadata frame (rows counted as in the file), for errors."""
    return [f"{csv} row {i + 1} ({cid})" for i, cid in enumerate(meta[CLIP_ID])]


def label_to_int(labels) -> np.ndarray:
    """SPEECH -> 1, NONSPEECH -> 0 (the positive class of every metric is SPEECH)."""
    return (np.asarray(labels) == SPEECH).astype(np.int64)


def stratum_label(stratum: str) -> str:
    """A class stratum of :func:`label_to_int`'s 0/1 labels in the labels' names: ``"1"`` -> ``SPEECH``,
    ``"0+1"`` -> ``NONSPEECH+SPEECH`` (the strata of :func:`speech_calibration.stats.resampling.composition_strata`)."""
    return "+".join({"0": NONSPEECH, "1": SPEECH}[c] for c in str(stratum).split("+"))


# ---- content-free logits
def content_free_inputs(path: Path) -> list[str]:
    """The names of the content-free inputs in a ``<set>_content_free.csv`` (``silence``, ``noise``), as written."""
    df = _read_csv(path, unreadable_fix="re-run the predict stage (it writes the content-free logits)")
    return [str(v) for v in df["input"]] if "input" in df.columns else [f"row {i + 1}" for i in range(len(df))]


def read_content_free(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The (logit_A, logit_B) of the content-free inputs, or None when the file does not exist."""
    df = read_content_free_frame(path)
    if df is None:
        return None
    return df["logit_A"].to_numpy(float), df["logit_B"].to_numpy(float)


def read_content_free_frame(path: Path) -> pd.DataFrame | None:
    """The content-free inputs' file (``input``, logits, ...), validated, or None when it does not exist."""
    if not path.is_file():
        return None
    df = _read_csv(path, unreadable_fix="re-run the predict stage (it writes the content-free logits)")
    missing = [c for c in ("logit_A", "logit_B") if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; the header must include input, logit_A, logit_B")
    if len(df) == 0:
        raise UserError(f"{path}: no rows; re-run the predict stage")
    a = pd.to_numeric(df["logit_A"], errors="coerce").to_numpy(float)
    b = pd.to_numeric(df["logit_B"], errors="coerce").to_numpy(float)
    bad = ~(np.isfinite(a) & np.isfinite(b))
    if bad.any():
        raise UserError(f"{path} row {int(np.flatnonzero(bad)[0]) + 1}: logit_A / logit_B is not a finite number; "
                        "re-run the predict stage")
    return df.assign(logit_A=a, logit_B=b)
