"""Throughput of what ``predict@<seed>`` runs: the base model plus a seed's LoRA adapter, unmerged and merged.

In one run, on one model configuration (``tiny`` on the CPU, or the Qwen2-Audio-7B shape of ``bench`` with
random weights built on the GPU), it adds a seed-like adapter (LoRA r=16, alpha 32, on the decoder's
attention + MLP: 224 adapted layers at 7B; every ``lora_B`` drawn at random, so it is not a no-op) and
measures, per clip duration and batch size:

- ``library``: the library's scoring loop (``scoring.score_audio``, trimmed window, cached prompt prefix),
  with the adapter unmerged (what predict ran before ``model.merge_adapter``) and merged
  (``loading.merge_for_scoring``, what predict runs now);
- ``overlapped``: the same computation with the per-batch overhead taken out of the loop (:func:`score_overlapped`):
  the next batches' inputs (tokens, log-mel features on a side CUDA stream, the audio-token scatter plan and
  the encoder's mask) built on a worker thread while the GPU runs the current one, copied from pinned
  memory without blocking, the audio features placed by precomputed indices (no boolean gather), the
  answer-head rows gathered once, and the outputs kept on the GPU until the end: no host sync inside the loop;
- where the time goes: building every batch alone, and the forward alone over batches already on the GPU;
- the model's own full-window forward (merged), for the ratio;
- equivalence (8 clips of 0.3-5 s, batch 8): max |merged - unmerged| and max |overlapped - library| of the
  A/B logits, beside the unmerged library path's own max |batch 1 - batch 8|.

MFU counts the matrix FLOPs of ``bench.forward_flops`` (prefix once per batch) against the spec peak.

    python -m benchmarks.bench_predict --model tiny --durations 1 --batch-sizes 4 8 --clips 16
    python -m benchmarks.bench_predict --model 7b --out benchmarks/results_h200_predict_adapter.json   # on a GPU
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench import PEAK_TFLOPS, build, clips, forward_flops, sync, time_scoring
from speech_calibration.data import schema
from speech_calibration.model import forward, loading
from speech_calibration.model.inputs import InputBuilder, num_audio_tokens
from speech_calibration.model.scoring import score_audio
from speech_calibration.params import Lora, Model, Prompt


def add_seed_adapter(model, b_std: float, seed: int = 0):
    """The train stage's adapter layout (LoRA r=16 on the decoder's attention + MLP) with random non-zero B."""
    peft_model = loading.add_lora(model, Lora(r=16, alpha=32, dropout=0.0, mlp_targets=True, encoder_targets=False))
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, q in peft_model.named_parameters():
            if "lora_B" in name:
                q.copy_(torch.randn(q.shape, generator=generator) * b_std)
    peft_model.eval().requires_grad_(False)
    return peft_model


# ----------------------------------------------------------------------------------- overlapped loop
def _plan(builder: InputBuilder, batch, encoder) -> dict[str, torch.Tensor | None]:
    """What the forward would otherwise read back from the GPU: where each row's audio tokens go, and the encoder mask."""
    n_audio = num_audio_tokens(batch.feature_attention_mask.sum(-1))
    rows = torch.repeat_interleave(torch.arange(len(n_audio)), n_audio)
    starts = torch.cumsum(n_audio, 0) - n_audio
    cols = torch.arange(int(n_audio.sum())) - torch.repeat_interleave(starts, n_audio)
    width, suffix = batch.input_ids.shape[1], len(builder.suffix_ids)
    positions = width - suffix - torch.repeat_interleave(n_audio, n_audio) + cols  # left padding: audio ends before the suffix
    enc_positions = (batch.input_features.shape[-1] - 1) // 2 + 1
    feat_lengths, _ = encoder._get_feat_extract_output_lengths(batch.feature_attention_mask.sum(-1))
    keep = torch.arange(enc_positions)[None, :] < feat_lengths[:, None]
    return {"rows": rows, "cols": cols, "positions": positions, "keep": None if bool(keep.all()) else keep}


