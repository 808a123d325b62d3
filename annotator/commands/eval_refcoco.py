"""`annotator eval refcoco`: one row of the paper's tables reproduced by one command, on the REFER files as they
are on disk: the proposals for a split's images and expressions (resumable, through a project store in the output
folder; on Ray with `--ray`), scored with `annotator eval`'s metrics and printed beside the paper's figures."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from annotator.commands.options import (
    add_model_options,
    add_proposal_options,
    add_ray_options,
    existing_folder,
    help_formatter,
    positive_int,
)
from annotator.commands.prelabel_command import heads_file_for, propose_pending
from annotator.commands.runtime import (
    DEFAULT_MODEL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    check_model_reference,
    output_file,
    print_skipped,
)
from annotator.errors import ProjectStoreError
from annotator.project.refer import DATASETS, SPLIT_BYS, SPLITS

PREDICTIONS_FILE = "predictions.json"
RESULTS_FILE = "results.json"
SETTINGS_FILE = "run.json"
STORE_FILE = "project.sqlite"

EVAL_REFCOCO_HELP = """\
Reproduce a row of the paper's tables (Kang et al., CVPR 2025, Tables 1-2) on the REFER distribution: propose a
box (and with --masks a mask) for every expression of the split's images, score them as 'annotator eval' does
(REC Acc@0.5 and mean IoU; RES cIoU and mIoU) and print ours beside the paper's figures, with the difference.

DATA_DIR holds refcoco/, refcoco+/, refcocog/ as the REFER toolkit has them (refs(unc).p, refs(umd).p or
refs(google).p, or their JSON conversion, with instances.json beside them) and the COCO train2014 images in
DATA_DIR/images/train2014/ or DATA_DIR/train2014/ (--images DIR to say where). The output folder keeps the project
store of the proposals, predictions.json (COCO, with masks as RLE) and results.json (the table): Ctrl-C and the
same command again resumes; a finished run prints its table again without loading a model.

examples:
  annotator eval refcoco ~/data/refer --dataset refcoco --split val --model llava-1.5-7b --masks sam
  annotator eval refcoco ~/data/refer --dataset refcoco+ --split val --model llava-1.5-13b --limit 200
  annotator eval refcoco ~/data/refer --dataset refcocog --split-by umd --split test --ray auto
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """`refcoco` as a sub-command of the `annotator eval` parser."""
    parser = subparsers.add_parser(
        "refcoco",
        description=EVAL_REFCOCO_HELP,
        formatter_class=help_formatter,
        help="reproduce a row of the paper's tables on the REFER files (see 'annotator eval refcoco --help')",
    )
    parser.add_argument("data_dir", type=existing_folder, metavar="DATA_DIR", help="folder of the REFER datasets")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default="refcoco", help="dataset (default: refcoco)")
    data.add_argument(
        "--split-by", choices=SPLIT_BYS, help="whose split: unc, umd, google (default: unc; umd for refcocog)"
    )
    data.add_argument("--split", choices=SPLITS, default="val", help="split to score (default: val)")
    data.add_argument("--images", type=existing_folder, metavar="DIR", help="the COCO train2014 images folder")
    data.add_argument("--limit", type=positive_int, metavar="N", help="only the split's first N images (by id)")
    add_model_options(parser, default_model=DEFAULT_MODEL, four_bit=True)
    add_proposal_options(parser)
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output folder (default: exports/eval-refcoco/<model>-<dataset>-<split_by>-<split>/)",
    )
    add_ray_options(parser, shards_default="<out>/shards")
    parser.set_defaults(handler=run, prog=parser.prog, category="object", all_instances=False)
    return parser


