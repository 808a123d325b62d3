"""SAM speed through `Segmenter`: image embedding vs per-prompt decode, cold vs cached.

CPU: vit_b as `sam_model_registry` builds it (random weights, no checkpoint), float32, a 640 x 480 image.
GPU (when CUDA is present): vit_h, float32 and with the image encoder in bf16.
Every figure is the median of several repetitions after warm-up runs that are not counted.
Run: `.venv/bin/python benchmarks/sam_speed.py` (about 3 minutes on a 2-core CPU).
"""

from __future__ import annotations

import itertools
import os
import platform
import statistics
import time
from importlib.metadata import version
from typing import Callable

import numpy as np
import torch
from segment_anything import sam_model_registry

from annotator.segmentation.segment import Segmenter

IMAGE_HW = (480, 640)
BOX = (180.0, 120.0, 420.0, 360.0)
POINTS = [[300.0, 240.0], [200.0, 140.0]]
LABELS = [1, 0]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _median_s(run: Callable[[], object], repeats: int, warmup: int, sync: Callable[[], None]) -> float:
    for _ in range(warmup):
        run()
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(segmenter: Segmenter, embed_repeats: int, decode_repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds of: embedding alone, a cold box prompt, a cached box prompt, a cached point refinement."""
    image = np.random.default_rng(0).integers(0, 256, size=(*IMAGE_HW, 3), dtype=np.uint8)
    fresh_ids = itertools.count()
    sync = torch.cuda.synchronize if segmenter.device.type == "cuda" else (lambda: None)
    embed = _median_s(lambda: segmenter.prefetch(f"e{next(fresh_ids)}", image).result(), embed_repeats, warmup, sync)
    cold = _median_s(lambda: segmenter.segment_box(f"c{next(fresh_ids)}", image, BOX), embed_repeats, 0, sync)
    first = segmenter.segment_box("cached", image, BOX)
    cached = _median_s(lambda: segmenter.segment_box("cached", image, BOX), decode_repeats, warmup, sync)
    refine = _median_s(
        lambda: segmenter.refine("cached", image, BOX, POINTS, LABELS, previous=first), decode_repeats, warmup, sync
    )
    return {"embed": embed, "cold": cold, "cached": cached, "refine": refine}


def _rows(label: str, m: dict[str, float]) -> list[str]:
    return [
        f"| {label} | image embedding (prefetch) | {m['embed'] * 1e3:.1f} ms |",
        f"| {label} | box prompt, cold (embedding + decode) | {m['cold'] * 1e3:.1f} ms |",
        f"| {label} | box prompt, cached (decode only) | {m['cached'] * 1e3:.2f} ms |",
        f"| {label} | point refinement, cached (box + 2 points + previous logits) | {m['refine'] * 1e3:.2f} ms |",
        f"| {label} | cold / cached box prompt | {m['cold'] / m['cached']:.0f}x |",
    ]


def main() -> None:
    print("## SAM speed (`benchmarks/sam_speed.py`)\n")
    print(f"- machine: {_cpu_name()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}")
    print(
        f"- python {platform.python_version()}, torch {torch.__version__}, "
        f"segment-anything {version('segment-anything')}, numpy {np.__version__}"
    )
    print(f"- image {IMAGE_HW[1]} x {IMAGE_HW[0]} RGB, box {BOX}; random weights from `sam_model_registry`")
    print("- CPU: embeddings median of 3 after 1 warm-up; decodes median of 20 after 1 warm-up\n")

    load_before = os.getloadavg()[0]
    rows = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cpu_sam = sam_model_registry["vit_b"]()
    with Segmenter(cpu_sam.to("cpu")) as segmenter:
        rows += _rows("CPU vit_b float32", measure(segmenter, embed_repeats=3, decode_repeats=20, warmup=1))
    del cpu_sam

    if torch.cuda.is_available():
        gpu_name = torch.cuda.get_device_name()
        print(f"- GPU: {gpu_name}; embeddings median of 10, decodes median of 50, after 3 warm-ups\n")
        gpu_sam = sam_model_registry["vit_h"]().to("cuda")
        for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bf16 encoder")):
            with Segmenter(gpu_sam, encoder_dtype=dtype) as segmenter:
                rows += _rows(f"GPU vit_h {name}", measure(segmenter, embed_repeats=10, decode_repeats=50, warmup=3))
    else:
        print("- no GPU: the vit_h float32 / bf16 section needs CUDA\n")

    print(f"- 1-minute load average before / after the run: {load_before:.2f} / {os.getloadavg()[0]:.2f}\n")
    print("| device, model | measure | median |")
    print("| --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
