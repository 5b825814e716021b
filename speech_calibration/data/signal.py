"""Signal helpers shared by the synthetic corpus and the condition variants: levels, SNR, noise, rooms.

Pure functions of float arrays (mono samples); randomness comes only from the
``numpy.random.Generator`` passed in. Levels: :func:`rms`, :func:`power`, :func:`db_to_amplitude`,
:func:`unit_rms`, :func:`fit_peak`; SNR: :func:`snr_gain`, :func:`scale_to_snr`; sources:
:func:`shaped_noise` (with the magnitude responses :func:`lowpass` and :func:`band`),
:func:`smooth_envelope`, :func:`harmonic_tone`, :func:`fade`; rooms: :func:`decaying_noise` and the
corpus's :func:`room_response`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

LN1000 = 3.0 * np.log(10.0)  # amplitude envelope exp(-LN1000 * t / T60) falls 60 dB at t = T60
FADE_S = 0.01  # fade in/out of every foreground segment


# ------------------------------------------------------------------------------------------- levels
def rms(x: np.ndarray) -> float:
    """Root mean square of ``x`` (in float64); 0 for an empty array."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0


def power(x: np.ndarray, region: slice = slice(None)) -> float:
    """Mean square of ``x[region]`` (in float64)."""
    return float(np.mean(np.square(np.asarray(x)[region], dtype=np.float64)))


def db_to_amplitude(db: float) -> float:
    """``10^(db / 20)``."""
    return float(10.0 ** (db / 20.0))


