"""Loading Qwen2-Audio: the base model and processor (``from_pretrained``), LoRA adapters (peft), device and dtype.

Any Qwen2-Audio checkpoint loads through ``from_pretrained`` (safetensors only, no remote code): the
real ``Qwen/Qwen2-Audio-7B-Instruct`` and the embedded tiny model alike; nothing here knows which.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from speech_calibration import layout
from speech_calibration.errors import UserError
from speech_calibration.params import Lora, Model, Prompt

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Exact module names (peft matches a string target as a full regex): the decoder's attention and MLP
# projections, and optionally the audio encoder's attention projections. Plain suffixes such as
# "q_proj" would also hit the encoder, which has q_proj/k_proj/v_proj modules of its own.
LM_ATTENTION = r"model\.language_model\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj)"
LM_MLP = r"model\.language_model\.layers\.\d+\.mlp\.(gate_proj|up_proj|down_proj)"
ENCODER_ATTENTION = r"model\.audio_tower\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)"


def lora_target_pattern(cfg: Lora) -> str:
    parts = [LM_ATTENTION] + ([LM_MLP] if cfg.mlp_targets else []) + ([ENCODER_ATTENTION] if cfg.encoder_targets else [])
    return "|".join(f"(?:{p})" for p in parts)


def resolve_device(cfg: Model) -> torch.device:
    import torch  # here, not at the top: the stages that only read the audio window never load torch

    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(cfg.device)
    except RuntimeError:
        raise UserError(f"model.device: {cfg.device!r} is not a device torch knows; use auto, cpu, cuda or cuda:<index>") \
            from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"model.device: {cfg.device!r} asked for, but no CUDA GPU is visible; set model.device: auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"model.device: {cfg.device!r} asked for, but this machine shows {torch.cuda.device_count()} CUDA "
                        f"GPU(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1}); choose one of them or auto")
    return device


def resolve_dtype(cfg: Model, device: torch.device) -> torch.dtype:
    import torch

    if cfg.dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]


def _looks_local(name: str) -> bool:
    """A path rather than a hub id ("org/name"): explicit, existing, or under an existing folder (models/...)."""
    parts = name.split("/")
    return (name.startswith((".", "/", "~")) or Path(name).exists() or len(parts) != 2
            or Path(parts[0]).is_dir())


def _pretrained(auto_class, cfg: Model, what: str):
    """``auto_class.from_pretrained(model.name_or_path)``, with a one-line error naming the key."""
    _check_base_exists(cfg.name_or_path)
    try:
        return auto_class.from_pretrained(cfg.name_or_path, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise UserError(f"model.name_or_path: cannot load a {what} from {cfg.name_or_path!r} "
                        f"({str(err).splitlines()[0]})") from None


def load_processor(cfg: Model):
    """The model's processor (feature extractor + tokenizer), padding on the left for batched scoring."""
    from transformers import AutoProcessor

    processor = _pretrained(AutoProcessor, cfg, "processor")
    processor.tokenizer.padding_side = "left"
    return processor


def _check_base_exists(name: str) -> None:
    if _looks_local(name) and not Path(name).expanduser().is_dir():
        raise UserError(f"model.name_or_path: {name!r} does not exist; build the embedded model with "
                        "`dvc repro tiny_model`, or name a Qwen2-Audio checkpoint folder or hub id")


