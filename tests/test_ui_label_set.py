"""The label set in the app: the category picker restricted to it, the Settings page that edits it, and the
`--labels` option of the `annotator` command."""

from __future__ import annotations

import sys
import types

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox, QMessageBox

from annotator.cli import main
from annotator.ui.annotate_panel import AnnotatePanel
from annotator.ui.palette import CATEGORY_COLOURS, category_colour
from annotator.ui.settings import AppSettings
from annotator.ui.settings_dialog import SettingsDialog

LABELS = ["person", "car", "bicycle"]


@pytest.fixture
def panel(qtbot):
    panel = AnnotatePanel()
    qtbot.addWidget(panel)
    panel.set_categories(["dog", "person", "zebra"], "person")
    panel.set_label_set(LABELS)
    return panel


@pytest.fixture
def recorded(panel):
    events: list[tuple[str, str]] = []
    panel.label_added.connect(lambda name: events.append(("label_added", name)))
    panel.category_chosen.connect(lambda name: events.append(("category_chosen", name)))
    return events


@pytest.fixture
def answer(monkeypatch):
    """Replace the add-it question by a recorder giving the answer the test sets (No unless told)."""
    asked: list[str] = []
    reply = {"button": QMessageBox.StandardButton.No}

    def question(parent, title, text, *args):
        asked.append(text)
        return reply["button"]

    monkeypatch.setattr(QMessageBox, "question", question)
    return types.SimpleNamespace(asked=asked, reply=reply)


def items(panel) -> list[str]:
    return [panel.category.itemText(i) for i in range(panel.category.count())]


def type_category(qtbot, panel, text: str, into_editor: bool = False) -> None:
    """Type into the picker: as the keyboard does (the keys go to the combo box, which passes them to its editor),
    or straight into its line edit."""
    target = panel.category.lineEdit() if into_editor else panel.category
    panel.category.lineEdit().clear()
    qtbot.keyClicks(target, text)
    qtbot.keyClick(target, Qt.Key.Key_Return)


def test_with_a_label_set_the_picker_lists_exactly_the_set_in_order_with_its_colours(panel):
    assert items(panel) == LABELS
    assert panel.label_set == LABELS
    for index, name in enumerate(LABELS):
        icon = panel.category.itemIcon(index)
        assert not icon.isNull()
        assert icon.pixmap(12, 12).toImage().pixelColor(6, 6) == category_colour(name, LABELS)
    assert category_colour("car", LABELS).name() == CATEGORY_COLOURS[1]


def test_without_a_label_set_the_picker_lists_the_categories_again(panel):
    panel.set_label_set(None)
    assert items(panel) == ["dog", "person", "zebra"]
    assert panel.label_set is None


@pytest.mark.parametrize("into_editor", [False, True], ids=["combo", "editor"])
def test_a_label_typed_in_another_case_or_plural_is_taken_as_that_label_without_asking(
    qtbot, panel, recorded, answer, into_editor
):
    type_category(qtbot, panel, "Cars", into_editor)
    assert recorded == [("category_chosen", "car")]
    assert panel.category.currentText() == "car"
    assert answer.asked == []


def test_typing_completes_within_the_set_only(qtbot, panel, recorded, answer):
    """Completion follows the keyboard focus, so the panel is shown and its picker focused first."""
    panel.show()
    panel.activateWindow()
    panel.category.setFocus()
    qtbot.waitUntil(panel.category.hasFocus)
    type_category(qtbot, panel, "Bi")
    assert recorded == [("category_chosen", "bicycle")]
    recorded.clear()
    type_category(qtbot, panel, "zeb")
    assert answer.asked == ["“zeb” is not in this project's label set. Add it?"]
    assert recorded == []


def test_choosing_a_label_from_the_list_emits_it(qtbot, panel, recorded, answer):
    panel.category.activated.emit(2)
    assert recorded == [("category_chosen", panel.category.currentText())]
    assert answer.asked == []


@pytest.mark.parametrize("into_editor", [False, True], ids=["combo", "editor"])
def test_a_new_name_asks_and_yes_adds_it_to_the_set(qtbot, panel, recorded, answer, into_editor):
    answer.reply["button"] = QMessageBox.StandardButton.Yes
    type_category(qtbot, panel, "truck", into_editor)
    assert answer.asked == ["“truck” is not in this project's label set. Add it?"]
    assert recorded == [("label_added", "truck"), ("category_chosen", "truck")]
    assert items(panel) == [*LABELS, "truck"]
    assert panel.category.currentText() == "truck"


def test_a_new_name_refused_restores_the_previous_text_and_emits_nothing(qtbot, panel, recorded, answer):
    type_category(qtbot, panel, "Bicycles")
    recorded.clear()
    type_category(qtbot, panel, "truck")
    assert len(answer.asked) == 1
    assert recorded == []
    assert panel.category.currentText() == "bicycle"
    assert items(panel) == LABELS


