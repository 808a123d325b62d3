"""Import any supported annotation file into a project store: a COCO instances file, a labelme JSON file, or a
folder of labelme JSON files (`import_annotations`)."""

from __future__ import annotations

import os
from pathlib import Path

from annotator.project.coco_import import ImportReport, import_dataset, read_json
from annotator.project.labelme import import_labelme, is_labelme, read_labelme_folder
from annotator.project.store import ProjectStore, Status


def import_annotations(
    store: ProjectStore,
    path: str | os.PathLike,
    *,
    default_status: Status = "accepted",
    crowd_as_instances: bool = False,
) -> ImportReport:
    """Import the annotations of a COCO file, a labelme file or a folder of labelme files, all or nothing."""
    path = Path(path)
    if path.is_dir():
        return import_labelme(store, path, read_labelme_folder(path), default_status=default_status)
    data = read_json(path)
    if is_labelme(data):
        return import_labelme(store, path, {path: data}, default_status=default_status)
    return import_dataset(store, data, path, default_status=default_status, crowd_as_instances=crowd_as_instances)
