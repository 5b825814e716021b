"""eSpeak NG speech for the synthetic corpus: libespeak-ng through ctypes, run in a fresh child process.

libespeak-ng is a global C library whose output depends on what it synthesised before (its noise
generator and oscillator state carry over between calls), so :func:`synthesize_batch` runs a whole
batch, in order, in one fresh ``python -c`` child with the library initialised once there and
seeded: the same requests and seed give byte-identical audio in every run. :class:`Espeak` is the
in-process binding (one per process); audio comes back resampled from ``ESPEAK_RATE`` with soxr.
"""
from __future__ import annotations

import ctypes
import pickle
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from speech_calibration.errors import UserError

ESPEAK_RATE = 22050  # libespeak-ng's output rate
_REPO_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the speech_calibration package


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
    code = (f"import sys; sys.path.insert(0, {str(_REPO_ROOT)!r}); "
            "from speech_calibration.data.espeak import _worker; _worker()")
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
