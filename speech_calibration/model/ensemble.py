"""The seed ensemble: one system whose answer logits are the mean of the fine-tuned seeds' logits, clip by clip.

**The choice: mean log-odds.** Averaging ``logit_A`` and ``logit_B`` over the k seeds makes the ensemble's SPEECH
log-odds ``logit_A - logit_B`` exactly the mean of the seeds' log-odds: the normalised geometric mean of their
answer distributions. It is chosen over the mean probability because (a) the ensemble stays a two-logit system, so
every calibrator (temperature, Platt, contextual, batch ...) applies to it unchanged, and dividing its log-odds by T
is dividing each seed's; (b) one over-confident seed cannot pin it at 0 or 1 the way a probability mean can be
pulled, yet seeds that agree keep their confidence. The ensemble is then fitted on dev like any system (the
``references`` stage) and evaluated on test with the others. ``logsumexp_vocab`` is the seeds' mean too (each
seed's mass outside A/B is a property of its own vocabulary head; the mean is only a summary).

With one seed, or k identical seeds, the ensemble equals that seed (tested).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from speech_calibration import layout
from speech_calibration.data import schema
from speech_calibration.errors import UserError
from speech_calibration.fileio import write_csv
from speech_calibration.stats.metrics import p_speech_from_logits

MEAN_COLUMNS = (schema.LOGIT_A, schema.LOGIT_B, schema.LOGSUMEXP_VOCAB)


def ensemble_predictions(frames: Mapping[Path, pd.DataFrame]) -> pd.DataFrame:
    """The ensemble's predictions rows from each seed's predictions (keyed by the file they came from).

    Every frame must list the same clips in the same order (the seeds scored the same CSV); the first one's
    identity, truth and metadata columns are kept, the logits are averaged and ``p_speech`` / ``predicted_token``
    recomputed from them."""
    if not frames:
        raise UserError("no seed predictions to ensemble; the params file's seeds must list at least one seed")
    (first_path, first), *rest = frames.items()
    for path, frame in rest:
        if len(frame) != len(first) or not np.array_equal(frame[schema.CLIP_ID].to_numpy(), first[schema.CLIP_ID].to_numpy()):
            raise UserError(f"{path}: its clips differ from {first_path} (count or order); every seed must score the "
                            "same CSV: re-run its predict stage")
    out = first.copy()
    for col in MEAN_COLUMNS:
        if all(col in f.columns for f in frames.values()):
            out[col] = np.mean([f[col].to_numpy(dtype=float) for f in frames.values()], axis=0)
    a, b = out[schema.LOGIT_A].to_numpy(), out[schema.LOGIT_B].to_numpy()
    if schema.P_SPEECH in out.columns:
        out[schema.P_SPEECH] = p_speech_from_logits(a, b)
    if schema.PREDICTED_TOKEN in out.columns:
        # the answer of a seed that answers as the ensemble does (there is one: a mean >= 0 has a member >= 0)
        signs = np.stack([f[schema.LOGIT_A].to_numpy() >= f[schema.LOGIT_B].to_numpy() for f in frames.values()])
        tokens = np.stack([f[schema.PREDICTED_TOKEN].to_numpy() for f in frames.values()])
        which = np.argmax(signs == (a >= b), axis=0)
        out[schema.PREDICTED_TOKEN] = tokens[which, np.arange(len(out))]
    return out


def ensemble_content_free(frames: Mapping[Path, pd.DataFrame]) -> pd.DataFrame:
    """The content-free inputs' logits (silence, noise), averaged over the seeds like the clips'."""
    (first_path, first), *rest = frames.items()
    for path, frame in rest:
        if list(frame["input"]) != list(first["input"]):
            raise UserError(f"{path}: its content-free inputs differ from {first_path}; re-run its predict stage")
    out = first.copy()
    for col in [c for c in MEAN_COLUMNS if c in first.columns]:
        out[col] = np.mean([f[col].to_numpy(dtype=float) for f in frames.values()], axis=0)
    if schema.P_SPEECH in out.columns:
        out[schema.P_SPEECH] = p_speech_from_logits(out[schema.LOGIT_A].to_numpy(), out[schema.LOGIT_B].to_numpy())
    return out


def write_ensemble(seeds: Sequence[int]) -> dict[str, int]:
    """Write the ensemble's predictions of dev and test (``predictions/ensemble/``) and of the condition variants
    (``predictions/conditions/ensemble/``), with the content-free logits beside each where every seed has them.
    Returns {set: clips}."""
    systems = [layout.seed_system(s) for s in seeds]
    jobs = [(layout.predictions_dir, "dev"), (layout.predictions_dir, "test"),
            (layout.conditions_predictions_dir, layout.CONDITIONS_SET)]
    written: dict[str, int] = {}
    for folder_of, name in jobs:
        out_dir = folder_of(layout.ENSEMBLE)
        frames = {folder_of(s) / f"{name}.csv": None for s in systems}
        for path in frames:
            if not path.is_file():
                raise UserError(f"{path}: file not found; run the predict stages of every seed first (dvc repro)")
            frames[path] = schema.read_predictions(path)
        write_csv(out_dir / f"{name}.csv", ensemble_predictions(frames))
        free = {path: schema.read_content_free_frame(path)
                for path in (folder_of(s) / f"{name}_content_free.csv" for s in systems)}
        if all(f is not None for f in free.values()):
            write_csv(out_dir / f"{name}_content_free.csv", ensemble_content_free(free))
        written[name] = len(next(iter(frames.values())))
    return written
