"""What the commands' parsers share: a parser whose usage errors are one line, the argument types that check a
value as it is parsed, and the model, proposal and Ray options of the commands that run a model."""

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


def mask_model_name(text: str) -> str:
    """A mask model of `segmentation.catalog` by its name or its preset's ("sam-vit_b" is "vit_b"), or "auto"."""
    from annotator.segmentation.catalog import AUTO, MASK_MODELS, SAM_CHECKPOINTS

    sam_size = text.removeprefix("sam-")
    name = sam_size if sam_size in SAM_CHECKPOINTS else text
    if name not in (*MASK_MODELS, AUTO):
        raise argparse.ArgumentTypeError(f"unknown mask model {text!r}; use one of {', '.join(MASK_MODELS)}, {AUTO}")
    return name


def existing_path(text: str) -> Path:
    """A file or a folder that exists."""
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file or folder: {text}")
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
            "--model",
            required=True,
            metavar="ID|PATH",
            help="preset name, hub id or local checkpoint folder (`annotator models list`)",
        )
    else:
        group.add_argument(
            "--model",
            default=default_model,
            metavar="ID|PATH",
            help=f"preset name, hub id or local checkpoint folder (default: {default_model})",
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
    group.add_argument(
        "--max-pixels",
        type=positive_int,
        metavar="N",
        help="Qwen-VL models: most pixels an image is resized to (one token per 28 x 28 = 784 px for Qwen2-VL/2.5-VL, "
        "32 x 32 = 1024 px for Qwen3-VL; default: the checkpoint's, 16384 tokens for the Qwen releases); more "
        "pixels find smaller objects and cost more time; fixed grids (LLaVA-1.5) ignore it",
    )
    group.add_argument(
        "--min-pixels",
        type=positive_int,
        metavar="N",
        help="Qwen-VL models: fewest pixels an image is resized to (default: the checkpoint's); fixed grids ignore it",
    )
    if four_bit:
        group.add_argument(
            "--4bit",
            dest="load_in_4bit",
            action="store_true",
            help="text layers in 4-bit (bitsandbytes, CUDA only): about a quarter of their GPU memory",
        )


def add_proposal_options(parser: argparse.ArgumentParser) -> None:
    """What a proposal run asks besides the model: `--heads`, `--masks` (sam, coarse), the SAM model, `--prefetch`."""
    parser.add_argument(
        "--heads", type=existing_file, metavar="FILE", help="heads file (default: the known heads of --model)"
    )
    parser.add_argument(
        "--masks",
        nargs="?",
        const="sam",
        choices=("sam", "coarse"),
        help="add masks: 'sam' (default) prompts Segment Anything with the box; 'coarse' keeps the heads' region",
    )
    mask_model = parser.add_mutually_exclusive_group()
    mask_model.add_argument(
        "--mask-model",
        dest="sam_type",
        type=mask_model_name,
        metavar="NAME",
        help="mask model of --masks sam: vit_h, vit_l, vit_b (SAM), sam2.1-tiny, sam2.1-small, sam2.1-base-plus, "
        "sam2.1-large (SAM 2.1), sam-hq-vit_b, sam-hq-vit_l, sam-hq-vit_h (SAM-HQ), or auto: the one that fits the "
        "device (default: auto, sam2.1-tiny on a CPU, sam2.1-large on a GPU)",
    )
    mask_model.add_argument(
        "--sam-type", dest="sam_type", choices=("vit_h", "vit_l", "vit_b"), help="SAM size: --mask-model for SAM"
    )
    parser.set_defaults(sam_type="auto")
    parser.add_argument(
        "--sam-checkpoint", type=existing_file, metavar="FILE", help="SAM checkpoint (default: the user cache)"
    )
    parser.add_argument(
        "--prefetch",
        type=non_negative_int,
        default=2,
        metavar="N",
        help="images decoded ahead on a loader thread; 0 loads inline (default: 2)",
    )


def add_ray_options(parser: argparse.ArgumentParser, shards_default: str) -> None:
    """`--ray [ADDRESS]`, `--ray-actors`, `--ray-shards` (default described by `shards_default`), `--ray-shard-size`."""
    cluster = parser.add_argument_group("Ray cluster (pip install 'annotator[ray]')")
    cluster.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run on Ray Data: join the cluster at ADDRESS (ray://host:10001, host:6379, auto) or start a local one",
    )
    cluster.add_argument(
        "--ray-actors", type=positive_int, metavar="N", help="model actors (default: one per GPU or node)"
    )
    cluster.add_argument(
        "--ray-shards", type=Path, metavar="DIR", help=f"result shards, kept to resume (default: {shards_default})"
    )
    cluster.add_argument("--ray-shard-size", type=positive_int, metavar="N", help="images per shard (default: 64)")
