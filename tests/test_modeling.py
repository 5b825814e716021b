"""The shared forward pass: prompt/answer tokens, the trimmed audio window, padding, LoRA targets, loading errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from speech_calibration.errors import UserError
from speech_calibration.model import forward, loading
from speech_calibration.model.inputs import IGNORE_INDEX, FeatureCache, InputBuilder, answer_token_ids
from speech_calibration.params import Lora, Model, Prompt
from tests.model_helpers import tiny_model_dir, toy_clips


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tiny_model_dir(str(tmp_path_factory.getbasetemp()))
    cfg = Model(name_or_path=str(path))
    processor = loading.load_processor(cfg)
    model = loading.load_base(cfg, torch.device("cpu"))
    return cfg, processor, model, InputBuilder(processor, Prompt())


@pytest.fixture(scope="module", params=[False, True], ids=["audio_first", "question_first"])
def tiny_layouts(tiny, request):
    """``tiny`` with the question after the audio (the default) and before it (``prompt.question_first``)."""
    cfg, processor, model, _ = tiny
    return cfg, processor, model, InputBuilder(processor, Prompt(question_first=request.param))


def test_question_first_moves_the_question_into_the_shared_prefix(tiny):
    _, processor, _, after = tiny
    first = InputBuilder(processor, Prompt(question_first=True))
    question = Prompt().user
    assert question in processor.tokenizer.decode(first.prefix_ids) and question not in processor.tokenizer.decode(
        first.suffix_ids)
    assert question in processor.tokenizer.decode(after.suffix_ids)
    assert question + "\nAudio 1:" in first.text  # the template itself puts nothing between them
    assert len(first.suffix_ids) < len(after.suffix_ids) - 10  # what runs per clip after the audio


def test_builder_matches_the_processors_own_inputs(tiny_layouts):
    _, processor, _, builder = tiny_layouts
    clips = toy_clips()
    ours = builder.build(clips, trim=False)
    ref = processor(text=[builder.text] * len(clips), audio=clips, sampling_rate=16000, return_tensors="pt", padding=True)
    assert torch.equal(ours.input_ids, ref["input_ids"])
    assert torch.equal(ours.attention_mask, ref["attention_mask"])
    assert torch.allclose(ours.input_features, ref["input_features"], atol=1e-6)
    assert torch.equal(ours.feature_attention_mask, ref["feature_attention_mask"])


def test_trimmed_window_matches_the_models_full_window_forward(tiny_layouts):
    _, processor, model, builder = tiny_layouts
    clips = toy_clips(durations=(0.2, 0.9, 3.3, 5.0))
    trimmed = builder.build(clips, trim=True)
    assert trimmed.input_features.shape[-1] < builder.window_frames  # the window really is shorter
    with torch.no_grad():
        ours = forward.answer_logits(model, forward.last_hidden(model, trimmed, trim=True)[:, -1], builder.answer_ids)
        ref_inputs = processor(text=[builder.text] * len(clips), audio=clips, sampling_rate=16000, return_tensors="pt",
                               padding=True)
        position_ids = (ref_inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        ref_logits = model(**ref_inputs, position_ids=position_ids).logits[:, -1][:, list(builder.answer_ids)]
    assert torch.allclose(ours, ref_logits, atol=1e-4), (ours - ref_logits).abs().max()


def test_batched_equals_one_at_a_time_for_clips_of_different_lengths(tiny):
    _, _, model, builder = tiny
    clips = toy_clips(durations=(5.0, 0.2, 2.0, 0.7, 4.1))
    with torch.no_grad():
        batch = builder.build(clips)
        together = forward.answer_logits(model, forward.last_hidden(model, batch)[:, -1], builder.answer_ids)
        for i, clip in enumerate(clips):
            alone_batch = builder.build([clip])
            alone = forward.answer_logits(model, forward.last_hidden(model, alone_batch)[:, -1], builder.answer_ids)
            assert torch.allclose(together[i], alone[0], atol=1e-5)


def test_scored_sequence_is_the_training_sequence_without_its_answer(tiny):
    _, _, _, builder = tiny
    clips = toy_clips()
    labels = ["SPEECH", "NONSPEECH", "SPEECH", "NONSPEECH"]
    train = builder.build(clips, labels)
    score = builder.build(clips)
    assert torch.equal(train.input_ids[:, :-1], score.input_ids)
    assert torch.equal(train.attention_mask[:, :-1], score.attention_mask)
    assert torch.equal(train.input_features, score.input_features)
    expected = torch.tensor([builder.answer_id(lab) for lab in labels])
    assert torch.equal(train.input_ids[:, -1], expected)
    # only the answer token is supervised
    assert torch.equal(train.labels[:, -1], expected)
    assert (train.labels[:, :-1] == IGNORE_INDEX).all()


def test_answer_loss_equals_the_models_own_masked_label_loss(tiny):
    _, processor, model, builder = tiny
    clips = toy_clips()
    labels = ["SPEECH", "NONSPEECH", "NONSPEECH", "SPEECH"]
    batch = builder.build(clips, labels, trim=False)
    with torch.no_grad():
        ours = F.cross_entropy(forward.vocab_logits(model, forward.last_hidden(model, batch, trim=False)[:, -2]),
                               batch.labels[:, -1])
        ref = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                    input_features=batch.input_features, feature_attention_mask=batch.feature_attention_mask,
                    labels=batch.labels).loss
    assert torch.allclose(ours, ref, atol=1e-5)


def test_answers_must_be_single_tokens(tiny):
    _, processor, _, _ = tiny
    assert len(set(answer_token_ids(processor.tokenizer, Prompt()))) == 2
    with pytest.raises(UserError, match=r"prompt.speech_answer: answer 'XYZZY' encodes to \d+ tokens"):
        answer_token_ids(processor.tokenizer, Prompt(speech_answer="XYZZY"))
    with pytest.raises(UserError, match=r"prompt.nonspeech_answer: answer 'B B' encodes to \d+ tokens"):
        answer_token_ids(processor.tokenizer, Prompt(nonspeech_answer="B B"))


def test_an_answer_with_a_leading_space_is_another_token_and_is_warned_about(tiny, caplog):
    _, processor, _, _ = tiny
    with caplog.at_level("WARNING", logger="speech_calibration.model.inputs"):
        plain = answer_token_ids(processor.tokenizer, Prompt())
    assert not caplog.records
    with caplog.at_level("WARNING", logger="speech_calibration.model.inputs"):
        spaced = answer_token_ids(processor.tokenizer, Prompt(speech_answer=" A"))
    assert spaced[0] != plain[0] and spaced[1] == plain[1]
    assert [r.getMessage() for r in caplog.records] == [
        "prompt.speech_answer: ' A' starts with whitespace, a different token from 'A'; the template's assistant turn "
        "starts on a new line, where a model says 'A' (the zero-shot model above all); leave the space out unless "
        "your template needs it"]


@pytest.mark.parametrize("mlp, encoder", [(False, False), (True, False), (True, True)])
def test_lora_targets_exactly_the_named_modules(tiny, mlp, encoder):
    cfg, _, _, _ = tiny
    model = loading.load_base(cfg, torch.device("cpu"))
    names = loading.adapted_modules(loading.add_lora(model, Lora(r=4, mlp_targets=mlp, encoder_targets=encoder)))
    text_layers, encoder_layers = 2, 2  # the default tiny_model params
    expected = {f"model.language_model.layers.{i}.self_attn.{p}" for i in range(text_layers)
                for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    if mlp:
        expected |= {f"model.language_model.layers.{i}.mlp.{p}" for i in range(text_layers)
                     for p in ("gate_proj", "up_proj", "down_proj")}
    if encoder:
        expected |= {f"model.audio_tower.layers.{i}.self_attn.{p}" for i in range(encoder_layers)
                     for p in ("q_proj", "k_proj", "v_proj", "out_proj")}
    assert set(names) == expected
    assert not any("multi_modal_projector" in n or "lm_head" in n for n in names)


def test_audio_window_is_read_from_the_models_feature_extractor(tiny, tmp_path):
    from speech_calibration import params as params_mod
    from tests.model_helpers import ROOT

    cfg, processor, _, _ = tiny
    window = loading.audio_window_s(cfg)
    assert window == params_mod.load(ROOT / "params.yaml").tiny_model.window_s  # what the tiny model was built with
    assert window == processor.feature_extractor.n_samples / 16000
    with pytest.raises(UserError, match="does not exist"):
        loading.audio_window_s(Model(name_or_path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="model.name_or_path: cannot load a feature extractor"):
        loading.audio_window_s(Model(name_or_path=str(tmp_path / "empty")))


def _extractor_config_copy(src, dst, edit) -> None:
    """The model folder ``src`` without its weights, in ``dst``, with ``edit`` applied to the saved feature-extractor
    config (nested in ``processor_config.json`` by transformers 5, its own ``preprocessor_config.json`` before)."""
    import json
    import shutil
    from pathlib import Path

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    for name in ("preprocessor_config.json", "processor_config.json"):
        path = Path(dst) / name
        if path.is_file():
            saved = json.loads(path.read_text())
            edit(saved.get("feature_extractor", saved))
            path.write_text(json.dumps(saved))


@pytest.mark.parametrize("edit, window", [
    (lambda d: d.update(chunk_length=10, n_samples=96000), 10.0),  # a stale n_samples: Whisper's own rule ignores it
    (lambda d: d.pop("chunk_length"), 30.0),  # no chunk_length: the extractor is built, with its default
], ids=["chunk_length_edited", "chunk_length_missing"])
def test_audio_window_read_from_the_config_is_what_the_built_extractor_says(tiny, tmp_path, edit, window):
    from transformers import AutoFeatureExtractor

    cfg, _, _, _ = tiny
    _extractor_config_copy(cfg.name_or_path, tmp_path / "m", edit)
    built = AutoFeatureExtractor.from_pretrained(tmp_path / "m")
    assert built.n_samples / built.sampling_rate == window  # the reference: transformers' own extractor
    assert loading.audio_window_s(Model(name_or_path=str(tmp_path / "m"))) == window


def test_reading_the_audio_window_does_not_load_torch(tiny):
    """``prepare`` and ``conditions_render`` need only the window: a process that imports them and reads it never
    imports torch (about 2.5 s of a stage's start on a 2-core CPU)."""
    import subprocess
    import sys

    from tests.model_helpers import ROOT

    cfg, _, _, _ = tiny
    code = ("import sys, stages.prepare, stages.conditions_render, stages.eval_set; "
            "from speech_calibration.model.loading import audio_window_s; from speech_calibration.params import Model; "
            f"print(audio_window_s(Model(name_or_path={cfg.name_or_path!r})), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(loading.audio_window_s(cfg)), "False"]


def test_missing_base_model_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="model.name_or_path: .*does not exist; build the embedded model"):
        loading.load_base(Model(name_or_path=str(tmp_path / "nope")))
    # the embedded default's relative path, before `dvc repro tiny_model` has built it
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(UserError, match="'models/tiny-qwen2-audio' does not exist; build the embedded model"):
        loading.load_base(Model(name_or_path="models/tiny-qwen2-audio"))
    with pytest.raises(UserError, match="does not exist"):
        loading.load_processor(Model(name_or_path=str(tmp_path / "nope")))


def _base_with_config(tmp_path, base, **config):
    """A copy of model folder ``base`` whose config.json has ``config``'s keys replaced."""
    import json
    import shutil

    copy = tmp_path / "assembled"
    shutil.copytree(base, copy)
    raw = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**raw, **config}))
    return copy


