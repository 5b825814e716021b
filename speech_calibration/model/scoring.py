"""Scoring clips: the A/B answer logits of every clip, one batched forward pass, no text generation.

A :class:`Scorer` holds the base model and (optionally) a seed's adapter, loaded once; :func:`score_csvs`
scores several metadata CSVs in one process; :func:`score_audio` is the scoring loop itself (the
benchmark times it on models it builds). The logits of
the two answer tokens come from the decoder's last hidden state at the answer position against just
those two rows of the output head; the log-sum-exp of the whole vocabulary at that one position is
kept too, so a report can say how much probability falls outside A/B. Clips are sorted by length so
each batch's audio window is short, padded on the left, and returned in the CSV's order.

A clip longer than the model's audio window is refused, truncated or scored as windows, as
``audio.long_clips`` says (:mod:`speech_calibration.data.long_clips`, :func:`combine_windows`).

Under torchrun with several processes (:mod:`speech_calibration.model.distributed`) each rank scores its share of
the batches and rank 0 writes the same CSVs as one process.

Beside each split, ``<split>_content_free.csv`` holds the logits of two content-free inputs (digital
silence and a short white noise) for contextual calibration.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from speech_calibration import params as params_mod
from speech_calibration.data import schema, short_clips
from speech_calibration.data.audio import load_clips
from speech_calibration.data.long_clips import apply_policy
from speech_calibration.errors import UserError
from speech_calibration.fileio import atomic_dir, write_csv
from speech_calibration.model import distributed, forward, loading
from speech_calibration.stats.metrics import p_speech_from_logits

if TYPE_CHECKING:
    from speech_calibration.model.inputs import Batch

log = logging.getLogger(__name__)
CONTENT_FREE_INPUTS = ("silence", "noise")
_DROP = {schema.AUDIO_PATH, "audio_file"}
N_WINDOWS = "n_windows"  # predictions column where audio.long_clips=windows scored a clip as several windows


class Scorer:
    """A loaded model (base, or base + adapter) that turns clips into answer logits (this rank's share of them,
    gathered on every rank, under torchrun)."""

    def __init__(self, p: params_mod.Params, adapter: Path | None):
        from speech_calibration.model.inputs import InputBuilder

        self.p = p
        self.ranks, self.device = distributed.setup(loading.resolve_device(p.model))
        self.dtype = loading.resolve_dtype(p.model, self.device)
        if adapter is not None:  # before anything loads
            loading.check_trained_prompt(adapter, p.prompt)
            loading.check_trained_base(adapter, p.model)
        self.builder = InputBuilder(loading.load_processor(p.model), p.prompt)
        model = loading.load_base(p.model, self.device)
        loading.check_processor_fits(model, self.builder, p.model)
        self.model = loading.merge_for_scoring(loading.load_adapter(model, adapter), p.model) if adapter is not None else model
        self.model.eval()
        self.trim = p.model.trim_audio_window
        self.prefix = (forward.PrefixCache(self.model, self.builder.prefix_ids)
                       if self.trim and p.model.cache_prompt_prefix else None)
        if p.predict.compile:  # after the one prefix pass, which need not compile
            forward.compile_decoder(self.model)

    def score(self, audios: Sequence[np.ndarray], desc: str = "score") -> dict[str, np.ndarray]:
        """logit_A, logit_B and the vocabulary log-sum-exp for every clip, in the order given."""
        return score_audio(self.model, self.builder, audios, batch_size=self.p.predict.batch_size, device=self.device,
                           dtype=self.dtype, trim=self.trim, prefix=self.prefix, desc=desc, ranks=self.ranks)


def score_audio(model, builder, audios: Sequence[np.ndarray], *, batch_size: int, device: torch.device,
                dtype: torch.dtype, trim: bool = True, prefix: forward.PrefixCache | None = None, desc: str = "score",
                progress: bool = True, ranks: distributed.Context = distributed.SINGLE) -> dict[str, np.ndarray]:
    """The scoring loop: logit_A, logit_B and the vocabulary log-sum-exp of every clip, in the order given.

    Clips are sorted by length and scored ``batch_size`` at a time in inference mode (autocast to ``dtype``
    unless it is float32); ``trim`` cuts the audio window to the batch's longest clip, ``prefix`` (a
    :class:`forward.PrefixCache`) runs the shared prompt prefix once. ``progress``: show a progress bar.
    ``ranks``: under torchrun, this rank scores every ``world_size``-th batch (the same batches as one process)
    and the rows are gathered, so every rank returns all of them.

    The device is never waited for inside the loop: the next batches' inputs are built on a worker thread
    while the current one runs (:func:`_built_ahead`; on a GPU their log-mel features on a side stream and
    the tensors in pinned memory, copied without blocking), the audio features are placed by indices worked
    out on the CPU, and the outputs stay on the device until the end. Each batch is built and scored exactly
    as it would be one at a time, so the numbers are those of a plain loop.
    """
    from tqdm import tqdm

    cuda = device.type == "cuda"
    order = np.argsort([len(a) for a in audios], kind="stable")
    starts = ranks.shard(range(0, len(order), batch_size))  # whole batches: each is the one a single process scores
    mine = np.concatenate([order[start:start + batch_size] for start in starts] or [order[:0]])  # this rank's clips
    autocast = torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)
    side = torch.cuda.Stream(device) if cuda else None

    def build(start: int) -> tuple[Batch, torch.Tensor]:
        """One batch's inputs and output rows on the CPU (features in float32, as training builds them)."""
        idx = order[start:start + batch_size]
        with torch.inference_mode(), torch.cuda.stream(side) if cuda else contextlib.nullcontext():
            batch = builder.build([audios[i] for i in idx], trim=trim, feature_device="cuda" if cuda else "cpu",
                                  shared_prefix=prefix is not None)
        rows = torch.as_tensor(idx, dtype=torch.long)
        return (batch.pin_memory(), rows.pin_memory()) if cuda else (batch, rows)

    out = torch.zeros((len(audios), 3), dtype=torch.float32, device=device)
    shown = progress and ranks.is_main
    bar = tqdm(total=len(mine), desc=desc, unit="clip", disable=None if shown else True)  # None: a terminal only
    with torch.inference_mode(), autocast, bar:
        head = forward.head_rows(model, builder.answer_ids)
        for batch, rows in _built_ahead(build, starts):
            batch = batch.to(device, dtype, non_blocking=cuda)
            rows = rows.to(device, non_blocking=cuda)
            out[rows] = score_batch(model, batch, builder.answer_ids, trim=trim, prefix=prefix, head=head)
            bar.update(len(rows))
    values = ranks.gather_rows(out.cpu().numpy().astype(np.float64), mine)  # the one wait for the device
    return {schema.LOGIT_A: values[:, 0], schema.LOGIT_B: values[:, 1], schema.LOGSUMEXP_VOCAB: values[:, 2]}


