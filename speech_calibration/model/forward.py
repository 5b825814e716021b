"""The forward pass that training and scoring share: audio encoding on a trimmed window, the prompt-prefix
cache, activation checkpointing, and the answer logits at the answer position.

The forward pass returns the decoder's last hidden state at the answer position; the answer logits
are that state against the output head's rows for the two answer tokens (never the full vocabulary
at every position). With ``trim`` (the default fast path) the audio encoder runs on a window cut to
the batch's longest clip instead of the model's full window (30 s for the real model): every encoder
position past a clip's end is masked out of attention, and the convolutions, position embeddings,
pooling and projector act position by position, so the audio features are the same
(``tests/test_modeling.py`` checks this against the model's own full-window forward).
``Qwen2AudioEncoder.forward`` refuses a shorter window, so :func:`encode_audio` calls its submodules.
"""
from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F

from speech_calibration.model.inputs import Batch, num_audio_tokens
from speech_calibration.model.loading import unwrap


def encode_audio(qwen, input_features: torch.Tensor, encoder_keep: torch.Tensor | None) -> torch.Tensor:
    """Projected audio features at every pooled position of the window: (B, audio tokens, hidden).

    ``encoder_keep`` (B, encoder positions) marks each row's real positions (``Batch.encoder_keep``; None: all
    real): the rest are masked out of the encoder's attention. Works on any window length (the trimmed fast
    path); on the full window it computes, at every real audio token, what ``Qwen2AudioModel.forward`` does.
    """
    from transformers.masking_utils import create_bidirectional_mask

    encoder = qwen.model.audio_tower
    x = input_features.to(dtype=encoder.conv1.weight.dtype, device=encoder.conv1.weight.device)
    x = F.gelu(encoder.conv1(x))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)
    positions = x.shape[1]
    if positions > encoder.embed_positions.num_embeddings:
        raise ValueError(f"audio window of {positions} encoder positions exceeds the model's "
                         f"{encoder.embed_positions.num_embeddings}")
    x = x + encoder.embed_positions.weight[:positions]
    x = F.dropout(x, p=encoder.dropout, training=encoder.training)
    mask = None
    if encoder_keep is not None:
        mask = create_bidirectional_mask(config=encoder.config, inputs_embeds=x, attention_mask=encoder_keep.long())
    for layer in encoder.layers:
        x = layer(x, mask)
    x = encoder.avg_pooler(x.permute(0, 2, 1)).permute(0, 2, 1)
    x = encoder.layer_norm(x)
    return qwen.model.multi_modal_projector(x)


def place_audio(embeds: torch.Tensor, audio: torch.Tensor, audio_index: torch.Tensor) -> torch.Tensor:
    """``embeds`` with every real audio token's feature put at its text position (``Batch.audio_index``).

    Indices rather than a boolean mask: nothing is read back from the device, so the host can queue the
    rest of the forward without waiting for the GPU.
    """
    rows, text_positions, audio_positions = audio_index.to(embeds.device)
    return embeds.index_put((rows, text_positions), audio[rows, audio_positions].to(embeds.dtype))