def _encode_padded(qwen, features: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """``forward.encode_audio`` without its boolean gather: (B, audio tokens, hidden), padded positions included."""
    import torch.nn.functional as F

    encoder = qwen.model.audio_tower
    x = F.gelu(encoder.conv1(features.to(encoder.conv1.weight.dtype)))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    mask = None if keep is None else keep[:, None, None, :].expand(x.shape[0], 1, x.shape[1], x.shape[1])
    for layer in encoder.layers:
        x = layer(x, mask)
    x = encoder.avg_pooler(x.permute(0, 2, 1)).permute(0, 2, 1)
    return qwen.model.multi_modal_projector(encoder.layer_norm(x))


def _forward(qwen, prefix: forward.PrefixCache, head: torch.Tensor, batch, plan) -> torch.Tensor:
    """(B, 3) float32 on the device: logit_A, logit_B, vocabulary log-sum-exp; queues kernels only."""
    embeds = qwen.model.get_input_embeddings()(batch.input_ids)
    audio = _encode_padded(qwen, batch.input_features, plan["keep"])
    embeds[plan["rows"], plan["positions"]] = audio[plan["rows"], plan["cols"]].to(embeds.dtype)
    rows = batch.input_ids.shape[0]
    mask = torch.cat([batch.attention_mask.new_ones(rows, prefix.length), batch.attention_mask], dim=1)
    out = prefix.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=batch.position_ids, use_cache=False,
                    **{prefix.cache_kwarg: prefix.for_batch(rows)})
    hidden = out.last_hidden_state[:, -1]
    pair = (hidden.to(head.dtype) @ head.T).float()
    lse = torch.logsumexp(qwen.lm_head(hidden.to(qwen.lm_head.weight.dtype)).float(), dim=-1)
    return torch.cat([pair, lse[:, None]], dim=1)


class Overlapped:
    """Scores like ``score_audio`` (trimmed window, cached prefix) with the inputs built ahead on a worker thread."""

    def __init__(self, model, builder: InputBuilder, prefix: forward.PrefixCache, device: torch.device,
                 dtype: torch.dtype, depth: int = 2):
        self.qwen, self.builder, self.prefix = loading.unwrap(model), builder, prefix
        self.model, self.device, self.dtype, self.depth = model, device, dtype, depth
        self.cuda = device.type == "cuda"
        self.side = torch.cuda.Stream(device) if self.cuda else None
        self.head = forward.head_rows(model, builder.answer_ids)

    def prepare(self, audios, idx):
        """On the worker: the batch's inputs and plan on the CPU (pinned), features computed on the side stream.

        Under the same autocast as ``score_audio``'s loop, which builds its batches inside it (autocast is per
        thread): the log-mel's filter-bank product then runs in bf16 there too, and the features are the same.
        """
        stream = torch.cuda.stream(self.side) if self.cuda else contextlib.nullcontext()
        autocast = torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)
        with stream, autocast:
            batch = self.builder.build([audios[i] for i in idx], trim=True, feature_device=self.device.type,
                                       shared_prefix=True)
        plan = _plan(self.builder, batch, self.qwen.model.audio_tower)
        plan["out_rows"] = torch.as_tensor(idx, dtype=torch.long)
        if self.cuda:
            batch = batch.pin_memory()
            plan = {k: (None if v is None else v.pin_memory()) for k, v in plan.items()}
        return batch, plan

    def to_device(self, batch, plan):
        return (batch.to(self.device, self.dtype, non_blocking=True),
                {k: (None if v is None else v.to(self.device, non_blocking=True)) for k, v in plan.items()})

    def batches(self, audios, batch_size):
        """Yields (batch, plan) on the device in length order, ``depth`` batches prepared ahead."""
        order = np.argsort([len(a) for a in audios], kind="stable")
        chunks = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = deque(pool.submit(self.prepare, audios, c) for c in chunks[: self.depth])
            for k in range(len(chunks)):
                batch, plan = pending.popleft().result()
                if k + self.depth < len(chunks):
                    pending.append(pool.submit(self.prepare, audios, chunks[k + self.depth]))
                yield self.to_device(batch, plan)

    def score(self, audios, batch_size: int) -> dict[str, np.ndarray]:
        autocast = torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)
        with torch.inference_mode(), autocast:
            out = torch.empty((len(audios), 3), dtype=torch.float32, device=self.device)
            for batch, plan in self.batches(audios, batch_size):
                out[plan["out_rows"]] = _forward(self.qwen, self.prefix, self.head, batch, plan)
            out = out.cpu().numpy().astype(np.float64)  # the one host sync
        return {schema.LOGIT_A: out[:, 0], schema.LOGIT_B: out[:, 1], schema.LOGSUMEXP_VOCAB: out[:, 2]}


