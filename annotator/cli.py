"""The `annotator` command: the desktop app and the headless commands share one core.

Until the desktop app lands, `annotator` prints this help.
"""

from __future__ import annotations

import argparse
import sys

from annotator import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="annotator",
        description="Referring expressions to boxes and masks from a frozen LVLM's localization heads and SAM.",
    )
    parser.add_argument("--version", action="version", version=f"annotator {__version__}")
    parser.add_argument("folder", nargs="?", help="image folder to open in the desktop app")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    build_parser().print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
