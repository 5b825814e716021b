"""Throughput of the pipeline's own scoring and training code, beside the slow paths it replaces.

For one model configuration, in one run, it measures and prints (JSON and a table):
- scoring: our ``predict`` path (the library's scoring loop ``speech_calibration.model.scoring.score_audio``:
  trimmed audio window, length-sorted batches, two output-head rows, inference mode) at several batch
  sizes; the same loop over the model's own full window; naive per-clip ``generate()`` of a few tokens;
  the ratios between them; per clip duration (1, 5, 30 s by default);
- equivalence: max |trimmed - full| of the A/B logits at batch N, beside the full path's own
  max |batch 1 - batch N| (in bf16 the first should be no larger than the second);
- training: our ``train`` step (LoRA rank 16 on the decoder's attention + MLP) in clips/s and peak GPU
  memory, with and without gradient checkpointing, with and without LoRA dropout;
- with ``--train-equivalence N``: a training step with the decoder compiled against eager (loss and adapter
  gradients), beside eager's own difference between one pass and two accumulated halves, on
  ``--train-equivalence-batches`` batches of N clips;
- model load time, and model FLOPs utilisation against the device's peak.

Configurations: ``tiny`` (the embedded default; runs on CPU) and ``7b`` (a Qwen2-Audio-7B-shaped
config with random weights built directly on the GPU: no download).

    python -m benchmarks.bench --model tiny --durations 1 5 --out bench_tiny.json
    python -m benchmarks.bench --model 7b --out bench_7b.json          # on a GPU
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from speech_calibration.data import schema
from speech_calibration.model import forward, loading
from speech_calibration.model.inputs import InputBuilder
from speech_calibration.model.scoring import score_audio
from speech_calibration.model.training import answer_loss
from speech_calibration.params import Lora, Model, Prompt, TinyModel

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 spec sheets


def seven_b_config(audio_token_index: int):
    """Qwen2-Audio-7B's shape: Whisper-large-like encoder (32 x 1280) and Qwen-7B decoder (32 x 4096)."""
    from transformers import Qwen2AudioConfig

    return Qwen2AudioConfig(
        audio_config={"model_type": "qwen2_audio_encoder", "num_mel_bins": 128, "encoder_layers": 32,
                      "encoder_attention_heads": 20, "encoder_ffn_dim": 5120, "d_model": 1280,
                      "max_source_positions": 1500},
        text_config={"model_type": "qwen2", "vocab_size": 156032, "hidden_size": 4096, "intermediate_size": 11008,
                     "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                     "max_position_embeddings": 8192, "rope_theta": 10000.0, "tie_word_embeddings": False},
        audio_token_index=audio_token_index,
    )


def build(kind: str, device: torch.device, dtype: torch.dtype, attn: str):
    """(model, processor, load seconds). tiny: built, saved and loaded with from_pretrained; 7b: random init on device."""
    from transformers import Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor, WhisperFeatureExtractor

    from speech_calibration.model.tiny import build as build_tiny
    from speech_calibration.model.tiny import build_tokenizer

    if kind == "tiny":
        folder = Path(tempfile.mkdtemp()) / "tiny"
        build_tiny(TinyModel(), folder)
        started = time.perf_counter()
        cfg = Model(name_or_path=str(folder), device=str(device), attn_implementation=attn)
        model = loading.load_base(cfg, device)
        processor = loading.load_processor(cfg)
        return model, processor, time.perf_counter() - started
    tokenizer = build_tokenizer()
    processor = Qwen2AudioProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=128, chunk_length=30, return_attention_mask=True),
        tokenizer=tokenizer)
    processor.tokenizer.padding_side = "left"
    config = seven_b_config(tokenizer.convert_tokens_to_ids("<|AUDIO|>"))
    config._attn_implementation = attn
    config.text_config._attn_implementation = attn
    config.audio_config._attn_implementation = attn
    started = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2AudioForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval().requires_grad_(False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return model, processor, time.perf_counter() - started


def clips(n: int, seconds: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32) for _ in range(n)]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_scoring(model, builder, audios, batch_size, *, trim, device, dtype, prefix=None, warmup=2) -> float:
    """Clips per second of the library's scoring loop (inputs built, forward, A/B logits and log-sum-exp on the CPU)."""
    def run(items):
        score_audio(model, builder, items, batch_size=batch_size, device=device, dtype=dtype, trim=trim, prefix=prefix,
                    progress=False)

    run(audios[: batch_size * warmup])
    sync(device)
    started = time.perf_counter()
    run(audios)
    sync(device)
    return len(audios) / (time.perf_counter() - started)


