"""Calibration pairs for head discovery (`annotator find-heads`), read from files or drawn as synthetic scenes.

Files (image paths relative to the file, or to `image_root` for COCO-style files):
- JSONL: one `{"image": path, "expression": text}` per line (or `"expressions": [...]`, one pair each);
- a COCO file whose annotations carry `expression` / `expressions` / `sentences` (our export does);
- a RefCOCO-style refs file (a list of refs with `image_id` and `sentences`, or an object with `refs`) whose
  instances file (`instances.json`, or the name under the object's `instances` key) lies beside it;
- the REFER distribution (a DATA_DIR with refcoco/, refcoco+/, refcocog/, read by `annotator.project.refer`):
  `refer_pairs` gives one pair per sentence of a split's refs, the image in the COCO train2014 folder.
Only the pairs' paths and texts are held in memory; images are decoded one at a time as the samples stream,
and `attention_samples` yields one `[L, H, h, w]` map at a time into `select_localization_heads`, which keeps
scalars per head, never the maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from annotator.errors import CocoFormatError, ImageLoadError
from annotator.synthetic.scenes import generate_scenes
from annotator.jsonl import checked_texts, is_jsonl, listed, matchable_id, read_json, read_jsonl, sentence_texts
from annotator.project.images import load_image
from annotator.project.refer import ReferDataset, ReferRef


@dataclass(frozen=True)
class CalibrationPair:
    """One image/expression pair: `image_path` resolved against the file's folder; `where` is 'file:line'."""

    image_path: Path
    expression: str
    where: str


@dataclass(frozen=True)
class CalibrationImage:
    """A decoded calibration sample: RGB uint8 `image` (EXIF applied) and its expression."""

    image: np.ndarray
    expression: str
    where: str


def read_calibration(path: str | Path, image_root: str | Path | None = None) -> list[CalibrationPair]:
    """Every pair of a calibration file, in file order; `CocoFormatError` names the file and line or entry."""
    path = Path(path)
    if is_jsonl(path):
        pairs = [pair for line_no, row in read_jsonl(path) for pair in _pairs_from_row(row, path, line_no)]
    else:
        data = read_json(path)
        root = Path(image_root) if image_root is not None else path.parent
        if isinstance(data, dict) and "annotations" in data and "images" in data:
            pairs = _pairs_from_coco(data, path, root)
        elif isinstance(data, list) or (isinstance(data, dict) and "refs" in data):
            pairs = _pairs_from_refs(data, path, image_root)
        else:
            raise CocoFormatError(f"{path}: not a calibration file (JSONL lines, a COCO file or RefCOCO-style refs)")
    if not pairs:
        raise CocoFormatError(f"{path}: no image/expression pairs")
    return pairs


def refer_pairs(dataset: ReferDataset, refs: Sequence[ReferRef], images_folder: Path) -> list[CalibrationPair]:
    """One pair per sentence of `refs`, in file order, the image in `images_folder`."""
    pairs = []
    for ref in refs:
        image_path = images_folder / dataset.images[ref.image_id].file_name
        where = f"{dataset.refs_path}: ref {ref.ref_id}"
        pairs.extend(CalibrationPair(image_path, text, where) for text in ref.sentences)
    return pairs


def choose_pairs(pairs: Sequence[CalibrationPair], count: int, seed: int) -> list[CalibrationPair]:
    """`count` pairs drawn without replacement with `seed` (all of them if there are fewer), kept in file order."""
    if count >= len(pairs):
        return list(pairs)
    chosen = np.sort(np.random.default_rng(seed).choice(len(pairs), size=count, replace=False))
    return [pairs[int(i)] for i in chosen]


def load_pairs(pairs: Iterable[CalibrationPair], skipped: list[str]) -> Iterator[CalibrationImage]:
    """Decode the pairs' images one at a time; an unreadable image appends 'where: reason' to `skipped`."""
    for pair in pairs:
        try:
            image = load_image(pair.image_path)
        except ImageLoadError as exc:
            skipped.append(f"{pair.where}: {exc}")
            continue
        yield CalibrationImage(image, pair.expression, pair.where)