def score_batch(model, batch: Batch, answer_ids: tuple[int, int], *, trim: bool = True,
                prefix: forward.PrefixCache | None = None, head: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3) float32 on the model's device: logit_A, logit_B and the vocabulary log-sum-exp of a batch already there.

    ``head``: ``forward.head_rows(model, answer_ids)`` taken once by a loop. Queues work only: nothing is read back.
    """
    if batch.input_ids.is_cuda:  # a new step for CUDA graphs (compile mode "reduce-overhead"); a no-op otherwise
        torch.compiler.cudagraph_mark_step_begin()
    hidden = forward.last_hidden(model, batch, trim=trim, prefix=prefix)[:, -1]
    answers = forward.answer_logits(model, hidden, answer_ids, head=head)
    return torch.cat([answers, forward.vocab_logsumexp(model, hidden, answers, answer_ids)[:, None]], dim=1)


def _built_ahead(build, items: Sequence, depth: int = 2):
    """``build(item)`` for each of ``items`` in order, computed up to ``depth`` items ahead on one worker thread."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    items = list(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-inputs") as pool:
        pending = deque(pool.submit(build, item) for item in items[:depth])
        for k in range(len(items)):
            ready = pending.popleft().result()
            if k + depth < len(items):
                pending.append(pool.submit(build, items[k + depth]))
            yield ready


def combine_windows(scores: dict[str, np.ndarray], owner: np.ndarray, n_clips: int) -> dict[str, np.ndarray]:
    """Per clip, the scores of its window with the largest SPEECH log-odds ``logit_A - logit_B`` (the first on ties),
    and ``n_windows``; ``owner[k]`` is the clip of window ``k`` (:func:`speech_calibration.data.long_clips.apply_policy`)."""
    owner = np.asarray(owner, dtype=np.int64)
    if owner.size == 0 and n_clips == 0:  # an empty set
        return {**{k: np.asarray(v)[:0] for k, v in scores.items()}, N_WINDOWS: np.zeros(0, dtype=np.int64)}
    log_odds = scores[schema.LOGIT_A] - scores[schema.LOGIT_B]
    order = np.lexsort((np.arange(len(owner)), -log_odds, owner))  # by clip, then largest log-odds, then first
    first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]]
    best = np.empty(n_clips, dtype=np.int64)
    best[owner[first]] = first
    out = {k: np.asarray(v)[best] for k, v in scores.items()}
    out[N_WINDOWS] = np.bincount(owner, minlength=n_clips)
    return out


