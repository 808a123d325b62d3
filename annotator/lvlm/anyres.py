"""Where LLaVA-NeXT's and LLaVA-OneVision's "anyres" image tokens come from in the original image.

The processor makes two images of one picture (transformers' `LlavaNextImageProcessor` and
`LlavaOnevisionImageProcessor`, read by `LlavaNextModel.pack_image_features` and its OneVision twin):

- the base image: the whole picture stretched to the tower's square input (336 px for CLIP ViT-L/14-336, 384 px for
  SigLIP so400m/14-384), `n x n` patches with `n = image_size // patch_size`;
- the high-resolution canvas: the best of the checkpoint's `image_grid_pinpoints` (`select_best_resolution`), the
  picture resized into it keeping its aspect ratio (`get_patch_output_size`: the long side fills the canvas, the
  other is `ceil`ed), centred on black padding (`(canvas - resized) // 2` before), cut into tiles of `image_size` px.

Each tile is read like the base image; the tiles' patches are stitched into one `rows x cols` grid of
`tiles * n` patches a side, then `unpad_image` crops the padding in patch units (`int(round(side * scale, 7))`
patches of the image, `(grid - that) // 2` cut on each side), so a stitched row or column may still hold a strip of
padding. OneVision then shrinks a grid of more than `max_n * n * n` cells (`vision_aspect_ratio="anyres_max_9"`,
ratio > 1.1) bilinearly to `int(rows // ratio) x int(cols // ratio)`.

Tokens: the base grid (`n * n`, row after row, nothing between), then the stitched grid with the learned newline
embedding after every row (`row_stride = cols + 1`).

SigLIP's 14 px patches do not fill a 384 px tile (27 patches cover 378 px; the convolution never reads the last
6 px of each tile), so the map between a grid and the picture is piecewise linear: `TiledFrame` keeps it exactly
(`ImageFrame` holds one affine map per grid).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np

from annotator.lvlm.layout import GridPlacement, TokenLayout


@dataclass(frozen=True)
class AxisMap:
    """A monotone piecewise-linear map along one axis: `image` knots (fractions of the picture's side, 0 to 1) to
    `grid` knots (grid units); linear beyond the knots with the overall slope."""

    image: tuple[float, ...]
    grid: tuple[float, ...]

    def to_grid(self, fraction: np.ndarray) -> np.ndarray:
        return _interp(fraction, self.image, self.grid)

    def to_image(self, grid: np.ndarray, end: bool = False) -> np.ndarray:
        """Grid units -> fractions of the side; where a grid coordinate is a strip no cell reads (a tile's unread
        end), the strip's far side, or with `end` (a box's right or bottom edge) its near side."""
        if end:
            flipped_grid, flipped_image = tuple(-g for g in self.grid[::-1]), tuple(-i for i in self.image[::-1])
            return -_interp(-np.asarray(grid, dtype=np.float64), flipped_grid, flipped_image)
        return _interp(grid, self.grid, self.image)

    @property
    def span(self) -> float:
        """Grid units across the whole picture."""
        return float(self.to_grid(np.array([1.0]))[0] - self.to_grid(np.array([0.0]))[0])


def _interp(values: np.ndarray, xs: tuple[float, ...], ys: tuple[float, ...]) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    slope = (ys[-1] - ys[0]) / (xs[-1] - xs[0])
    out = np.interp(v, xs, ys)
    out = np.where(v < xs[0], ys[0] + (v - xs[0]) * slope, out)
    return np.where(v > xs[-1], ys[-1] + (v - xs[-1]) * slope, out)


@dataclass(frozen=True)
class TiledFrame:
    """A picture (`width` x `height` px) in a `grid_h` x `grid_w` grid through one `AxisMap` per axis: the methods of
    `ImageFrame` the grounder, the evaluation and the app use, for grids `ImageFrame` cannot express (tiles with
    unread strips, an un-padding crop in patch units, OneVision's pooling)."""

    width: int
    height: int
    grid_h: int
    grid_w: int
    x: AxisMap
    y: AxisMap

    @property
    def grid_hw(self) -> tuple[int, int]:
        return self.grid_h, self.grid_w

    @property
    def cells_per_pixel(self) -> tuple[float, float]:
        """Grid units per original pixel along x and y, on average over the picture."""
        return self.x.span / self.width, self.y.span / self.height

    def resized(self, width: int, height: int) -> "TiledFrame":
        """The same placement for the picture resized to `width` x `height` pixels (e.g. for display)."""
        return dataclasses.replace(self, width=int(width), height=int(height))

    def to_grid(self, points_xy: np.ndarray) -> np.ndarray:
        """Points in original pixel coordinates (`[..., 2]` as x, y) -> grid coordinates (x=column, y=row)."""
        p = np.asarray(points_xy, dtype=np.float64)
        return np.stack([self.x.to_grid(p[..., 0] / self.width), self.y.to_grid(p[..., 1] / self.height)], axis=-1)

    def to_pixels(self, points_grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid coordinates -> (pixel coordinates, inside-the-picture flags); padding maps outside the picture."""
        p = np.asarray(points_grid, dtype=np.float64)
        pixels = np.stack([self.x.to_image(p[..., 0]) * self.width, self.y.to_image(p[..., 1]) * self.height], -1)
        inside_x = (pixels[..., 0] >= 0) & (pixels[..., 0] <= self.width)
        inside = inside_x & (pixels[..., 1] >= 0) & (pixels[..., 1] <= self.height)
        return pixels, inside

    def box_to_grid(self, box_xyxy: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        (x0, y0), (x1, y1) = self.to_grid(np.asarray(box_xyxy, dtype=np.float64).reshape(2, 2))
        return float(x0), float(y0), float(x1), float(y1)

    def box_to_pixels(
        self, box_grid: tuple[float, float, float, float], clip: bool = True
    ) -> tuple[float, float, float, float]:
        """A box in grid units -> original pixels, clipped to the picture unless `clip=False`; an edge on a strip no
        cell reads keeps the strip out of the box."""
        g = np.asarray(box_grid, dtype=np.float64)
        x0, x1 = self.x.to_image(g[0]) * self.width, self.x.to_image(g[2], end=True) * self.width
        y0, y1 = self.y.to_image(g[1]) * self.height, self.y.to_image(g[3], end=True) * self.height
        if clip:
            x0, x1 = np.clip([x0, x1], 0, self.width)
            y0, y1 = np.clip([y0, y1], 0, self.height)
        return float(x0), float(y0), float(x1), float(y1)

    def polygon_to_pixels(self, polygon_grid: np.ndarray) -> np.ndarray:
        return self.to_pixels(polygon_grid)[0]

    def _centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Grid coordinates of the pixel centres: along x (`[width]`) and along y (`[height]`)."""
        xs = self.x.to_grid((np.arange(self.width) + 0.5) / self.width)
        ys = self.y.to_grid((np.arange(self.height) + 0.5) / self.height)
        return xs, ys

    def grid_map_to_pixels(self, grid_map: np.ndarray, interpolation: str = "linear") -> np.ndarray:
        """A `grid_h` x `grid_w` map -> `height` x `width` in original pixels (each pixel centre sampled)."""
        m = np.asarray(grid_map)
        if m.shape != self.grid_hw:
            raise ValueError(f"map is {m.shape}, grid is {self.grid_hw}")
        xs, ys = self._centres()
        map_x = np.broadcast_to((xs - 0.5).astype(np.float32)[None, :], (self.height, self.width))
        map_y = np.broadcast_to((ys - 0.5).astype(np.float32)[:, None], (self.height, self.width))
        flags = cv2.INTER_LINEAR if interpolation == "linear" else cv2.INTER_NEAREST
        source = m.astype(np.float32) if m.dtype != np.uint8 else m
        map_x, map_y = np.ascontiguousarray(map_x), np.ascontiguousarray(map_y)
        out = cv2.remap(source, map_x, map_y, flags, borderMode=cv2.BORDER_REPLICATE)
        return out.reshape(self.height, self.width)

    def convex_polygon_mask(self, polygon_grid: np.ndarray) -> np.ndarray:
        """Boolean `height` x `width` mask of the pixels whose centres lie in a convex grid-unit polygon (half-open)."""
        vertices = np.asarray(polygon_grid, dtype=np.float64)
        start, end = vertices, np.roll(vertices, -1, axis=0)
        xs, ys = self._centres()
        low, high = np.minimum(start[:, 1], end[:, 1]), np.maximum(start[:, 1], end[:, 1])
        crosses = (ys[:, None] >= low) & (ys[:, None] < high)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (ys[:, None] - start[:, 1]) / (end[:, 1] - start[:, 1])
        x = np.where(crosses, start[:, 0] + t * (end[:, 0] - start[:, 0]), np.nan)
        mask = np.zeros((self.height, self.width), dtype=bool)
        rows = np.flatnonzero(crosses.any(axis=1))
        if rows.size == 0:
            return mask
        left = np.searchsorted(xs, np.nanmin(x[rows], axis=1), side="left")
        right = np.searchsorted(xs, np.nanmax(x[rows], axis=1), side="left")
        columns = np.arange(self.width)
        mask[rows] = (columns >= left[:, None]) & (columns < right[:, None])
        return mask


@dataclass(frozen=True)
class AnyresGeometry:
    """What places the tokens: the tower's `image_size` and `patch_size`, the processor's base image size
    (`base_hw`) and canvases (`pinpoints`, each (height, width)), and OneVision's `max_tiles` (None: no pooling)."""

    image_size: int
    patch_size: int
    base_hw: tuple[int, int]
    pinpoints: tuple[tuple[int, int], ...]
    max_tiles: int | None = None

    @property
    def n(self) -> int:
        """Patches a side of one tile (and of the base image)."""
        return self.image_size // self.patch_size

    def canvas(self, width: int, height: int) -> tuple[int, int]:
        """The best-fitting (height, width) canvas for a picture (transformers' `select_best_resolution`)."""
        from transformers.image_processing_utils import select_best_resolution

        return tuple(select_best_resolution((height, width), [list(p) for p in self.pinpoints]))

    def base_frame(self, width: int, height: int) -> TiledFrame:
        """The base image's `n x n` grid: the picture stretched to `base_hw`, read in `image_size` squares."""
        read = self.n * self.patch_size
        x = AxisMap(*_read_strip(self.base_hw[1], read, self.n))
        y = AxisMap(*_read_strip(self.base_hw[0], read, self.n))
        return TiledFrame(width, height, self.n, self.n, x, y)

    def stitched_frame(self, width: int, height: int) -> TiledFrame:
        """The stitched, un-padded (and for OneVision pooled) grid of the high-resolution tiles."""
        canvas_h, canvas_w = self.canvas(width, height)
        scale_w, scale_h = canvas_w / width, canvas_h / height  # get_patch_output_size: the long side fills it
        if scale_w < scale_h:
            resized_w, resized_h = canvas_w, min(math.ceil(height * scale_w), canvas_h)
        else:
            resized_w, resized_h = min(math.ceil(width * scale_h), canvas_w), canvas_h
        rows, cols = canvas_h // self.image_size * self.n, canvas_w // self.image_size * self.n
        if width / height > cols / rows:  # unpad_image, in patch units
            cut_rows, cut_cols = (rows - int(round(height * (cols / width), 7))) // 2, 0
        else:
            cut_rows, cut_cols = 0, (cols - int(round(width * (rows / height), 7))) // 2
        kept_rows, kept_cols = rows - 2 * cut_rows, cols - 2 * cut_cols
        out_rows, out_cols = kept_rows, kept_cols
        if self.max_tiles is not None:
            ratio = math.sqrt(kept_rows * kept_cols / (self.max_tiles * self.n**2))
            if ratio > 1.1:
                out_rows, out_cols = int(kept_rows // ratio), int(kept_cols // ratio)
        x = self._tiled_axis(canvas_w, resized_w, cut_cols, out_cols / kept_cols)
        y = self._tiled_axis(canvas_h, resized_h, cut_rows, out_rows / kept_rows)
        return TiledFrame(width, height, out_rows, out_cols, x, y)

    def _tiled_axis(self, canvas: int, resized: int, cut: int, pooling: float) -> AxisMap:
        """One axis of the stitched grid: canvas pixels of each tile's patches, the picture's place on the canvas,
        the un-padding cut and the pooling scale."""
        paste = (canvas - resized) // 2
        read = self.n * self.patch_size
        pixels: list[float] = []
        patches: list[float] = []
        for tile in range(canvas // self.image_size):
            pixels += [tile * self.image_size, tile * self.image_size + read]
            patches += [tile * self.n, (tile + 1) * self.n]
        if read < self.image_size:
            pixels.append(canvas)
            patches.append(patches[-1])
        image = tuple((p - paste) / resized for p in pixels)
        grid = tuple((p - cut) * pooling for p in patches)
        return AxisMap(image, grid)

    def layout(self, width: int, height: int, map_grid: int) -> TokenLayout:
        """Base grid then the stitched grid with a newline token after each of its rows."""
        base, stitched = self.base_frame(width, height), self.stitched_frame(width, height)
        start = self.n * self.n
        grids = (GridPlacement(base, 0, self.n), GridPlacement(stitched, start, stitched.grid_w + 1))
        return TokenLayout(grids=grids, num_tokens=start + stitched.grid_h * (stitched.grid_w + 1), map_grid=map_grid)


def _read_strip(side: int, read: int, n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Knots of the base image along an axis of `side` input pixels of which the first `read` are `n` patches."""
    if read < side:
        return (0.0, read / side, 1.0), (0.0, float(n), float(n))
    return (0.0, 1.0), (0.0, float(n))
