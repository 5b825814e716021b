"""Atomic writes (``speech_calibration.fileio``): all or nothing, alone and for a stage's outputs together, and the
permissions of an ordinary write."""
from __future__ import annotations

import functools
import os
import signal

import pytest

from speech_calibration import cli, fileio
from speech_calibration.errors import Terminated, UserError
from speech_calibration.fileio import atomic_dir, atomic_path, check_writable, outputs_together, write_json, write_text
from speech_calibration.parallel import map_forked


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_written_files_and_folders_get_the_mode_of_a_plain_write(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f.txt").write_text("x")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    (tmp_path / "plain_dir").mkdir()
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert (tmp_path / "d").stat().st_mode & 0o777 == (tmp_path / "plain_dir").stat().st_mode & 0o777


def test_an_output_that_cannot_be_written_is_one_line_before_anything_is_written(tmp_path):
    """A folder where a file goes, and a file where a parent folder would be: a UserError naming the path (not an
    IsADirectoryError traceback after the work), and no temporary left; a folder may replace a folder, and missing
    parents are made."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"folder: is a folder; name a file to write$"):
        write_text(tmp_path / "folder", "y")
    with pytest.raises(UserError, match=r"file/out.json: .*file is a file, not a folder; choose another path$"):
        write_json(tmp_path / "file/out.json", {})
    with pytest.raises(UserError, match=r"is a file, not a folder"), atomic_dir(tmp_path / "file/d"):
        pass
    with pytest.raises(UserError, match=r"file: is a file; name a folder to write$"), atomic_dir(tmp_path / "file"):
        pass
    check_writable(tmp_path / "folder", folder=True)
    check_writable(tmp_path / "new/and/newer/out.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"] and not any((tmp_path / "folder").iterdir())


def test_a_crash_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "t.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def _write_old(root, *names: str) -> None:
    """Each of ``names`` under ``root``, its folders made, holding "old" (the previous outputs)."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("old")


def rename_fails_once(target, error: BaseException):
    """An ``os.replace`` that raises ``error`` the first time something is renamed onto ``target`` (a full disk, an
    interrupt) and renames as usual otherwise; and the list that holds ``target`` once that has happened."""
    real_replace, failed = os.replace, []

    def replace(src, dst):
        if os.fspath(dst) == os.fspath(target) and not failed:
            failed.append(dst)
            raise error
        real_replace(src, dst)

    return replace, failed


def test_a_folder_swapped_in_one_step_is_never_renamed_aside_and_leaves_nothing(tmp_path, monkeypatch, one_step_swap):
    """Where the system can, ``atomic_dir`` exchanges the new folder with the old one in one step, so the output is
    never missing, not even under SIGKILL: no rename moves the old folder aside or the new one in, and the previous
    folder (left at the temporary's name) is removed."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "f.txt").write_text("old")
    real_replace, renamed = os.replace, []

    def watching(src, dst):
        renamed.append((os.fspath(src), os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", watching)
    with atomic_dir(target) as tmp:
        (tmp / "f.txt").write_text("new")
    monkeypatch.undo()
    assert renamed == [] and (target / "f.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_outputs_together_failing_after_a_folder_was_swapped_in_swap_it_back(tmp_path, monkeypatch, one_step_swap):
    """The folder goes in first (exchanged in one step), then a file's rename fails: the folder is exchanged back, the
    file keeps its previous version, and nothing is left beside them."""
    _write_old(tmp_path, "models/m/w.bin", "metrics/a.json")
    before = _outputs(tmp_path)
    failing_file, _ = rename_fails_once(tmp_path / "metrics/a.json", OSError(28, "No space left on device"))
    real_exchange, swaps = fileio._exchange, []

    def recorded(a, b):
        swaps.append(real_exchange(a, b))
        return swaps[-1]

    monkeypatch.setattr(fileio, "_exchange", recorded)
    with pytest.raises(OSError, match="No space left"), outputs_together():
        with atomic_dir(tmp_path / "models/m") as tmp:
            (tmp / "w.bin").write_text("new")
        write_text(tmp_path / "metrics/a.json", "new")
        monkeypatch.setattr(os, "replace", failing_file)
    monkeypatch.undo()
    assert swaps == [True, True]  # in, and back
    assert _outputs(tmp_path) == before


def test_a_previous_version_that_cannot_be_put_back_is_kept_and_named(tmp_path, monkeypatch, one_step_swap):
    """The rollback itself fails for the folder (its swap back raises): its previous version is kept beside it in
    ``.m.old.*/x``, not removed with the leftovers, the error names where it is, and the file still gets its previous
    version back (review: the rollback stopped at the first failure and then deleted the previous outputs)."""
    _write_old(tmp_path, "m/w.bin", "a.json")
    file_fails_once, failed = rename_fails_once(tmp_path / "a.json", OSError(28, "No space left on device"))
    real_exchange = fileio._exchange

    def swap_back_fails(a, b):
        if os.fspath(b) == os.fspath(tmp_path / "m") and failed:  # the second call: the swap back
            raise OSError(5, "Input/output error")
        return real_exchange(a, b)

    monkeypatch.setattr(fileio, "_exchange", swap_back_fails)
    raised = _write_folder_and_file_then_fail(tmp_path, monkeypatch, (os, "replace", file_fails_once))
    outputs = _outputs(tmp_path)
    kept = [name for name in outputs if name.startswith(".m.old.") and name.endswith("/x/w.bin")]
    assert len(kept) == 1 and outputs[kept[0]] == "old" and outputs["a.json"] == "old" and outputs["m/w.bin"] == "new"
    assert set(outputs) == {"a.json", "m/w.bin", kept[0]}
    notes = getattr(raised.value, "__notes__", [])
    assert len(notes) == 1 and notes[0].startswith(f"{tmp_path / 'm'}: its previous version could not be put back")
    assert notes[0].endswith(os.fspath(tmp_path / kept[0].removesuffix("/w.bin")))


def test_a_folder_stopped_between_its_two_renames_gets_the_old_one_back(tmp_path, monkeypatch, two_renames):
    """Without a one-step swap, ``atomic_dir`` moves the old folder aside, then the new one in: a failure of the second
    rename (a full disk, an interrupt) puts the old folder back, and leaves nothing else behind."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "f.txt").write_text("old")
    failing_second, _ = rename_fails_once(target, KeyboardInterrupt())  # the new folder's rename, once
    monkeypatch.setattr(os, "replace", failing_second)
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as tmp:
        (tmp / "f.txt").write_text("new")
    monkeypatch.undo()
    assert (target / "f.txt").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.fixture
def stage_sigterm():
    """SIGTERM raises Terminated here, as cli.run makes it do in a stage; the previous handler comes back after."""
    previous = signal.signal(signal.SIGTERM, cli._terminated)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_between_a_folders_two_renames_waits_until_the_new_one_is_in(tmp_path, monkeypatch, stage_sigterm,
                                                                               two_renames):
    """SIGTERM arriving right after the old folder is moved aside (sent here by the first rename itself) is held
    until the new folder is in place; then the stage's handler stops it, and nothing else is left behind."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "f.txt").write_text("old")
    real_replace = os.replace

    def signalled_after_first(src, dst):
        real_replace(src, dst)
        if os.fspath(src) == os.fspath(target):  # the old folder has just moved aside
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "replace", signalled_after_first)
    with pytest.raises(Terminated), atomic_dir(target) as tmp:
        (tmp / "f.txt").write_text("new")
    monkeypatch.undo()
    assert (target / "f.txt").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["out"]


def _write_folder_and_file_then_fail(root, monkeypatch, *patches) -> pytest.ExceptionInfo:
    """Write the folder ``m`` and the file ``a.json`` ("new") as one set; before they go in, apply ``patches``
    (``(object, name, value)`` each, which make it fail with a full disk), then undo every patch. The error."""
    with pytest.raises(OSError, match="No space left") as raised, outputs_together():
        with atomic_dir(root / "m") as tmp:
            (tmp / "w.bin").write_text("new")
        write_text(root / "a.json", "new")
        for target, name, value in patches:
            monkeypatch.setattr(target, name, value)
    monkeypatch.undo()
    return raised


def _outputs(root) -> dict[str, str]:
    """Every file under ``root``, relative path -> text (temporaries included: their names start with '.')."""
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def _write_set(root, text: str) -> None:
    """What a stage might write: two files in two folders, a new file, and a folder replaced whole."""
    write_text(root / "metrics/a.json", text)
    write_text(root / "plots/b.csv", text)
    write_text(root / "plots/new.txt", text)
    with atomic_dir(root / "models/m") as tmp:
        (tmp / "w.bin").write_text(text)
        write_text(tmp / "info.json", text)  # atomically inside the folder: goes in with it


def test_outputs_together_go_in_at_the_end_of_the_block(tmp_path):
    """Inside the block the previous outputs are still there and no new file is; at its end every new one is in,
    with nothing left beside them."""
    _write_old(tmp_path, "metrics/a.json", "plots/b.csv", "models/m/w.bin", "models/m/old_only.txt")
    with outputs_together():
        _write_set(tmp_path, "new")
        assert (tmp_path / "metrics/a.json").read_text() == "old" and not (tmp_path / "plots/new.txt").exists()
        assert (tmp_path / "models/m/old_only.txt").exists()
    assert _outputs(tmp_path) == {"metrics/a.json": "new", "plots/b.csv": "new", "plots/new.txt": "new",
                                  "models/m/w.bin": "new", "models/m/info.json": "new"}


@pytest.mark.parametrize("stop", [RuntimeError, KeyboardInterrupt])
def test_outputs_together_stopped_half_way_leave_every_previous_output(tmp_path, stop):
    """An error or a stop after some outputs were written: all previous outputs stay as they were, the new file is not
    there, and no temporary is left."""
    _write_set(tmp_path, "old")
    (tmp_path / "plots/new.txt").unlink()
    before = _outputs(tmp_path)
    with pytest.raises(stop), outputs_together():
        _write_set(tmp_path, "new")
        raise stop()
    assert _outputs(tmp_path) == before


def test_outputs_together_failing_during_the_renames_put_every_previous_output_back(tmp_path, monkeypatch, two_renames):
    """A rename that fails half-way through moving the outputs in (a full disk, say): those already moved in go back
    out, the previous ones come back, a new file that had no previous one goes, and no temporary is left."""
    _write_set(tmp_path, "old")
    (tmp_path / "plots/new.txt").unlink()
    before = _outputs(tmp_path)
    real_replace, calls = os.replace, []

    def failing_late(src, dst):
        calls.append(dst)
        if os.fspath(dst) == os.fspath(tmp_path / "models/m") and calls.count(dst) == 1:  # the last output's, once
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    with pytest.raises(OSError, match="No space left"), outputs_together():
        _write_set(tmp_path, "new")
        monkeypatch.setattr(os, "replace", failing_late)
    monkeypatch.undo()
    assert os.fspath(tmp_path / "plots/new.txt") in map(os.fspath, calls)  # it had gone in before the failure
    assert _outputs(tmp_path) == before


def _write_in_worker(name: str, root) -> str:
    write_text(root / name, "new")
    return name


def test_outputs_written_by_forked_workers_go_in_with_the_stages(tmp_path):
    """map_forked's workers write into the same block: their files wait for its end too, and go if it fails."""
    names = ["w1.txt", "w2.txt", "w3.txt"]
    for name in names:
        (tmp_path / name).write_text("old")
    write = functools.partial(_write_in_worker, root=tmp_path)
    with pytest.raises(RuntimeError), outputs_together():
        assert map_forked(write, names, workers=2) == names
        raise RuntimeError("the stage fails after its workers wrote")
    assert _outputs(tmp_path) == {name: "old" for name in names}
    with outputs_together():
        map_forked(write, names, workers=2)
        assert {p.read_text() for p in tmp_path.iterdir() if not p.name.startswith(".")} == {"old"}
    assert _outputs(tmp_path) == {name: "new" for name in names}


def test_a_file_written_inside_a_folder_the_block_replaces_is_refused_and_nothing_changes(tmp_path):
    """The folder's new version would hide the file (or the file's temporary would sit in the old folder): a
    programming error, raised before any output moves."""
    _write_set(tmp_path, "old")
    before = _outputs(tmp_path)
    with pytest.raises(RuntimeError, match=r"models/m/late.txt was written atomically inside .*models/m"), \
            outputs_together():
        _write_set(tmp_path, "new")
        write_text(tmp_path / "models/m/late.txt", "new")
    assert _outputs(tmp_path) == before


def test_a_stop_during_the_renames_waits_until_all_are_in_and_leaves_nothing_beside_them(tmp_path, monkeypatch,
                                                                                          stage_sigterm, folder_swap):
    """SIGTERM right after the first output has moved in (sent by that rename): the rest go in too, then the stage's
    handler stops it, and no copy of a previous output is left beside them (a review found every one left)."""
    _write_set(tmp_path, "old")
    real_replace, sent = os.replace, []

    def signalled_after_first(src, dst):
        real_replace(src, dst)
        if not sent and not os.path.basename(dst) == "x":  # the first output in place (not a copy set aside)
            sent.append(dst)
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Terminated), outputs_together():
        _write_set(tmp_path, "new")
        monkeypatch.setattr(os, "replace", signalled_after_first)
    monkeypatch.undo()
    assert sent and _outputs(tmp_path) == {"metrics/a.json": "new", "plots/b.csv": "new", "plots/new.txt": "new",
                                           "models/m/w.bin": "new", "models/m/info.json": "new"}


