"""The synthetic corpus's sounds other than speech: acoustic backgrounds and non-speech events.

``BACKGROUNDS`` maps a family name to a :class:`Family`: ``scene(rng)`` draws a session's scene
parameters once per group (so every clip of a session shares them) and ``render(rng, n, sr, scene)``
renders samples; :func:`render_background` normalises them to unit RMS. ``EVENTS`` maps an event
name to ``(rng, n, sr) -> samples``, the NONSPEECH foregrounds: tones, chirps, click trains, beeps,
melodies. All randomness comes from the generator passed in.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

from speech_calibration.data.signal import (
    band,
    db_to_amplitude,
    fade,
    harmonic_tone,
    lowpass,
    shaped_noise,
    smooth_envelope,
    unit_rms,
)

_MAJOR, _MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


# ===================================================================================== backgrounds
# Each scene has session parameters (drawn once per group, so every clip of a session shares the
# scene) and a renderer ``(rng, n, sr, scene) -> samples``; the caller normalises to unit RMS.
def _scene_white(rng):
    return {"tilt": float(rng.uniform(-0.3, 0.3))}


def _render_white(rng, n, sr, s):
    return shaped_noise(rng, n, sr, lambda f: (np.maximum(f, 50.0) / 1000.0) ** s["tilt"])


def _scene_pink(rng):
    return {"lowpass_hz": float(rng.uniform(3000, 7500))}


def _render_pink(rng, n, sr, s):
    lp = lowpass(s["lowpass_hz"])
    return shaped_noise(rng, n, sr, lambda f: lp(f) / np.sqrt(np.maximum(f, 20.0)))


def _scene_brown(rng):
    return {"corner_hz": float(rng.uniform(20, 80))}


def _render_brown(rng, n, sr, s):
    return shaped_noise(rng, n, sr, lambda f: 1.0 / np.maximum(f, s["corner_hz"]))


def _scene_hum(rng):
    decay = float(rng.uniform(0.15, 0.5))
    return {"mains_hz": float(rng.choice([50.0, 60.0])), "harmonics": [float(np.exp(-decay * k) * rng.uniform(0.3, 1.0))
                                                                        for k in range(12)],
            "floor_db": float(rng.uniform(-22, -12))}


def _render_hum(rng, n, sr, s):
    t = np.arange(n) / sr
    wobble = 1.0 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 2 * np.pi))
    hum = unit_rms(harmonic_tone(t, s["mains_hz"], s["harmonics"], rng) * wobble)
    floor = unit_rms(_render_pink(rng, n, sr, {"lowpass_hz": 6000.0}))
    return hum + db_to_amplitude(s["floor_db"]) * floor


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
            seg += harmonic_tone(t, _midi_hz(note), s["timbre"], rng)
        seg += 1.5 * harmonic_tone(t, _midi_hz(root - 12 + scale[degree]), s["timbre"][:3], rng)
        out[i0:i1] += env * seg
    return out + 0.03 * unit_rms(_render_pink(rng, n, sr, {"lowpass_hz": 5000.0}))


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
    bright = band(400.0, s["bright_hz"])
    drops = np.fft.irfft(np.fft.rfft(drops) * bright(np.fft.rfftfreq(n, 1.0 / sr)), n)
    bed = shaped_noise(rng, n, sr, band(800.0, s["bright_hz"]))
    return unit_rms(drops) + db_to_amplitude(s["bed_db"]) * unit_rms(bed)


def _scene_fan(rng):
    return {"lowpass_hz": float(rng.uniform(600, 2500)), "blade_hz": float(rng.uniform(80, 240)),
            "blade_db": float(rng.uniform(-18, -8))}


def _render_fan(rng, n, sr, s):
    t = np.arange(n) / sr
    air = unit_rms(shaped_noise(rng, n, sr, lowpass(s["lowpass_hz"])))
    blade = unit_rms(harmonic_tone(t, s["blade_hz"] * (1 + 0.002 * rng.standard_normal()), [1.0, 0.5, 0.25], rng))
    return air + db_to_amplitude(s["blade_db"]) * blade


def _scene_wind(rng):
    centre = float(rng.uniform(200, 700))
    return {"lo_hz": centre / 2.5, "hi_hz": centre * 2.5, "gust_hz": float(rng.uniform(0.15, 0.6)),
            "depth": float(rng.uniform(0.4, 0.9))}


def _render_wind(rng, n, sr, s):
    noise = shaped_noise(rng, n, sr, band(s["lo_hz"], s["hi_hz"]))
    return noise * smooth_envelope(rng, n, sr, s["gust_hz"], s["depth"])


def _scene_room(rng):
    return {"lowpass_hz": float(rng.uniform(250, 700)), "hvac_hz": float(rng.uniform(100, 130)),
            "hvac_db": float(rng.uniform(-20, -10)), "rt60_s": float(rng.uniform(0.5, 1.0))}


def _render_room(rng, n, sr, s):
    """Room tone: dark air-conditioning noise and a faint hum (and, through the session, a long reverb)."""
    t = np.arange(n) / sr
    air = unit_rms(shaped_noise(rng, n, sr, lambda f: lowpass(s["lowpass_hz"])(f) / np.sqrt(np.maximum(f, 30.0))))
    hvac = unit_rms(harmonic_tone(t, s["hvac_hz"], [1.0, 0.3], rng))
    return air + db_to_amplitude(s["hvac_db"]) * hvac


def _scene_traffic(rng):
    return {"rumble_hz": float(rng.uniform(80, 250)), "cars_per_s": float(rng.uniform(0.1, 0.4)),
            "pass_s": float(rng.uniform(1.5, 4.0))}


def _render_traffic(rng, n, sr, s):
    """Low rumble plus cars passing by (Gaussian swells of band-limited noise)."""
    t = np.arange(n) / sr
    rumble = unit_rms(shaped_noise(rng, n, sr, lowpass(s["rumble_hz"])))
    duration = n / sr
    margin = 2 * s["pass_s"]
    count = rng.poisson(s["cars_per_s"] * (duration + 2 * margin)) + 1
    centres = rng.uniform(-margin, duration + margin, size=count)
    swell = np.zeros(n)
    for c, gain in zip(centres, rng.uniform(0.5, 2.0, size=count)):
        swell += gain * np.exp(-0.5 * ((t - c) / (s["pass_s"] / 2)) ** 2)
    cars = unit_rms(shaped_noise(rng, n, sr, band(120.0, 1800.0)))
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
    return unit_rms(BACKGROUNDS[family].render(rng, n, sr, scene))


# ========================================================================================== events
def _event_tone(rng, n, sr):
    t = np.arange(n) / sr
    f0 = rng.uniform(200, 2000)
    tremolo = 1.0 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t)
    return harmonic_tone(t, f0, [1.0, *rng.uniform(0, 0.5, size=int(rng.integers(0, 4)))], rng) * tremolo


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
        out[start:start + m] = fade(harmonic_tone(t, track, [1.0, 0.3], rng), sr, 0.005)
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
    return harmonic_tone(t, rng.uniform(500, 3000), [1.0, 0.2], rng) * gate


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
        out[i0:i0 + m] = env * harmonic_tone(t, _midi_hz(note), timbre, rng)
        i0 += m
    return out


EVENTS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "tone": _event_tone,
    "chirp": _event_chirp,
    "clicks": _event_clicks,
    "beeps": _event_beeps,
    "melody": _event_melody,
}
