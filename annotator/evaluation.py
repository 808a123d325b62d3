"""REC and RES metrics as the paper reports them (design.md section 2), for `annotator eval`.

Ground truth: RefCOCO-style JSONL, one referring expression per line: `image` (path relative to the file),
`expression` (or `expressions`, a list), `bbox` [x, y, w, h] in original pixels, optional `segmentation`
(COCO polygons or RLE; polygons need `width`/`height` on the line or a readable image), optional `split`.
Our RefCOCO-style export (a refs JSON whose entries hold `ann_id`, `image_id`, `sentences`, `split`, with its
instances file beside it) is read too.
Predictions: our COCO export (annotations carry `expression` and `score`; a `box_only` annotation's rectangle
is not a mask; `latency_ms` may sit in `extra`, where `annotator prelabel` puts it) or JSONL lines with `image`,
`expression`, `bbox` [x, y, w, h], optional `segmentation`, `score`, `latency_ms`.

Matching: a ground-truth expression is matched to the predictions of the same image (same relative path, or
the same file name when that is unique) and the same expression (whitespace collapsed, case folded); when
there are several (all-instances mode), the highest score is the prediction. No prediction is a miss (IoU 0).

Metrics, per split and overall:
- REC `Acc@0.5`: fraction of expressions whose box IoU is **>= 0.5** (a box at IoU exactly 0.5 is a hit, as
  the REC evaluation code in common use counts it), and the mean box IoU.
- RES `cIoU`: total intersection over total union, summed over all expressions (what the paper reports);
  `mIoU`: the mean of the per-expression mask IoUs. Only expressions whose ground truth has a mask count; a
  prediction without a mask there is a miss.
Boxes and masks are compared with pycocotools (`iou` on boxes, `merge`/`area` on RLE).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from pycocotools import mask as mask_utils

from annotator.errors import CocoFormatError, ImageLoadError
from annotator.jsonl import checked_texts, is_jsonl, listed, matchable_id, read_json, read_jsonl, sentence_texts
from annotator.project.images import image_size

HIT_IOU = 0.5
ALL_SPLITS = "all"

Rle = dict[str, Any]


@dataclass(frozen=True)
class GroundTruth:
    """One referring expression with its target. `box_xywh` and the RLE `segmentation` are in original pixels."""

    image: str
    expression: str
    box_xywh: tuple[float, float, float, float]
    segmentation: Rle | None = None
    split: str = ALL_SPLITS


@dataclass(frozen=True)
class Prediction:
    """One proposal for an expression. `box_xywh` and RLE `segmentation` in original pixels; `latency_ms` optional."""

    image: str
    expression: str
    box_xywh: tuple[float, float, float, float]
    segmentation: Rle | None = None
    score: float = 0.0
    latency_ms: float | None = None


@dataclass(frozen=True)
class SampleResult:
    """One ground-truth expression scored. Mask areas in pixels (None where the ground truth has no mask)."""

    truth: GroundTruth
    predicted: bool
    box_iou: float
    mask_intersection: float | None
    mask_union: float | None

    @property
    def hit(self) -> bool:
        return self.box_iou >= HIT_IOU

    @property
    def mask_iou(self) -> float | None:
        if self.mask_union is None:
            return None
        return self.mask_intersection / self.mask_union if self.mask_union > 0 else 0.0


@dataclass(frozen=True)
class SplitMetrics:
    """Metrics of one split. Fractions in [0, 1]; mask metrics are None when no expression has a ground-truth mask."""

    split: str
    count: int
    missing: int
    accuracy: float
    mean_box_iou: float
    mask_count: int
    ciou: float | None
    miou: float | None


@dataclass(frozen=True)
class LatencySummary:
    """Per-prediction latencies (milliseconds) as recorded by the run that made them."""

    count: int
    images: int
    images_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class EvaluationReport:
    """Per-split metrics (the overall row last), the scored samples, and predictions that matched nothing."""

    splits: list[SplitMetrics]
    samples: list[SampleResult]
    unmatched_predictions: int

    @property
    def overall(self) -> SplitMetrics:
        return self.splits[-1]


def normalise_expression(text: str) -> str:
    """The matching key of an expression: whitespace collapsed, case folded."""
    return " ".join(str(text).split()).casefold()


def normalise_image_path(path: str) -> str:
    """The matching key of an image path: forward slashes, no leading './'."""
    return re.sub(r"^(\./)+", "", str(path).replace("\\", "/"))


def box_iou(box_a_xywh: Iterable[float], box_b_xywh: Iterable[float]) -> float:
    """IoU of two [x, y, w, h] boxes in continuous pixel coordinates (pycocotools)."""
    a = np.asarray([list(box_a_xywh)], dtype=np.float64)
    b = np.asarray([list(box_b_xywh)], dtype=np.float64)
    return float(mask_utils.iou(a, b, [0])[0, 0])


def mask_overlap(truth: Rle, predicted: Rle) -> tuple[float, float]:
    """(intersection, union) in pixels of two COCO RLEs of the same image size."""
    if list(truth["size"]) != list(predicted["size"]):
        raise CocoFormatError(f"mask sizes differ: ground truth {truth['size']}, prediction {predicted['size']}")
    intersection = mask_utils.area(mask_utils.merge([truth, predicted], intersect=True))
    union = mask_utils.area(mask_utils.merge([truth, predicted], intersect=False))
    return float(intersection), float(union)


def evaluate(ground_truth: Iterable[GroundTruth], predictions: Iterable[Prediction]) -> EvaluationReport:
    """Score every ground-truth expression against its best-scored matching prediction."""
    best: dict[tuple[str, str], Prediction] = {}
    for prediction in predictions:
        key = (normalise_image_path(prediction.image), normalise_expression(prediction.expression))
        if key not in best or prediction.score > best[key].score:
            best[key] = prediction
    by_file_name = _unique_file_names(best)
    used: set[tuple[str, str]] = set()
    samples = []
    for truth in ground_truth:
        key = _lookup(truth, best, by_file_name)
        prediction = best.get(key) if key else None
        if key:
            used.add(key)
        samples.append(_score(truth, prediction))
    splits = sorted({s.truth.split for s in samples} - {ALL_SPLITS})
    rows = [_split_metrics(split, [s for s in samples if s.truth.split == split]) for split in splits]
    rows.append(_split_metrics(ALL_SPLITS, samples))
    return EvaluationReport(splits=rows, samples=samples, unmatched_predictions=len(best) - len(used))


def check_scorable(
    ground_truth: list[GroundTruth], predictions: list[Prediction], gt_path: str | Path, pred_path: str | Path
) -> None:
    """`CocoFormatError` when there is nothing to score: no ground truth, no prediction, or files that share no
    image (by relative path or file name), which would print a table of zeros."""
    if not ground_truth:
        raise CocoFormatError(f"{gt_path}: no ground-truth expressions; nothing to score")
    if not predictions:
        raise CocoFormatError(f"{pred_path}: no predictions; nothing to score against {gt_path}")
    truth_images = {normalise_image_path(t.image) for t in ground_truth}
    predicted_images = {normalise_image_path(p.image) for p in predictions}
    predicted_names = {image.rsplit("/", 1)[-1] for image in predicted_images}
    if truth_images & predicted_images or {image.rsplit("/", 1)[-1] for image in truth_images} & predicted_names:
        return
    raise CocoFormatError(
        f"the ground truth {gt_path} and the predictions {pred_path} share no image (the ground truth has e.g. "
        f"{min(truth_images)!r}, the predictions {min(predicted_images)!r}); images match by their path relative to "
        f"each file, or by file name when it is unique"
    )


def _unique_file_names(best: dict[tuple[str, str], Prediction]) -> dict[tuple[str, str], tuple[str, str]]:
    images_by_name: dict[str, set[str]] = {}
    for image, _ in best:
        images_by_name.setdefault(image.rsplit("/", 1)[-1], set()).add(image)
    return {
        (image.rsplit("/", 1)[-1], expression): (image, expression)
        for image, expression in best
        if len(images_by_name[image.rsplit("/", 1)[-1]]) == 1
    }


def _lookup(truth: GroundTruth, best: dict, by_file_name: dict) -> tuple[str, str] | None:
    image, expression = normalise_image_path(truth.image), normalise_expression(truth.expression)
    if (image, expression) in best:
        return image, expression
    return by_file_name.get((image.rsplit("/", 1)[-1], expression))


def _score(truth: GroundTruth, prediction: Prediction | None) -> SampleResult:
    if prediction is None:
        union = float(mask_utils.area(truth.segmentation)) if truth.segmentation is not None else None
        return SampleResult(truth, False, 0.0, 0.0 if union is not None else None, union)
    iou = box_iou(truth.box_xywh, prediction.box_xywh)
    if truth.segmentation is None:
        return SampleResult(truth, True, iou, None, None)
    if prediction.segmentation is None:
        return SampleResult(truth, True, iou, 0.0, float(mask_utils.area(truth.segmentation)))
    try:
        intersection, union = mask_overlap(truth.segmentation, prediction.segmentation)
    except CocoFormatError as exc:
        raise CocoFormatError(f"image {truth.image!r}, expression {truth.expression!r}: {exc}") from None
    return SampleResult(truth, True, iou, intersection, union)


def _split_metrics(split: str, samples: list[SampleResult]) -> SplitMetrics:
    count = len(samples)
    with_masks = [s for s in samples if s.mask_union is not None]
    total_union = sum(s.mask_union for s in with_masks)
    return SplitMetrics(
        split=split,
        count=count,
        missing=sum(not s.predicted for s in samples),
        accuracy=sum(s.hit for s in samples) / count if count else 0.0,
        mean_box_iou=sum(s.box_iou for s in samples) / count if count else 0.0,
        mask_count=len(with_masks),
        ciou=(
            (sum(s.mask_intersection for s in with_masks) / total_union if total_union > 0 else 0.0)
            if with_masks
            else None
        ),
        miou=sum(s.mask_iou for s in with_masks) / len(with_masks) if with_masks else None,
    )


def summarise_latency(predictions: Iterable[Prediction]) -> LatencySummary | None:
    """Latency distribution of the predictions that carry `latency_ms`; images/s over their summed time."""
    timed = [p for p in predictions if p.latency_ms is not None]
    if not timed:
        return None
    latencies = np.asarray([p.latency_ms for p in timed], dtype=np.float64)
    images = len({normalise_image_path(p.image) for p in timed})
    total_s = float(latencies.sum()) / 1000.0
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    return LatencySummary(
        count=len(timed),
        images=images,
        images_per_second=images / total_s if total_s > 0 else math.inf,
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        max_ms=float(latencies.max()),
    )


def format_report(report: EvaluationReport) -> str:
    """The per-split Markdown table `annotator eval` prints (percentages)."""
    lines = [
        "| split | expressions | no prediction | Acc@0.5 | mean IoU | masks | cIoU | mIoU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report.splits:
        ciou = "-" if row.ciou is None else f"{100 * row.ciou:.2f}"
        miou = "-" if row.miou is None else f"{100 * row.miou:.2f}"
        lines.append(
            f"| {row.split} | {row.count} | {row.missing} | {100 * row.accuracy:.2f} | "
            f"{100 * row.mean_box_iou:.2f} | {row.mask_count} | {ciou} | {miou} |"
        )
    return "\n".join(lines)


def format_latency(summary: LatencySummary) -> str:
    """The `--benchmark` Markdown table."""
    return "\n".join(
        [
            "| predictions | images | images/s | p50 ms | p90 ms | p99 ms | max ms |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {summary.count} | {summary.images} | {summary.images_per_second:.2f} | {summary.p50_ms:.1f} | "
            f"{summary.p90_ms:.1f} | {summary.p99_ms:.1f} | {summary.max_ms:.1f} |",
        ]
    )


# Reading files -------------------------------------------------------------------------------------------------


def read_ground_truth(path: str | Path) -> list[GroundTruth]:
    """Ground truth from RefCOCO-style JSONL or our RefCOCO-style refs export; `CocoFormatError` says where."""
    path = Path(path)
    if is_jsonl(path):
        return [truth for line_no, row in read_jsonl(path) for truth in _truth_from_row(row, path, line_no)]
    return _truth_from_refs(path, read_json(path))


def read_predictions(path: str | Path) -> list[Prediction]:
    """Predictions from our COCO export or JSONL; `CocoFormatError` says where."""
    path = Path(path)
    if is_jsonl(path):
        return [_prediction_from_row(row, f"{path}:{line_no}") for line_no, row in read_jsonl(path)]
    data = read_json(path)
    if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
        raise CocoFormatError(f"{path}: not a COCO file (needs 'images' and 'annotations')")
    images = _coco_images(data, path)
    predictions = []
    for annotation in listed(data, "annotations", path):
        where = f"{path}: annotation {annotation.get('id', '?') if isinstance(annotation, dict) else '?'}"
        if not isinstance(annotation, dict) or matchable_id(annotation.get("image_id")) not in images:
            raise CocoFormatError(f"{where}: no image with its image_id")
        image = images[annotation["image_id"]]
        extra = annotation.get("extra") if isinstance(annotation.get("extra"), dict) else {}
        row = dict(
            annotation,
            image=image["file_name"],
            width=image.get("width"),
            height=image.get("height"),
            segmentation=None if annotation.get("box_only") else annotation.get("segmentation"),
            latency_ms=annotation.get("latency_ms", extra.get("latency_ms")),
        )
        predictions.append(_prediction_from_row(row, where))
    return predictions


def _truth_from_row(row: dict, path: Path, line_no: int) -> list[GroundTruth]:
    where = f"{path}:{line_no}"
    image = _required_str(row, "image", where)
    expressions = checked_texts(row["expressions"] if "expressions" in row else [row.get("expression")], where)
    box = _box(row.get("bbox"), where)
    segmentation = None
    if row.get("segmentation") is not None:
        size = _image_size(row, path.parent / image, where)
        segmentation = _rle(row["segmentation"], size, where)
    split = str(row.get("split", ALL_SPLITS))
    return [GroundTruth(image, e, box, segmentation, split) for e in expressions]


def _truth_from_refs(path: Path, refs: Any) -> list[GroundTruth]:
    if isinstance(refs, dict) and "refs" in refs:
        instances_path = path.parent / str(refs.get("instances", "instances.json"))
        refs = refs["refs"]
    else:
        instances_path = path.parent / "instances.json"
    if not isinstance(refs, list):
        raise CocoFormatError(f"{path}: expected RefCOCO-style refs (a list, or an object with 'refs') or JSONL")
    instances = read_json(instances_path)
    if not isinstance(instances, dict) or "annotations" not in instances or "images" not in instances:
        raise CocoFormatError(f"{instances_path}: not a COCO instances file (needs 'images' and 'annotations')")
    images = _coco_images(instances, instances_path)
    entries = listed(instances, "annotations", instances_path)
    annotations = {a["id"]: a for a in entries if isinstance(a, dict) and matchable_id(a.get("id")) is not None}
    truths = []
    for index, ref in enumerate(refs):
        where = f"{path}: ref {ref.get('ref_id', index) if isinstance(ref, dict) else index}"
        if not isinstance(ref, dict) or matchable_id(ref.get("ann_id")) not in annotations:
            raise CocoFormatError(f"{where}: its ann_id is not in {instances_path.name}")
        annotation = annotations[ref["ann_id"]]
        image = images.get(matchable_id(annotation.get("image_id")))
        if image is None:
            raise CocoFormatError(f"{where}: annotation {ref['ann_id']} has no image")
        box = _box(annotation.get("bbox"), where)
        segmentation = None
        if annotation.get("segmentation"):
            segmentation = _rle(annotation["segmentation"], (image.get("height"), image.get("width")), where)
        texts = sentence_texts(ref.get("sentences") or [], where)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise CocoFormatError(f"{where}: no sentences")
        image_path = Path(str(image["file_name"]))
        relative = (
            image_path.as_posix()
            if instances_path.parent == path.parent
            else (instances_path.parent / image_path).as_posix()
        )
        truths.extend(GroundTruth(relative, t, box, segmentation, str(ref.get("split", ALL_SPLITS))) for t in texts)
    return truths


def _coco_images(data: dict, path: Path) -> dict[Any, dict]:
    images = {}
    for image in listed(data, "images", path):
        named = isinstance(image, dict) and isinstance(image.get("file_name"), str)
        if not named or matchable_id(image.get("id")) is None:
            raise CocoFormatError(f"{path}: image entry without 'id' and 'file_name': {str(image)[:80]}")
        images[image["id"]] = image
    return images


def _prediction_from_row(row: dict, where: str) -> Prediction:
    image = _required_str(row, "image", where)
    expression = _required_str(row, "expression", where)
    box = _box(row.get("bbox"), where)
    segmentation = None
    if row.get("segmentation"):
        size = (row.get("height"), row.get("width"))
        segmentation = _rle(row["segmentation"], size, where)
    latency = row.get("latency_ms")
    return Prediction(
        image=image,
        expression=expression,
        box_xywh=box,
        segmentation=segmentation,
        score=_number(row.get("score", 0.0) or 0.0, "score", where),
        latency_ms=None if latency is None else _number(latency, "latency_ms", where),
    )


def _number(value: Any, key: str, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise CocoFormatError(f"{where}: '{key}' must be a number, got {str(value)[:40]!r}") from None


def _required_str(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise CocoFormatError(f"{where}: needs '{key}' (a non-empty string)")
    return value


def _box(value: Any, where: str) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in value)
    except (TypeError, ValueError):
        raise CocoFormatError(f"{where}: 'bbox' must be [x, y, w, h] numbers, got {value!r}") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
        raise CocoFormatError(f"{where}: 'bbox' must be finite with w, h >= 0, got {value!r}")
    return x, y, w, h


def _image_size(row: dict, image_path: Path, where: str) -> tuple[int | None, int | None]:
    if row.get("width") is not None and row.get("height") is not None:
        try:
            height, width = int(row["height"]), int(row["width"])
        except (TypeError, ValueError, OverflowError):
            height = width = 0
        if height <= 0 or width <= 0:
            raise CocoFormatError(f"{where}: 'width' and 'height' must be whole numbers of pixels")
        return height, width
    if isinstance(row.get("segmentation"), dict):
        return None, None
    try:
        width, height = image_size(image_path)
    except ImageLoadError as exc:
        raise CocoFormatError(
            f"{where}: polygon segmentation needs 'width'/'height' or a readable image ({exc})"
        ) from exc
    return int(height), int(width)


def _rle(segmentation: Any, size_hw: tuple[Any, Any], where: str) -> Rle:
    """Any COCO segmentation (polygons, RLE with list or string counts) -> compressed RLE."""
    try:
        if isinstance(segmentation, dict):
            height, width = (int(v) for v in segmentation["size"])
            counts = segmentation["counts"]
            if height < 0 or width < 0:
                raise ValueError(f"size {[height, width]} is negative")
            if isinstance(counts, list):
                return mask_utils.frPyObjects(segmentation, height, width)
            if not isinstance(counts, (str, bytes)):
                raise ValueError("'counts' must be a list of run lengths or a compressed string")
            rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
            mask_utils.area(rle)
            return rle
        height, width = size_hw
        if height is None or width is None:
            raise ValueError("polygons need the image's width and height")
        polygons = [list(map(float, p)) for p in segmentation]
        if not polygons or any(len(p) < 6 or len(p) % 2 for p in polygons):
            raise ValueError("each polygon needs at least three x, y pairs")
        return mask_utils.merge(mask_utils.frPyObjects(polygons, int(height), int(width)))
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise CocoFormatError(f"{where}: unreadable 'segmentation' ({exc})") from exc
