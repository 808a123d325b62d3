"""The app under faults: a Qt binding that leaks, long review sessions, errors that must stay on screen, threads
that fail in unexpected ways, and undo steps that another instance of the app made impossible."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtWidgets import QGraphicsItem, QLabel

from annotator.project.store import NewAnnotation, ProjectStore
from annotator.ui.main_window import MainWindow
from tests.ui_fixtures import (  # noqa: F401 (fixtures are found by name)
    BOX,
    MODEL_TIMEOUT_MS,
    STEP_TIMEOUT_MS,
    WIDE_OBJECTS,
    app_settings,
    isolated_qsettings,
    make_window,
    open_folder,
    planted_model_path,
    scene_folder,
    seed_store,
    show_image_named,
    undo,
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
    """None's count may grow (6.11.3 keeps one more reference to None on every QGraphicsScene.addItem and
    setParentItem(None), which is harmless), but must not fall: at zero the interpreter aborts."""
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


# Messages that stay ---------------------------------------------------------------------------------------------
def test_a_folder_error_stays_when_the_model_is_ready_afterwards(qtbot, make_window, app_settings, tmp_path):
    window = make_window(app_settings)
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS) as loaded:
        window.start_models()  # as `annotator FOLDER` does: the model loads while the folder opens
        window.open_folder(tmp_path / "no-such-folder")
    assert loaded.args[0] is not None
    assert window.message_bar.isVisible()
    assert "no-such-folder is not a folder" in window.message_bar.text


def test_the_demo_banner_waits_behind_a_folder_error_until_the_error_is_dismissed(
    qtbot, make_window, app_settings, planted_model_path, tmp_path, monkeypatch
):
    monkeypatch.setattr("annotator.ui.settings.DEMO_MODEL_PATH", planted_model_path)
    window = make_window(app_settings)
    window.open_folder(tmp_path / "no-such-folder")
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS):
        window.use_demo_model()
    assert "no-such-folder" in window.message_bar.text
    assert window.message_bar.more.text() == "+1 more"
    qtbot.mouseClick(window.message_bar.close_button, Qt.MouseButton.LeftButton)
    assert "Using the demo model" in window.message_bar.text
    qtbot.mouseClick(window.message_bar.close_button, Qt.MouseButton.LeftButton)
    assert not window.message_bar.isVisible()


def test_a_folder_error_is_cleared_when_a_folder_opens_fine(qtbot, window, scene_folder, tmp_path):
    window.open_folder(tmp_path / "no-such-folder")
    assert "no-such-folder" in window.message_bar.text
    open_folder(qtbot, window, scene_folder[0])
    assert "no-such-folder" not in window.message_bar.text
    assert window.message_bar.message("folder") is None


def test_a_decode_error_is_cleared_when_another_image_is_shown(qtbot, window, scene_folder):
    folder, _ = scene_folder
    good = (folder / "scene_011.png").read_bytes()
    (folder / "scene_011b.png").write_bytes(good[: len(good) // 3])
    open_folder(qtbot, window, folder)
    with qtbot.waitSignal(window.message_shown, timeout=STEP_TIMEOUT_MS):
        window.show_image(window.store.image_by_path("scene_011b.png").id)
    assert "scene_011b.png" in window.message_bar.text
    press_and_wait_for_the_image(qtbot, window, Qt.Key.Key_D)
    assert "scene_011b.png" not in window.message_bar.text
    assert window.message_bar.message("image") is None


def test_an_unexpected_exception_while_opening_a_folder_is_reported_with_its_type(
    qtbot, window, scene_folder, monkeypatch, caplog
):
    def symlink_loop(folder: Path) -> None:
        raise RuntimeError(f"Symlink loop from {folder / 'a.png'}")

    monkeypatch.setattr("annotator.ui.folder_sync.scan_folder", symlink_loop)
    with qtbot.waitSignal(window.message_shown, timeout=STEP_TIMEOUT_MS) as shown:
        window.open_folder(scene_folder[0])
    assert "cannot be opened: RuntimeError: Symlink loop from" in shown.args[0]
    assert window.message_bar.message("folder").level == "error"
    assert any(record.exc_info and record.exc_info[0] is RuntimeError for record in caplog.records)


# Undo across two instances --------------------------------------------------------------------------------------
@pytest.fixture
def other_instance(window: MainWindow) -> Iterator[Callable[[], ProjectStore]]:
    """Opens a second store on the window's project file, as another instance of the app would (call it once the
    window has a folder open); closed after the test."""
    opened: list[ProjectStore] = []

    def open_other() -> ProjectStore:
        assert window.store is not None
        opened.append(ProjectStore.open(window.store.path))
        return opened[-1]

    yield open_other
    for store in opened:
        store.close()


def change_category(qtbot, window: MainWindow, annotation_id: int, name: str) -> None:
    window.canvas.set_active(annotation_id)
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        window.set_category(name)


def category_of(window: MainWindow, annotation_id: int) -> str:
    return window.store.category(window.store.annotation(annotation_id).category_id).name


def press_undo(qtbot, window: MainWindow) -> None:
    """Ctrl+Z without waiting for a change (a refused undo changes nothing)."""
    qtbot.keyClick(window.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)


@pytest.fixture
def dog_used_elsewhere(qtbot, window, scene_folder, other_instance) -> tuple[int, ProjectStore, int]:
    """The window marked its image done, then set a pre-label's category to the new "dog"; the other instance
    then added an annotation of its own with "dog". The pre-label's id, the other store, its annotation's id."""
    folder, _ = scene_folder
    annotation_id = seed_store(folder, status="pending", source="proposal", score=0.4)
    open_folder(qtbot, window, folder)
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        window.toggle_done()
    change_category(qtbot, window, annotation_id, "dog")
    other = other_instance()
    image_id = other.annotation(annotation_id).image_id
    theirs = other.add_annotation(image_id, other.category_by_name("dog").id, BOX).id
    return annotation_id, other, theirs


def test_an_undo_that_another_instance_made_impossible_is_refused_and_changes_nothing(
    qtbot, window, dog_used_elsewhere
):
    annotation_id, _, _ = dog_used_elsewhere
    assert window.undo_stack.index() == 2
    press_undo(qtbot, window)
    assert window.undo_stack.index() == 2
    assert category_of(window, annotation_id) == "dog"
    assert window.store.category_by_name("dog") is not None
    assert not window.store.can_redo
    assert "Cannot undo “Change category to dog”" in window.message_bar.text
    assert "another annotator window" in window.message_bar.text
    assert window.message_bar.message("history").level == "error"


def test_after_a_refused_undo_the_history_goes_on_once_the_other_instance_lets_go(qtbot, window, dog_used_elsewhere):
    annotation_id, other, theirs = dog_used_elsewhere
    press_undo(qtbot, window)
    other.delete_annotation(theirs)
    undo(qtbot, window)
    assert window.undo_stack.index() == 1
    assert category_of(window, annotation_id) == "disc"
    assert window.store.category_by_name("dog") is None
    assert window.message_bar.message("history") is None
    undo(qtbot, window)
    assert window.undo_stack.index() == 0
    assert window.store.image(window.current_image_id).status != "done"
    assert not window.store.can_undo


def test_a_redo_that_another_instance_made_impossible_is_refused_whole(qtbot, window, dog_used_elsewhere):
    annotation_id, other, theirs = dog_used_elsewhere
    other.delete_annotation(theirs)
    undo(qtbot, window)
    other.delete_annotation(annotation_id)
    modifiers = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    qtbot.keyClick(window.canvas, Qt.Key.Key_Z, modifiers)
    assert window.undo_stack.index() == 1
    assert window.store.category_by_name("dog") is None
    assert window.store.can_redo
    assert "Cannot redo “Change category to dog”" in window.message_bar.text


# Folders and stores that are not as they should be --------------------------------------------------------------
def skipped_lines(window: MainWindow) -> list[str]:
    skipped = window.image_list.skipped
    return [skipped.item(row).text() for row in range(skipped.count())]


def test_a_folder_with_symlink_loops_opens_its_images_and_lists_each_loop(qtbot, window, scene_folder):
    folder, scenes = scene_folder
    (folder / "a.png").symlink_to("b.png")
    (folder / "b.png").symlink_to("a.png")
    (folder / "self.png").symlink_to("self.png")
    open_folder(qtbot, window, folder)
    assert [record.path for record in window.store.images()] == sorted(scenes)
    loops = [line for line in skipped_lines(window) if "symlink loop" in line]
    assert sorted(line.split(":")[0] for line in loops) == ["a.png", "b.png", "self.png"]


def test_a_name_that_is_not_utf8_is_listed_as_skipped_and_the_rest_of_the_folder_opens(qtbot, window, scene_folder):
    folder, scenes = scene_folder
    latin1 = os.path.join(os.fsencode(folder), b"caf\xe9.png")
    with open(latin1, "wb") as f:
        f.write((folder / sorted(scenes)[0]).read_bytes())
    open_folder(qtbot, window, folder)
    assert [record.path for record in window.store.images()] == sorted(scenes)
    assert any(line.startswith("caf\\xe9.png: file name is not valid UTF-8") for line in skipped_lines(window))


def test_a_damaged_store_is_named_in_the_message_bar_with_what_to_do_and_left_as_it_is(qtbot, window, scene_folder):
    folder, _ = scene_folder
    with ProjectStore.for_folder(folder) as store:
        store.sync_folder()
        path = store.path
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    data[2 * page_size : 3 * page_size] = np.random.default_rng(0).bytes(page_size)  # the images table's page
    path.write_bytes(bytes(data))
    with qtbot.waitSignal(window.message_shown, timeout=STEP_TIMEOUT_MS) as shown:
        window.open_folder(folder)
    assert f"project store {path} is damaged" in shown.args[0] and ".recover" in shown.args[0]
    assert window.message_bar.message("folder").level == "error"
    assert window.store is None
    assert path.read_bytes() == bytes(data)


def test_a_stored_mask_that_cannot_be_decoded_gets_no_outline_and_the_others_are_still_drawn(qapp, caplog):
    from annotator.project.geometry import Rle
    from annotator.ui.worker import ImageWorker
    from annotator.ui.worker_jobs import DecodedImages, JobQueue, OutlineJob, rle_key

    good = Rle.from_mask(np.pad(np.ones((4, 4), bool), 2))
    broken = Rle(8, 8, "not an rle")
    queue = JobQueue()
    worker = ImageWorker(queue, DecodedImages(), tolerance_px=0.5)
    outlined = []
    worker.outlined.connect(outlined.append)
    queue.put(OutlineJob(1, image_id=7, masks=(broken, good)))
    worker.run_next()
    [outlines] = outlined
    assert outlines.paths[rle_key(broken)].isEmpty()
    assert not outlines.paths[rle_key(good)].isEmpty()
    assert "cannot be outlined" in caplog.text
