"""The REFER distribution of RefCOCO, RefCOCO+ and RefCOCOg as people have it on disk, read without running code.

Layout (what the REFER toolkit downloads): `DATA_DIR/<dataset>/refs(<split_by>).p` with `instances.json` beside
it, and the COCO train2014 images in `DATA_DIR/images/train2014/`, `DATA_DIR/train2014/` or REFER's own
`DATA_DIR/images/mscoco/images/train2014/` (or wherever `images` says). The datasets come split by `unc`
(RefCOCO, RefCOCO+), `umd` or `google` (RefCOCOg).

The refs are a Python pickle: a list of dicts (`ref_id`, `ann_id`, `image_id`, `category_id`, `split`,
`sentences` [{`sent`, `raw`, `tokens`, `sent_id`}], `sent_ids`, `file_name`). A pickle can run any code while it
loads, so it is read by `PlainUnpickler`, whose `find_class` refuses every name: only the pickle opcodes of plain
containers and scalars work, and a pickle that names any callable or class is refused before it is called. A JSON
conversion of the same list (`refs(<split_by>).json`, or `refs.json`) is read too. Python 2 byte strings (the
original files) are decoded as UTF-8.

Expressions are each ref's `sentences[*].sent`; the target's box and mask are its annotation in `instances.json`
(`bbox` [x, y, w, h]; `segmentation` as COCO polygons or RLE, converted where it is scored). Failures are one
`CocoFormatError` (files) or `ImageLoadError` (images) naming the path and what to do.
"""

from __future__ import annotations

import io
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from annotator.errors import CocoFormatError, ImageLoadError
from annotator.jsonl import listed, read_json

DATASETS = ("refcoco", "refcoco+", "refcocog")
SPLIT_BYS = ("unc", "umd", "google")
SPLITS = ("train", "val", "testA", "testB", "test")
DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
IMAGE_FOLDERS = ("images/train2014", "train2014", "images/mscoco/images/train2014")
COCO_TRAIN_NAME = "COCO_train2014_{:012d}.jpg"
_PLAIN = (str, int, float, bool, type(None))


class RefusedName(pickle.UnpicklingError):
    """A pickle names a global (a callable or a class), which `PlainUnpickler` never looks up."""


class PlainUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global name: a pickle of plain lists, dicts, tuples, strings and numbers
    loads; one that names any callable or class (`os.system` through `__reduce__`, a custom class) is refused
    before anything is looked up, so nothing in it runs."""

    def find_class(self, module: str, name: str) -> Any:
        raise RefusedName(f"it names {module}.{name}")


def load_plain_pickle(path: Path) -> Any:
    """The plain data in a pickle file (Python 2 byte strings decoded as UTF-8); `CocoFormatError` naming the file
    for anything else."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CocoFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        data = PlainUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except RefusedName as exc:
        raise CocoFormatError(
            f"{path}: refused: {exc}; only plain lists, dicts, strings and numbers are read from a pickle (loading "
            f"anything else can run code); use the file from the REFER distribution or a JSON conversion of it"
        ) from None
    except Exception as exc:  # whatever the unpickler trips on, the file is at fault
        raise CocoFormatError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    try:
        return _as_text(data)
    except RecursionError:
        raise CocoFormatError(f"{path}: nested too deeply to read") from None
    except RefusedName as exc:
        raise CocoFormatError(f"{path}: refused: {exc}; only lists, dicts, strings and numbers are read") from None


