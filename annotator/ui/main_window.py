"""The main window: image list on the left, canvas in the centre, expression and proposal panel on the right,
"where the model looked" below it; menus and shortcuts from the shortcut table; status bar with timings.

It owns the project store (GUI thread only), the undo stack, and the two worker threads. The annotation loop:
Enter in the expression box queues a proposal for the current image; the result shows as pending (dashed,
magenta) annotations that live only in the window until accepted (then one undoable store change) or rejected
(nothing reaches the store). Pending annotations made by the CLI live in the store and are accepted or rejected
there. Every store change goes through `StoreCommand` so Ctrl+Z / Ctrl+Shift+Z follow the store's history.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QByteArray, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence, QPainterPath, QUndoStack
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QVBoxLayout,
    QWidget,
)

from annotator.errors import AnnotatorError
from annotator.grounding.frame import ImageFrame
from annotator.segmentation.catalog import mask_model_label
from annotator.project.coco import export_coco, export_refcoco
from annotator.project.geometry import Rle
from annotator.project.store import Annotation, ProjectStore
from annotator.ui.annotate_panel import AnnotatePanel, AnnotationRow
from annotator.review.points import PromptPoint
from annotator.ui.canvas import BoxXyxy, Canvas, CanvasAnnotation
from annotator.ui.category_guess import default_category
from annotator.ui.commands import HistoryRefused, StoreCommand, redo_in_step, undo_in_step
from annotator.ui.download_dialog import DownloadDialog, DownloadItem, llava_missing, missing_downloads
from annotator.ui.export_dialog import ExportChoice, ExportDialog
from annotator.ui.find_heads_dialog import FindHeadsFlow
from annotator.ui.import_dialog import ImportFlow
from annotator.ui.folder_sync import FolderSync, FolderSynced
from annotator.ui.heads_panel import HeadsPanel
from annotator.ui.image_list import ImageListPanel
from annotator.ui.key_routing import AppShortcutsFirst, modifier_keys
from annotator.ui.message_bar import MessageBar
from annotator.ui.model_loading import LoadedModels, ModelsInfo
from annotator.ui.palette import category_colour, pending_colour
from annotator.ui.settings import AppSettings, ModelSettings
from annotator.ui.shortcuts import SHORTCUTS, effective_keys
from annotator.ui.shortcuts_dialog import ShortcutsDialog
from annotator.ui.worker import (
    DecodedImages,
    ImageClient,
    InferenceClient,
    LoadedImage,
    MaskUpdate,
    Outlines,
    ProposalResult,
    ShownProposal,
    WorkerError,
    rle_key,
)

if TYPE_CHECKING:
    from annotator.grounding.grounder import Proposal

APP_NAME = "annotator"
DEFAULT_CATEGORY = "object"


@dataclass(frozen=True)
class PendingAnnotation:
    """A proposal (or a hand-drawn box) shown on the canvas, not in the store until accepted.

    `box_xyxy`: what the annotator sees and what gets stored (the mask's tight box when SAM made the mask);
    `prompt_box_xyxy`: the box that prompts SAM (the heads' attention box, or the drawn / edited box).
    `mask_kind`: "sam", "coarse" (the heads' region, when there is no SAM) or "none".
    """

    key: str
    image_id: int
    box_xyxy: BoxXyxy
    prompt_box_xyxy: BoxXyxy
    mask: np.ndarray | None
    outline: QPainterPath | None
    score: float | None
    expression: str
    source: str
    heads: tuple[tuple[int, int], ...]
    category: str
    mask_kind: str = "none"
    points: tuple[PromptPoint, ...] = ()
    shown: ShownProposal | None = None


class MainWindow(QMainWindow):
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
        self.store: ProjectStore | None = None
        self.folder: Path | None = None
        self.current_image_id: int | None = None
        self._project = 0
        self.models_info: ModelsInfo | None = None
        self._loading_models: ModelSettings | None = None
        self._demo_reason = ""
        self.download_dialog: DownloadDialog | None = None
        self._sync: FolderSync | None = None
        self._pending: dict[str, PendingAnnotation] = {}
        self._pending_counter = 0
        self._last_shown: ShownProposal | None = None
        self._proposal_seq: int | None = None
        self._proposal_expression = ""
        self._segment_seq: dict[Hashable, int] = {}
        self._points: dict[int, tuple[PromptPoint, ...]] = {}
        self._outlines: dict[tuple[int, int, str], QPainterPath] = {}
        self._outline_requested: set[tuple[int, int, str]] = set()
        self._image_ready = False
        self._category_names: dict[int, str] | None = None
        self._overlay_shown: ShownProposal | None = None
        self._shut_down = False

        self.images = DecodedImages(settings.image_cache_images)
        self.inference = InferenceClient(self.images, settings.polygon_tolerance_px, self)
        self.image_loader = ImageClient(self.images, settings.polygon_tolerance_px, self)
        self.undo_stack = QUndoStack(self)
        self.find_heads = FindHeadsFlow(self)

        self.canvas = Canvas()
        self.message_bar = MessageBar()
        self.image_list = ImageListPanel()
        self.panel = AnnotatePanel()
        self.heads_panel = HeadsPanel()
        self.heads_panel.opacity.setValue(settings.heatmap_opacity_percent)
        self.canvas.set_overlay_opacity(settings.heatmap_opacity_percent / 100.0)
        self.panel.expression.set_history(settings.expression_history())
        self._build_layout()
        self.actions_by_name: dict[str, QAction] = {}
        self._build_actions()
        self._build_status_bar()
        self._connect()
        self._update_title()
        self.canvas.set_placeholder("Open a folder of images (File > Open Folder…, Ctrl+O).")

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

    def _build_actions(self) -> None:
        handlers: dict[str, Callable[[], None]] = {
            "open_folder": self.choose_folder,
            "save": self.save,
            "export": self.choose_export,
            "settings": self.open_settings,
            "quit": self.close,
            "undo": self.undo,
            "redo": self.redo,
            "next_image": lambda: self.go_to_neighbour(+1),
            "previous_image": lambda: self.go_to_neighbour(-1),
            "focus_expression": self.focus_expression,
            "accept": self.accept,
            "reject": self.reject,
            "draw_box": self.start_box_drawing,
            "rerun_box": self.rerun_box,
            "remove_point": self.remove_last_point,
            "delete": self.delete_active,
            "change_category": self.focus_category,
            "all_instances": self._all_instances_action_toggled,
            "toggle_heatmap": self._heatmap_action_toggled,
            "fit": self.canvas.fit,
            "zoom_in": self.canvas.zoom_in,
            "zoom_out": self.canvas.zoom_out,
            "mark_done": self.toggle_done,
            "show_shortcuts": self.show_shortcuts,
        }
        checkable = {"all_instances", "toggle_heatmap"}
        overrides = self.settings.shortcut_overrides()
        canvas_keys: dict[str, Callable[[], None]] = {}
        for shortcut in SHORTCUTS:
            action = QAction(shortcut.text, self)
            action.setObjectName(shortcut.action)
            action.setToolTip(shortcut.description)
            action.setCheckable(shortcut.action in checkable)
            keys = effective_keys(shortcut.action, overrides)
            if shortcut.scope == "window":
                action.setShortcuts([QKeySequence(k) for k in keys])
                action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            else:
                action.setText(f"{shortcut.text}\t{' / '.join(keys)}")
                for key in keys:
                    canvas_keys[key] = action.trigger
            action.triggered.connect(handlers[shortcut.action])
            self.addAction(action)
            self.actions_by_name[shortcut.action] = action
        self.canvas.set_key_actions(canvas_keys)
        self._text_key_filter = AppShortcutsFirst(self._window_modifier_keys(overrides), self)
        for field in (self.panel.expression, self.panel.category.lineEdit(), self.image_list.filter_box):
            field.installEventFilter(self._text_key_filter)

        a = self.actions_by_name
        menu_bar = self.menuBar()
        file_menu = menu_bar.addMenu("&File")
        file_menu.addAction(a["open_folder"])
        self.recent_menu = QMenu("Open &Recent", self)
        file_menu.addMenu(self.recent_menu)
        file_menu.addSeparator()
        for name in ("save", "export"):
            file_menu.addAction(a[name])
        file_menu.addAction("&Import COCO / labelme…", self.choose_import)
        file_menu.addSeparator()
        file_menu.addAction(a["settings"])
        file_menu.addSeparator()
        file_menu.addAction(a["quit"])
        edit_menu = menu_bar.addMenu("&Edit")
        for name in ("undo", "redo", None, "accept", "reject", "delete", "change_category", None, "draw_box",
                     "rerun_box", "remove_point", None, "mark_done"):  # fmt: skip
            edit_menu.addSeparator() if name is None else edit_menu.addAction(a[name])
        view_menu = menu_bar.addMenu("&View")
        for name in ("fit", "zoom_in", "zoom_out", None, "toggle_heatmap", "all_instances"):
            view_menu.addSeparator() if name is None else view_menu.addAction(a[name])
        view_menu.addSeparator()
        for dock in self.docks.values():
            view_menu.addAction(dock.toggleViewAction())
        go_menu = menu_bar.addMenu("&Go")
        for name in ("next_image", "previous_image", "focus_expression"):
            go_menu.addAction(a[name])
        help_menu = menu_bar.addMenu("&Help")
        help_menu.addAction(a["show_shortcuts"])
        self._rebuild_recent_menu()
        self.undo_stack.canUndoChanged.connect(a["undo"].setEnabled)
        self.undo_stack.canRedoChanged.connect(a["redo"].setEnabled)
        a["undo"].setEnabled(False)
        a["redo"].setEnabled(False)

    @staticmethod
    def _window_modifier_keys(overrides: dict[str, tuple[str, ...]]) -> set[str]:
        keys = [k for s in SHORTCUTS if s.scope == "window" for k in effective_keys(s.action, overrides)]
        return modifier_keys(keys)

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

        self.image_list.image_chosen.connect(self.show_image)
        self.image_list.order_changed.connect(self._review_order_changed)
        self.panel.propose_requested.connect(self.run_expression)
        self.panel.accept_requested.connect(self.accept)
        self.panel.reject_requested.connect(self.reject)
        self.panel.category_chosen.connect(self.set_category)
        self.panel.annotation_chosen.connect(self._annotation_chosen_in_list)
        self.panel.all_instances.toggled.connect(self.actions_by_name["all_instances"].setChecked)
        self.heads_panel.heatmap_toggled.connect(self.set_heatmap_visible)
        self.heads_panel.opacity_changed.connect(self._opacity_changed)
        self.canvas.point_added.connect(self.add_point)
        self.canvas.point_removed.connect(self.remove_point)
        self.canvas.annotation_activated.connect(self._annotation_activated)
        self.canvas.box_edited.connect(self.edit_box)
        self.canvas.box_drawn.connect(self._box_drawn)

    @property
    def last_proposal(self) -> "Proposal | None":
        """The latest proposal shown on the current image (None before the first, or after moving on)."""
        return self._last_shown.proposal if self._last_shown is not None else None

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
        if self._loading_models is not None:
            text, busy = "", True
        elif self._proposal_seq is not None:
            text, busy = "Proposing…", True
        elif self._segment_seq:
            text, busy = "Segmenting…", True
        else:
            text, busy = "", False
        self.busy_label.setText(text)
        self.progress.setVisible(busy)

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

    # Models -----------------------------------------------------------------------------------------------------
    def start_models(self, models: ModelSettings | None = None) -> None:
        """Load the configured models (or `models`) in the background; the window stays usable meanwhile."""
        models = models if models is not None else self.settings.model_settings()
        self._loading_models = models
        self.models_info = None
        self.model_label.setText("Loading model…")
        self._update_busy()
        self.inference.load_models(models)

    def use_models(self, models: LoadedModels) -> None:
        """Use models built by the caller (e.g. a notebook with its own engine) instead of the configured ones."""
        self._loading_models = ModelSettings(model=models.info.model)
        self.model_label.setText("Loading model…")
        self._update_busy()
        self.inference.use_models(models)

    def use_demo_model(self) -> None:
        """Switch to the planted demo model (remembered in the settings); no reload when it is the one loaded."""
        self._demo_reason = ""
        demo = self.settings.model_settings().with_demo_model()
        self.settings.set_model_settings(demo)
        self.message_bar.clear("model")
        if self.models_info is not None and self.models_info.is_demo and self._loading_models is None:
            self._update_title()
            return
        self.start_models(demo)

    def _models_loading(self, step: str) -> None:
        self.show_status(step)
        self.model_label.setText(step)

    def _models_ready(self, info: ModelsInfo) -> None:
        self._loading_models = None
        self.models_info = info
        heads = ", ".join(f"L{layer}H{head}" for layer, head in info.heads)
        name = "demo model" if info.is_demo else Path(info.model).name
        sam = f"{mask_model_label(info.sam_type)} on {info.sam_device or info.device}" if info.sam_type else "no SAM"
        self.model_label.setText(f"{name} on {info.device} · {sam}")
        self.model_label.setToolTip(f"{info.model}\nheads {heads} ({info.heads_source})")
        self.show_status(f"Model ready in {info.load_seconds:.1f} s: {name}, heads {heads}, {sam}.")
        self._update_busy()
        self._update_title()
        if info.is_demo:
            why = f"The chosen model is not on this machine yet: {self._demo_reason}\n" if self._demo_reason else ""
            download = [("Download…", self.open_downloads)] if why and self._missing_downloads() else []
            self.message_bar.show_message(
                why + "Using the demo model: a tiny planted LLaVA that finds coloured shapes by their colour word "
                "(try “the purple ring” or “the yellow one” on resources/demo). Choose a real model in Settings.",
                "warning" if why else "info",
                [*download, ("Settings…", self.open_settings)],
                topic="model",
            )
        elif info.sam_note:
            download = [("Download…", self.open_downloads)] if self._missing_downloads() else []
            buttons = [*download, ("Settings…", self.open_settings)]
            self.message_bar.show_message(info.sam_note, "warning", buttons, topic="model")
        else:
            self.message_bar.clear("model")
        self.message_bar.clear("inference", "sam")
        self._prefetch_around()
        self.models_changed.emit(info)

    def _missing_downloads(self) -> list[DownloadItem]:
        return missing_downloads(self.settings.model_settings())

    def open_downloads(self) -> None:
        """The models dialog for what the configured models lack. Not modal: the window (with the demo model while
        there is no other) stays usable while it downloads; its answer loads the chosen models without a restart.
        An open one is brought to the front instead of opening a second."""
        if self.download_dialog is not None:
            if self.download_dialog.isVisible():
                self.download_dialog.raise_()
                self.download_dialog.activateWindow()
                return
            self.download_dialog.deleteLater()
            self.download_dialog = None
        items = self._missing_downloads()
        if not items:
            self.show_status("Every configured model is on this machine.")
            return
        dialog = DownloadDialog(items, self)
        dialog.accepted.connect(lambda: self._downloads_chosen(dialog))
        self.download_dialog = dialog
        dialog.show()

    def _downloads_chosen(self, dialog: DownloadDialog) -> None:
        if dialog.choice == "demo":
            self.use_demo_model()
        elif dialog.choice == "local":
            models = dataclasses.replace(self.settings.model_settings(), model=str(dialog.local_folder))
            self.settings.set_model_settings(models)
            self.start_models(models)
        elif dialog.choice == "download":
            self._demo_reason = ""
            models = self.settings.model_settings()
            self.settings.set_model_settings(models)
            self.start_models(models)

    def _models_failed(self, message: str) -> None:
        failed = self._loading_models
        self._loading_models = None
        self.models_info = None
        self.model_label.setText("No model")
        self._update_busy()
        self._update_title()
        self.models_changed.emit(None)
        if failed is not None and self.find_heads.offer(failed):
            return
        first_run = not self.settings.has_model_choice()
        downloadable = failed is not None and not failed.is_demo and llava_missing(failed)
        if first_run and failed is not None and not failed.is_demo:
            self._demo_reason = message
            self.message_bar.show_message(
                f"The chosen model is not on this machine yet: {message}\nLoading the demo model meanwhile…",
                "warning",
                [("Settings…", self.open_settings)],
                topic="model",
            )
            self.message_shown.emit(message)
            self.start_models(self.settings.model_settings().with_demo_model())
        else:
            download = [("Download…", self.open_downloads)] if downloadable else []
            self.message_bar.show_message(
                f"The model could not be loaded: {message}",
                "error",
                [*download, ("Use demo model", self.use_demo_model), ("Settings…", self.open_settings)],
                topic="model",
            )
            self.show_status(f"The model could not be loaded: {message}")
            self.message_shown.emit(message)
        if downloadable:
            self.open_downloads()

    # Folders ----------------------------------------------------------------------------------------------------
    def choose_folder(self) -> None:
        start = str(self.folder) if self.folder is not None else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images", start)
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder: str | Path) -> None:
        """Open (or create) the folder's project in the background; `folder_opened` fires when it is listed."""
        path = Path(folder).expanduser()
        if not path.is_dir():
            self.show_error(f"{path} is not a folder.", "folder")
            return
        if self._sync is not None and self._sync.isRunning():
            self._sync.wait()
        self.show_status(f"Opening {path}…")
        self._sync = FolderSync(path)
        self._sync.synced.connect(self._folder_synced, Qt.ConnectionType.QueuedConnection)
        self._sync.failed.connect(self._folder_failed, Qt.ConnectionType.QueuedConnection)
        self._sync.start()

    def _folder_failed(self, message: str) -> None:
        self.show_error(message, "folder")

    def _folder_synced(self, synced: FolderSynced) -> None:
        self._close_store()
        try:
            store = ProjectStore.open(synced.store_path)
        except AnnotatorError as err:
            self.show_error(str(err), "folder")
            return
        self.message_bar.clear("folder", "image", "edit", "history", "export", "find_heads")
        self.store = store
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

    def _close_store(self) -> None:
        self._discard_pending()
        self.undo_stack.clear()
        self.current_image_id = None
        self._points.clear()
        self._outlines.clear()
        self._outline_requested.clear()
        self._segment_seq.clear()
        self.canvas.set_image(None)
        if self.store is not None:
            self.store.close()
            self.store = None
        self._category_names = None

    def _rebuild_recent_menu(self) -> None:
        self.recent_menu.clear()
        for folder in self.settings.recent_folders():
            action = self.recent_menu.addAction(folder)
            action.triggered.connect(lambda _=False, f=folder: self.open_folder(f))
        self.recent_menu.setEnabled(bool(self.settings.recent_folders()))

    # Images -----------------------------------------------------------------------------------------------------
    def show_image(self, image_id: int) -> None:
        """Make `image_id` current: its pixels decode in the background; stale work for the old one is dropped."""
        if self.store is None or image_id == self.current_image_id:
            return
        self._leave_image()
        self.current_image_id = image_id
        self._image_ready = False
        self.message_bar.clear("image", "inference")
        self.image_list.select_image(image_id)
        record = self.store.image(image_id)
        self.canvas.set_annotations([])
        self.canvas.set_overlay(None)
        self.canvas.set_placeholder("")
        self.image_loader.load(image_id, self.store.image_root / record.path)
        self._prefetch_around()
        self._refresh_panel()
        self._update_title()
        position = self.image_list.position_of(image_id)
        where = f" ({position + 1} of {self.image_list.visible_count()})" if position is not None else ""
        self.show_status(f"{record.path}{where}")

    def _leave_image(self) -> None:
        """Forget what belonged to the current image: pending proposals, queued work, the heatmap."""
        if self._pending:
            self.show_status(f"{len(self._pending)} pending proposal(s) left unaccepted.")
        self._discard_pending()
        self._last_shown = None
        self._proposal_seq = None
        self.inference.move_on()
        self.canvas.set_drawing(False)
        self._update_busy()
        self.heads_panel.set_heads((), (), None, None)

    def _discard_pending(self) -> None:
        for key in self._pending:
            self._segment_seq.pop(key, None)
        self._pending.clear()

    def _prefetch_around(self) -> None:
        """Ask the model to prepare the current image and the next one (LVLM prefix, SAM embedding)."""
        if self.store is None or self.current_image_id is None or self.models_info is None:
            return
        wanted = [self.current_image_id]
        following = self.image_list.neighbour(self.current_image_id, +1)
        if following is not None:
            wanted.append(following)
        self.inference.prefetch([(image_id, self.store.image_path(image_id)) for image_id in wanted])

    def go_to_neighbour(self, step: int) -> None:
        """Next (+1) or previous (-1) image in the list as filtered and sorted."""
        target = self.image_list.neighbour(self.current_image_id, step)
        if target is None:
            self.show_status("This is the last image." if step > 0 else "This is the first image.")
            return
        self.show_image(target)

    def _image_loaded(self, loaded: LoadedImage) -> None:
        stale = loaded.seq != self.image_loader.last_seq or loaded.project != self._project
        if stale or loaded.image_id != self.current_image_id or self.store is None:
            return
        self.store.ensure_image_info(loaded.image_id)
        self.canvas.set_image(loaded.pyramid)
        self._image_ready = True
        self._refresh_annotations()
        self.image_shown.emit(loaded.image_id)

    def _image_failed(self, error: WorkerError) -> None:
        if error.image_id != self.current_image_id or error.project != self._project:
            return
        self.canvas.set_image(None)
        self.canvas.set_placeholder(f"This image cannot be shown.\n{error.message}")
        self.show_error(error.message, "image")

    def _outlined(self, outlines: Outlines) -> None:
        self._outlines.update(outlines.paths)
        if outlines.image_id == self.current_image_id and outlines.project == self._project:
            self._refresh_annotations()

    # Proposals --------------------------------------------------------------------------------------------------
    def run_expression(self, text: str) -> None:
        """Enter in the expression box: propose for `text` on the current image, or accept the proposal it made
        (or, with the box empty, the pending annotation under review)."""
        text = text.strip()
        if not text:
            if self._target_key() is not None:
                self.accept()
            return
        if self.store is None or self.current_image_id is None:
            self.show_status("Open a folder first (Ctrl+O).")
            return
        if self._pending and text == self._proposal_expression and self._proposal_seq is None:
            self.accept()
            return
        if self._proposal_seq is not None and text == self._proposal_expression:
            return
        self._discard_pending()
        self._proposal_expression = text
        self._proposal_seq = self.inference.propose(
            self.current_image_id,
            self.store.image_path(self.current_image_id),
            text,
            self.panel.all_instances.isChecked(),
        )
        self.panel.expression.remember(text)
        self.settings.add_expression(text)
        self.find_heads.note_typed(self.current_image_id, text)
        waiting = " (the model is still loading)" if self._loading_models is not None else ""
        self.show_status(f"Looking for “{text}”…{waiting}")
        self._update_busy()
        self._refresh_annotations()

    def _proposed(self, result: ProposalResult) -> None:
        if result.seq != self._proposal_seq or result.image_id != self.current_image_id:
            return
        if result.project != self._project:
            return
        self.message_bar.clear("inference")
        self._proposal_seq = None
        self._update_busy()
        names = list(self._names().values())
        category = default_category(result.expression, names, self.settings.last_category) or DEFAULT_CATEGORY
        for shown in result.proposals:
            proposal = shown.proposal
            self._pending_counter += 1
            key = f"p{self._pending_counter}"
            self._pending[key] = PendingAnnotation(
                key=key,
                image_id=result.image_id,
                box_xyxy=tuple(proposal.box_xyxy),
                prompt_box_xyxy=tuple(proposal.attention_box_xyxy),
                mask=shown.mask,
                outline=shown.outline,
                score=float(proposal.score),
                expression=result.expression,
                source="proposal",
                heads=tuple(proposal.heads),
                category=category,
                mask_kind=shown.mask_kind,
                shown=shown,
            )
        if result.proposals:
            self._last_shown = result.proposals[0]
            self.canvas.set_annotations(self._canvas_annotations())
            self.canvas.set_active(next(iter(self._pending)))
            if self.panel.expression.text().strip() == result.expression:
                self.canvas.setFocus()
        self._refresh_annotations()
        self._show_proposal_timing(result)
        self.proposals_shown.emit(len(result.proposals))

    def _show_proposal_timing(self, result: ProposalResult) -> None:
        if not result.proposals:
            self.show_status(f"Nothing found for “{result.expression}” ({result.elapsed_ms:.0f} ms).")
            return
        proposal = result.proposals[0].proposal
        timing = proposal.timing
        prefix = "image prefix cached" if timing.prefix_cached else f"image prefix {timing.prefix_ms:.0f} ms"
        rest = max(0.0, result.elapsed_ms - timing.total_ms)
        count = f"{len(result.proposals)} proposals, " if len(result.proposals) > 1 else ""
        note = f" · {proposal.mask_note}" if proposal.mask_note else ""
        self.show_status(
            f"“{result.expression}”: {count}{result.elapsed_ms:.0f} ms in all — model {timing.total_ms:.0f} ms "
            f"({prefix}, expression {timing.expression_ms:.0f} ms), mask and drawing {rest:.0f} ms · "
            f"score {proposal.score:.2f}{note}"
        )

    def _worker_failed(self, error: WorkerError) -> None:
        if self._proposal_seq == error.seq:
            self._proposal_seq = None
        for key, seq in list(self._segment_seq.items()):
            if seq == error.seq:
                del self._segment_seq[key]
        self._update_busy()
        if error.project == self._project and error.image_id in (None, self.current_image_id):
            self.show_error(error.message, "inference")
        self._refresh_annotations()

    # Accept, reject, delete, category ---------------------------------------------------------------------------
    def _target_key(self) -> Hashable | None:
        """The annotation Enter / Esc act on: the active one if pending, else the first proposal, else the first
        pending annotation in the store (a pre-label) on this image."""
        active = self.canvas.active_key
        if active in self._pending or self._stored_pending(active):
            return active
        if self._pending:
            return next(iter(self._pending))
        return next((a.id for a in self._stored_annotations() if a.status == "pending"), None)

    def _stored_pending(self, key: Hashable | None) -> bool:
        if not isinstance(key, int) or self.store is None:
            return False
        try:
            return self.store.annotation(key).status == "pending"
        except KeyError:
            return False

    def accept(self) -> None:
        key = self._target_key()
        if key is None:
            self.show_status("Nothing to accept: E types an expression, D goes to the next image.")
            return
        if isinstance(key, str):
            self._accept_pending(self._pending[key])
        else:
            self._accept_stored(key)
        self._after_decision()

    def _accept_pending(self, pending: PendingAnnotation) -> None:
        store = self.store
        assert store is not None
        name = self.panel.category_text or pending.category or DEFAULT_CATEGORY
        rle = Rle.from_mask(pending.mask) if pending.mask is not None else None
        extra: dict = {}
        if pending.source == "proposal":
            extra["attention_box_xyxy"] = [float(v) for v in pending.prompt_box_xyxy]
        if pending.points:
            extra["points"] = [[p.x, p.y, int(p.positive)] for p in pending.points]
        if rle is not None:
            extra["mask_source"] = pending.mask_kind
        created: list[int] = []

        def act() -> int:
            steps = 0
            category = store.category_by_name(name)
            if category is None:
                category = store.add_category(name)
                steps += 1
            annotation = store.add_annotation(
                pending.image_id,
                category.id,
                pending.box_xyxy,
                rle=rle,
                expression=pending.expression,
                source=pending.source,
                score=pending.score,
                heads=pending.heads,
                status="accepted",
                extra=extra,
            )
            created.append(annotation.id)
            return steps + 1

        label = f"Accept “{pending.expression or name}”"
        if not self._store_action(label, pending.image_id, act):
            return
        if rle is not None and pending.outline is not None:
            self._outlines[rle_key(rle)] = pending.outline
        if pending.points:
            self._points[created[0]] = pending.points
        del self._pending[pending.key]
        self._segment_seq.pop(pending.key, None)
        self.settings.last_category = name
        self._refresh_categories()
        self.show_status(f"Accepted {name}" + (f" for “{pending.expression}”." if pending.expression else "."))

    def _accept_stored(self, annotation_id: int) -> None:
        store = self.store
        assert store is not None
        annotation = store.annotation(annotation_id)
        name = self.panel.category_text

        def act() -> int:
            steps = self._change_category_steps(annotation, name)
            store.accept(annotation_id)
            return steps + 1

        if self._store_action("Accept annotation", annotation.image_id, act):
            self.show_status("Accepted.")

    def reject(self) -> None:
        key = self._target_key()
        if key is None:
            if self.canvas.active_key is not None:
                self.canvas.set_active(None)
                self._refresh_annotations()
            return
        rephrase = False
        if isinstance(key, str):
            pending = self._pending.pop(key)
            self._segment_seq.pop(key, None)
            rephrase = bool(pending.expression)
            self.show_status(f"Rejected the proposal for “{pending.expression}”." if rephrase else "Rejected.")
        else:
            store = self.store
            assert store is not None
            image_id = store.annotation(key).image_id
            self._store_step("Reject annotation", image_id, lambda: store.reject(key))
        self._after_decision(rephrase=rephrase)

    def _after_decision(self, rephrase: bool = False) -> None:
        """After accept or reject: the next pending annotation becomes active. Else, after rejecting a proposal
        the expression is selected in its box to be rephrased; otherwise the box is cleared and the canvas keeps
        the keys, so D goes on to the next image and E starts the next expression."""
        self._refresh_annotations()
        following = self._target_key()
        if following is not None:
            self.canvas.set_active(following)
            self._refresh_annotations()
            self.canvas.setFocus()
            return
        box = self.panel.expression
        if rephrase:
            box.setFocus()
            box.selectAll()
        else:
            box.setText("")
            self.canvas.setFocus()

    def delete_active(self) -> None:
        key = self.canvas.active_key
        if key is None:
            self.show_status("Select an annotation first (click it).")
            return
        if isinstance(key, str):
            self.reject()
            return
        store = self.store
        assert store is not None
        image_id = store.annotation(key).image_id

        def act() -> int:
            store.delete_annotation(key)
            return 1

        if self._store_action("Delete annotation", image_id, act):
            self.show_status("Deleted.")

    def set_category(self, name: str) -> None:
        """The category chosen in the panel applies to the active annotation."""
        name = name.strip()
        key = self.canvas.active_key
        if not name or key is None:
            return
        if isinstance(key, str):
            pending = self._pending.get(key)
            if pending is not None:
                self._pending[key] = dataclasses.replace(pending, category=name)
                self._refresh_annotations()
                self.canvas.setFocus()
            return
        store = self.store
        assert store is not None
        annotation = store.annotation(key)
        if store.category(annotation.category_id).name == name:
            return

        def act() -> int:
            return self._change_category_steps(annotation, name)

        if self._store_action(f"Change category to {name}", annotation.image_id, act):
            self.settings.last_category = name
            self._refresh_categories()

    def _change_category_steps(self, annotation: Annotation, name: str) -> int:
        """Set an annotation's category by name (adding the category if new); the store steps it took."""
        store = self.store
        assert store is not None
        if not name or store.category(annotation.category_id).name == name:
            return 0
        steps = 0
        category = store.category_by_name(name)
        if category is None:
            category = store.add_category(name)
            steps += 1
        store.update_category(annotation.id, category.id)
        return steps + 1

    def focus_category(self) -> None:
        if self.canvas.active_key is None:
            self.show_status("Select an annotation first (click it), then change its category.")
            return
        self.panel.category.setFocus()
        self.panel.category.lineEdit().selectAll()

    def toggle_done(self) -> None:
        if self.store is None or self.current_image_id is None:
            return
        store, image_id = self.store, self.current_image_id
        done = store.image(image_id).status != "done"
        label = "Mark image done" if done else "Mark image not done"
        if self._store_step(label, image_id, lambda: store.set_image_done(image_id, done)):
            self.show_status("Image marked done." if done else "Image marked not done.")

    def save(self) -> None:
        if self.store is None:
            self.show_status("Nothing to save: no folder is open.")
            return
        self.show_status(f"Everything is saved: every change is written to {self.store.path} as it is made.")

    # Undo -------------------------------------------------------------------------------------------------------
    def _store_action(
        self,
        text: str,
        image_id: int,
        act: Callable[[], int],
        ui_undo: Callable[[], None] | None = None,
        ui_redo: Callable[[], None] | None = None,
    ) -> bool:
        """Run a store change now and put it on the undo stack; False (and a message) if the store refused."""
        store = self.store
        if store is None:
            return False
        try:
            steps = act()
        except (AnnotatorError, ValueError, KeyError) as err:
            self.show_error(f"{text} failed: {err}", "edit")
            return False
        self.message_bar.clear("edit")
        if steps:
            self.undo_stack.push(StoreCommand(text, store, steps, image_id, self._after_store_change, ui_undo, ui_redo))
        self._after_store_change(image_id)
        return True

    def _store_step(
        self,
        text: str,
        image_id: int,
        change: Callable[[], object],
        ui_undo: Callable[[], None] | None = None,
        ui_redo: Callable[[], None] | None = None,
    ) -> bool:
        """`_store_action` for a change that is one store call (one history step)."""

        def one_step() -> int:
            change()
            return 1

        return self._store_action(text, image_id, one_step, ui_undo, ui_redo)

    def undo(self) -> None:
        if not self.undo_stack.canUndo():
            self.show_status("Nothing to undo.")
            return
        text = self.undo_stack.undoText()
        self._run_history(undo_in_step, f"Undid: {text}.")

    def redo(self) -> None:
        if not self.undo_stack.canRedo():
            self.show_status("Nothing to redo.")
            return
        text = self.undo_stack.redoText()
        self._run_history(redo_in_step, f"Redid: {text}.")

    def _run_history(self, step: Callable[[QUndoStack], None], done: str) -> None:
        """Undo or redo one command; a step the store refuses leaves the stack and the store where they were."""
        try:
            step(self.undo_stack)
        except HistoryRefused as err:
            self.show_error(str(err), "history")
            return
        self.message_bar.clear("history")
        self.show_status(done)

    def _after_store_change(self, image_id: int) -> None:
        if self.store is None:
            return
        self._refresh_categories()
        self.image_list.model.update_record(self.store.image(image_id))
        self._refresh_summary()
        if image_id != self.current_image_id:
            self.show_image(image_id)
        else:
            self._refresh_annotations()
        self.annotations_changed.emit(image_id)

    # Points, boxes and SAM --------------------------------------------------------------------------------------
    def add_point(self, key: Hashable, x: float, y: float, positive: bool) -> None:
        if not self._has_sam():
            return
        points = self._points_of(key) + (PromptPoint(x, y, positive),)
        self._prompt_points(key, points)

    def remove_point(self, key: Hashable, index: int) -> None:
        points = list(self._points_of(key))
        if not 0 <= index < len(points):
            return
        del points[index]
        self._prompt_points(key, tuple(points))

    def remove_last_point(self) -> None:
        key = self.canvas.active_key
        if key is None or not self._points_of(key):
            self.show_status("No refinement point to remove.")
            return
        self.remove_point(key, len(self._points_of(key)) - 1)

    def rerun_box(self) -> None:
        """Segment the active annotation again from its box (its refinement points are dropped)."""
        key = self.canvas.active_key
        if key is None:
            self.show_status("Select an annotation first (click it).")
            return
        if not self._has_sam():
            return
        self._prompt_points(key, ())

    def _has_sam(self) -> bool:
        if self.models_info is None:
            self.show_status("Wait for the model to load.")
            return False
        if self.models_info.sam_type is None:
            self.show_error("Refining masks needs SAM, and no SAM checkpoint is loaded: choose one in Settings.", "sam")
            return False
        return True

    def _points_of(self, key: Hashable) -> tuple[PromptPoint, ...]:
        if isinstance(key, str):
            pending = self._pending.get(key)
            return pending.points if pending is not None else ()
        return self._points.get(key, ())

    def _prompt_points(self, key: Hashable, points: tuple[PromptPoint, ...]) -> None:
        """Show the new points at once and ask SAM for the mask they describe."""
        store = self.store
        if store is None:
            return
        if isinstance(key, str):
            pending = self._pending.get(key)
            if pending is None:
                return
            self._pending[key] = dataclasses.replace(pending, points=points)
            box, image_id, droppable = pending.prompt_box_xyxy, pending.image_id, True
        else:
            annotation = store.annotation(key)
            box, image_id, droppable = annotation.box_xyxy, annotation.image_id, False
        self._segment_seq[key] = self.inference.segment(
            image_id, store.image_path(image_id), key, "points", box, points, droppable=droppable
        )
        self._pending_points_shown(key, points)
        self._update_busy()

    def _pending_points_shown(self, key: Hashable, points: tuple[PromptPoint, ...]) -> None:
        """Draw `points` on the annotation until SAM answers."""
        self._refresh_annotations(points_override={key: points})

    def edit_box(self, key: Hashable, box: BoxXyxy) -> None:
        """A box moved or resized on the canvas: the mask follows unless points shaped it."""
        store = self.store
        if store is None:
            return
        if isinstance(key, str):
            pending = self._pending.get(key)
            if pending is None:
                return
            self._pending[key] = dataclasses.replace(pending, box_xyxy=box, prompt_box_xyxy=box)
            if not pending.points and (pending.mask is not None or self._sam_loaded()):
                self._segment_seq[key] = self.inference.segment(
                    pending.image_id, store.image_path(pending.image_id), key, "box", box,
                    previous_box_xyxy=pending.box_xyxy, previous_mask=pending.mask,
                )  # fmt: skip
            self._refresh_annotations()
            self._update_busy()
            return
        annotation = store.annotation(key)
        if self._points.get(key) or (annotation.rle is None and not self._sam_loaded()):
            self._store_step("Edit box", annotation.image_id, lambda: store.update_box(key, box))
            return
        previous = annotation.rle.to_mask() if annotation.rle is not None and not self._sam_loaded() else None
        self._segment_seq[key] = self.inference.segment(
            annotation.image_id, store.image_path(annotation.image_id), key, "box", box,
            previous_box_xyxy=annotation.box_xyxy, previous_mask=previous, droppable=False,
        )  # fmt: skip
        self._update_busy()

    def _sam_loaded(self) -> bool:
        return self.models_info is not None and self.models_info.sam_type is not None

    def start_box_drawing(self) -> None:
        if self.canvas.image_size is None:
            self.show_status("Open an image first.")
            return
        self.canvas.set_drawing(True)
        self.canvas.setFocus()
        self.show_status("Drag a box around the object (Esc cancels).")

    def _box_drawn(self, box: BoxXyxy) -> None:
        store = self.store
        if store is None or self.current_image_id is None:
            return
        self._pending_counter += 1
        key = f"p{self._pending_counter}"
        names = list(self._names().values())
        category = self.panel.category_text or self.settings.last_category or (names[0] if names else DEFAULT_CATEGORY)
        self._pending[key] = PendingAnnotation(
            key=key,
            image_id=self.current_image_id,
            box_xyxy=box,
            prompt_box_xyxy=box,
            mask=None,
            outline=None,
            score=None,
            expression="",
            source="manual",
            heads=(),
            category=category,
        )
        if self._sam_loaded():
            self._segment_seq[key] = self.inference.segment(
                self.current_image_id, store.image_path(self.current_image_id), key, "drawn", box
            )
        self.canvas.set_annotations(self._canvas_annotations())
        self.canvas.set_active(key)
        self._refresh_annotations()
        self._update_busy()
        self.canvas.setFocus()

    def _segmented(self, update: MaskUpdate) -> None:
        if self._segment_seq.get(update.key) != update.seq or update.project != self._project:
            return
        del self._segment_seq[update.key]
        self._update_busy()
        if isinstance(update.key, str):
            pending = self._pending.get(update.key)
            if pending is None or update.image_id != self.current_image_id:
                return
            box = update.box_xyxy if update.mask is not None else pending.box_xyxy
            kind = "none" if update.mask is None else ("sam" if self._sam_loaded() else pending.mask_kind)
            self._pending[update.key] = dataclasses.replace(
                pending, mask=update.mask, outline=update.outline, box_xyxy=box, mask_kind=kind
            )
            self._refresh_annotations()
            self._show_mask_timing(update)
            return
        self._commit_mask(update)

    def _commit_mask(self, update: MaskUpdate) -> None:
        store = self.store
        if store is None:
            return
        annotation_id = int(update.key)
        try:
            annotation = store.annotation(annotation_id)
        except KeyError:
            return
        if update.mask is None:
            if update.purpose == "box":
                box = update.box_xyxy
                self._store_step("Edit box", annotation.image_id, lambda: store.update_box(annotation_id, box))
            else:
                self.show_status("SAM found no mask there; the annotation is unchanged.")
                self._refresh_annotations()
            return
        rle = Rle.from_mask(update.mask)
        if update.outline is not None:
            self._outlines[rle_key(rle)] = update.outline
        before = self._points.get(annotation_id, ())
        after = update.points

        def set_points(points: tuple[PromptPoint, ...]) -> Callable[[], None]:
            def apply() -> None:
                if points:
                    self._points[annotation_id] = points
                else:
                    self._points.pop(annotation_id, None)

            return apply

        label = "Refine mask with points" if update.purpose == "points" else "Edit box"

        def refine() -> None:
            store.update_mask(annotation_id, rle)
            set_points(after)()

        if self._store_step(label, annotation.image_id, refine, set_points(before), set_points(after)):
            self._show_mask_timing(update)

    def _show_mask_timing(self, update: MaskUpdate) -> None:
        self.show_status(f"Mask updated in {update.elapsed_ms:.0f} ms.")

    # Selection, heatmap, view -----------------------------------------------------------------------------------
    def _annotation_activated(self, key: Hashable | None) -> None:
        self._refresh_annotations()

    def _annotation_chosen_in_list(self, key: Hashable) -> None:
        self.canvas.set_active(key)
        self._refresh_annotations()

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

        dialog = SettingsDialog(self.settings, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.applied.connect(self._settings_applied)
        dialog.open()
        self.settings_dialog = dialog

    def _settings_applied(self, models_changed: bool) -> None:
        self._apply_shortcut_overrides()
        tolerance = self.settings.polygon_tolerance_px
        if tolerance != self.inference.inference.tolerance_px:
            self._outlines.clear()
            self._outline_requested.clear()
        self.inference.inference.tolerance_px = tolerance
        self.image_loader.image_worker.tolerance_px = tolerance
        self.images.capacity = self.settings.image_cache_images
        if models_changed:
            self.message_bar.clear("model")
            self.start_models()

    def _apply_shortcut_overrides(self) -> None:
        overrides = self.settings.shortcut_overrides()
        canvas_keys: dict[str, Callable[[], None]] = {}
        for shortcut in SHORTCUTS:
            action = self.actions_by_name[shortcut.action]
            keys = effective_keys(shortcut.action, overrides)
            if shortcut.scope == "window":
                action.setShortcuts([QKeySequence(k) for k in keys])
            else:
                action.setText(f"{shortcut.text}\t{' / '.join(keys)}")
                for key in keys:
                    canvas_keys[key] = action.trigger
        self.canvas.set_key_actions(canvas_keys)
        self._text_key_filter.keys = self._window_modifier_keys(overrides)

    def _review_order_changed(self, order: str) -> None:
        if self.store is None:
            return
        if order == "least_confident":
            scores: dict[int, float] = {}
            for annotation in self.store.annotations(statuses=("pending",)):
                if annotation.score is not None:
                    scores[annotation.image_id] = min(scores.get(annotation.image_id, 1e9), annotation.score)
            self.image_list.model.set_pending_scores(scores)
            self.image_list.proxy.set_order(order)

    # Export -----------------------------------------------------------------------------------------------------
    def choose_export(self) -> None:
        if self.store is None or self.folder is None:
            self.show_status("Open a folder first (Ctrl+O).")
            return
        dialog = ExportDialog(self.folder.name, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.export(dialog.choice()))
        dialog.open()
        self.export_dialog = dialog

    def export(self, choice: ExportChoice) -> None:
        """Write the export and show a summary of what went in."""
        store = self.store
        if store is None:
            return
        statuses = ("accepted", "pending") if choice.include_pending else ("accepted",)
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            if choice.kind == "coco":
                report = export_coco(
                    store, choice.path, segmentation=choice.segmentation, statuses=statuses,
                    tolerance_px=self.settings.polygon_tolerance_px,
                )  # fmt: skip
                summary = (
                    f"Wrote {report.path}\n\n{report.images} images, {report.annotations} annotations "
                    f"({report.polygon_segmentations} polygons, {report.rle_segmentations} RLE, "
                    f"{report.box_only} box only), {report.categories} categories."
                )
                if report.skipped_images:
                    summary += f"\n{len(report.skipped_images)} images left out (missing or unreadable)."
            elif choice.kind == "refcoco":
                report = export_refcoco(store, choice.path, segmentation=choice.segmentation, statuses=statuses)
                splits = ", ".join(f"{n} {split}" for split, n in report.images_per_split.items())
                summary = (
                    f"Wrote {report.instances_path} and {report.refs_path}\n\n{report.refs} referring expressions; "
                    f"images per split: {splits}."
                )
            else:
                from annotator.project.coco_folder import export_coco_folder
                from annotator.project.voc import export_voc
                from annotator.project.yolo import export_yolo

                folder_options = {"images": choice.images, "statuses": statuses}
                tolerance = self.settings.polygon_tolerance_px
                if choice.kind == "coco-folder":
                    report = export_coco_folder(
                        store, choice.path, segmentation=choice.segmentation, tolerance_px=tolerance, **folder_options
                    )
                elif choice.kind == "yolo":
                    report = export_yolo(store, choice.path, task=choice.task, tolerance_px=tolerance, **folder_options)
                else:
                    report = export_voc(store, choice.path, **folder_options)
                summary = (
                    f"Wrote {report.path}\n\n{report.images} images ({report.image_files} image files), "
                    f"{report.annotations} annotations ({report.masks} with masks), {report.categories} categories."
                )
                if report.skipped_images:
                    summary += f"\n{len(report.skipped_images)} images left out (missing or unreadable)."
        except (AnnotatorError, OSError, ValueError) as err:
            self.show_error(f"Export failed: {err}", "export")
            return
        finally:
            QApplication.restoreOverrideCursor()
        self.message_bar.clear("export")
        self.show_status(summary.replace("\n\n", ": ").replace("\n", " "))
        box = QMessageBox(QMessageBox.Icon.Information, "Export finished", summary, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        self.export_summary = box
        self.exported.emit(report)

    def choose_import(self) -> None:
        """File > Import COCO…: the dialog, then the import on a worker and its summary (see import_dialog)."""
        if self.store is None or self.folder is None:
            self.show_status("Open a folder first (Ctrl+O).")
            return
        self.import_flow = ImportFlow(self, self.store.path, self.folder)
        self.import_flow.choose()

    # Views of the current image ---------------------------------------------------------------------------------
    def _stored_annotations(self) -> list[Annotation]:
        if self.store is None or self.current_image_id is None:
            return []
        return [a for a in self.store.annotations(self.current_image_id) if a.status != "rejected"]

    def _canvas_annotations(
        self, points_override: dict[Hashable, tuple[PromptPoint, ...]] | None = None
    ) -> list[CanvasAnnotation]:
        overrides = points_override or {}
        if not self._image_ready:
            return []
        drawn: list[CanvasAnnotation] = []
        missing: list[Rle] = []
        names = self._names()
        for annotation in self._stored_annotations():
            outline = None
            if annotation.rle is not None:
                outline = self._outlines.get(rle_key(annotation.rle))
                if outline is None and rle_key(annotation.rle) not in self._outline_requested:
                    missing.append(annotation.rle)
            name = names.get(annotation.category_id, "?")
            pending = annotation.status == "pending"
            label = f"{name} {annotation.score:.2f}" if pending and annotation.score is not None else name
            drawn.append(
                CanvasAnnotation(
                    key=annotation.id,
                    box_xyxy=annotation.box_xyxy,
                    label=label + (" ?" if pending else ""),
                    colour=pending_colour() if pending else category_colour(name),
                    pending=pending,
                    outline=outline,
                    points=overrides.get(annotation.id, self._points.get(annotation.id, ())),
                )
            )
        for pending in self._pending.values():
            label = pending.category + (f" {pending.score:.2f}" if pending.score is not None else "")
            drawn.append(
                CanvasAnnotation(
                    key=pending.key,
                    box_xyxy=pending.box_xyxy,
                    label=label,
                    colour=pending_colour(),
                    pending=True,
                    outline=pending.outline,
                    points=overrides.get(pending.key, pending.points),
                )
            )
        if missing and self.current_image_id is not None:
            self._outline_requested.update(rle_key(rle) for rle in missing)
            self.image_loader.outline(self.current_image_id, tuple(missing))
        return drawn

    def _refresh_annotations(self, points_override: dict[Hashable, tuple[PromptPoint, ...]] | None = None) -> None:
        """Redraw the current image's annotations and the panels that describe them. With nothing active, the
        annotation Enter and Esc would act on becomes active, so the annotator sees which one it is."""
        self.canvas.set_annotations(self._canvas_annotations(points_override))
        if self.canvas.active_key is None:
            self.canvas.set_active(self._target_key())
        self._refresh_panel()
        self._refresh_overlay()

    def _refresh_panel(self) -> None:
        active = self.canvas.active_key
        rows: list[AnnotationRow] = []
        names = self._names()
        for annotation in self._stored_annotations():
            name = names.get(annotation.category_id, "?")
            score = f" {annotation.score:.2f}" if annotation.score is not None else ""
            mask = "mask" if annotation.rle is not None else "box only"
            rows.append(
                AnnotationRow(
                    key=annotation.id,
                    text=f"{name} — {annotation.status}{score}",
                    colour=pending_colour() if annotation.status == "pending" else category_colour(name),
                    tooltip=f"“{annotation.expression}” · {annotation.source} · {mask}",
                )
            )
        for pending in self._pending.values():
            score = f" {pending.score:.2f}" if pending.score is not None else ""
            rows.append(
                AnnotationRow(
                    key=pending.key,
                    text=f"{pending.category} — proposal{score}",
                    colour=pending_colour(),
                    tooltip=f"“{pending.expression}”" if pending.expression else "drawn by hand",
                )
            )
        self.panel.set_annotation_rows(rows, active)
        self._refresh_proposal_state(names)

    def _refresh_proposal_state(self, names: dict[int, str]) -> None:
        key = self._target_key()
        active = self.canvas.active_key
        if key is None and active is None:
            self.panel.set_proposal_state(None, can_act=False)
            return
        shown_key = key if key is not None else active
        if isinstance(shown_key, str):
            pending = self._pending[shown_key]
            others = len(self._pending) - 1
            text = f"“{pending.expression}”" if pending.expression else "Box drawn by hand"
            if pending.score is not None:
                text += f" · score {pending.score:.2f}"
            text += {"sam": " · SAM mask", "coarse": " · coarse mask (no SAM)"}.get(pending.mask_kind, " · box only")
            if pending.points:
                text += f" · {len(pending.points)} point(s)"
            if others:
                text += f" · {others} more pending"
            self.panel.set_proposal_state(text, can_act=True)
            self._show_category(pending.category)
            return
        store = self.store
        assert store is not None
        annotation = store.annotation(int(shown_key))
        name = names.get(annotation.category_id, "?")
        text = f"{name}: {annotation.status}, {annotation.source}"
        if annotation.expression:
            text += f" · “{annotation.expression}”"
        if annotation.score is not None:
            text += f" · score {annotation.score:.2f}"
        self.panel.set_proposal_state(text, can_act=annotation.status == "pending")
        self._show_category(name)

    def _show_category(self, name: str) -> None:
        """Put the active annotation's category in the combo, unless the annotator is typing there."""
        if not self.panel.category.hasFocus():
            self.panel.category.setEditText(name)

    def _refresh_overlay(self) -> None:
        active = self.canvas.active_key
        shown = self._pending[active].shown if isinstance(active, str) and active in self._pending else None
        shown = shown or self._last_shown
        if shown is None or shown.image_id != self.current_image_id or not self._image_ready:
            if self._overlay_shown is not None:
                self.canvas.set_overlay(None)
                self.heads_panel.set_heads((), (), None, None)
                self._overlay_shown = None
            return
        if self._overlay_shown is shown:
            return
        self._overlay_shown = shown
        proposal = shown.proposal
        frame: ImageFrame = proposal.frame
        self.canvas.set_overlay(shown.heat)
        self.heads_panel.set_heads(
            proposal.heads, shown.head_images, frame, frame.box_to_grid(tuple(proposal.attention_box_xyxy))
        )

    def _names(self) -> dict[int, str]:
        """Category names by id (read from the store once per change)."""
        if self._category_names is None:
            self._category_names = {c.id: c.name for c in self.store.categories()} if self.store is not None else {}
        return self._category_names

    def _refresh_categories(self) -> None:
        self._category_names = None
        if self.store is None:
            return
        self.panel.set_categories(list(self._names().values()), self.panel.category_text)

    def _refresh_summary(self) -> None:
        if self.store is not None:
            self.image_list.set_summary(self.store.status_counts())

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
        self.inference.stop()
        self.image_loader.stop()
        self._close_store()
