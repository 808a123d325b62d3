"""Tiny random LLaVA-NeXT and LLaVA-OneVision checkpoints saved with save_pretrained, through the CLI (`prelabel` with
a heads file written by hand, then `eval`) and the app (the window loads the model and its heads file, and a typed
expression gets a proposal): the wiring, not accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from annotator.cli import main
from annotator.evaluation_files import read_predictions
from annotator.lvlm.engine import LvlmEngine
from annotator.synthetic.scene_folder import write_scene_folder
from annotator.synthetic.scenes import SceneConfig
from annotator.ui.settings import AppSettings, ModelSettings
from tests.tiny_llava_next import NEXT, ONEVISION, tiny_anyres, tiny_processor
from tests.ui_fixtures import (  # noqa: F401 (fixtures are found by name)
    MODEL_TIMEOUT_MS,
    isolated_qsettings,
    make_window,
    open_folder,
    propose,
    write_scenes,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCENES = SceneConfig(long_side=(160, 240), aspect=(0.5, 2.0))


def saved_checkpoint(spec, folder: Path) -> tuple[Path, Path]:
    """The tiny model and processor saved in `folder`, and a heads file written by hand beside it."""
    tiny_anyres(spec).save_pretrained(folder)
    tiny_processor(spec).save_pretrained(folder)
    heads = folder.parent / f"{folder.name}-heads.json"
    heads.write_text(json.dumps({"model": str(folder), "heads": [[1, 0], [2, 3]]}), encoding="utf-8")
    return folder, heads


@pytest.mark.parametrize("spec", [NEXT, ONEVISION], ids=["llava-next", "llava-onevision"])
def test_prelabel_then_eval_run_on_a_saved_anyres_checkpoint(spec, tmp_path, capsys):
    model, heads = saved_checkpoint(spec, tmp_path / "model")
    folder = tmp_path / "scenes"
    ground_truth = write_scene_folder(folder, 3, 17, SCENES)
    out = tmp_path / "prelabel.json"
    command = ["prelabel", str(folder), "--expressions", str(ground_truth), "--model", str(model)]
    command += ["--heads", str(heads), "--out", str(out), "--device", "cpu", "--masks", "coarse"]
    assert main(command) == 0, capsys.readouterr().err
    predictions = read_predictions(out)
    assert len(predictions) == 3
    capsys.readouterr()
    assert main(["eval", "--gt", str(ground_truth), "--pred", str(out)]) == 0
    assert "| synthetic | 3 | 0 |" in capsys.readouterr().out


def test_the_app_loads_a_saved_onevision_checkpoint_with_its_heads_and_proposes(qtbot, make_window, tmp_path):
    model, heads = saved_checkpoint(ONEVISION, tmp_path / "model")
    settings = AppSettings.at(tmp_path / "settings.ini")
    settings.set_model_settings(ModelSettings(model=str(model), heads_file=str(heads), sam_type="none"))
    window = make_window(settings)
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS) as loaded:
        window.start_models()
    assert loaded.args[0] is not None, window.message_bar.text
    assert list(loaded.args[0].heads) == [(1, 0), (2, 3)]
    folder = tmp_path / "images"
    [scene] = write_scenes(folder, [3], SCENES).values()
    open_folder(qtbot, window, folder)
    assert propose(qtbot, window, "the red cup") == 1
    qtbot.keyClick(window.canvas, Qt.Key.Key_H)
    assert window.canvas.overlay_visible and window.canvas.has_overlay
    grid_h, grid_w = LvlmEngine.load(model).layout_for(scene.width, scene.height).grid_hw
    assert grid_h != grid_w
    qtbot.waitUntil(lambda: all(label.isVisible() for label in window.heads_panel.map_labels))
    for label in window.heads_panel.map_labels:  # the stitched grid, not the square base grid
        assert abs(label.pixmap().width() / label.pixmap().height() - grid_w / grid_h) < 0.05
