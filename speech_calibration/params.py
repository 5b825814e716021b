"""One typed loader for ``params.yaml``.

``params.yaml`` is the one source of the study's settings: every dataclass default below equals its value
there (``tests/test_params.py`` checks it), so code that builds params from a partial mapping runs the
same study as ``dvc repro``.

Every section is a frozen dataclass. Loading checks that every key is known, every value has the
declared type, and every value is possible (``validate``); a mistake is a :class:`UserError` that
names the key, e.g. ``params.yaml: train.learning_rate: expected a number, got 'fast'``.

Stages read only their own sections, and ``dvc.yaml`` lists exactly those sections as each
stage's params, so a change re-runs only what depends on it.
"""
from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from speech_calibration.calibration.methods import METHODS as CALIBRATION_METHODS
from speech_calibration.errors import UserError

SPLITS = ("train", "dev", "test")
EVAL_SET_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
RESERVED_SET_NAMES = (*SPLITS, "conditions")
MOVED = {"predict.extra_csvs": "list your sets under eval_sets (name: a folder holding metadata.csv and its audio), "
                               "where every system scores and reports them"}


# --------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class SplitSize:
    clips: int
    groups: int

    def validate(self, key: str) -> None:
        _check(self.groups >= 1, key + ".groups", "must be at least 1")
        _check(self.clips >= 2 * self.groups, key + ".clips", "must be at least 2 per group (one of each class)")


@dataclass(frozen=True)
class SyntheticData:
    """The embedded corpus: each group is one session (a voice in one acoustic background)."""

    seed: int = 1234
    sizes: dict[str, SplitSize] = field(
        default_factory=lambda: {"train": SplitSize(64, 6), "dev": SplitSize(72, 4), "test": SplitSize(24, 3)}
    )
    speech_fraction: float = 0.5
    # eSpeak NG voice names ("en-us+f3": language + variant); group i of a split gets voice i (cycling).
    voices: dict[str, list[str]] = field(default_factory=lambda: {
        "train": ["en-us+m1", "en-us+f2", "en+m3", "en+f4", "en-us+m7", "en-us+f1"],
        "dev": ["en+m2", "en-us+f3", "en-us+m4", "en-gb-scotland+f1"],
        "test": ["en-us+m6", "en-gb-x-rp+f5", "en-029+croak"]})
    # background families per split (speech_calibration/data/scenes.py BACKGROUNDS lists them); group i gets family i (cycling).
    # Test voices and families must be unseen in train.
    backgrounds: dict[str, list[str]] = field(default_factory=lambda: {
        "train": ["white", "pink", "hum", "music"], "dev": ["brown", "rain", "fan", "music"],
        "test": ["wind", "room", "traffic"]})
    snr_db: list[float] = field(default_factory=lambda: [-5.0, 0.0, 5.0, 10.0, 15.0, 20.0])
    min_duration_s: float = 0.2
    max_duration_s: float = 5.0
    # non-speech foreground events (speech_calibration/data/scenes.py EVENTS) and the share of NONSPEECH clips that carry one;
    # the rest are the background alone. Events sit at an event-to-background ratio drawn from snr_db.
    events: list[str] = field(default_factory=lambda: ["tone", "chirp", "clicks", "beeps", "melody"])
    event_fraction: float = 0.5
    level_dbfs: float = -30.0  # every clip is normalised to this RMS level ...
    level_jitter_db: float = 3.0  # ... plus a uniform random gain of +- this, so level says nothing about the label
    max_rt60_s: float = 0.6  # each session's room reverberation time is drawn from [0, max_rt60_s]

    def validate(self, key: str) -> None:
        _check(set(self.sizes) == set(SPLITS), key + ".sizes", f"must name exactly {', '.join(SPLITS)}")
        for split, size in self.sizes.items():
            size.validate(f"{key}.sizes.{split}")
        _check(0.0 < self.speech_fraction < 1.0, key + ".speech_fraction", "must be strictly between 0 and 1")
        _check(0.0 < self.min_duration_s <= self.max_duration_s, key + ".min_duration_s",
               "must be positive and not above max_duration_s")
        _check(self.min_duration_s >= 0.05, key + ".min_duration_s", "must be at least 0.05 s")
        _check(len(self.snr_db) > 0, key + ".snr_db", "must list at least one SNR")
        _check(0.0 <= self.event_fraction <= 1.0, key + ".event_fraction", "must be in [0, 1]")
        _check(self.event_fraction == 0.0 or len(self.events) > 0, key + ".events",
               "must list at least one event when event_fraction > 0")
        _check(-60.0 <= self.level_dbfs <= -10.0, key + ".level_dbfs", "must be in [-60, -10] dBFS")
        _check(0.0 <= self.level_jitter_db <= 10.0, key + ".level_jitter_db", "must be in [0, 10] dB")
        _check(0.0 <= self.max_rt60_s <= 2.0, key + ".max_rt60_s", "must be in [0, 2] s")
        for name, table in (("voices", self.voices), ("backgrounds", self.backgrounds)):
            _check(set(table) == set(SPLITS), f"{key}.{name}", f"must name exactly {', '.join(SPLITS)}")
            for split, items in table.items():
                _check(len(items) > 0, f"{key}.{name}.{split}", "must not be empty")
            seen = set(table["train"])
            for i, item in enumerate(table["test"]):
                _check(item not in seen, f"{key}.{name}.test[{i}]",
                       f"{item!r} is also in {name}.train; test {name} must be unseen in train (pick another)")


