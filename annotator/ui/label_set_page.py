"""The Settings page of the open project's label set: the labels one a line (editable, in order) and a button that
loads labelme's labels.txt."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from annotator.labels.errors import LabelsFileError
from annotator.labels.label_set import parse_labels, read_labels_file


class LabelSetPage(QWidget):
    """Edits a project's label set. `label_set` None: no project is open (the page is disabled); [] or a list:
    the project's set (empty: no fixed set)."""

    def __init__(self, label_set: Sequence[str] | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.has_project = label_set is not None
        self._saved = list(label_set) if label_set else None
        self.editor = QPlainTextEdit("\n".join(label_set or ()))
        self.editor.setPlaceholderText("person\ncar\nbicycle")
        self.load_button = QPushButton("Load labels.txt…")
        self.load_button.clicked.connect(self._browse)
        self.note = QLabel(
            "One label a line, in order: the annotation picker offers only these, and a label's colour is its "
            "place in the list. Leave it empty for no fixed set."
            if self.has_project
            else "Open a folder first: the label set belongs to a project."
        )
        self.note.setWordWrap(True)
        self.problem = QLabel()
        self.problem.setStyleSheet("color: #b91c1c;")
        buttons = QHBoxLayout()
        buttons.addWidget(self.load_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.note)
        layout.addWidget(self.editor, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.problem)
        self.editor.setEnabled(self.has_project)
        self.load_button.setEnabled(self.has_project)

    def names(self) -> list[str] | None:
        """The labels as edited (blank lines, labelme's special lines and repeats dropped); None for no fixed set."""
        return parse_labels(self.editor.toPlainText().splitlines()) or None

    def changed(self) -> bool:
        return self.has_project and self.names() != self._saved

    def mark_saved(self) -> None:
        """The edited labels are now the project's (the next `changed` compares with them)."""
        self._saved = self.names()

    def load_file(self, path: str) -> bool:
        """Replace the edited labels by a labels file's; False (and the reason shown) when it cannot be read."""
        try:
            labels = read_labels_file(path)
        except LabelsFileError as exc:
            self.problem.setText(str(exc))
            return False
        self.problem.setText("")
        self.editor.setPlainText("\n".join(labels))
        return True

    def _browse(self) -> None:
        chosen, _ = QFileDialog.getOpenFileName(self, "Labels file", "", "Label lists (*.txt);;All files (*)")
        if chosen:
            self.load_file(chosen)