def time_generate(model, processor, builder, audios, device, dtype, new_tokens=3) -> float:
    """Clips per second of the naive way: processor + generate() one clip at a time."""
    autocast = torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)
    with torch.inference_mode(), autocast:
        def one(a):
            inputs = processor(text=[builder.text], audio=[a], sampling_rate=16000, return_tensors="pt").to(device)
            inputs["input_features"] = inputs["input_features"].to(dtype)
            model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        one(audios[0])
        sync(device)
        started = time.perf_counter()
        for a in audios:
            one(a)
        sync(device)
    return len(audios) / (time.perf_counter() - started)


def equivalence(model, builder, device, dtype, n=8) -> dict:
    """max |trimmed - full| at batch n, beside the full path's own max |batch 1 - batch n|."""
    rng = np.random.default_rng(1)
    audios = [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in np.linspace(0.3, 5.0, n)]

    def logits(trim, batch_size):
        s = score_audio(model, builder, audios, batch_size=batch_size, device=device, dtype=dtype, trim=trim,
                        progress=False)
        return np.stack([s[schema.LOGIT_A], s[schema.LOGIT_B]], axis=1)

    full_n, trim_n, full_1 = logits(False, n), logits(True, n), logits(False, 1)
    return {"max_abs_trim_vs_full_batchN": float(np.abs(trim_n - full_n).max()),
            "max_abs_full_batch1_vs_batchN": float(np.abs(full_1 - full_n).max()),
            "logit_scale": float(np.abs(full_n).mean())}


@contextlib.contextmanager
def training_adapter(model, *, dropout: float, checkpointing: str = "none", compiled: bool = False):
    """``model`` with the train step's LoRA (r=16 on the decoder's attention + MLP; the real model's pretrained encoder
    stays frozen, as ``lora.encoder_targets: false``), in training mode, and the same plain base again afterwards,
    also after running out of memory.

    ``checkpointing``: "none"; "layer" or "mlp" (``forward.enable_checkpointing``'s scopes); "transformers"
    (``gradient_checkpointing_enable``, the plain peft + transformers path; per-row prefix only).
    ``compiled``: every decoder layer under ``torch.compile`` (``forward.compile_decoder``).
    """
    peft_model = loading.add_lora(model, Lora(r=16, alpha=32, dropout=dropout, mlp_targets=True, encoder_targets=False))
    try:
        if checkpointing == "transformers":
            peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        elif checkpointing != "none":
            forward.enable_checkpointing(peft_model, checkpointing)
        if compiled:
            forward.compile_decoder(peft_model)
        peft_model.train()
        loading.unwrap(peft_model).model.audio_tower.eval()
        yield peft_model
    finally:
        forward.disable_checkpointing(peft_model)
        if checkpointing == "transformers":  # its hook that makes the embeddings' output require grad goes too
            peft_model.gradient_checkpointing_disable()
            peft_model.disable_input_require_grads()
        forward.uncompile_decoder(peft_model)  # a no-op unless compiled, here or by the caller
        torch._dynamo.reset()
        peft_model.unload()
        model.eval().requires_grad_(False)


