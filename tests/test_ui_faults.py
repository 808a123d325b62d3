"""The app under faults: a Qt binding that leaks, long review sessions, errors that must stay on screen, threads
that fail in unexpected ways, and undo steps that another instance of the app made impossible."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtWidgets import QGraphicsItem, QLabel

from annotator.project.store import NewAnnotation, ProjectStore
from annotator.ui.main_window import MainWindow
from tests.ui_fixtures import (  # noqa: F401 (fixtures are found by name)
    STEP_TIMEOUT_MS,
    WIDE_OBJECTS,
    app_settings,
    isolated_qsettings,
    make_window,
    open_folder,
    planted_model_path,
    scene_folder,
    show_image_named,
    window,
    write_scenes,
)

NONE_IS_MORTAL = sys.version_info < (3, 12)
"""From CPython 3.12 on None is immortal: its reference count is a constant and a binding's leak cannot kill it."""
NONE_DRIFT_LIMIT = 100
"""How far None's reference count may fall in a test; the faulty binding takes one away on every call."""
SMALL_SCENES = dataclasses.replace(WIDE_OBJECTS, long_side=(64, 64))
"""Tiny scenes: a soak measures the window's bookkeeping, not decoding."""
SOAK_IMAGES = 8
SOAK_SWITCHES = 2_000
"""About 25 s on a 2-core machine (12 ms a switch, each waiting for the image and its five boxes to be drawn)."""
CROWDED_NAME = "scene_999.png"
CROWDED_ANNOTATIONS = 3_000
CROWDED_VISITS = 6
"""About 1.5 s a visit on a 2-core machine: 3,000 boxes drawn and listed, then removed."""


class _Item(QGraphicsItem):
    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, 1, 1)

    def paint(self, *args: object) -> None:
        pass


def none_refcount() -> int:
    return sys.getrefcount(None)


@pytest.mark.skipif(not NONE_IS_MORTAL, reason="None is immortal on this Python")
def test_none_keeps_its_reference_count_over_20000_wrapped_void_calls(qapp):
    item, label = _Item(), QLabel()
    calls = {
        "QGraphicsItem.setPos": lambda i: item.setPos(QPointF(i % 7, 0)),
        "QGraphicsItem.setVisible": lambda i: item.setVisible(i % 2 == 0),
        "QGraphicsItem.setZValue": lambda i: item.setZValue(i % 5),
        "QLabel.setText": lambda i: label.setText(str(i % 3)),
    }
    drift = {}
    for name, call in calls.items():
        before = none_refcount()
        for i in range(5_000):
            call(i)
            if i % 500 == 499 and abs(none_refcount() - before) >= NONE_DRIFT_LIMIT:
                break  # stop before None's count reaches zero and aborts the test run
        drift[name] = none_refcount() - before
    assert all(abs(d) < NONE_DRIFT_LIMIT for d in drift.values()), f"None's reference count drifted: {drift}"


@pytest.fixture
def soak_folder(tmp_path: Path) -> Path:
    """`SOAK_IMAGES` small pre-labelled scenes (five pending boxes each), then one more at the end of the list
    with `CROWDED_ANNOTATIONS` pending boxes."""
    folder = tmp_path / "soak"
    write_scenes(folder, [*range(SOAK_IMAGES), 999], SMALL_SCENES)  # 999: CROWDED_NAME, last in the list
    rng = np.random.default_rng(0)
    with ProjectStore.for_folder(folder) as store:
        store.sync_folder()
        shape = store.add_category("shape", undoable=False)
        for record in store.images():
            count = CROWDED_ANNOTATIONS if record.path == CROWDED_NAME else 5
            corners = rng.uniform(0, 40, size=(count, 2))
            boxes = np.concatenate([corners, corners + rng.uniform(4, 24, size=(count, 2))], axis=1)
            new = [NewAnnotation(record.id, shape.id, tuple(map(float, box)), source="proposal") for box in boxes]
            store.add_annotations(new, undoable=False)
    return folder


def press_and_wait_for_the_image(qtbot, window: MainWindow, key: Qt.Key) -> None:
    """Press `key` on the canvas and wait until the image it goes to is drawn with its annotations."""
    with qtbot.waitSignal(window.image_shown, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(window.canvas, key)


def assert_none_kept_its_references(before: int, what: str) -> None:
    """None's count may grow (the binding keeps a reference to None passed as a parent), never fall."""
    if NONE_IS_MORTAL:
        fall = before - none_refcount()
        assert fall < NONE_DRIFT_LIMIT, f"None lost {fall} references in {what}"


def test_two_thousand_image_switches_by_key_keep_the_window_alive(qtbot, window, soak_folder):
    open_folder(qtbot, window, soak_folder)
    keys = [Qt.Key.Key_D] * (SOAK_IMAGES - 1) + [Qt.Key.Key_A] * (SOAK_IMAGES - 1)
    for key in keys:
        press_and_wait_for_the_image(qtbot, window, key)
    before = none_refcount()
    for i in range(SOAK_SWITCHES):
        press_and_wait_for_the_image(qtbot, window, keys[i % len(keys)])
        assert_none_kept_its_references(before, f"{i + 1} image switches")
    assert window.isVisible()
    assert len(window.canvas.annotation_keys()) == 5


def test_an_image_with_3000_annotations_shown_again_and_again_keeps_the_window_alive(qtbot, window, soak_folder):
    open_folder(qtbot, window, soak_folder)
    show_image_named(qtbot, window, f"scene_{SOAK_IMAGES - 1:03d}.png")
    before = none_refcount()
    for visit in range(CROWDED_VISITS):
        press_and_wait_for_the_image(qtbot, window, Qt.Key.Key_D)
        assert len(window.canvas.annotation_keys()) == CROWDED_ANNOTATIONS
        press_and_wait_for_the_image(qtbot, window, Qt.Key.Key_A)
        assert_none_kept_its_references(before, f"{visit + 1} visits to the crowded image")
    assert window.isVisible()
