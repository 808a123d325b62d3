"""The `annotator` command: the desktop app and the headless commands share one core.

`annotator [FOLDER]` opens the desktop app; `annotator find-heads`, `annotator prelabel`, `annotator eval`,
`annotator models`, `annotator export` and `annotator import` run without a display (no Qt import on their
paths). Each command is a module of `annotator.commands` with its `build_parser()` and `run(args)`; this module
dispatches and keeps the error policy.

Error policy: a user error (a missing file, a malformed line, an unknown model, `--device cuda` without a GPU,
a bad flag) prints one line on stderr and exits 2, never a traceback; Ctrl-C exits 130 after the work already
committed is safe. Heavy libraries (torch, transformers, matplotlib) are imported inside the commands, so
`--help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from annotator import __version__
from annotator.commands import evaluate, export, find_heads, import_command, models, prelabel_command
from annotator.commands.options import OneLineParser, existing_folder, help_formatter
from annotator.commands.runtime import EXIT_INTERRUPTED, EXIT_USER_ERROR, fail
from annotator.errors import AnnotatorError
from annotator.labels.label_set import read_labels_file


MAIN_HELP = """\
commands:
  annotator [FOLDER]        open the desktop app (on FOLDER if given; --labels fixes its categories)
  annotator find-heads      discover a model's localization heads
  annotator prelabel        batch proposals for a folder, with progress and resume
  annotator eval            REC/RES metrics of predictions against ground truth
  annotator eval refcoco    reproduce a row of the paper's tables on RefCOCO, RefCOCO+, RefCOCOg
  annotator models          list, download, verify or remove the model presets
  annotator export          write COCO (a file or a dataset folder), YOLO or Pascal VOC for other tools
  annotator import          import COCO (CVAT, Datumaro, X-AnyLabeling) or labelme annotations into a project

Run 'annotator COMMAND --help' for a command's options and examples.

examples:
  annotator ~/datasets/street-scenes
  annotator ~/datasets/street-scenes --labels labels.txt
  annotator prelabel ~/datasets/street-scenes --expression "the bus" --masks
"""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: `annotator [FOLDER]` (the app) with the commands listed in its help."""
    parser = OneLineParser(
        prog="annotator",
        description="Referring expressions to boxes and masks from a frozen LVLM's localization heads and SAM.",
        epilog=MAIN_HELP,
        formatter_class=help_formatter,
    )
    parser.add_argument("--version", action="version", version=f"annotator {__version__}")
    parser.add_argument("folder", nargs="?", type=existing_folder, help="image folder to open in the desktop app")
    parser.add_argument(
        "--labels",
        metavar="FILE",
        type=Path,
        help="fix the project's categories to a labels file (labelme's labels.txt: one label a line, in order)",
    )
    return parser


COMMANDS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "find-heads": find_heads.build_parser,
    "prelabel": prelabel_command.build_parser,
    "eval": evaluate.build_parser,
    "models": models.build_parser,
    "export": export.build_parser,
    "import": import_command.build_parser,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `annotator` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "annotator"
    try:
        if argv and argv[0] in COMMANDS:
            parser = COMMANDS[argv[0]]()
            prog = parser.prog
            args = parser.parse_args(argv[1:])
            prog = getattr(args, "prog", prog)
            return args.handler(args)
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.labels is not None and args.folder is None:
            parser.error("--labels needs a FOLDER to open")
        labels = None if args.labels is None else read_labels_file(args.labels)
        return _run_app(args.folder, argv, labels)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USER_ERROR)
    except AnnotatorError as exc:
        return fail(prog, str(exc))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return fail(prog, f"{where}{exc.strerror or exc}")
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run_app(folder: Path | None, argv: list[str], labels: list[str] | None = None) -> int:
    try:
        from annotator.ui.app import run_app
    except ModuleNotFoundError as exc:
        if exc.name not in ("annotator.ui", "annotator.ui.app"):
            raise
        return fail(
            "annotator", "the desktop app is not installed yet; use 'annotator find-heads', 'prelabel' or 'eval'"
        )
    path = None if folder is None else str(folder)
    return run_app(path, argv) if labels is None else run_app(path, argv, labels=labels)


if __name__ == "__main__":
    sys.exit(main())