def training_equivalence(model, builder, device, dtype, n: int = 16, *, batches: int = 1,
                         backend: str | Callable = "inductor") -> dict:
    """Training steps of the compiled decoder (``train.compile``) against eager, beside eager's batching difference.

    The step is the one ``time_training`` times at its best setting: LoRA r=16 on the decoder's attention + MLP,
    our layer checkpointing, the shared prompt prefix, LoRA dropout 0 (so the step is deterministic). ``lora_B``
    starts from seeded random values instead of peft's zeros, so every adapter has a gradient. ``batches``
    batches of ``n`` random clips of 0.3-5 s (the same ``n`` lengths in each, so one compile serves all; the same
    adapter; no optimizer step), each run compiled and eager; the bound is eager on the same batch as two
    accumulated halves (the same loss and gradient, other kernel shapes and sums). Per batch (``runs``), each
    comparison gives the loss's absolute difference, the gradients' relative L2 difference over all adapters
    together, and their largest absolute difference, beside the largest absolute gradient. The decoder is
    compiled once, for every batch, with ``backend`` (torch.compile's: a name or a callable).
    """
    rng = np.random.default_rng(3)
    sets = [[(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in np.linspace(0.3, 5.0, n)]
            for _ in range(batches)]
    labels = ["SPEECH" if i % 2 == 0 else "NONSPEECH" for i in range(n)]
    torch.manual_seed(0)  # lora_A's init and lora_B's values below
    with training_adapter(model, dropout=0.0, checkpointing="layer") as peft_model:
        with torch.no_grad():
            for name, q in peft_model.named_parameters():
                if "lora_B" in name:
                    q.normal_(0.0, 0.02)
        prefix = forward.PrefixCache(peft_model, builder.prefix_ids, trainable=True)
        trainable = {name: q for name, q in peft_model.named_parameters() if q.requires_grad}

        def step(audios, parts: int):
            for q in trainable.values():
                q.grad = None
            total = 0.0
            for part in np.array_split(np.arange(n), parts):
                loss, _, _ = answer_loss(peft_model, builder, [audios[i] for i in part], [labels[i] for i in part],
                                         trim=True, device=device, dtype=dtype, prefix=prefix)
                (loss * len(part) / n).backward()
                total += float(loss.detach()) * len(part) / n
            return total, torch.cat([q.grad.detach().float().flatten() for q in trainable.values()])

        def compare(a, b) -> dict:
            return {"abs_loss": abs(a[0] - b[0]),
                    "grad_rel_l2": float(torch.linalg.vector_norm(a[1] - b[1]) / torch.linalg.vector_norm(b[1])),
                    "grad_max_abs": float((a[1] - b[1]).abs().max())}

        eager = [step(audios, 1) for audios in sets]
        halves = [step(audios, 2) for audios in sets]
        for e, h in zip(eager, halves):  # printed before the long compile
            print(json.dumps({"eager_two_halves_vs_one_pass": compare(h, e)}), flush=True)
        forward.compile_decoder(peft_model, backend=backend)  # undone by training_adapter on the way out
        started = time.perf_counter()
        compiled = [step(sets[0], 1)]
        first_s = time.perf_counter() - started
        compiled += [step(audios, 1) for audios in sets[1:]]
        runs = [{"loss": e[0], "grad_max_abs_eager": float(e[1].abs().max()), "compiled_vs_eager": compare(c, e),
                 "eager_two_halves_vs_one_pass": compare(h, e)} for e, h, c in zip(eager, halves, compiled)]
        return {"batch_size": n, "backend": backend if isinstance(backend, str) else getattr(backend, "__name__", "?"),
                "compiled_first_step_s": round(first_s, 2), "runs": runs}


def time_training(model, builder, audios, batch_size, steps, *, checkpointing, dropout, shared_prefix, device,
                  dtype, compiled: bool = False) -> dict:
    """Clips per second and peak memory of the train stage's step (LoRA r=16 on attention + MLP).

    ``checkpointing``, ``compiled``: as :func:`training_adapter`.
    """
    with training_adapter(model, dropout=dropout, checkpointing=checkpointing, compiled=compiled) as peft_model:
        prefix = forward.PrefixCache(peft_model, builder.prefix_ids, trainable=True) if shared_prefix else None
        trainable = [q for q in peft_model.parameters() if q.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-4)
        labels = ["SPEECH" if i % 2 == 0 else "NONSPEECH" for i in range(batch_size)]
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

        def step(i):
            batch = audios[(i * batch_size) % len(audios):][:batch_size]
            if len(batch) < batch_size:
                batch = audios[:batch_size]
            loss, _, _ = answer_loss(peft_model, builder, batch, labels, trim=True, device=device, dtype=dtype,
                                     prefix=prefix)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        started = time.perf_counter()
        step(0)
        sync(device)
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(steps):
            step(i + 1)
        sync(device)
        seconds = time.perf_counter() - started
        out = {"batch_size": batch_size, "gradient_checkpointing": checkpointing, "lora_dropout": dropout,
               "shared_prefix": shared_prefix, "compiled": compiled, "first_step_s": round(first_s, 2),
               "clips_per_s": round(steps * batch_size / seconds, 2),
               "trainable_parameters": sum(q.numel() for q in trainable)}
        if device.type == "cuda":
            out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        return out


def forward_flops(model, builder, seconds: float, *, shared_prefix: bool = False) -> float:
    """Matrix FLOPs of one clip's forward pass on the trimmed window (2 x params x tokens + attention).

    ``shared_prefix``: the prompt prefix runs once per batch, not per clip; its tokens are not counted.
    """
    cfg = model.config
    enc, txt = cfg.audio_config, cfg.text_config
    frames = min(builder.window_frames, math.ceil(seconds * 100) + 4)
    positions = frames // 2
    audio_tokens = (positions - 2) // 2 + 1
    seq = (0 if shared_prefix else len(builder.prefix_ids)) + audio_tokens + len(builder.suffix_ids)
    d, f = enc.d_model, enc.encoder_ffn_dim
    enc_flops = 2 * positions * enc.encoder_layers * (4 * d * d + 2 * d * f) + 4 * enc.encoder_layers * positions**2 * d
    enc_flops += 2 * frames * (enc.num_mel_bins * d * 3) + 2 * positions * (d * d * 3)  # the two convolutions
    h, i = txt.hidden_size, txt.intermediate_size
    kv = h * txt.num_key_value_heads // txt.num_attention_heads
    keys = seq + (len(builder.prefix_ids) if shared_prefix else 0)  # the rows still attend to the prefix
    lm_flops = 2 * seq * txt.num_hidden_layers * (2 * h * h + 2 * h * kv + 3 * h * i) + 4 * txt.num_hidden_layers * seq * keys * h
    return float(enc_flops + lm_flops + 2 * audio_tokens * d * h + 2 * 2 * h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["tiny", "7b"], default="tiny")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--durations", type=float, nargs="+", default=[1.0, 5.0, 30.0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 128])
    ap.add_argument("--full-batch", type=int, default=64, help="batch size of the full-window comparison")
    ap.add_argument("--clips", type=int, default=256, help="clips per scoring measurement (1-s clips; fewer for longer)")
    ap.add_argument("--generate-clips", type=int, default=16)
    ap.add_argument("--train-batch", type=int, nargs="+", default=[32])
    ap.add_argument("--train-steps", type=int, default=6)
    ap.add_argument("--train-dropout", type=float, nargs="+", default=[0.05, 0.0], help="LoRA dropouts to train with")
    ap.add_argument("--train-prefix", choices=["both", "shared", "per-row"], default="both",
                    help="the prompt prefix once per batch (train.share_prompt_prefix), once per row, or both")
    ap.add_argument("--train-checkpointing", nargs="+", default=["none", "layer"],
                    choices=["none", "layer", "mlp", "transformers"], help="checkpointing variants to train with")
    ap.add_argument("--train-compile", choices=["no", "yes", "both"], default="no",
                    help="train with the decoder layers compiled (torch.compile), eager, or both")
    ap.add_argument("--train-configs", nargs="+", metavar="BATCH:CKPT:DROPOUT:PREFIX:COMPILE",
                    help="explicit training configurations instead of the product of the options above, "
                         "e.g. 160:layer:0:shared:yes 64:transformers:0.05:per-row:no")
    ap.add_argument("--train-equivalence", type=int, default=0, metavar="N",
                    help="also a training step compiled vs eager on N clips, beside eager's one pass vs two halves "
                         "(training_equivalence; Inductor: minutes to compile)")
    ap.add_argument("--train-equivalence-batches", type=int, default=1, metavar="K",
                    help="--train-equivalence on K batches of other random clips (compiled once)")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-score", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.train_equivalence == 1 or args.train_equivalence < 0:
        ap.error("--train-equivalence: at least 2 clips (its bound splits the batch in two), or 0 for none")
    if args.train_equivalence_batches < 1:
        ap.error("--train-equivalence-batches: at least 1")

    device = loading.resolve_device(Model(device=args.device))
    dtype = loading.resolve_dtype(Model(), device)
    torch.manual_seed(0)
    model, processor, load_s = build(args.model, device, dtype, args.attn)
    builder = InputBuilder(processor, Prompt())
    window_s = builder.window_samples / 16000
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    result = {"model": args.model, "device": name, "dtype": str(dtype).removeprefix("torch."),
              "parameters": sum(q.numel() for q in model.parameters()), "load_s": round(load_s, 2),
              "peak_tflops": peak, "torch": torch.__version__, "scoring": [], "training": []}
    result["equivalence"] = equivalence(model, builder, device, dtype)
    print(json.dumps(result["equivalence"]), flush=True)

    for seconds in [s for s in args.durations if s <= window_s and not args.skip_score]:
        n = max(32, int(args.clips / max(1.0, seconds / 2)))
        audios = clips(n, seconds)
        row = {"clip_s": seconds, "clips": n, "ours": {}, "ours_no_prefix_cache": {}}
        prefix = forward.PrefixCache(model, builder.prefix_ids)
        for bs in args.batch_sizes:
            row["ours"][bs] = round(time_scoring(model, builder, audios, bs, trim=True, device=device, dtype=dtype,
                                                 prefix=prefix), 2)
            row["ours_no_prefix_cache"][bs] = round(time_scoring(model, builder, audios, bs, trim=True, device=device,
                                                                 dtype=dtype), 2)
        row["full_window"] = round(time_scoring(model, builder, audios[: max(args.full_batch * 2, 32)],
                                                args.full_batch, trim=False, device=device, dtype=dtype), 2)
        row["generate"] = round(time_generate(model, processor, builder, audios[: args.generate_clips], device, dtype), 2)
        best = max(row["ours"].values())
        row["speedup_vs_full"] = round(best / row["full_window"], 2)
        row["speedup_vs_generate"] = round(best / row["generate"], 1)
        flops = forward_flops(model, builder, seconds, shared_prefix=True)  # "ours" runs the prefix once
        row["tflop_per_clip"] = round(flops / 1e12, 4)
        if peak:
            row["mfu"] = round(best * flops / (peak * 1e12), 3)
        result["scoring"].append(row)
        print(json.dumps(row), flush=True)

    if args.train_equivalence:
        result["training_equivalence"] = training_equivalence(model, builder, device, dtype, args.train_equivalence,
                                                              batches=args.train_equivalence_batches)
        print(json.dumps(result["training_equivalence"]), flush=True)

    if not args.skip_train:
        if args.train_configs:  # the listed configurations replace the product of the --train-* options
            configs = [(int(b), c, float(d), p == "shared", k == "yes")
                       for b, c, d, p, k in (spec.split(":") for spec in args.train_configs)]
        else:
            prefixes = {"both": (True, False), "shared": (True,), "per-row": (False,)}[args.train_prefix]
            compiles = {"no": (False,), "yes": (True,), "both": (False, True)}[args.train_compile]
            configs = [(bs, ckpt, dropout, shared, comp) for bs in args.train_batch for ckpt in args.train_checkpointing
                       for dropout in args.train_dropout for shared in prefixes for comp in compiles
                       if not (ckpt == "transformers" and shared)]  # transformers' checkpointing drops the prefix cache
        if not configs:
            raise SystemExit("no training configuration: transformers' checkpointing cannot run with --train-prefix "
                             "shared (it drops the prefix cache); add per-row, or use --skip-train")
        audios = clips(max(c[0] for c in configs) * 4, 1.0, seed=2)
        for bs, checkpointing, dropout, shared, comp in configs:
            try:
                row = time_training(model, builder, audios, bs, args.train_steps, checkpointing=checkpointing,
                                    dropout=dropout, shared_prefix=shared, device=device, dtype=dtype, compiled=comp)
            except torch.OutOfMemoryError:
                row = {"batch_size": bs, "gradient_checkpointing": checkpointing, "lora_dropout": dropout,
                       "shared_prefix": shared, "compiled": comp, "error": "out of memory"}
            if "error" in row:  # outside the except block: the failed step's frames are gone by now
                torch.cuda.empty_cache()
            if peak and "clips_per_s" in row:  # 3 forwards' worth (forward + backward); recomputation not counted
                flops = forward_flops(model, builder, 1.0, shared_prefix=shared)
                row["mfu"] = round(row["clips_per_s"] * 3 * flops / (peak * 1e12), 3)
            result["training"].append(row)
            print(json.dumps(row), flush=True)

    print()
    print(f"{result['model']} on {result['device']} ({result['dtype']}), {result['parameters'] / 1e6:.1f} M parameters, "
          f"built/loaded in {result['load_s']} s")
    print(f"{'clip':>6} {'ours (best)':>12} {'full window':>12} {'generate':>9} {'x full':>7} {'x gen':>7} {'MFU':>6}")
    for r in result["scoring"]:
        print(f"{r['clip_s']:>5.0f}s {max(r['ours'].values()):>12.1f} {r['full_window']:>12.1f} {r['generate']:>9.2f} "
              f"{r['speedup_vs_full']:>7.2f} {r['speedup_vs_generate']:>7.1f} {r.get('mfu', float('nan')):>6.3f}")
    for r in result["training"]:
        print(f"train bs={r['batch_size']} ckpt={r['gradient_checkpointing']} dropout={r['lora_dropout']} "
              f"shared prefix={r['shared_prefix']} compiled={r['compiled']}: "
              f"{r.get('clips_per_s', r.get('error'))} clips/s, peak {r.get('peak_memory_gib', '-')} GiB")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