# -------------------------------------------------------------------------------------------- timing
def _timed(fn, device) -> float:
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


def time_overlapped(scorer: Overlapped, audios, batch_size, device, warmup=2) -> float:
    scorer.score(audios[: batch_size * warmup], batch_size)
    return len(audios) / _timed(lambda: scorer.score(audios, batch_size), device)


def time_parts(scorer: Overlapped, audios, batch_size, device) -> dict:
    """Seconds per clip of building the inputs alone, and of the forward alone over batches already on the device."""
    order = np.argsort([len(a) for a in audios], kind="stable")
    chunks = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    build_s = _timed(lambda: [scorer.to_device(*scorer.prepare(audios, c)) for c in chunks], device)
    ready = [scorer.to_device(*scorer.prepare(audios, c)) for c in chunks]
    autocast = torch.autocast(device_type=device.type, dtype=scorer.dtype, enabled=scorer.dtype != torch.float32)

    def run():
        with torch.inference_mode(), autocast:
            for batch, plan in ready:
                _forward(scorer.qwen, scorer.prefix, scorer.head, batch, plan)

    run()
    forward_s = _timed(run, device)
    return {"build_clips_per_s": round(len(audios) / build_s, 2), "forward_only_clips_per_s": round(len(audios) / forward_s, 2)}


def profile_forward(scorer: Overlapped, audios, batch_size, device) -> dict:
    """GPU time of one batch's forward by kernel family (torch.profiler), and the ten longest kernels."""
    from torch.profiler import ProfilerActivity, profile

    batch, plan = scorer.to_device(*scorer.prepare(audios, np.arange(batch_size)))
    autocast = torch.autocast(device_type=device.type, dtype=scorer.dtype, enabled=scorer.dtype != torch.float32)
    with torch.inference_mode(), autocast:
        _forward(scorer.qwen, scorer.prefix, scorer.head, batch, plan)
        sync(device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            _forward(scorer.qwen, scorer.prefix, scorer.head, batch, plan)
            sync(device)
    kernels = [(e.key, getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0), e.count)
               for e in prof.key_averages()]
    kernels = [k for k in kernels if k[1] > 0]
    families = {"matmul": ("gemm", "xmma", "cutlass", "nvjet", "cublas", "wgmma"),
                "attention": ("fmha", "flash", "attention", "efficient"), "copy": ("memcpy", "memset", "copy", "cat")}
    by_family: dict[str, float] = {}
    for name, us, _ in kernels:
        family = next((f for f, keys in families.items() if any(k in name.lower() for k in keys)), "elementwise/other")
        by_family[family] = by_family.get(family, 0.0) + us / 1e3
    top = sorted(kernels, key=lambda k: -k[1])[:10]
    return {"batch_size": batch_size, "ms_by_family": {k: round(v, 2) for k, v in by_family.items()},
            "ms_total": round(sum(by_family.values()), 2),
            "top_kernels": [{"name": n[:120], "ms": round(us / 1e3, 2), "calls": c} for n, us, c in top]}


