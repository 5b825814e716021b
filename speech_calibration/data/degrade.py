"""Pure signal transforms for the robustness variants: duration cut, additive noise, reverberation, band-limiting.

Every function takes float arrays (mono samples) and returns arrays; randomness comes only from the
``numpy.random.Generator`` passed in, so a variant is a deterministic function of its seed.

- **Duration**: a segment of exactly ``round(ms * rate / 1000)`` samples, the clip's loudest (:func:`loudest_cut`:
  a cut from the centre could fall in a pause between words and still carry the SPEECH label), placed in the
  middle of a fixed container whose remaining samples are low-level white noise (the segment itself is left
  untouched).
- **SNR**: white noise scaled so that ``10 log10(P_signal / P_noise) = snr_db`` exactly, both powers
  measured over the *signal segment* only (see :func:`signal_segment`), so leading or trailing
  silence does not lower the signal power.
- **Reverberation**: convolution with a synthetic room impulse response, white noise under the
  envelope ``exp(-3 ln(10) t / T60)`` (the energy falls 60 dB in T60 seconds), unit energy.
  :func:`schroeder_t60` measures T60 back from a response by Schroeder backward integration.
- **Band-limiting**: a Butterworth filter (``scipy.signal.butter``, second-order sections) applied
  once, causally (``sosfilt``), so the magnitude response is exactly ``|H(f)|`` of the design
  (``filtfilt`` would square it).

Levels, SNR gains and the decaying-noise tail come from :mod:`speech_calibration.data.signal`, shared with
the synthetic corpus.
"""
from __future__ import annotations

import numpy as np
from scipy import signal

from speech_calibration.data.signal import (
    at_rms_of,
    db_to_amplitude,
    decaying_noise,
    power,
    snr_gain,
)


# ------------------------------------------------------------------------------------------ duration
def n_samples(duration_ms: float, sample_rate: int) -> int:
    return int(round(duration_ms * sample_rate / 1000.0))


