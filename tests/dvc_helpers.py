"""Helpers for tests that run the real `dvc` in a temporary git repository (tests/test_dvc_workflows.py).

A temporary project is a copy of this repository's files (what `git ls-files` lists: tracked files
plus untracked ones that git does not ignore, so a test run sees the working tree you are about to
commit: the library `speech_calibration/`, the stage scripts `stages/`, dvc.yaml, params.yaml and the
plot templates under `.dvc/plots/`), initialised as its own git repository with one commit. `SHRINK`
makes the embedded default smaller so the suite stays fast; the stages, dvc.yaml and the commands under
test are the real ones. A stage run there (`python -m stages.X`, from the copy's root) imports the copy's
`speech_calibration`, not this checkout's.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# Params edits that keep the study's shape but make `dvc repro` take about a minute on 2 CPU cores.
# Keys are dotted paths into params.yaml, every one of which must exist there: init_project fails on a key it
# could not set (a renamed key would otherwise leave that part of the study full size, silently).
SHRINK = {
    "seeds": [42, 123],
    "train.epochs": 2,
    "data.synthetic.sizes": {"train": {"clips": 24, "groups": 6},
                             "dev": {"clips": 32, "groups": 4},
                             "test": {"clips": 16, "groups": 3}},
    "evaluate.n_bootstrap": 200,
    "conditions.n_bootstrap": 100,
    "conditions.durations_ms": [40, 200, 1000],
    "conditions.snr_db": [-5, 10],
    "conditions.t60_s": [1.0],
    "conditions.band": ["telephone"],
    "learning_curve.repeats": 10,
    # no clip of the synthetic splits is long, so this changes no result; it lets tests/test_eval_sets.py add a
    # set with long clips without re-running every stage that reads audio.long_clips
    "audio.long_clips": "windows",
}


def dvc_env(**extra: str) -> dict[str, str]:
    """Environment for a dvc subprocess: this venv first on PATH (stages run `python -m stages.X`)."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VIRTUAL_ENV", None)
    env["DVC_NO_ANALYTICS"] = "1"
    env["DVC_NO_UPDATER"] = "1"  # no version check against the network
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "test"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@example.invalid"
    env.setdefault("TQDM_DISABLE", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.update(extra)
    return env


def sh(args: Sequence[str], cwd: Path, *, check: bool = True, env: Mapping[str, str] | None = None,
       timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command, return its result; on failure raise with the command's output in the message."""
    res = subprocess.run(list(args), cwd=cwd, env=dict(env or dvc_env()), capture_output=True, text=True,
                         timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"`{' '.join(args)}` in {cwd} exited {res.returncode}\n"
                             f"--- stdout ---\n{res.stdout[-6000:]}\n--- stderr ---\n{res.stderr[-6000:]}")
    return res


def dvc(*args: str, cwd: Path, check: bool = True, env: Mapping[str, str] | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess:
    return sh([str(VENV_BIN / "dvc"), *args], cwd, check=check, env=env, timeout=timeout)


def git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return sh(["git", *args], cwd, check=check)


def project_files(root: Path = PROJECT) -> list[str]:
    """The project's source files: tracked, plus untracked ones git does not ignore (work in progress),
    minus anything a pipeline stage writes (an uncached metrics file left by a local run is not source)."""
    def ls(*args: str) -> set[str]:
        out = subprocess.run(["git", "ls-files", "-z", *args], cwd=root, check=True, capture_output=True).stdout
        return {f for f in out.decode().split("\0") if f and (root / f).is_file()}

    tracked, untracked = ls("--cached"), ls("--others", "--exclude-standard")
    outs = _pipeline_outs(root)
    untracked = {f for f in untracked if not any(f == o or f.startswith(o + "/") for o in outs)}
    return sorted(tracked | untracked)


def _pipeline_outs(root: Path) -> list[str]:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return [os.path.relpath(out.fs_path, root) for stage in repo.index.stages for out in stage.outs]


def set_dotted(d: dict, key: str, value: Any) -> bool:
    """d['a']['b'] = value for key 'a.b'; False (and no change) when a parent key is missing."""
    *parents, last = key.split(".")
    for k in parents:
        if not isinstance(d.get(k), dict):
            return False
        d = d[k]
    if last not in d:
        return False
    d[last] = value
    return True


def edit_params(repo: Path, changes: Mapping[str, Any]) -> list[str]:
    """Apply dotted-key changes to repo/params.yaml; return the keys that existed and were set."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    done = [k for k, v in changes.items() if set_dotted(params, k, v)]
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return done


# What a copy must hold for every stage of dvc.yaml to run: checked by init_project, so a file layout change
# that project_files misses fails here with a clear message instead of inside `dvc repro`.
REQUIRED = ("dvc.yaml", "params.yaml", "speech_calibration/__init__.py", "speech_calibration/layout.py",
            "stages/__init__.py", "stages/prepare.py", ".dvc/plots/reliability.json", ".dvc/plots/by_system_bar.json")


def init_project(dest: Path, params: Mapping[str, Any] | None = None) -> Path:
    """Copy the project into dest, apply params edits (each key must exist), `git init` and commit. Returns dest."""
    dest.mkdir(parents=True, exist_ok=True)
    files = project_files()
    missing = [f for f in REQUIRED if f not in files]
    assert not missing, f"project_files() lacks {missing}: the temporary project could not run the pipeline"
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / rel, target)
    if params:
        done = edit_params(dest, params)
        absent = [k for k in params if k not in done]
        assert not absent, (f"params.yaml has no {absent}: init_project could not set them (renamed or removed?); "
                            "update the edits passed to init_project (tests/dvc_helpers.SHRINK)")
    git("init", "-q", "-b", "main", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-q", "-m", "project copy", cwd=dest)
    return dest


def commit_all(repo: Path, message: str) -> None:
    """git add -A and commit (the dvc.lock, the uncached headline metrics and plots, the .gitignore files DVC wrote)."""
    git("add", "-A", cwd=repo)
    if git("diff", "--cached", "--quiet", cwd=repo, check=False).returncode:
        git("commit", "-q", "-m", message, cwd=repo)


def copy_repo(src: Path, dest: Path) -> Path:
    """A full copy of a project (git history, DVC cache, workspace), without DVC's tmp state."""
    shutil.copytree(src, dest, symlinks=True, ignore=_ignore_dvc_tmp(src))
    return dest


def _ignore_dvc_tmp(root: Path):
    tmp = (root / ".dvc" / "tmp").resolve()

    def ignore(directory: str, names: list[str]) -> list[str]:
        return ["tmp"] if Path(directory).resolve() == tmp.parent and "tmp" in names else []
    return ignore


STAGE_RAN = re.compile(r"Running stage '([^']+)'")


def stages_run(output: str) -> set[str]:
    """Names of the stages `dvc repro` / `dvc exp run` executed, from their output."""
    return set(STAGE_RAN.findall(output))


def stage_names(repo: Path) -> set[str]:
    """Every stage of the pipeline (foreach stages expanded), from `dvc stage list`."""
    out = dvc("stage", "list", "--name-only", cwd=repo).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def tree_digest(root: Path, rel_dirs: Sequence[str]) -> dict[str, str]:
    """sha256 of every file under the given folders (relative paths as keys)."""
    digest = {}
    for rel in rel_dirs:
        base = root / rel
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for f in files:
            digest[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return digest


def metrics_json(repo: Path) -> dict:
    """`dvc metrics show --json` of the workspace: {path: {"data": {...}} or {"error": ...}}."""
    shown = json.loads(dvc("metrics", "show", "--json", cwd=repo).stdout)
    (rev,) = shown.values()  # one revision (the workspace; DVC keys it "" or "workspace")
    return rev["data"]


def exp_show_json(repo: Path, *args: str) -> list:
    return json.loads(dvc("exp", "show", "--json", *args, cwd=repo).stdout)