def run(args: argparse.Namespace) -> int:
    """Propose what is still missing, score the split and print the table beside the paper's; the exit code."""
    if args.ray is not None:
        from annotator.distributed.ray_prelabel import import_ray

        import_ray()
    from annotator.evaluation_files import refer_ground_truth
    from annotator.prelabel import ExpressionPlan, find_pending_work
    from annotator.project.images import ScanResult
    from annotator.project.refer import check_images_present, images_folder, load_refer
    from annotator.project.store import ProjectStore

    dataset = load_refer(args.data_dir, args.dataset, args.split_by)
    refs = dataset.split_refs(args.split)
    images = dataset.split_images(refs)[: args.limit]
    kept = {image.image_id for image in images}
    refs = [ref for ref in refs if ref.image_id in kept]
    folder = images_folder(args.data_dir, args.images)
    check_images_present(folder, [image.file_name for image in images], f"{dataset.label} {args.split}")
    truths = refer_ground_truth(dataset, refs)
    check_model_reference(args.model)
    heads_file = heads_file_for(args.heads, args.model)
    out_dir = args.out or _default_out(args.model, dataset.name, dataset.split_by, args.split)
    predictions_path = output_file(out_dir / PREDICTIONS_FILE, "predictions file")
    results_path = output_file(out_dir / RESULTS_FILE, "results file")
    settings = _settings(args, heads_file.heads)
    _check_settings(out_dir / SETTINGS_FILE, settings)
    sentences: dict[str, tuple[str, ...]] = {}
    for ref in refs:
        name = dataset.images[ref.image_id].file_name
        sentences[name] = tuple(dict.fromkeys((*sentences.get(name, ()), *ref.sentences)))
    plan = ExpressionPlan(per_image=sentences)
    report = None
    with ProjectStore.open(out_dir / STORE_FILE, image_root=folder) as store:
        work = find_pending_work(store, plan, ScanResult(folder, tuple(i.file_name for i in images), ()))
        if work.todo:
            _write_json(out_dir / SETTINGS_FILE, settings, "run settings")
            shards_dir = args.ray_shards or out_dir / "shards"
            report, detail = propose_pending(args, store, plan, work, heads_file.heads, shards_dir)
            _print_progress(report, detail)
        from annotator.project.coco import export_coco

        export_coco(store, predictions_path, segmentation="rle", statuses=("pending", "accepted"))
    if report is not None and report.interrupted:
        print(
            f"{args.prog}: interrupted with {report.images_left} image(s) to go; run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    table = _score(args, dataset, truths, predictions_path, len(images), heads_file)
    from annotator.reproduction import format_reproduction

    print(format_reproduction(table))
    _write_json(results_path, table.to_json(), "results file")
    print(f"\nwrote {results_path}\n      {predictions_path}")
    print_skipped(list(report.skipped) if report is not None else [])
    return EXIT_OK


def _score(args: argparse.Namespace, dataset, truths, predictions_path: Path, images: int, heads_file):
    """The run's `Reproduction`: the predictions scored against `truths`, beside the paper's figures."""
    from annotator.evaluation import evaluate, summarise_latency
    from annotator.evaluation_files import read_predictions
    from annotator.reproduction import Reproduction, paper_figures

    predictions = read_predictions(predictions_path)
    latency = summarise_latency(predictions)
    speed = None if latency is None or not math.isfinite(latency.images_per_second) else latency.images_per_second
    return Reproduction(
        model=args.model,
        dataset=dataset.name,
        split_by=dataset.split_by,
        split=args.split,
        images=images,
        metrics=evaluate(truths, predictions).overall,
        images_per_second=speed,
        heads=tuple((int(layer), int(head)) for layer, head in heads_file.heads),
        tau=heads_file.tau,
        masks=args.masks,
        paper=paper_figures(args.model, dataset.name, dataset.split_by, args.split),
    )


def _settings(args: argparse.Namespace, heads) -> dict:
    """What decides the proposals besides the images: a rerun into the same folder must ask the same."""
    pixels = [args.min_pixels, args.max_pixels]
    budget = {} if pixels == [None, None] else {"pixels": pixels}
    return budget | {
        "model": args.model,
        "heads": [[int(layer), int(head)] for layer, head in heads],
        "dtype": args.dtype,
        "load_in_4bit": args.load_in_4bit,
        "masks": args.masks,
        "sam": [args.sam_type, None if args.sam_checkpoint is None else str(args.sam_checkpoint)]
        if args.masks == "sam"
        else None,
    }


def _check_settings(path: Path, settings: dict) -> None:
    """`ProjectStoreError` when the output folder holds proposals made with other settings (they would be mixed)."""
    from annotator.jsonl import read_json

    if not path.is_file():
        return
    earlier = read_json(path)
    changed = [key for key in settings if not isinstance(earlier, dict) or earlier.get(key) != settings[key]]
    if changed:
        key = changed[0]
        before = earlier.get(key) if isinstance(earlier, dict) else None
        raise ProjectStoreError(
            f"{path.parent} holds proposals made with {key} {_shown(before)}, not {_shown(settings[key])}; "
            f"give another --out, or remove {path.parent} to start again"
        )


def _shown(value) -> str:
    return "none" if value is None else json.dumps(value)


def _write_json(path: Path, data: dict, what: str) -> None:
    from annotator.project.atomic_file import atomic_text_file

    with atomic_text_file(path, what) as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")


def _print_progress(report, detail: str | None) -> None:
    print(
        f"{report.images_done} image(s) proposed now, {report.images_already_done} done earlier, "
        f"{report.proposals_added} proposal(s) added in {report.seconds:.1f} s"
    )
    if detail is not None:
        print(detail)
    print()


def _default_out(model: str, dataset: str, split_by: str, split: str) -> Path:
    from annotator.paths import EXPORTS_DIR

    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", Path(model.rstrip("/\\")).name or "model")
    return EXPORTS_DIR / "eval-refcoco" / f"{name}-{dataset}-{split_by}-{split}"
