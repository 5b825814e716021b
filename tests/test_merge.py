"""Scoring with a seed's adapter merged into the base weights (``model.merge_adapter``) gives the unmerged logits.

The adapter is really trained (a few AdamW steps of the train stage's loss on the tiny model, LoRA on the
decoder's attention + MLP and the encoder's attention), so its B matrices are non-zero; fp32 on the CPU.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from speech_calibration import params as params_mod
from speech_calibration.data import schema
from speech_calibration.errors import UserError
from speech_calibration.model import loading
from speech_calibration.model.inputs import InputBuilder
from speech_calibration.model.scoring import Scorer, score_audio
from speech_calibration.model.training import answer_loss
from tests.model_helpers import toy_clips


def _scored_clips() -> list[np.ndarray]:
    return toy_clips(5, durations=(0.2, 0.9, 1.6, 2.5, 4.0, 5.0))


@pytest.fixture(scope="module")
def training(tiny_model, tmp_path_factory):
    """A LoRA adapter after 6 optimizer steps (lr 1e-2, no dropout): every lora_B non-zero. Returns the folder it was
    saved to, the trained model's logits on ``_scored_clips()`` (fp32, unmerged, scored in memory before saving)
    and the modules it adapts."""
    cfg = params_mod.Model(name_or_path=str(tiny_model), device="cpu")
    torch.manual_seed(0)
    model = loading.add_lora(loading.load_base(cfg), params_mod.Lora(dropout=0.0))
    builder = InputBuilder(loading.load_processor(cfg), params_mod.Prompt())
    audios = toy_clips(3, durations=(0.3, 1.0, 2.0, 0.7))
    labels = [schema.SPEECH, schema.NONSPEECH] * 2
    model.train()
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-2)
    for _ in range(6):
        loss, _, _ = answer_loss(model, builder, audios, labels, trim=True, device=torch.device("cpu"),
                                 dtype=torch.float32)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert all(q.abs().max() > 0 for n, q in model.named_parameters() if "lora_B" in n)
    model.eval()
    in_memory = score_audio(model, builder, _scored_clips(), batch_size=params_mod.Predict().batch_size,
                            device=torch.device("cpu"), dtype=torch.float32, progress=False)
    out = tmp_path_factory.mktemp("adapter") / "seed_0"
    model.save_pretrained(out)
    return out, in_memory, loading.adapted_modules(model)


@pytest.fixture(scope="module")
def trained_adapter(training):
    return training[0]


def _params(tiny_model, **model) -> params_mod.Params:
    return params_mod.Params(model=params_mod.Model(name_or_path=str(tiny_model), device="cpu", **model))


def test_saved_adapter_holds_every_module_the_trained_model_adapts(training):
    """adapter_model.safetensors has a lora_A and a lora_B for each adapted module (decoder attention + MLP, encoder
    attention), no more and no fewer: a target lost on save would leave the other tests comparing two copies of it."""
    from safetensors.torch import load_file

    folder, _, modules = training
    saved = load_file(folder / "adapter_model.safetensors")
    assert any(".audio_tower." in m for m in modules) and any(".mlp." in m for m in modules)
    for part in ("lora_A", "lora_B"):
        found = sorted(re.sub(r"^base_model\.model\.", "", k).removesuffix(f".{part}.weight") for k in saved if f".{part}." in k)
        assert found == modules, part
    assert len(saved) == 2 * len(modules)


def test_merged_adapter_scores_as_the_unmerged_one_and_as_the_trained_model_in_fp32(tiny_model, training):
    """Reloaded from its folder, unmerged and merged, the adapter gives the logits the trained model gave in memory,
    within 1e-5: fp32 round-off of a merged weight W + (alpha/r) B A and of the prompt prefix's separate pass (logits
    here are a few units, one ulp ~5e-7); the adapter itself moves them by more than 1e-3."""
    folder, in_memory, _ = training
    audios = _scored_clips()
    merged = Scorer(_params(tiny_model), folder)
    unmerged = Scorer(_params(tiny_model, merge_adapter=False), folder)
    assert loading.adapted_modules(merged.model) == [] and not hasattr(merged.model, "peft_config")
    assert len(loading.adapted_modules(unmerged.model)) > 0
    a, b, base = merged.score(audios), unmerged.score(audios), Scorer(_params(tiny_model), None).score(audios)
    for key in (schema.LOGIT_A, schema.LOGIT_B, schema.LOGSUMEXP_VOCAB):
        assert np.abs(a[key] - b[key]).max() <= 1e-5, key
        assert np.abs(a[key] - in_memory[key]).max() <= 1e-5, key
        assert np.abs(b[key] - in_memory[key]).max() <= 1e-5, key
    assert np.abs(a[schema.LOGIT_A] - base[schema.LOGIT_A]).max() > 1e-3  # the adapter is not a no-op


def test_no_merge_when_switched_off_or_4bit(tiny_model, trained_adapter):
    cfg = params_mod.Model(name_or_path=str(tiny_model), device="cpu")
    peft_model = loading.load_adapter(loading.load_base(cfg), trained_adapter)
    assert loading.merge_for_scoring(peft_model, dataclasses.replace(cfg, merge_adapter=False)) is peft_model
    assert loading.merge_for_scoring(peft_model, dataclasses.replace(cfg, load_in_4bit=True)) is peft_model
    base = loading.load_base(cfg)
    assert loading.merge_for_scoring(base, cfg) is base  # zero-shot: nothing to merge


def test_merge_adapter_must_be_a_boolean():
    with pytest.raises(UserError, match=r"^model\.merge_adapter: expected true or false, got 'yes'"):
        params_mod.parse(params_mod.Params, {"model": {"merge_adapter": "yes"}}, "")