@dataclass(frozen=True)
class CsvData:
    """The user's own corpus as one metadata CSV, split here by group."""

    path: str | None = None
    # fraction of groups (0 < x < 1) or a count of groups (an integer >= 1) for dev and test; train gets the rest.
    dev_groups: float = 0.2
    test_groups: float = 0.2

    def validate(self, key: str) -> None:
        for name in ("dev_groups", "test_groups"):
            value = getattr(self, name)
            _check(0.0 < value < 1.0 or (value >= 1.0 and value == int(value)), f"{key}.{name}",
                   f"{value!r} must be a fraction of groups (0 < x < 1) or a whole count of groups (1, 2, ...)")


@dataclass(frozen=True)
class PresplitData:
    """The user's own three split CSVs, validated and copied into place."""

    train: str | None = None
    dev: str | None = None
    test: str | None = None


@dataclass(frozen=True)
class Data:
    source: Literal["synthetic", "csv", "presplit"] = "synthetic"
    # The folder of your corpus: its metadata CSVs (and normally its audio). dvc.yaml makes it a dep of prepare, so an
    # edit under it re-runs prepare; a CSV elsewhere is refused (DVC would not see it change).
    corpus: str = "data/raw"
    split_seed: int = 0
    sample_rate: int = 16000
    synthetic: SyntheticData = field(default_factory=SyntheticData)
    csv: CsvData = field(default_factory=CsvData)
    presplit: PresplitData = field(default_factory=PresplitData)

    def validate(self, key: str) -> None:
        _check(self.sample_rate > 0, key + ".sample_rate", "must be positive")
        _check(bool(self.corpus), key + ".corpus", "must name the folder of your corpus (data/raw by default)")
        if self.source == "csv":
            _check(bool(self.csv.path), key + ".csv.path", "must name a metadata CSV when data.source is csv")
            self._check_in_corpus(key + ".csv.path", self.csv.path)
        if self.source == "presplit":
            for split in SPLITS:
                _check(bool(getattr(self.presplit, split)), f"{key}.presplit.{split}",
                       "must name a metadata CSV when data.source is presplit")
            for split in SPLITS:
                self._check_in_corpus(f"{key}.presplit.{split}", getattr(self.presplit, split))

    def in_corpus(self, path: str | Path) -> bool:
        """Whether ``path`` lies in the ``corpus`` folder, the dep through which DVC sees the corpus change. A relative
        path is relative to the current folder (the project root). Compared as written, with ``..`` resolved (a file
        DVC linked into its cache still lies where it is listed), or with symlinks resolved (a corpus folder that
        links elsewhere)."""
        return any(os.path.commonpath([resolve(path), resolve(self.corpus)]) == resolve(self.corpus)
                   for resolve in (os.path.abspath, os.path.realpath))

    def _check_in_corpus(self, key: str, path: str) -> None:
        _check(self.in_corpus(path), key, f"{path} lies outside data.corpus ({self.corpus}), so DVC would not see it "
               f"change and prepare would not re-run; move it under {self.corpus}, or point data.corpus at its folder")