def test_a_tokenizer_from_another_checkpoint_than_the_weights_is_refused(tiny, tmp_path):
    """The trimmed path puts the audio where the tokenizer's <|AUDIO|> id is, the model's own forward where
    config.audio_token_index is: a folder whose two disagree is refused in one line, by the scorer too (the train stage
    calls the same check: test_train_predict), and the tiny model's own pair passes."""
    from speech_calibration.model.scoring import Scorer
    from speech_calibration.params import Params

    cfg, processor, model, builder = tiny
    loading.check_processor_fits(model, builder, cfg)
    other = builder.audio_token_id + 1
    assembled = Model(name_or_path=str(_base_with_config(tmp_path, cfg.name_or_path, audio_token_index=other)))
    with pytest.raises(UserError, match=rf"model.name_or_path: '.*assembled': its tokenizer's <\|AUDIO\|> is token "
                                        rf"{builder.audio_token_id}, but its config.json has audio_token_index {other}; "
                                        "the tokenizer and the weights come from different checkpoints"):
        Scorer(Params(model=assembled), None)
    small = loading.load_base(cfg, torch.device("cpu"))
    small.resize_token_embeddings(min(builder.answer_ids))  # an output head without the answers' rows
    with pytest.raises(UserError, match=rf"the answer token id {min(builder.answer_ids)} is beyond the model's "
                                        rf"{min(builder.answer_ids)} output rows"):
        loading.check_processor_fits(small, builder, cfg)


