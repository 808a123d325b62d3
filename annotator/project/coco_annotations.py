"""COCO annotations and categories as the store's `NewAnnotation`s: the entry checks of `import_coco`.

Categories are matched by name and added only when an imported annotation uses them. An annotation takes
polygons, RLE (counts as a list or a string, canonical or not: a string that pycocotools decodes is re-encoded) or
no segmentation (absent, `[]` or `[[]]`: box-only). Crowd regions (iscrowd 1) are instances only when asked
(`crowd_as_instances`, set for CVAT-style files whose brush masks are all crowd RLE); otherwise each is reported.
Keypoints and CVAT `attributes` are kept in `extra`. Every value is checked before use; a bad entry raises
ValueError with the reason, which the import reports by the entry's id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
from pycocotools import mask as coco_mask

from annotator.project.geometry import MAX_MASK_PIXELS, Rle, is_finite_number, segmentation_to_rle
from annotator.project.store import NewAnnotation, ProjectStore, Status

INDEX_LIMIT = 2**31
"""Image sides and head indices at or above this are not real values (no image or model is that large)."""

KEPT_IN_EXTRA = ("keypoints", "num_keypoints", "attributes")
"""Fields of other tools' annotations that the store has no column for, kept under these names in `extra`."""


@dataclass(frozen=True)
class ImportIssue:
    """An entry of the imported file that was not imported: its section, its id as written, and why."""

    kind: Literal["image", "category", "annotation"]
    coco_id: Any
    reason: str


@dataclass(frozen=True)
class ImageTarget:
    """A store image that annotations of the file go to, with its displayed (EXIF-applied) size."""

    image_id: int
    width: int
    height: int


@dataclass
class AnnotationOptions:
    """How annotations are read: the default status, whether crowd RLE is taken as instances; counts of both."""

    default_status: Status = "accepted"
    crowd_as_instances: bool = False
    crowd_imported: int = field(default=0, init=False)


class CategoryTable:
    """The file's categories by COCO id; each is added to the store the first time an annotation uses it."""

    def __init__(self, store: ProjectStore, entries: list, issues: list[ImportIssue]) -> None:
        self._store = store
        self._wanted: dict[int, tuple[str, str]] = {}
        self._resolved: dict[int, int] = {}
        self.added = 0
        for entry in entries:
            coco_id = entry.get("id") if isinstance(entry, dict) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            if not is_int(coco_id) or not isinstance(name, str) or not name.strip():
                issues.append(ImportIssue("category", coco_id, "category needs an integer id and a name"))
                continue
            if coco_id in self._wanted:
                issues.append(ImportIssue("category", coco_id, "duplicate category id"))
                continue
            supercategory = entry.get("supercategory")
            supercategory = supercategory if isinstance(supercategory, str) else ""
            if not (is_text(name) and is_text(supercategory)):
                issues.append(ImportIssue("category", coco_id, "category name or supercategory is not valid text"))
                continue
            self._wanted[coco_id] = (name, supercategory)

    def store_id(self, coco_id: Any) -> int:
        """The store's category for a COCO category id, added on first use; ValueError if the file has none."""
        if not is_int(coco_id) or coco_id not in self._wanted:
            raise ValueError(f"category {coco_id!r} is unknown or was not imported")
        if coco_id not in self._resolved:
            name, supercategory = self._wanted[coco_id]
            existing = self._store.category_by_name(name)
            if existing is None:
                existing = self._store.add_category(name, supercategory, undoable=False)
                self.added += 1
            self._resolved[coco_id] = existing.id
        return self._resolved[coco_id]


