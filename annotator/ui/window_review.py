"""The main window's review loop: it forwards the annotator's input (keys, clicks, canvas gestures) to the
`ReviewSession`, hands the session's requests to the worker threads and their answers back, and keeps the
window's own state (which image's pixels are shown, focus, the mask being edited) in step."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING

import numpy as np

from annotator.review.pending import MaskAnswer, NewProposal
from annotator.ui.canvas import BoxXyxy
from annotator.ui.worker_jobs import LoadedImage, MaskUpdate, Outlines, ProposalResult, WorkerError

if TYPE_CHECKING:
    from annotator.ui.main_window import MainWindow

_EDIT_HINTS = {
    "polygon": "Drag a vertex, double-click an edge to add one, right-click (or Delete) one to remove it",
    "brush": "Paint the mask (] bigger, [ smaller)",
    "eraser": "Erase from the mask (] bigger, [ smaller)",
}


class ReviewMixin:
    """The review half of `MainWindow` (see the module docstring)."""

    # Images -----------------------------------------------------------------------------------------------------
    def show_image(self: MainWindow, image_id: int) -> None:
        """Make `image_id` current: its pixels decode in the background; stale work for the old one is dropped."""
        if self.store is None or image_id == self.current_image_id:
            return
        self._end_mask_edit()
        self.session.set_image(image_id)
        self._image_ready = False
        self.canvas.set_drawing(False)
        self.heads_panel.set_heads((), (), None, None)
        self.message_bar.clear("image", "inference")
        self.image_list.select_image(image_id)
        record = self.store.image(image_id)
        self.canvas.set_annotations([])
        self.canvas.set_overlay(None)
        self.canvas.set_placeholder("")
        self.image_loader.load(image_id, self.store.image_root / record.path)
        self._prefetch_around()
        self._refresh_annotations()
        self._update_title()
        position = self.image_list.position_of(image_id)
        where = f" ({position + 1} of {self.image_list.visible_count()})" if position is not None else ""
        self.show_status(f"{record.path}{where}")

    def _prefetch_around(self: MainWindow) -> None:
        """Ask the model to prepare the current image and the next one (LVLM prefix, SAM embedding)."""
        if self.store is None or self.current_image_id is None or self.models_info is None:
            return
        wanted = [self.current_image_id]
        following = self.image_list.neighbour(self.current_image_id, +1)
        if following is not None:
            wanted.append(following)
        self.inference.prefetch([(image_id, self.store.image_path(image_id)) for image_id in wanted])

    def go_to_neighbour(self: MainWindow, step: int) -> None:
        """Next (+1) or previous (-1) image in the list as filtered and sorted."""
        target = self.image_list.neighbour(self.current_image_id, step)
        if target is None:
            self.show_status("This is the last image." if step > 0 else "This is the first image.")
            return
        self.show_image(target)

    def _image_loaded(self: MainWindow, loaded: LoadedImage) -> None:
        stale = loaded.seq != self.image_loader.last_seq or loaded.project != self._project
        if stale or loaded.image_id != self.current_image_id or self.store is None:
            return
        self.store.ensure_image_info(loaded.image_id)
        self.canvas.set_image(loaded.pyramid)
        self._image_ready = True
        self._refresh_annotations()
        self.image_shown.emit(loaded.image_id)

    def _image_failed(self: MainWindow, error: WorkerError) -> None:
        if error.image_id != self.current_image_id or error.project != self._project:
            return
        self.canvas.set_image(None)
        self.canvas.set_placeholder(f"This image cannot be shown.\n{error.message}")
        self.show_error(error.message, "image")

    def _outlined(self: MainWindow, outlines: Outlines) -> None:
        self._outlines.update(outlines.paths)
        if outlines.image_id == self.current_image_id and outlines.project == self._project:
            self._refresh_annotations()

    # Proposals --------------------------------------------------------------------------------------------------
    def run_expression(self: MainWindow, text: str) -> None:
        """Enter in the expression box: propose for `text` on the current image, or accept the proposal it made
        (or, with the box empty, the annotation under review)."""
        category = self.panel.category_text
        if category not in self.session.categories.names() and self.session.categories.label_set is not None:
            category = ""  # Enter here accepts in the proposal's own category, which the label set holds
        done = self.session.run_expression(text, self.panel.all_instances.isChecked(), category)
        if done == "accepted":
            self._after_decision()
        elif done == "proposing":
            text = text.strip()
            self.panel.expression.remember(text)
            self.settings.add_expression(text)
            self.find_heads.note_typed(self.current_image_id, text)
            waiting = " (the model is still loading)" if self._loading_models is not None else ""
            self.show_status(f"Looking for “{text}”…{waiting}")
            self._refresh_annotations()

    def _proposed(self: MainWindow, result: ProposalResult) -> None:
        if result.project != self._project:
            return
        proposals = [
            NewProposal(
                box_xyxy=tuple(shown.proposal.box_xyxy),
                attention_box_xyxy=tuple(shown.proposal.attention_box_xyxy),
                mask=shown.mask,
                score=float(shown.proposal.score),
                heads=tuple(shown.proposal.heads),
                mask_kind=shown.mask_kind,
                outline=shown.outline,
                shown=shown,
            )
            for shown in result.proposals
        ]
        if not self.session.proposals_arrived(result.seq, result.image_id, result.expression, proposals):
            return
        self.message_bar.clear("inference")
        if result.proposals and self.panel.expression.text().strip() == result.expression:
            self.canvas.setFocus()
        self._show_proposal_timing(result)
        self.proposals_shown.emit(len(result.proposals))

    def _show_proposal_timing(self: MainWindow, result: ProposalResult) -> None:
        if not result.proposals:
            self.show_status(f"Nothing found for “{result.expression}” ({result.elapsed_ms:.0f} ms).")
            return
        proposal = result.proposals[0].proposal
        timing = proposal.timing
        prefix = "image prefix cached" if timing.prefix_cached else f"image prefix {timing.prefix_ms:.0f} ms"
        rest = max(0.0, result.elapsed_ms - timing.total_ms)
        count = f"{len(result.proposals)} proposals, " if len(result.proposals) > 1 else ""
        note = f" · {proposal.mask_note}" if proposal.mask_note else ""
        self.show_status(
            f"“{result.expression}”: {count}{result.elapsed_ms:.0f} ms in all — model {timing.total_ms:.0f} ms "
            f"({prefix}, expression {timing.expression_ms:.0f} ms), mask and drawing {rest:.0f} ms · "
            f"score {proposal.score:.2f}{note}"
        )

    def _worker_failed(self: MainWindow, error: WorkerError) -> None:
        self.session.work_failed(error.seq)
        if error.project == self._project and error.image_id in (None, self.current_image_id):
            self.show_error(error.message, "inference")

    # Decisions --------------------------------------------------------------------------------------------------
    def accept(self: MainWindow) -> None:
        """Accept the annotation under review in the picker's category (a name outside the label set asks)."""
        category = self.panel.confirm_category()
        if category is not None and self.session.accept(category):
            self._after_decision()

    def reject(self: MainWindow) -> None:
        """Esc: end the mask edit if one is on, else reject the annotation under review."""
        if self.canvas.edit_mode is not None:
            self._end_mask_edit()
            return
        rephrase = self.session.reject()
        if rephrase is not None:
            self._after_decision(rephrase=rephrase)

    def _after_decision(self: MainWindow, rephrase: bool = False) -> None:
        """After accept or reject: the next pending annotation is active. Else, after rejecting a proposal the
        expression is selected in its box to be rephrased; otherwise the box is cleared and the canvas keeps the
        keys, so D goes on to the next image and E starts the next expression."""
        self._end_mask_edit_if_gone()
        self._refresh_annotations()
        if self.session.target_key() is not None:
            self.canvas.setFocus()
            return
        box = self.panel.expression
        if rephrase:
            box.setFocus()
            box.selectAll()
        else:
            box.setText("")
            self.canvas.setFocus()

    def delete_active(self: MainWindow) -> None:
        """Delete: the selected vertex while editing an outline, else the selected annotation."""
        if self.canvas.edit_mode == "polygon" and self.canvas.delete_selected_vertex():
            return
        self.session.delete_active()
        self._end_mask_edit_if_gone()

    def set_category(self: MainWindow, name: str) -> None:
        """The category chosen in the panel applies to the active annotation."""
        self.session.set_category(name)
        if isinstance(self.session.active, str):
            self.canvas.setFocus()

    def focus_category(self: MainWindow) -> None:
        if self.session.active is None:
            self.show_status("Select an annotation first (click it), then change its category.")
            return
        self.panel.category.setFocus()
        self.panel.category.lineEdit().selectAll()

    def toggle_done(self: MainWindow) -> None:
        self.session.toggle_done()

    def undo(self: MainWindow) -> None:
        self.session.undo()
        self._resync_mask_edit()

    def redo(self: MainWindow) -> None:
        self.session.redo()
        self._resync_mask_edit()

    def _after_store_change(self: MainWindow, image_id: int) -> None:
        if self.store is None:
            return
        self._refresh_categories()
        self.image_list.model.update_record(self.store.image(image_id))
        self._refresh_summary()
        if image_id != self.current_image_id:
            self.show_image(image_id)
        else:
            self._refresh_annotations()
        self.annotations_changed.emit(image_id)

    def _history_changed(self: MainWindow) -> None:
        history = self.session.history
        self.actions_by_name["undo"].setEnabled(history is not None and history.can_undo())
        self.actions_by_name["redo"].setEnabled(history is not None and history.can_redo())

    def _category_used(self: MainWindow, name: str) -> None:
        self.settings.last_category = name
        self._refresh_categories()

    # Points, boxes, SAM -----------------------------------------------------------------------------------------
    def add_point(self: MainWindow, key: Hashable, x: float, y: float, positive: bool) -> None:
        self.session.add_point(key, x, y, positive)

    def remove_point(self: MainWindow, key: Hashable, index: int) -> None:
        self.session.remove_point(key, index)

    def edit_box(self: MainWindow, key: Hashable, box: BoxXyxy) -> None:
        """A box moved or resized on the canvas: the mask follows unless points shaped it."""
        self.session.edit_box(key, box)

    def start_box_drawing(self: MainWindow) -> None:
        if self.canvas.image_size is None:
            self.show_status("Open an image first.")
            return
        self._end_mask_edit()
        self.canvas.set_drawing(True)
        self.canvas.setFocus()
        self.show_status("Drag a box around the object (Esc cancels).")

    def _box_drawn(self: MainWindow, box: BoxXyxy) -> None:
        if self.session.add_drawn_box(box, self.panel.category_text) is not None:
            self.canvas.setFocus()

    def _segmented(self: MainWindow, update: MaskUpdate) -> None:
        if update.project != self._project:
            return
        answer = MaskAnswer(
            seq=update.seq, key=update.key, image_id=update.image_id, purpose=update.purpose, mask=update.mask,
            box_xyxy=update.box_xyxy, points=update.points, elapsed_ms=update.elapsed_ms, outline=update.outline,
        )  # fmt: skip
        if self.session.mask_arrived(answer):
            self.show_status(f"Mask updated in {update.elapsed_ms:.0f} ms.")
            self._resync_mask_edit()

    def _annotation_activated(self: MainWindow, key: Hashable | None) -> None:
        if self.canvas.edit_mode is not None and key != self.canvas.edit_key:
            self._end_mask_edit()
        self.session.set_active(key)

    # Editing masks by hand --------------------------------------------------------------------------------------
    def start_mask_edit(self: MainWindow, mode: str) -> None:
        """P, B, X: edit the selected annotation's outline, paint or erase its mask."""
        key = self.session.active
        size = self.canvas.image_size
        if key is None or size is None:
            self.show_status("Select an annotation first (click it).")
            return
        mask = self.session.mask_of(key)
        if mask is None and mode == "brush":
            mask = np.zeros((size[1], size[0]), dtype=bool)
        if mask is None:
            self.show_status("This annotation has no mask: paint one with the brush (B), or let SAM make one (R).")
            return
        self.canvas.set_drawing(False)
        try:
            self.canvas.begin_edit(mode, key, mask)
        except ValueError as err:  # a stored mask of another size than the image shown
            self.show_error(f"This mask cannot be edited here: {err}", "edit")
            return
        self.canvas.setFocus()
        self.show_status(f"{_EDIT_HINTS[mode]}; Esc ends.")

    def change_brush_size(self: MainWindow, step: int) -> None:
        self.canvas.change_brush_size(step)
        self.show_status(f"Brush {self.canvas.brush_radius} px.")

    def _mask_edited(
        self: MainWindow, key: Hashable, mask: np.ndarray, label: str, rect: tuple[int, int, int, int] | None
    ) -> None:
        """A finished edit gesture: the session stores it, re-encoding only the columns it changed; the outline
        is made from the array at hand."""
        if rect is None:
            self.show_status(f"{label}: no pixel changed.")
            return
        self._edited_array = (key, mask)
        if not self.session.edit_mask(key, mask, label, (rect[0], rect[2])):
            self._edited_array = None
            self._resync_mask_edit()

    def _end_mask_edit(self: MainWindow) -> None:
        if self.canvas.edit_mode is not None:
            self.canvas.end_edit()

    def _end_mask_edit_if_gone(self: MainWindow) -> None:
        """End the edit when its annotation is no longer on the canvas (accepted into the store, rejected)."""
        if self.canvas.edit_mode is not None and not self.session.exists(self.canvas.edit_key):
            self._end_mask_edit()

    def _resync_mask_edit(self: MainWindow) -> None:
        """After undo, redo or SAM: the mask being edited is the annotation's mask again."""
        if self.canvas.edit_mode is None:
            return
        mask = self.session.mask_of(self.canvas.edit_key)
        if mask is None:
            self._end_mask_edit()
        else:
            self.canvas.set_edit_mask(mask)