class PrefixCache:
    """The decoder's keys and values for the prompt text that every clip shares, computed once per use.

    Every row starts with the same tokens (the system turn and the text before the audio), so they can
    run once, at batch size 1, and every row attends to their keys and values
    (``InputBuilder.build(..., shared_prefix=True)`` leaves them out of the rows).

    - inference (``trainable=False``): computed once, when the cache is made, with the weights as they are;
    - training (``trainable=True``): recomputed by every :meth:`for_batch`, because every optimizer step
      changes the adapters; gradients flow back from every row into the one prefix pass, so the result is
      the full batch's (the prefix's LoRA dropout mask is then shared by the rows of a batch).
    """

    def __init__(self, model, prefix_ids: list[int], *, trainable: bool = False):
        import inspect

        qwen = unwrap(model)
        self.qwen = qwen
        self.lm = qwen.model.language_model
        self.cache_kwarg = "cache" if "cache" in inspect.signature(self.lm.forward).parameters else "past_key_values"
        self.ids = torch.tensor([prefix_ids], device=qwen.lm_head.weight.device)
        self.length = len(prefix_ids)
        self.trainable = trainable
        self.layers = None if trainable else self._keys_values()

    def _keys_values(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        positions = torch.arange(self.length, device=self.ids.device)[None]
        with contextlib.nullcontext() if self.trainable else torch.inference_mode():
            out = self.lm(inputs_embeds=self.qwen.model.get_input_embeddings()(self.ids), position_ids=positions,
                          use_cache=True)
        return [(layer[0], layer[1]) for layer in getattr(out, self.cache_kwarg)]

    def for_batch(self, batch_size: int):
        """A read-only cache that gives each of ``batch_size`` rows the prefix (one row, expanded when read)."""
        layers = self.layers if self.layers is not None else self._keys_values()
        return _read_only_cache_class()(ddp_cache_data=layers)


@functools.cache
def _read_only_cache_class():
    """A ``DynamicCache`` holding one row of prefix keys/values; ``update`` returns them, expanded to the
    batch, before the new ones, and stores nothing.

    Nothing is appended, so running a decoder layer twice (the recompute of activation checkpointing)
    sees the same prefix both times; the prefix is held once, not once per row.
    """
    from transformers import DynamicCache

    class ReadOnlyCache(DynamicCache):
        read_only = True

        def update(self, key_states, value_states, layer_idx, *args, **kwargs):
            layer, rows = self.layers[layer_idx], key_states.shape[0]
            keys = layer.keys.expand(rows, -1, -1, -1)
            values = layer.values.expand(rows, -1, -1, -1)
            return torch.cat([keys, key_states], dim=-2), torch.cat([values, value_states], dim=-2)

    return ReadOnlyCache


def enable_checkpointing(model, scope: str = "layer") -> None:
    """Activation checkpointing (recomputed in the backward pass) of each ``scope``:

    - ``"layer"``: every encoder and decoder layer, whole (the least memory);
    - ``"mlp"``: only each decoder layer's MLP block, whose 11008-wide activations are most of what a LoRA
      backward keeps at 7B; attention is not recomputed (less recompute, more memory).

    Ours rather than ``gradient_checkpointing_enable``: transformers drops a layer's KV cache under its
    checkpointing, and training reads the shared prompt prefix from a (read-only) cache. A layer that
    writes a cache (the prefix pass itself: one row of a few tokens) runs without checkpointing.
    """
    from torch.utils.checkpoint import checkpoint

    if scope not in ("layer", "mlp"):
        raise ValueError(f"checkpointing scope {scope!r} is not one of 'layer', 'mlp'")
    qwen = unwrap(model)
    decoder = qwen.model.language_model.layers
    modules = [*qwen.model.audio_tower.layers, *decoder] if scope == "layer" else [layer.mlp for layer in decoder]
    for module in modules:
        if getattr(module, "_checkpointed", False):
            continue
        plain = module.forward
        module._forward_before_checkpointing = module.__dict__.get("forward")  # an instance hook, if any

        def forward(*args, _plain=plain, _module=module, **kwargs):
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            if _module.training and torch.is_grad_enabled() and (cache is None or getattr(cache, "read_only", False)):
                return checkpoint(_plain, *args, use_reentrant=False, **kwargs)
            return _plain(*args, **kwargs)

        module.forward = forward
        module._checkpointed = True


def disable_checkpointing(model) -> None:
    """Undo :func:`enable_checkpointing`, whatever its scope."""
    for module in unwrap(model).modules():
        if getattr(module, "_checkpointed", False):
            before = module.__dict__.pop("_forward_before_checkpointing")
            if before is None:
                del module.forward
            else:
                module.forward = before
            del module._checkpointed


def last_hidden(model, batch: Batch, *, trim: bool = True, prefix: PrefixCache | None = None,
                prefix_kv=None) -> torch.Tensor:
    """The decoder's last hidden state at every position of the batch's rows: (B, L, hidden).

    ``trim`` selects the fast path (:func:`encode_audio` on the batch's window); otherwise the
    model's own ``Qwen2AudioModel.forward`` runs (it needs the full window). A batch built with
    ``shared_prefix=True`` needs the model's :class:`PrefixCache` (fast path only); ``prefix_kv`` is its
    ``for_batch`` made ahead of time (training queues it before the batch's inputs, see ``answer_loss``).
    """
    qwen = unwrap(model)
    if batch.prefix_len and (prefix is None or prefix.length != batch.prefix_len or not trim):
        raise ValueError("a batch built with shared_prefix=True needs the matching PrefixCache and trim=True")
    if not trim:
        out = qwen.model(input_ids=batch.input_ids, input_features=batch.input_features,
                         attention_mask=batch.attention_mask, feature_attention_mask=batch.feature_attention_mask,
                         position_ids=batch.position_ids, use_cache=False)
        return out.last_hidden_state
    embeds = qwen.model.get_input_embeddings()(batch.input_ids)
    audio = encode_audio(qwen, batch.input_features, batch.encoder_keep)
    window_tokens = num_audio_tokens(batch.input_features.shape[-1])
    if audio.shape[1] != window_tokens:  # shapes only: no read-back from the device
        raise ValueError(f"the audio encoder gives {audio.shape[1]} tokens for a window of {batch.input_features.shape[-1]} "
                         f"mel frames, where the prompt expects {window_tokens}")
    embeds = place_audio(embeds, audio, batch.audio_index)
    if prefix is not None and batch.prefix_len:
        rows = batch.input_ids.shape[0]
        mask = torch.cat([batch.attention_mask.new_ones(rows, prefix.length), batch.attention_mask], dim=1)
        kv = prefix_kv if prefix_kv is not None else prefix.for_batch(rows)
        out = prefix.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=batch.position_ids,
                        use_cache=False, **{prefix.cache_kwarg: kv})
        return out.last_hidden_state
    out = qwen.model.language_model(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                                    position_ids=batch.position_ids, use_cache=False)
    return out.last_hidden_state


