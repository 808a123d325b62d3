"""The zoomable, pannable view of one image under the canvas: pyramid image, heatmap overlay, placeholder text, keys.

Scene coordinates are original image pixels. The wheel zooms around the cursor; middle drag or Space + left drag
pans (the subclass routes those presses here with `_start_pan`). Keys the subclass registers with
`set_key_actions` fire while the view has focus; Space fires its action only when released without panning.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QKeyCombination, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QKeyEvent, QKeySequence, QMouseEvent, QPainter, QWheelEvent
from PySide6.QtWidgets import QGraphicsScene, QGraphicsView, QWidget

from annotator.ui.canvas_items import ImageItem, OverlayItem
from annotator.ui.image_pyramid import ImagePyramid

ZOOM_STEP = 1.25
MAX_ZOOM = 64.0
"""Screen pixels per image pixel at the highest zoom."""


class ImageView(QGraphicsView):
    """The image with zoom, pan, the heatmap overlay and key actions; gestures on annotations live in `Canvas`."""

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
        self._space_down = False
        self._space_panned = False
        self._pan_from: QPointF | None = None
        self._fitted = True
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
        """Show an image (or nothing), dropping every item of the previous one."""
        self._pan_from = None
        self.scene().clear()
        self._overlay = None
        self._image_item = None
        if pyramid is None:
            self.scene().setSceneRect(QRectF(0, 0, 1, 1))
            return
        self._image_item = ImageItem(pyramid)
        self.scene().addItem(self._image_item)
        w, h = pyramid.width, pyramid.height
        self.scene().setSceneRect(QRectF(-w, -h, 3 * w, 3 * h))
        self.fit()

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
        target = min(max(current * factor, self._fit_scale() / 4), MAX_ZOOM)
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

    def resizeEvent(self, event: QEvent) -> None:
        super().resizeEvent(event)
        if self._fitted:
            self.fit()

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom_by(ZOOM_STEP**steps, event.position())
        event.accept()

    # Panning ----------------------------------------------------------------------------------------------------
    def _is_pan_press(self, event: QMouseEvent) -> bool:
        button = event.button()
        return button == Qt.MouseButton.MiddleButton or (button == Qt.MouseButton.LeftButton and self._space_down)

    def _start_pan(self, view_pos: QPointF) -> None:
        self._pan_from = view_pos
        self._space_panned = self._space_down
        self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)

    def _pan_to(self, view_pos: QPointF) -> None:
        assert self._pan_from is not None
        delta = view_pos - self._pan_from
        self._pan_from = view_pos
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - round(delta.x()))
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() - round(delta.y()))
        self._fitted = False

    def _end_pan(self) -> None:
        self._pan_from = None
        self.viewport().setCursor(Qt.CursorShape.OpenHandCursor if self._space_down else self._rest_cursor())

    def _rest_cursor(self) -> Qt.CursorShape:
        """The cursor while no gesture is on (the subclass's modes choose it)."""
        return Qt.CursorShape.ArrowCursor

    # Keys -------------------------------------------------------------------------------------------------------
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
        if event.key() == Qt.Key.Key_Space:
            if not event.isAutoRepeat():
                self._space_down = True
                self._space_panned = False
                self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
            event.accept()
            return
        action = self._key_actions.get(_event_key_text(event))
        if action is not None:
            event.accept()
            action()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = False
            self.viewport().setCursor(self._rest_cursor())
            panned = self._space_panned
            self._space_panned = False
            action = self._key_actions.get(_event_key_text(event))
            event.accept()
            if not panned and action is not None:
                action()
            return
        super().keyReleaseEvent(event)


def _normalised(key_text: str) -> str:
    return QKeySequence(key_text).toString(QKeySequence.SequenceFormat.PortableText)


def _event_key_text(event: QKeyEvent) -> str:
    modifiers = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
    combination = QKeyCombination(modifiers, Qt.Key(event.key()))
    return QKeySequence(combination).toString(QKeySequence.SequenceFormat.PortableText)
