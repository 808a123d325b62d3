"""Every benchmark's GPU section in one run, printed as one Markdown table (`benchmarks/gpu.sh` runs it).

Sections: the grounding engine on LLaVA-1.5-7B's and Qwen2-VL-7B's shapes (`lvlm_shapes`) at their real depth
(32 and 28 text layers, Qwen's 32 vision blocks) in bf16 with random weights, ours (truncated after the heads'
layer, first and further expression on an image) against the reference path (eager, `output_attentions=True`, every
layer + LM head), as `lvlm_speed` measures them; the mask models' image embedding and decodes (SAM vit_h, SAM 2.1
tiny and large, SAM-HQ ViT-H at their released shapes), float32 and with the encoder in bf16, as `sam_speed`
measures them: the rows the GPU default mask model is to be chosen from. Everything runs in this one process, one section after another; each
side's peak memory is CUDA's peak allocation since that side started, its model freed before the next one. A section
that fails is a row saying so, and the others still run; sections that would start after `BUDGET_S` are skipped.

`--dry-run`: every section at tiny sizes on the CPU (the tests' tiny LLaVA, Qwen2-VL, SAM, SAM 2.1 and SAM-HQ), which checks the
script, not the GPU; its figures mean nothing. Without `--dry-run` and without CUDA it prints "no GPU" and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUDGET_S = 420.0
MASK_SECTIONS = {"SAM vit_h": "vit_h", "SAM 2.1 tiny": "sam2.1-tiny", "SAM 2.1 large": "sam2.1-large",
                 "SAM-HQ ViT-H": "sam-hq-vit_h"}  # fmt: skip
"""Each mask family's section and the catalog model it measures (the GPU default is chosen from these rows)."""
SECTIONS = ("LLaVA-1.5-7B", "Qwen2-VL-7B", *MASK_SECTIONS)
HEADER = (
    "| section | measure | median ms | speed-up vs reference | peak MB | parameters MB |\n"
    "|---|---|---:|---:|---:|---:|"
)


@dataclass(frozen=True)
class Settings:
    """Sizes of one run: the real ones on the GPU, tiny ones on the CPU for `--dry-run`."""

    device: str
    llava: tuple[str, int]
    qwen: tuple[str, int]
    lvlm_repeats: int
    tiny_masks: bool
    sam_repeats: tuple[int, int, int]


GPU = Settings("cuda", ("llava-7b", 32), ("qwen-7b", 28), 5, False, (10, 50, 3))
DRY_RUN = Settings("cpu", ("llava-tiny", 8), ("qwen-tiny", 4), 2, True, (2, 3, 1))


def lvlm_rows(section: str, shape: tuple[str, int], settings: Settings) -> list[str]:
    """Reference, ours first and ours further expression on one model shape, each side's model freed after it."""
    from lvlm_shapes import ShapeRun
    from lvlm_speed import side_ours, side_reference

    run = ShapeRun(shape[0], shape[1], settings.device, settings.lvlm_repeats)
    reference = side_reference(run, peak_rss_kb())
    free_memory()
    ours = side_ours(run, peak_rss_kb())
    free_memory()
    ref_ms = reference["reference_ms"]
    params, peak = f"{ours['parameters_mb']:.0f}", f"{ours['peak_mb']:.0f}"
    layers = f"{ours['layers_run']} layers, {ours['image_tokens']} image tokens"
    return [
        f"| {section} | reference: eager, output_attentions, {reference['layers_run']} layers + LM head | "
        f"{ref_ms:.1f} | 1.0x | {reference['peak_mb']:.0f} | {reference['parameters_mb']:.0f} |",
        f"| {section} | ours, first expression on an image ({layers}) | {ours['first_ms']:.1f} | "
        f"{ref_ms / ours['first_ms']:.1f}x | {peak} | {params} |",
        f"| {section} | ours, further expression on the cached image | {ours['further_ms']:.1f} | "
        f"{ref_ms / ours['further_ms']:.1f}x | {peak} | {params} |",
    ]


def mask_backend(name: str, tiny: bool):
    """The mask model `name` at its released shapes with random weights, or (`tiny`) the tests' tiny one of its
    family."""
    if not tiny:
        from sam_speed import build

        return build(name)
    if name.startswith("sam2.1"):
        from tests.tiny_sam2 import build_tiny_sam2

        return build_tiny_sam2()
    if name.startswith("sam-hq"):
        from tests.tiny_sam2 import build_tiny_sam_hq

        return build_tiny_sam_hq()
    from annotator.segmentation.sam_v1 import SamV1Backend
    from tests.tiny_sam import build_tiny_sam

    return SamV1Backend(build_tiny_sam())


