"""The embedded default base model: a tiny randomly initialised Qwen2-Audio.

No machine here can download ``Qwen/Qwen2-Audio-7B-Instruct``, so the embedded study uses a model of
the same architecture (``Qwen2AudioForConditionalGeneration``: Whisper-style audio encoder, linear
projector, Qwen2 decoder) with a few hundred thousand parameters, a seeded random init, an audio
window of ``tiny_model.window_s`` seconds instead of 30 s (feature extractor to match), and a small
byte-level BPE tokenizer of the Qwen2 kind with the chat template's special tokens. Model, tokenizer
and processor are saved with ``save_pretrained``; every later stage loads the folder with the same
``from_pretrained`` code that loads the real 7B checkpoint.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from speech_calibration import params as params_mod
from speech_calibration.errors import UserError
from speech_calibration.fileio import atomic_dir

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
# Text the tokenizer's merges are learned from: the chat template's words and a prompt-like vocabulary.
_TOKENIZER_TEXT = (
    "system user assistant Audio You are an audio analyst helpful assistant. Does this audio clip contain "
    "human speech? Answer A for SPEECH or B for NONSPEECH. Is there a person talking in the recording? "
    "Listen to the clip and reply with one letter. The answer is A or B. speech nonspeech noise music silence "
)


def build_tokenizer(vocab_size: int = 384):
    """A byte-level BPE tokenizer of the Qwen2 kind (``Qwen2Tokenizer``) with the chat special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator([_TOKENIZER_TEXT] * 4, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tok = Qwen2Tokenizer(vocab=state["vocab"], merges=merges, unk_token=None, bos_token=None,
                         eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tok.add_tokens(["<|endoftext|>"], special_tokens=True)
    tok.padding_side = "left"
    return tok


def build(cfg: params_mod.TinyModel, out: Path) -> None:
    """Build and save the tiny model, tokenizer and processor into ``out`` (atomically)."""
    import torch
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    tokenizer = build_tokenizer()
    window = int(round(cfg.window_s))
    if window != cfg.window_s:
        raise UserError(f"tiny_model.window_s: {cfg.window_s} must be a whole number of seconds "
                        "(the feature extractor's chunk length)")
    feature_extractor = WhisperFeatureExtractor(feature_size=cfg.num_mel_bins, sampling_rate=16000, hop_length=160,
                                                chunk_length=window, n_fft=400, return_attention_mask=True)
    processor = Qwen2AudioProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    mel_frames = feature_extractor.nb_max_frames  # window * 100
    config = Qwen2AudioConfig(
        audio_config={
            "model_type": "qwen2_audio_encoder",
            "num_mel_bins": cfg.num_mel_bins,
            "encoder_layers": cfg.encoder_layers,
            "encoder_attention_heads": cfg.encoder_heads,
            "encoder_ffn_dim": cfg.encoder_ffn_dim,
            "d_model": cfg.encoder_d_model,
            "max_source_positions": mel_frames // 2,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": len(tokenizer),
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.text_layers,
            "num_attention_heads": cfg.heads,
            "num_key_value_heads": cfg.kv_heads,
            "max_position_embeddings": 4096,
            "tie_word_embeddings": False,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        },
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    for part in (config, config.text_config, config.audio_config):
        part.initializer_range = cfg.init_std
    torch.manual_seed(cfg.seed)
    model = Qwen2AudioForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    n_params = sum(p.numel() for p in model.parameters())
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    log.info("tiny Qwen2-Audio: %d parameters, %d-token vocabulary, %d s audio window -> %s",
             n_params, len(tokenizer), window, out)
