"""A round brush swept along a segment, painting a bool mask in place.

Rule: the brush covers pixel (x, y) when the pixel's centre (x + 0.5, y + 0.5) lies within `radius` original
pixels of the segment p0-p1 (scene coordinates; a press is p0 == p1, a disc). Only the sub-array of the swept
shape's bounding rect is touched, so a stroke step costs the same on an 8000 x 6000 mask as on a small one.
"""

from __future__ import annotations

import math

import numpy as np

from annotator.editing.polygons import DirtyRect

Point = tuple[float, float]


def paint_segment(mask: np.ndarray, p0: Point, p1: Point, radius: float, value: bool) -> DirtyRect | None:
    """Set every pixel the brush covers from p0 to p1 to `value`; the covered rows/cols as (x0, y0, x1, y1).

    The rect is the bounding rect of the covered pixels (x1, y1 exclusive), within the image; None when the
    brush covers no pixel of the image.
    """
    if mask.ndim != 2:
        raise ValueError(f"a mask is 2-D, got shape {mask.shape}")
    if not radius > 0:
        raise ValueError(f"the brush radius is more than 0 pixels, got {radius}")
    height, width = mask.shape
    (ax, ay), (bx, by) = p0, p1
    x0 = max(math.floor(min(ax, bx) - radius - 0.5), 0)
    y0 = max(math.floor(min(ay, by) - radius - 0.5), 0)
    x1 = min(math.ceil(max(ax, bx) + radius + 0.5), width)
    y1 = min(math.ceil(max(ay, by) + radius + 0.5), height)
    if x1 <= x0 or y1 <= y0:
        return None
    cover = _swept_disc(ax, ay, bx, by, radius, x0, y0, x1, y1)
    rows, cols = np.flatnonzero(cover.any(axis=1)), np.flatnonzero(cover.any(axis=0))
    if len(rows) == 0:
        return None
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    window = mask[y0 + top : y0 + bottom, x0 + left : x0 + right]
    window[cover[top:bottom, left:right]] = value
    return x0 + left, y0 + top, x0 + right, y0 + bottom


def _swept_disc(
    ax: float, ay: float, bx: float, by: float, radius: float, x0: int, y0: int, x1: int, y1: int
) -> np.ndarray:
    """Which pixel centres of the rect lie within `radius` of the segment a-b (float64, exact at the boundary)."""
    px = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5 - ax
    py = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5 - ay
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    if length2 == 0:
        return px * px + py * py <= radius * radius
    t = np.clip((px * dx + py * dy) / length2, 0.0, 1.0)
    ex, ey = px - t * dx, py - t * dy
    return ex * ex + ey * ey <= radius * radius
