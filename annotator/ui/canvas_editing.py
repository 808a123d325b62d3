"""Mask editing on the image view: the API the window calls, the edit's signals, and the brush size.

While an edit is on, a `MaskEditor` holds the working copy of one annotation's mask and its scene items; the
subclass routes mouse gestures to it and passes each finished gesture to `_finish`, which emits `mask_edited`
once with a fresh copy of the mask. Esc and Delete are not bound here: the window calls `end_edit` and
`delete_selected_vertex`.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QWidget

from annotator.ui.canvas_view import ImageView
from annotator.ui.mask_editor import EDIT_MODES, EditResult, MaskEditor
from annotator.ui.palette import pending_colour

BRUSH_STEP = 1.25
"""`change_brush_size` multiplies (or divides) the radius by this per step."""
BRUSH_RADIUS_RANGE = (1, 500)
DEFAULT_BRUSH_RADIUS = 12
EDIT_TOLERANCE_PX = 1.0
EDIT_MIN_RING_AREA_PX = 4.0
"""Polygon mode leaves out rings smaller than this (specks), see `polygons_from_mask`."""


class MaskEditingView(ImageView):
    """An `ImageView` that edits one mask at a time in "polygon", "brush" or "eraser" mode."""

    mask_edited = Signal(object, object, str, object)  # key, new full-size bool mask (a fresh array), undo label,
    # the rectangle (x0, y0, x1, y1) of pixels the gesture may have changed, or None
    edit_ended = Signal()
    brush_size_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._editor: MaskEditor | None = None
        self._brush_radius = DEFAULT_BRUSH_RADIUS
        self.polygon_tolerance_px = EDIT_TOLERANCE_PX
        """Simplification of the rings shown in polygon mode (0: every corner of the mask's outline)."""

    @property
    def edit_mode(self) -> str | None:
        """"polygon", "brush" or "eraser" while a mask is edited, else None."""
        return self._editor.mode if self._editor is not None else None

    @property
    def edit_key(self) -> Hashable | None:
        """The key of the annotation whose mask is edited, else None."""
        return self._editor.key if self._editor is not None else None

    @property
    def edit_mask(self) -> np.ndarray | None:
        """The working mask of the edit (the canvas's own array: copy it to keep it), else None."""
        return self._editor.mask if self._editor is not None else None

    @property
    def editor(self) -> MaskEditor | None:
        return self._editor

    def begin_edit(self, mode: str, key: Hashable, mask: np.ndarray) -> None:
        """Edit `key`'s mask (a copy) in `mode`; again for the same key switches the mode, for another restarts."""
        if mode not in EDIT_MODES:
            raise ValueError(f"the edit mode is one of {', '.join(EDIT_MODES)}; got {mode!r}")
        size = self.image_size
        if size is None:
            raise ValueError("no image is shown, so there is no mask to edit")
        mask = np.asarray(mask)
        if mask.shape != (size[1], size[0]):
            raise ValueError(f"the mask is {mask.shape[::-1]} pixels but the image is {size[0]} x {size[1]}")
        self._edit_starting()
        if self._editor is not None and self._editor.key != key:
            self._drop_editor()
        if self._editor is None:
            self._editor = MaskEditor(
                self.scene(), key, mask, self._edit_colour(key), self.polygon_tolerance_px, EDIT_MIN_RING_AREA_PX
            )
            self._show_edited_mask(key, False)
        else:
            self._editor.set_mask(mask)
        self._editor.set_mode(mode, self._brush_radius)
        self.viewport().setCursor(self._rest_cursor())

    def set_edit_mask(self, mask: np.ndarray) -> None:
        """Replace the working mask (after an undo or redo) and repaint; nothing when no edit is on."""
        if self._editor is None:
            return
        mask = np.asarray(mask)
        if mask.shape != self._editor.mask.shape:
            raise ValueError(f"the mask is {mask.shape[::-1]} pixels, the edited one {self._editor.mask.shape[::-1]}")
        self._editor.set_mask(mask)

    def end_edit(self) -> None:
        """Stop editing (emits `edit_ended` when an edit was on)."""
        if self._editor is None:
            return
        self._drop_editor()
        self.viewport().setCursor(self._rest_cursor())
        self.edit_ended.emit()

    def delete_selected_vertex(self) -> bool:
        """Delete the vertex last clicked or hovered in polygon mode; False when there is none to delete."""
        if self._editor is None:
            return False
        return self._finish(self._editor.delete_selected())

    @property
    def brush_radius(self) -> int:
        """The brush and eraser radius in original pixels."""
        return self._brush_radius

    @brush_radius.setter
    def brush_radius(self, radius: int) -> None:
        low, high = BRUSH_RADIUS_RANGE
        radius = min(max(int(radius), low), high)
        if radius == self._brush_radius:
            return
        self._brush_radius = radius
        if self._editor is not None:
            self._editor.set_radius(radius)
        self.brush_size_changed.emit(radius)

    def change_brush_size(self, step: int) -> None:
        """A bigger (step > 0) or smaller (step < 0) brush, by `BRUSH_STEP` per step and at least one pixel."""
        if step == 0:
            return
        radius = round(self._brush_radius * BRUSH_STEP**step)
        if radius == self._brush_radius:
            radius += 1 if step > 0 else -1
        self.brush_radius = radius

    def _drop_editor(self) -> None:
        assert self._editor is not None
        self._show_edited_mask(self._editor.key, True)
        self._editor.remove()
        self._editor = None

    def _finish(self, result: EditResult | None) -> bool:
        """Emit `mask_edited` for a finished edit gesture (an `EditResult`, or None for nothing done)."""
        if result is None or self._editor is None:
            return False
        self.mask_edited.emit(self._editor.key, result.mask.copy(), result.label, result.rect)
        return True

    def _edit_starting(self) -> None:
        """Called before an edit begins or switches mode: the subclass drops its own gesture in progress."""

    def _edit_colour(self, key: Hashable) -> QColor:
        """The colour the edited mask is drawn in."""
        return pending_colour()

    def _show_edited_mask(self, key: Hashable, shown: bool) -> None:
        """Show or hide the subclass's own drawing of `key`'s mask (hidden while the editor draws the working one)."""
