"""COCO dataset folder export, the layout Datumaro (upstream and CVAT's fork) imports as `coco`:

    FOLDER/annotations/instances_<subset>.json    the COCO instances file of `coco.export_coco`
    FOLDER/images/<subset>/<file_name>            the images, hard links (copies where links fail) or copies

`file_name` in the JSON is the image's path relative to `images/<subset>/` (the project's own relative path), as
Datumaro writes it and finds it again. The default subset is "default", Datumaro's name for a dataset without
subsets. The folder is written all-or-nothing (`folder_export.staged_folder`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from annotator.project.coco import coco_dataset, in_user_words
from annotator.project.folder_export import (
    FolderExportReport,
    ImageMode,
    Progress,
    check_image_mode,
    no_progress,
    place_image,
    staged_folder,
)
from annotator.project.geometry import DEFAULT_MIN_AREA_PX, DEFAULT_TOLERANCE_PX, SegmentationKind
from annotator.project.store import ProjectStore, Status

_SUBSET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def export_coco_folder(
    store: ProjectStore,
    folder: str | os.PathLike,
    *,
    subset: str = "default",
    images: ImageMode = "link",
    segmentation: SegmentationKind = "polygon",
    statuses: tuple[Status, ...] = ("accepted",),
    min_area_px: float = DEFAULT_MIN_AREA_PX,
    tolerance_px: float = DEFAULT_TOLERANCE_PX,
    progress: Progress | None = None,
) -> FolderExportReport:
    """Write the store as a COCO dataset folder (see the module docstring); ExportError if it cannot be written.
    `progress` counts two steps per image (its annotations, its file), one with `images="none"`."""
    if not _SUBSET.fullmatch(subset):
        raise ValueError(f"a subset name is letters, digits, '_', '.', '-', got {subset!r}")
    check_image_mode(images)
    folder = Path(folder)
    progress = progress or no_progress
    steps = 1 if images == "none" else 2
    with in_user_words(store), staged_folder(folder, "COCO dataset folder") as stage:
        json_path = Path("annotations") / f"instances_{subset}.json"
        dataset, report = coco_dataset(
            store, folder / json_path, segmentation, statuses, min_area_px, tolerance_px,
            progress=lambda done, total: progress(done, steps * total),
        )  # fmt: skip
        (stage / "annotations").mkdir()
        with open(stage / json_path, "w", encoding="utf-8") as handle:
            json.dump(dataset, handle, ensure_ascii=False, separators=(",", ":"))
        placed = 0
        total = steps * report.images
        if images != "none":
            for done, image in enumerate(dataset["images"], start=report.images):
                progress(done, total)
                destination = stage / "images" / subset / image["file_name"]
                placed += place_image(store.image_path(image["id"]), destination, images)
        progress(total, total)
    return FolderExportReport(
        path=folder,
        format="coco-folder",
        images=report.images,
        annotations=report.annotations,
        categories=report.categories,
        masks=report.annotations - report.box_only,
        image_files=placed,
        skipped_images=report.skipped_images,
    )
