"""The GUI thread never stalls long: the largest gap between ticks of a 10 ms timer while 10,000 images are
filtered, while the planted model proposes, and while SAM embeds the image just opened.

Each test prints the gap it measured (run with -s to see them; benchmarks/ui_responsiveness.py tabulates them)
and asserts only a generous bound, since test machines vary: the goal is 50 ms on a desktop.
"""

from __future__ import annotations

import gc

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from annotator.ui.image_list import ImageListPanel
from tests.stall_meter import GapMeter, many_image_records, pending_scores
from tests.ui_fixtures import (  # noqa: F401 (fixtures are found by name)
    MODEL_TIMEOUT_MS,
    STEP_TIMEOUT_MS,
    app_settings,
    isolated_qsettings,
    make_window,
    mask_kind,
    open_folder,
    planted_model_path,
    planted_models_with_tiny_sam,
    scene_folder,
    window,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
GENEROUS_GAP_MS = 1000.0
IMAGES = 10_000


def choose(combo, key: str):
    return lambda: combo.setCurrentIndex(combo.findData(key))


@pytest.fixture
def listed_panel(qtbot) -> ImageListPanel:
    """An image list of 10,000 images, shown at a dock's size, with pending scores for the review order."""
    panel = ImageListPanel()
    qtbot.addWidget(panel)
    panel.resize(320, 900)
    panel.show()
    qtbot.waitExposed(panel)
    records = many_image_records(IMAGES)
    panel.set_records(records)
    panel.model.set_pending_scores(pending_scores(records))
    panel.select_image(records[IMAGES // 2].id)
    return panel


def test_typing_into_the_filter_box_of_10000_images_never_stalls(listed_panel):
    panel = listed_panel
    # "7": the 3439 of 0000..9999 with a 7 among four digits (10^4 - 9^4), and batch_07 / batch_17's images
    # 3500..3999 / 8500..8999 without one (4 * 9 * 9 each); "7.": the 1000 numbers ending in 7
    steps = (
        ("type '7'", lambda: QTest.keyClicks(panel.filter_box, "7"), 3439 + 2 * 324),
        ("type '.'", lambda: QTest.keyClicks(panel.filter_box, "."), 1000),
        ("backspace", lambda: QTest.keyClick(panel.filter_box, Qt.Key.Key_Backspace), 3439 + 2 * 324),
    )
    for name, step, listed in steps:
        gaps = GapMeter().measure(step)
        print(f"filter {IMAGES} images, {name}: largest gap {gaps.largest_ms:.1f} ms")
        assert panel.visible_count() == listed
        assert gaps.largest_ms < GENEROUS_GAP_MS


def test_changing_the_status_filter_and_the_order_of_10000_images_never_stalls(listed_panel):
    panel = listed_panel
    steps = (
        ("status: to do", choose(panel.status_filter, "todo"), IMAGES // 3 + 1),
        ("status: with pending proposals", choose(panel.status_filter, "pending"), IMAGES * 3 // 4),
        ("order: least confident first", choose(panel.order, "least_confident"), IMAGES * 3 // 4),
        ("status: all", choose(panel.status_filter, "all"), IMAGES),
        ("order: folder", choose(panel.order, "natural"), IMAGES),
    )
    for name, step, listed in steps:
        gaps = GapMeter().measure(step)
        print(f"{IMAGES} images, {name}: largest gap {gaps.largest_ms:.1f} ms")
        assert panel.visible_count() == listed
        assert gaps.largest_ms < GENEROUS_GAP_MS
        if name.startswith("order: least"):
            assert panel.neighbour(None, +1) == 100  # score 0.0: the first id with id * 37 % 100 == 0
    assert panel.current_image_id() == IMAGES // 2 + 1


def test_sam_embedding_the_opened_image_never_stalls(
    qtbot, make_window, app_settings, planted_model_path, scene_folder, mask_kind
):
    models = planted_models_with_tiny_sam(planted_model_path, mask_kind)
    window = make_window(app_settings)
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS):
        window.use_models(models)
    folder, _ = scene_folder
    with GapMeter() as meter:
        open_folder(qtbot, window, folder)
        qtbot.waitUntil(lambda: len(models.segmenter.cached_ids()) >= 1, timeout=STEP_TIMEOUT_MS)
    print(f"open and embed with tiny {mask_kind}: largest gap {meter.gaps.largest_ms:.1f} ms")
    assert meter.gaps.largest_ms < GENEROUS_GAP_MS


def test_loaded_models_are_kept_out_of_the_garbage_collector_until_they_are_closed(window):
    # a full collection walking the models' objects holds the GIL for a third of a second (an export's stall)
    assert gc.get_freeze_count() > 10_000
    window.shutdown()
    assert gc.get_freeze_count() == 0
