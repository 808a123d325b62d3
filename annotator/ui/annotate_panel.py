"""The right-hand panel: the expression box (with history), the pending proposal (score, category, accept and
reject) and the annotations of the current image."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QKeyEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)


class ExpressionBox(QLineEdit):
    """A line edit with a shell-like history: Up recalls older expressions, Down newer ones."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._history: list[str] = []
        self._position = 0
        self._draft = ""

    def set_history(self, history: Sequence[str]) -> None:
        self._history = list(history)
        self._position = len(self._history)

    def remember(self, expression: str) -> None:
        if expression and (not self._history or self._history[-1] != expression):
            self._history = [e for e in self._history if e != expression] + [expression]
        self._position = len(self._history)

    @property
    def history(self) -> list[str]:
        return list(self._history)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Up and self._history:
            if self._position == len(self._history):
                self._draft = self.text()
            self._position = max(0, self._position - 1)
            self.setText(self._history[self._position])
            return
        if event.key() == Qt.Key.Key_Down and self._history:
            self._position = min(len(self._history), self._position + 1)
            self.setText(self._draft if self._position == len(self._history) else self._history[self._position])
            return
        super().keyPressEvent(event)


@dataclass(frozen=True)
class AnnotationRow:
    """One line of the current image's annotation list."""

    key: Hashable
    text: str
    colour: QColor
    tooltip: str


class AnnotatePanel(QWidget):
    """Expression box, proposal controls and the current image's annotations."""

    propose_requested = Signal(str)
    accept_requested = Signal()
    reject_requested = Signal()
    category_chosen = Signal(str)
    annotation_chosen = Signal(object)  # key

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.expression = ExpressionBox()
        self.expression.setPlaceholderText("Describe an object, e.g. “the red circle”, then Enter")
        self.propose_button = QPushButton("Propose")
        self.all_instances = QCheckBox("All instances (I)")
        self.all_instances.setToolTip("Propose every region the localization heads find, each as its own proposal")

        self.proposal_label = QLabel("No proposal yet.")
        self.proposal_label.setWordWrap(True)
        self.proposal_label.setTextFormat(Qt.TextFormat.PlainText)
        self.category = QComboBox()
        self.category.setEditable(True)
        self.category.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.category.lineEdit().setPlaceholderText("category")
        self.accept_button = QPushButton("Accept  (Enter)")
        self.reject_button = QPushButton("Reject  (Esc)")
        self.accept_button.setDefault(False)
        self.annotations = QListWidget()
        self.annotations.setMinimumHeight(80)
        self.annotations.setMaximumHeight(170)
        self.hint = QLabel(
            "On the active box: click adds a point, right-click (or Shift+click) a background point, click a "
            "point to remove it; drag moves the box, handles resize it. W draws a box, H shows the heatmap."
        )
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: palette(mid);")

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.expression, 1)
        top.addWidget(self.propose_button)
        expression_group = QGroupBox("Expression")
        expression_layout = QVBoxLayout(expression_group)
        expression_layout.addLayout(top)
        expression_layout.addWidget(self.all_instances)

        proposal_group = QGroupBox("Proposal")
        form = QFormLayout()
        form.addRow("Category", self.category)
        buttons = QHBoxLayout()
        buttons.addWidget(self.accept_button)
        buttons.addWidget(self.reject_button)
        proposal_layout = QVBoxLayout(proposal_group)
        proposal_layout.addWidget(self.proposal_label)
        proposal_layout.addLayout(form)
        proposal_layout.addLayout(buttons)

        list_group = QGroupBox("Annotations on this image")
        list_layout = QVBoxLayout(list_group)
        list_layout.addWidget(self.annotations)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(expression_group)
        layout.addWidget(proposal_group)
        layout.addWidget(list_group)
        layout.addWidget(self.hint)
        layout.addStretch(1)
        small = self.hint.font()
        small.setPointSizeF(small.pointSizeF() * 0.9)
        self.hint.setFont(small)

        self.expression.returnPressed.connect(self._expression_entered)
        self.propose_button.clicked.connect(self._expression_entered)
        self.accept_button.clicked.connect(self.accept_requested)
        self.reject_button.clicked.connect(self.reject_requested)
        self.category.activated.connect(lambda _: self.category_chosen.emit(self.category.currentText().strip()))
        self.category.lineEdit().returnPressed.connect(
            lambda: self.category_chosen.emit(self.category.currentText().strip())
        )
        self.annotations.currentItemChanged.connect(self._row_changed)
        self.set_proposal_state(None, can_act=False)

    def _expression_entered(self) -> None:
        self.propose_requested.emit(self.expression.text().strip())

    def set_categories(self, names: Sequence[str], current: str) -> None:
        self.category.blockSignals(True)
        self.category.clear()
        self.category.addItems(list(names))
        self.category.setEditText(current)
        self.category.blockSignals(False)

    @property
    def category_text(self) -> str:
        return self.category.currentText().strip()

    def set_proposal_state(self, text: str | None, can_act: bool) -> None:
        """Describe the active annotation (or say there is none) and enable accept/reject."""
        self.proposal_label.setText(text or "No pending proposal. Type an expression and press Enter.")
        self.accept_button.setEnabled(can_act)
        self.reject_button.setEnabled(can_act)

    def set_annotation_rows(self, rows: Sequence[AnnotationRow], active: Hashable | None) -> None:
        self.annotations.blockSignals(True)
        self.annotations.clear()
        for row in rows:
            item = QListWidgetItem(row.text)
            item.setData(Qt.ItemDataRole.UserRole, row.key)
            item.setForeground(row.colour)
            item.setToolTip(row.tooltip)
            self.annotations.addItem(item)
            if row.key == active:
                self.annotations.setCurrentItem(item)
        self.annotations.blockSignals(False)

    def _row_changed(self, current: QListWidgetItem | None, previous: QListWidgetItem | None) -> None:
        if current is not None:
            self.annotation_chosen.emit(current.data(Qt.ItemDataRole.UserRole))
