"""A message strip above the canvas for things the annotator must read (a folder that cannot be opened, a model
that cannot be loaded, the demo model in use), with optional buttons; it never blocks the window the way a modal
dialog would.

Messages are kept by topic ("folder", "image", "model", "export", ...): a new message replaces only its own
topic's, so an error about the folder is not pushed away by the model's banner. The bar shows the most severe
message (the latest among equals) and says how many more wait behind it. A message stays until the annotator
dismisses it (the close button, which then shows the next) or the window clears its topic because the cause is
gone (a folder opened fine, another image shown, a model loaded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Literal

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QWidget

Level = Literal["info", "warning", "error"]
LEVEL_STYLES = {
    "info": "background: #e0f2fe; color: #0c4a6e; border: 1px solid #7dd3fc;",
    "warning": "background: #fef3c7; color: #78350f; border: 1px solid #fcd34d;",
    "error": "background: #fee2e2; color: #7f1d1d; border: 1px solid #fca5a5;",
}
SEVERITY: dict[str, int] = {"info": 0, "warning": 1, "error": 2}


@dataclass(frozen=True)
class Message:
    """One topic's message: its text, level, buttons (label, callback) and when it was set (a counter)."""

    topic: str
    text: str
    level: Level
    buttons: tuple[tuple[str, Callable[[], None]], ...]
    order: int


class MessageBar(QFrame):
    """Messages by topic; the most severe one shows, with its buttons, a count of the others and a close button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._messages: dict[str, Message] = {}
        self._shown: Message | None = None
        self._order = count()
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.more = QLabel()
        self.more.setToolTip("Dismiss this message to read the next")
        self._buttons: list[QPushButton] = []
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.dismiss)
        self.close_button = close
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(10, 6, 6, 6)
        self._layout.addWidget(self.label, 1)
        self._layout.addWidget(self.more)
        self._layout.addWidget(close)
        self.hide()

    @property
    def text(self) -> str:
        """The shown message's text ("" when none is shown)."""
        return self._shown.text if self._shown is not None else ""

    def message(self, topic: str) -> Message | None:
        """The message kept for `topic`, shown or waiting."""
        return self._messages.get(topic)

    def button_texts(self) -> list[str]:
        return [button.text() for button in self._buttons]

    def button(self, text: str) -> QPushButton:
        return next(b for b in self._buttons if b.text() == text)

    def show_message(
        self,
        text: str,
        level: Level = "info",
        buttons: Sequence[tuple[str, Callable[[], None]]] = (),
        *,
        topic: str,
    ) -> None:
        """Set `topic`'s message (the others stay) and show the most severe one."""
        if level not in SEVERITY:
            raise ValueError(f"unknown message level {level!r}")
        self._messages[topic] = Message(topic, text, level, tuple(buttons), next(self._order))
        self._render()

    def clear(self, *topics: str) -> None:
        """Forget the messages of `topics` (their cause is gone); the next one shows, or the bar hides."""
        for topic in topics:
            self._messages.pop(topic, None)
        self._render()

    def dismiss(self) -> None:
        """The annotator closed the shown message; the next one shows, or the bar hides."""
        if self._shown is not None:
            self.clear(self._shown.topic)

    def _render(self) -> None:
        best = max(self._messages.values(), key=_rank, default=None)
        waiting = len(self._messages) - 1
        self.more.setText(f"+{waiting} more" if waiting > 0 else "")
        self.more.setVisible(waiting > 0)
        if best is self._shown:
            return
        self._shown = best
        for button in self._buttons:
            self._layout.removeWidget(button)
            button.deleteLater()
        self._buttons = []
        if best is None:
            self.label.setText("")
            self.hide()
            return
        self.setStyleSheet(f"MessageBar {{ {LEVEL_STYLES[best.level]} border-radius: 4px; }}")
        self.label.setText(best.text)
        for position, (label, callback) in enumerate(best.buttons):
            button = QPushButton(label)
            button.clicked.connect(callback)
            self._layout.insertWidget(1 + position, button)
            self._buttons.append(button)
        self.show()


def _rank(message: Message) -> tuple[int, int]:
    return SEVERITY[message.level], message.order
