"""The exact mapping between original image pixels and one of the model's token grids (docs/method.md, part 3).

Two ways an image is placed in a grid (`ImageFrame.fit`):

- `"pad"` (LLaVA-1.5): the image is padded to a square (centred, as LLaVA-1.5's `expand2square` does: integer
  offsets `(side - width) // 2`, `(side - height) // 2`), resized to `input_size` x `input_size` and cut into a
  `grid_h` x `grid_w` grid of patches. Cells are square in original pixels; some cells are padding.
- `"stretch"` (Qwen2-VL, native resolution): the image is resized to exactly `grid_w` x `grid_h` cells (Qwen's
  smart resize to multiples of 28 px), no padding. Every cell is image, and a cell covers `width / grid_w` x
  `height / grid_h` original pixels, which need not be square.

Grid cell (r, c) covers [c, c+1) x [r, r+1) in grid units; pixel (x, y) covers [x, x+1) x [y, y+1) in pixel
units. Both are continuous coordinates, so the mapping is affine: grid = (pixel + offset) * cells_per_pixel.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

import cv2
import numpy as np

Interpolation = Literal["linear", "nearest"]
Fit = Literal["pad", "stretch"]


@dataclass(frozen=True)
class ImageFrame:
    """Original image (`width` x `height` pixels, EXIF orientation applied) placed in one of the model's grids.

    `input_size`: the long side, in pixels, of what the vision tower reads (the padded square's side after resizing
    for `"pad"`, the resized image's long side for `"stretch"`); `fit`: see the module docstring.
    """

    width: int
    height: int
    grid_h: int
    grid_w: int
    input_size: int
    fit: Fit = "pad"

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if self.grid_h < 1 or self.grid_w < 1 or self.input_size < 1:
            raise ValueError("grid and input sizes must be positive")
        if self.fit not in get_args(Fit):
            raise ValueError(f"fit must be one of {get_args(Fit)}, got {self.fit!r}")

    @classmethod
    def for_image(
        cls, width: int, height: int, grid_size: int | tuple[int, int], input_size: int, fit: Fit = "pad"
    ) -> "ImageFrame":
        grid_h, grid_w = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
        return cls(int(width), int(height), int(grid_h), int(grid_w), int(input_size), fit)

    def resized(self, width: int, height: int) -> "ImageFrame":
        """The same placement for the image resized to `width` x `height` pixels (e.g. for display)."""
        return dataclasses.replace(self, width=int(width), height=int(height))

    @property
    def side(self) -> int:
        """Side of the padded square, in original pixels (the long side; only `"pad"` pads to it)."""
        return max(self.width, self.height)

    @property
    def span(self) -> tuple[int, int]:
        """Original pixels the whole grid spans along x and y (padding included)."""
        return (self.side, self.side) if self.fit == "pad" else (self.width, self.height)

    @property
    def offset_x(self) -> int:
        return (self.span[0] - self.width) // 2

    @property
    def offset_y(self) -> int:
        return (self.span[1] - self.height) // 2

    @property
    def grid_hw(self) -> tuple[int, int]:
        return self.grid_h, self.grid_w

    @property
    def cells_per_pixel(self) -> tuple[float, float]:
        """Grid units per original pixel along x and y."""
        span_x, span_y = self.span
        return self.grid_w / span_x, self.grid_h / span_y

    def pad(self, image: np.ndarray, fill: tuple[int, int, int] | np.ndarray) -> np.ndarray:
        """The image (H x W x C uint8) centred on a `side` x `side` square of colour `fill` (`"pad"` frames only)."""
        if self.fit != "pad":
            raise ValueError("only a 'pad' frame pads its image")
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, frame is {self.width}x{self.height}")
        out = np.empty((self.side, self.side, image.shape[2]), dtype=image.dtype)
        out[...] = np.asarray(fill, dtype=image.dtype)
        out[self.offset_y : self.offset_y + self.height, self.offset_x : self.offset_x + self.width] = image
        return out

    def to_grid(self, points_xy: np.ndarray) -> np.ndarray:
        """Points in original pixel coordinates (`[..., 2]` as x, y) -> grid coordinates (x=column, y=row)."""
        p = np.asarray(points_xy, dtype=np.float64)
        sx, sy = self.cells_per_pixel
        return np.stack([(p[..., 0] + self.offset_x) * sx, (p[..., 1] + self.offset_y) * sy], axis=-1)

    def to_pixels(self, points_grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid coordinates (`[..., 2]`, x=column, y=row) -> (pixel coordinates, inside-the-image flags).

        A point that lands in the padding maps outside [0, width] x [0, height]; its flag is False.
        """
        p = np.asarray(points_grid, dtype=np.float64)
        sx, sy = self.cells_per_pixel
        pixels = np.stack([p[..., 0] / sx - self.offset_x, p[..., 1] / sy - self.offset_y], axis=-1)
        inside = (
            (pixels[..., 0] >= 0) & (pixels[..., 0] <= self.width) & (pixels[..., 1] >= 0) & (pixels[..., 1] <= self.height)
        )
        return pixels, inside

    def box_to_grid(self, box_xyxy: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """A box in original pixels (x0, y0, x1, y1) -> the same box in grid units."""
        (x0, y0), (x1, y1) = self.to_grid(np.asarray(box_xyxy, dtype=np.float64).reshape(2, 2))
        return float(x0), float(y0), float(x1), float(y1)

    def box_to_pixels(self, box_grid: tuple[float, float, float, float], clip: bool = True) -> tuple[float, float, float, float]:
        """A box in grid units -> original pixels, clipped to the image (the padding cut away) unless `clip=False`."""
        pixels, _ = self.to_pixels(np.asarray(box_grid, dtype=np.float64).reshape(2, 2))
        (x0, y0), (x1, y1) = pixels
        if clip:
            x0, x1 = np.clip([x0, x1], 0, self.width)
            y0, y1 = np.clip([y0, y1], 0, self.height)
        return float(x0), float(y0), float(x1), float(y1)

    def pixel_to_grid_affine(self) -> np.ndarray:
        """2x3 matrix taking OpenCV pixel-centre coordinates of the original image to OpenCV grid-cell coordinates.

        OpenCV puts sample i at coordinate i, so pixel x covers [x - 0.5, x + 0.5): continuous pixel coordinate
        x + 0.5 maps to grid coordinate u, and u - 0.5 is OpenCV's grid coordinate.
        """
        sx, sy = self.cells_per_pixel
        return np.array(
            [[sx, 0.0, (0.5 + self.offset_x) * sx - 0.5], [0.0, sy, (0.5 + self.offset_y) * sy - 0.5]],
            dtype=np.float64,
        )

    def grid_map_to_pixels(self, grid_map: np.ndarray, interpolation: Interpolation = "linear") -> np.ndarray:
        """A `grid_h` x `grid_w` map -> `height` x `width` in original pixels, the padding cut away.

        Only the image's own pixels are computed (never the padded square), so very wide or tall images are cheap.
        """
        m = np.asarray(grid_map)
        if m.shape != (self.grid_h, self.grid_w):
            raise ValueError(f"map is {m.shape}, grid is {(self.grid_h, self.grid_w)}")
        flags = cv2.INTER_LINEAR if interpolation == "linear" else cv2.INTER_NEAREST
        source = m.astype(np.float32) if m.dtype != np.uint8 else m
        warped = cv2.warpAffine(
            source,
            self.pixel_to_grid_affine(),
            (self.width, self.height),
            flags=flags | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return warped.reshape(self.height, self.width)

    def polygon_to_pixels(self, polygon_grid: np.ndarray) -> np.ndarray:
        """A polygon's vertices in grid units -> original pixels (not clipped)."""
        pixels, _ = self.to_pixels(polygon_grid)
        return pixels

    def convex_polygon_mask(self, polygon_grid: np.ndarray) -> np.ndarray:
        """Boolean `height` x `width` mask of the pixels whose centres lie in a convex grid-unit polygon.

        Half-open like the cells: a polygon covering [0, 80) pixels along x marks the 80 pixels 0..79.
        """
        vertices = self.polygon_to_pixels(np.asarray(polygon_grid, dtype=np.float64))
        start, end = vertices, np.roll(vertices, -1, axis=0)
        centres_y = np.arange(self.height, dtype=np.float64)[:, None] + 0.5
        low, high = np.minimum(start[:, 1], end[:, 1]), np.maximum(start[:, 1], end[:, 1])
        crosses = (centres_y >= low) & (centres_y < high)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (centres_y - start[:, 1]) / (end[:, 1] - start[:, 1])
        x = np.where(crosses, start[:, 0] + t * (end[:, 0] - start[:, 0]), np.nan)
        mask = np.zeros((self.height, self.width), dtype=bool)
        rows = np.flatnonzero(crosses.any(axis=1))
        if rows.size == 0:
            return mask
        left = np.clip(np.ceil(np.nanmin(x[rows], axis=1) - 0.5), 0, self.width).astype(np.int64)
        right = np.clip(np.ceil(np.nanmax(x[rows], axis=1) - 0.5), 0, self.width).astype(np.int64)
        columns = np.arange(self.width)
        mask[rows] = (columns >= left[:, None]) & (columns < right[:, None])
        return mask
