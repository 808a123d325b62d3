"""Shared pieces of the COCO tests: an image folder and a store with known annotations, masks and their IoU,
COCO files written in a test, and a way to silence pycocotools' prints."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotator.project.geometry import Rle
from annotator.project.store import ProjectStore

YY, XX = np.mgrid[:60, :80]


def disc_mask(cx: float, cy: float, r: float) -> np.ndarray:
    return (XX - cx) ** 2 + (YY - cy) ** 2 <= r**2


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (80, 60), (200, 10, 10)).save(root / "a.png")
    Image.new("RGB", (64, 48), (10, 200, 10)).save(root / "b.png")
    Image.new("RGB", (32, 32), (10, 10, 200)).save(root / "c.png")
    Image.new("RGB", (32, 32), (90, 90, 90)).save(root / "d.png")
    return root


@pytest.fixture
def store(folder):
    """a: a disc, a ring (a hole) and a box-only annotation; b: two parts, plus a pending one; c: done, empty."""
    with ProjectStore.for_folder(folder) as store:
        store.sync_folder()
        a, b, c = (store.image_by_path(name).id for name in ("a.png", "b.png", "c.png"))
        cup, plate = store.add_category("cup", "kitchen"), store.add_category("plate", "kitchen")
        ring = disc_mask(55, 35, 15) & ~disc_mask(55, 35, 6)
        two = np.zeros((48, 64), dtype=bool)
        two[5:15, 5:15] = True
        two[30:40, 40:60] = True
        for image_id, category, rle, box, expression in [
            (a, cup, Rle.from_mask(disc_mask(20, 20, 10)), None, "the round cup"),
            (a, plate, Rle.from_mask(ring), None, "the ring plate"),
            (a, cup, None, (5, 40, 30, 58), "the box cup"),
            (b, plate, Rle.from_mask(two), None, "both plates"),
        ]:
            added = store.add_annotation(image_id, category.id, box, rle=rle, expression=expression, score=0.9)
            store.accept(added.id)
        store.add_annotation(b, cup.id, (1, 1, 9, 9), expression="a pending cup")
        store.set_image_done(c)
        yield store


def quiet(call):
    with contextlib.redirect_stdout(io.StringIO()):
        return call()


def write_coco_file(path: Path, images: list, annotations: list, categories=None) -> Path:
    categories = categories if categories is not None else [{"id": 7, "name": "cup", "supercategory": "kitchen"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def coco_annotation(ann_id, image_id, **fields):
    return {"id": ann_id, "image_id": image_id, "category_id": 7, "bbox": [1, 2, 10, 10], "iscrowd": 0, **fields}
