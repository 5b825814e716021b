"""Helpers for the model tests: a tiny Qwen2-Audio and a small project folder with real WAV files.

The clips are simple signals (a harmonic tone with a syllable-rate envelope over noise for SPEECH,
noise alone for NONSPEECH): these tests are about the model code, not the corpus, which
``tests/test_prepare.py`` covers.
"""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from speech_calibration import params as params_mod
from speech_calibration.data.audio import write_audio

ROOT = Path(__file__).resolve().parents[1]


def toy_clip(rng: np.random.Generator, speech: bool, seconds: float) -> np.ndarray:
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    x = rng.standard_normal(n) * 0.05
    if speech:
        f0 = rng.uniform(100, 220)
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
        x += envelope * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8)) * 0.1
    return x.astype(np.float32)


def toy_clips(seed: int = 0, durations=(0.2, 1.0, 2.5, 5.0)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [toy_clip(rng, i % 2 == 0, d) for i, d in enumerate(durations)]


@functools.lru_cache(maxsize=None)
def tiny_model_dir(cache_root: str) -> Path:
    """Build the tiny model once per test session, as the repo's params.yaml builds it (``dvc repro tiny_model``)
    under ``<cache_root>/tiny-qwen2-audio``; pass ``str(tmp_path_factory.getbasetemp())``."""
    from speech_calibration.model.tiny import build

    out = Path(cache_root) / "tiny-qwen2-audio"
    if not out.exists():
        build(params_mod.load(ROOT / "params.yaml").tiny_model, out)
    return out


def make_project(root: Path, model_dir: Path, *, sizes=(("train", 24, 4), ("dev", 16, 2), ("test", 12, 2)),
                 overrides: dict | None = None, seed: int = 0) -> Path:
    """A project folder: params.yaml (repo defaults + overrides), a toy grouped split, the tiny model."""
    rng = np.random.default_rng(seed)
    split_dir = root / "data/processed/grouped_split"
    (split_dir / "audio").mkdir(parents=True, exist_ok=True)
    for split, n, groups in sizes:
        rows = []
        for i in range(n):
            speech = i % 2 == 0
            seconds = float(rng.uniform(0.2, 5.0))
            clip_id = f"{split}_{i:03d}"
            write_audio(split_dir / f"audio/{clip_id}.wav", toy_clip(rng, speech, seconds))
            rows.append({"clip_id": clip_id, "audio_path": f"audio/{clip_id}.wav",
                         "label": "SPEECH" if speech else "NONSPEECH", "group_id": f"{split}_g{i % groups}",
                         "duration_s": round(seconds, 3)})
        pd.DataFrame(rows).to_csv(split_dir / f"{split}_metadata.csv", index=False)
    write_params(root / "params.yaml", model_dir, overrides)
    return root


def write_params(path: Path, model_dir: Path, overrides: dict | None = None) -> Path:
    """The repo's params.yaml with ``model.name_or_path`` naming ``model_dir`` and dotted-key ``overrides``
    (e.g. ``{"train.epochs": 2}``: the defaults are the full study's), written to ``path``.

    What a test of a stage that reads the model folder needs (train, predict, and conditions_render, whose
    audio window comes from the model's feature extractor)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"]["name_or_path"] = str(model_dir)
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