def _as_text(value: Any) -> Any:
    """`value` with every byte string decoded (UTF-8, else Latin-1) and tuples as lists."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    if isinstance(value, dict):
        return {_as_text(key): _as_text(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_text(item) for item in value]
    if isinstance(value, _PLAIN):
        return value
    raise RefusedName(f"it holds a {type(value).__name__}")


@dataclass(frozen=True)
class ReferRef:
    """One referred object: its annotation `ann_id` on image `image_id`, its `split` and its expressions."""

    ref_id: int | str
    ann_id: int | str
    image_id: int | str
    split: str
    sentences: tuple[str, ...]


@dataclass(frozen=True)
class ReferImage:
    """A COCO image: `file_name` relative to the images folder, size in pixels."""

    image_id: int | str
    file_name: str
    width: int | None
    height: int | None


@dataclass(frozen=True)
class ReferObject:
    """A referred annotation: `box_xywh` in original pixels; `segmentation` as the instances file holds it (COCO
    polygons or RLE; converted, and checked, where masks are scored)."""

    ann_id: int | str
    box_xywh: tuple[float, float, float, float]
    segmentation: Any


@dataclass(frozen=True)
class ReferDataset:
    """One dataset of the REFER distribution with one split_by: its refs, their images and annotations."""

    name: str
    split_by: str
    refs_path: Path
    instances_path: Path
    refs: tuple[ReferRef, ...]
    images: Mapping[Any, ReferImage]
    objects: Mapping[Any, ReferObject]

    @property
    def label(self) -> str:
        return f"{self.name} ({self.split_by})"

    def splits(self) -> list[str]:
        """The splits the refs use: the standard ones in their usual order, then any others."""
        used = {ref.split for ref in self.refs}
        return [s for s in SPLITS if s in used] + sorted(used - set(SPLITS))

    def split_refs(self, split: str) -> list[ReferRef]:
        """The refs of `split` in file order; `CocoFormatError` listing the splits there when it has none."""
        refs = [ref for ref in self.refs if ref.split == split]
        if not refs:
            raise CocoFormatError(
                f"{self.refs_path}: {self.label} has no split {split!r}; it has {', '.join(self.splits())}"
            )
        return refs

    def split_images(self, refs: Sequence[ReferRef]) -> list[ReferImage]:
        """The images of `refs`, each once, in image-id order."""
        ids = sorted({ref.image_id for ref in refs}, key=lambda i: (isinstance(i, str), i))
        return [self.images[image_id] for image_id in ids]


def refs_file(data_dir: Path, dataset: str, split_by: str) -> Path:
    """`DATA_DIR/<dataset>/refs(<split_by>).p`, else its `.json` conversion, else `refs.json`; `CocoFormatError`
    saying what the folder holds when none is there."""
    folder = data_dir / dataset
    if not folder.is_dir():
        present = sorted(d.name for d in data_dir.iterdir() if d.is_dir() and d.name in DATASETS)
        there = f"it holds {', '.join(present)}" if present else f"it holds none of {', '.join(DATASETS)}"
        raise CocoFormatError(
            f"{data_dir}: no {dataset}/ folder ({there}); DATA_DIR is the folder with refcoco/, refcoco+/ and "
            f"refcocog/ from the REFER distribution"
        )
    for name in (f"refs({split_by}).p", f"refs({split_by}).json", "refs.json"):
        if (folder / name).is_file():
            return folder / name
    others = sorted(p.name for p in folder.glob("refs*") if p.is_file())
    hint = f"it has {', '.join(others)} (choose with --split-by)" if others else "it has no refs file"
    raise CocoFormatError(f"{folder}: no refs({split_by}).p or refs({split_by}).json; {hint}")


def load_refer(data_dir: str | Path, dataset: str, split_by: str | None = None) -> ReferDataset:
    """Read `dataset` (refcoco, refcoco+, refcocog) split by `split_by` (default: unc, or umd for RefCOCOg) from
    DATA_DIR: its refs and the images and annotations of `instances.json` that the refs use."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CocoFormatError(f"{data_dir}: no such folder (give the folder with refcoco/, refcoco+/, refcocog/)")
    split_by = split_by or DEFAULT_SPLIT_BY.get(dataset, "unc")
    path = refs_file(data_dir, dataset, split_by)
    data = load_plain_pickle(path) if path.suffix == ".p" else read_json(path)
    if isinstance(data, dict) and "refs" in data:
        data = listed(data, "refs", path)
    if not isinstance(data, list):
        raise CocoFormatError(f"{path}: expected a list of refs, got {type(data).__name__}")
    refs = tuple(_ref(entry, index, path) for index, entry in enumerate(data))
    if not refs:
        raise CocoFormatError(f"{path}: no refs")
    instances_path = path.parent / "instances.json"
    if not instances_path.is_file():
        raise CocoFormatError(f"{instances_path}: no such file (the REFER distribution has it beside {path.name})")
    instances = read_json(instances_path)
    if not isinstance(instances, dict) or "images" not in instances or "annotations" not in instances:
        raise CocoFormatError(f"{instances_path}: not a COCO instances file (needs 'images' and 'annotations')")
    wanted_objects = {ref.ann_id for ref in refs}
    objects = {}
    for entry in listed(instances, "annotations", instances_path):
        if isinstance(entry, dict) and _key(entry.get("id")) in wanted_objects:
            objects[entry["id"]] = _object(entry, instances_path)
    images = {}
    for entry in listed(instances, "images", instances_path):
        if isinstance(entry, dict) and _key(entry.get("id")) is not None:
            images[entry["id"]] = _image(entry, instances_path)
    for ref in refs:
        where = f"{path}: ref {ref.ref_id}"
        if ref.ann_id not in objects:
            raise CocoFormatError(f"{where}: its ann_id {ref.ann_id} is not in {instances_path.name}")
        if ref.image_id not in images:
            raise CocoFormatError(f"{where}: its image_id {ref.image_id} is not in {instances_path.name}")
    return ReferDataset(dataset, split_by, path, instances_path, refs, images, objects)


