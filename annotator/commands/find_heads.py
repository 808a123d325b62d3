"""`annotator find-heads`: the paper's head discovery for a checkpoint of any supported family, written as a heads
file."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from annotator.commands.options import (
    OneLineParser,
    add_model_options,
    existing_folder,
    existing_path,
    help_formatter,
    non_negative_int,
    positive_int,
)
from annotator.commands.runtime import (
    EXIT_OK,
    byte_progress,
    check_model_reference,
    device_and_dtype,
    fail,
    output_file,
    print_skipped,
)
from annotator.errors import ImageLoadError
from annotator.project.refer import DATASETS, SPLIT_BYS, SPLITS, check_images_present


FIND_HEADS_HELP = """\
The paper's head discovery (docs/method.md) for any supported checkpoint (every family in `annotator models list`; a
model with no shipped heads needs this first, and no ground truth: image/expression pairs suffice): run it over
image/expression pairs, average each head's image-attention sum, take tau at the elbow of the sorted sums,
and let each sample vote for its lowest-entropy heads above tau (layers 0-1 excluded). Writes the heads file
that the app and `annotator prelabel` load, two PNG plots beside it, and prints the top heads.

--data accepts JSONL lines {"image": path, "expression": text} (paths relative to the file), a COCO file whose
annotations carry "expression" (our export), a RefCOCO-style refs file with its instances.json beside it, or
the folder of the REFER distribution (refcoco/, refcoco+/, refcocog/ with their refs(unc).p and instances.json;
the COCO train2014 images in DATA_DIR/images/train2014/ or DATA_DIR/train2014/, or --images DIR) with --dataset,
--split-by and --split: the paper draws 1000 pairs from RefCOCO's train split.

examples:
  annotator find-heads --model llava-1.5-7b --data ~/data/refer --dataset refcoco --split train
  annotator find-heads --model llava-hf/llava-1.5-7b-hf --data refcoco_train.jsonl --samples 1000
  annotator find-heads --model resources/models/planted-llava --synthetic 300 --out planted-heads.json
