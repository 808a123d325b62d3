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
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot
from PySide6.QtGui import QImage, QPainterPath

from annotator.errors import AnnotatorError, ModelUnavailable
from annotator.project.geometry import Rle
from annotator.project.images import DEFAULT_MAX_PIXELS, load_image
from annotator.review.points import PromptPoint
from annotator.ui.image_pyramid import ImagePyramid, build_pyramid
from annotator.ui.model_loading import LoadedModels, cpu_threads_for_app, load_models
from annotator.ui.rendering import grid_map_image, heatmap_image, mask_outline
from annotator.ui.settings import ModelSettings

if TYPE_CHECKING:
    from annotator.grounding.grounder import Proposal
    from annotator.segmentation.segment import MaskResult

log = logging.getLogger(__name__)

BoxXyxy = tuple[float, float, float, float]
MAX_REMEMBERED_MASKS = 64
"""SAM results kept per annotation key, so the next click on it passes the previous logits back."""


class DecodedImages:
    """A thread-safe LRU of decoded images (RGB uint8, EXIF applied) keyed by (project, image id).

    Two threads asking for the same image at once share one decode.
    """

    def __init__(self, capacity: int = 4, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.capacity = max(1, capacity)
        self.max_pixels = max_pixels
        self._lock = threading.Lock()
        self._images: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._loading: dict[Hashable, Future] = {}

    def get(self, image_id: Hashable, path: Path) -> np.ndarray:
        """The decoded image; decodes it (raising `ImageLoadError`) unless cached or being decoded."""
        with self._lock:
            if image_id in self._images:
                self._images.move_to_end(image_id)
                return self._images[image_id]
            pending = self._loading.get(image_id)
            owner = pending is None
            if owner:
                pending = Future()
                self._loading[image_id] = pending
        if not owner:
            return pending.result()
        try:
            image = load_image(path, max_pixels=self.max_pixels)
        except BaseException as err:
            with self._lock:
                del self._loading[image_id]
            pending.set_exception(err)
            raise
        with self._lock:
            del self._loading[image_id]
            self._images[image_id] = image
            while len(self._images) > self.capacity:
                self._images.popitem(last=False)
        pending.set_result(image)
        return image

    def clear(self) -> None:
        with self._lock:
            self._images.clear()


# Jobs ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadModelsJob:
    seq: int
    models: ModelSettings
    droppable: bool = False
    interactive: bool = True


@dataclass(frozen=True)
class UseModelsJob:
    """Models built elsewhere (a notebook, a test) handed to the worker instead of loading from the settings."""

    seq: int
    models: LoadedModels
    droppable: bool = False
    interactive: bool = True


@dataclass(frozen=True)
class ProposeJob:
    seq: int
    image_id: int
    path: Path
    expression: str
    all_instances: bool
    droppable: bool = True
    interactive: bool = True
    project: int = 0


@dataclass(frozen=True)
class SegmentJob:
    """A SAM prompt for one annotation: `purpose` "drawn" (a hand-drawn box), "box" (a moved or resized box) or
    "points" (box plus refinement points). `previous_mask` lets a moved box keep its mask without SAM."""

    seq: int
    image_id: int
    path: Path
    key: Hashable
    purpose: str
    box_xyxy: BoxXyxy
    points: tuple[PromptPoint, ...] = ()
    previous_box_xyxy: BoxXyxy | None = None
    previous_mask: np.ndarray | None = None
    droppable: bool = True
    interactive: bool = True
    project: int = 0


@dataclass(frozen=True)
class PrefetchJob:
    """Prepare `image_id` ahead (LVLM prefix, SAM embedding); prefetches of images not in `wanted` are dropped."""

    seq: int
    image_id: int
    path: Path
    wanted: tuple[int, ...]
    droppable: bool = True
    interactive: bool = False
    project: int = 0


@dataclass(frozen=True)
class LoadImageJob:
    seq: int
    image_id: int
    path: Path
    droppable: bool = True
    interactive: bool = True
    project: int = 0


@dataclass(frozen=True)
class OutlineJob:
    """Outlines of stored masks (decoded from RLE) for the canvas."""

    seq: int
    image_id: int
    masks: tuple[Rle, ...]
    droppable: bool = True
    interactive: bool = False
    project: int = 0


Job = LoadModelsJob | UseModelsJob | ProposeJob | SegmentJob | PrefetchJob | LoadImageJob | OutlineJob


class JobQueue:
    """Jobs waiting for a worker: interactive ones first, stale droppable ones never run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: list[Job] = []
        self._stale_before = 0

    def put(self, job: Job) -> None:
        with self._lock:
            self._jobs.append(job)

    def take(self) -> Job | None:
        """The next job to run, or None when nothing (still wanted) is waiting."""
        with self._lock:
            self._jobs = [j for j in self._jobs if not (j.droppable and j.seq < self._stale_before)]
            if not self._jobs:
                return None
            chosen = next((j for j in self._jobs if j.interactive), self._jobs[0])
            self._jobs.remove(chosen)
            return chosen

    def drop_before(self, seq: int) -> None:
        """Droppable jobs numbered below `seq` will not run."""
        with self._lock:
            self._stale_before = max(self._stale_before, seq)

    def is_stale(self, seq: int) -> bool:
        return seq < self._stale_before

    def clear(self) -> None:
        with self._lock:
            self._jobs.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)


# Results ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShownProposal:
    """A proposal with what the canvas and the heads panel draw, made on the worker thread.

    `image_id`: the image in the open project (the proposal's own `image_id` is the models' cache key).
    `mask`: SAM's mask when there is one, else the heads' coarse region (the paper's pseudo-mask), else None;
    `mask_kind` says which ("sam", "coarse" or "none"). `outline`: that mask's outline; `heat`: the heatmap over
    the image; `head_images`: each head's raw grid map, in the order of `proposal.heads`.
    """

    image_id: int
    proposal: "Proposal"
    mask: np.ndarray | None
    mask_kind: str
    outline: QPainterPath | None
    heat: QImage
    head_images: tuple[QImage, ...]


@dataclass(frozen=True)
class ProposalResult:
    """The proposals for one expression on one image; `elapsed_ms` is the worker's wall time (decode, model,
    SAM, drawing)."""

    seq: int
    image_id: int
    expression: str
    all_instances: bool
    proposals: tuple[ShownProposal, ...]
    elapsed_ms: float
    project: int = 0


@dataclass(frozen=True)
class MaskUpdate:
    """The mask SAM gave for a `SegmentJob`. `box_xyxy`: the mask's tight box, or the prompt box when there is no
    mask (original pixels); `mask`: bool H x W or None (box only)."""

    seq: int
    image_id: int
    key: Hashable
    purpose: str
    box_xyxy: BoxXyxy
    mask: np.ndarray | None
    mask_score: float | None
    outline: QPainterPath | None
    points: tuple[PromptPoint, ...]
    elapsed_ms: float
    project: int = 0


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image ready for the canvas; `elapsed_ms` covers decoding and the pyramid."""

    seq: int
    image_id: int
    pyramid: ImagePyramid
    elapsed_ms: float
    project: int = 0


@dataclass(frozen=True)
class Outlines:
    """Mask outlines of one image's stored annotations, keyed by `rle_key` of each mask."""

    image_id: int
    paths: dict[tuple[int, int, str], QPainterPath]
    project: int = 0


def rle_key(rle: Rle) -> tuple[int, int, str]:
    """A mask's identity for the outline cache: its size and compressed counts."""
    return rle.height, rle.width, rle.counts


@dataclass(frozen=True)
class WorkerError:
    """A job that failed; `message` is in the annotator's words and names the image or the model."""

    seq: int
    image_id: int | None
    message: str
    project: int = 0


# Workers ------------------------------------------------------------------------------------------------------------
class InferenceWorker(QObject):
    """Runs model loading, proposals, SAM prompts and prefetches on the inference thread."""

    models_loading = Signal(str)
    models_ready = Signal(object)  # ModelsInfo
    models_failed = Signal(str)
    proposed = Signal(object)  # ProposalResult
    segmented = Signal(object)  # MaskUpdate
    failed = Signal(object)  # WorkerError

    def __init__(self, queue: JobQueue, images: DecodedImages, tolerance_px: float) -> None:
        super().__init__()
        self.queue = queue
        self.images = images
        self.tolerance_px = tolerance_px
        self._models: LoadedModels | None = None
        self._previous: OrderedDict[Hashable, "MaskResult"] = OrderedDict()
        self._torch_threads: int | None = None
        self._prefetched: set[Hashable] = set()

    @Slot()
    def run_next(self) -> None:
        job = self.queue.take()
        if job is None:
            return
        try:
            if isinstance(job, LoadModelsJob):
                self._load(job)
            elif isinstance(job, UseModelsJob):
                self._close_models()
                self._models = job.models
                self.models_ready.emit(job.models.info)
            elif isinstance(job, ProposeJob):
                self._propose(job)
            elif isinstance(job, SegmentJob):
                self._segment(job)
            elif isinstance(job, PrefetchJob):
                self._prefetch(job)
        except AnnotatorError as err:
            self._report(job, str(err))
        except Exception as err:  # the app keeps working; the traceback goes to the log
            log.exception("inference job %s failed", type(job).__name__)
            what = getattr(job, "path", None)
            where = f" on {Path(what).name}" if what is not None else ""
            self._report(job, f"Failed{where}: {type(err).__name__}: {err}")

    def _report(self, job: Job, message: str) -> None:
        image_id = getattr(job, "image_id", None)
        self.failed.emit(WorkerError(job.seq, image_id, message, getattr(job, "project", 0)))

    def close(self) -> None:
        """Release the models (stops SAM's prefetch thread) and give torch its thread count back. Call once the
        thread has stopped."""
        self._close_models()
        if self._torch_threads is not None:
            import torch

            torch.set_num_threads(self._torch_threads)
            self._torch_threads = None

    def _close_models(self) -> None:
        if self._models is not None:
            self._models.proposer.close()
        self._models = None
        self._previous.clear()
        self._prefetched.clear()

    def _load(self, job: LoadModelsJob) -> None:
        self._close_models()
        self.models_loading.emit("Loading models…")
        self._leave_a_core_to_the_gui(job.models)
        try:
            self._models = load_models(job.models, self.models_loading.emit)
        except AnnotatorError as err:
            self.models_failed.emit(str(err))
            return
        except Exception as err:
            log.exception("model loading failed")
            self.models_failed.emit(f"{job.models.model} could not be loaded: {type(err).__name__}: {err}")
            return
        self.models_ready.emit(self._models.info)

    def _leave_a_core_to_the_gui(self, models: ModelSettings) -> None:
        import torch

        if models.device == "cpu" or (models.device == "auto" and not torch.cuda.is_available()):
            if self._torch_threads is None:
                self._torch_threads = torch.get_num_threads()
            torch.set_num_threads(cpu_threads_for_app())

    def _require_models(self) -> LoadedModels:
        if self._models is None:
            raise ModelUnavailable("No model is loaded yet: wait for loading to finish, or choose one in Settings.")
        return self._models

    def _propose(self, job: ProposeJob) -> None:
        models = self._require_models()
        start = perf_counter()
        key = (job.project, job.image_id)
        image = self.images.get(key, job.path)
        if self.queue.is_stale(job.seq):
            return
        proposals = models.proposer.propose(key, image, job.expression, all_instances=job.all_instances)
        shown = tuple(self._shown(job.image_id, p) for p in proposals)
        elapsed = (perf_counter() - start) * 1000.0
        self.proposed.emit(
            ProposalResult(job.seq, job.image_id, job.expression, job.all_instances, shown, elapsed, job.project)
        )

    def _shown(self, image_id: int, proposal: "Proposal") -> ShownProposal:
        if proposal.mask is not None and proposal.mask.any():
            mask, kind = proposal.mask, "sam"
        elif proposal.regions and proposal.coarse_mask.any():
            mask, kind = proposal.coarse_mask, "coarse"
        else:
            mask, kind = None, "none"
        return ShownProposal(
            image_id=image_id,
            proposal=proposal,
            mask=mask,
            mask_kind=kind,
            outline=mask_outline(mask, self.tolerance_px) if mask is not None else None,
            heat=heatmap_image(proposal.grid_map, proposal.frame),
            head_images=tuple(grid_map_image(m) for m in proposal.head_maps),
        )

    def _segment(self, job: SegmentJob) -> None:
        models = self._require_models()
        start = perf_counter()
        segmenter = models.segmenter
        mask: np.ndarray | None
        score: float | None = None
        if segmenter is None:
            if job.purpose == "points":
                raise ModelUnavailable(
                    "Refining with points needs SAM, and no SAM checkpoint is loaded: choose one in Settings."
                )
            mask = None
            if job.purpose == "box" and job.previous_mask is not None and job.previous_box_xyxy is not None:
                mask = mask_following_box(job.previous_mask, job.previous_box_xyxy, job.box_xyxy)
        else:
            key = (job.project, job.image_id)
            image = self.images.get(key, job.path)
            if job.points:
                points = np.array([(p.x, p.y) for p in job.points], dtype=np.float64)
                labels = np.array([1 if p.positive else 0 for p in job.points], dtype=np.int64)
                previous = self._previous.get((job.project, job.key))
                result = models.proposer.refine(key, image, job.box_xyxy, points, labels, previous=previous)
            else:
                result = segmenter.segment_box(key, image, job.box_xyxy)
            self._remember((job.project, job.key), result)
            mask = None if result.empty else result.mask
            score = None if result.empty else result.score
        if mask is not None and not mask.any():
            mask = None
        box = job.box_xyxy if mask is None else tight_box(mask)
        outline = mask_outline(mask, self.tolerance_px) if mask is not None else None
        self.segmented.emit(
            MaskUpdate(
                job.seq, job.image_id, job.key, job.purpose, box, mask, score, outline, job.points,
                (perf_counter() - start) * 1000.0, job.project,
            )
        )  # fmt: skip

    def _remember(self, key: Hashable, result: "MaskResult") -> None:
        self._previous[key] = result
        self._previous.move_to_end(key)
        while len(self._previous) > MAX_REMEMBERED_MASKS:
            self._previous.popitem(last=False)

    def _prefetch(self, job: PrefetchJob) -> None:
        if self._models is None:
            return
        proposer = self._models.proposer
        wanted = {(job.project, image_id) for image_id in job.wanted}
        for key in self._prefetched - wanted:
            proposer.forget(key)
        self._prefetched &= wanted
        key = (job.project, job.image_id)
        image = self.images.get(key, job.path)
        if not self.queue.is_stale(job.seq):
            proposer.prefetch(key, image)
            self._prefetched.add(key)


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
            self.outlined.emit(Outlines(job.image_id, self._outline_paths(job.masks), job.project))
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


def tight_box(mask: np.ndarray) -> BoxXyxy:
    """The tight box (x0, y0, x1, y1) of a non-empty mask, pixel x covering [x, x+1)."""
    columns = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    return float(columns[0]), float(rows[0]), float(columns[-1] + 1), float(rows[-1] + 1)


def mask_following_box(mask: np.ndarray, old_box: BoxXyxy, new_box: BoxXyxy) -> np.ndarray:
    """The mask carried along when its box is moved or resized and no SAM can re-prompt it: the affine map taking
    the old box onto the new one, applied to the mask (nearest neighbour)."""
    ox0, oy0, ox1, oy1 = old_box
    nx0, ny0, nx1, ny1 = new_box
    sx = (nx1 - nx0) / max(ox1 - ox0, 1e-9)
    sy = (ny1 - ny0) / max(oy1 - oy0, 1e-9)
    # continuous coordinates (pixel x covers [x, x+1)) shifted to OpenCV's pixel-centre convention
    affine = np.array(
        [[sx, 0.0, nx0 - ox0 * sx + 0.5 * sx - 0.5], [0.0, sy, ny0 - oy0 * sy + 0.5 * sy - 0.5]], dtype=np.float64
    )
    height, width = mask.shape
    warped = cv2.warpAffine(mask.astype(np.uint8), affine, (width, height), flags=cv2.INTER_NEAREST)
    return warped.astype(bool)


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

    def outline(self, image_id: int, masks: tuple[Rle, ...]) -> int:
        return self.submit(OutlineJob(self.next_seq(), image_id, masks, project=self.project))

