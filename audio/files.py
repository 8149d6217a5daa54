"""Writing files so that they are complete or absent: one temporary-name scheme for every writer.

Every output livefoley writes (audio, video, models, caches, reports, settings, plots, training
state) is written under a hidden temporary name beside its final one and renamed into place only
when it is complete, so an error, Ctrl-C or a full disk never leaves a half-written file under the
user's name.  :func:`atomic_path` does this for a writer that finishes in one go (a file or a
folder); :class:`~audio.sinks.FileSink`, which writes for as long as a stream runs, uses
:func:`temp_path` and renames on close; :func:`leftovers` finds what a killed run left behind.

The temporary name is ``.<stem>.<pid>-<random>.partial<suffix>``: hidden, unique per writer, and
ending in the real suffix (FFmpeg and libsndfile choose the format from it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "leftovers", "temp_path"]


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh hidden temporary name beside ``path`` (see the module docstring)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_path(out) as tmp: write(tmp)`` — on a normal exit ``tmp`` (a file, or a folder the
    writer made) replaces ``out``, an existing folder included; on any exception ``tmp`` is removed and
    ``out`` is untouched.  The parent folder must exist."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():  # a folder is swapped: the old one aside, then removed
            old = temp_path(path)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def leftovers(path: str | os.PathLike) -> list[Path]:
    """Temporary files of ``path`` whose writing process is gone (killed: SIGKILL, power loss)."""
    path = Path(path)
    found = []
    for tmp in path.parent.glob(f".{path.stem}.*.partial{path.suffix}"):
        pid = tmp.name[len(path.stem) + 2:].split("-", 1)[0]
        if not _running(pid):
            found.append(tmp)
    return sorted(found)


def _running(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
