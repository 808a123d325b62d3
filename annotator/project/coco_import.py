"""COCO import into a `ProjectStore` (`import_coco`; also importable from `annotator.project.coco`).

Parses the file once (`json.load`); a broken file (unreadable, not JSON, nested too deeply, a number too long to
read, no `images` list) raises `CocoFormatError` naming it. Images are matched by file_name to the store (files
under the image root not yet listed are added); a file_name that escapes the root (`..`, absolute, a drive letter
or UNC path, a symlink out), that is not valid text (a lone surrogate) or names no image file is rejected, as is
an image whose width/height differ from the file's EXIF-applied size. Categories are matched by name, new ones
added. Annotations take polygons, RLE (counts as a list or a string) or no segmentation (box-only); crowd regions
(iscrowd 1) are not instances and are skipped. Numbers are checked before use: one that is not finite or too
large (a 400-digit integer), a polygon point far outside the image, a head index beyond any model make their
entry bad. Every rejected entry is reported by its id with the reason; the rest is imported with source
"imported" and the file's status (default `default_status`), not undoable, all in one store transaction: an
import that fails part-way (a busy store, a full disk) leaves the store exactly as it was.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal, get_args

from annotator.errors import CocoFormatError
from annotator.project.geometry import is_finite_number, segmentation_to_rle
from annotator.project.store import NewAnnotation, ProjectStore, Status

INDEX_LIMIT = 2**31
"""Image sides and head indices at or above this are not real values (no image or model is that large)."""


@dataclass(frozen=True)
class ImportIssue:
    """An entry of the imported file that was not imported: its section, its id as written, and why."""

    kind: Literal["image", "category", "annotation"]
    coco_id: Any
    reason: str


@dataclass(frozen=True)
class ImportReport:
    """What an import did: images matched and added, categories added, annotations imported, and the issues."""

    path: Path
    images_matched: int
    images_added: int
    categories_added: int
    annotations_imported: int
    issues: tuple[ImportIssue, ...]


def import_coco(store: ProjectStore, path: str | os.PathLike, *, default_status: Status = "accepted") -> ImportReport:
    """Import a COCO instances file into the store in one transaction; bad entries are reported and skipped."""
    path = Path(path)
    if default_status not in get_args(Status):
        raise ValueError(f"default_status must be one of {get_args(Status)}, got {default_status!r}")
    data = _read_coco(path)
    issues: list[ImportIssue] = []
    with store.transaction():
        category_map, categories_added = _import_categories(store, data["categories"], issues)
        image_map, matched, added = _import_images(store, data["images"], issues)
        items = _new_annotations(data["annotations"], image_map, category_map, default_status, issues)
        store.add_annotations(items, undoable=False, label=f"import {path.name}")
    return ImportReport(path, matched, added, categories_added, len(items), tuple(issues))


def _read_coco(path: Path) -> dict[str, list]:
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except OSError as err:
        raise CocoFormatError(f"cannot read COCO file {path}: {err.strerror or err}") from None
    except RecursionError:
        raise CocoFormatError(f"{path} is nested too deeply to be a COCO file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CocoFormatError(f"{path} is not valid JSON: {err}") from None
    except ValueError as err:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        reason = str(err).split(";")[0]
        raise CocoFormatError(f"{path} holds a number too long to read ({reason}); it is not a COCO file") from None
    if not isinstance(data, dict):
        raise CocoFormatError(f"{path}: a COCO file is a JSON object, found {type(data).__name__}")
    if not isinstance(data.get("images"), list):
        raise CocoFormatError(f"{path}: no 'images' list")
    for key in ("annotations", "categories"):
        if not isinstance(data.setdefault(key, []), list):
            raise CocoFormatError(f"{path}: '{key}' is not a list")
    return data


def _import_categories(
    store: ProjectStore, entries: list, issues: list[ImportIssue]
) -> tuple[dict[int, int], int]:
    mapping: dict[int, int] = {}
    added = 0
    for entry in entries:
        coco_id = entry.get("id") if isinstance(entry, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        if not _is_int(coco_id) or not isinstance(name, str) or not name.strip():
            issues.append(ImportIssue("category", coco_id, "category needs an integer id and a name"))
            continue
        if coco_id in mapping:
            issues.append(ImportIssue("category", coco_id, "duplicate category id"))
            continue
        supercategory = entry.get("supercategory")
        supercategory = supercategory if isinstance(supercategory, str) else ""
        if not (_is_text(name) and _is_text(supercategory)):
            issues.append(ImportIssue("category", coco_id, "category name or supercategory is not valid text"))
            continue
        existing = store.category_by_name(name)
        if existing is None:
            existing = store.add_category(name, supercategory, undoable=False)
            added += 1
        mapping[coco_id] = existing.id
    return mapping, added


def _import_images(
    store: ProjectStore, entries: list, issues: list[ImportIssue]
) -> tuple[dict[int, tuple[int, int, int]], int, int]:
    """COCO image id -> (store image id, width, height) for the images that can be imported."""
    wanted: dict[int, tuple[str, int, int]] = {}
    for entry in entries:
        coco_id = entry.get("id") if isinstance(entry, dict) else None
        try:
            if not _is_int(coco_id):
                raise ValueError("image has no integer id")
            if coco_id in wanted:
                raise ValueError("duplicate image id")
            relative = _relative_file_name(entry.get("file_name"))
            width, height = entry.get("width"), entry.get("height")
            if not (_is_int(width) and _is_int(height) and 0 < width < INDEX_LIMIT and 0 < height < INDEX_LIMIT):
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
    mapping: dict[int, tuple[int, int, int]] = {}
    for coco_id, (relative, width, height) in wanted.items():
        record = records.get(relative)
        if record is None:
            reason = reasons[relative]
        elif not record.present:
            reason = f"{relative} is missing from the image folder"
        elif record.width is None:
            reason = f"{relative}: {record.error}"
        elif (record.width, record.height) != (width, height):
            reason = (
                f"{relative} is {width}x{height} in the file but {record.width}x{record.height} on disk "
                "(EXIF orientation applied)"
            )
        else:
            mapping[coco_id] = (record.id, record.width, record.height)
            continue
        issues.append(ImportIssue("image", coco_id, reason))
    return mapping, len(wanted) - len(new_paths), len(added_records)


def _relative_file_name(file_name: Any) -> str:
    """A file_name as a normalised '/'-separated path inside the image root; ValueError if it leaves it."""
    if not isinstance(file_name, str) or not file_name.strip():
        raise ValueError("image has no file_name")
    if not _is_text(file_name):
        raise ValueError(f"file_name {file_name[:200]!r} is not valid text (it holds a lone surrogate)")
    if PureWindowsPath(file_name).anchor or PurePosixPath(file_name).is_absolute():
        raise ValueError(f"file_name {file_name[:200]!r} is absolute; it must be relative to the image folder")
    unified = file_name.replace("\\", "/")
    if ".." in unified.split("/"):
        raise ValueError(f"file_name {file_name[:200]!r} leads out of the image folder")
    return posixpath.normpath(unified)


def _new_annotations(
    entries: list,
    image_map: dict[int, tuple[int, int, int]],
    category_map: dict[int, int],
    default_status: Status,
    issues: list[ImportIssue],
) -> list[NewAnnotation]:
    """The annotations that can be imported; the others are added to `issues` by id."""
    items = []
    seen: set[int] = set()
    for entry in entries:
        coco_id = entry.get("id") if isinstance(entry, dict) else None
        try:
            if not _is_int(coco_id):
                raise ValueError("annotation has no integer id")
            if coco_id in seen:
                raise ValueError("duplicate annotation id")
            seen.add(coco_id)
            items.append(_new_annotation(entry, image_map, category_map, default_status))
        except ValueError as err:
            issues.append(ImportIssue("annotation", coco_id, str(err)))
    return items


def _new_annotation(
    entry: dict[str, Any],
    image_map: dict[int, tuple[int, int, int]],
    category_map: dict[int, int],
    default_status: Status,
) -> NewAnnotation:
    image_ref, category_ref = entry.get("image_id"), entry.get("category_id")
    image = image_map.get(image_ref) if _is_int(image_ref) else None
    if image is None:
        raise ValueError(f"image {image_ref!r} is unknown or was not imported")
    category_id = category_map.get(category_ref) if _is_int(category_ref) else None
    if category_id is None:
        raise ValueError(f"category {entry.get('category_id')!r} is unknown or was not imported")
    if entry.get("iscrowd", 0):
        raise ValueError("crowd region (iscrowd 1) is not an instance; not imported")
    image_id, width, height = image
    box = _clipped_box(entry.get("bbox"), width, height)
    rle = None
    segmentation = entry.get("segmentation")
    if segmentation is not None and segmentation != [] and not entry.get("box_only", False):
        rle = segmentation_to_rle(segmentation, height, width)
        if rle.area_px == 0:
            raise ValueError("segmentation is empty")
    expression = entry.get("expression", "")
    score = entry.get("score")
    status = entry.get("status", default_status)
    heads = entry.get("heads", [])
    extra = entry.get("extra", {})
    if not (isinstance(expression, str) and _is_text(expression)):
        raise ValueError("expression is not a string of valid text")
    if score is not None and not is_finite_number(score):
        raise ValueError("score is not a finite number")
    if status not in get_args(Status):
        raise ValueError(f"status {status!r} is not one of {get_args(Status)}")
    if not isinstance(heads, list) or not all(_is_head(h) for h in heads):
        raise ValueError(f"heads is not a list of [layer, head] pairs of integers from 0 to {INDEX_LIMIT - 1}")
    if not isinstance(extra, dict):
        raise ValueError("extra is not an object")
    if not _holds_only_valid_text(extra):
        raise ValueError("extra holds a string that is not valid text (a lone surrogate)")
    return NewAnnotation(
        image_id=image_id,
        category_id=category_id,
        box_xyxy=box,
        rle=rle,
        expression=expression,
        source="imported",
        score=score,
        heads=tuple((layer, head) for layer, head in heads),
        status=status,
        extra=extra,
    )


def _clipped_box(bbox: Any, width: int, height: int) -> tuple[float, float, float, float]:
    """COCO [x, y, w, h] -> (x0, y0, x1, y1) clipped to the image; ValueError if malformed or empty."""
    if not (isinstance(bbox, list) and len(bbox) == 4):
        raise ValueError("bbox is not [x, y, width, height]")
    if not all(map(is_finite_number, bbox)):
        raise ValueError("bbox has a value that is not a finite number")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise ValueError(f"bbox {bbox} has no area")
    x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    if x0 >= x1 or y0 >= y1:
        raise ValueError(f"bbox {bbox} lies outside the {width}x{height} image")
    return x0, y0, x1, y1


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_head(value: Any) -> bool:
    """A [layer, head] pair of integers that can index a model."""
    return isinstance(value, list) and len(value) == 2 and all(_is_int(v) and 0 <= v < INDEX_LIMIT for v in value)


def _is_text(value: str) -> bool:
    """Whether a string can be stored and written as UTF-8 (JSON allows lone surrogates such as "\\ud800")."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _holds_only_valid_text(value: Any) -> bool:
    """Whether every key and string in a JSON value is valid text (walked without recursion)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and not _is_text(item):
            return False
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True
