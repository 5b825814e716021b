"""The embedded synthetic corpus: eSpeak NG voices over generated acoustic scenes, fully deterministic.

Each *group* is one recording session: one eSpeak NG voice (with its own speaking rate and pitch)
in one acoustic background (``scenes.BACKGROUNDS``) and one room (a reverberation time). From a session
come SPEECH clips (the voice over the session's background at an SNR drawn from ``snr_db``) and
NONSPEECH clips (the background alone, or the background plus a non-speech event from ``scenes.EVENTS``).

The signal is kept honest, so a model has to hear the voice to tell the classes apart:

- both classes share every session's background family, scene parameters and room;
- durations come from one distribution, ``uniform(min_duration_s, max_duration_s)``, for both classes;
- voices and events alike fill 60-100 % of the clip, go through the same room, and sit at a
  foreground-to-background ratio drawn from the same ``snr_db`` list;
- every clip is normalised to ``level_dbfs`` RMS plus a uniform random gain of ``+-level_jitter_db``.

Determinism: every random draw of this module comes from ``numpy.random.SeedSequence(seed, spawn_key=...)``
keyed by (split, group, clip), so a clip's plan, background and mixing do not change when another clip's do. All
speech of a corpus is synthesised in one seeded batch (:func:`speech_calibration.data.espeak.synthesize_batch`), so
the same params give byte-identical audio in every run; but eSpeak NG's state carries from one utterance to the
next, so an utterance's waveform also depends on every utterance spoken before it in the batch (a change to the
train split's speech changes the dev and test voices' audio too, not their plans).

Public functions: :func:`plan_corpus` (params -> sessions and clip plans, no audio), :func:`render_parts`
and :func:`mix` (one clip's background and foreground, then the mixture), :func:`render_clip` (both),
:func:`write_corpus` (all of it, into a folder), plus :func:`sentence`, :func:`check_names`,
:func:`trim_silence`, :func:`crop_active` and :func:`source_of`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import fftconvolve

from speech_calibration.data import schema
from speech_calibration.data.audio import write_audio
from speech_calibration.data.espeak import SpeechRequest, synthesize_batch
from speech_calibration.data.scenes import BACKGROUNDS, EVENTS, render_background
from speech_calibration.data.signal import (
    db_to_amplitude,
    fade,
    fit_peak,
    room_response,
    scale_to_snr,
    unit_rms,
)
from speech_calibration.errors import UserError
from speech_calibration.parallel import map_forked
from speech_calibration.params import SPLITS, SyntheticData

log = logging.getLogger(__name__)

KEY = "data.synthetic"  # where these params live in params.yaml, for error messages
MIN_FOREGROUND_SHARE, MAX_FOREGROUND_SHARE = 0.6, 1.0  # a voice or event fills this share of its clip


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent generator for one (split, group, clip, purpose) key."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))


# ============================================================================================ text
_SUBJECTS = ("the old farmer", "my neighbour", "a small child", "the teacher", "our captain", "the doctor",
             "a tired traveller", "the young painter", "her brother", "the baker", "a quiet student", "the pilot",
             "everyone in the village", "the music teacher", "his grandmother", "the night guard", "a clever fox",
             "the engineer", "my best friend", "the shop keeper", "a group of hikers", "the mayor")
_VERBS = ("carried", "painted", "found", "opened", "cleaned", "forgot", "borrowed", "fixed", "described",
          "counted", "noticed", "followed", "remembered", "delivered", "measured", "repaired", "ordered",
          "watched", "collected", "explained", "visited", "wrapped")
_OBJECTS = ("a wooden box", "the red bicycle", "seven letters", "the broken window", "a basket of apples",
            "the long road", "an empty bottle", "the garden gate", "a silver key", "the morning paper",
            "three blue chairs", "the kitchen table", "a heavy suitcase", "the map of the city", "a paper boat",
            "the last train", "a cup of tea", "the yellow door", "an old photograph", "the stone bridge")
_PLACES = ("near the river", "behind the station", "in the garden", "at the market", "under the bridge",
           "on the hill", "beside the lake", "in the library", "across the street", "inside the barn",
           "at the harbour", "by the window", "in the forest", "on the platform")
_TIMES = ("this morning", "last winter", "before dinner", "after the storm", "every Sunday", "yesterday",
          "at midnight", "in the spring", "an hour ago", "on Friday", "once again", "later that day")
_JOINERS = ("and then", "but", "so", "while", "because", "although", "after that")


def sentence(rng: np.random.Generator, n_words: int) -> str:
    """Varied English text of at least ``n_words`` words, drawn from a word list with ``rng``."""
    clauses: list[str] = []
    words = 0
    while words < n_words:
        parts = [str(rng.choice(_SUBJECTS)), str(rng.choice(_VERBS)), str(rng.choice(_OBJECTS))]
        if rng.random() < 0.6:
            parts.append(str(rng.choice(_PLACES)))
        if rng.random() < 0.4:
            parts.append(str(rng.choice(_TIMES)))
        clause = " ".join(parts)
        clauses.append(clause if not clauses else f"{rng.choice(_JOINERS)} {clause}")
        words += len(" ".join(clauses[-1:]).split())
    text = ", ".join(clauses)
    return text[0].upper() + text[1:] + "."


def words_for(duration_s: float, rate_wpm: float) -> int:
    """Enough words to cover ``duration_s`` of speech at ``rate_wpm`` (with a margin for pauses)."""
    return int(np.ceil(duration_s * rate_wpm / 60.0 * 1.3)) + 3


# ============================================================================================ plan
@dataclass(frozen=True, eq=False)
class Session:
    """One group: a voice in one acoustic scene and one room."""

    split: str
    index: int  # the group's index within its split
    group_id: str
    voice: str
    rate_wpm: int
    pitch: int
    background: str
    scene: dict
    room: np.ndarray = field(repr=False)  # the room impulse response applied to every foreground


@dataclass(frozen=True)
class ClipPlan:
    """Everything random about one clip except the background and foreground waveforms."""

    clip_id: str
    split: str
    group: int  # index of its Session within the split
    clip: int  # index within the group
    label: str
    n_samples: int
    snr_db: float  # speech-to-background (SPEECH) or event-to-background ratio; NaN: background alone
    event: str | None  # the NONSPEECH foreground, or None
    text: str | None  # what the voice says (SPEECH only)
    gain_db: float  # the clip's random gain around level_dbfs


def _speech_counts(clips_per_group: list[int], fraction: float) -> list[int]:
    """SPEECH clips per group: the split total ``round(N * fraction)`` spread in proportion (largest remainder),
    with at least one clip of each class in every group."""
    total_clips = sum(clips_per_group)
    total = int(np.clip(round(total_clips * fraction), len(clips_per_group), total_clips - len(clips_per_group)))
    quotas = [n * total / total_clips for n in clips_per_group]
    counts = [int(np.floor(q)) for q in quotas]
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return [int(np.clip(c, 1, n - 1)) for c, n in zip(counts, clips_per_group)]


def plan_corpus(cfg: SyntheticData, sample_rate: int) -> tuple[dict[str, list[Session]], list[ClipPlan]]:
    """Draw every session and clip of the corpus from ``cfg`` (no audio yet); deterministic in ``cfg``."""
    sessions: dict[str, list[Session]] = {}
    plans: list[ClipPlan] = []
    for s, split in enumerate(SPLITS):
        size = cfg.sizes[split]
        per_group = [size.clips // size.groups + (g < size.clips % size.groups) for g in range(size.groups)]
        speech = _speech_counts(per_group, cfg.speech_fraction)
        sessions[split] = []
        for g in range(size.groups):
            rng = _rng(cfg.seed, s, g)
            family = cfg.backgrounds[split][g % len(cfg.backgrounds[split])]
            scene = BACKGROUNDS[family].scene(rng)
            rt60 = scene.get("rt60_s", float(rng.uniform(0.0, cfg.max_rt60_s)))
            room = room_response(rng, rt60, float(rng.uniform(0.0, 10.0)), sample_rate)
            group_id = f"{split}_s{g:02d}"
            session = Session(split=split, index=g, group_id=group_id,
                              voice=cfg.voices[split][g % len(cfg.voices[split])],
                              rate_wpm=int(rng.integers(150, 196)), pitch=int(rng.integers(35, 66)),
                              background=family, scene=scene, room=room)
            sessions[split].append(session)
            labels = [schema.SPEECH] * speech[g] + [schema.NONSPEECH] * (per_group[g] - speech[g])
            labels = [labels[i] for i in rng.permutation(len(labels))]
            for c, label in enumerate(labels):
                crng = _rng(cfg.seed, s, g, c)
                duration = crng.uniform(cfg.min_duration_s, cfg.max_duration_s)
                snr = float(crng.choice(cfg.snr_db))
                gain = float(crng.uniform(-cfg.level_jitter_db, cfg.level_jitter_db))
                event = text = None
                if label == schema.SPEECH:
                    text = sentence(crng, words_for(duration, session.rate_wpm))
                elif cfg.event_fraction > 0 and crng.random() < cfg.event_fraction:
                    event = str(crng.choice(cfg.events))
                else:
                    snr = float("nan")
                plans.append(ClipPlan(clip_id=f"{group_id}_c{c:03d}", split=split, group=g, clip=c, label=label,
                                      n_samples=max(1, int(round(duration * sample_rate))), snr_db=snr,
                                      event=event, text=text, gain_db=gain))
    return sessions, plans


def check_names(cfg: SyntheticData) -> None:
    """Every background and event name is one this module knows (voices are checked by eSpeak itself)."""
    for split, names in cfg.backgrounds.items():
        for i, name in enumerate(names):
            if name not in BACKGROUNDS:
                raise UserError(f"{KEY}.backgrounds.{split}[{i}]: unknown background {name!r} "
                                f"(known: {', '.join(BACKGROUNDS)})")
    for i, name in enumerate(cfg.events):
        if name not in EVENTS:
            raise UserError(f"{KEY}.events[{i}]: unknown event {name!r} (known: {', '.join(EVENTS)})")


# ========================================================================================== render
def trim_silence(x: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """``x`` without its leading and trailing samples below ``threshold`` times its peak."""
    if len(x) == 0:
        return x
    loud = np.flatnonzero(np.abs(x) > threshold * np.max(np.abs(x)))
    return x[loud[0]: loud[-1] + 1] if len(loud) else x[:0]


def crop_active(x: np.ndarray, length: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """A random window of ``length`` samples of ``x`` that is mostly active (frames above -20 dB of the loudest)."""
    if len(x) <= length:
        return x
    hop = max(1, int(0.01 * sr))
    frames = len(x) // hop
    energy = np.array([np.mean(x[i * hop:(i + 1) * hop] ** 2) for i in range(frames)])
    active = np.concatenate([[0.0], np.cumsum(energy > 0.01 * energy.max())])
    win = max(1, length // hop)
    starts = np.arange(0, max(1, frames - win + 1))
    share = (active[np.minimum(starts + win, frames)] - active[starts]) / win
    good = starts[share >= min(0.6, share.max())]
    start = int(rng.choice(good)) * hop
    start = min(start, len(x) - length)
    return x[start:start + length]


@dataclass(frozen=True, eq=False)
class ClipParts:
    """A clip before mixing: the unit-RMS background and the foreground (voice or event, through the room,
    already scaled to the plan's SNR over ``region``, the samples where the dry segment sits)."""

    background: np.ndarray
    foreground: np.ndarray | None = None
    region: slice | None = None


def render_parts(session: Session, plan: ClipPlan, cfg: SyntheticData, sample_rate: int,
                 voice: np.ndarray | None = None) -> ClipParts:
    """The clip's background and foreground. ``voice``: the eSpeak audio of ``plan.text`` at
    ``sample_rate`` (SPEECH clips only); a window of it (mostly active speech) fills 60-100 % of the clip."""
    rng = _rng(cfg.seed, SPLITS.index(plan.split), plan.group, plan.clip, 1)
    n = plan.n_samples
    background = render_background(session.background, session.scene, rng, n, sample_rate)
    span = max(1, int(round(n * rng.uniform(MIN_FOREGROUND_SHARE, MAX_FOREGROUND_SHARE))))
    if plan.label == schema.SPEECH:
        if voice is None:
            raise ValueError(f"{plan.clip_id}: a SPEECH clip needs its voice audio")
        segment = crop_active(trim_silence(voice), span, rng, sample_rate)
    elif plan.event is not None:
        segment = EVENTS[plan.event](rng, span, sample_rate)
    else:
        return ClipParts(background)
    if len(segment) == 0:
        raise ValueError(f"{plan.clip_id}: the foreground is silent")
    segment = fade(np.asarray(segment, dtype=np.float64), sample_rate)
    offset = int(rng.integers(0, n - len(segment) + 1))
    wet = fftconvolve(segment, session.room)[: n - offset]  # the room's tail may run past the segment
    foreground = np.zeros(n)
    foreground[offset:offset + len(wet)] = wet
    region = slice(offset, offset + len(segment))
    return ClipParts(background, scale_to_snr(background, foreground, region, plan.snr_db), region)


def mix(parts: ClipParts, level_dbfs: float) -> np.ndarray:
    """Background plus foreground, normalised to ``level_dbfs`` RMS (scaled down if a peak would clip)."""
    x = parts.background if parts.foreground is None else parts.background + parts.foreground
    x = unit_rms(x) * db_to_amplitude(level_dbfs)
    return fit_peak(x, 0.99, dtype=np.float32)  # rarely scales (very peaky clicks): keeps the file unclipped


def render_clip(session: Session, plan: ClipPlan, cfg: SyntheticData, sample_rate: int,
                voice: np.ndarray | None = None) -> np.ndarray:
    """The clip's samples at ``cfg.level_dbfs + plan.gain_db`` RMS (see :func:`render_parts`)."""
    return mix(render_parts(session, plan, cfg, sample_rate, voice), cfg.level_dbfs + plan.gain_db)


def source_of(session: Session, plan: ClipPlan) -> str:
    """``synthetic:<background>`` plus ``+voice`` or ``+<event>`` for a foreground."""
    fg = "+voice" if plan.label == schema.SPEECH else (f"+{plan.event}" if plan.event else "")
    return f"synthetic:{session.background}{fg}"


def write_corpus(cfg: SyntheticData, out_dir: str | Path, sample_rate: int) -> dict[str, pd.DataFrame]:
    """Render the whole corpus into ``out_dir/audio/<split>/<clip_id>.wav`` (PCM16 mono) and return one
    metadata frame per split (audio paths relative to ``out_dir``)."""
    out_dir = Path(out_dir)
    check_names(cfg)
    sessions, plans = plan_corpus(cfg, sample_rate)
    speech = [p for p in plans if p.text is not None]
    requests = [SpeechRequest(sessions[p.split][p.group].voice, p.text, sessions[p.split][p.group].rate_wpm,
                              sessions[p.split][p.group].pitch) for p in speech]
    voices = [v for split in SPLITS for v in cfg.voices[split]]
    errors, audio = synthesize_batch(requests, seed=cfg.seed, sample_rate=sample_rate, check_voices=voices)
    for split in SPLITS:
        for i, v in enumerate(cfg.voices[split]):
            if v in errors:
                raise UserError(f"{KEY}.voices.{split}[{i}]: {errors[v]}")
    log.info("synthesised %d utterances with eSpeak NG (%d voices)", len(requests), len(set(voices)))
    voice_of = {p.clip_id: a for p, a in zip(speech, audio)}

    def write_one(plan: ClipPlan) -> dict:  # depends on its plan alone (each clip's generator is keyed by the clip)
        session = sessions[plan.split][plan.group]
        samples = render_clip(session, plan, cfg, sample_rate, voice_of.get(plan.clip_id))
        rel = Path("audio") / plan.split / f"{plan.clip_id}.wav"
        write_audio(out_dir / rel, samples, sample_rate)
        return {schema.CLIP_ID: plan.clip_id, schema.AUDIO_PATH: rel.as_posix(), schema.LABEL: plan.label,
                schema.GROUP_ID: session.group_id, schema.DURATION_S: plan.n_samples / sample_rate,
                schema.SNR_DB: plan.snr_db if plan.label == schema.SPEECH else float("nan"),
                schema.SOURCE: source_of(session, plan)}

    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for plan, row in zip(plans, map_forked(write_one, plans, desc="prepare: rendering clips", unit="clip")):
        rows[plan.split].append(row)
    columns = list(schema.METADATA_REQUIRED + schema.METADATA_OPTIONAL)
    return {split: pd.DataFrame(rows[split], columns=columns) for split in SPLITS}
