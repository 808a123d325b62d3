"""`annotator prelabel --ray`: the local pre-labeller's work on a Ray cluster, through Ray Data.

One Ray Data pipeline per run:
1. `ray.data.from_arrow`: the pending images (one row each: store id, path, expressions, shard), a block per shard;
2. `map_batches(decode_images)`: CPU tasks decode the images exactly as the local loader does (`ImageLoader`:
   EXIF rotation, RGB, the store's pixel limit); an unreadable file becomes the row's error;
3. `map_batches(ProposalActor)`: a fixed pool of stateful actors, each loading the LVLM (and SAM) once and labelling
   every image of its batches with the app's `Proposer` and the local run's `ImageLabeller`. By default one actor
   per GPU (`num_gpus=1` each); without GPUs, one per node. The pool is sized from the cluster's resources
   (`plan_actors`).

The driver streams the actors' rows, assembles them into shards (`shards.ShardAssembler`), writes each complete
shard atomically under the shards folder and merges it into the project store as pending proposals; the store
then exports COCO like the local run. Because shards are keyed by their images and the run's settings, a rerun
skips every shard already written (merging it if the store lacks it) and every image the store already holds.

Failures: an unreadable image is reported as skipped and the rest complete; an actor process that dies is
restarted and its batch retried by Ray Data (its actors run with `max_restarts=-1`, `max_task_retries=-1`); an
actor that cannot load the models stops the run with `ModelUnavailable`; an exception raised by the proposer is a
bug, not data, and stops the run with Ray's error.

The padding of an image to LLaVA's square happens inside `LvlmEngine`, in the actor: the engine takes the decoded
image and owns its frame, so only decoding runs in the CPU tasks.
"""

from __future__ import annotations

import json
import logging
import threading
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, Callable, Iterator

import numpy as np

from annotator.distributed.shards import (
    ImageResult,
    Shard,
    ShardAssembler,
    merge_shard,
    plan_shards,
    read_shard,
    write_shard,
)
from annotator.errors import AnnotatorError, ModelUnavailable
from annotator.prelabel import ExpressionPlan, ImageLabeller, ImageLoader, MaskKind, PendingWork, find_pending_work
from annotator.project.store import ProjectStore

INSTALL_HINT = "pip install 'annotator[ray]' (or: pip install 'ray[data]')"
DEFAULT_SHARD_SIZE = 64
"""Images per shard: a shard is the unit of writing, merging and resuming."""
DEFAULT_BATCH_SIZE = 4
"""Images per actor call."""
_NO_PIXELS = np.zeros((0, 0, 3), dtype=np.uint8)


class RayUnavailable(AnnotatorError):
    """Ray cannot be used: the `ray` extra is not installed, or the cluster cannot be reached."""


def import_ray() -> Any:
    """The `ray` module with Ray Data; `RayUnavailable` saying how to install it when it is missing."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is the part the pipeline needs)
    except ModuleNotFoundError as exc:
        raise RayUnavailable(
            f"--ray needs Ray Data, which is not installed here ({exc.msg}); install it with {INSTALL_HINT}"
        ) from exc
    return ray


def connect(address: str | None) -> bool:
    """Join the Ray cluster at `address` (e.g. "ray://head:10001", "head:6379", "auto"), or start a local Ray
    instance on this machine without one. Returns False when Ray was already initialised in this process (nothing
    to shut down afterwards), True when this call connected."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"logging_level": logging.WARNING}
    if address is None:
        options["include_dashboard"] = False
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise RayUnavailable(f"cannot start or join {where}: {' '.join(str(exc).split())}") from exc
    return True


