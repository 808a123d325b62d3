"""Editing masks by hand in the app (outline vertices, brush, eraser), each one undoable store change; refinement
points that outlive the session; the project's label set in the window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QMessageBox

from annotator.project.geometry import Rle
from annotator.project.store import ProjectStore
from annotator.review.points import PromptPoint
from tests.ui_fixtures import (  # noqa: F401 (fixtures are found by name)
    STEP_TIMEOUT_MS,
    app_settings,
    isolated_qsettings,
    make_window,
    open_folder,
    planted_model_path,
    propose,
    mask_kind,
    redo,
    sam_window,
    scene_folder,
    stored,
    undo,
    window,
)

X0, Y0, X1, Y1 = 60, 80, 180, 200


def seed_mask(folder: Path) -> tuple[int, np.ndarray]:
    """One accepted annotation whose mask is the box [60, 180) x [80, 200) on the first image; its id and mask."""
    with ProjectStore.for_folder(folder) as store:
        store.sync_folder()
        image = store.images()[0]
        record = store.ensure_image_info(image.id)
        mask = np.zeros((record.height, record.width), dtype=bool)
        mask[Y0:Y1, X0:X1] = True
        category = store.ensure_category("disc")
        annotation = store.add_annotation(
            image.id, category.id, (X0, Y0, X1, Y1), rle=Rle.from_mask(mask), source="manual", status="accepted"
        )
        return annotation.id, mask


def at(window, x: float, y: float) -> QPoint:
    return window.canvas.view_point(x, y).toPoint()


def drag(qtbot, window, points: list[tuple[float, float]], button=Qt.MouseButton.LeftButton) -> None:
    viewport = window.canvas.viewport()
    qtbot.mousePress(viewport, button, Qt.KeyboardModifier.NoModifier, at(window, *points[0]))
    for point in points[1:]:
        qtbot.mouseMove(viewport, at(window, *point))
    qtbot.mouseRelease(viewport, button, Qt.KeyboardModifier.NoModifier, at(window, *points[-1]))


def select(qtbot, window, annotation_id: int) -> None:
    qtbot.mouseClick(window.canvas.viewport(), Qt.MouseButton.LeftButton, pos=at(window, (X0 + X1) / 2, (Y0 + Y1) / 2))
    assert window.canvas.active_key == annotation_id


def stored_mask(window, annotation_id: int) -> np.ndarray:
    return stored(window, annotation_id).rle.to_mask()


def test_dragging_an_outline_vertex_is_one_undoable_change_and_the_rest_of_the_mask_stays(qtbot, window, scene_folder):
    folder, _ = scene_folder
    annotation_id, mask = seed_mask(folder)
    open_folder(qtbot, window, folder)
    qtbot.waitUntil(lambda: annotation_id in window.canvas.annotation_keys(), timeout=STEP_TIMEOUT_MS)
    select(qtbot, window, annotation_id)
    qtbot.keyClick(window.canvas, Qt.Key.Key_P)
    assert (window.canvas.edit_mode, window.canvas.edit_key) == ("polygon", annotation_id)
    corner = (X1 - 0.5, Y1 - 0.5)
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        drag(qtbot, window, [corner, (X1 + 10.5, Y1 + 9.5), (X1 + 20.5, Y1 + 19.5)])
    edited = stored_mask(window, annotation_id)
    grown = edited & ~mask
    assert grown.sum() > 1000 and not (mask & ~edited)[: Y1 - 40].any()  # the far part of the square is untouched
    assert grown[Y1:, X1:].any() and window.undo_stack.undo_text() == "Move vertex"
    undo(qtbot, window)
    assert np.array_equal(stored_mask(window, annotation_id), mask)
    assert np.array_equal(window.canvas.edit_mask, mask)  # the edit goes on from the restored mask
    redo(qtbot, window)
    assert np.array_equal(stored_mask(window, annotation_id), edited)
    qtbot.keyClick(window.canvas, Qt.Key.Key_Escape)
    assert window.canvas.edit_mode is None and stored(window, annotation_id).status == "accepted"


def test_brush_and_eraser_strokes_are_undone_one_by_one(qtbot, window, scene_folder, monkeypatch):
    folder, _ = scene_folder
    annotation_id, mask = seed_mask(folder)
    open_folder(qtbot, window, folder)
    qtbot.waitUntil(lambda: annotation_id in window.canvas.annotation_keys(), timeout=STEP_TIMEOUT_MS)
    select(qtbot, window, annotation_id)
    qtbot.keyClick(window.canvas, Qt.Key.Key_B)
    assert window.canvas.edit_mode == "brush"
    radius = window.canvas.brush_radius
    qtbot.keyClick(window.canvas, Qt.Key.Key_BracketRight)
    assert window.canvas.brush_radius > radius and f"Brush {window.canvas.brush_radius} px" in window.statusBar().currentMessage()
    requests = []
    outline = window.image_loader.outline
    monkeypatch.setattr(window.image_loader, "outline", lambda *args: requests.append(args) or outline(*args))
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        drag(qtbot, window, [(X1 + 30, Y0 + 20), (X1 + 40, Y0 + 20), (X1 + 50, Y0 + 20)])
    brushed = stored_mask(window, annotation_id)
    (_, rles, arrays), = requests  # the new outline is made from the stroke's own array, nothing decoded
    assert rles == () and len(arrays) == 1 and np.array_equal(arrays[0][1], brushed)
    assert brushed.sum() > mask.sum() and not brushed[:, : X1 + 10].__ne__(mask[:, : X1 + 10]).any()
    qtbot.keyClick(window.canvas, Qt.Key.Key_X)
    assert window.canvas.edit_mode == "eraser"
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        drag(qtbot, window, [(X0 + 20, Y0 + 60), (X0 + 60, Y0 + 60)])
    erased = stored_mask(window, annotation_id)
    assert erased.sum() < brushed.sum() and not erased[Y0 + 60, X0 + 40]
    assert window.undo_stack.count() == 2
    undo(qtbot, window)
    assert np.array_equal(stored_mask(window, annotation_id), brushed)
    undo(qtbot, window)
    assert np.array_equal(stored_mask(window, annotation_id), mask)
    assert stored(window, annotation_id).box_xyxy == (X0, Y0, X1, Y1)


def test_a_brushed_proposal_is_accepted_with_the_brushed_mask(qtbot, window, scene_folder):
    folder, scenes = scene_folder
    open_folder(qtbot, window, folder)
    name = next(iter(scenes))
    qtbot.waitUntil(lambda: window.models_info is not None, timeout=60_000)
    assert propose(qtbot, window, scenes[name].expression) == 1
    key = window.session.active
    before = window.session.mask_of(key)
    assert before is not None
    ys, xs = np.nonzero(before)
    qtbot.keyClick(window.canvas, Qt.Key.Key_X)
    assert window.canvas.edit_key == key
    centre = (float(xs.mean()), float(ys.mean()))
    drag(qtbot, window, [centre, (centre[0] + 1, centre[1])])
    brushed = window.session.mask_of(key)
    assert brushed.sum() < before.sum() and window.store.annotations(window.current_image_id) == []
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(window.canvas, Qt.Key.Key_Return)
    (annotation,) = window.store.annotations(window.current_image_id)
    assert np.array_equal(annotation.rle.to_mask(), brushed) and annotation.extra["mask_source"] == "edited"
    assert window.canvas.edit_mode is None


@pytest.mark.parametrize("mask_kind", ["sam"])
def test_points_on_an_accepted_annotation_are_there_after_reopening_the_folder(qtbot, sam_window, scene_folder):
    folder, _ = scene_folder
    annotation_id, _ = seed_mask(folder)
    window = sam_window
    open_folder(qtbot, window, folder)
    qtbot.waitUntil(lambda: annotation_id in window.canvas.annotation_keys(), timeout=STEP_TIMEOUT_MS)
    select(qtbot, window, annotation_id)
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        qtbot.mouseClick(window.canvas.viewport(), Qt.MouseButton.LeftButton, pos=at(window, X0 + 30.5, Y0 + 30.5))
    points = window.session.points_of(annotation_id)
    assert len(points) == 1 and points[0].positive
    assert stored(window, annotation_id).extra["points"] == [[points[0].x, points[0].y, 1]]
    open_folder(qtbot, window, Path(str(folder)))  # the same project, opened again
    qtbot.waitUntil(lambda: annotation_id in window.canvas.annotation_keys(), timeout=STEP_TIMEOUT_MS)
    assert window.canvas.item_for(annotation_id).annotation.points == points
    assert window.session.points_of(annotation_id) == (PromptPoint(points[0].x, points[0].y, True),)


def test_a_label_set_restricts_the_picker_and_a_new_name_asks(qtbot, window, scene_folder, monkeypatch):
    folder, scenes = scene_folder
    with qtbot.waitSignal(window.folder_opened, timeout=STEP_TIMEOUT_MS):
        window.open_folder(folder, labels=["person", "disc", "ring"])
    assert window.store.label_set() == ["person", "disc", "ring"]
    combo = window.panel.category
    assert [combo.itemText(i) for i in range(combo.count())] == ["person", "disc", "ring"]
    qtbot.waitUntil(lambda: window.models_info is not None, timeout=60_000)
    name = next(iter(scenes))
    assert propose(qtbot, window, scenes[name].expression) == 1
    pending = window.session.pending[window.session.active]
    assert pending.category in ("disc", "ring", "person")
    answers = iter([QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes])
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kwargs: next(answers))
    combo.setEditText("lid")
    window.accept()
    assert window.store.annotations(window.current_image_id) == []  # declined: nothing accepted
    combo.setEditText("lid")
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        window.accept()
    (annotation,) = window.store.annotations(window.current_image_id)
    assert window.store.category(annotation.category_id).name == "lid"
    assert window.store.label_set() == ["person", "disc", "ring", "lid"]
    assert annotation.expression == scenes[name].expression


def test_the_label_set_from_settings_reaches_the_store_and_the_picker(qtbot, window, scene_folder):
    folder, _ = scene_folder
    open_folder(qtbot, window, folder)
    window.set_label_set(["cat", "dog"])
    assert window.store.label_set() == ["cat", "dog"]
    assert [window.panel.category.itemText(i) for i in range(window.panel.category.count())] == ["cat", "dog"]
    window.set_label_set(None)
    assert window.store.label_set() is None and "any category name" in window.statusBar().currentMessage()


def test_a_mask_of_another_size_than_the_image_is_refused_in_one_line(qtbot, window, scene_folder, monkeypatch):
    folder, _ = scene_folder
    annotation_id, _ = seed_mask(folder)
    open_folder(qtbot, window, folder)
    qtbot.waitUntil(lambda: annotation_id in window.canvas.annotation_keys(), timeout=STEP_TIMEOUT_MS)
    select(qtbot, window, annotation_id)
    monkeypatch.setattr(window.session, "mask_of", lambda key: np.ones((7, 9), dtype=bool))  # the file was replaced
    with qtbot.waitSignal(window.message_shown, timeout=STEP_TIMEOUT_MS) as shown:
        qtbot.keyClick(window.canvas, Qt.Key.Key_P)
    assert window.canvas.edit_mode is None
    assert shown.args[0].startswith("This mask cannot be edited here: the mask is (9, 7) pixels but the image is")
