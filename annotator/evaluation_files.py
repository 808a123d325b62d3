"""Reading the files `annotator eval` scores: ground truth and predictions, each failure a `CocoFormatError`
naming the file and the line or entry.

Ground truth: RefCOCO-style JSONL, one referring expression per line: `image` (path relative to the file),
`expression` (or `expressions`, a list), `bbox` [x, y, w, h] in original pixels, optional `segmentation`
(COCO polygons or RLE; polygons need `width`/`height` on the line or a readable image), optional `split`.
Our RefCOCO-style export (a refs JSON whose entries hold `ann_id`, `image_id`, `sentences`, `split`, with its
instances file beside it) is read too.
The REFER distribution (RefCOCO, RefCOCO+, RefCOCOg as `annotator.project.refer` reads it) gives the ground
truth of a split through `refer_ground_truth`: one expression per sentence, image paths relative to the images
folder.
Predictions: our COCO export (annotations carry `expression` and `score`; a `box_only` annotation's rectangle
is not a mask; `latency_ms` may sit in `extra`, where `annotator prelabel` puts it) or JSONL lines with `image`,
`expression`, `bbox` [x, y, w, h], optional `segmentation`, `score`, `latency_ms`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from annotator.errors import CocoFormatError, ImageLoadError
from annotator.evaluation import ALL_SPLITS, GroundTruth, Prediction, Rle, normalise_image_path
from annotator.jsonl import checked_texts, is_jsonl, listed, matchable_id, read_json, read_jsonl, sentence_texts
from annotator.project.geometry import segmentation_to_rle
from annotator.project.images import image_size
from annotator.project.refer import ReferDataset, ReferRef


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


def refer_ground_truth(dataset: ReferDataset, refs: Sequence[ReferRef]) -> list[GroundTruth]:
    """One `GroundTruth` per sentence of `refs`: the ref's annotation box and mask (polygons or RLE, checked), the
    image's file name (relative to the images folder) and the ref's split."""
    truths = []
    for ref in refs:
        image, target = dataset.images[ref.image_id], dataset.objects[ref.ann_id]
        where = f"{dataset.instances_path}: annotation {ref.ann_id} (ref {ref.ref_id})"
        segmentation = None
        if target.segmentation is not None:
            segmentation = _rle(target.segmentation, (image.height, image.width), where)
        truths.extend(
            GroundTruth(image.file_name, text, target.box_xywh, segmentation, ref.split) for text in ref.sentences
        )
    return truths


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
    """Any COCO segmentation (polygons, RLE with list or string counts) -> compressed RLE, checked by
    `segmentation_to_rle`: polygon points finite and near the image, RLE counts covering exactly its size
    (pycocotools crashes, or loops for ever, on anything else)."""
    try:
        if isinstance(segmentation, dict):
            height, width = (int(v) for v in segmentation["size"])
            if height < 0 or width < 0:
                raise ValueError(f"size {[height, width]} is negative")
            counts = segmentation["counts"]
            if isinstance(counts, bytes):
                counts = counts.decode("ascii")
            if not isinstance(counts, (list, str)):
                raise ValueError("'counts' must be a list of run lengths or a compressed string")
            rle = segmentation_to_rle({"size": [height, width], "counts": counts}, height, width)
        else:
            height, width = size_hw
            if height is None or width is None:
                raise ValueError("polygons need the image's width and height")
            rle = segmentation_to_rle([list(map(float, p)) for p in segmentation], int(height), int(width))
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise CocoFormatError(f"{where}: unreadable 'segmentation' ({exc})") from exc
    return {"size": [rle.height, rle.width], "counts": rle.counts.encode("ascii")}
