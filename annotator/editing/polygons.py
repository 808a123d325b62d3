"""A mask's outline as editable rings, and the re-rasterisation of one edited ring back into the mask.

Convention: a vertex sits on a pixel centre. The ring traced through pixels (x, y) has vertices (x + 0.5, y + 0.5)
in scene coordinates (original pixels, pixel (x, y) covering [x, x+1) x [y, y+1)); a moved or inserted vertex
snaps to the centre of the pixel under it. Rings come from `cv2.findContours` (RETR_CCOMP): outer rings trace the
mask's boundary pixels, hole rings trace the mask pixels around a hole.

Rasterisation rule: an outer ring *covers* a pixel whose centre lies inside the ring or on it; a hole ring covers
a pixel whose centre lies strictly inside it. At tolerance 0 the rings reproduce the mask exactly
(`mask_from_polygons`). An edit (`apply_ring_edit`) changes only the pixels whose coverage by the edited ring
changed, so holes stay where the mask has them and the rest of the mask stays bit-identical, however simplified
the displayed rings are.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
import shapely
from shapely.geometry import Polygon

MIN_RING_VERTICES = 3
_RASTER_MARGIN = 2
"""`ring_cover` rasterises a rect grown by this many pixels, so OpenCV's clipping never reaches the rect."""
DirtyRect = tuple[int, int, int, int]
"""(x0, y0, x1, y1) in pixels, x1 and y1 exclusive."""


def union_rect(a: DirtyRect, b: DirtyRect) -> DirtyRect:
    """The smallest rectangle holding both."""
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


@dataclass(frozen=True)
class Ring:
    """One closed ring: `points` is N x 2 float (x, y) on pixel centres; a hole's `parent` is its outer ring's index."""

    points: np.ndarray
    is_hole: bool = False
    parent: int = -1

    def __len__(self) -> int:
        return len(self.points)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ring):
            return NotImplemented
        return (
            self.is_hole == other.is_hole
            and self.parent == other.parent
            and np.array_equal(self.points, other.points)
        )


@dataclass(frozen=True)
class EditablePolygons:
    """A mask's rings (outer rings and the holes in them) and the mask size they were traced from."""

    rings: tuple[Ring, ...]
    height: int
    width: int

    def with_ring(self, index: int, ring: Ring) -> EditablePolygons:
        """The same rings with ring `index` replaced."""
        rings = list(self.rings)
        rings[index] = ring
        return replace(self, rings=tuple(rings))


def polygons_from_mask(mask: np.ndarray, tolerance_px: float = 0.0, min_area_px: float = 0.0) -> EditablePolygons:
    """The rings of a 2-D bool mask; tolerance 0 keeps every corner, > 0 simplifies with `cv2.approxPolyDP`.

    Tolerance 0 drops only the vertices inside straight runs (`CHAIN_APPROX_SIMPLE`), so the rings still
    describe the mask exactly. Rings enclosing less than `min_area_px` (the area between the traced pixel
    centres: 0 for a one-pixel speck or line, 4 for a 3 x 3 blob) are left out, an outer ring with its holes;
    what they trace stays in the mask, untouched by edits of the other rings.
    """
    if mask.ndim != 2:
        raise ValueError(f"a mask is 2-D, got shape {mask.shape}")
    if tolerance_px < 0:
        raise ValueError(f"the polygon tolerance is at least 0 pixels, got {tolerance_px}")
    method = cv2.CHAIN_APPROX_SIMPLE if tolerance_px == 0 else cv2.CHAIN_APPROX_NONE
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, method)
    parents = [int(links[3]) for links in hierarchy[0]] if contours else []
    kept: dict[int, int] = {}
    rings: list[Ring] = []
    for index in [i for i, p in enumerate(parents) if p == -1] + [i for i, p in enumerate(parents) if p != -1]:
        contour, parent = contours[index], parents[index]
        if (min_area_px > 0 and cv2.contourArea(contour) < min_area_px) or (parent != -1 and parent not in kept):
            continue
        if tolerance_px > 0:
            simplified = cv2.approxPolyDP(contour, tolerance_px, True)
            if len(simplified) >= MIN_RING_VERTICES:
                contour = simplified
        if parent == -1:
            kept[index] = len(rings)
        points = contour[:, 0, :].astype(np.float64) + 0.5
        rings.append(Ring(points=points, is_hole=parent != -1, parent=kept.get(parent, -1)))
    height, width = mask.shape
    return EditablePolygons(rings=tuple(rings), height=height, width=width)


