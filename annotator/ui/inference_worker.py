"""The inference thread's worker: model loading, proposals, SAM prompts and prefetches, as a thin shell around
the same `Proposer` the CLI uses and the `Segmenter` behind it."""

from __future__ import annotations

import gc
import logging
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PySide6.QtCore import QObject, Signal, Slot

from annotator.errors import AnnotatorError, ModelUnavailable
from annotator.project.geometry import tight_box
from annotator.ui.model_loading import LoadedModels, cpu_threads_for_app, load_models
from annotator.ui.rendering import grid_map_image, heatmap_image, mask_outline
from annotator.ui.settings import ModelSettings
from annotator.ui.worker_jobs import (
    BoxXyxy, DecodedImages, Job, JobQueue, LoadModelsJob, MaskUpdate, PrefetchJob, ProposalResult, ProposeJob,
    SegmentJob, ShownProposal, UseModelsJob, WorkerError,
)

if TYPE_CHECKING:
    from annotator.grounding.grounder import Proposal
    from annotator.segmentation.segment import MaskResult

log = logging.getLogger(__name__)

MAX_REMEMBERED_MASKS = 64
"""SAM results kept per annotation key, so the next click on it passes the previous logits back."""


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
                _settle_garbage_collector()
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
            gc.unfreeze()  # the closed models' objects may be collected again
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
        _settle_garbage_collector()
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
        box = (tight_box(mask) if mask is not None else None) or job.box_xyxy
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


def _settle_garbage_collector() -> None:
    """Move everything alive now (the models' hundreds of thousands of Python objects) out of the collector's
    reach. Otherwise every full collection walks them all while holding the GIL, and one triggered on any thread
    (an export making many small objects) freezes the GUI for a third of a second."""
    gc.collect()
    gc.freeze()
