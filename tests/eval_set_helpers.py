"""An outside evaluation set built on the spot: its own clips, in several formats, rates and channel layouts,
two of them longer than the tiny model's 6-s audio window (tests/test_eval_sets.py)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr

RATE = 16000
# (suffix, sample rate, channels) cycled over the clips: every format the README promises, at several rates
LAYOUTS = ((".wav", 8000, 2), (".flac", 44100, 1), (".ogg", 22050, 1), (".mp3", 48000, 2), (".wav", 16000, 1),
           (".flac", 32000, 2), (".mp3", 24000, 1), (".ogg", 48000, 2))
SUBTYPES = {".ogg": "VORBIS", ".mp3": "MPEG_LAYER_III"}
LONG_SECONDS = (7.0, 9.0)


def write_clip(path: Path, samples: np.ndarray, rate: int, channels: int) -> None:
    """16-kHz mono ``samples`` written at ``rate`` with ``channels`` (the same signal in each channel)."""
    x = soxr.resample(samples.astype(np.float32), RATE, rate) if rate != RATE else samples.astype(np.float32)
    x = np.clip(x, -0.99, 0.99)
    data = x if channels == 1 else np.stack([x] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, subtype=SUBTYPES.get(path.suffix, "PCM_16"))


def _noise(rng: np.random.Generator, seconds: float, level: float = 0.01) -> np.ndarray:
    return (rng.standard_normal(int(seconds * RATE)) * level).astype(np.float32)


def _tone(rng: np.random.Generator, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.1 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t)).astype(np.float32)


def make_eval_set(folder: Path, speech: Sequence[np.ndarray], *, groups: int = 6, per_group: int = 4,
                  seed: int = 0) -> pd.DataFrame:
    """Write ``folder/metadata.csv`` and ``folder/audio/*``: ``groups`` groups of ``per_group`` clips (SPEECH and
    NONSPEECH alternating; speech from ``speech``, 16-kHz clips, over a little noise), plus two clips longer than
    6 s (``long_nonspeech`` 7 s of tone and noise, ``long_speech`` 9 s of noise with speech in its last seconds)."""
    rng = np.random.default_rng(seed)
    rows = []

    def add(clip_id: str, label: str, group: str, samples: np.ndarray) -> None:
        suffix, rate, channels = LAYOUTS[len(rows) % len(LAYOUTS)]
        rel = f"audio/{clip_id}{suffix}"
        write_clip(folder / rel, samples, rate, channels)
        rows.append({"clip_id": clip_id, "audio_path": rel, "label": label, "group_id": group, "source": "outside"})

    for g in range(groups):
        for k in range(per_group):
            if k % 2 == 0:
                clip = speech[(g * per_group + k) % len(speech)]
                add(f"g{g}_c{k}", "SPEECH", f"outside_g{g}", clip + _noise(rng, len(clip) / RATE))
            else:
                seconds = rng.uniform(1.0, 3.0)
                add(f"g{g}_c{k}", "NONSPEECH", f"outside_g{g}", _tone(rng, seconds) + _noise(rng, seconds))
    add("long_nonspeech", "NONSPEECH", "outside_g0", _tone(rng, LONG_SECONDS[0]) + _noise(rng, LONG_SECONDS[0]))
    tail = speech[0][: 3 * RATE]
    long_speech = _noise(rng, LONG_SECONDS[1])
    long_speech[-len(tail):] += tail
    add("long_speech", "SPEECH", "outside_g1", long_speech)
    meta = pd.DataFrame(rows)
    meta.to_csv(folder / "metadata.csv", index=False)
    return meta
