"""Masks from a box prompt, point refinement, and a cache of image embeddings, for every mask model (docs/method.md).

`Segmenter` holds one `MaskBackend` (backend.py): segment-anything SAM (sam_v1.py), SAM 2.1 (sam2.py) or SAM-HQ
(sam_hq.py). The expensive part of each is the image embedding (SAM vit_b takes 14-20 s on a 2-core CPU, where a
box prompt's decode takes ~0.1 s). So embeddings are kept per image id in a bounded LRU, `prefetch` computes the
next image's embedding on a background thread, and a prompt on a cached image runs only the decoder. The best of
the candidates by predicted IoU, the tight box and the spill/empty rules are the same for every back end.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from segment_anything.modeling import Sam

from annotator.errors import ModelUnavailable
from annotator.segmentation.backend import ImageEmbedding, MaskBackend, Prompt
from annotator.segmentation.catalog import AUTO, MASK_MODELS, SAM2_MODELS, default_mask_model
from annotator.segmentation.mask_result import DEFAULT_SPILL_RATIO, BoxXyxy, MaskResult
from annotator.segmentation.sam2 import load_sam2
from annotator.segmentation.sam_hq import load_sam_hq
from annotator.segmentation.sam_v1 import (
    SAM_CHECKPOINTS,
    CheckpointSpec,
    SamV1Backend,
    checkpoint_path,
    download_checkpoint,
    load_checkpoint,
    load_sam_v1,
)

__all__ = [
    "DEFAULT_SPILL_RATIO",
    "MASK_MODELS",
    "SAM_CHECKPOINTS",
    "BoxXyxy",
    "CheckpointSpec",
    "MaskResult",
    "Precision",
    "Segmenter",
    "checkpoint_path",
    "download_checkpoint",
    "load_checkpoint",
    "resolve_mask_model",
]

Precision = Literal["float32", "bfloat16"]

@dataclass(eq=False)
class _Job:
    """One embedding computation, shared by a prefetch and every predict that waits for it."""

    image_id: Hashable
    image: np.ndarray
    done: Future = field(default_factory=Future)
    queued: Future | None = None  # the worker's future while it is a prefetch that the worker has not started
    cancelled: bool = False
    waiters: int = 0
    embedding: ImageEmbedding | None = None


class Segmenter:
    """A mask model with a bounded LRU of image embeddings keyed by image id and a background prefetch worker.

    Thread-safe: the cache and the pending computations are guarded by one lock; embeddings and decodes run
    outside it, so a prompt on a cached image never waits for a prefetch of another. A prompt on an image that
    is being prefetched waits for that computation; one on an image whose prefetch is still queued takes the
    computation over and runs it at once on the calling thread. Images are RGB uint8 `[H, W, 3]` arrays, EXIF
    orientation already applied; an image id must always name the same image.
    """

    def __init__(
        self,
        model: MaskBackend | Sam,
        *,
        cache_size: int = 8,
        spill_ratio: float = DEFAULT_SPILL_RATIO,
        encoder_dtype: torch.dtype = torch.float32,
    ) -> None:
        """`model` is a `MaskBackend`, or a segment-anything `Sam` (wrapped in `SamV1Backend`).
        `encoder_dtype=torch.bfloat16` runs the image encoder under autocast on the model's device; the cached
        features and the decoder stay float32."""
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self.backend: MaskBackend = SamV1Backend(model) if isinstance(model, Sam) else model
        self.cache_size = cache_size
        self.spill_ratio = spill_ratio
        self.encoder_dtype = encoder_dtype
        self._lock = threading.Lock()
        self._cache: OrderedDict[Hashable, ImageEmbedding] = OrderedDict()
        self._jobs: dict[Hashable, _Job] = {}
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mask-prefetch")

    @classmethod
    def load(
        cls,
        model_type: str = "vit_h",
        checkpoint: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        *,
        precision: Precision = "float32",
        cache_size: int = 8,
        spill_ratio: float = DEFAULT_SPILL_RATIO,
    ) -> "Segmenter":
        """Build mask model `model_type` and load its weights: one of `MASK_MODELS` ("vit_h", "vit_l", "vit_b",
        "sam2.1-tiny", ..., "sam-hq-vit_b", ...), or "auto" for the one that fits the device (`default_mask_model`).

        `checkpoint` is SAM v1's .pth file or a transformers model's checkpoint folder; it defaults to the
        downloaded one (SAM v1: `checkpoint_path(model_type)`; SAM 2.1 and SAM-HQ: the snapshot in the Hugging Face
        cache).
        `device` defaults to CUDA when present, else the CPU. `precision="bfloat16"` (CUDA only) runs the image
        encoder in bf16; weights and the decoder stay float32.
        """
        device = torch.device(device) if device is not None else _default_device()
        model_type = resolve_mask_model(model_type, device)
        if precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
        if precision == "bfloat16" and device.type != "cuda":
            raise ValueError(f"bfloat16 runs only on CUDA; on {device} the mask model runs in float32")
        if model_type in SAM_CHECKPOINTS:
            backend: MaskBackend = load_sam_v1(model_type, checkpoint, device)
        elif model_type in SAM2_MODELS:
            backend = load_sam2(model_type, checkpoint, device)
        else:
            backend = load_sam_hq(model_type, checkpoint, device)
        encoder_dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        return cls(backend, cache_size=cache_size, spill_ratio=spill_ratio, encoder_dtype=encoder_dtype)

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def label(self) -> str:
        """The mask model in words ("SAM vit_b", "SAM 2.1 tiny")."""
        return self.backend.label

    def segment_box(self, image_id: Hashable, image: np.ndarray, box_xyxy: Sequence[float]) -> MaskResult:
        """Mask for a box prompt (pixels, `x0, y0, x1, y1`): SAM's three candidates, the best predicted IoU kept."""
        box = np.asarray(box_xyxy, dtype=np.float64)
        if box.shape != (4,):
            raise ValueError(f"box_xyxy must hold 4 numbers, got shape {box.shape}")
        embedding = self._embedding_for(image_id, image)
        return self._predict(embedding, Prompt(box, None, None, None, multimask=True))

    def refine(
        self,
        image_id: Hashable,
        image: np.ndarray,
        box_xyxy: Sequence[float] | None,
        points_xy: Sequence[Sequence[float]] | np.ndarray,
        labels: Sequence[int] | np.ndarray,
        previous: MaskResult | None = None,
    ) -> MaskResult:
        """Mask for a box plus positive (label 1) and negative (label 0) clicks, in pixels.

        `previous.low_res_logits` goes in as the model's mask input, as annotators' click-to-fix loops do. With a
        box, a previous mask or several points the prompt is unambiguous and the model returns one mask; a single
        click alone gets its three candidates and the best predicted IoU is kept.
        """
        points = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        point_labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(points) != len(point_labels) or not np.isin(point_labels, (0, 1)).all():
            raise ValueError("refine needs one label per point, each 1 (positive) or 0 (negative)")
        if len(points) == 0 and box_xyxy is None:
            raise ValueError("refine needs a box or at least one point")
        box = None if box_xyxy is None else np.asarray(box_xyxy, dtype=np.float64)
        embedding = self._embedding_for(image_id, image)
        multimask = box is None and previous is None and len(points) == 1
        prompt = Prompt(
            box=box,
            points=points if len(points) else None,
            labels=point_labels if len(points) else None,
            mask_input=None if previous is None else previous.low_res_logits,
            multimask=multimask,
        )
        return self._predict(embedding, prompt)

    def prefetch(self, image_id: Hashable, image: np.ndarray) -> Future:
        """Compute `image`'s embedding on the background worker; returns at once.

        The returned future completes (with None) when the computation is over; its `cancelled()` is True when
        `cancel_prefetch` or `close` dropped it before it ran. A cached image is only marked recently used.
        """
        image = _checked_image(image)
        with self._lock:
            if image_id in self._cache:
                self._cache.move_to_end(image_id)
                finished: Future = Future()
                finished.set_result(None)
                return finished
            job = self._jobs.get(image_id)
            if job is not None:
                job.cancelled = False
                return job.done
            job = _Job(image_id, image)
            job.queued = self._worker.submit(self._run_prefetch, job)
            self._jobs[image_id] = job
            return job.done

    def cancel_prefetch(self, image_id: Hashable) -> bool:
        """Drop the prefetch of an image no longer wanted; True when one was dropped.

        A queued prefetch never runs; a running one finishes but its embedding is not cached. A computation that
        a prompt is waiting for, or that a prompt started, is kept.
        """
        with self._lock:
            job = self._jobs.get(image_id)
            if job is None or job.queued is None or job.waiters or job.cancelled:
                return False
            job.cancelled = True
            if job.queued.cancel():
                del self._jobs[image_id]
                job.done.cancel()
            return True

    def cached_ids(self) -> list[Hashable]:
        """Ids of the cached embeddings, least recently used first."""
        with self._lock:
            return list(self._cache)

    def close(self, wait: bool = True) -> None:
        """Stop the prefetch worker: queued prefetches are dropped; `wait` waits for a running one to end."""
        with self._lock:
            for image_id, job in list(self._jobs.items()):
                if job.queued is not None and job.queued.cancel():
                    del self._jobs[image_id]
                    job.done.cancel()
        self._worker.shutdown(wait=wait)

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _embedding_for(self, image_id: Hashable, image: np.ndarray) -> ImageEmbedding:
        """The cached embedding, else the one being computed (waited for), else computed on this thread."""
        image = _checked_image(image)
        with self._lock:
            embedding = self._cache.get(image_id)
            if embedding is not None:
                self._cache.move_to_end(image_id)
                return _same_size(embedding, image, image_id)
            job = self._jobs.get(image_id)
            if job is None:
                job = self._jobs[image_id] = _Job(image_id, image)
                owner = True
            elif job.queued is not None and job.queued.cancel():
                job.queued, owner = None, True  # a queued prefetch: run it now, on this thread
            else:
                job.waiters, owner = job.waiters + 1, False  # a running one: wait for it
            job.cancelled = False
        if owner:
            self._compute(job)
        else:
            try:
                job.done.result()
            finally:
                with self._lock:
                    job.waiters -= 1
        return _same_size(job.embedding, image, image_id)

    def _run_prefetch(self, job: _Job) -> None:
        with self._lock:
            dropped = job.cancelled
            if dropped and self._jobs.get(job.image_id) is job:
                del self._jobs[job.image_id]
        if dropped:
            job.done.set_result(None)
            return
        self._compute(job)

    def _compute(self, job: _Job) -> None:
        """Embed the job's image, cache it unless the job was cancelled meanwhile, and wake its waiters."""
        try:
            embedding = self._embed(job.image)
        except BaseException as exc:
            with self._lock:
                if self._jobs.get(job.image_id) is job:
                    del self._jobs[job.image_id]
            job.done.set_exception(exc)
            raise
        with self._lock:
            job.embedding = embedding
            if self._jobs.get(job.image_id) is job:
                del self._jobs[job.image_id]
            if not job.cancelled:
                self._cache[job.image_id] = embedding
                self._cache.move_to_end(job.image_id)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        job.done.set_result(None)

    def _embed(self, image: np.ndarray) -> ImageEmbedding:
        autocast = (
            torch.autocast(self.device.type, dtype=self.encoder_dtype)
            if self.encoder_dtype != torch.float32
            else contextlib.nullcontext()
        )
        with autocast:
            embedding = self.backend.embed(image)
        features = tuple(f.float() for f in embedding.features)
        return ImageEmbedding(features, embedding.original_size, embedding.input_size)

    def _predict(self, embedding: ImageEmbedding, prompt: Prompt) -> MaskResult:
        candidates = self.backend.decode(embedding, prompt)
        best = int(np.argmax(candidates.scores))
        return MaskResult.from_mask(
            candidates.masks[best],
            candidates.scores[best],
            candidates.low_res_logits[best : best + 1],
            prompt.box,
            self.spill_ratio,
        )


def resolve_mask_model(model_type: str, device: str | torch.device | None = None) -> str:
    """`model_type`, or for "auto" the default mask model of `device` (default: CUDA when present, else the CPU);
    `ModelUnavailable` listing the names for an unknown one."""
    if model_type == AUTO:
        return default_mask_model(torch.device(device).type if device is not None else _default_device().type)
    if model_type not in MASK_MODELS:
        raise ModelUnavailable(f"unknown SAM model type {model_type!r}; use one of {', '.join(MASK_MODELS)}, {AUTO}")
    return model_type


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _checked_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    return image


def _same_size(embedding: ImageEmbedding, image: np.ndarray, image_id: Hashable) -> ImageEmbedding:
    if embedding.original_size != image.shape[:2]:
        raise ValueError(
            f"image id {image_id!r} was embedded at {embedding.original_size} (h, w) but this image is "
            f"{image.shape[:2]}; an image id must always name the same image"
        )
    return embedding
