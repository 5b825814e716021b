"""``python -m speech_calibration.tidy``: it removes the outputs of stages the pipeline no longer has, and nothing else.

A real git + DVC repository with a small pipeline of the project's shape (a per-seed stage writing into folders a
fan-in stage reads, a base-model folder the per-seed stage reads); DVC only has to read ``dvc.yaml``, so nothing
is reproduced. The round trip on the real pipeline (add a seed, go back, tidy, `git status` and `dvc status`
clean) is ``test_dvc_workflows.py::test_adding_a_seed_trains_only_the_new_seed``.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from speech_calibration import tidy
from tests.dvc_helpers import dvc, git

DVC_YAML = """\
stages:
  evaluate:
    foreach: ${seeds}
    do:
      cmd: echo
      deps: [models/base]
      outs:
        - models/seed_${item}
        - evaluation/seed_${item}
        - metrics/test/seed_${item}.json
        - metrics/train/seed_${item}/metrics.json
  evaluate_eval_set:
    foreach: ${eval_sets}
    do:
      cmd: echo
      outs:
        - metrics/eval_sets/${key}.json
  aggregate:
    cmd: echo
    deps: [metrics/test, evaluation, metrics/eval_sets]
    outs:
      - metrics/summary.json
    metrics:
      - metrics/headline:
          cache: false
"""


def _touch(root: Path, *paths: str) -> None:
    for rel in paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git("init", "-q", cwd=root)
    dvc("init", "-q", cwd=root)
    (root / "params.yaml").write_text("seeds:\n  - 1\n  - 2\neval_sets:\n  kept: data/kept\n")
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / ".gitignore").write_text("/models/ignored_download/\n/models/seed_1\n/models/seed_2\n")
    _touch(root, "models/README.md", "metrics/test/notes.md")
    git("add", "-A", cwd=root)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project", cwd=root)
    # the current seeds' outputs, the base model a stage reads, a git-ignored download, a file of your own elsewhere
    _touch(root, "models/seed_1/adapter.bin", "evaluation/seed_1/test.csv", "metrics/test/seed_1.json",
           "metrics/test/seed_2.json", "metrics/summary.json", "metrics/headline/seed_1/cal.json",
           "metrics/headline/seed_2/cal.json", "metrics/eval_sets/kept.json",
           "metrics/headline/eval_sets/kept/seed_1/cal.json", "models/base/weights.bin",
           "models/ignored_download/weights.bin", "notes/mine.txt")
    return root


def test_removes_a_removed_seeds_outputs_and_nothing_else(repo):
    leftovers = ["models/seed_7/adapter.bin", "evaluation/seed_7/test.csv", "metrics/test/seed_7.json",
                 "metrics/headline/seed_7/cal.json", "plots/test/seed_7_test_reliability.png"]
    _touch(repo, *leftovers)
    before = {p for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts and ".dvc" not in p.parts}
    assert [str(p) for p in tidy.tidy(repo, dry_run=True)] == [
        "evaluation/seed_7", "metrics/headline/seed_7", "metrics/test/seed_7.json", "models/seed_7",
        "plots/test/seed_7_test_reliability.png"]
    assert {p for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts and ".dvc" not in p.parts} == before
    tidy.tidy(repo)
    after = {p for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts and ".dvc" not in p.parts}
    assert before - after == {repo / p for p in leftovers}
    assert tidy.stale_outputs(repo) == []


def test_the_gitignore_dvc_wrote_in_a_removed_seeds_new_folder_goes_with_it(repo):
    """A new seed's cached ``metrics/train/seed_N/metrics.json`` makes DVC write ``/metrics.json`` into a folder new to
    git. Going back, ``dvc checkout`` removes the file and leaves the .gitignore: staged after ``dvc repro``
    (``git checkout HEAD -- .`` keeps it), untracked after ``dvc exp run``. Either goes with the seed's folder, out
    of the index too. So does one that names only outputs no stage declares and nothing left (an evaluation set's
    metrics, taken out again); one naming a removed set's audio, still there, stays and keeps it ignored.
    One of DVC's for a current seed's output stays, one staged beside other outputs stays (a first run, not committed
    yet), one that also names a current output stays, and a .gitignore of your own keeps its folder."""
    dvc_lines = "/metrics.json\n"
    for rel in ("metrics/train/seed_7/.gitignore", "metrics/train/seed_8/.gitignore", "metrics/train/seed_1/.gitignore"):
        (repo / rel).parent.mkdir(parents=True)
        (repo / rel).write_text(dvc_lines)
    _touch(repo, "evaluation/.gitignore", "metrics/train/seed_9/.gitignore", "metrics/eval_sets/.gitignore",
           "models/.gitignore", "metrics/test/.gitignore")
    (repo / "metrics/test/.gitignore").write_text("/seed_2.json\n")  # a current seed's output
    (repo / "evaluation/.gitignore").write_text("/seed_1\n")
    (repo / "metrics/train/seed_9/.gitignore").write_text("*.tmp\n")  # yours, staged
    (repo / "metrics/eval_sets/.gitignore").write_text("/gone.json\n")  # an evaluation set taken out again
    (repo / "models/.gitignore").write_text("/gone\n/seed_1\n")  # names a current output too
    _touch(repo, "data/eval_sets/gone/a.flac", "data/eval_sets/.gitignore")  # a removed set's audio, still there
    (repo / "data/eval_sets/.gitignore").write_text("/gone\n")
    _touch(repo, "plots/.gitignore", "metrics/test/foo/x.txt", "metrics/test/foo/seed_7/.gitignore")
    (repo / "plots/.gitignore").write_text("/*.html\n")  # yours: DVC escapes the glob characters it writes
    (repo / "metrics/test/foo/seed_7/.gitignore").write_text("/metrics.json\n")  # inside a folder that goes anyway
    git("add", "metrics/train/seed_7/.gitignore", "metrics/test/.gitignore", "evaluation/.gitignore",
        "metrics/train/seed_9/.gitignore", "metrics/eval_sets/.gitignore", cwd=repo)
    assert [str(p) for p in tidy.stale_outputs(repo)] == [
        "metrics/eval_sets/.gitignore", "metrics/test/foo", "metrics/train/seed_7", "metrics/train/seed_8"]
    tidy.tidy(repo)
    for gone in ("metrics/train/seed_7", "metrics/train/seed_8", "metrics/eval_sets/.gitignore", "metrics/test/foo"):
        assert not (repo / gone).exists(), gone
    staged = git("diff", "--cached", "--name-only", cwd=repo).stdout.split()
    assert staged == ["evaluation/.gitignore", "metrics/test/.gitignore", "metrics/train/seed_9/.gitignore"]
    for kept in ("models/.gitignore", "data/eval_sets/.gitignore", "plots/.gitignore", "metrics/train/seed_1/.gitignore"):
        assert (repo / kept).is_file(), kept


def test_a_new_evaluation_sets_gitignore_goes_when_no_set_is_left(repo):
    """With no evaluation set (the shipped ``eval_sets: {}``), ``aggregate`` reads ``metrics/eval_sets`` as a plain
    folder; the .gitignore DVC wrote there for a set that was tried and taken out goes all the same, and with
    ``-f`` also when DVC added a line after staging it."""
    (repo / "params.yaml").write_text("seeds:\n  - 1\n  - 2\neval_sets: {}\n")
    ignore = repo / "metrics/eval_sets/.gitignore"
    ignore.write_text("/mine.json\n")
    git("add", "metrics/eval_sets/.gitignore", cwd=repo)
    ignore.write_text("/mine.json\n/other.json\n")
    stale = [str(p) for p in tidy.stale_outputs(repo)]
    assert "metrics/eval_sets/.gitignore" in stale, stale  # beside the fixture's set `kept`, now taken out too
    tidy.tidy(repo)
    assert not ignore.exists()
    assert git("ls-files", "--", "metrics/eval_sets", cwd=repo).stdout == ""  # out of the index too


def test_removes_a_removed_evaluation_sets_headline_files_and_nothing_else(repo):
    """Going back from ``dvc exp run -S '+eval_sets.gone=...'`` leaves the set's headline folder (and its metrics
    JSON) untracked; both go. A set still in params.yaml keeps its headline files, but for a removed seed's."""
    _touch(repo, "metrics/headline/eval_sets/gone/fine_tuned/cal.json", "metrics/eval_sets/gone.json",
           "metrics/headline/eval_sets/kept/seed_7/cal.json")
    assert [str(p) for p in tidy.stale_outputs(repo)] == [
        "metrics/eval_sets/gone.json", "metrics/headline/eval_sets/gone", "metrics/headline/eval_sets/kept/seed_7"]


