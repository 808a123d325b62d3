"""Prediction shards of a distributed pre-labelling run: the plan, the files, and the merge into the project store.

Plan: the run's pending work (`prelabel.find_pending_work`: per image, the expressions the store does not hold yet)
is cut into shards by image id: shard `i` holds the pending images whose store id `n` has `n // shard_size == i`.
Ids never change, so an image stays in its shard across reruns, and images added to the folder later fall into new
shards. A shard's key hashes its items (image ids, paths, expressions) with the run's settings (model, heads,
masks, store...): a rerun with the same pending images and settings finds the same file names, and any change
makes a new key, so a stale file is never taken for a result.

Files: `shard-<index>-<key>.jsonl` under the shards folder, one line per image in id order,
`{"image_id", "path", "skipped", "latency_ms", "annotations": [...]}` with the annotations exactly as the store
receives them. A shard is written once all its images are in, through a temporary file renamed into place
(`atomic_text_file`): a killed job leaves at most a stray temporary file, never a half shard under a shard's name.
A file whose lines do not match its shard's images is treated as not written.

Merge: a shard's annotations go into the store in one transaction, as pending proposals (like the local
`prelabel`), so a shard is in the store entirely or not at all.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from annotator.prelabel import store_annotations
from annotator.project.atomic_file import atomic_text_file
from annotator.project.geometry import Rle
from annotator.project.store import NewAnnotation, ProjectStore

SHARD_FORMAT = 1
"""Version of the shard line format; part of every shard key."""


@dataclass(frozen=True)
class ShardItem:
    """One pending image of a shard: its store id, its path relative to the folder, the expressions to ask."""

    image_id: int
    path: str
    expressions: tuple[str, ...]


@dataclass(frozen=True)
class Shard:
    """A block of pending images (`index`: the block of image ids) and the key of its items and settings."""

    index: int
    key: str
    items: tuple[ShardItem, ...]

    @property
    def file_name(self) -> str:
        return f"shard-{self.index:06d}-{self.key}.jsonl"

    @property
    def image_ids(self) -> tuple[int, ...]:
        return tuple(item.image_id for item in self.items)


@dataclass(frozen=True)
class ImageResult:
    """What a worker made of one image: its pending annotations, or why it was `skipped` (None when labelled).

    `latency_ms`: the summed proposer time of the image's expressions.
    """

    image_id: int
    path: str
    annotations: tuple[NewAnnotation, ...] = ()
    skipped: str | None = None
    latency_ms: float = 0.0

    def to_json(self) -> str:
        """One JSON line (no newline); floats keep every digit, so a round trip is exact."""
        return json.dumps(
            {
                "image_id": self.image_id,
                "path": self.path,
                "skipped": self.skipped,
                "latency_ms": self.latency_ms,
                "annotations": [_annotation_to_json(a) for a in self.annotations],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, line: str) -> "ImageResult":
        row = json.loads(line)
        return cls(
            image_id=int(row["image_id"]),
            path=str(row["path"]),
            annotations=tuple(_annotation_from_json(a) for a in row["annotations"]),
            skipped=row["skipped"],
            latency_ms=float(row["latency_ms"]),
        )


def plan_shards(
    todo: Iterable[tuple[int, str, Sequence[str]]], shard_size: int, settings: Mapping[str, Any]
) -> list[Shard]:
    """Cut (image id, path, expressions) items into shards of ids `n` with the same `n // shard_size`.

    `settings`: JSON-ready values that change the results (model, heads, masks...); they enter every key.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    blocks: dict[int, list[ShardItem]] = {}
    for image_id, path, expressions in todo:
        blocks.setdefault(image_id // shard_size, []).append(ShardItem(image_id, path, tuple(expressions)))
    shards = []
    for index in sorted(blocks):
        items = tuple(sorted(blocks[index], key=lambda item: item.image_id))
        shards.append(Shard(index, _shard_key(items, settings), items))
    return shards


def _shard_key(items: tuple[ShardItem, ...], settings: Mapping[str, Any]) -> str:
    content = {
        "format": SHARD_FORMAT,
        "settings": settings,
        "items": [[item.image_id, item.path, list(item.expressions)] for item in items],
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def write_shard(folder: Path, shard: Shard, results: Iterable[ImageResult]) -> Path:
    """Write a complete shard atomically (temporary file, then rename); its path."""
    by_id = {result.image_id: result for result in results}
    if sorted(by_id) != sorted(shard.image_ids):
        raise ValueError(f"{shard.file_name}: results for images {sorted(by_id)}, the shard holds {shard.image_ids}")
    path = folder / shard.file_name
    with atomic_text_file(path) as handle:
        for image_id in shard.image_ids:
            handle.write(by_id[image_id].to_json() + "\n")
    return path


def read_shard(folder: Path, shard: Shard) -> tuple[ImageResult, ...] | None:
    """The shard's results when its file was written (and holds exactly its images), else None."""
    path = folder / shard.file_name
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        results = tuple(ImageResult.from_json(line) for line in lines)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):  # missing, or not written by a run
        return None
    if tuple(result.image_id for result in results) != shard.image_ids:
        return None
    return results


def merge_shard(store: ProjectStore, shard: Shard, results: Sequence[ImageResult]) -> int:
    """Add a shard's annotations to the store in one transaction; how many were added."""
    items = [annotation for result in results for annotation in result.annotations]
    store_annotations(store, items, shard.file_name)
    return len(items)


class ShardAssembler:
    """Collects image results arriving in any order and hands back each shard once all its images are in."""

    def __init__(self, shards: Iterable[Shard]) -> None:
        self._shard_of: dict[int, Shard] = {}
        for shard in shards:
            for image_id in shard.image_ids:
                self._shard_of[image_id] = shard
        self._results: dict[int, dict[int, ImageResult]] = {}

    def add(self, result: ImageResult) -> tuple[Shard, tuple[ImageResult, ...]] | None:
        """Take one image's result; the shard and its results in id order when this completed it."""
        shard = self._shard_of[result.image_id]
        collected = self._results.setdefault(shard.index, {})
        collected[result.image_id] = result
        if len(collected) < len(shard.items):
            return None
        del self._results[shard.index]
        return shard, tuple(collected[image_id] for image_id in shard.image_ids)


def _annotation_to_json(annotation: NewAnnotation) -> dict[str, Any]:
    return {
        "image_id": annotation.image_id,
        "category_id": annotation.category_id,
        "box_xyxy": None if annotation.box_xyxy is None else [float(v) for v in annotation.box_xyxy],
        "rle": None if annotation.rle is None else annotation.rle.to_coco(),
        "expression": annotation.expression,
        "source": annotation.source,
        "score": annotation.score,
        "heads": [list(head) for head in annotation.heads],
        "status": annotation.status,
        "extra": dict(annotation.extra),
    }


def _annotation_from_json(row: Mapping[str, Any]) -> NewAnnotation:
    box = row["box_xyxy"]
    return NewAnnotation(
        image_id=int(row["image_id"]),
        category_id=int(row["category_id"]),
        box_xyxy=None if box is None else tuple(float(v) for v in box),
        rle=None if row["rle"] is None else Rle.from_coco(row["rle"]),
        expression=row["expression"],
        source=row["source"],
        score=row["score"],
        heads=tuple((int(layer), int(head)) for layer, head in row["heads"]),
        status=row["status"],
        extra=dict(row["extra"]),
    )
