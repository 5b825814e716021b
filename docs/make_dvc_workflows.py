"""Regenerate the example outputs in docs/dvc-workflows.md from a real run, so that they cannot go stale.

Run it from the root of a reproduced and committed project (the README's first command, then
``git add -A && git commit -m "Baseline run"``). It copies the project to a temporary folder, runs there the
commands the doc shows, in the doc's order, and rewrites the code block that follows each marker line
``<!-- output: NAME -->`` with what the command printed, and the ``<!-- generated ... -->`` line with the commit,
the DVC version, the machine and the date. Your project is not touched; only the doc is rewritten.

    python docs/make_dvc_workflows.py            # about 4 minutes on a 2-core CPU
    python docs/make_dvc_workflows.py --check    # only check that the doc's markers are the ones this script fills
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

DOC = Path(__file__).with_name("dvc-workflows.md")
METHODS = ("temperature", "platt", "isotonic")
COMPACT = r"Experiment|calibration\.method|metrics/headline/fine_tuned/calibrated\.json:(ece|acc)$"
QUEUE_KEEP = r"Experiment|calibration\.method|metrics/headline/fine_tuned/(un)?calibrated\.json:ece$"
MARKER = re.compile(r"^<!-- output: (?P<name>[a-z0-9-]+) -->\n```\n(?P<body>.*?)```\n", re.M | re.S)
GENERATED = re.compile(r"^<!-- generated .*? -->$", re.M)


def sh(*cmd: str, cwd: Path) -> str:
    env = {**os.environ, "COLUMNS": "200", "DVC_NO_ANALYTICS": "1"}
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"error: `{' '.join(cmd)}` failed in {cwd} (exit {res.returncode}): {res.stderr.strip()[-500:]}")
    return res.stdout


def _ran(out: str) -> str:
    """The stages a `dvc exp run` / `dvc repro` ran, one line."""
    ran = re.findall(r"^Running stage '([^']+)'", out, re.M)
    return f"stages run ({len(ran)}): {', '.join(ran)}\n"


def _timed(fn: Callable[[], str]) -> tuple[str, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def _wait_for_queue(repo: Path, timeout_s: float = 1800) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = sh("dvc", "queue", "status", cwd=repo)
        if not re.search(r"\b(Queued|Running)\b", status):
            if "Failed" in status:
                raise SystemExit(f"error: a queued experiment failed:\n{status}")
            return
        time.sleep(5)
    raise SystemExit(f"error: the queue did not finish within {timeout_s:.0f} s")


def outputs(project: Path) -> dict[str, str]:
    """Run the doc's commands on a copy of ``project``; {marker name: output}."""
    if sh("git", "status", "--porcelain", cwd=project).strip():
        raise SystemExit(f"error: {project}: commit first (git status is not clean); the doc starts from a committed baseline")
    if "up to date" not in sh("dvc", "status", cwd=project):
        raise SystemExit(f"error: {project}: run `dvc repro` and commit first; the doc starts from a reproduced study")
    with tempfile.TemporaryDirectory(prefix="dvc-workflows-") as tmp:
        repo = Path(tmp) / "repo"
        shutil.copytree(project, repo, symlinks=True, ignore=shutil.ignore_patterns(".venv", "dvc_plots"))
        out = {"metrics-show": sh("dvc", "metrics", "show", cwd=repo)}
        ran, seconds = _timed(lambda: sh("dvc", "exp", "run", "-n", "platt", "-S", "calibration.method=platt", cwd=repo))
        out["exp-run-platt"] = _ran(ran) + f"wall time: {seconds:.0f} s\n"
        out["exp-show-compact"] = sh("dvc", "exp", "show", "--drop", ".*", "--keep", COMPACT, "--md", cwd=repo)
        out["metrics-diff"] = sh("dvc", "metrics", "diff", cwd=repo)
        sh("git", "checkout", "HEAD", "--", ".", cwd=repo)
        sh("dvc", "checkout", cwd=repo)
        for m in METHODS:
            sh("dvc", "exp", "run", "--queue", "-n", f"cal-{m}", "-S", f"calibration.method={m}", cwd=repo)
        started = time.perf_counter()
        sh("dvc", "queue", "start", "-j", "1", cwd=repo)
        _wait_for_queue(repo)
        seconds = time.perf_counter() - started
        out["queue-exp-show"] = (f"# {len(METHODS)} queued experiments, one worker: {seconds:.0f} s\n"
                                 + sh("dvc", "exp", "show", "--no-pager", "--drop", ".*", "--keep", QUEUE_KEEP, cwd=repo))
    return out


def generated_line(project: Path) -> str:
    # the last commit that changed the code or the pipeline (the project's own HEAD may be a "Baseline run" commit)
    commit = sh("git", "log", "-1", "--format=%h", "--", "speech_calibration", "stages", "dvc.yaml", "params.yaml",
                cwd=project).strip()
    dvc_version = sh("dvc", "--version", cwd=project).strip()
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    return (f"<!-- generated by docs/make_dvc_workflows.py: code of commit {commit}, DVC {dvc_version}, {machine}, "
            f"{dt.date.today().isoformat()} -->")


def markers(text: str) -> list[str]:
    return [m["name"] for m in MARKER.finditer(text)]


def fill(text: str, outs: dict[str, str], generated: str | None = None) -> str:
    """``text`` with the code block after each ``<!-- output: NAME -->`` replaced by ``outs[NAME]``."""
    missing = [name for name in markers(text) if name not in outs]
    if missing:
        raise SystemExit(f"error: {DOC}: markers {missing} have no command in {Path(__file__).name}")

    def block(m: re.Match) -> str:
        body = outs[m["name"]].rstrip("\n") + "\n"
        return f"<!-- output: {m['name']} -->\n```\n{body}```\n"

    text = MARKER.sub(block, text)
    return GENERATED.sub(generated, text) if generated else text


EXPECTED = ("metrics-show", "exp-run-platt", "exp-show-compact", "metrics-diff", "queue-exp-show")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only check the doc's markers against this script's commands")
    p.add_argument("--project", default=".", help="the reproduced, committed project (default: the current folder)")
    args = p.parse_args(argv)
    text = DOC.read_text()
    if sorted(markers(text)) != sorted(EXPECTED):
        raise SystemExit(f"error: {DOC}: markers {markers(text)} differ from the script's {list(EXPECTED)}")
    if args.check:
        return
    project = Path(args.project).resolve()
    DOC.write_text(fill(text, outputs(project), generated_line(project)))
    print(f"rewrote {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
