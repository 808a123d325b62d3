"""The main window: image list on the left, canvas in the centre, expression and proposal panel on the right,
"where the model looked" below it; menus and shortcuts from the shortcut table; status bar with timings.

The window is a thin view of a `ReviewSession` (annotator/review/, no Qt), which owns the current image, the
pending proposals, the decisions and edits and their undo history over the project store. The window renders the
session (`review_view`), forwards the annotator's input to it and runs its requests on the worker threads
(`window_review`); models (`window_models`), the project folder and its export / import (`window_folder`), and the
actions and menus (`window_menus`) each have their own module.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from PySide6.QtCore import QByteArray, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent
from PySide6.QtWidgets import QApplication, QDockWidget, QLabel, QMainWindow, QProgressBar, QVBoxLayout, QWidget

from annotator.project.store import ProjectStore
from annotator.review.history import History
from annotator.review.session import ReviewSession
from annotator.ui.annotate_panel import AnnotatePanel
from annotator.ui.canvas import Canvas
from annotator.ui.download_dialog import DownloadDialog
from annotator.ui.export_flow import ExportFlow
from annotator.ui.find_heads_dialog import FindHeadsFlow
from annotator.ui.folder_sync import FolderSync
from annotator.ui.heads_panel import HeadsPanel
from annotator.ui.image_list import ImageListPanel
from annotator.ui.message_bar import MessageBar
from annotator.ui.model_loading import ModelsInfo
from annotator.ui.review_view import ReviewViewMixin
from annotator.ui.settings import AppSettings, ModelSettings
from annotator.ui.shortcuts_dialog import ShortcutsDialog
from annotator.ui.window_folder import FolderMixin
from annotator.ui.window_menus import apply_shortcut_overrides, build_actions
from annotator.ui.window_models import ModelsMixin
from annotator.ui.window_review import ReviewMixin
from annotator.ui.worker import ImageClient, InferenceClient
from annotator.ui.worker_backend import WorkerBackend
from annotator.ui.worker_jobs import DecodedImages

if TYPE_CHECKING:
    from annotator.grounding.grounder import Proposal

APP_NAME = "annotator"


class MainWindow(ReviewMixin, ReviewViewMixin, ModelsMixin, FolderMixin, QMainWindow):
    """The annotator's window (see the module docstring)."""

    folder_opened = Signal(str)
    image_shown = Signal(int)
    proposals_shown = Signal(int)
    annotations_changed = Signal(int)
    models_changed = Signal(object)  # ModelsInfo, or None when loading failed
    message_shown = Signal(str)
    exported = Signal(object)  # ExportReport, RefcocoExport or FolderExportReport

    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.folder: Path | None = None
        self._project = 0
        self.models_info: ModelsInfo | None = None
        self._loading_models: ModelSettings | None = None
        self._demo_reason = ""
        self._labels_to_set: list[str] | None = None
        self.download_dialog: DownloadDialog | None = None
        self.export_flow: ExportFlow | None = None
        self._sync: FolderSync | None = None
        self._shut_down = False
        self._init_view()

        self.images = DecodedImages(settings.image_cache_images)
        self.inference = InferenceClient(self.images, settings.polygon_tolerance_px, self)
        self.image_loader = ImageClient(self.images, settings.polygon_tolerance_px, self)
        self.session = ReviewSession(WorkerBackend(self.inference, self._image_path), settings.last_category)
        self.find_heads = FindHeadsFlow(self)

        self.canvas = Canvas()
        self.message_bar = MessageBar()
        self.image_list = ImageListPanel()
        self.panel = AnnotatePanel()
        self.heads_panel = HeadsPanel()
        self.heads_panel.opacity.setValue(settings.heatmap_opacity_percent)
        self.canvas.set_overlay_opacity(settings.heatmap_opacity_percent / 100.0)
        self.canvas.polygon_tolerance_px = settings.polygon_tolerance_px
        self.panel.expression.set_history(settings.expression_history())
        self._build_layout()
        self.actions_by_name: dict[str, QAction] = {}
        build_actions(self)
        self._build_status_bar()
        self._connect()
        self._update_title()
        self.canvas.set_placeholder("Open a folder of images (File > Open Folder…, Ctrl+O).")

    # The session's state, as the window's -----------------------------------------------------------------------
    @property
    def store(self) -> ProjectStore | None:
        return self.session.store

    @property
    def current_image_id(self) -> int | None:
        return self.session.image_id

    @property
    def undo_stack(self) -> History | None:
        """The session's undo history (None with no folder open)."""
        return self.session.history

    @property
    def last_proposal(self) -> "Proposal | None":
        """The latest proposal shown on the current image (None before the first, or after moving on)."""
        shown = self.session.last_shown
        return shown.proposal if shown is not None else None

    def _image_path(self, image_id: int) -> Path:
        assert self.store is not None
        return self.store.image_path(image_id)

    # Layout -----------------------------------------------------------------------------------------------------
    def _build_layout(self) -> None:
        centre = QWidget()
        layout = QVBoxLayout(centre)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        layout.addWidget(self.message_bar)
        layout.addWidget(self.canvas, 1)
        self.setCentralWidget(centre)
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks)

        images_dock = QDockWidget("Images", self)
        images_dock.setObjectName("images_dock")
        images_dock.setWidget(self.image_list)
        annotate_dock = QDockWidget("Annotate", self)
        annotate_dock.setObjectName("annotate_dock")
        annotate_dock.setWidget(self.panel)
        heads_dock = QDockWidget("Where the model looked", self)
        heads_dock.setObjectName("heads_dock")
        heads_dock.setWidget(self.heads_panel)
        for dock in (images_dock, annotate_dock, heads_dock):
            features = QDockWidget.DockWidgetFeature
            dock.setFeatures(features.DockWidgetMovable | features.DockWidgetFloatable)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, images_dock)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, annotate_dock)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, heads_dock)
        self.resizeDocks([images_dock, annotate_dock], [260, 350], Qt.Orientation.Horizontal)
        self.resizeDocks([annotate_dock, heads_dock], [470, 300], Qt.Orientation.Vertical)
        self.heads_panel.setMinimumHeight(230)
        self.docks = {"images": images_dock, "annotate": annotate_dock, "heads": heads_dock}

        screen = QApplication.primaryScreen()
        available = screen.availableGeometry() if screen is not None else None
        width = min(1480, int(available.width() * 0.92)) if available is not None else 1480
        height = min(920, int(available.height() * 0.92)) if available is not None else 920
        self.resize(width, height)
        geometry, state = self.settings.window_state()
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.model_label = QLabel("No model")
        self.model_label.setToolTip("The grounding model in use")
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setMaximumWidth(140)
        self.progress.setMaximumHeight(14)
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.busy_label = QLabel()
        bar.addPermanentWidget(self.busy_label)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.model_label)

    def _connect(self) -> None:
        queued = Qt.ConnectionType.QueuedConnection  # worker signals are handled on the GUI thread
        worker = self.inference.inference
        worker.models_loading.connect(self._models_loading, queued)
        worker.models_ready.connect(self._models_ready, queued)
        worker.models_failed.connect(self._models_failed, queued)
        worker.proposed.connect(self._proposed, queued)
        worker.segmented.connect(self._segmented, queued)
        worker.failed.connect(self._worker_failed, queued)
        images = self.image_loader.image_worker
        images.loaded.connect(self._image_loaded, queued)
        images.failed.connect(self._image_failed, queued)
        images.outlined.connect(self._outlined, queued)

        events = self.session.events
        events.changed.connect(self._after_store_change)
        events.pending_changed.connect(self._refresh_annotations)
        events.status.connect(self.show_status)
        events.error.connect(self.show_error)
        events.cleared.connect(self.message_bar.clear)
        events.history_changed.connect(self._history_changed)
        events.outline_known.connect(self._remember_outline)
        events.category_used.connect(self._category_used)

        self.image_list.image_chosen.connect(self.show_image)
        self.image_list.order_changed.connect(self._review_order_changed)
        self.panel.propose_requested.connect(self.run_expression)
        self.panel.accept_requested.connect(self.accept)
        self.panel.reject_requested.connect(self.reject)
        self.panel.category_chosen.connect(self.set_category)
        self.panel.label_added.connect(self._label_added)
        self.panel.annotation_chosen.connect(self.session.set_active)
        self.panel.all_instances.toggled.connect(self.actions_by_name["all_instances"].setChecked)
        self.heads_panel.heatmap_toggled.connect(self.set_heatmap_visible)
        self.heads_panel.opacity_changed.connect(self._opacity_changed)
        self.canvas.point_added.connect(self.add_point)
        self.canvas.point_removed.connect(self.remove_point)
        self.canvas.annotation_activated.connect(self._annotation_activated)
        self.canvas.box_edited.connect(self.edit_box)
        self.canvas.box_drawn.connect(self._box_drawn)
        self.canvas.mask_edited.connect(self._mask_edited)

    # Messages ---------------------------------------------------------------------------------------------------
    def show_status(self, text: str) -> None:
        self.statusBar().showMessage(text)

    def show_error(self, text: str, topic: str) -> None:
        """An error the annotator must see: status bar plus the message strip above the canvas, where it stays
        until dismissed or until its `topic` is cleared (see message_bar)."""
        self.statusBar().showMessage(text)
        self.message_bar.show_message(text, "error", topic=topic)
        self.message_shown.emit(text)

    def _update_busy(self) -> None:
        """The busy indicator in the status bar: spinning while models load or the worker answers a request."""
        loading = self._loading_models is not None
        text = "" if loading else self.session.busy
        self.busy_label.setText(text)
        self.progress.setVisible(loading or bool(text))

    def _update_title(self) -> None:
        parts = []
        if self.folder is not None:
            parts.append(self.folder.name)
            if self.current_image_id is not None and self.store is not None:
                parts.insert(0, PurePosixPath(self.store.image(self.current_image_id).path).name)
        parts.append(APP_NAME)
        title = " — ".join(parts)
        if self.models_info is not None and self.models_info.is_demo:
            title += " — DEMO MODEL (finds coloured shapes only)"
        self.setWindowTitle(title)

    def save(self) -> None:
        if self.store is None:
            self.show_status("Nothing to save: no folder is open.")
            return
        self.show_status(f"Everything is saved: every change is written to {self.store.path} as it is made.")

    # View -------------------------------------------------------------------------------------------------------
    def set_heatmap_visible(self, visible: bool) -> None:
        self.canvas.set_overlay_visible(visible)
        self.actions_by_name["toggle_heatmap"].setChecked(visible)
        if self.heads_panel.show_heatmap.isChecked() != visible:
            self.heads_panel.show_heatmap.setChecked(visible)
        if visible and not self.canvas.has_overlay:
            self.show_status("No heatmap yet: it shows where the model looked for the latest proposal.")

    def _heatmap_action_toggled(self) -> None:
        self.set_heatmap_visible(self.actions_by_name["toggle_heatmap"].isChecked())

    def _all_instances_action_toggled(self) -> None:
        checked = self.actions_by_name["all_instances"].isChecked()
        if self.panel.all_instances.isChecked() != checked:
            self.panel.all_instances.setChecked(checked)
        self.show_status("All instances: every region is proposed." if checked else "One proposal per expression.")

    def _opacity_changed(self, opacity: float) -> None:
        self.canvas.set_overlay_opacity(opacity)
        self.settings.heatmap_opacity_percent = round(opacity * 100)

    def focus_expression(self) -> None:
        self.panel.expression.setFocus()
        self.panel.expression.selectAll()

    def show_shortcuts(self) -> None:
        dialog = ShortcutsDialog(self.settings.shortcut_overrides(), self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        self.shortcuts_dialog = dialog

    def open_settings(self) -> None:
        from annotator.ui.settings_dialog import SettingsDialog

        label_set = self.session.categories.label_set
        names = list(label_set.names) if label_set is not None else ([] if self.store is not None else None)
        dialog = SettingsDialog(self.settings, self, label_set=names)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.applied.connect(self._settings_applied)
        dialog.label_set_changed.connect(self.set_label_set)
        dialog.open()
        self.settings_dialog = dialog

    def _settings_applied(self, models_changed: bool) -> None:
        apply_shortcut_overrides(self)
        tolerance = self.settings.polygon_tolerance_px
        if tolerance != self.inference.inference.tolerance_px:
            self._forget_outlines()
        self.inference.inference.tolerance_px = tolerance
        self.canvas.polygon_tolerance_px = tolerance
        self.image_loader.image_worker.tolerance_px = tolerance
        self.images.capacity = self.settings.image_cache_images
        if models_changed:
            self.message_bar.clear("model")
            self.start_models()

    # Closing ----------------------------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Save the window layout, stop the worker threads (waiting for a running job) and close the store."""
        if self._shut_down:
            return
        self._shut_down = True
        if self.download_dialog is not None:
            self.download_dialog.reject()
        self.settings.set_window_state(QByteArray(self.saveGeometry()), QByteArray(self.saveState()))
        self.settings.sync()
        if self._sync is not None:
            self._sync.wait()
        self.find_heads.stop()
        if self.export_flow is not None:
            self.export_flow.stop()
        self.inference.stop()
        self.image_loader.stop()
        self._close_store()
