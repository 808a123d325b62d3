"""How the main window draws the review session: the canvas's annotations (with mask outlines made on the image
thread and cached by mask), the panel's rows and review line, the heatmap of the proposal under review, the
category picker and the image list's counts. Everything here reads the session; nothing changes it."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from PySide6.QtGui import QColor, QPainterPath

from annotator.grounding.frame import ImageFrame
from annotator.project.geometry import Rle
from annotator.review.describe import ReviewItem, review_items, review_state
from annotator.ui.annotate_panel import AnnotationRow
from annotator.ui.canvas import CanvasAnnotation
from annotator.ui.palette import category_colour, pending_colour
from annotator.ui.worker_jobs import ShownProposal, rle_key

if TYPE_CHECKING:
    from annotator.ui.main_window import MainWindow


@dataclass
class OutlineRequest:
    """The outlines one redraw lacks: stored masks to decode, and (key, mask) arrays at hand."""

    rles: list[Rle] = field(default_factory=list)
    arrays: list[tuple[Hashable, np.ndarray]] = field(default_factory=list)


class ReviewViewMixin:
    """The drawing half of `MainWindow`."""

    def _init_view(self) -> None:
        self._outlines: dict[Hashable, QPainterPath] = {}
        self._outline_requested: set[Hashable] = set()
        self._edited_array: tuple[Hashable, np.ndarray] | None = None
        self._pending_masks: dict[Hashable, tuple[np.ndarray, int]] = {}
        self._mask_serial = 0
        self._overlay_shown: ShownProposal | None = None
        self._image_ready = False

    def _forget_outlines(self) -> None:
        self._outlines.clear()
        self._outline_requested.clear()
        self._edited_array = None
        self._pending_masks.clear()

    def _remember_outline(self: MainWindow, rle: Rle, outline: QPainterPath) -> None:
        self._outlines[rle_key(rle)] = outline

    def _colour(self: MainWindow, item: ReviewItem) -> QColor:
        if item.pending:
            return pending_colour()
        label_set = self.session.categories.label_set
        return category_colour(item.category, label_set.names if label_set is not None else None)

    def _outline_of(self: MainWindow, item: ReviewItem, missing: OutlineRequest) -> QPainterPath | None:
        """The item's mask outline when known; otherwise it is asked for once (`missing`). A stored mask is keyed
        by its RLE; a pending one, or one just edited by hand, is outlined from the array at hand, never encoded
        or decoded on this thread."""
        if item.outline is not None:
            return item.outline
        if item.rle is not None:
            key: Hashable = rle_key(item.rle)
        elif item.mask is not None:
            key = ("pending", item.key, self._pending_mask_serial(item.key, item.mask))
        else:
            return None
        outline = self._outlines.get(key)
        if outline is not None or key in self._outline_requested:
            return outline
        self._outline_requested.add(key)
        edited = self._edited_array
        if item.rle is None:
            missing.arrays.append((key, item.mask))
        elif edited is not None and edited[0] == item.key:
            missing.arrays.append((key, edited[1]))
            self._edited_array = None
        else:
            missing.rles.append(item.rle)
        return None

    def _pending_mask_serial(self: MainWindow, key: Hashable, mask: np.ndarray) -> int:
        """A number for this pending mask, new whenever the annotation's mask is another array."""
        known = self._pending_masks.get(key)
        if known is None or known[0] is not mask:
            self._mask_serial += 1
            known = (mask, self._mask_serial)
            self._pending_masks[key] = known
        return known[1]

    def _canvas_annotations(self: MainWindow, items: list[ReviewItem]) -> list[CanvasAnnotation]:
        if not self._image_ready:
            return []
        missing = OutlineRequest()
        drawn = [
            CanvasAnnotation(
                key=item.key,
                box_xyxy=item.box_xyxy,
                label=item.label,
                colour=self._colour(item),
                pending=item.pending,
                outline=self._outline_of(item, missing),
                points=item.points,
            )
            for item in items
        ]
        if (missing.rles or missing.arrays) and self.current_image_id is not None:
            self.image_loader.outline(self.current_image_id, tuple(missing.rles), tuple(missing.arrays))
        return drawn

    def _refresh_annotations(self: MainWindow) -> None:
        """Redraw the current image's annotations and the panels that describe them. With nothing active, the
        annotation Enter and Esc would act on becomes active, so the annotator sees which one it is."""
        session = self.session
        if session.active is None:
            session.active = session.target_key()
        items = review_items(session)
        self.canvas.set_annotations(self._canvas_annotations(items))
        self.canvas.set_active(session.active)
        rows = [
            AnnotationRow(key=item.key, text=item.row_text, colour=self._colour(item), tooltip=item.tooltip)
            for item in items
        ]
        self.panel.set_annotation_rows(rows, session.active)
        state = review_state(session)
        self.panel.set_proposal_state(state.text, can_act=state.can_act)
        if state.category is not None and not self.panel.category.hasFocus():
            self.panel.category.setEditText(state.category)
        self._refresh_overlay()
        self._update_busy()

    def _refresh_overlay(self: MainWindow) -> None:
        session = self.session
        active = session.active
        shown = session.pending[active].shown if isinstance(active, str) and active in session.pending else None
        shown = shown or session.last_shown
        if shown is None or shown.image_id != self.current_image_id or not self._image_ready:
            if self._overlay_shown is not None:
                self.canvas.set_overlay(None)
                self.heads_panel.set_heads((), (), None, None)
                self._overlay_shown = None
            return
        if self._overlay_shown is shown:
            return
        self._overlay_shown = shown
        proposal = shown.proposal
        frame: ImageFrame = proposal.frame
        self.canvas.set_overlay(shown.heat)
        self.heads_panel.set_heads(
            proposal.heads, shown.head_images, frame, frame.box_to_grid(tuple(proposal.attention_box_xyxy))
        )

    def _refresh_categories(self: MainWindow) -> None:
        categories = self.session.categories
        self.panel.set_label_set(categories.label_set.names if categories.label_set is not None else None)
        self.panel.set_categories(categories.names(), self.panel.category_text)

    def _refresh_summary(self: MainWindow) -> None:
        if self.store is not None:
            self.image_list.set_summary(self.store.status_counts())
