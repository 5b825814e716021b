"""LoRA fine-tuning of Qwen2-Audio to answer A (SPEECH) or B (NONSPEECH): one readable training loop.

Reads the train split, the base model named by ``model.name_or_path``, and the ``model``, ``prompt``,
``lora`` and ``train`` params. Only the answer token is supervised (every prompt position is masked out
of the loss). Writes the adapter with ``save_pretrained`` (``adapter_model.safetensors``,
``adapter_config.json``: ``PeftModel.from_pretrained`` opens it) plus ``train_info.json`` into
``models/seed_<seed>/``, and dvclive logs (loss and learning rate per optimizer step, train accuracy
per epoch) into ``metrics/train/seed_<seed>/``.

Under torchrun with several processes (:mod:`speech_calibration.model.distributed`) it is data-parallel:
each rank takes its share of every global batch (``train.batch_size`` stays the global batch), the
gradients are summed over ranks before each optimizer step, and rank 0 alone saves and logs.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from speech_calibration import layout
from speech_calibration import params as params_mod
from speech_calibration.errors import UserError
from speech_calibration.fileio import atomic_dir, signals_held, write_json

log = logging.getLogger(__name__)
# On the CPU the train split's log-mel features are computed once and sliced every epoch, when they fit in this
# many bytes (:class:`speech_calibration.model.inputs.FeatureCache`; 17 MB for the embedded default). On a GPU
# they are computed on the GPU for every batch, as when scoring.
FEATURE_CACHE_BYTES = 1 << 30


def seed_everything(seed: int, strict: bool = True) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels.

    ``strict``: an op without a deterministic form raises (torch's RuntimeError) instead of running with a warning;
    strictly, cuDNN's attention also takes its deterministic backward (``train.deterministic``). On a GPU, cuBLAS is
    deterministic only with a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, read when cuBLAS starts): it is set here,
    before the first CUDA call, unless the environment already sets it.
    """
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=not strict)


NOT_DETERMINISTIC = "does not have a deterministic implementation"  # in torch's error for such an op, when strict


def _not_deterministic(err: RuntimeError) -> UserError | None:
    """The one-line error for torch's refusal of an op without a deterministic form (None for any other error)."""
    text = str(err)
    if NOT_DETERMINISTIC not in text:
        return None
    return UserError(f"train.deterministic: {text.splitlines()[0].split(NOT_DETERMINISTIC)[0].strip()} has no "
                     "deterministic form on this device; set train.deterministic: false to run it anyway (the same "
                     "seed then need not give the same adapter)")


class _NoLive:
    """Stands in for dvclive's ``Live`` on the ranks other than 0: records nothing."""

    def __init__(self):
        self.summary = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None

    def log_metric(self, *args, **kwargs) -> None:
        pass

    def next_step(self) -> None:
        pass


def answer_loss(model, builder, audios, labels, *, trim: bool, device, dtype, prefix=None, features=None):
    """One micro-batch: build the training inputs, forward, cross-entropy on the answer token only.

    The answer token is the last of each (left-padded) row; it is predicted at the position before it.
    ``prefix`` (a trainable :class:`speech_calibration.model.forward.PrefixCache`) runs the prompt text that every row
    shares once for the batch instead of once per row. ``features``: the batch's log-mel features and frame mask,
    already computed (``FeatureCache.take``). Returns (loss, vocabulary logits at the answer position, target
    token ids).
    """
    import torch
    import torch.nn.functional as F

    from speech_calibration.model import forward

    feature_device = "cuda" if device.type == "cuda" else "cpu"
    autocast = torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)
    prefix_kv = None
    if prefix is not None:  # queued before the batch's inputs, so its small kernels can overlap the last step's tail
        with autocast:
            prefix_kv = prefix.for_batch(len(audios))
    batch = builder.build(audios, labels, trim=trim, feature_device=feature_device, shared_prefix=prefix is not None,
                          features=features).to(device, dtype)
    with autocast:
        hidden = forward.last_hidden(model, batch, trim=trim, prefix=prefix, prefix_kv=prefix_kv)[:, -2]
        logits = forward.vocab_logits(model, hidden)
    target = batch.labels[:, -1]
    return F.cross_entropy(logits, target), logits, target


