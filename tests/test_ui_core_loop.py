"""The app's core loop with the planted model: open a folder, type an expression, accept or reject, export."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
from pathlib import Path
from time import perf_counter

import numpy as np
from pycocotools.coco import COCO
from PySide6.QtCore import Qt, QTimer

from annotator.synthetic.demo_scenes import write_demo
from annotator.paths import DEMO_DIR
from annotator.ui.export_dialog import ExportDialog
from annotator.ui.settings import DEFAULT_MODEL, AppSettings, ModelSettings
from tests.ui_fixtures import (  # noqa: F401 (fixtures are found by name)
    MODEL_TIMEOUT_MS,
    STEP_TIMEOUT_MS,
    app_settings,
    box_iou,
    isolated_qsettings,
    make_window,
    open_folder,
    planted_model_path,
    propose,
    reopen_store,
    scene_folder,
    show_image_named,
    window,
    write_scenes,
)


def test_open_type_accept_export_gives_a_coco_file_with_the_planted_object(qtbot, window, scene_folder, tmp_path):
    folder, scenes = scene_folder
    open_folder(qtbot, window, folder)
    name = "scene_012.png"
    scene = scenes[name]
    show_image_named(qtbot, window, name)
    assert propose(qtbot, window, scene.expression) == 1
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(window.canvas, Qt.Key.Key_Return)

    with qtbot.waitSignal(window.exported, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(window, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
        dialog = window.export_flow.dialog
        assert isinstance(dialog, ExportDialog)
        dialog.path.setText(str(tmp_path / "export.json"))
        dialog.accept()

    coco = COCO(str(tmp_path / "export.json"))
    [annotation] = coco.loadAnns(coco.getAnnIds())
    [image] = coco.loadImgs([annotation["image_id"]])
    x, y, w, h = annotation["bbox"]
    assert image["file_name"] == name
    assert annotation["expression"] == scene.expression
    assert box_iou((x, y, x + w, y + h), scene.target.box_xyxy) >= 0.5
    assert coco.annToMask(annotation).any()


def test_the_expression_box_head_noun_becomes_the_category(qtbot, window, scene_folder):
    folder, scenes = scene_folder
    open_folder(qtbot, window, folder)
    scene = scenes[show_image_name(window)]
    colour, shape = scene.target.colour, scene.target.shape
    propose(qtbot, window, f"the {colour} {shape}")
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(window.canvas, Qt.Key.Key_Space)
    [annotation] = window.store.annotations(window.current_image_id)
    assert window.store.category(annotation.category_id).name == shape


def test_rejecting_a_proposal_leaves_nothing_in_the_store(qtbot, window, scene_folder):
    folder, scenes = scene_folder
    open_folder(qtbot, window, folder)
    scene = scenes[show_image_name(window)]
    propose(qtbot, window, scene.expression)
    assert window.canvas.annotation_keys()
    qtbot.keyClick(window.canvas, Qt.Key.Key_Escape)
    assert window.canvas.annotation_keys() == []
    with reopen_store(folder) as store:
        assert store.annotations() == []
        assert store.categories() == []


def test_an_accepted_annotation_survives_closing_and_reopening_the_app(
    qtbot, make_window, app_settings, window, scene_folder
):
    folder, scenes = scene_folder
    open_folder(qtbot, window, folder)
    scene = scenes[show_image_name(window)]
    propose(qtbot, window, scene.expression)
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(window.canvas, Qt.Key.Key_Return)
    accepted_box = window.store.annotations()[0].box_xyxy
    window.close()

    reopened = make_window(app_settings)
    open_folder(qtbot, reopened, folder)
    [annotation] = reopened.store.annotations()
    assert annotation.status == "accepted"
    assert annotation.box_xyxy == accepted_box
    assert annotation.expression == scene.expression
    assert reopened.canvas.annotation_keys() == [annotation.id]


MAX_TICK_GAP_MS = 1000.0
"""A generous bound on the longest a 10 ms timer may wait while the model works: it fails on a window that blocks
while the model runs, not on a slow or busy machine. The goal, 50 ms on an idle machine, is measured by
benchmarks/ui_responsiveness.py and printed here."""
MIN_BUSY_S = 1.0
MIN_PROPOSALS = 9
"""Work long enough to measure: at least this many proposals and at least this long, whichever takes longer."""


def test_a_10ms_timer_never_waits_long_while_inference_runs(qtbot, window, scene_folder, record_property):
    folder, scenes = scene_folder
    open_folder(qtbot, window, folder)
    names = sorted(scenes)
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(perf_counter()))
    start = perf_counter()
    timer.start()
    proposals = 0
    while proposals < MIN_PROPOSALS or perf_counter() - start < MIN_BUSY_S:
        name = names[proposals // 3 % len(names)]
        show_image_named(qtbot, window, name)
        scene = scenes[name]
        for expression in (scene.expression, "the black one", f"the {scene.target.colour} one in the picture"):
            propose(qtbot, window, expression)
            proposals += 1
    end = perf_counter()
    timer.stop()
    gaps_ms = np.diff([start, *ticks, end]) * 1000.0
    record_property("largest_gap_ms", float(gaps_ms.max()))
    print(f"10 ms timer over {proposals} proposals in {end - start:.1f} s: largest gap {gaps_ms.max():.1f} ms")
    assert gaps_ms.max() < MAX_TICK_GAP_MS


def test_switching_images_mid_inference_never_shows_the_old_proposal(qtbot, window, scene_folder):
    folder, scenes = scene_folder
    open_folder(qtbot, window, folder)
    first = show_image_name(window)
    gate = threading.Event()
    worker = window.inference.inference
    real = worker._models
    worker._models = dataclasses.replace(real, proposer=GatedProposer(real.proposer, gate))

    box = window.panel.expression
    box.setFocus()
    qtbot.keyClicks(box, scenes[first].expression)
    qtbot.keyClick(box, Qt.Key.Key_Return)
    qtbot.waitUntil(worker._models.proposer.entered.is_set, timeout=STEP_TIMEOUT_MS)
    with qtbot.waitSignal(window.image_shown, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(window.canvas, Qt.Key.Key_D)
    second = window.store.image(window.current_image_id).path
    assert second != first
    with qtbot.waitSignal(worker.proposed, timeout=STEP_TIMEOUT_MS):
        gate.set()  # the window's queued slot for `proposed` was connected first, so it has run when this returns
    assert window.canvas.annotation_keys() == []
    assert window.heads_panel.head_names == []

    assert propose(qtbot, window, scenes[second].expression) == 1
    [key] = window.canvas.annotation_keys()
    shown_box = window.canvas.item_for(key).box_xyxy
    assert box_iou(shown_box, scenes[second].target.box_xyxy) >= 0.5


def test_another_folder_never_reuses_the_cached_image_of_the_first(qtbot, window, tmp_path):
    first = write_scenes(tmp_path / "first", [21])
    second = write_scenes(tmp_path / "second", [22])
    open_folder(qtbot, window, tmp_path / "first")
    propose(qtbot, window, first["scene_021.png"].expression)
    open_folder(qtbot, window, tmp_path / "second")
    assert window.current_image_id == 1
    target = second["scene_022.png"]
    assert propose(qtbot, window, target.expression) == 1
    [key] = window.canvas.annotation_keys()
    assert box_iou(window.canvas.item_for(key).box_xyxy, target.target.box_xyxy) >= 0.5


def test_closing_the_window_mid_inference_stops_both_threads(qtbot, window, scene_folder):
    folder, scenes = scene_folder
    open_folder(qtbot, window, folder)
    gate = threading.Event()
    worker = window.inference.inference
    worker._models = dataclasses.replace(worker._models, proposer=GatedProposer(worker._models.proposer, gate))
    propose_without_waiting(qtbot, window, scenes[show_image_name(window)].expression)
    qtbot.waitUntil(worker._models.proposer.entered.is_set, timeout=STEP_TIMEOUT_MS)
    threading.Timer(0.2, gate.set).start()
    window.close()
    assert not window.inference.running
    assert not window.image_loader.running
    assert window.store is None


def test_a_corrupt_image_gives_a_message_and_the_app_keeps_working(qtbot, window, scene_folder):
    folder, scenes = scene_folder
    good = (folder / "scene_011.png").read_bytes()
    (folder / "scene_011b.png").write_bytes(good[: len(good) // 3])
    open_folder(qtbot, window, folder)
    with qtbot.waitSignal(window.message_shown, timeout=STEP_TIMEOUT_MS) as message:
        window.show_image(window.store.image_by_path("scene_011b.png").id)
    assert "scene_011b.png" in message.args[0]
    assert "scene_011b.png" in window.canvas.placeholder

    with qtbot.waitSignal(window.image_shown, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(window.canvas, Qt.Key.Key_D)
    name = window.store.image(window.current_image_id).path
    assert propose(qtbot, window, scenes[name].expression) == 1


def test_a_failing_model_load_gives_a_message_and_the_app_keeps_working(
    qtbot, make_window, app_settings, scene_folder, tmp_path
):
    missing = tmp_path / "no-such-llava"
    app_settings.set_model_settings(ModelSettings(model=str(missing), sam_type="none"))
    window = make_window(app_settings)
    with qtbot.waitSignal(window.models_changed, timeout=STEP_TIMEOUT_MS) as loaded:
        window.start_models()
    assert loaded.args[0] is None
    assert window.message_bar.isVisible()
    assert str(missing) in window.message_bar.text
    assert "Use demo model" in window.message_bar.button_texts()

    folder, scenes = scene_folder
    open_folder(qtbot, window, folder)
    with qtbot.waitSignal(window.image_shown, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(window.canvas, Qt.Key.Key_D)
    with qtbot.waitSignal(window.message_shown, timeout=STEP_TIMEOUT_MS):
        propose_without_waiting(qtbot, window, "the red one")
    assert window.canvas.annotation_keys() == []


def test_the_demo_model_is_offered_and_named_in_the_title(
    qtbot, make_window, app_settings, tmp_path, planted_model_path, monkeypatch
):
    monkeypatch.setattr("annotator.ui.settings.DEMO_MODEL_PATH", planted_model_path)
    app_settings.set_model_settings(ModelSettings(model=str(tmp_path / "no-such-llava"), sam_type="none"))
    window = make_window(app_settings)
    with qtbot.waitSignal(window.models_changed, timeout=STEP_TIMEOUT_MS):
        window.start_models()
    with qtbot.waitSignal(window.models_changed, timeout=STEP_TIMEOUT_MS) as loaded:
        qtbot.mouseClick(window.message_bar.button("Use demo model"), Qt.MouseButton.LeftButton)
    assert loaded.args[0].is_demo
    assert "DEMO" in window.windowTitle()
    assert app_settings.model_settings().model == str(planted_model_path)


def test_first_run_without_a_downloaded_model_loads_the_demo_model_and_says_why(
    qtbot, make_window, tmp_path, planted_model_path, monkeypatch
):
    monkeypatch.setattr("annotator.ui.settings.DEMO_MODEL_PATH", planted_model_path)
    settings = AppSettings.at(tmp_path / "fresh.ini")
    window = make_window(settings)
    with qtbot.waitSignal(window.message_shown, timeout=STEP_TIMEOUT_MS):
        window.start_models()
    assert DEFAULT_MODEL in window.message_bar.text
    qtbot.waitUntil(lambda: window.models_info is not None, timeout=MODEL_TIMEOUT_MS)
    assert window.models_info.is_demo
    assert "DEMO" in window.windowTitle()


def test_a_second_expression_on_the_same_image_reuses_the_image_prefix(qtbot, window, scene_folder):
    folder, scenes = scene_folder
    open_folder(qtbot, window, folder)
    scene = scenes[show_image_name(window)]
    propose(qtbot, window, scene.expression)
    qtbot.keyClick(window.canvas, Qt.Key.Key_Escape)
    propose(qtbot, window, f"the {scene.target.colour} one")
    assert window.last_proposal.timing.prefix_cached
    assert "image prefix cached" in window.statusBar().currentMessage()


def test_skipped_files_are_listed_with_their_reason(qtbot, window, scene_folder):
    folder, _ = scene_folder
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    open_folder(qtbot, window, folder)
    skipped = [window.image_list.skipped.item(i).text() for i in range(window.image_list.skipped.count())]
    assert any(text.startswith("empty.png: ") for text in skipped)
    assert window.image_list.visible_count() == 3


def test_screenshot_of_the_main_window_with_a_proposal_on_a_demo_image(qtbot, window, tmp_path):
    folder = tmp_path / "demo"
    if any(DEMO_DIR.glob("*.png")):
        shutil.copytree(DEMO_DIR, folder, ignore=shutil.ignore_patterns(".*"))
    else:
        write_demo(folder)
    open_folder(qtbot, window, folder)
    record = window.store.image(window.current_image_id)
    lines = (folder / "ground_truth.jsonl").read_text().splitlines()
    truth = {json.loads(line)["image"]: json.loads(line) for line in lines}
    target = truth[record.path]["objects"][0]
    propose(qtbot, window, target["expression"])
    window.set_heatmap_visible(False)
    qtbot.waitUntil(lambda: all(label.isVisible() for label in window.heads_panel.map_labels))
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "main_window_proposal.png"
    assert window.grab().save(str(path))
    [key] = window.canvas.annotation_keys()
    assert box_iou(window.canvas.item_for(key).box_xyxy, target["box_xyxy"]) >= 0.5
    assert path.stat().st_size > 10_000


class GatedProposer:
    """The real proposer, made to wait at `gate` once it has started proposing (a slow model, deterministically)."""

    def __init__(self, proposer, gate: threading.Event) -> None:
        self.proposer = proposer
        self.gate = gate
        self.entered = threading.Event()

    def propose(self, *args, **kwargs):
        self.entered.set()
        assert self.gate.wait(timeout=STEP_TIMEOUT_MS / 1000)
        return self.proposer.propose(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.proposer, name)


def show_image_name(window) -> str:
    return window.store.image(window.current_image_id).path


def propose_without_waiting(qtbot, window, expression: str) -> None:
    box = window.panel.expression
    box.setFocus()
    qtbot.keyClicks(box, expression)
    qtbot.keyClick(box, Qt.Key.Key_Return)


ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
