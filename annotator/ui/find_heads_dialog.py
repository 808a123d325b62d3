"""Finding the heads of a model nobody measured yet, from the window: the offer, the run, and using what it found.

When the chosen model loads with no known localization heads (none shipped, no heads.json in its folder, none
chosen in Settings), `FindHeadsFlow.offer` says so in the message bar with "Find heads on this folder". That runs
head discovery (`discovery.folder_heads`) over the open folder's annotations with an expression, on a worker (a
QObject on its own QThread) with a progress dialog whose Cancel stops at the next image; closing the window
cancels it and waits. The heads file is written beside the folder's project store, chosen in Settings, and the
model is loaded again with those heads.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import QProgressDialog

from annotator.discovery.calibration import CalibrationPair
from annotator.discovery.folder_heads import (
    MIN_PAIRS,
    FoundHeads,
    find_heads_on_pairs,
    folder_pairs,
    heads_path,
    heads_summary,
    pairs_shortfall,
)
from annotator.errors import AnnotatorError
from annotator.models.loading import display_name, known_heads, missing_model_message
from annotator.ui.settings import ModelSettings

if TYPE_CHECKING:
    from annotator.ui.main_window import MainWindow

log = logging.getLogger(__name__)

FIND_BUTTON = "Find heads on this folder"
_DTYPES = {"float32", "bfloat16", "float16"}


class DiscoveryCancelled(Exception):
    """Raised inside discovery's progress callback once Cancel was pressed or the window closes."""


def heads_unknown(models: ModelSettings) -> bool:
    """Whether `models` names a model on this machine whose localization heads nobody found yet (a broken heads
    file, or a model not here, is another problem with its own message)."""
    if models.heads_file:
        return False
    try:
        if known_heads(models.model) is not None:
            return False
    except ValueError:
        return False
    return missing_model_message(models.model, None) is None


class HeadsWorker(QObject):
    """Runs discovery for one model over `pairs` on its thread; `progress(done, total)`, then `found`
    (FoundHeads), `failed` (a message) or `cancelled`."""

    progress = Signal(int, int)
    found = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, models: ModelSettings, pairs: list[CalibrationPair], out: Path, source: str) -> None:
        super().__init__()
        self.models, self.pairs, self.out, self.source = models, pairs, out, source
        self.cancel_requested = threading.Event()

    @Slot()
    def run(self) -> None:
        try:
            found = find_heads_on_pairs(
                self.models.model,
                self.pairs,
                self.out,
                source=self.source,
                device=None if self.models.device == "auto" else self.models.device,
                dtype=self._dtype(),
                progress=self._progress,
            )
        except DiscoveryCancelled:
            self.cancelled.emit()
        except AnnotatorError as err:
            self.failed.emit(str(err))
        except Exception as err:  # the thread's boundary: report it instead of dying without a word
            log.exception("finding heads for %s failed", self.models.model)
            self.failed.emit(f"{type(err).__name__}: {err}")
        else:
            self.found.emit(found)

    def _progress(self, done: int, total: int) -> None:
        if self.cancel_requested.is_set():
            raise DiscoveryCancelled
        self.progress.emit(done, total)

    def _dtype(self):
        if self.models.dtype not in _DTYPES:
            return None
        import torch

        return getattr(torch, self.models.dtype)