def new_annotation(
    entry: dict[str, Any], images: dict[int, ImageTarget], categories: CategoryTable, options: AnnotationOptions
) -> NewAnnotation:
    """One COCO annotation as a NewAnnotation; ValueError saying why it cannot be imported."""
    image_ref = entry.get("image_id")
    image = images.get(image_ref) if is_int(image_ref) else None
    if image is None:
        raise ValueError(f"image {image_ref!r} is unknown or was not imported")
    crowd = bool(entry.get("iscrowd", 0))
    segmentation = entry.get("segmentation")
    if crowd and not options.crowd_as_instances:
        raise ValueError("crowd region (iscrowd 1) is not an instance; not imported (--crowd-as-instances imports it)")
    if crowd and not isinstance(segmentation, dict):
        raise ValueError("crowd region (iscrowd 1) without an RLE mask; not imported")
    box = _clipped_box(entry.get("bbox"), image.width, image.height)
    rle = None
    if not _is_box_only(segmentation) and not entry.get("box_only", False):
        rle = import_segmentation(segmentation, image.height, image.width)
        if rle.area_px == 0:
            raise ValueError("segmentation is empty")
    expression = entry.get("expression", "")
    score = entry.get("score")
    status = entry.get("status", options.default_status)
    heads = entry.get("heads", [])
    extra = entry.get("extra", {})
    if not (isinstance(expression, str) and is_text(expression)):
        raise ValueError("expression is not a string of valid text")
    if score is not None and not is_finite_number(score):
        raise ValueError("score is not a finite number")
    if status not in get_args(Status):
        raise ValueError(f"status {status!r} is not one of {get_args(Status)}")
    if not isinstance(heads, list) or not all(_is_head(h) for h in heads):
        raise ValueError(f"heads is not a list of [layer, head] pairs of integers from 0 to {INDEX_LIMIT - 1}")
    if not isinstance(extra, dict):
        raise ValueError("extra is not an object")
    extra = {**extra, **{key: entry[key] for key in KEPT_IN_EXTRA if key in entry}}
    if not holds_only_valid_text(extra):
        raise ValueError("extra, keypoints or attributes hold a string that is not valid text (a lone surrogate)")
    category_id = categories.store_id(entry.get("category_id"))
    options.crowd_imported += crowd
    return NewAnnotation(
        image_id=image.image_id,
        category_id=category_id,
        box_xyxy=box,
        rle=rle,
        expression=expression,
        source="imported",
        score=score,
        heads=tuple((layer, head) for layer, head in heads),
        status=status,
        extra=extra,
    )


def _is_box_only(segmentation: Any) -> bool:
    """No mask: no segmentation, or an empty polygon list as other tools write for boxes (`[]`, `[[]]`)."""
    return segmentation is None or (isinstance(segmentation, list) and all(p == [] for p in segmentation))


def import_segmentation(segmentation: Any, height: int, width: int) -> Rle:
    """`segmentation_to_rle`, also accepting compressed counts that are not canonical but decode to the image."""
    try:
        return segmentation_to_rle(segmentation, height, width)
    except ValueError:
        if height * width > MAX_MASK_PIXELS or not isinstance(segmentation, dict):
            raise
        counts = segmentation.get("counts")
        if segmentation.get("size") != [height, width] or not (isinstance(counts, str) and counts.isascii()):
            raise
        runs = _string_runs(counts)
        if runs is None or any(run < 0 for run in runs) or sum(runs) != height * width:
            raise
        raw = coco_mask.frPyObjects({"size": [height, width], "counts": runs}, height, width)
        return Rle.from_mask(np.asarray(coco_mask.decode(raw), dtype=bool))


def _string_runs(counts: str) -> list[int] | None:
    """The run lengths of pycocotools' compressed counts string (its `rleFrString`), or None if it is cut short."""
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                return None
            code = ord(counts[position]) - 48
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and code & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _clipped_box(bbox: Any, width: int, height: int) -> tuple[float, float, float, float]:
    """COCO [x, y, w, h] -> (x0, y0, x1, y1) clipped to the image; ValueError if malformed or empty."""
    if not (isinstance(bbox, list) and len(bbox) == 4):
        raise ValueError("bbox is not [x, y, width, height]")
    if not all(map(is_finite_number, bbox)):
        raise ValueError("bbox has a value that is not a finite number")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise ValueError(f"bbox {bbox} has no area")
    x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    if x0 >= x1 or y0 >= y1:
        raise ValueError(f"bbox {bbox} lies outside the {width}x{height} image")
    return x0, y0, x1, y1


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_head(value: Any) -> bool:
    """A [layer, head] pair of integers that can index a model."""
    return isinstance(value, list) and len(value) == 2 and all(is_int(v) and 0 <= v < INDEX_LIMIT for v in value)


def is_text(value: str) -> bool:
    """Whether a string can be stored and written as UTF-8 (JSON allows lone surrogates such as "\\ud800")."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def holds_only_valid_text(value: Any) -> bool:
    """Whether every key and string in a JSON value is valid text (walked without recursion)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and not is_text(item):
            return False
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True
