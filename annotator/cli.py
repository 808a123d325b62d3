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
import re
import signal
import sys
import threading
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from annotator import __version__
from annotator.errors import AnnotatorError, ImageLoadError, ModelUnavailable

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
DEFAULT_MODEL = "llava-hf/llava-1.5-7b-hf"


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


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a name, got an empty one")
    return text.strip()


def _device(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use auto, cpu, cuda, cuda:N or mps")
    return text


def _add_model_options(parser: argparse.ArgumentParser, default_model: str | None, four_bit: bool = False) -> None:
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
        "--device", type=_device, default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N or mps"
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


FIND_HEADS_HELP = """\
The paper's head discovery (design.md section 2) for any LLaVA-1.5 checkpoint: run the model over
image/expression pairs, average each head's image-attention sum, take tau at the elbow of the sorted sums,
and let each sample vote for its lowest-entropy heads above tau (layers 0-1 excluded). Writes the heads file
that the app and `annotator prelabel` load, two PNG plots beside it, and prints the top heads.

--data accepts JSONL lines {"image": path, "expression": text} (paths relative to the file), a COCO file whose
annotations carry "expression" (our export), or a RefCOCO-style refs file with its instances.json beside it.

examples:
  annotator find-heads --model llava-hf/llava-1.5-7b-hf --data refcoco_train.jsonl --samples 1000
  annotator find-heads --model resources/models/planted-llava --synthetic 300 --out planted-heads.json
"""

PRELABEL_HELP = """\
Proposals for every image of FOLDER, stored as pending annotations in the folder's project store (review
them in the app's review queue) and exported as COCO with scores. Ctrl-C stops after the current image;
running the same command again resumes where it stopped, without duplicating anything. Unreadable images are
skipped and listed at the end.

--expressions accepts a text file (one expression per line, asked of every image) or JSONL lines
{"image": relative path, "expression": text} for per-image expressions.

examples:
  annotator prelabel photos/ --expression "the red car" --expression "the person on the left" --masks
  annotator prelabel photos/ --expressions queries.jsonl --model resources/models/planted-llava --out photos.json
  annotator prelabel photos/ --expression "the dog" --ray              (a local Ray instance)
  annotator prelabel /shared/photos --expression "the dog" --ray ray://head-node:10001 --ray-shards /shared/shards
"""

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
  annotator models          list, download, verify or remove the model presets

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


def build_find_heads_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="annotator find-heads", description=FIND_HEADS_HELP, formatter_class=_formatter)
    _add_model_options(parser, default_model=None)
    data = parser.add_argument_group("calibration data").add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--data",
        type=_existing_file,
        metavar="FILE",
        help="JSONL, COCO or RefCOCO-style file of image/expression pairs",
    )
    data.add_argument(
        "--synthetic", type=_positive_int, metavar="N", help="N seeded synthetic scenes (planted colours and shapes)"
    )
    parser.add_argument(
        "--image-root",
        type=_existing_folder,
        metavar="DIR",
        help="folder the COCO file names are relative to (default: the file's folder)",
    )
    parser.add_argument(
        "--samples",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="pairs drawn at random from --data with --seed (default: 1000)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for drawing the pairs and the synthetic scenes (default: 0)"
    )
    parser.add_argument("--k", type=_positive_int, default=3, help="localization heads to keep (default: 3)")
    parser.add_argument("--top-n", type=_positive_int, default=10, metavar="N", help="votes per sample (default: 10)")
    parser.add_argument(
        "--skip-layers", type=_non_negative_int, default=2, metavar="N", help="first layers excluded (default: 2)"
    )
    parser.add_argument(
        "--out", type=Path, metavar="FILE", help="heads file to write (default: exports/<model>-heads.json)"
    )
    parser.set_defaults(handler=_run_find_heads, prog=parser.prog)
    return parser


