"""Shared fixtures: temporary params files, real audio files, a small synthetic corpus config, and the shrunk
study reproduced by the real ``dvc`` (``study``, for the slow tier), once in each pytest-xdist worker that reads it."""
from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parents[1]
MAX_WORKERS = 4  # pytest-xdist's `-n auto` (addopts): each worker that reads `study` reproduces it, model stages and all
# the cores this process may use (macOS has no sched_getaffinity: all of them)
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # a pytest-xdist worker: the workers share the cores between them
    # set before torch is imported; the stages and dvc runs a test starts inherit it
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, CORES // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: a worker per core, at most :data:`MAX_WORKERS`."""
    return max(1, min(MAX_WORKERS, CORES))


# A small synthetic corpus (20 clips) that prepares in a couple of seconds; tests copy and override it.
SMALL_SYNTHETIC = {
    "seed": 7,
    "sizes": {"train": {"clips": 8, "groups": 2}, "dev": {"clips": 6, "groups": 2}, "test": {"clips": 6, "groups": 2}},
    "voices": {"train": ["en-us+m1", "en+f2"], "dev": ["en-us+f3"], "test": ["en-us+m6", "en-029+croak"]},
    "backgrounds": {"train": ["white", "music"], "dev": ["rain", "hum"], "test": ["wind", "traffic"]},
    "min_duration_s": 0.5,
    "max_duration_s": 2.0,
}


@pytest.fixture
def small_synthetic() -> dict:
    """A fresh copy of :data:`SMALL_SYNTHETIC` (the ``data.synthetic`` section) to override."""
    return copy.deepcopy(SMALL_SYNTHETIC)


@pytest.fixture
def make_params(tmp_path, tiny_model):
    """``make_params({"data": {...}})`` writes a params file holding those sections (others take their
    defaults; ``model.name_or_path`` is the session's tiny model and ``data.corpus`` the test's folder, where its
    corpus lies, unless given) and returns its path."""
    def make(sections: dict, name: str = "params.yaml") -> Path:
        path = tmp_path / name
        sections = {**sections, "model": {"name_or_path": str(tiny_model), **sections.get("model", {})},
                    "data": {"corpus": str(tmp_path), **sections.get("data", {})}}
        path.write_text(yaml.safe_dump(sections, sort_keys=False))
        return path

    return make


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The embedded tiny model, built once per session as the tiny_model stage builds it."""
    from tests.model_helpers import tiny_model_dir

    return tiny_model_dir(str(tmp_path_factory.getbasetemp()))


def tone(seconds: float = 0.5, rate: int = 16000, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def make_audio(tmp_path):
    """``make_audio("a.flac", rate=44100, channels=2)`` writes a real 440 Hz tone file (format from the
    suffix; stereo: the tone on the left, silence on the right) under tmp_path and returns its path."""
    def make(name: str, *, rate: int = 16000, channels: int = 1, seconds: float = 0.5, freq: float = 440.0,
             amplitude: float = 0.5) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        mono = tone(seconds, rate, freq, amplitude)
        data = mono if channels == 1 else np.stack([mono] + [np.zeros_like(mono)] * (channels - 1), axis=1)
        subtype = {".ogg": "VORBIS", ".mp3": "MPEG_LAYER_III"}.get(path.suffix, "PCM_16")
        sf.write(str(path), data, rate, subtype=subtype)
        return path

    return make


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Path:
    """The shrunk study (tests/dvc_helpers.SHRINK) in a temporary git repository, reproduced by ``dvc repro``
    and committed (dvc.lock, uncached headline metrics and plots). Shared by every test of the session (of the worker, under
    pytest-xdist): read it, or change a copy (``dvc_helpers.copy_repo``)."""
    from tests.dvc_helpers import SHRINK, commit_all, dvc, init_project, stages_run

    repo = init_project(tmp_path_factory.mktemp("study") / "repo", SHRINK)
    started = time.perf_counter()
    out = dvc("repro", cwd=repo).stdout
    print(f"\nfirst dvc repro of the shrunk study: {time.perf_counter() - started:.1f} s")
    assert "train@42" in stages_run(out)
    commit_all(repo, "dvc repro")
    return repo


# ----------------------------------------------------------------------------------- how a folder output goes in
@pytest.fixture
def two_renames(monkeypatch):
    """A system that cannot swap two folders in one step (not Linux, or a file system without RENAME_EXCHANGE):
    a folder output then goes in by two renames (:func:`speech_calibration.fileio._move_in`)."""
    from speech_calibration import fileio

    monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)


@pytest.fixture
def one_step_swap(tmp_path):
    """Skip where this system cannot swap two folders in one step (then only the two-rename path runs)."""
    from speech_calibration import fileio

    a, b = tmp_path / ".swap_a", tmp_path / ".swap_b"
    a.mkdir()
    b.mkdir()
    (a / "which").write_text("a")
    if not fileio._exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available on this system or file system")
    assert (b / "which").read_text() == "a" and not (a / "which").exists()
    a.rmdir()
    (b / "which").unlink()
    b.rmdir()


@pytest.fixture(params=["one step", "two renames"])
def folder_swap(request) -> str:
    """Each way a folder output goes in, by name: a test runs once with the one-step swap (skipped where the system has
    none) and once with two renames."""
    request.getfixturevalue("one_step_swap" if request.param == "one step" else "two_renames")
    return request.param
