"""One annotation's mask under edit on the canvas: the working copy, its overlay, and the gestures of each mode.

Modes: "polygon" (drag a vertex handle to move it; double-click an edge to add a vertex there; right-click a
vertex to delete it), "brush" and "eraser" (a left drag paints, or erases, with a round brush; a right drag does
the opposite). The editor changes only its working mask and returns an `EditResult` when a gesture finishes; the
canvas turns that into one `mask_edited` signal. Hit tests are in screen pixels, so handles grab alike at any zoom.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QTransform
from PySide6.QtWidgets import QGraphicsScene

from annotator.editing.brush import paint_segment
from annotator.editing.polygons import (
    DirtyRect,
    EditablePolygons,
    Ring,
    apply_ring_edit,
    delete_vertex,
    insert_vertex,
    move_vertex,
    polygons_from_mask,
    union_rect,
)
from annotator.ui.mask_edit_items import VERTEX_PX, BrushCursorItem, MaskOverlayItem, RingsItem

EDIT_MODES = ("polygon", "brush", "eraser")


@dataclass(frozen=True)
class EditResult:
    """A finished gesture: the working mask after it (the editor's own array), its undo label, and the rectangle
    of pixels it may have changed (None: it changed none)."""

    mask: np.ndarray
    label: str
    rect: DirtyRect | None = None


@dataclass
class _VertexDrag:
    ring: int
    index: int
    original: Ring
    moved: bool = False


class MaskEditor:
    """The edit of one annotation's mask (see the module docstring); owns its scene items until `remove`."""

    def __init__(
        self,
        scene: QGraphicsScene,
        key: Hashable,
        mask: np.ndarray,
        colour: QColor,
        tolerance_px: float,
        min_ring_area_px: float = 0.0,
    ) -> None:
        self.key = key
        self.mode = ""
        self.mask = np.array(mask, dtype=bool, order="C", copy=True)
        self._scene = scene
        self._colour = QColor(colour)
        self._tolerance_px = tolerance_px
        self._min_ring_area_px = min_ring_area_px
        self._overlay = MaskOverlayItem(self.mask, colour)
        scene.addItem(self._overlay)
        self._rings: RingsItem | None = None
        self._cursor: BrushCursorItem | None = None
        self._selected: tuple[int, int] | None = None
        self._vertex_drag: _VertexDrag | None = None
        self._delete_on_release = False
        self._stroke: tuple[bool, QPointF] | None = None
        self._stroke_painted = False
        self._stroke_rect: DirtyRect | None = None
        self._radius = 12

    # State ------------------------------------------------------------------------------------------------------
    def set_mode(self, mode: str, radius: int) -> None:
        self._vertex_drag = None
        self._stroke = None
        self.mode = mode
        self._radius = radius
        if mode == "polygon":
            self._remove_cursor()
            if self._rings is None:
                self._rings = RingsItem(self._traced(), self._colour)
                self._scene.addItem(self._rings)
        else:
            self._remove_rings()
            if self._cursor is None:
                self._cursor = BrushCursorItem(radius, mode == "eraser")
                self._scene.addItem(self._cursor)
            self._cursor.set_erasing(mode == "eraser")
            self._cursor.set_radius(radius)

    def set_mask(self, mask: np.ndarray) -> None:
        """Replace the working mask (a copy is kept); the rings are traced again unless the mask is the same."""
        if np.array_equal(mask, self.mask):
            return
        self.mask = np.array(mask, dtype=bool, order="C", copy=True)
        self._overlay.set_mask(self.mask)
        self._vertex_drag = None
        self._stroke = None
        if self._rings is not None:
            self._selected = None
            self._rings.set_polygons(self._traced(), None)

    def set_radius(self, radius: int) -> None:
        self._radius = radius
        if self._cursor is not None:
            self._cursor.set_radius(radius)

    @property
    def polygons(self) -> EditablePolygons | None:
        """The rings shown in polygon mode, else None."""
        return self._rings.polygons if self._rings is not None else None

    @property
    def overlay(self) -> MaskOverlayItem:
        return self._overlay

    def remove(self) -> None:
        """Take every item of the edit off the scene."""
        self._remove_rings()
        self._remove_cursor()
        if self._overlay.scene() is not None:
            self._scene.removeItem(self._overlay)

    # Gestures ---------------------------------------------------------------------------------------------------
    def press(self, scene_pos: QPointF, view_pos: QPointF, button: Qt.MouseButton, to_view: QTransform) -> None:
        if self.mode == "polygon":
            hit = self._vertex_at(view_pos, to_view)
            if hit is None:
                return
            self._select(hit)
            self._delete_on_release = button == Qt.MouseButton.RightButton
            if button == Qt.MouseButton.LeftButton:
                self._vertex_drag = _VertexDrag(*hit, original=self._rings.polygons.rings[hit[0]])
            return
        if button not in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            return
        value = (self.mode == "brush") == (button == Qt.MouseButton.LeftButton)
        self._stroke = (value, scene_pos)
        self._stroke_painted = False
        self._stroke_rect = None
        self._paint(scene_pos)

    def move(self, scene_pos: QPointF, view_pos: QPointF, to_view: QTransform) -> None:
        if self._cursor is not None:
            self._cursor.follow(scene_pos)
        if self._stroke is not None:
            self._paint(scene_pos)
        elif self._vertex_drag is not None and self._rings is not None:
            drag = self._vertex_drag
            polygons = self._rings.polygons
            ring = move_vertex(polygons.rings[drag.ring], drag.index, scene_pos.x(), scene_pos.y())
            drag.moved = True
            self._rings.set_polygons(polygons.with_ring(drag.ring, ring), self._selected)
        elif self.mode == "polygon":
            hit = self._vertex_at(view_pos, to_view)
            if hit is not None and hit != self._selected:
                self._select(hit)

    def release(self, button: Qt.MouseButton) -> EditResult | None:
        if self._stroke is not None:
            value, _ = self._stroke
            self._stroke = None
            if not self._stroke_painted:
                return None
            return EditResult(self.mask, "Brush" if value else "Erase", self._stroke_rect)
        drag, self._vertex_drag = self._vertex_drag, None
        delete, self._delete_on_release = self._delete_on_release, False
        if drag is None:
            return self.delete_selected() if delete and button == Qt.MouseButton.RightButton else None
        if not drag.moved:
            return None
        return self._commit(drag.ring, drag.original, "Move vertex")

    def double_click(self, view_pos: QPointF, scene_pos: QPointF, to_view: QTransform) -> EditResult | None:
        if self._rings is None or self._vertex_at(view_pos, to_view) is not None:
            return None
        edge = self._edge_at(view_pos, to_view)
        if edge is None:
            return None
        ring_index, edge_index = edge
        polygons = self._rings.polygons
        ring = insert_vertex(polygons.rings[ring_index], edge_index, scene_pos.x(), scene_pos.y())
        self._selected = (ring_index, edge_index + 1)
        self._rings.set_polygons(polygons.with_ring(ring_index, ring), self._selected)
        return self._commit(ring_index, polygons.rings[ring_index], "Add vertex")

    def delete_selected(self) -> EditResult | None:
        """Delete the selected vertex; None when none is selected or its ring would keep fewer than 3 vertices."""
        if self._rings is None or self._selected is None:
            return None
        ring_index, index = self._selected
        polygons = self._rings.polygons
        try:
            ring = delete_vertex(polygons.rings[ring_index], index)
        except (ValueError, IndexError):
            return None
        self._selected = None
        self._rings.set_polygons(polygons.with_ring(ring_index, ring), None)
        return self._commit(ring_index, polygons.rings[ring_index], "Delete vertex")

    # Helpers ----------------------------------------------------------------------------------------------------
    def _traced(self) -> EditablePolygons:
        return polygons_from_mask(self.mask, self._tolerance_px, self._min_ring_area_px)

    def _commit(self, ring_index: int, old: Ring, label: str) -> EditResult:
        """Re-rasterise ring `ring_index`'s change from `old` (before the gesture) into the working mask."""
        assert self._rings is not None
        mask, rect = apply_ring_edit(self.mask, old, self._rings.polygons.rings[ring_index])
        if rect is not None:
            self.mask = mask
            self._overlay.set_mask(self.mask)
        return EditResult(self.mask, label, rect)

    def _select(self, hit: tuple[int, int]) -> None:
        self._selected = hit
        if self._rings is not None:
            self._rings.set_polygons(self._rings.polygons, hit)

    def _paint(self, scene_pos: QPointF) -> None:
        assert self._stroke is not None
        value, last = self._stroke
        rect = paint_segment(self.mask, (last.x(), last.y()), (scene_pos.x(), scene_pos.y()), self._radius, value)
        self._stroke = (value, scene_pos)
        if rect is not None:
            self._stroke_painted = True
            self._stroke_rect = rect if self._stroke_rect is None else union_rect(self._stroke_rect, rect)
            self._overlay.update_rect(rect)

    def _view_points(self, to_view: QTransform) -> list[np.ndarray]:
        assert self._rings is not None
        scale = np.array([to_view.m11(), to_view.m22()])
        offset = np.array([to_view.dx(), to_view.dy()])
        return [ring.points * scale + offset for ring in self._rings.polygons.rings]

    def _vertex_at(self, view_pos: QPointF, to_view: QTransform) -> tuple[int, int] | None:
        """The vertex whose handle is under the cursor (the nearest one when several are)."""
        if self._rings is None:
            return None
        best, best_distance = None, VERTEX_PX
        cursor = np.array([view_pos.x(), view_pos.y()])
        for ring_index, points in enumerate(self._view_points(to_view)):
            if len(points) == 0:
                continue
            distances = np.abs(points - cursor).max(axis=1)
            index = int(np.argmin(distances))
            if distances[index] <= best_distance:
                best, best_distance = (ring_index, index), float(distances[index])
        return best

    def _edge_at(self, view_pos: QPointF, to_view: QTransform) -> tuple[int, int] | None:
        """(ring, edge index) of the edge nearest the cursor within the grab distance; edge i runs from vertex i."""
        best, best_distance = None, VERTEX_PX
        cursor = np.array([view_pos.x(), view_pos.y()])
        for ring_index, a in enumerate(self._view_points(to_view)):
            if len(a) < 2:
                continue
            d = np.roll(a, -1, axis=0) - a
            length2 = np.maximum((d * d).sum(axis=1), 1e-12)
            t = np.clip(((cursor - a) * d).sum(axis=1) / length2, 0.0, 1.0)
            distances = np.hypot(*(a + t[:, None] * d - cursor).T)
            index = int(np.argmin(distances))
            if distances[index] <= best_distance:
                best, best_distance = (ring_index, index), float(distances[index])
        return best

    def _remove_rings(self) -> None:
        if self._rings is not None:
            self._scene.removeItem(self._rings)
            self._rings = None
            self._selected = None

    def _remove_cursor(self) -> None:
        if self._cursor is not None:
            self._scene.removeItem(self._cursor)
            self._cursor = None
