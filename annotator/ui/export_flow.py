"""File > Export: the dialog, then the export on a worker thread with a progress dialog and Cancel, then a summary.

The worker opens its own connection to the project store (a store belongs to the thread that opened it) and
calls the exporter with a progress callback; Cancel sets an event the callback checks, so the exporter stops
with `ExportCancelled` before it replaces anything: the previous export stays byte for byte, with no temporary
file beside it. The flow reports by signals: `progressed`, then one of `finished` (the report, after
`summarised` with the one-line summary for the status bar), `failed` (one line) or `cancelled`; a start while
an export runs is `refused` (one line), not queued.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import QMessageBox, QProgressDialog, QWidget

from annotator.errors import AnnotatorError, ExportCancelled
from annotator.project.coco import ExportReport, RefcocoExport, export_coco, export_refcoco
from annotator.project.coco_folder import export_coco_folder
from annotator.project.folder_export import FolderExportReport, Progress
from annotator.project.store import ProjectStore
from annotator.project.voc import export_voc
from annotator.project.yolo import export_yolo
from annotator.ui.export_dialog import ExportChoice, ExportDialog

log = logging.getLogger(__name__)

AnyExportReport = ExportReport | RefcocoExport | FolderExportReport

BUSY = "An export is already running: wait for it to finish, or cancel it."

PROGRESS_STEPS = 200
"""At most about this many `progressed` signals per export (and always the first and the last)."""

SHOW_AFTER_MS = 400
"""The progress dialog appears only for an export that runs longer than this."""


def run_export(
    store: ProjectStore, choice: ExportChoice, tolerance_px: float, progress: Progress | None = None
) -> AnyExportReport:
    """Write the export `choice` asks for from `store` (the exporters' errors pass through)."""
    statuses = ("accepted", "pending") if choice.include_pending else ("accepted",)
    if choice.kind == "coco":
        return export_coco(
            store, choice.path, segmentation=choice.segmentation, statuses=statuses, tolerance_px=tolerance_px,
            progress=progress,
        )  # fmt: skip
    if choice.kind == "refcoco":
        return export_refcoco(
            store, choice.path, segmentation=choice.segmentation, statuses=statuses, progress=progress
        )
    folder_options = {"images": choice.images, "statuses": statuses, "progress": progress}
    if choice.kind == "coco-folder":
        return export_coco_folder(
            store, choice.path, segmentation=choice.segmentation, tolerance_px=tolerance_px, **folder_options
        )
    if choice.kind == "yolo":
        return export_yolo(store, choice.path, task=choice.task, tolerance_px=tolerance_px, **folder_options)
    if choice.kind == "voc":
        return export_voc(store, choice.path, **folder_options)
    raise ValueError(f"unknown export format {choice.kind!r}")


def summary_text(report: AnyExportReport) -> str:
    """What an export wrote, for the summary box: the destination, a blank line, the counts."""
    if isinstance(report, ExportReport):
        text = (
            f"Wrote {report.path}\n\n{report.images} images, {report.annotations} annotations "
            f"({report.polygon_segmentations} polygons, {report.rle_segmentations} RLE, "
            f"{report.box_only} box only), {report.categories} categories."
        )
    elif isinstance(report, RefcocoExport):
        splits = ", ".join(f"{n} {split}" for split, n in report.images_per_split.items())
        return (
            f"Wrote {report.instances_path} and {report.refs_path}\n\n{report.refs} referring expressions; "
            f"images per split: {splits}."
        )
    else:
        text = (
            f"Wrote {report.path}\n\n{report.images} images ({report.image_files} image files), "
            f"{report.annotations} annotations ({report.masks} with masks), {report.categories} categories."
        )
    if report.skipped_images:
        text += f"\n{len(report.skipped_images)} images left out (missing or unreadable)."
    return text


def summary_line(text: str) -> str:
    """`summary_text` on one line, for the status bar."""
    return text.replace("\n\n", ": ").replace("\n", " ")


def one_line(text: str) -> str:
    return " ".join(text.split())


class ExportWorker(QObject):
    """Runs one export on its thread against its own store connection; reports by signals only."""

    progressed = Signal(int, int)
    exported = Signal(object)  # the report
    failed = Signal(str)
    cancelled = Signal()

    def __init__(
        self, store_path: Path, choice: ExportChoice, tolerance_px: float, cancel_requested: threading.Event
    ) -> None:
        super().__init__()
        self.store_path, self.choice, self.tolerance_px = store_path, choice, tolerance_px
        self.cancel_requested = cancel_requested
        self._last_emitted = -1

    @Slot()
    def run(self) -> None:
        try:
            with ProjectStore.open(self.store_path) as store:
                report = run_export(store, self.choice, self.tolerance_px, self._progress)
        except ExportCancelled:
            self.cancelled.emit()
            return
        except (AnnotatorError, ValueError) as err:
            self.failed.emit(one_line(f"Export failed: {err}"))
            return
        except OSError as err:
            self.failed.emit(one_line(f"Export failed: {err.filename or self.choice.path}: {err.strerror or err}"))
            return
        except Exception as err:  # the thread's boundary: report it instead of dying without a word
            log.exception("exporting to %s failed", self.choice.path)
            self.failed.emit(one_line(f"Export failed: {self.choice.path}: {type(err).__name__}: {err}"))
            return
        self.exported.emit(report)

    def _progress(self, done: int, total: int) -> None:
        """The exporter's callback: stop when Cancel was pressed, else emit (now and then) how far it is."""
        if self.cancel_requested.is_set():
            raise ExportCancelled(f"the export to {self.choice.path} was cancelled")
        if done in (0, total) or done - self._last_emitted >= max(1, total // PROGRESS_STEPS):
            self._last_emitted = done
            self.progressed.emit(done, total)


class ExportFlow(QObject):
    """One export at a time from the window: the dialog, the worker with a progress dialog and Cancel, the
    summary box. Signals: see the module docstring."""

    progressed = Signal(int, int)  # done, total
    finished = Signal(object)  # the report: ExportReport, RefcocoExport or FolderExportReport
    summarised = Signal(str)  # the one-line summary for the status bar, just before `finished`
    failed = Signal(str)  # one line, "Export failed: ..."
    cancelled = Signal()
    refused = Signal(str)  # one line: an export is already running

    def __init__(self, parent: QWidget, store_path: Path, folder: Path, tolerance_px: float) -> None:
        super().__init__(parent)
        self.parent_widget, self.store_path, self.folder = parent, store_path, folder
        self.tolerance_px = tolerance_px
        self.dialog: ExportDialog | None = None
        self.progress: QProgressDialog | None = None
        self.summary_box: QMessageBox | None = None
        self.thread: QThread | None = None
        self.worker: ExportWorker | None = None
        self._cancel_requested = threading.Event()
        self._stopped = False

    @property
    def running(self) -> bool:
        return self.thread is not None

    def choose(self) -> None:
        """Open the export dialog (`self.dialog`); its Export button starts the export."""
        if self.running:
            self.refused.emit(BUSY)
            return
        dialog = ExportDialog(self.folder.name, self.parent_widget)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.start(dialog.choice()))
        dialog.open()
        self.dialog = dialog

    def start(self, choice: ExportChoice) -> None:
        """Export `choice` on the worker thread, with a progress dialog; refused while an export runs."""
        if self.running:
            self.refused.emit(BUSY)
            return
        if self._stopped:
            return
        self._cancel_requested = threading.Event()
        self.worker = ExportWorker(self.store_path, choice, self.tolerance_px, self._cancel_requested)
        self.thread = QThread()
        self.thread.setObjectName("export")
        self.worker.moveToThread(self.thread)
        self.thread.started.connect(self.worker.run)
        for signal in (self.worker.exported, self.worker.failed, self.worker.cancelled):
            signal.connect(self.thread.quit, Qt.ConnectionType.DirectConnection)  # thread-safe; before `_finish` waits
        self.worker.progressed.connect(self._progressed, Qt.ConnectionType.QueuedConnection)
        self.worker.exported.connect(self._exported, Qt.ConnectionType.QueuedConnection)
        self.worker.failed.connect(self._failed, Qt.ConnectionType.QueuedConnection)
        self.worker.cancelled.connect(self._cancelled, Qt.ConnectionType.QueuedConnection)
        self.progress = QProgressDialog(f"Exporting to {choice.path.name}…", "Cancel", 0, 0, self.parent_widget)
        self.progress.setWindowTitle("Export")
        self.progress.setWindowModality(Qt.WindowModality.NonModal)
        self.progress.setMinimumDuration(SHOW_AFTER_MS)
        self.progress.setAutoClose(False)
        self.progress.setAutoReset(False)
        self.progress.canceled.connect(self.cancel)
        self.thread.start()

    def cancel(self) -> None:
        """Stop the running export at its next image; the destination is left as it was."""
        if not self.running:
            return
        self._cancel_requested.set()
        if self.progress is not None:
            self.progress.setLabelText("Cancelling the export…")

    def stop(self) -> None:
        """Cancel a running export and wait for its thread (the window is closing); nothing it reports later is
        shown."""
        self._stopped = True
        self._cancel_requested.set()
        if self.thread is not None:
            self.thread.quit()
            self.thread.wait()
        self._release()

    def _progressed(self, done: int, total: int) -> None:
        if self._stopped:
            return
        if self.progress is not None:
            self.progress.setMaximum(total)
            self.progress.setValue(done)
        self.progressed.emit(done, total)

    def _exported(self, report: AnyExportReport) -> None:
        if self._stopped:
            return
        self._finish()
        text = summary_text(report)
        box = QMessageBox(
            QMessageBox.Icon.Information, "Export finished", text, QMessageBox.StandardButton.Ok, self.parent_widget
        )
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        self.summary_box = box
        self.summarised.emit(summary_line(text))
        self.finished.emit(report)

    def _failed(self, message: str) -> None:
        if self._stopped:
            return
        self._finish()
        self.failed.emit(message)

    def _cancelled(self) -> None:
        if self._stopped:
            return
        self._finish()
        self.cancelled.emit()

    def _finish(self) -> None:
        if self.thread is not None:
            self.thread.wait()
        self._release()

    def _release(self) -> None:
        """Close the progress dialog and drop the finished thread and its worker."""
        if self.progress is not None:
            self.progress.canceled.disconnect(self.cancel)
            self.progress.close()
            self.progress.deleteLater()
            self.progress = None
        self.thread = self.worker = None