def test_a_base_model_no_stage_reads_any_more_is_kept(repo):
    """A folder of your own beside the seeds' outputs (a downloaded base model) is kept once no stage reads it,
    like a git-ignored one and your files outside the output folders; only seed-named leftovers go there."""
    (repo / "dvc.yaml").write_text(DVC_YAML.replace("deps: [models/base]", "deps: []"))
    _touch(repo, "models/seed_9/adapter.bin", "metrics/test/anything.json")
    assert [str(p) for p in tidy.stale_outputs(repo)] == ["metrics/test/anything.json", "models/seed_9"]


def test_removes_what_a_killed_atomic_write_left_beside_a_declared_output(repo):
    """SIGKILL runs no clean-up: the temporary folder of ``atomic_dir`` and file of ``atomic_path`` stay beside the
    outputs they were to replace (``data/processed/.grouped_split.*`` in the project, where no stage reads the
    folder whole). Both go; a dot-file of your own there stays, as does one shaped like a temporary of a name no
    stage declares."""
    code = ("import sys, time; from pathlib import Path; from speech_calibration import fileio\n"
            "root = Path(sys.argv[1])\n"
            "with fileio.atomic_dir(root / 'models/seed_1') as d, fileio.atomic_path(root / 'metrics/summary.json') as f:\n"
            "    (d / 'adapter_config.json').write_text('{}'); f.write_text('{}'); print('ready', flush=True)\n"
            "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(repo)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.kill()
        proc.wait()
    _touch(repo, "models/.mine", "metrics/.notes.abcd1234.md")
    temps = sorted(str(p.relative_to(repo)) for p in [*repo.glob("models/.seed_1.*"), *repo.glob("metrics/.summary.json.*")])
    assert len(temps) == 2
    assert [str(p) for p in tidy.stale_outputs(repo)] == temps
    tidy.tidy(repo)
    assert not [*repo.glob("models/.seed_1.*"), *repo.glob("metrics/.summary.json.*")]
    assert (repo / "models/.mine").is_file() and (repo / "metrics/.notes.abcd1234.md").is_file()


def test_outside_git_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        from speech_calibration.cli import run
        run(tidy.main, ["--root", str(tmp_path), "--dry-run"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err


def _commit(root: Path, message: str) -> None:
    (root / "notes").mkdir(exist_ok=True)
    (root / "notes" / f"{message}.txt").write_text(message)
    git("add", "notes", cwd=root)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, cwd=root)


def test_says_how_to_get_back_after_an_interrupted_experiment(repo, caplog):
    """A killed ``dvc exp run`` leaves HEAD detached beside DVC's executor refs, EXEC_BASELINE among them (seen by
    killing one on this project). Here that state is made with git itself; following the advice puts HEAD back
    on the branch, with any commit made meanwhile."""
    branch = git("symbolic-ref", "--short", "HEAD", cwd=repo).stdout.strip()
    assert tidy.interrupted_experiment(repo) is None  # on a branch
    git("checkout", "-q", "--detach", cwd=repo)
    git("update-ref", "refs/exps/exec/EXEC_HEAD", "HEAD", cwd=repo)  # what every finished workspace run keeps
    assert tidy.interrupted_experiment(repo) is None  # detached by choice after a finished experiment
    git("update-ref", "refs/exps/exec/EXEC_BASELINE", "HEAD", cwd=repo)  # a run that never cleaned up
    hint = tidy.interrupted_experiment(repo)
    assert f"`git switch {branch}` returns to your branch" in hint and "stopped before re-attaching" in hint
    assert hint.endswith("git update-ref -d refs/exps/exec/EXEC_BASELINE && git update-ref -d refs/exps/exec/EXEC_HEAD")
    _commit(repo, "on-no-branch")  # what happens next when nobody notices
    caplog.set_level("WARNING", logger="speech_calibration.tidy")
    tidy.tidy(repo, dry_run=True)
    hint = caplog.records[0].getMessage()
    assert f"`git switch -C {branch}` moves your branch to the 1 commit(s)" in hint
    advice = [c for c in hint.split("`")[1::2] if c.startswith("git ")] + hint.split("; then ")[1].split(" && ")
    for command in advice:  # as written
        git(*command.split()[1:], cwd=repo)
    assert tidy.interrupted_experiment(repo) is None
    assert git("symbolic-ref", "--short", "HEAD", cwd=repo).stdout.strip() == branch
    assert git("log", "-1", "--format=%s", cwd=repo).stdout.strip() == "on-no-branch"
    assert git("for-each-ref", "refs/exps/exec", cwd=repo).stdout.strip() == ""


def test_an_experiment_run_again_on_the_detached_head_is_recognised(repo):
    """After the kill, the next ``dvc exp run`` cleans up its refs but re-attaches HEAD to the bare commit it
    started on (reflog: ``dvc: Restore HEAD to '<sha>'``, seen on this project); a later detach of your own is not
    taken for it."""
    branch = git("symbolic-ref", "--short", "HEAD", cwd=repo).stdout.strip()
    sha = git("rev-parse", "HEAD", cwd=repo).stdout.strip()
    git("checkout", "-q", "--detach", cwd=repo)
    _commit(repo, "dvc-commit-experiment")  # DVC commits the experiment on HEAD, then moves HEAD back
    git("update-ref", "--no-deref", "-m", f"dvc: Restore HEAD to '{sha}'", "HEAD", sha, cwd=repo)
    hint = tidy.interrupted_experiment(repo)
    assert hint == (f"git is on a detached HEAD ({sha[:7]}): the last `dvc exp run` ran on it, as one does after an "
                    f"interrupted run. `git switch {branch}` returns to your branch")
    git("switch", "-q", branch, cwd=repo)
    git("checkout", "-q", "--detach", cwd=repo)  # your own, later
    assert tidy.interrupted_experiment(repo) is None


def test_detached_head_whose_branch_also_moved_is_kept_on_a_branch_of_its_own(repo):
    branch = git("symbolic-ref", "--short", "HEAD", cwd=repo).stdout.strip()
    git("checkout", "-q", "--detach", cwd=repo)
    git("update-ref", "refs/exps/exec/EXEC_BASELINE", "HEAD", cwd=repo)
    _commit(repo, "detached")
    git("switch", "-q", branch, cwd=repo)
    _commit(repo, "on-branch")
    git("checkout", "-q", "HEAD@{2}", cwd=repo)  # back on the detached commit: @{-1} is the branch again
    hint = tidy.interrupted_experiment(repo)
    assert f"HEAD and {branch} have both moved on: `git switch -c rescued`" in hint