@dataclass(frozen=True)
class ProposerSpec:
    """Everything a worker needs to load the proposer, as plain values (it travels to every actor).

    `model`: hub id, preset name or folder (the same path on every node; a hub model not on a node is downloaded
    there, only the files grounding needs); `heads`: 0-based (layer, head); `device`: None picks CUDA when the actor
    has a GPU; `dtype`: a torch dtype name or None (bf16 on GPU, float32 on CPU); `load_in_4bit`: 4-bit text layers
    (bitsandbytes, CUDA); `min_pixels` / `max_pixels`: Qwen's pixel budget (None: the checkpoint's); `masks`: None,
    "sam" or "coarse"; `sam_type` and `sam_checkpoint` (None: the user cache of
    each node) for "sam".
    """

    model: str
    heads: tuple[tuple[int, int], ...]
    device: str | None = None
    dtype: str | None = None
    load_in_4bit: bool = False
    min_pixels: int | None = None
    max_pixels: int | None = None
    masks: MaskKind | None = None
    sam_type: str = "vit_h"
    sam_checkpoint: str | None = None

    def load(self) -> Any:
        """The `Proposer`: the engine truncated after the deepest head's layer, plus SAM when masks are "sam"."""
        import torch

        from annotator.models.loading import load_grounder
        from annotator.proposer import Proposer

        dtype = None if self.dtype is None else getattr(torch, self.dtype)
        segmenter = None
        if self.masks == "sam":
            from annotator.segmentation.segment import Segmenter

            segmenter = Segmenter.load(self.sam_type, self.sam_checkpoint, self.device)
        grounder = load_grounder(
            self.model,
            self.heads,
            device=self.device,
            dtype=dtype,
            load_in_4bit=self.load_in_4bit,
            fetch=True,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
        )
        return Proposer(grounder, segmenter)


@dataclass(frozen=True)
class ActorPlan:
    """The proposal actors of a run and what each asks of Ray: `gpus_per_actor` and `cpus_per_actor` (logical
    units, fractions allowed), `decode_cpus` for each decoding task, and `torch_threads` for CPU actors (None on
    GPU: torch's default)."""

    actors: int
    gpus_per_actor: float
    cpus_per_actor: float
    decode_cpus: float
    torch_threads: int | None


def plan_actors(cpus: float, gpus: float, nodes: int = 1, actors: int | None = None) -> ActorPlan:
    """Size the actor pool from the cluster's resources (`cpus`, `gpus` in total over `nodes`).

    With GPUs: `actors` (default one per GPU) share the GPUs evenly, at most one each, and ask for one CPU each or
    less, so that at least half the CPUs stay for decoding. Without GPUs: `actors` (default one per node) share all
    CPUs but one per node, which stays for the decoding tasks: an actor asking for every CPU of a node starves
    them, and Ray Data then waits forever with no error. A CPU actor runs one torch thread per whole CPU it asks
    for (at least one): more threads than cores make torch's threads spin against each other (on a busy 2-CPU
    machine two threads ran the planted model 14 times slower than one).
    """
    if actors is not None and actors < 1:
        raise ValueError(f"actors must be >= 1, got {actors}")
    if cpus <= 0:
        raise ValueError(f"the cluster offers no CPU ({cpus}); decoding needs some")
    nodes = max(1, nodes)
    if gpus >= 1:
        count = actors or int(gpus)
        cpu_share = min(1.0, cpus / (2 * count))
        return ActorPlan(count, min(1.0, gpus / count), cpu_share, min(1.0, cpus - count * cpu_share), None)
    count = actors or nodes
    for_actors = max(cpus - nodes, cpus / 2)
    share = for_actors / count
    return ActorPlan(count, 0.0, share, min(1.0, cpus - for_actors), max(1, int(share)))


def cluster_actor_plan(ray: Any, actors: int | None = None) -> ActorPlan:
    """`plan_actors` for the cluster this process is connected to."""
    resources = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) > 0)
    return plan_actors(float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0)), nodes, actors)


def decode_images(batch: dict[str, np.ndarray], max_pixels: int) -> dict[str, Any]:
    """Ray Data task: the batch's images decoded by the local loader; `pixels` empty and `error` set on failure."""
    items = [(int(i), str(p), Path(str(f))) for i, p, f in zip(batch["image_id"], batch["path"], batch["file"])]
    loaded = list(ImageLoader(items, depth=0, max_pixels=max_pixels))
    return {
        "shard": batch["shard"],
        "image_id": batch["image_id"],
        "path": batch["path"],
        "expressions": batch["expressions"],
        "pixels": [_NO_PIXELS if image.pixels is None else image.pixels for image in loaded],
        "error": np.array([image.error or "" for image in loaded], dtype=object),
    }


