"""The model families the engine reads, by the `model_type` of their config: light facts only (no torch, no
transformers), so a checkpoint's family is known before anything loads. Each family's adapter lives in its own
module (`llava`, `qwen2_vl`) and is imported only when an engine is built."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class FamilyInfo:
    """`name`: how messages name the family; `model_types`: config `model_type`s it reads; `model_class`: the
    transformers class that builds it; `adapter`: "module:Class" of its `Family`; `layer_keys`: regex of the
    checkpoint keys of text layer N (`{layers}` stands for the layer numbers), in every naming transformers loads;
    `full_precision_modules`: the modules a 4-bit load keeps in the compute dtype (the vision side, the LM head)."""

    name: str
    model_types: tuple[str, ...]
    model_class: str
    adapter: str
    layer_keys: str
    full_precision_modules: tuple[str, ...]


FAMILIES: tuple[FamilyInfo, ...] = (
    FamilyInfo(
        name="llava-1.5",
        model_types=("llava",),
        model_class="LlavaForConditionalGeneration",
        adapter="annotator.lvlm.llava:LlavaFamily",
        layer_keys=r"language_model\.(model\.)?layers\.({layers})\.",
        full_precision_modules=("vision_tower", "multi_modal_projector", "lm_head"),
    ),
    FamilyInfo(
        name="qwen2-vl",
        model_types=("qwen2_vl",),
        model_class="Qwen2VLForConditionalGeneration",
        adapter="annotator.lvlm.qwen2_vl:QwenVLFamily",
        layer_keys=r"(^|\.)(language_model\.|model\.)layers\.({layers})\.",
        full_precision_modules=("visual", "lm_head"),
    ),
    FamilyInfo(
        name="qwen2.5-vl",
        model_types=("qwen2_5_vl",),
        model_class="Qwen2_5_VLForConditionalGeneration",
        adapter="annotator.lvlm.qwen2_vl:QwenVLFamily",
        layer_keys=r"(^|\.)(language_model\.|model\.)layers\.({layers})\.",
        full_precision_modules=("visual", "lm_head"),
    ),
    FamilyInfo(
        name="qwen3-vl",
        model_types=("qwen3_vl",),
        model_class="Qwen3VLForConditionalGeneration",
        adapter="annotator.lvlm.qwen3_vl:Qwen3VLFamily",
        layer_keys=r"(^|\.)language_model\.layers\.({layers})\.",
        full_precision_modules=("visual", "lm_head"),
    ),
    FamilyInfo(
        name="deepseek-vl",
        model_types=("deepseek_vl",),
        model_class="DeepseekVLForConditionalGeneration",
        adapter="annotator.lvlm.deepseek_vl:DeepseekVLFamily",
        layer_keys=r"(^|\.)language_model\.(model\.)?layers\.({layers})\.",
        full_precision_modules=("vision_model", "aligner", "lm_head"),
    ),
    FamilyInfo(
        name="deepseek-vl-hybrid",
        model_types=("deepseek_vl_hybrid",),
        model_class="DeepseekVLHybridForConditionalGeneration",
        adapter="annotator.lvlm.deepseek_vl:DeepseekVLFamily",
        layer_keys=r"(^|\.)language_model\.(model\.)?layers\.({layers})\.",
        full_precision_modules=(
            "vision_model",
            "high_res_vision_model",
            "high_res_vision_neck",
            "high_res_vision_proj",
            "aligner",
            "lm_head",
        ),
    ),
    FamilyInfo(
        name="llava-next",
        model_types=("llava_next",),
        model_class="LlavaNextForConditionalGeneration",
        adapter="annotator.lvlm.llava_next:LlavaNextFamily",
        layer_keys=r"language_model\.(model\.)?layers\.({layers})\.",
        full_precision_modules=("vision_tower", "multi_modal_projector", "lm_head"),
    ),
    FamilyInfo(
        name="llava-onevision",
        model_types=("llava_onevision",),
        model_class="LlavaOnevisionForConditionalGeneration",
        adapter="annotator.lvlm.llava_next:LlavaNextFamily",
        layer_keys=r"language_model\.(model\.)?layers\.({layers})\.",
        full_precision_modules=("vision_tower", "multi_modal_projector", "lm_head"),
    ),
    FamilyInfo(
        name="internvl",
        model_types=("internvl",),
        model_class="InternVLForConditionalGeneration",
        adapter="annotator.lvlm.internvl:InternVLFamily",
        layer_keys=r"(^|\.)language_model\.(model\.)?layers\.({layers})\.",
        full_precision_modules=("vision_tower", "multi_modal_projector", "lm_head"),
    ),
)


NOT_SPATIAL: dict[str, str] = {
    "mllama": "its text model reads the image through cross-attention layers, not as image tokens in its sequence",
    "florence2": "it is an encoder-decoder: its decoder reads the image through cross-attention",
    "blip-2": "its Q-Former pools the image into 32 learned queries that keep no spatial order",
    "instructblip": "its Q-Former pools the image into 32 learned queries that keep no spatial order",
    "idefics2": "its perceiver resampler pools the image into 64 learned latents that keep no spatial order",
    "idefics": "its text model reads the image through cross-attention layers",
}
"""Model types the method cannot read, and why: the last token's attention must fall on image tokens laid out in
the image's spatial order."""


def unsupported_reason(model_type: str) -> str:
    """One line saying why a `model_type` checkpoint cannot be a grounding engine."""
    why = NOT_SPATIAL.get(model_type)
    if why is not None:
        return f"a {model_type!r} model cannot ground with localization heads: {why}"
    return (
        f"the grounding engine does not read {model_type!r} checkpoints; it reads "
        f"{', '.join(repr(t) for t in supported_model_types())}"
    )


def family_info(model_type: str) -> FamilyInfo | None:
    """The family that reads checkpoints of `model_type`, or None."""
    return next((family for family in FAMILIES if model_type in family.model_types), None)


def supported_model_types() -> tuple[str, ...]:
    return tuple(model_type for family in FAMILIES for model_type in family.model_types)


def adapter_class(info: FamilyInfo) -> type:
    """The `Family` subclass of `info` (imports its module)."""
    module, name = info.adapter.split(":")
    return getattr(importlib.import_module(module), name)