# -------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class Model:
    # Any Qwen2-Audio checkpoint: a hub id such as Qwen/Qwen2-Audio-7B-Instruct, or a local folder.
    name_or_path: str = "models/tiny-qwen2-audio"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on a GPU that has it, else fp32
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    load_in_4bit: bool = False  # bitsandbytes NF4 base weights (GPU only)
    # Fast path: run the audio encoder on a window cut to the batch's longest clip (same features,
    # see speech_calibration/model/forward.py); false runs the model's own full-window forward.
    trim_audio_window: bool = True
    # Fast path, scoring only: run the prompt text before the audio (the same for every clip) once and
    # let every batch attend to its cached keys and values. Needs trim_audio_window.
    cache_prompt_prefix: bool = True
    # Scoring with a seed's adapter: fold the LoRA update into the base weights (peft's merge_and_unload), so
    # no adapter runs on the hot path. fp32: the same logits within 1e-5 (tests/test_merge.py); bf16: largest
    # difference within the unmerged path's own batch-1 vs batch-N difference on 64 clips, not on 16, and 1.3-1.6x
    # it on average (benchmarks/README.md); false: unmerged, a fifth slower at 7B. Never with load_in_4bit
    # (re-quantizing the merged weights would change them): the adapter then stays unmerged.
    merge_adapter: bool = True


@dataclass(frozen=True)
class TinyModel:
    """The embedded default: a tiny randomly initialised Qwen2-Audio built by the ``tiny_model`` stage
    (:mod:`speech_calibration.model.tiny`)."""

    seed: int = 0
    window_s: float = 6.0  # audio window (the real model's is 30 s); no shorter than the longest clip
    init_std: float = 0.1  # std of the random init; transformers' 0.02 passes audio through too faintly
    num_mel_bins: int = 128
    encoder_layers: int = 2
    encoder_d_model: int = 64
    encoder_heads: int = 4
    encoder_ffn_dim: int = 128
    text_layers: int = 2
    hidden_size: int = 64
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 128

    def validate(self, key: str) -> None:
        _check(self.window_s > 0, key + ".window_s", "must be positive")
        _check(self.init_std > 0, key + ".init_std", "must be positive")
        _check(self.encoder_d_model % self.encoder_heads == 0, key + ".encoder_heads", "must divide encoder_d_model")
        _check(self.hidden_size % self.heads == 0, key + ".heads", "must divide hidden_size")
        _check(self.heads % self.kv_heads == 0, key + ".kv_heads", "must divide heads")


@dataclass(frozen=True)
class Prompt:
    system: str = "You are an audio analyst."
    user: str = "Does this audio clip contain human speech? Answer A for SPEECH or B for NONSPEECH."
    speech_answer: str = "A"
    nonspeech_answer: str = "B"
    question_first: bool = False  # the question before the audio: it joins the cached prompt prefix (fewer tokens per clip)

    def validate(self, key: str) -> None:
        _check(self.speech_answer != self.nonspeech_answer, key + ".nonspeech_answer", "must differ from speech_answer")


@dataclass(frozen=True)
class Lora:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    mlp_targets: bool = True  # also the language model's MLP projections (the study's --add_mlp_targets)
    encoder_targets: bool = True  # also the audio encoder's attention projections (the tiny model's encoder is random)

    def validate(self, key: str) -> None:
        _check(self.r >= 1, key + ".r", "must be at least 1")
        _check(0.0 <= self.dropout < 1.0, key + ".dropout", "must be in [0, 1)")


