"""The embedded synthetic corpus: eSpeak NG voices over generated acoustic scenes, fully deterministic.

Each *group* is one recording session: one eSpeak NG voice (with its own speaking rate and pitch)
in one acoustic background (``BACKGROUNDS``) and one room (a reverberation time). From a session
come SPEECH clips (the voice over the session's background at an SNR drawn from ``snr_db``) and
NONSPEECH clips (the background alone, or the background plus a non-speech event from ``EVENTS``:
tones, chirps, click trains, beeps, melodies).

The signal is kept honest, so a model has to hear the voice to tell the classes apart:

- both classes share every session's background family, scene parameters and room;
- durations come from one distribution, ``uniform(min_duration_s, max_duration_s)``, for both classes;
- voices and events alike fill 60-100 % of the clip, go through the same room, and sit at a
  foreground-to-background ratio drawn from the same ``snr_db`` list;
- every clip is normalised to ``level_dbfs`` RMS plus a uniform random gain of ``+-level_jitter_db``.

Determinism: every random draw comes from ``numpy.random.SeedSequence(seed, spawn_key=...)`` keyed by
(split, group, clip), so a clip does not change when another does. libespeak-ng is a global C library
whose output depends on what it synthesised before (its noise generator and oscillator state carry
over between calls), so :func:`synthesize_batch` runs all synthesis of a corpus, in a fixed order, in
one fresh child process, with the library initialised once there and seeded: the same params give
byte-identical audio in every run.

Public functions: :func:`plan_corpus` (params -> sessions and clip plans, no audio),
:func:`synthesize_batch` (texts -> eSpeak audio), :func:`render_clip` (one clip's samples),
:func:`write_corpus` (all of it, into a folder), plus the building blocks ``BACKGROUNDS``, ``EVENTS``,
:func:`sentence`, :func:`room_response`, :func:`scale_to_snr`,
:func:`render_parts` and :func:`mix`.
"""
from __future__ import annotations

import ctypes
import logging
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soxr
from scipy.signal import fftconvolve
from tqdm import tqdm

from speech_calibration.data import schema
from speech_calibration.data.audio import write_audio
from speech_calibration.errors import UserError
from speech_calibration.params import SPLITS, SyntheticData

log = logging.getLogger(__name__)

KEY = "data.synthetic"  # where these params live in params.yaml, for error messages
ESPEAK_RATE = 22050  # libespeak-ng's output rate
FADE_S = 0.01  # fade in/out of every foreground segment
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


# ========================================================================================= eSpeak NG
class Espeak:
    """libespeak-ng (from the ``espeakng-loader`` wheel) through ctypes, initialised once per process.

    eSpeak is one global C library per process, so there is one instance (:meth:`get`) and every call
    holds a lock. Output is int16 at 22.05 kHz; :meth:`synthesize` returns float32 at that rate.
    """

    _instance: Espeak | None = None
    _lock = threading.Lock()

    AUDIO_OUTPUT_SYNCHRONOUS = 2
    INITIALIZE_DONT_EXIT = 0x8000
    POS_CHARACTER = 1
    CHARS_UTF8 = 1
    RATE, PITCH = 1, 3  # espeak_PARAMETER

    def __init__(self) -> None:
        import espeakng_loader

        self.data_path = Path(espeakng_loader.get_data_path())
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        rate = lib.espeak_Initialize(self.AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(),
                                     self.INITIALIZE_DONT_EXIT)
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"libespeak-ng failed to initialise (returned {rate}); reinstall espeakng-loader")
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        self._callback = callback_type(self._collect)  # keep a reference: the library holds only the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self.lib = lib

    @classmethod
    def get(cls) -> Espeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, wav, n: int, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0: go on synthesising

    def voice_error(self, voice: str) -> str | None:
        """Why ``voice`` ("language+variant", e.g. "en-us+f3") is not usable, or None."""
        language, _, variant = voice.partition("+")
        with self._lock:
            if self.lib.espeak_SetVoiceByName(language.encode()) != 0:
                return f"eSpeak NG has no language voice {language!r} (try en, en-us, en-gb-scotland, en-029)"
        if variant and not (self.data_path / "voices" / "!v" / variant).is_file():
            return f"eSpeak NG has no voice variant {variant!r} (try m1..m7, f1..f5, croak, klatt)"
        return None

    def seed(self, seed: int) -> None:
        with self._lock:
            self.lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)

    def synthesize(self, voice: str, text: str, rate_wpm: int = 175, pitch: int = 50) -> np.ndarray:
        """``text`` spoken by ``voice`` as float32 samples at 22.05 kHz."""
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise UserError(f"eSpeak NG has no voice {voice!r}")
            self.lib.espeak_SetParameter(self.RATE, int(rate_wpm), 0)
            self.lib.espeak_SetParameter(self.PITCH, int(pitch), 0)
            self._chunks = []
            data = text.encode("utf-8")
            status = self.lib.espeak_Synth(data, len(data) + 1, 0, self.POS_CHARACTER, 0, self.CHARS_UTF8, None, None)
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r}")
            chunks, self._chunks = self._chunks, []
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return pcm.astype(np.float32) / 32768.0