def mask_from_polygons(polygons: EditablePolygons) -> np.ndarray:
    """The mask the rings describe (the rasterisation rule above): each outer ring's cover minus its holes'."""
    full = (0, 0, polygons.width, polygons.height)
    out = np.zeros((polygons.height, polygons.width), dtype=bool)
    for index, ring in enumerate(polygons.rings):
        if ring.is_hole:
            continue
        part = ring_cover(ring, full)
        for hole in polygons.rings:
            if hole.is_hole and hole.parent == index:
                part &= ~ring_cover(hole, full)
        out |= part
    return out


def snapped(x: float, y: float) -> tuple[float, float]:
    """The centre of the pixel under the scene point (x, y)."""
    return float(np.floor(x)) + 0.5, float(np.floor(y)) + 0.5


def move_vertex(ring: Ring, index: int, x: float, y: float) -> Ring:
    """The ring with vertex `index` moved to the pixel centre under (x, y)."""
    _check_index(ring, index)
    points = ring.points.copy()
    points[index] = snapped(x, y)
    return replace(ring, points=points)


def insert_vertex(ring: Ring, edge_index: int, x: float, y: float) -> Ring:
    """The ring with a vertex at the pixel centre under (x, y) on the edge from vertex `edge_index` to the next."""
    _check_index(ring, edge_index)
    points = np.insert(ring.points, edge_index + 1, snapped(x, y), axis=0)
    return replace(ring, points=points)


def delete_vertex(ring: Ring, index: int) -> Ring:
    """The ring without vertex `index`; ValueError when that would leave fewer than 3 vertices."""
    _check_index(ring, index)
    if len(ring) <= MIN_RING_VERTICES:
        raise ValueError(f"a ring keeps at least {MIN_RING_VERTICES} vertices; this one has {len(ring)}")
    return replace(ring, points=np.delete(ring.points, index, axis=0))


def apply_ring_edit(mask: np.ndarray, old_ring: Ring, new_ring: Ring) -> tuple[np.ndarray, DirtyRect | None]:
    """A new mask where only pixels whose coverage changed from `old_ring` to `new_ring` change, and their rect.

    Outer ring: pixels covered by the new ring only become True, by the old ring only False; a hole the reverse.
    The rect bounds every changed pixel (None when the rings are the same); the input mask is not modified.
    """
    if old_ring.is_hole != new_ring.is_hole:
        raise ValueError("an edit keeps a ring an outer ring or a hole")
    out = mask.copy()
    height, width = mask.shape
    rect = _changed_rect(old_ring.points, new_ring.points, width, height)
    if rect is None:
        return out, None
    x0, y0, x1, y1 = rect
    old, new = ring_cover(old_ring, rect), ring_cover(new_ring, rect)
    window = out[y0:y1, x0:x1]
    fill = not new_ring.is_hole
    window[new & ~old] = fill
    window[old & ~new] = not fill
    changed = new ^ old
    if not changed.any():
        return out, None
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    return out, (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)


