"""Resumable HTTP download of model files into the user's cache folder.

A download is written to `<final name>.part`; on every connection drop it is resumed with an HTTP `Range`
request; when all bytes are in, their count and SHA-256 are checked and only then is the file renamed to its
final name. So a file under the final name is always complete and verified, and a `.part` file is never used
(a later call resumes it).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Mapping

from annotator.errors import ModelUnavailable

Progress = Callable[[int, int | None], None]
"""Called as `progress(bytes_done, bytes_total)` after every chunk; `bytes_total` is None when unknown."""

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def user_cache_dir() -> Path:
    """The project's folder in the user's cache: `$XDG_CACHE_HOME/annotator` when set, else the platform's own
    cache folder (`%LOCALAPPDATA%` on Windows, `~/Library/Caches` on macOS, `~/.cache` elsewhere)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        base = Path(xdg)
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path.home() / ".cache"
    return base / "annotator"


def partial_path(dest: Path) -> Path:
    """The temporary name a download of `dest` is written to until it is verified."""
    return dest.with_name(dest.name + ".part")


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    size_bytes: int | None = None,
    sha256: str | None = None,
    progress: Progress | None = None,
    headers: Mapping[str, str] | None = None,
    retries: int = 5,
    timeout_s: float = 30.0,
    chunk_bytes: int = 1 << 20,
) -> Path:
    """Fetch `url` into `dest` and return `dest`.

    Resumes an existing `.part` file, and resumes after each of up to `retries` dropped connections. When
    `size_bytes` or `sha256` (hex) is given, a finished download that does not match is deleted and refused
    with `ModelUnavailable`; so is a download that cannot be completed, whose `.part` file is kept for a later
    call. An exception raised by `progress` stops the download and propagates; the `.part` file is kept.
    `headers` go with every request (e.g. authorization).
    """
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, got {retries}")
    dest = Path(dest)
    part = partial_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(retries + 1):
        try:
            complete = _fetch_into(url, part, size_bytes, progress, timeout_s, chunk_bytes, dict(headers or {}))
        except _ProgressRaised as stop:
            raise stop.__cause__ from None
        except urllib.error.HTTPError as exc:
            raise ModelUnavailable(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
        except (OSError, http.client.HTTPException) as exc:
            complete, failure = False, f"{type(exc).__name__}: {exc}"
        else:
            failure = "the connection closed before the last byte"
        if complete:
            _verify(part, url, size_bytes, sha256)
            os.replace(part, dest)
            return dest
    raise ModelUnavailable(
        f"download of {url} was interrupted ({failure}) after {_size(part)} bytes and {retries} retries; "
        f"the partial file {part} is kept and the next download resumes it"
    )


def _fetch_into(
    url: str,
    part: Path,
    size_bytes: int | None,
    progress: Progress | None,
    timeout_s: float,
    chunk_bytes: int,
    headers: dict[str, str],
) -> bool:
    """One request, appended to `part` from its current length; True when the whole file is in `part`."""
    offset = _size(part)
    if size_bytes is not None and offset >= size_bytes:
        return True
    request = urllib.request.Request(url, headers=headers | ({"Range": f"bytes={offset}-"} if offset else {}))
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the range starts at the end: the part file already holds every byte
            return True
        raise
    with response:
        total = size_bytes
        if response.status == 206:
            start, total_from_server = _content_range(response.headers.get("Content-Range", ""))
            if start != offset:
                raise http.client.HTTPException(f"server resumed at byte {start}, not {offset}")
            total = total if total is not None else total_from_server
            mode = "ab"
        else:
            offset = 0
            length = response.headers.get("Content-Length")
            total = total if total is not None else (int(length) if length is not None else None)
            mode = "wb"
        done = offset
        with part.open(mode) as out:
            while chunk := response.read(chunk_bytes):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    _report(progress, done, total)
    return total is None or done >= total


class _ProgressRaised(Exception):
    """Carries an exception raised by the progress callback past the retry loop (its `__cause__`)."""


def _report(progress: Progress, done: int, total: int | None) -> None:
    try:
        progress(done, total)
    except BaseException as exc:
        raise _ProgressRaised from exc


def _content_range(header: str) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if match is None:
        raise http.client.HTTPException(f"unreadable Content-Range {header!r}")
    return int(match[1]), None if match[3] == "*" else int(match[3])


def _verify(part: Path, url: str, size_bytes: int | None, sha256: str | None) -> None:
    size = _size(part)
    if size_bytes is not None and size != size_bytes:
        part.unlink()
        raise ModelUnavailable(f"download of {url} has {size} bytes, expected {size_bytes}; the file was deleted")
    if sha256 is not None:
        digest = file_sha256(part)
        if digest != sha256.lower():
            part.unlink()
            raise ModelUnavailable(
                f"download of {url} has SHA-256 {digest}, expected {sha256.lower()}; the file was deleted"
            )


def file_sha256(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0
