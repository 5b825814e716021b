"""Save a Qwen2-Audio-7B-shaped model with random weights (bf16) and a processor, for GPU runs without downloads.

The weights are random, so what it measures is speed, memory and the code path, not accuracy. Built
directly on the GPU; the folder then loads through the pipeline's ordinary ``from_pretrained`` code.

    python -m benchmarks.make_7b_model --out /tmp/qwen2-audio-7b-random
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.bench import build
from speech_calibration.model import loading
from speech_calibration.params import Model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    device = loading.resolve_device(Model())
    started = time.perf_counter()
    torch.manual_seed(0)
    model, processor, _ = build("7b", device, loading.resolve_dtype(Model(), device), "sdpa")
    model.save_pretrained(args.out, safe_serialization=True)
    processor.save_pretrained(args.out)
    print(f"saved {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters to {args.out} "
          f"in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
