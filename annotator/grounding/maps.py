"""From localization-head maps to regions and a box on the grid (docs/method.md, part 1, "From the heads to a box").

1. Each head's map is smoothed with a `ksize` x `ksize` Gaussian (sigma 1.0) and the maps are summed.
2. Cells above the mean of the summed map are foreground.
3. 8-connected components; the convex hull of each (of its cells as unit squares); the largest hull wins.
4. The box is the tight bound of that hull: cell (r, c) covers [c, c+1) x [r, r+1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage
from shapely.geometry import MultiPoint

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_CELL_CORNERS = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float64)


def combine_head_maps(maps: np.ndarray, ksize: int = 7, sigma: float = 1.0) -> np.ndarray:
    """Smooth each head's `[h, w]` map with a Gaussian, then sum them: `[k, h, w]` -> `[h, w]` (float64).

    `sigma <= 0` means no smoothing (the paper's sigma = 0 ablation). Borders are reflected (OpenCV's default,
    the same as torchvision's reflect padding).
    """
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"combine_head_maps expects [k, h, w], got shape {m.shape}")
    if sigma <= 0:
        return m.sum(axis=0)
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"ksize must be a positive odd number, got {ksize}")
    return np.sum([cv2.GaussianBlur(head_map, (ksize, ksize), sigma, sigmaY=sigma) for head_map in m], axis=0)


@dataclass(frozen=True, eq=False)
class Region:
    """One 8-connected foreground component of a combined map, in grid units.

    `cells`: boolean `[h, w]` mask of its cells. `hull`: convex hull vertices `[n, 2]` as (x, y) grid coordinates
    of the cells' corners. `hull_area`: in grid cells. `box`: (x0, y0, x1, y1), the hull's tight bounds.
    `mass`: the combined map's sum over the component's cells; `mass_fraction`: that over the whole map's sum.
    """

    cells: np.ndarray = field(repr=False)
    hull: np.ndarray = field(repr=False)
    hull_area: float
    box: tuple[float, float, float, float]
    mass: float
    mass_fraction: float


def foreground(combined: np.ndarray) -> np.ndarray:
    """Cells strictly above the mean of the map."""
    c = np.asarray(combined, dtype=np.float64)
    if c.size == 0 or c.max() == c.min():
        return np.zeros(c.shape, dtype=bool)
    return c > c.mean()


def find_regions(combined: np.ndarray) -> list[Region]:
    """All foreground components with their convex hulls, ranked by hull area (largest first, ties by mass)."""
    c = np.asarray(combined, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"find_regions expects a 2-D map, got shape {c.shape}")
    labels, count = ndimage.label(foreground(c), structure=EIGHT_CONNECTED)
    total = float(c.sum())
    regions = []
    for index, slices in enumerate(ndimage.find_objects(labels), start=1):
        cells = labels == index
        rows, cols = np.nonzero(cells)
        corners = (np.stack([cols, rows], axis=1)[:, None, :] + _CELL_CORNERS[None]).reshape(-1, 2)
        hull = MultiPoint(corners).convex_hull
        x0, y0, x1, y1 = hull.bounds
        vertices = np.asarray(hull.exterior.coords, dtype=np.float64)[:-1]
        mass = float(c[cells].sum())
        regions.append(
            Region(
                cells=cells,
                hull=vertices,
                hull_area=float(hull.area),
                box=(float(x0), float(y0), float(x1), float(y1)),
                mass=mass,
                mass_fraction=mass / total if total > 0 else 0.0,
            )
        )
    regions.sort(key=lambda r: (-r.hull_area, -r.mass))
    return regions


def grid_box(combined: np.ndarray) -> tuple[float, float, float, float]:
    """The paper's box on the grid: tight bounds of the largest convex hull, (x0, y0, x1, y1) in grid units.

    A flat map (no cell above its mean) localizes nothing; its box is the whole grid.
    """
    regions = find_regions(combined)
    if not regions:
        h, w = np.asarray(combined).shape
        return 0.0, 0.0, float(w), float(h)
    return regions[0].box
