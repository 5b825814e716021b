"""The whole three-seed study on a 7B-shaped model, end to end, timed stage by stage (run on a GPU).

Runs the pipeline's own stage commands, in ``dvc.yaml``'s order, with a params file that points
``model.name_or_path`` at a saved 7B-shaped random-init Qwen2-Audio (``make_7b_model.py``) and keeps
the study's split sizes (64/72/24 clips). Model loading is included in every stage's time, as in
``dvc repro``. Baselines and the condition sweep are left out (they do not touch the 7B model's
training path; the sweep's scoring is the same code as ``predict``). As in the README's recipe for the
real model, the audio encoder stays frozen (``lora.encoder_targets: false``).

    python -m benchmarks.make_7b_model --out /tmp/qwen2-audio-7b-random
    python -m benchmarks.study_7b --model /tmp/qwen2-audio-7b-random --out study_7b.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 123, 456])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--predict-batch", type=int, default=64)
    ap.add_argument("--skip-prepare", action="store_true", help="data/processed/grouped_split is already there")
    ap.add_argument("--out", type=Path, default=Path("study_7b.json"))
    args = ap.parse_args()

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["seeds"] = args.seeds
    params["model"]["name_or_path"] = args.model
    params["lora"]["encoder_targets"] = False  # the real-model recipe: pretrained encoder and projector frozen
    params["train"].update(epochs=args.epochs, batch_size=args.train_batch, learning_rate=2e-4)
    params["predict"]["batch_size"] = args.predict_batch
    Path("params_7b.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    p = ["--params", "params_7b.yaml"]
    py = [sys.executable, "-m"]
    steps = [] if args.skip_prepare else [("prepare", py + ["stages.prepare"] + p)]
    steps += [(f"train@{s}", py + ["stages.train", "--seed", str(s)] + p) for s in args.seeds]
    steps += [(f"predict@{s}", py + ["stages.predict", "--seed", str(s)] + p) for s in args.seeds]
    steps += [("predict_zeroshot", py + ["stages.predict", "--zero-shot"] + p)]
    steps += [(f"calibrate@{s}", py + ["stages.calibrate", "--seed", str(s)] + p) for s in args.seeds]
    steps += [(f"evaluate@{s}", py + ["stages.evaluate", "--seed", str(s)] + p) for s in args.seeds]
    steps += [("aggregate", py + ["stages.aggregate"] + p)]
    timings = {}
    started = time.perf_counter()
    for name, cmd in steps:
        t0 = time.perf_counter()
        done = subprocess.run(cmd)
        timings[name] = round(time.perf_counter() - t0, 1)
        print(f"== {name}: {timings[name]} s (exit {done.returncode})", flush=True)
        if done.returncode != 0:
            break
    total = round(time.perf_counter() - started, 1)
    train_info = {s: json.loads(Path(f"models/seed_{s}/train_info.json").read_text())
                  for s in args.seeds if Path(f"models/seed_{s}/train_info.json").exists()}
    result = {"total_s": total, "stages_s": timings,
              "train_clips_per_s": {s: i.get("clips_per_s") for s, i in train_info.items()},
              "summary": Path("metrics/summary.txt").read_text() if Path("metrics/summary.txt").exists() else None}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
