"""The main window's models: loading the configured ones (or the demo model) in the background, what the status
bar and the message strip say about them, the download dialog for what the configuration lacks, and the
first-run fallback to the demo model."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from annotator.segmentation.catalog import mask_model_label
from annotator.ui.download_dialog import DownloadDialog, DownloadItem, llava_missing, missing_downloads
from annotator.ui.model_loading import LoadedModels, ModelsInfo
from annotator.ui.settings import ModelSettings

if TYPE_CHECKING:
    from annotator.ui.main_window import MainWindow


class ModelsMixin:
    """The models half of `MainWindow`."""

    def start_models(self: MainWindow, models: ModelSettings | None = None) -> None:
        """Load the configured models (or `models`) in the background; the window stays usable meanwhile."""
        models = models if models is not None else self.settings.model_settings()
        self._loading_models = models
        self.models_info = None
        self.session.models_ready = self.session.sam_loaded = False
        self.model_label.setText("Loading model…")
        self._update_busy()
        self.inference.load_models(models)

    def use_models(self: MainWindow, models: LoadedModels) -> None:
        """Use models built by the caller (e.g. a notebook with its own engine) instead of the configured ones."""
        self._loading_models = ModelSettings(model=models.info.model)
        self.model_label.setText("Loading model…")
        self._update_busy()
        self.inference.use_models(models)

    def use_demo_model(self: MainWindow) -> None:
        """Switch to the planted demo model (remembered in the settings); no reload when it is the one loaded."""
        self._demo_reason = ""
        demo = self.settings.model_settings().with_demo_model()
        self.settings.set_model_settings(demo)
        self.message_bar.clear("model")
        if self.models_info is not None and self.models_info.is_demo and self._loading_models is None:
            self._update_title()
            return
        self.start_models(demo)

    def _models_loading(self: MainWindow, step: str) -> None:
        self.show_status(step)
        self.model_label.setText(step)

    def _models_ready(self: MainWindow, info: ModelsInfo) -> None:
        self._loading_models = None
        self.models_info = info
        self.session.models_ready = True
        self.session.sam_loaded = info.sam_type is not None
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

    def _missing_downloads(self: MainWindow) -> list[DownloadItem]:
        return missing_downloads(self.settings.model_settings())

    def open_downloads(self: MainWindow) -> None:
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

    def _downloads_chosen(self: MainWindow, dialog: DownloadDialog) -> None:
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

    def _models_failed(self: MainWindow, message: str) -> None:
        failed = self._loading_models
        self._loading_models = None
        self.models_info = None
        self.session.models_ready = self.session.sam_loaded = False
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
