"""A tiny dataset in the REFER distribution's layout, built from seeded planted scenes for the tests:
`DATA_DIR/refcoco/refs(unc).p` (a pickle of plain dicts, as the distribution ships it) and `instances.json` beside
it, the images as `COCO_train2014_%012d.jpg` JPEGs in `DATA_DIR/images/train2014/` (or another folder). Every scene
is one image; each of its objects an annotation whose mask is, in turn, COCO polygons, uncompressed RLE (list
counts) and compressed RLE; its target a ref with two sentences naming it by colour."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from annotator.project.geometry import Rle, coco_segmentation
from annotator.synthetic.scenes import Scene, SceneConfig, generate_scenes

SPLIT_IMAGES = {"train": 16, "val": 6, "testA": 2, "testB": 2, "test": 2}
"""Images per split: 16 train images give find-heads 32 pairs (the planted heads need about 10)."""

SCENES = SceneConfig(long_side=(320, 384), aspect=(0.9, 1.1), target_width=(0.42, 0.55), other_width=(0.12, 0.3))
"""Targets 10-13 cells of LLaVA-1.5's 24 x 24 grid wide (the method needs 9+), as in tests/test_cli_prelabel.py."""

FIRST_IMAGE_ID = 9
SEGMENTATIONS = ("polygon", "rle_list", "rle_string")


@dataclass(frozen=True)
class ReferFixture:
    """What was written: DATA_DIR, the images folder, the refs as written and the scenes by image id."""

    data_dir: Path
    images_dir: Path
    refs: list[dict]
    scenes: dict[int, Scene]


def uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts of a boolean mask: run lengths in column-major order, zeros first."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return [0, *runs] if flat[0] else runs


def write_refer_dataset(
    root: Path,
    *,
    seed: int = 21,
    images_subdir: str = "images/train2014",
    dataset: str = "refcoco",
    refs_name: str = "refs(unc).p",
    splits: dict[str, int] = SPLIT_IMAGES,
) -> ReferFixture:
    """Write the dataset under `root` (DATA_DIR); `refs_name` ending in .json writes the JSON conversion instead."""
    images_dir = root / images_subdir
    images_dir.mkdir(parents=True, exist_ok=True)
    split_of = [split for split, count in splits.items() for _ in range(count)]
    images, annotations, refs, scenes = [], [], [], {}
    ann_id, sent_id = 1000, 0
    for index, scene in enumerate(generate_scenes(seed, len(split_of), SCENES)):
        image_id = FIRST_IMAGE_ID + index
        file_name = f"COCO_train2014_{image_id:012d}.jpg"
        Image.fromarray(scene.image).save(images_dir / file_name, quality=95)
        images.append({"id": image_id, "file_name": file_name, "width": scene.width, "height": scene.height})
        scenes[image_id] = scene
        for position, shape in enumerate(scene.objects):
            ann_id += 1
            x0, y0, x1, y1 = shape.box_xyxy
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": int(shape.mask.sum()),
                    "iscrowd": 0,
                    "segmentation": _segmentation(shape.mask, SEGMENTATIONS[ann_id % len(SEGMENTATIONS)]),
                }
            )
            if position != scene.target_index:
                continue
            texts = list(dict.fromkeys([scene.expression, f"the {shape.colour} one"]))
            sentences = []
            for text in texts:
                sentences.append({"sent": text, "raw": text.capitalize(), "tokens": text.split(), "sent_id": sent_id})
                sent_id += 1
            refs.append(
                {
                    "ref_id": len(refs),
                    "ann_id": ann_id,
                    "image_id": image_id,
                    "category_id": 1,
                    "split": split_of[index],
                    "sentences": sentences,
                    "sent_ids": [s["sent_id"] for s in sentences],
                    "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
                }
            )
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    if refs_name.endswith(".json"):
        (folder / refs_name).write_text(json.dumps(refs), encoding="utf-8")
    else:
        (folder / refs_name).write_bytes(pickle.dumps(refs, protocol=2))
    instances = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "shape"}]}
    (folder / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    return ReferFixture(root, images_dir, refs, scenes)


def _segmentation(mask: np.ndarray, kind: str):
    if kind == "polygon":
        return coco_segmentation(Rle.from_mask(mask), "polygon")
    if kind == "rle_list":
        return {"size": list(mask.shape), "counts": uncompressed_counts(mask)}
    return Rle.from_mask(mask).to_coco()
