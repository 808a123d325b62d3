"""Loading the configured models into a `Proposer`: LLaVA (hub id or folder), its localization heads, SAM.

Runs on the inference thread (an engine belongs to the thread that uses it). Only public loaders are called:
`LvlmEngine.load` (truncated after the deepest localization head), `HeadsFile`, `Segmenter.load`. A missing or
broken SAM checkpoint does not stop the app: proposals then carry the heads' coarse masks, and `sam_note` says
what is missing and how to get it.

On a CPU, `cpu_threads_for_app` leaves one core to the GUI thread: with every core busy in torch's intra-op
pool the event loop stalls for 100 ms and more on a 2-core machine, and the model runs no faster.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING

from annotator.errors import ModelUnavailable
from annotator.grounding.heads import HeadsFile, find_heads_file
from annotator.ui.settings import ModelSettings

if TYPE_CHECKING:
    from annotator.grounding.proposer import Proposer
    from annotator.grounding.segment import Segmenter

_DTYPES = {"float32", "bfloat16", "float16"}


@dataclass(frozen=True)
class ModelsInfo:
    """What got loaded: the model id/path, its heads (0-based layer, head), SAM (or None) and the load time."""

    model: str
    heads: tuple[tuple[int, int], ...]
    heads_source: str
    sam_type: str | None
    sam_note: str
    is_demo: bool
    device: str
    load_seconds: float


@dataclass(frozen=True)
class LoadedModels:
    """A ready proposer, the segmenter behind it (None without SAM) and the description of both."""

    proposer: "Proposer"
    segmenter: "Segmenter | None"
    info: ModelsInfo


def resolve_heads(models: ModelSettings) -> HeadsFile:
    """The heads file from the settings, else the model folder's `heads.json`, else the shipped known heads."""
    if models.heads_file:
        try:
            return HeadsFile.load(models.heads_file)
        except ValueError as err:
            raise ModelUnavailable(f"the heads file in Settings cannot be used: {err}") from None
    try:
        found = find_heads_file(models.model)
    except ValueError as err:
        raise ModelUnavailable(f"the heads file of {models.model} cannot be used: {err}") from None
    if found is None:
        raise ModelUnavailable(
            f"no localization heads are known for {models.model}. Find them once with "
            f"`annotator find-heads --model {models.model}` and choose the heads file in Settings."
        )
    return found


def cpu_threads_for_app() -> int:
    """Torch intra-op threads for inference on the CPU while a GUI runs: all cores but one (at least one)."""
    return max(1, (os.cpu_count() or 2) - 1)


def hub_model_missing(model: str) -> str | None:
    """Why a hub model cannot be loaded from this machine's Hugging Face cache, or None when it is there (or when
    `model` is not a hub id). Reads the local cache only: the app never starts a download of many gigabytes
    without asking."""
    if Path(model).expanduser().exists():
        return None
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.constants import HF_HUB_CACHE

    try:
        found = try_to_load_from_cache(model, "config.json")
    except ValueError:
        return None
    if isinstance(found, str):
        return None
    return (
        f"{model} is not downloaded (it is not in the Hugging Face cache {HF_HUB_CACHE}). "
        f"Download it with `hf download {model}`, or choose a local LLaVA-1.5 folder in Settings."
    )


def load_models(models: ModelSettings, progress: Callable[[str], None]) -> LoadedModels:
    """Load LLaVA + heads + SAM as configured; raises `ModelUnavailable` when LLaVA or its heads cannot be had."""
    start = perf_counter()
    folder = Path(models.model).expanduser()
    if (folder.is_absolute() or models.model.startswith((".", "~"))) and not folder.is_dir():
        raise ModelUnavailable(
            f"the model folder {folder} does not exist. Choose a LLaVA-1.5 folder or a hub id "
            f"(such as llava-hf/llava-1.5-7b-hf) in Settings."
        )
    missing = hub_model_missing(models.model)
    if missing is not None:
        raise ModelUnavailable(missing)
    heads_file = resolve_heads(models)
    import torch  # imported here, once the cheap checks passed: torch and transformers take seconds to import

    from annotator.grounding.grounder import Grounder
    from annotator.grounding.lvlm import LvlmEngine
    from annotator.grounding.proposer import Proposer

    deepest = max(layer for layer, _ in heads_file.heads)
    device = None if models.device == "auto" else models.device
    dtype = getattr(torch, models.dtype) if models.dtype in _DTYPES else None
    progress(f"Loading {Path(models.model).name if models.is_demo else models.model} (layers 0-{deepest})…")
    engine = LvlmEngine.load(
        _load_source(models.model, deepest),
        device=device,
        dtype=dtype,
        truncate_after_layer=deepest,
        prefix_cache_size=models.prefix_cache_images,
    )
    grounder = Grounder(engine, heads_file.heads)
    segmenter, sam_note = _load_sam(models, device, progress)
    info = ModelsInfo(
        model=models.model,
        heads=tuple(grounder.heads),
        heads_source=heads_file.source,
        sam_type=models.sam_type if segmenter is not None else None,
        sam_note=sam_note,
        is_demo=models.is_demo,
        device=str(engine.device),
        load_seconds=perf_counter() - start,
    )
    return LoadedModels(proposer=Proposer(grounder, segmenter), segmenter=segmenter, info=info)


def _load_source(model: str, deepest: int) -> str:
    """A local folder as is; a hub id's cached snapshot or, after a truncated `annotator models download`, its
    grounding folder (so the shards left out are not asked of the Hub); else the hub id."""
    if Path(model).expanduser().exists():
        return model
    from annotator.grounding.hub import find_cached

    cached = find_cached(model, deepest)
    return model if cached is None else str(cached.path)


def _load_sam(
    models: ModelSettings, device: str | None, progress: Callable[[str], None]
) -> tuple["Segmenter | None", str]:
    if models.sam_type == "none":
        note = "" if models.is_demo else "SAM is switched off in Settings: masks are the heads' coarse regions."
        return None, note
    from annotator.grounding.segment import SAM_CHECKPOINTS, Segmenter, checkpoint_path

    checkpoint = Path(models.sam_checkpoint) if models.sam_checkpoint else checkpoint_path(models.sam_type)
    if not checkpoint.is_file():
        spec = SAM_CHECKPOINTS.get(models.sam_type)
        where = f" (download {spec.url}, {spec.size_bytes / 1e9:.1f} GB)" if spec is not None else ""
        return None, (
            f"No SAM {models.sam_type} checkpoint at {checkpoint}{where}: masks are the heads' coarse regions "
            "until one is there; choose it in Settings."
        )
    progress(f"Loading SAM {models.sam_type}…")
    try:
        segmenter = Segmenter.load(
            models.sam_type, checkpoint=checkpoint, device=device, cache_size=models.sam_cache_images
        )
    except ModelUnavailable as err:
        return None, f"SAM could not be loaded ({err}): masks are the heads' coarse regions."
    return segmenter, ""
