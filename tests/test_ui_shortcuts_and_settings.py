"""The shortcut table drives the keys; the settings dialog writes QSettings and reloads the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence

from annotator.ui.settings import AppSettings, ModelSettings
from annotator.ui.settings_dialog import SettingsDialog
from annotator.ui.shortcuts import SHORTCUTS
from tests.ui_fixtures import (  # noqa: F401 (fixtures are found by name)
    MODEL_TIMEOUT_MS,
    app_settings,
    isolated_qsettings,
    make_window,
    planted_model_path,
    window,
)

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def key_and_modifiers(text: str) -> tuple[Qt.Key, Qt.KeyboardModifier]:
    combination = QKeySequence(text)[0]
    return combination.key(), combination.keyboardModifiers()


def record_triggers(window) -> list[str]:
    """Replace every action's handler by a recorder of its name (no dialogs, no navigation)."""
    triggered: list[str] = []
    for name, action in window.actions_by_name.items():
        action.triggered.disconnect()
        action.triggered.connect(lambda _=False, n=name: triggered.append(n))
        action.setEnabled(True)
    return triggered


@pytest.mark.parametrize("shortcut", SHORTCUTS, ids=lambda s: s.action)
def test_every_shortcut_in_the_table_triggers_its_action(qtbot, make_window, app_settings, shortcut):
    window = make_window(app_settings)
    triggered = record_triggers(window)
    window.canvas.setFocus()
    for keys in shortcut.keys:
        triggered.clear()
        key, modifiers = key_and_modifiers(keys)
        qtbot.keyClick(window.canvas, key, modifiers)
        assert triggered == [shortcut.action], keys


def test_a_shortcut_overridden_in_the_settings_replaces_the_default(qtbot, make_window, app_settings):
    app_settings.set_shortcut_overrides({"next_image": ("N",)})
    window = make_window(app_settings)
    triggered = record_triggers(window)
    window.canvas.setFocus()
    qtbot.keyClick(window.canvas, Qt.Key.Key_N)
    qtbot.keyClick(window.canvas, Qt.Key.Key_D)
    assert triggered == ["next_image"]


def test_app_shortcuts_reach_the_window_from_the_expression_box_but_letters_are_typed(qtbot, make_window, app_settings):
    window = make_window(app_settings)
    triggered = record_triggers(window)
    box = window.panel.expression
    box.setFocus()
    qtbot.keyClicks(box, "dewa")
    qtbot.keyClick(box, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    assert box.text() == "dewa"
    assert triggered == ["export"]


def test_the_shortcuts_dialog_lists_the_table(qtbot, make_window, app_settings):
    window = make_window(app_settings)
    qtbot.keyClick(window.canvas, Qt.Key.Key_F1)
    table = window.shortcuts_dialog.table
    assert table.rowCount() == len(SHORTCUTS)
    rows = {table.item(row, 0).text(): table.item(row, 1).text() for row in range(table.rowCount())}
    assert rows["Redo"] == "Ctrl+Shift+Z / Ctrl+Y"
    assert rows["Accept Proposal"] == "Return / Enter / Space  (on the image)"


def test_applying_the_settings_dialog_writes_them_and_reloads_the_models(qtbot, window, planted_model_path):
    window.open_settings()
    dialog = window.settings_dialog
    assert isinstance(dialog, SettingsDialog)
    dialog.prefix_cache.setValue(3)
    dialog.max_image_tokens.setValue(2048)
    dialog.tolerance.setValue(1.25)
    row = [s.action for s in SHORTCUTS].index("fit")
    dialog.shortcuts.item(row, 1).setText("G")
    qtbot.waitUntil(dialog.isVisible)
    ARTIFACTS.mkdir(exist_ok=True)
    assert dialog.grab().save(str(ARTIFACTS / "settings_dialog.png"))
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS) as reloaded:
        qtbot.mouseClick(dialog.buttons.button(dialog.buttons.StandardButton.Ok), Qt.MouseButton.LeftButton)
    assert reloaded.args[0] is not None
    assert window.settings.model_settings().prefix_cache_images == 3
    assert window.settings.model_settings().max_image_tokens == 2048
    assert window.settings.polygon_tolerance_px == 1.25
    assert window.settings.shortcut_overrides() == {"fit": ("G",)}
    assert window.actions_by_name["fit"].shortcut().toString() == "G"


def test_a_shortcut_bound_twice_is_refused_by_the_settings_dialog(qtbot, app_settings):
    dialog = SettingsDialog(app_settings)
    qtbot.addWidget(dialog)
    row = [s.action for s in SHORTCUTS].index("fit")
    dialog.shortcuts.item(row, 1).setText("D")
    assert dialog.shortcut_overrides() is None
    assert "bound to both" in dialog.shortcut_problem.text()
    assert not dialog.apply()
    assert app_settings.shortcut_overrides() == {}


def test_the_4bit_choice_in_the_settings_dialog_is_written_and_the_demo_model_drops_it(qtbot, app_settings):
    dialog = SettingsDialog(app_settings)
    qtbot.addWidget(dialog)
    assert not dialog.load_in_4bit.isChecked()
    dialog.load_in_4bit.setChecked(True)
    assert dialog.apply()
    assert app_settings.model_settings().load_in_4bit
    assert not app_settings.model_settings().with_demo_model().load_in_4bit
    assert SettingsDialog(app_settings).load_in_4bit.isChecked()


def test_settings_round_trip_through_an_ini_file(tmp_path):
    settings = AppSettings.at(tmp_path / "s.ini")
    models = ModelSettings(
        model="/models/llava",
        heads_file="/h.json",
        sam_type="vit_b",
        device="cuda:1",
        dtype="bfloat16",
        load_in_4bit=True,
    )
    settings.set_model_settings(models)
    settings.add_recent_folder(tmp_path)
    settings.add_expression("the red car")
    settings.sync()
    again = AppSettings.at(tmp_path / "s.ini")
    assert again.model_settings() == models
    assert again.recent_folders() == [str(tmp_path.resolve())]
    assert again.expression_history() == ["the red car"]
