"""The prompt, the answer tokens, and the one function that turns clips into model inputs.

Training and scoring build their inputs through :meth:`InputBuilder.build`: the scored sequence is
exactly the training sequence without its answer token (the study we reproduce scored with another
prompt, without the system message, than it trained with; that cannot happen here).

The text is the processor's own chat template (system turn, then a user turn with the audio first and
the question after it, or with ``prompt.question_first`` the question first), rendered once; each clip's
``<|AUDIO|>`` placeholder is expanded to that clip's number of audio tokens, as ``Qwen2AudioProcessor`` does.
Rows are padded on the left, so that every row's answer position is the last one and a clip's logits do not
depend on its batch-mates.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from speech_calibration.data.schema import LABELS, SPEECH
from speech_calibration.errors import UserError
from speech_calibration.params import Prompt

log = logging.getLogger("speech_calibration.model.inputs")

IGNORE_INDEX = -100
# Mel frames kept past a batch's longest clip when the audio window is trimmed: the encoder's two
# convolutions reach two frames beyond a position, and the pooling pairs a last real position with one
# past it; 16 also keeps the window a multiple of 16 frames, which GPUs like.
TRIM_MULTIPLE = 16
TRIM_MARGIN = 4


def conversation(prompt: Prompt) -> list[dict]:
    """The chat: a system turn, then a user turn holding the audio and the question: the audio first (the study's
    layout), or with ``prompt.question_first`` the question first.

    Everything before the audio is the same for every clip, so with the prompt-prefix cache (``PrefixCache``:
    ``model.cache_prompt_prefix`` when scoring, ``train.share_prompt_prefix`` when training) it runs once, not per
    clip; what follows the audio runs for every clip. With the question first, only the template's closing tokens follow
    the audio (with the embedded tokenizer 9, against 29 with the default question after it: the benchmark's
    ``tokens_per_clip``), so a 1-s clip (25 audio tokens) runs 34 decoder positions instead of 54. The template
    puts nothing between a text and the audio after it, so a question first ends with a newline. It is a
    different prompt: train and score with the same setting (``loading.check_trained_prompt`` refuses otherwise).
    """
    audio = {"type": "audio", "audio_url": "clip"}
    if prompt.question_first:
        text = prompt.user if prompt.user.endswith("\n") else prompt.user + "\n"
        content = [{"type": "text", "text": text}, audio]
    else:
        content = [audio, {"type": "text", "text": prompt.user}]
    return [{"role": "system", "content": prompt.system}, {"role": "user", "content": content}]


def answer_token_ids(tokenizer, prompt: Prompt) -> tuple[int, int]:
    """Token ids of the SPEECH and NONSPEECH answers; each answer must be exactly one token. An answer with a leading
    space is its own token (Qwen2's ``" A"`` is ``ĠA``, not ``A``), which a model rarely says first after the template's
    ``assistant`` line: allowed, with a warning."""
    ids = []
    for key, answer in (("prompt.speech_answer", prompt.speech_answer), ("prompt.nonspeech_answer", prompt.nonspeech_answer)):
        if answer != answer.lstrip():
            log.warning("%s: %r starts with whitespace, a different token from %r; the template's assistant turn starts "
                        "on a new line, where a model says %r (the zero-shot model above all); leave the space out "
                        "unless your template needs it", key, answer, answer.lstrip(), answer.lstrip())
        encoded = tokenizer.encode(answer, add_special_tokens=False)
        if len(encoded) != 1:
            pieces = tokenizer.convert_ids_to_tokens(encoded)
            raise UserError(f"{key}: answer {answer!r} encodes to {len(encoded)} tokens {pieces}; "
                            "choose an answer string that is a single token of this tokenizer (e.g. 'A', 'B')")
        ids.append(encoded[0])
    if ids[0] == ids[1]:
        raise UserError("prompt: speech_answer and nonspeech_answer encode to the same token")
    return ids[0], ids[1]


def encoder_positions(mel_frames: torch.Tensor | int) -> torch.Tensor | int:
    """Audio-encoder positions for ``mel_frames`` frames (its second convolution has stride 2)."""
    return (mel_frames - 1) // 2 + 1


def num_audio_tokens(mel_frames: torch.Tensor | int) -> torch.Tensor | int:
    """Audio tokens for a clip of ``mel_frames`` real frames (conv stride 2, then pooling by 2)."""
    return (encoder_positions(mel_frames) - 2) // 2 + 1


@dataclass
class Batch:
    """Model inputs for a batch of clips (left-padded) and, for training, the supervised answer."""

    input_ids: torch.Tensor  # (B, L) long
    attention_mask: torch.Tensor  # (B, L) long
    position_ids: torch.Tensor  # (B, L) long: positions that ignore left padding
    input_features: torch.Tensor  # (B, mel, frames) float
    feature_attention_mask: torch.Tensor  # (B, frames) long
    labels: torch.Tensor | None = None  # (B, L) long, IGNORE_INDEX everywhere but the answer token
    prefix_len: int = 0  # > 0: the rows omit the shared prompt prefix of this many tokens (see PrefixCache)
    # Where the audio features go, worked out on the CPU so the forward never reads it back from the GPU:
    # (3, tokens) long, rows (row, text position, audio-token position) of every real audio token.
    audio_index: torch.Tensor | None = None
    encoder_keep: torch.Tensor | None = None  # (B, encoder positions) bool: real positions; None: all are real

    def to(self, device, dtype=None, *, non_blocking: bool = False) -> Batch:
        """On ``device`` (input features in ``dtype``); ``non_blocking`` from pinned memory: the host does not wait."""
        moved = {k: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v)
                 for k, v in self.__dict__.items()}
        if dtype is not None:
            moved["input_features"] = moved["input_features"].to(dtype)
        return Batch(**moved)

    def pin_memory(self) -> Batch:
        """A copy in page-locked host memory, so that ``to(cuda, non_blocking=True)`` need not wait for the GPU."""
        return Batch(**{k: (v.pin_memory() if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()})


class InputBuilder:
    """Builds :class:`Batch` es from raw 16 kHz audio with a processor's tokenizer, template and features."""

    def __init__(self, processor, prompt: Prompt):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.feature_extractor = processor.feature_extractor
        self.prompt = prompt
        self.answer_ids = answer_token_ids(self.tokenizer, prompt)
        self.audio_token = processor.audio_token
        self.audio_token_id = self.tokenizer.convert_tokens_to_ids(self.audio_token)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.text = processor.apply_chat_template(conversation(prompt), add_generation_prompt=True, tokenize=False)
        if self.text.count(self.audio_token) != 1:
            raise UserError(f"the processor's chat template must place exactly one {self.audio_token} for the clip")
        before, after = self.text.split(self.audio_token)
        self.prefix_ids = self.tokenizer.encode(before, add_special_tokens=False)
        self.suffix_ids = self.tokenizer.encode(after, add_special_tokens=False)
        self.sampling_rate = self.feature_extractor.sampling_rate
        self.hop = self.feature_extractor.hop_length
        self.window_samples = self.feature_extractor.n_samples
        self.window_frames = self.feature_extractor.nb_max_frames

    def answer_id(self, label: str) -> int:
        if label not in LABELS:
            raise ValueError(f"unknown label {label!r}")
        return self.answer_ids[0] if label == SPEECH else self.answer_ids[1]

    def features(self, audios: Sequence[np.ndarray], *, trim: bool, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel features and frame mask over :meth:`window_length`, computed in float32 whatever autocast is in
        force, so training and scoring see the same features on a GPU too."""
        with torch.autocast(device_type=torch.device(device).type, enabled=False):
            return self.log_mel(audios, self.window_length(audios, trim=trim), device=device)

    def window_length(self, audios: Sequence[np.ndarray], *, trim: bool) -> int:
        """Samples in the audio window: the model's whole window, or with ``trim`` the longest clip plus a margin.

        Every frame within a clip (and the margin after it) is identical in both windows: the audio is
        zero-padded either way and Whisper's log-mel floor is set by the clip's own maximum.
        """
        if not trim:
            return self.window_samples
        longest = max(min(len(a), self.window_samples) for a in audios)
        frames = math.ceil(longest / self.hop) + TRIM_MARGIN
        frames = min(self.window_frames, math.ceil(frames / TRIM_MULTIPLE) * TRIM_MULTIPLE)
        return frames * self.hop

    def log_mel(self, audios: Sequence[np.ndarray], length: int, *, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """The feature extractor's log-mel and frame mask over ``length`` samples, under whatever autocast is in force
        (:meth:`features` turns it off)."""
        out = self.feature_extractor(
            [np.asarray(a, dtype=np.float32) for a in audios], sampling_rate=self.sampling_rate,
            padding="max_length", max_length=length, truncation=True, return_attention_mask=True,
            return_tensors="pt", device=device,
        )
        return out["input_features"], out["attention_mask"].long()

    def build(self, audios: Sequence[np.ndarray], labels: Sequence[str] | None = None, *, trim: bool = True,
              feature_device: str = "cpu", shared_prefix: bool = False,
              features: tuple[torch.Tensor, torch.Tensor] | None = None) -> Batch:
        """Inputs for ``audios``; with ``labels``, each row ends with its answer token, the only supervised one.

        ``shared_prefix`` leaves the prompt text before the audio (the same for every clip) out of the rows,
        for a model that has it in a :class:`speech_calibration.model.forward.PrefixCache`; positions still count it.
        ``features``: these clips' log-mel features and frame mask, already computed (:meth:`FeatureCache.take`).
        """
        features, feature_mask = features if features is not None else self.features(audios, trim=trim,
                                                                                      device=feature_device)
        real_frames = feature_mask.sum(-1).cpu()
        n_audio = num_audio_tokens(real_frames).tolist()
        head = [] if shared_prefix else self.prefix_ids
        rows = []
        for i, n in enumerate(n_audio):
            ids = head + [self.audio_token_id] * n + self.suffix_ids
            if labels is not None:
                ids = ids + [self.answer_id(labels[i])]
            rows.append(ids)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(rows):  # left padding: the answer position is the last column for every row
            input_ids[i, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[i, width - len(ids):] = 1
        prefix_len = len(self.prefix_ids) if shared_prefix else 0
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0) + prefix_len
        batch_labels = None
        if labels is not None:
            batch_labels = torch.full_like(input_ids, IGNORE_INDEX)
            batch_labels[:, -1] = input_ids[:, -1]
        counts = torch.tensor(n_audio, dtype=torch.long)
        starts = torch.tensor([width - len(ids) + len(head) for ids in rows])  # each row's first audio token
        row = torch.repeat_interleave(torch.arange(len(rows)), counts)
        k = torch.arange(int(counts.sum())) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        audio_index = torch.stack([row, starts[row] + k, k])
        keep = torch.arange(encoder_positions(features.shape[-1]))[None, :] < encoder_positions(real_frames)[:, None]
        return Batch(input_ids, attention_mask, position_ids, features, feature_mask, batch_labels, prefix_len,
                     audio_index, None if bool(keep.all()) else keep)


class FeatureCache:
    """The log-mel features of a fixed list of clips, computed once over the window of the longest, so that each
    training epoch slices them instead of computing them again.

    A batch's slice equals what :meth:`InputBuilder.features` computes for that batch (``tests/test_modeling.py``
    checks it bit for bit): every frame within a clip and its margin is the same in any window that holds it
    (:meth:`InputBuilder.window_length`), and past them the audio is zeros, whose log-mel is the clip's own floor.
    """

    def __init__(self, builder: InputBuilder, audios: Sequence[np.ndarray], *, trim: bool, chunk: int = 16):
        """Computed ``chunk`` clips at a time into tensors of the final size: the STFT's temporaries of a whole split at
        once would take about 12 times the cache itself."""
        self.builder, self.trim, self.audios = builder, trim, audios
        length = builder.window_length(audios, trim=trim)
        frames = length // builder.hop
        self.features = torch.empty((len(audios), builder.feature_extractor.feature_size, frames), dtype=torch.float32)
        self.mask = torch.empty((len(audios), frames), dtype=torch.long)
        with torch.autocast(device_type="cpu", enabled=False):  # float32, as InputBuilder.features computes them
            for start in range(0, len(audios), chunk):
                part = slice(start, start + chunk)
                self.features[part], self.mask[part] = builder.log_mel(audios[part], length)

    @staticmethod
    def nbytes(builder: InputBuilder, audios: Sequence[np.ndarray], *, trim: bool) -> int:
        """The bytes a cache of ``audios`` would hold (float32 features; the mask is a small fraction more)."""
        frames = builder.window_length(audios, trim=trim) // builder.hop
        return len(audios) * builder.feature_extractor.feature_size * frames * 4

    def take(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and frame mask of the clips ``idx``, over the window :meth:`InputBuilder.features` would use."""
        frames = self.builder.window_length([self.audios[i] for i in idx], trim=self.trim) // self.builder.hop
        rows = torch.as_tensor(list(idx), dtype=torch.long)
        return self.features[rows, :, :frames].contiguous(), self.mask[rows, :frames].contiguous()
