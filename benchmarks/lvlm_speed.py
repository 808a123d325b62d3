"""Speed and memory of the grounding engine against the paper's reference path (issue 4).

Ours: last-token attention captured in a registered attention function, the model truncated after the deepest
localization-head layer (no LM head), the image's prefix cached. Reference (the paper's code): eager attention with
`output_attentions=True`, every layer, the LM head, the whole prompt for every expression.

Measured on random weights (`lvlm_shapes`): a tiny LLaVA; LLaVA-1.5-7B's real widths (576 image tokens) with fewer
text layers (`--layers-7b`, default 2); Qwen2-VL-7B's real widths on a 1155 x 866 image (1,271 image tokens at the
default pixel budget) with fewer text layers (`--layers-qwen`, default 2) and vision blocks (`--vision-blocks-qwen`,
default 1 of 32: ours and the reference run the same vision tower, so it adds the same time to both). The layer
counts keep that part of the CPU run within about ten minutes on a shared two-core machine (the families' part
below adds about six); the heads sit at the same relative
depth as LLaVA-1.5-7B's (14, .) in 32 layers (layer floor(14 / 32 * L)). Each side runs in a fresh process so its
peak memory is its own. Where CUDA is available, both 7B shapes also run at their real depth in bf16 on the GPU
(`benchmarks/gpu.sh` runs only those, with SAM's). Then the newer families' smallest shapes (`lvlm_families`:
LLaVA-OneVision-0.5B, DeepSeek-VL-1.3B, Qwen3-VL-2B, InternVL3-1B on a 1155 x 866 image); `--families` runs only
those, `--family-layers FAMILY=N` (repeatable) sets a family's text layers.

Usage: .venv/bin/python benchmarks/lvlm_speed.py [--layers-7b 2] [--layers-qwen 2] [--vision-blocks-qwen 1]
[--repeats 3] [--repeats-qwen 1] [--families] [--family-layers qwen3=8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lvlm_shapes import (  # benchmarks/lvlm_shapes.py
    REAL_DEPTH,
    ShapeRun,
    build_model,
    heads_at_relative_depth,
    images,
    meta_parameter_bytes,
    shape_config,
    shape_processor,
)
from lvlm_families import family_runs, print_table  # benchmarks/lvlm_families.py
from machine import cpu_name  # benchmarks/machine.py: the script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EXPRESSIONS = (
    "the red cup on the left",
    "a small dog",
    "the man who is holding the blue ball",
    "the second car near the tree",
)
TINY_REPEATS = 15


def median_after_warmup(values: list[float]) -> float:
    return statistics.median(values[1:])


def reset_peak_memory(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb(device: str, baseline_kb: int) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kb) / 1024


def parameter_mb(model) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


def run_dtype(run: ShapeRun):
    import torch

    return torch.bfloat16 if run.device == "cuda" else torch.float32


def side_ours(run: ShapeRun, baseline_kb: int) -> dict:
    """The engine on a model truncated after the heads' layer: first and further expressions (and, with
    `run.overhead`, the capture's overhead over plain SDPA)."""
    from annotator.lvlm.engine import LvlmEngine

    reset_peak_memory(run.device)
    heads = heads_at_relative_depth(run.layers, shape_config(run).text_config.num_attention_heads)
    depth = heads[0][0] + 1
    model = build_model(run, depth - 1, run_dtype(run))
    engine = LvlmEngine(model, shape_processor(run.shape), prefix_cache_size=run.repeats + 2)
    pictures = images(run, run.repeats + 1)
    first = [
        engine.head_attention(picture, EXPRESSIONS[0], heads, image_id=i).timing.total_ms
        for i, picture in enumerate(pictures)
    ]
    further = [
        engine.head_attention(pictures[-1], EXPRESSIONS[1 + i % 3], heads, image_id=len(pictures) - 1).timing.total_ms
        for i in range(run.repeats + 1)
    ]
    result = {
        "layers_run": depth,
        "heads": heads,
        "image_tokens": engine.layout_for(*run.image_wh).num_tokens,
        "first_ms": median_after_warmup(first),
        "further_ms": median_after_warmup(further),
        "parameters_mb": parameter_mb(model),
        "peak_mb": peak_memory_mb(run.device, baseline_kb),
    }
    if run.overhead:
        result |= capture_overhead(engine, run, heads, pictures[0])
    return result


