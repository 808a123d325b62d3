"""How the main window draws the review session: the canvas's annotations (with mask outlines made on the image
thread and cached by mask), the panel's rows and review line, the heatmap of the proposal under review, the
category picker and the image list's counts. Everything here reads the session; nothing changes it."""

from __future__ import annotations

from typing import TYPE_CHECKING

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


class ReviewViewMixin:
    """The drawing half of `MainWindow`."""

    def _init_view(self) -> None:
        self._outlines: dict[tuple[int, int, str], QPainterPath] = {}
        self._outline_requested: set[tuple[int, int, str]] = set()
        self._pending_rles: dict[str, tuple[int, Rle]] = {}
        self._overlay_shown: ShownProposal | None = None
        self._image_ready = False

    def _forget_outlines(self) -> None:
        self._outlines.clear()
        self._outline_requested.clear()
        self._pending_rles.clear()

    def _remember_outline(self: MainWindow, rle: Rle, outline: QPainterPath) -> None:
        self._outlines[rle_key(rle)] = outline

    def _colour(self: MainWindow, item: ReviewItem) -> QColor:
        if item.pending:
            return pending_colour()
        label_set = self.session.categories.label_set
        return category_colour(item.category, label_set.names if label_set is not None else None)

    def _outline_of(self: MainWindow, item: ReviewItem, missing: list[Rle]) -> QPainterPath | None:
        """The item's mask outline when known; otherwise its mask joins `missing` (to be outlined once)."""
        if item.outline is not None:
            return item.outline
        rle = item.rle
        if rle is None and item.mask is not None and isinstance(item.key, str):
            known = self._pending_rles.get(item.key)
            if known is None or known[0] != id(item.mask):
                known = (id(item.mask), Rle.from_mask(item.mask))
                self._pending_rles[item.key] = known
            rle = known[1]
        if rle is None:
            return None
        outline = self._outlines.get(rle_key(rle))
        if outline is None and rle_key(rle) not in self._outline_requested:
            missing.append(rle)
        return outline

    def _canvas_annotations(self: MainWindow, items: list[ReviewItem]) -> list[CanvasAnnotation]:
        if not self._image_ready:
            return []
        missing: list[Rle] = []
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
        if missing and self.current_image_id is not None:
            self._outline_requested.update(rle_key(rle) for rle in missing)
            self.image_loader.outline(self.current_image_id, tuple(missing))
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