@dataclass(frozen=True)
class SpeechRequest:
    voice: str
    text: str
    rate_wpm: int
    pitch: int


def _synthesize_in_this_process(seed: int, voices: Sequence[str], requests: Sequence[SpeechRequest],
                                sample_rate: int) -> tuple[dict[str, str], list[np.ndarray]]:
    engine = Espeak.get()
    errors = {v: e for v in dict.fromkeys(voices) if (e := engine.voice_error(v))}
    if errors:
        return errors, []
    engine.seed(seed)
    out = []
    for req in requests:
        audio = engine.synthesize(req.voice, req.text, req.rate_wpm, req.pitch)
        out.append(soxr.resample(audio, ESPEAK_RATE, sample_rate, quality="HQ").astype(np.float32))
    return {}, out


def synthesize_batch(requests: Sequence[SpeechRequest], *, seed: int, sample_rate: int,
                     check_voices: Sequence[str] = ()) -> tuple[dict[str, str], list[np.ndarray]]:
    """Speak every request, in order, in one fresh child process; return (voice errors, audio at ``sample_rate``).

    A fresh process makes the result independent of anything synthesised before in this process
    (libespeak-ng keeps state between calls). ``check_voices`` are validated first; if any is
    unusable, the errors come back as ``{voice: reason}`` and nothing is synthesised. The child is a
    plain ``python -c`` (arguments and results pickled over its stdin and stdout), so this works from
    scripts, notebooks and tests alike.
    """
    payload = pickle.dumps((seed, list(check_voices), list(requests), sample_rate))
    package_root = str(Path(__file__).resolve().parent.parent)
    code = f"import sys; sys.path.insert(0, {package_root!r}); from stages.synth import _worker; _worker()"
    proc = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"the eSpeak NG worker process failed (exit {proc.returncode}): {tail[0]}")
    return pickle.loads(proc.stdout)


def _worker() -> None:
    """The child side of :func:`synthesize_batch`: pickled arguments on stdin, pickled result on stdout."""
    seed, voices, requests, sample_rate = pickle.loads(sys.stdin.buffer.read())
    result = _synthesize_in_this_process(seed, voices, requests, sample_rate)
    sys.stdout.buffer.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()


# ==================================================================================== signal tools
def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return (x / rms).astype(np.float32) if rms > 0 else x.astype(np.float32)