class ProposalActor:
    """Ray Data actor: loads the proposer once, then labels each image of its batches.

    Within a batch the next image is prefetched while the current one is labelled (SAM's embedding in the
    background, the LVLM prefix), as the local loop does; that time counts in the prefetched image's latency.
    Returns one JSON `ImageResult` per image.
    """

    def __init__(self, spec: ProposerSpec, labeller: ImageLabeller, torch_threads: int | None) -> None:
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        self.proposer = spec.load()
        self.labeller = labeller

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = list(zip(batch["image_id"], batch["path"], batch["expressions"], batch["pixels"], batch["error"]))
        results = []
        lead_ms = 0.0
        for index, (image_id, path, expressions, pixels, error) in enumerate(rows):
            if error:
                results.append(ImageResult(int(image_id), str(path), skipped=str(error)).to_json())
                continue
            following = rows[index + 1] if index + 1 < len(rows) else None
            ahead_ms = 0.0
            if following is not None and not following[4]:
                began = perf_counter()
                self.proposer.prefetch(int(following[0]), following[3])
                ahead_ms = (perf_counter() - began) * 1000.0
            annotations, latency_ms = self.labeller.label(
                self.proposer, int(image_id), pixels, json.loads(str(expressions)), lead_ms
            )
            lead_ms = ahead_ms
            results.append(ImageResult(int(image_id), str(path), tuple(annotations), None, latency_ms).to_json())
        return {"shard": batch["shard"], "result": np.array(results, dtype=object)}


@dataclass(frozen=True)
class RayPrelabelReport:
    """What a Ray run did. Images: `images_total` with expressions to ask, `images_already_done` complete in the
    store before, `images_done` merged in this run (from shards computed now or found written), `images_left` not
    reached (after a stop), `skipped` 'path: reason'. Shards: `shards_total` pending at the start,
    `shards_reused` found already written, `shards_written` computed now. `seconds`: wall time of the whole run
    (Ray start-up of the actors included); `actors`: the pool used (None when nothing had to be computed)."""

    images_total: int
    images_already_done: int
    images_done: int
    images_left: int
    proposals_added: int
    skipped: tuple[str, ...]
    shards_total: int
    shards_reused: int
    shards_written: int
    seconds: float
    interrupted: bool
    actors: ActorPlan | None

    @property
    def images_per_second(self) -> float:
        return self.images_done / self.seconds if self.seconds > 0 else 0.0