def bank(n: int, low: float, high: float, seed: int = 3) -> list[np.ndarray]:
    """``n`` clips of uniformly drawn durations in [low, high] s (the condition bank's range)."""
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(max(1, int(s * 16000)))).astype(np.float32) for s in rng.uniform(low, high, n)]


def ab_logits(scores: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([scores[schema.LOGIT_A], scores[schema.LOGIT_B]], axis=1)


def library_logits(model, builder, audios, batch_size, device, dtype, prefix) -> np.ndarray:
    return ab_logits(score_audio(model, builder, audios, batch_size=batch_size, device=device, dtype=dtype, trim=True,
                                 prefix=prefix, progress=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["tiny", "7b"], default="tiny")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--durations", type=float, nargs="+", default=[1.0, 5.0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--clips", type=int, default=1024, help="clips per measurement at 1 s (a fifth as many at 5 s)")
    ap.add_argument("--full-batch", type=int, default=64, help="batch size of the full-window comparison")
    ap.add_argument("--b-std", type=float, default=0.02, help="std of the random lora_B entries")
    ap.add_argument("--bank", type=int, default=0, help="also score a bank of this many clips of 0.02-5 s (merged)")
    ap.add_argument("--bank-batch", type=int, default=256)
    ap.add_argument("--profile", action="store_true", help="profile one merged batch of the first duration")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    device = loading.resolve_device(Model(device=args.device))
    dtype = loading.resolve_dtype(Model(), device)
    torch.manual_seed(0)
    model, processor, load_s = build(args.model, device, dtype, args.attn)
    builder = InputBuilder(processor, Prompt())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    started = time.perf_counter()
    peft_model = add_seed_adapter(model, args.b_std)
    adapter_s = time.perf_counter() - started
    result = {"model": args.model, "device": name, "dtype": str(dtype).removeprefix("torch."), "torch": torch.__version__,
              "parameters": sum(q.numel() for q in model.parameters()), "build_s": round(load_s, 2),
              "adapted_layers": len(loading.adapted_modules(peft_model)), "peak_tflops": peak, "scoring": []}

    rng = np.random.default_rng(1)
    probe = [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in np.linspace(0.3, 5.0, 8)]
    runs = [(s, clips(max(32, int(args.clips / max(1.0, s))), s)) for s in args.durations]
    rows = {s: {"clip_s": s, "clips": len(a), "library_unmerged": {}, "library_merged": {}, "overlapped_unmerged": {},
                "overlapped_merged": {}} for s, a in runs}

    def measure(key, net, prefix):
        fast = Overlapped(net, builder, prefix, device, dtype)
        for s, audios in runs:
            for bs in args.batch_sizes:
                rows[s]["library_" + key][bs] = round(time_scoring(net, builder, audios, bs, trim=True, device=device,
                                                                   dtype=dtype, prefix=prefix), 2)
                rows[s]["overlapped_" + key][bs] = round(time_overlapped(fast, audios, bs, device), 2)
            print(json.dumps({"clip_s": s, key: [rows[s]["library_" + key], rows[s]["overlapped_" + key]]}), flush=True)
        return fast

    prefix = forward.PrefixCache(peft_model, builder.prefix_ids)
    fast = Overlapped(peft_model, builder, prefix, device, dtype)
    unmerged_8 = library_logits(peft_model, builder, probe, 8, device, dtype, prefix)
    unmerged_1 = library_logits(peft_model, builder, probe, 1, device, dtype, prefix)
    overlapped_unmerged_8 = ab_logits(fast.score(probe, 8))
    measure("unmerged", peft_model, prefix)

    started = time.perf_counter()
    merged = loading.merge_for_scoring(peft_model, Model())
    sync(device)
    result["merge_s"] = round(time.perf_counter() - started, 2)
    result["add_adapter_s"] = round(adapter_s, 2)
    prefix = forward.PrefixCache(merged, builder.prefix_ids)
    merged_8 = library_logits(merged, builder, probe, 8, device, dtype, prefix)
    fast = measure("merged", merged, prefix)
    overlapped_merged_8 = ab_logits(fast.score(probe, 8))
    result["equivalence"] = {
        "max_abs_merged_vs_unmerged_batchN": float(np.abs(merged_8 - unmerged_8).max()),
        "max_abs_unmerged_batch1_vs_batchN": float(np.abs(unmerged_1 - unmerged_8).max()),
        "max_abs_overlapped_vs_library_merged_batchN": float(np.abs(overlapped_merged_8 - merged_8).max()),
        "max_abs_overlapped_vs_library_unmerged_batchN": float(np.abs(overlapped_unmerged_8 - unmerged_8).max()),
        "logit_scale": float(np.abs(unmerged_8).mean()), "batch_n": 8}
    print(json.dumps(result["equivalence"]), flush=True)

    for s, audios in runs:
        row = rows[s]
        best_bs = max(row["overlapped_merged"], key=row["overlapped_merged"].get)
        row["parts_merged"] = {"batch_size": best_bs, **time_parts(fast, audios, best_bs, device)}
        row["full_window_merged"] = round(time_scoring(merged, builder, audios[: max(args.full_batch * 2, 32)],
                                                       args.full_batch, trim=False, device=device, dtype=dtype), 2)
        flops = forward_flops(merged, builder, s, shared_prefix=True)
        row["tflop_per_clip"] = round(flops / 1e12, 4)
        for key in ("library_unmerged", "library_merged", "overlapped_unmerged", "overlapped_merged"):
            best = max(row[key].values())
            row[f"{key}_best"] = best
            row[f"{key}_x_full"] = round(best / row["full_window_merged"], 2)
            if peak:
                row[f"{key}_mfu"] = round(best * flops / (peak * 1e12), 3)
        result["scoring"].append(row)
        print(json.dumps(row), flush=True)

    if args.profile:
        try:
            result["profile"] = profile_forward(fast, runs[0][1], min(args.batch_sizes[-1], len(runs[0][1])), device)
        except Exception as err:  # the profiler may not reach the GPU's activity records on every machine
            result["profile"] = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(result["profile"]), flush=True)
    if args.bank:
        audios = bank(args.bank, 0.02, 5.0)
        seconds = {"overlapped_merged": _timed(lambda: fast.score(audios, args.bank_batch), device),
                   "library_merged": _timed(lambda: score_audio(merged, builder, audios, batch_size=args.bank_batch,
                                                                device=device, dtype=dtype, prefix=prefix,
                                                                progress=False), device)}
        result["bank"] = {"clips": len(audios), "durations_s": [0.02, 5.0], "batch_size": args.bank_batch,
                          "seconds": {k: round(v, 2) for k, v in seconds.items()},
                          "clips_per_s": {k: round(len(audios) / v, 2) for k, v in seconds.items()}}
        print(json.dumps(result["bank"]), flush=True)

    print()
    print(f"{result['model']} + LoRA r16 on {result['adapted_layers']} layers, {result['device']} ({result['dtype']})")
    print(f"{'clip':>5} {'lib unmerged':>13} {'lib merged':>11} {'ovl unmerged':>13} {'ovl merged':>11} {'full':>7} {'MFU':>6}")
    for r in result["scoring"]:
        print(f"{r['clip_s']:>4.0f}s {r['library_unmerged_best']:>13.1f} {r['library_merged_best']:>11.1f} "
              f"{r['overlapped_unmerged_best']:>13.1f} {r['overlapped_merged_best']:>11.1f} {r['full_window_merged']:>7.1f} "
              f"{r.get('overlapped_merged_mfu', float('nan')):>6.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
