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
from annotator.grounding.heads import HeadsFile
from annotator.ui.settings import ModelSettings

if TYPE_CHECKING:
    from annotator.proposer import Proposer
    from annotator.segmentation.segment import Segmenter

_DTYPES = {"float32", "bfloat16", "float16"}


@dataclass(frozen=True)
class ModelsInfo:
    """What got loaded: the model id/path, its heads (0-based layer, head), the mask model (or None) and its device,
    and the load time."""

    model: str
    heads: tuple[tuple[int, int], ...]
    heads_source: str
    sam_type: str | None
    sam_note: str
    is_demo: bool
    device: str
    load_seconds: float
    sam_device: str | None = None


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
    from annotator.models.loading import known_heads

    try:
        found = known_heads(models.model)
    except ValueError as err:
        raise ModelUnavailable(f"the heads file of {models.model} cannot be used: {err}") from None
    if found is None:
        raise ModelUnavailable(
            f"no localization heads are known for {models.model}. Find them once with "
            f"`annotator find-heads --model {models.model}` and choose the heads file in Settings, or open a folder "
            f"and use Find heads on this folder."
        )
    return found


def cpu_threads_for_app() -> int:
    """Torch intra-op threads for inference on the CPU while a GUI runs: all cores but one (at least one)."""
    return max(1, (os.cpu_count() or 2) - 1)


def load_models(models: ModelSettings, progress: Callable[[str], None]) -> LoadedModels:
    """Load LLaVA + heads + SAM as configured; raises `ModelUnavailable` when LLaVA or its heads cannot be had.

    A hub model that is not on this machine is refused before anything heavy is imported: the app never starts a
    download of gigabytes without asking (the models dialog does, `download_dialog.py`)."""
    from annotator.models.loading import missing_model_message

    start = perf_counter()
    try:
        heads_file = resolve_heads(models)
    except ModelUnavailable:
        missing = missing_model_message(models.model, None)
        if missing is not None:
            raise ModelUnavailable(missing) from None
        raise
    deepest = max(layer for layer, _ in heads_file.heads)
    missing = missing_model_message(models.model, deepest)
    if missing is not None:
        raise ModelUnavailable(missing)
    import torch  # imported here, once the cheap checks passed: torch and transformers take seconds to import

    from annotator.models.loading import load_grounder
    from annotator.proposer import Proposer

    device = None if models.device == "auto" else models.device
    dtype = getattr(torch, models.dtype) if models.dtype in _DTYPES else None
    bits = ", 4-bit" if models.load_in_4bit else ""
    progress(f"Loading {Path(models.model).name if models.is_demo else models.model} (layers 0-{deepest}{bits})…")
    grounder = load_grounder(
        models.model,
        heads_file.heads,
        device=device,
        dtype=dtype,
        load_in_4bit=models.load_in_4bit,
        prefix_cache_size=models.prefix_cache_images,
        max_image_tokens=models.max_image_tokens or None,
    )
    segmenter, sam_note = _load_sam(models, device, progress)
    from annotator.segmentation.segment import resolve_mask_model

    info = ModelsInfo(
        model=models.model,
        heads=tuple(grounder.heads),
        heads_source=heads_file.source,
        sam_type=None if segmenter is None else resolve_mask_model(models.sam_type, segmenter.device),
        sam_device=None if segmenter is None else str(segmenter.device),
        sam_note=sam_note,
        is_demo=models.is_demo,
        device=str(grounder.engine.device),
        load_seconds=perf_counter() - start,
    )
    return LoadedModels(proposer=Proposer(grounder, segmenter), segmenter=segmenter, info=info)


def _load_sam(
    models: ModelSettings, device: str | None, progress: Callable[[str], None]
) -> tuple["Segmenter | None", str]:
    if models.sam_type == "none":
        note = "" if models.is_demo else "SAM is switched off in Settings: masks are the heads' coarse regions."
        return None, note
    from annotator.segmentation.catalog import hub_model, mask_model_label
    from annotator.segmentation.segment import SAM_CHECKPOINTS, Segmenter, checkpoint_path, resolve_mask_model

    try:
        name = resolve_mask_model(models.sam_type, device)
    except ModelUnavailable as err:
        return None, f"The mask model in Settings cannot be used ({err}): masks are the heads' coarse regions."
    label = mask_model_label(name)
    if hub_model(name) is not None:
        checkpoint = Path(models.sam_checkpoint) if models.sam_checkpoint else None
    else:
        checkpoint = Path(models.sam_checkpoint) if models.sam_checkpoint else checkpoint_path(name)
        if not checkpoint.is_file():
            spec = SAM_CHECKPOINTS.get(name)
            where = f" (download {spec.url}, {spec.size_bytes / 1e9:.1f} GB)" if spec is not None else ""
            return None, (
                f"No SAM {name} checkpoint at {checkpoint}{where}: masks are the heads' coarse regions "
                "until one is there; choose it in Settings."
            )
    progress(f"Loading {label}…")
    try:
        segmenter = Segmenter.load(name, checkpoint=checkpoint, device=device, cache_size=models.sam_cache_images)
    except ModelUnavailable as err:
        return None, f"{label} could not be loaded ({err}): masks are the heads' coarse regions."
    return segmenter, ""