def _shaped_noise(rng: np.random.Generator, n: int, sr: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """White noise coloured by the magnitude response ``gain(f_hz)`` (applied in the frequency domain)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum *= gain(np.fft.rfftfreq(n, 1.0 / sr))
    return np.fft.irfft(spectrum, n)


def _lowpass(fc: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda f: 1.0 / np.sqrt(1.0 + (f / fc) ** 4)


def _band(lo: float, hi: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda f: 1.0 / np.sqrt((1.0 + (lo / np.maximum(f, 1.0)) ** 4) * (1.0 + (f / hi) ** 4))


def _smooth_envelope(rng: np.random.Generator, n: int, sr: int, rate_hz: float, depth: float) -> np.ndarray:
    """A positive, slowly varying envelope (random values every 1/rate_hz s, interpolated, exponentiated)."""
    knots = max(2, int(np.ceil(n / sr * rate_hz)) + 2)
    values = rng.standard_normal(knots)
    t = np.arange(n) / sr * rate_hz
    return np.exp(depth * np.interp(t, np.arange(knots), values))


def _harmonic_tone(t: np.ndarray, f0: np.ndarray | float, amps: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Sum of harmonics of ``f0`` (a number or an instantaneous-frequency track) with random phases."""
    f0 = np.broadcast_to(np.asarray(f0, dtype=np.float64), t.shape)
    dt = t[1] - t[0] if len(t) > 1 else 1.0
    phase = 2 * np.pi * np.cumsum(f0) * dt
    out = np.zeros_like(t)
    for k, a in enumerate(amps, start=1):
        out += a * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return out


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


def fade(x: np.ndarray, sr: int, seconds: float = FADE_S) -> np.ndarray:
    """Raised-cosine fade in and out (at most a quarter of the segment each)."""
    x = x.copy()
    m = min(int(seconds * sr), len(x) // 4)
    if m > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, m))
        x[:m] *= ramp
        x[-m:] *= ramp[::-1]
    return x


def room_response(rng: np.random.Generator, rt60_s: float, drr_db: float, sr: int) -> np.ndarray:
    """A synthetic room impulse response: a direct path plus exponentially decaying noise (-60 dB at rt60_s).

    ``drr_db`` is the direct-to-reverberant energy ratio. ``rt60_s`` below 50 ms gives a dry room (a unit impulse).
    """
    if rt60_s < 0.05:
        return np.ones(1, np.float32)
    t = np.arange(int(rt60_s * sr)) / sr
    tail = rng.standard_normal(len(t)) * np.exp(-6.91 * t / rt60_s)  # 6.91 = ln(1000): -60 dB at rt60_s
    tail[0] = 0.0
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / np.sum(tail**2))
    tail[0] = 1.0
    return tail.astype(np.float32)


def scale_to_snr(background: np.ndarray, foreground: np.ndarray, region: slice, snr_db: float) -> np.ndarray:
    """``foreground`` scaled so that its power inside ``region`` is ``snr_db`` above the background's
    power over the whole clip: ``10 log10(mean(fg[region]^2) / mean(bg^2)) = snr_db``."""
    p_bg = float(np.mean(np.square(background, dtype=np.float64)))
    p_fg = float(np.mean(np.square(foreground[region], dtype=np.float64)))
    if p_fg <= 0 or p_bg <= 0:
        return foreground
    return foreground * np.sqrt(p_bg * 10.0 ** (snr_db / 10.0) / p_fg)


# ===================================================================================== backgrounds
# Each scene has session parameters (drawn once per group, so every clip of a session shares the
# scene) and a renderer ``(rng, n, sr, scene) -> samples``; the caller normalises to unit RMS.
def _scene_white(rng):
    return {"tilt": float(rng.uniform(-0.3, 0.3))}


def _render_white(rng, n, sr, s):
    return _shaped_noise(rng, n, sr, lambda f: (np.maximum(f, 50.0) / 1000.0) ** s["tilt"])


def _scene_pink(rng):
    return {"lowpass_hz": float(rng.uniform(3000, 7500))}


def _render_pink(rng, n, sr, s):
    lp = _lowpass(s["lowpass_hz"])
    return _shaped_noise(rng, n, sr, lambda f: lp(f) / np.sqrt(np.maximum(f, 20.0)))


def _scene_brown(rng):
    return {"corner_hz": float(rng.uniform(20, 80))}


def _render_brown(rng, n, sr, s):
    return _shaped_noise(rng, n, sr, lambda f: 1.0 / np.maximum(f, s["corner_hz"]))


def _scene_hum(rng):
    decay = float(rng.uniform(0.15, 0.5))
    return {"mains_hz": float(rng.choice([50.0, 60.0])), "harmonics": [float(np.exp(-decay * k) * rng.uniform(0.3, 1.0))
                                                                        for k in range(12)],
            "floor_db": float(rng.uniform(-22, -12))}


def _render_hum(rng, n, sr, s):
    t = np.arange(n) / sr
    wobble = 1.0 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 2 * np.pi))
    hum = _unit_rms(_harmonic_tone(t, s["mains_hz"], s["harmonics"], rng) * wobble)
    floor = _unit_rms(_render_pink(rng, n, sr, {"lowpass_hz": 6000.0}))
    return hum + 10.0 ** (s["floor_db"] / 20.0) * floor


