"""speech_calibration.parallel: the forked map gives what a plain loop gives, in order, and raises what it raises; a
dead worker is one line naming the fix, and no worker outlives a killed stage. (tests/test_conditions.py and
tests/test_calibrate_evaluate_aggregate.py check that the two reports that use it write the same files on one
process or two.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from speech_calibration import parallel
from speech_calibration.errors import UserError
from speech_calibration.parallel import WORKERS_ENV, available_cpus, map_forked

LINUX = sys.platform.startswith("linux")
ROOT = Path(__file__).resolve().parents[1]


def _square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def _fails_on_three(x: int) -> int:
    if x == 3:
        raise UserError("item 3: not allowed")
    return x


def _dies_on_two(x: int) -> int:
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def _terminates_itself_on_one(x: int) -> int:
    if x == 1:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    return x


def _nested(x: int) -> list[int]:
    return map_forked(abs, [x, -x], workers=2)


def test_results_come_back_in_order():
    out = map_forked(_square_and_pid, list(range(20)), workers=2)
    assert [square for square, _ in out] == [x * x for x in range(20)]


@pytest.mark.skipif(not LINUX, reason="map_forked forks on Linux only; elsewhere it runs the items in this process")
def test_on_linux_the_items_run_in_forked_workers():
    assert os.getpid() not in {pid for _, pid in map_forked(_square_and_pid, list(range(20)), workers=2)}


def test_one_worker_or_one_item_runs_here(monkeypatch):
    assert map_forked(_square_and_pid, [1, 2, 3], workers=1) == [(1, os.getpid()), (4, os.getpid()), (9, os.getpid())]
    assert map_forked(_square_and_pid, [5], workers=2) == [(25, os.getpid())]
    assert map_forked(_square_and_pid, [], workers=2) == []
    monkeypatch.setenv(WORKERS_ENV, "1")
    assert {pid for _, pid in map_forked(_square_and_pid, list(range(6)))} == {os.getpid()}


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_a_bad_workers_variable_is_one_line_naming_it(monkeypatch, value):
    monkeypatch.setenv(WORKERS_ENV, value)
    with pytest.raises(UserError, match=f"{WORKERS_ENV}={value!r}: not a positive integer"):
        map_forked(_square_and_pid, [1, 2])
    with pytest.raises(ValueError, match="workers must be >= 1"):
        map_forked(_square_and_pid, [1, 2], workers=0)


def test_a_workers_exception_is_raised_here_with_its_message():
    with pytest.raises(UserError, match="item 3: not allowed"):
        map_forked(_fails_on_three, list(range(6)), workers=2)
    assert map_forked(_fails_on_three, [0, 1, 2], workers=2) == [0, 1, 2]  # usable again afterwards


@pytest.mark.skipif(not LINUX, reason="no worker processes off Linux")
def test_a_dead_worker_is_one_line_naming_the_fix():
    with pytest.raises(UserError, match=f"a worker process died .* {WORKERS_ENV}=1"):
        map_forked(_dies_on_two, list(range(6)), workers=2)
    with pytest.raises(RuntimeError, match="cannot be nested"):
        map_forked(_nested, [1, 2], workers=2)
    assert map_forked(_nested, [1], workers=2) == [[1, 1]]  # one item runs here, and its own map may fork


def _worker_pids(folder: Path, n: int = 2, timeout: float = 60.0) -> list[int]:
    """The pids the workers wrote to ``folder/worker_*`` once all ``n`` have started (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while len(list(folder.glob("worker_*"))) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return [int(p.read_text()) for p in sorted(folder.glob("worker_*"))]


def _assert_all_end(pids: list[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if _alive(pid)]


def _alive(pid: int) -> bool:
    """Running or sleeping (a zombie waiting for whoever adopted it counts as gone)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not LINUX, reason="no worker processes off Linux")
def test_no_worker_outlives_a_killed_stage(tmp_path):
    """SIGKILL to the process that called map_forked (what the OOM killer or a timeout does) ends its workers too."""
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from speech_calibration.parallel import map_forked

        def wait(i):
            open(os.path.join({str(tmp_path)!r}, f"worker_{{i}}"), "w").write(str(os.getpid()))
            time.sleep(120)

        map_forked(wait, [0, 1], workers=2)
    """)
    stage = subprocess.Popen([sys.executable, "-c", script])
    try:
        pids = _worker_pids(tmp_path)
        assert len(pids) == 2 and all(_alive(pid) for pid in pids), pids
    finally:
        stage.kill()
        stage.wait()
    _assert_all_end(pids)


def test_a_container_cpu_quota_caps_the_workers(tmp_path):
    assert parallel._cgroup_cpu_limit(tmp_path) is None  # no cgroup files: no quota
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert parallel._cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert parallel._cgroup_cpu_limit(tmp_path) == 1.5
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert parallel._cgroup_cpu_limit(v1) is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    assert parallel._cgroup_cpu_limit(v1) == 3.0


def test_available_cpus_is_the_affinity_capped_by_the_quota_rounded_up(monkeypatch):
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.setattr(parallel, "_cgroup_cpu_limit", lambda: None)
    assert available_cpus() == affinity
    monkeypatch.setattr(parallel, "_cgroup_cpu_limit", lambda: 0.5)
    assert available_cpus() == 1
    monkeypatch.setattr(parallel, "_cgroup_cpu_limit", lambda: affinity + 3.0)
    assert available_cpus() == affinity


@pytest.mark.skipif(not LINUX, reason="forked workers on Linux only")
@pytest.mark.parametrize("how", ["sigterm_to_the_stage", "ctrl_c_to_the_group"])
def test_a_stopped_stage_ends_at_once_with_no_temporary_left_and_no_worker(tmp_path, how):
    """SIGTERM to a stage (kill, timeout, a scheduler), or Ctrl-C to its process group, in the middle of its own atomic
    write and of its workers' (map_forked items that write figures): the stage ends within seconds, not after its
    workers' items (120 s each here), with one line and exit 143 / 130; every temporary file is gone, the stage's
    and the workers', the old output is untouched, and no worker is left (review: workers killed without unwinding
    left their temporary figures behind)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.csv").write_text("old")
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from speech_calibration.cli import run
        from speech_calibration.fileio import atomic_path
        from speech_calibration.parallel import map_forked

        def draw(i):
            with atomic_path(os.path.join({str(out)!r}, f"figure_{{i}}.png")) as tmp:
                tmp.write_text("half")
                open(os.path.join({str(tmp_path)!r}, f"worker_{{i}}"), "w").write(str(os.getpid()))
                time.sleep(120)

        def main(argv):
            with atomic_path({str(out / "result.csv")!r}) as tmp:
                tmp.write_text("half")
                map_forked(draw, [0, 1], workers=2)

        run(main)
    """)
    stage = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        pids = _worker_pids(tmp_path)
        assert len(pids) == 2, pids
        if how == "sigterm_to_the_stage":
            stage.send_signal(signal.SIGTERM)
        else:
            os.killpg(stage.pid, signal.SIGINT)
        _, err = stage.communicate(timeout=20)
    finally:
        stage.kill()
    status, line = (143, "error: terminated") if how == "sigterm_to_the_stage" else (130, "error: interrupted")
    assert stage.returncode == status, err
    assert err.strip().splitlines()[-1].startswith(line) and "Traceback" not in err, err
    _assert_all_end(pids)
    assert [p.name for p in out.iterdir()] == ["result.csv"] and (out / "result.csv").read_text() == "old"


@pytest.mark.skipif(not LINUX, reason="forked workers on Linux only")
def test_a_worker_does_not_inherit_the_stages_sigterm_handler():
    """A worker that gets SIGTERM dies of it, as a process should; it does not raise the stage's Terminated, which
    would come back here as if the stage itself had been stopped."""
    from speech_calibration import cli
    from speech_calibration.errors import Terminated

    previous = signal.signal(signal.SIGTERM, cli._terminated)  # what cli.run installs in a stage
    try:
        with pytest.raises(UserError, match="a worker process died"):
            map_forked(_terminates_itself_on_one, [0, 1, 2], workers=2)
    except Terminated:
        pytest.fail("the worker raised the stage's Terminated")
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_cli_run_gives_the_callers_sigterm_handler_back():
    """cli.run turns SIGTERM into Terminated while a stage runs; a caller that goes on afterwards (a test, a notebook)
    gets its own handler back, whether the stage returned or failed."""
    from speech_calibration import cli

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        cli.run(lambda argv: None, [])
        assert signal.getsignal(signal.SIGTERM) is mine

        def fails(argv):
            raise UserError("no")

        with pytest.raises(SystemExit):
            cli.run(fails, [])
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)

