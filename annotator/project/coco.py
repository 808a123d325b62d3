"""COCO and RefCOCO-style export, and COCO import, for a `ProjectStore`.

Export (`export_coco`)
    `images`: id, file_name ('/'-separated, relative to the image root), width, height in the EXIF-applied frame.
    An image is exported when it carries an exported annotation or is marked done (a reviewed image with no
    object is a useful negative); images missing from disk are left out and listed in the report.
    `categories`: every category of the store. `annotations`: id, image_id, category_id, bbox [x, y, w, h],
    area (of the written segmentation as pycocotools rasterises it), iscrowd 0, segmentation, and our fields
    `expression`, `score`, `source`, `status`, `box_only`, `heads` ([[layer, head], ...]) and `extra`.
    Segmentation: polygons by default, compressed RLE with `segmentation="rle"`; in polygon mode a mask whose
    outline has a hole (which COCO polygons cannot express) is written as RLE, see `geometry`. A box-only
    annotation is written as its rectangle (polygon or RLE) with `box_only: true`, so every reader and COCOeval's
    segm mode accept it. Ids are the store's ids: they start at 1 (pycocotools treats 0 as "no match") and stay
    the same across exports of the same store. Only annotations with a status in `statuses` (default:
    accepted). Files are written atomically (`atomic_file`).

RefCOCO-style export (`export_refcoco`)
    `instances.json` (the COCO export above) and `refs.json`: one ref per exported annotation with an
    expression: ref_id and sent_id (= the annotation id, so stable), ann_id, image_id, category_id, file_name,
    split, sent_ids, sentences [{sent, raw, tokens, sent_id}]. Tokens are the lower-cased word characters of the
    expression. The split of an image is a pure function of its path (a hash mapped onto `split_fractions`), so
    it is deterministic, disjoint by image, and an image keeps its split when the dataset grows. JSON instead
    of the original pickle: a pickle can run code when loaded.

Import (`import_coco`)
    Parses the file once (`json.load`). Images are matched by file_name to the store (files under the image root
    not yet listed are added); a file_name that escapes the root (`..`, absolute, a drive letter or UNC path,
    a symlink out) or names no image file is rejected, as is an image whose width/height differ from the file's
    EXIF-applied size. Categories are matched by name, new ones added. Annotations take polygons, RLE (counts
    as a list or a string) or no segmentation (box-only); crowd regions (iscrowd 1) are not instances and are
    skipped. Every rejected entry is reported by its id with the reason; the rest is imported in one
    transaction (not undoable), with source "imported" and the file's status (default `default_status`).
    A broken file (unreadable, not JSON, no `images` list) raises `CocoFormatError`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal, get_args

from annotator import __version__
from annotator.errors import CocoFormatError
from annotator.project.atomic_file import atomic_text_file
from annotator.project.geometry import (
    DEFAULT_MIN_AREA_PX,
    DEFAULT_TOLERANCE_PX,
    SegmentationKind,
    box_polygon,
    coco_segmentation,
    segmentation_to_rle,
)
from annotator.project.store import Annotation, NewAnnotation, ProjectStore, Status

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote: counts per kind of segmentation, and the images left out (missing, unreadable)."""

    path: Path
    images: int
    annotations: int
    categories: int
    polygon_segmentations: int
    rle_segmentations: int
    box_only: int
    skipped_images: tuple[str, ...]


@dataclass(frozen=True)
class RefcocoExport:
    """The two files of a RefCOCO-style export, the number of refs, and images per split."""

    instances_path: Path
    refs_path: Path
    refs: int
    images_per_split: dict[str, int]


@dataclass(frozen=True)
class ImportIssue:
    """An entry of the imported file that was not imported: its section, its id as written, and why."""

    kind: Literal["image", "category", "annotation"]
    coco_id: Any
    reason: str


@dataclass(frozen=True)
class ImportReport:
    path: Path
    images_matched: int
    images_added: int
    categories_added: int
    annotations_imported: int
    issues: tuple[ImportIssue, ...]


# ----- export ----------------------------------------------------------------------------------------------------


