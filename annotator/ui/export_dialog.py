"""The export dialog: COCO (one file or a dataset folder), RefCOCO-style, YOLO or Pascal VOC; polygons or RLE;
images linked or copied into a folder export; where to write (default under `exports/`)."""

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

KINDS = {
    "coco": "COCO instances (one JSON file)",
    "coco-folder": "COCO dataset folder (annotations/ + images/, as Datumaro and CVAT import it)",
    "refcoco": "RefCOCO-style (instances.json + refs.json with expressions and splits)",
    "yolo": "YOLO (Ultralytics: data.yaml, images/, labels/)",
    "voc": "Pascal VOC (XML boxes, PNG masks)",
}
FOLDER_SUFFIX = {"coco-folder": "-coco", "refcoco": "-refcoco", "yolo": "-yolo", "voc": "-voc"}


@dataclass(frozen=True)
class ExportChoice:
    """`kind` one of `KINDS`: "coco" writes one instances JSON at `path`, the others a folder; `segmentation`
    "polygon" or "rle" (COCO kinds); `include_pending` also exports pending annotations; `images` "link", "copy"
    or "none" (the folder kinds but RefCOCO); `task` "detect" or "segment" (YOLO)."""

    kind: str
    segmentation: str
    path: Path
    include_pending: bool
    images: str = "link"
    task: str = "detect"


def default_export_path(kind: str, project_name: str) -> Path:
    return EXPORTS_DIR / (f"{project_name}.json" if kind == "coco" else f"{project_name}{FOLDER_SUFFIX[kind]}")


class ExportDialog(QDialog):
    """Asks how and where to export; `choice()` reads the answer."""

    def __init__(self, project_name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export annotations")
        self._project_name = project_name
        self._shown_kind = "coco"
        self.kind = QComboBox()
        for kind, label in KINDS.items():
            self.kind.addItem(label, kind)
        self.segmentation = QComboBox()
        self.segmentation.addItem("Polygons (RLE for masks with holes)", "polygon")
        self.segmentation.addItem("Compressed RLE", "rle")
        self.task = QComboBox()
        self.task.addItem("Boxes (detection)", "detect")
        self.task.addItem("Mask outlines (segmentation)", "segment")
        self.images = QComboBox()
        self.images.addItem("Hard links to the images (copies where links fail)", "link")
        self.images.addItem("Copies of the images", "copy")
        self.images.addItem("No images (annotations only)", "none")
        self.include_pending = QCheckBox("Also export pending (not yet reviewed) annotations")
        self.path = QLineEdit(str(default_export_path("coco", project_name)))
        browse = QPushButton("Browse…")
        path_row = QHBoxLayout()
        path_row.addWidget(self.path, 1)
        path_row.addWidget(browse)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        self.form = QFormLayout(self)
        self.form.addRow("Format", self.kind)
        self.form.addRow("Masks as", self.segmentation)
        self.form.addRow("YOLO labels", self.task)
        self.form.addRow("Images", self.images)
        self.form.addRow("Write to", path_row)
        self.form.addRow("", self.include_pending)
        self.form.addRow(buttons)
        self.resize(680, self.sizeHint().height())
        self._kind_changed()

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
            images=str(self.images.currentData()),
            task=str(self.task.currentData()),
        )

    def _kind_changed(self) -> None:
        kind = str(self.kind.currentData())
        self.form.setRowVisible(self.segmentation, kind in ("coco", "coco-folder", "refcoco"))
        self.form.setRowVisible(self.task, kind == "yolo")
        self.form.setRowVisible(self.images, kind in ("coco-folder", "yolo", "voc"))
        if Path(self.path.text()) == default_export_path(self._shown_kind, self._project_name):
            self.path.setText(str(default_export_path(kind, self._project_name)))
        self._shown_kind = kind

    def _browse(self) -> None:
        current = self.path.text()
        if self.kind.currentData() == "coco":
            chosen, _ = QFileDialog.getSaveFileName(self, "Export COCO file", current, "COCO JSON (*.json)")
        else:
            chosen = QFileDialog.getExistingDirectory(self, f"Export {self.kind.currentText()}", current)
        if chosen:
            self.path.setText(chosen)
