"""File > Import COCO…: choose a COCO or labelme file (or a folder of labelme files), import it on a worker thread
with a busy indicator, then show what was imported and skipped (the message bar, and a box whose details list
every reason). The worker opens its own connection to the project store (a store belongs to the thread that
opened it); the window reopens the folder afterwards so the lists show the new annotations."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, QThread, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QMessageBox,
    QProgressDialog,
    QPushButton,
    QWidget,
)

from annotator.errors import AnnotatorError
from annotator.project.coco_import import ImportReport
from annotator.project.import_summary import summary_headline, summary_lines
from annotator.project.imports import import_annotations
from annotator.project.store import ProjectStore

if TYPE_CHECKING:
    from annotator.ui.main_window import MainWindow

log = logging.getLogger(__name__)

_RUNNING: set[QThread] = set()
"""Import workers still running: kept alive when their window closes, so the import finishes (all or nothing)."""


@dataclass(frozen=True)
class ImportChoice:
    """What to import (a COCO or labelme file, or a folder of labelme files) and how."""

    path: Path
    crowd_as_instances: bool
    status: str


class ImportDialog(QDialog):
    """The file or folder to import, whether crowd RLE masks are instances, the status of what comes in."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Import annotations")
        self.path = QLineEdit()
        self.path.setPlaceholderText("a COCO or labelme JSON file, or a folder of labelme files")
        browse_file, browse_folder = QPushButton("File…"), QPushButton("Folder…")
        browse_file.clicked.connect(self._browse_file)
        browse_folder.clicked.connect(self._browse_folder)
        row = QHBoxLayout()
        for widget in (self.path, browse_file, browse_folder):
            row.addWidget(widget)
        self.crowd = QCheckBox("Import crowd (iscrowd 1) masks as instances (CVAT files: always)")
        self.status = QComboBox()
        self.status.addItems(["accepted", "pending"])
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Import", row)
        form.addRow("", self.crowd)
        form.addRow("Status", self.status)
        form.addRow(buttons)

    def choice(self) -> ImportChoice:
        return ImportChoice(Path(self.path.text()).expanduser(), self.crowd.isChecked(), self.status.currentText())

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import annotations", self.path.text(), "JSON files (*.json)")
        if path:
            self.path.setText(path)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Import a folder of labelme files", self.path.text())
        if path:
            self.path.setText(path)


class ImportWorker(QThread):
    """Imports on a background thread into its own store connection; emits `imported` or `failed` (a message)."""

    imported = Signal(object)  # ImportReport
    failed = Signal(str)

    def __init__(self, store_path: Path, choice: ImportChoice) -> None:
        super().__init__()
        self.store_path = store_path
        self.choice = choice

    def run(self) -> None:
        try:
            with ProjectStore.open(self.store_path) as store:
                report = import_annotations(
                    store,
                    self.choice.path,
                    default_status=self.choice.status,
                    crowd_as_instances=self.choice.crowd_as_instances,
                )
        except AnnotatorError as err:
            self.failed.emit(str(err))
            return
        except OSError as err:
            self.failed.emit(f"{self.choice.path}: {err.strerror or err}")
            return
        except Exception as err:  # the thread's boundary: report it instead of dying without a word
            log.exception("importing %s failed", self.choice.path)
            self.failed.emit(f"{self.choice.path} cannot be imported: {type(err).__name__}: {err}")
            return
        self.imported.emit(report)


class ImportFlow(QObject):
    """One import from the window: the dialog, the worker with a busy indicator, the summary; `finished` carries
    the ImportReport (or None when the import failed)."""

    finished = Signal(object)

    def __init__(self, window: MainWindow, store_path: Path, folder: Path) -> None:
        super().__init__(window)
        self.window, self.store_path, self.folder = window, store_path, folder
        self.dialog: ImportDialog | None = None
        self.worker: ImportWorker | None = None
        self.progress: QProgressDialog | None = None
        self.summary: QMessageBox | None = None

    def choose(self) -> None:
        """Open the dialog; its OK starts the import."""
        self.dialog = ImportDialog(self.window)
        self.dialog.accepted.connect(lambda: self.start(self.dialog.choice()))
        self.dialog.open()

    def start(self, choice: ImportChoice) -> None:
        """Import `choice` on the worker, showing a busy indicator meanwhile."""
        self.progress = QProgressDialog(f"Importing {choice.path.name}…", "", 0, 0, self.window)
        self.progress.setCancelButton(None)
        self.progress.setWindowModality(Qt.WindowModality.WindowModal)
        self.progress.setMinimumDuration(0)
        self.progress.show()
        self.worker = ImportWorker(self.store_path, choice)
        self.worker.imported.connect(self._imported, Qt.ConnectionType.QueuedConnection)
        self.worker.failed.connect(self._failed, Qt.ConnectionType.QueuedConnection)
        _RUNNING.add(self.worker)
        self.worker.finished.connect(lambda worker=self.worker: _RUNNING.discard(worker))
        self.worker.start()

    def _done(self) -> None:
        self.worker.wait()
        self.progress.close()

    def _imported(self, report: ImportReport) -> None:
        self._done()
        self.window.message_bar.clear("import")
        self.window.show_status(summary_headline(report))
        lines = summary_lines(report, verbose=True)
        box = QMessageBox(QMessageBox.Icon.Information, "Import finished", "\n".join(lines[:12]), parent=self.window)
        if len(lines) > 12:
            box.setDetailedText("\n".join(lines))
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        self.summary = box
        if self.window.folder == self.folder:  # not when another folder was opened meanwhile
            self.window.open_folder(self.folder)
        self.finished.emit(report)

    def _failed(self, message: str) -> None:
        self._done()
        self.window.show_error(f"Import failed: {message}", "import")
        self.finished.emit(None)
