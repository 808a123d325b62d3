"""A message strip above the canvas for things the annotator must read (a model that cannot be loaded, the demo
model in use), with optional buttons; it never blocks the window the way a modal dialog would."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QWidget

LEVEL_STYLES = {
    "info": "background: #e0f2fe; color: #0c4a6e; border: 1px solid #7dd3fc;",
    "warning": "background: #fef3c7; color: #78350f; border: 1px solid #fcd34d;",
    "error": "background: #fee2e2; color: #7f1d1d; border: 1px solid #fca5a5;",
}


class MessageBar(QFrame):
    """One message at a time: text, buttons (label, callback), and a close button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._buttons: list[QPushButton] = []
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.hide)
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(10, 6, 6, 6)
        self._layout.addWidget(self.label, 1)
        self._layout.addWidget(close)
        self.hide()

    @property
    def text(self) -> str:
        return self.label.text()

    def button_texts(self) -> list[str]:
        return [button.text() for button in self._buttons]

    def button(self, text: str) -> QPushButton:
        return next(b for b in self._buttons if b.text() == text)

    def show_message(
        self, text: str, level: str = "info", buttons: Sequence[tuple[str, Callable[[], None]]] = ()
    ) -> None:
        for button in self._buttons:
            self._layout.removeWidget(button)
            button.deleteLater()
        self._buttons = []
        self.setStyleSheet(f"MessageBar {{ {LEVEL_STYLES[level]} border-radius: 4px; }}")
        self.label.setText(text)
        for position, (label, callback) in enumerate(buttons):
            button = QPushButton(label)
            button.clicked.connect(callback)
            self._layout.insertWidget(1 + position, button)
            self._buttons.append(button)
        self.show()
