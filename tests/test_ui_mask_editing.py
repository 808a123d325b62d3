"""Mask editing on a bare canvas: polygon vertex gestures, brush and eraser strokes, one signal per gesture."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QColor, QWheelEvent
from PySide6.QtWidgets import QApplication

from annotator.editing.brush import paint_segment
from annotator.editing.polygons import apply_ring_edit, move_vertex, polygons_from_mask
from annotator.ui.canvas import Canvas, CanvasAnnotation
from annotator.ui.image_pyramid import build_pyramid
from annotator.ui.mask_edit_items import MaskOverlayItem

WIDTH, HEIGHT = 80, 60


@pytest.fixture
def canvas(qtbot) -> Canvas:
    view = Canvas()
    qtbot.addWidget(view)
    view.resize(420, 330)
    view.show()
    qtbot.waitExposed(view)
    view.set_image(build_pyramid(np.full((HEIGHT, WIDTH, 3), 90, dtype=np.uint8)))
    return view


@pytest.fixture
def edits(canvas: Canvas) -> list[tuple[object, np.ndarray, str]]:
    received: list[tuple[object, np.ndarray, str]] = []
    canvas.mask_edited.connect(lambda key, mask, label, rect: received.append((key, mask, label)))
    return received


def square_mask() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[5:15, 5:15] = True
    return mask


def at(canvas: Canvas, x: float, y: float) -> QPoint:
    return canvas.view_point(x, y).toPoint()


def scene_of(canvas: Canvas, point: QPoint) -> tuple[float, float]:
    scene = canvas.mapToScene(point)
    return scene.x(), scene.y()


def click(qtbot, canvas: Canvas, point: QPoint, button=Qt.MouseButton.LeftButton) -> None:
    qtbot.mouseClick(canvas.viewport(), button, Qt.KeyboardModifier.NoModifier, point)


def drag(qtbot, canvas: Canvas, points: list[QPoint], button=Qt.MouseButton.LeftButton) -> None:
    viewport = canvas.viewport()
    qtbot.mousePress(viewport, button, Qt.KeyboardModifier.NoModifier, points[0])
    for point in points[1:]:
        qtbot.mouseMove(viewport, point)
    qtbot.mouseRelease(viewport, button, Qt.KeyboardModifier.NoModifier, points[-1])


def test_a_brush_stroke_paints_the_swept_disc_and_emits_once_on_release(qtbot, canvas, edits):
    canvas.begin_edit("brush", "k", np.zeros((HEIGHT, WIDTH), dtype=bool))
    canvas.brush_radius = 3
    points = [at(canvas, 20.5, 20.5), at(canvas, 30.5, 22.5), at(canvas, 40.5, 30.5)]
    viewport = canvas.viewport()
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, points[0])
    for point in points[1:]:
        qtbot.mouseMove(viewport, point)
    assert edits == []  # nothing while dragging
    assert canvas.edit_mask.any()
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, points[-1])
    expected = np.zeros((HEIGHT, WIDTH), dtype=bool)
    scene = [scene_of(canvas, p) for p in points]
    paint_segment(expected, scene[0], scene[0], 3, True)
    for a, b in zip(scene, scene[1:]):
        paint_segment(expected, a, b, 3, True)
    assert len(edits) == 1
    key, mask, label = edits[0]
    assert (key, label) == ("k", "Brush")
    assert np.array_equal(mask, expected)
    mask[:] = False  # a fresh array: the canvas's working mask is its own
    assert np.array_equal(canvas.edit_mask, expected)


def test_the_eraser_clears_and_a_right_drag_with_the_brush_erases_too(qtbot, canvas, edits):
    full = np.ones((HEIGHT, WIDTH), dtype=bool)
    canvas.begin_edit("eraser", "k", full)
    canvas.brush_radius = 2
    press = at(canvas, 10.5, 10.5)
    drag(qtbot, canvas, [press])
    expected = full.copy()
    paint_segment(expected, scene_of(canvas, press), scene_of(canvas, press), 2, False)
    assert 9 <= (~expected).sum() <= 13  # about the 13 pixel centres within 2 of a centre
    assert [label for _, _, label in edits] == ["Erase"]
    assert np.array_equal(edits[0][1], expected)
    assert full.all()  # the canvas worked on its own copy
    canvas.begin_edit("brush", "k", edits[0][1])
    second = at(canvas, 50.5, 40.5)
    drag(qtbot, canvas, [second], Qt.MouseButton.RightButton)
    paint_segment(expected, scene_of(canvas, second), scene_of(canvas, second), 2, False)
    assert [label for _, _, label in edits] == ["Erase", "Erase"]
    assert np.array_equal(edits[1][1], expected)


def test_a_stroke_repaints_only_its_dirty_rect_from_the_masks_own_memory(qtbot, canvas, edits, monkeypatch):
    rects = []
    original = MaskOverlayItem.update_rect
    monkeypatch.setattr(MaskOverlayItem, "update_rect", lambda item, rect: (rects.append(rect), original(item, rect)))
    canvas.begin_edit("brush", "k", np.zeros((HEIGHT, WIDTH), dtype=bool))
    canvas.brush_radius = 2
    drag(qtbot, canvas, [at(canvas, 20.5, 20.5), at(canvas, 24.5, 20.5)])
    assert rects and all((x1 - x0) <= 10 and (y1 - y0) <= 6 for x0, y0, x1, y1 in rects)
    assert np.shares_memory(canvas.editor.overlay.mask, canvas.edit_mask)
    QApplication.processEvents()
    shot = canvas.viewport().grab().toImage()
    painted, untouched = shot.pixelColor(at(canvas, 22.5, 20.5)), shot.pixelColor(at(canvas, 60.5, 50.5))
    assert painted != untouched and untouched == QColor(90, 90, 90)


def test_dragging_a_vertex_moves_it_live_and_re_rasterises_on_release(qtbot, canvas, edits):
    mask = square_mask()
    canvas.begin_edit("polygon", "k", mask)
    ring = canvas.editor.polygons.rings[0]
    assert len(ring) == 4
    corner = int(np.flatnonzero((ring.points == (14.5, 14.5)).all(axis=1))[0])
    viewport = canvas.viewport()
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(canvas, 14.5, 14.5))
    qtbot.mouseMove(viewport, at(canvas, 17.5, 14.5))
    assert tuple(canvas.editor.polygons.rings[0].points[corner]) == (17.5, 14.5)  # live
    qtbot.mouseMove(viewport, at(canvas, 19.5, 14.5))
    assert edits == []
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(canvas, 19.5, 14.5))
    expected, _ = apply_ring_edit(mask, ring, move_vertex(ring, corner, 19.5, 14.5))
    assert [(key, label) for key, _, label in edits] == [("k", "Move vertex")]
    assert np.array_equal(edits[0][1], expected) and edits[0][1].sum() == 121


def test_a_double_click_on_an_edge_adds_a_vertex_and_a_right_click_deletes_one(qtbot, canvas, edits):
    mask = square_mask()
    canvas.begin_edit("polygon", "k", mask)
    viewport = canvas.viewport()
    qtbot.mouseDClick(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(canvas, 10.5, 5.5))
    assert [label for _, _, label in edits] == ["Add vertex"]
    assert len(canvas.editor.polygons.rings[0]) == 5
    assert np.array_equal(edits[0][1], mask)  # a vertex on a straight edge changes no pixel
    click(qtbot, canvas, at(canvas, 14.5, 14.5), Qt.MouseButton.RightButton)
    assert [label for _, _, label in edits] == ["Add vertex", "Delete vertex"]
    assert edits[1][1].sum() == 55  # the right triangle: rows of 10, 9, ..., 1 pixels
    click(qtbot, canvas, at(canvas, 40.5, 40.5), Qt.MouseButton.RightButton)
    assert len(edits) == 2  # a right click off every vertex does nothing


def test_delete_selected_vertex_deletes_the_hovered_one_and_refuses_below_three(qtbot, canvas, edits):
    canvas.begin_edit("polygon", "k", square_mask())
    assert not canvas.delete_selected_vertex()
    qtbot.mouseMove(canvas.viewport(), at(canvas, 14.5, 14.5))
    assert canvas.delete_selected_vertex()
    assert [label for _, _, label in edits] == ["Delete vertex"] and edits[0][1].sum() == 55
    qtbot.mouseMove(canvas.viewport(), at(canvas, 5.5, 5.5))
    assert len(canvas.editor.polygons.rings[0]) == 3
    assert not canvas.delete_selected_vertex()
    assert len(edits) == 1


def test_brush_size_steps_multiplicatively_and_clamps(canvas):
    sizes = []
    canvas.brush_size_changed.connect(sizes.append)
    assert canvas.brush_radius == 12
    canvas.change_brush_size(1)
    canvas.change_brush_size(-1)
    assert sizes == [15, 12]
    for _ in range(40):
        canvas.change_brush_size(1)
    assert canvas.brush_radius == 500
    for _ in range(60):
        canvas.change_brush_size(-1)
    assert canvas.brush_radius == 1
    canvas.change_brush_size(1)
    assert canvas.brush_radius == 2  # round(1.25) would not grow: at least one pixel per step


def test_modes_switch_for_the_same_key_and_end_edit_signals_once(qtbot, canvas):
    ended = []
    canvas.edit_ended.connect(lambda: ended.append(True))
    canvas.begin_edit("polygon", "k", square_mask())
    assert (canvas.edit_mode, canvas.edit_key) == ("polygon", "k")
    canvas.begin_edit("eraser", "k", square_mask())
    assert (canvas.edit_mode, canvas.edit_key) == ("eraser", "k")
    assert canvas.editor.polygons is None
    canvas.end_edit()
    canvas.end_edit()
    assert ended == [True]
    assert canvas.edit_mode is None and canvas.edit_key is None


def test_set_edit_mask_replaces_the_working_mask_and_retraces_the_rings(canvas):
    canvas.begin_edit("polygon", "k", square_mask())
    other = np.zeros((HEIGHT, WIDTH), dtype=bool)
    other[20:40, 30:50] = True
    canvas.set_edit_mask(other)
    assert np.array_equal(canvas.edit_mask, other)
    points = canvas.editor.polygons.rings[0].points
    assert points.min(axis=0).tolist() == [30.5, 20.5] and points.max(axis=0).tolist() == [49.5, 39.5]
    with pytest.raises(ValueError, match="pixels"):
        canvas.set_edit_mask(np.zeros((3, 3), dtype=bool))


def test_bad_edit_requests_say_what(canvas):
    with pytest.raises(ValueError, match="edit mode"):
        canvas.begin_edit("lasso", "k", square_mask())
    with pytest.raises(ValueError, match="80 x 60"):
        canvas.begin_edit("brush", "k", np.zeros((10, 10), dtype=bool))
    assert canvas.edit_mode is None


def test_while_editing_points_and_box_drags_are_off_but_wheel_zoom_stays(qtbot, canvas, edits):
    points, boxes = [], []
    canvas.point_added.connect(lambda *args: points.append(args))
    canvas.box_edited.connect(lambda *args: boxes.append(args))
    canvas.set_annotations([CanvasAnnotation("k", (2.0, 2.0, 30.0, 30.0), "thing", QColor("#3b82f6"))])
    canvas.set_active("k")
    canvas.begin_edit("polygon", "k", square_mask())
    click(qtbot, canvas, at(canvas, 25.5, 25.5))
    drag(qtbot, canvas, [at(canvas, 25.5, 25.5), at(canvas, 27.5, 27.5), at(canvas, 29.5, 29.5)])
    canvas.begin_edit("brush", "k", square_mask())
    zoom = canvas.zoom
    centre = QPointF(at(canvas, 40.0, 30.0))
    wheel = QWheelEvent(
        centre, canvas.viewport().mapToGlobal(centre), QPoint(), QPoint(0, 120),
        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False,
    )
    QApplication.sendEvent(canvas.viewport(), wheel)
    assert canvas.zoom > zoom
    assert points == [] and boxes == []
    assert canvas.item_for("k").box_xyxy == (2.0, 2.0, 30.0, 30.0)
    canvas.end_edit()
    click(qtbot, canvas, at(canvas, 25.5, 25.5))
    assert len(points) == 1  # the usual gestures are back


def test_a_new_image_ends_the_edit(canvas):
    ended = []
    canvas.edit_ended.connect(lambda: ended.append(True))
    canvas.begin_edit("brush", "k", square_mask())
    canvas.set_image(build_pyramid(np.zeros((20, 30, 3), dtype=np.uint8)))
    assert ended == [True] and canvas.edit_mode is None


def test_polygon_tolerance_zero_shows_every_corner(canvas):
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[10:30, 10:30] = True
    mask[20:30, 20:30] = False
    canvas.polygon_tolerance_px = 0.0
    canvas.begin_edit("polygon", "k", mask)
    assert canvas.editor.polygons == polygons_from_mask(mask, 0.0)
    # An L: 5 corners, and the inner corner cut by the 8-connected trace into 2 vertices.
    assert len(canvas.editor.polygons.rings[0]) == 7
