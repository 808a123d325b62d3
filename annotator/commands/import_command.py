"""`annotator import`: bring annotations made in another tool (a COCO file from CVAT, Datumaro, X-AnyLabeling,
labelme2coco; labelme JSON files) into a folder's project store, and say what was imported, skipped and why."""

from __future__ import annotations

import argparse
from pathlib import Path

from annotator.commands.options import OneLineParser, existing_folder, existing_path, help_formatter
from annotator.commands.runtime import EXIT_OK

IMPORT_HELP = """\
Imports the annotations of FILE into the project store of the image folder DIR, in one transaction (all or
nothing), with source "imported". FILE is a COCO instances file (as CVAT, Datumaro, X-AnyLabeling or
labelme2coco write it), a labelme / X-AnyLabeling JSON file, or a folder of those. Images are matched by file
name under DIR; categories by name (added when an annotation uses them). Entries that cannot be imported are
skipped and listed with the reason (the first few; all with --verbose).

Crowd regions (iscrowd 1) are not instances and are skipped, except in files from CVAT (which writes every brush
mask as crowd RLE) or with --crowd-as-instances.

examples:
  annotator import instances_default.json --folder ~/datasets/street-scenes
  annotator import coco.json --folder photos --crowd-as-instances --status pending
  annotator import ~/labelme-work --folder photos
"""


def build_parser() -> argparse.ArgumentParser:
    """The `annotator import` parser."""
    parser = OneLineParser(prog="annotator import", description=IMPORT_HELP, formatter_class=help_formatter)
    parser.add_argument("file", type=existing_path, metavar="FILE", help="COCO or labelme JSON file, or a folder")
    parser.add_argument("--folder", type=existing_folder, metavar="DIR", required=True, help="the image folder")
    parser.add_argument("--store", type=Path, metavar="FILE", help="project store (default: the folder's own store)")
    parser.add_argument(
        "--crowd-as-instances", action="store_true", help="import crowd (iscrowd 1) RLE masks as instance masks"
    )
    parser.add_argument(
        "--status",
        choices=("accepted", "pending"),
        default="accepted",
        help="status of annotations whose file gives none (default: accepted)",
    )
    parser.add_argument("--verbose", action="store_true", help="list every skipped entry and why")
    parser.set_defaults(handler=run, prog=parser.prog, parser=parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Import FILE into the store and print the summary; the exit code."""
    from annotator.project.imports import import_annotations
    from annotator.project.import_summary import summary_lines
    from annotator.project.store import ProjectStore

    store = (
        ProjectStore.open(args.store, image_root=args.folder) if args.store else ProjectStore.for_folder(args.folder)
    )
    with store:
        report = import_annotations(
            store, args.file, default_status=args.status, crowd_as_instances=args.crowd_as_instances
        )
    print("\n".join(summary_lines(report, verbose=args.verbose)))
    return EXIT_OK
