"""Seeded synthetic scenes with ground truth: coloured shapes on noisy, textured backgrounds
(what the planted model, `planted.py`, is tested and demonstrated on).

A scene is an RGB image with 1-4 non-overlapping shapes (disc, square, triangle, ring) in distinct colours of
`PALETTE`, each with its exact mask and tight box in original pixels, one of them the target of a referring
expression made from templates ("the red disc", "red one on the left", "the disc that is red in the image").
The same seed always gives the same scenes. Object sizes are drawn as fractions of the image's longer side. For
LLaVA-1.5 that is the side of the padded square the model sees, so a fraction f is about f x 24 grid cells wide;
for Qwen2-VL the grid stretches over the image itself (one cell per 28 px after its resize), so the cells an object
spans depend on the image's pixel budget. On non-square images objects are clamped to fit the short side.
The shipped demo folder is drawn by `demo_scenes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import cv2
import numpy as np

from annotator.grounding.frame import ImageFrame

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 145, 30),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 200, 215),
    "blue": (40, 70, 215),
    "purple": (130, 50, 175),
    "pink": (240, 110, 180),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
"""The colour words the planted model knows and the sRGB colour (0-255) each names."""

SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "ring")

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "disc": ("disc", "circle"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "ring": ("ring", "donut"),
}

TEMPLATES: tuple[str, ...] = (
    "the {colour} {shape}",
    "{colour} {shape}",
    "the {colour} one",
    "the {shape} that is {colour}",
    "the {shape} that is {colour} in the image",
    "the {colour} {shape} in the picture",
    "find the {colour} {shape}",
    "{colour}",
)
"""Expressions that name the target by its colour (colours are distinct within a scene)."""

SPATIAL_TEMPLATES: tuple[str, ...] = (
    "{colour} one {where}",
    "the {colour} {shape} {where}",
    "the {side} {shape} which is {colour}",
)
"""Expressions that also say where the target is; used only when the target is the extreme object on that side."""

_WHERE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}

TEMPLATE_WORDS: tuple[str, ...] = tuple(
    sorted(
        {
            word
            for template in TEMPLATES + SPATIAL_TEMPLATES
            for word in template.format(colour="", shape="", side="", where="").split()
        }
        | {word for phrase in _WHERE.values() for word in phrase.split()}
    )
)
"""Every word the templates use besides colour and shape words."""

EXPRESSION_WORDS: frozenset[str] = frozenset(
    set(PALETTE)
    | {word for synonyms in SHAPE_WORDS.values() for word in synonyms}
    | set(TEMPLATE_WORDS)
    | {"an", "of", "object", "shape", "thing", "big", "small", "large", "little", "middle", "centre", "center"}
)
"""Every word a scene's expression can hold, and the few an annotator adds to them (a planted tokenizer knows all)."""

_SIDE_MARGIN_FRACTION = 0.1
_PLACEMENT_TRIES = 60


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn. Ranges are inclusive (low, high); sizes are fractions of the image's longer side.

    `aspect`: image width / height, drawn log-uniformly. `target_width`, `other_width`: object widths. An object
    is clamped to fit inside the image, so on very wide or tall images it can come out smaller than asked.
    `object_aspect`: object width / height, log-uniform. `noise_sigma`: per-pixel Gaussian noise of the
    background in grey levels; `object_noise_sigma` that of the shapes' fill. `texture_probability`: chance of soft
    stripes on the background.
    """

    long_side: tuple[int, int] = (320, 512)
    aspect: tuple[float, float] = (1 / 3, 3.0)
    num_objects: tuple[int, int] = (1, 4)
    target_width: tuple[float, float] = (0.15, 0.6)
    other_width: tuple[float, float] = (0.12, 0.4)
    object_aspect: tuple[float, float] = (0.7, 1.4)
    noise_sigma: tuple[float, float] = (6.0, 16.0)
    object_noise_sigma: float = 3.0
    texture_probability: float = 0.5
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = tuple(PALETTE)


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One shape. `box_xyxy`: tight bounds of `mask` in original pixels, x1/y1 exclusive (pixel x covers
    [x, x+1)). `mask`: boolean `[height, width]`. `rgb`: the fill colour drawn (the palette colour plus jitter)."""

    shape: str
    colour: str
    rgb: tuple[int, int, int]
    box_xyxy: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)

    @property
    def width_px(self) -> int:
        return self.box_xyxy[2] - self.box_xyxy[0]

    @property
    def height_px(self) -> int:
        return self.box_xyxy[3] - self.box_xyxy[1]

    def width_cells(self, frame: ImageFrame) -> float:
        """The object's width in the cells of the model's grid `frame` (padded or stretched, as the frame says)."""
        return self.width_px * frame.cells_per_pixel[0]

    def height_cells(self, frame: ImageFrame) -> float:
        """The object's height in the model's grid cells."""
        return self.height_px * frame.cells_per_pixel[1]


