"""Refining an annotation: SAM points, boxes (moved, resized or drawn by hand), and masks edited by hand (brush,
eraser, polygon vertices).

Points and box edits ask the backend for a mask (`SegmentRequest`) and change nothing until it answers
(`mask_arrived`): a pending annotation then takes the new mask, a stored one gets it in one undoable store step
together with the points that shaped it, so refining after reopening the folder goes on from them. While an answer
is on its way the points show as asked (`points_of`). Hand edits arrive as whole masks (`edit_mask`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from typing import TYPE_CHECKING

import numpy as np

from annotator.project.geometry import Rle, tight_box
from annotator.review.pending import BoxXyxy, MaskAnswer, PendingAnnotation, SegmentRequest
from annotator.review.points import PromptPoint, points_from_json, points_to_json

if TYPE_CHECKING:
    from annotator.review.session import ReviewSession


class RefineMixin:
    """The refinement half of `ReviewSession`."""

    def _init_refine(self) -> None:
        self.segment_seq: dict[Hashable, int] = {}
        self.points_in_flight: dict[Hashable, tuple[PromptPoint, ...]] = {}

    def points_of(self: ReviewSession, key: Hashable) -> tuple[PromptPoint, ...]:
        """The refinement points of an annotation as the annotator last set them (asked or answered)."""
        if key in self.points_in_flight:
            return self.points_in_flight[key]
        if isinstance(key, str):
            pending = self.pending.get(key)
            return pending.points if pending is not None else ()
        if self.store is None or key is None:
            return ()
        try:
            return points_from_json(self.store.annotation(int(key)).extra.get("points"))
        except KeyError:
            return ()

    def mask_of(self: ReviewSession, key: Hashable) -> np.ndarray | None:
        """An annotation's mask at the image's size (None when it has none)."""
        if isinstance(key, str):
            pending = self.pending.get(key)
            return pending.mask if pending is not None else None
        if self.store is None or key is None:
            return None
        try:
            rle = self.store.annotation(int(key)).rle
        except KeyError:
            return None
        return rle.to_mask() if rle is not None else None

    def request_mask(self: ReviewSession, key: Hashable, purpose: str, box: BoxXyxy, **options: object) -> None:
        """Ask the backend for a mask of annotation `key`; the answer replaces any earlier request's."""
        image_id = self.pending[key].image_id if isinstance(key, str) else self.store.annotation(int(key)).image_id
        request = SegmentRequest(image_id, key, purpose, box, **options)  # type: ignore[arg-type]
        self.segment_seq[key] = self.backend.segment(request)

    def _check_sam(self: ReviewSession) -> bool:
        if not self.models_ready:
            self.events.status.emit("Wait for the model to load.")
            return False
        if not self.sam_loaded:
            self.events.error.emit(
                "Refining masks needs SAM, and no SAM checkpoint is loaded: choose one in Settings.", "sam"
            )
            return False
        return True

    def add_point(self: ReviewSession, key: Hashable, x: float, y: float, positive: bool) -> None:
        if self._check_sam():
            self._prompt_points(key, self.points_of(key) + (PromptPoint(x, y, positive),))

    def remove_point(self: ReviewSession, key: Hashable, index: int) -> None:
        points = list(self.points_of(key))
        if 0 <= index < len(points):
            del points[index]
            self._prompt_points(key, tuple(points))

    def remove_last_point(self: ReviewSession) -> None:
        key = self.active
        if key is None or not self.points_of(key):
            self.events.status.emit("No refinement point to remove.")
            return
        self.remove_point(key, len(self.points_of(key)) - 1)

    def rerun_box(self: ReviewSession) -> None:
        """Segment the active annotation again from its box (its refinement points are dropped)."""
        if self.active is None:
            self.events.status.emit("Select an annotation first (click it).")
            return
        if self._check_sam():
            self._prompt_points(self.active, ())

    def _prompt_points(self: ReviewSession, key: Hashable, points: tuple[PromptPoint, ...]) -> None:
        """Show the new points at once and ask for the mask they describe."""
        if self.store is None:
            return
        if isinstance(key, str):
            pending = self.pending.get(key)
            if pending is None:
                return
            self.pending[key] = dataclasses.replace(pending, points=points)
            box, droppable = pending.prompt_box_xyxy, True
        else:
            box, droppable = self.store.annotation(int(key)).box_xyxy, False
        self.points_in_flight[key] = points
        self.request_mask(key, "points", box, points=points, droppable=droppable)
        self.events.pending_changed.emit()

    def edit_box(self: ReviewSession, key: Hashable, box: BoxXyxy) -> None:
        """A box moved or resized: the mask follows unless points shaped it."""
        store = self.store
        if store is None:
            return
        if isinstance(key, str):
            pending = self.pending.get(key)
            if pending is None:
                return
            self.pending[key] = dataclasses.replace(pending, box_xyxy=box, prompt_box_xyxy=box)
            if not pending.points and (pending.mask is not None or self.sam_loaded):
                self.request_mask(key, "box", box, previous_box_xyxy=pending.box_xyxy, previous_mask=pending.mask)
            self.events.pending_changed.emit()
            return
        annotation = store.annotation(int(key))
        if self.points_of(key) or (annotation.rle is None and not self.sam_loaded):
            self.store_step("Edit box", annotation.image_id, lambda: store.update_box(annotation.id, box))
            return
        previous = annotation.rle.to_mask() if annotation.rle is not None and not self.sam_loaded else None
        self.request_mask(
            key, "box", box, previous_box_xyxy=annotation.box_xyxy, previous_mask=previous, droppable=False
        )
        self.events.pending_changed.emit()

    def add_drawn_box(self: ReviewSession, box: BoxXyxy, category: str = "") -> str | None:
        """A box drawn by hand becomes a pending annotation (SAM masks it when loaded); its key."""
        if self.store is None or self.image_id is None:
            return None
        key = self._new_key()
        self.pending[key] = PendingAnnotation(
            key=key, image_id=self.image_id, box_xyxy=box, prompt_box_xyxy=box, mask=None, score=None,
            expression="", source="manual", heads=(), category=self.categories.resolve(category) if category
            else self.categories.for_drawn_box(),
        )  # fmt: skip
        if self.sam_loaded:
            self.request_mask(key, "drawn", box)
        self.active = key
        self.events.pending_changed.emit()
        return key

    def mask_arrived(self: ReviewSession, answer: MaskAnswer) -> bool:
        """The backend's mask for a request; False (nothing changes) when a later request replaced it."""
        if self.segment_seq.get(answer.key) != answer.seq:
            return False
        del self.segment_seq[answer.key]
        self.points_in_flight.pop(answer.key, None)
        if isinstance(answer.key, str):
            pending = self.pending.get(answer.key)
            if pending is None or answer.image_id != self.image_id:
                self.events.pending_changed.emit()
                return False
            box = answer.box_xyxy if answer.mask is not None else pending.box_xyxy
            kind = "none" if answer.mask is None else ("sam" if self.sam_loaded else pending.mask_kind)
            self.pending[answer.key] = dataclasses.replace(
                pending, mask=answer.mask, outline=answer.outline, box_xyxy=box, mask_kind=kind
            )
            self.events.pending_changed.emit()
            return True
        return self._commit_mask(answer)

    def _commit_mask(self: ReviewSession, answer: MaskAnswer) -> bool:
        store = self.store
        if store is None:
            return False
        annotation_id = int(answer.key)
        try:
            annotation = store.annotation(annotation_id)
        except KeyError:
            self.events.pending_changed.emit()
            return False
        if answer.mask is None:
            if answer.purpose == "box":
                box = answer.box_xyxy
                return self.store_step("Edit box", annotation.image_id, lambda: store.update_box(annotation_id, box))
            self.events.status.emit("SAM found no mask there; the annotation is unchanged.")
            self.events.pending_changed.emit()
            return False
        rle = Rle.from_mask(answer.mask)
        if answer.outline is not None:
            self.events.outline_known.emit(rle, answer.outline)
        if answer.purpose == "points":
            label, points = "Refine mask with points", points_to_json(answer.points)
        else:
            label, points = "Edit box", None
        source = "sam" if self.sam_loaded else None  # without SAM, a box edit carries the old mask along
        return self.store_step(
            label, annotation.image_id, lambda: store.update_mask(annotation_id, rle, points=points, mask_source=source)
        )

    def edit_mask(
        self: ReviewSession, key: Hashable, mask: np.ndarray, label: str, columns: tuple[int, int] | None = None
    ) -> bool:
        """A mask edited by hand (brush, eraser, polygon vertices) replaces the annotation's mask: a pending one
        in the session, a stored one in one undoable store step. `columns` (x0, x1), when given, bound the
        columns the edit changed, so a stored mask is re-encoded there only. An empty mask is refused."""
        if isinstance(key, str):
            pending = self.pending.get(key)
            if pending is None:
                return False
            box = tight_box(mask)
            if box is None:
                return self._refuse_empty(label)
            self.pending[key] = dataclasses.replace(pending, mask=mask, box_xyxy=box, mask_kind="edited", outline=None)
            self.events.cleared.emit("edit")
            self.events.pending_changed.emit()
            return True
        store = self.store
        if store is None:
            return False
        annotation = store.annotation(int(key))
        old = annotation.rle
        if columns is not None and old is not None and old.shape == mask.shape:
            x0, x1 = columns
            rle: Rle | None = old.with_columns(x0, x1, mask[:, x0:x1])
        else:
            rle = Rle.from_mask(mask)
        if rle is None or rle.area_px == 0:
            return self._refuse_empty(label)
        return self.store_step(
            label, annotation.image_id, lambda: store.update_mask(annotation.id, rle, mask_source="edited")
        )

    def _refuse_empty(self: ReviewSession, label: str) -> bool:
        self.events.error.emit(f"{label} would leave an empty mask: delete the annotation instead (Delete).", "edit")
        return False

