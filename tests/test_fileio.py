"""Atomic writes (``speech_calibration.fileio``): all or nothing, and the permissions of an ordinary write."""
from __future__ import annotations

import os

import pytest

from speech_calibration.errors import UserError
from speech_calibration.fileio import atomic_dir, atomic_path, check_writable, write_json, write_text


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


def test_a_folder_stopped_between_its_two_renames_gets_the_old_one_back(tmp_path, monkeypatch):
    """``atomic_dir`` moves the old folder aside, then the new one in: a failure of the second rename (a full disk,
    an interrupt) puts the old folder back, and leaves nothing else behind."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "f.txt").write_text("old")
    real_replace, failed = os.replace, []

    def failing_second(src, dst):
        if os.fspath(dst) == os.fspath(target) and not failed:  # the new folder's rename, once
            failed.append(src)
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_second)
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as tmp:
        (tmp / "f.txt").write_text("new")
    monkeypatch.undo()
    assert (target / "f.txt").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_sigterm_between_a_folders_two_renames_waits_until_the_new_one_is_in(tmp_path, monkeypatch):
    """SIGTERM arriving right after the old folder is moved aside (sent here by the first rename itself) is held
    until the new folder is in place; then the stage's handler stops it, and nothing else is left behind."""
    import signal

    from speech_calibration import cli
    from speech_calibration.errors import Terminated

    target = tmp_path / "out"
    target.mkdir()
    (target / "f.txt").write_text("old")
    real_replace = os.replace

    def signalled_after_first(src, dst):
        real_replace(src, dst)
        if os.fspath(src) == os.fspath(target):  # the old folder has just moved aside
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, cli._terminated)
    try:
        monkeypatch.setattr(os, "replace", signalled_after_first)
        with pytest.raises(Terminated), atomic_dir(target) as tmp:
            (tmp / "f.txt").write_text("new")
    finally:
        monkeypatch.undo()
        signal.signal(signal.SIGTERM, previous)
    assert (target / "f.txt").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["out"]

