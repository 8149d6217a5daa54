"""One way to write a file or a folder so that it is complete or absent (audio/files.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from audio.files import atomic_path, leftovers, temp_path


def test_a_file_appears_only_when_complete_and_an_error_leaves_the_old_one(tmp_path):
    out = tmp_path / "report.json"
    with atomic_path(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".report.") and tmp.suffix == ".json"
        tmp.write_text("one")
        assert not out.exists()  # not under the user's name before it is complete
    assert out.read_text() == "one"
    with pytest.raises(OSError, match="disk full"), atomic_path(out) as tmp:
        tmp.write_text("half of tw")
        raise OSError("disk full")
    assert out.read_text() == "one" and sorted(tmp_path.iterdir()) == [out]


def test_a_folder_is_swapped_whole(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("half")
        raise KeyboardInterrupt
    assert [p.name for p in out.iterdir()] == ["old.txt"] and sorted(tmp_path.iterdir()) == [out]
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"] and sorted(tmp_path.iterdir()) == [out]


def test_leftovers_are_the_temporary_files_of_dead_writers_only(tmp_path):
    out = tmp_path / "live.flac"
    mine = temp_path(out)
    mine.write_bytes(b"being written by this process")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    theirs = tmp_path / f".live.{dead.stdout.strip()}-0123abcd.partial.flac"
    theirs.write_bytes(b"left by a killed run")
    (tmp_path / ".other.99-0123abcd.partial.flac").write_bytes(b"another file's")
    assert mine.name.startswith(f".live.{os.getpid()}-")
    assert leftovers(out) == [theirs]
