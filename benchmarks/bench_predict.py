"""Throughput of what ``predict@<seed>`` runs: the base model plus a seed's LoRA adapter, unmerged, merged, compiled.

In one run, on one model configuration (``tiny`` on the CPU, or the Qwen2-Audio-7B shape of ``bench`` with
random weights built on the GPU), it adds a seed-like adapter (LoRA r=16, alpha 32, on the decoder's
attention + MLP: 224 adapted layers at 7B; every ``lora_B`` drawn at random, so it is not a no-op) and
measures the library's scoring loop (``scoring.score_audio``: trimmed window, cached prompt prefix, inputs
built ahead on a worker thread, no host sync inside the loop), per clip duration and batch size:

- ``unmerged``: the adapter as peft wraps it;
- ``merged``: folded into the base weights (``loading.merge_for_scoring``, what predict runs by default);
- ``compiled``: merged, with every decoder layer under ``torch.compile`` (``forward.compile_decoder``,
  ``predict.compile: true``), dynamic shapes; with ``--compile-static`` also per-shape compiling, for contrast;
- where the time goes: building every batch alone, and the forward alone over batches already on the device;
- the model's own full-window forward (merged), for the ratio;
- equivalence (``--probe`` clips of 0.3-5 s, 8 by default, batch 8), beside the unmerged path's own
  |batch 1 - batch 8|: max and mean |merged - unmerged|, |compiled - merged|, |float32 - bf16 log-mel| (how
  scoring built its features before 2026-12-03), and |library - a plain loop| (each batch built on the main
  thread and read back before the next: what the loop did before it built ahead; 0 means identical).

``--question-first`` builds the prompt with ``prompt.question_first`` (the question in the shared prefix: fewer tokens
per clip; another prompt, so its logits are not comparable with the default's, only its equivalences are).

``--bank N`` scores N clips of 0.02-5 s (the condition bank's mix) merged, eager and compiled; with
``--model-dir`` (a folder from ``benchmarks.make_7b_model``) it also times predict's path end to end: load the
base with ``from_pretrained``, add the adapter, merge, compile, score the bank; ``--end-to-end-only`` does only that,
in a fresh process (whose compiling starts from whatever Inductor's on-disk cache holds; the JSON says which).

MFU counts the matrix FLOPs of ``bench.forward_flops`` (prefix once per batch) against the spec peak.

    python -m benchmarks.bench_predict --model tiny --durations 1 --batch-sizes 4 8 --clips 16
    python -m benchmarks.bench_predict --model 7b --bank 21340 --model-dir /tmp/qwen2-audio-7b-random \\
        --out benchmarks/results_h200_predict_library.json   # on a GPU
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench import PEAK_TFLOPS, build, clips, forward_flops, sync, time_scoring
from speech_calibration.data import schema
from speech_calibration.model import forward, loading
from speech_calibration.model.inputs import InputBuilder
from speech_calibration.model.scoring import score_audio, score_batch
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


def _autocast(device, dtype):
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)


def _chunks(audios, batch_size) -> list[np.ndarray]:
    order = np.argsort([len(a) for a in audios], kind="stable")
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def plain_loop_logits(model, builder, audios, batch_size, device, dtype, prefix) -> np.ndarray:
    """A/B logits from the plain loop: each batch built on this thread, scored, and read back before the next."""
    out = np.zeros((len(audios), 2))
    with torch.inference_mode(), _autocast(device, dtype):
        for idx in _chunks(audios, batch_size):
            batch = builder.build([audios[i] for i in idx], feature_device=device.type, shared_prefix=True)
            out[idx] = score_batch(model, batch.to(device, dtype), builder.answer_ids, prefix=prefix)[:, :2].cpu().numpy()
    return out


def bf16_features_builder(builder: InputBuilder, dtype) -> InputBuilder:
    """A copy of ``builder`` whose log-mel runs under autocast (the filter-bank product in ``dtype``), as
    ``score_audio`` built it before 2026-12-03; the library now builds float32 features, as training does."""
    import copy

    old = copy.copy(builder)

    def features(audios, *, trim, device="cpu"):
        with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
            return builder.log_mel(audios, builder.window_length(audios, trim=trim), device=device)

    old.features = features
    return old


# -------------------------------------------------------------------------------------------- timing
def _timed(fn, device) -> float:
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


def time_parts(model, builder, prefix, audios, batch_size, device, dtype) -> dict:
    """Clips per second of building the inputs alone (on the device), and of the forward alone over built batches."""
    chunks = _chunks(audios, batch_size)

    def build_all():
        with torch.inference_mode(), _autocast(device, dtype):
            return [builder.build([audios[i] for i in c], feature_device=device.type, shared_prefix=True).to(device, dtype)
                    for c in chunks]

    build_s = _timed(build_all, device)
    ready = build_all()

    def run():
        with torch.inference_mode(), _autocast(device, dtype):
            for batch in ready:
                score_batch(model, batch, builder.answer_ids, prefix=prefix)

    run()
    forward_s = _timed(run, device)
    return {"build_clips_per_s": round(len(audios) / build_s, 2), "forward_only_clips_per_s": round(len(audios) / forward_s, 2)}


def profile_forward(model, builder, prefix, audios, batch_size, device, dtype) -> dict:
    """GPU time of one batch's forward by kernel family (torch.profiler), and the ten longest kernels."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), _autocast(device, dtype):
        batch = builder.build(audios[:batch_size], feature_device=device.type, shared_prefix=True).to(device, dtype)
        score_batch(model, batch, builder.answer_ids, prefix=prefix)
        sync(device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            score_batch(model, batch, builder.answer_ids, prefix=prefix)
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


def differ(eq: dict, name: str, a: np.ndarray, b: np.ndarray) -> None:
    """Record max and mean |a - b| as ``max_abs_<name>`` and ``mean_abs_<name>``."""
    eq[f"max_abs_{name}"] = float(np.abs(a - b).max())
    eq[f"mean_abs_{name}"] = float(np.abs(a - b).mean())


def first_call_s(fn, device) -> float:
    """Seconds of a first call (where compiling happens)."""
    return round(_timed(fn, device), 2)


def end_to_end(model_dir: Path, builder, audios, batch_size, device, dtype, b_std: float, compiled: bool) -> dict:
    """Predict's path from a saved base: ``from_pretrained``, adapter, merge, compile (``compiled``), score; seconds
    of each (the compiling itself happens in the first batches, so it counts in ``score``)."""
    seconds = {}
    started = time.perf_counter()
    cfg = Model(name_or_path=str(model_dir))
    model = loading.load_base(cfg, device)
    sync(device)
    seconds["load_base"] = time.perf_counter() - started
    # the load and the merge print as each ends: a killed run says how far it got
    print(f"end to end: load_base {seconds['load_base']:.1f} s", flush=True)
    mark = time.perf_counter()
    merged = loading.merge_for_scoring(add_seed_adapter(model, b_std), cfg)
    prefix = forward.PrefixCache(merged, builder.prefix_ids)
    if compiled:
        forward.compile_decoder(merged)  # after the prefix pass, as Scorer does
    sync(device)
    seconds["adapter_merge_prefix"] = time.perf_counter() - mark
    print(f"end to end: adapter_merge_prefix {seconds['adapter_merge_prefix']:.1f} s", flush=True)
    mark = time.perf_counter()
    score_audio(merged, builder, audios, batch_size=batch_size, device=device, dtype=dtype, prefix=prefix, progress=False)
    sync(device)
    seconds["score"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - started
    del model, merged, prefix
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {k: round(v, 2) for k, v in seconds.items()}


def run_header(device, dtype, builder: InputBuilder) -> dict:
    """What every result JSON opens with: device, dtype, torch, the prompt layout and its prompt tokens before the
    audio (run once, cached) and after it (run for every clip)."""
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "dtype": str(dtype).removeprefix("torch."), "torch": torch.__version__,
            "question_first": builder.prompt.question_first,
            "tokens_per_clip": {"prefix_once": len(builder.prefix_ids), "after_audio": len(builder.suffix_ids)}}


def end_to_end_only(args, device, dtype) -> None:
    """``--end-to-end-only``: predict's path on the bank from ``--model-dir``, nothing else, in a fresh process; when
    compiling, records whether Inductor's on-disk cache directory (what a second predict stage on the same machine
    finds) held any entry at the start."""
    if not (args.model_dir and args.bank):
        raise SystemExit("--end-to-end-only needs --model-dir and --bank")
    builder = InputBuilder(loading.load_processor(Model(name_or_path=str(args.model_dir))),
                           Prompt(question_first=args.question_first))
    audios = bank(args.bank, 0.02, 5.0)
    key = "end_to_end_eager_s" if args.no_compile else "end_to_end_compiled_s"
    result = {**run_header(device, dtype, builder),
              "bank": {"clips": len(audios), "durations_s": [0.02, 5.0], "batch_size": args.bank_batch}}
    if not args.no_compile:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        cache = Path(cache_dir())
        result["bank"]["inductor_cache"] = {"dir": str(cache), "warm_at_start": cache.is_dir() and any(cache.iterdir())}
    result["bank"][key] = end_to_end(args.model_dir, builder, audios, args.bank_batch, device, dtype, args.b_std,
                                     not args.no_compile)
    print(json.dumps(result["bank"]), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


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
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled measurements")
    ap.add_argument("--probe", type=int, default=8, help="clips of 0.3-5 s in the equivalence probe (scored at batch 1 and 8)")
    ap.add_argument("--compile-mode", help="torch.compile mode of the compiled path (e.g. reduce-overhead: CUDA graphs)")
    ap.add_argument("--compile-static", action="store_true", help="also compile per shape (dynamic=False), for contrast")
    ap.add_argument("--bank", type=int, default=0, help="also score a bank of this many clips of 0.02-5 s (merged)")
    ap.add_argument("--bank-batch", type=int, default=256)
    ap.add_argument("--model-dir", type=Path, help="a saved base (benchmarks.make_7b_model): time the bank end to end")
    ap.add_argument("--bank-only", action="store_true", help="only the bank (and --model-dir's end-to-end run)")
    ap.add_argument("--end-to-end-only", action="store_true",
                    help="only --model-dir's end-to-end run of the bank (run it twice to see a warm compile cache)")
    ap.add_argument("--profile", action="store_true", help="profile one merged batch of the first duration")
    ap.add_argument("--question-first", action="store_true",
                    help="prompt.question_first: the question before the audio, in the shared prefix (another prompt)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    device = loading.resolve_device(Model(device=args.device))
    dtype = loading.resolve_dtype(Model(), device)
    if args.end_to_end_only:
        return end_to_end_only(args, device, dtype)
    torch.manual_seed(0)
    model, processor, load_s = build(args.model, device, dtype, args.attn)
    builder = InputBuilder(processor, Prompt(question_first=args.question_first))
    header = run_header(device, dtype, builder)
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in header["device"]), None)
    started = time.perf_counter()
    peft_model = add_seed_adapter(model, args.b_std)
    adapter_s = time.perf_counter() - started
    result = {"model": args.model, **header,
              "parameters": sum(q.numel() for q in model.parameters()), "build_s": round(load_s, 2),
              "add_adapter_s": round(adapter_s, 2), "adapted_layers": len(loading.adapted_modules(peft_model)),
              "peak_tflops": peak, "scoring": [], "compile_first_batch_s": {}}
    keys = ["unmerged", "merged"] + ([] if args.no_compile else ["compiled"])
    keys += ["compiled_static"] if args.compile_static else []

    rng = np.random.default_rng(1)
    probe = [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in np.linspace(0.3, 5.0, args.probe)]
    runs = [] if args.bank_only else [(s, clips(max(32, int(args.clips / max(1.0, s))), s)) for s in args.durations]
    rows = {s: {"clip_s": s, "clips": len(a), **{k: {} for k in keys}} for s, a in runs}

    def measure(key, net, prefix):
        for s, audios in runs:
            if key.startswith("compiled"):  # the first batch of this length compiles (or reuses the dynamic graph)
                result["compile_first_batch_s"].setdefault(key, {})[s] = first_call_s(
                    lambda: score_audio(net, builder, audios[: args.batch_sizes[-1]], batch_size=args.batch_sizes[-1],
                                        device=device, dtype=dtype, prefix=prefix, progress=False), device)
            for bs in args.batch_sizes:
                rows[s][key][bs] = round(time_scoring(net, builder, audios, bs, trim=True, device=device, dtype=dtype,
                                                      prefix=prefix), 2)
            print(json.dumps({"clip_s": s, key: rows[s][key]}), flush=True)

    eq = {}
    prefix = forward.PrefixCache(peft_model, builder.prefix_ids)
    unmerged_8 = library_logits(peft_model, builder, probe, 8, device, dtype, prefix)
    unmerged_1 = library_logits(peft_model, builder, probe, 1, device, dtype, prefix)
    differ(eq, "library_vs_plain_loop_unmerged_batchN", unmerged_8,
           plain_loop_logits(peft_model, builder, probe, 8, device, dtype, prefix))
    measure("unmerged", peft_model, prefix)

    started = time.perf_counter()
    merged = loading.merge_for_scoring(peft_model, Model())
    sync(device)
    result["merge_s"] = round(time.perf_counter() - started, 2)
    prefix = forward.PrefixCache(merged, builder.prefix_ids)
    merged_8 = library_logits(merged, builder, probe, 8, device, dtype, prefix)
    differ(eq, "merged_vs_unmerged_batchN", merged_8, unmerged_8)
    differ(eq, "fp32_vs_bf16_features_merged_batchN", merged_8,  # the log-mel precision change of 2026-12-03
           library_logits(merged, bf16_features_builder(builder, dtype), probe, 8, device, dtype, prefix))
    differ(eq, "library_vs_plain_loop_merged_batchN", merged_8,
           plain_loop_logits(merged, builder, probe, 8, device, dtype, prefix))
    measure("merged", merged, prefix)
    for s, audios in runs:
        best_bs = max(rows[s]["merged"], key=rows[s]["merged"].get)
        rows[s]["parts_merged"] = {"batch_size": best_bs, **time_parts(merged, builder, prefix, audios, best_bs, device, dtype)}
        rows[s]["full_window_merged"] = round(time_scoring(merged, builder, audios[: max(args.full_batch * 2, 32)],
                                                           args.full_batch, trim=False, device=device, dtype=dtype), 2)
    if args.profile and runs:
        result["profile_merged"] = profile_forward(merged, builder, prefix, runs[0][1], args.batch_sizes[-1], device, dtype)
        print(json.dumps(result["profile_merged"]), flush=True)
    audios_bank = bank(args.bank, 0.02, 5.0) if args.bank else None
    bank_s = {}
    if audios_bank:
        bank_s["merged"] = _timed(lambda: score_audio(merged, builder, audios_bank, batch_size=args.bank_batch, device=device,
                                                      dtype=dtype, prefix=prefix, progress=False), device)

    if not args.no_compile:
        forward.compile_decoder(merged, mode=args.compile_mode)
        result["compile_mode"] = args.compile_mode
        eq["compiled_probe_first_s"] = first_call_s(lambda: library_logits(merged, builder, probe, 8, device, dtype, prefix),
                                                    device)
        differ(eq, "compiled_vs_merged_batchN", library_logits(merged, builder, probe, 8, device, dtype, prefix), merged_8)
        measure("compiled", merged, prefix)
        if args.profile and runs:
            result["profile_compiled"] = profile_forward(merged, builder, prefix, runs[0][1], args.batch_sizes[-1], device,
                                                         dtype)
            print(json.dumps(result["profile_compiled"]), flush=True)
        if audios_bank:
            bank_s["compiled"] = _timed(lambda: score_audio(merged, builder, audios_bank, batch_size=args.bank_batch,
                                                            device=device, dtype=dtype, prefix=prefix, progress=False), device)
    if args.compile_static:
        torch._dynamo.reset()
        forward.compile_decoder(merged, dynamic=False)
        measure("compiled_static", merged, prefix)
    differ(eq, "unmerged_batch1_vs_batchN", unmerged_1, unmerged_8)
    eq.update({"probe_clips": len(probe), "logit_scale": float(np.abs(unmerged_8).mean()), "batch_n": 8})
    result["equivalence"] = eq
    print(json.dumps(eq), flush=True)

    for s, _ in runs:
        row = rows[s]
        flops = forward_flops(merged, builder, s, shared_prefix=True)
        row["tflop_per_clip"] = round(flops / 1e12, 4)
        for key in keys:
            best = max(row[key].values())
            row[f"{key}_best"] = best
            row[f"{key}_x_full"] = round(best / row["full_window_merged"], 2)
            if peak:
                row[f"{key}_mfu"] = round(best * flops / (peak * 1e12), 3)
        result["scoring"].append(row)
        print(json.dumps(row), flush=True)

    if audios_bank:
        result["bank"] = {"clips": len(audios_bank), "durations_s": [0.02, 5.0], "batch_size": args.bank_batch,
                          "seconds": {k: round(v, 2) for k, v in bank_s.items()},
                          "clips_per_s": {k: round(len(audios_bank) / v, 2) for k, v in bank_s.items()},
                          "note": "scoring only; the model already in memory (compiled: graphs already built)"}
        if args.model_dir:
            del peft_model, merged, prefix, model
            if device.type == "cuda":
                torch.cuda.empty_cache()
            torch._dynamo.reset()
            result["bank"]["end_to_end_eager_s" if args.no_compile else "end_to_end_compiled_s"] = end_to_end(
                args.model_dir, builder, audios_bank, args.bank_batch, device, dtype, args.b_std, not args.no_compile)
        print(json.dumps(result["bank"]), flush=True)

    print()
    print(f"{result['model']} + LoRA r16 on {result['adapted_layers']} layers, {result['device']} ({result['dtype']})")
    print(f"{'clip':>5} " + " ".join(f"{k:>15}" for k in keys) + f" {'full':>7} {'MFU':>6}")
    for r in result["scoring"]:
        print(f"{r['clip_s']:>4.0f}s " + " ".join(f"{r[k + '_best']:>15.1f}" for k in keys)
              + f" {r['full_window_merged']:>7.1f} {r.get(keys[-1] + '_mfu', float('nan')):>6.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
