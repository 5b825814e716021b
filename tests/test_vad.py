"""Tests of speech_calibration/vad/detectors.py: the clip score's closed forms, and both detectors on real
synthesized speech.

Speech comes from eSpeak NG (the ``espeakng-loader`` wheel's library, driven through ctypes by the
small helper below), so the detectors hear real formants and syllables, not a toy tone.
"""
from __future__ import annotations

import ctypes
import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soxr

from speech_calibration.vad import detectors as vad

ROOT = Path(__file__).resolve().parents[1]
RATE = vad.SAMPLE_RATE


# ------------------------------------------------------------------------------------ eSpeak helper
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: synthesize in the calling thread, hand samples to the callback
_POS_CHARACTER = 1
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@functools.lru_cache(maxsize=1)
def _espeak() -> tuple[ctypes.CDLL, int]:
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    # the path is the folder that holds espeak-ng-data
    root = str(Path(espeakng_loader.get_data_path()).parent).encode()
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, root, 0)
    assert rate > 0, f"espeak_Initialize failed ({rate})"
    return lib, rate


@functools.lru_cache(maxsize=None)
def _synth_cached(text: str, voice: str) -> np.ndarray:
    lib, rate = _espeak()
    chunks: list[np.ndarray] = []

    def collect(wav, n, _events):
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    callback = _SynthCallback(collect)  # kept alive until synthesis returns
    lib.espeak_SetSynthCallback(callback)
    assert lib.espeak_SetVoiceByName(voice.encode()) == 0, f"eSpeak NG has no voice {voice!r}"
    data = text.encode()
    assert lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, 0, None, None) == 0
    lib.espeak_Synchronize()
    samples = np.concatenate(chunks).astype(np.float32) / 32768.0
    return soxr.resample(samples, rate, RATE).astype(np.float32)


def synth_speech(text: str = "Hello there, this is a short test of human speech.", voice: str = "en-us") -> np.ndarray:
    """eSpeak NG speech, mono float32 at 16 kHz."""
    return _synth_cached(text, voice).copy()


def white_noise(seconds: float, rms: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * RATE)) * rms).astype(np.float32)


def pink_noise(seconds: float, rms: float, seed: int = 0) -> np.ndarray:
    n = int(seconds * RATE)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1))
    x = np.fft.irfft(spectrum, n)
    return (x / np.sqrt(np.mean(x**2)) * rms).astype(np.float32)


def speech_in_noise(snr_db: float = 10.0, rms: float = 0.01, seed: int = 0, **kw) -> np.ndarray:
    speech = synth_speech(**kw)
    noise = white_noise(len(speech) / RATE + 1e-9, rms, seed)[: len(speech)]
    speech = speech / np.sqrt(np.mean(speech**2)) * rms * 10 ** (snr_db / 20)
    return (speech + noise).astype(np.float32)


@pytest.fixture(scope="module")
def silero():
    return vad.load_silero()


# ----------------------------------------------------------------------------------------- pure math
def test_densest_window_closed_forms():
    f = np.array([0.1, 0.9, 0.2, 0.8, 0.7, 0.0])
    assert vad.densest_window(f, 1) == pytest.approx(0.9)  # one frame: the max
    assert vad.densest_window(f, 6) == pytest.approx(f.mean())  # the whole clip: the mean
    assert vad.densest_window(f, 60) == pytest.approx(f.mean())  # a window longer than the clip: the mean too
    assert vad.densest_window(f, 2) == pytest.approx(0.75)  # (0.8 + 0.7) / 2
    assert vad.densest_window(f, 3) == pytest.approx((0.9 + 0.2 + 0.8) / 3)
    rng = np.random.default_rng(0)
    for _ in range(20):  # against a direct loop
        g, k = rng.random(rng.integers(1, 40)), int(rng.integers(1, 50))
        kk = min(k, g.size)
        assert vad.densest_window(g, k) == pytest.approx(max(g[j:j + kk].mean() for j in range(g.size - kk + 1)))
    with pytest.raises(ValueError, match="at least one frame"):
        vad.densest_window(np.array([]), 3)


def test_window_frames_and_padding():
    assert vad.window_frames(200, vad.SILERO_FRAME_MS) == 6  # 200 / 32 = 6.25
    assert vad.window_frames(200, 10) == 20
    assert vad.window_frames(5, 30) == 1  # never zero frames
    assert vad.pad_to_frames(np.ones(100), 512).shape == (512,)  # shorter than a frame: one padded frame
    assert vad.pad_to_frames(np.ones(0), 512).shape == (512,)
    assert vad.pad_to_frames(np.ones(1024), 512).shape == (1024,)
    padded = vad.pad_to_frames(np.ones(1025), 512)
    assert padded.shape == (1536,) and padded[:1025].all() and not padded[1025:].any()
    pcm = vad.to_pcm16(np.array([0.0, 0.5, 1.0, -1.0, 2.0, -2.0]))
    assert pcm.dtype == np.dtype("<i2") and pcm.tolist() == [0, 16384, 32767, -32767, 32767, -32768]


def test_score_to_logit_inverts_the_sigmoid_and_stays_finite():
    s = np.array([0.0, 1e-6, 0.2, 0.5, 0.9, 1.0])
    z = vad.score_to_logit(s)
    assert np.isfinite(z).all()
    assert z[0] == pytest.approx(-np.log(9999)) and z[-1] == pytest.approx(np.log(9999))
    assert z[3] == 0.0
    np.testing.assert_allclose(1 / (1 + np.exp(-z[2:5])), s[2:5])