def build_prelabel_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="annotator prelabel", description=PRELABEL_HELP, formatter_class=_formatter)
    parser.add_argument("folder", type=_existing_folder, help="image folder (scanned recursively)")
    queries = parser.add_argument_group("expressions").add_mutually_exclusive_group(required=True)
    queries.add_argument(
        "--expression", action="append", metavar="TEXT", help="an expression asked of every image (repeatable)"
    )
    queries.add_argument(
        "--expressions", type=_existing_file, metavar="FILE", help="text file (one per line) or per-image JSONL"
    )
    _add_model_options(parser, default_model=DEFAULT_MODEL, four_bit=True)
    parser.add_argument(
        "--heads", type=_existing_file, metavar="FILE", help="heads file (default: the known heads of --model)"
    )
    parser.add_argument(
        "--category", type=_name, default="object", metavar="NAME", help="category of the proposals (default: object)"
    )
    parser.add_argument(
        "--masks",
        nargs="?",
        const="sam",
        choices=("sam", "coarse"),
        help="add masks: 'sam' (default) prompts Segment Anything with the box; 'coarse' keeps the heads' region",
    )
    parser.add_argument(
        "--sam-type", choices=("vit_h", "vit_l", "vit_b"), default="vit_h", help="SAM size (default: vit_h)"
    )
    parser.add_argument(
        "--sam-checkpoint", type=_existing_file, metavar="FILE", help="SAM checkpoint (default: the user cache)"
    )
    parser.add_argument(
        "--all-instances", action="store_true", help="keep every region the heads find, not only the largest"
    )
    parser.add_argument("--out", type=Path, metavar="FILE", help="COCO file to write (default: exports/<folder>.json)")
    parser.add_argument("--store", type=Path, metavar="FILE", help="project store (default: the folder's own store)")
    parser.add_argument(
        "--prefetch",
        type=_non_negative_int,
        default=2,
        metavar="N",
        help="images decoded ahead on a loader thread; 0 loads inline (default: 2)",
    )
    cluster = parser.add_argument_group("Ray cluster (pip install 'annotator[ray]')")
    cluster.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run on Ray Data: join the cluster at ADDRESS (ray://host:10001, host:6379, auto) or start a local one",
    )
    cluster.add_argument(
        "--ray-actors", type=_positive_int, metavar="N", help="model actors (default: one per GPU or node)"
    )
    cluster.add_argument(
        "--ray-shards", type=Path, metavar="DIR", help="result shards, kept to resume (default: beside --out)"
    )
    cluster.add_argument("--ray-shard-size", type=_positive_int, metavar="N", help="images per shard (default: 64)")
    parser.set_defaults(handler=_run_prelabel, prog=parser.prog)
    return parser


def build_eval_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="annotator eval", description=EVAL_HELP, formatter_class=_formatter)
    parser.add_argument("--gt", type=_existing_file, required=True, metavar="FILE", help="ground truth")
    parser.add_argument("--pred", type=_existing_file, required=True, metavar="FILE", help="predictions")
    parser.add_argument("--benchmark", action="store_true", help="also print images/s and the latency distribution")
    parser.set_defaults(handler=_run_eval, prog=parser.prog)
    return parser


MODELS_HELP = """\
The model presets (resources/models.json): LLaVA-1.5 7B/13B from the Hugging Face Hub, the SAM checkpoints and
the planted demo model. A LLaVA download fetches only the shards up to its deepest localization head unless
--full is given; it goes into the Hugging Face cache (HF_HOME), resumes after a cut connection and checks the
free disk space first. SAM checkpoints go into the user cache, resumable and SHA-256 checked.

examples:
  annotator models list
  annotator models download llava-1.5-7b
  annotator models download sam-vit_h
  annotator models verify llava-1.5-7b
  annotator models remove llava-1.5-13b
"""


def build_models_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="annotator models", description=MODELS_HELP, formatter_class=_formatter)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_OneLineParser)
    actions.add_parser("list", help="every preset: on this machine or not, size on disk, path")
    download = actions.add_parser("download", help="download a preset (LLaVA: only the shards grounding needs)")
    download.add_argument("name", metavar="NAME", help="preset name (see 'annotator models list')")
    download.add_argument("--full", action="store_true", help="LLaVA: every shard, for uses beyond grounding")
    for action, what in (("verify", "check a downloaded preset's SHA-256"), ("remove", "delete a downloaded preset")):
        actions.add_parser(action, help=what).add_argument("name", metavar="NAME", help="preset name")
    parser.set_defaults(handler=_run_models, prog=parser.prog)
    return parser


