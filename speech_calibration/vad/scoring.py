"""Scoring clips with the reference detectors (Silero VAD, WebRTC VAD) in the predictions schema.

Each detector's clip score ``s`` in [0, 1] (the densest window of its frame scores; see
:mod:`speech_calibration.vad.detectors` for the definition and why) is written in the predictions
schema of :mod:`speech_calibration.data.schema`, so the same calibration, metrics and aggregation code
reads it like an LLM's: ``logit_A = log(s / (1 - s))`` with ``s`` clipped to [1e-4, 1 - 1e-4],
``logit_B = 0``, ``p_speech = s``, ``predicted_token`` A when ``s >= 0.5``, ``ground_truth_token`` A for
SPEECH and B for NONSPEECH, ``logsumexp_vocab`` empty (a VAD has no vocabulary), and every metadata
column except the audio path carried through.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from speech_calibration import params as params_mod
from speech_calibration.data import schema
from speech_calibration.data.audio import load_audio
from speech_calibration.fileio import atomic_dir, write_csv
from speech_calibration.vad import detectors as vad

log = logging.getLogger(__name__)

SPEECH_TOKEN, NONSPEECH_TOKEN = schema.SPEECH_TOKEN, schema.NONSPEECH_TOKEN  # the study's answer letters
_DROP = {schema.AUDIO_PATH, "audio_file"}  # not carried into predictions

Detector = Callable[[np.ndarray], float]  # 16 kHz mono float32 samples -> clip score in [0, 1]


def build_detectors(b: params_mod.Baselines) -> dict[str, Detector]:
    """The detectors switched on in ``b``, by name (the name is the output folder)."""
    detectors: dict[str, Detector] = {}
    if b.silero:
        model = vad.load_silero()
        detectors["silero"] = lambda x: vad.silero_score(model, x, b.window_ms)
    if b.webrtc:
        detectors["webrtc"] = lambda x: vad.webrtc_score(x, b.webrtc_mode, b.webrtc_frame_ms, b.window_ms)
    return detectors


def predictions_frame(meta: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    """The predictions CSV rows for one detector's clip scores ``scores`` (aligned with ``meta``'s rows)."""
    s = np.asarray(scores, dtype=np.float64)
    frame = pd.DataFrame({
        schema.CLIP_ID: meta[schema.CLIP_ID].to_numpy(),
        schema.GROUP_ID: meta[schema.GROUP_ID].to_numpy(),
        schema.LABEL: meta[schema.LABEL].to_numpy(),
        schema.GROUND_TRUTH_TOKEN: np.where(meta[schema.LABEL] == schema.SPEECH, SPEECH_TOKEN, NONSPEECH_TOKEN),
        schema.LOGIT_A: vad.score_to_logit(s),
        schema.LOGIT_B: np.zeros(len(s)),
        schema.P_SPEECH: s,
        schema.PREDICTED_TOKEN: np.where(s >= 0.5, SPEECH_TOKEN, NONSPEECH_TOKEN),
        schema.LOGSUMEXP_VOCAB: np.full(len(s), np.nan),
    })
    for col in meta.columns:
        if col not in frame.columns and col not in _DROP:
            frame[col] = meta[col].to_numpy()
    return frame


def score_clips(audio_files: Sequence[str], detectors: Mapping[str, Detector], desc: str) -> dict[str, np.ndarray]:
    """Each detector's score of each clip; every clip is loaded once (mono, 16 kHz)."""
    scores = {name: np.empty(len(audio_files)) for name in detectors}
    for i, file in enumerate(tqdm(audio_files, desc=desc, unit="clip", leave=False, disable=None)):
        samples = load_audio(file, vad.SAMPLE_RATE)
        for name, detect in detectors.items():
            scores[name][i] = detect(samples)
    return scores


def score_sets(metas: Mapping[str, pd.DataFrame], detectors: Mapping[str, Detector],
               out_dir: Path) -> dict[str, dict[str, pd.DataFrame]]:
    """Write ``out_dir/<detector>/<set>.csv`` for every metadata frame in ``metas``; ``out_dir`` is replaced whole."""
    frames: dict[str, dict[str, pd.DataFrame]] = {name: {} for name in detectors}
    if not detectors:
        log.warning("every detector is switched off in the params file (baselines); %s will be empty", out_dir)
    with atomic_dir(out_dir) as tmp:
        for set_name, meta in metas.items():
            started = time.perf_counter()
            scores = score_clips(list(meta["audio_file"]), detectors, desc=set_name) if detectors else {}
            seconds = time.perf_counter() - started
            for name, s in scores.items():
                frame = predictions_frame(meta, s)
                write_csv(tmp / name / f"{set_name}.csv", frame)
                acc = float((frame[schema.PREDICTED_TOKEN] == frame[schema.GROUND_TRUTH_TOKEN]).mean())
                log.info("%s %s: %d clips, accuracy at s >= 0.5 %.3f", name, set_name, len(frame), acc)
                frames[name][set_name] = frame
            if detectors:
                log.info("%s: %d clips scored by %s in %.2f s", set_name, len(meta), ", ".join(detectors), seconds)
    return frames
