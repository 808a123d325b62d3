"""The project store's records, as frozen dataclasses: `ImageRecord`, `Category`, `Annotation`, `NewAnnotation` for
bulk adds, `SyncReport`; and how a row of the store becomes one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from annotator.project.geometry import Rle
from annotator.project.images import SkippedFile
from annotator.project.schema import ANNOTATION_COLUMNS

Source = Literal["proposal", "manual", "edited", "imported"]
Status = Literal["pending", "accepted", "rejected"]
ImageStatus = Literal["todo", "in_progress", "done"]


@dataclass(frozen=True)
class ImageRecord:
    """An image of the project: `path` relative to the image root; `width`/`height` in pixels, EXIF applied
    (None until the header is read, or when it cannot be: then `error` says why)."""

    id: int
    path: str
    width: int | None
    height: int | None
    present: bool
    status: ImageStatus
    n_pending: int
    n_accepted: int
    n_rejected: int
    error: str | None

    @property
    def n_annotations(self) -> int:
        return self.n_pending + self.n_accepted + self.n_rejected


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    supercategory: str


@dataclass(frozen=True)
class Annotation:
    """One object on one image. `box_xyxy` is in original-image pixels (EXIF frame); `rle` is None for a
    box-only annotation; `heads` are the (layer, head) pairs that proposed it; times are Unix seconds; `extra`
    is free JSON (for example the attention box that prompted SAM)."""

    id: int
    image_id: int
    category_id: int
    box_xyxy: tuple[float, float, float, float]
    rle: Rle | None
    expression: str
    source: Source
    score: float | None
    heads: tuple[tuple[int, int], ...]
    status: Status
    created_at: float
    updated_at: float
    extra: Mapping[str, Any]


@dataclass(frozen=True)
class NewAnnotation:
    """An annotation to add; `box_xyxy` None means the tight box of `rle` (which must then be given)."""

    image_id: int
    category_id: int
    box_xyxy: tuple[float, float, float, float] | None = None
    rle: Rle | None = None
    expression: str = ""
    source: Source = "manual"
    score: float | None = None
    heads: tuple[tuple[int, int], ...] = ()
    status: Status = "pending"
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SyncReport:
    """What `sync_folder` changed: how many images were added, re-attached after a move or rename, found
    missing (their records and annotations are kept), how many are listed now, and the files the scan skipped."""

    added: int
    reattached: int
    missing: int
    listed: int
    skipped: tuple[SkippedFile, ...]


def image_record(row: tuple) -> ImageRecord:
    image_id, path, width, height, present, done, n_pending, n_accepted, n_rejected, error = row
    if done:
        status: ImageStatus = "done"
    elif n_pending + n_accepted + n_rejected:
        status = "in_progress"
    else:
        status = "todo"
    return ImageRecord(
        image_id, path, width, height, bool(present), status, n_pending, n_accepted, n_rejected, error
    )


def annotation_from_row(row: tuple) -> Annotation:
    values = dict(zip(ANNOTATION_COLUMNS, row))
    rle = None
    if values["mask_counts"] is not None:
        rle = Rle(values["mask_height"], values["mask_width"], values["mask_counts"])
    return Annotation(
        id=values["id"],
        image_id=values["image_id"],
        category_id=values["category_id"],
        box_xyxy=(values["x0"], values["y0"], values["x1"], values["y1"]),
        rle=rle,
        expression=values["expression"],
        source=values["source"],
        score=values["score"],
        heads=tuple((int(layer), int(head)) for layer, head in json.loads(values["heads"])),
        status=values["status"],
        created_at=values["created_at"],
        updated_at=values["updated_at"],
        extra=MappingProxyType(json.loads(values["extra"])),
    )
