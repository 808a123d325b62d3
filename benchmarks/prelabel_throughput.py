"""`annotator prelabel` throughput with the planted model: images/s with and without the loading overlap.

Usage: .venv/bin/python benchmarks/prelabel_throughput.py [--images 200] [--repeats 3] [--masks coarse] [--threads N]

A folder of generated scenes (JPEG, 1024-1600 px on the long side, so decoding costs what a photo's does; the
target 9+ grid cells wide) is pre-labelled by `Prelabeller` - the loop `annotator prelabel` runs, with the same
`Proposer` the app uses - in two modes:
- overlap: a loader thread decodes up to 2 images ahead and the proposer is asked to prefetch the next image;
- inline: each image is decoded on the main thread when its turn comes (`--prefetch 0`).
Every run starts from a fresh project store. One warm-up run per mode is excluded; the repetitions alternate
the two modes so that a change in the machine's load hits both. The table gives each run's images/s, the median,
and the ratio of the medians. The time is the whole loop (folder sync, resume check, decode, model, store
commits), as `annotator prelabel` reports it; model loading is not included.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from importlib.metadata import version
from pathlib import Path

import torch

from annotator.grounding.grounder import Grounder
from annotator.grounding.heads import HeadsFile
from annotator.grounding.lvlm import LvlmEngine
from annotator.grounding.planted import PLANTED_MODEL_DIR
from annotator.grounding.proposer import Proposer
from annotator.grounding.scenes import SceneConfig
from annotator.prelabel import Prelabeller, expression_plan
from annotator.project.images import image_size
from annotator.project.store import ProjectStore
from annotator.scene_folder import write_scene_folder

MODES = {"overlap (loader thread, depth 2, prefetch)": 2, "inline (decode on the main thread)": 0}
SCENES = SceneConfig(long_side=(1024, 1600), aspect=(0.75, 1.33), target_width=(0.42, 0.55), other_width=(0.12, 0.3))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_once(proposer: Proposer, folder: Path, ground_truth: Path, store_path: Path, depth: int, masks: str | None) -> float:
    """One full pre-labelling of the folder on a fresh store; images per second."""
    with ProjectStore.open(store_path, image_root=folder) as store:
        prelabeller = Prelabeller(proposer, store, masks=masks, prefetch_depth=depth, model_id=str(PLANTED_MODEL_DIR))
        report = prelabeller.run(expression_plan(path=ground_truth))
    assert report.images_done == report.images_total and not report.skipped, report
    return report.images_per_second


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--masks", choices=("coarse",), default=None, help="also store the heads' coarse masks")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    heads = HeadsFile.load(PLANTED_MODEL_DIR / "heads.json")
    engine = LvlmEngine.load(PLANTED_MODEL_DIR, device="cpu", truncate_after_layer=max(l for l, _ in heads.heads))
    proposer = Proposer(Grounder(engine, heads.heads))
    load_before = os.getloadavg()
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="prelabel-throughput-") as tmp:
        tmp_path = Path(tmp)
        folder = tmp_path / "scenes"
        ground_truth = write_scene_folder(folder, args.images, seed=2024, config=SCENES, image_format="jpg")
        megapixels = statistics.mean(
            width * height / 1e6 for width, height in (image_size(p) for p in folder.glob("*.jpg"))
        )
        for mode, depth in MODES.items():
            run_once(proposer, folder, ground_truth, tmp_path / f"warmup-{depth}.sqlite", depth, args.masks)
        for repeat in range(args.repeats):
            order = list(MODES.items()) if repeat % 2 == 0 else list(reversed(MODES.items()))
            for mode, depth in order:
                store = tmp_path / f"run-{repeat}-{depth}.sqlite"
                results[mode].append(run_once(proposer, folder, ground_truth, store, depth, args.masks))
    load_after = os.getloadavg()

    print("# annotator prelabel throughput (planted model)\n")
    print(f"- machine: {cpu_name()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, "
          f"load average {load_before[0]:.2f} before / {load_after[0]:.2f} after (shared machine)")
    print(f"- versions: Python {platform.python_version()}, torch {torch.__version__}, transformers "
          f"{version('transformers')}, numpy {version('numpy')}, Pillow {version('pillow')}")
    print(f"- {args.images} generated JPEG scenes, mean {megapixels:.2f} MP; one expression per image; masks: "
          f"{args.masks or 'none (boxes)'}; device cpu; {args.repeats} repetitions per mode after one warm-up run\n")
    print("| mode | images/s per run | median images/s | median ms/image |")
    print("|---|---|---:|---:|")
    medians = {}
    for mode, values in results.items():
        medians[mode] = statistics.median(values)
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {mode} | {runs} | {medians[mode]:.2f} | {1000.0 / medians[mode]:.0f} |")
    overlap, inline = medians.values()
    print(f"\noverlap / inline: {overlap / inline:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
