"""Soak: `annotator prelabel` over 2,000 generated images with masks keeps its resident memory flat.

Usage: .venv/bin/python benchmarks/prelabel_soak.py [--images 2000] [--every 100] [--masks sam|coarse]

The loop `annotator prelabel` runs (`Prelabeller` with the app's `Proposer`), the planted model, one expression
per image, masks stored as RLE in the project store. `--masks sam` (the default) segments with a tiny Segment
Anything built from segment_anything's own classes with random weights (the fixture of tests/tiny_sam.py): the
real `Segmenter` path with its embedding cache and prefetch, at a size this CPU runs in ~0.1 s per image;
`--masks coarse` stores the heads' region instead. The process's resident set size (VmRSS) is sampled every
`--every` images; the table is the curve, and the check is the growth after the first 200 images (< 10%).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch

from annotator.grounding.grounder import Grounder
from annotator.grounding.heads import HeadsFile
from annotator.lvlm.engine import LvlmEngine
from annotator.synthetic.planted import PLANTED_MODEL_DIR
from annotator.proposer import Proposer
from annotator.synthetic.scenes import SceneConfig
from annotator.segmentation.segment import Segmenter
from annotator.prelabel import Prelabeller, expression_plan
from annotator.project.store import ProjectStore
from annotator.synthetic.scene_folder import write_scene_folder
from machine import cpu_name  # benchmarks/machine.py: the script's folder is on sys.path

BASELINE_IMAGES = 200
GROWTH_LIMIT = 0.10
SCENES = SceneConfig(long_side=(320, 512), target_width=(0.3, 0.55))


def resident_mb() -> float:
    """This process's resident set size in MiB (Linux /proc; the peak from getrusage elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def tiny_segmenter() -> Segmenter:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.tiny_sam import build_tiny_sam

    return Segmenter(build_tiny_sam())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--masks", choices=("sam", "coarse"), default="sam")
    args = parser.parse_args()

    heads = HeadsFile.load(PLANTED_MODEL_DIR / "heads.json")
    engine = LvlmEngine.load(PLANTED_MODEL_DIR, device="cpu", truncate_after_layer=max(l for l, _ in heads.heads))
    segmenter = tiny_segmenter() if args.masks == "sam" else None
    proposer = Proposer(Grounder(engine, heads.heads), segmenter)
    curve: list[tuple[int, float, float]] = []
    start = time.perf_counter()

    def sample(done: int, already_done: int, total: int) -> None:
        if done % args.every == 0 or done == total:
            curve.append((done, resident_mb(), time.perf_counter() - start))

    with tempfile.TemporaryDirectory(prefix="prelabel-soak-") as tmp:
        folder = Path(tmp) / "scenes"
        ground_truth = write_scene_folder(folder, args.images, seed=99, config=SCENES)
        start = time.perf_counter()
        with ProjectStore.for_folder(folder) as store:
            prelabeller = Prelabeller(proposer, store, masks=args.masks, model_id=str(PLANTED_MODEL_DIR))
            report = prelabeller.run(expression_plan(path=ground_truth), progress=sample)
            stored = len(store.annotations())
    if segmenter is not None:
        segmenter.close()

    baseline = next(rss for done, rss, _ in curve if done >= BASELINE_IMAGES)
    after = [(done, rss) for done, rss, _ in curve if done >= BASELINE_IMAGES]
    peak_done, peak = max(after, key=lambda item: item[1])
    growth = peak / baseline - 1.0
    print("# annotator prelabel soak (planted model)\n")
    print(f"- load average at the end: {os.getloadavg()[0]:.2f} (shared machine)")
    print(
        f"- machine: {cpu_name()}, {os.cpu_count()} logical CPUs, torch threads "
        f"{torch.get_num_threads()}; Python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{version('transformers')}, segment-anything {version('segment-anything')}"
    )
    print(
        f"- {report.images_done} images labelled, {stored} proposals stored with {args.masks} masks, "
        f"{report.seconds:.0f} s ({report.images_per_second:.2f} images/s); skipped {len(report.skipped)}\n"
    )
    print("| images | resident MiB | vs. image 200 | elapsed s |")
    print("|---:|---:|---:|---:|")
    for done, rss, elapsed in curve:
        relative = f"{100 * (rss / baseline - 1):+.1f}%" if done >= BASELINE_IMAGES else ""
        print(f"| {done} | {rss:.1f} | {relative} | {elapsed:.0f} |")
    verdict = "PASS" if growth < GROWTH_LIMIT else "FAIL"
    print(
        f"\npeak after image {BASELINE_IMAGES}: {peak:.1f} MiB at image {peak_done}, growth {100 * growth:+.1f}% "
        f"(limit {100 * GROWTH_LIMIT:.0f}%): {verdict}"
    )
    return 0 if growth < GROWTH_LIMIT else 1


if __name__ == "__main__":
    raise SystemExit(main())