COMMANDS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "find-heads": build_find_heads_parser,
    "prelabel": build_prelabel_parser,
    "eval": build_eval_parser,
    "models": build_models_parser,
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
        return _fail(
            "annotator", "the desktop app is not installed yet; use 'annotator find-heads', 'prelabel' or 'eval'"
        )
    return run_app(None if folder is None else str(folder), argv)


# Commands --------------------------------------------------------------------------------------------------------


def _run_eval(args: argparse.Namespace) -> int:
    from annotator import evaluation
    from annotator.evaluation_files import check_scorable, read_ground_truth, read_predictions

    truths = read_ground_truth(args.gt)
    predictions = read_predictions(args.pred)
    check_scorable(truths, predictions, args.gt, args.pred)
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


def _run_models(args: argparse.Namespace) -> int:
    from annotator.grounding import hub
    from annotator.grounding.download import file_sha256
    from annotator.grounding.presets import DemoPreset, SamPreset, download_sam, load_presets, local_copy

    presets = load_presets()
    if args.action == "list":
        print(f"{'NAME':<15} {'ON DISK':<34} {'SIZE':>9}  PATH")
        for preset in presets.all:
            copy = local_copy(preset)
            state, size, path = (
                ("no", "", "") if copy is None else (copy.note, hub.format_bytes(copy.size_bytes), copy.path)
            )
            print(f"{preset.name:<15} {state[:34]:<34} {size:>9}  {path}".rstrip())
        print("\nGPU memory for the weights (estimates): whole model / truncated for grounding / truncated in 4-bit")
        for lvlm in presets.lvlm:
            memory = lvlm.gpu_memory
            four_bit = "-" if memory.truncated_4bit_gb is None else f"{memory.truncated_4bit_gb:.1f} GB (--4bit)"
            print(f"{lvlm.name:<15} {memory.full_gb:.1f} GB / {memory.truncated_gb:.1f} GB / {four_bit}")
        return EXIT_OK
    preset = presets.get(args.name)
    if isinstance(preset, DemoPreset):
        if args.action == "remove":
            return _fail(args.prog, f"{preset.name} ships with the app in {preset.folder} and is not removed")
        print(f"{preset.name}: ships with the app in {preset.folder}")
        return EXIT_OK
    if args.action == "download":
        progress = _byte_progress()
        if isinstance(preset, SamPreset):
            path = download_sam(preset, progress)
        else:
            plan = hub.plan_download(preset.hub_id, None if args.full else preset.deepest_head_layer)
            saved = f", {hub.format_bytes(plan.bytes_saved)} of later layers skipped" if plan.bytes_saved else ""
            print(f"{preset.hub_id}: {len(plan.files)} files, {hub.format_bytes(plan.bytes_needed)}{saved}")
            path = hub.download(plan, progress)
        print(f"\n{preset.name}: ready in {path}")
        return EXIT_OK
    copy = local_copy(preset)
    if args.action == "remove":
        if isinstance(preset, SamPreset):
            freed = 0 if copy is None else copy.size_bytes
            if copy is not None:
                copy.path.unlink()
        else:
            freed = hub.remove(preset.hub_id)
        print(f"{preset.name}: removed, {hub.format_bytes(freed)} freed")
        return EXIT_OK
    if copy is None or not copy.complete:
        return _fail(args.prog, f"{preset.name} is not downloaded; run 'annotator models download {preset.name}'")
    if isinstance(preset, SamPreset):
        digest, expected = file_sha256(copy.path), preset.checkpoint.sha256
        problems = [] if digest == expected else [f"{copy.path} has SHA-256 {digest}, expected {expected}"]
        checked = 1
    else:
        report = hub.verify(hub.require_cached(preset.hub_id, preset.deepest_head_layer, preset.name))
        problems, checked = list(report.problems), report.checked
    if problems:
        return _fail(args.prog, f"{preset.name} is damaged: {'; '.join(problems)}; remove it and download it again")
    if checked == 0:
        print(f"{preset.name}: complete, but no weight file carries a known SHA-256 to check ({copy.path})")
    else:
        print(f"{preset.name}: {checked} weight file(s) match their SHA-256 ({copy.path})")
    return EXIT_OK


