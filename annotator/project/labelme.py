"""labelme JSON (the native format of labelme and X-AnyLabeling, one file per image) as COCO instances for
`import_dataset`.

A file holds `shapes` (each with `label`, `points`, `shape_type`, `flags`, optional `group_id`, `description`),
`imagePath` (relative to the JSON file, '\\'-separated when written on Windows), `imageWidth`/`imageHeight` and
image-level `flags`. Polygons (and X-AnyLabeling's `rotation` boxes) become masks, rectangles (two corners, or
the four X-AnyLabeling writes) box-only annotations, circles masks of the circle (its centre and a point on it,
as labelme stores it); a shape's `score` (X-AnyLabeling's auto-labels) is the annotation's score. Points, lines,
line strips and labelme's `mask` shapes are not regions this project stores: each is reported, never silently
dropped. Shape and image flags, `group_id`, `description` and X-AnyLabeling's `attributes` and `difficult` are
kept in the annotation's `extra`. Skipped entries are named by the JSON file and the shape's position in it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import shapely

from annotator.errors import CocoFormatError
from annotator.project.coco_annotations import ImportIssue
from annotator.project.coco_import import ImportReport, import_dataset, read_json
from annotator.project.geometry import is_finite_number
from annotator.project.store import ProjectStore, Status

POLYGON_SHAPES = ("polygon", "rotation")
KEPT_IN_EXTRA = ("flags", "group_id", "description", "attributes", "difficult")
"""What labelme and X-AnyLabeling say about a shape beyond its geometry, kept in `extra` when they say it."""
CIRCLE_SEGMENTS = 16
"""Segments per quarter circle when a labelme circle is made a polygon (64 vertices in all)."""


def is_labelme(data: Any) -> bool:
    """Whether parsed JSON is a labelme / X-AnyLabeling file (an object with a `shapes` list)."""
    return isinstance(data, dict) and isinstance(data.get("shapes"), list)


def import_labelme(
    store: ProjectStore, path: Path, files: dict[Path, Any], *, default_status: Status = "accepted"
) -> ImportReport:
    """Import parsed labelme files (path -> JSON) as one COCO import named `path`, all or nothing."""
    names: dict[tuple[str, int], str] = {}
    dropped: list[ImportIssue] = []
    dataset: dict[str, list] = {"images": [], "annotations": [], "categories": []}
    categories: dict[str, int] = {}
    for image_id, (json_path, data) in enumerate(sorted(files.items()), start=1):
        names[("image", image_id)] = json_path.name
        if not isinstance(data.get("imagePath"), str) or not data["imagePath"].strip():
            dropped.append(ImportIssue("image", json_path.name, "no imagePath: the file names no image"))
            continue
        dataset["images"].append(_image(json_path, data, image_id))
        for index, shape in enumerate(data["shapes"]):
            where = f"{json_path.name} shape {index}"
            try:
                annotation = _annotation(shape, data.get("flags"), image_id, categories)
            except ValueError as err:
                dropped.append(ImportIssue("annotation", where, str(err)))
                continue
            annotation["id"] = len(dataset["annotations"]) + 1
            names[("annotation", annotation["id"])] = where
            dataset["annotations"].append(annotation)
    dataset["categories"] = [{"id": i, "name": name, "supercategory": ""} for name, i in categories.items()]
    report = import_dataset(store, dataset, path, default_status=default_status)
    issues = [dataclasses.replace(i, coco_id=names.get((i.kind, i.coco_id), i.coco_id)) for i in report.issues]
    return dataclasses.replace(report, issues=tuple(dropped + issues))


def read_labelme_folder(folder: Path) -> dict[Path, Any]:
    """The labelme files under a folder (JSON files with `shapes`, at any depth); CocoFormatError if none."""
    files = {}
    for json_path in sorted(folder.rglob("*.json")):
        data = read_json(json_path)
        if is_labelme(data):
            files[json_path] = data
    if not files:
        raise CocoFormatError(f"{folder} holds no labelme JSON file (a .json file with 'shapes')")
    return files


def _image(json_path: Path, data: dict[str, Any], image_id: int) -> dict[str, Any]:
    file_name = os.path.normpath(json_path.parent.absolute() / data["imagePath"].replace("\\", "/"))
    return {"id": image_id, "file_name": file_name, "width": data.get("imageWidth"), "height": data.get("imageHeight")}


def _annotation(shape: Any, image_flags: Any, image_id: int, categories: dict[str, int]) -> dict[str, Any]:
    """A labelme shape as a COCO annotation (without its id); ValueError if it is not a region."""
    if not isinstance(shape, dict):
        raise ValueError("shape is not an object")
    label, kind, points = shape.get("label"), shape.get("shape_type") or "polygon", shape.get("points")
    if not isinstance(label, str) or not label.strip():
        raise ValueError("shape has no label")
    if not (isinstance(points, list) and all(_is_point(p) for p in points)):
        raise ValueError("points is not a list of [x, y] pairs of finite numbers")
    if kind in POLYGON_SHAPES:
        if len(points) < 3:
            raise ValueError(f"a {kind} needs at least 3 points, found {len(points)}")
        segmentation = [[float(v) for point in points for v in point]]
    elif kind == "rectangle" and len(points) in (2, 4):  # labelme: two corners; X-AnyLabeling: all four
        segmentation = None
    elif kind == "circle" and len(points) == 2:
        (cx, cy), (px, py) = points
        radius = ((px - cx) ** 2 + (py - cy) ** 2) ** 0.5
        ring = shapely.Point(cx, cy).buffer(radius, quad_segs=CIRCLE_SEGMENTS).exterior.coords[:-1]
        segmentation = [[float(v) for point in ring for v in point]]
    else:
        raise ValueError(f"shape_type {kind!r} with {len(points)} point(s) is not a region; not imported")
    xs, ys = zip(*(map(float, p) for p in (points if segmentation is None else _pairs(segmentation[0]))))
    annotation: dict[str, Any] = {
        "image_id": image_id,
        "category_id": categories.setdefault(label, len(categories) + 1),
        "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
        "iscrowd": 0,
        "extra": _extra(shape, image_flags),
    }
    if segmentation is not None:
        annotation["segmentation"] = segmentation
    if is_finite_number(shape.get("score")):
        annotation["score"] = shape["score"]
    return annotation


def _extra(shape: dict[str, Any], image_flags: Any) -> dict[str, Any]:
    """What labelme and X-AnyLabeling say about a shape beyond its geometry, when they say anything."""
    extra = {key: shape[key] for key in KEPT_IN_EXTRA if shape.get(key)}
    if image_flags:
        extra["image_flags"] = image_flags
    return extra


def _pairs(flat: list[float]) -> list[tuple[float, float]]:
    return list(zip(flat[0::2], flat[1::2]))


def _is_point(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(map(is_finite_number, value))