def predictions_frame(meta: pd.DataFrame, scores: dict[str, np.ndarray], prompt: params_mod.Prompt) -> pd.DataFrame:
    """The predictions CSV rows: identity, truth, logits, p(SPEECH) at T=1, prediction, carried metadata."""
    a, b = scores[schema.LOGIT_A], scores[schema.LOGIT_B]
    frame = pd.DataFrame({
        schema.CLIP_ID: meta[schema.CLIP_ID].to_numpy(),
        schema.GROUP_ID: meta[schema.GROUP_ID].to_numpy(),
        schema.LABEL: meta[schema.LABEL].to_numpy(),
        schema.GROUND_TRUTH_TOKEN: np.where(meta[schema.LABEL] == schema.SPEECH, prompt.speech_answer,
                                            prompt.nonspeech_answer),
        schema.LOGIT_A: a,
        schema.LOGIT_B: b,
        schema.P_SPEECH: p_speech_from_logits(a, b),
        schema.PREDICTED_TOKEN: np.where(a >= b, prompt.speech_answer, prompt.nonspeech_answer),
        schema.LOGSUMEXP_VOCAB: scores[schema.LOGSUMEXP_VOCAB],
    })
    if N_WINDOWS in scores and np.any(scores[N_WINDOWS] > 1):
        frame[N_WINDOWS] = scores[N_WINDOWS]
    for col in meta.columns:
        if col not in frame.columns and col not in _DROP:
            frame[col] = meta[col].to_numpy()
    return frame


def content_free_audio(p: params_mod.Predict, sample_rate: int) -> list[np.ndarray]:
    """Digital silence and a seeded white noise at ``content_free_noise_dbfs`` RMS, both of the same length (at least
    the shortest clip that gives the model an audio token, :mod:`speech_calibration.data.short_clips`)."""
    n = int(round(p.content_free_duration_s * sample_rate))
    if n < short_clips.min_samples() * sample_rate / short_clips.MODEL_RATE:
        raise UserError(f"predict.content_free_duration_s: {p.content_free_duration_s:g} s is shorter than "
                        f"{short_clips.MIN_MS:g} ms, the shortest input that gives the model an audio token; lengthen it")
    noise = np.random.default_rng(0).standard_normal(n)
    noise *= 10 ** (p.content_free_noise_dbfs / 20) / np.sqrt(np.mean(noise**2))
    return [np.zeros(n, dtype=np.float32), noise.astype(np.float32)]


def score_csvs(p: params_mod.Params, scorer: Scorer, csvs: dict[str, Path],
               out_dir: Path | None) -> dict[str, pd.DataFrame]:
    """Score every named metadata CSV into ``out_dir/<name>.csv`` (+ ``<name>_content_free.csv``), atomically
    (``None``: return the frames, write nothing); under torchrun every rank scores its share and rank 0 alone writes."""
    metas = {name: schema.read_metadata(path, require_both_classes=False) for name, path in csvs.items()}
    audios = {name: load_clips(list(meta["audio_file"]), scorer.builder.sampling_rate, schema.clip_places(csvs[name], meta))
              for name, meta in metas.items()}
    pieces = {}
    for name, meta in metas.items():  # every set, before any scoring: no clip is cut silently
        pieces[name] = apply_policy(audios[name], schema.clip_places(csvs[name], meta), scorer.builder.window_samples,
                                    scorer.builder.sampling_rate, p.audio.long_clips)
    free_audio = content_free_audio(p.predict, scorer.builder.sampling_rate)
    free = scorer.score(free_audio, desc="content-free")
    free_frame = pd.DataFrame({"input": CONTENT_FREE_INPUTS, schema.LOGIT_A: free[schema.LOGIT_A],
                               schema.LOGIT_B: free[schema.LOGIT_B]})
    free_frame[schema.P_SPEECH] = p_speech_from_logits(free_frame[schema.LOGIT_A], free_frame[schema.LOGIT_B])
    free_frame[schema.LOGSUMEXP_VOCAB] = free[schema.LOGSUMEXP_VOCAB]
    frames = {}
    with atomic_dir(out_dir) if scorer.ranks.is_main and out_dir is not None else contextlib.nullcontext() as tmp:
        for name, meta in metas.items():
            started = time.perf_counter()
            heard, owner = pieces[name]
            frame = predictions_frame(meta, combine_windows(scorer.score(heard, desc=name), owner, len(meta)), p.prompt)
            if tmp is not None:
                write_csv(tmp / f"{name}.csv", frame)
                write_csv(tmp / f"{name}_content_free.csv", free_frame)
            seconds = time.perf_counter() - started
            acc = float((frame[schema.PREDICTED_TOKEN] == frame[schema.GROUND_TRUTH_TOKEN]).mean())
            log.info("%s: %d clips in %.1f s (%.1f clips/s), accuracy at T=1 %.3f", name, len(frame), seconds,
                     len(frame) / max(seconds, 1e-9), acc)
            frames[name] = frame
    return frames

