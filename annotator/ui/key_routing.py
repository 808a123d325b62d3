"""Which wins when a text field and the window both want a key: the app's Ctrl/Alt shortcuts.

A QLineEdit claims many Ctrl keys for itself (on Linux Ctrl+E is "end of line", Ctrl+D "delete"), which would
make Ctrl+E export and Ctrl+D mark-done dead while the annotator's cursor is in the expression box. This filter
lets the window's modifier shortcuts through, except the text field's own undo and redo while it has something
to undo or redo, and the clipboard and selection keys annotators use in text (Ctrl+A/C/V/X). Plain keys (letters,
Enter, Space, Backspace, Delete) stay with the text field.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QKeyCombination, QObject, Qt
from PySide6.QtGui import QKeyEvent, QKeySequence
from PySide6.QtWidgets import QLineEdit

TEXT_KEYS = (
    QKeySequence.StandardKey.SelectAll,
    QKeySequence.StandardKey.Copy,
    QKeySequence.StandardKey.Paste,
    QKeySequence.StandardKey.Cut,
)


class AppShortcutsFirst(QObject):
    """Event filter for line edits: the window's modifier shortcuts (`keys`, portable text) are not taken over."""

    def __init__(self, keys: set[str], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.keys = keys

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() != QEvent.Type.ShortcutOverride or not isinstance(event, QKeyEvent):
            return False
        if not isinstance(watched, QLineEdit) or not self._is_app_key(event):
            return False
        if any(event.matches(standard) for standard in TEXT_KEYS):
            return False
        if event.matches(QKeySequence.StandardKey.Undo) and watched.isUndoAvailable():
            return False
        if event.matches(QKeySequence.StandardKey.Redo) and watched.isRedoAvailable():
            return False
        event.ignore()
        return True

    def _is_app_key(self, event: QKeyEvent) -> bool:
        modifiers = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        if not modifiers & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier):
            return False
        combination = QKeyCombination(modifiers, Qt.Key(event.key()))
        return QKeySequence(combination).toString(QKeySequence.SequenceFormat.PortableText) in self.keys


def modifier_keys(sequences: list[str]) -> set[str]:
    """The key sequences (portable text) that use Ctrl or Alt."""
    keys = set()
    for text in sequences:
        portable = QKeySequence(text).toString(QKeySequence.SequenceFormat.PortableText)
        if "Ctrl+" in portable or "Alt+" in portable:
            keys.add(portable)
    return keys
