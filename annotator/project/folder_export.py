"""What the folder exports (COCO dataset folder, YOLO, Pascal VOC) share: the images and annotations to export,
image files placed as hard links or copies, unique file stems, and a folder replaced all-or-nothing.

`staged_folder` builds the export in a hidden folder beside the destination and only renames it into place when
every file is written: a failure leaves the destination as it was and no temporary folder behind. A destination
that exists must be empty or an earlier annotator export (it holds the `MARKER` file), so that an export never
replaces a folder of the user's own files.

Every export takes an optional `progress(done, total)` callback (`Progress`): it is called before each step (one
per image; a COCO folder with image files has a second step per image, placing its file) with the steps done so
far, and once more with (total, total) when everything is written but nothing replaced yet. It may raise
`ExportCancelled` to stop the export there, which leaves the destination as it was and no temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, get_args

from annotator.errors import ExportError
from annotator.project.atomic_file import parent_problem
from annotator.project.store import Annotation, Category, ImageRecord, ProjectStore, Status

ImageMode = Literal["link", "copy", "none"]
"""How image files go into a folder export: hard links (copies where the file system cannot link), copies, or
not at all (the annotations only)."""

Progress = Callable[[int, int], None]
"""Called with (done, total) steps of an export; may raise ExportCancelled (see the module docstring)."""

MARKER = ".annotator-export"
"""The file that marks a folder as an annotator export, which a later export may replace."""


@dataclass(frozen=True)
class ExportedImage:
    """An image to export: its record (size known), its file on disk and its exported annotations."""

    record: ImageRecord
    source: Path
    annotations: tuple[Annotation, ...]


@dataclass(frozen=True)
class FolderExportReport:
    """What a folder export wrote: the folder, counts, and the images left out (missing or unreadable)."""

    path: Path
    format: str
    images: int
    annotations: int
    categories: int
    masks: int
    image_files: int
    skipped_images: tuple[str, ...]


def exported_images(store: ProjectStore, statuses: tuple[Status, ...]) -> tuple[list[ExportedImage], list[str]]:
    """The images a COCO export would write (with an exported annotation, or marked done) and those left out."""
    annotations = store.annotations(statuses=statuses)
    by_image: dict[int, list[Annotation]] = {}
    for ann in annotations:
        by_image.setdefault(ann.image_id, []).append(ann)
    images, skipped = [], []
    for record in store.images(include_missing=True):
        if record.id not in by_image and record.status != "done":
            continue
        if record.present and record.width is None:
            record = store.ensure_image_info(record.id)
        if not record.present or record.width is None:
            skipped.append(record.path)
            continue
        images.append(ExportedImage(record, store.image_path(record.id), tuple(by_image.get(record.id, ()))))
    return images, skipped


def no_progress(done: int, total: int) -> None:
    """The `Progress` of an export nobody watches."""


def ordered_categories(store: ProjectStore) -> list[Category]:
    """The store's categories by id ascending: the class order of every export (YOLO and VOC class indices)."""
    return sorted(store.categories(), key=lambda category: category.id)


def unique_stems(paths: list[str], *, flat: bool = False) -> dict[str, str]:
    """A file stem per image path ('/'-separated, no suffix), unique even for `a.png` beside `a.jpg`; `flat`
    joins folders with '__' (formats whose files lie in one folder)."""
    stems: dict[str, str] = {}
    taken: set[str] = set()
    for path in paths:
        pure = PurePosixPath(path)
        stem = str(pure.with_suffix(""))
        if flat:
            stem = stem.replace("/", "__")
        candidate = stem
        if candidate.lower() in taken:
            candidate = f"{stem}_{pure.suffix.lstrip('.')}"
        number = 1
        while candidate.lower() in taken:
            number += 1
            candidate = f"{stem}_{number}"
        taken.add(candidate.lower())
        stems[path] = candidate
    return stems


def check_image_mode(mode: str) -> None:
    if mode not in get_args(ImageMode):
        raise ValueError(f"images must be one of {', '.join(get_args(ImageMode))}, got {mode!r}")


def place_image(source: Path, destination: Path, mode: ImageMode) -> bool:
    """Put `source` at `destination` (a hard link, or a copy); False when `mode` is "none"."""
    if mode == "none":
        return False
    destination.parent.mkdir(parents=True, exist_ok=True)
    if mode == "link":
        try:
            os.link(source, destination)
            return True
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    shutil.copy2(source, destination)
    return True


def check_export_folder(target: str | os.PathLike, what: str) -> Path:
    """ExportError unless `target` can become the export folder: absent, empty, or an earlier annotator export,
    in an existing folder one may write to."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        problem = "it is a file; give the name of a folder to write"
    elif target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file():
        problem = "the folder holds files that are not an annotator export; choose a new or empty folder"
    else:
        problem = parent_problem(target)
    if problem is not None:
        raise ExportError(f"cannot write {what} {target}: {problem}")
    return target


@contextmanager
def staged_folder(target: str | os.PathLike, what: str) -> Iterator[Path]:
    """Yield an empty hidden folder beside `target`; on a clean exit it replaces `target` (an earlier export is
    removed), on an exception `target` is untouched. OSErrors become ExportError naming `target`."""
    target = check_export_folder(target, what)
    stage = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    old = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old.tmp")
    try:
        try:
            stage.mkdir()
        except OSError as err:
            raise _failure(what, target, err) from err
        try:
            yield stage
            (stage / MARKER).write_text("written by annotator; a later export may replace this folder\n")
            if target.exists():
                os.replace(target, old)
            try:
                os.replace(stage, target)
            except OSError:
                if old.exists():
                    os.replace(old, target)
                raise
        except OSError as err:
            raise _failure(what, target, err) from err
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(stage)
        with contextlib.suppress(OSError):
            shutil.rmtree(old)


def _failure(what: str, target: Path, err: OSError) -> ExportError:
    return ExportError(f"cannot write {what} {target}: {err.strerror or err}")
