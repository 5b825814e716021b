"""Atomic file writes: a temporary file in the same folder, then ``os.replace``.

A crash never leaves half a CSV or JSON that DVC would cache; a reader sees the old file or the new one.

Inside :func:`outputs_together` (every command run through :func:`speech_calibration.cli.run`), the files and folders
written this way go in together when the block ends, so a stage that writes several (``evaluate``: a metrics JSON,
three CSVs and a figure) and stops half-way leaves all of its previous outputs, never some old beside some new.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from speech_calibration.errors import UserError

_together: _Together | None = None  # the open outputs_together block (inherited by forked workers)
log = logging.getLogger(__name__)


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


class _Together:
    """The state of an :func:`outputs_together` block: a registry file of the writes waiting for its end, one JSON line
    per write (``tmp``, ``target``), which forked workers append to as well, and the temporary folders of the
    :func:`atomic_dir` blocks still open in this process."""

    def __init__(self, registry: Path) -> None:
        self.registry = registry
        self.open_folders: list[Path] = []

    def defers(self, target: Path) -> bool:
        """A write of ``target`` waits for the block's end, unless it goes into an open atomic_dir's temporary folder
        (which goes in whole, later)."""
        target = Path(os.path.abspath(target))
        return not any(folder in target.parents for folder in self.open_folders)

    def add(self, tmp: Path, target: Path) -> None:
        os.stat(tmp)  # the writer left its file there (FileNotFoundError naming it, as os.replace would)
        line = json.dumps({"tmp": os.path.abspath(tmp), "target": os.path.abspath(target)})
        with open(self.registry, "a") as f:  # one short write: workers' lines do not interleave (O_APPEND)
            f.write(line + "\n")

    def waiting(self) -> list[tuple[Path, Path]]:
        """(temporary, target) of every write so far, in the order they ended."""
        lines = self.registry.read_text().splitlines() if self.registry.exists() else []
        return [(Path(d["tmp"]), Path(d["target"])) for d in map(json.loads, lines)]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _check_nesting(moves: list[tuple[Path, Path]]) -> None:
    targets = {target for _, target in moves}
    for target in targets:
        outer = next((parent for parent in target.parents if parent in targets), None)
        if outer is not None:
            raise RuntimeError(f"{target} was written atomically inside {outer}, which the same outputs_together block "
                               "replaces whole; write it into that atomic_dir's temporary folder instead")


def _set_aside(target: Path, copy: Path) -> None:
    """Keep ``target`` as ``copy``: a hard link for a file, so the file is never missing (its new version replaces it
    in one rename); a rename for a folder, or where the file system has no hard links."""
    if not target.is_dir() or target.is_symlink():
        try:
            os.link(target, copy, follow_symlinks=False)
            return
        except OSError:
            pass
    os.replace(target, copy)


_RENAME_EXCHANGE = 2  # linux/fs.h
_renameat2: Any = None  # libc's renameat2, looked up once (False: none here)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the folders ``a`` and ``b`` in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``), so ``b`` is never
    missing, not even when the process is killed; False where the system or the file system cannot (the caller then
    renames twice)."""
    global _renameat2
    if _renameat2 is None:
        try:  # no ctypes, no C library to look in (Windows), or no renameat2 in it (macOS, old glibc)
            import ctypes

            _renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", False)
        except (ImportError, OSError, TypeError):
            _renameat2 = False
    if not _renameat2:
        return False
    import ctypes

    at_cwd = -100  # AT_FDCWD
    if _renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):  # no such call, or not on this file system
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _put_back(target: Path, previous: Path | None, swapped: bool) -> None:
    """Undo one step of :func:`_move_in`: ``target`` gets its previous version back, or is removed where it had none."""
    if swapped:
        if not _exchange(previous, target):
            raise OSError(f"could not swap {target} back with {previous}")
    elif previous is None:
        if os.path.lexists(target):
            _remove(target)
    elif previous.is_dir() and not previous.is_symlink():
        if os.path.lexists(target):
            _remove(target)
        os.replace(previous, target)
    elif not _same_entry(previous, target):  # not still the previous file itself (its hard link)
        os.replace(previous, target)  # a file: one rename over the new one, so it is never missing