def capture_overhead(engine, run: ShapeRun, heads: list[tuple[int, int]], picture) -> dict:
    """The same truncated text forward on the same prompt with plain SDPA and with the capture, in adjacent pairs."""
    import torch

    from annotator.lvlm.capture import CAPTURE_ATTENTION, CAPTURE_KWARG, LastTokenCapture, stop_after

    depth = heads[0][0] + 1
    text = engine.family.text_model
    layout = engine.layout_for(*run.image_wh)
    prompt = engine.prompt(EXPRESSIONS[0], run.image_wh)
    with torch.inference_mode():
        features = engine.family.image_features(picture, layout, engine.device)
        embeds = text.embed_tokens(torch.tensor([prompt.ids], device=engine.device))
        embeds[0, prompt.prefix.image_positions] = features.embeds.to(embeds.dtype)
        positions = engine.family.position_ids(prompt, layout, engine.device)
    extra = {} if positions is None else {"position_ids": positions}

    def text_forward_ms(capture: bool) -> float:
        implementation = CAPTURE_ATTENTION if capture else "sdpa"
        engine.model.set_attn_implementation({"text_config": implementation, "vision_config": "sdpa"})
        captured = LastTokenCapture({heads[0][0]: [h for _, h in heads]}, prompt.prefix.image_positions)
        synchronize(run.device)
        start = time.perf_counter()
        with torch.inference_mode(), stop_after(text.layers[depth - 1]):
            text(inputs_embeds=embeds, use_cache=False, **extra, **({CAPTURE_KWARG: captured} if capture else {}))
        synchronize(run.device)
        return (time.perf_counter() - start) * 1000.0

    plain, captured = [], []
    for rep in range(run.repeats + 1):
        pair = (True, False) if rep % 2 else (False, True)
        for capture in pair:
            (captured if capture else plain).append(text_forward_ms(capture))
    return {
        "plain_text_ms": median_after_warmup(plain),
        "capture_text_ms": median_after_warmup(captured),
        "paired_ratio": statistics.median(c / p for p, c in zip(plain[1:], captured[1:])),
    }