def test_a_refused_name_gives_way_to_the_text_the_picker_had_when_it_got_the_focus(qtbot, panel, answer):
    panel.category.setEditText("bicycle")  # as the window shows the active annotation's category
    panel.show()
    panel.activateWindow()
    panel.category.setFocus()
    qtbot.waitUntil(panel.category.hasFocus)
    type_category(qtbot, panel, "truck")
    assert len(answer.asked) == 1
    assert panel.category.currentText() == "bicycle"


def test_confirm_category_asks_for_a_typed_name_before_an_accept(panel, answer):
    panel.category.setEditText("truck")
    assert panel.category_text == "truck"
    assert panel.confirm_category() is None
    assert panel.category.currentText() == "person"
    panel.category.setEditText("PERSONS")
    assert panel.category_text == "person"
    assert panel.confirm_category() == "person"
    assert len(answer.asked) == 1


@pytest.mark.parametrize("into_editor", [False, True], ids=["combo", "editor"])
def test_without_a_label_set_any_typed_name_is_chosen_freely_once(qtbot, panel, recorded, answer, into_editor):
    panel.set_label_set(None)
    type_category(qtbot, panel, "truck", into_editor)
    assert recorded == [("category_chosen", "truck")]
    assert answer.asked == []


# ----- Settings: the label set page ---------------------------------------------------------------------------


def settings_dialog(qtbot, tmp_path, label_set):
    dialog = SettingsDialog(AppSettings.at(tmp_path / "settings.ini"), None, label_set=label_set)
    qtbot.addWidget(dialog)
    emitted: list = []
    dialog.label_set_changed.connect(emitted.append)
    return dialog, emitted


def apply(dialog) -> None:
    dialog.buttons.button(QDialogButtonBox.StandardButton.Apply).click()


def test_the_settings_label_page_emits_the_edited_set_once_on_apply(qtbot, tmp_path):
    dialog, emitted = settings_dialog(qtbot, tmp_path, ["person", "car"])
    page = dialog.label_page
    assert page.editor.toPlainText() == "person\ncar"
    apply(dialog)
    assert emitted == []
    page.editor.setPlainText("person\n\n car \nbus\nperson\n")
    apply(dialog)
    apply(dialog)
    assert emitted == [["person", "car", "bus"]]
    page.editor.setPlainText("  \n")
    apply(dialog)
    assert emitted == [["person", "car", "bus"], None]


def test_the_settings_label_page_loads_a_labels_file(qtbot, tmp_path):
    dialog, emitted = settings_dialog(qtbot, tmp_path, [])
    good = tmp_path / "labels.txt"
    good.write_text("__ignore__\n_background_\ncat\ndog\n", encoding="utf-8")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe")
    assert not dialog.label_page.load_file(str(bad))
    assert "bad.txt" in dialog.label_page.problem.text()
    assert dialog.label_page.load_file(str(good))
    assert dialog.label_page.problem.text() == ""
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    assert emitted == [["cat", "dog"]]


def test_without_an_open_project_the_label_page_is_disabled(qtbot, tmp_path):
    dialog, emitted = settings_dialog(qtbot, tmp_path, None)
    page = dialog.label_page
    assert not page.editor.isEnabled() and not page.load_button.isEnabled()
    assert "Open a folder first" in page.note.text()
    page.editor.setPlainText("cat")
    apply(dialog)
    assert emitted == []


# ----- the command's --labels ----------------------------------------------------------------------------------


@pytest.fixture
def launches(monkeypatch):
    calls: list = []
    app = types.ModuleType("annotator.ui.app")
    app.run_app = lambda folder, argv, **kwargs: calls.append((folder, kwargs)) or 0
    monkeypatch.setitem(sys.modules, "annotator.ui.app", app)
    return calls


def test_labels_opens_the_folder_with_the_files_labels(tmp_path, launches):
    labels = tmp_path / "labels.txt"
    labels.write_text("\ufeffperson\ncar\n", encoding="utf-8")
    assert main([str(tmp_path), "--labels", str(labels)]) == 0
    assert launches == [(str(tmp_path), {"labels": ["person", "car"]})]


@pytest.mark.parametrize(
    ("content", "says"),
    [(None, "no such labels file"), (b"person\n\xe9\n", "line 2: not UTF-8"), (b"\n__ignore__\n", "no labels")],
)
def test_a_bad_labels_file_is_one_line_naming_it_exit_2_and_no_window(tmp_path, capsys, launches, content, says):
    labels = tmp_path / "labels.txt"
    if content is not None:
        labels.write_bytes(content)
    assert main([str(tmp_path), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "labels.txt" in err and says in err
    assert launches == []


def test_labels_without_a_folder_is_one_line(tmp_path, capsys, launches):
    labels = tmp_path / "labels.txt"
    labels.write_text("person\n", encoding="utf-8")
    assert main(["--labels", str(labels)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--labels needs a FOLDER" in err
    assert launches == []