class RayPrelabeller:
    """Pre-labels a store's folder on the connected Ray cluster (`connect` first) and merges into the store.

    `shards_dir`: where the shard files go (on the machine running this; the images and the model must be at the
    same paths on every node). `actors`: the pool size (default from `plan_actors`). `batch_size`: images per actor
    call.
    """

    def __init__(
        self,
        spec: ProposerSpec,
        store: ProjectStore,
        shards_dir: str | Path,
        *,
        category: str = "object",
        all_instances: bool = False,
        shard_size: int = DEFAULT_SHARD_SIZE,
        actors: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.spec = spec
        self.store = store
        self.shards_dir = Path(shards_dir)
        self.labeller = ImageLabeller(store.ensure_category(category).id, spec.masks, all_instances, spec.model)
        self.shard_size = shard_size
        self.actors = actors
        self.batch_size = batch_size

    def settings(self) -> dict[str, Any]:
        """What decides the results besides the images: part of every shard key."""
        return {
            "store": str(self.store.path),
            "model": self.spec.model,
            "heads": [list(head) for head in self.spec.heads],
            "dtype": self.spec.dtype,
            "masks": self.spec.masks,
            "sam": [self.spec.sam_type, self.spec.sam_checkpoint] if self.spec.masks == "sam" else None,
            "category_id": self.labeller.category_id,
            "all_instances": self.labeller.all_instances,
        }

    def run(
        self,
        plan: ExpressionPlan,
        *,
        stop: threading.Event | None = None,
        progress: Callable[[int, int, int], Any] | None = None,
        work: PendingWork | None = None,
    ) -> RayPrelabelReport:
        """Label every image still missing an expression. `stop` set: keep the shards merged so far and return.

        `progress(done, already_done, total)` is called once at the start and after each merged shard. `work`: what
        `find_pending_work` found before the run; found here if None.
        """
        start = perf_counter()
        stop = stop or threading.Event()
        work = work if work is not None else find_pending_work(self.store, plan)
        shards = plan_shards(work.todo, self.shard_size, self.settings())
        total = len(work.todo) + work.already_done
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        tally = _Tally(skipped=list(work.skipped))
        if progress is not None:
            progress(0, work.already_done, total)

        def commit(shard: Shard, results: tuple[ImageResult, ...]) -> None:
            tally.add(results, merge_shard(self.store, shard, results))
            if progress is not None:
                progress(tally.processed, work.already_done, total)

        to_compute = []
        for shard in shards:
            results = read_shard(self.shards_dir, shard)
            if results is None:
                to_compute.append(shard)
            else:
                commit(shard, results)
        reused = len(shards) - len(to_compute)
        actor_plan = None
        if to_compute and not stop.is_set():
            ray = import_ray()
            actor_plan = cluster_actor_plan(ray, self.actors)
            with closing(self._compute(ray, to_compute, actor_plan, stop)) as finished:
                for shard, results in finished:
                    write_shard(self.shards_dir, shard, results)
                    commit(shard, results)
        return RayPrelabelReport(
            images_total=total,
            images_already_done=work.already_done,
            images_done=tally.done,
            images_left=len(work.todo) - tally.processed,
            proposals_added=tally.added,
            skipped=tuple(tally.skipped),
            shards_total=len(shards),
            shards_reused=reused,
            shards_written=tally.shards - reused,
            seconds=perf_counter() - start,
            interrupted=tally.processed < len(work.todo),
            actors=actor_plan,
        )

    def _compute(
        self, ray: Any, shards: list[Shard], actors: ActorPlan, stop: threading.Event
    ) -> Iterator[tuple[Shard, tuple[ImageResult, ...]]]:
        """Run the pipeline over `shards`; yield each shard with its results as soon as all its images are in."""
        import pyarrow

        blocks = [  # one block per shard, so that a shard's images travel together and its results arrive together
            pyarrow.table(
                {
                    "shard": [shard.index] * len(shard.items),
                    "image_id": [item.image_id for item in shard.items],
                    "path": [item.path for item in shard.items],
                    "file": [str(self.store.image_root / item.path) for item in shard.items],
                    "expressions": [json.dumps(list(item.expressions)) for item in shard.items],
                }
            )
            for shard in shards
        ]
        # A decoding task reserves the memory of a batch of images at the store's pixel limit (RGB). Besides keeping
        # big images from piling up on one node, this keeps Ray Data from fusing the decoding into the actors, which
        # it does when the two steps ask for the same resources: decoding must stay in its own CPU tasks.
        dataset = (
            ray.data.from_arrow(blocks)
            .map_batches(
                decode_images,
                fn_kwargs={"max_pixels": self.store.max_pixels},
                batch_size=self.batch_size,
                num_cpus=actors.decode_cpus,
                memory=self.batch_size * self.store.max_pixels * 3,
            )
            .map_batches(
                ProposalActor,
                fn_constructor_args=(self.spec, self.labeller, actors.torch_threads),
                batch_size=self.batch_size,
                compute=ray.data.ActorPoolStrategy(size=actors.actors),
                num_cpus=actors.cpus_per_actor,
                num_gpus=actors.gpus_per_actor or None,
            )
        )
        dataset.context.enable_progress_bars = False  # the caller's progress counts merged shards
        assembler = ShardAssembler(shards)
        batches = iter(dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0))
        try:
            for batch in batches:
                for line in batch["result"]:
                    finished = assembler.add(ImageResult.from_json(str(line)))
                    if finished is not None:
                        yield finished
                if stop.is_set():
                    return
        except ray.exceptions.RayActorError as exc:
            if not exc.actor_init_failed:
                raise
            # Ray keeps only the text of the actor's error; its last line is the original "Type: message".
            cause = str(exc).strip().splitlines()[-1]
            raise ModelUnavailable(f"the proposal actors could not load the models ({cause})") from exc
        finally:
            batches.close()


@dataclass
class _Tally:
    """Running counts of a Ray run's merged shards."""

    skipped: list[str]
    processed: int = 0
    done: int = 0
    added: int = 0
    shards: int = 0

    def add(self, results: tuple[ImageResult, ...], added: int) -> None:
        self.shards += 1
        self.processed += len(results)
        self.added += added
        for result in results:
            if result.skipped is None:
                self.done += 1
            else:
                self.skipped.append(f"{result.path}: {result.skipped}")
