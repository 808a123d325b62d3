"""Head discovery on an open folder (the app's "Find heads on this folder"), for a model whose heads are unknown.

The image/expression pairs are the folder project's annotations that carry an expression, and the expressions the
annotator typed on its images while the heads were unknown: discovery needs no ground truth, only what an
expression names in its image. The model runs whole (nothing can be truncated before
the heads are known), one image at a time, and the heads file lands beside the project's store
(`<folder>/.annotator/<model>-heads.json`) in the format `annotator find-heads --out` writes, so the CLI, the app
and `annotator prelabel --heads` all read it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from annotator.discovery.calibration import CalibrationImage, CalibrationPair, attention_samples, load_pairs
from annotator.errors import ImageLoadError, ModelUnavailable
from annotator.grounding.heads import HeadsFile, head_label, select_localization_heads
from annotator.project.store import ProjectStore

if TYPE_CHECKING:
    import torch

MIN_PAIRS = 20
"""Fewest image/expression pairs the app runs discovery on (the paper uses 1000; the votes need a few dozen)."""

DiscoveryProgress = Callable[[int, int], None]
"""`progress(samples_done, samples_total)`; an exception it raises stops discovery and propagates."""


@dataclass(frozen=True)
class FoundHeads:
    """What discovery on a folder found: the heads file written at `path`, and the pairs it could not read."""

    path: Path
    heads_file: HeadsFile
    skipped: tuple[str, ...]


def folder_pairs(store: ProjectStore, typed: Iterable[tuple[int, str]] = ()) -> list[CalibrationPair]:
    """One pair per distinct (image, expression) among the store's annotations with an expression, then among the
    `typed` (image id, expression) pairs, on images still in the folder, in that order."""
    present = {record.id: record.path for record in store.images()}
    seen: set[tuple[int, str]] = set()
    pairs = []
    found = [(a.image_id, a.expression, f"annotation {a.id}") for a in store.annotations()]
    for image_id, text, what in found + [(image_id, text, "typed") for image_id, text in typed]:
        expression = text.strip()
        key = (image_id, expression)
        if not expression or image_id not in present or key in seen:
            continue
        seen.add(key)
        pairs.append(CalibrationPair(store.image_path(image_id), expression, f"{present[image_id]}: {what}"))
    return pairs


def pairs_shortfall(count: int, minimum: int = MIN_PAIRS) -> str | None:
    """Why `count` pairs are too few for discovery, in the annotator's words; None when they suffice."""
    if count >= minimum:
        return None
    return (
        f"Finding heads needs at least {minimum} image/expression pairs; this folder has {count} (annotations with "
        f"an expression, and expressions typed on its images): {minimum - count} more are needed. Type what you see "
        "on more images, import a COCO or RefCOCO file with expressions (File > Import), or run `annotator "
        "find-heads --data FILE`."
    )


def heads_path(store: ProjectStore, model_name: str) -> Path:
    """Where the heads found on the store's folder for `model_name` are kept: beside the store."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", model_name).strip("-") or "model"
    return store.path.parent / f"{safe}-heads.json"


def find_heads_on_pairs(
    model: str,
    pairs: Sequence[CalibrationPair],
    out: Path,
    *,
    source: str,
    device: "str | torch.device | None" = None,
    dtype: "torch.dtype | None" = None,
    progress: DiscoveryProgress | None = None,
) -> FoundHeads:
    """Run the paper's discovery (k = 3, 10 votes a sample, layers 0-1 skipped) with every layer of `model` over
    `pairs` and write the heads file `out`. `progress(0, n)` is called before the model loads, then after each
    sample. `ModelUnavailable` when the model is not here or no head qualifies; `ImageLoadError` when no image
    could be read."""
    from annotator.discovery.report import write_heads_file
    from annotator.models.loading import load_discovery_engine

    report = progress or (lambda done, total: None)
    total = len(pairs)
    report(0, total)
    engine = load_discovery_engine(model, device=device, dtype=dtype)
    skipped: list[str] = []
    images = _counted(load_pairs(pairs, skipped), total, skipped, report)
    try:
        selection = select_localization_heads(attention_samples(engine, images))
    except ValueError as exc:
        if skipped and len(skipped) == total:
            raise ImageLoadError(f"none of the {total} images could be read; first: {skipped[0]}") from exc
        raise
    if not selection.heads:
        raise ModelUnavailable(
            f"no localization head of {model} was found on {selection.num_samples} pairs: "
            f"{len(selection.candidates)} heads lie above tau = {selection.tau:.4f} and none got a vote"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    heads_file = write_heads_file(selection, out, model=model, source=source)
    return FoundHeads(out, heads_file, tuple(skipped))


def heads_summary(found: FoundHeads) -> str:
    """The heads found, in a sentence: 'L3 H5, L4 H2, L5 H6 on 20 pairs'."""
    heads = ", ".join(head_label(head) for head in found.heads_file.heads)
    return f"{heads} on {found.heads_file.num_samples} pairs"


def _counted(
    images: Iterable[CalibrationImage], total: int, skipped: list[str], report: DiscoveryProgress
) -> Iterator[CalibrationImage]:
    """The images, reporting each one done (a read or a skipped one) once the next is asked for."""
    done = 0
    for image in images:
        yield image
        done += 1
        report(done + len(skipped), total)
    if skipped:
        report(total, total)
