"""Replace files atomically: an interrupted or failed write never leaves a broken file where a good one was.

`atomic_text_files` replaces several files together (a RefCOCO export's instances and refs): every new file is
written and fsynced under a temporary name first, and only then are they renamed into place, so a full disk or a
failed write leaves all the old files as they were. A rename that fails after earlier ones succeeded puts the
earlier files back. (A process killed between two renames, a window of microseconds, leaves the first file new.)

Failures raise `ExportError` naming the destination (never the temporary file) and the reason; the destination
is checked first (`check_writable_file`), so a folder given as a file name gets its own message.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from annotator.errors import ExportError

_NEW_FILE_MODE = 0o644
"""Permissions of a new file (a replaced file keeps its own); the temporary file starts private (0600)."""


def check_writable_file(path: str | os.PathLike, what: str = "file") -> None:
    """ExportError unless `path` can be written atomically: not a folder, in an existing folder one may write to."""
    target = Path(path)
    if target.is_dir():
        problem = "it is a folder; give the name of a file to write"
    elif target.exists() and not target.is_file():
        problem = "it exists and is not a regular file"
    else:
        problem = parent_problem(target)
    if problem is not None:
        raise ExportError(f"cannot write {what} {target}: {problem}")


def parent_problem(target: Path) -> str | None:
    """Why nothing can be written beside `target` (its folder is missing, not a folder, not writable), or None."""
    parent = target.parent
    if not parent.exists():
        return f"the folder {parent} does not exist"
    if not parent.is_dir():
        return f"{parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"the folder {parent} is not writable"
    return None


@contextmanager
def atomic_text_file(path: str | os.PathLike, what: str = "file") -> Iterator[TextIO]:
    """Yield a UTF-8 text file; on a clean exit it replaces `path`, on an exception `path` is left untouched.

    The text goes to a hidden temporary file in the same folder (same file system), which is flushed and fsynced,
    then renamed over `path` (atomic on POSIX and Windows), then the folder is fsynced so the rename itself is
    durable. A process killed before the rename leaves the old file intact and at most a stray
    `.<name>.*.tmp` file beside it. `what` names the file in error messages ("COCO file").
    """
    with atomic_text_files([path], what) as (handle,):
        yield handle


@contextmanager
def atomic_text_files(paths: Sequence[str | os.PathLike], what: str = "file") -> Iterator[list[TextIO]]:
    """Yield one UTF-8 text file per path; on a clean exit they replace `paths` together, on an exception (or a
    failed write) none of `paths` changes and no temporary file is left.

    An OSError raised in the block without a file name (a write to one of these files) becomes ExportError too;
    one naming a file (the caller's own reading, say) passes unchanged.
    """
    targets = [Path(p) for p in paths]
    for target in targets:
        check_writable_file(target, what)
    temps: list[Path] = []
    handles: list[TextIO] = []
    try:
        for target in targets:
            try:
                handles.append(_temporary_file(target, temps))
            except OSError as err:
                raise _failure(what, [target], err) from err
        try:
            yield handles
        except OSError as err:
            if err.filename is not None:
                raise
            raise _failure(what, targets, err) from err
        for target, handle in zip(targets, handles):
            try:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
            except OSError as err:
                raise _failure(what, [target], err) from err
        try:
            _replace_together(temps, targets)
            for folder in dict.fromkeys(target.parent for target in targets):
                _fsync_folder(folder)
        except OSError as err:
            raise _failure(what, targets, err) from err
    finally:
        for handle in handles:
            with contextlib.suppress(OSError):
                handle.close()
        for temp in temps:
            temp.unlink(missing_ok=True)


def _failure(what: str, targets: Sequence[Path], err: OSError) -> ExportError:
    """The error for a failed write, naming the destinations (never a temporary file) and the reason."""
    names = " and ".join(map(str, targets))
    return ExportError(f"cannot write {what}{'s' if len(targets) > 1 else ''} {names}: {err.strerror or err}")


def _temporary_file(target: Path, temps: list[Path]) -> TextIO:
    """A hidden temporary file beside `target`, with the permissions `target` has (or will have); its name is
    appended to `temps` at once so that it is removed whatever happens next."""
    mode = target.stat().st_mode & 0o777 if target.exists() else _NEW_FILE_MODE
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    temps.append(Path(temp_name))
    handle = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(handle.fileno(), mode)
    except OSError:
        handle.close()
        raise
    return handle


def _replace_together(temps: list[Path], targets: list[Path]) -> None:
    """Rename each temporary file over its target; if one rename fails, put back the targets already replaced."""
    backups: list[Path | None] = []
    replaced = 0
    try:
        for target in targets[:-1]:
            _backup(target, backups)
        for temp, target in zip(temps, targets):
            os.replace(temp, target)
            replaced += 1
    except OSError:
        for target, backup in reversed(list(zip(targets[:replaced], backups))):
            with contextlib.suppress(OSError):
                if backup is None:
                    target.unlink()
                else:
                    os.replace(backup, target)
        raise
    finally:
        for backup in backups:
            if backup is not None:
                backup.unlink(missing_ok=True)


def _backup(target: Path, backups: list[Path | None]) -> None:
    """Append a second name for the current `target` to `backups` (a hard link, or a copy where links are not
    supported; None when there is no file yet), before making it, so that it is removed whatever happens."""
    if not target.exists():
        backups.append(None)
        return
    backup = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old.tmp")
    backups.append(backup)
    try:
        os.link(target, backup)
    except OSError:
        shutil.copy2(target, backup)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable where the platform allows opening folders (not on Windows)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