def images_folder(data_dir: str | Path, images: str | Path | None = None) -> Path:
    """The COCO train2014 folder: `images` when given, else the first of IMAGE_FOLDERS under DATA_DIR;
    `ImageLoadError` saying where it looked."""
    if images is not None:
        folder = Path(images)
        if not folder.is_dir():
            raise ImageLoadError(f"--images {folder}: no such folder")
        return folder
    candidates = [Path(data_dir) / name for name in IMAGE_FOLDERS]
    for folder in candidates:
        if folder.is_dir():
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise ImageLoadError(f"no COCO train2014 images folder: looked for {looked}; give it with --images DIR")


def check_images_present(folder: Path, file_names: Sequence[str], what: str) -> None:
    """`ImageLoadError` when any of `file_names` is not a file in `folder` (a wrong or half-copied images folder),
    naming how many, the first, and what to do."""
    names = list(dict.fromkeys(file_names))
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise ImageLoadError(
            f"{len(missing)} of the {len(names)} images of {what} are not in {folder} (the first: {missing[0]}); "
            f"give the COCO train2014 folder with --images DIR"
        )


def _key(value: Any) -> int | str | None:
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def _ref(entry: Any, index: int, path: Path) -> ReferRef:
    where = f"{path}: ref #{index}"
    if not isinstance(entry, dict):
        raise CocoFormatError(f"{where} is not a dict")
    where = f"{path}: ref {entry.get('ref_id', f'#{index}')}"
    ids = [_key(entry.get(key)) for key in ("ann_id", "image_id")]
    if None in ids:
        raise CocoFormatError(f"{where}: needs 'ann_id' and 'image_id'")
    sentences = entry.get("sentences")
    if not isinstance(sentences, list):
        raise CocoFormatError(f"{where}: 'sentences' must be a list of {{'sent': text}}")
    texts = []
    for sentence in sentences:
        text = (sentence.get("sent") or sentence.get("raw")) if isinstance(sentence, dict) else sentence
        if isinstance(text, str) and text.strip():
            texts.append(" ".join(text.split()))
    if not texts:
        raise CocoFormatError(f"{where}: no sentence with a 'sent' text")
    split = entry.get("split")
    if not isinstance(split, str) or not split:
        raise CocoFormatError(f"{where}: needs 'split' (train, val, testA, testB or test)")
    return ReferRef(entry.get("ref_id", index), ids[0], ids[1], split, tuple(texts))


def _object(entry: dict, path: Path) -> ReferObject:
    where = f"{path}: annotation {entry['id']}"
    try:
        box = tuple(float(v) for v in entry.get("bbox"))
    except (TypeError, ValueError):
        box = ()
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] < 0 or box[3] < 0:
        raise CocoFormatError(f"{where}: 'bbox' must be [x, y, w, h] finite numbers, got {entry.get('bbox')!r}")
    return ReferObject(entry["id"], box, entry.get("segmentation") or None)


def _image(entry: dict, path: Path) -> ReferImage:
    name = entry.get("file_name")
    if not isinstance(name, str) or not name.strip():
        if not isinstance(entry["id"], int):
            raise CocoFormatError(f"{path}: image {entry['id']} has no 'file_name'")
        name = COCO_TRAIN_NAME.format(entry["id"])
    sizes = [entry.get(key) for key in ("width", "height")]
    width, height = (v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None for v in sizes)
    return ReferImage(entry["id"], name, width, height)
