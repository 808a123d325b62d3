"""The grounding engine on each newer family's smallest released shape, random weights, CPU (issue 22).

The shapes (`lvlm_shapes.family_config`, `family_processor`): llava-onevision-qwen2-0.5b-ov, deepseek-vl-1.3b-chat,
Qwen3-VL-2B-Instruct and InternVL3-1B-hf at their config.json widths, with the families' real image processors at
the released settings, on one 1155 x 866 image. Each side of each family runs in a fresh process; the text layers
and vision blocks are the caller's (fewer than the real ones where a CPU would take minutes), the heads sit at
LLaVA-1.5-7B's relative depth (layer floor(14 / 32 * L)), and the reference (eager, `output_attentions=True`, every
layer and the LM head) runs for the families asked (it holds every layer's attentions at once: affordable only for
about a thousand image tokens).
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lvlm_shapes import (  # benchmarks/lvlm_shapes.py
    FAMILY_DEPTH,
    FAMILY_NAMES,
    build_from_config,
    config_parameter_bytes,
    family_config,
    family_processor,
    heads_at_relative_depth,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IMAGE_WH = (1155, 866)
EXPRESSIONS = ("the red cup on the left", "a small dog", "the man who is holding the blue ball", "the second car")


@dataclass(frozen=True)
class FamilyRun:
    """One family's shape with `layers` text layers and `vision_blocks` vision blocks, timed `repeats` times;
    `reference`: also run the eager reference on the whole model."""

    family: str
    layers: int
    vision_blocks: int
    repeats: int = 1
    reference: bool = False


def random_image(seed: int):
    import numpy as np

    width, height = IMAGE_WH
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def rss_mb(baseline_kb: int) -> float:
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kb) / 1024


def side_ours(run: FamilyRun, baseline_kb: int) -> dict:
    """The engine on the model truncated after the heads' layer: `repeats` first expressions, each on a new image
    (the first call of the process included: every call takes seconds), then further expressions on the last
    image's cached prefix (median after one warm-up)."""
    import torch

    from annotator.lvlm.engine import LvlmEngine

    heads = heads_at_relative_depth(run.layers, family_config(run.family, 1, 1).text_config.num_attention_heads)
    model = build_from_config(
        family_config(run.family, run.layers, run.vision_blocks), heads[0][0], "cpu", torch.float32
    )
    engine = LvlmEngine(model, family_processor(run.family), prefix_cache_size=run.repeats + 1)
    first = [
        engine.head_attention(random_image(i), EXPRESSIONS[0], heads, image_id=i).timing.total_ms
        for i in range(run.repeats)
    ]
    last = run.repeats - 1
    further = [
        engine.head_attention(random_image(last), EXPRESSIONS[1 + i % 3], heads, image_id=last).timing.total_ms
        for i in range(4)
    ]
    return {
        "image_tokens": engine.layout_for(*IMAGE_WH).num_tokens,
        "layers_run": heads[0][0] + 1,
        "first_ms": statistics.median(first),
        "further_ms": statistics.median(further[1:]),
        "peak_mb": rss_mb(baseline_kb),
    }


def side_reference(run: FamilyRun, baseline_kb: int) -> dict:
    """The paper's path on the whole model: eager attention, `output_attentions=True`, every layer, the LM head;
    `repeats` calls, each on a new image with a new expression."""
    import torch

    from annotator.lvlm.engine import LvlmEngine

    heads = heads_at_relative_depth(run.layers, family_config(run.family, 1, 1).text_config.num_attention_heads)
    model = build_from_config(family_config(run.family, run.layers, run.vision_blocks), None, "cpu", torch.float32)
    inputs = LvlmEngine(model, family_processor(run.family), prefix_cache_size=0)
    model.set_attn_implementation("eager")
    times = []
    for i in range(run.repeats):
        start = time.perf_counter()
        pixels, _ = inputs.pixel_values(random_image(i))
        prompt = inputs.prompt(EXPRESSIONS[i % len(EXPRESSIONS)], IMAGE_WH)
        ids = torch.tensor([prompt.ids])
        vision = pixels if isinstance(pixels, dict) else {"pixel_values": pixels}
        if run.family == "qwen3":
            vision = vision | {"mm_token_type_ids": (ids == model.config.image_token_id).int()}
        with torch.inference_mode():
            out = model(input_ids=ids, output_attentions=True, **vision)
            torch.stack([out.attentions[layer][0, head, -1, prompt.prefix.image_positions] for layer, head in heads])
        times.append((time.perf_counter() - start) * 1000.0)
    return {"reference_ms": statistics.median(times), "peak_mb": rss_mb(baseline_kb)}


