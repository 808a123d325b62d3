"""Speed and memory of the grounding engine against the paper's reference path (issue 4).

Ours: last-token attention captured in a registered attention function, the model truncated after the deepest
localization-head layer (no LM head), the image's prefix cached. Reference (the paper's code): eager attention with
`output_attentions=True`, every layer, the LM head, the whole prompt for every expression.

Measured on random weights: a tiny LLaVA, and LLaVA-1.5-7B's real widths (hidden 4096, 32 heads, MLP 11008, CLIP
ViT-L/14 at 336 px, 576 image tokens) with fewer text layers (`--layers-7b`, default 2, chosen so the CPU run stays
within about ten minutes on a shared two-core machine) and the heads at the same relative depth as (14, .) in 32
layers (layer floor(14 / 32 * L)). Each side runs in a fresh process so its peak memory is its own. Where CUDA is
available, the real LLaVA-1.5-7B shape (32 layers, heads in layer 14) also runs in bf16 on the GPU.

Usage: .venv/bin/python benchmarks/lvlm_speed.py [--layers-7b 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_name  # benchmarks/machine.py: the script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EXPRESSIONS = (
    "the red cup on the left",
    "a small dog",
    "the man who is holding the blue ball",
    "the second car near the tree",
)
IMAGE_HW = (480, 640)
TINY_REPEATS = 15


def heads_at_relative_depth(num_layers: int, num_heads: int) -> list[tuple[int, int]]:
    """LLaVA-1.5-7B's heads 24, 13, 26 (modulo `num_heads`) in layer floor(14 / 32 * num_layers), their depth."""
    layer = (14 * num_layers) // 32
    return [(layer, head % num_heads) for head in (24, 13, 26)]


def shape_config(shape: str, num_layers: int):
    """`LlavaConfig` for 'tiny' or '7b' widths with `num_layers` text layers; the image token is the tiny
    tokenizer's."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    from tests.tiny_llava import TinySpec, tiny_config, tiny_vocab

    if shape == "tiny":
        return tiny_config(TinySpec(image_size=112, patch_size=14, num_layers=num_layers, num_heads=4, num_kv_heads=4))
    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
    )
    text = LlamaConfig(
        vocab_size=32064,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=num_layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tiny_vocab()["<image>"],
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


def shape_processor(shape: str):
    from tests.tiny_llava import TinySpec, tiny_processor

    return tiny_processor(TinySpec(image_size=112) if shape == "tiny" else TinySpec(image_size=336))


def build_model(shape: str, num_layers: int, truncate_after_layer: int | None, device: str, dtype):
    """A randomly initialised model of the shape, built directly on `device` in `dtype`."""
    import torch

    from annotator.lvlm.checkpoint import grounding_model_class

    model_class, config = grounding_model_class(shape_config(shape, num_layers), truncate_after_layer)
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_class(config)
    finally:
        torch.set_default_dtype(default_dtype)
    return model.eval()


def images(count: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(*IMAGE_HW, 3), dtype=np.uint8) for _ in range(count)]


def median_after_warmup(values: list[float]) -> float:
    return statistics.median(values[1:])


def peak_memory_mb(device: str, baseline_kb: int) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kb) / 1024


def parameter_mb(model) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


def side_ours(shape: str, num_layers: int, device: str, dtype, repeats: int, baseline_kb: int) -> dict:
    """The engine on a model truncated after the heads' layer: first and further expressions, capture overhead."""
    import torch

    from annotator.lvlm.capture import CAPTURE_ATTENTION, CAPTURE_KWARG, LastTokenCapture, stop_after
    from annotator.lvlm.engine import LvlmEngine

    config = shape_config(shape, num_layers)
    heads = heads_at_relative_depth(num_layers, config.text_config.num_attention_heads)
    depth = heads[0][0] + 1
    model = build_model(shape, num_layers, depth - 1, device, dtype)
    engine = LvlmEngine(model, shape_processor(shape), prefix_cache_size=repeats + 2)
    pictures = images(repeats + 1)
    first = [
        engine.head_attention(picture, EXPRESSIONS[0], heads, image_id=i).timing.total_ms
        for i, picture in enumerate(pictures)
    ]
    further = [
        engine.head_attention(pictures[-1], EXPRESSIONS[1 + i % 3], heads, image_id=len(pictures) - 1).timing.total_ms
        for i in range(repeats + 1)
    ]

    text = model.model.language_model
    prompt = engine.prompt(EXPRESSIONS[0])
    with torch.inference_mode():
        pixels, _ = engine.pixel_values(pictures[0])
        features = model.model.get_image_features(pixel_values=pixels, return_dict=True).pooler_output[0]
        embeds = text.embed_tokens(torch.tensor([prompt.ids], device=engine.device))
        embeds[0, prompt.prefix.image_positions] = features.to(embeds.dtype)

    def text_forward_ms(capture: bool) -> float:
        implementation = CAPTURE_ATTENTION if capture else "sdpa"
        model.set_attn_implementation({"text_config": implementation, "vision_config": "sdpa"})
        extra = {CAPTURE_KWARG: LastTokenCapture({heads[0][0]: [h for _, h in heads]}, prompt.prefix.image_positions)}
        synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode(), stop_after(text.layers[depth - 1]):
            text(inputs_embeds=embeds, use_cache=False, **(extra if capture else {}))
        synchronize(device)
        return (time.perf_counter() - start) * 1000.0

    plain, captured = [], []
    for rep in range(repeats + 1):
        if rep % 2:
            captured.append(text_forward_ms(capture=True))
            plain.append(text_forward_ms(capture=False))
        else:
            plain.append(text_forward_ms(capture=False))
            captured.append(text_forward_ms(capture=True))
    return {
        "layers_run": depth,
        "heads": heads,
        "first_ms": median_after_warmup(first),
        "further_ms": median_after_warmup(further),
        "plain_text_ms": median_after_warmup(plain),
        "capture_text_ms": median_after_warmup(captured),
        "paired_ratio": statistics.median(c / p for p, c in zip(plain[1:], captured[1:])),
        "parameters_mb": parameter_mb(model),
        "peak_mb": peak_memory_mb(device, baseline_kb),
    }