@dataclass(frozen=True)
class Train:
    learning_rate: float = 2e-3
    epochs: int = 20
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    share_prompt_prefix: bool = False
    # torch.compile each decoder layer (forward and backward; compiled once, in the first step). On a GPU at 7B
    # +54 % clips/s after a first step of several minutes (benchmarks/README.md): for long runs only.
    compile: bool = False
    # torch's deterministic algorithms, strictly: the same seed trains the same adapter bit for bit, also on a GPU
    # (cuDNN's attention otherwise picks a non-deterministic backward); an op without a deterministic form is then an
    # error, and false lets it run, with a warning
    deterministic: bool = True

    def validate(self, key: str) -> None:
        _check(self.learning_rate > 0, key + ".learning_rate", "must be positive")
        _check(self.epochs >= 1, key + ".epochs", "must be at least 1")
        _check(self.batch_size >= 1, key + ".batch_size", "must be at least 1")
        _check(self.grad_accum >= 1, key + ".grad_accum", "must be at least 1")
        _check(0.0 <= self.warmup_ratio < 1.0, key + ".warmup_ratio", "must be in [0, 1)")


@dataclass(frozen=True)
class Predict:
    batch_size: int = 16
    # content-free inputs for contextual calibration: digital silence and a short white-noise clip
    content_free_duration_s: float = 1.0
    content_free_noise_dbfs: float = -30.0
    # torch.compile each decoder layer (Inductor; dynamic shapes: compiled once, in the first batch). Pays on
    # a GPU with a large set (benchmarks/README.md); on the embedded default the compiling outlasts the scoring.
    compile: bool = False

    def validate(self, key: str) -> None:
        _check(self.batch_size >= 1, key + ".batch_size", "must be at least 1")
        _check(self.content_free_duration_s > 0, key + ".content_free_duration_s", "must be positive")


WEBRTC_FRAME_MS = (10, 20, 30)  # the frame lengths WebRTC VAD accepts


@dataclass(frozen=True)
class Baselines:
    """Reference detectors scored beside the audio LLM (the ``baselines`` stage; scores in
    :mod:`speech_calibration.vad.detectors`)."""

    silero: bool = True  # Silero VAD (bundled JIT weights); false: no predictions/baselines/silero
    webrtc: bool = True  # WebRTC VAD; false: no predictions/baselines/webrtc
    webrtc_mode: int = 3  # aggressiveness 0-3; 3 calls the least noise speech
    webrtc_frame_ms: int = 10  # 10, 20 or 30
    window_ms: float = 200.0  # clip score: the best mean frame score over any window this long
    # condition sets under data/processed/conditions (<name>_metadata.csv) to score as well;
    # a list so that [] drops the baselines_conditions stage, and its dependency, from dvc.yaml
    score_conditions: list[str] = field(default_factory=lambda: ["conditions"])

    def validate(self, key: str) -> None:
        _check(self.webrtc_mode in (0, 1, 2, 3), key + ".webrtc_mode", "must be 0, 1, 2 or 3")
        _check(self.webrtc_frame_ms in WEBRTC_FRAME_MS, key + ".webrtc_frame_ms", "must be 10, 20 or 30")
        _check(self.window_ms > 0, key + ".window_ms", "must be positive")
        for i, name in enumerate(self.score_conditions):
            _check(bool(name) and name.replace("_", "").replace("-", "").isalnum(), f"{key}.score_conditions[{i}]",
                   f"{name!r} must be a plain name such as conditions (the file <name>_metadata.csv)")
        _check(len(set(self.score_conditions)) == len(self.score_conditions), key + ".score_conditions",
               "must not repeat a name")


# ---------------------------------------------------------------------------------------- analysis
@dataclass(frozen=True)
class Calibration:
    method: Literal[CALIBRATION_METHODS] = "temperature"
    tune_threshold: bool = False  # also tune a decision threshold on dev (reported separately)
    temperature_bounds: list[float] = field(default_factory=lambda: [0.01, 100.0])

    def validate(self, key: str) -> None:
        lo, hi = (self.temperature_bounds + [0, 0])[:2]
        _check(len(self.temperature_bounds) == 2 and 0 < lo < hi, key + ".temperature_bounds",
               "must be two numbers 0 < low < high")