@dataclass(frozen=True, eq=False)
class Scene:
    """An RGB `image` (uint8 `[height, width, 3]`), its `objects`, the target's index and the expression naming it."""

    image: np.ndarray = field(repr=False)
    objects: tuple[SceneObject, ...]
    target_index: int
    expression: str

    @property
    def target(self) -> SceneObject:
        return self.objects[self.target_index]

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def aspect(self) -> float:
        """Image width / height."""
        return self.width / self.height


def generate_scene(rng: np.random.Generator, config: SceneConfig = SceneConfig()) -> Scene:
    """One scene drawn from `rng` (which it advances). The first object placed is the target; objects that find no
    free place are left out, so a crowded scene can hold fewer than `num_objects`."""
    width, height = _draw_image_size(rng, config)
    image = _background(rng, width, height, config)
    side = max(width, height)
    count = int(rng.integers(config.num_objects[0], config.num_objects[1] + 1))
    colours = rng.choice(len(config.colours), size=min(count, len(config.colours)), replace=False)
    boxes: list[tuple[int, int, int, int]] = []
    objects: list[SceneObject] = []
    for i, colour_index in enumerate(colours):
        width_range = config.target_width if i == 0 else config.other_width
        box = _place_box(rng, width, height, side, width_range, config.object_aspect, boxes)
        if box is None:
            continue
        boxes.append(box)
        shape = str(config.shapes[int(rng.integers(len(config.shapes)))])
        colour = str(config.colours[int(colour_index)])
        mask = _shape_mask(rng, shape, box, width, height)
        rgb = tuple(int(v) for v in np.clip(np.asarray(PALETTE[colour]) + rng.integers(-8, 9, size=3), 0, 255))
        noise = rng.standard_normal((int(mask.sum()), 3), dtype=np.float32) * np.float32(config.object_noise_sigma)
        image[mask] = noise + np.asarray(rgb, dtype=np.float32)
        ys, xs = np.nonzero(mask)
        tight = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        objects.append(SceneObject(shape, colour, rgb, tight, mask))
    if not objects:
        raise ValueError(f"no object fits in a {width} x {height} image; use a larger long_side")
    order = rng.permutation(len(objects))
    shuffled = tuple(objects[int(j)] for j in order)
    target_index = int(np.flatnonzero(order == 0)[0])
    expression = describe(shuffled, target_index, rng)
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Scene(pixels, shuffled, target_index, expression)


def generate_scenes(seed: int, count: int, config: SceneConfig = SceneConfig()) -> Iterator[Scene]:
    """`count` scenes; scene i depends only on (`seed`, i), so a stream can be cut or resumed anywhere."""
    for i in range(count):
        yield generate_scene(np.random.default_rng([seed, i]), config)


def describe(objects: Sequence[SceneObject], index: int, rng: np.random.Generator) -> str:
    """A referring expression for `objects[index]` from the templates (spatial ones only where they are true)."""
    target = objects[index]
    shape_word = str(rng.choice(SHAPE_WORDS[target.shape]))
    sides = _extreme_sides(objects, index)
    if sides and rng.random() < 0.4:
        template = str(rng.choice(SPATIAL_TEMPLATES))
        side = str(rng.choice(sides))
    else:
        template = str(rng.choice(TEMPLATES))
        side = ""
    return template.format(colour=target.colour, shape=shape_word, side=side, where=_WHERE.get(side, ""))


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes in the same units."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _draw_image_size(rng: np.random.Generator, config: SceneConfig) -> tuple[int, int]:
    side = int(rng.integers(config.long_side[0], config.long_side[1] + 1))
    aspect = _log_uniform(rng, *config.aspect)
    if aspect >= 1.0:
        return side, max(1, int(round(side / aspect)))
    return max(1, int(round(side * aspect))), side