def export_coco(
    store: ProjectStore,
    path: str | os.PathLike,
    segmentation: SegmentationKind = "polygon",
    statuses: tuple[Status, ...] = ("accepted",),
    *,
    min_area_px: float = DEFAULT_MIN_AREA_PX,
    tolerance_px: float = DEFAULT_TOLERANCE_PX,
) -> ExportReport:
    """Write the store as a COCO instances file at `path` (atomically)."""
    dataset, report = _coco_dataset(store, Path(path), segmentation, statuses, min_area_px, tolerance_px)
    with atomic_text_file(path) as f:
        json.dump(dataset, f, ensure_ascii=False, separators=(",", ":"))
    return report


def export_refcoco(
    store: ProjectStore,
    folder_or_path: str | os.PathLike,
    *,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    segmentation: SegmentationKind = "polygon",
    statuses: tuple[Status, ...] = ("accepted",),
) -> RefcocoExport:
    """Write `instances.json` and `refs.json` into a folder (or the refs to a `.json` path, instances beside it)."""
    if len(split_fractions) != 3 or min(split_fractions) < 0 or not math.isclose(sum(split_fractions), 1.0):
        raise ValueError(f"split_fractions are (train, val, test) summing to 1, got {split_fractions}")
    target = Path(folder_or_path)
    if target.suffix.lower() == ".json":
        refs_path, instances_path = target, target.with_name("instances.json")
    else:
        target.mkdir(parents=True, exist_ok=True)
        refs_path, instances_path = target / "refs.json", target / "instances.json"
    if refs_path == instances_path:
        raise ValueError("the refs file cannot be called instances.json")
    dataset, _ = _coco_dataset(store, instances_path, segmentation, statuses, DEFAULT_MIN_AREA_PX, DEFAULT_TOLERANCE_PX)
    file_names = {image["id"]: image["file_name"] for image in dataset["images"]}
    splits = {image_id: _split_of(name, split_fractions) for image_id, name in file_names.items()}
    refs = []
    for ann in dataset["annotations"]:
        sentence = ann["expression"].strip()
        if not sentence:
            continue
        ref_id = ann["id"]
        refs.append(
            {
                "ref_id": ref_id,
                "ann_id": ann["id"],
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "file_name": file_names[ann["image_id"]],
                "split": splits[ann["image_id"]],
                "sent_ids": [ref_id],
                "sentences": [
                    {"sent": sentence, "raw": ann["expression"], "tokens": _tokens(sentence), "sent_id": ref_id}
                ],
            }
        )
    with atomic_text_file(instances_path) as f:
        json.dump(dataset, f, ensure_ascii=False, separators=(",", ":"))
    with atomic_text_file(refs_path) as f:
        json.dump(refs, f, ensure_ascii=False, separators=(",", ":"))
    counts = {split: 0 for split in SPLITS}
    for split in splits.values():
        counts[split] += 1
    return RefcocoExport(instances_path, refs_path, len(refs), counts)


def _coco_dataset(
    store: ProjectStore,
    path: Path,
    segmentation: SegmentationKind,
    statuses: tuple[Status, ...],
    min_area_px: float,
    tolerance_px: float,
) -> tuple[dict[str, Any], ExportReport]:
    if segmentation not in get_args(SegmentationKind):
        raise ValueError(f"segmentation must be 'polygon' or 'rle', got {segmentation!r}")
    annotations = store.annotations(statuses=statuses)
    wanted = {ann.image_id for ann in annotations}
    images, skipped = [], []
    for record in store.images(include_missing=True):
        if record.id not in wanted and record.status != "done":
            continue
        if record.present and record.width is None:
            record = store.ensure_image_info(record.id)
        if not record.present or record.width is None:
            skipped.append(record.path)
            continue
        images.append({"id": record.id, "file_name": record.path, "width": record.width, "height": record.height})
    sizes = {image["id"]: (image["width"], image["height"]) for image in images}
    counts = {"polygon": 0, "rle": 0, "box_only": 0}
    coco_annotations = [
        _coco_annotation(ann, sizes[ann.image_id], segmentation, min_area_px, tolerance_px, counts)
        for ann in annotations
        if ann.image_id in sizes
    ]
    categories = [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in store.categories()]
    now = datetime.datetime.now(datetime.timezone.utc)
    dataset = {
        "info": {
            "description": f"annotator export of {store.image_root.name}",
            "url": "",
            "version": __version__,
            "year": now.year,
            "contributor": "",
            "date_created": now.isoformat(timespec="seconds"),
        },
        "licenses": [],
        "images": images,
        "annotations": coco_annotations,
        "categories": categories,
    }
    report = ExportReport(
        path=path,
        images=len(images),
        annotations=len(coco_annotations),
        categories=len(categories),
        polygon_segmentations=counts["polygon"],
        rle_segmentations=counts["rle"],
        box_only=counts["box_only"],
        skipped_images=tuple(skipped),
    )
    return dataset, report


