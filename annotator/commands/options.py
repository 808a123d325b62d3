"""What the commands' parsers share: a parser whose usage errors are one line, the argument types that check a
value as it is parsed, and the model options of every command that runs a model."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import NoReturn

from annotator.commands.runtime import EXIT_USER_ERROR


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def help_formatter(prog: str) -> argparse.HelpFormatter:
    """The help layout of every command: descriptions and examples as written, options in a narrow column."""
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def existing_file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}" if not path.exists() else f"not a file: {text}")
    return path


def existing_folder(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {text}" if not path.exists() else f"not a folder: {text}")
    return path


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def non_empty_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a name, got an empty one")
    return text.strip()


def device_name(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use auto, cpu, cuda, cuda:N or mps")
    return text


def add_model_options(parser: argparse.ArgumentParser, default_model: str | None, four_bit: bool = False) -> None:
    """`--model` (required when there is no `default_model`), `--device`, `--dtype` and, with `four_bit`, `--4bit`."""
    group = parser.add_argument_group("model")
    if default_model is None:
        group.add_argument(
            "--model", required=True, metavar="ID|PATH", help="hub id or local folder of a LLaVA-1.5 checkpoint"
        )
    else:
        group.add_argument(
            "--model",
            default=default_model,
            metavar="ID|PATH",
            help=f"hub id or local LLaVA-1.5 folder (default: {default_model})",
        )
    group.add_argument(
        "--device", type=device_name, default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N or mps"
    )
    group.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="auto: bfloat16 on GPU, float32 on CPU",
    )
    if four_bit:
        group.add_argument(
            "--4bit",
            dest="load_in_4bit",
            action="store_true",
            help="text layers in 4-bit (bitsandbytes, CUDA only): about a quarter of their GPU memory",
        )