def run_side(side: str, run: FamilyRun) -> dict:
    """One side in a fresh Python process, so that its memory is its own and freed after it."""
    request = json.dumps({"side": side, "run": dataclasses.asdict(run)})
    done = subprocess.run(
        [sys.executable, __file__, "--side", request], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if done.returncode != 0:
        raise RuntimeError(f"{side} side of {run.family} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def side_main(request: str) -> None:
    """Run one side and print its result as one JSON line; the baseline memory is taken after the imports."""
    import torch
    import transformers  # noqa: F401  (imported before the baseline: its modules are not the model's memory)

    import annotator.lvlm.engine  # noqa: F401

    spec = json.loads(request)
    run = FamilyRun(**spec["run"])
    load_average = os.getloadavg()[0]
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    measure = side_ours if spec["side"] == "ours" else side_reference
    print(json.dumps(measure(run, baseline_kb) | {"threads": torch.get_num_threads(), "load_average": load_average}))


def truncated_bytes(family: str) -> tuple[int, int, int]:
    """The real config's bf16 parameter bytes, whole and truncated after the relative-depth layer; that layer."""
    layers, vision_blocks = FAMILY_DEPTH[family]
    layer = heads_at_relative_depth(layers, 1)[0][0]
    config = family_config(family, layers, vision_blocks)
    whole = config_parameter_bytes(config, None)
    return whole, config_parameter_bytes(family_config(family, layers, vision_blocks), layer), layer


def family_rows(runs: list[FamilyRun]) -> list[str]:
    """One Markdown row per family: tokens, ours (first and further expression), the reference, parameter bytes."""
    rows = []
    for run in runs:
        ours = run_side("ours", run)
        reference = run_side("reference", run) if run.reference else None
        text_layers, vision_blocks = FAMILY_DEPTH[run.family]
        whole, truncated, layer = truncated_bytes(run.family)
        if reference:
            ref = f"{reference['reference_ms']:,.0f} ({reference['peak_mb']:,.0f} MB)"
            ref_ms = reference["reference_ms"]
            speedup = f"{ref_ms / ours['first_ms']:.1f}x / {ref_ms / ours['further_ms']:.0f}x"
        else:
            ref, speedup = "not run", "—"
        rows.append(
            f"| {FAMILY_NAMES[run.family]} | {run.layers} of {text_layers} ({ours['layers_run']} run) | "
            f"{run.vision_blocks} of {vision_blocks} | {ours['image_tokens']:,} | {ours['first_ms']:,.0f} | "
            f"{ours['further_ms']:,.0f} | {ours['peak_mb']:,.0f} | {ref} | {speedup} | "
            f"{truncated / 1e9:.2f} of {whole / 1e9:.2f} (after layer {layer} of {text_layers}) | "
            f"{ours['load_average']:.1f} |"
        )
    return rows


TABLE_HEADER = (
    "| model | text layers (ours run) | vision blocks | image tokens | ours first ms | ours further ms | "
    "ours peak MB | reference ms (peak MB) | speed-up first / further | real config, truncated GB bf16 (of whole) | "
    "load |\n"
    "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|"
)


def print_table(runs: list[FamilyRun]) -> None:
    """The families' section: a note on how it is measured, then one Markdown table."""
    width, height = IMAGE_WH
    print("## The newer families' smallest shapes: ours vs the reference (CPU fp32, random weights)\n")
    print(
        f"One {width} x {height} image per call; ours: first expression on a new image (vision + prefix + "
        "expression, the model truncated after the heads' layer), further expression on its cached prefix (median "
        "of 3 after one warm-up); reference: eager, output_attentions=True, every layer + LM head, one call. Vision "
        "blocks are cut on the CPU where they would take minutes (both sides run the same tower); the last column "
        "is the real config built on the meta device.\n"
    )
    print(TABLE_HEADER)
    print("\n".join(family_rows(runs)))


DEFAULT_RUNS = (
    FamilyRun("onevision", layers=24, vision_blocks=1),
    FamilyRun("deepseek", layers=24, vision_blocks=1, reference=True),
    FamilyRun("qwen3", layers=28, vision_blocks=1, reference=True),
    FamilyRun("internvl", layers=24, vision_blocks=1),
)


def family_runs(text_layers: list[str]) -> list[FamilyRun]:
    """`DEFAULT_RUNS` with the text layers of the families named in `text_layers` ("qwen3=8", ...) replaced."""
    layers = {run.family: run.layers for run in DEFAULT_RUNS}
    for item in text_layers:
        family, _, count = item.partition("=")
        if family not in layers or not count.isdigit() or int(count) < 1:
            known = ", ".join(FAMILY_NAMES)
            raise ValueError(f"--family-layers {item!r}: expected FAMILY=N with FAMILY one of {known}")
        layers[family] = int(count)
    return [dataclasses.replace(run, layers=layers[run.family]) for run in DEFAULT_RUNS]


if __name__ == "__main__" and "--side" in sys.argv:
    side_main(sys.argv[sys.argv.index("--side") + 1])
elif __name__ == "__main__":
    started = time.perf_counter()
    print_table(family_runs(sys.argv[1:]))
    print(f"\nTotal time: {time.perf_counter() - started:.0f} s")
