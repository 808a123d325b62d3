"""`annotator eval`: REC and RES metrics of predictions against ground truth, one table row per split; and
`annotator eval refcoco`, which makes the predictions of a REFER split and sets the metrics beside the paper's."""

from __future__ import annotations

import argparse

from annotator.commands import eval_refcoco
from annotator.commands.options import OneLineParser, existing_file, help_formatter
from annotator.commands.runtime import EXIT_OK


EVAL_HELP = """\
REC and RES metrics as the paper reports them: Acc@0.5 (box IoU >= 0.5 is a hit) and mean box IoU; cIoU
(total intersection over total union) and mIoU (mean per-expression IoU) for masks; one row per split.

--gt: RefCOCO-style JSONL ({"image", "expression", "bbox": [x, y, w, h], optional "segmentation", "split"})
      or our RefCOCO-style refs export (instances.json beside it).
--pred: our COCO export (annotations with "expression" and "score") or JSONL lines
      {"image", "expression", "bbox": [x, y, w, h], optional "segmentation", "score", "latency_ms"}.

To make the predictions on RefCOCO, RefCOCO+ or RefCOCOg and compare with the paper: 'annotator eval refcoco'.

examples:
  annotator eval --gt val.jsonl --pred exports/photos.json
  annotator eval --gt refs.json --pred predictions.jsonl --benchmark
  annotator eval refcoco ~/data/refer --dataset refcoco --split val --model llava-1.5-7b --masks sam
"""


def build_parser() -> argparse.ArgumentParser:
    """The `annotator eval` parser."""
    parser = OneLineParser(prog="annotator eval", description=EVAL_HELP, formatter_class=help_formatter)
    parser.add_argument("--gt", type=existing_file, metavar="FILE", help="ground truth (required)")
    parser.add_argument("--pred", type=existing_file, metavar="FILE", help="predictions (required)")
    parser.add_argument("--benchmark", action="store_true", help="also print images/s and the latency distribution")
    sources = parser.add_subparsers(title="commands", metavar="refcoco", parser_class=OneLineParser)
    eval_refcoco.add_parser(sources)
    parser.set_defaults(handler=run, prog=parser.prog, parser=parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the metrics table (and with `--benchmark` the latencies); the exit code."""
    missing = [flag for flag, value in (("--gt", args.gt), ("--pred", args.pred)) if value is None]
    if missing:
        args.parser.error(f"the following arguments are required: {', '.join(missing)}")
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
