"""The jobs the GUI thread queues for the worker threads, the queue, the shared decoded-image cache, and the
results the workers send back (frozen dataclasses holding numpy arrays, QImages and QPainterPaths, never
widgets). See `annotator.ui.worker` for how the threads use them."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtGui import QImage, QPainterPath

from annotator.project.geometry import Rle
from annotator.project.images import DEFAULT_MAX_PIXELS, load_image
from annotator.review.points import PromptPoint
from annotator.ui.image_pyramid import ImagePyramid
from annotator.ui.model_loading import LoadedModels
from annotator.ui.settings import ModelSettings
if TYPE_CHECKING:
    from annotator.grounding.grounder import Proposal

log = logging.getLogger(__name__)

BoxXyxy = tuple[float, float, float, float]


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
    """Outlines for the canvas: of stored masks (decoded from RLE, keyed by `rle_key`) and of masks at hand
    (`arrays`: (key, mask) pairs, e.g. one just edited by hand, so nothing is decoded or encoded for it)."""

    seq: int
    image_id: int
    masks: tuple[Rle, ...]
    arrays: tuple[tuple[Hashable, np.ndarray], ...] = ()
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
    """Mask outlines of one image's annotations, keyed by `rle_key` of each stored mask (or the key it came with)."""

    image_id: int
    paths: dict[Hashable, QPainterPath]
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
