"""A folder of seeded synthetic scenes with RefCOCO-style ground truth: a known-answer dataset for the CLI.

`write_scene_folder(folder, count, seed)` writes `scene_00001.png` ... (from `synthetic.scenes`) and
`ground_truth.jsonl` beside them, one line per scene in the format `annotator eval --gt` reads: `image`,
`expression` (naming the target by its colour), `bbox` [x, y, w, h] and `segmentation` (compressed RLE) of the
target in original pixels, `width`, `height`, `split`. `annotator prelabel FOLDER --expressions
FOLDER/ground_truth.jsonl` then `annotator eval --gt FOLDER/ground_truth.jsonl --pred export.json` measures the
whole pipeline against the truth; the tests and benchmarks use it that way.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2

from annotator.synthetic.scenes import SceneConfig, generate_scenes
from annotator.project.atomic_file import atomic_text_file
from annotator.project.geometry import Rle

GROUND_TRUTH = "ground_truth.jsonl"


def write_scene_folder(
    folder: str | Path,
    count: int,
    seed: int,
    config: SceneConfig = SceneConfig(),
    image_format: str = "png",
    split: str = "synthetic",
) -> Path:
    """Write `count` scenes drawn with `seed` and `config` as images plus ground truth; the ground truth's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if image_format in ("jpg", "jpeg") else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    lines = []
    for index, scene in enumerate(generate_scenes(seed, count, config), start=1):
        name = f"scene_{index:05d}.{image_format}"
        if not cv2.imwrite(str(folder / name), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR), params):
            raise OSError(f"cannot write {folder / name}")
        x0, y0, x1, y1 = scene.target.box_xyxy
        truth = {
            "image": name,
            "expression": scene.expression,
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "segmentation": Rle.from_mask(scene.target.mask).to_coco(),
            "width": scene.width,
            "height": scene.height,
            "split": split,
        }
        lines.append(json.dumps(truth))
    path = folder / GROUND_TRUTH
    with atomic_text_file(path) as handle:
        handle.write("\n".join(lines) + "\n")
    return path
