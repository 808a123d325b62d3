"""Filtering and ordering the project's image list without touching a widget: `ImageFilter` says what to show,
`ImageColumns` keeps per-image columns (lower-case path, status, pending count) so a filter over 10,000 images
is one comprehension pass and a review order one key sort."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from annotator.project.records import ImageRecord

STATUSES = ("all", "todo", "in_progress", "done", "pending")
ORDERS = ("natural", "least_confident")


def record_status(record: ImageRecord) -> str:
    """"todo", "in_progress", "done", or "error" for an image whose header cannot be read."""
    return "error" if record.error else record.status


def review_key(n_pending: int, score: float | None) -> float:
    """Sort key of the review order: an image's lowest pending score, then pending without score, then the rest."""
    if n_pending and score is not None:
        return float(score)
    return 2.0 if n_pending else 3.0


@dataclass(frozen=True)
class ImageFilter:
    """What the list shows: images whose path holds `text` (any case), of a `status` ("all", an image status, or
    "pending": with pending proposals), in folder order ("natural") or least confident pending first."""

    text: str = ""
    status: str = "all"
    order: str = "natural"

    @classmethod
    def of(cls, text: str, status: str, order: str) -> ImageFilter:
        """A filter from what the user typed and chose; unknown status or order names mean "all" / "natural"."""
        return cls(
            text=text.strip().lower(),
            status=status if status in STATUSES else "all",
            order=order if order in ORDERS else "natural",
        )

    @property
    def active(self) -> bool:
        """Whether anything is filtered out or reordered."""
        return bool(self.text) or self.status != "all" or self.order != "natural"


class ImageColumns:
    """The listed images' fields that filters read, one list per field, row-aligned with the records."""

    def __init__(self, records: Sequence[ImageRecord] = ()) -> None:
        self.set_records(records)

    def set_records(self, records: Sequence[ImageRecord]) -> None:
        self._ids = [record.id for record in records]
        self._paths = [record.path.lower() for record in records]
        self._statuses = [record_status(record) for record in records]
        self._pending = [record.n_pending for record in records]

    def update(self, row: int, record: ImageRecord) -> None:
        self._ids[row] = record.id
        self._paths[row] = record.path.lower()
        self._statuses[row] = record_status(record)
        self._pending[row] = record.n_pending

    def __len__(self) -> int:
        return len(self._ids)

    def review_key(self, row: int, scores: Mapping[int, float]) -> float:
        return review_key(self._pending[row], scores.get(self._ids[row]))

    def select(self, wanted: ImageFilter, scores: Mapping[int, float]) -> list[int]:
        """The rows `wanted` shows, in its order; `scores` are the images' lowest pending scores by image id.

        The review order is a stable sort, so images with equal keys keep the folder order."""
        rows: list[int] | range = range(len(self._ids))
        if wanted.status == "pending":
            pending = self._pending
            rows = [row for row in rows if pending[row] > 0]
        elif wanted.status != "all":
            statuses, status = self._statuses, wanted.status
            rows = [row for row in rows if statuses[row] == status]
        if wanted.text:
            paths, text = self._paths, wanted.text
            rows = [row for row in rows if text in paths[row]]
        if wanted.order == "least_confident":
            ids, pending = self._ids, self._pending
            rows = sorted(rows, key=lambda row: review_key(pending[row], scores.get(ids[row])))
        return list(rows)