def _coco_annotation(
    ann: Annotation,
    size: tuple[int, int],
    kind: SegmentationKind,
    min_area_px: float,
    tolerance_px: float,
    counts: dict[str, int],
) -> dict[str, Any]:
    width, height = size
    x0, y0, x1, y1 = ann.box_xyxy
    if ann.rle is None:
        counts["box_only"] += 1
        rectangle = box_polygon(ann.box_xyxy)
        segmentation = rectangle if kind == "polygon" else segmentation_to_rle(rectangle, height, width).to_coco()
    else:
        segmentation = coco_segmentation(ann.rle, kind, min_area_px=min_area_px, tolerance_px=tolerance_px)
    counts["polygon" if isinstance(segmentation, list) else "rle"] += 1
    area = ann.rle.area_px if isinstance(segmentation, dict) and ann.rle is not None else None
    if area is None:
        area = segmentation_to_rle(segmentation, height, width).area_px
    return {
        "id": ann.id,
        "image_id": ann.image_id,
        "category_id": ann.category_id,
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": area,
        "iscrowd": 0,
        "segmentation": segmentation,
        "expression": ann.expression,
        "score": ann.score,
        "source": ann.source,
        "status": ann.status,
        "box_only": ann.rle is None,
        "heads": [list(pair) for pair in ann.heads],
        "extra": dict(ann.extra),
    }


def _split_of(file_name: str, fractions: tuple[float, float, float]) -> str:
    """train / val / test for an image, from a hash of its path mapped uniformly onto [0, 1)."""
    digest = hashlib.blake2b(file_name.encode("utf-8"), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def _tokens(sentence: str) -> list[str]:
    return re.findall(r"\w+", sentence.lower())


# ----- import ----------------------------------------------------------------------------------------------------


def import_coco(store: ProjectStore, path: str | os.PathLike, *, default_status: Status = "accepted") -> ImportReport:
    """Import a COCO instances file into the store; malformed or unknown entries are reported, not fatal."""
    path = Path(path)
    if default_status not in get_args(Status):
        raise ValueError(f"default_status must be one of {get_args(Status)}, got {default_status!r}")
    data = _read_coco(path)
    issues: list[ImportIssue] = []
    category_map, categories_added = _import_categories(store, data["categories"], issues)
    image_map, matched, added = _import_images(store, data["images"], issues)
    items = []
    seen: set[int] = set()
    for entry in data["annotations"]:
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
    store.add_annotations(items, undoable=False, label=f"import {path.name}")
    return ImportReport(path, matched, added, categories_added, len(items), tuple(issues))


def _read_coco(path: Path) -> dict[str, list]:
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except OSError as err:
        raise CocoFormatError(f"cannot read COCO file {path}: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CocoFormatError(f"{path} is not valid JSON: {err}") from None
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
        existing = store.category_by_name(name)
        if existing is None:
            supercategory = entry.get("supercategory")
            existing = store.add_category(name, supercategory if isinstance(supercategory, str) else "", undoable=False)
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
            if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
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
    if PureWindowsPath(file_name).anchor or PurePosixPath(file_name).is_absolute():
        raise ValueError(f"file_name {file_name!r} is absolute; it must be relative to the image folder")
    unified = file_name.replace("\\", "/")
    if ".." in unified.split("/"):
        raise ValueError(f"file_name {file_name!r} leads out of the image folder")
    return posixpath.normpath(unified)


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
    if not isinstance(expression, str):
        raise ValueError("expression is not a string")
    if score is not None and not _is_finite_number(score):
        raise ValueError("score is not a number")
    if status not in get_args(Status):
        raise ValueError(f"status {status!r} is not one of {get_args(Status)}")
    if not isinstance(heads, list) or not all(_is_head(h) for h in heads):
        raise ValueError("heads is not a list of [layer, head] pairs")
    if not isinstance(extra, dict):
        raise ValueError("extra is not an object")
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
    if not all(map(_is_finite_number, bbox)):
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
    """A [layer, head] pair of integers."""
    return isinstance(value, list) and len(value) == 2 and all(map(_is_int, value))


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
