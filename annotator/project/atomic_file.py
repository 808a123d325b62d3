"""Replace a file atomically: an interrupted write never leaves a broken file where a good one was."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

_NEW_FILE_MODE = 0o644
"""Permissions of a new file (a replaced file keeps its own); the temporary file starts private (0600)."""


@contextmanager
def atomic_text_file(path: str | os.PathLike) -> Iterator[TextIO]:
    """Yield a UTF-8 text file; on a clean exit it replaces `path`, on an exception `path` is left untouched.

    The text goes to a hidden temporary file in the same folder (same file system), which is flushed and fsynced,
    then renamed over `path` (atomic on POSIX and Windows), then the folder is fsynced so the rename itself is
    durable. A process killed before the rename leaves the old file intact and at most a stray
    `.<name>.*.tmp` file beside it.
    """
    target = Path(path)
    mode = target.stat().st_mode & 0o777 if target.exists() else _NEW_FILE_MODE
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable where the platform allows opening folders (not on Windows)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
