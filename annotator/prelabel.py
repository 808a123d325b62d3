"""Batch pre-labelling of an image folder (`annotator prelabel`): proposals stored as pending, with resume.

The loop asks the same `Proposer` the app uses for every image and expression, and writes each image's proposals
to the project store in one transaction (source "proposal", status "pending", so they show up in the app's review
queue). Resume needs no bookkeeping of its own: an expression counts as done on an image when the store already
holds an annotation of that image with that expression (whitespace collapsed), whatever its status, so a rerun
after Ctrl-C or a crash picks up where the last committed image left off and never duplicates a proposal.

Overlap: `ImageLoader` decodes the next images on a background thread (`depth` ahead, bounded), so decoding,
EXIF rotation and colour conversion run while the model works on the current image; when a decoded next image
is at hand the proposer is asked to `prefetch` it (the SAM embedding and the model prefix, where the proposer
computes those ahead; its time counts in that image's latency). `depth=0` loads inline and prefetches nothing.

Each stored proposal's `extra` keeps the paper's attention box, the mask kind and score, and `latency_ms`: the
wall time of the proposer call for that expression (the first expression of an image includes the image's own
work), which `annotator eval --benchmark` summarises.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import numpy as np

from annotator.errors import CocoFormatError, ImageLoadError, ProjectStoreError
from annotator.jsonl import is_jsonl, read_jsonl
from annotator.project.geometry import Rle
from annotator.project.images import IMAGE_SUFFIXES, ScanResult, is_unsupported_image, load_image
from annotator.project.store import NewAnnotation, ProjectStore

MaskKind = Literal["sam", "coarse"]


def normalise_expression(text: str) -> str:
    """An expression as stored and compared for resume: whitespace collapsed."""
    return " ".join(str(text).split())


@dataclass(frozen=True)
class ExpressionPlan:
    """Which expressions to ask: `shared` of every image, plus `per_image` (relative path -> expressions)."""

    shared: tuple[str, ...] = ()
    per_image: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def for_image(self, relative_path: str) -> tuple[str, ...]:
        specific = self.per_image.get(relative_path, ())
        return tuple(dict.fromkeys((*self.shared, *specific)))


def expression_plan(expressions: Sequence[str] | None = None, path: Path | None = None) -> ExpressionPlan:
    """From `--expression` values, or from a file: text (one per line; blank and '#' lines ignored) or JSONL
    lines {"image": path relative to the folder, "expression": text} (or "expressions": [...])."""
    if path is None:
        shared = tuple(normalise_expression(e) for e in expressions or () if e.strip())
        if not shared:
            raise CocoFormatError("no expression given (every --expression is empty)")
        return ExpressionPlan(shared=tuple(dict.fromkeys(shared)), per_image={})
    if is_jsonl(path):
        per_image: dict[str, tuple[str, ...]] = {}
        for line_no, row in read_jsonl(path):
            where = f"{path}:{line_no}"
            image = row.get("image")
            texts = row["expressions"] if "expressions" in row else [row.get("expression")]
            if not isinstance(image, str) or not image.strip():
                raise CocoFormatError(f"{where}: needs 'image' (a path relative to the folder)")
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise CocoFormatError(f"{where}: needs 'expression' (a non-empty string) or 'expressions' (a list)")
            key = image.replace("\\", "/").removeprefix("./")
            per_image[key] = tuple(dict.fromkeys((*per_image.get(key, ()), *map(normalise_expression, texts))))
        if not per_image:
            raise CocoFormatError(f"{path}: no expressions")
        return ExpressionPlan(shared=(), per_image=per_image)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CocoFormatError(f"{path}: cannot read the expressions ({exc})") from exc
    shared = tuple(
        dict.fromkeys(normalise_expression(l) for l in lines if l.strip() and not l.lstrip().startswith("#"))
    )
    if not shared:
        raise CocoFormatError(f"{path}: no expressions (one per line)")
    return ExpressionPlan(shared=shared, per_image={})


@dataclass(frozen=True)
class LoadedImage:
    """An image decoded by the loader: its store id and path, and the pixels or the reason it failed."""

    image_id: int
    path: str
    pixels: np.ndarray | None
    error: str | None


class ImageLoader:
    """Decodes `(image_id, path, absolute path)` items in order, `depth` images ahead on a background thread.

    Iterate to get `LoadedImage`s; `close()` stops the thread (also after an early break). `depth=0` decodes on
    the consumer's thread.
    """

    def __init__(self, items: Sequence[tuple[int, str, Path]], depth: int = 2, max_pixels: int | None = None) -> None:
        self._items = list(items)
        self._depth = depth
        self._max_pixels = max_pixels
        self._stop = threading.Event()
        self._queue: queue.Queue[LoadedImage | None] = queue.Queue(maxsize=max(depth, 1))
        self._thread: threading.Thread | None = None

    def _load(self, image_id: int, path: str, absolute: Path) -> LoadedImage:
        try:
            kwargs = {} if self._max_pixels is None else {"max_pixels": self._max_pixels}
            return LoadedImage(image_id, path, load_image(absolute, **kwargs), None)
        except ImageLoadError as exc:
            return LoadedImage(image_id, path, None, str(exc))

    def _produce(self) -> None:
        for item in self._items:
            loaded = self._load(*item)
            while not self._stop.is_set():
                try:
                    self._queue.put(loaded, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set():
                return
        self._queue.put(None)

    def __iter__(self) -> Iterator[LoadedImage]:
        if self._depth == 0:
            for item in self._items:
                if self._stop.is_set():
                    return
                yield self._load(*item)
            return
        self._thread = threading.Thread(target=self._produce, name="prelabel-loader", daemon=True)
        self._thread.start()
        while (loaded := self._queue.get()) is not None:
            yield loaded

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get(timeout=0.1)
                except queue.Empty:
                    pass
            self._thread.join()


@dataclass(frozen=True)
class PendingWork:
    """What a run still has to do: `todo` holds (image id, path, expressions still to ask) per image in folder
    order; `already_done`: images complete from an earlier run; `skipped`: 'path: reason' found on the way."""

    todo: tuple[tuple[int, str, tuple[str, ...]], ...]
    already_done: int
    skipped: tuple[str, ...]


def require_images(work: PendingWork, folder: Path) -> None:
    """`ImageLoadError` when a run would label nothing because the folder has no image to ask (none at all, or every
    one skipped); a folder whose images are all done already is fine (the run resumes and only exports)."""
    if work.todo or work.already_done:
        return
    supported = ", ".join(sorted(IMAGE_SUFFIXES))
    if not work.skipped:
        raise ImageLoadError(f"no images to label in {folder}: it holds no image files ({supported})")
    raise ImageLoadError(
        f"no images to label in {folder}: {len(work.skipped)} file(s) skipped, for example {work.skipped[0]}"
    )


def find_pending_work(store: ProjectStore, plan: ExpressionPlan, scan: ScanResult | None = None) -> PendingWork:
    """Sync the store with its folder (or with `scan`, a listing of the images to know, when the folder holds many
    more) and list, per image, the planned expressions the store does not hold yet."""
    synced = store.sync_folder(scan)
    skipped = [f"{s.path}: {s.reason}" for s in synced.skipped if _meant_as_image(store.image_root / s.path)]
    records = store.images()
    known = {record.path for record in records}
    skipped.extend(f"{path}: not an image in the folder" for path in plan.per_image if path not in known)
    todo, already_done = [], 0
    for record in records:
        wanted = plan.for_image(record.path)
        if not wanted:
            continue
        if record.error is not None:
            skipped.append(f"{record.path}: {record.error}")
            continue
        asked = (
            {normalise_expression(a.expression) for a in store.annotations(record.id)}
            if record.n_annotations
            else set()
        )
        missing = tuple(e for e in wanted if e not in asked)
        if missing:
            todo.append((record.id, record.path, missing))
        else:
            already_done += 1
    return PendingWork(tuple(todo), already_done, tuple(skipped))


@dataclass(frozen=True)
class ImageLabeller:
    """Turns a proposer's answers on one image into pending annotations of category `category_id`.

    `masks`: None (boxes only), "sam" (the proposer's SAM masks) or "coarse" (the heads' region, the paper's
    pseudo-mask). `model_id` is recorded with every proposal. Holds no model, so it travels to other processes.
    """

    category_id: int
    masks: MaskKind | None = None
    all_instances: bool = False
    model_id: str = ""

    def label(
        self, proposer: Any, image_id: int, pixels: np.ndarray, expressions: Sequence[str], lead_ms: float = 0.0
    ) -> tuple[list[NewAnnotation], float]:
        """Propose every expression on the image; the annotations to store and the summed proposer ms.

        `lead_ms`: time already spent on this image by the proposer's prefetch, counted in its first expression.
        """
        items = []
        total_ms = 0.0
        for index, expression in enumerate(expressions):
            began = perf_counter()
            proposals = proposer.propose(image_id, pixels, expression, all_instances=self.all_instances)
            latency_ms = (perf_counter() - began) * 1000.0 + (lead_ms if index == 0 else 0.0)
            total_ms += latency_ms
            items.extend(self.annotation(image_id, expression, p, latency_ms) for p in proposals)
        return items, total_ms

    def annotation(self, image_id: int, expression: str, proposal: Any, latency_ms: float) -> NewAnnotation:
        """One proposal as a pending annotation, with the attention box, latency and mask kind in its extra."""
        mask, mask_kind = None, None
        if self.masks == "sam" and proposal.mask is not None:
            mask, mask_kind = proposal.mask, "sam"
        elif self.masks == "coarse" and proposal.coarse_mask.any():
            proposal = proposal.with_mask(proposal.coarse_mask, None)
            mask, mask_kind = proposal.mask, "coarse"
        extra = {
            "attention_box_xyxy": [float(v) for v in proposal.attention_box_xyxy],
            "latency_ms": round(latency_ms, 3),
            "model": self.model_id,
        }
        if self.masks == "sam" and proposal.mask_note:
            extra["mask_note"] = proposal.mask_note
        if mask_kind is not None:
            extra["mask_kind"] = mask_kind
            if proposal.mask_score is not None:
                extra["mask_score"] = float(proposal.mask_score)
        return NewAnnotation(
            image_id=image_id,
            category_id=self.category_id,
            box_xyxy=tuple(float(v) for v in proposal.box_xyxy),
            rle=None if mask is None else Rle.from_mask(mask),
            expression=expression,
            source="proposal",
            score=float(proposal.score),
            heads=tuple(proposal.heads),
            status="pending",
            extra=extra,
        )


def store_annotations(store: ProjectStore, items: Sequence[NewAnnotation], where: str) -> None:
    """Commit one unit of proposals (an image, a shard) in one transaction, outside the undo history."""
    if not items:
        return
    try:
        store.add_annotations(items, undoable=False, label=f"prelabel {where}")
    except ValueError as exc:
        raise ProjectStoreError(f"{where}: the proposals cannot be stored ({exc})") from exc


@dataclass(frozen=True)
class PrelabelReport:
    """What a run did. `images_total`: images with expressions to ask; `images_already_done`: complete from an
    earlier run; `images_done`: completed in this run; `images_left`: not reached (after a stop); `skipped`:
    'path: reason' for images that could not be read; `latencies_ms`: per image, the summed proposer time of its
    expressions; `seconds`: wall time of the loop; `interrupted`: stopped early (rerun to resume)."""

    images_total: int
    images_already_done: int
    images_done: int
    images_left: int
    proposals_added: int
    skipped: tuple[str, ...]
    latencies_ms: tuple[float, ...]
    seconds: float
    interrupted: bool

    @property
    def images_per_second(self) -> float:
        return self.images_done / self.seconds if self.seconds > 0 else 0.0


class Prelabeller:
    """Runs a `Proposer` over a folder's images and stores the proposals as pending annotations.

    `proposer`: the app's core (`propose(image_id, image, expression, all_instances=...) -> list[Proposal]`,
    `prefetch(image_id, image)`). `masks`: None (boxes only), "sam" (the proposer's SAM masks) or "coarse" (the
    heads' region, the paper's pseudo-mask). `model_id` is recorded with every proposal.
    """

    def __init__(
        self,
        proposer: Any,
        store: ProjectStore,
        *,
        category: str = "object",
        masks: MaskKind | None = None,
        all_instances: bool = False,
        prefetch_depth: int = 2,
        model_id: str = "",
    ) -> None:
        self.proposer = proposer
        self.store = store
        self.labeller = ImageLabeller(store.ensure_category(category).id, masks, all_instances, model_id)
        self.prefetch_depth = prefetch_depth

    def run(
        self,
        plan: ExpressionPlan,
        *,
        stop: threading.Event | None = None,
        progress: Callable[[int, int, int], Any] | None = None,
        work: PendingWork | None = None,
    ) -> PrelabelReport:
        """Propose for every image still missing an expression. `stop` set: finish the current image and return.

        `progress(done, already_done, total)` is called once before the first image and after each image. `work`:
        what `find_pending_work` found before the run (the CLI checks it before a model loads); found here if None.
        """
        start = perf_counter()
        stop = stop or threading.Event()
        work = work if work is not None else find_pending_work(self.store, plan)
        todo, already_done, skipped = work.todo, work.already_done, list(work.skipped)
        total = len(todo) + already_done
        if progress is not None:
            progress(0, already_done, total)
        loader = ImageLoader(
            [(image_id, path, self.store.image_root / path) for image_id, path, _ in todo],
            depth=self.prefetch_depth,
            max_pixels=self.store.max_pixels,
        )
        expressions_of = {image_id: expressions for image_id, _, expressions in todo}
        processed = done = added = 0
        latencies: list[float] = []
        ahead_ms: dict[int, float] = {}
        try:
            items = iter(loader)
            current = next(items, None)
            while current is not None and not stop.is_set():
                following = next(items, None)
                if current.pixels is None:
                    skipped.append(f"{current.path}: {current.error}")
                else:
                    lead_ms = ahead_ms.pop(current.image_id, 0.0)
                    if following is not None and following.pixels is not None and self.prefetch_depth > 0:
                        began = perf_counter()
                        self.proposer.prefetch(following.image_id, following.pixels)
                        ahead_ms[following.image_id] = (perf_counter() - began) * 1000.0
                    annotations, latency = self.labeller.label(
                        self.proposer, current.image_id, current.pixels, expressions_of[current.image_id], lead_ms
                    )
                    store_annotations(self.store, annotations, current.path)
                    count = len(annotations)
                    added += count
                    latencies.append(latency)
                    done += 1
                processed += 1
                if progress is not None:
                    progress(processed, already_done, total)
                current = following
        finally:
            loader.close()
        interrupted = stop.is_set() and current is not None
        return PrelabelReport(
            images_total=total,
            images_already_done=already_done,
            images_done=done,
            images_left=len(todo) - processed,
            proposals_added=added,
            skipped=tuple(skipped),
            latencies_ms=tuple(latencies),
            seconds=perf_counter() - start,
            interrupted=interrupted,
        )


def _meant_as_image(path: Path) -> bool:
    """A skipped folder entry worth reporting: one with an image suffix (ours or another image type Pillow
    knows), or one that is not a plain file (broken link, symlink loop, unreadable folder, a name that is not
    UTF-8). Other files (a README, the ground truth) are simply not images."""
    return path.suffix.lower() in IMAGE_SUFFIXES or is_unsupported_image(path.name) or not path.is_file()
