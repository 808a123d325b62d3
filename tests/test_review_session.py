"""The review session without Qt: proposals, decisions, edits, points and undo/redo over the store, with a fake
backend standing in for the model and SAM workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotator.project.geometry import Rle
from annotator.project.store import ProjectStore
from annotator.review.describe import review_items, review_state
from annotator.review.pending import MaskAnswer, NewProposal, SegmentRequest
from annotator.review.points import PromptPoint
from annotator.review.session import ReviewSession

WIDTH, HEIGHT = 40, 30


class FakeBackend:
    """Records what the session asks; the test answers by calling the session back."""

    def __init__(self) -> None:
        self.seq = 0
        self.proposals: list[tuple[int, int, str, bool]] = []
        self.segments: list[tuple[int, SegmentRequest]] = []
        self.moved_on = 0

    def propose(self, image_id: int, expression: str, all_instances: bool) -> int:
        self.seq += 1
        self.proposals.append((self.seq, image_id, expression, all_instances))
        return self.seq

    def segment(self, request: SegmentRequest) -> int:
        self.seq += 1
        self.segments.append((self.seq, request))
        return self.seq

    def move_on(self) -> None:
        self.moved_on += 1


class Recorder:
    def __init__(self, session: ReviewSession) -> None:
        self.changed: list[int] = []
        self.errors: list[tuple[str, str]] = []
        self.status: list[str] = []
        session.events.changed.connect(self.changed.append)
        session.events.error.connect(lambda text, topic: self.errors.append((text, topic)))
        session.events.status.connect(self.status.append)


def rect_mask(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def proposal(x0: int = 5, y0: int = 6, x1: int = 15, y1: int = 16, score: float = 0.8) -> NewProposal:
    return NewProposal(
        box_xyxy=(x0, y0, x1, y1), attention_box_xyxy=(x0 - 1, y0 - 1, x1 + 1, y1 + 1),
        mask=rect_mask(x0, y0, x1, y1), score=score, heads=((3, 2),), mask_kind="sam",
    )  # fmt: skip


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in ("a.png", "b.png"):
        Image.new("RGB", (WIDTH, HEIGHT), (90, 90, 90)).save(tmp_path / name)
    return tmp_path


def open_store(folder: Path) -> ProjectStore:
    store = ProjectStore.for_folder(folder)
    store.sync_folder()
    for record in store.images():
        store.ensure_image_info(record.id)
    return store


@pytest.fixture
def store(folder: Path):
    store = open_store(folder)
    yield store
    store.close()


@pytest.fixture
def session(store: ProjectStore) -> ReviewSession:
    session = ReviewSession(FakeBackend())
    session.open(store)
    session.set_image(store.images()[0].id)
    session.models_ready = session.sam_loaded = True
    return session


def propose(session: ReviewSession, expression: str, *proposals: NewProposal) -> None:
    assert session.run_expression(expression) == "proposing"
    seq, image_id, _, _ = session.backend.proposals[-1]
    assert session.proposals_arrived(seq, image_id, expression, proposals or (proposal(),))


def test_a_proposal_is_pending_until_accepted_then_one_undoable_store_change(session, store):
    events = Recorder(session)
    propose(session, "the red car on the left")
    assert store.annotations(session.image_id) == []
    (key,) = session.pending
    assert session.pending[key].category == "car"
    assert session.accept()
    (annotation,) = store.annotations(session.image_id)
    assert (annotation.status, annotation.source, annotation.expression) == ("accepted", "proposal", "the red car on the left")
    assert store.category(annotation.category_id).name == "car"
    assert annotation.rle.to_mask().sum() == 100 and annotation.extra["attention_box_xyxy"] == [4.0, 5.0, 16.0, 17.0]
    assert session.pending == {} and events.changed == [session.image_id]
    session.undo()
    assert store.annotations(session.image_id) == [] and store.category_by_name("car") is None
    session.redo()
    assert [a.expression for a in store.annotations(session.image_id)] == ["the red car on the left"]


def test_rejecting_a_proposal_leaves_the_store_untouched_and_asks_for_a_rephrase(session, store):
    propose(session, "the dog")
    assert session.reject() is True
    assert session.pending == {} and store.annotations(session.image_id) == []
    assert session.reject() is None


def test_a_stale_proposal_answer_is_dropped(session, store):
    session.run_expression("the dog")
    seq, image_id, _, _ = session.backend.proposals[-1]
    session.run_expression("the cat")
    assert not session.proposals_arrived(seq, image_id, "the dog", (proposal(),))
    other = store.images()[1].id
    latest = session.backend.proposals[-1][0]
    assert not session.proposals_arrived(latest, other, "the cat", (proposal(),))
    assert session.pending == {} and session.proposal_seq == latest


def test_enter_again_on_the_same_expression_accepts_and_an_empty_box_accepts_the_target(session, store):
    propose(session, "the dog")
    assert session.run_expression("the dog", category="animal") == "accepted"
    (annotation,) = store.annotations(session.image_id)
    assert store.category(annotation.category_id).name == "animal"
    assert session.run_expression("") == "nothing"


def test_undo_and_redo_follow_the_history_across_images(session, store):
    events = Recorder(session)
    first, second = (record.id for record in store.images())
    propose(session, "the dog")
    session.accept()
    session.set_image(second)
    propose(session, "the cat", proposal(20, 10, 30, 20))
    session.accept()
    session.toggle_done()
    assert session.history.count() == 3 and store.image(second).status == "done"
    session.undo()
    session.undo()
    session.undo()
    assert events.changed[-3:] == [second, second, first]
    assert store.annotations(first) == [] and store.annotations(second) == []
    assert store.image(second).status != "done"
    session.redo()
    assert [a.expression for a in store.annotations(first)] == ["the dog"] and session.history.index() == 1
    assert events.status[-1] == "Redid: Accept “the dog”."


def test_a_step_the_store_refuses_leaves_both_histories_where_they_were(session, store, folder):
    propose(session, "the dog")
    session.accept()
    (annotation,) = store.annotations(session.image_id)
    session.set_active(annotation.id)
    session.delete_active()
    other = open_store(folder)  # another window on the same folder adds a category the deletion's undo needs gone
    other.add_annotation(annotation.image_id, annotation.category_id, (1, 1, 4, 4), status="accepted")
    session.undo()  # restores the deleted annotation: fine
    events = Recorder(session)
    session.undo()  # would remove the category "dog", which the other window now uses
    other.close()
    assert events.errors and events.errors[0][1] == "history" and "Nothing was changed" in events.errors[0][0]
    assert session.history.index() == 1
    assert store.category_by_name("dog") is not None


def test_points_on_a_stored_annotation_persist_and_refining_after_reopening_goes_on_from_them(session, store, folder):
    propose(session, "the dog")
    session.accept()
    (annotation,) = store.annotations(session.image_id)
    session.add_point(annotation.id, 8.0, 9.0, True)
    seq, request = session.backend.segments[-1]
    assert request.purpose == "points" and request.points == (PromptPoint(8.0, 9.0, True),)
    assert request.droppable is False and request.box_xyxy == annotation.box_xyxy
    assert session.points_of(annotation.id) == request.points  # shown while SAM works
    refined = rect_mask(5, 6, 12, 16)
    answer = MaskAnswer(seq, annotation.id, session.image_id, "points", refined, (5, 6, 12, 16), request.points)
    assert session.mask_arrived(answer)
    stored = store.annotation(annotation.id)
    assert stored.extra["points"] == [[8.0, 9.0, 1]] and stored.rle.to_mask().sum() == 70
    assert stored.extra["mask_source"] == "sam" and stored.extra["attention_box_xyxy"] == [4.0, 5.0, 16.0, 17.0]
    session.close()
    reopened = open_store(folder)
    again = ReviewSession(FakeBackend())
    again.open(reopened)
    again.set_image(annotation.image_id)
    again.models_ready = again.sam_loaded = True
    assert again.points_of(annotation.id) == (PromptPoint(8.0, 9.0, True),)
    again.add_point(annotation.id, 20.0, 20.0, False)
    assert again.backend.segments[-1][1].points == (PromptPoint(8.0, 9.0, True), PromptPoint(20.0, 20.0, False))
    reopened.close()


def test_undoing_a_refinement_restores_the_mask_and_the_points_together(session, store):
    propose(session, "the dog")
    session.accept()
    (annotation,) = store.annotations(session.image_id)
    session.add_point(annotation.id, 8.0, 9.0, True)
    seq, request = session.backend.segments[-1]
    session.mask_arrived(MaskAnswer(seq, annotation.id, session.image_id, "points", rect_mask(5, 6, 12, 16),
                                    (5, 6, 12, 16), request.points))  # fmt: skip
    session.undo()
    assert session.points_of(annotation.id) == () and store.annotation(annotation.id).rle.to_mask().sum() == 100
    session.redo()
    assert session.points_of(annotation.id) == request.points


def test_a_mask_answer_replaced_by_a_later_request_is_dropped(session, store):
    propose(session, "the dog")
    key = next(iter(session.pending))
    session.add_point(key, 8.0, 9.0, True)
    first_seq, _ = session.backend.segments[-1]
    session.add_point(key, 9.0, 9.0, True)
    stale = MaskAnswer(first_seq, key, session.image_id, "points", rect_mask(0, 0, 3, 3), (0, 0, 3, 3))
    assert not session.mask_arrived(stale)
    assert session.pending[key].mask.sum() == 100 and len(session.points_of(key)) == 2


def test_a_mask_edited_by_hand_is_one_undoable_step_and_an_empty_one_is_refused(session, store):
    propose(session, "the dog")
    session.accept()
    (annotation,) = store.annotations(session.image_id)
    events = Recorder(session)
    brushed = rect_mask(5, 6, 15, 16)
    brushed[20:25, 30:35] = True
    assert session.edit_mask(annotation.id, brushed, "Brush")
    stored = store.annotation(annotation.id)
    assert stored.rle.to_mask().sum() == 125 and stored.box_xyxy == (5.0, 6.0, 35.0, 25.0)
    assert stored.extra["mask_source"] == "edited" and stored.source == "edited"
    assert session.history.undo_text() == "Brush"
    assert not session.edit_mask(annotation.id, np.zeros((HEIGHT, WIDTH), dtype=bool), "Erase")
    assert events.errors and "empty mask" in events.errors[-1][0]
    session.undo()
    assert store.annotation(annotation.id).rle.to_mask().sum() == 100


def test_a_pending_mask_edited_by_hand_is_what_gets_accepted(session, store):
    propose(session, "the dog")
    key = next(iter(session.pending))
    edited = rect_mask(5, 6, 10, 16)
    assert session.edit_mask(key, edited, "Erase")
    pending = session.pending[key]
    assert pending.box_xyxy == (5.0, 6.0, 10.0, 16.0) and pending.mask_kind == "edited"
    assert review_state(session).text.endswith("mask edited by hand")
    session.accept()
    (annotation,) = store.annotations(session.image_id)
    assert np.array_equal(annotation.rle.to_mask(), edited) and annotation.extra["mask_source"] == "edited"


def test_a_box_edit_without_sam_on_a_box_only_annotation_is_stored_at_once(session, store):
    session.sam_loaded = False
    key = session.add_drawn_box((2.0, 3.0, 12.0, 13.0))
    assert session.backend.segments == [] and session.pending[key].source == "manual"
    session.accept("lid")
    (annotation,) = store.annotations(session.image_id)
    session.edit_box(annotation.id, (4.0, 4.0, 14.0, 14.0))
    assert store.annotation(annotation.id).box_xyxy == (4.0, 4.0, 14.0, 14.0)
    session.undo()
    assert store.annotation(annotation.id).box_xyxy == (2.0, 3.0, 12.0, 13.0)


def test_refining_without_sam_says_so_once(session):
    session.sam_loaded = False
    events = Recorder(session)
    propose(session, "the dog")
    session.add_point(next(iter(session.pending)), 1.0, 1.0, True)
    assert session.backend.segments == [] and events.errors[0][1] == "sam"


def test_a_pre_label_in_the_store_is_the_target_and_accepting_it_changes_its_status(session, store):
    category = store.add_category("cup")
    pre = store.add_annotation(session.image_id, category.id, (1, 1, 9, 9), status="pending", score=0.4,
                               source="proposal", expression="the cup")  # fmt: skip
    assert session.target_key() == pre.id
    items = review_items(session)
    assert [(i.key, i.label, i.pending) for i in items] == [(pre.id, "cup 0.40 ?", True)]
    assert session.accept("mug")
    stored = store.annotation(pre.id)
    assert stored.status == "accepted" and store.category(stored.category_id).name == "mug"
    session.undo()
    assert store.annotation(pre.id).status == "pending" and store.category_by_name("mug") is None


def test_changing_a_stored_category_and_deleting_are_undoable(session, store):
    propose(session, "the dog")
    session.accept()
    (annotation,) = store.annotations(session.image_id)
    session.set_active(annotation.id)
    session.set_category("cat")
    assert store.category(store.annotation(annotation.id).category_id).name == "cat"
    session.delete_active()
    assert store.annotations(session.image_id) == []
    session.undo()
    session.undo()
    assert store.category(store.annotation(annotation.id).category_id).name == "dog"


def test_moving_to_another_image_drops_its_proposals_and_queued_work(session, store):
    events = Recorder(session)
    propose(session, "the dog", proposal(), proposal(20, 10, 30, 20))
    assert len(session.pending) == 2
    moved = session.backend.moved_on
    session.set_image(store.images()[1].id)
    assert session.pending == {} and session.backend.moved_on == moved + 1
    assert events.status == ["2 pending proposal(s) left unaccepted."]


def test_a_failed_request_stops_the_wait(session):
    session.run_expression("the dog")
    assert session.busy == "Proposing…"
    session.work_failed(session.proposal_seq)
    assert session.busy == "" and session.proposal_seq is None


def test_with_a_label_set_the_guess_and_the_names_map_onto_it(session, store):
    session.categories.set_label_set(["person", "car"])
    propose(session, "the man in red")
    key = next(iter(session.pending))
    assert session.pending[key].category == "person"
    session.set_category("Cars")
    assert session.pending[key].category == "car"
    session.accept()
    (annotation,) = store.annotations(session.image_id)
    assert store.category(annotation.category_id).name == "car" and annotation.expression == "the man in red"
    assert session.categories.names() == ["person", "car"]


def test_a_hand_edit_bounded_to_its_columns_stores_exactly_the_new_mask(session, store):
    propose(session, "the dog")
    session.accept()
    (annotation,) = store.annotations(session.image_id)
    brushed = rect_mask(5, 6, 15, 16)
    brushed[2:4, 17:22] = True  # the stroke touched columns 17..21 only
    assert session.edit_mask(annotation.id, brushed, "Brush", (17, 22))
    assert store.annotation(annotation.id).rle == Rle.from_mask(brushed)
    assert store.annotation(annotation.id).box_xyxy == (5.0, 2.0, 22.0, 16.0)