def side_reference(run: ShapeRun, baseline_kb: int) -> dict:
    """The paper's path on the full model: eager attention, `output_attentions=True`, every layer, the LM head."""
    import torch

    from annotator.lvlm.engine import LvlmEngine

    reset_peak_memory(run.device)
    heads = heads_at_relative_depth(run.layers, shape_config(run).text_config.num_attention_heads)
    model = build_model(run, None, run_dtype(run))
    inputs = LvlmEngine(model, shape_processor(run.shape), prefix_cache_size=0)
    model.set_attn_implementation("eager")
    times = []
    for i, picture in enumerate(images(run, run.repeats + 1)):
        synchronize(run.device)
        start = time.perf_counter()
        pixels, _ = inputs.pixel_values(picture)
        prompt = inputs.prompt(EXPRESSIONS[i % len(EXPRESSIONS)], run.image_wh)
        with torch.inference_mode():
            ids = torch.tensor([prompt.ids], device=inputs.device)
            if run.is_qwen:
                vision = pixels | {"mm_token_type_ids": (ids == model.config.image_token_id).int()}
            else:
                vision = {"pixel_values": pixels}
            out = model(input_ids=ids, output_attentions=True, **vision)
            rows = [out.attentions[layer][0, head, -1, prompt.prefix.image_positions] for layer, head in heads]
            torch.stack(rows).float().cpu()
        synchronize(run.device)
        times.append((time.perf_counter() - start) * 1000.0)
    return {
        "layers_run": run.layers,
        "reference_ms": median_after_warmup(times),
        "parameters_mb": parameter_mb(model),
        "peak_mb": peak_memory_mb(run.device, baseline_kb),
    }


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_side(side: str, run: ShapeRun) -> dict:
    """One side in a fresh Python process, so that its peak memory is its own."""
    request = json.dumps({"side": side, "run": dataclasses.asdict(run)})
    done = subprocess.run(
        [sys.executable, __file__, "--side", request], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if done.returncode != 0:
        raise RuntimeError(f"{side} side of {run.shape} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def side_main(request: str) -> None:
    """Run one side and print its result as one JSON line; the baseline memory is taken after the imports."""
    import torch
    import transformers  # noqa: F401  (imported before the baseline: its modules are not the model's memory)

    import annotator.lvlm.engine  # noqa: F401

    spec = json.loads(request)
    run = ShapeRun(**spec["run"])
    if run.shape.endswith("tiny"):
        torch.set_num_threads(1)
    load_average = os.getloadavg()[0]
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    measure = side_ours if spec["side"] == "ours" else side_reference
    result = measure(run, baseline_kb)
    print(json.dumps(result | {"threads": torch.get_num_threads(), "load_average": load_average}))


def machine_lines() -> list[str]:
    import numpy
    import torch
    import transformers

    cpu = cpu_name()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return [
        f"- machine: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, GPU: {gpu}",
        f"- load average at start: {os.getloadavg()[0]:.1f} (the machine is shared; timings vary with it)",
        f"- python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"numpy {numpy.__version__}",
    ]


def shape_rows(label: str, run: ShapeRun) -> tuple[list[str], ...]:
    """Markdown rows (speed, capture overhead, memory) for one model shape, both sides measured now."""
    ours = run_side("ours", run)
    reference = run_side("reference", run)
    ref_ms = reference["reference_ms"]
    label = f"{label}, {ours['image_tokens']} image tokens"
    ours_run = f"{ours['threads']} | {ours['load_average']:.1f}"
    speed = [
        f"| {label} | reference: eager, output_attentions, {reference['layers_run']} layers + LM head | "
        f"{reference['threads']} | {reference['load_average']:.1f} | {ref_ms:.1f} | 1.0x |",
        f"| {label} | ours, first expression on an image ({ours['layers_run']} layers, prefix computed) | "
        f"{ours_run} | {ours['first_ms']:.1f} | {ref_ms / ours['first_ms']:.1f}x |",
        f"| {label} | ours, further expression on the cached image | {ours_run} | {ours['further_ms']:.1f} | "
        f"{ref_ms / ours['further_ms']:.1f}x |",
    ]
    capture = []
    if run.overhead:
        overhead = 100.0 * (ours["paired_ratio"] - 1.0)
        capture.append(
            f"| {label} | {ours['layers_run']} | {ours['plain_text_ms']:.1f} | {ours['capture_text_ms']:.1f} | "
            f"{overhead:+.1f}% |"
        )
    memory = [
        f"| {label} | truncated after layer {ours['layers_run'] - 1}, no LM head (ours) | "
        f"{ours['parameters_mb']:.0f} | {ours['peak_mb']:.0f} |",
        f"| {label} | full, {reference['layers_run']} layers + LM head (reference path) | "
        f"{reference['parameters_mb']:.0f} | {reference['peak_mb']:.0f} |",
    ]
    return speed, capture, memory


def parameter_rows() -> list[str]:
    """The real 7B shapes' parameter bytes in bf16, whole and truncated after their heads' layer (meta device)."""
    rows = []
    for name, shape, extra in (
        ("LLaVA-1.5-7B", "llava-7b", "CLIP ViT-L/14-336 + projector"),
        ("Qwen2-VL-7B", "qwen-7b", "ViT (32 blocks) + merger"),
    ):
        run = ShapeRun(shape, REAL_DEPTH[shape])
        layer = heads_at_relative_depth(run.layers, 1)[0][0]
        full, truncated = meta_parameter_bytes(run, None), meta_parameter_bytes(run, layer)
        rows.append(f"| {name} | full: {run.layers} text layers + LM head + {extra} | {full:,} | {full / 1e9:.2f} |")
        rows.append(
            f"| {name} | truncated after layer {layer}: {layer + 1} text layers, no LM head | {truncated:,} | "
            f"{truncated / 1e9:.2f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers-7b", type=int, default=2, help="text layers of the LLaVA-1.5-7B-width CPU model")
    parser.add_argument("--layers-qwen", type=int, default=2, help="text layers of the Qwen2-VL-7B-width CPU model")
    parser.add_argument("--vision-blocks-qwen", type=int, default=1, help="vision blocks of the same (of 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions after one warm-up")
    parser.add_argument("--repeats-qwen", type=int, default=1, help="the same for the Qwen2-VL-7B-width CPU model")
    parser.add_argument("--families", action="store_true", help="run only the newer families' shapes")
    parser.add_argument(
        "--family-layers", action="append", default=[], metavar="FAMILY=N", help="text layers of one family's shape"
    )
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side_main(args.side)
        return
    try:
        families = family_runs(args.family_layers)
    except ValueError as exc:
        parser.error(str(exc))
    started = time.perf_counter()
    if args.families:
        print("# Grounding engine speed: the newer families\n")
        print("\n".join(machine_lines()) + "\n")
        print_table(families)
        print(f"\nTotal benchmark time: {time.perf_counter() - started:.0f} s")
        return

    import torch

    print("# Grounding engine speed: ours vs the reference path\n")
    print("\n".join(machine_lines()))
    print(
        f"- medians of {args.repeats} repetitions ({TINY_REPEATS} for the tiny model, {args.repeats_qwen} for the "
        f"Qwen2-VL-7B widths on the CPU) after one warm-up; images 640 x 480 (LLaVA) and 1155 x 866 (Qwen2-VL); "
        f"random weights\n"
    )
    qwen = ShapeRun("qwen-7b", args.layers_qwen, "cpu", args.repeats_qwen, args.vision_blocks_qwen)
    qwen_label = f"Qwen2-VL-7B widths, {qwen.layers} layers, {qwen.vision_blocks} of 32 vision blocks, CPU fp32"
    runs = [
        ("LLaVA tiny (8 layers, 8x8 grid)", ShapeRun("llava-tiny", 8, "cpu", TINY_REPEATS, overhead=True)),
        (
            f"LLaVA-1.5-7B widths, {args.layers_7b} layers, CPU fp32",
            ShapeRun("llava-7b", args.layers_7b, "cpu", args.repeats, overhead=True),
        ),
        (qwen_label, qwen),
    ]
    if torch.cuda.is_available():
        runs += [
            ("LLaVA-1.5-7B shape, 32 layers, GPU bf16", ShapeRun("llava-7b", 32, "cuda", args.repeats, overhead=True)),
            ("Qwen2-VL-7B shape, 28 layers, 32 vision blocks, GPU bf16", ShapeRun("qwen-7b", 28, "cuda", args.repeats)),
        ]
    speed, capture, memory = [], [], []
    for label, run in runs:
        s, c, m = shape_rows(label, run)
        speed += s
        capture += c
        memory += m

    print("## (a, b) Per expression: reference vs ours\n")
    print("Each side runs in its own process, one after the other; 'load': the load average when it started.\n")
    print("| model | path | threads | load | median ms | speed-up vs reference |\n|---|---|---:|---:|---:|---:|")
    print("\n".join(speed))
    print("\n## Capture overhead: text forward of the same truncated depth on the same prompt\n")
    print(
        "Plain and capture forwards run in adjacent pairs (alternating which goes first); the overhead is the median "
        "of the pairs' ratios, which a shared machine's changing load affects less than a ratio of medians.\n"
    )
    print("| model | layers run | plain SDPA ms | SDPA + capture ms | overhead (paired) |\n|---|---:|---:|---:|---:|")
    print("\n".join(capture))
    print("\n## (c) Memory (CPU: peak RSS above the process's baseline after imports; GPU: peak allocated)\n")
    print("| model | load | parameters MB | peak MB |\n|---|---|---:|---:|")
    print("\n".join(memory))
    print("\n## The real 7B models' parameters in bf16, built on the meta device (no memory used)\n")
    print("| model | load | parameter bytes | GB |\n|---|---|---:|---:|")
    print("\n".join(parameter_rows()))
    print()
    print_table(families)
    print(f"\nTotal benchmark time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
