"""Display artefacts made off the GUI thread: mask outlines as painter paths, heatmaps and head maps as QImages.

Outlines are the same polygons the COCO export writes (`geometry.mask_to_polygons`, holes kept), so what the
annotator sees is what is exported. Heatmaps come from the proposal's grid map and its `ImageFrame`, resampled
at a display resolution of at most `HEATMAP_MAX_SIDE` pixels (the canvas stretches it over the image), so an
8000 x 6000 photo never needs a 192 MB full-size float map.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QImage, QPainterPath, QPolygonF
from shapely.geometry import MultiPolygon, Polygon

from annotator.grounding.frame import ImageFrame
from annotator.project.geometry import mask_to_polygons
from annotator.ui.image_pyramid import rgba_to_qimage

HEATMAP_MAX_SIDE = 1024
HEATMAP_COLORMAP = "turbo"


def mask_outline(mask: np.ndarray, tolerance_px: float) -> QPainterPath:
    """The outline of a boolean H x W mask (parts and holes, original pixels) as an odd-even filled path."""
    return polygons_path(mask_to_polygons(mask, tolerance_px=tolerance_px))


def polygons_path(shape: MultiPolygon | Polygon) -> QPainterPath:
    path = QPainterPath()
    path.setFillRule(Qt.FillRule.OddEvenFill)
    polygons = shape.geoms if isinstance(shape, MultiPolygon) else [shape]
    for polygon in polygons:
        if polygon.is_empty:
            continue
        for ring in (polygon.exterior, *polygon.interiors):
            path.addPolygon(QPolygonF([QPointF(x, y) for x, y in ring.coords]))
            path.closeSubpath()
    return path


def normalised(values: np.ndarray) -> np.ndarray:
    """Values scaled to [0, 1] by their min and max (all zeros for a flat array)."""
    v = np.asarray(values, dtype=np.float64)
    low, high = float(v.min()), float(v.max())
    if high <= low:
        return np.zeros_like(v)
    return (v - low) / (high - low)


def display_frame(frame: ImageFrame, max_side: int = HEATMAP_MAX_SIDE) -> ImageFrame:
    """The frame of the image shrunk so its longer side is at most `max_side` (same grid, same model input)."""
    scale = min(1.0, max_side / max(frame.width, frame.height))
    width = max(1, round(frame.width * scale))
    height = max(1, round(frame.height * scale))
    return frame.resized(width, height)


def heatmap_image(grid_map: np.ndarray, frame: ImageFrame, max_side: int = HEATMAP_MAX_SIDE) -> QImage:
    """The combined head map over the image (padding cut), coloured, its hot region opaque.

    Opacity is 0 at and below the map's mean over the grid (the method's own foreground threshold) and ramps to
    1 at its maximum, so only the region the heads point at is tinted. The result covers exactly the image; its
    size is the image's shrunk to `max_side` on the longer side.
    """
    grid = np.asarray(grid_map, dtype=np.float64)
    low, high = float(grid.mean()), float(grid.max())
    small = display_frame(frame, max_side)
    values = small.grid_map_to_pixels(grid, "linear").astype(np.float64)
    heat = np.clip((values - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(values)
    rgba = colormaps[HEATMAP_COLORMAP](0.35 + 0.65 * heat, bytes=True)
    rgba[..., 3] = np.round(255 * np.sqrt(heat)).astype(np.uint8)
    return rgba_to_qimage(rgba)


def grid_map_image(grid_map: np.ndarray) -> QImage:
    """One head's raw map on the token grid, coloured (one image pixel per grid cell)."""
    rgba = colormaps[HEATMAP_COLORMAP](normalised(grid_map), bytes=True)
    return rgba_to_qimage(rgba)
