"""The honest limits of the localization-head method, measured on the planted models (issues 8 and 17).

First a side-by-side table on the same scenes (photo-sized, 1000-1600 px on the long side): the planted LLaVA (a
fixed 24 x 24 grid over the padded square) against the planted Qwen2-VL at two `max_pixels` budgets (native
resolution, one token per 28 x 28 px): Acc@0.5 and mIoU by the target's width in pixels, tokens and milliseconds
per image. Then, for the planted LLaVA, Markdown tables: Acc@0.5 and mean IoU of the paper's box (three planted heads, 7 x 7 Gaussian with sigma 1,
above-mean foreground, largest convex hull) by the target's width in grid cells, by image aspect ratio and by
shape; then tau and the top-10 heads' vote counts of a discovery run. Saves a PNG of the three heads' maps and the
box on one demo scene (default /tmp/planted_heads_demo.png).

Run: .venv/bin/python benchmarks/planted_accuracy.py [--families-scenes 200] [--scenes 600] [--discovery 300]
[--png PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from annotator.grounding.grounder import Grounder
from annotator.grounding.heads import select_localization_heads
from annotator.lvlm.engine import LvlmEngine
from annotator.synthetic.planted import PLANTED_HEADS, PLANTED_MODEL_DIR
from annotator.synthetic.planted_qwen import PLANTED_QWEN_DIR, PLANTED_QWEN_HEADS
from annotator.synthetic.scenes import SceneConfig, box_iou, generate_scenes
from annotator.paths import DEMO_DIR

SWEEP_CONFIG = SceneConfig(aspect=(1 / 3, 3.0), target_width=(0.03, 0.75))
WIDTH_EDGES = (0, 2, 4, 6, 8, 10, 12, np.inf)
FAMILIES_CONFIG = SceneConfig(long_side=(1000, 1600), target_width=(0.02, 0.5))
PIXEL_EDGES = (0, 24, 48, 96, 192, np.inf)
QWEN_BUDGETS_TOKENS = (576, 2304)
ASPECT_BINS = ((1 / 3, 1 / 2, "1:3 - 1:2"), (1 / 2, 2 / 3, "1:2 - 2:3"), (2 / 3, 1.0, "2:3 - 1:1"),
               (1.0, 3 / 2, "1:1 - 3:2"), (3 / 2, 2.0, "3:2 - 2:1"), (2.0, 3.0 + 1e-9, "2:1 - 3:1"))  # fmt: skip


def machine() -> str:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    return (
        f"{platform.system()} {cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), transformers {transformers.__version__}, numpy {np.__version__}, "
        f"Python {sys.version.split()[0]}"
    )


def sweep(engine: LvlmEngine, count: int, seed: int) -> dict[str, np.ndarray]:
    """IoU, target width in cells, image aspect and shape for `count` scenes of the sweep config."""
    grounder = Grounder(engine, PLANTED_HEADS.localization)
    rows = {"iou": [], "cells": [], "aspect": [], "shape": [], "ms": []}
    for scene in generate_scenes(seed, count, SWEEP_CONFIG):
        proposal = grounder.propose(scene.image, scene.expression)
        rows["iou"].append(box_iou(proposal.box_xyxy, scene.target.box_xyxy))
        rows["cells"].append(scene.target.width_cells(proposal.frame))
        rows["aspect"].append(scene.aspect)
        rows["shape"].append(scene.target.shape)
        rows["ms"].append(proposal.timing.total_ms)
    return {key: np.asarray(values) for key, values in rows.items()}


def families_table(count: int, seed: int) -> str:
    """Acc@0.5 / mIoU by target width in pixels, tokens and ms per image: LLaVA vs Qwen2-VL at two budgets."""
    runs = [("planted LLaVA, 24 x 24", LvlmEngine.load(PLANTED_MODEL_DIR), PLANTED_HEADS.localization)]
    for tokens in QWEN_BUDGETS_TOKENS:
        engine = LvlmEngine.load(PLANTED_QWEN_DIR, max_pixels=tokens * 28 * 28)
        runs.append((f"planted Qwen2-VL, <= {tokens} tokens", engine, PLANTED_QWEN_HEADS.localization))
    scenes = list(generate_scenes(seed, count, FAMILIES_CONFIG))
    widths = np.array([s.target.box_xyxy[2] - s.target.box_xyxy[0] for s in scenes], dtype=float)
    bins = list(zip(PIXEL_EDGES, PIXEL_EDGES[1:]))
    labels = [f"{lo:g} - {hi:g} px" if np.isfinite(hi) else f"{lo:g}+ px" for lo, hi in bins]
    masks = [(widths >= lo) & (widths < hi) for lo, hi in bins]
    results = []
    for _, engine, heads in runs:
        grounder = Grounder(engine, heads)
        ious, tokens, ms = [], [], []
        for scene in scenes:
            proposal = grounder.propose(scene.image, scene.expression)
            ious.append(box_iou(proposal.box_xyxy, scene.target.box_xyxy))
            tokens.append(engine.layout_for(scene.width, scene.height).num_tokens)
            ms.append(proposal.timing.total_ms)
        results.append((np.asarray(ious), np.asarray(tokens), np.asarray(ms)))
    header = "| target width | scenes | " + " | ".join(f"{label}: Acc@0.5 / mIoU" for label, _, _ in runs) + " |"
    lines = [header, "|---|---:|" + "---:|" * len(runs)]
    for label, mask in zip(labels + ["all"], masks + [np.ones(len(scenes), dtype=bool)]):
        cells = [f"{(i[mask] >= 0.5).mean():.3f} / {i[mask].mean():.3f}" if mask.any() else "-" for i, _, _ in results]
        lines.append(f"| {label} | {int(mask.sum())} | " + " | ".join(cells) + " |")
    lines.append("| tokens per image (mean) | | " + " | ".join(f"{t.mean():.0f}" for _, t, _ in results) + " |")
    lines.append("| ms per image (median) | | " + " | ".join(f"{np.median(m):.0f}" for _, _, m in results) + " |")
    return (
        f"Side by side on the same {count} scenes (seed {seed}): long side 1000-1600 px, aspect 1:3 - 3:1, target "
        f"2-50 % of the long side; each model with its own three planted heads; first expression on each image "
        f"(prefix computed).\n\n" + "\n".join(lines)
    )


def table(title: str, labels: list[str], masks: list[np.ndarray], ious: np.ndarray) -> str:
    lines = [f"| {title} | scenes | Acc@0.5 | mIoU |", "|---|---:|---:|---:|"]
    for label, mask in zip(labels, masks):
        n = int(mask.sum())
        if n == 0:
            lines.append(f"| {label} | 0 | - | - |")
            continue
        lines.append(f"| {label} | {n} | {(ious[mask] >= 0.5).mean():.3f} | {ious[mask].mean():.3f} |")
    union = np.any(masks, axis=0)
    lines.append(f"| all | {int(union.sum())} | {(ious[union] >= 0.5).mean():.3f} | {ious[union].mean():.3f} |")
    return "\n".join(lines)


def discovery_table(engine: LvlmEngine, count: int, seed: int) -> str:
    samples = (engine.image_attention(s.image, s.expression) for s in generate_scenes(seed, count))
    selection = select_localization_heads(samples)
    lines = [
        f"Discovery over {selection.num_samples} scenes (seed {seed}): heads {selection.heads}, tau = "
        f"{selection.tau:.4f}, {len(selection.candidates)} candidates above tau in layers >= 2.",
        "",
        "| rank | head (layer, head) | planted role | votes | frequency | mean image sum | mean entropy |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for rank, (head, votes) in enumerate(list(selection.votes.items())[:10], start=1):
        lines.append(
            f"| {rank} | {head} | {PLANTED_HEADS.role(head)} | {votes} | {votes / selection.num_samples:.2f} | "
            f"{selection.mean_sums[head]:.3f} | {selection.mean_entropy[head]:.3f} |"
        )
    ordered = np.sort(selection.mean_sums.ravel())
    below = ordered[ordered <= selection.tau]
    above = ordered[ordered > selection.tau]
    lines += [
        "",
        f"Sorted mean sums: {len(below)} heads at or below tau (max {below.max():.3f}), {len(above)} above "
        f"(min {above.min():.3f}); tau is the elbow point, the top of the low cluster.",
    ]
    return "\n".join(lines)


def demo_figure(engine: LvlmEngine, path: Path) -> str:
    """The three heads' maps, their combination and the box on demo scene 1's first object."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = json.loads((DEMO_DIR / "ground_truth.jsonl").read_text(encoding="utf-8").splitlines()[0])
    image = cv2.cvtColor(cv2.imread(str(DEMO_DIR / truth["image"])), cv2.COLOR_BGR2RGB)
    target = truth["objects"][0]
    proposal = Grounder(engine, PLANTED_HEADS.localization).propose(image, target["expression"])
    frame = proposal.frame
    panels = [(f"head {h}", frame.grid_map_to_pixels(m, "nearest")) for h, m in zip(proposal.heads, proposal.head_maps)]
    panels.append(("combined (smoothed sum)", proposal.heatmap))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4 * (len(panels) + 1), 4))
    axes[0].imshow(image)
    axes[0].set_title(f'"{target["expression"]}"')
    for ax, (title, heat) in zip(axes[1:], panels):
        ax.imshow(image)
        ax.imshow(heat, alpha=0.6, cmap="inferno")
        ax.set_title(title)
    for ax in axes:
        for box, colour in ((target["box_xyxy"], "lime"), (proposal.box_xyxy, "red")):
            x0, y0, x1, y1 = box
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=2))
        ax.axis("off")
    fig.suptitle("green: ground truth, red: the paper's box from the three planted heads")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    iou = box_iou(proposal.box_xyxy, target["box_xyxy"])
    return (
        f"Saved {path}: {truth['image']}, \"{target['expression']}\", box {tuple(round(v) for v in proposal.box_xyxy)} "
        f"vs truth {tuple(target['box_xyxy'])}, IoU {iou:.3f}, score {proposal.score:.3f}."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families-scenes", type=int, default=200, help="scenes in the LLaVA vs Qwen2-VL table")
    parser.add_argument("--scenes", type=int, default=600, help="scenes in the accuracy sweep")
    parser.add_argument("--discovery", type=int, default=300, help="scenes in the discovery run")
    parser.add_argument("--png", type=Path, default=Path("/tmp/planted_heads_demo.png"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the model is tiny; default 1)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    print(f"Machine: {machine()}\n")
    if args.families_scenes:
        print(families_table(args.families_scenes, seed=5) + "\n")
    engine = LvlmEngine.load(PLANTED_MODEL_DIR)
    start = time.perf_counter()
    rows = sweep(engine, args.scenes, seed=3)
    print(
        f"Sweep: {args.scenes} scenes (seed 3), image aspect 1:3 - 3:1 log-uniform, target width 3-75 % of the long "
        f"side (clamped to fit), heads {list(PLANTED_HEADS.localization)}; median grounding call "
        f"{np.median(rows['ms']):.0f} ms, {time.perf_counter() - start:.0f} s in all.\n"
    )
    ious = rows["iou"]
    bins = list(zip(WIDTH_EDGES, WIDTH_EDGES[1:]))
    width_labels = [f"{lo:g} - {hi:g}" if np.isfinite(hi) else f"{lo:g}+" for lo, hi in bins]
    width_masks = [(rows["cells"] >= lo) & (rows["cells"] < hi) for lo, hi in bins]
    print(table("target width (grid cells)", width_labels, width_masks, ious) + "\n")
    aspect_masks = [(rows["aspect"] >= lo) & (rows["aspect"] < hi) for lo, hi, _ in ASPECT_BINS]
    print(table("image aspect (w:h)", [label for _, _, label in ASPECT_BINS], aspect_masks, ious) + "\n")
    wide = rows["cells"] >= 9
    aspect_labels = [label for _, _, label in ASPECT_BINS]
    print(table("image aspect, targets >= 9 cells wide", aspect_labels, [m & wide for m in aspect_masks], ious) + "\n")
    shapes = sorted(set(rows["shape"]))
    print(table("target shape", shapes, [rows["shape"] == s for s in shapes], ious) + "\n")
    print(discovery_table(engine, args.discovery, seed=1) + "\n")
    print(demo_figure(engine, args.png))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
