"""REC and RES metrics as the paper reports them (docs/method.md), for `annotator eval`.

The files are read by `annotator.evaluation_files` (their formats are described there) into `GroundTruth` and
`Prediction` records, which this module scores.

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
from typing import Any, Iterable

import numpy as np
from pycocotools import mask as mask_utils

from annotator.errors import CocoFormatError

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