"""


def build_parser() -> argparse.ArgumentParser:
    """The `annotator find-heads` parser."""
    parser = OneLineParser(prog="annotator find-heads", description=FIND_HEADS_HELP, formatter_class=help_formatter)
    add_model_options(parser, default_model=None)
    data = parser.add_argument_group("calibration data").add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--data",
        type=existing_path,
        metavar="FILE|DIR",
        help="JSONL, COCO or RefCOCO-style file of image/expression pairs, or a REFER DATA_DIR",
    )
    data.add_argument(
        "--synthetic", type=positive_int, metavar="N", help="N seeded synthetic scenes (planted colours and shapes)"
    )
    parser.add_argument(
        "--image-root",
        "--images",
        type=existing_folder,
        metavar="DIR",
        help="folder the COCO file names are relative to (default: the file's folder; for a REFER DATA_DIR its "
        "train2014 folder)",
    )
    refer = parser.add_argument_group("REFER data (--data DATA_DIR)")
    refer.add_argument("--dataset", choices=DATASETS, help="dataset (default: refcoco)")
    refer.add_argument(
        "--split-by", choices=SPLIT_BYS, help="whose split: unc, umd, google (default: unc; umd for refcocog)"
    )
    refer.add_argument("--split", choices=SPLITS, help="split the pairs come from (default: train)")
    parser.add_argument(
        "--samples",
        type=positive_int,
        default=1000,
        metavar="N",
        help="pairs drawn at random from --data with --seed (default: 1000)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for drawing the pairs and the synthetic scenes (default: 0)"
    )
    parser.add_argument("--k", type=positive_int, default=3, help="localization heads to keep (default: 3)")
    parser.add_argument("--top-n", type=positive_int, default=10, metavar="N", help="votes per sample (default: 10)")
    parser.add_argument(
        "--skip-layers", type=non_negative_int, default=2, metavar="N", help="first layers excluded (default: 2)"
    )
    parser.add_argument(
        "--out", type=Path, metavar="FILE", help="heads file to write (default: exports/<model>-heads.json)"
    )
    parser.set_defaults(handler=run, prog=parser.prog)
    return parser


def run(args: argparse.Namespace) -> int:
    """Discover the heads, write the heads file and its plots, print the top heads; the exit code."""
    from annotator.discovery import calibration

    skipped: list[str] = []
    refer_options = [f"--{name.replace('_', '-')}" for name in ("dataset", "split_by", "split") if getattr(args, name)]
    if refer_options and (args.data is None or not args.data.is_dir()):
        return fail(args.prog, f"{refer_options[0]} is for a REFER folder given as --data DATA_DIR")
    if args.data is not None:
        refer_images = None
        if args.data.is_dir():
            pairs, name, refer_images = _refer_pairs(args)
        else:
            pairs, name = calibration.read_calibration(args.data, args.image_root), args.data.name
        chosen = calibration.choose_pairs(pairs, args.samples, args.seed)
        if refer_images is not None:
            check_images_present(refer_images, [str(p.image_path.relative_to(refer_images)) for p in chosen], name)
        images = calibration.load_pairs(chosen, skipped)
        total = len(chosen)
        source = f"{name}: {total} of {len(pairs)} pairs (seed {args.seed})"
    else:
        images = calibration.synthetic_images(args.synthetic, args.seed)
        total = args.synthetic
        source = f"{total} synthetic scenes (seed {args.seed})"
    check_model_reference(args.model)
    out = output_file(args.out or _default_heads_path(args.model), "heads file")
    device, dtype = device_and_dtype(args.device, args.dtype)
    from tqdm import tqdm

    from annotator.lvlm.checkpoint import text_layout
    from annotator.grounding.heads import select_localization_heads
    from annotator.models.loading import hub_id_of, model_folder
    from annotator.lvlm.engine import LvlmEngine

    folder = model_folder(args.model, None, fetch=True, progress=byte_progress())
    num_layers, num_heads = text_layout(folder)
    if args.skip_layers >= num_layers:
        return fail(
            args.prog,
            f"--skip-layers {args.skip_layers}: {args.model} has {num_layers} text layers, so no head is left to "
            f"choose from; skip fewer (default: 2)",
        )
    choosable = (num_layers - args.skip_layers) * num_heads
    if args.k > choosable:
        return fail(
            args.prog,
            f"--k {args.k}: {args.model} has {choosable} heads outside its first {args.skip_layers} layers "
            f"({num_layers} layers of {num_heads} heads); ask for at most {choosable} (the paper keeps 3)",
        )
    engine = LvlmEngine.load(
        folder,
        device=device,
        dtype=dtype,
        prefix_cache_size=0,
        model_id=hub_id_of(args.model),
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
    )
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
        return fail(args.prog, f"no localization head was found: {qualified}; nothing written to {out}")

    from annotator.discovery.report import (
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
    print_skipped(skipped)
    if len(selection.heads) < args.k:
        print(
            f"{args.prog}: --k {args.k}: kept {len(selection.heads)} heads, all that qualified: {qualified}",
            file=sys.stderr,
        )
    return EXIT_OK


def _refer_pairs(args: argparse.Namespace):
    """The pairs of the REFER split `args` names, a label for them and the images folder; checked before any
    model loads."""
    from annotator.discovery.calibration import refer_pairs
    from annotator.project.refer import images_folder, load_refer

    dataset = load_refer(args.data, args.dataset or "refcoco", args.split_by)
    split = args.split or "train"
    folder = images_folder(args.data, args.image_root)
    return refer_pairs(dataset, dataset.split_refs(split), folder), f"{dataset.label} {split}", folder


def _default_heads_path(model: str) -> Path:
    from annotator.paths import EXPORTS_DIR

    name = Path(model.rstrip("/\\")).name or "model"
    return EXPORTS_DIR / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}-heads.json"
