"""The first-run models dialog: what is missing, how big, where it goes; Download / Use demo / Choose local folder.

A Hub model's size is asked of the Hub on a worker thread as the dialog opens (the plan of only the shards
grounding reads, with the bytes it leaves out); offline it stays unknown and says why. Downloads run one after
another on a worker thread; the GUI thread only receives progress signals (bytes, speed since the start, time
left) and stays responsive. Cancel stops at the next chunk: the partial file is kept and the
next download resumes it (`download.py`'s `.part` files, for SAM checkpoints and LLaVA's weight shards).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from annotator.errors import AnnotatorError
from annotator.download import Progress, user_cache_dir
from annotator.models.hub import format_bytes
from annotator.models.presets import LocalCopy, LvlmPreset, Presets, download_sam, load_presets, local_copy
from annotator.ui.settings import ModelSettings

if TYPE_CHECKING:
    from annotator.models.hub import DownloadPlan

Fetch = Callable[[Progress], Path]
"""Downloads one item, reporting `progress(bytes_done, bytes_total)`; returns the path to load."""


@dataclass(frozen=True)
class ItemSize:
    """What a download takes: `needed` bytes, and `saved` bytes of the checkpoint it leaves out."""

    needed: int
    saved: int


@dataclass(frozen=True)
class DownloadItem:
    """One missing model: its preset `name`, a `description`, `size_bytes` (None until the source tells),
    `destination` (the folder it goes to, in words or as a path), the `fetch` that downloads it and, for a size
    only its source knows, the `measure` that asks it (network; raises `AnnotatorError` or `OSError`)."""

    name: str
    description: str
    size_bytes: int | None
    destination: str
    fetch: Fetch
    measure: Callable[[], ItemSize] | None = None


class DownloadCancelled(Exception):
    """Raised inside a download's progress callback when the user cancels (not an OSError: those mean a dropped
    connection to the HTTP downloader, which then resumes)."""


def llava_missing(models: ModelSettings, presets: Presets | None = None) -> bool:
    """Whether the configured LLaVA is a preset that is not on this machine (offline lookup)."""
    lvlm = _lvlm_preset(models, presets or load_presets())
    return lvlm is not None and not _complete(local_copy(lvlm))


def missing_downloads(models: ModelSettings, presets: Presets | None = None) -> list[DownloadItem]:
    """The configured LLaVA preset and SAM checkpoint that are not on this machine (offline lookup)."""
    from huggingface_hub import constants

    presets = presets or load_presets()
    items = []
    lvlm = _lvlm_preset(models, presets)
    if lvlm is not None and not _complete(local_copy(lvlm)):
        source = HubSource(lvlm)
        items.append(
            DownloadItem(
                lvlm.name,
                f"{lvlm.description} ({_reach(lvlm.deepest_head_layer)})",
                None,
                f"Hugging Face cache {constants.HF_HUB_CACHE}",
                source.fetch,
                source.measure,
            )
        )
    sam_type = models.sam_type
    if sam_type == "auto":
        from annotator.segmentation.segment import resolve_mask_model

        sam_type = resolve_mask_model(sam_type, None if models.device == "auto" else models.device)
    sam = next((p for p in presets.sam if p.model_type == sam_type), None)
    if sam is not None and not models.sam_checkpoint:
        if not _complete(local_copy(sam)):
            official = sam.hub_id is None
            items.append(
                DownloadItem(
                    sam.name,
                    sam.description,
                    sam.checkpoint.size_bytes if official else None,
                    str(user_cache_dir() / "sam") if official else f"Hugging Face cache {constants.HF_HUB_CACHE}",
                    lambda progress, sam=sam: download_sam(sam, progress),
                )
            )
    return items


def _complete(copy: LocalCopy | None) -> bool:
    return copy is not None and copy.complete


def _lvlm_preset(models: ModelSettings, presets: Presets) -> LvlmPreset | None:
    return next((p for p in presets.lvlm if models.model in (p.name, p.hub_id)), None)


class HubSource:
    """A LLaVA preset on the Hub: its grounding plan, asked of the Hub once and shared by `measure` and `fetch`."""

    def __init__(self, preset: LvlmPreset) -> None:
        self.preset = preset
        self._plan: "DownloadPlan | None" = None
        self._lock = threading.Lock()

    def plan(self) -> "DownloadPlan":
        from annotator.models import hub

        with self._lock:
            if self._plan is None:
                self._plan = hub.plan_download(self.preset.hub_id, self.preset.deepest_head_layer)
            return self._plan

    def measure(self) -> ItemSize:
        plan = self.plan()
        return ItemSize(plan.bytes_needed, plan.bytes_saved)

    def fetch(self, progress: Progress) -> Path:
        from annotator.models import hub

        return hub.download(self.plan(), progress)


class _Signals(QObject):
    """Worker -> GUI thread (queued across threads)."""

    progress = Signal(int, object, object)  # item index, bytes done, bytes total or None (Python ints: > 2 GB)
    sized = Signal(int, object)  # item index, ItemSize
    unsized = Signal(int, str)  # item index, why the size is unknown
    item_done = Signal(int, str)  # item index, path
    failed = Signal(str)
    cancelled = Signal()
    finished = Signal()


class DownloadDialog(QDialog):
    """Lists `items`; after `exec()`, `choice` is "download" (with `paths`: name -> path), "demo" or "local"
    (with `local_folder`), or None when closed."""

    def __init__(self, items: Sequence[DownloadItem], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models to download")
        self.items = list(items)
        self.choice: str | None = None
        self.paths: dict[str, Path] = {}
        self.local_folder: Path | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._signals = _Signals()  # no parent: a worker still finishing its chunk outlives a closed dialog
        self._signals.progress.connect(self._on_progress)
        self._signals.item_done.connect(self._on_item_done)
        self._signals.failed.connect(self._on_failed)
        self._signals.cancelled.connect(self._on_cancelled)
        self._signals.finished.connect(self._on_finished)
        self._signals.sized.connect(self._on_sized)
        self._signals.unsized.connect(self._on_unsized)
        self._sizes: dict[int, ItemSize] = {}
        self._size_problems: dict[int, str] = {}
        self._started_at = 0.0
        self._start_bytes: int | None = None

        self.table = QTreeWidget()
        self.table.setHeaderLabels(["Model", "Size", "Destination"])
        self.table.setRootIsDecorated(False)
        for item in self.items:
            row = QTreeWidgetItem([item.name, self._size_text(item), item.destination])
            row.setToolTip(0, item.description)
            self.table.addTopLevelItem(row)
        self.summary = QLabel(self._summary_text())
        self.summary.setWordWrap(True)
        self.progress_bar = QProgressBar()
        self.progress_bar.setVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.download_button = QPushButton("Download")
        self.demo_button = QPushButton("Use demo")
        self.local_button = QPushButton("Choose local folder…")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.download_button.setDefault(True)
        self.download_button.clicked.connect(self.start_download)
        self.demo_button.clicked.connect(self._use_demo)
        self.local_button.clicked.connect(self._choose_local)
        self.cancel_button.clicked.connect(self.cancel_download)

        buttons = QHBoxLayout()
        for button in (self.download_button, self.demo_button, self.local_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        for widget in (self.summary, self.table, self.progress_bar, self.status):
            layout.addWidget(widget)
        layout.addLayout(buttons)
        self.resize(720, 300)
        to_measure = [
            (i, item.measure) for i, item in enumerate(self.items) if item.size_bytes is None and item.measure
        ]
        if to_measure:
            threading.Thread(target=self._measure, args=(to_measure,), name="model-size", daemon=True).start()

    @property
    def downloading(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start_download(self) -> None:
        """Fetch every item on a worker thread; the dialog closes with `choice` "download" when all are in."""
        if self.downloading:
            return
        self._cancel.clear()
        self._started_at, self._start_bytes = monotonic(), None
        self._set_busy(True)
        self.status.setText("Starting…")
        self._thread = threading.Thread(target=self._run, name="model-download", daemon=True)
        self._thread.start()

    def cancel_download(self) -> None:
        """Stop at the next chunk; the partial file is kept for the next download."""
        self._cancel.set()
        self.cancel_button.setEnabled(False)
        self.status.setText("Cancelling…")

    def done(self, result: int) -> None:
        """Closing cancels a running download; the worker stops at its next chunk (the GUI does not wait)."""
        self._cancel.set()
        super().done(result)

    def _run(self) -> None:
        signals = self._signals
        try:
            for index, item in enumerate(self.items):
                if item.name in self.paths:
                    continue

                def progress(done: int, total: int | None, index: int = index) -> None:
                    if self._cancel.is_set():
                        raise DownloadCancelled
                    signals.progress.emit(index, done, total)

                signals.item_done.emit(index, str(item.fetch(progress)))
        except DownloadCancelled:
            signals.cancelled.emit()
        except (AnnotatorError, OSError) as err:
            signals.failed.emit(" ".join(str(err).split()))
        else:
            signals.finished.emit()

    def _measure(self, to_measure: list[tuple[int, Callable[[], ItemSize]]]) -> None:
        for index, measure in to_measure:
            try:
                self._signals.sized.emit(index, measure())
            except (AnnotatorError, OSError) as err:
                self._signals.unsized.emit(index, " ".join(str(err).split()))

    def _on_sized(self, index: int, size: ItemSize) -> None:
        self._sizes[index] = size
        self.table.topLevelItem(index).setText(1, format_bytes(size.needed))
        self.summary.setText(self._summary_text())

    def _on_unsized(self, index: int, why: str) -> None:
        self._size_problems[index] = why
        self.table.topLevelItem(index).setText(1, "unknown")
        self.table.topLevelItem(index).setToolTip(1, why)
        self.summary.setText(self._summary_text())

    def _on_progress(self, index: int, done: int, total: int | None) -> None:
        name = self.items[index].name
        if total:
            self.table.topLevelItem(index).setText(1, format_bytes(total))
            self.progress_bar.setRange(0, 1000)
            self.progress_bar.setValue(int(1000 * done / total))
        else:
            self.progress_bar.setRange(0, 0)
        if self._start_bytes is None:
            self._start_bytes = done
        elapsed = monotonic() - self._started_at
        rate = (done - self._start_bytes) / elapsed if elapsed > 0 else 0.0
        parts = [f"{name}: {format_bytes(done)}" + (f" of {format_bytes(total)}" if total else "")]
        if rate > 0:
            parts.append(f"{format_bytes(rate)}/s")
            if total:
                parts.append(f"{format_duration((total - done) / rate)} left")
        self.status.setText(" · ".join(parts))

    def _on_item_done(self, index: int, path: str) -> None:
        self.paths[self.items[index].name] = Path(path)
        self.table.topLevelItem(index).setText(2, path)
        self._start_bytes, self._started_at = None, monotonic()

    def _on_failed(self, message: str) -> None:
        self._set_busy(False)
        self.status.setText(f"Download failed: {message}")

    def _on_cancelled(self) -> None:
        self._set_busy(False)
        self.status.setText("Cancelled. The partial download is kept; Download resumes it.")

    def _on_finished(self) -> None:
        self._set_busy(False)
        self.choice = "download"
        self.accept()

    def _use_demo(self) -> None:
        self.choice = "demo"
        self.accept()

    def _choose_local(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder saved with save_pretrained")
        if folder:
            self.choice, self.local_folder = "local", Path(folder)
            self.accept()

    def _set_busy(self, busy: bool) -> None:
        self.progress_bar.setVisible(busy or self.progress_bar.isVisible())
        self.cancel_button.setEnabled(busy)
        for button in (self.download_button, self.demo_button, self.local_button):
            button.setEnabled(not busy)

    def _summary_text(self) -> str:
        sizes = [self._item_bytes(i, item) for i, item in enumerate(self.items)]
        known = [size for size in sizes if size is not None]
        total = format_bytes(sum(known)) if known else "unknown"
        unknown = ""
        if len(known) < len(self.items):
            asking = any(
                item.measure is not None and sizes[i] is None and i not in self._size_problems
                for i, item in enumerate(self.items)
            )
            why = "asking the Hub for their size…" if asking else "sized when the download starts"
            unknown = f" plus the Hub model's shards ({'; '.join(self._size_problems.values()) or why})"
        saved = sum(size.saved for size in self._sizes.values())
        skipped = (
            f" Only the shards grounding reads: {format_bytes(saved)} of later layers are left out." if saved else ""
        )
        return (
            f"{len(self.items)} model(s) are not on this machine: {total}{unknown}.{skipped} Download them, use the "
            "demo model (runs on any CPU, finds colours), or choose a model folder you already have."
        )

    def _item_bytes(self, index: int, item: DownloadItem) -> int | None:
        if item.size_bytes is not None:
            return item.size_bytes
        return self._sizes[index].needed if index in self._sizes else None

    @staticmethod
    def _size_text(item: DownloadItem) -> str:
        if item.size_bytes is not None:
            return format_bytes(item.size_bytes)
        return "asking the Hub…" if item.measure is not None else "from the Hub"


def format_duration(seconds: float) -> str:
    """Time left in words: 45 s, 3 min 05 s, 2 h 10 min."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _reach(deepest_head_layer: int | None) -> str:
    """Which shards a download fetches, in words."""
    if deepest_head_layer is None:
        return "every shard: no localization heads are known for it yet"
    return f"only the shards up to layer {deepest_head_layer}"
