"""Independent pieces of one stage's work on the CPUs that ``dvc repro`` leaves idle.

DVC runs one stage at a time, so a stage that computes one thing after another uses one core of several.
:func:`map_forked` spreads independent items over forked worker processes (the standard library's
``ProcessPoolExecutor``). The workers inherit the function and its arguments from the fork instead of receiving
them pickled; only each item's index goes out and its result comes back.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_SHARED: tuple[Callable, Sequence] | None = None  # what the forked workers inherit: (function, items)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, which a container or ``taskset`` may narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _call(index: int):
    function, items = _SHARED
    return function(items[index])


def map_forked(function: Callable[[T], R], items: Sequence[T], workers: int | None = None) -> list[R]:
    """``[function(x) for x in items]``, in that order, on up to ``workers`` forked processes.

    ``workers`` defaults to :func:`available_cpus`. With one worker or one item, and on any system but Linux,
    everything runs here in this process (macOS has ``fork``, but Python stopped defaulting to it there because
    system libraries are not safe in a forked child). The results are the same either way as long as ``function``
    depends only on its item and on what it was given, never on state that another item changes (a shared random
    generator, for one). ``tests/test_conditions.py`` and ``tests/test_calibrate_evaluate_aggregate.py`` check that the
    two reports that use it write the same files on one process or two. An exception in a worker is raised here.
    """
    global _SHARED
    workers = available_cpus() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    n = min(workers, len(items))
    if n <= 1 or not sys.platform.startswith("linux"):
        return [function(x) for x in items]
    if _SHARED is not None:
        raise RuntimeError("map_forked cannot be nested")
    _SHARED = (function, items)
    try:
        with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_call, range(len(items))))
    finally:
        _SHARED = None
