"""Segment Anything masks from a box prompt, point refinement, and a cache of image embeddings (docs/method.md).

`Segmenter` holds one `segment_anything` `Sam`. The expensive part of SAM is the image embedding (vit_b takes
14-20 s on a 2-core CPU, where a box prompt's decode takes ~0.1 s). So embeddings are kept per image id in a
bounded LRU, `prefetch` computes the next image's embedding on a background thread, and a prompt on a cached
image runs only the decoder.

Checkpoints are the official ones, loaded with `torch.load(..., weights_only=True)` into a model built by
`sam_model_registry` (whose own `checkpoint=` loading unpickles without that guard, so it is never used).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.modeling import Sam

from annotator.errors import ModelUnavailable
from annotator.download import Progress, download, user_cache_dir

BoxXyxy = tuple[float, float, float, float]
Precision = Literal["float32", "bfloat16"]

DEFAULT_SPILL_RATIO = 0.5
"""A mask spills when its area outside the prompt box exceeds this fraction of the box's area."""


@dataclass(frozen=True)
class CheckpointSpec:
    """An official SAM checkpoint: its URL, its size in bytes and its SHA-256 (hex)."""

    url: str
    size_bytes: int
    sha256: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


SAM_CHECKPOINTS: dict[str, CheckpointSpec] = {
    "vit_h": CheckpointSpec(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        2_564_550_879,
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    ),
    "vit_l": CheckpointSpec(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        1_249_524_607,
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    ),
    "vit_b": CheckpointSpec(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        375_042_383,
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    ),
}


def _spec(model_type: str) -> CheckpointSpec:
    if model_type not in SAM_CHECKPOINTS:
        raise ModelUnavailable(f"unknown SAM model type {model_type!r}; use one of {', '.join(SAM_CHECKPOINTS)}")
    return SAM_CHECKPOINTS[model_type]


def checkpoint_path(model_type: str) -> Path:
    """Where the official checkpoint of `model_type` lives in the user's cache folder (`.../annotator/sam/`)."""
    return user_cache_dir() / "sam" / _spec(model_type).filename


def download_checkpoint(model_type: str, progress: Progress | None = None) -> Path:
    """Fetch the official checkpoint of `model_type` into `checkpoint_path(model_type)` unless it is there.

    The download is resumable and verified (size and SHA-256); see `annotator.download.download`.
    """
    spec = _spec(model_type)
    path = checkpoint_path(model_type)
    if path.is_file():
        return path
    return download(spec.url, path, size_bytes=spec.size_bytes, sha256=spec.sha256, progress=progress)