def compile_decoder(model, *, dynamic: bool | None = True, backend: str = "inductor", mode: str | None = None) -> None:
    """``torch.compile`` (Inductor) each decoder layer of ``model``, in place (``predict.compile``, ``train.compile``).

    Inductor fuses what runs between the matrix products (RMSNorm, rotary, SiLU times up, residual adds, the
    prefix cache's concatenation), in the forward and, when training, the backward. ``dynamic=True`` compiles a
    layer once for symbolic batch and sequence sizes, so clips of every length do not recompile per batch
    shape; ``False`` compiles per shape. The compiling happens in the first forward (at 7B on an H200: ~100 s
    for scoring, 6-8 min for a training step; benchmarks/README.md), so it pays on large sets and long runs.
    Raises dynamo's recompile limit (process-wide): the 32 layers are 32 modules sharing one code object.
    ``backend``: torch.compile's (the tests trace with ``"aot_eager"``, which skips Inductor's code generation);
    ``mode``: torch.compile's (``"reduce-overhead"`` adds CUDA graphs, one per shape; benchmark only).
    """
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 256))
    for layer in unwrap(model).model.language_model.layers:
        layer.compile(dynamic=dynamic, backend=backend, mode=mode)


def uncompile_decoder(model) -> None:
    """Undo :func:`compile_decoder`: each decoder layer runs eagerly again."""
    for layer in unwrap(model).model.language_model.layers:
        layer._compiled_call_impl = None


def head_rows(model, token_ids) -> torch.Tensor:
    """The output head's rows for ``token_ids``: (len(token_ids), hidden)."""
    weight = unwrap(model).lm_head.weight
    return weight[torch.as_tensor(list(token_ids), device=weight.device)]


def answer_logits(model, hidden_at_answer: torch.Tensor, answer_ids: tuple[int, int],
                  head: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of the two answer tokens from the hidden state at the answer position: (B, 2) float32.

    The product runs in float32, also for a bf16 model and under autocast: in bf16 its result would be rounded to
    bf16, whose steps are 0.125 between logits of 16 and 32, and these two logits are what the calibration is about.
    ``head``: ``head_rows(model, answer_ids)`` taken once ahead (a loop then gathers them once, not per batch).
    """
    rows = head if head is not None else head_rows(model, answer_ids)
    with torch.autocast(hidden_at_answer.device.type, enabled=False):
        return hidden_at_answer.float() @ rows.float().T


def vocab_logits(model, hidden_at_answer: torch.Tensor) -> torch.Tensor:
    """The full vocabulary's logits at the answer position only: (B, vocab) float32, in the head's precision."""
    head = unwrap(model).lm_head
    return head(hidden_at_answer.to(head.weight.dtype)).float()


def vocab_logsumexp(model, hidden_at_answer: torch.Tensor, answers: torch.Tensor | None = None,
                    answer_ids: tuple[int, int] | None = None) -> torch.Tensor:
    """log-sum-exp of the full vocabulary's logits at the answer position only: (B,) float32.

    ``answers``: the float32 logits of ``answer_ids`` (:func:`answer_logits`). Where the head is not float32 they
    replace its own, rounded ones in the sum, so the two answers' share of the vocabulary stays at most 1.
    """
    logits = vocab_logits(model, hidden_at_answer)
    if answers is not None and unwrap(model).lm_head.weight.dtype != torch.float32:
        logits[:, list(answer_ids)] = answers
    return torch.logsumexp(logits, dim=-1)
