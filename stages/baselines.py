"""Stage ``baselines``: score every dev and test clip with Silero VAD and WebRTC VAD, the reference detectors.

Each detector's clip score ``s`` in [0, 1] (the densest 200 ms window of its frame scores; see
``stages/vad.py`` for the definition and why) is written in the predictions schema of
``stages/schema.py``, so the same calibration, metrics and aggregation code reads it like an LLM's:
``logit_A = log(s / (1 - s))`` with ``s`` clipped to [1e-4, 1 - 1e-4], ``logit_B = 0``, ``p_speech = s``,
``predicted_token`` A when ``s >= 0.5``, ``ground_truth_token`` A for SPEECH and B for NONSPEECH,
``logsumexp_vocab`` empty (a VAD has no vocabulary), and every metadata column except the audio path
carried through (``duration_s``, ``snr_db``, ``source``; ``base_clip_id``, ``condition``, ``level``).

    python -m stages.baselines                    # predictions/baselines/<detector>/{dev,test}.csv
    python -m stages.baselines --conditions NAME  # predictions/baselines_NAME/<detector>/NAME.csv

The second form scores ``data/processed/conditions/NAME_metadata.csv`` (the ``conditions_render``
stage writes ``conditions_metadata.csv``); ``dvc.yaml`` runs it once per name in
``baselines.score_conditions`` as the stage ``baselines_conditions@NAME``, so with the list empty the
pipeline neither runs it nor depends on the conditions data. It writes to its own folder because two
DVC stages cannot share an output folder.

A detector switched off in ``params.yaml`` (``baselines.silero: false``) has no folder at all; the
analysis skips systems whose folder is absent. Each output folder is written whole, atomically.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from stages import params as params_mod
from stages import schema, vad
from stages.audio import load_audio
from stages.cli import UserError, parser, run
from stages.fileio import atomic_dir, write_csv

log = logging.getLogger("stages.baselines")

OUT_DIR = Path("predictions/baselines")
CONDITIONS_DIR = Path("data/processed/conditions")
SPLITS = ("dev", "test")
SPEECH_TOKEN, NONSPEECH_TOKEN = "A", "B"  # the study's answer letters: A for SPEECH, B for NONSPEECH
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
    for i, file in enumerate(tqdm(audio_files, desc=desc, unit="clip", leave=False)):
        samples = load_audio(file, vad.SAMPLE_RATE)
        for name, detect in detectors.items():
            scores[name][i] = detect(samples)
    return scores


def score_sets(metas: Mapping[str, pd.DataFrame], detectors: Mapping[str, Detector], out_dir: Path) -> dict[str, dict[str, pd.DataFrame]]:
    """Write ``out_dir/<detector>/<set>.csv`` for every metadata frame in ``metas``; ``out_dir`` is replaced whole."""
    frames: dict[str, dict[str, pd.DataFrame]] = {name: {} for name in detectors}
    if not detectors:
        log.warning("every detector is switched off in params.yaml (baselines); %s will be empty", out_dir)
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


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--conditions", metavar="NAME",
                   help=f"score {CONDITIONS_DIR}/NAME_metadata.csv into predictions/baselines_NAME/<detector>/NAME.csv "
                        "instead of dev and test")
    args = p.parse_args(argv)
    b = params_mod.load(args.params).baselines
    if args.conditions is not None:
        name = args.conditions
        if not name or "/" in name or name in (".", ".."):
            raise UserError(f"--conditions {name!r}: expected a plain name such as conditions "
                            f"(the file {CONDITIONS_DIR}/<name>_metadata.csv)")
        metas = {name: schema.read_metadata(CONDITIONS_DIR / f"{name}_metadata.csv", require_both_classes=False)}
        out_dir = Path(f"{OUT_DIR}_{name}")
    else:
        metas = schema.read_splits(schema.SPLIT_DIR, SPLITS)
        out_dir = OUT_DIR

    with vad.torch_threads(1):  # Silero runs one 32 ms window at a time: more threads only add overhead
        score_sets(metas, build_detectors(b), out_dir)


if __name__ == "__main__":
    run(main)
