"""Editing in the app: every change reaches the store as one undoable step, and undo restores the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from annotator.segmentation.segment import Segmenter
from annotator.project.geometry import Rle
from annotator.project.images import load_image
from annotator.project.store import ProjectStore
from tests.ui_fixtures import (  # noqa: F401 (fixtures are found by name)
    BOX,
    STEP_TIMEOUT_MS,
    app_settings,
    box_iou,
    isolated_qsettings,
    make_window,
    open_folder,
    planted_model_path,
    propose,
    mask_kind,
    redo,
    sam_window,
    scene_folder,
    seed_store,
    stored,
    tiny_mask_backend,
    undo,
    window,
    write_scenes,
)


def view_pos(window, x: float, y: float) -> QPoint:
    return window.canvas.view_point(x, y).toPoint()


def click(qtbot, window, x: float, y: float, button=Qt.MouseButton.LeftButton, modifier=Qt.KeyboardModifier.NoModifier):
    qtbot.mouseClick(window.canvas.viewport(), button, modifier, view_pos(window, x, y))


def drag(qtbot, window, start: tuple[float, float], end: tuple[float, float]) -> tuple[float, float]:
    """Left-drag on the canvas between two image points; the displacement in image pixels the canvas saw."""
    viewport = window.canvas.viewport()
    a, b = view_pos(window, *start), view_pos(window, *end)
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=a)
    qtbot.mouseMove(viewport, (a + b) / 2)
    qtbot.mouseMove(viewport, b)
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=b)
    sa, sb = window.canvas.mapToScene(a), window.canvas.mapToScene(b)
    return sb.x() - sa.x(), sb.y() - sa.y()


def activate(qtbot, window, annotation_id: int) -> None:
    x0, y0, x1, y1 = stored(window, annotation_id).box_xyxy
    click(qtbot, window, (x0 + x1) / 2, (y0 + y1) / 2)
    assert window.canvas.active_key == annotation_id


def test_rejecting_a_pending_prelabel_marks_it_rejected_and_undo_makes_it_pending(qtbot, window, scene_folder):
    folder, _ = scene_folder
    annotation_id = seed_store(folder, status="pending", source="proposal", score=0.3, expression="the red disc")
    open_folder(qtbot, window, folder)
    window.canvas.setFocus()
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(window.canvas, Qt.Key.Key_Escape)
    assert stored(window, annotation_id).status == "rejected"
    undo(qtbot, window)
    assert stored(window, annotation_id).status == "pending"
    redo(qtbot, window)
    assert stored(window, annotation_id).status == "rejected"


def test_accepting_a_proposal_adds_it_and_undo_removes_it_and_redo_restores_it(qtbot, window, scene_folder):
    folder, scenes = scene_folder
    open_folder(qtbot, window, folder)
    scene = scenes[window.store.image(window.current_image_id).path]
    propose(qtbot, window, scene.expression)
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(window.canvas, Qt.Key.Key_Return)
    [accepted] = window.store.annotations()
    assert (accepted.status, accepted.source, accepted.expression) == ("accepted", "proposal", scene.expression)
    undo(qtbot, window)
    assert window.store.annotations() == []
    redo(qtbot, window)
    assert window.store.annotations() == [accepted]


def test_undo_survives_an_image_switch_and_goes_back_to_the_image(qtbot, window, scene_folder):
    folder, scenes = scene_folder
    open_folder(qtbot, window, folder)
    first = window.current_image_id
    propose(qtbot, window, scenes[window.store.image(first).path].expression)
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(window.canvas, Qt.Key.Key_Return)
    with qtbot.waitSignal(window.image_shown, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(window.canvas, Qt.Key.Key_D)
    assert window.current_image_id != first
    undo(qtbot, window)
    assert window.store.annotations() == []
    assert window.current_image_id == first


def test_delete_removes_the_annotation_and_undo_restores_it(qtbot, window, scene_folder):
    folder, _ = scene_folder
    annotation_id = seed_store(folder)
    open_folder(qtbot, window, folder)
    before = stored(window, annotation_id)
    activate(qtbot, window, annotation_id)
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(window.canvas, Qt.Key.Key_Delete)
    assert stored(window, annotation_id) is None
    undo(qtbot, window)
    assert stored(window, annotation_id) == before


def test_moving_a_box_moves_it_in_the_store_and_undo_moves_it_back(qtbot, window, scene_folder):
    folder, _ = scene_folder
    annotation_id = seed_store(folder)
    open_folder(qtbot, window, folder)
    activate(qtbot, window, annotation_id)
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        dx, dy = drag(qtbot, window, (120, 140), (150, 120))
    x0, y0, x1, y1 = BOX
    assert stored(window, annotation_id).box_xyxy == pytest.approx((x0 + dx, y0 + dy, x1 + dx, y1 + dy), abs=1e-6)
    assert (dx, dy) != (0, 0)
    undo(qtbot, window)
    assert stored(window, annotation_id).box_xyxy == BOX


def test_resizing_a_box_by_its_corner_handle_resizes_it_in_the_store_and_undo_restores_it(qtbot, window, scene_folder):
    folder, _ = scene_folder
    annotation_id = seed_store(folder)
    open_folder(qtbot, window, folder)
    activate(qtbot, window, annotation_id)
    x0, y0, x1, y1 = BOX
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        drag(qtbot, window, (x1, y1), (x1 + 40, y1 + 30))
    new = stored(window, annotation_id).box_xyxy
    corner = window.canvas.mapToScene(view_pos(window, x1 + 40, y1 + 30))
    assert new == pytest.approx((x0, y0, corner.x(), corner.y()), abs=1e-6)
    undo(qtbot, window)
    assert stored(window, annotation_id).box_xyxy == BOX


def test_changing_the_category_updates_the_store_and_undo_restores_it(qtbot, window, scene_folder):
    folder, _ = scene_folder
    annotation_id = seed_store(folder)
    open_folder(qtbot, window, folder)
    activate(qtbot, window, annotation_id)
    qtbot.keyClick(window.canvas, Qt.Key.Key_C)
    combo = window.panel.category.lineEdit()
    assert combo.hasFocus()
    qtbot.keyClicks(combo, "ring")
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(combo, Qt.Key.Key_Return)
    assert window.store.category(stored(window, annotation_id).category_id).name == "ring"
    undo(qtbot, window)
    assert window.store.category(stored(window, annotation_id).category_id).name == "disc"
    assert window.store.category_by_name("ring") is None


def test_a_positive_then_a_negative_point_refine_the_mask_and_undo_restores_each(
    qtbot, sam_window, scene_folder, mask_kind
):
    window = sam_window
    folder, _ = scene_folder
    annotation_id = seed_store(folder)
    open_folder(qtbot, window, folder)
    activate(qtbot, window, annotation_id)
    image_path = window.store.image_path(window.current_image_id)
    reference = Segmenter(tiny_mask_backend(mask_kind), cache_size=1)
    image = load_image(image_path)

    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        click(qtbot, window, 100, 120)
    positive = window.canvas.mapToScene(view_pos(window, 100, 120))
    first = reference.refine(0, image, BOX, [[positive.x(), positive.y()]], [1])
    after_positive = stored(window, annotation_id)
    assert after_positive.rle == Rle.from_mask(first.mask)

    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        click(qtbot, window, 140, 170, Qt.MouseButton.RightButton)
    negative = window.canvas.mapToScene(view_pos(window, 140, 170))
    points = [[positive.x(), positive.y()], [negative.x(), negative.y()]]
    second = reference.refine(0, image, after_positive.box_xyxy, points, [1, 0], previous=first)
    assert stored(window, annotation_id).rle == Rle.from_mask(second.mask)
    assert [p.positive for p in window.canvas.item_for(annotation_id).annotation.points] == [True, False]

    undo(qtbot, window)
    assert stored(window, annotation_id) == after_positive
    assert [p.positive for p in window.canvas.item_for(annotation_id).annotation.points] == [True]
    undo(qtbot, window)
    assert stored(window, annotation_id).rle is None
    assert stored(window, annotation_id).box_xyxy == BOX


def test_backspace_removes_the_last_point_and_sam_redraws_the_mask_without_it(qtbot, sam_window, scene_folder):
    window = sam_window
    folder, _ = scene_folder
    annotation_id = seed_store(folder)
    open_folder(qtbot, window, folder)
    activate(qtbot, window, annotation_id)
    for x, y in ((100, 120), (150, 160)):
        with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
            click(qtbot, window, x, y)
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(window.canvas, Qt.Key.Key_Backspace)
    assert len(window.canvas.item_for(annotation_id).annotation.points) == 1
    assert window.undo_stack.count() == 3


def test_a_moved_box_is_segmented_again_from_its_new_place(qtbot, sam_window, scene_folder, mask_kind):
    window = sam_window
    folder, _ = scene_folder
    annotation_id = seed_store(folder)
    open_folder(qtbot, window, folder)
    activate(qtbot, window, annotation_id)
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        dx, dy = drag(qtbot, window, (120, 140), (140, 150))
    x0, y0, x1, y1 = BOX
    moved = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
    image = load_image(window.store.image_path(window.current_image_id))
    expected = Segmenter(tiny_mask_backend(mask_kind), cache_size=1).segment_box(0, image, moved)
    assert stored(window, annotation_id).rle == Rle.from_mask(expected.mask)
    undo(qtbot, window)
    assert stored(window, annotation_id).rle is None


def test_a_box_drawn_with_w_is_segmented_by_sam_and_accepted_as_manual(qtbot, sam_window, scene_folder):
    window = sam_window
    folder, _ = scene_folder
    open_folder(qtbot, window, folder)
    window.canvas.setFocus()
    qtbot.keyClick(window.canvas, Qt.Key.Key_W)
    assert window.canvas.drawing
    with qtbot.waitSignal(window.inference.inference.segmented, timeout=STEP_TIMEOUT_MS):
        drag(qtbot, window, (40, 50), (200, 220))
    qtbot.waitUntil(lambda: not window.session.segment_seq, timeout=STEP_TIMEOUT_MS)
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(window.canvas, Qt.Key.Key_Return)
    [annotation] = window.store.annotations()
    assert annotation.source == "manual"
    assert annotation.rle is not None


def test_all_instances_proposes_both_objects_of_the_named_colour(qtbot, window, tmp_path):
    folder = tmp_path / "two"
    folder.mkdir()
    image = np.full((336, 336, 3), 128, np.uint8)
    discs = [(20, 30, 120, 130), (210, 190, 310, 290)]
    yy, xx = np.mgrid[:336, :336]
    for x0, y0, x1, y1 in discs:
        inside = ((xx + 0.5 - (x0 + x1) / 2) ** 2 + (yy + 0.5 - (y0 + y1) / 2) ** 2) <= ((x1 - x0) / 2) ** 2
        image[inside] = (220, 40, 40)
    image[200:300, 30:130] = (40, 70, 215)
    from PIL import Image

    Image.fromarray(image).save(folder / "two_red.png")
    open_folder(qtbot, window, folder)
    qtbot.keyClick(window.canvas, Qt.Key.Key_I)
    assert window.panel.all_instances.isChecked()
    propose(qtbot, window, "the red disc")
    boxes = [window.canvas.item_for(key).box_xyxy for key in window.canvas.annotation_keys()]
    for disc in discs:
        assert max(box_iou(box, disc) for box in boxes) >= 0.5


def test_the_heatmap_toggle_overlays_the_hot_region_on_the_named_object(qtbot, window, scene_folder):
    folder, scenes = scene_folder
    open_folder(qtbot, window, folder)
    scene = scenes[window.store.image(window.current_image_id).path]
    propose(qtbot, window, scene.expression)
    assert not window.canvas.overlay_visible
    qtbot.keyClick(window.canvas, Qt.Key.Key_H)
    assert window.canvas.overlay_visible and window.canvas.has_overlay
    overlay = window.canvas.overlay_image
    width, height = overlay.width(), overlay.height()
    alpha = np.array([[overlay.pixelColor(x, y).alpha() for x in range(width)] for y in range(height)])
    row, column = np.unravel_index(np.argmax(alpha), alpha.shape)
    hottest_x = (column + 0.5) * scene.width / overlay.width()
    hottest_y = (row + 0.5) * scene.height / overlay.height()
    x0, y0, x1, y1 = scene.target.box_xyxy
    assert x0 <= hottest_x <= x1 and y0 <= hottest_y <= y1
    assert window.heads_panel.head_names == [f"L{layer} H{head}" for layer, head in window.models_info.heads]
    ARTIFACTS.mkdir(exist_ok=True)
    qtbot.waitUntil(lambda: all(label.isVisible() for label in window.heads_panel.map_labels))
    assert window.grab().save(str(ARTIFACTS / "heatmap_view.png"))


def test_the_review_order_visits_pending_images_least_confident_first(qtbot, window, tmp_path):
    folder = tmp_path / "review"
    write_scenes(folder, [31, 32, 33, 34])
    scores = {"scene_031.png": 0.9, "scene_032.png": None, "scene_033.png": 0.2, "scene_034.png": 0.5}
    with ProjectStore.for_folder(folder) as store:
        store.sync_folder()
        category = store.ensure_category("disc")
        for name, score in scores.items():
            if score is not None:
                image = store.image_by_path(name)
                store.add_annotation(image.id, category.id, BOX, source="proposal", score=score, status="pending")
    open_folder(qtbot, window, folder)
    window.image_list.order.setCurrentIndex(window.image_list.order.findData("least_confident"))
    with qtbot.waitSignal(window.image_shown, timeout=STEP_TIMEOUT_MS):
        window.show_image(window.image_list.neighbour(None, +1))
    visited = [window.store.image(window.current_image_id).path]
    for _ in range(3):
        with qtbot.waitSignal(window.image_shown, timeout=STEP_TIMEOUT_MS):
            qtbot.keyClick(window.canvas, Qt.Key.Key_D)
        visited.append(window.store.image(window.current_image_id).path)
    assert visited == ["scene_033.png", "scene_034.png", "scene_031.png", "scene_032.png"]


ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