_MAJOR, _MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)


def _scene_music(rng):
    return {"root": int(rng.integers(45, 58)), "scale": list(_MAJOR if rng.random() < 0.5 else _MINOR),
            "bpm": float(rng.uniform(70, 130)), "progression": [int(d) for d in rng.choice(7, size=4)],
            "timbre": [float(0.6 ** k * rng.uniform(0.5, 1.0)) for k in range(6)]}


def _render_music(rng, n, sr, s):
    """A chord progression on a soft additive-synth pad plus a bass line; the clip starts mid-song."""
    scale, root = s["scale"], s["root"]
    chord_s = 2 * 60.0 / s["bpm"]  # a chord every two beats
    start = rng.uniform(0, 60.0)
    out = np.zeros(n)
    first = int(start // chord_s)
    for c in range(first, first + int(np.ceil(n / sr / chord_s)) + 2):
        t0 = c * chord_s - start
        i0, i1 = max(0, int(round(t0 * sr))), min(n, int(round((t0 + chord_s) * sr)))
        if i1 <= i0:
            continue
        t = np.arange(i0, i1) / sr - t0  # time since the chord began
        env = np.minimum(1.0, t / 0.03) * np.exp(-t / (0.8 * chord_s))
        degree = s["progression"][c % len(s["progression"])]
        seg = np.zeros(i1 - i0)
        for step in (0, 2, 4):
            d = degree + step
            note = root + 12 + scale[d % 7] + 12 * (d // 7)
            seg += _harmonic_tone(t, _midi_hz(note), s["timbre"], rng)
        seg += 1.5 * _harmonic_tone(t, _midi_hz(root - 12 + scale[degree]), s["timbre"][:3], rng)
        out[i0:i1] += env * seg
    return out + 0.03 * _unit_rms(_render_pink(rng, n, sr, {"lowpass_hz": 5000.0}))


def _scene_rain(rng):
    return {"drops_per_s": float(rng.uniform(400, 2000)), "bright_hz": float(rng.uniform(2500, 6000)),
            "bed_db": float(rng.uniform(-10, -3))}


def _render_rain(rng, n, sr, s):
    """Many small droplets (decaying noise bursts at Poisson times) over a high-passed noise bed."""
    drops = np.zeros(n)
    count = rng.poisson(s["drops_per_s"] * n / sr)
    drops[rng.integers(0, n, size=count)] += rng.lognormal(0.0, 0.8, size=count)
    kernel_t = np.arange(int(0.004 * sr)) / sr
    kernel = rng.standard_normal(len(kernel_t)) * np.exp(-kernel_t / 0.0008)
    drops = fftconvolve(drops, kernel)[:n]
    bright = _band(400.0, s["bright_hz"])
    drops = np.fft.irfft(np.fft.rfft(drops) * bright(np.fft.rfftfreq(n, 1.0 / sr)), n)
    bed = _shaped_noise(rng, n, sr, _band(800.0, s["bright_hz"]))
    return _unit_rms(drops) + 10.0 ** (s["bed_db"] / 20.0) * _unit_rms(bed)


def _scene_fan(rng):
    return {"lowpass_hz": float(rng.uniform(600, 2500)), "blade_hz": float(rng.uniform(80, 240)),
            "blade_db": float(rng.uniform(-18, -8))}


def _render_fan(rng, n, sr, s):
    t = np.arange(n) / sr
    air = _unit_rms(_shaped_noise(rng, n, sr, _lowpass(s["lowpass_hz"])))
    blade = _unit_rms(_harmonic_tone(t, s["blade_hz"] * (1 + 0.002 * rng.standard_normal()), [1.0, 0.5, 0.25], rng))
    return air + 10.0 ** (s["blade_db"] / 20.0) * blade


def _scene_wind(rng):
    centre = float(rng.uniform(200, 700))
    return {"lo_hz": centre / 2.5, "hi_hz": centre * 2.5, "gust_hz": float(rng.uniform(0.15, 0.6)),
            "depth": float(rng.uniform(0.4, 0.9))}


def _render_wind(rng, n, sr, s):
    noise = _shaped_noise(rng, n, sr, _band(s["lo_hz"], s["hi_hz"]))
    return noise * _smooth_envelope(rng, n, sr, s["gust_hz"], s["depth"])


def _scene_room(rng):
    return {"lowpass_hz": float(rng.uniform(250, 700)), "hvac_hz": float(rng.uniform(100, 130)),
            "hvac_db": float(rng.uniform(-20, -10)), "rt60_s": float(rng.uniform(0.5, 1.0))}


def _render_room(rng, n, sr, s):
    """Room tone: dark air-conditioning noise and a faint hum (and, through the session, a long reverb)."""
    t = np.arange(n) / sr
    air = _unit_rms(_shaped_noise(rng, n, sr, lambda f: _lowpass(s["lowpass_hz"])(f) / np.sqrt(np.maximum(f, 30.0))))
    hvac = _unit_rms(_harmonic_tone(t, s["hvac_hz"], [1.0, 0.3], rng))
    return air + 10.0 ** (s["hvac_db"] / 20.0) * hvac


def _scene_traffic(rng):
    return {"rumble_hz": float(rng.uniform(80, 250)), "cars_per_s": float(rng.uniform(0.1, 0.4)),
            "pass_s": float(rng.uniform(1.5, 4.0))}


def _render_traffic(rng, n, sr, s):
    """Low rumble plus cars passing by (Gaussian swells of band-limited noise)."""
    t = np.arange(n) / sr
    rumble = _unit_rms(_shaped_noise(rng, n, sr, _lowpass(s["rumble_hz"])))
    duration = n / sr
    margin = 2 * s["pass_s"]
    count = rng.poisson(s["cars_per_s"] * (duration + 2 * margin)) + 1
    centres = rng.uniform(-margin, duration + margin, size=count)
    swell = np.zeros(n)
    for c, gain in zip(centres, rng.uniform(0.5, 2.0, size=count)):
        swell += gain * np.exp(-0.5 * ((t - c) / (s["pass_s"] / 2)) ** 2)
    cars = _unit_rms(_shaped_noise(rng, n, sr, _band(120.0, 1800.0)))
    return rumble + cars * (0.3 + swell)


@dataclass(frozen=True)
class Family:
    scene: Callable[[np.random.Generator], dict]
    render: Callable[[np.random.Generator, int, int, dict], np.ndarray]


BACKGROUNDS: dict[str, Family] = {
    "white": Family(_scene_white, _render_white),  # white noise with a slight spectral tilt
    "pink": Family(_scene_pink, _render_pink),  # 1/f noise
    "brown": Family(_scene_brown, _render_brown),  # 1/f^2 noise
    "hum": Family(_scene_hum, _render_hum),  # mains hum (50 or 60 Hz and harmonics) over a noise floor
    "music": Family(_scene_music, _render_music),  # chord progression and bass (instrumental)
    "rain": Family(_scene_rain, _render_rain),  # droplets over a bright noise bed
    "fan": Family(_scene_fan, _render_fan),  # ventilation: low-passed air noise and blade-pass tone
    "wind": Family(_scene_wind, _render_wind),  # band-limited noise with slow gusts
    "room": Family(_scene_room, _render_room),  # dark room tone, faint hvac hum, long reverberation
    "traffic": Family(_scene_traffic, _render_traffic),  # rumble and passing cars
}


def render_background(family: str, scene: dict, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """``n`` samples of a session's background at unit RMS."""
    return _unit_rms(BACKGROUNDS[family].render(rng, n, sr, scene))


# ========================================================================================== events
def _event_tone(rng, n, sr):
    t = np.arange(n) / sr
    f0 = rng.uniform(200, 2000)
    tremolo = 1.0 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t)
    return _harmonic_tone(t, f0, [1.0, *rng.uniform(0, 0.5, size=int(rng.integers(0, 4)))], rng) * tremolo


def _event_chirp(rng, n, sr):
    """Repeated frequency sweeps (up or down, exponential), with gaps."""
    out = np.zeros(n)
    sweep = int(rng.uniform(0.1, 0.8) * sr)
    gap = int(rng.uniform(0.02, 0.3) * sr)
    f_a, f_b = rng.uniform(300, 1500), rng.uniform(1500, 4000)
    if rng.random() < 0.5:
        f_a, f_b = f_b, f_a
    start = 0
    while start < n:
        m = min(sweep, n - start)
        t = np.arange(m) / sr
        track = f_a * (f_b / f_a) ** (t / (sweep / sr))
        out[start:start + m] = fade(_harmonic_tone(t, track, [1.0, 0.3], rng), sr, 0.005)
        start += sweep + gap
    return out


def _event_clicks(rng, n, sr):
    """A click train at 2-15 clicks per second (a syllable-like rhythm that is not speech)."""
    rate = rng.uniform(2, 15)
    times = np.cumsum(rng.uniform(0.7, 1.3, size=int(n / sr * rate) + 2) / rate) - rng.uniform(0, 1 / rate)
    impulses = np.zeros(n)
    idx = (times[(times >= 0) & (times < n / sr)] * sr).astype(int)
    impulses[idx] = rng.uniform(0.5, 1.0, size=len(idx))
    kt = np.arange(int(0.01 * sr)) / sr
    kernel = rng.standard_normal(len(kt)) * np.exp(-kt / rng.uniform(0.0005, 0.003))
    return fftconvolve(impulses, kernel)[:n]


def _event_beeps(rng, n, sr):
    """A pulsed tone (an alarm or a reversing truck): 2-8 beeps per second."""
    t = np.arange(n) / sr
    rate, duty = rng.uniform(2, 8), rng.uniform(0.3, 0.7)
    gate = ((t * rate) % 1.0) < duty
    gate = np.convolve(gate.astype(float), np.hanning(int(0.006 * sr) + 1) / (0.003 * sr), mode="same")
    return _harmonic_tone(t, rng.uniform(500, 3000), [1.0, 0.2], rng) * gate


def _event_melody(rng, n, sr):
    """A phrase of notes (3-8 per second) on a plucked additive synth."""
    out = np.zeros(n)
    root = int(rng.integers(55, 75))
    scale = _MAJOR if rng.random() < 0.5 else _MINOR
    note_s = 1.0 / rng.uniform(3, 8)
    timbre = [0.6 ** k for k in range(5)]
    i0, degree = 0, int(rng.integers(0, 7))
    while i0 < n:
        m = min(int(note_s * sr), n - i0)
        t = np.arange(m) / sr
        degree = int(np.clip(degree + rng.integers(-2, 3), -3, 10))
        note = root + scale[degree % 7] + 12 * (degree // 7)
        env = np.minimum(1.0, t / 0.01) * np.exp(-t / (0.5 * note_s))
        out[i0:i0 + m] = env * _harmonic_tone(t, _midi_hz(note), timbre, rng)
        i0 += m
    return out


EVENTS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "tone": _event_tone,
    "chirp": _event_chirp,
    "clicks": _event_clicks,
    "beeps": _event_beeps,
    "melody": _event_melody,
}


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
    x = _unit_rms(x) * 10.0 ** (level_dbfs / 20.0)
    peak = float(np.max(np.abs(x)))
    if peak > 0.99:  # rare (very peaky clicks): keep the file unclipped
        x = x * (0.99 / peak)
    return x.astype(np.float32)


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
    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for plan in tqdm(plans, desc="prepare: rendering clips", unit="clip", leave=False):
        session = sessions[plan.split][plan.group]
        samples = render_clip(session, plan, cfg, sample_rate, voice_of.get(plan.clip_id))
        rel = Path("audio") / plan.split / f"{plan.clip_id}.wav"
        write_audio(out_dir / rel, samples, sample_rate)
        rows[plan.split].append({
            schema.CLIP_ID: plan.clip_id, schema.AUDIO_PATH: rel.as_posix(), schema.LABEL: plan.label,
            schema.GROUP_ID: session.group_id, schema.DURATION_S: plan.n_samples / sample_rate,
            schema.SNR_DB: plan.snr_db if plan.label == schema.SPEECH else float("nan"),
            schema.SOURCE: source_of(session, plan)})
    columns = list(schema.METADATA_REQUIRED + schema.METADATA_OPTIONAL)
    return {split: pd.DataFrame(rows[split], columns=columns) for split in SPLITS}
