"""The export dialog: COCO instances or RefCOCO-style, polygons or RLE, where to write (default under `exports/`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QWidget,
)

from annotator.paths import EXPORTS_DIR


@dataclass(frozen=True)
class ExportChoice:
    """`kind` "coco" (one instances JSON at `path`) or "refcoco" (a folder with instances.json and refs.json);
    `segmentation` "polygon" or "rle"; `include_pending` also exports pending annotations."""

    kind: str
    segmentation: str
    path: Path
    include_pending: bool


def default_export_path(kind: str, project_name: str) -> Path:
    return EXPORTS_DIR / (f"{project_name}.json" if kind == "coco" else f"{project_name}-refcoco")


class ExportDialog(QDialog):
    """Asks how and where to export; `choice()` reads the answer."""

    def __init__(self, project_name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export annotations")
        self._project_name = project_name
        self.kind = QComboBox()
        self.kind.addItem("COCO instances (one JSON file)", "coco")
        self.kind.addItem("RefCOCO-style (instances.json + refs.json with expressions and splits)", "refcoco")
        self.segmentation = QComboBox()
        self.segmentation.addItem("Polygons (RLE for masks with holes)", "polygon")
        self.segmentation.addItem("Compressed RLE", "rle")
        self.include_pending = QCheckBox("Also export pending (not yet reviewed) annotations")
        self.path = QLineEdit(str(default_export_path("coco", project_name)))
        browse = QPushButton("Browse…")
        path_row = QHBoxLayout()
        path_row.addWidget(self.path, 1)
        path_row.addWidget(browse)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        form = QFormLayout(self)
        form.addRow("Format", self.kind)
        form.addRow("Masks as", self.segmentation)
        form.addRow("Write to", path_row)
        form.addRow("", self.include_pending)
        form.addRow(buttons)
        self.resize(620, self.sizeHint().height())

        self.kind.currentIndexChanged.connect(self._kind_changed)
        browse.clicked.connect(self._browse)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)

    def choice(self) -> ExportChoice:
        return ExportChoice(
            kind=str(self.kind.currentData()),
            segmentation=str(self.segmentation.currentData()),
            path=Path(self.path.text().strip()).expanduser(),
            include_pending=self.include_pending.isChecked(),
        )

    def _kind_changed(self) -> None:
        kind = str(self.kind.currentData())
        other = "refcoco" if kind == "coco" else "coco"
        if Path(self.path.text()) == default_export_path(other, self._project_name):
            self.path.setText(str(default_export_path(kind, self._project_name)))

    def _browse(self) -> None:
        current = self.path.text()
        if self.kind.currentData() == "coco":
            chosen, _ = QFileDialog.getSaveFileName(self, "Export COCO file", current, "COCO JSON (*.json)")
        else:
            chosen = QFileDialog.getExistingDirectory(self, "Export RefCOCO-style folder", current)
        if chosen:
            self.path.setText(chosen)
