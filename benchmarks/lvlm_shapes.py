"""The model shapes the grounding-engine benchmarks build with random weights (`lvlm_speed`, `gpu_suite`).

`llava-7b`: LLaVA-1.5-7B's widths (Llama hidden 4096, 32 heads, MLP 11008, vocab 32064; CLIP ViT-L/14 at 336 px,
576 image tokens). `qwen-7b`: Qwen2-VL-7B's (hidden 3584, MLP 18944, 28 heads, 4 key/value heads, vocab 152064,
M-RoPE sections [16, 24, 24], rope theta 1e6; vision: width 1280, 16 heads, MLP ratio 4, 14 px patches merged 2 x 2
into 3584 wide tokens), its real tokenizer (tests/qwen_tokenizer.py) and transformers' default pixel budget
(56 * 56 to 28 * 28 * 1280 px, so at most 1,280 image tokens). `llava-tiny` / `qwen-tiny`: the tests' tiny models.
The number of text layers (and of Qwen vision blocks) is the caller's: the real depth on a GPU, fewer on a CPU.

The newer families' smallest released shapes (`family_config`, `family_processor`, for `lvlm_families`):
llava-onevision-qwen2-0.5b-ov, deepseek-vl-1.3b-chat, Qwen3-VL-2B-Instruct and InternVL3-1B-hf at their config.json
widths; the families' real image processors at the released settings (pixel budget, tiles, pinpoints), Qwen3-VL's
real tokenizer, the tests' word-level ones for the others (the image token counts do not depend on it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ("llava-tiny", "llava-7b", "qwen-tiny", "qwen-7b")
REAL_DEPTH = {"llava-7b": 32, "qwen-7b": 28}
QWEN_7B_VISION_BLOCKS = 32
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 28 * 28 * 1280
# (width, height) of the benchmark images: LLaVA pads any image to its square, Qwen reads about 1 MP as it is
IMAGE_WH = {"llava-tiny": (640, 480), "llava-7b": (640, 480), "qwen-tiny": (224, 168), "qwen-7b": (1155, 866)}


@dataclass(frozen=True)
class ShapeRun:
    """One measured model: `shape` (one of `SHAPES`) with `layers` text layers and, for Qwen, `vision_blocks`
    (None: the shape's own), on `device`, timed `repeats` times after one warm-up; `overhead`: also time the capture
    against plain SDPA on the same text forward."""

    shape: str
    layers: int
    device: str = "cpu"
    repeats: int = 3
    vision_blocks: int | None = None
    overhead: bool = False

    @property
    def is_qwen(self) -> bool:
        return self.shape.startswith("qwen")

    @property
    def image_wh(self) -> tuple[int, int]:
        return IMAGE_WH[self.shape]


def heads_at_relative_depth(num_layers: int, num_heads: int) -> list[tuple[int, int]]:
    """LLaVA-1.5-7B's heads 24, 13, 26 (modulo `num_heads`) in layer floor(14 / 32 * num_layers), their depth."""
    layer = (14 * num_layers) // 32
    return [(layer, head % num_heads) for head in (24, 13, 26)]


def shape_config(run: ShapeRun):
    """The transformers config of the run's shape and depth."""
    if run.shape == "llava-tiny":
        from tests.tiny_llava import TinySpec, tiny_config

        return tiny_config(TinySpec(image_size=112, patch_size=14, num_layers=run.layers, num_heads=4, num_kv_heads=4))
    if run.shape == "llava-7b":
        return _llava_7b_config(run.layers)
    if run.shape == "qwen-tiny":
        from tests.tiny_qwen import QwenSpec, tiny_config

        config = tiny_config(QwenSpec(num_layers=run.layers))
        if run.vision_blocks is not None:
            config.vision_config.depth = run.vision_blocks
        return config
    if run.shape == "qwen-7b":
        return _qwen_7b_config(run.layers, run.vision_blocks or QWEN_7B_VISION_BLOCKS)
    raise ValueError(f"unknown shape {run.shape!r}; known: {', '.join(SHAPES)}")


def _llava_7b_config(num_layers: int):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    from tests.tiny_llava import tiny_vocab

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


def _qwen_7b_config(num_layers: int, vision_blocks: int):
    """Qwen2-VL-7B-Instruct's config.json, with `num_layers` text layers and `vision_blocks` vision blocks."""
    from transformers import Qwen2VLConfig

    vision = dict(
        depth=vision_blocks,
        embed_dim=1280,
        hidden_size=3584,
        num_heads=16,
        mlp_ratio=4,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    text = dict(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=num_layers,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
        bos_token_id=151643,
        eos_token_id=151645,
        tie_word_embeddings=False,
    )
    return Qwen2VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=False,
    )


def shape_processor(shape: str):
    """The processor of the shape: the tests' tiny ones, LLaVA's at 336 px, Qwen2-VL's real tokenizer."""
    if shape.startswith("llava"):
        from tests.tiny_llava import TinySpec, tiny_processor

        return tiny_processor(TinySpec(image_size=112 if shape == "llava-tiny" else 336))
    if shape == "qwen-tiny":
        from tests.tiny_qwen import QwenSpec, tiny_processor

        return tiny_processor(QwenSpec())
    from tests.qwen_tokenizer import real_qwen_processor

    return real_qwen_processor(min_pixels=QWEN_MIN_PIXELS, max_pixels=QWEN_MAX_PIXELS)


def build_model(run: ShapeRun, truncate_after_layer: int | None, dtype):
    """A randomly initialised model of the run's shape, built directly on its device in `dtype`."""
    return build_from_config(shape_config(run), truncate_after_layer, run.device, dtype)


def build_from_config(config, truncate_after_layer: int | None, device: str, dtype):
    """A randomly initialised grounding model of `config` (whole, or truncated after a layer) on `device`."""
    import torch

    from annotator.lvlm.checkpoint import grounding_model_class

    model_class, config = grounding_model_class(config, truncate_after_layer)
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_class(config)
    finally:
        torch.set_default_dtype(default_dtype)
    return model.eval()


def meta_parameter_bytes(run: ShapeRun, truncate_after_layer: int | None) -> int:
    """Parameter bytes in bf16 of the run's shape, whole or truncated, built on the meta device (no memory used)."""
    return config_parameter_bytes(shape_config(run), truncate_after_layer)


def config_parameter_bytes(config, truncate_after_layer: int | None) -> int:
    """Parameter bytes in bf16 of `config`'s grounding model, whole or truncated, built on the meta device."""
    import torch

    from annotator.lvlm.checkpoint import grounding_model_class

    model_class, config = grounding_model_class(config, truncate_after_layer)
    with torch.device("meta"):
        model = model_class(config)
    return sum(p.numel() for p in model.parameters()) * 2


def images(run: ShapeRun, count: int) -> list[np.ndarray]:
    """`count` random RGB images of the run's size."""
    width, height = run.image_wh
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8) for _ in range(count)]


