"""The image canvas: a QGraphicsView whose scene coordinates are original image pixels.

Pixel (x, y) covers [x, x+1) x [y, y+1) in the scene, the same continuous frame as boxes and masks everywhere
else. The canvas draws the image (from an `ImagePyramid`), annotations (box, translucent mask with outline,
label; pending ones dashed in their own colour), refinement points, resize handles and the heatmap overlay.

Mouse: wheel zooms around the cursor; middle drag or Space + left drag pans. One annotation at a time is
*active* (the pending proposal, or the one the annotator clicked): inside its box a click adds a SAM point
(left positive; right or Shift+left negative), a click on a point removes it, a drag moves the box and the
handles resize it. A click on another annotation makes it active. In box-drawing mode a left drag draws a box.
The canvas only reports these gestures as signals; the window decides what they do to the store.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from PySide6.QtCore import QEvent, QKeyCombination, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetricsF,
    QImage,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPen,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QApplication,
    QGraphicsItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
    QStyleOptionGraphicsItem,
    QWidget,
)

from annotator.review.points import PromptPoint
from annotator.ui.image_pyramid import ImagePyramid
from annotator.ui.palette import pending_colour

BoxXyxy = tuple[float, float, float, float]
HANDLE_PX = 7.0
"""Side of a resize handle and its grab distance, in screen pixels."""
POINT_PX = 9.0
"""Diameter of a refinement point marker, in screen pixels."""
MIN_BOX_PX = 2.0
"""A drawn or resized box is at least this many original pixels wide and high."""
ZOOM_STEP = 1.25
MAX_ZOOM = 64.0
"""Screen pixels per image pixel at the highest zoom."""


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
        rect = _box_rect(self.box_xyxy)
        outline = self.annotation.outline
        if outline is not None:
            rect = rect.united(outline.boundingRect())
        return rect.adjusted(-2, -2, 2, 2)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        annotation = self.annotation
        colour = QColor(annotation.colour)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        if annotation.outline is not None:
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
        painter.drawRect(_box_rect(self.box_xyxy))

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


def _box_rect(box_xyxy: BoxXyxy) -> QRectF:
    x0, y0, x1, y1 = box_xyxy
    return QRectF(QPointF(x0, y0), QPointF(x1, y1))


@dataclass
class _Drag:
    """The gesture in progress between a mouse press and its release."""

    kind: str  # "press", "pan", "move", "resize", "draw"
    button: Qt.MouseButton
    shift: bool
    view_start: QPointF
    scene_start: QPointF
    target: Hashable | None = None
    original_box: BoxXyxy | None = None
    handle: int = -1
    moved: bool = False


class Canvas(QGraphicsView):
    """The annotation canvas (see the module docstring for the gestures)."""

    point_added = Signal(object, float, float, bool)  # key, x, y (original pixels), positive
    point_removed = Signal(object, int)  # key, index of the point
    annotation_activated = Signal(object)  # key, or None when the annotator clicked away
    box_edited = Signal(object, object)  # key, new box (x0, y0, x1, y1) after a move or a resize
    box_drawn = Signal(object)  # box (x0, y0, x1, y1) drawn by hand
    drawing_changed = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setBackgroundBrush(QColor("#2b2b2b"))
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.SmoothPixmapTransform)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setDragMode(QGraphicsView.DragMode.NoDrag)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self._image_item: ImageItem | None = None
        self._overlay: OverlayItem | None = None
        self._overlay_visible = False
        self._overlay_opacity = 0.55
        self._items: dict[Hashable, AnnotationItem] = {}
        self._active: Hashable | None = None
        self._drag: _Drag | None = None
        self._space_down = False
        self._space_panned = False
        self._drawing = False
        self._fitted = True
        self._rubber_band: QGraphicsRectItem | None = None
        self._key_actions: dict[str, Callable[[], None]] = {}
        self._placeholder = ""

    # Content ----------------------------------------------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int] | None:
        """(width, height) of the shown image in pixels, None when none is shown."""
        if self._image_item is None:
            return None
        return self._image_item.pyramid.width, self._image_item.pyramid.height

    def set_image(self, pyramid: ImagePyramid | None) -> None:
        """Show an image (or nothing), dropping the annotations and the overlay of the previous one."""
        self._drag = None
        self.set_drawing(False)
        self.scene().clear()
        self._items.clear()
        self._active = None
        self._overlay = None
        self._rubber_band = None
        self._image_item = None
        if pyramid is None:
            self.scene().setSceneRect(QRectF(0, 0, 1, 1))
            return
        self._image_item = ImageItem(pyramid)
        self.scene().addItem(self._image_item)
        w, h = pyramid.width, pyramid.height
        self.scene().setSceneRect(QRectF(-w, -h, 3 * w, 3 * h))
        self.fit()

    def set_annotations(self, annotations: list[CanvasAnnotation]) -> None:
        """Replace the drawn annotations; the active one stays active when its key is still there."""
        wanted = {a.key: a for a in annotations}
        for key in [k for k in self._items if k not in wanted]:
            self.scene().removeItem(self._items.pop(key))
        for annotation in annotations:
            item = self._items.get(annotation.key)
            if item is None:
                item = AnnotationItem(annotation)
                self._items[annotation.key] = item
                self.scene().addItem(item)
            elif not item.shows(annotation):
                item.set_annotation(annotation)
        if self._active not in self._items:
            self._active = None
        for key, item in self._items.items():
            item.set_active(key == self._active)

    def annotation_keys(self) -> list[Hashable]:
        return list(self._items)

    def item_for(self, key: Hashable) -> AnnotationItem | None:
        return self._items.get(key)

    @property
    def active_key(self) -> Hashable | None:
        return self._active

    def set_active(self, key: Hashable | None) -> None:
        self._active = key if key in self._items else None
        for item_key, item in self._items.items():
            item.set_active(item_key == self._active)

    def set_overlay(self, image: QImage | None) -> None:
        """The heatmap image for the current proposal (stretched over the image), or None."""
        if self._overlay is not None:
            self.scene().removeItem(self._overlay)
            self._overlay = None
        if image is None or self._image_item is None:
            return
        size = self._image_item.pyramid
        self._overlay = OverlayItem(image, size.width, size.height)
        self._overlay.setOpacity(self._overlay_opacity)
        self._overlay.setVisible(self._overlay_visible)
        self.scene().addItem(self._overlay)

    @property
    def overlay_image(self) -> QImage | None:
        """The heatmap image stretched over the image (whether shown or not), or None."""
        return self._overlay.image if self._overlay is not None else None

    @property
    def has_overlay(self) -> bool:
        return self._overlay is not None

    @property
    def overlay_visible(self) -> bool:
        return self._overlay_visible

    def set_overlay_visible(self, visible: bool) -> None:
        self._overlay_visible = visible
        if self._overlay is not None:
            self._overlay.setVisible(visible)

    def set_overlay_opacity(self, opacity: float) -> None:
        self._overlay_opacity = opacity
        if self._overlay is not None:
            self._overlay.setOpacity(opacity)

    @property
    def placeholder(self) -> str:
        return self._placeholder

    def set_placeholder(self, text: str) -> None:
        """A line of text drawn over the centre of the view (why there is no image, or that it is loading)."""
        self._placeholder = text
        self.viewport().update()

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:
        if not self._placeholder:
            return
        painter.save()
        painter.resetTransform()
        area = QRectF(self.viewport().rect()).adjusted(40, 40, -40, -40)
        font = QFont()
        font.setPointSizeF(12.0)
        painter.setFont(font)
        painter.setPen(QColor("#e5e7eb"))
        painter.drawText(area, int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap), self._placeholder)
        painter.restore()

    # View -------------------------------------------------------------------------------------------------------
    def fit(self) -> None:
        """Fit the whole image in the window."""
        if self._image_item is None:
            return
        self.fitInView(self._image_item.boundingRect(), Qt.AspectRatioMode.KeepAspectRatio)
        self._fitted = True

    def zoom_by(self, factor: float, anchor_view: QPointF | None = None) -> None:
        """Zoom by `factor` keeping the scene point under `anchor_view` (default: the view's centre) in place."""
        if self._image_item is None:
            return
        current = self.transform().m11()
        fit_scale = self._fit_scale()
        target = min(max(current * factor, fit_scale / 4), MAX_ZOOM)
        if target == current:
            return
        anchor = anchor_view if anchor_view is not None else QPointF(self.viewport().rect().center())
        before = self.mapToScene(anchor.toPoint())
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.scale(target / current, target / current)
        after = self.mapToScene(anchor.toPoint())
        delta = after - before
        self.translate(delta.x(), delta.y())
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self._fitted = False

    def zoom_in(self) -> None:
        self.zoom_by(ZOOM_STEP)

    def zoom_out(self) -> None:
        self.zoom_by(1 / ZOOM_STEP)

    @property
    def zoom(self) -> float:
        """Screen pixels per image pixel."""
        return self.transform().m11()

    def view_point(self, x: float, y: float) -> QPointF:
        """Where the original-pixel point (x, y) is in viewport coordinates."""
        return QPointF(self.mapFromScene(QPointF(x, y)))

    def _fit_scale(self) -> float:
        assert self._image_item is not None
        rect = self._image_item.boundingRect()
        viewport = self.viewport().rect()
        return min(viewport.width() / rect.width(), viewport.height() / rect.height())

    # Modes and keys ---------------------------------------------------------------------------------------------
    @property
    def drawing(self) -> bool:
        return self._drawing

    def set_drawing(self, drawing: bool) -> None:
        """Box-drawing mode: the next left drag draws a box."""
        drawing = drawing and self._image_item is not None
        if drawing == self._drawing:
            return
        self._drawing = drawing
        self.viewport().setCursor(Qt.CursorShape.CrossCursor if drawing else Qt.CursorShape.ArrowCursor)
        self.drawing_changed.emit(drawing)

    def set_key_actions(self, actions: dict[str, Callable[[], None]]) -> None:
        """Keys (portable key-sequence text) this canvas handles itself while it has focus, e.g. Enter/Space accept.

        Space still pans while held with a left drag; it triggers its action only when released without panning.
        """
        self._key_actions = {_normalised(k): action for k, action in actions.items()}

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ShortcutOverride and isinstance(event, QKeyEvent):
            if _event_key_text(event) in self._key_actions or event.key() == Qt.Key.Key_Space:
                event.accept()
                return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = _event_key_text(event)
        if event.key() == Qt.Key.Key_Space:
            if not event.isAutoRepeat():
                self._space_down = True
                self._space_panned = False
                self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
            event.accept()
            return
        action = self._key_actions.get(key)
        if action is not None:
            event.accept()
            action()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = False
            self.viewport().setCursor(Qt.CursorShape.CrossCursor if self._drawing else Qt.CursorShape.ArrowCursor)
            panned = self._space_panned
            self._space_panned = False
            action = self._key_actions.get(_event_key_text(event))
            event.accept()
            if not panned and action is not None:
                action()
            return
        super().keyReleaseEvent(event)

    # Mouse ------------------------------------------------------------------------------------------------------
    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom_by(ZOOM_STEP**steps, event.position())
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if self._image_item is None:
            super().mousePressEvent(event)
            return
        view_pos = event.position()
        scene_pos = self.mapToScene(view_pos.toPoint())
        button = event.button()
        shift = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if button == Qt.MouseButton.MiddleButton or (button == Qt.MouseButton.LeftButton and self._space_down):
            self._drag = _Drag("pan", button, shift, view_pos, scene_pos)
            self._space_panned = self._space_down
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
        elif self._drawing and button == Qt.MouseButton.LeftButton:
            self._drag = _Drag("draw", button, shift, view_pos, self._clamped(scene_pos))
        else:
            active = self._items.get(self._active)
            handle = self._handle_at(active, view_pos) if active is not None else -1
            if button == Qt.MouseButton.LeftButton and handle >= 0:
                assert active is not None
                self._drag = _Drag(
                    "resize", button, shift, view_pos, scene_pos, self._active, active.box_xyxy, handle=handle
                )
            else:
                self._drag = _Drag("press", button, shift, view_pos, scene_pos, self._key_at(scene_pos))
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        drag = self._drag
        view_pos = event.position()
        if drag is None:
            self._update_hover_cursor(view_pos)
            super().mouseMoveEvent(event)
            return
        scene_pos = self.mapToScene(view_pos.toPoint())
        if drag.kind == "pan":
            delta = view_pos - drag.view_start
            drag.view_start = view_pos
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - round(delta.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - round(delta.y()))
            self._fitted = False
        elif drag.kind == "draw":
            self._show_rubber_band(_normalised_box(drag.scene_start, self._clamped(scene_pos)))
        elif drag.kind == "resize":
            assert drag.original_box is not None
            box = self._resized(drag.original_box, drag.handle, self._clamped(scene_pos))
            self._items[drag.target].set_live_box(box)
            drag.moved = True
        elif drag.kind == "move":
            self._move_live(drag, scene_pos)
        elif drag.kind == "press":
            far = (view_pos - drag.view_start).manhattanLength() >= QApplication.startDragDistance()
            on_active = drag.target is not None and drag.target == self._active
            if far and drag.button == Qt.MouseButton.LeftButton and on_active:
                drag.kind = "move"
                drag.original_box = self._items[drag.target].box_xyxy
                self._move_live(drag, scene_pos)
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        drag, self._drag = self._drag, None
        if drag is None:
            super().mouseReleaseEvent(event)
            return
        scene_pos = self.mapToScene(event.position().toPoint())
        if drag.kind == "pan":
            cursor = Qt.CursorShape.OpenHandCursor if self._space_down else Qt.CursorShape.ArrowCursor
            self.viewport().setCursor(Qt.CursorShape.CrossCursor if self._drawing else cursor)
        elif drag.kind == "draw":
            self._hide_rubber_band()
            box = _normalised_box(drag.scene_start, self._clamped(scene_pos))
            self.set_drawing(False)
            if box[2] - box[0] >= MIN_BOX_PX and box[3] - box[1] >= MIN_BOX_PX:
                self.box_drawn.emit(box)
        elif drag.kind in ("resize", "move"):
            item = self._items.get(drag.target)
            if item is not None and drag.moved and item.box_xyxy != drag.original_box:
                self.box_edited.emit(drag.target, item.box_xyxy)
        else:
            self._click(drag, scene_pos)
        event.accept()

    def contextMenuEvent(self, event: QEvent) -> None:
        event.accept()  # the right button adds negative points

    def _click(self, drag: _Drag, scene_pos: QPointF) -> None:
        target = drag.target
        if target is not None and target == self._active:
            item = self._items[target]
            point_index = self._point_at(item, drag.view_start)
            if point_index >= 0:
                self.point_removed.emit(target, point_index)
            elif drag.button in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
                positive = drag.button == Qt.MouseButton.LeftButton and not drag.shift
                self.point_added.emit(target, float(scene_pos.x()), float(scene_pos.y()), positive)
        elif target is not None:
            self.set_active(target)
            self.annotation_activated.emit(target)
        elif self._active is not None and not self._items[self._active].annotation.pending:
            self.set_active(None)
            self.annotation_activated.emit(None)

    def _move_live(self, drag: _Drag, scene_pos: QPointF) -> None:
        assert drag.original_box is not None and self._image_item is not None
        x0, y0, x1, y1 = drag.original_box
        dx, dy = scene_pos.x() - drag.scene_start.x(), scene_pos.y() - drag.scene_start.y()
        w, h = self._image_item.pyramid.width, self._image_item.pyramid.height
        dx = min(max(dx, -x0), w - x1)
        dy = min(max(dy, -y0), h - y1)
        self._items[drag.target].set_live_box((x0 + dx, y0 + dy, x1 + dx, y1 + dy))
        drag.moved = True

    def _resized(self, box: BoxXyxy, handle: int, pos: QPointF) -> BoxXyxy:
        x0, y0, x1, y1 = box
        x, y = pos.x(), pos.y()
        if handle in (0, 6, 7):
            x0 = min(x, x1 - MIN_BOX_PX)
        if handle in (2, 3, 4):
            x1 = max(x, x0 + MIN_BOX_PX)
        if handle in (0, 1, 2):
            y0 = min(y, y1 - MIN_BOX_PX)
        if handle in (4, 5, 6):
            y1 = max(y, y0 + MIN_BOX_PX)
        return (x0, y0, x1, y1)

    def _clamped(self, pos: QPointF) -> QPointF:
        assert self._image_item is not None
        w, h = self._image_item.pyramid.width, self._image_item.pyramid.height
        return QPointF(min(max(pos.x(), 0.0), float(w)), min(max(pos.y(), 0.0), float(h)))

    def _key_at(self, scene_pos: QPointF) -> Hashable | None:
        """The annotation under a scene point: the active one first, else the smallest box containing it."""
        inside = [key for key, item in self._items.items() if _box_rect(item.box_xyxy).contains(scene_pos)]
        if self._active in inside:
            return self._active
        if not inside:
            return None
        return min(inside, key=lambda k: _area(self._items[k].box_xyxy))

    def _handle_at(self, item: AnnotationItem, view_pos: QPointF) -> int:
        for index, position in enumerate(item.handle_positions()):
            delta = QPointF(self.mapFromScene(position)) - view_pos
            if abs(delta.x()) <= HANDLE_PX and abs(delta.y()) <= HANDLE_PX:
                return index
        return -1

    def _point_at(self, item: AnnotationItem, view_pos: QPointF) -> int:
        for index, point in enumerate(item.annotation.points):
            delta = QPointF(self.mapFromScene(QPointF(point.x, point.y))) - view_pos
            if delta.manhattanLength() <= POINT_PX:
                return index
        return -1

    def _update_hover_cursor(self, view_pos: QPointF) -> None:
        if self._drawing or self._space_down:
            return
        active = self._items.get(self._active)
        handle = self._handle_at(active, view_pos) if active is not None else -1
        if handle in (0, 4):
            shape = Qt.CursorShape.SizeFDiagCursor
        elif handle in (2, 6):
            shape = Qt.CursorShape.SizeBDiagCursor
        elif handle in (1, 5):
            shape = Qt.CursorShape.SizeVerCursor
        elif handle in (3, 7):
            shape = Qt.CursorShape.SizeHorCursor
        else:
            shape = Qt.CursorShape.ArrowCursor
        self.viewport().setCursor(shape)

    def _show_rubber_band(self, box: BoxXyxy) -> None:
        if self._rubber_band is None:
            pen = QPen(pending_colour(), 2.0, Qt.PenStyle.DashLine)
            pen.setCosmetic(True)
            self._rubber_band = self.scene().addRect(_box_rect(box), pen)
            self._rubber_band.setZValue(4)
        else:
            self._rubber_band.setRect(_box_rect(box))

    def _hide_rubber_band(self) -> None:
        if self._rubber_band is not None:
            self.scene().removeItem(self._rubber_band)
            self._rubber_band = None

    def resizeEvent(self, event: QEvent) -> None:
        super().resizeEvent(event)
        if self._fitted:
            self.fit()


def _normalised_box(a: QPointF, b: QPointF) -> BoxXyxy:
    return (min(a.x(), b.x()), min(a.y(), b.y()), max(a.x(), b.x()), max(a.y(), b.y()))


def _area(box: BoxXyxy) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _normalised(key_text: str) -> str:
    return QKeySequence(key_text).toString(QKeySequence.SequenceFormat.PortableText)


def _event_key_text(event: QKeyEvent) -> str:
    modifiers = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
    combination = QKeyCombination(modifiers, Qt.Key(event.key()))
    return QKeySequence(combination).toString(QKeySequence.SequenceFormat.PortableText)