def side_reference(shape: str, num_layers: int, device: str, dtype, repeats: int, baseline_kb: int) -> dict:
    """The paper's path on the full model: eager attention, `output_attentions=True`, every layer, the LM head."""
    import torch

    from annotator.lvlm.engine import LvlmEngine

    config = shape_config(shape, num_layers)
    heads = heads_at_relative_depth(num_layers, config.text_config.num_attention_heads)
    model = build_model(shape, num_layers, None, device, dtype)
    inputs = LvlmEngine(model, shape_processor(shape), prefix_cache_size=0)
    model.set_attn_implementation("eager")
    times = []
    for i, picture in enumerate(images(repeats + 1)):
        synchronize(device)
        start = time.perf_counter()
        pixels, _ = inputs.pixel_values(picture)
        prompt = inputs.prompt(EXPRESSIONS[i % len(EXPRESSIONS)])
        with torch.inference_mode():
            ids = torch.tensor([prompt.ids], device=inputs.device)
            out = model(input_ids=ids, pixel_values=pixels, output_attentions=True)
            rows = [out.attentions[layer][0, head, -1, prompt.prefix.image_positions] for layer, head in heads]
            torch.stack(rows).float().cpu()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return {
        "layers_run": num_layers,
        "reference_ms": median_after_warmup(times),
        "parameters_mb": parameter_mb(model),
        "peak_mb": peak_memory_mb(device, baseline_kb),
    }


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_side(side: str, shape: str, num_layers: int, device: str, repeats: int) -> dict:
    """One side in a fresh Python process, so that its peak memory is its own."""
    request = json.dumps({"side": side, "shape": shape, "layers": num_layers, "device": device, "repeats": repeats})
    done = subprocess.run(
        [sys.executable, __file__, "--side", request], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if done.returncode != 0:
        raise RuntimeError(f"{side} side of {shape} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def side_main(request: str) -> None:
    """Run one side and print its result as one JSON line; the baseline memory is taken after the imports."""
    import torch
    import transformers  # noqa: F401  (imported before the baseline: its modules are not the model's memory)

    import annotator.lvlm.engine  # noqa: F401

    spec = json.loads(request)
    if spec["shape"] == "tiny":
        torch.set_num_threads(1)
    load_average = os.getloadavg()[0]
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    dtype = torch.bfloat16 if spec["device"] == "cuda" else torch.float32
    run = side_ours if spec["side"] == "ours" else side_reference
    result = run(spec["shape"], spec["layers"], spec["device"], dtype, spec["repeats"], baseline_kb)
    print(json.dumps(result | {"threads": torch.get_num_threads(), "load_average": load_average}))


def meta_parameter_bytes() -> tuple[int, int]:
    """Parameter bytes in bf16 of LLaVA-1.5-7B in full and truncated after layer 14, built on the meta device."""
    import torch

    from annotator.lvlm.checkpoint import grounding_model_class

    sizes = []
    for truncate in (None, 14):
        model_class, config = grounding_model_class(shape_config("7b", 32), truncate)
        with torch.device("meta"):
            model = model_class(config)
        sizes.append(sum(p.numel() for p in model.parameters()) * 2)
    return sizes[0], sizes[1]


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


def shape_rows(label: str, shape: str, num_layers: int, device: str, repeats: int) -> tuple[list[str], ...]:
    """Markdown rows (speed, capture overhead, memory) for one model shape, both sides measured now."""
    ours = run_side("ours", shape, num_layers, device, repeats)
    reference = run_side("reference", shape, num_layers, device, repeats)
    ref_ms = reference["reference_ms"]
    ours_run = f"{ours['threads']} | {ours['load_average']:.1f}"
    speed = [
        f"| {label} | reference: eager, output_attentions, {reference['layers_run']} layers + LM head | "
        f"{reference['threads']} | {reference['load_average']:.1f} | {ref_ms:.1f} | 1.0x |",
        f"| {label} | ours, first expression on an image ({ours['layers_run']} layers, prefix computed) | "
        f"{ours_run} | {ours['first_ms']:.1f} | {ref_ms / ours['first_ms']:.1f}x |",
        f"| {label} | ours, further expression on the cached image | {ours_run} | {ours['further_ms']:.1f} | "
        f"{ref_ms / ours['further_ms']:.1f}x |",
    ]
    overhead = 100.0 * (ours["paired_ratio"] - 1.0)
    capture = [
        f"| {label} | {ours['layers_run']} | {ours['plain_text_ms']:.1f} | {ours['capture_text_ms']:.1f} | "
        f"{overhead:+.1f}% |"
    ]
    memory = [
        f"| {label} | truncated after layer {ours['layers_run'] - 1}, no LM head (ours) | "
        f"{ours['parameters_mb']:.0f} | {ours['peak_mb']:.0f} |",
        f"| {label} | full, {reference['layers_run']} layers + LM head (reference path) | "
        f"{reference['parameters_mb']:.0f} | {reference['peak_mb']:.0f} |",
    ]
    return speed, capture, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers-7b", type=int, default=2, help="text layers of the 7B-width CPU model")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions after one warm-up")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side_main(args.side)
        return

    import torch

    started = time.perf_counter()
    print("# Grounding engine speed: ours vs the reference path\n")
    print("\n".join(machine_lines()))
    print(
        f"- medians of {args.repeats} repetitions ({TINY_REPEATS} for the tiny model) after one warm-up; "
        f"images {IMAGE_HW[1]} x {IMAGE_HW[0]}; random weights\n"
    )
    runs = [
        ("tiny (8 layers, 8x8 grid)", "tiny", 8, "cpu"),
        (f"7B widths, {args.layers_7b} layers, CPU fp32", "7b", args.layers_7b, "cpu"),
    ]
    if torch.cuda.is_available():
        runs.append(("LLaVA-1.5-7B shape, 32 layers, GPU bf16", "7b", 32, "cuda"))
    speed, capture, memory = [], [], []
    for label, shape, num_layers, device in runs:
        repeats = max(args.repeats, TINY_REPEATS) if shape == "tiny" else args.repeats
        s, c, m = shape_rows(label, shape, num_layers, device, repeats)
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
    full, truncated = meta_parameter_bytes()
    print("\n## LLaVA-1.5-7B parameters in bf16, built on the meta device (no memory used)\n")
    print("| load | parameter bytes | GB |\n|---|---:|---:|")
    print(f"| full: 32 text layers + LM head + CLIP ViT-L/14-336 + projector | {full:,} | {full / 1e9:.2f} |")
    print(f"| truncated after layer 14: 15 text layers, no LM head | {truncated:,} | {truncated / 1e9:.2f} |")
    print(f"\nTotal benchmark time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