def test_corrupt_adapter_folder_is_a_clear_error(tiny, tmp_path):
    cfg, _, _, _ = tiny
    model = loading.load_base(cfg, torch.device("cpu"))
    with pytest.raises(UserError, match="no adapter_config.json; this is not a trained adapter folder"):
        loading.load_adapter(model, tmp_path)
    peft_model = loading.add_lora(model, Lora(r=4))
    peft_model.save_pretrained(str(tmp_path / "study/final"))  # the study's layout, named without its final/
    with pytest.raises(UserError, match=r"study: no adapter_config.json here, but in its final/ folder, where "
                                        r"scripts/finetune_qwen_audio.py puts the adapter: pass .*study/final$"):
        loading.load_adapter(loading.load_base(cfg, torch.device("cpu")), tmp_path / "study")
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    (tmp_path / "adapter/adapter_model.safetensors").write_bytes(b"not a safetensors file")
    base = loading.load_base(cfg, torch.device("cpu"))
    with pytest.raises(UserError, match="cannot load the adapter .*re-run dvc repro train"):
        loading.load_adapter(base, tmp_path / "adapter")


def test_cached_prompt_prefix_gives_the_same_logits(tiny_layouts):
    _, _, model, builder = tiny_layouts
    clips = toy_clips(durations=(0.2, 1.0, 3.0, 5.0, 0.5))
    with torch.no_grad():
        prefix = forward.PrefixCache(model, builder.prefix_ids)
        full = builder.build(clips)
        short = builder.build(clips, shared_prefix=True)
        assert short.input_ids.shape[1] == full.input_ids.shape[1] - len(builder.prefix_ids)
        ours = forward.answer_logits(model, forward.last_hidden(model, short, prefix=prefix)[:, -1], builder.answer_ids)
        ref = forward.answer_logits(model, forward.last_hidden(model, full)[:, -1], builder.answer_ids)
    assert torch.allclose(ours, ref, atol=1e-5)
    with pytest.raises(ValueError, match="needs the matching PrefixCache"):
        forward.last_hidden(model, short)