@dataclass(frozen=True)
class Evaluate:
    n_bins: int = 15  # equal-width / equal-mass bins of the binned calibration errors and reliability diagrams
    n_bootstrap: int = 2000  # clip-level bootstrap resamples of the test CIs (plain and paired)
    ci: float = 0.95  # level of every interval (bootstrap percentile and across-seed t)
    bootstrap_seed: int = 0
    # systems calibrated and evaluated beside the fine-tuned seeds, through the same code (the references
    # stage); a folder under predictions/ that is absent (a switched-off detector) is skipped with a log line
    references: list[str] = field(default_factory=lambda: ["zeroshot", "ensemble", "baselines/silero",
                                                              "baselines/webrtc"])

    def validate(self, key: str) -> None:
        _check(self.n_bins >= 2, key + ".n_bins", "must be at least 2")
        _check(self.n_bootstrap >= 100, key + ".n_bootstrap", "must be at least 100")
        _check(0.5 < self.ci < 1.0, key + ".ci", "must be in (0.5, 1)")
        for i, name in enumerate(self.references):
            _check(bool(name) and not name.startswith("/") and ".." not in name.split("/")
                   and not name.startswith("seed_"), f"{key}.references[{i}]",
                   f"{name!r} must be a folder under predictions/ other than a seed, e.g. zeroshot or baselines/silero")
        _check(len(set(self.references)) == len(self.references), key + ".references", "must not repeat a system")


BAND_FILTERS = ("telephone", "lowpass", "highpass")


@dataclass(frozen=True)
class Conditions:
    """Robustness variants of the test clips (the ``conditions_render`` stage) and their report (the ``conditions`` stage).

    Each dimension is varied alone around the clean clip; an empty level list leaves a dimension out.
    """

    seed: int = 0  # seeds every noise draw and synthetic room response
    container_s: float = 2.0  # duration variants: the segment sits in the middle of a container this long
    container_noise_dbfs: float = -60.0  # RMS level of the white noise that pads the container
    durations_ms: list[float] = field(default_factory=lambda: [20.0, 40.0, 60.0, 80.0, 100.0, 200.0, 500.0, 1000.0])
    snr_db: list[float] = field(default_factory=lambda: [-20.0, -15.0, -10.0, -5.0, 0.0, 5.0, 10.0, 20.0, 30.0, 40.0])
    t60_s: list[float] = field(default_factory=lambda: [0.3, 1.0, 2.5])
    band: list[str] = field(default_factory=lambda: list(BAND_FILTERS))
    band_low_hz: float = 300.0
    band_high_hz: float = 3400.0
    filter_order: int = 4  # Butterworth order (scipy.signal.butter N)
    # report
    n_bootstrap: int = 1000  # clustered bootstrap resamples (of test groups)
    bootstrap_seed: int = 0
    ece_threshold: float = 0.10  # calibration threshold: the level where smooth ECE first exceeds this

    def validate(self, key: str) -> None:
        _check(self.container_s > 0, key + ".container_s", "must be positive")
        _check(0 < self.ece_threshold < 1, key + ".ece_threshold", "must be between 0 and 1 (a smooth ECE)")
        _check(self.container_noise_dbfs < 0, key + ".container_noise_dbfs", "must be below 0 dBFS")
        _check(all(d > 0 for d in self.durations_ms), key + ".durations_ms", "every duration must be positive")
        _check(all(d <= 1000 * self.container_s for d in self.durations_ms), key + ".durations_ms",
               "every duration must fit in the container (at most container_s * 1000 ms)")
        _check(all(t > 0 for t in self.t60_s), key + ".t60_s", "every T60 must be positive")
        for name in ("durations_ms", "snr_db", "t60_s", "band"):
            values = getattr(self, name)
            _check(len(set(values)) == len(values), f"{key}.{name}", "must not repeat a level")
        for i, name in enumerate(self.band):
            _check(name in BAND_FILTERS, f"{key}.band[{i}]", f"{name!r} is not one of {', '.join(BAND_FILTERS)}")
        _check(0 < self.band_low_hz < self.band_high_hz, key + ".band_low_hz", "must be positive and below band_high_hz")
        _check(self.filter_order >= 1, key + ".filter_order", "must be at least 1")
        _check(self.n_bootstrap >= 100, key + ".n_bootstrap", "must be at least 100")


