"""Experiment: the merged predict model with every decoder layer under ``torch.compile`` (Inductor fuses the
RMSNorm, rotary, SiLU*up and residual kernels that ``bench_predict``'s profile shows beside the matrix products).

Measures the overlapped loop of :mod:`benchmarks.bench_predict` on the merged model before and after compiling,
the compile time (the first batch of each shape), and max |compiled - eager| of the A/B logits on
``bench_predict``'s 8 probe clips, beside the eager path's own max |batch 1 - batch 8|.

    python -m benchmarks.bench_compile --model 7b --out benchmarks/results_h200_predict_compile.json   # on a GPU
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench import build, clips, sync
from benchmarks.bench_predict import Overlapped, _timed, ab_logits, add_seed_adapter, time_overlapped
from speech_calibration.model import forward, loading
from speech_calibration.model.inputs import InputBuilder
from speech_calibration.params import Model, Prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["tiny", "7b"], default="tiny")
    ap.add_argument("--durations", type=float, nargs="+", default=[1.0, 5.0])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--clips", type=int, default=1024)
    ap.add_argument("--mode", default="default", help="torch.compile mode (default, max-autotune-no-cudagraphs, ...)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    device = loading.resolve_device(Model())
    dtype = loading.resolve_dtype(Model(), device)
    torch.manual_seed(0)
    model, processor, _ = build(args.model, device, dtype, "sdpa")
    builder = InputBuilder(processor, Prompt())
    merged = loading.merge_for_scoring(add_seed_adapter(model, 0.02), Model())
    prefix = forward.PrefixCache(merged, builder.prefix_ids)
    scorer = Overlapped(merged, builder, prefix, device, dtype)
    rng = np.random.default_rng(1)
    probe = [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in np.linspace(0.3, 5.0, 8)]
    eager_8, eager_1 = ab_logits(scorer.score(probe, 8)), ab_logits(scorer.score(probe, 1))
    runs = [(s, clips(max(32, int(args.clips / max(1.0, s))), s)) for s in args.durations]
    result = {"model": args.model, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "mode": args.mode, "batch_size": args.batch_size, "eager": {}, "compiled": {},
              "first_batch_s": {}}
    for s, audios in runs:
        result["eager"][s] = round(time_overlapped(scorer, audios, args.batch_size, device), 2)
    print(json.dumps(result), flush=True)

    for name in ("recompile_limit", "cache_size_limit"):  # one entry per layer instance and shape
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 1024)
    for layer in merged.model.language_model.layers:
        layer.compile(mode=args.mode, dynamic=False)
    for s, audios in runs:
        result["first_batch_s"][s] = round(_timed(lambda: scorer.score(audios[: args.batch_size], args.batch_size), device), 2)
        result["compiled"][s] = round(time_overlapped(scorer, audios, args.batch_size, device), 2)
        print(json.dumps({"clip_s": s, "compiled": result["compiled"][s], "first_batch_s": result["first_batch_s"][s]}),
              flush=True)
    started = time.perf_counter()
    compiled_8 = ab_logits(scorer.score(probe, 8))
    sync(device)
    result["probe_first_s"] = round(time.perf_counter() - started, 2)
    result["equivalence"] = {"max_abs_compiled_vs_eager_batchN": float(np.abs(compiled_8 - eager_8).max()),
                             "max_abs_eager_batch1_vs_batchN": float(np.abs(eager_1 - eager_8).max()), "batch_n": 8}
    print(json.dumps(result), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
