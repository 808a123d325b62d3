"""The image canvas: a QGraphicsView whose scene coordinates are original image pixels.

Pixel (x, y) covers [x, x+1) x [y, y+1) in the scene, the same continuous frame as boxes and masks everywhere
else. The canvas draws the image (from an `ImagePyramid`), annotations (box, translucent mask with outline,
label; pending ones dashed in their own colour), refinement points, resize handles and the heatmap overlay.

Mouse: wheel zooms around the cursor; middle drag or Space + left drag pans. One annotation at a time is
*active* (the pending proposal, or the one the annotator clicked): inside its box a click adds a SAM point
(left positive; right or Shift+left negative), a click on a point removes it, a drag moves the box and the
handles resize it. A click on another annotation makes it active. In box-drawing mode a left drag draws a box.

Mask editing (`begin_edit`): while one annotation's mask is edited ("polygon", "brush" or "eraser", see
`mask_editor`), those gestures are off (zoom and pan stay) and every finished edit gesture emits `mask_edited`
once. The canvas only reports gestures as signals; the window decides what they do to the store.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QPointF, Qt, Signal
from PySide6.QtGui import QColor, QMouseEvent, QPen
from PySide6.QtWidgets import QApplication, QGraphicsRectItem, QWidget

from annotator.ui.canvas_items import (
    HANDLE_PX,
    POINT_PX,
    AnnotationItem,
    BoxXyxy,
    CanvasAnnotation,
    ImageItem,
    LabelItem,
    MarkerItem,
    OverlayItem,
    box_area,
    box_rect,
    normalised_box,
    resized_box,
)
from annotator.ui.canvas_editing import MaskEditingView
from annotator.ui.canvas_view import MAX_ZOOM, ZOOM_STEP
from annotator.ui.image_pyramid import ImagePyramid
from annotator.ui.palette import pending_colour

__all__ = [
    "HANDLE_PX", "MAX_ZOOM", "MIN_BOX_PX", "POINT_PX", "ZOOM_STEP", "AnnotationItem", "BoxXyxy", "Canvas",
    "CanvasAnnotation", "ImageItem", "LabelItem", "MarkerItem", "OverlayItem",
]
MIN_BOX_PX = 2.0
"""A drawn or resized box is at least this many original pixels wide and high."""
_HANDLE_CURSORS = {
    0: Qt.CursorShape.SizeFDiagCursor,
    4: Qt.CursorShape.SizeFDiagCursor,
    2: Qt.CursorShape.SizeBDiagCursor,
    6: Qt.CursorShape.SizeBDiagCursor,
    1: Qt.CursorShape.SizeVerCursor,
    5: Qt.CursorShape.SizeVerCursor,
    3: Qt.CursorShape.SizeHorCursor,
    7: Qt.CursorShape.SizeHorCursor,
}


@dataclass
class _Drag:
    """The gesture in progress between a mouse press and its release."""

    kind: str  # "press", "pan", "move", "resize", "draw", "edit"
    button: Qt.MouseButton
    shift: bool
    view_start: QPointF
    scene_start: QPointF
    target: Hashable | None = None
    original_box: BoxXyxy | None = None
    handle: int = -1
    moved: bool = False


class Canvas(MaskEditingView):
    """The annotation canvas (see the module docstring for the gestures)."""

    point_added = Signal(object, float, float, bool)  # key, x, y (original pixels), positive
    point_removed = Signal(object, int)  # key, index of the point
    annotation_activated = Signal(object)  # key, or None when the annotator clicked away
    box_edited = Signal(object, object)  # key, new box (x0, y0, x1, y1) after a move or a resize
    box_drawn = Signal(object)  # box (x0, y0, x1, y1) drawn by hand
    drawing_changed = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._items: dict[Hashable, AnnotationItem] = {}
        self._active: Hashable | None = None
        self._drag: _Drag | None = None
        self._drawing = False
        self._rubber_band: QGraphicsRectItem | None = None

    # Content ----------------------------------------------------------------------------------------------------
    def set_image(self, pyramid: ImagePyramid | None) -> None:
        """Show an image (or nothing), dropping the annotations, the overlay and any edit of the previous one."""
        self._drag = None
        self.set_drawing(False)
        self.end_edit()
        self._items.clear()
        self._active = None
        self._rubber_band = None
        super().set_image(pyramid)

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
            item.set_mask_hidden(self._editor is not None and key == self._editor.key)

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

    # Modes ------------------------------------------------------------------------------------------------------
    @property
    def drawing(self) -> bool:
        return self._drawing

    def set_drawing(self, drawing: bool) -> None:
        """Box-drawing mode: the next left drag draws a box."""
        drawing = drawing and self._image_item is not None
        if drawing == self._drawing:
            return
        self._drawing = drawing
        self.viewport().setCursor(self._rest_cursor())
        self.drawing_changed.emit(drawing)

    def _rest_cursor(self) -> Qt.CursorShape:
        brushing = self._editor is not None and self._editor.mode != "polygon"
        return Qt.CursorShape.CrossCursor if self._drawing or brushing else Qt.CursorShape.ArrowCursor

    def _edit_starting(self) -> None:
        self._drag = None
        self._hide_rubber_band()
        self.set_drawing(False)

    def _edit_colour(self, key: Hashable) -> QColor:
        item = self._items.get(key)
        return item.annotation.colour if item is not None else pending_colour()

    def _show_edited_mask(self, key: Hashable, shown: bool) -> None:
        item = self._items.get(key)
        if item is not None:
            item.set_mask_hidden(not shown)

    # Mouse ------------------------------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:
        if self._image_item is None:
            super().mousePressEvent(event)
            return
        view_pos = event.position()
        scene_pos = self.mapToScene(view_pos.toPoint())
        button = event.button()
        shift = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if self._is_pan_press(event):
            self._drag = _Drag("pan", button, shift, view_pos, scene_pos)
            self._start_pan(view_pos)
        elif self._editor is not None:
            self._drag = _Drag("edit", button, shift, view_pos, scene_pos)
            self._editor.press(scene_pos, view_pos, button, self.viewportTransform())
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
        scene_pos = self.mapToScene(view_pos.toPoint())
        if drag is None:
            if self._editor is not None:
                self._editor.move(scene_pos, view_pos, self.viewportTransform())
            else:
                self._update_hover_cursor(view_pos)
            super().mouseMoveEvent(event)
            return
        if drag.kind == "edit":
            if self._editor is not None:
                self._editor.move(scene_pos, view_pos, self.viewportTransform())
        elif drag.kind == "pan":
            self._pan_to(view_pos)
        elif drag.kind == "draw":
            self._show_rubber_band(normalised_box(drag.scene_start, self._clamped(scene_pos)))
        elif drag.kind == "resize":
            assert drag.original_box is not None
            box = resized_box(drag.original_box, drag.handle, self._clamped(scene_pos), MIN_BOX_PX)
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
            self._end_pan()
        elif drag.kind == "edit":
            if self._editor is not None:
                self._finish(self._editor.release(drag.button))
        elif drag.kind == "draw":
            self._hide_rubber_band()
            box = normalised_box(drag.scene_start, self._clamped(scene_pos))
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

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if self._editor is None or event.button() != Qt.MouseButton.LeftButton:
            super().mouseDoubleClickEvent(event)
            return
        if self._editor.mode != "polygon":
            self.mousePressEvent(event)
            return
        view_pos = event.position()
        scene_pos = self.mapToScene(view_pos.toPoint())
        self._drag = _Drag("edit", event.button(), False, view_pos, scene_pos)
        self._finish(self._editor.double_click(view_pos, scene_pos, self.viewportTransform()))
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

    def _clamped(self, pos: QPointF) -> QPointF:
        assert self._image_item is not None
        w, h = self._image_item.pyramid.width, self._image_item.pyramid.height
        return QPointF(min(max(pos.x(), 0.0), float(w)), min(max(pos.y(), 0.0), float(h)))

    def _key_at(self, scene_pos: QPointF) -> Hashable | None:
        """The annotation under a scene point: the active one first, else the smallest box containing it."""
        inside = [key for key, item in self._items.items() if box_rect(item.box_xyxy).contains(scene_pos)]
        if self._active in inside:
            return self._active
        if not inside:
            return None
        return min(inside, key=lambda k: box_area(self._items[k].box_xyxy))

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
        self.viewport().setCursor(_HANDLE_CURSORS.get(handle, Qt.CursorShape.ArrowCursor))

    def _show_rubber_band(self, box: BoxXyxy) -> None:
        if self._rubber_band is None:
            pen = QPen(pending_colour(), 2.0, Qt.PenStyle.DashLine)
            pen.setCosmetic(True)
            self._rubber_band = self.scene().addRect(box_rect(box), pen)
            self._rubber_band.setZValue(4)
        else:
            self._rubber_band.setRect(box_rect(box))

    def _hide_rubber_band(self) -> None:
        if self._rubber_band is not None:
            self.scene().removeItem(self._rubber_band)
            self._rubber_band = None
