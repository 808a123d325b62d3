"""The scene items the canvas draws: the image, the heatmap overlay, and each annotation with its label,
resize handles and refinement points. Scene coordinates are original image pixels.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QImage, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget

from annotator.review.points import PromptPoint
from annotator.ui.image_pyramid import ImagePyramid

BoxXyxy = tuple[float, float, float, float]
HANDLE_PX = 7.0
"""Side of a resize handle and its grab distance, in screen pixels."""
POINT_PX = 9.0
"""Diameter of a refinement point marker, in screen pixels."""


@dataclass(frozen=True)
class CanvasAnnotation:
    """What the canvas draws for one annotation; `key` identifies it to the window (store id or pending key).

    `outline`: the mask's outline in original pixels (odd-even fill, so holes stay open), or None for a box only.
    """

    key: Hashable
    box_xyxy: BoxXyxy
    label: str
    colour: QColor
    pending: bool = False
    outline: QPainterPath | None = field(default=None, compare=False)
    points: tuple[PromptPoint, ...] = ()


class ImageItem(QGraphicsItem):
    """The image, painted from the pyramid level that matches the current zoom."""

    def __init__(self, pyramid: ImagePyramid) -> None:
        super().__init__()
        self.pyramid = pyramid
        self.setZValue(0)

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, self.pyramid.width, self.pyramid.height)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        scale = QStyleOptionGraphicsItem.levelOfDetailFromTransform(painter.worldTransform())
        level = self.pyramid.level_for(scale)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, scale < 1.0)
        painter.drawImage(self.boundingRect(), level, QRectF(level.rect()))


class OverlayItem(QGraphicsItem):
    """An RGBA image stretched over the whole image (the heatmap), smoothly resampled."""

    def __init__(self, image: QImage, width: int, height: int) -> None:
        super().__init__()
        self.image = image
        self._rect = QRectF(0, 0, width, height)
        self.setZValue(1)

    def boundingRect(self) -> QRectF:
        return self._rect

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        painter.drawImage(self._rect, self.image, QRectF(self.image.rect()))


class LabelItem(QGraphicsItem):
    """An annotation's label on a filled tag, a constant size on screen, sitting on the box's top-left corner."""

    def __init__(self, text: str, colour: QColor, parent: QGraphicsItem) -> None:
        super().__init__(parent)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
        self._font = QFont()
        self._font.setPointSizeF(9.0)
        self._colour = colour
        self._text = text
        metrics = QFontMetricsF(self._font)
        self._rect = QRectF(0, -metrics.height() - 4, metrics.horizontalAdvance(text) + 8, metrics.height() + 4)

    @property
    def text(self) -> str:
        return self._text

    def boundingRect(self) -> QRectF:
        return self._rect

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        painter.fillRect(self._rect, self._colour)
        painter.setFont(self._font)
        text_colour = Qt.GlobalColor.black if self._colour.lightnessF() > 0.6 else Qt.GlobalColor.white
        painter.setPen(text_colour)
        painter.drawText(self._rect, Qt.AlignmentFlag.AlignCenter, self._text)


class MarkerItem(QGraphicsItem):
    """A resize handle (square) or a refinement point (disc: green positive, red negative), constant on screen."""

    def __init__(self, parent: QGraphicsItem, fill: QColor, round_: bool, size_px: float) -> None:
        super().__init__(parent)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
        self._fill = fill
        self._round = round_
        self._rect = QRectF(-size_px / 2, -size_px / 2, size_px, size_px)
        self.setZValue(3)

    def boundingRect(self) -> QRectF:
        return self._rect.adjusted(-1, -1, 1, 1)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(QPen(Qt.GlobalColor.white, 1.5))
        painter.setBrush(self._fill)
        if self._round:
            painter.drawEllipse(self._rect)
        else:
            painter.drawRect(self._rect)


class AnnotationItem(QGraphicsItem):
    """One annotation: translucent mask fill and outline, box (dashed when pending), label, handles, points."""

    def __init__(self, annotation: CanvasAnnotation) -> None:
        super().__init__()
        self.setZValue(2)
        self._active = False
        self._mask_hidden = False
        self._label: LabelItem | None = None
        self._handles: list[MarkerItem] = []
        self._points: list[MarkerItem] = []
        self.annotation = annotation
        self.box_xyxy = annotation.box_xyxy
        self._rebuild()

    @property
    def active(self) -> bool:
        return self._active

    @property
    def label_text(self) -> str:
        return self._label.text if self._label is not None else ""

    def shows(self, annotation: CanvasAnnotation) -> bool:
        """Whether the item already draws exactly this annotation (same outline object, box not being edited)."""
        return (
            self.annotation == annotation
            and self.annotation.outline is annotation.outline
            and self.box_xyxy == annotation.box_xyxy
        )

    def set_annotation(self, annotation: CanvasAnnotation) -> None:
        self.prepareGeometryChange()
        self.annotation = annotation
        self.box_xyxy = annotation.box_xyxy
        self._rebuild()

    def set_active(self, active: bool) -> None:
        self._active = active
        for handle in self._handles:
            handle.setVisible(active)
        self.setZValue(2.5 if active else 2)
        self.update()

    def set_mask_hidden(self, hidden: bool) -> None:
        """Draw only the box and label (while the mask is being edited, the editor draws the working mask)."""
        self._mask_hidden = hidden
        self.update()

    def set_live_box(self, box_xyxy: BoxXyxy) -> None:
        """Show the box being moved or resized (the mask stays where it was until the window re-prompts SAM)."""
        self.prepareGeometryChange()
        self.box_xyxy = box_xyxy
        self._place_children()

    def handle_positions(self) -> list[QPointF]:
        """Scene positions of the 8 handles: corners and edge midpoints, clockwise from top-left."""
        x0, y0, x1, y1 = self.box_xyxy
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        corners_and_midpoints = ((x0, y0), (xm, y0), (x1, y0), (x1, ym), (x1, y1), (xm, y1), (x0, y1), (x0, ym))
        return [QPointF(x, y) for x, y in corners_and_midpoints]

    def boundingRect(self) -> QRectF:
        rect = box_rect(self.box_xyxy)
        outline = self.annotation.outline
        if outline is not None:
            rect = rect.united(outline.boundingRect())
        return rect.adjusted(-2, -2, 2, 2)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        annotation = self.annotation
        colour = QColor(annotation.colour)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        if annotation.outline is not None and not self._mask_hidden:
            fill = QColor(colour)
            fill.setAlpha(70 if annotation.pending else 90)
            outline_pen = QPen(colour, 1.5)
            outline_pen.setCosmetic(True)
            painter.setPen(outline_pen)
            painter.setBrush(QBrush(fill))
            painter.drawPath(annotation.outline)
        box_pen = QPen(colour, 3.0 if self._active else 2.0)
        box_pen.setCosmetic(True)
        if annotation.pending:
            box_pen.setStyle(Qt.PenStyle.DashLine)
        painter.setPen(box_pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(box_rect(self.box_xyxy))

    def _rebuild(self) -> None:
        scene = self.scene()
        for child in self.childItems():
            child.setParentItem(None)
            if scene is not None:
                scene.removeItem(child)
        annotation = self.annotation
        self._label = LabelItem(annotation.label, annotation.colour, self)
        self._handles = [MarkerItem(self, annotation.colour, False, HANDLE_PX) for _ in range(8)]
        self._points = [
            MarkerItem(self, QColor("#22c55e") if p.positive else QColor("#ef4444"), True, POINT_PX)
            for p in annotation.points
        ]
        for handle in self._handles:
            handle.setVisible(self._active)
        for marker, point in zip(self._points, annotation.points):
            marker.setPos(point.x, point.y)
        self._place_children()
        self.update()

    def _place_children(self) -> None:
        x0, y0, _, _ = self.box_xyxy
        if self._label is not None:
            self._label.setPos(x0, y0)
        for handle, position in zip(self._handles, self.handle_positions()):
            handle.setPos(position)


def box_rect(box_xyxy: BoxXyxy) -> QRectF:
    x0, y0, x1, y1 = box_xyxy
    return QRectF(QPointF(x0, y0), QPointF(x1, y1))



def normalised_box(a: QPointF, b: QPointF) -> BoxXyxy:
    """The box spanned by two corners, whichever way it was dragged."""
    return (min(a.x(), b.x()), min(a.y(), b.y()), max(a.x(), b.x()), max(a.y(), b.y()))


def box_area(box: BoxXyxy) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def resized_box(box: BoxXyxy, handle: int, pos: QPointF, min_side: float) -> BoxXyxy:
    """The box with handle `handle` (see `AnnotationItem.handle_positions`) dragged to `pos`, sides >= `min_side`."""
    x0, y0, x1, y1 = box
    x, y = pos.x(), pos.y()
    if handle in (0, 6, 7):
        x0 = min(x, x1 - min_side)
    if handle in (2, 3, 4):
        x1 = max(x, x0 + min_side)
    if handle in (0, 1, 2):
        y0 = min(y, y1 - min_side)
    if handle in (4, 5, 6):
        y1 = max(y, y0 + min_side)
    return (x0, y0, x1, y1)