def synthetic_images(count: int, seed: int) -> Iterator[CalibrationImage]:
    """`count` seeded synthetic scenes (coloured shapes, the target named by its colour) as calibration samples."""
    for index, scene in enumerate(generate_scenes(seed, count)):
        yield CalibrationImage(scene.image, scene.expression, f"synthetic scene {index} (seed {seed})")


def attention_samples(engine: Any, images: Iterable[CalibrationImage]) -> Iterator[np.ndarray]:
    """The last-token image attention of every head, `[L, H, h, w]` float32, one sample at a time."""
    for sample in images:
        yield np.asarray(engine.image_attention(sample.image, sample.expression), dtype=np.float32)


def _pairs_from_row(row: dict, path: Path, line_no: int) -> list[CalibrationPair]:
    where = f"{path}:{line_no}"
    image = row.get("image")
    if not isinstance(image, str) or not image.strip():
        raise CocoFormatError(f"{where}: needs 'image' (a path relative to the file)")
    texts = row["expressions"] if "expressions" in row else [row.get("expression")]
    return [CalibrationPair(path.parent / image, text, where) for text in checked_texts(texts, where)]


def _pairs_from_coco(data: dict, path: Path, root: Path) -> list[CalibrationPair]:
    files = _file_names(listed(data, "images", path))
    pairs = []
    for index, annotation in enumerate(listed(data, "annotations", path)):
        if not isinstance(annotation, dict):
            raise CocoFormatError(f"{path}: annotation #{index} is not an object")
        where = f"{path}: annotation {annotation.get('id', index)}"
        file_name = files.get(matchable_id(annotation.get("image_id")))
        if not isinstance(file_name, str):
            raise CocoFormatError(f"{where}: its image_id has no image with a file_name")
        pairs.extend(CalibrationPair(root / file_name, text, where) for text in _annotation_texts(annotation, where))
    if not pairs:
        raise CocoFormatError(f"{path}: no annotation carries an expression")
    return pairs


def _pairs_from_refs(data: Any, path: Path, image_root: str | Path | None) -> list[CalibrationPair]:
    refs = listed(data, "refs", path) if isinstance(data, dict) else data
    instances_name = data.get("instances", "instances.json") if isinstance(data, dict) else "instances.json"
    if not isinstance(instances_name, str) or not instances_name.strip():
        raise CocoFormatError(f"{path}: 'instances' must name the instances file beside it")
    instances_path = path.parent / instances_name
    instances = read_json(instances_path)
    if not isinstance(instances, dict) or not isinstance(instances.get("images"), list):
        raise CocoFormatError(f"{instances_path}: not a COCO instances file (needs 'images')")
    root = Path(image_root) if image_root is not None else instances_path.parent
    files = _file_names(instances["images"])
    pairs = []
    for index, ref in enumerate(refs):
        where = f"{path}: ref {ref.get('ref_id', index) if isinstance(ref, dict) else index}"
        if not isinstance(ref, dict) or not isinstance(files.get(matchable_id(ref.get("image_id"))), str):
            raise CocoFormatError(f"{where}: its image_id is not in {instances_path.name}")
        file_name = files[ref["image_id"]]
        pairs.extend(CalibrationPair(root / file_name, text, where) for text in _annotation_texts(ref, where))
    return pairs


def _file_names(images: list) -> dict[Any, Any]:
    """Image id -> file_name of the image entries whose id can be matched."""
    return {
        image["id"]: image.get("file_name")
        for image in images
        if isinstance(image, dict) and matchable_id(image.get("id")) is not None
    }


def _annotation_texts(entry: dict, where: str) -> list[str]:
    if "expressions" in entry:
        return checked_texts(entry["expressions"], where)
    if "sentences" in entry:
        return checked_texts(sentence_texts(entry["sentences"], where), where)
    if "expression" in entry:
        return checked_texts([entry["expression"]], where)
    return []
