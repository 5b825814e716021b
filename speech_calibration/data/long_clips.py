"""Clips longer than the model's audio window: a decision, never an accident (params ``audio.long_clips``).

The feature extractor of Qwen2-Audio keeps the first ``window`` seconds of a clip (30 s for the real
model, 6 s for the embedded tiny one) and drops the rest without a word. Every place that hands audio
to the model goes through :func:`apply_policy` instead:

``error``     stop with one line naming the CSV row of the first long clip (and how many there are);
``truncate``  keep each long clip's first window; the clips cut are counted and logged;
``windows``   cut each long clip into ``ceil(length / window)`` windows of the full window length, the
              last one ending at the clip's end (so it overlaps its neighbour instead of being a short
              scrap); the scores of a clip's windows are combined by
              :func:`speech_calibration.model.scoring.combine_windows` (the window with the largest
              SPEECH log-odds: a clip contains speech if any part of it does). Training labels cover a
              whole clip, not each window, so training keeps the first window, logged as such.

:func:`report` is the up-front check of ``prepare`` and the ``eval_set`` stages: it applies the same
policy to clip durations, before any model is loaded.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from speech_calibration.errors import UserError

log = logging.getLogger(__name__)

FIX = "cut it into clips no longer than the window, or set audio.long_clips to truncate or windows"


def windows_of(length: int, window: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the windows that cover ``length`` samples (one window when it fits; see the module doc)."""
    if length <= window:
        return [(0, length)]
    n = math.ceil(length / window)
    starts = [k * window for k in range(n - 1)] + [length - window]
    return [(s, s + window) for s in starts]


def _error(place: str, seconds: float, window_s: float, n_long: int) -> UserError:
    more = f" ({n_long} clips are)" if n_long > 1 else ""
    return UserError(f"{place}: clip of {seconds:.2f} s is longer than the model's {window_s:g} s audio window{more}, "
                     f"which would hear only its first {window_s:g} s; {FIX}")


def report(durations_s: Sequence[float], places: Sequence[str], window_s: float, policy: str, what: str) -> int:
    """Apply ``policy`` to clip durations before anything is scored: raise for ``error``, log the count otherwise.

    Returns the number of long clips. ``what`` names the clips in the log line (e.g. ``"train"``).
    """
    durations = np.asarray(durations_s, dtype=float)
    long = np.flatnonzero(durations > window_s + 1e-9)
    if long.size == 0:
        return 0
    first = int(long[0])
    if policy == "error":
        raise _error(places[first], float(durations[first]), window_s, long.size)
    effect = (f"the model hears the first {window_s:g} s of each" if policy == "truncate" else
              f"scored as windows of {window_s:g} s, the largest SPEECH log-odds kept (training keeps the first)")
    log.warning("%s: %d of %d clips are longer than the model's %g s audio window (longest %.2f s; first: %s); "
                "audio.long_clips=%s: %s", what, long.size, durations.size, window_s, float(durations[long].max()),
                places[first], policy, effect)
    return int(long.size)


def apply_policy(audios: Sequence[np.ndarray], places: Sequence[str], window: int, sample_rate: int, policy: str, *,
                 training: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    """What the model hears: ``(pieces, owner)``, with ``owner[k]`` the index of the clip piece ``k`` comes from.

    ``window`` is in samples. Without long clips the pieces are the clips themselves. See the module doc
    for the policies; ``training`` turns ``windows`` into ``truncate`` (logged).
    """
    lengths = np.array([len(a) for a in audios])
    long = np.flatnonzero(lengths > window)
    if long.size and policy == "error":
        first = int(long[0])
        raise _error(places[first], lengths[first] / sample_rate, window / sample_rate, long.size)
    if long.size == 0:
        return list(audios), np.arange(len(audios))
    cut = policy == "truncate" or training
    pieces, owner = [], []
    for i, audio in enumerate(audios):
        spans = [(0, min(len(audio), window))] if cut else windows_of(len(audio), window)
        pieces += [audio[a:b] for a, b in spans]
        owner += [i] * len(spans)
    log.warning("%d of %d clips are longer than the model's %g s audio window (first: %s): %s", long.size, len(audios),
                window / sample_rate, places[int(long[0])],
                "cut to their first window" + (" (training: a label covers the whole clip, not each window)"
                                               if training and policy == "windows" else "") if cut else
                f"scored as {len(pieces) - len(audios) + long.size} windows")
    return pieces, np.asarray(owner)