def _byte_progress() -> Callable[[int, int | None], None]:
    """A progress callback printing bytes done on one stderr line, at most once per percent."""
    from annotator.grounding.hub import format_bytes

    last = [-1]

    def report(done: int, total: int | None) -> None:
        step = done * 100 // total if total else done >> 24
        if step != last[0]:
            last[0] = step
            of = f" of {format_bytes(total)} ({step}%)" if total else ""
            print(f"\r{format_bytes(done)}{of}", end="", file=sys.stderr, flush=True)

    return report


def _run_find_heads(args: argparse.Namespace) -> int:
    from annotator.grounding import calibration

    skipped: list[str] = []
    if args.data is not None:
        pairs = calibration.read_calibration(args.data, args.image_root)
        chosen = calibration.choose_pairs(pairs, args.samples, args.seed)
        images = calibration.load_pairs(chosen, skipped)
        total = len(chosen)
        source = f"{args.data.name}: {total} of {len(pairs)} pairs (seed {args.seed})"
    else:
        images = calibration.synthetic_images(args.synthetic, args.seed)
        total = args.synthetic
        source = f"{total} synthetic scenes (seed {args.seed})"
    _check_model_reference(args.model)
    out = _output_file(args.out or _default_heads_path(args.model), "heads file")
    device, dtype = _device_and_dtype(args.device, args.dtype)
    from tqdm import tqdm

    from annotator.grounding.heads import select_localization_heads
    from annotator.grounding.loading import hub_id_of, model_folder
    from annotator.grounding.lvlm import LvlmEngine, text_layout

    folder = model_folder(args.model, None, fetch=True, progress=_byte_progress())
    num_layers, num_heads = text_layout(folder)
    if args.skip_layers >= num_layers:
        return _fail(
            args.prog,
            f"--skip-layers {args.skip_layers}: {args.model} has {num_layers} text layers, so no head is left to "
            f"choose from; skip fewer (default: 2)",
        )
    choosable = (num_layers - args.skip_layers) * num_heads
    if args.k > choosable:
        return _fail(
            args.prog,
            f"--k {args.k}: {args.model} has {choosable} heads outside its first {args.skip_layers} layers "
            f"({num_layers} layers of {num_heads} heads); ask for at most {choosable} (the paper keeps 3)",
        )
    engine = LvlmEngine.load(folder, device=device, dtype=dtype, prefix_cache_size=0, model_id=hub_id_of(args.model))
    progress = tqdm(images, total=total, desc="find-heads", unit="sample", dynamic_ncols=True)
    samples = calibration.attention_samples(engine, progress)
    try:
        selection = select_localization_heads(samples, k=args.k, top_n=args.top_n, skip_layers=args.skip_layers)
    except ValueError as exc:
        if skipped and len(skipped) == total:
            raise ImageLoadError(f"none of the {total} calibration images could be read; first: {skipped[0]}") from exc
        raise
    finally:
        progress.close()
    qualified = (
        f"{len(selection.candidates)} heads lie above tau = {selection.tau:.4f} outside the first {args.skip_layers} "
        f"layers and {len(selection.votes)} got a vote ({args.top_n} per sample, {selection.num_samples} samples)"
    )
    if not selection.heads:
        return _fail(args.prog, f"no localization head was found: {qualified}; nothing written to {out}")

    from annotator.grounding.discovery_report import (
        discovery_table,
        plot_attention_sums,
        plot_selection_frequency,
        write_heads_file,
    )

    heads_file = write_heads_file(selection, out, model=args.model, source=f"annotator find-heads on {source}")
    sums_png = plot_attention_sums(selection, out.with_name(f"{out.stem}-sums.png"), title=f"{args.model}: {source}")
    frequency_png = plot_selection_frequency(
        selection, out.with_name(f"{out.stem}-frequency.png"), title=f"{args.model}: {source}"
    )
    print(discovery_table(selection, heads_file))
    print(f"\nwrote {out}\n      {sums_png}\n      {frequency_png}")
    _print_skipped(skipped)
    if len(selection.heads) < args.k:
        print(
            f"{args.prog}: --k {args.k}: kept {len(selection.heads)} heads, all that qualified: {qualified}",
            file=sys.stderr,
        )
    return EXIT_OK


