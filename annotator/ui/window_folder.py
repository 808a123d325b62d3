"""The main window's project: opening a folder (listed on a background thread, then its store opened here), the
recent folders, the project's label set, the review order, and the flows that read or write the whole project
(export and import, each on its own worker)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from annotator.errors import AnnotatorError
from annotator.project.store import ProjectStore
from annotator.ui.export_flow import ExportFlow
from annotator.ui.folder_sync import FolderSync, FolderSynced
from annotator.ui.import_dialog import ImportFlow

if TYPE_CHECKING:
    from annotator.ui.main_window import MainWindow

class FolderMixin:
    """The project half of `MainWindow`."""

    def choose_folder(self: MainWindow) -> None:
        start = str(self.folder) if self.folder is not None else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images", start)
        if folder:
            self.open_folder(folder)

    def open_folder(self: MainWindow, folder: str | Path, labels: list[str] | None = None) -> None:
        """Open (or create) the folder's project in the background; `folder_opened` fires when it is listed.
        `labels` (`annotator FOLDER --labels`) becomes the project's label set."""
        path = Path(folder).expanduser()
        if not path.is_dir():
            self.show_error(f"{path} is not a folder.", "folder")
            return
        if self._sync is not None and self._sync.isRunning():
            self._sync.wait()
        self.show_status(f"Opening {path}…")
        self._labels_to_set = labels
        self._sync = FolderSync(path)
        self._sync.synced.connect(self._folder_synced, Qt.ConnectionType.QueuedConnection)
        self._sync.failed.connect(self._folder_failed, Qt.ConnectionType.QueuedConnection)
        self._sync.start()

    def _folder_failed(self: MainWindow, message: str) -> None:
        self.show_error(message, "folder")

    def _folder_synced(self: MainWindow, synced: FolderSynced) -> None:
        self._close_store()
        try:
            store = ProjectStore.open(synced.store_path)
            if self._labels_to_set is not None:
                store.set_label_set(self._labels_to_set)
        except (AnnotatorError, ValueError) as err:
            self.show_error(str(err), "folder")
            return
        self._labels_to_set = None
        self.message_bar.clear("folder", "image", "edit", "history", "export", "find_heads")
        self.session.open(store, synced.folder)
        self.folder = synced.folder
        self._project += 1
        self.inference.project = self._project
        self.image_loader.project = self._project
        self.images.clear()
        self.image_list.set_records(synced.records)
        self.image_list.set_skipped(synced.skipped)
        self.image_list.set_summary(synced.status_counts)
        self._refresh_categories()
        if self.image_list.review_order != "natural":
            self._review_order_changed(self.image_list.review_order)
        self.settings.add_recent_folder(synced.folder)
        self._rebuild_recent_menu()
        report = synced.report
        self.show_status(
            f"Opened {synced.folder} in {synced.seconds:.1f} s: {report.listed} images"
            + (f", {report.added} new" if report.added else "")
            + (f", {report.missing} missing" if report.missing else "")
            + (f", {len(synced.skipped)} files skipped" if synced.skipped else "")
            + "."
        )
        self.canvas.set_placeholder("" if report.listed else "This folder has no images.")
        first = self.image_list.neighbour(None, +1)
        self._update_title()
        self.folder_opened.emit(str(synced.folder))
        if first is not None:
            self.show_image(first)
            if any(record.n_pending for record in synced.records):
                self.canvas.setFocus()
            else:
                self.focus_expression()

    def _close_store(self: MainWindow) -> None:
        self._end_mask_edit()
        store = self.store
        self.session.close()
        self._forget_outlines()
        self.canvas.set_image(None)
        if store is not None:
            store.close()

    def _rebuild_recent_menu(self: MainWindow) -> None:
        self.recent_menu.clear()
        for folder in self.settings.recent_folders():
            action = self.recent_menu.addAction(folder)
            action.triggered.connect(lambda _=False, f=folder: self.open_folder(f))
        self.recent_menu.setEnabled(bool(self.settings.recent_folders()))

    def set_label_set(self: MainWindow, names: list[str] | None) -> None:
        """Fix the open project's categories to `names` (None: any name), from Settings."""
        if self.store is None:
            return
        try:
            self.session.categories.set_label_set(names)
        except (AnnotatorError, ValueError) as err:
            self.show_error(f"The label set was not changed: {err}", "edit")
            return
        self._refresh_categories()
        self._refresh_annotations()
        self.show_status(f"Label set: {', '.join(names)}." if names else "No fixed label set: any category name.")

    def _label_added(self: MainWindow, name: str) -> None:
        """The annotator agreed to a category outside the label set: the set grows by it."""
        self.session.categories.add_label(name)
        self._refresh_categories()

    def _review_order_changed(self: MainWindow, order: str) -> None:
        if self.store is None:
            return
        if order == "least_confident":
            scores: dict[int, float] = {}
            for annotation in self.store.annotations(statuses=("pending",)):
                if annotation.score is not None:
                    scores[annotation.image_id] = min(scores.get(annotation.image_id, 1e9), annotation.score)
            self.image_list.model.set_pending_scores(scores)
            self.image_list.proxy.set_order(order)

    def choose_export(self: MainWindow) -> None:
        """File > Export: the dialog, then the export on a worker with progress and Cancel (see export_flow)."""
        if self.store is None or self.folder is None:
            self.show_status("Open a folder first (Ctrl+O).")
            return
        if self.export_flow is not None and self.export_flow.running:
            self.show_status("An export is still running: wait for it or cancel it.")
            return
        flow = ExportFlow(self, self.store.path, self.folder, self.settings.polygon_tolerance_px)
        flow.summarised.connect(self.show_status)
        flow.finished.connect(self._exported)
        flow.failed.connect(lambda message: self.show_error(message, "export"))
        flow.cancelled.connect(lambda: self.show_status("Export cancelled; the previous file is unchanged."))
        self.export_flow = flow
        flow.choose()

    def _exported(self: MainWindow, report: object) -> None:
        self.message_bar.clear("export")
        self.exported.emit(report)

    def choose_import(self: MainWindow) -> None:
        """File > Import COCO…: the dialog, then the import on a worker and its summary (see import_dialog)."""
        if self.store is None or self.folder is None:
            self.show_status("Open a folder first (Ctrl+O).")
            return
        self.import_flow = ImportFlow(self, self.store.path, self.folder)
        self.import_flow.choose()
