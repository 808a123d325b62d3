"""Annotations in the project store: adding, reviewing and editing them, each change one undo step (see `store`).

`ProjectStore` inherits these from `StoreAnnotations`. Boxes are checked against the image size (read from the
header when not yet known), masks against the image's width and height, categories against the store.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_args

from annotator.errors import ProjectStoreError
from annotator.project.geometry import Rle
from annotator.project.records import Annotation, Category, NewAnnotation, Source, Status, annotation_from_row
from annotator.project.schema import ANNOTATION_COLUMNS
from annotator.project.store_history import insert_op, update_op
from annotator.project.store_images import StoreImages


class StoreAnnotations(StoreImages):
    """The annotations of a `ProjectStore` (a mixin: the store provides the categories)."""

    categories: Callable[[], list[Category]]
    category: Callable[[int], Category]

    def annotation(self, annotation_id: int) -> Annotation:
        row = self._db.execute(
            f"SELECT {', '.join(ANNOTATION_COLUMNS)} FROM annotations WHERE id = ?", (annotation_id,)
        ).fetchone()
        if row is None:
            raise KeyError(f"no annotation {annotation_id} in {self._path}")
        return annotation_from_row(row)

    def annotations(
        self, image_id: int | None = None, statuses: Sequence[Status] | None = None
    ) -> list[Annotation]:
        """Annotations of one image (or all), optionally only those with the given statuses, by id."""
        clauses, params = [], []
        if image_id is not None:
            clauses.append("image_id = ?")
            params.append(image_id)
        if statuses is not None:
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT {', '.join(ANNOTATION_COLUMNS)} FROM annotations {where} ORDER BY id"
        return [annotation_from_row(row) for row in self._db.execute(query, params)]

    def add_annotation(
        self,
        image_id: int,
        category_id: int,
        box_xyxy: tuple[float, float, float, float] | None = None,
        *,
        rle: Rle | None = None,
        expression: str = "",
        source: Source = "manual",
        score: float | None = None,
        heads: Sequence[tuple[int, int]] = (),
        status: Status = "pending",
        extra: Mapping[str, Any] | None = None,
    ) -> Annotation:
        """Add one annotation (one undoable step). `box_xyxy` None: the tight box of `rle`."""
        new = NewAnnotation(
            image_id, category_id, box_xyxy, rle, expression, source, score, tuple(map(tuple, heads)), status,
            dict(extra or {}),
        )  # fmt: skip
        return self.annotation(self.add_annotations([new], label="add annotation")[0])

    def add_annotations(
        self, items: Sequence[NewAnnotation], *, undoable: bool = True, label: str = "add annotations"
    ) -> list[int]:
        """Add many annotations in one transaction (one undo step, or none with `undoable=False`); their ids."""
        sizes: dict[int, tuple[int, int]] = {}
        category_ids = {category.id for category in self.categories()}
        rows = [self._new_row(item, sizes, category_ids) for item in items]
        if not rows:
            return []
        if undoable:
            applied = self._mutate(label, [insert_op("annotations", *rows)])
            return [row["id"] for row in applied[0]["rows"]]
        columns = list(rows[0])
        with self._transaction():
            cursor = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM annotations")
            first = cursor.fetchone()[0] + 1
            self._db.executemany(
                f"INSERT INTO annotations ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                ([row[c] for c in columns] for row in rows),
            )
            ids = [r[0] for r in self._db.execute("SELECT id FROM annotations WHERE id >= ? ORDER BY id", (first,))]
        return ids

    def _new_row(
        self, item: NewAnnotation, sizes: dict[int, tuple[int, int]], category_ids: set[int]
    ) -> dict[str, Any]:
        if item.category_id not in category_ids:
            raise ValueError(f"no category {item.category_id} in {self._path}")
        if item.image_id not in sizes:
            sizes[item.image_id] = self._known_size(item.image_id)
        width, height = sizes[item.image_id]
        if item.rle is not None and (item.rle.height, item.rle.width) != (height, width):
            raise ValueError(
                f"mask is {item.rle.width}x{item.rle.height}, image {item.image_id} is {width}x{height}"
            )
        box = item.box_xyxy
        if box is None:
            if item.rle is None or item.rle.box_xyxy is None:
                raise ValueError("an annotation needs a box or a non-empty mask")
            box = item.rle.box_xyxy
        _check_choice(item.source, Source, "source")
        _check_choice(item.status, Status, "status")
        now = time.time()
        return {
            "image_id": item.image_id,
            "category_id": item.category_id,
            **_box_columns(box, width, height),
            **_mask_columns(item.rle),
            "expression": item.expression,
            "source": item.source,
            "score": None if item.score is None else float(item.score),
            "heads": json.dumps([[int(layer), int(head)] for layer, head in item.heads]),
            "status": item.status,
            "created_at": now,
            "updated_at": now,
            "extra": json.dumps(dict(item.extra)),
        }

    def _known_size(self, image_id: int) -> tuple[int, int]:
        record = self.image(image_id)
        if record.width is None:
            record = self.ensure_image_info(image_id)
        if record.width is None or record.height is None:
            raise ProjectStoreError(f"image {record.path} cannot be annotated: {record.error}")
        return record.width, record.height

    def accept(self, annotation_id: int) -> Annotation:
        return self.set_status(annotation_id, "accepted")

    def reject(self, annotation_id: int) -> Annotation:
        return self.set_status(annotation_id, "rejected")

    def set_status(self, annotation_id: int, status: Status) -> Annotation:
        """Set pending / accepted / rejected (one undoable step)."""
        _check_choice(status, Status, "status")
        self.annotation(annotation_id)
        values = {"status": status, "updated_at": time.time()}
        self._mutate(f"mark {status}", [update_op("annotations", annotation_id, values)])
        return self.annotation(annotation_id)

    def update_box(self, annotation_id: int, box_xyxy: tuple[float, float, float, float]) -> Annotation:
        """Move or resize the box (one undoable step); a proposal or import becomes `edited`."""
        current = self.annotation(annotation_id)
        width, height = self._known_size(current.image_id)
        return self._edit(annotation_id, "edit box", _box_columns(box_xyxy, width, height))

    def update_mask(
        self,
        annotation_id: int,
        rle: Rle | None,
        *,
        points: Sequence[Sequence[float]] | None = None,
        mask_source: str | None = None,
    ) -> Annotation:
        """Replace the mask (None: box-only); a non-empty mask also sets the box to its tight box. In the same
        undo step, `points`, when given, become the annotation's SAM refinement points (`extra["points"]`,
        `[[x, y, 1 | 0], ...]`; an empty list removes them), so refining after reopening the folder goes on from
        them, and `mask_source` (e.g. "sam", "edited") records what made the mask (`extra["mask_source"]`)."""
        current = self.annotation(annotation_id)
        width, height = self._known_size(current.image_id)
        values = _mask_columns(rle)
        if rle is not None:
            if (rle.height, rle.width) != (height, width):
                raise ValueError(f"mask is {rle.width}x{rle.height}, image is {width}x{height}")
            if rle.box_xyxy is None:
                raise ValueError("the mask is empty; use None for a box-only annotation")
            values.update(_box_columns(rle.box_xyxy, width, height))
        if points is not None or mask_source is not None:
            extra = dict(current.extra)
            if points is not None:
                extra.pop("points", None)
                if points:
                    extra["points"] = [[float(v) for v in point] for point in points]
            if mask_source is not None:
                extra["mask_source"] = mask_source
            values["extra"] = json.dumps(extra)
        return self._edit(annotation_id, "edit mask", values)

    def update_category(self, annotation_id: int, category_id: int) -> Annotation:
        self.category(category_id)
        return self._edit(annotation_id, "change category", {"category_id": category_id})

    def _edit(self, annotation_id: int, label: str, values: dict[str, Any]) -> Annotation:
        current = self.annotation(annotation_id)
        source = "edited" if current.source in ("proposal", "imported") else current.source
        values = {**values, "source": source, "updated_at": time.time()}
        self._mutate(label, [update_op("annotations", annotation_id, values)])
        return self.annotation(annotation_id)

    def delete_annotation(self, annotation_id: int) -> None:
        """Delete an annotation (one undoable step)."""
        self.annotation(annotation_id)
        self._mutate("delete annotation", [{"op": "delete", "table": "annotations", "ids": [annotation_id]}])


def _check_choice(value: str, choices: Any, name: str) -> None:
    if value not in get_args(choices):
        raise ValueError(f"{name} must be one of {get_args(choices)}, got {value!r}")


def _box_columns(box: Sequence[float], width: int, height: int) -> dict[str, float]:
    """Validated box columns: finite, non-empty, inside the width x height image."""
    if len(box) != 4:
        raise ValueError(f"a box is (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"box {box!r} has a non-finite coordinate")
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"box {box!r} is empty or outside the {width}x{height} image")
    return {"x0": x0, "y0": y0, "x1": x1, "y1": y1}


def _mask_columns(rle: Rle | None) -> dict[str, Any]:
    if rle is None:
        return {"mask_height": None, "mask_width": None, "mask_counts": None}
    return {"mask_height": rle.height, "mask_width": rle.width, "mask_counts": rle.counts}
