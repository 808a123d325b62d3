"""`annotator export`: write a folder's annotations as COCO (one file or a dataset folder), YOLO or Pascal VOC,
without the app."""

from __future__ import annotations

import argparse
from contextlib import suppress
from pathlib import Path
from typing import get_args

from annotator.commands.options import OneLineParser, existing_folder, help_formatter
from annotator.commands.runtime import EXIT_OK

FORMATS = ("coco", "coco-folder", "yolo", "voc")

EXPORT_HELP = """\
Write the annotations of FOLDER's project store in the format another tool reads:
  coco         one COCO instances JSON file (default: exports/<folder>.json)
  coco-folder  a COCO dataset folder as Datumaro and CVAT import it: annotations/instances_default.json and
               images/default/ (default: exports/<folder>-coco/)
  yolo         an Ultralytics YOLO dataset: data.yaml, images/train/, labels/train/*.txt (default:
               exports/<folder>-yolo/); --task segment writes mask outlines instead of boxes
  voc          Pascal VOC: Annotations/*.xml, SegmentationObject/ and SegmentationClass/ PNGs, ImageSets/Main,
               labelmap.txt (default: exports/<folder>-voc/)
Classes are the store's categories in the order they were made, the same in every export. A folder export
replaces an earlier export at the same place, all-or-nothing, and refuses a folder holding other files.

examples:
  annotator export ~/datasets/street-scenes
  annotator export ~/datasets/street-scenes --format yolo --task segment --out ~/yolo/street
  annotator export ~/datasets/street-scenes --format voc --statuses accepted,pending --images copy
"""


def _statuses(text: str) -> tuple[str, ...]:
    from annotator.project.records import Status

    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in get_args(Status)]
    if unknown or not names:
        problem = f"unknown status {unknown[0]!r}" if unknown else "give at least one status"
        raise argparse.ArgumentTypeError(f"{problem}; the statuses are {', '.join(get_args(Status))}")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The `annotator export` parser."""
    parser = OneLineParser(prog="annotator export", description=EXPORT_HELP, formatter_class=help_formatter)
    parser.add_argument("folder", type=existing_folder, metavar="FOLDER", help="the image folder")
    parser.add_argument("--format", choices=FORMATS, default="coco", help="what to write (default: coco)")
    parser.add_argument("--out", type=Path, metavar="PATH", help="file (coco) or folder to write")
    parser.add_argument("--store", type=Path, metavar="FILE", help="project store (default: the folder's own store)")
    parser.add_argument(
        "--statuses",
        type=_statuses,
        default=("accepted",),
        metavar="LIST",
        help="annotations to export, comma-separated: accepted, pending, rejected (default: accepted)",
    )
    parser.add_argument(
        "--segmentation", choices=("polygon", "rle"), default="polygon", help="COCO masks as (default: polygon)"
    )
    parser.add_argument("--task", choices=("detect", "segment"), default="detect", help="YOLO labels (default: detect)")
    parser.add_argument(
        "--images",
        choices=("link", "copy", "none"),
        default="link",
        help="images in a folder export: hard links (copies where links fail), copies, or none (default: link)",
    )
    parser.set_defaults(handler=run, prog=parser.prog, parser=parser)
    return parser


def default_output(folder: Path, export_format: str) -> Path:
    """Where an export goes without --out: under exports/, named after the folder."""
    from annotator.paths import EXPORTS_DIR

    name = folder.resolve().name
    return EXPORTS_DIR / (f"{name}.json" if export_format == "coco" else f"{name}-{export_format.split('-')[0]}")


def run(args: argparse.Namespace) -> int:
    """Write the export and print what went in; the exit code."""
    from annotator.commands.runtime import output_file
    from annotator.project.store import ProjectStore

    out = args.out.expanduser() if args.out else default_output(args.folder, args.format)
    if args.format == "coco":
        output_file(out, "COCO file")
    else:
        with suppress(OSError):  # a parent that is a file, or unwritable: the export says which
            out.parent.mkdir(parents=True, exist_ok=True)
    if args.store:
        store = ProjectStore.open(args.store, image_root=args.folder)
    else:
        store = ProjectStore.for_folder(args.folder)
    with store:
        report = _export(store, out, args)
    images_written = getattr(report, "image_files", 0)
    print(
        f"exported {report.annotations} annotation(s) on {report.images} image(s), {report.categories} "
        f"categories, as {args.format} to {out}" + (f" ({images_written} image files)" if images_written else "")
    )
    if report.skipped_images:
        left_out = ", ".join(report.skipped_images)
        print(f"left out {len(report.skipped_images)} image(s) missing or unreadable: {left_out}")
    return EXIT_OK


def _export(store, out: Path, args: argparse.Namespace):
    statuses = args.statuses
    if args.format == "coco":
        from annotator.project.coco import export_coco

        return export_coco(store, out, segmentation=args.segmentation, statuses=statuses)
    if args.format == "coco-folder":
        from annotator.project.coco_folder import export_coco_folder

        return export_coco_folder(store, out, images=args.images, segmentation=args.segmentation, statuses=statuses)
    if args.format == "yolo":
        from annotator.project.yolo import export_yolo

        return export_yolo(store, out, task=args.task, images=args.images, statuses=statuses)
    from annotator.project.voc import export_voc

    return export_voc(store, out, images=args.images, statuses=statuses)