# The newer families' smallest released shapes (`lvlm_families`), their config.json widths
FAMILY_NAMES = {
    "onevision": "LLaVA-OneVision-Qwen2-0.5B",
    "deepseek": "DeepSeek-VL-1.3B-chat",
    "qwen3": "Qwen3-VL-2B-Instruct",
    "internvl": "InternVL3-1B-hf",
}
FAMILY_DEPTH = {"onevision": (24, 26), "deepseek": (24, 24), "qwen3": (28, 24), "internvl": (24, 24)}
ONEVISION_PINPOINTS = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]
QWEN3_DEEPSTACK = [5, 11, 17]


def family_config(family: str, layers: int, vision_blocks: int):
    """The released checkpoint's transformers config at `layers` text layers and `vision_blocks` vision blocks."""
    if family == "onevision":
        return _onevision_config(layers, vision_blocks)
    if family == "deepseek":
        return _deepseek_config(layers, vision_blocks)
    if family == "qwen3":
        return _qwen3_config(layers, vision_blocks)
    if family == "internvl":
        return _internvl_config(layers, vision_blocks)
    raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILY_NAMES)}")


def _onevision_config(layers: int, vision_blocks: int):
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    from tests.tiny_llava_next import ONEVISION, tiny_vocab

    vocab = tiny_vocab(ONEVISION)
    vision = SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=vision_blocks,
        num_attention_heads=16,
        image_size=384,
        patch_size=14,
        vision_use_head=False,
    )
    text = Qwen2Config(
        vocab_size=152000,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=layers,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1e6,
        tie_word_embeddings=True,
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=vocab["<image>"],
        video_token_index=vocab["<video>"],
        image_grid_pinpoints=ONEVISION_PINPOINTS,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=True,
    )