def test_a_file_output_is_never_missing_while_the_outputs_move_in(tmp_path, monkeypatch, two_renames):
    """Its previous version is kept as a hard link and the new one renamed over it, so a SIGKILL at any moment finds
    the file there (old or new); only a folder output, without a one-step swap, needs two renames."""
    _write_set(tmp_path, "old")
    (tmp_path / "plots/new.txt").unlink()
    real_replace, missing = os.replace, []

    def watching(src, dst):
        if os.path.basename(dst) != "x" and not os.path.isdir(src) and not os.path.lexists(dst):
            missing.append(os.fspath(dst))
        real_replace(src, dst)

    with outputs_together():
        _write_set(tmp_path, "new")
        monkeypatch.setattr(os, "replace", watching)
    monkeypatch.undo()
    assert missing == [os.fspath(tmp_path / "plots/new.txt")]  # the one file that had no previous version
    assert _outputs(tmp_path)["metrics/a.json"] == "new"


def test_a_swapped_folder_that_cannot_go_back_nor_into_a_holder_stays_at_its_temporary_name(tmp_path, monkeypatch,
                                                                                             one_step_swap):
    """Three failures in a row (a file's rename, the folder's swap back, and the holder for its previous version): the
    previous folder stays at the temporary's name, which the error's note names and nobody removes (review: the
    note named it and the cleanup then deleted it)."""
    _write_old(tmp_path, "m/w.bin", "a.json")
    file_fails_once, failed = rename_fails_once(tmp_path / "a.json", OSError(28, "No space left on device"))
    real_exchange, real_mkdtemp = fileio._exchange, fileio.tempfile.mkdtemp

    def swap_back_fails(a, b):
        if failed:
            raise OSError(5, "Input/output error")
        return real_exchange(a, b)

    def no_holder_after_the_failure(*args, **kwargs):
        if failed:
            raise OSError(28, "No space left on device")
        return real_mkdtemp(*args, **kwargs)

    monkeypatch.setattr(fileio, "_exchange", swap_back_fails)
    raised = _write_folder_and_file_then_fail(tmp_path, monkeypatch, (os, "replace", file_fails_once),
                                              (fileio.tempfile, "mkdtemp", no_holder_after_the_failure))
    outputs = _outputs(tmp_path)
    kept = [name for name in outputs if name.startswith(".m.") and name.endswith("/w.bin")]
    assert len(kept) == 1 and outputs[kept[0]] == "old" and outputs["m/w.bin"] == "new" and outputs["a.json"] == "old"
    assert raised.value.__notes__[0].endswith(os.fspath(tmp_path / kept[0].removesuffix("/w.bin")))


def test_a_dangling_link_output_gets_its_link_back_after_a_failure(tmp_path, monkeypatch):
    """An output that is a dangling symbolic link (a DVC symlink cache after ``dvc gc``), replaced by a file, then a
    later output's rename fails: the link comes back as it was (review: comparing what the links point to raised,
    and the new file stayed)."""
    (tmp_path / "out.csv").symlink_to(tmp_path / "gone")
    (tmp_path / "a.json").write_text("old")
    file_fails_once, _ = rename_fails_once(tmp_path / "a.json", OSError(28, "No space left on device"))

    with pytest.raises(OSError, match="No space left") as raised, outputs_together():
        write_text(tmp_path / "out.csv", "new")
        write_text(tmp_path / "a.json", "new")
        monkeypatch.setattr(os, "replace", file_fails_once)
    monkeypatch.undo()
    assert (tmp_path / "out.csv").is_symlink() and os.readlink(tmp_path / "out.csv") == os.fspath(tmp_path / "gone")
    assert (tmp_path / "a.json").read_text() == "old" and not getattr(raised.value, "__notes__", [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "out.csv"]