def unit_rms(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to RMS 1, as float32 (an all-zero ``x`` is returned as it is)."""
    r = rms(x)
    return (x / r).astype(np.float32) if r > 0 else x.astype(np.float32)


def at_rms_of(y: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``y`` scaled to the RMS of ``reference`` (``y`` as it is when it is silent): a variant at its clean clip's
    level, so that the level says nothing of the condition; a scale keeps every SNR and T60 intact."""
    y = np.asarray(y, dtype=np.float64)
    r_y = rms(y)
    return y * (rms(reference) / r_y) if r_y > 0 else y


def fit_peak(y: np.ndarray, peak: float = 0.99, dtype: type = np.float64) -> np.ndarray:
    """Scale ``y`` (as ``dtype``) down, never up, so that ``max |y| <= peak``; a scale keeps every SNR and T60 intact."""
    y = np.asarray(y, dtype=dtype)
    top = float(np.max(np.abs(y))) if y.size else 0.0
    return y * (peak / top) if top > peak else y


# ---------------------------------------------------------------------------------------------- SNR
def snr_gain(p_signal: float, p_noise: float, snr_db: float, *, scale: str = "signal") -> float:
    """The gain that makes ``10 log10(P_signal / P_noise) = snr_db``, applied to one side.

    ``scale="signal"``: it multiplies the signal, ``sqrt(P_noise 10^(snr_db/10) / P_signal)``;
    ``scale="noise"``: it multiplies the noise, ``sqrt(P_signal / (P_noise 10^(snr_db/10)))``.
    Each formula is evaluated in that order, so its floating-point result does not change with the caller.
    """
    ratio = 10.0 ** (snr_db / 10.0)
    if scale == "signal":
        return float(np.sqrt(p_noise * ratio / p_signal))
    if scale == "noise":
        return float(np.sqrt(p_signal / (p_noise * ratio)))
    raise ValueError(f"scale must be 'signal' or 'noise', got {scale!r}")


def scale_to_snr(background: np.ndarray, foreground: np.ndarray, region: slice, snr_db: float) -> np.ndarray:
    """``foreground`` scaled so that its power inside ``region`` is ``snr_db`` above the background's
    power over the whole clip: ``10 log10(mean(fg[region]^2) / mean(bg^2)) = snr_db``.

    Returned unscaled when either power is zero.
    """
    p_bg, p_fg = power(background), power(foreground, region)
    if p_fg <= 0 or p_bg <= 0:
        return foreground
    return foreground * snr_gain(p_fg, p_bg, snr_db, scale="signal")


# ------------------------------------------------------------------------------------------ sources
def shaped_noise(rng: np.random.Generator, n: int, sr: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """White noise coloured by the magnitude response ``gain(f_hz)`` (applied in the frequency domain)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum *= gain(np.fft.rfftfreq(n, 1.0 / sr))
    return np.fft.irfft(spectrum, n)


def lowpass(fc: float) -> Callable[[np.ndarray], np.ndarray]:
    """A second-order low-pass magnitude response ``1 / sqrt(1 + (f / fc)^4)``."""
    return lambda f: 1.0 / np.sqrt(1.0 + (f / fc) ** 4)


def band(lo: float, hi: float) -> Callable[[np.ndarray], np.ndarray]:
    """A second-order band-pass magnitude response (high-pass at ``lo`` times low-pass at ``hi``)."""
    return lambda f: 1.0 / np.sqrt((1.0 + (lo / np.maximum(f, 1.0)) ** 4) * (1.0 + (f / hi) ** 4))


def smooth_envelope(rng: np.random.Generator, n: int, sr: int, rate_hz: float, depth: float) -> np.ndarray:
    """A positive, slowly varying envelope (random values every 1/rate_hz s, interpolated, exponentiated)."""
    knots = max(2, int(np.ceil(n / sr * rate_hz)) + 2)
    values = rng.standard_normal(knots)
    t = np.arange(n) / sr * rate_hz
    return np.exp(depth * np.interp(t, np.arange(knots), values))


def harmonic_tone(t: np.ndarray, f0: np.ndarray | float, amps: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Sum of harmonics of ``f0`` (a number or an instantaneous-frequency track) with random phases."""
    f0 = np.broadcast_to(np.asarray(f0, dtype=np.float64), t.shape)
    dt = t[1] - t[0] if len(t) > 1 else 1.0
    phase = 2 * np.pi * np.cumsum(f0) * dt
    out = np.zeros_like(t)
    for k, a in enumerate(amps, start=1):
        out += a * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return out


def fade(x: np.ndarray, sr: int, seconds: float = FADE_S) -> np.ndarray:
    """Raised-cosine fade in and out (at most a quarter of the segment each)."""
    x = x.copy()
    m = min(int(seconds * sr), len(x) // 4)
    if m > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, m))
        x[:m] *= ramp
        x[-m:] *= ramp[::-1]
    return x


# -------------------------------------------------------------------------------------------- rooms
def decaying_noise(rng: np.random.Generator, n: int, sr: int, t60_s: float, decay: float = LN1000) -> np.ndarray:
    """``n`` samples of white noise under the envelope ``exp(-decay t / t60_s)``: the reverberant tail of a
    synthetic room response (``decay = ln(1000)`` makes the energy fall 60 dB in ``t60_s`` seconds)."""
    t = np.arange(n) / sr
    return rng.standard_normal(n) * np.exp(-decay * t / t60_s)


def room_response(rng: np.random.Generator, rt60_s: float, drr_db: float, sr: int) -> np.ndarray:
    """A synthetic room impulse response: a direct path plus exponentially decaying noise (-60 dB at rt60_s).

    ``drr_db`` is the direct-to-reverberant energy ratio. ``rt60_s`` below 50 ms gives a dry room (a unit impulse).
    The corpus's model; the condition variants use :func:`speech_calibration.data.degrade.synthetic_rir`.
    """
    if rt60_s < 0.05:
        return np.ones(1, np.float32)
    tail = decaying_noise(rng, int(rt60_s * sr), sr, rt60_s, decay=6.91)  # 6.91: ln(1000) = 6.9078 rounded
    tail[0] = 0.0
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / np.sum(tail**2))
    tail[0] = 1.0
    return tail.astype(np.float32)