# ----------------------------------------------------------------------------------------- detectors
def test_silero_scores_speech_above_noise(silero):
    speech = [speech_in_noise(10, seed=1), speech_in_noise(0, seed=2, voice="en-us+f3"),
              synth_speech("Seven", "en-us+m7")]
    noise = [white_noise(3, 0.01, 3), pink_noise(3, 0.05, 4), white_noise(0.2, 0.1, 5), np.zeros(RATE, np.float32)]
    s_speech = [vad.silero_score(silero, x, 200) for x in speech]
    s_noise = [vad.silero_score(silero, x, 200) for x in noise]
    assert all(0.0 <= s <= 1.0 for s in s_speech + s_noise)
    assert min(s_speech) > max(s_noise), (s_speech, s_noise)
    assert min(s_speech) > 0.5 > max(s_noise)


def test_webrtc_scores_speech_above_noise():
    speech = [speech_in_noise(10, seed=1), speech_in_noise(10, seed=2, voice="en-us+f3")]
    noise = [white_noise(3, 0.01, 3), pink_noise(3, 0.01, 4), np.zeros(RATE, np.float32)]
    for frame_ms in vad.WEBRTC_FRAME_MS:
        s_speech = [vad.webrtc_score(x, 3, frame_ms, 200) for x in speech]
        s_noise = [vad.webrtc_score(x, 3, frame_ms, 200) for x in noise]
        assert min(s_speech) > max(s_noise), (frame_ms, s_speech, s_noise)


def test_webrtc_score_is_the_voiced_fraction_of_the_densest_200_ms():
    """With 10 ms frames the score is (voiced frames among 20 consecutive ones) / 20: checked on a clip whose densest
    window is only partly voiced (100 ms of speech between two half-seconds of noise), by a plain loop over windows."""
    cut = speech_in_noise(10, seed=1)[int(0.3 * RATE):int(0.4 * RATE)]
    x = np.concatenate([white_noise(0.5, 0.01, 11), cut, white_noise(0.5, 0.01, 12)]).astype(np.float32)
    decisions = vad.webrtc_frame_decisions(x, 3, 10)
    assert decisions.shape == (len(x) // 160,) and set(np.unique(decisions)) <= {0.0, 1.0}
    k = 20  # 200 ms of 10 ms frames, fewer than the clip's 110 frames: the window is not cut to the clip
    assert len(decisions) > k
    densest = max(sum(decisions[j:j + k]) / k for j in range(len(decisions) - k + 1))
    s = vad.webrtc_score(x, 3, 10, 200)
    assert 0.0 < s < 1.0, s  # partly voiced: the check below is not 20 == round(20)
    assert s * 20 == pytest.approx(round(s * 20), abs=1e-9)  # one of the 21 levels 0, 1/20, ..., 1
    assert s == pytest.approx(densest, abs=1e-12)


def test_webrtc_rejects_impossible_settings():
    with pytest.raises(ValueError, match="mode"):
        vad.webrtc_frame_decisions(np.zeros(RATE, np.float32), 4, 10)
    with pytest.raises(ValueError, match="frame_ms"):
        vad.webrtc_frame_decisions(np.zeros(RATE, np.float32), 3, 25)


@pytest.mark.parametrize("n", [1, 100, 159, 511])
def test_clips_shorter_than_a_frame_get_a_score(silero, n):
    x = synth_speech()[4000:4000 + n]
    probs = vad.silero_frame_probs(silero, x)
    assert probs.shape == (1,)
    assert 0.0 <= vad.silero_score(silero, x, 200) <= 1.0
    for frame_ms in vad.WEBRTC_FRAME_MS:
        frame = RATE * frame_ms // 1000
        assert vad.webrtc_frame_decisions(x, 3, frame_ms).shape == (-(-n // frame),)  # the last frame padded
        assert 0.0 <= vad.webrtc_score(x, 3, frame_ms, 200) <= 1.0


def test_shortest_corpus_clip_is_judged_on_the_whole_window(silero):
    x = speech_in_noise(10)[8000:8000 + int(0.2 * RATE)]  # 0.2 s, the corpus minimum: 7 Silero windows
    probs = vad.silero_frame_probs(silero, x)
    assert probs.shape == (7,)
    assert vad.silero_score(silero, x, 200) == pytest.approx(vad.densest_window(probs, 6))


def test_scores_are_deterministic(silero):
    a, b = speech_in_noise(5, seed=7), white_noise(2, 0.02, 8)
    first = [vad.silero_score(silero, a, 200), vad.webrtc_score(a, 3, 10, 200)]
    vad.silero_score(silero, b, 200)  # another clip in between must leave no state behind
    vad.webrtc_score(b, 3, 10, 200)
    assert [vad.silero_score(silero, a, 200), vad.webrtc_score(a, 3, 10, 200)] == first
    assert [vad.silero_score(vad.load_silero(), a, 200)] == first[:1]


def test_silero_loads_from_the_wheel_without_network_and_keeps_torch_threads():
    code = (
        "import socket, torch\n"
        "def refuse(*a, **k): raise RuntimeError('network access attempted')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse\n"
        "torch.set_num_threads(2)\n"
        "from speech_calibration.vad import detectors as vad\n"
        "m = vad.load_silero()\n"
        "assert torch.get_num_threads() == 2, torch.get_num_threads()\n"
        "import numpy as np\n"
        "print(vad.silero_score(m, np.zeros(16000, np.float32), 200))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 0.0 <= float(out.stdout.strip()) < 0.5