def _one_training_step(tiny, *, shared_prefix: bool, checkpointing: bool | str, dropout: float = 0.0,
                       compiled: str | None = None):
    """Loss, LoRA gradients and decoder-attention calls of one training micro-batch (fp32).

    ``checkpointing``: False, True (whole layers) or a scope of ``forward.enable_checkpointing``;
    ``compiled``: a torch.compile backend for the decoder layers (``forward.compile_decoder``)."""
    from speech_calibration.model.training import answer_loss

    cfg, _, _, builder = tiny
    torch.manual_seed(0)
    model = loading.add_lora(loading.load_base(cfg, torch.device("cpu")), Lora(r=4, dropout=dropout, encoder_targets=True))
    with torch.no_grad():  # lora_B starts at zero; give every adapter a non-trivial gradient path
        for name, q in model.named_parameters():
            if "lora_B" in name:
                q.normal_(0.0, 0.05)
    if checkpointing:
        forward.enable_checkpointing(model, "layer" if checkpointing is True else checkpointing)
    model.train()
    if compiled:
        forward.compile_decoder(model, backend=compiled)
    calls = []
    attn = loading.unwrap(model).model.language_model.layers[0].self_attn
    hook = attn.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs["hidden_states"].shape[0]),
                                      with_kwargs=True)
    prefix = forward.PrefixCache(model, builder.prefix_ids, trainable=True) if shared_prefix else None
    clips = toy_clips(durations=(0.2, 1.0, 3.0, 5.0))
    loss, _, _ = answer_loss(model, builder, clips, ["SPEECH", "NONSPEECH", "SPEECH", "NONSPEECH"], trim=True,
                             device=torch.device("cpu"), dtype=torch.float32, prefix=prefix)
    loss.backward()
    hook.remove()
    grads = {n: q.grad.clone() for n, q in model.named_parameters() if q.requires_grad}
    return float(loss.detach()), grads, calls


