"""Peak memory of building the training feature cache: every clip in one feature-extractor call, against
``FeatureCache``'s chunks (``speech_calibration.model.inputs``).

Each way runs in a fresh process (a process's peak resident memory only grows), on ``--clips`` random clips of
``--seconds`` each, with Qwen2-Audio's extractor settings (128 log-mel bins, hop 160, 30-s window, no trimming,
so every clip is padded to 30 s as the real model's window is). Prints, for each, the cache's size and how much
the process's peak resident memory grew while building it.

    python -m benchmarks.feature_cache_memory --clips 120
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import numpy as np

SAMPLE_RATE, HOP, WINDOW_S, MELS = 16000, 160, 30, 128


class _Builder:
    """The parts of ``InputBuilder`` that ``FeatureCache`` uses, around Qwen2-Audio's feature-extractor settings."""

    hop = HOP

    def __init__(self):
        from transformers import WhisperFeatureExtractor

        self.feature_extractor = WhisperFeatureExtractor(feature_size=MELS, hop_length=HOP, chunk_length=WINDOW_S)

    def window_length(self, audios, *, trim: bool) -> int:
        return WINDOW_S * SAMPLE_RATE

    def log_mel(self, audios, length: int, *, device: str = "cpu"):
        out = self.feature_extractor([np.asarray(a, np.float32) for a in audios], sampling_rate=SAMPLE_RATE,
                                     padding="max_length", max_length=length, truncation=True,
                                     return_attention_mask=True, return_tensors="pt")
        return out["input_features"], out["attention_mask"].long()


def measure(way: str, clips: int, seconds: float) -> dict:
    """Build the features of ``clips`` random clips ``way`` (``whole`` or ``chunked``) in this process."""
    from speech_calibration.model.inputs import FeatureCache

    rng = np.random.default_rng(0)
    audios = [0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32) for _ in range(clips)]
    builder = _Builder()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if way == "whole":
        features, _ = builder.log_mel(audios, builder.window_length(audios, trim=False))
    else:
        features = FeatureCache(builder, audios, trim=False).features
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB on Linux
    return {"way": way, "clips": clips, "cache_mib": round(features.numel() * 4 / 2**20, 1),
            "peak_rss_growth_mib": round(grew / 1024, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=60, help="clips to build features of (default 60)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each clip in seconds (default 30)")
    ap.add_argument("--way", choices=("whole", "chunked"), help=argparse.SUPPRESS)  # one way, in this process
    args = ap.parse_args(argv)
    if args.clips < 1 or not 0 < args.seconds <= WINDOW_S:
        ap.error(f"--clips must be at least 1 and --seconds in (0, {WINDOW_S}]")
    if args.way:
        print(json.dumps(measure(args.way, args.clips, args.seconds)))
        return
    rows = []
    for way in ("whole", "chunked"):
        done = subprocess.run([sys.executable, "-m", "benchmarks.feature_cache_memory", "--way", way, "--clips",
                               str(args.clips), "--seconds", str(args.seconds)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"error: the {way} run failed:\n{done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(json.dumps(rows, indent=1))
    for r in rows:
        print(f"{r['way']:<8} {r['clips']} clips: cache {r['cache_mib']} MiB, peak RSS grew {r['peak_rss_growth_mib']} MiB")


if __name__ == "__main__":
    main()
