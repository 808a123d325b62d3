"""The app's two background threads: inference (models, proposals, SAM prompts, prefetch) and image decoding.

Each thread runs one QObject worker that takes jobs from a `JobQueue` the GUI thread fills. Every job carries a
sequence number; when the annotator moves on, the GUI drops the queued jobs that no longer matter
(`JobQueue.drop_before`) and ignores late results whose sequence number or image id is not the current one.
Interactive jobs (a proposal, a SAM prompt) run before prefetches. Results travel back as frozen dataclasses
through queued signals; they hold numpy arrays, QImages and QPainterPaths, never widgets or pixmaps, and the
workers never touch a widget. Errors become a `WorkerError` with a message in the annotator's words.

The inference worker is a thin shell around the same `Proposer` the CLI uses, plus the `Segmenter` behind it for
box and point prompts. Decoded images are shared between the threads through `DecodedImages`, so the canvas
and the model decode each image once.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from pathlib import Path
from time import perf_counter

import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot
from PySide6.QtGui import QPainterPath

from annotator.errors import AnnotatorError
from annotator.project.geometry import Rle
from annotator.review.points import PromptPoint
from annotator.ui.image_pyramid import build_pyramid
from annotator.ui.inference_worker import InferenceWorker
from annotator.ui.model_loading import LoadedModels
from annotator.ui.rendering import mask_outline
from annotator.ui.settings import ModelSettings
from annotator.ui.worker_jobs import (
    BoxXyxy, DecodedImages, Job, JobQueue, LoadImageJob, LoadModelsJob, LoadedImage, OutlineJob, Outlines,
    PrefetchJob, ProposeJob, SegmentJob, UseModelsJob, WorkerError, rle_key,
)

log = logging.getLogger(__name__)


class ImageWorker(QObject):
    """Decodes images and builds their pyramids, and outlines stored masks, on the image thread."""

    loaded = Signal(object)  # LoadedImage
    failed = Signal(object)  # WorkerError
    outlined = Signal(object)  # Outlines

    def __init__(self, queue: JobQueue, images: DecodedImages, tolerance_px: float) -> None:
        super().__init__()
        self.queue = queue
        self.images = images
        self.tolerance_px = tolerance_px

    @Slot()
    def run_next(self) -> None:
        job = self.queue.take()
        if isinstance(job, OutlineJob):
            paths = self._outline_paths(job.masks)
            paths.update((key, mask_outline(mask, self.tolerance_px)) for key, mask in job.arrays)
            self.outlined.emit(Outlines(job.image_id, paths, job.project))
            return
        if not isinstance(job, LoadImageJob):
            return
        start = perf_counter()
        try:
            image = self.images.get((job.project, job.image_id), job.path)
            if self.queue.is_stale(job.seq):
                return
            pyramid = build_pyramid(image)
        except AnnotatorError as err:
            self.failed.emit(WorkerError(job.seq, job.image_id, str(err), job.project))
            return
        except Exception as err:
            log.exception("decoding %s failed", job.path)
            message = f"{job.path.name} cannot be shown: {err}"
            self.failed.emit(WorkerError(job.seq, job.image_id, message, job.project))
            return
        elapsed = (perf_counter() - start) * 1000.0
        self.loaded.emit(LoadedImage(job.seq, job.image_id, pyramid, elapsed, job.project))


    def _outline_paths(self, masks: Sequence[Rle]) -> dict[tuple[int, int, str], QPainterPath]:
        """Each stored mask's outline; a mask that cannot be decoded gets an empty outline (it is logged), so the
        other masks of the image are still drawn and the window does not ask for it again."""
        paths = {}
        for rle in masks:
            try:
                paths[rle_key(rle)] = mask_outline(rle.to_mask(), self.tolerance_px)
            except Exception:
                log.exception("the stored mask %dx%d cannot be outlined", rle.width, rle.height)
                paths[rle_key(rle)] = QPainterPath()
        return paths


# Clients (GUI thread) -----------------------------------------------------------------------------------------------
class _WorkerThread(QObject):
    """A QThread running one worker; `submit` queues a job and wakes the worker.

    `project` numbers the open project: image ids restart at 1 in every project, so the models' caches (LVLM
    prefix, SAM embedding, decoded pixels) are keyed by (project, image id), and results say which project they
    belong to.
    """

    _wake = Signal()

    def __init__(self, name: str, queue: JobQueue, worker: QObject, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.queue = queue
        self.worker = worker
        self._seq = 0
        self.project = 0
        self._thread = QThread()
        self._thread.setObjectName(name)
        worker.moveToThread(self._thread)
        self._wake.connect(worker.run_next)
        self._thread.start()

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def last_seq(self) -> int:
        return self._seq

    def submit(self, job: Job) -> int:
        self.queue.put(job)
        self._wake.emit()
        return job.seq

    def move_on(self) -> None:
        """Everything droppable queued so far is no longer wanted."""
        self.queue.drop_before(self._seq + 1)

    @property
    def running(self) -> bool:
        return self._thread.isRunning()

    def stop(self) -> None:
        """Drop the queue and stop the thread once its current job ends (blocks until then)."""
        self.queue.clear()
        self.queue.drop_before(self._seq + 1)
        self._thread.quit()
        self._thread.wait()


class InferenceClient(_WorkerThread):
    """The GUI thread's handle on the inference thread."""

    def __init__(self, images: DecodedImages, tolerance_px: float, parent: QObject | None = None) -> None:
        queue = JobQueue()
        super().__init__("inference", queue, InferenceWorker(queue, images, tolerance_px), parent)

    @property
    def inference(self) -> InferenceWorker:
        assert isinstance(self.worker, InferenceWorker)
        return self.worker

    def load_models(self, models: ModelSettings) -> int:
        return self.submit(LoadModelsJob(self.next_seq(), models))

    def use_models(self, models: LoadedModels) -> int:
        """Hand ready-made models to the worker (it owns them from now on and closes them)."""
        return self.submit(UseModelsJob(self.next_seq(), models))

    def propose(self, image_id: int, path: Path, expression: str, all_instances: bool) -> int:
        return self.submit(
            ProposeJob(self.next_seq(), image_id, path, expression, all_instances, project=self.project)
        )

    def segment(
        self,
        image_id: int,
        path: Path,
        key: Hashable,
        purpose: str,
        box_xyxy: BoxXyxy,
        points: tuple[PromptPoint, ...] = (),
        previous_box_xyxy: BoxXyxy | None = None,
        previous_mask: np.ndarray | None = None,
        droppable: bool = True,
    ) -> int:
        """Queue a SAM prompt; `droppable` False for stored annotations, whose result is kept even after moving on."""
        job = SegmentJob(
            self.next_seq(), image_id, path, key, purpose, box_xyxy, points, previous_box_xyxy, previous_mask,
            droppable=droppable, project=self.project,
        )  # fmt: skip
        return self.submit(job)

    def prefetch(self, images: list[tuple[int, Path]]) -> None:
        """Prepare these images in this order (the current one first); earlier prefetches of others are dropped."""
        wanted = tuple(image_id for image_id, _ in images)
        for image_id, path in images:
            self.submit(PrefetchJob(self.next_seq(), image_id, path, wanted, project=self.project))

    def stop(self) -> None:
        super().stop()
        self.inference.close()


class ImageClient(_WorkerThread):
    """The GUI thread's handle on the image thread; only the latest requested image is decoded."""

    def __init__(self, images: DecodedImages, tolerance_px: float, parent: QObject | None = None) -> None:
        queue = JobQueue()
        super().__init__("images", queue, ImageWorker(queue, images, tolerance_px), parent)

    @property
    def image_worker(self) -> ImageWorker:
        assert isinstance(self.worker, ImageWorker)
        return self.worker

    def load(self, image_id: int, path: Path) -> int:
        self.move_on()
        return self.submit(LoadImageJob(self.next_seq(), image_id, path, project=self.project))

    def outline(
        self, image_id: int, masks: tuple[Rle, ...], arrays: tuple[tuple[Hashable, np.ndarray], ...] = ()
    ) -> int:
        return self.submit(OutlineJob(self.next_seq(), image_id, masks, arrays, project=self.project))
