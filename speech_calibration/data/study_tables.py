"""The study's own predictions CSVs, read leniently, for the wrapper scripts that people migrating from it run.

The pipeline's files follow the contract of :mod:`speech_calibration.data.schema`; the study's tables may
carry only a truth column and a probability, so :func:`read_logits_table` accepts what they hold. Like the
stages' reader it refuses a ``clip_id`` on two rows and a row whose ``label`` and ``ground_truth_token`` disagree
(the stages read the label, the scripts the token); unlike it, it holds the study's answers, A = SPEECH and
B = NONSPEECH, so a file the stages scored with other answers (``prompt.speech_answer``) is refused here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from speech_calibration.data.schema import NONSPEECH, NONSPEECH_TOKEN, SPEECH, SPEECH_TOKEN, check_unique_clip_ids
from speech_calibration.errors import UserError
from speech_calibration.stats import metrics

PROBABILITY_COLUMNS = ("p_speech", "prob_A")  # the study's names for p(SPEECH), in the order they are looked for
TRUTH_COLUMNS = ("ground_truth_token", "label")  # the study's truth, in the order it is taken
SPEECH_WORDS, TRUTH_WORDS = (SPEECH_TOKEN, SPEECH), (SPEECH_TOKEN, NONSPEECH_TOKEN, SPEECH, NONSPEECH)  # any case
WRITER = "scripts/evaluate_with_logits.py --output_csv writes one"


def read_logits_table(path: str | Path):
    """Read a study-style predictions CSV leniently: (logit_A, logit_B, y) plus the frame.

    Needs the truth as ``ground_truth_token`` (A / B, or SPEECH / NONSPEECH) or ``label``, and the score
    as ``logit_A`` and ``logit_B``, else ``p_speech`` or ``prob_A`` (turned into ``logit_A = log(p / (1 - p))``,
    ``logit_B = 0``, p clipped to [1e-12, 1 - 1e-12]). A probability column, where there is one, must hold numbers
    in [0, 1] (:func:`probabilities`), whichever score is used. With both truth columns, each row's two must name
    the same class; a ``clip_id`` column, where there is one, may not hold an id twice.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found; check the path ({WRITER})")
    try:
        df = pd.read_csv(path, dtype={"clip_id": str, "ground_truth_token": str, "label": str, "predicted_token": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        why = "the file is empty" if isinstance(err, pd.errors.EmptyDataError) else str(err).splitlines()[0]
        raise UserError(f"{path}: not a readable CSV ({why}); check the path, or write it again ({WRITER})") from None
    present = [c for c in TRUTH_COLUMNS if c in df.columns]
    if not present:
        raise UserError(f"{path}: no ground_truth_token (or label) column; the study's CSVs carry logit_A, logit_B, "
                        "ground_truth_token")
    speech = {col: _speech(df, col, path) for col in present}
    if len(speech) == 2:
        _check_truth_columns_agree(df, speech, path)
    if "clip_id" in df.columns:  # ids compared without surrounding whitespace
        check_unique_clip_ids(df["clip_id"].str.strip(), path, shown=df["clip_id"])
    y = speech[present[0]]
    p = probabilities(df, path)
    if "logit_A" in df.columns and "logit_B" in df.columns:
        a = pd.to_numeric(df["logit_A"], errors="coerce").to_numpy(float)
        b = pd.to_numeric(df["logit_B"], errors="coerce").to_numpy(float)
        cols = "logit_A / logit_B"
    elif p is not None:
        col = next(c for c in PROBABILITY_COLUMNS if c in df.columns)
        a, b, cols = metrics.logit(np.clip(p, 1e-12, 1 - 1e-12)), np.zeros(len(p)), col
    else:
        raise UserError(f"{path}: no logit_A and logit_B (or p_speech / prob_A) columns; add the scores, or write the "
                        f"table again ({WRITER})")
    bad = ~(np.isfinite(a) & np.isfinite(b))
    if bad.any():
        raise UserError(f"{path} row {int(np.flatnonzero(bad)[0]) + 1}: {cols} is not a finite number; fix or drop the "
                        "row")
    if len(df) == 0:
        raise UserError(f"{path}: no rows; a table needs one row per clip ({WRITER})")
    return df, a, b, y


def _speech(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """1 where truth column ``col`` says SPEECH (A or SPEECH, any case), 0 where NONSPEECH; else one line naming the row."""
    truth = df[col].astype(str).str.strip().str.upper()
    ok = truth.isin(TRUTH_WORDS).to_numpy()
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        raise UserError(f"{path} row {row + 1}: {col} '{df[col].iloc[row]}' is not one of {', '.join(TRUTH_WORDS)}; "
                        "fix the cell")
    return truth.isin(SPEECH_WORDS).to_numpy().astype(np.int64)


def _check_truth_columns_agree(df: pd.DataFrame, speech: dict[str, np.ndarray], path: Path) -> None:
    """``label`` and ``ground_truth_token`` name the same class on every row (``speech``: each one's 0/1)."""
    bad = speech["label"] != speech["ground_truth_token"]
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise UserError(f"{path} row {row + 1}: label {df['label'].iloc[row]} but ground_truth_token "
                        f"{df['ground_truth_token'].iloc[row]}; the two must agree ({SPEECH_TOKEN} = {SPEECH}, "
                        f"{NONSPEECH_TOKEN} = {NONSPEECH}, the study's answers): fix the row, or for a file scored "
                        "with other answers (prompt.speech_answer) use the pipeline's stages, not these scripts")


def probabilities(df: pd.DataFrame, path: str | Path) -> np.ndarray | None:
    """p(SPEECH) from the first of :data:`PROBABILITY_COLUMNS` the table has (None: neither), every cell a number in
    [0, 1]; else one line naming the row and the cell."""
    col = next((c for c in PROBABILITY_COLUMNS if c in df.columns), None)
    if col is None:
        return None
    p = pd.to_numeric(df[col], errors="coerce").to_numpy(float)  # text -> NaN, caught below with its row
    bad = ~((p >= 0) & (p <= 1))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = "missing (an empty or NA cell)" if pd.isna(df[col].iloc[row]) else f"'{df[col].iloc[row]}'"
        raise UserError(f"{path} row {row + 1}: {col} is {value}, not a probability in [0, 1]; fix or drop the row")
    return p


def predicted_speech(df: pd.DataFrame, path: str | Path) -> np.ndarray | None:
    """1 where ``predicted_token`` says SPEECH (A or SPEECH), 0 where NONSPEECH (B or NONSPEECH); None without the
    column; one line naming the row for any other value."""
    if "predicted_token" not in df.columns:
        return None
    tok = df["predicted_token"].astype(str).str.strip().str.upper()
    bad = ~tok.isin(["A", "B", "SPEECH", "NONSPEECH"]).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise UserError(f"{path} row {row + 1}: predicted_token '{df['predicted_token'].iloc[row]}' is not A, B, "
                        "SPEECH or NONSPEECH")
    return tok.isin(["A", "SPEECH"]).to_numpy().astype(np.int64)