def _background(rng: np.random.Generator, width: int, height: int, config: SceneConfig) -> np.ndarray:
    """Float32 `[height, width, 3]`: a low-saturation grey with soft blotches, optional stripes and pixel noise."""
    level = rng.uniform(100.0, 160.0)
    tint = rng.uniform(-10.0, 10.0, size=3)
    blotches = cv2.resize(
        rng.normal(0.0, 8.0, size=(int(rng.integers(3, 7)), int(rng.integers(3, 7)))).astype(np.float32),
        (width, height),
        interpolation=cv2.INTER_CUBIC,
    )
    grey = np.clip(blotches, -16.0, 16.0)
    if rng.random() < config.texture_probability:
        angle = rng.uniform(0.0, math.pi)
        wavenumber = 2.0 * math.pi / rng.uniform(16.0, 48.0)
        xs = np.arange(width, dtype=np.float32) * np.float32(wavenumber * math.cos(angle))
        ys = np.arange(height, dtype=np.float32) * np.float32(wavenumber * math.sin(angle))
        grey += np.float32(rng.uniform(3.0, 8.0)) * np.sin(ys[:, None] + xs[None, :])
    sigma = np.float32(rng.uniform(*config.noise_sigma))
    image = rng.standard_normal((height, width, 3), dtype=np.float32) * sigma
    image += grey[..., None]
    image += (level + tint).astype(np.float32)
    return image


def _place_box(
    rng: np.random.Generator,
    width: int,
    height: int,
    side: int,
    width_range: tuple[float, float],
    aspect_range: tuple[float, float],
    taken: list[tuple[int, int, int, int]],
) -> tuple[int, int, int, int] | None:
    """A box that fits in the image (2 px margin) and keeps 4 px from every taken box, or None."""
    margin, gap = 2, 4
    for _ in range(_PLACEMENT_TRIES):
        w = rng.uniform(*width_range) * side
        h = w / _log_uniform(rng, *aspect_range)
        scale = min(1.0, (width - 2 * margin) / w, (height - 2 * margin) / h)
        w, h = max(4, int(round(w * scale))), max(4, int(round(h * scale)))
        if w > width - 2 * margin or h > height - 2 * margin:
            return None
        x0 = int(rng.integers(margin, width - margin - w + 1))
        y0 = int(rng.integers(margin, height - margin - h + 1))
        box = (x0, y0, x0 + w, y0 + h)
        if all(_apart(box, other, gap) for other in taken):
            return box
    return None


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _shape_mask(
    rng: np.random.Generator, shape: str, box: tuple[int, int, int, int], width: int, height: int
) -> np.ndarray:
    """Boolean mask of `shape` inscribed in `box` (x1, y1 exclusive)."""
    x0, y0, x1, y1 = box
    canvas = np.zeros((height, width), dtype=np.uint8)
    if shape == "square":
        canvas[y0:y1, x0:x1] = 1
    elif shape == "triangle":
        apex_up = rng.random() < 0.5
        apex_y, base_y = (y0, y1 - 1) if apex_up else (y1 - 1, y0)
        points = np.array([[x0, base_y], [x1 - 1, base_y], [(x0 + x1 - 1) // 2, apex_y]], dtype=np.int32)
        cv2.fillPoly(canvas, [points], 1)
    elif shape in ("disc", "ring"):
        centre = ((x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0)
        axes = ((x1 - x0 - 1) / 2.0, (y1 - y0 - 1) / 2.0)
        _fill_ellipse(canvas, centre, axes, 1)
        if shape == "ring":
            inner = rng.uniform(0.45, 0.6)
            _fill_ellipse(canvas, centre, (axes[0] * inner, axes[1] * inner), 0)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    return canvas.astype(bool)


def _fill_ellipse(canvas: np.ndarray, centre: tuple[float, float], axes: tuple[float, float], value: int) -> None:
    """Fill an axis-aligned ellipse given in pixel-centre coordinates, with 4 bits of sub-pixel precision."""
    shift = 4
    scale = 1 << shift
    cv2.ellipse(
        canvas,
        (int(round(centre[0] * scale)), int(round(centre[1] * scale))),
        (int(round(axes[0] * scale)), int(round(axes[1] * scale))),
        0.0,
        0.0,
        360.0,
        value,
        thickness=-1,
        lineType=cv2.LINE_8,
        shift=shift,
    )


def _extreme_sides(objects: Sequence[SceneObject], index: int) -> list[str]:
    """The sides ("left", ...) on which `objects[index]` is clearly the outermost of at least two objects."""
    if len(objects) < 2:
        return []
    centres = np.array([((o.box_xyxy[0] + o.box_xyxy[2]) / 2, (o.box_xyxy[1] + o.box_xyxy[3]) / 2) for o in objects])
    extent = np.asarray(objects[index].mask.shape[::-1], dtype=np.float64)
    others = np.delete(centres, index, axis=0)
    margin = _SIDE_MARGIN_FRACTION * extent
    x, y = centres[index]
    sides = []
    if x + margin[0] < others[:, 0].min():
        sides.append("left")
    if x - margin[0] > others[:, 0].max():
        sides.append("right")
    if y + margin[1] < others[:, 1].min():
        sides.append("top")
    if y - margin[1] > others[:, 1].max():
        sides.append("bottom")
    return sides
