"""The planted Qwen2-VL through the CLI and the app, as a user runs them: find-heads, prelabel, eval, and the
app's open / type / accept / export loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from PySide6.QtCore import Qt

from annotator.cli import main
from annotator.evaluation import evaluate
from annotator.evaluation_files import read_ground_truth, read_predictions
from annotator.lvlm.qwen2_vl import qwen_layout
from annotator.synthetic.planted_qwen import MAX_PIXELS, MIN_PIXELS, PLANTED_QWEN_DIR, PLANTED_QWEN_HEADS
from annotator.synthetic.scene_folder import write_scene_folder
from annotator.synthetic.scenes import SceneConfig
from annotator.ui.export_dialog import ExportDialog
from annotator.ui.settings import AppSettings, ModelSettings
from tests.ui_fixtures import (  # noqa: F401 (fixtures are found by name)
    STEP_TIMEOUT_MS,
    MODEL_TIMEOUT_MS,
    box_iou,
    isolated_qsettings,
    make_window,
    open_folder,
    propose,
    show_image_named,
    write_scenes,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCENES = SceneConfig(long_side=(448, 640), aspect=(0.5, 2.0), target_width=(0.35, 0.5), other_width=(0.12, 0.25))


def test_find_heads_on_the_planted_qwen_finds_exactly_its_planted_heads(tmp_path, capsys):
    out = tmp_path / "qwen-heads.json"
    code = main(
        ["find-heads", "--model", str(PLANTED_QWEN_DIR), "--synthetic", "200", "--out", str(out), "--device", "cpu"]
    )
    assert code == 0, capsys.readouterr().err
    found = [tuple(head) for head in json.loads(out.read_text())["heads"]]
    assert sorted(found) == sorted(PLANTED_QWEN_HEADS.localization)


def test_prelabel_then_eval_with_the_planted_qwen_hits_the_targets(tmp_path, capsys):
    folder = tmp_path / "scenes"
    ground_truth = write_scene_folder(folder, 12, 23, SCENES)
    out = tmp_path / "qwen.json"
    command = ["prelabel", str(folder), "--expressions", str(ground_truth), "--model", str(PLANTED_QWEN_DIR)]
    assert main([*command, "--out", str(out), "--device", "cpu", "--masks", "coarse", "--max-pixels", "401408"]) == 0
    predictions = read_predictions(out)
    assert len(predictions) == 12
    assert evaluate(read_ground_truth(ground_truth), predictions).overall.accuracy >= 0.9
    capsys.readouterr()
    assert main(["eval", "--gt", str(ground_truth), "--pred", str(out)]) == 0
    assert "| synthetic | 12 | 0 |" in capsys.readouterr().out


def test_the_app_proposes_with_the_planted_qwen_and_exports_the_accepted_box(qtbot, make_window, tmp_path):
    settings = AppSettings.at(tmp_path / "settings.ini")
    settings.set_model_settings(ModelSettings(model=str(PLANTED_QWEN_DIR), sam_type="none"))
    window = make_window(settings)
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS) as loaded:
        window.start_models()
    assert loaded.args[0] is not None, window.message_bar.text
    assert list(loaded.args[0].heads) == list(PLANTED_QWEN_HEADS.localization)
    folder = tmp_path / "images"
    scenes = write_scenes(folder, [31, 32], SCENES)
    open_folder(qtbot, window, folder)
    name = "scene_032.png"
    show_image_named(qtbot, window, name)
    assert propose(qtbot, window, scenes[name].expression) == 1
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
    x, y, w, h = annotation["bbox"]
    assert box_iou((x, y, x + w, y + h), scenes[name].target.box_xyxy) >= 0.5


def test_on_a_wide_image_the_heads_panel_shows_qwens_own_grid_and_the_heatmap_lights_the_target(
    qtbot, make_window, tmp_path
):
    settings = AppSettings.at(tmp_path / "settings.ini")
    settings.set_model_settings(ModelSettings(model=str(PLANTED_QWEN_DIR), sam_type="none"))
    window = make_window(settings)
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS):
        window.start_models()
    wide = SceneConfig(long_side=(640, 640), aspect=(2.0, 2.0), target_width=(0.2, 0.25), other_width=(0.1, 0.15))
    scenes = write_scenes(tmp_path / "wide", [41], wide)
    open_folder(qtbot, window, tmp_path / "wide")
    [scene] = scenes.values()
    assert propose(qtbot, window, scene.expression) == 1
    qtbot.keyClick(window.canvas, Qt.Key.Key_H)
    assert window.canvas.overlay_visible and window.canvas.has_overlay
    overlay = window.canvas.overlay_image
    width, height = overlay.width(), overlay.height()
    alpha = np.array([[overlay.pixelColor(x, y).alpha() for x in range(width)] for y in range(height)])
    row, column = np.unravel_index(np.argmax(alpha), alpha.shape)
    x0, y0, x1, y1 = scene.target.box_xyxy
    assert x0 <= (column + 0.5) * scene.width / width <= x1
    assert y0 <= (row + 0.5) * scene.height / height <= y1
    grid_h, grid_w = qwen_layout(scene.width, scene.height, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS).grid_hw
    assert grid_w > 1.8 * grid_h
    qtbot.waitUntil(lambda: all(label.isVisible() for label in window.heads_panel.map_labels))
    for label in window.heads_panel.map_labels:
        pixmap = label.pixmap()
        assert abs(pixmap.width() / pixmap.height() - grid_w / grid_h) < 0.05
