"""Wall-clock figures of the embedded default pipeline on this machine, from a fresh clone.

Clones the repository's committed state into a temporary folder and, with this Python environment's
``dvc``, measures: the first ``dvc repro`` (every stage, three seeds), a second ``dvc repro`` (nothing to
do), a calibration-only ``dvc exp run -S calibration.method=platt``, one back to the committed
``calibration.method=temperature`` (every stage restored from DVC's run-cache), and one seed's ``calibrate`` and
``evaluate`` stages run directly; it also reads each seed's training time from ``train_info.json``.
Prints JSON and a table. The targets: ``dvc repro`` <= 5 min on 2 CPU cores, the
calibration-only experiment <= 20 s. Run it on an otherwise idle machine: other work on the cores
shows up in every figure.

    python -m benchmarks.cpu_pipeline --out benchmarks/results_cpu_pipeline.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(args: list[str], cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(args)} failed in {cwd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return round(seconds, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=ROOT, help="the git repository to clone (default: this one)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone and print its path")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()

    bin_dir = Path(sys.executable).parent
    dvc = shutil.which("dvc", path=str(bin_dir))
    if dvc is None:
        raise SystemExit(f"error: no dvc next to {sys.executable}; install the project first (pip install -e .)")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
           "DVC_NO_UPDATER": "1", "GIT_AUTHOR_NAME": "bench", "GIT_COMMITTER_NAME": "bench",
           "GIT_AUTHOR_EMAIL": "bench@example.invalid", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
    work = Path(tempfile.mkdtemp(prefix="cpu_pipeline_"))
    clone = work / "repo"
    try:
        result = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                  "load_avg_1min_before": round(os.getloadavg()[0], 2),
                  "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.repo, capture_output=True,
                                           text=True).stdout.strip()}
        result["git_clone_s"] = timed(["git", "clone", "-q", str(args.repo), str(clone)], work, env)
        result["dvc_repro_s"] = timed([dvc, "repro"], clone, env)
        result["dvc_repro_again_s"] = timed([dvc, "repro"], clone, env)
        result["train_s_per_seed"] = {
            p.parent.name: json.loads(p.read_text())["wall_time_s"] for p in sorted(clone.glob("models/seed_*/train_info.json"))}
        timed(["git", "add", "-A"], clone, env)
        timed(["git", "commit", "-qm", "dvc repro"], clone, env)
        result["exp_run_platt_s"] = timed([dvc, "exp", "run", "-S", "calibration.method=platt"], clone, env)
        result["exp_run_back_s"] = timed([dvc, "exp", "run", "-S", "calibration.method=temperature"], clone, env)
        result["calibrate_seed_s"] = timed([sys.executable, "-m", "stages.calibrate", "--seed", "42"], clone, env)
        result["evaluate_seed_s"] = timed([sys.executable, "-m", "stages.evaluate", "--seed", "42"], clone, env)
        result["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    finally:
        if args.keep:
            print(f"clone kept at {clone}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(json.dumps(result, indent=2))
    print()
    print(f"{'what':<52} {'seconds':>8}")
    for key, label in [("dvc_repro_s", "dvc repro (fresh clone, every stage, 3 seeds)"),
                       ("dvc_repro_again_s", "dvc repro again (nothing to do)"),
                       ("exp_run_platt_s", "dvc exp run -S calibration.method=platt"),
                       ("exp_run_back_s", "dvc exp run back to temperature (run-cache)"),
                       ("calibrate_seed_s", "python -m stages.calibrate --seed 42"),
                       ("evaluate_seed_s", "python -m stages.evaluate --seed 42")]:
        print(f"{label:<52} {result[key]:>8.1f}")
    for seed, seconds in result["train_s_per_seed"].items():
        print(f"{'training loop, ' + seed:<52} {seconds:>8.1f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