def _run_prelabel(args: argparse.Namespace) -> int:
    if args.ray is not None:
        return _run_prelabel_on_ray(args)
    from annotator.prelabel import expression_plan

    plan = expression_plan(args.expression, args.expressions)
    _check_model_reference(args.model)
    heads_file = _heads_file(args.heads, args.model)
    with _prelabel_store(args, plan) as (store, work, out):
        device, dtype = _device_and_dtype(args.device, args.dtype)
        from tqdm import tqdm

        from annotator.grounding.loading import load_grounder
        from annotator.grounding.proposer import Proposer
        from annotator.prelabel import Prelabeller
        from annotator.project.coco import export_coco

        segmenter = None
        if args.masks == "sam":
            from annotator.grounding.segment import Segmenter

            segmenter = Segmenter.load(args.sam_type, args.sam_checkpoint, device)
        grounder = load_grounder(
            args.model,
            heads_file.heads,
            device=device,
            dtype=dtype,
            load_in_4bit=args.load_in_4bit,
            fetch=True,
            progress=_byte_progress(),
        )
        with closing(Proposer(grounder, segmenter)) as proposer:
            prelabeller = Prelabeller(
                proposer,
                store,
                category=args.category,
                masks=args.masks,
                all_instances=args.all_instances,
                prefetch_depth=args.prefetch,
                model_id=args.model,
            )
            stop = threading.Event()
            with _progress_bar(tqdm) as bar, _stop_on_interrupt(stop, args.prog):
                report = prelabeller.run(plan, stop=stop, progress=bar, work=work)
        exported = export_coco(store, out, statuses=("pending", "accepted"))
    return _prelabel_summary(args.prog, report, exported, out)


@contextmanager
def _prelabel_store(args: argparse.Namespace, plan):
    """The checks a prelabel run makes before any model loads (a 7B load takes minutes): the project store opens
    and is sound, the folder has images to ask, the export can be written. Yields (store, pending work, out)."""
    from annotator.paths import EXPORTS_DIR
    from annotator.prelabel import find_pending_work, require_images
    from annotator.project.store import ProjectStore

    out = _output_file(args.out or EXPORTS_DIR / f"{args.folder.resolve().name}.json", "COCO file")
    store = (
        ProjectStore.open(args.store, image_root=args.folder) if args.store else ProjectStore.for_folder(args.folder)
    )
    with store:
        work = find_pending_work(store, plan)
        require_images(work, args.folder)
        yield store, work, out


def _run_prelabel_on_ray(args: argparse.Namespace) -> int:
    """`prelabel --ray`: the models load in Ray actors (on the cluster's devices), the results merge into the store."""
    from annotator.distributed.ray_prelabel import DEFAULT_SHARD_SIZE, ProposerSpec, RayPrelabeller, connect, import_ray

    import_ray()
    from annotator.prelabel import expression_plan

    plan = expression_plan(args.expression, args.expressions)
    _check_model_reference(args.model)
    heads_file = _heads_file(args.heads, args.model)
    with _prelabel_store(args, plan) as (store, work, out):
        from tqdm import tqdm

        from annotator.project.coco import export_coco

        shards_dir = args.ray_shards or out.with_suffix(".shards")
        spec = ProposerSpec(
            model=args.model,
            heads=tuple((int(layer), int(head)) for layer, head in heads_file.heads),
            device=None if args.device == "auto" else args.device,
            dtype=None if args.dtype == "auto" else args.dtype,
            load_in_4bit=args.load_in_4bit,
            masks=args.masks,
            sam_type=args.sam_type,
            sam_checkpoint=None if args.sam_checkpoint is None else str(args.sam_checkpoint.resolve()),
        )
        started = connect(None if args.ray == "local" else args.ray)
        try:
            prelabeller = RayPrelabeller(
                spec,
                store,
                shards_dir,
                category=args.category,
                all_instances=args.all_instances,
                shard_size=args.ray_shard_size or DEFAULT_SHARD_SIZE,
                actors=args.ray_actors,
            )
            stop = threading.Event()
            with _progress_bar(tqdm) as bar, _stop_on_interrupt(stop, args.prog):
                report = prelabeller.run(plan, stop=stop, progress=bar, work=work)
            exported = export_coco(store, out, statuses=("pending", "accepted"))
        finally:
            if started:
                import ray

                ray.shutdown()
    pool = "no actors needed" if report.actors is None else f"{report.actors.actors} actor(s)"
    shards = (
        f"shards in {shards_dir}: {report.shards_written} computed now ({pool}), "
        f"{report.shards_reused} found already written"
    )
    return _prelabel_summary(args.prog, report, exported, out, shards)