ALL_DEV = "all"  # learning_curve.sizes: the whole dev set


@dataclass(frozen=True)
class LearningCurve:
    """How much dev data each calibration method needs (the ``learning_curve`` stage).

    Each method is refitted on random dev subsets of whole groups and evaluated on the full test set
    (:mod:`speech_calibration.calibration.learning_curve`).
    """

    # dev clips per subset (whole groups are drawn until a subset holds at least this many and both classes),
    # increasing; the last entry is all: the full-dev fit itself, one repeat, as the calibrate stage fits it.
    # Any: the loader's converter knows one type per list, and entries here are integers or the word all.
    sizes: list[Any] = field(default_factory=lambda: [16, 32, 48, ALL_DEV])
    repeats: int = 50  # random subsets per size
    seed: int = 0  # seeds the subset draws (the same subsets for every seed's system)

    def validate(self, key: str) -> None:
        for i, size in enumerate(self.sizes):
            _check(size == ALL_DEV or (isinstance(size, int) and not isinstance(size, bool) and size >= 2),
                   f"{key}.sizes[{i}]", f"{size!r} must be a number of dev clips (an integer >= 2) or {ALL_DEV}")
        _check(len(self.sizes) > 0 and self.sizes[-1] == ALL_DEV and self.sizes.count(ALL_DEV) == 1, key + ".sizes",
               f"must end with {ALL_DEV} (the full-dev fit every curve ends at), listed once")
        counts = self.sizes[:-1]
        _check(counts == sorted(set(counts)), key + ".sizes", "must list the clip counts in increasing order, each once")
        _check(self.repeats >= 10, key + ".repeats", "must be at least 10 (the interval is a percentile over repeats)")


LONG_CLIPS = ("error", "truncate", "windows")


@dataclass(frozen=True)
class Audio:
    """What happens to a clip longer than the model's audio window (:mod:`speech_calibration.data.long_clips`).

    ``error``: stop, naming the CSV row; ``truncate``: keep the first window, counting and logging the clips
    cut; ``windows``: score consecutive windows and keep the one with the largest SPEECH log-odds (training,
    whose labels cover a whole clip, then keeps the first window, logged like truncate).
    """

    long_clips: Literal["error", "truncate", "windows"] = "error"


@dataclass(frozen=True)
class Params:
    seeds: list[int] = field(default_factory=lambda: [42, 123, 456])
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    tiny_model: TinyModel = field(default_factory=TinyModel)
    prompt: Prompt = field(default_factory=Prompt)
    lora: Lora = field(default_factory=Lora)
    train: Train = field(default_factory=Train)
    predict: Predict = field(default_factory=Predict)
    calibration: Calibration = field(default_factory=Calibration)
    evaluate: Evaluate = field(default_factory=Evaluate)
    baselines: Baselines = field(default_factory=Baselines)
    conditions: Conditions = field(default_factory=Conditions)
    audio: Audio = field(default_factory=Audio)
    learning_curve: LearningCurve = field(default_factory=LearningCurve)
    # your own evaluation sets: {name: folder holding metadata.csv (the splits' columns) and its audio}
    eval_sets: dict[str, str] = field(default_factory=dict)

    def validate(self, key: str) -> None:
        _check(len(self.seeds) > 0, "seeds", "must list at least one seed")
        for name in self.eval_sets:
            _check(EVAL_SET_NAME.fullmatch(name) is not None and name not in RESERVED_SET_NAMES, f"eval_sets.{name}",
                   "a set name is letters, digits, '_' or '-', starting with a letter, and not "
                   + " / ".join(RESERVED_SET_NAMES))
        _check(len(set(self.seeds)) == len(self.seeds), "seeds", "must not repeat a seed")
        _check(all(seed >= 0 for seed in self.seeds), "seeds",
               f"{[s for s in self.seeds if s < 0]}: a seed is a non-negative integer (it names the folders seed_<seed>)")
        _check(not self.train.share_prompt_prefix or self.model.trim_audio_window, "train.share_prompt_prefix",
               "needs model.trim_audio_window: true (the shared prefix is a fast-path feature); set one of them")


