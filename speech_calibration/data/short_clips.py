"""Clips too short for the model to hear anything of: refused where they enter (``prepare`` and ``eval_set``).

Qwen2-Audio's Whisper feature extractor gives a clip of ``n`` samples at 16 kHz ``ceil(n / 160)`` real log-mel
frames (a hop of 10 ms; its frame mask keeps every frame a sample starts in); the encoder's stride-2 convolution and
its pooling by 2 then make the audio tokens (:func:`speech_calibration.model.inputs.num_audio_tokens`). Two frames
or fewer give no audio token at all: the model would see the prompt without the clip and answer the same for every
such clip, in training as in scoring. Three frames (``2 * 160 + 1`` = 321 samples, 20.0625 ms) give one token, so
the shortest clip is 20.0625 ms: a clip of exactly 20 ms (320 samples) gives none. The ``conditions`` stage's
20-ms duration level is not such a clip: it sits in a ``conditions.container_s`` container of noise.

The arithmetic is repeated here without torch (the data stages never load it); a test checks it against the
feature extractor's frame mask and ``num_audio_tokens`` sample by sample. The rate and the hop are those the data
stages already assume: every clip is decoded at :data:`speech_calibration.data.audio.MODEL_RATE` (16 kHz), and the
feature extractors of every Qwen2-Audio checkpoint and of the embedded tiny model (:mod:`speech_calibration.model.tiny`)
have a hop of 160 samples.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from speech_calibration.data.audio import MODEL_RATE
from speech_calibration.errors import UserError

MEL_HOP = 160  # samples per log-mel frame at MODEL_RATE (10 ms)


def min_samples(hop: int = MEL_HOP) -> int:
    """The fewest samples that give one audio token (module doc): ``ceil(n / hop)`` mel frames make
    ``(frames - 1) // 2 + 1`` encoder positions and ``(positions - 2) // 2 + 1`` tokens, which is 1 from three frames
    (two positions) on; three frames start at ``2 * hop + 1`` samples."""
    return 2 * hop + 1


MIN_SAMPLES = min_samples()
MIN_MS = 1000 * MIN_SAMPLES / MODEL_RATE  # 20.0625 ms


def samples_at_model_rate(frames: int, rate: int) -> int:
    """How many samples ``frames`` at ``rate`` become once decoded at MODEL_RATE (soxr's length: rounded half up)."""
    return frames if rate == MODEL_RATE else math.floor(frames * MODEL_RATE / rate + 0.5)


def check(n_samples: Sequence[int], durations_s: Sequence[float], places: Sequence[str]) -> None:
    """Refuse the first clip of fewer than MIN_SAMPLES samples at MODEL_RATE, in one line naming its place
    (``<csv> row <n> (<clip_id>)``), its duration (``durations_s``, as the file says) and the minimum."""
    short = np.flatnonzero(np.asarray(n_samples, dtype=np.int64) < MIN_SAMPLES)
    if short.size == 0:
        return
    first = int(short[0])
    more = f" ({short.size} clips are)" if short.size > 1 else ""
    raise UserError(f"{places[first]}: clip of {1000 * durations_s[first]:g} ms is shorter than {MIN_MS:g} ms, the "
                    f"shortest that gives the model an audio token{more}, so the model would answer from the prompt "
                    f"alone; remove the row, or pad the clip (with silence or noise) to at least {MIN_MS:g} ms")
