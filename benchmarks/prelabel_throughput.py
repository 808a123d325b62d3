"""`annotator prelabel` throughput with the planted model: images/s with and without the loading overlap.

Usage: .venv/bin/python benchmarks/prelabel_throughput.py [--images 200] [--block 20] [--repeats 3] [--threads N]
       [--long-side MIN MAX]

A folder of generated scenes (JPEG, 1024-1600 px on the long side by default, `--long-side 4000 4000` for
phone-photo sizes; the target 9+ grid cells wide) is pre-labelled by `Prelabeller` - the loop `annotator prelabel` runs, with the same
`Proposer` the app uses - in two modes:
- overlap: a loader thread decodes up to 2 images ahead and the proposer is asked to prefetch the next image;
- inline: each image is decoded on the main thread when its turn comes (`--prefetch 0`).
The machine is shared, so its load drifts during a run: the images are split into blocks of 20 (each its own
folder, pre-labelled on a fresh project store; the blocks hold copies of the same 20 scenes, hard-linked), and
the two modes alternate block by block (which mode goes first alternates too), so both see the same load.
One warm-up block per mode is excluded. Per pass over all blocks, images/s = images / summed loop time; the
table gives each pass, the median, the ratio of the medians and the median of the per-block paired ratios.
The time is the whole loop (folder sync, resume check, decode, model, store commits), as `annotator prelabel`
reports it; model loading is not included.
"""

from __future__ import annotations

import argparse
import os
import shutil
import platform
import statistics
import tempfile
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

import torch

from annotator.grounding.grounder import Grounder
from annotator.grounding.heads import HeadsFile
from annotator.lvlm.engine import LvlmEngine
from annotator.synthetic.planted import PLANTED_MODEL_DIR
from annotator.proposer import Proposer
from annotator.synthetic.scenes import SceneConfig
from annotator.prelabel import Prelabeller, expression_plan
from annotator.project.images import image_size
from annotator.project.store import ProjectStore
from annotator.synthetic.scene_folder import write_scene_folder
from machine import cpu_name  # benchmarks/machine.py: the script's folder is on sys.path

MODES = {"overlap (loader thread, depth 2, prefetch)": 2, "inline (decode on the main thread)": 0}
SCENES = SceneConfig(long_side=(1024, 1600), aspect=(0.75, 1.33), target_width=(0.42, 0.55), other_width=(0.12, 0.3))


def run_once(
    engine: LvlmEngine,
    heads: HeadsFile,
    folder: Path,
    ground_truth: Path,
    store_path: Path,
    depth: int,
    masks: str | None,
) -> float:
    """One full pre-labelling of a folder on a fresh store; the loop's seconds.

    Each run wraps the loaded model in a new engine: the prefix cache is keyed by the store's image ids, which
    start at 1 in every fresh store, so a cache must not outlive its store.
    """
    fresh = LvlmEngine(engine.model, engine.processor, model_id=engine.model_id)
    proposer = Proposer(Grounder(fresh, heads.heads))
    with ProjectStore.open(store_path, image_root=folder) as store:
        prelabeller = Prelabeller(proposer, store, masks=masks, prefetch_depth=depth, model_id=str(PLANTED_MODEL_DIR))
        report = prelabeller.run(expression_plan(path=ground_truth))
    assert report.images_done == report.images_total and not report.skipped, report
    return report.seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--block", type=int, default=20, help="images per block; the modes alternate block by block")
    parser.add_argument(
        "--long-side", type=int, nargs=2, default=SCENES.long_side, metavar=("MIN", "MAX"), help="image size"
    )
    parser.add_argument("--repeats", type=int, default=3, help="passes over all the blocks")
    parser.add_argument("--masks", choices=("coarse",), default=None, help="also store the heads' coarse masks")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    heads = HeadsFile.load(PLANTED_MODEL_DIR / "heads.json")
    engine = LvlmEngine.load(PLANTED_MODEL_DIR, device="cpu", truncate_after_layer=max(l for l, _ in heads.heads))
    load_before = os.getloadavg()
    if args.images % args.block:
        parser.error("--images must be a multiple of --block")
    blocks = range(0, args.images, args.block)
    seconds = {mode: [[0.0] * len(blocks) for _ in range(args.repeats)] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="prelabel-throughput-") as tmp:
        tmp_path = Path(tmp)
        scenes = replace(SCENES, long_side=tuple(args.long_side))
        first_folder = tmp_path / "block-00"
        folders = [
            (first_folder, write_scene_folder(first_folder, args.block, seed=2024, config=scenes, image_format="jpg"))
        ]
        for index in range(1, len(blocks)):
            folder = tmp_path / f"block-{index:02d}"
            shutil.copytree(first_folder, folder, copy_function=os.link)
            folders.append((folder, folder / folders[0][1].name))
        megapixels = statistics.mean(
            width * height / 1e6 for folder, _ in folders for width, height in map(image_size, folder.glob("*.jpg"))
        )
        for mode, depth in MODES.items():
            run_once(engine, heads, *folders[0], tmp_path / f"warmup-{depth}.sqlite", depth, args.masks)
        runs = 0
        for repeat in range(args.repeats):
            for index, (folder, ground_truth) in enumerate(folders):
                order = list(MODES.items()) if runs % 2 == 0 else list(reversed(MODES.items()))
                runs += 1
                for mode, depth in order:
                    store = tmp_path / f"run-{repeat}-{index}-{depth}.sqlite"
                    seconds[mode][repeat][index] = run_once(
                        engine, heads, folder, ground_truth, store, depth, args.masks
                    )
    load_after = os.getloadavg()

    print("# annotator prelabel throughput (planted model)\n")
    print(
        f"- machine: {cpu_name()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, "
        f"load average {load_before[0]:.2f} before / {load_after[0]:.2f} after (shared machine)"
    )
    print(
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{version('transformers')}, numpy {version('numpy')}, Pillow {version('pillow')}"
    )
    print(
        f"- {args.images} generated JPEG scenes, mean {megapixels:.2f} MP, in {len(folders)} blocks of {args.block}; "
        f"one expression per image; masks: {args.masks or 'none (boxes)'}; device cpu; {args.repeats} passes, "
        "the two modes alternating block by block, after one warm-up block per mode\n"
    )
    print("| mode | images/s per pass | median images/s | median ms/image |")
    print("|---|---|---:|---:|")
    medians = {}
    for mode in MODES:
        per_pass = [args.images / sum(times) for times in seconds[mode]]
        medians[mode] = statistics.median(per_pass)
        print(
            f"| {mode} | {', '.join(f'{v:.2f}' for v in per_pass)} | {medians[mode]:.2f} | "
            f"{1000.0 / medians[mode]:.0f} |"
        )
    overlap_mode, inline_mode = MODES
    paired = [
        inline / overlap
        for inline_pass, overlap_pass in zip(seconds[inline_mode], seconds[overlap_mode])
        for inline, overlap in zip(inline_pass, overlap_pass)
    ]
    print(
        f"\noverlap / inline, ratio of the medians: {medians[overlap_mode] / medians[inline_mode]:.2f}x; "
        f"median of the {len(paired)} paired blocks (inline time / overlap time): {statistics.median(paired):.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
