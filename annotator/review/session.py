"""The annotation review session: the current image, its pending proposals, the annotator's decisions and edits,
and undo/redo over the store's history, with no Qt.

The loop: `run_expression` asks the backend for proposals on the current image; they arrive as pending
annotations that live only in the session until accepted (then one undoable store change) or rejected (nothing
reaches the store). Pending annotations made by a pre-label run live in the store and are accepted or rejected
there. Every store change goes through `History`, so undo and redo follow the store's history. Views listen to
`events` (see `SessionEvents`) and forward the annotator's input to the methods here; refinement (SAM points,
boxes moved or drawn by hand, brush and polygon edits) is in `RefineMixin`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

from annotator.errors import AnnotatorError
from annotator.project.store import Annotation, ProjectStore
from annotator.review.categories import CategoryChooser
from annotator.review.events import SessionEvents
from annotator.review.history import History, HistoryEntry, HistoryRefused
from annotator.review.pending import NewProposal, PendingAnnotation, ReviewBackend, mask_rle
from annotator.review.points import points_to_json
from annotator.review.refine import RefineMixin


class ReviewSession(RefineMixin):
    """One annotator's review of one project store (see the module docstring)."""

    def __init__(self, backend: ReviewBackend, last_category: str = "") -> None:
        self.backend = backend
        self.events = SessionEvents()
        self.categories = CategoryChooser(last_category)
        self.store: ProjectStore | None = None
        self.history: History | None = None
        self.image_id: int | None = None
        self.pending: dict[str, PendingAnnotation] = {}
        self.active: Hashable | None = None
        self.models_ready = False
        self.sam_loaded = False
        self.proposal_seq: int | None = None
        self.proposal_expression = ""
        self.last_shown: object | None = None
        self._counter = 0
        self._init_refine()

    # Project and image ------------------------------------------------------------------------------------------
    def open(self, store: ProjectStore, folder: Path | None = None) -> None:
        """Review `store` of image folder `folder` (the previous store, if any, is forgotten but not closed: its
        owner closes it)."""
        self.close()
        self.store = store
        self.history = History(store)
        self.categories.use_store(store, folder)
        if self.categories.problem:
            self.events.error.emit(self.categories.problem, "labels")
        self.events.history_changed.emit()

    def close(self) -> None:
        self._discard_pending()
        self.store = None
        self.history = None
        self.image_id = None
        self.active = None
        self.categories.use_store(None)
        self.events.history_changed.emit()

    def set_image(self, image_id: int) -> bool:
        """Make `image_id` current; False when it already is. Pending proposals of the image left are dropped."""
        if self.store is None or image_id == self.image_id:
            return False
        if self.pending:
            self.events.status.emit(f"{len(self.pending)} pending proposal(s) left unaccepted.")
        self._discard_pending()
        self.last_shown = None
        self.proposal_seq = None
        self.active = None
        self.backend.move_on()
        self.image_id = image_id
        return True

    def stored_annotations(self) -> list[Annotation]:
        """The current image's annotations in the store, rejected ones left out."""
        if self.store is None or self.image_id is None:
            return []
        return [a for a in self.store.annotations(self.image_id) if a.status != "rejected"]

    def set_active(self, key: Hashable | None) -> None:
        self.active = key
        self.events.pending_changed.emit()

    def exists(self, key: Hashable) -> bool:
        """Whether `key` names a pending annotation of the session or an annotation in the store."""
        if isinstance(key, str):
            return key in self.pending
        if self.store is None or not isinstance(key, int):
            return False
        try:
            self.store.annotation(key)
        except KeyError:
            return False
        return True

    def _changed(self, image_id: int) -> None:
        """Tell the views the store changed on `image_id`; a selection the change removed is dropped first."""
        if self.active is not None and not self.exists(self.active):
            self.active = None
        self.events.changed.emit(image_id)

    @property
    def busy(self) -> str:
        """What the session waits for: "Proposing…", "Segmenting…" or ""."""
        if self.proposal_seq is not None:
            return "Proposing…"
        return "Segmenting…" if self.segment_seq else ""

    def _discard_pending(self) -> None:
        for key in self.pending:
            self.segment_seq.pop(key, None)
            self.points_in_flight.pop(key, None)
        self.pending.clear()

    def _new_key(self) -> str:
        self._counter += 1
        return f"p{self._counter}"

    # Proposals --------------------------------------------------------------------------------------------------
    def run_expression(self, text: str, all_instances: bool = False, category: str = "") -> str:
        """Enter in the expression box. Returns what it did: "proposing" (asked the backend), "accepted" (the
        proposal this expression made, or with no text the annotation under review, in `category` when given),
        "waiting" (the same expression is already asked) or "nothing"."""
        text = text.strip()
        if not text:
            return "accepted" if self.target_key() is not None and self.accept(category) else "nothing"
        if self.store is None or self.image_id is None:
            self.events.status.emit("Open a folder first (Ctrl+O).")
            return "nothing"
        if self.pending and text == self.proposal_expression and self.proposal_seq is None:
            return "accepted" if self.accept(category) else "nothing"
        if self.proposal_seq is not None and text == self.proposal_expression:
            return "waiting"
        self._discard_pending()
        self.proposal_expression = text
        self.proposal_seq = self.backend.propose(self.image_id, text, all_instances)
        self.events.pending_changed.emit()
        return "proposing"

    def proposals_arrived(self, seq: int, image_id: int, expression: str, proposals: Sequence[NewProposal]) -> bool:
        """The backend's answer to `run_expression`; False (and nothing changes) when it is stale."""
        if seq != self.proposal_seq or image_id != self.image_id:
            return False
        self.proposal_seq = None
        category = self.categories.guess(expression)
        first: str | None = None
        for proposal in proposals:
            key = self._new_key()
            first = first or key
            self.pending[key] = PendingAnnotation(
                key=key,
                image_id=image_id,
                box_xyxy=tuple(proposal.box_xyxy),
                prompt_box_xyxy=tuple(proposal.attention_box_xyxy),
                mask=proposal.mask,
                score=float(proposal.score),
                expression=expression,
                source="proposal",
                heads=tuple(proposal.heads),
                category=category,
                mask_kind=proposal.mask_kind,
                outline=proposal.outline,
                shown=proposal.shown,
            )
        if proposals:
            self.last_shown = proposals[0].shown
            self.active = first
        self.events.pending_changed.emit()
        return True

    def work_failed(self, seq: int) -> None:
        """The backend could not answer request `seq`: stop waiting for it."""
        if self.proposal_seq == seq:
            self.proposal_seq = None
        for key, waiting in list(self.segment_seq.items()):
            if waiting == seq:
                del self.segment_seq[key]
                self.points_in_flight.pop(key, None)
        self.events.pending_changed.emit()

    # Accept, reject, delete, category ---------------------------------------------------------------------------
    def target_key(self) -> Hashable | None:
        """The annotation Enter / Esc act on: the active one if pending, else the first proposal, else the first
        pending annotation in the store (a pre-label) on this image."""
        if self.active in self.pending or self._stored_pending(self.active):
            return self.active
        if self.pending:
            return next(iter(self.pending))
        return next((a.id for a in self.stored_annotations() if a.status == "pending"), None)

    def _stored_pending(self, key: Hashable | None) -> bool:
        if not isinstance(key, int) or self.store is None:
            return False
        try:
            return self.store.annotation(key).status == "pending"
        except KeyError:
            return False

    def accept(self, category: str = "") -> bool:
        """Accept the target annotation, in `category` when given (else its own); False if nothing was accepted."""
        key = self.target_key()
        if key is None:
            self.events.status.emit("Nothing to accept: E types an expression, D goes to the next image.")
            return False
        if isinstance(key, str):
            done = self._accept_pending(self.pending[key], category)
        else:
            done = self._accept_stored(key, category)
        if done:
            self.active = self.target_key()
            self.events.pending_changed.emit()
        return done

    def _accept_pending(self, pending: PendingAnnotation, category: str) -> bool:
        store = self.store
        assert store is not None
        name = self.categories.resolve(category or pending.category)
        rle = mask_rle(pending.mask)
        extra: dict = {}
        if pending.source == "proposal":
            extra["attention_box_xyxy"] = [float(v) for v in pending.prompt_box_xyxy]
        if pending.points:
            extra["points"] = points_to_json(pending.points)
        if rle is not None:
            extra["mask_source"] = pending.mask_kind

        def act() -> int:
            steps = self.categories.ensure_steps(name)
            store.add_annotation(
                pending.image_id, store.category_by_name(name).id, pending.box_xyxy, rle=rle,
                expression=pending.expression, source=pending.source, score=pending.score, heads=pending.heads,
                status="accepted", extra=extra,
            )  # fmt: skip
            return steps + 1

        if not self.store_action(f"Accept “{pending.expression or name}”", pending.image_id, act):
            return False
        if rle is not None and pending.outline is not None:
            self.events.outline_known.emit(rle, pending.outline)
        del self.pending[pending.key]
        self.segment_seq.pop(pending.key, None)
        self._category_used(name)
        self.events.status.emit(f"Accepted {name}" + (f" for “{pending.expression}”." if pending.expression else "."))
        return True

    def _accept_stored(self, annotation_id: int, category: str) -> bool:
        store = self.store
        assert store is not None
        annotation = store.annotation(annotation_id)
        name = self.categories.resolve(category) if category else ""

        def act() -> int:
            steps = self._change_category_steps(annotation, name)
            store.accept(annotation_id)
            return steps + 1

        if self.store_action("Accept annotation", annotation.image_id, act):
            self.events.status.emit("Accepted.")
            return True
        return False

    def reject(self) -> bool | None:
        """Reject the target annotation. Returns True when it was a proposal with an expression (to be rephrased),
        False for another rejection, None when there was nothing to reject (the selection is cleared)."""
        key = self.target_key()
        if key is None:
            if self.active is not None:
                self.set_active(None)
            return None
        rephrase = False
        if isinstance(key, str):
            pending = self.pending.pop(key)
            self.segment_seq.pop(key, None)
            self.points_in_flight.pop(key, None)
            rephrase = bool(pending.expression)
            self.events.status.emit(f"Rejected the proposal for “{pending.expression}”." if rephrase else "Rejected.")
        else:
            store = self.store
            assert store is not None
            self.store_step("Reject annotation", store.annotation(key).image_id, lambda: store.reject(key))
        self.active = self.target_key()
        self.events.pending_changed.emit()
        return rephrase

    def delete_active(self) -> None:
        key = self.active
        if key is None:
            self.events.status.emit("Select an annotation first (click it).")
            return
        if isinstance(key, str):
            self.reject()
            return
        store = self.store
        assert store is not None
        image_id = store.annotation(key).image_id
        if self.store_step("Delete annotation", image_id, lambda: store.delete_annotation(key)):
            self.active = self.target_key()
            self.events.status.emit("Deleted.")

    def set_category(self, name: str) -> None:
        """The category chosen for the active annotation."""
        name = name.strip()
        key = self.active
        if not name or key is None:
            return
        name = self.categories.resolve(name)
        if isinstance(key, str):
            pending = self.pending.get(key)
            if pending is not None:
                self.pending[key] = dataclasses.replace(pending, category=name)
                self.events.pending_changed.emit()
            return
        store = self.store
        assert store is not None
        annotation = store.annotation(key)
        if store.category(annotation.category_id).name == name:
            return
        def act() -> int:
            return self._change_category_steps(annotation, name)

        if self.store_action(f"Change category to {name}", annotation.image_id, act):
            self._category_used(name)

    def _change_category_steps(self, annotation: Annotation, name: str) -> int:
        """Set an annotation's category by name (adding the category if new); the store steps it took."""
        store = self.store
        assert store is not None
        if not name or store.category(annotation.category_id).name == name:
            return 0
        steps = self.categories.ensure_steps(name)
        store.update_category(annotation.id, store.category_by_name(name).id)
        return steps + 1

    def _category_used(self, name: str) -> None:
        self.categories.last_used = name
        self.events.category_used.emit(name)

    def toggle_done(self) -> None:
        if self.store is None or self.image_id is None:
            return
        store, image_id = self.store, self.image_id
        done = store.image(image_id).status != "done"
        label = "Mark image done" if done else "Mark image not done"
        if self.store_step(label, image_id, lambda: store.set_image_done(image_id, done)):
            self.events.status.emit("Image marked done." if done else "Image marked not done.")

    # Store changes and history ----------------------------------------------------------------------------------
    def store_action(self, text: str, image_id: int, act: Callable[[], int]) -> bool:
        """Run a store change now and record it for undo; False (and an error) if the store refused."""
        if self.store is None or self.history is None:
            return False
        try:
            steps = act()
        except (AnnotatorError, ValueError, KeyError) as err:
            self.events.error.emit(f"{text} failed: {err}", "edit")
            return False
        self.events.cleared.emit("edit")
        if steps:
            self.history.push(HistoryEntry(text, steps, image_id))
            self.events.history_changed.emit()
        self._changed(image_id)
        return True

    def store_step(self, text: str, image_id: int, change: Callable[[], object]) -> bool:
        """`store_action` for a change that is one store call (one history step)."""

        def one_step() -> int:
            change()
            return 1

        return self.store_action(text, image_id, one_step)

    def undo(self) -> None:
        self._run_history(undo=True)

    def redo(self) -> None:
        self._run_history(undo=False)

    def _run_history(self, undo: bool) -> None:
        """Undo or redo one entry; a step the store refuses leaves the history and the store where they were."""
        history = self.history
        if history is None or not (history.can_undo() if undo else history.can_redo()):
            self.events.status.emit("Nothing to undo." if undo else "Nothing to redo.")
            return
        try:
            entry = history.undo() if undo else history.redo()
        except HistoryRefused as err:
            self.events.error.emit(str(err), "history")
            return
        assert entry is not None
        self.events.cleared.emit("history")
        self.events.history_changed.emit()
        self._changed(entry.image_id)
        self.events.status.emit(f"{'Undid' if undo else 'Redid'}: {entry.text}.")
