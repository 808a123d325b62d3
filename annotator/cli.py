"""The `annotator` command: the desktop app and the headless commands share one core.

`annotator [FOLDER]` opens the desktop app; `annotator find-heads`, `annotator prelabel` and `annotator eval`
run without a display (no Qt import on their paths).

Error policy: a user error (a missing file, a malformed line, an unknown model, `--device cuda` without a GPU,
a bad flag) prints one line on stderr and exits 2, never a traceback; Ctrl-C exits 130 after the work already
committed is safe. Heavy libraries (torch, transformers, matplotlib) are imported inside the commands, so
`--help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from annotator import __version__
from annotator.errors import AnnotatorError

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _existing_file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}" if not path.exists() else f"not a file: {text}")
    return path


def _existing_folder(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {text}" if not path.exists() else f"not a folder: {text}")
    return path


EVAL_HELP = """\
REC and RES metrics as the paper reports them: Acc@0.5 (box IoU >= 0.5 is a hit) and mean box IoU; cIoU
(total intersection over total union) and mIoU (mean per-expression IoU) for masks; one row per split.

--gt: RefCOCO-style JSONL ({"image", "expression", "bbox": [x, y, w, h], optional "segmentation", "split"})
      or our RefCOCO-style refs export (instances.json beside it).
--pred: our COCO export (annotations with "expression" and "score") or JSONL lines
      {"image", "expression", "bbox": [x, y, w, h], optional "segmentation", "score", "latency_ms"}.

examples:
  annotator eval --gt val.jsonl --pred exports/photos.json
  annotator eval --gt refs.json --pred predictions.jsonl --benchmark
"""

MAIN_HELP = """\
commands:
  annotator [FOLDER]        open the desktop app (on FOLDER if given)
  annotator find-heads      discover a model's localization heads
  annotator prelabel        batch proposals for a folder, with progress and resume
  annotator eval            REC/RES metrics of predictions against ground truth

Run 'annotator COMMAND --help' for a command's options and examples.

examples:
  annotator ~/datasets/street-scenes
  annotator prelabel ~/datasets/street-scenes --expression "the bus" --masks
"""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: `annotator [FOLDER]` (the app) with the commands listed in its help."""
    parser = _OneLineParser(
        prog="annotator",
        description="Referring expressions to boxes and masks from a frozen LVLM's localization heads and SAM.",
        epilog=MAIN_HELP,
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action="version", version=f"annotator {__version__}")
    parser.add_argument("folder", nargs="?", type=_existing_folder, help="image folder to open in the desktop app")
    return parser


def build_eval_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="annotator eval", description=EVAL_HELP, formatter_class=_formatter)
    parser.add_argument("--gt", type=_existing_file, required=True, metavar="FILE", help="ground truth")
    parser.add_argument("--pred", type=_existing_file, required=True, metavar="FILE", help="predictions")
    parser.add_argument("--benchmark", action="store_true", help="also print images/s and the latency distribution")
    parser.set_defaults(handler=_run_eval)
    return parser


COMMANDS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "eval": build_eval_parser,
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
            return args.handler(args)
        args = build_parser().parse_args(argv)
        return _run_app(args.folder, argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USER_ERROR)
    except AnnotatorError as exc:
        return _fail(prog, str(exc))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(prog, f"{where}{exc.strerror or exc}")
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _fail(prog: str, message: str) -> int:
    """Print a user error as one line on stderr; the exit code is 2."""
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USER_ERROR


def _run_app(folder: Path | None, argv: list[str]) -> int:
    try:
        from annotator.ui.app import run_app
    except ModuleNotFoundError as exc:
        if exc.name not in ("annotator.ui", "annotator.ui.app"):
            raise
        return _fail("annotator", "the desktop app is not installed yet; use 'annotator find-heads', 'prelabel' or 'eval'")
    return run_app(None if folder is None else str(folder), argv)


# Commands --------------------------------------------------------------------------------------------------------


def _run_eval(args: argparse.Namespace) -> int:
    from annotator import evaluation

    truths = evaluation.read_ground_truth(args.gt)
    predictions = evaluation.read_predictions(args.pred)
    report = evaluation.evaluate(truths, predictions)
    print(evaluation.format_report(report))
    if report.unmatched_predictions:
        print(f"\n{report.unmatched_predictions} predicted expression(s) matched no ground truth.")
    if args.benchmark:
        summary = evaluation.summarise_latency(predictions)
        if summary is None:
            print("\n--benchmark: the predictions carry no latency_ms; nothing to report.")
        else:
            print()
            print(evaluation.format_latency(summary))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
