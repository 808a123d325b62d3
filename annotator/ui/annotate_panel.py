"""The right-hand panel: the expression box (with history), the pending proposal (score, category, accept and
reject) and the annotations of the current image.

With a label set (`AnnotatePanel.set_label_set`) the category picker lists exactly the set, in its order, with
each label's colour; a typed name that is a label up to case and plural is taken as that label, and any other
name is added only when the user says so (`label_added`)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QObject, QStringListModel, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QKeyEvent, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QCompleter,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from annotator.labels.label_set import LabelSet, parse_labels
from annotator.ui.palette import category_colour


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
    label_added = Signal(str)
    """A name the user chose to add to the label set (emitted before `category_chosen` with the same name)."""
    annotation_chosen = Signal(object)  # key

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._label_set: LabelSet | None = None
        self._names: list[str] = []
        self._chosen = ""
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
        self._completions = QStringListModel(self)
        completer = QCompleter(self._completions, self.category)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setCompletionMode(QCompleter.CompletionMode.InlineCompletion)
        self.category.setCompleter(completer)
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
        self.category.activated.connect(lambda _: self._category_entered())
        self.category.installEventFilter(self)
        self.category.lineEdit().installEventFilter(self)
        self.annotations.currentItemChanged.connect(self._row_changed)
        self.set_proposal_state(None, can_act=False)

    def _expression_entered(self) -> None:
        self.propose_requested.emit(self.expression.text().strip())

    def set_categories(self, names: Sequence[str], current: str) -> None:
        """The picker's categories (ignored while a label set is on: the picker lists the set) and its text."""
        self._names = list(names)
        self._chosen = current
        self._fill_categories(current)

    def set_label_set(self, names: Sequence[str] | None) -> None:
        """Restrict the picker to these labels (in this order), or lift the restriction with None."""
        labels = parse_labels(names or ())
        self._label_set = LabelSet(tuple(labels)) if labels else None
        self._fill_categories(self.category.currentText())

    @property
    def label_set(self) -> list[str] | None:
        return None if self._label_set is None else list(self._label_set.names)

    @property
    def category_text(self) -> str:
        """The picker's text; with a label set, the label it names up to case and plural when it names one."""
        text = self.category.currentText().strip()
        label = self._label_set.match(text) if self._label_set is not None and text else None
        return label or text

    def confirm_category(self) -> str | None:
        """The category to use for the picker's text, asking first when a label set is on and the text names no
        label: the label or added name, or None (the previous text restored) when the user declines."""
        text = self.category.currentText().strip()
        if self._label_set is None or not text:
            return text
        label = self._label_set.match(text)
        if label is not None:
            self._show_chosen(label)
            return label
        answer = QMessageBox.question(
            self,
            "Label set",
            f"“{text}” is not in this project's label set. Add it?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
            self._show_chosen(self._chosen)
            return None
        self._label_set = LabelSet((*self._label_set.names, text))
        self._fill_categories(text)
        self.label_added.emit(text)
        return text

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Enter in the category picker is handled here, once (the combo box would also report it as an
        activation, and again through its editor); the text it had on getting the focus is what a refused name
        gives way to."""
        if watched in (self.category, self.category.lineEdit()):
            if event.type() == QEvent.Type.FocusIn:
                self._chosen = self.category.currentText().strip()
            elif event.type() == QEvent.Type.KeyPress and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self._category_entered()
                return True
        return super().eventFilter(watched, event)

    def _category_entered(self) -> None:
        name = self.confirm_category()
        if name is not None:
            self._chosen = name
            self.category_chosen.emit(name)

    def _show_chosen(self, text: str) -> None:
        self.category.blockSignals(True)
        self.category.setEditText(text)
        self.category.blockSignals(False)

    def _fill_categories(self, current: str) -> None:
        labels = None if self._label_set is None else list(self._label_set.names)
        self.category.blockSignals(True)
        self.category.clear()
        for name in labels if labels is not None else self._names:
            self.category.addItem(_swatch(category_colour(name, labels)), name)
        self._completions.setStringList([self.category.itemText(i) for i in range(self.category.count())])
        self.category.setEditText(current)
        self.category.blockSignals(False)

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


def _swatch(colour: QColor) -> QIcon:
    pixmap = QPixmap(12, 12)
    pixmap.fill(colour)
    return QIcon(pixmap)