def train(p: params_mod.Params, seed: int, out_dir: Path, live_dir: Path, *,
          feature_cache_bytes: int = FEATURE_CACHE_BYTES) -> dict:
    """Train the seed's adapter into ``out_dir`` (dvclive logs into ``live_dir``); returns ``train_info.json``'s dict.

    ``feature_cache_bytes``: on the CPU, compute the features once when they fit in this many bytes (0: never).
    With ``train.deterministic``, an op without a deterministic form ends it with one line naming the key.
    """
    try:
        return _train(p, seed, out_dir, live_dir, feature_cache_bytes=feature_cache_bytes)
    except RuntimeError as err:
        refused = _not_deterministic(err)
        if refused is None:
            raise
        raise refused from None


def _train(p: params_mod.Params, seed: int, out_dir: Path, live_dir: Path, *, feature_cache_bytes: int) -> dict:
    import torch
    from dvclive import Live
    from tqdm import tqdm
    from transformers import get_linear_schedule_with_warmup

    from speech_calibration.data import schema
    from speech_calibration.data.audio import load_clips
    from speech_calibration.data.long_clips import apply_policy
    from speech_calibration.model import distributed, forward, loading
    from speech_calibration.model.inputs import FeatureCache, InputBuilder

    cfg = p.train
    seed_everything(seed, strict=cfg.deterministic)
    ranks, device = distributed.setup(loading.resolve_device(p.model))
    dtype = loading.resolve_dtype(p.model, device)
    processor = loading.load_processor(p.model)
    builder = InputBuilder(processor, p.prompt)
    frame = schema.read_metadata(layout.split_csv("train"))
    places = schema.clip_places(layout.split_csv("train"), frame)
    audios = load_clips(list(frame["audio_file"]), builder.sampling_rate, places)
    audios, _ = apply_policy(audios, places, builder.window_samples, builder.sampling_rate, p.audio.long_clips,
                             training=True)  # training: one piece per clip
    labels = list(frame[schema.LABEL])

    base = loading.load_base(p.model, device)
    loading.check_processor_fits(base, builder, p.model)
    if p.model.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)  # ours, below
    torch.manual_seed(seed)  # the LoRA init draws from torch's generator
    model = loading.add_lora(base, p.lora)
    targets = loading.adapted_modules(model)
    n_trainable = sum(q.numel() for q in model.parameters() if q.requires_grad)
    log.info("LoRA r=%d on %d modules (%d trainable parameters), e.g. %s", p.lora.r, len(targets), n_trainable,
             ", ".join(targets[:3]))
    if cfg.gradient_checkpointing:
        forward.enable_checkpointing(model)
    model.train()
    if not p.lora.encoder_targets:
        loading.unwrap(model).model.audio_tower.eval()  # frozen encoder: no dropout
    trim = p.model.trim_audio_window
    cache = None
    if device.type == "cpu" and FeatureCache.nbytes(builder, audios, trim=trim) <= feature_cache_bytes:
        cache = FeatureCache(builder, audios, trim=trim)
    prefix = forward.PrefixCache(model, builder.prefix_ids, trainable=True) if cfg.share_prompt_prefix else None
    if cfg.compile:
        forward.compile_decoder(model)

    trainable = [q for q in model.parameters() if q.requires_grad]
    ranks.broadcast_parameters(trainable)  # under torchrun: every rank starts from rank 0's adapters
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    micro_per_epoch = math.ceil(len(frame) / cfg.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(round(cfg.warmup_ratio * total_steps)), total_steps)
    order = torch.Generator().manual_seed(seed)
    answer_ids = builder.answer_ids

    started = time.perf_counter()
    step, last_loss = 0, float("nan")
    # The curves and the adapter go to temporary folders that replace live_dir and out_dir together, once the
    # adapter is saved: a stopped run leaves the previous run's curves and adapter as they were, never one beside the
    # other's successor.
    with contextlib.ExitStack() as outputs:
        live_tmp = outputs.enter_context(atomic_dir(live_dir)) if ranks.is_main else None
        adapter_tmp = outputs.enter_context(atomic_dir(out_dir)) if ranks.is_main else None
        live = Live(dir=str(live_tmp), dvcyaml=None, save_dvc_exp=False, report=None) if ranks.is_main else _NoLive()
        with live:
            bar = tqdm(total=total_steps, desc=f"train seed {seed}", unit="step", disable=None if ranks.is_main else True)
            for epoch in range(cfg.epochs):
                perm = torch.randperm(len(frame), generator=order).tolist()
                correct, seen, window_loss = 0, 0, []
                for micro in range(micro_per_epoch):
                    batch = perm[micro * cfg.batch_size:(micro + 1) * cfg.batch_size]
                    idx = ranks.shard(batch)  # this rank's share of the global batch (all of it in one process)
                    # The optimizer step follows the mean loss over every clip of its accumulation window, however many
                    # micro-batches the window holds (an epoch's last may hold fewer) and however many clips each has.
                    first = micro - micro % cfg.grad_accum
                    window_clips = min((first + cfg.grad_accum) * cfg.batch_size, len(frame)) - first * cfg.batch_size
                    weight = len(idx) / window_clips  # 1.0 in one process without accumulation
                    loss_part = 0.0
                    if idx:
                        loss, logits, target = answer_loss(model, builder, [audios[i] for i in idx],
                                                           [labels[i] for i in idx], trim=trim, device=device, dtype=dtype,
                                                           prefix=prefix, features=cache.take(idx) if cache else None)
                        (loss * weight).backward()
                        loss_part = loss.detach().item() * weight
                        pair = logits[:, list(answer_ids)]
                        predicted = torch.where(pair[:, 0] >= pair[:, 1], answer_ids[0], answer_ids[1])
                        correct += int((predicted == target).sum())
                        seen += len(idx)
                    window_loss.append(loss_part)
                    if (micro + 1) % cfg.grad_accum == 0 or micro + 1 == micro_per_epoch:
                        ranks.all_reduce_gradients(trainable)  # under torchrun: the whole batch's gradient on every rank
                        torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                        last_loss = ranks.sum([float(np.sum(window_loss))])[0]
                        live.log_metric("train/loss", last_loss)
                        live.log_metric("train/learning_rate", scheduler.get_last_lr()[0])
                        live.next_step()
                        step += 1
                        window_loss = []
                        bar.update(1)
                        bar.set_postfix(loss=f"{last_loss:.4f}", epoch=epoch + 1)
                correct, seen = ranks.sum([correct, seen])
                live.log_metric("train/accuracy_epoch", correct / seen, plot=True)
                live.log_metric("train/epoch", epoch + 1, plot=False)
            bar.close()
            wall = time.perf_counter() - started
            live.summary["train/final_loss"] = last_loss
            live.summary["train/wall_time_s"] = round(wall, 2)

        info = {
            "seed": seed, "steps": step, "epochs": cfg.epochs, "clips": len(frame), "final_loss": last_loss,
            "wall_time_s": round(wall, 2), "clips_per_s": round(len(frame) * cfg.epochs / wall, 2),
            "device": str(device), "processes": ranks.world_size, "dtype": str(dtype).removeprefix("torch."),
            "trainable_parameters": n_trainable,
            "adapted_modules": targets, "base_model": p.model.name_or_path,
            "params": {"lora": asdict(p.lora), "train": asdict(cfg), "prompt": asdict(p.prompt)},
        }
        if ranks.is_main:
            model.save_pretrained(str(adapter_tmp), safe_serialization=True)
            write_json(layout.train_info_json(adapter_tmp), info)
            with signals_held():  # both folders in place before a stop takes effect
                outputs.close()
    log.info("seed %d: %d steps in %.1f s, final loss %.4f -> %s", seed, step, wall, last_loss, out_dir)
    return info