class FindHeadsFlow(QObject):
    """The window's find-heads offer and run; `finished` carries the heads file's Path, or None when discovery did
    not run to the end (too few pairs, no folder, cancelled, failed)."""

    finished = Signal(object)

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.models: ModelSettings | None = None
        self.worker: HeadsWorker | None = None
        self.thread: QThread | None = None
        self.progress: QProgressDialog | None = None
        self._stopped = False
        self._typed: dict[Path, dict[tuple[int, str], None]] = {}

    def note_typed(self, image_id: int, expression: str) -> None:
        """Keep an expression typed on an image of the open folder while the heads are unknown: a discovery pair."""
        store = self.window.store
        if self.models is not None and store is not None:
            self._typed.setdefault(store.path, {})[(image_id, expression.strip())] = None

    def typed(self) -> list[tuple[int, str]]:
        """The (image id, expression) pairs typed on the open folder's images, in typing order."""
        store = self.window.store
        return [] if store is None else list(self._typed.get(store.path, {}))

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.isRunning()

    def offer(self, models: ModelSettings) -> bool:
        """When `models` failed to load for want of heads: say so with the button that finds them, and True."""
        if not heads_unknown(models):
            return False
        self.models = models
        name = display_name(models.model)
        self.window.message_bar.show_message(
            f"No localization heads are known for {name} yet: find them on this folder first. Discovery runs the "
            "model over the folder's images with the expressions of their annotations and those you type on them "
            f"(at least {MIN_PAIRS} pairs) and keeps the heads file beside the folder's project.",
            "warning",
            [
                (FIND_BUTTON, self.start),
                ("Use demo model", self.window.use_demo_model),
                ("Settings…", self.window.open_settings),
            ],
            topic="model",
        )
        self.window.show_status(f"No localization heads are known for {name} yet.")
        return True

    def start(self) -> None:
        """Discovery over the open folder's pairs, on the worker; or a message saying what is missing first."""
        window, models = self.window, self.models
        if self.running or models is None or self._stopped:
            return
        if window.store is None or window.folder is None:
            self._refuse(
                "Open a folder of images first (Ctrl+O): discovery runs on the expressions of its annotations and "
                "those typed on its images."
            )
            return
        pairs = folder_pairs(window.store, self.typed())
        shortfall = pairs_shortfall(len(pairs))
        if shortfall is not None:
            self._refuse(shortfall)
            return
        window.message_bar.clear("find_heads")
        name = display_name(models.model)
        out = heads_path(window.store, name)
        source = f"the app's Find heads on {window.folder}: {len(pairs)} image/expression pairs (annotations and typed)"
        self.worker = HeadsWorker(models, pairs, out, source)
        self.thread = QThread()
        self.thread.setObjectName("find-heads")
        self.worker.moveToThread(self.thread)
        self.thread.started.connect(self.worker.run)
        for signal in (self.worker.found, self.worker.failed, self.worker.cancelled):
            signal.connect(self.thread.quit, Qt.ConnectionType.DirectConnection)  # thread-safe; before `_finish` waits
        self.worker.progress.connect(self._progressed, Qt.ConnectionType.QueuedConnection)
        self.worker.found.connect(self._found, Qt.ConnectionType.QueuedConnection)
        self.worker.failed.connect(self._failed, Qt.ConnectionType.QueuedConnection)
        self.worker.cancelled.connect(self._cancelled, Qt.ConnectionType.QueuedConnection)
        label = f"Finding the heads of {name} on {len(pairs)} pairs…"
        self.progress = QProgressDialog(label, "Cancel", 0, len(pairs), window)
        self.progress.setWindowTitle("Find heads")
        self.progress.setWindowModality(Qt.WindowModality.NonModal)
        self.progress.setMinimumDuration(0)
        self.progress.setAutoClose(False)
        self.progress.setAutoReset(False)
        self.progress.canceled.connect(self.cancel)
        self.progress.show()
        window.show_status(f"Finding the heads of {name} on {len(pairs)} image/expression pairs…")
        self.thread.start()

    def cancel(self) -> None:
        """Stop at the next image (the heads file is not written)."""
        if self.worker is not None:
            self.worker.cancel_requested.set()

    def stop(self) -> None:
        """Cancel a running discovery and wait for its thread (the window is closing); nothing it reports later
        is shown."""
        self._stopped = True
        self.cancel()
        if self.thread is not None:
            self.thread.quit()
            self.thread.wait()
        self._close_progress()

    def _refuse(self, why: str) -> None:
        self.window.message_bar.show_message(why, "warning", topic="find_heads")
        self.window.show_status(why)
        self.finished.emit(None)

    def _progressed(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress.setMaximum(total)
            self.progress.setValue(done)
            self.progress.setLabelText(f"Finding heads: {done} of {total} pairs…")

    def _finish(self) -> None:
        if self.thread is not None:
            self.thread.wait()
        self._close_progress()

    def _close_progress(self) -> None:
        if self.progress is not None:
            self.progress.canceled.disconnect(self.cancel)
            self.progress.close()
            self.progress.deleteLater()
            self.progress = None

    def _found(self, found: FoundHeads) -> None:
        if self._stopped:
            return
        self._finish()
        window, models = self.window, self.models
        skipped = f" ({len(found.skipped)} unreadable images skipped)" if found.skipped else ""
        window.message_bar.clear("find_heads")
        window.show_status(f"Found heads {heads_summary(found)}{skipped}; saved to {found.path}.")
        if models is not None and window.settings.model_settings().model == models.model:
            chosen = dataclasses.replace(window.settings.model_settings(), heads_file=str(found.path))
            window.settings.set_model_settings(chosen)
            window.start_models(chosen)
        self.finished.emit(found.path)

    def _failed(self, message: str) -> None:
        if self._stopped:
            return
        self._finish()
        self.window.show_error(f"Finding heads failed: {message}", "find_heads")
        self.finished.emit(None)

    def _cancelled(self) -> None:
        if self._stopped:
            return
        self._finish()
        self.window.show_status("Finding heads was cancelled; no heads file was written.")
        self.finished.emit(None)
