"""Remove the outputs of stages that ``dvc.yaml`` no longer has (a seed taken out of ``params.yaml``).

A stage that reads every seed (``aggregate``, ``conditions``, ``evaluate_eval_set@*``) depends on a folder:
DVC cannot list one file per seed of a list in params. Going back from an experiment that added a seed
(``git checkout HEAD -- . && dvc checkout``) leaves that seed's outputs behind, untracked by git (``git status``
lists them) and inside folders that DVC then sees as changed. This command removes exactly those: each file or
folder under the pipeline's output roots (:data:`speech_calibration.layout.OUTPUT_ROOTS`) that ``git status``
reports as untracked, that no stage reads, and that is either

* named for a seed that no output of the current ``dvc.yaml`` names (``models/seed_7``, ``plots/test/seed_7_*``,
  ``metrics/headline/seed_7/``), or
* the headline folder of an evaluation set that the current ``dvc.yaml`` no longer evaluates
  (``metrics/headline/eval_sets/<name>/`` without a declared ``metrics/eval_sets/<name>.json``), or
* inside a folder that a stage reads whole and other stages write into (``metrics/test/``, ``evaluation/``,
  ``models/calibrators/`` ...), where no stage declares it, or
* the temporary of an atomic write that a killed stage left beside a declared output
  (``data/processed/.grouped_split.k2j4x9_a/``, ``metrics/.data.json.abcd1234.json``; see :func:`is_leftover`).

Files git tracks or ignores, other folders of your own (a downloaded base model in ``models/``), an evaluation
set's audio and the base model a stage reads are never touched; neither are the current seeds' new outputs.
One exception: a ``.gitignore`` that DVC wrote and HEAD lacks (``metrics/train/seed_7/.gitignore`` for a new
seed's cached ``metrics.json``, ``metrics/eval_sets/.gitignore`` for a new evaluation set's) is left behind when
going back: staged by ``dvc repro`` (``core.autostage``; ``git checkout HEAD -- .`` keeps what HEAD lacks),
untracked after ``dvc exp run``. One that holds only DVC's ``/name`` lines goes (out of git's index too, where it
was staged) with the folder of a seed named above, or on its own once nothing it names is an output of the current
``dvc.yaml`` or still there (so a removed evaluation set's audio stays ignored).

It also says, in one line, how to get back onto your branch when an interrupted ``dvc exp run`` left git on a
detached HEAD (:func:`interrupted_experiment`); it changes nothing in git itself.

    python -m speech_calibration.tidy            # remove them (each one is logged)
    python -m speech_calibration.tidy --dry-run  # only list them
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from speech_calibration import layout
from speech_calibration.cli import parser, run
from speech_calibration.errors import UserError

log = logging.getLogger("speech_calibration.tidy")
KEEP = {".gitignore", ".gitkeep"}  # git's own files in an output folder (DVC writes the .gitignore files)


def _git_paths(root: Path, *args: str) -> set[Path]:
    res = subprocess.run(["git", "ls-files", "-z", *args], cwd=root, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise UserError(f"{root}: not a git repository (git ls-files: {res.stderr.strip()}); run this in the project root")
    return {root / p for p in res.stdout.split("\0") if p}


# what DVC writes into an output's folder: one "/<name>" per output, with git's special characters escaped
_DVC_IGNORE_LINE = re.compile(r"/(?:[^/\\\[\]!*#?]|\\[\\\[\]!*#?])+")


def _head_paths(root: Path) -> set[Path]:
    """The files of HEAD's commit (none before the first commit)."""
    if _git_out(root, "rev-parse", "--verify", "-q", "HEAD") is None:
        return set()
    res = subprocess.run(["git", "ls-tree", "-r", "-z", "--name-only", "HEAD"], cwd=root, capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        raise UserError(f"{root}: git ls-tree HEAD failed ({res.stderr.strip()}); check the repository with git status")
    return {root / p for p in res.stdout.split("\0") if p}


def _dvc_gitignores(root: Path, index: set[Path], untracked: set[Path]) -> dict[Path, list[Path]]:
    """The ``.gitignore`` files HEAD does not have (staged by ``dvc repro``, or untracked after ``dvc exp run``) that
    hold nothing but DVC's ``/<name>`` lines, each with the paths it names (unescaped)."""
    found = {}
    for path in (index - _head_paths(root)) | untracked:
        if path.name != ".gitignore" or not path.is_file():
            continue
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines and all(_DVC_IGNORE_LINE.fullmatch(line) for line in lines):
            found[path] = [path.parent / re.sub(r"\\(.)", r"\1", line[1:]) for line in lines]
    return found


def _overlaps(path: Path, others: Iterable[Path]) -> bool:
    """``path`` is one of ``others``, inside one, or holds one."""
    return any(path == o or o in path.parents or path in o.parents for o in others)


def _seed_token(name: str) -> str:
    """``seed_7`` of ``seed_7``, ``seed_7.json``, ``seed_7_dev_reliability.png``."""
    return re.match(r"seed_\d+", name)[0]


def is_leftover(name: str, of: str) -> bool:
    """``name`` is a temporary that :func:`speech_calibration.fileio.atomic_path` or ``atomic_dir`` makes beside
    ``of``: ``.<of>.<8 random characters>`` (``.<of>.old.<8>`` for a folder's swap), then any suffix. A stage killed
    with SIGKILL leaves it; the test makes them with those two functions, in a process it kills."""
    return re.fullmatch(rf"\.{re.escape(of)}\.(?:old\.)?[a-z0-9_]{{8}}(?:\..*)?", name, flags=re.DOTALL) is not None


def stale_outputs(root: str | Path = ".") -> list[Path]:
    """What :func:`tidy` removes, relative to ``root``: whole folders where nothing in them is kept."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    root = Path(root).resolve()
    try:
        with Repo(str(root)) as repo:
            stages = list(repo.index.stages)  # dvc.yaml stages and .dvc files alike
            outs = [Path(o.fs_path) for s in stages for o in s.outs]
            deps = [Path(d.fs_path) for s in stages for d in s.deps]
    except DvcException as err:
        raise UserError(f"{root / 'dvc.yaml'}: DVC cannot read the pipeline ({err}); fix it, then run again") from None
    roots = [root / r for r in layout.OUTPUT_ROOTS]
    # a folder a stage reads that holds other stages' outputs (metrics/test, evaluation, ...) is the pipeline's own,
    # and where leftovers matter; any other dep (the base model, an evaluation set's audio) is kept whole
    fan_in = {d for d in deps if any(d in o.parents for o in outs)}
    deps = [d for d in deps if d not in fan_in]
    index, untracked = _git_paths(root), _git_paths(root, "--others", "--exclude-standard")  # untracked: not ignored
    dvc_ignores = _dvc_gitignores(root, index, untracked)
    tracked = index - dvc_ignores.keys()
    declared = [o.relative_to(root).as_posix() for o in outs if root in o.parents]
    lone: list[Path] = []  # DVC's .gitignore files outside any removed seed's folder, decided once the rest is known
    stale: set[Path] = set()
    for path in untracked | dvc_ignores.keys():
        dvc_ignore = path in dvc_ignores  # kept below while what it names is declared or there (a dep's files)
        if (path.name in KEEP and not dvc_ignore) or not any(r in path.parents for r in roots) \
                or (_overlaps(path, deps) and not dvc_ignore):
            continue
        rel = path.relative_to(root)
        for unit in [*(root / u for u in reversed(rel.parents[:-1])), path]:
            if _overlaps(unit, tracked):
                continue
            # a seed no declared output names any more (models/seed_7, metrics/headline/seed_7/, plots/test/seed_7_*)
            gone_seed = layout.names_a_seed(unit.name) and not any(
                re.search(rf"(^|/){_seed_token(unit.name)}([._/]|$)", d) for d in declared)
            # an evaluation set taken out of params.yaml: its headline files (aggregate rewrites the folder whole)
            gone_set = (unit.parent == root / layout.EVAL_SETS_HEADLINE_DIR
                        and layout.eval_set_metrics(unit.name).as_posix() not in declared)
            # anything else in a folder a stage reads whole, that no stage declares (metrics/test/anything.json)
            undeclared = unit.parent in fan_in and not _overlaps(unit, outs)
            # what a killed write left beside a declared output (SIGKILL: no clean-up ran)
            leftover = any(o.parent == unit.parent and is_leftover(unit.name, o.name) for o in outs)
            if dvc_ignore and unit == path:
                lone.append(path)
            elif gone_seed or (not dvc_ignore and (gone_set or undeclared or leftover)):  # DVC's .gitignore: with a seed's folder
                stale.add(unit)
                break
    # alone, DVC's .gitignore goes once nothing it names is declared or there (a removed set's audio can be)
    for path in lone:
        if all(p.relative_to(root).as_posix() not in declared and not p.exists() for p in dvc_ignores[path]):
            stale.add(path)
    stale = {p for p in stale if not any(s in p.parents for s in stale)}  # a removed folder takes what it holds
    return sorted(p.relative_to(root) for p in stale)


def _git_out(root: Path, *args: str) -> str | None:
    """``git <args>``'s stripped output, or None when it fails."""
    res = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    return res.stdout.strip() if res.returncode == 0 else None


def interrupted_experiment(root: str | Path = ".") -> str | None:
    """How to get back onto your branch after an interrupted ``dvc exp run``, or None when there is nothing to say.

    A ``dvc exp run`` in the workspace detaches HEAD while it runs and re-attaches it at the end. Killed (a second
    Ctrl-C, a job killed for time), it leaves HEAD detached; the next ``dvc exp run`` succeeds without re-attaching
    it, and a ``git commit`` then lands on no branch. Two signs, with HEAD detached (both seen by killing a run on
    this project):

    * ``refs/exps/exec/EXEC_BASELINE`` still exists: the run never reached its clean-up (which deletes it; it
      keeps ``EXEC_HEAD``, so that one alone says nothing);
    * HEAD's last reflog entry is DVC re-attaching HEAD to a bare commit (``dvc: Restore HEAD to '<sha>'``): the
      last experiment started on a detached HEAD.

    A detached HEAD of your own (a tag, a bisect) shows neither and gets no advice. The branch is the one checked
    out before HEAD was detached (``@{-1}``).
    """
    root = Path(root)
    if _git_out(root, "symbolic-ref", "-q", "HEAD") is not None:
        return None  # on a branch
    refs = (_git_out(root, "for-each-ref", "--format=%(refname)", "refs/exps/exec") or "").split()
    killed = "refs/exps/exec/EXEC_BASELINE" in refs
    last = (_git_out(root, "reflog", "-n", "1", "--format=%gs", "HEAD") or "").strip()
    ran_detached = re.fullmatch(r"dvc: Restore HEAD to '[0-9a-f]{40}'", last) is not None
    if not (killed or ran_detached):
        return None
    head = _git_out(root, "rev-parse", "--short", "HEAD")
    branch = _git_out(root, "rev-parse", "--abbrev-ref", "@{-1}")
    said = (f"git is on a detached HEAD ({head}): "
            + ("a `dvc exp run` stopped before re-attaching it (unless one is running now)" if killed else
               "the last `dvc exp run` ran on it, as one does after an interrupted run"))
    clear = ("; then " + " && ".join(f"git update-ref -d {r}" for r in refs)) if killed else ""
    if not branch or branch == "HEAD":
        return f"{said}. `git switch -c <branch>` puts HEAD on a branch{clear}"
    ahead = int(_git_out(root, "rev-list", "--count", f"{branch}..HEAD") or 0)
    behind = int(_git_out(root, "rev-list", "--count", f"HEAD..{branch}") or 0)
    if ahead == 0:
        fix = f"`git switch {branch}` returns to your branch"
    elif behind == 0:
        fix = (f"`git switch -C {branch}` moves your branch to the {ahead} commit(s) made since (`git log --oneline "
               f"{branch}..HEAD` lists them) and returns to it")
    else:
        fix = (f"HEAD and {branch} have both moved on: `git switch -c rescued` keeps these {ahead} commit(s) on a "
               f"branch of their own, to merge into {branch}")
    return f"{said}. {fix}{clear}"


def tidy(root: str | Path = ".", *, dry_run: bool = False) -> list[Path]:
    """Remove :func:`stale_outputs` (or only list them); return them. Says :func:`interrupted_experiment` first."""
    hint = interrupted_experiment(root)
    if hint:
        log.warning("%s", hint)
    stale = stale_outputs(root)
    root = Path(root).resolve()
    index = _git_paths(root) if stale and not dry_run else set()
    for rel in stale:
        path = root / rel
        log.info("%s %s", "would remove" if dry_run else "removing", rel)
        if not dry_run:
            # in git's index at or inside a stale path: only a .gitignore dvc repro staged (stale_outputs made sure)
            staged = sorted(p.relative_to(root).as_posix() for p in index if p == path or path in p.parents)
            if staged:
                # -f: DVC may have added lines since it staged the file; the file goes either way
                res = subprocess.run(["git", "--literal-pathspecs", "rm", "-q", "-f", "--cached", "--", *staged],
                                     cwd=root, capture_output=True, text=True, check=False)
                if res.returncode != 0:
                    raise UserError(f"{root}: git rm --cached {' '.join(staged)} failed ({res.stderr.strip()}); "
                                    "unstage it with git restore --staged, then run this again")
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if not stale:
        log.info("nothing to remove: no untracked file lies beside the outputs of the current dvc.yaml")
    return stale


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__, params=False)
    p.prog = "python -m speech_calibration.tidy"
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.add_argument("--root", default=".", help="the project root (default: the current folder)")
    args = p.parse_args(argv)
    tidy(args.root, dry_run=args.dry_run)


if __name__ == "__main__":
    run(main)