def loudest_cut(x: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """The ``n`` consecutive samples of ``x`` with the most energy (sum of squares) and their start index; among
    windows within 1e-9 of the most, the one whose start is nearest ``(len(x) - n) // 2`` (a clip of digital
    silence: its centre). The foreground, speech or a sound event, is what the window holds for both classes."""
    x = np.asarray(x)
    if not 0 < n <= len(x):
        raise ValueError(f"cannot cut {n} samples from a clip of {len(x)} samples")
    cumulative = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
    energy = cumulative[n:] - cumulative[:-n]  # of x[s:s + n], s = 0 .. len(x) - n
    loudest = np.flatnonzero(energy >= energy.max() * (1.0 - 1e-9))
    start = int(loudest[np.argmin(np.abs(loudest - (len(x) - n) // 2))])
    return x[start:start + n], start


def place_in_container(segment: np.ndarray, length: int, noise_rms: float,
                       rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """``segment`` in the middle of ``length`` samples (start ``(length - n) // 2``), white noise of RMS ``noise_rms``
    around it."""
    segment = np.asarray(segment, dtype=np.float64)
    n = len(segment)
    if n > length:
        raise ValueError(f"a segment of {n} samples does not fit in a container of {length} samples")
    out = rng.standard_normal(length) * noise_rms
    start = (length - n) // 2
    out[start:start + n] = segment
    return out, start


def duration_variant(x: np.ndarray, sample_rate: int, duration_ms: float, container_s: float,
                     noise_dbfs: float, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """The loudest ``duration_ms`` of ``x`` (:func:`loudest_cut`) in a ``container_s`` container; returns (audio,
    start in the container, n)."""
    n = n_samples(duration_ms, sample_rate)
    segment, _ = loudest_cut(x, n)
    out, start = place_in_container(segment, n_samples(1000.0 * container_s, sample_rate),
                                    db_to_amplitude(noise_dbfs), rng)
    return out, start, n


# ---------------------------------------------------------------------------------------------- SNR
def signal_segment(x: np.ndarray, sample_rate: int, floor_db: float = 40.0, frame_ms: float = 10.0) -> slice:
    """The span from the first to the last frame whose energy is within ``floor_db`` of the loudest frame.

    Leading and trailing silence (or near-silence) is left out; everything between is "signal".
    A clip of digital silence gives the whole clip.
    """
    x = np.asarray(x, dtype=np.float64)
    frame = max(1, n_samples(frame_ms, sample_rate))
    n_frames = max(1, int(np.ceil(len(x) / frame)))
    padded = np.zeros(n_frames * frame)
    padded[:len(x)] = x
    energy = np.mean(padded.reshape(n_frames, frame) ** 2, axis=1)
    top = energy.max()
    if top <= 0:
        return slice(0, len(x))
    active = np.flatnonzero(energy >= top * 10.0 ** (-floor_db / 10.0))
    return slice(int(active[0]) * frame, min(len(x), (int(active[-1]) + 1) * frame))


def add_noise_at_snr(x: np.ndarray, snr_db: float, rng: np.random.Generator,
                     segment: slice | None = None) -> np.ndarray:
    """``x`` plus white noise over the whole clip, scaled so the SNR over ``segment`` is exactly ``snr_db``.

    ``segment`` defaults to the whole clip; the stage passes :func:`signal_segment`.
    """
    x = np.asarray(x, dtype=np.float64)
    seg = segment if segment is not None else slice(0, len(x))
    noise = rng.standard_normal(len(x))
    p_signal, p_noise = power(x, seg), power(noise, seg)
    if p_signal <= 0:
        raise ValueError("the signal segment is digital silence; an SNR is undefined")
    return x + snr_gain(p_signal, p_noise, snr_db, scale="noise") * noise


def measure_snr(clean: np.ndarray, noisy: np.ndarray, segment: slice | None = None) -> float:
    """``10 log10(P_clean / P_(noisy - clean))`` over ``segment`` (default: all samples)."""
    clean = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noisy, dtype=np.float64) - clean
    seg = segment if segment is not None else slice(0, len(clean))
    return float(10.0 * np.log10(power(clean, seg) / power(noise, seg)))


# ------------------------------------------------------------------------------------- reverberation
def synthetic_rir(t60_s: float, sample_rate: int, rng: np.random.Generator, length_factor: float = 1.5) -> np.ndarray:
    """Exponentially decaying white noise, ``length_factor * T60`` long, normalised to unit energy.

    The amplitude envelope ``exp(-3 ln(10) t / T60)`` makes the energy fall 60 dB in T60 seconds;
    at 1.5 T60 it is 90 dB down, so the cut end does not bias a T30 measurement.
    """
    if t60_s <= 0:
        raise ValueError(f"T60 must be positive, got {t60_s}")
    h = decaying_noise(rng, max(2, int(round(length_factor * t60_s * sample_rate))), sample_rate, t60_s)
    return h / np.sqrt(np.sum(h * h))


def schroeder_t60(h: np.ndarray, sample_rate: int, fit_db: tuple[float, float] = (-5.0, -35.0)) -> float:
    """T60 of an impulse response by Schroeder backward integration.

    The energy decay curve ``EDC(t) = sum_{tau >= t} h(tau)^2`` (in dB re its start) is fitted by a
    line between ``fit_db`` (T30 by default); T60 is the time that line takes to fall 60 dB.
    """
    h = np.asarray(h, dtype=np.float64)
    edc = np.cumsum((h * h)[::-1])[::-1]
    edc_db = 10.0 * np.log10(edc / edc[0] + 1e-300)
    hi, lo = fit_db
    idx = np.flatnonzero((edc_db <= hi) & (edc_db >= lo))
    if len(idx) < 2:
        raise ValueError(f"the decay does not span {hi}..{lo} dB")
    t = idx / sample_rate
    slope = np.polyfit(t, edc_db[idx], 1)[0]  # dB per second (negative)
    return float(-60.0 / slope)


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``x`` convolved with ``rir``, cut to ``len(x)`` (same timing, tail dropped) and scaled to ``x``'s RMS."""
    x = np.asarray(x, dtype=np.float64)
    return at_rms_of(signal.fftconvolve(x, np.asarray(rir, dtype=np.float64))[:len(x)], x)


# -------------------------------------------------------------------------------------- band-limiting
def band_filter_sos(kind: str, sample_rate: int, low_hz: float, high_hz: float, order: int) -> np.ndarray:
    """Butterworth second-order sections: ``telephone`` band-pass low..high, ``lowpass`` at high, ``highpass`` at low."""
    nyquist = sample_rate / 2.0
    if not 0 < low_hz < high_hz < nyquist:
        raise ValueError(f"need 0 < {low_hz} < {high_hz} < Nyquist {nyquist} Hz")
    if kind == "telephone":
        return signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=sample_rate, output="sos")
    if kind == "lowpass":
        return signal.butter(order, high_hz, btype="lowpass", fs=sample_rate, output="sos")
    if kind == "highpass":
        return signal.butter(order, low_hz, btype="highpass", fs=sample_rate, output="sos")
    raise ValueError(f"unknown band filter {kind!r}; use telephone, lowpass or highpass")


def band_limit(x: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """``x`` through the filter once, causally: magnitude response ``|H(f)|`` exactly."""
    return signal.sosfilt(sos, np.asarray(x, dtype=np.float64))
