"""The demo folder shipped in resources/demo: twelve seeded scenes (PNG and JPEG), their ground truth and a README.

`python -m annotator.synthetic.demo_scenes --demo-out resources/demo` regenerates it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from annotator.synthetic.scenes import Scene, SceneConfig, describe, generate_scene

DEMO_SEED = 2025
DEMO_SCENES: tuple[tuple[int, int, str], ...] = (
    (448, 336, "jpg"),
    (336, 448, "jpg"),
    (448, 448, "png"),
    (512, 288, "jpg"),
    (288, 512, "jpg"),
    (480, 320, "png"),
    (400, 400, "jpg"),
    (512, 384, "jpg"),
    (384, 512, "png"),
    (448, 300, "jpg"),
    (420, 420, "jpg"),
    (500, 340, "png"),
)
"""The demo folder's scenes: (width, height, format)."""

DEMO_CONFIG = SceneConfig(
    num_objects=(2, 4),
    target_width=(0.4, 0.5),
    other_width=(0.4, 0.5),
    object_aspect=(0.8, 1.25),
    noise_sigma=(2.0, 4.0),
    texture_probability=0.7,
)
"""Demo objects are about 10-12 grid cells wide on LLaVA-1.5's 24 x 24 grid: large enough for the method. The PNG
scenes have no pixel noise (it would not compress), the JPEG ones a little."""


def demo_scene(index: int) -> Scene:
    """Demo scene `index` (its size and format are `DEMO_SCENES[index]`; PNG scenes are drawn without noise)."""
    width, height, fmt = DEMO_SCENES[index]
    rng = np.random.default_rng([DEMO_SEED, index])
    side = max(width, height)
    config = replace(DEMO_CONFIG, long_side=(side, side), aspect=(width / height, width / height))
    if fmt == "png":
        config = replace(config, noise_sigma=(0.0, 0.0), object_noise_sigma=0.0)
    return generate_scene(rng, config)


def write_demo(folder: str | Path) -> list[Path]:
    """Write the demo scenes (PNG and JPEG), `ground_truth.jsonl` and a README into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    lines = []
    for index, (_, _, fmt) in enumerate(DEMO_SCENES):
        scene = demo_scene(index)
        name = f"scene_{index + 1:02d}.{fmt}"
        path = folder / name
        bgr = cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR)
        params = [cv2.IMWRITE_JPEG_QUALITY, 90] if fmt == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 9]
        if not cv2.imwrite(str(path), bgr, params):
            raise OSError(f"cannot write {path}")
        written.append(path)
        rng = np.random.default_rng([DEMO_SEED, index, 1])
        objects = [
            {
                "colour": o.colour,
                "shape": o.shape,
                "box_xyxy": list(o.box_xyxy),
                "expression": scene.expression if i == scene.target_index else describe(scene.objects, i, rng),
            }
            for i, o in enumerate(scene.objects)
        ]
        lines.append(json.dumps({"image": name, "width": scene.width, "height": scene.height, "objects": objects}))
    truth = folder / "ground_truth.jsonl"
    truth.write_text("\n".join(lines) + "\n", encoding="utf-8")
    written.append(truth)
    readme = folder / "README.md"
    readme.write_text(_DEMO_README, encoding="utf-8")
    written.append(readme)
    return written


_DEMO_README = """# Demo scenes

These images are generated, not photographed: coloured shapes (disc, square, triangle, ring) on grey,
softly textured backgrounds, drawn by `annotator/synthetic/demo_scenes.py` with fixed seeds. Regenerate them with

    python -m annotator.synthetic.demo_scenes --demo-out resources/demo

`ground_truth.jsonl` has one line per image: its size and, for every object, its colour, shape, tight box
(`box_xyxy` in pixels, x1 and y1 exclusive) and a referring expression that names it. Objects are about
10-12 cells wide on LLaVA-1.5's 24 x 24 token grid, large enough for the localization-head method; the planted
demo model (`resources/models/planted-llava/`) finds them by their colour word.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the demo scenes.")
    parser.add_argument("--demo-out", type=Path, required=True, help="folder to write (e.g. resources/demo)")
    args = parser.parse_args(argv)
    for path in write_demo(args.demo_out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
