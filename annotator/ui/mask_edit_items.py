"""Scene items of a mask edit: the working mask's overlay, the editable rings with vertex handles, the brush circle.

The overlay paints straight from the working bool mask (its bytes viewed as 0/1 indices of an Indexed8 image, no
copy), and only the part being repainted, subsampled to about one mask pixel per screen pixel: a brush step that
changes a small rect repaints that rect, never a full-image image rebuild.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import QGraphicsEllipseItem, QGraphicsItem, QStyleOptionGraphicsItem, QWidget

from annotator.editing.polygons import DirtyRect, EditablePolygons, Ring

OVERLAY_ALPHA = 120
VERTEX_PX = 7.0
"""Side of a vertex handle and its grab distance, in screen pixels."""


class MaskOverlayItem(QGraphicsItem):
    """The working mask, tinted in the annotation's colour, drawn from the mask's own memory."""

    def __init__(self, mask: np.ndarray, colour: QColor) -> None:
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption)
        self.setZValue(2.8)
        tint = QColor(colour)
        tint.setAlpha(OVERLAY_ALPHA)
        self._table = [0, tint.rgba()]
        self._mask = mask
        self._rect = QRectF(0, 0, mask.shape[1], mask.shape[0])

    @property
    def mask(self) -> np.ndarray:
        """The array the overlay paints from (the working mask itself, not a copy)."""
        return self._mask

    def set_mask(self, mask: np.ndarray) -> None:
        """Draw another working mask (same size) from now on."""
        self._mask = mask
        self.update()

    def update_rect(self, rect: DirtyRect) -> None:
        """Repaint the pixels of `rect` (x0, y0, x1, y1) only."""
        x0, y0, x1, y1 = rect
        self.update(QRectF(x0, y0, x1 - x0, y1 - y0))

    def boundingRect(self) -> QRectF:
        return self._rect

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        exposed = option.exposedRect.intersected(self._rect)
        if exposed.isEmpty():
            return
        lod = QStyleOptionGraphicsItem.levelOfDetailFromTransform(painter.worldTransform())
        step = max(1, int(1.0 / lod)) if lod > 0 else 1
        height, width = self._mask.shape
        x0 = max(math.floor(exposed.left()), 0) // step * step
        y0 = max(math.floor(exposed.top()), 0) // step * step
        x1, y1 = min(math.ceil(exposed.right()), width), min(math.ceil(exposed.bottom()), height)
        if x1 <= x0 or y1 <= y0:
            return
        indices = np.ascontiguousarray(self._mask[y0:y1:step, x0:x1:step].view(np.uint8))
        rows, cols = indices.shape
        image = QImage(indices.data, cols, rows, cols, QImage.Format.Format_Indexed8)
        image.setColorTable(self._table)
        painter.save()
        painter.setClipRect(self._rect)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        painter.drawImage(QRectF(x0, y0, cols * step, rows * step), image)
        painter.restore()


class RingsItem(QGraphicsItem):
    """The editable rings (outer solid, holes dashed) with a handle on every vertex, the selected one filled white.

    Each ring's polygon is built once per change of that ring and its handles are drawn as wide square points of
    that same polygon (a pen of constant screen width), so a ring of thousands of vertices repaints quickly.
    """

    def __init__(self, polygons: EditablePolygons, colour: QColor) -> None:
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption)
        self.setZValue(3.5)
        self._colour = QColor(colour)
        self._polygons = polygons
        self._shapes: list[tuple[Ring, QPolygonF]] = []
        self._selected: tuple[int, int] | None = None
        margin = 0.05 * max(polygons.width, polygons.height) + 8
        self._rect = QRectF(0, 0, polygons.width, polygons.height).adjusted(-margin, -margin, margin, margin)
        self._rebuild()

    @property
    def polygons(self) -> EditablePolygons:
        return self._polygons

    def set_polygons(self, polygons: EditablePolygons, selected: tuple[int, int] | None) -> None:
        self._polygons = polygons
        self._selected = selected
        self._rebuild()
        self.update()

    def boundingRect(self) -> QRectF:
        return self._rect

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        painter.setBrush(Qt.BrushStyle.NoBrush)
        exposed = option.exposedRect
        border = _point_pen(QColor("#111827"), VERTEX_PX + 2)
        fill = _point_pen(self._colour, VERTEX_PX)
        for ring, polygon in self._shapes:
            if not polygon.boundingRect().adjusted(-1, -1, 1, 1).intersects(exposed):
                continue
            pen = QPen(self._colour, 2.0, Qt.PenStyle.DashLine if ring.is_hole else Qt.PenStyle.SolidLine)
            pen.setCosmetic(True)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            painter.setPen(pen)
            painter.drawPolygon(polygon)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
            painter.setPen(border)
            painter.drawPoints(polygon)
            painter.setPen(fill)
            painter.drawPoints(polygon)
        if self._selected is not None:
            ring_index, index = self._selected
            x, y = self._polygons.rings[ring_index].points[index]
            painter.setPen(_point_pen(QColor("#ffffff"), VERTEX_PX))
            painter.drawPoint(QPointF(x, y))

    def _rebuild(self) -> None:
        """Polygons for the rings that changed (a ring that is the same object keeps its polygon)."""
        previous = {id(ring): polygon for ring, polygon in self._shapes}
        self._shapes = [
            (ring, previous.get(id(ring)) or QPolygonF([QPointF(x, y) for x, y in ring.points]))
            for ring in self._polygons.rings
        ]


class BrushCursorItem(QGraphicsEllipseItem):
    """The brush's outline at the cursor: a circle of the brush radius in original pixels."""

    def __init__(self, radius: float, erasing: bool) -> None:
        super().__init__()
        self.setZValue(4)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self._radius = radius
        self.set_erasing(erasing)
        self.setVisible(False)
        self._place(QPointF(0, 0))

    def set_erasing(self, erasing: bool) -> None:
        pen = QPen(QColor("#f87171") if erasing else QColor("#ffffff"), 1.5)
        pen.setCosmetic(True)
        self.setPen(pen)

    def set_radius(self, radius: float) -> None:
        centre = self.rect().center()
        self._radius = radius
        self._place(centre)

    def follow(self, scene_pos: QPointF) -> None:
        """Centre the circle on the cursor (it shows from the first move on)."""
        self._place(scene_pos)
        self.setVisible(True)

    def _place(self, centre: QPointF) -> None:
        r = self._radius
        self.setRect(QRectF(centre.x() - r, centre.y() - r, 2 * r, 2 * r))


def _point_pen(colour: QColor, width_px: float) -> QPen:
    """A cosmetic pen that draws a point as a square `width_px` screen pixels wide."""
    pen = QPen(colour, width_px, Qt.PenStyle.SolidLine, Qt.PenCapStyle.SquareCap)
    pen.setCosmetic(True)
    return pen