def load_checkpoint(sam: Sam, checkpoint: str | os.PathLike[str]) -> Sam:
    """Load a SAM checkpoint file into `sam` (built with the matching shapes) and return it.

    The file must be a plain state dict of tensors whose keys and shapes are exactly `sam`'s. A truncated or
    unreadable file, a pickle that would run code, or keys and shapes that do not fit raise `ModelUnavailable`
    naming the file and what is wrong; nothing in the file is executed.
    """
    path = Path(checkpoint)
    return _apply_state_dict(sam, _read_state_dict(path), path)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelUnavailable(f"SAM checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.findall(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if refused:
            raise ModelUnavailable(
                f"SAM checkpoint {path} was refused: it is a pickle that calls {', '.join(refused)} when loaded, "
                f"which could run code; only plain weight files are loaded"
            ) from None
        unpickler = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(\n\n|$)", str(exc), re.S)
        reason = " ".join(unpickler.group(1).split()) if unpickler else _first_line(exc)
        raise ModelUnavailable(_unreadable_checkpoint(path, reason)) from exc
    except Exception as exc:  # the unpickler fails on a damaged file with any error type (IndexError, EOFError...)
        raise ModelUnavailable(_unreadable_checkpoint(path, f"{type(exc).__name__}: {_first_line(exc)}")) from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelUnavailable(f"SAM checkpoint {path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _apply_state_dict(sam: Sam, state: dict[str, torch.Tensor], path: Path) -> Sam:
    expected = sam.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k} {tuple(state[k].shape)} instead of {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = [
        f"{len(names)} {what} (first: {', '.join(names[:3])})"
        for what, names in (("keys missing", missing), ("unexpected keys", unexpected), ("shapes differ", misshapen))
        if names
    ]
    if problems:
        raise ModelUnavailable(f"SAM checkpoint {path} does not fit this SAM model: {'; '.join(problems)}")
    sam.load_state_dict(state, strict=True)
    return sam


def _unreadable_checkpoint(path: Path, reason: str) -> str:
    return (
        f"SAM checkpoint {path} cannot be read: it is truncated or not a PyTorch checkpoint ({reason}); "
        "download it again"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True, eq=False)
class MaskResult:
    """SAM's best mask for one prompt, in original-image pixels.

    Pixel (x, y) covers [x, x+1) x [y, y+1), so boxes are continuous `(x0, y0, x1, y1)` with exclusive far edges.
    - `mask`: bool `[H, W]`, the image's size.
    - `score`: SAM's predicted IoU of this mask (the best of its candidates).
    - `low_res_logits`: float32 `[1, 4g, 4g]` (g = the embedding grid; `[1, 256, 256]` for the official models),
      the mask's logits before upscaling, to pass back as `mask_input` when refining.
    - `box_xyxy`: the mask's tight box in pixels, or None when the mask is empty.
    - `prompt_box_xyxy`: the box SAM was prompted with, in pixels, or None for a points-only prompt.
    - `empty`: the mask has no pixel.
    - `spills`: the mask's area outside the prompt box exceeds `spill_ratio` times the box's area (the box
      clipped to the image; a pixel is inside when its centre is). Always False without a prompt box.
    Empty and spilling masks are reported, not dropped: the caller decides whether the box-only annotation stands.
    """

    mask: np.ndarray
    score: float
    low_res_logits: np.ndarray
    box_xyxy: BoxXyxy | None
    prompt_box_xyxy: BoxXyxy | None
    empty: bool
    spills: bool

    @classmethod
    def from_mask(
        cls,
        mask: np.ndarray,
        score: float,
        low_res_logits: np.ndarray,
        prompt_box_xyxy: Sequence[float] | None,
        spill_ratio: float = DEFAULT_SPILL_RATIO,
    ) -> "MaskResult":
        """Fill in the tight box and the `empty` / `spills` flags for `mask`."""
        mask = np.asarray(mask, dtype=bool)
        ys, xs = np.nonzero(mask)
        empty = xs.size == 0
        box = None if empty else (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        prompt = None if prompt_box_xyxy is None else tuple(float(v) for v in prompt_box_xyxy)
        spills = prompt is not None and _area_outside(mask, prompt) > spill_ratio * _clipped_area(prompt, mask.shape)
        return cls(
            mask=mask,
            score=float(score),
            low_res_logits=np.asarray(low_res_logits, dtype=np.float32),
            box_xyxy=box,
            prompt_box_xyxy=prompt,
            empty=empty,
            spills=bool(spills),
        )


def _area_outside(mask: np.ndarray, box: BoxXyxy) -> int:
    """Mask pixels whose centre lies outside `box`."""
    x0, y0, x1, y1 = box
    centres_x = np.arange(mask.shape[1]) + 0.5
    centres_y = np.arange(mask.shape[0]) + 0.5
    inside_x = (centres_x >= x0) & (centres_x < x1)
    inside_y = (centres_y >= y0) & (centres_y < y1)
    return int(mask.sum() - mask[np.ix_(inside_y, inside_x)].sum())


def _clipped_area(box: BoxXyxy, shape: tuple[int, int]) -> float:
    x0, y0, x1, y1 = box
    height, width = shape
    return max(0.0, min(x1, width) - max(x0, 0.0)) * max(0.0, min(y1, height) - max(y0, 0.0))


@dataclass(frozen=True)
class _Embedding:
    """What `SamPredictor.set_image` leaves behind: features `[1, C, g, g]` on the model's device (float32), the
    original image size and the resized input size, both (h, w) in pixels."""

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


@dataclass(eq=False)
class _Job:
    """One embedding computation, shared by a prefetch and every predict that waits for it."""

    image_id: Hashable
    image: np.ndarray
    done: Future = field(default_factory=Future)
    queued: Future | None = None  # the worker's future while it is a prefetch that the worker has not started
    cancelled: bool = False
    waiters: int = 0
    embedding: _Embedding | None = None


class Segmenter:
    """SAM with a bounded LRU of image embeddings keyed by image id and a background prefetch worker.

    Thread-safe: the cache and the pending computations are guarded by one lock; embeddings and decodes run
    outside it, so a prompt on a cached image never waits for a prefetch of another. A prompt on an image that
    is being prefetched waits for that computation; one on an image whose prefetch is still queued takes the
    computation over and runs it at once on the calling thread. Images are RGB uint8 `[H, W, 3]` arrays, EXIF
    orientation already applied; an image id must always name the same image.
    """

    def __init__(
        self,
        sam: Sam,
        *,
        cache_size: int = 8,
        spill_ratio: float = DEFAULT_SPILL_RATIO,
        encoder_dtype: torch.dtype = torch.float32,
    ) -> None:
        """`encoder_dtype=torch.bfloat16` runs the image encoder under autocast on the model's device; the cached
        features and the decoder stay float32."""
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self.sam = sam.eval()
        self.cache_size = cache_size
        self.spill_ratio = spill_ratio
        self.encoder_dtype = encoder_dtype
        self._lock = threading.Lock()
        self._cache: OrderedDict[Hashable, _Embedding] = OrderedDict()
        self._jobs: dict[Hashable, _Job] = {}
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam-prefetch")

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
        """Build SAM `model_type` ("vit_h", "vit_l" or "vit_b") and load its weights.

        `checkpoint` defaults to the downloaded official file (`checkpoint_path(model_type)`). `device` defaults
        to CUDA when present, else the CPU. `precision="bfloat16"` (CUDA only) runs the image encoder in bf16;
        weights and the decoder stay float32.
        """
        _spec(model_type)
        if precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
        device = torch.device(device) if device is not None else _default_device()
        if precision == "bfloat16" and device.type != "cuda":
            raise ValueError(f"bfloat16 runs only on CUDA; on {device} SAM runs in float32")
        if checkpoint is None:
            path = checkpoint_path(model_type)
            if not path.is_file():
                raise ModelUnavailable(
                    f"no SAM {model_type} checkpoint at {path}; download it first (download_checkpoint"
                    f"({model_type!r}) fetches {SAM_CHECKPOINTS[model_type].url})"
                )
        else:
            path = Path(checkpoint)
        state = _read_state_dict(path)
        sam = _apply_state_dict(sam_model_registry[model_type](), state, path)
        encoder_dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        return cls(sam.to(device), cache_size=cache_size, spill_ratio=spill_ratio, encoder_dtype=encoder_dtype)

    @property
    def device(self) -> torch.device:
        return self.sam.device

    def segment_box(self, image_id: Hashable, image: np.ndarray, box_xyxy: Sequence[float]) -> MaskResult:
        """Mask for a box prompt (pixels, `x0, y0, x1, y1`): SAM's three candidates, the best predicted IoU kept."""
        box = np.asarray(box_xyxy, dtype=np.float64)
        if box.shape != (4,):
            raise ValueError(f"box_xyxy must hold 4 numbers, got shape {box.shape}")
        embedding = self._embedding_for(image_id, image)
        return self._predict(embedding, box=box, points=None, labels=None, previous=None, multimask=True)

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

        `previous.low_res_logits` goes in as SAM's `mask_input`, as annotators' click-to-fix loops do. With a
        box, a previous mask or several points the prompt is unambiguous and SAM returns one mask; a single
        click alone gets SAM's three candidates and the best predicted IoU is kept.
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
        return self._predict(
            embedding,
            box=box,
            points=points if len(points) else None,
            labels=point_labels if len(points) else None,
            previous=previous,
            multimask=multimask,
        )

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

    def _embedding_for(self, image_id: Hashable, image: np.ndarray) -> _Embedding:
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

    def _embed(self, image: np.ndarray) -> _Embedding:
        predictor = SamPredictor(self.sam)
        autocast = (
            torch.autocast(self.device.type, dtype=self.encoder_dtype)
            if self.encoder_dtype != torch.float32
            else contextlib.nullcontext()
        )
        with autocast:
            predictor.set_image(image)
        return _Embedding(
            features=predictor.features.float(),
            original_size=tuple(predictor.original_size),
            input_size=tuple(predictor.input_size),
        )

    def _predict(
        self,
        embedding: _Embedding,
        *,
        box: np.ndarray | None,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        previous: MaskResult | None,
        multimask: bool,
    ) -> MaskResult:
        # A light predictor per call, restored from the cached embedding through the attributes that
        # `SamPredictor.set_image` sets; the model itself is shared and only read.
        predictor = SamPredictor(self.sam)
        predictor.features = embedding.features
        predictor.original_size = embedding.original_size
        predictor.input_size = embedding.input_size
        predictor.is_image_set = True
        masks, scores, low_res = predictor.predict(
            point_coords=points,
            point_labels=labels,
            box=box,
            mask_input=None if previous is None else previous.low_res_logits,
            multimask_output=multimask,
        )
        best = int(np.argmax(scores))
        return MaskResult.from_mask(masks[best], scores[best], low_res[best : best + 1], box, self.spill_ratio)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _checked_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    return image


def _same_size(embedding: _Embedding, image: np.ndarray, image_id: Hashable) -> _Embedding:
    if embedding.original_size != image.shape[:2]:
        raise ValueError(
            f"image id {image_id!r} was embedded at {embedding.original_size} (h, w) but this image is "
            f"{image.shape[:2]}; an image id must always name the same image"
        )
    return embedding
