"""Pascal VOC export, the layout of VOC2012 (and of Datumaro's `voc` format):

    FOLDER/Annotations/<stem>.xml             size, and per object its name and bndbox (1-based pixel integers)
    FOLDER/JPEGImages/<stem><suffix>          the images, hard links (copies where links fail) or copies
    FOLDER/SegmentationObject/<stem>.png      palette PNG of instance ids (1.. in the order of the XML objects)
    FOLDER/SegmentationClass/<stem>.png       palette PNG of class ids (1.. in `labelmap.txt` order), 0 background
    FOLDER/ImageSets/Main/default.txt         every stem; ImageSets/Segmentation/default.txt those with masks
    FOLDER/labelmap.txt                       background and the store's categories by id ascending, with colours

The PNGs are written only for images with at least one mask; a box-only object has no pixels there (its
instance id is skipped, so ids still follow the XML order). Folders of the project are joined with '__' in a
stem, VOC being flat. A bndbox covers the pixels the box touches: xmin = round(x0) + 1, xmax = round(x1).
Written all-or-nothing.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from annotator.errors import ExportError
from annotator.project.coco import in_user_words
from annotator.project.folder_export import (
    ExportedImage,
    FolderExportReport,
    ImageMode,
    Progress,
    check_image_mode,
    exported_images,
    no_progress,
    ordered_categories,
    place_image,
    staged_folder,
    unique_stems,
)
from annotator.project.store import ProjectStore, Status

MAX_INDEX = 254
"""A VOC PNG holds ids 1..254 (0 is background, 255 the 'void' border)."""

SUBSET = "default"
_FOLDERS = ("Annotations", "ImageSets/Main", "ImageSets/Segmentation", "SegmentationObject", "SegmentationClass")


def voc_colormap(n: int = 256) -> list[tuple[int, int, int]]:
    """The VOC palette: colour i from the bits of i, as the VOC devkit builds it."""
    colours = []
    for index in range(n):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return colours


def export_voc(
    store: ProjectStore,
    folder: str | os.PathLike,
    *,
    images: ImageMode = "link",
    statuses: tuple[Status, ...] = ("accepted",),
    progress: Progress | None = None,
) -> FolderExportReport:
    """Write the store as a Pascal VOC folder (see the module docstring); ExportError if it cannot be written.
    `progress`: one step per image (see `folder_export`)."""
    check_image_mode(images)
    folder = Path(folder)
    progress = progress or no_progress
    categories = ordered_categories(store)
    if len(categories) > MAX_INDEX:
        raise ExportError(
            f"cannot write a VOC folder {folder}: VOC masks hold {MAX_INDEX} classes, not {len(categories)}"
        )
    bad = [c.name for c in categories if ":" in c.name or "\n" in c.name]
    if bad:
        raise ExportError(
            f"cannot write a VOC folder {folder}: the category {bad[0]!r} has a ':' or a line break, which "
            "labelmap.txt cannot hold; rename it"
        )
    classes = {category.id: index + 1 for index, category in enumerate(categories)}
    palette = [value for colour in voc_colormap() for value in colour]
    with in_user_words(store), staged_folder(folder, "VOC folder") as stage:
        selected, skipped = exported_images(store, statuses)
        stems = unique_stems([image.record.path for image in selected], flat=True)
        for sub in _FOLDERS:
            (stage / sub).mkdir(parents=True)
        names = {category.id: category.name for category in categories}
        placed = masks = annotations = 0
        segmented = []
        for done, image in enumerate(selected):
            progress(done, len(selected))
            stem = stems[image.record.path]
            file_name = f"{stem}{PurePosixPath(image.record.path).suffix}"
            has_mask = any(ann.rle is not None for ann in image.annotations)
            if len(image.annotations) > MAX_INDEX and has_mask:
                raise ExportError(
                    f"cannot write a VOC folder {folder}: {image.record.path} has more than {MAX_INDEX} objects"
                )
            xml = _annotation_xml(image, file_name, names, has_mask)
            xml.write(stage / "Annotations" / f"{stem}.xml", encoding="unicode")
            if has_mask:
                objects, labels = _mask_pngs(image, classes)
                for array, sub in ((objects, "SegmentationObject"), (labels, "SegmentationClass")):
                    png = Image.fromarray(array, mode="P")
                    png.putpalette(palette)
                    png.save(stage / sub / f"{stem}.png")
                segmented.append(stem)
            masks += sum(ann.rle is not None for ann in image.annotations)
            annotations += len(image.annotations)
            placed += place_image(image.source, stage / "JPEGImages" / file_name, images)
        (stage / "ImageSets/Main" / f"{SUBSET}.txt").write_text("".join(f"{stems[i.record.path]}\n" for i in selected))
        (stage / "ImageSets/Segmentation" / f"{SUBSET}.txt").write_text("".join(f"{s}\n" for s in segmented))
        (stage / "labelmap.txt").write_text(_labelmap([c.name for c in categories]), encoding="utf-8")
        progress(len(selected), len(selected))
    return FolderExportReport(folder, "voc", len(selected), annotations, len(categories), masks, placed, tuple(skipped))


def _labelmap(names: list[str]) -> str:
    """Datumaro's labelmap: `name:r,g,b:parts:actions`, background first, colours of the VOC palette."""
    colours = voc_colormap(len(names) + 1)
    lines = ["# label:color_rgb:parts:actions"]
    lines += [f"{name}:{','.join(map(str, colours[i]))}::" for i, name in enumerate(["background", *names])]
    return "\n".join(lines) + "\n"


def _annotation_xml(image: ExportedImage, file_name: str, names: dict[int, str], segmented: bool) -> ET.ElementTree:
    width, height = image.record.width, image.record.height
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = file_name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "1" if segmented else "0"
    for ann in image.annotations:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = names[ann.category_id]
        for tag, value in (("pose", "Unspecified"), ("truncated", "0"), ("difficult", "0")):
            ET.SubElement(obj, tag).text = value
        box = ET.SubElement(obj, "bndbox")
        x0, y0, x1, y1 = ann.box_xyxy
        corners = (
            ("xmin", min(max(round(x0) + 1, 1), width)),
            ("ymin", min(max(round(y0) + 1, 1), height)),
            ("xmax", min(max(round(x1), 1), width)),
            ("ymax", min(max(round(y1), 1), height)),
        )
        for tag, value in corners:
            ET.SubElement(box, tag).text = str(value)
    ET.indent(root)
    return ET.ElementTree(root)


def _mask_pngs(image: ExportedImage, classes: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(instance ids, class ids) of an image's masks, later objects painted over earlier ones."""
    shape = (image.record.height, image.record.width)
    objects = np.zeros(shape, dtype=np.uint8)
    labels = np.zeros(shape, dtype=np.uint8)
    for instance, ann in enumerate(image.annotations, start=1):
        if ann.rle is None:
            continue
        mask = ann.rle.to_mask()
        objects[mask] = instance
        labels[mask] = classes[ann.category_id]
    return objects, labels
