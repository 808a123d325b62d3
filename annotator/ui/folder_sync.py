"""Opening a folder off the GUI thread: create or reopen its project store and bring it in line with the files.

The scan reads directory entries only (no image is decoded), and the store's folder sync inserts new files in
one transaction; the image records and status counts are read here too, so 10,000 images list in under a
second without blocking the GUI. The GUI then opens its own store connection (a store belongs to the thread
that opened it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

from PySide6.QtCore import QThread, Signal

from annotator.errors import AnnotatorError
from annotator.project.images import SkippedFile, scan_folder
from annotator.project.store import ImageRecord, ProjectStore, SyncReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FolderSynced:
    """The folder's store is up to date: where it is, what the scan skipped (with reasons), what changed, the
    image list and its status counts."""

    folder: Path
    store_path: Path
    skipped: tuple[SkippedFile, ...]
    report: SyncReport
    records: tuple[ImageRecord, ...]
    status_counts: dict[str, int]
    seconds: float


class FolderSync(QThread):
    """Scans a folder and syncs its store on a background thread; emits `synced` or `failed` (a message).

    It always emits one of the two: an unexpected exception is a failure too (its traceback goes to the log), so
    the window never waits for a folder that the thread gave up on."""

    synced = Signal(object)  # FolderSynced
    failed = Signal(str)

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def run(self) -> None:
        start = perf_counter()
        try:
            store = ProjectStore.for_folder(self.folder)
            try:
                scan = scan_folder(self.folder)
                report = store.sync_folder(scan)
                records = tuple(store.images())
                counts = dict(store.status_counts())
                store_path = store.path
            finally:
                store.close()
        except AnnotatorError as err:
            self.failed.emit(str(err))
            return
        except OSError as err:
            self.failed.emit(f"{self.folder} cannot be opened: {err.strerror or err}")
            return
        except Exception as err:  # the thread's boundary: report it instead of dying without a word
            log.exception("opening %s failed", self.folder)
            self.failed.emit(f"{self.folder} cannot be opened: {type(err).__name__}: {err}")
            return
        self.synced.emit(
            FolderSynced(self.folder, store_path, scan.skipped, report, records, counts, perf_counter() - start)
        )
