"""Help > Keyboard Shortcuts: the shortcut table as the app uses it now (settings' overrides applied)."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from annotator.ui.shortcuts import SHORTCUTS, effective_keys


def display_text(menu_text: str) -> str:
    """A menu text without its mnemonic ampersand and ellipsis."""
    return menu_text.replace("&", "").rstrip("…")


class ShortcutsDialog(QDialog):
    """A read-only table: action, keys, what it does."""

    def __init__(self, overrides: dict[str, tuple[str, ...]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.table = QTableWidget(len(SHORTCUTS), 3)
        self.table.setHorizontalHeaderLabels(["Action", "Keys", "What it does"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
        for row, shortcut in enumerate(SHORTCUTS):
            keys = " / ".join(effective_keys(shortcut.action, overrides))
            where = "  (on the image)" if shortcut.scope == "canvas" else ""
            self.table.setItem(row, 0, QTableWidgetItem(display_text(shortcut.text)))
            self.table.setItem(row, 1, QTableWidgetItem(keys + where))
            self.table.setItem(row, 2, QTableWidgetItem(shortcut.description))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        note = QLabel(
            "Mouse: wheel zooms, middle drag or Space + drag pans. On the active annotation a click adds a SAM point "
            "(right-click or Shift+click: a negative one), a click on a point removes it, a drag moves the box and "
            "the handles resize it. Keys can be changed in Settings."
        )
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(note)
        layout.addWidget(buttons)
        self.resize(760, 640)