def _deepseek_config(layers: int, vision_blocks: int):
    from transformers import DeepseekVLConfig

    from tests.tiny_deepseek_vl import IMAGE_TOKEN, tiny_vocab

    text = dict(
        model_type="llama",
        vocab_size=102400,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=16,
        max_position_embeddings=16384,
    )
    vision = dict(
        model_type="siglip_vision_model",
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=vision_blocks,
        num_attention_heads=16,
        image_size=384,
        patch_size=16,
    )
    return DeepseekVLConfig(
        text_config=text, vision_config=vision, image_token_id=tiny_vocab()[IMAGE_TOKEN], tie_word_embeddings=False
    )


def _qwen3_config(layers: int, vision_blocks: int):
    """Qwen3-VL-2B-Instruct's config.json; with fewer vision blocks than its DeepStack indexes need, DeepStack reads
    the first three blocks (as many as there are)."""
    from transformers import Qwen3VLConfig

    deepstack = QWEN3_DEEPSTACK if vision_blocks > max(QWEN3_DEEPSTACK) else list(range(min(3, vision_blocks)))
    text = dict(
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=6144,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=262144,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
        },
    )
    vision = dict(
        depth=vision_blocks,
        hidden_size=1024,
        intermediate_size=4096,
        num_heads=16,
        out_hidden_size=2048,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        num_position_embeddings=2304,
        deepstack_visual_indexes=deepstack,
    )
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=True,
    )


def _internvl_config(layers: int, vision_blocks: int):
    from transformers import InternVLConfig

    from tests.tiny_internvl import tiny_vocab

    text = dict(
        model_type="qwen2",
        vocab_size=151674,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=layers,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
    )
    vision = dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=vision_blocks,
        num_attention_heads=16,
        image_size=[448, 448],
        patch_size=[14, 14],
        use_absolute_position_embeddings=True,
        attention_bias=True,
    )
    return InternVLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=tiny_vocab()["<IMG_CONTEXT>"],
        image_seq_length=256,
        tie_word_embeddings=False,
    )


def family_processor(family: str):
    """The family's real processor at the released image settings."""
    if family == "onevision":
        from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

        from tests.tiny_llava_next import ONEVISION, ONEVISION_TEMPLATE, tiny_tokenizer

        return LlavaOnevisionProcessor(
            image_processor=LlavaOnevisionImageProcessor(image_grid_pinpoints=ONEVISION_PINPOINTS),
            tokenizer=tiny_tokenizer(ONEVISION),
            video_processor=LlavaOnevisionVideoProcessor(),
            num_image_tokens=729,
            vision_feature_select_strategy="full",
            vision_aspect_ratio="anyres_max_9",
            chat_template=ONEVISION_TEMPLATE,
        )
    if family == "deepseek":
        from tests.tiny_deepseek_vl import DeepseekSpec, tiny_processor

        return tiny_processor(DeepseekSpec(image_size=384, patch_size=16))
    if family == "qwen3":
        from tests.tiny_qwen3_vl import real_qwen3_processor

        return real_qwen3_processor()
    from tests.tiny_internvl import InternVLSpec, tiny_processor

    return tiny_processor(InternVLSpec(tile=448, patch_size=14, max_tiles=12))
