"""Does the same seed train the same adapter, bit for bit, on this device? Prints the figures as JSON.

The train stage's step (:func:`speech_calibration.model.training.answer_loss`, gradient clipping, AdamW, LoRA on the
decoder's attention + MLP with dropout, our layer checkpointing, the shared prompt prefix) runs ``--steps`` optimizer
steps on seeded random clips, twice, each time from :func:`~speech_calibration.model.training.seed_everything` and a
fresh adapter drawn from the seed, as ``train`` does. The two runs' losses and final adapters are compared: equal bit
for bit, or the largest difference. A third run with another seed shows that the comparison can tell runs apart.

On a GPU, torch's deterministic mode needs cuBLAS's fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, which
``seed_everything`` sets before the first CUDA call) and kernels that have a deterministic form. Strict, as
``train.deterministic: true`` (the default), an op without one is an error; ``--warn-only``, as ``false``, it runs
with a warning, which this script records (cuDNN's attention backward gives one).

    python -m benchmarks.train_determinism --model tiny                                  # CPU or GPU, seconds
    python -m benchmarks.train_determinism --model 7b --batch 32 --steps 4               # GPU: the 7B shape, bf16
    python -m benchmarks.train_determinism --model 7b --batch 32 --steps 4 --warn-only   # train.deterministic: false
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np


def run_once(model, builder, audios, labels, *, seed: int, steps: int, device, dtype, checkpointing: bool,
             shared_prefix: bool, dropout: float, strict: bool = True, compiled: bool = False
             ) -> tuple[list[float], dict]:
    """``steps`` optimizer steps of the train stage's step from ``seed``; (losses, adapter tensors on the CPU)."""
    import torch

    from speech_calibration.model import forward, loading
    from speech_calibration.model.training import answer_loss, seed_everything
    from speech_calibration.params import Lora

    seed_everything(seed, strict=strict)  # as train() with train.deterministic
    torch.manual_seed(seed)  # the LoRA init draws from torch's generator, as in train()
    peft_model = loading.add_lora(model, Lora(r=16, alpha=32, dropout=dropout, mlp_targets=True, encoder_targets=False))
    try:
        if checkpointing:
            forward.enable_checkpointing(peft_model)
        if compiled:
            forward.compile_decoder(peft_model)
        peft_model.train()
        loading.unwrap(peft_model).model.audio_tower.eval()
        prefix = forward.PrefixCache(peft_model, builder.prefix_ids, trainable=True) if shared_prefix else None
        trainable = [q for q in peft_model.parameters() if q.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.01)
        losses = []
        for step in range(steps):
            batch = slice(step * len(audios) // steps, (step + 1) * len(audios) // steps)
            loss, _, _ = answer_loss(peft_model, builder, audios[batch], labels[batch], trim=True, device=device,
                                     dtype=dtype, prefix=prefix)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        adapter = {name: q.detach().float().cpu().clone() for name, q in peft_model.named_parameters()
                   if q.requires_grad}
        return losses, adapter
    finally:
        forward.disable_checkpointing(peft_model)
        forward.uncompile_decoder(peft_model)
        torch._dynamo.reset()
        peft_model.unload()
        model.eval().requires_grad_(False)


def compare(a: tuple[list[float], dict], b: tuple[list[float], dict]) -> dict:
    """Losses and adapters of two runs: bit for bit equal, and the largest absolute differences."""
    (la, wa), (lb, wb) = a, b
    diffs = [float((wa[k] - wb[k]).abs().max()) for k in wa]
    return {"losses_equal": la == lb, "loss_max_abs_diff": max(abs(x - y) for x, y in zip(la, lb)),
            "adapter_bit_for_bit": all(bool((wa[k] == wb[k]).all()) for k in wa),
            "adapter_tensors_differing": sum(d > 0 for d in diffs), "adapter_tensors": len(diffs),
            "adapter_max_abs_diff": max(diffs)}


def main() -> None:
    import torch

    from benchmarks.bench import build
    from speech_calibration.model import loading
    from speech_calibration.model.inputs import InputBuilder
    from speech_calibration.model.training import seed_everything
    from speech_calibration.params import Model, Prompt

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["tiny", "7b"], default="tiny")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--batch", type=int, default=8, help="clips per step")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seconds", type=float, nargs=2, default=(0.3, 5.0), help="clip lengths, evenly spread")
    ap.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout (the default params')")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--warn-only", action="store_true",
                    help="as train.deterministic: false (an op without a deterministic form runs, with a warning)")
    ap.add_argument("--compile", action="store_true", help="the decoder layers compiled (train.compile)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    seed_everything(args.seed, strict=not args.warn_only)  # before the first CUDA call, as train(): cuBLAS reads it then
    device = loading.resolve_device(Model(device=args.device))
    dtype = loading.resolve_dtype(Model(), device)
    model, processor, _ = build(args.model, device, dtype, args.attn)
    builder = InputBuilder(processor, Prompt())
    n = args.batch * args.steps
    rng = np.random.default_rng(3)
    audios = [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in np.linspace(*args.seconds, n)]
    audios = [audios[i] for i in rng.permutation(n)]
    labels = ["SPEECH" if i % 2 == 0 else "NONSPEECH" for i in range(n)]
    results = {"model": args.model, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "dtype": str(dtype).removeprefix("torch."), "torch": torch.__version__, "attn": args.attn,
               "batch": args.batch, "steps": args.steps, "dropout": args.dropout, "strict": not args.warn_only,
               "compiled": args.compile, "runs": {}}
    for name, checkpointing, shared in (("layer_checkpointing_shared_prefix", True, True), ("plain", False, False)):
        kwargs = dict(steps=args.steps, device=device, dtype=dtype, checkpointing=checkpointing, shared_prefix=shared,
                      dropout=args.dropout, strict=not args.warn_only, compiled=args.compile)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            started = time.perf_counter()
            first = run_once(model, builder, audios, labels, seed=args.seed, **kwargs)
            second = run_once(model, builder, audios, labels, seed=args.seed, **kwargs)
            other = run_once(model, builder, audios, labels, seed=args.seed + 1, **kwargs)
            seconds = time.perf_counter() - started
        results["runs"][name] = {
            "losses": first[0], "same_seed": compare(first, second), "other_seed": compare(first, other),
            "seconds_for_three_runs": round(seconds, 2),
            "nondeterminism_warnings": sorted({str(w.message).splitlines()[0][:200] for w in caught
                                               if "determinis" in str(w.message).lower()}),
        }
        print(json.dumps({name: results["runs"][name]}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