def ring_cover(ring: Ring, rect: DirtyRect) -> np.ndarray:
    """The pixels of `rect` the ring covers (outer: centre inside or on the ring; hole: strictly inside).

    OpenCV fills the ring's inside plus its edges' 8-connected lines; pixels within one pixel of those lines are
    then decided exactly (`_lattice_test`), so only the outline's neighbourhood costs a point-in-polygon test.
    """
    x0, y0, x1, y1 = rect
    shape = (y1 - y0, x1 - x0)
    if len(ring) == 0 or shape[0] <= 0 or shape[1] <= 0:
        return np.zeros((max(shape[0], 0), max(shape[1], 0)), dtype=bool)
    m = _RASTER_MARGIN
    padded = (shape[0] + 2 * m, shape[1] + 2 * m)
    lattice = (np.floor(ring.points).astype(np.int64) - (x0 - m, y0 - m)).astype(np.int32).reshape(-1, 1, 2)
    filled = np.zeros(padded, dtype=np.uint8)
    cv2.fillPoly(filled, [lattice], 1)
    edges = np.zeros(padded, dtype=np.uint8)
    cv2.polylines(edges, [lattice], True, 1, 1, cv2.LINE_8)
    near = cv2.dilate(edges, np.ones((3, 3), np.uint8))[m:-m, m:-m]
    cover = (filled[m:-m, m:-m] == 1) & (near == 0)
    ys, xs = np.nonzero(near)
    if len(xs):
        cover[ys, xs] = _lattice_test(ring, xs + x0, ys + y0)
    return cover


def _lattice_test(ring: Ring, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Exact test of pixel centres against the ring: inside or on it (outer ring), strictly inside (hole)."""
    cx, cy = xs.astype(np.float64) + 0.5, ys.astype(np.float64) + 0.5
    points = ring.points
    if len(points) < MIN_RING_VERTICES:
        geometry = shapely.LineString(points) if len(points) == 2 else shapely.Point(points[0])
        return np.zeros(len(xs), dtype=bool) if ring.is_hole else shapely.intersects_xy(geometry, cx, cy)
    polygon = Polygon(points)
    boundary = shapely.LinearRing(points)
    shapely.prepare(polygon)
    shapely.prepare(boundary)
    on = shapely.intersects_xy(boundary, cx, cy)
    inside = shapely.contains_xy(polygon, cx, cy) if polygon.is_valid else _even_odd(points, cx, cy)
    return inside & ~on if ring.is_hole else inside | on


def _even_odd(points: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon (for a ring that crosses itself)."""
    inside = np.zeros(len(xs), dtype=bool)
    ax, ay = points[:, 0], points[:, 1]
    bx, by = np.roll(ax, -1), np.roll(ay, -1)
    for px0, py0, px1, py1 in zip(ax, ay, bx, by):
        spans = (py0 > ys) != (py1 > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            crossing = px0 + (ys - py0) * (px1 - px0) / (py1 - py0)
        inside ^= spans & (xs < crossing)
    return inside


def _changed_rect(old: np.ndarray, new: np.ndarray, width: int, height: int) -> DirtyRect | None:
    """Pixels outside this rect are covered alike by both rings: it bounds the differing vertex runs and neighbours."""
    if len(old) == len(new) and np.array_equal(old, new):
        return None
    shortest = min(len(old), len(new))
    prefix = 0
    while prefix < shortest and np.array_equal(old[prefix], new[prefix]):
        prefix += 1
    suffix = 0
    while suffix < shortest - prefix and np.array_equal(old[-1 - suffix], new[-1 - suffix]):
        suffix += 1
    run = np.vstack([_run(old, prefix, suffix), _run(new, prefix, suffix)])
    low, high = np.floor(run.min(axis=0)).astype(int), np.floor(run.max(axis=0)).astype(int) + 1
    x0, y0 = max(int(low[0]), 0), max(int(low[1]), 0)
    x1, y1 = min(int(high[0]), width), min(int(high[1]), height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _run(points: np.ndarray, prefix: int, suffix: int) -> np.ndarray:
    """The vertices between the common prefix and suffix, with one unchanged neighbour on each side (cyclically)."""
    count = len(points)
    if count == 0:
        return np.zeros((0, 2))
    indices = np.arange(prefix - 1, count - suffix + 1) % count
    return points[indices]


def _check_index(ring: Ring, index: int) -> None:
    if not 0 <= index < len(ring):
        raise IndexError(f"vertex {index} is not in a ring of {len(ring)} vertices")
