"""YOLO export in the Ultralytics dataset layout, detection or segmentation:

    FOLDER/data.yaml                          path (the folder), train and val (both images/<split>), names
    FOLDER/images/<split>/<stem><suffix>      the images, hard links (copies where links fail) or copies
    FOLDER/labels/<split>/<stem>.txt          one line per object, coordinates normalized to [0, 1]

Detection lines are `class cx cy w h`; segmentation lines are `class x1 y1 x2 y2 ...`, the outline of the mask
(one line per part of a mask in several parts; holes cannot be expressed), a box-only annotation as its
rectangle. `class` indexes `names`, the store's categories by id ascending, so the order is stable across
exports. All images go to one split; `val` names the same folder, as Ultralytics requires the key. An image
without objects (marked done) gets an empty label file: a negative. Written all-or-nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Literal, get_args

import numpy as np

from annotator.project.coco import in_user_words
from annotator.project.folder_export import (
    FolderExportReport,
    ImageMode,
    Progress,
    check_image_mode,
    exported_images,
    no_progress,
    ordered_categories,
    place_image,
    staged_folder,
    unique_stems,
)
from annotator.project.geometry import DEFAULT_MIN_AREA_PX, DEFAULT_TOLERANCE_PX, mask_to_polygons
from annotator.project.store import Annotation, ProjectStore, Status

YoloTask = Literal["detect", "segment"]


def export_yolo(
    store: ProjectStore,
    folder: str | os.PathLike,
    *,
    task: YoloTask = "detect",
    split: str = "train",
    images: ImageMode = "link",
    statuses: tuple[Status, ...] = ("accepted",),
    min_area_px: float = DEFAULT_MIN_AREA_PX,
    tolerance_px: float = DEFAULT_TOLERANCE_PX,
    progress: Progress | None = None,
) -> FolderExportReport:
    """Write the store as an Ultralytics YOLO dataset (see the module docstring); ExportError if it cannot be.
    `progress`: one step per image (see `folder_export`)."""
    if task not in get_args(YoloTask):
        raise ValueError(f"task must be 'detect' or 'segment', got {task!r}")
    if not split.isidentifier():
        raise ValueError(f"a split name is a word (train, val), got {split!r}")
    check_image_mode(images)
    folder = Path(folder)
    progress = progress or no_progress
    with in_user_words(store), staged_folder(folder, "YOLO dataset folder") as stage:
        selected, skipped = exported_images(store, statuses)
        classes = {category.id: index for index, category in enumerate(ordered_categories(store))}
        stems = unique_stems([image.record.path for image in selected])
        (stage / "labels" / split).mkdir(parents=True)
        placed = masks = annotations = 0
        for done, image in enumerate(selected):
            progress(done, len(selected))
            stem = stems[image.record.path]
            size = (image.record.width, image.record.height)
            lines = []
            for ann in image.annotations:
                lines += _label_lines(ann, classes[ann.category_id], size, task, min_area_px, tolerance_px)
                masks += ann.rle is not None
            annotations += len(image.annotations)
            label = stage / "labels" / split / f"{stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
            suffix = PurePosixPath(image.record.path).suffix
            placed += place_image(image.source, stage / "images" / split / f"{stem}{suffix}", images)
        (stage / "data.yaml").write_text(_data_yaml(folder, split, [c.name for c in ordered_categories(store)]))
        progress(len(selected), len(selected))
    return FolderExportReport(folder, "yolo", len(selected), annotations, len(classes), masks, placed, tuple(skipped))


def _data_yaml(folder: Path, split: str, names: list[str]) -> str:
    """The dataset file; strings are written as JSON strings, which YAML reads as double-quoted scalars."""
    lines = [
        "# Ultralytics YOLO dataset written by annotator",
        f"path: {json.dumps(str(folder.resolve()))}",
        f"train: images/{split}",
        f"val: images/{split}",
        f"nc: {len(names)}",
        "names:",
    ]
    lines += [f"  {index}: {json.dumps(name)}" for index, name in enumerate(names)]
    return "\n".join(lines) + "\n"


def _label_lines(
    ann: Annotation,
    cls: int,
    size: tuple[int, int],
    task: YoloTask,
    min_area_px: float,
    tolerance_px: float,
) -> list[str]:
    """The label lines of one annotation: a box, or the outline of each part of its mask."""
    width, height = size
    x0, y0, x1, y1 = ann.box_xyxy
    if task == "detect":
        cx, cy, w, h = _unit(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), width, height)
        return [f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"]
    rings = [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)]
    if ann.rle is not None:
        shape = mask_to_polygons(ann.rle.to_mask(), min_area_px=min_area_px, tolerance_px=tolerance_px)
        outlines = [np.asarray(part.exterior.coords)[:-1] for part in shape.geoms]
        rings = [ring for ring in outlines if len(ring) >= 3] or rings
    return [f"{cls} " + " ".join(f"{v:.6f}" for v in _unit(ring.ravel(), width, height)) for ring in rings]


def _unit(values, width: int, height: int) -> list[float]:
    """Pixel values (x, y, x, y, ...) as fractions of the image's width and height, clipped to [0, 1]."""
    scale = np.tile([width, height], len(values) // 2)
    return np.clip(np.asarray(values, dtype=float) / scale, 0.0, 1.0).tolist()
