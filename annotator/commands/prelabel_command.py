"""`annotator prelabel`: proposals for every image of a folder into its project store, on this machine or on Ray,
exported as COCO; Ctrl-C stops after the current image and a rerun resumes."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import closing, contextmanager
from pathlib import Path

from annotator.commands.options import (
    OneLineParser,
    add_model_options,
    add_proposal_options,
    add_ray_options,
    existing_file,
    existing_folder,
    help_formatter,
    non_empty_name,
)
from annotator.commands.runtime import (
    DEFAULT_MODEL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    byte_progress,
    check_model_reference,
    device_and_dtype,
    output_file,
    print_skipped,
)
from annotator.errors import ModelUnavailable


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


def build_parser() -> argparse.ArgumentParser:
    """The `annotator prelabel` parser."""
    parser = OneLineParser(prog="annotator prelabel", description=PRELABEL_HELP, formatter_class=help_formatter)
    parser.add_argument("folder", type=existing_folder, help="image folder (scanned recursively)")
    queries = parser.add_argument_group("expressions").add_mutually_exclusive_group(required=True)
    queries.add_argument(
        "--expression", action="append", metavar="TEXT", help="an expression asked of every image (repeatable)"
    )
    queries.add_argument(
        "--expressions", type=existing_file, metavar="FILE", help="text file (one per line) or per-image JSONL"
    )
    add_model_options(parser, default_model=DEFAULT_MODEL, four_bit=True)
    add_proposal_options(parser)
    parser.add_argument(
        "--category",
        type=non_empty_name,
        default="object",
        metavar="NAME",
        help="category of the proposals (default: object)",
    )
    parser.add_argument(
        "--all-instances", action="store_true", help="keep every region the heads find, not only the largest"
    )
    parser.add_argument("--out", type=Path, metavar="FILE", help="COCO file to write (default: exports/<folder>.json)")
    parser.add_argument("--store", type=Path, metavar="FILE", help="project store (default: the folder's own store)")
    add_ray_options(parser, shards_default="beside --out")
    parser.set_defaults(handler=run, prog=parser.prog)
    return parser


def run(args: argparse.Namespace) -> int:
    """Label the folder (on Ray with `--ray`), export it and print what was done; the exit code."""
    if args.ray is not None:
        from annotator.distributed.ray_prelabel import import_ray

        import_ray()
    from annotator.prelabel import expression_plan

    plan = expression_plan(args.expression, args.expressions)
    check_model_reference(args.model)
    heads_file = heads_file_for(args.heads, args.model)
    with _prelabel_store(args, plan) as (store, work, out):
        from annotator.project.coco import export_coco

        shards_dir = args.ray_shards or out.with_suffix(".shards")
        report, detail = propose_pending(args, store, plan, work, heads_file.heads, shards_dir)
        exported = export_coco(store, out, statuses=("pending", "accepted"))
    return _prelabel_summary(args.prog, report, exported, out, detail)


@contextmanager
def _prelabel_store(args: argparse.Namespace, plan):
    """The checks a prelabel run makes before any model loads (a 7B load takes minutes): the project store opens
    and is sound, the folder has images to ask, the export can be written. Yields (store, pending work, out)."""
    from annotator.paths import EXPORTS_DIR
    from annotator.prelabel import find_pending_work, require_images
    from annotator.project.store import ProjectStore

    out = output_file(args.out or EXPORTS_DIR / f"{args.folder.resolve().name}.json", "COCO file")
    store = (
        ProjectStore.open(args.store, image_root=args.folder) if args.store else ProjectStore.for_folder(args.folder)
    )
    with store:
        work = find_pending_work(store, plan)
        require_images(work, args.folder)
        yield store, work, out


def propose_pending(args: argparse.Namespace, store, plan, work, heads, shards_dir: Path):
    """Propose the pending `work` into `store` with the models and options of `args` (those of
    `add_model_options`, `add_proposal_options` and `add_ray_options`, plus `category`, `all_instances`, `prog`):
    on this machine, or on Ray with `args.ray` (`import_ray` done). Ctrl-C stops after the current image. Returns
    the report and, on Ray, a line about the shards (else None)."""
    if args.ray is not None:
        return _propose_on_ray(args, store, plan, work, heads, shards_dir)
    device, dtype = device_and_dtype(args.device, args.dtype)
    from annotator.models.loading import load_grounder
    from annotator.proposer import Proposer
    from annotator.prelabel import Prelabeller

    segmenter = None
    if args.masks == "sam":
        from annotator.segmentation.segment import Segmenter

        segmenter = Segmenter.load(args.sam_type, args.sam_checkpoint, device)
        print(f"masks: {segmenter.label} on {segmenter.device}", file=sys.stderr)
    grounder = load_grounder(
        args.model,
        heads,
        device=device,
        dtype=dtype,
        load_in_4bit=args.load_in_4bit,
        fetch=True,
        progress=byte_progress(),
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
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
        return run_with_progress(prelabeller, plan, work, args.prog), None


def _propose_on_ray(args: argparse.Namespace, store, plan, work, heads, shards_dir: Path):
    """`propose_pending` on Ray: the models load in Ray actors (on the cluster's devices), the results merge into
    the store."""
    from annotator.distributed.ray_prelabel import DEFAULT_SHARD_SIZE, ProposerSpec, RayPrelabeller, connect

    spec = ProposerSpec(
        model=args.model,
        heads=tuple((int(layer), int(head)) for layer, head in heads),
        device=None if args.device == "auto" else args.device,
        dtype=None if args.dtype == "auto" else args.dtype,
        load_in_4bit=args.load_in_4bit,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
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
        report = run_with_progress(prelabeller, plan, work, args.prog)
    finally:
        if started:
            import ray

            ray.shutdown()
    pool = "no actors needed" if report.actors is None else f"{report.actors.actors} actor(s)"
    shards = (
        f"shards in {shards_dir}: {report.shards_written} computed now ({pool}), "
        f"{report.shards_reused} found already written"
    )
    return report, shards


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
    print_skipped(list(report.skipped))
    if report.interrupted:
        print(
            f"{prog}: interrupted with {report.images_left} image(s) to go; run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return EXIT_OK


def heads_file_for(path: Path | None, model: str):
    """The heads file given, or the known heads of the model, checked against the model's config when it is on
    this machine; `ModelUnavailable` when there are none or they do not fit."""
    from annotator.grounding.heads import HeadsFile, find_heads_file
    from annotator.models.loading import heads_misfit

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


def run_with_progress(prelabeller, plan, work, prog: str):
    """`prelabeller.run` with a progress bar; the first Ctrl-C (or SIGTERM) stops it after the current image."""
    from tqdm import tqdm

    stop = threading.Event()
    with _progress_bar(tqdm, prog.removeprefix("annotator ")) as bar, _stop_on_interrupt(stop, prog):
        return prelabeller.run(plan, stop=stop, progress=bar, work=work)


@contextmanager
def _progress_bar(tqdm, label: str):
    """A tqdm bar named `label`, driven by the pre-labeller's `progress(done, already_done, total)` calls."""
    bar = None

    def update(done: int, already_done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, initial=already_done, desc=label, unit="image", dynamic_ncols=True)
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