def test_shared_prefix_and_checkpointing_train_exactly_like_the_plain_step(tiny_layouts):
    """The training fast path (prompt prefix once per batch, activation checkpointing) gives the plain step's
    loss and the gradient of every adapter, while running the prefix once and recomputing the layers."""
    loss, grads, calls = _one_training_step(tiny_layouts, shared_prefix=False, checkpointing=False)
    assert calls == [4]  # one pass over the 4 rows
    assert all(g.abs().max() > 0 for g in grads.values())
    for shared, ckpt, expected_calls in [(True, False, [1, 4]), (False, True, [4, 4]), (True, True, [1, 4, 4]),
                                         (True, "mlp", [1, 4])]:  # mlp: attention is not recomputed
        loss2, grads2, calls2 = _one_training_step(tiny_layouts, shared_prefix=shared, checkpointing=ckpt)
        # prefix: one row first; checkpointing: the rows' layer runs again in the backward pass
        assert calls2 == expected_calls, (shared, ckpt)
        assert loss2 == pytest.approx(loss, abs=1e-6)
        assert grads2.keys() == grads.keys()
        for name, g in grads.items():
            assert torch.allclose(grads2[name], g, rtol=1e-4, atol=1e-6), (shared, ckpt, name)


def test_checkpointing_replays_lora_dropout_and_comes_off_cleanly(tiny):
    """With LoRA dropout the recomputed layers draw the same masks (torch restores the RNG state), so the
    gradients are the plain step's; disabling restores each layer's own forward (an instance hook too)."""
    loss, grads, _ = _one_training_step(tiny, shared_prefix=False, checkpointing=False, dropout=0.3)
    loss2, grads2, calls = _one_training_step(tiny, shared_prefix=False, checkpointing=True, dropout=0.3)
    assert calls == [4, 4] and loss2 == pytest.approx(loss, abs=1e-6)
    for name, g in grads.items():
        assert torch.allclose(grads2[name], g, rtol=1e-4, atol=1e-6), name
    cfg, _, _, _ = tiny
    model = loading.load_base(cfg, torch.device("cpu"))
    layers = model.model.language_model.layers
    hook = layers[0].forward  # a bound method standing in for an instance-level hook (e.g. accelerate's)
    layers[0].forward = hook
    forward.enable_checkpointing(model)
    assert layers[0].forward is not hook and layers[1].__dict__.get("forward") is not None
    forward.disable_checkpointing(model)
    assert layers[0].__dict__["forward"] is hook and "forward" not in layers[1].__dict__


def test_scoring_loop_gives_the_plain_loops_numbers_in_the_order_given(tiny):
    """``score_audio`` builds batches ahead on a worker thread and keeps its outputs on the device; each batch is
    still the one a plain loop builds and scores (bit for bit), and the rows come back in the input order."""
    from speech_calibration.model.scoring import score_audio

    _, _, model, builder = tiny
    clips = toy_clips(durations=(5.0, 0.2, 2.0, 0.7, 4.1, 1.3, 0.5))
    prefix = forward.PrefixCache(model, builder.prefix_ids)
    got = score_audio(model, builder, clips, batch_size=3, device=torch.device("cpu"), dtype=torch.float32,
                      prefix=prefix, progress=False)
    order = sorted(range(len(clips)), key=lambda i: len(clips[i]))  # length-sorted batches, as the loop makes them
    with torch.inference_mode():
        for start in range(0, len(order), 3):
            idx = order[start:start + 3]
            batch = builder.build([clips[i] for i in idx], shared_prefix=True)
            hidden = forward.last_hidden(model, batch, prefix=prefix)[:, -1]
            pair = forward.answer_logits(model, hidden, builder.answer_ids).numpy()
            assert (got["logit_A"][idx] == pair[:, 0]).all() and (got["logit_B"][idx] == pair[:, 1]).all()
            assert (got["logsumexp_vocab"][idx] == forward.vocab_logsumexp(model, hidden).numpy()).all()


