"""COCO and RefCOCO-style export, and COCO import, for a `ProjectStore`.

Export (`export_coco`)
    `images`: id, file_name ('/'-separated, relative to the image root), width, height in the EXIF-applied frame.
    An image is exported when it carries an exported annotation or is marked done (a reviewed image with no
    object is a useful negative); images missing from disk are left out and listed in the report.
    `categories`: every category of the store. `annotations`: id, image_id, category_id, bbox [x, y, w, h],
    area (of the written segmentation as pycocotools rasterises it), iscrowd 0, segmentation, and our fields
    `expression`, `score`, `source`, `status`, `box_only`, `heads` ([[layer, head], ...]) and `extra`. A field
    whose value is unknown (the score of a hand-drawn or imported annotation) is left out, never written as null:
    Datumaro and CVAT refuse a whole file for one null score.
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

Import (`import_coco`, `ImportReport`, `ImportIssue`): see `coco_import`; importable from here too.

Progress: each export takes `progress(done, total)`, called before each image and with (total, total) just
before the file replaces the old one; it may raise `ExportCancelled`, which leaves the old file (see
`folder_export`).

Errors: an export that cannot be written raises `ExportError` naming the destination, the reason, and the
project store the annotations are safe in; `check_export_destination` checks a destination before any work
(before a model loads, say).
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from annotator import __version__
from annotator.errors import ExportError
from annotator.project.atomic_file import atomic_text_files, check_writable_file
from annotator.project.coco_import import ImportIssue, ImportReport, import_coco  # also imported from here
from annotator.project.folder_export import Progress, exported_images, no_progress
from annotator.project.geometry import (
    DEFAULT_MIN_AREA_PX,
    DEFAULT_TOLERANCE_PX,
    SegmentationKind,
    box_polygon,
    coco_segmentation,
    segmentation_to_rle,
)
from annotator.project.store import Annotation, ProjectStore, Status

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


# ----- export ----------------------------------------------------------------------------------------------------


def export_coco(
    store: ProjectStore,
    path: str | os.PathLike,
    segmentation: SegmentationKind = "polygon",
    statuses: tuple[Status, ...] = ("accepted",),
    *,
    min_area_px: float = DEFAULT_MIN_AREA_PX,
    tolerance_px: float = DEFAULT_TOLERANCE_PX,
    progress: Progress | None = None,
) -> ExportReport:
    """Write the store as a COCO instances file at `path` (atomically); ExportError if it cannot be written."""
    progress = progress or no_progress
    with in_user_words(store):
        check_export_destination(path)
        dataset, report = coco_dataset(
            store, Path(path), segmentation, statuses, min_area_px, tolerance_px, progress=progress
        )
        _write_json({Path(path): dataset}, "COCO file", lambda: progress(report.images, report.images))
    return report


def check_export_destination(path: str | os.PathLike) -> None:
    """ExportError unless a COCO file can be written at `path`: not a folder, in an existing, writable folder.

    Cheap and writes nothing: for checking an output path before long work (a model load).
    """
    check_writable_file(path, "COCO file")


def export_refcoco(
    store: ProjectStore,
    folder_or_path: str | os.PathLike,
    *,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    segmentation: SegmentationKind = "polygon",
    statuses: tuple[Status, ...] = ("accepted",),
    progress: Progress | None = None,
) -> RefcocoExport:
    """Write `instances.json` and `refs.json` into a folder (or the refs to a `.json` path, instances beside it),
    replaced together; ExportError if they cannot be written."""
    if len(split_fractions) != 3 or min(split_fractions) < 0 or not math.isclose(sum(split_fractions), 1.0):
        raise ValueError(f"split_fractions are (train, val, test) summing to 1, got {split_fractions}")
    progress = progress or no_progress
    with in_user_words(store):
        instances_path, refs_path = _refcoco_paths(Path(folder_or_path))
        dataset, refs, counts = _refcoco_dataset(
            store, instances_path, split_fractions, segmentation, statuses, progress
        )
        total = len(dataset["images"])
        _write_json({instances_path: dataset, refs_path: refs}, "RefCOCO file", lambda: progress(total, total))
    return RefcocoExport(instances_path, refs_path, len(refs), counts)


def _refcoco_paths(target: Path) -> tuple[Path, Path]:
    """(instances, refs) for a folder (made if missing) or a refs `.json` path; ExportError if they cannot be
    written."""
    if target.suffix.lower() == ".json":
        refs_path, instances_path = target, target.with_name("instances.json")
        if refs_path == instances_path:
            raise ExportError(f"cannot write RefCOCO refs file {target}: instances.json is the name of the other file")
    else:
        if target.exists() and not target.is_dir():
            raise ExportError(f"cannot write a RefCOCO export into {target}: it is a file, not a folder")
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ExportError(f"cannot make the RefCOCO export folder {target}: {err.strerror or err}") from err
        refs_path, instances_path = target / "refs.json", target / "instances.json"
    for path in (instances_path, refs_path):
        check_writable_file(path, "RefCOCO file")
    return instances_path, refs_path


def _refcoco_dataset(
    store: ProjectStore,
    instances_path: Path,
    split_fractions: tuple[float, float, float],
    segmentation: SegmentationKind,
    statuses: tuple[Status, ...],
    progress: Progress,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, int]]:
    """The instances, the refs and the number of images per split."""
    dataset, _ = coco_dataset(
        store, instances_path, segmentation, statuses, DEFAULT_MIN_AREA_PX, DEFAULT_TOLERANCE_PX, progress=progress
    )
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
    counts = {split: 0 for split in SPLITS}
    for split in splits.values():
        counts[split] += 1
    return dataset, refs, counts


def _write_json(documents: dict[Path, Any], what: str, before_replace: Callable[[], None]) -> None:
    """Write each document as compact UTF-8 JSON at its path, all replaced together (`atomic_text_files`);
    `before_replace` runs when they are written, and an exception from it leaves the old files."""
    with atomic_text_files(list(documents), what) as handles:
        for handle, document in zip(handles, documents.values()):
            json.dump(document, handle, ensure_ascii=False, separators=(",", ":"))
        before_replace()


_ADVICE = {
    errno.ENOSPC: "free some space and export again",
    errno.EDQUOT: "free some space and export again",
    errno.EFBIG: "free some space and export again",
    errno.EACCES: "export to a folder you can write to",
    errno.EPERM: "export to a folder you can write to",
    errno.EROFS: "export to a folder you can write to",
}


@contextmanager
def in_user_words(store: ProjectStore) -> Iterator[None]:
    """Add to an ExportError that the annotations are safe in the project store (named), and what to do."""
    try:
        yield
    except ExportError as err:
        cause = err.__cause__
        advice = _ADVICE.get(cause.errno) if isinstance(cause, OSError) else None
        message = f"{err}; the annotations are safe in the project store {store.path}"
        raise ExportError(f"{message}; {advice}" if advice else message) from cause


def coco_dataset(
    store: ProjectStore,
    path: Path,
    segmentation: SegmentationKind,
    statuses: tuple[Status, ...],
    min_area_px: float,
    tolerance_px: float,
    *,
    progress: Progress = no_progress,
) -> tuple[dict[str, Any], ExportReport]:
    """The COCO instances document of the store (see the module docstring) and its report, for `path`;
    `progress(i, images)` is called before the annotations of the i-th image are converted."""
    if segmentation not in get_args(SegmentationKind):
        raise ValueError(f"segmentation must be 'polygon' or 'rle', got {segmentation!r}")
    exported, skipped = exported_images(store, statuses)
    records = [image.record for image in exported]
    images = [{"id": r.id, "file_name": r.path, "width": r.width, "height": r.height} for r in records]
    counts = {"polygon": 0, "rle": 0, "box_only": 0}
    coco_annotations = []
    for done, image in enumerate(exported):
        progress(done, len(exported))
        size = (image.record.width, image.record.height)
        coco_annotations += [
            _coco_annotation(ann, size, segmentation, min_area_px, tolerance_px, counts) for ann in image.annotations
        ]
    coco_annotations.sort(key=lambda ann: ann["id"])
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
    fields = {
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
    return {key: value for key, value in fields.items() if value is not None}


def _split_of(file_name: str, fractions: tuple[float, float, float]) -> str:
    """train / val / test for an image, from a hash of its path mapped uniformly onto [0, 1)."""
    digest = hashlib.blake2b(file_name.encode("utf-8"), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def _tokens(sentence: str) -> list[str]:
    return re.findall(r"\w+", sentence.lower())
