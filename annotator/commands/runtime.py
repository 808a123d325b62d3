"""What the commands share when they run: the exit codes and the one-line error, the default model, the checks
made before a model loads (the model reference, the device, the output file) and the reports of downloads and
skipped images."""

from __future__ import annotations

import sys
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from annotator.errors import ModelUnavailable

if TYPE_CHECKING:
    import torch

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
DEFAULT_MODEL = "llava-hf/llava-1.5-7b-hf"


def fail(prog: str, message: str) -> int:
    """Print a user error as one line on stderr; the exit code is 2."""
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USER_ERROR


def byte_progress() -> Callable[[int, int | None], None]:
    """A progress callback printing bytes done on one stderr line, at most once per percent."""
    from annotator.models.hub import format_bytes

    last = [-1]

    def report(done: int, total: int | None) -> None:
        step = done * 100 // total if total else done >> 24
        if step != last[0]:
            last[0] = step
            of = f" of {format_bytes(total)} ({step}%)" if total else ""
            print(f"\r{format_bytes(done)}{of}", end="", file=sys.stderr, flush=True)

    return report


def check_model_reference(model: str) -> None:
    """A model named by a path must be a model folder; a hub id ('owner/name') or preset name is checked when it
    loads."""
    from annotator.models.loading import check_model_folder, hub_id_of

    if hub_id_of(model) is not None:
        return
    if not Path(model).expanduser().is_dir():
        raise ModelUnavailable(
            f"--model {model}: no such model folder (give a local LLaVA-1.5 folder, a hub id like {DEFAULT_MODEL} "
            f"or a preset name from 'annotator models list')"
        )
    check_model_folder(model)


def output_file(path: Path, what: str) -> Path:
    """`path`, once its folder exists (made if missing) and a file can be written there; `ExportError` if not."""
    from annotator.project.atomic_file import check_writable_file

    with suppress(OSError):  # a parent that is a file, or unwritable: check_writable_file says which
        path.parent.mkdir(parents=True, exist_ok=True)
    check_writable_file(path, what)
    return path


def print_skipped(skipped: list[str]) -> None:
    """List the images a run skipped, with their reasons, after its results."""
    if skipped:
        print(f"\nskipped {len(skipped)} unreadable image(s):")
        for line in skipped:
            print(f"  {line}")


def device_and_dtype(device: str, dtype: str) -> tuple[str | None, "torch.dtype | None"]:
    """Check the device exists here (a one-line error if not) and turn the names into torch's."""
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            hint = (
                "use --device cpu" if torch.version.cuda else "this PyTorch has no CUDA support; install a CUDA build"
            )
            raise ModelUnavailable(
                f"--device {device}: PyTorch {torch.__version__} sees no CUDA GPU on this machine; {hint}"
            )
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ModelUnavailable(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelUnavailable("--device mps: Apple's Metal backend is not available here; use --device cpu")
    return (None if device == "auto" else device), (None if dtype == "auto" else getattr(torch, dtype))