def test_a_bf16_models_answer_logits_keep_float32_precision(tiny):
    """Under bf16 the two answer logits come out of a float32 product (also under autocast), not rounded to bf16's
    steps: they equal a float64 product of the same operands. The vocabulary's log-sum-exp then holds them, so the
    two answers' share of it stays at most 1."""
    import copy

    from speech_calibration.model.scoring import score_batch

    _, _, model, builder = tiny
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    a, b = builder.answer_ids
    with torch.no_grad():  # answer logits of tens (where bf16's steps are 0.0625 to 0.25), one of them far above the rest
        weight = loading.unwrap(bf16).lm_head.weight
        weight.mul_(0.01)
        weight[a] *= 6000.0
        weight[b] = -weight[a]
    batch = builder.build(toy_clips(durations=(1.0, 0.3, 2.0, 0.6, 1.5, 0.9))).to(torch.device("cpu"), torch.bfloat16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = forward.last_hidden(bf16, batch)[:, -1]
        got = score_batch(bf16, batch, builder.answer_ids)
    rows = forward.head_rows(bf16, builder.answer_ids)
    exact = (hidden.double() @ rows.double().T).float()
    assert (exact.abs().amax(dim=1) > 8).all()  # the scale where bf16 would round
    torch.testing.assert_close(got[:, :2], exact, rtol=1e-6, atol=1e-6)
    assert (got[:, :2] != got[:, :2].bfloat16().float()).any()  # finer than bf16's steps
    share = torch.exp(torch.logsumexp(got[:, :2], dim=1) - got[:, 2])
    assert (share <= 1 + 1e-6).all() and (share > 0.99).all(), share


def test_features_are_float32_under_autocast_as_training_builds_them(tiny):
    """Scoring runs under bf16 autocast and training builds its inputs outside it: the log-mel must not depend on
    which (the filter-bank product would otherwise run in bf16), so both see the same features."""
    _, _, _, builder = tiny
    clips = toy_clips(durations=(0.4, 2.2, 1.0))
    plain, plain_mask = builder.features(clips, trim=True)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under, under_mask = builder.features(clips, trim=True)
        matmul = torch.ones(4, 4) @ torch.ones(4, 4)
    assert matmul.dtype == torch.bfloat16  # autocast really was in force
    assert under.dtype == torch.float32 and torch.equal(under, plain) and torch.equal(under_mask, plain_mask)


@pytest.mark.parametrize("trim", [True, False], ids=["trimmed", "whole_window"])
def test_feature_cache_slices_equal_the_features_of_each_batch_bit_for_bit(tiny, trim):
    """``FeatureCache`` (training's features, computed once) against ``InputBuilder.features`` per batch, over batches
    of every mix of lengths, digital silence among them, and the batches it builds equal field by field."""
    _, _, _, builder = tiny
    clips = toy_clips(seed=3, durations=(0.2, 4.7, 1.3, 0.5, 2.9, 0.9, 3.6, 0.25)) + [np.zeros(8000, np.float32)]
    cache = FeatureCache(builder, clips, trim=trim)
    assert cache.features.shape[-1] == builder.window_length(clips, trim=trim) // builder.hop
    chunked = FeatureCache(builder, clips, trim=trim, chunk=2)  # built two clips at a time
    assert torch.equal(chunked.features, cache.features) and torch.equal(chunked.mask, cache.mask)
    assert FeatureCache.nbytes(builder, clips, trim=trim) == cache.features.numel() * 4
    rng = np.random.default_rng(0)
    for size in (1, 2, 3, 5, len(clips)):
        idx = rng.permutation(len(clips))[:size].tolist()
        features, mask = builder.features([clips[i] for i in idx], trim=trim)
        got, got_mask = cache.take(idx)
        assert torch.equal(got, features) and torch.equal(got_mask, mask), idx
        labels = ["SPEECH"] * size
        plain = builder.build([clips[i] for i in idx], labels, trim=trim)
        cached = builder.build([clips[i] for i in idx], labels, trim=trim, features=cache.take(idx))
        for field, value in vars(plain).items():
            other = getattr(cached, field)
            assert torch.equal(other, value) if isinstance(value, torch.Tensor) else other == value, field


def test_audio_index_places_each_rows_audio_tokens_where_the_prompt_has_them(tiny):
    """``Batch.audio_index`` (worked out on the CPU) names exactly the audio-token positions of the text, row by row."""
    _, _, model, builder = tiny
    for labels, shared in [(None, False), (["SPEECH", "NONSPEECH", "SPEECH"], False), (None, True)]:
        batch = builder.build(toy_clips(durations=(0.3, 2.5, 1.1)), labels, shared_prefix=shared)
        rows, positions, columns = batch.audio_index
        expected = (batch.input_ids == model.config.audio_token_id).nonzero()
        assert torch.equal(torch.stack([rows, positions], 1), expected)
        for r in range(3):  # each row's audio tokens in order, from its first
            assert torch.equal(columns[rows == r], torch.arange(int((rows == r).sum())))
        # the encoder's real positions per row, by the model's own length formula (shorter clips are masked)
        lengths, _ = model.model.audio_tower._get_feat_extract_output_lengths(batch.feature_attention_mask.sum(-1))
        assert torch.equal(batch.encoder_keep.sum(1), lengths) and batch.encoder_keep[:, 0].all()


@pytest.mark.slow
def test_compiled_decoder_scores_and_trains_like_eager(tiny):
    """``forward.compile_decoder`` (predict.compile, train.compile): dynamo captures the decoder layers through the
    prefix cache (read-only for scoring, written by the training prefix pass) and our checkpointing, and the
    captured graphs give the eager numbers (fp32 logits within 1e-5; one training step's loss and adapter gradients
    within 1e-5 / rtol 1e-4).

    The graphs run on dynamo's ``eager`` backend: what is tested is our code under capture, not Inductor's
    kernels, whose C++ code generation takes minutes on 2 cores (their bf16 numbers on a GPU are in
    benchmarks/README.md)."""
    from speech_calibration.model.scoring import score_audio

    cfg, _, _, builder = tiny
    model = loading.load_base(cfg, torch.device("cpu"))
    clips = toy_clips(durations=(0.4, 2.2, 3.9, 1.0))
    prefix = forward.PrefixCache(model, builder.prefix_ids)

    def scores():
        out = score_audio(model, builder, clips, batch_size=2, device=torch.device("cpu"), dtype=torch.float32,
                          prefix=prefix, progress=False)
        return torch.from_numpy(np.stack([out["logit_A"], out["logit_B"]]))

    eager = scores()
    forward.compile_decoder(model, backend="eager")
    layer = model.model.language_model.layers[0]
    assert layer._compiled_call_impl is not None
    assert torch.allclose(scores(), eager, atol=1e-5)
    forward.uncompile_decoder(model)
    assert layer._compiled_call_impl is None
    loss, grads, _ = _one_training_step(tiny, shared_prefix=True, checkpointing=True)
    loss2, grads2, _ = _one_training_step(tiny, shared_prefix=True, checkpointing=True, compiled="eager")
    assert loss2 == pytest.approx(loss, abs=1e-5)
    for name, g in grads.items():
        assert torch.allclose(grads2[name], g, rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize("device, words", [("gpu", "is not a device torch knows"),
                                           ("cuda:x", "is not a device torch knows")])
def test_a_device_torch_does_not_know_is_a_one_line_error_naming_the_key(device, words):
    with pytest.raises(UserError, match=f"^model.device: '{device}' {words}; use auto, cpu, cuda or cuda:<index>$"):
        loading.resolve_device(Model(device=device))


def test_seeding_fixes_the_cublas_workspace_unless_the_environment_chose_one(monkeypatch):
    """cuBLAS is deterministic only with a fixed workspace, which it reads from the environment when it starts."""
    import os

    from speech_calibration.model.training import seed_everything

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seed_everything(0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    seed_everything(0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_content_free_inputs_too_short_for_an_audio_token_are_refused():
    """The content-free inputs (silence, noise) are clips like any other: shorter than 20.0625 ms they would give the
    model no audio token, and contextual calibration would measure the prompt alone."""
    from speech_calibration.model.scoring import content_free_audio
    from speech_calibration.params import Predict

    with pytest.raises(UserError, match=r"^predict\.content_free_duration_s: 0\.02 s is shorter than 20\.0625 ms"):
        content_free_audio(Predict(content_free_duration_s=0.02), 16000)
    assert [len(x) for x in content_free_audio(Predict(content_free_duration_s=0.0200625), 16000)] == [321, 321]