def _prelabel_summary(prog: str, report, exported, out: Path, detail: str | None = None) -> int:
    """Print what a prelabel run did (and `detail`), its export and skipped files; the exit code."""
    print(
        f"{report.images_done} image(s) labelled now, {report.images_already_done} done earlier, "
        f"{report.proposals_added} proposal(s) added in {report.seconds:.1f} s "
        f"({report.images_per_second:.2f} images/s)"
    )
    if detail is not None:
        print(detail)
    print(f"exported {exported.annotations} annotation(s) on {exported.images} image(s) to {out}")
    _print_skipped(list(report.skipped))
    if report.interrupted:
        print(
            f"{prog}: interrupted with {report.images_left} image(s) to go; run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return EXIT_OK


def _check_model_reference(model: str) -> None:
    """A model named by a path must be a model folder; a hub id ('owner/name') or preset name is checked when it
    loads."""
    from annotator.grounding.loading import check_model_folder, hub_id_of

    if hub_id_of(model) is not None:
        return
    if not Path(model).expanduser().is_dir():
        raise ModelUnavailable(
            f"--model {model}: no such model folder (give a local LLaVA-1.5 folder, a hub id like {DEFAULT_MODEL} "
            f"or a preset name from 'annotator models list')"
        )
    check_model_folder(model)


def _heads_file(path: Path | None, model: str):
    """The heads file given, or the known heads of the model, checked against the model's config when it is on
    this machine; `ModelUnavailable` when there are none or they do not fit."""
    from annotator.grounding.heads import HeadsFile, find_heads_file
    from annotator.grounding.loading import heads_misfit

    try:
        heads_file = HeadsFile.load(path) if path is not None else find_heads_file(model)
    except ValueError as exc:
        raise ModelUnavailable(str(exc)) from exc
    if heads_file is None:
        raise ModelUnavailable(
            f"no localization heads are known for {model}; find them with "
            f"'annotator find-heads --model {model} --data FILE' and pass the file with --heads"
        )
    misfit = heads_misfit(model, heads_file.heads)
    if misfit is not None:
        origin = f"--heads {path}" if path is not None else f"the heads known for {heads_file.model}"
        raise ModelUnavailable(f"{origin}: {misfit}")
    return heads_file


@contextmanager
def _progress_bar(tqdm):
    """A tqdm bar driven by the pre-labeller's `progress(done, already_done, total)` calls."""
    bar = None

    def update(done: int, already_done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, initial=already_done, desc="prelabel", unit="image", dynamic_ncols=True)
        bar.update(already_done + done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


@contextmanager
def _stop_on_interrupt(stop: threading.Event, prog: str):
    """The first Ctrl-C (or SIGTERM) sets `stop`; a second Ctrl-C interrupts at once."""

    def handle(signum: int, frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        print(f"\n{prog}: stopping after the current image (Ctrl-C again to stop at once)", file=sys.stderr)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _output_file(path: Path, what: str) -> Path:
    """`path`, once its folder exists (made if missing) and a file can be written there; `ExportError` if not."""
    from annotator.project.atomic_file import check_writable_file

    with suppress(OSError):  # a parent that is a file, or unwritable: check_writable_file says which
        path.parent.mkdir(parents=True, exist_ok=True)
    check_writable_file(path, what)
    return path


def _default_heads_path(model: str) -> Path:
    from annotator.paths import EXPORTS_DIR

    name = Path(model.rstrip("/\\")).name or "model"
    return EXPORTS_DIR / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}-heads.json"


def _print_skipped(skipped: list[str]) -> None:
    if skipped:
        print(f"\nskipped {len(skipped)} unreadable image(s):")
        for line in skipped:
            print(f"  {line}")


def _device_and_dtype(device: str, dtype: str):
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


if __name__ == "__main__":
    sys.exit(main())