def eval_set_folder(p: Params, name: str, source: str | Path = "params.yaml") -> str:
    """The folder of evaluation set ``name``, or a one-line error naming the key and the sets there are."""
    if name not in p.eval_sets:
        raise UserError(f"{source}: eval_sets.{name}: no such set (sets: {', '.join(p.eval_sets) or 'none'})")
    return p.eval_sets[name]


# ------------------------------------------------------------------------------------------ loading
def load(path: str | Path = "params.yaml") -> Params:
    """Load and validate ``params.yaml``; every mistake is a :class:`UserError` naming the file and the key."""
    path = Path(path)
    try:
        raw = yaml.load(_read(path), Loader=_UniqueKeyLoader)  # a SafeLoader: safe_load plus unique keys
    except _RepeatedKey as err:
        raise UserError(f"{path} line {err.line}: {err.key}: key repeated (first at line {err.first_line}); "
                        "delete one of the two") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{where} ({what})") from None
    if raw is None:
        raise UserError(f"{path}: empty (no settings, only blanks or comments); put the settings back "
                        "(the project's: git checkout params.yaml) or pass another file with --params")
    try:
        return parse(Params, raw, "")
    except UserError as err:
        raise UserError(f"{path}: {err}") from None


def _read(path: Path) -> str:
    """The text of ``path``, or a one-line :class:`UserError` saying why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run from the project root or pass --params") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder; pass the params YAML file (e.g. params.yaml) with --params") from None
    except PermissionError:
        raise UserError(f"{path}: not readable (permission denied); allow reading it (chmod u+r) "
                        "or pass another file with --params") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                        "pass the params YAML file with --params") from None
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror or err}); pass the params YAML file with --params") \
            from None


class _RepeatedKey(yaml.YAMLError):
    """A key given twice in one mapping: ``key`` is its dotted path, the lines count from 1."""

    def __init__(self, key: str, line: int, first_line: int):
        super().__init__(f"line {line}: {key}: key repeated (first at line {first_line})")
        self.key, self.line, self.first_line = key, line, first_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, except that a key repeated in one mapping is :class:`_RepeatedKey`, not a silent
    overwrite (YAML requires unique keys; PyYAML keeps the last). Merge keys (``<<: *base``) may still be overridden."""

    def construct_document(self, node: yaml.Node) -> Any:
        self._check_unique(node, "", set())
        return super().construct_document(node)

    def _check_unique(self, node: yaml.Node, key: str, seen: set[int]) -> None:
        if id(node) in seen:  # an alias: checked where its anchor is
            return
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check_unique(item, f"{key}[{i}]", seen)
        elif isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, value_node in node.value:
                name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                where = f"{key}.{name}" if key else name
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    value = self.construct_object(key_node)  # so that 1 and 0x1, or a and "a", are one key
                    if value in first:
                        raise _RepeatedKey(where, key_node.start_mark.line + 1, first[value])
                    first[value] = key_node.start_mark.line + 1
                self._check_unique(value_node, where, seen)


def parse(cls: type, raw: Any, key: str) -> Any:
    """Build dataclass ``cls`` from a mapping, checking unknown keys, types and values."""
    if not isinstance(raw, dict):
        raise UserError(f"{key or 'top level'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"{key}.{unknown[0]}" if key else unknown[0]
        if where in MOVED:
            raise UserError(f"{where}: no longer a key; {MOVED[where]}")
        raise UserError(f"{where}: unknown key (known keys: {', '.join(sorted(names))})")
    values = {name: _convert(hints[name], raw[name], f"{key}.{name}" if key else name) for name in raw}
    obj = cls(**values)
    if hasattr(obj, "validate"):
        obj.validate(key)
    return obj


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key)
    if origin is Literal:
        if value not in args:
            raise UserError(f"{key}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{key}: expected a list, got {value!r}")
        return [_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"params.py: no converter for {tp!r} at {key}")  # a bug in this module, not the user's


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise UserError(f"{key}: {message}")