def _same_entry(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are the same file system entry (links compared as links, so a dangling one is too)."""
    try:
        return os.path.samestat(os.lstat(a), os.lstat(b))
    except FileNotFoundError:
        return False


def _keep(target: Path, previous: Path, swapped: bool, leftovers: list[Path], error: BaseException) -> Path:
    """A previous version that could not be put back is not removed with the leftovers: its holder
    ``.<name>.old.*`` stays (a swapped folder, at the temporary's name, first moves into a holder of its own; where
    even that fails it stays at the temporary's name, which ``error.kept_paths`` then tells the callers to keep).
    Returns where it is."""
    if swapped:
        try:
            holder = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(previous, holder / "x")
            return holder / "x"
        except OSError:
            if previous in leftovers:
                leftovers.remove(previous)
            error.kept_paths = {*getattr(error, "kept_paths", set()), previous}  # type: ignore[attr-defined]
            return previous
    if previous.parent in leftovers:
        leftovers.remove(previous.parent)
    return previous


def _note(error: BaseException, text: str) -> None:
    """Add ``text`` to ``error``'s notes (Python >= 3.11), or log it where exceptions have none."""
    if hasattr(error, "add_note"):
        error.add_note(text)
    else:
        log.error("%s", text)


def _move_in(moves: list[tuple[Path, Path]]) -> None:
    """Rename every temporary onto its target, with stops held; on any error, every target that was replaced gets its
    previous file or folder back, and the exception goes on.

    A folder replaces a folder in one step where the system can (:func:`_exchange`: the temporary's name then holds the
    previous folder until it is removed); elsewhere the previous one is first set aside into ``.<name>.old.*/x``."""
    _check_nesting(moves)
    done: list[tuple[Path, Path | None, bool]] = []  # (target, where its previous version is, swapped in one step)
    leftovers: list[Path] = []  # where the previous versions are, removed at the end
    try:
        with signals_held():  # a stop held here is raised as the block ends: the leftovers go in the finally
            try:
                for tmp, target in moves:
                    if target.is_dir() and not target.is_symlink() and tmp.is_dir() and _exchange(tmp, target):
                        leftovers.append(tmp)
                        done.append((target, tmp, True))
                        continue
                    previous = None
                    if os.path.lexists(target):
                        holder = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
                        leftovers.append(holder)
                        previous = holder / "x"
                        _set_aside(target, previous)
                    done.append((target, previous, False))
                    os.replace(tmp, target)
            except BaseException as error:
                for target, previous, swapped in reversed(done):  # the new one out (the last may not be in), the old back
                    try:
                        _put_back(target, previous, swapped)
                    except OSError as failed:  # keep the previous version where it is, say where, and go on
                        if previous is None:
                            _note(error, f"{target}: the new version could not be removed ({failed})")
                        else:
                            kept = _keep(target, previous, swapped, leftovers, error)
                            _note(error, f"{target}: its previous version could not be put back ({failed}); it is in "
                                         f"{kept}")
                raise
    finally:
        for leftover in leftovers:  # the previous outputs, now out of place (after a failure: emptied, or the new ones)
            _remove(leftover)


@contextlib.contextmanager
def outputs_together() -> Iterator[None]:
    """Within the block, what :func:`atomic_path` and :func:`atomic_dir` write (here or in workers forked inside it,
    :func:`speech_calibration.parallel.map_forked`) waits in temporary files beside each output. When the block ends
    without an exception they all go in, renamed one after the other with Ctrl-C and SIGTERM held; when it ends with
    one (an error, a stop), they are removed, and the previous outputs stay as they were.

    A stop that arrives during the renames takes effect once they are all done. Code inside the block reads its own
    outputs' previous versions (or none) until the block ends. A nested block is part of the outer one.

    What it cannot cover: a SIGKILL (and a SIGTERM under torchrun with several processes, where it keeps its default
    action) ends the process at once. During the block, that leaves the temporary files beside the outputs
    (``python -m speech_calibration.tidy`` removes them) and the registry in the system's temporary folder; during
    the renames, some new outputs beside old ones. A file output is replaced in one rename, and so is a folder
    where the system swaps folders in one step (Linux, on local file systems: :func:`_exchange`), so they are always
    there; elsewhere a folder output may be missing, its previous version in ``.<name>.old.*/x`` beside it.
    """
    global _together
    if _together is not None:
        yield
        return
    fd, registry = tempfile.mkstemp(prefix="speech_calibration_outputs_", suffix=".jsonl")
    os.close(fd)
    _together = _Together(Path(registry))
    try:
        try:
            yield
            _move_in(_together.waiting())
        except BaseException as error:  # also a stop between the yield and the renames; those moved in are gone
            kept = getattr(error, "kept_paths", set())  # a previous version _move_in could not put back
            for tmp, _ in _together.waiting():
                if tmp not in kept:
                    _remove(tmp)
            raise
    finally:
        _together = None
        Path(registry).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed.

    ``suffix`` defaults to the target's suffix, so libraries that pick a format by extension
    (matplotlib, soundfile) still do. Inside :func:`outputs_together`, the rename waits for the block's end.
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
        if _together is not None and _together.defers(path):
            _together.add(tmp_path, path)
        else:
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

    An existing folder is swapped with the new one in one step where the system can (:func:`_exchange`), so ``path`` is
    never missing; elsewhere in two renames, with Ctrl-C and SIGTERM held between them (a stop that arrives then takes
    effect once the new folder is in place). Inside
    :func:`outputs_together`, the swap waits for the block's end.
    """
    path = Path(path)
    check_writable(path, folder=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    together = _together if _together is not None and _together.defers(path) else None
    held = Path(os.path.abspath(tmp))
    if together is not None:  # what is written inside goes in with the folder
        together.open_folders.append(held)
    try:
        yield tmp
        _publish(tmp, directory=True)
        if together is not None:
            together.open_folders.remove(held)
            together.add(tmp, path)
        else:
            _move_in([(tmp, path)])  # a failed second rename puts the previous folder back
    except BaseException as error:
        if tmp not in getattr(error, "kept_paths", set()):  # a previous version _move_in could not put back
            shutil.rmtree(tmp, ignore_errors=True)
        if together is not None and held in together.open_folders:
            together.open_folders.remove(held)
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
