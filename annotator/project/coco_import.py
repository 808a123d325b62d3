"""COCO import into a `ProjectStore` (`import_coco`; also importable from `annotator.project.coco`).

Parses the file once (`json.load`); a broken file (unreadable, not JSON, nested too deeply, a number too long to
read, no `images` list) raises `CocoFormatError` naming it, and so does a COCO file that holds no instances (a
captions, image-labels or panoptic file), in one line naming its kind. Images are matched by file_name to the
store (files under the image root not yet listed are added). A file_name may be absolute when it lies inside the
image folder, and may lack its extension when exactly one image file there has that stem; one that escapes the
root (`..`, absolute elsewhere, a drive letter or UNC path, a symlink out), that is not valid text (a lone
surrogate) or names no image file is rejected. Width and height may be written as integral floats (10.0); they
must be the image's EXIF-applied size, or its stored (pre-rotation) size as CVAT writes it for an EXIF-rotated
image: CVAT shows such images rotated (EXIF applied) and its annotations are drawn there, so their coordinates
are already in the displayed frame and are kept; the summary says how many images this was done for.
Annotations and categories: see `coco_annotations` (crowd RLE is taken as instances for a CVAT-style file, every
annotation carrying CVAT's `attributes`, or when asked). Every rejected entry is reported by its id with the
reason; the rest is imported with source "imported" and the file's status (default `default_status`), not
undoable, all in one store transaction: an import that fails part-way (a busy store, a full disk) leaves the
store exactly as it was.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, get_args

from PIL import Image

from annotator.errors import CocoFormatError
from annotator.project.coco_annotations import (
    INDEX_LIMIT,
    AnnotationOptions,
    CategoryTable,
    ImageTarget,
    ImportIssue,
    is_int,
    is_text,
    new_annotation,
)
from annotator.project.images import IMAGE_SUFFIXES
from annotator.project.store import NewAnnotation, ProjectStore, Status

__all__ = ["ImportIssue", "ImportReport", "import_coco", "import_dataset", "read_json"]


@dataclass(frozen=True)
class ImportReport:
    """What an import did: images matched and added, categories added, annotations imported, the issues, and
    notes on what was read differently from plain COCO (crowd masks taken as instances, EXIF sizes)."""

    path: Path
    images_matched: int
    images_added: int
    categories_added: int
    annotations_imported: int
    issues: tuple[ImportIssue, ...]
    notes: tuple[str, ...] = ()


def import_coco(
    store: ProjectStore,
    path: str | os.PathLike,
    *,
    default_status: Status = "accepted",
    crowd_as_instances: bool = False,
) -> ImportReport:
    """Import a COCO instances file into the store in one transaction; bad entries are reported and skipped."""
    path = Path(path)
    data = read_json(path)
    return import_dataset(store, data, path, default_status=default_status, crowd_as_instances=crowd_as_instances)


def import_dataset(
    store: ProjectStore,
    data: Any,
    path: Path,
    *,
    default_status: Status = "accepted",
    crowd_as_instances: bool = False,
) -> ImportReport:
    """Import COCO instances already parsed from `path` (a dict as `json.load` gives it)."""
    if default_status not in get_args(Status):
        raise ValueError(f"default_status must be one of {get_args(Status)}, got {default_status!r}")
    _check_sections(data, path)
    notes: list[str] = []
    from_cvat = not crowd_as_instances and _written_by_cvat(data["annotations"])
    options = AnnotationOptions(default_status=default_status, crowd_as_instances=crowd_as_instances or from_cvat)
    issues: list[ImportIssue] = []
    with store.transaction():
        categories = CategoryTable(store, data["categories"], issues)
        images, matched, added, stored_size = _import_images(store, data["images"], issues)
        items = _new_annotations(data["annotations"], images, categories, options, issues)
        store.add_annotations(items, undoable=False, label=f"import {path.name}")
    if options.crowd_imported:
        why = " (a CVAT-style file: every annotation has 'attributes')" if from_cvat else ""
        notes.append(f"{options.crowd_imported} crowd (iscrowd 1) mask(s) imported as instance masks{why}")
    if stored_size:
        notes.append(
            f"{stored_size} image(s) listed with the stored size of an EXIF-rotated image: taken at the displayed "
            "size, their annotations as drawn on the displayed (EXIF-applied) image, as CVAT shows it"
        )
    return ImportReport(path, matched, added, categories.added, len(items), tuple(issues), tuple(notes))


def read_json(path: Path) -> Any:
    """The JSON value of a file; CocoFormatError naming the file if it cannot be read as JSON."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except OSError as err:
        raise CocoFormatError(f"cannot read COCO file {path}: {err.strerror or err}") from None
    except RecursionError:
        raise CocoFormatError(f"{path} is nested too deeply to be a COCO file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CocoFormatError(f"{path} is not valid JSON: {err}") from None
    except ValueError as err:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        reason = str(err).split(";")[0]
        raise CocoFormatError(f"{path} holds a number too long to read ({reason}); it is not a COCO file") from None


def _check_sections(data: Any, path: Path) -> None:
    if not isinstance(data, dict):
        raise CocoFormatError(f"{path}: a COCO file is a JSON object, found {type(data).__name__}")
    if not isinstance(data.get("images"), list):
        raise CocoFormatError(f"{path}: no 'images' list")
    for key in ("annotations", "categories"):
        if not isinstance(data.setdefault(key, []), list):
            raise CocoFormatError(f"{path}: '{key}' is not a list")
    kind = _other_kind(data["annotations"])
    if kind:
        raise CocoFormatError(f"{path} is a COCO {kind}, not an instances file (boxes, masks); nothing to import")


def _other_kind(annotations: list) -> str | None:
    """The kind of a COCO file whose annotations are not instances: captions, image labels or panoptic."""
    entries = [entry for entry in annotations if isinstance(entry, dict)]
    if not entries or any("bbox" in entry or "segmentation" in entry for entry in entries):
        return None
    if any("segments_info" in entry for entry in entries):
        return "panoptic file (annotations with 'segments_info', masks in PNG files)"
    if all("caption" in entry for entry in entries):
        return "captions file (annotations with 'caption' and no box)"
    if all("category_id" in entry for entry in entries):
        return "image-labels file (annotations with a category and no box)"
    return None


def _written_by_cvat(annotations: list) -> bool:
    """CVAT (and Datumaro) give every annotation an `attributes` object and write brush masks as crowd RLE."""
    return bool(annotations) and all(
        isinstance(entry, dict) and isinstance(entry.get("attributes"), dict) for entry in annotations
    )


def _import_images(
    store: ProjectStore, entries: list, issues: list[ImportIssue]
) -> tuple[dict[int, ImageTarget], int, int, int]:
    """COCO image id -> target image for the images that can be imported; matched, added, at stored size."""
    wanted: dict[int, tuple[str, int, int]] = {}
    listings: dict[Path, dict[str, list[str]]] = {}
    for entry in entries:
        coco_id = entry.get("id") if isinstance(entry, dict) else None
        try:
            if not is_int(coco_id):
                raise ValueError("image has no integer id")
            if coco_id in wanted:
                raise ValueError("duplicate image id")
            relative = _relative_file_name(entry.get("file_name"), store.image_root, listings)
            width, height = _whole(entry.get("width")), _whole(entry.get("height"))
            if not (is_int(width) and is_int(height) and 0 < width < INDEX_LIMIT and 0 < height < INDEX_LIMIT):
                raise ValueError(f"{relative}: width and height must be positive integers")
        except ValueError as err:
            issues.append(ImportIssue("image", coco_id, str(err)))
            continue
        wanted[coco_id] = (relative, width, height)
    known = {relative: store.image_by_path(relative) for relative, _, _ in wanted.values()}
    new_paths = [relative for relative, record in known.items() if record is None]
    added_records, refused = store.add_images(new_paths)
    reasons = {skipped.path: skipped.reason for skipped in refused}
    store.fill_image_info([record.id for record in known.values() if record is not None and record.present])
    records = {record.path: record for record in added_records}
    records.update({path: store.image(record.id) for path, record in known.items() if record is not None})
    mapping: dict[int, ImageTarget] = {}
    stored_size = 0
    for coco_id, (relative, width, height) in wanted.items():
        record = records.get(relative)
        if record is None:
            reason = reasons[relative]
        elif not record.present:
            reason = f"{relative} is missing from the image folder"
        elif record.width is None:
            reason = f"{relative}: {record.error}"
        elif (record.width, record.height) == (width, height) or _stored_size(store, relative) == (width, height):
            stored_size += (record.width, record.height) != (width, height)
            mapping[coco_id] = ImageTarget(record.id, record.width, record.height)
            continue
        else:
            reason = (
                f"{relative} is {width}x{height} in the file but {record.width}x{record.height} on disk "
                "(EXIF orientation applied)"
            )
        issues.append(ImportIssue("image", coco_id, reason))
    return mapping, len(wanted) - len(new_paths), len(added_records), stored_size


def _stored_size(store: ProjectStore, relative: str) -> tuple[int, int] | None:
    """The (width, height) of the pixels as stored, before the EXIF orientation (header only)."""
    try:
        with Image.open(store.resolve_image_path(relative)) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _whole(value: Any) -> Any:
    """An integral float (10.0, as some tools write sizes) as an int; anything else as it is."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _relative_file_name(file_name: Any, root: Path, listings: dict[Path, dict[str, list[str]]]) -> str:
    """A file_name as a normalised '/'-separated path inside the image root; ValueError if it leaves it."""
    if not isinstance(file_name, str) or not file_name.strip():
        raise ValueError("image has no file_name")
    if not is_text(file_name):
        raise ValueError(f"file_name {file_name[:200]!r} is not valid text (it holds a lone surrogate)")
    if PurePosixPath(file_name).is_absolute() and not PureWindowsPath(file_name).drive:
        file_name = _inside_root(file_name, root)
    elif PureWindowsPath(file_name).anchor:
        raise ValueError(f"file_name {file_name[:200]!r} is absolute; it must be relative to the image folder")
    unified = file_name.replace("\\", "/")
    if ".." in unified.split("/"):
        raise ValueError(f"file_name {file_name[:200]!r} leads out of the image folder")
    return _with_suffix(posixpath.normpath(unified), root, listings)


def _inside_root(file_name: str, root: Path) -> str:
    """An absolute file_name as relative to the image root; ValueError if it lies elsewhere."""
    for base in dict.fromkeys([root.absolute(), root.resolve()]):
        if Path(file_name).is_relative_to(base):
            return Path(file_name).relative_to(base).as_posix()
    raise ValueError(f"file_name {file_name[:200]!r} is absolute and not inside the image folder {root}")


def _with_suffix(relative: str, root: Path, listings: dict[Path, dict[str, list[str]]]) -> str:
    """A file_name without an extension (as X-AnyLabeling writes) completed when exactly one image has its stem;
    `listings` keeps the image names of each folder listed so far, by stem."""
    if PurePosixPath(relative).suffix or "\0" in relative or len(relative) > 1000:
        return relative
    folder = root / PurePosixPath(relative).parent
    if folder not in listings:
        listings[folder] = {}
        try:
            for entry in folder.iterdir():
                if entry.suffix.lower() in IMAGE_SUFFIXES:
                    listings[folder].setdefault(entry.stem, []).append(entry.name)
        except OSError:
            pass
    matches = listings[folder].get(PurePosixPath(relative).name, [])
    if len(matches) > 1:
        names = sorted(matches)
        raise ValueError(f"file_name {relative!r} has no extension and matches {len(names)} images: {names}")
    return posixpath.join(posixpath.dirname(relative), matches[0]) if matches else relative


def _new_annotations(
    entries: list,
    images: dict[int, ImageTarget],
    categories: CategoryTable,
    options: AnnotationOptions,
    issues: list[ImportIssue],
) -> list[NewAnnotation]:
    """The annotations that can be imported; the others are added to `issues` by id."""
    items = []
    seen: set[int] = set()
    for entry in entries:
        coco_id = entry.get("id") if isinstance(entry, dict) else None
        try:
            if not is_int(coco_id):
                raise ValueError("annotation has no integer id")
            if coco_id in seen:
                raise ValueError("duplicate annotation id")
            seen.add(coco_id)
            items.append(new_annotation(entry, images, categories, options))
        except ValueError as err:
            issues.append(ImportIssue("annotation", coco_id, str(err)))
    return items