def load_base(cfg: Model, device: torch.device | None = None):
    """The base Qwen2AudioForConditionalGeneration on ``device`` in the configured precision, in eval mode."""
    from transformers import Qwen2AudioForConditionalGeneration

    _check_base_exists(cfg.name_or_path)
    device = device or resolve_device(cfg)
    dtype = resolve_dtype(cfg, device)
    kwargs = dict(dtype=dtype, attn_implementation=cfg.attn_implementation, use_safetensors=True,
                  trust_remote_code=False)
    if cfg.load_in_4bit:
        if device.type != "cuda":
            raise UserError("model.load_in_4bit: 4-bit loading needs a CUDA GPU; set it to false on CPU")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True)
        kwargs["device_map"] = {"": device.index or 0}
    try:
        model = Qwen2AudioForConditionalGeneration.from_pretrained(cfg.name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        raise UserError(f"model.name_or_path: cannot load Qwen2-Audio from {cfg.name_or_path!r} "
                        f"({str(err).splitlines()[0]})") from None
    if not cfg.load_in_4bit:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def check_processor_fits(model, builder, cfg: Model) -> None:
    """Refuse a tokenizer and weights that disagree on the ids scoring relies on: the audio placeholder (the trimmed
    path puts the audio where the tokenizer's ``<|AUDIO|>`` id is, the model's own forward where
    ``config.audio_token_index`` is) and the two answers (rows of the output head). A folder assembled from two
    checkpoints would otherwise score without a word."""
    audio = getattr(model.config, "audio_token_index", None)
    if audio is not None and audio != builder.audio_token_id:
        raise UserError(f"model.name_or_path: {cfg.name_or_path!r}: its tokenizer's {builder.audio_token} is token "
                        f"{builder.audio_token_id}, but its config.json has audio_token_index {audio}; the tokenizer and "
                        "the weights come from different checkpoints: put the tokenizer files of these weights beside them")
    rows = model.get_output_embeddings().weight.shape[0]
    outside = [i for i in builder.answer_ids if i >= rows]
    if outside:
        raise UserError(f"model.name_or_path: {cfg.name_or_path!r}: the answer token id {outside[0]} is beyond the "
                        f"model's {rows} output rows; the tokenizer and the weights come from different checkpoints")


def add_lora(model, cfg: Lora):
    """Wrap ``model`` with fresh LoRA adapters on exactly the modules :func:`lora_target_pattern` names."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none",
                        target_modules=lora_target_pattern(cfg))
    return get_peft_model(model, config)


def load_adapter(model, adapter_dir: str | Path):
    """Attach a trained adapter (``PeftModel.from_pretrained``) to the base ``model`` for inference."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if not (adapter_dir / name).is_file():
            if (adapter_dir / "final" / name).is_file():  # the study's layout: <output_dir>/final
                raise UserError(f"{adapter_dir}: no {name} here, but in its final/ folder, where "
                                f"scripts/finetune_qwen_audio.py puts the adapter: pass {adapter_dir / 'final'}")
            raise UserError(f"{adapter_dir}: no {name}; this is not a trained adapter folder (train one with dvc repro "
                            "train, or with scripts/finetune_qwen_audio.py, which writes <output_dir>/final)")
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except Exception as err:  # peft/safetensors raise many types for a damaged folder
        raise UserError(f"{adapter_dir}: cannot load the adapter ({type(err).__name__}: {str(err).splitlines()[0]}); "
                        "the folder is damaged or was trained for another base model: re-run dvc repro train") from None
    peft_model.eval()
    return peft_model


def check_trained_prompt(adapter_dir: str | Path, prompt: Prompt) -> None:
    """Refuse to score an adapter with another prompt than the one it was trained with (its ``train_info.json``;
    keys it lacks, from before they existed, count as their defaults). Adapters without the file pass."""
    import json
    from dataclasses import asdict

    info = layout.train_info_json(adapter_dir)
    if not info.is_file():
        return
    trained = {**asdict(Prompt()), **json.loads(info.read_text()).get("params", {}).get("prompt", {})}
    now = asdict(prompt)
    differ = [key for key in now if trained.get(key) != now[key]]
    if differ:
        key = differ[0]
        raise UserError(f"{info}: the adapter was trained with prompt.{key} = {trained.get(key)!r}, but the params file has "
                        f"{now[key]!r}; score with the prompt it was trained with, or retrain it (dvc repro train)")


def _same_base(a: str, b: str) -> bool:
    """Two ``model.name_or_path`` values name the same model: the same text, or local folders that resolve to one."""
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()


def check_trained_base(adapter_dir: str | Path, cfg: Model) -> None:
    """Refuse to score an adapter on another base model than the one it was trained on (``base_model`` in its
    ``train_info.json``: the ``model.name_or_path`` of its training). Two models of one shape load each other's
    adapters without a word, and the logits would be another model's. Adapters without the file or the key pass."""
    import json

    _check_base_exists(cfg.name_or_path)  # a folder that is not there: that is the error to report
    info = layout.train_info_json(adapter_dir)
    if not info.is_file():
        return
    trained = json.loads(info.read_text()).get("base_model")
    if trained is None or _same_base(str(trained), str(cfg.name_or_path)):
        return
    raise UserError(f"{info}: the adapter was trained on the base model {trained!r}, but the params file has "
                    f"model.name_or_path = {cfg.name_or_path!r}; score it on the base it was trained on, or retrain it "
                    "(dvc repro train, which retrains on a changed model.name_or_path anyway); outside DVC, if it is "
                    "the same model moved elsewhere, set base_model in that file to the new path")


def merge_for_scoring(model, cfg: Model):
    """``model`` with its LoRA adapters folded into the base weights (peft's ``merge_and_unload``), for scoring.

    Each adapted weight becomes ``W + (alpha / r) B A``: the same function, one matrix product per layer
    instead of three, and a plain Qwen2AudioForConditionalGeneration (no peft wrapper on the hot path).
    Returned unchanged when ``model.merge_adapter`` is false, when it carries no adapter, and with
    ``model.load_in_4bit`` (merging would re-quantize the base weights and change them).
    """
    if not cfg.merge_adapter or not hasattr(model, "merge_and_unload"):
        return model
    if cfg.load_in_4bit:
        log.info("model.load_in_4bit: the adapter stays unmerged (merging would re-quantize the base weights)")
        return model
    merged = model.merge_and_unload(safe_merge=True)  # safe_merge: refuses a merge that yields NaN or inf
    merged.eval()
    return merged


def adapted_modules(model) -> list[str]:
    """Names of the modules that carry a LoRA adapter (``lora_A``), without peft's wrapper prefix."""
    names = [n[: -len(".lora_A")] for n, _ in model.named_modules() if n.endswith(".lora_A")]
    return sorted(re.sub(r"^base_model\.model\.", "", n) for n in names)


def unwrap(model):
    """The Qwen2AudioForConditionalGeneration inside a PeftModel (adapters stay injected), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def audio_window_s(cfg: Model) -> float:
    """The model's audio window in seconds, as its feature extractor defines it (``n_samples / sampling_rate``).

    A Whisper feature extractor (every Qwen2-Audio checkpoint's) sets ``n_samples = chunk_length * sampling_rate``
    whatever else its config holds, so its window is the saved ``chunk_length``: read from the config that
    ``from_pretrained`` would read, without building the extractor, whose module imports torch (the stages that
    only need the window, ``prepare`` and ``conditions_render``, never load torch). Any other extractor is built.
    """
    from transformers.feature_extraction_utils import FeatureExtractionMixin

    _check_base_exists(cfg.name_or_path)
    try:
        saved, _ = FeatureExtractionMixin.get_feature_extractor_dict(cfg.name_or_path)
    except (OSError, ValueError) as err:
        raise UserError(f"model.name_or_path: cannot load a feature extractor from {cfg.name_or_path!r} "
                        f"({str(err).splitlines()[0]})") from None
    if saved.get("feature_extractor_type") == "WhisperFeatureExtractor" and "chunk_length" in saved:
        return float(saved["chunk_length"])
    from transformers import AutoFeatureExtractor

    extractor = _pretrained(AutoFeatureExtractor, cfg, "feature extractor")
    return extractor.n_samples / extractor.sampling_rate
