"""Mask model speed through `Segmenter`, per back end: image embedding vs per-prompt decode, peak memory, weights.

Every back end is built at its released shapes with random weights (no checkpoint): SAM ViT-B/H as
`sam_model_registry` builds them, SAM 2.1 tiny/small/base-plus/large as `Sam2Model` with the Hiera configs of the
released checkpoints, SAM-HQ ViT-B/L/H as `SamHQModel`. A 640 x 480 image, float32. Each back end runs in a fresh
process, so its peak RSS is its own. Every figure is the median of several repetitions after warm-up runs that are
not counted. The weights column is the float32 image model (SAM 2.1's released files also carry the video memory
modules: 156 / 184 / 324 / 898 MB for tiny / small / base-plus / large).

CPU rows: `--cpu-models` (default vit_b, SAM 2.1 tiny/small/base-plus, SAM-HQ ViT-B: about 5 minutes on a 2-core
CPU). GPU rows (when CUDA is present): `--gpu-models` (default every back end), float32 and with the image encoder
in bf16. Run: `.venv/bin/python benchmarks/sam_speed.py [--cpu-models a,b] [--gpu-models a,b]`.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import platform
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version
from typing import Callable

import numpy as np
import torch

from annotator.segmentation.backend import MaskBackend
from annotator.segmentation.catalog import mask_model_label
from annotator.segmentation.sam_v1 import SamV1Backend
from annotator.segmentation.segment import Segmenter

IMAGE_HW = (480, 640)
BOX = (180.0, 120.0, 420.0, 360.0)
POINTS = [[300.0, 240.0], [200.0, 140.0]]
LABELS = [1, 0]

_HIERA = {
    "sam2.1-tiny": dict(hidden_size=96, blocks=[1, 2, 7, 2], heads=[1, 2, 4, 8], global_blocks=[5, 7, 9]),
    "sam2.1-small": dict(hidden_size=96, blocks=[1, 2, 11, 2], heads=[1, 2, 4, 8], global_blocks=[7, 10, 13]),
    "sam2.1-base-plus": dict(
        hidden_size=112, blocks=[2, 3, 16, 3], heads=[2, 4, 8, 16], global_blocks=[12, 16, 20], background=[14, 14]
    ),
    "sam2.1-large": dict(
        hidden_size=144, blocks=[2, 6, 36, 4], heads=[2, 4, 8, 16], global_blocks=[23, 33, 43], windows=[8, 4, 16, 8]
    ),
}
"""The Hiera image encoders of the released SAM 2.1 checkpoints (sam2.1_hiera_*.yaml): widths double per stage."""

_SAM_HQ = {
    "sam-hq-vit_b": dict(),
    "sam-hq-vit_l": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, global_attn_indexes=[5, 11, 17, 23]
    ),
    "sam-hq-vit_h": dict(
        hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, global_attn_indexes=[7, 15, 23, 31]
    ),
}
"""SAM-HQ's ViT encoders (transformers' defaults are ViT-B)."""

CPU_MODELS = ("vit_b", "sam2.1-tiny", "sam2.1-small", "sam2.1-base-plus", "sam-hq-vit_b")
GPU_MODELS = ("vit_b", "vit_h", *_HIERA, *_SAM_HQ)


def build(name: str) -> MaskBackend:
    """Mask model `name` (a `catalog` name) at its released shapes with random weights, on the CPU."""
    if name in ("vit_b", "vit_l", "vit_h"):
        from segment_anything import sam_model_registry

        return SamV1Backend(sam_model_registry[name](), mask_model_label(name))
    if name in _HIERA:
        from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model

        from annotator.segmentation.sam2 import Sam2Backend

        shape = _HIERA[name]
        width = shape["hidden_size"]
        backbone = dict(
            model_type="sam2_hiera_det_model",
            hidden_size=width,
            blocks_per_stage=shape["blocks"],
            num_attention_heads_per_stage=shape["heads"],
            embed_dim_per_stage=[width, 2 * width, 4 * width, 8 * width],
            global_attention_blocks=shape["global_blocks"],
            window_positional_embedding_background_size=shape.get("background", [7, 7]),
            window_size_per_stage=shape.get("windows", [8, 4, 14, 7]),
        )
        config = Sam2Config(
            vision_config=dict(backbone_config=backbone, backbone_channel_list=[8 * width, 4 * width, 2 * width, width])
        )
        return Sam2Backend(Sam2Model(config), Sam2ImageProcessor(), mask_model_label(name))
    from transformers import SamHQConfig, SamHQModel, SamImageProcessor

    from annotator.segmentation.sam_hq import SamHQBackend

    vision = _SAM_HQ[name]
    config = SamHQConfig(vision_config=vision, mask_decoder_config=dict(vit_dim=vision.get("hidden_size", 768)))
    return SamHQBackend(SamHQModel(config), SamImageProcessor(), mask_model_label(name))


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


def run_one(name: str, device: str, bf16: bool, repeats: tuple[int, int, int], threads: int) -> dict[str, float]:
    """One back end's figures, in this process: `measure`, weights (MB, float32) and peak memory (MB: RSS on the
    CPU, allocated on a GPU)."""
    torch.set_num_threads(threads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backend = build(name)
    model = backend.sam if isinstance(backend, SamV1Backend) else backend.model
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    model.to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    encoder_dtype = torch.bfloat16 if bf16 else torch.float32
    with Segmenter(backend, encoder_dtype=encoder_dtype) as segmenter:
        figures = measure(segmenter, *repeats)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 1e6
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    return figures | {"weights_mb": weights_mb, "peak_mb": peak_mb}


def _in_fresh_process(*args: object) -> dict[str, float]:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(run_one, *args).result()


def _row(device: str, name: str, precision: str, m: dict[str, float]) -> str:
    return (
        f"| {device} | {mask_model_label(name)} | {precision} | {m['weights_mb']:.0f} | {m['embed'] * 1e3:.1f} | "
        f"{m['cached'] * 1e3:.2f} | {m['refine'] * 1e3:.2f} | {m['cold'] * 1e3:.1f} | {m['peak_mb']:.0f} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-models", default=",".join(CPU_MODELS), help="comma-separated; '' for none")
    parser.add_argument("--gpu-models", default=",".join(GPU_MODELS), help="comma-separated; '' for none")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    print("## Mask model speed (`benchmarks/sam_speed.py`)\n")
    print(f"- machine: {_cpu_name()}, {os.cpu_count()} logical CPUs, torch threads {threads}")
    print(
        f"- python {platform.python_version()}, torch {torch.__version__}, transformers {version('transformers')}, "
        f"segment-anything {version('segment-anything')}, numpy {np.__version__}"
    )
    print(f"- image {IMAGE_HW[1]} x {IMAGE_HW[0]} RGB, box {BOX}; random weights at the released shapes")
    print("- CPU: embeddings median of 3 after 1 warm-up; decodes median of 20 after 1 warm-up")
    load_before = os.getloadavg()[0]
    rows = []
    for name in filter(None, args.cpu_models.split(",")):
        rows.append(_row("CPU", name, "float32", _in_fresh_process(name, "cpu", False, (3, 20, 1), threads)))
    gpu_models = list(filter(None, args.gpu_models.split(",")))
    if gpu_models and torch.cuda.is_available():
        print(f"- GPU: {torch.cuda.get_device_name()}; embeddings median of 10, decodes median of 50, after 3 warm-ups")
        for name, (bf16, precision) in itertools.product(gpu_models, ((False, "float32"), (True, "bf16 encoder"))):
            rows.append(_row("GPU", name, precision, _in_fresh_process(name, "cuda", bf16, (10, 50, 3), threads)))
    elif gpu_models:
        print("- no GPU: the GPU rows need CUDA")
    print(f"- 1-minute load average before / after the run: {load_before:.2f} / {os.getloadavg()[0]:.2f}\n")
    print(
        "| device | mask model | precision | weights MB | image embedding ms | box decode (cached) ms | "
        "refinement (cached) ms | cold box prompt ms | peak MB (CPU: RSS, GPU: allocated) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
