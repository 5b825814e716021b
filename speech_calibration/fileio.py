"""Atomic file writes: a temporary file in the same folder, then ``os.replace``.

A crash never leaves half a CSV or JSON that DVC would cache; a reader sees the old file or the new one.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from speech_calibration.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: Path, directory: bool = False) -> None:
    """Give a temporary file or folder the mode a plain ``open`` / ``mkdir`` would have (mkstemp's is 0600 / 0700),
    so that outputs DVC caches and pushes are readable by the group as usual."""
    os.chmod(tmp, (0o777 if directory else 0o666) & ~_umask())


def check_writable(path: str | os.PathLike, *, folder: bool = False) -> None:
    """Refuse, in one line, an output path that cannot be written: a folder where a file is to go (``folder``: a
    folder is to go there, and may replace a folder, not a file), a file where a parent folder would be, or a parent
    folder that cannot be written into. Commands call it on their outputs before any work, so a mistake costs no scoring run."""
    path = Path(path)
    if not folder and path.is_dir():
        raise UserError(f"{path}: is a folder; name a file to write")
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{path}: is a file; name a folder to write")
    existing = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)  # the folder to be made in
    if existing is not None and not existing.is_dir():
        raise UserError(f"{path}: {existing} is a file, not a folder; choose another path")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{path}: cannot write into {existing} (permission denied); choose another path")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed.

    ``suffix`` defaults to the target's suffix, so libraries that pick a format by extension
    (matplotlib, soundfile) still do.
    """
    path = Path(path)
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            _publish(tmp_path, tmp_path.is_dir())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


_STOPPING = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while the block runs, then reach the handlers they would have reached (in the main
    thread; elsewhere, where Python runs no signal handler, the block runs as it is).

    Python runs signal handlers in the main thread whichever thread the signal reached (torch's and tqdm's threads
    among them), so the handlers are set aside for the block, rather than the signals blocked in one thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: caught.append(signum)) for signum in _STOPPING}
    try:
        yield
    finally:
        for signum, handler in previous.items():  # None: set outside Python, which cannot be put back; the default
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if caught:
            signal.raise_signal(caught[0])


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` whole, on error it is removed.

    The two renames that swap an existing folder run with Ctrl-C and SIGTERM held, so a stop between them cannot leave
    ``path`` missing (a stop that arrives then takes effect once the new folder is in place).
    """
    path = Path(path)
    check_writable(path, folder=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = None
    try:
        yield tmp
        _publish(tmp, directory=True)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            with signals_held():
                os.replace(path, old / "x")
                os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:  # stopped between the two renames: the previous folder goes back
            if (old / "x").exists() and not path.exists():
                os.replace(old / "x", path)
            shutil.rmtree(old, ignore_errors=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON (sorted keys, 2-space indent, NaN written as null so every JSON reader accepts it)."""
    write_text(path, json.dumps(_nan_to_none(data), indent=2, sort_keys=True) + "\n")


def write_csv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as CSV without its index, atomically; floats keep full precision."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.9g")


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:  # NaN
        return None
    if isinstance(obj, dict):
        return {str(k): _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:  # numpy scalar
        return _nan_to_none(obj.item())
    return obj