def sam_rows(section: str, settings: Settings) -> list[str]:
    """A mask model's embedding, cold and cached box prompt and cached refinement, float32 and with the encoder in
    bf16."""
    import torch

    from annotator.segmentation.segment import Segmenter
    from lvlm_speed import peak_memory_mb, reset_peak_memory
    from sam_speed import measure

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backend = mask_backend(MASK_SECTIONS[section], settings.tiny_masks)
    from annotator.segmentation.sam_v1 import SamV1Backend

    module = (backend.sam if isinstance(backend, SamV1Backend) else backend.model).to(settings.device)
    params = sum(p.numel() * p.element_size() for p in module.parameters()) / 2**20
    embed_repeats, decode_repeats, warmup = settings.sam_repeats
    rows = []
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bf16 encoder")):
        free_memory()
        reset_peak_memory(settings.device)
        baseline_kb = peak_rss_kb()
        with Segmenter(backend, encoder_dtype=dtype) as segmenter:
            m = measure(segmenter, embed_repeats=embed_repeats, decode_repeats=decode_repeats, warmup=warmup)
        peak = f"{peak_memory_mb(settings.device, baseline_kb):.0f}"
        for measure_name, key in (
            ("image embedding", "embed"),
            ("box prompt, cold (embedding + decode)", "cold"),
            ("box prompt, cached (decode only)", "cached"),
            ("point refinement, cached", "refine"),
        ):
            rows.append(f"| {section} | {name}: {measure_name} | {m[key] * 1e3:.2f} | — | {peak} | {params:.0f} |")
    return rows


def peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sections(settings: Settings) -> list[tuple[str, Callable[[], list[str]]]]:
    return [
        (SECTIONS[0], lambda: lvlm_rows(SECTIONS[0], settings.llava, settings)),
        (SECTIONS[1], lambda: lvlm_rows(SECTIONS[1], settings.qwen, settings)),
        *((section, lambda section=section: sam_rows(section, settings)) for section in MASK_SECTIONS),
    ]


def run_sections(settings: Settings, budget_s: float) -> tuple[list[str], list[str]]:
    """The table's rows, and the traceback of each failed section (for stderr)."""
    started = time.perf_counter()
    rows, notes = [], []
    for name, section in sections(settings):
        if time.perf_counter() - started > budget_s:
            rows.append(f"| {name} | skipped: past the time budget of {budget_s:.0f} s | — | — | — | — |")
            continue
        section_start = time.perf_counter()
        try:
            rows += section()
        except Exception as exc:  # a failed section is reported as a row, the others still run
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            rows.append(f"| {name} | failed: {type(exc).__name__}: {reason} | — | — | — | — |")
            notes.append(f"{name}:\n{traceback.format_exc(limit=4)}")
            free_memory()
        print(f"- {name}: {time.perf_counter() - section_start:.0f} s", file=sys.stderr, flush=True)
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every section at tiny sizes on the CPU")
    args = parser.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("no GPU: torch sees no CUDA device, so there is nothing to measure (--dry-run checks the script)")
        return 0
    settings, kind = GPU, "random weights, the grounding models in bf16"
    if args.dry_run:
        settings, kind = DRY_RUN, "DRY RUN: tiny models on the CPU, figures mean nothing"
        torch.set_num_threads(1)
    from lvlm_shapes import IMAGE_WH
    from lvlm_speed import machine_lines

    started = time.perf_counter()
    rows, notes = run_sections(settings, BUDGET_S)
    print(f"# GPU benchmarks ({kind})\n")
    print("\n".join(machine_lines()))
    for section, (shape, layers) in zip(SECTIONS, (settings.llava, settings.qwen)):
        width, height = IMAGE_WH[shape]
        print(f"- {section}: shape {shape}, {layers} text layers, {width} x {height} images")
    print(
        f"- grounding: medians of {settings.lvlm_repeats} after one warm-up; peak memory: CUDA's peak allocation since "
        f"the side started (on the CPU: the growth of the process's peak RSS)"
    )
    embed_repeats, decode_repeats, warmup = settings.sam_repeats
    masks = "the tests' tiny models of each family" if settings.tiny_masks else "released shapes, random weights"
    print(
        f"- mask models ({masks}): 640 x 480 image; embeddings median of {embed_repeats}, decodes of "
        f"{decode_repeats}, after {warmup} warm-up(s)"
    )
    print(f"- total {time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.1f}\n")
    print(HEADER)
    print("\n".join(rows))
    for note in notes:
        print(f"\n{note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
