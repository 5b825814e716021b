"""Independent pieces of one stage's work on the CPUs that ``dvc repro`` leaves idle.

DVC runs one stage at a time, so a stage that computes one thing after another uses one core of several.
:func:`map_forked` spreads independent items over forked worker processes (the standard library's
``ProcessPoolExecutor``). The workers inherit the function and its arguments from the fork instead of receiving
them pickled; only each item's index goes out and its result comes back. ``SPEECH_CALIBRATION_WORKERS=1`` in the
environment keeps everything in one process (for a profiler, or a machine short of memory); the results are the
same for any number of workers.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TypeVar

from speech_calibration.errors import UserError

T = TypeVar("T")
R = TypeVar("R")

WORKERS_ENV = "SPEECH_CALIBRATION_WORKERS"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h

_SHARED: tuple[Callable, Sequence] | None = None  # what the forked workers inherit: (function, items)


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's container in CPUs (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us``), or
    None where there is none."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """The CPUs this process may use: its affinity (which ``taskset`` or a cpuset narrows), capped by a container's
    CPU quota (``docker --cpus``, a Kubernetes limit), rounded up."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return max(1, min(cpus, math.ceil(limit))) if limit else cpus


def default_workers() -> int:
    """``SPEECH_CALIBRATION_WORKERS`` where set (a positive integer), else :func:`available_cpus`."""
    value = os.environ.get(WORKERS_ENV)
    if value is None or value.strip() == "":
        return available_cpus()
    try:
        workers = int(value)
    except ValueError:
        workers = 0
    if workers < 1:
        raise UserError(f"environment variable {WORKERS_ENV}={value!r}: not a positive integer; "
                        f"set it to 1 (one process) or more, or unset it (one worker per CPU)")
    return workers


def _ignore(signum, frame) -> None:
    pass  # a Python handler, not SIG_IGN: a signal already on its way to SIG_IGN raises "ignored due to race condition"


def _stop_worker(signum, frame) -> None:
    for stop in (signal.SIGINT, signal.SIGTERM):  # once: a second stop (Ctrl-C reaches the stage too, which then
        signal.signal(stop, _ignore)              # terminates its workers) must not cut the unwinding short
    raise SystemExit(128 + signum)


def _die_with_parent(parent: int) -> None:
    """In a worker: ask the kernel for SIGTERM when the stage process dies (killed by DVC, a timeout or the OOM
    killer), so no worker is left running, writing into the stage's outputs. Ctrl-C and SIGTERM raise SystemExit in a
    worker, not the stage's own exceptions it inherited: its item unwinds (an atomic write removes its temporary
    file) and the worker ends without a traceback; the stage process reports the stop."""
    import ctypes

    signal.signal(signal.SIGINT, _stop_worker)
    signal.signal(signal.SIGTERM, _stop_worker)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


def _progress(results: Iterable[R], total: int, desc: str | None, unit: str) -> Iterable[R]:
    """``results``, through a tqdm bar labelled ``desc`` (none without one; quiet when stderr is not a terminal)."""
    if desc is None:
        return results
    from tqdm import tqdm

    return tqdm(results, total=total, desc=desc, unit=unit, leave=False, disable=None)


def _call(index: int):
    function, items = _SHARED
    try:
        return function(items[index])
    except SystemExit as stop:  # Ctrl-C or SIGTERM (_stop_worker): the item has unwound; end this worker now, not
        os._exit(stop.code if isinstance(stop.code, int) else 1)  # the pool's loop, which would wait for the next


def map_forked(function: Callable[[T], R], items: Sequence[T], workers: int | None = None, *,
               desc: str | None = None, unit: str = "item") -> list[R]:
    """``[function(x) for x in items]``, in that order, on up to ``workers`` forked processes.

    ``workers`` defaults to :func:`default_workers`. With one worker or one item, and on any system but Linux,
    everything runs here in this process (macOS has ``fork``, but Python stopped defaulting to it there because
    system libraries are not safe in a forked child). The results are the same either way as long as ``function``
    depends only on its item and on what it was given, never on state that another item changes (a shared random
    generator, for one). ``tests/test_conditions.py``, ``tests/test_calibrate_evaluate_aggregate.py``,
    ``tests/test_prepare.py`` and ``tests/test_degrade.py`` check that the four stages that use it (conditions,
    references, prepare, conditions_render) write the same files on one process or two. An exception in a worker is
    raised here; a worker that dies (out of memory, killed) ends the call with one line naming the fix. ``desc``: a
    progress bar with this label, counting ``unit``s as they come back in order (quiet when stderr is not a terminal).
    """
    global _SHARED
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    n = min(workers, len(items))
    if n <= 1 or not sys.platform.startswith("linux"):
        return [function(x) for x in _progress(items, len(items), desc, unit)]
    if _SHARED is not None:
        raise RuntimeError("map_forked cannot be nested")
    _SHARED = (function, items)
    try:
        with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("fork"),
                                 initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
            try:
                return list(_progress(pool.map(_call, range(len(items))), len(items), desc, unit))
            except BaseException:  # stopped (Ctrl-C, SIGTERM) or failed: stop the workers' items now (they unwind)
                for process in list(getattr(pool, "_processes", {}).values()):
                    process.terminate()
                # The pool's manager thread must be done before the interpreter exits: left running, it can close
                # its wake-up pipe while Python 3.11's exit hook writes to it ("Exception ignored ... Bad file
                # descriptor" and a traceback after the stage's one line). shutdown(wait=False) forgets the thread.
                manager = getattr(pool, "_executor_manager_thread", None)
                pool.shutdown(wait=False, cancel_futures=True)
                if manager is not None:
                    manager.join(timeout=10)  # the workers were terminated: it ends as soon as it sees them gone
                raise
    except BrokenProcessPool:
        raise UserError(f"a worker process died while computing {len(items)} items on {n} processes (out of memory, "
                        f"or killed); run again with {WORKERS_ENV}=1 in the environment to compute them in one process "
                        "and see the error") from None
    finally:
        _SHARED = None
