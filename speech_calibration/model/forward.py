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

from speech_calibration.model.inputs import Batch
from speech_calibration.model.loading import unwrap


def encode_audio(qwen, input_features: torch.Tensor, feature_attention_mask: torch.Tensor) -> torch.Tensor:
    """Projected audio features of every real audio token, concatenated over the batch: (tokens, hidden).

    Works on any window length (the trimmed fast path); on the full window it computes exactly what
    ``Qwen2AudioModel.forward`` does.
    """
    from transformers.masking_utils import create_bidirectional_mask

    encoder = qwen.model.audio_tower
    feat_lengths, out_lengths = encoder._get_feat_extract_output_lengths(feature_attention_mask.sum(-1))
    x = input_features.to(dtype=encoder.conv1.weight.dtype, device=encoder.conv1.weight.device)
    x = F.gelu(encoder.conv1(x))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)
    positions = x.shape[1]
    if positions > encoder.embed_positions.num_embeddings:
        raise ValueError(f"audio window of {positions} encoder positions exceeds the model's {encoder.embed_positions.num_embeddings}")
    x = x + encoder.embed_positions.weight[:positions]
    x = F.dropout(x, p=encoder.dropout, training=encoder.training)
    keep = torch.arange(positions, device=x.device)[None, :] < feat_lengths.to(x.device)[:, None]
    mask = create_bidirectional_mask(config=encoder.config, inputs_embeds=x, attention_mask=keep.long())
    for layer in encoder.layers:
        x = layer(x, mask)
    x = encoder.avg_pooler(x.permute(0, 2, 1)).permute(0, 2, 1)
    x = encoder.layer_norm(x)
    features = qwen.model.multi_modal_projector(x)
    real = torch.arange(features.shape[1], device=x.device)[None, :] < out_lengths.to(x.device)[:, None]
    return features[real]


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


def enable_checkpointing(model) -> None:
    """Activation checkpointing of every encoder and decoder layer (recomputed in the backward pass).

    Ours rather than ``gradient_checkpointing_enable``: transformers drops a layer's KV cache under its
    checkpointing, and training reads the shared prompt prefix from a (read-only) cache. A layer that
    writes a cache (the prefix pass itself: one row of a few tokens) runs without checkpointing.
    """
    from torch.utils.checkpoint import checkpoint

    qwen = unwrap(model)
    for layer in [*qwen.model.audio_tower.layers, *qwen.model.language_model.layers]:
        if getattr(layer, "_checkpointed", False):
            continue
        plain = layer.forward
        layer._forward_before_checkpointing = layer.__dict__.get("forward")  # an instance hook, if any

        def forward(*args, _plain=plain, _layer=layer, **kwargs):
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            if _layer.training and torch.is_grad_enabled() and (cache is None or getattr(cache, "read_only", False)):
                return checkpoint(_plain, *args, use_reentrant=False, **kwargs)
            return _plain(*args, **kwargs)

        layer.forward = forward
        layer._checkpointed = True


def disable_checkpointing(model) -> None:
    """Undo :func:`enable_checkpointing`."""
    qwen = unwrap(model)
    for layer in [*qwen.model.audio_tower.layers, *qwen.model.language_model.layers]:
        if getattr(layer, "_checkpointed", False):
            before = layer.__dict__.pop("_forward_before_checkpointing")
            if before is None:
                del layer.forward
            else:
                layer.forward = before
            del layer._checkpointed


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
    audio = encode_audio(qwen, batch.input_features, batch.feature_attention_mask)
    audio_mask = (batch.input_ids == qwen.config.audio_token_id).unsqueeze(-1)
    if int(audio_mask.sum()) != audio.shape[0]:
        raise ValueError(f"{int(audio_mask.sum())} audio tokens in the text but {audio.shape[0]} audio features")
    embeds = embeds.masked_scatter(audio_mask.to(embeds.device), audio.to(embeds.dtype))
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


def head_rows(model, token_ids) -> torch.Tensor:
    """The output head's rows for ``token_ids``: (len(token_ids), hidden)."""
    weight = unwrap(model).lm_head.weight
    return weight[torch.as_tensor(list(token_ids), device=weight.device)]


def answer_logits(model, hidden_at_answer: torch.Tensor, answer_ids: tuple[int, int]) -> torch.Tensor:
    """Logits of the two answer tokens from the hidden state at the answer position: (B, 2) float32."""
    rows = head_rows(model, answer_ids)
    return (hidden_at_answer.to(rows.dtype) @ rows.T).float()


def vocab_logits(model, hidden_at_answer: torch.Tensor) -> torch.Tensor:
    """The full vocabulary's logits at the answer position only: (B, vocab) float32."""
    head = unwrap(model).lm_head
    return head(hidden_at_answer.to(head.weight.dtype)).float()


def vocab_logsumexp(model, hidden_at_answer: torch.Tensor) -> torch.Tensor:
    """log-sum-exp of the full vocabulary's logits at the answer position only: (B,) float32."""
    return torch.logsumexp(vocab_logits(model, hidden_at_answer), dim=-1)
