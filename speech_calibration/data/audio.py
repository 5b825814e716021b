"""Audio I/O: WAV, FLAC, OGG/Vorbis or MP3 at any sample rate, mono or multichannel, in; mono float32 at the
model's rate (16 kHz) out.

Decoding is libsndfile's (through ``soundfile``; MP3 needs libsndfile 1.1 or later, which the soundfile
wheels bundle), resampling soxr's, channels are averaged. ``tests/test_audio.py`` reads each format at
several rates and channel counts. Loading fails with a one-line :class:`UserError` naming the file by its
absolute path for a missing or empty file, a file that cannot be decoded, or samples that are NaN or
infinite, so a bad file never reaches the model. libsndfile's MP3 decoder (libmpg123) also prints its own
``Note:`` / ``Warning:`` lines on stderr for a damaged file, or one that is not audio at all: libsndfile sets no quiet
flag on it and soundfile has no switch for one, and only redirecting the whole process's stderr would hide them.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from speech_calibration.errors import UserError
from speech_calibration.fileio import atomic_path

MODEL_RATE = 16000
FORMATS = ("WAV", "FLAC", "OGG", "MP3")  # what the tests read; see the module doc


# libsndfile's reason when no format reader takes a file (garbage, even named .mp3): wrong for a file that is there
_MISLEADING_REASONS = ("File does not exist or is not a regular file",)


def _undecodable(path: Path, err: Exception) -> UserError:
    """The one-line error for a file soundfile cannot open or read: its reason (libsndfile's, without the prefix that
    repeats the path), unless it is empty or misleading."""
    reason = (getattr(err, "error_string", None) or str(err)).strip().rstrip(".")
    shown = f" ({reason})" if reason and not reason.startswith(_MISLEADING_REASONS) else ""
    return UserError(f"{path}: cannot be decoded as audio{shown}; re-encode it as WAV, FLAC, OGG or MP3")


def load_audio(path: str | os.PathLike, sample_rate: int = MODEL_RATE) -> np.ndarray:
    """Read ``path`` and return mono float32 samples at ``sample_rate`` (channels averaged, soxr resampling)."""
    path = Path(os.path.abspath(path))
    if not path.is_file():
        raise UserError(f"{path}: audio file not found")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, TypeError ... for bad files
        raise _undecodable(path, err) from None
    if data.shape[0] == 0:
        raise UserError(f"{path}: audio file has no samples; remove it from the metadata CSV or replace it")
    if not np.isfinite(data).all():
        raise UserError(f"{path}: audio contains NaN or infinite samples (corrupt file); re-export it")
    mono = data.mean(axis=1, dtype=np.float32)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(mono, dtype=np.float32)


def load_clips(files, sample_rate: int = MODEL_RATE, places=None) -> list[np.ndarray]:
    """Decode many files (threads: decoding and resampling release the GIL), in order.

    ``places`` names each file for an error (``<csv> row <n> (<clip_id>)``), which then leads the message.
    """
    from concurrent.futures import ThreadPoolExecutor

    files = list(files)
    places = list(places) if places is not None else [None] * len(files)

    def load(i: int) -> np.ndarray:
        try:
            return load_audio(files[i], sample_rate)
        except UserError as err:
            raise UserError(f"{places[i]}: {err}" if places[i] else str(err)) from None

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(load, range(len(files))))


_WAV_SAMPLE_BYTES = {"PCM_U8": 1, "PCM_S8": 1, "ULAW": 1, "ALAW": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4,
                     "DOUBLE": 8}


_OPEN_LENGTH = 0x7FFFF000  # a data size this large is a streaming writer's placeholder (0x7FFFFFFF, 0xFFFFFFFF ...)


def _wav_declared_frames(path: Path, info) -> int | None:
    """The frames a WAV's header says its data chunk holds (RF64: its ``ds64`` chunk's data size, which stands in for
    the data chunk's own); None where that cannot be read (not a RIFF or RF64 WAV, an unknown sample size, or a
    streamed file whose header leaves the length open)."""
    width = _WAV_SAMPLE_BYTES.get(info.subtype)
    if info.format not in ("WAV", "WAVEX", "RF64") or width is None:
        return None
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            return None
        ds64 = None  # RF64: the 64-bit data size, read before the data chunk whose 32-bit size is 0xFFFFFFFF
        while len(chunk := f.read(8)) == 8:
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"ds64" and size >= 16:
                ds64 = int.from_bytes(f.read(16)[8:], "little")
                size -= 16
            elif chunk[:4] == b"data":
                if head[:4] == b"RF64" and size == 0xFFFFFFFF:
                    size = ds64 if ds64 is not None else 0
                return None if size == 0 or size >= _OPEN_LENGTH else size // (width * info.channels)
            f.seek(size + (size & 1), os.SEEK_CUR)
    return None


def probe_audio(path: str | os.PathLike) -> sf._SoundFileInfo:
    """Read only the header of ``path``: cheap validation that it exists, is a decodable format, has samples and, for
    a WAV, holds the samples its header announces (a copy cut short decodes as a shorter clip without a word)."""
    path = Path(os.path.abspath(path))
    if not path.is_file():
        raise UserError(f"{path}: audio file not found")
    try:
        info = sf.info(str(path))
    except Exception as err:
        raise _undecodable(path, err) from None
    if info.frames == 0:
        raise UserError(f"{path}: audio file has no samples; remove it from the metadata CSV or replace it")
    declared = _wav_declared_frames(path, info)
    if declared is not None and declared > info.frames:
        raise UserError(f"{path}: truncated: its header announces {declared} samples ({declared / info.samplerate:.3f} s) "
                        f"but the file holds {info.frames}; copy or export it again")
    return info


def probe_clips(files, places=None) -> list[sf._SoundFileInfo]:
    """:func:`probe_audio` for many files, in order; ``places`` names each file for an error, as in :func:`load_clips`."""
    places = list(places) if places is not None else [None] * len(files)
    infos = []
    for file, place in zip(files, places):
        try:
            infos.append(probe_audio(file))
        except UserError as err:
            raise UserError(f"{place}: {err}" if place else str(err)) from None
    return infos


TRUNCATION_TOLERANCE_S = 0.05  # decoded this much shorter than the header says: a copy cut short (lossy codecs' priming
# and padding move a length by a few hundredths at most)


def check_whole(files, header_s, decoded_s, places) -> None:
    """Refuse the first clip that decodes more than TRUNCATION_TOLERANCE_S shorter than its header says (``header_s``
    from :func:`probe_audio`, ``decoded_s`` at any rate), naming its place (``<csv> row <n> (<clip_id>)``): an MP3
    copy cut short keeps its Xing header's full length and decodes as what is left."""
    header, decoded = np.asarray(header_s, dtype=float), np.asarray(decoded_s, dtype=float)
    cut = np.flatnonzero(decoded < header - TRUNCATION_TOLERANCE_S - 1e-9)
    if cut.size:
        i = int(cut[0])
        more = f"; {cut.size} clips are" if cut.size > 1 else ""
        raise UserError(f"{places[i]}: audio file {files[i]} decodes to {decoded[i]:.3f} s but its header says "
                        f"{header[i]:.3f} s (truncated: the file stops early{more}); re-copy it from the original, or "
                        "re-encode it (the header then gives its true length)")


def write_audio(path: str | os.PathLike, samples: np.ndarray, sample_rate: int = MODEL_RATE) -> None:
    """Write float samples in [-1, 1] as 16-bit PCM (format from the suffix: .wav, .flac, .ogg), atomically."""
    samples = np.asarray(samples, dtype=np.float32)
    if not np.isfinite(samples).all():
        raise ValueError(f"{path}: refusing to write NaN or infinite samples")
    subtype = "VORBIS" if str(path).lower().endswith(".ogg") else "PCM_16"
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(samples, -1.0, 1.0), sample_rate, subtype=subtype)
