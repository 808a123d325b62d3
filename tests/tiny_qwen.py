"""Tiny Qwen2-VL and Qwen2.5-VL models and processors built in-process, for the engine's tests.

Real transformers classes (`Qwen2VLForConditionalGeneration`, `Qwen2_5_VLForConditionalGeneration`) with random
weights, a few layers and heads, grouped-query attention and M-RoPE; a real `Qwen2VLImageProcessor` (smart resize,
14 px patches merged 2 x 2) with a small pixel budget, so an image is a grid of a few to a few dozen tokens; and an
in-memory word-level tokenizer holding Qwen's special tokens, the prompt's words and a few expression words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<unk>",
)
PROMPT_WORDS = "system You are a helpful assistant. user".split()
EXPRESSION_WORDS = "the a red green blue cup dog cat man left right on of in with big small top bottom 2nd".split()


def tiny_vocab() -> dict[str, int]:
    words = list(SPECIAL_TOKENS) + ["\n"] + PROMPT_WORDS + EXPRESSION_WORDS
    return {word: i for i, word in enumerate(dict.fromkeys(words))}


def tiny_tokenizer():
    """A `PreTrainedTokenizerFast`: words split on spaces, newlines kept as tokens, no BOS, Qwen's specials."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = tiny_vocab()
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex("\n"), behavior="isolated"), pre_tokenizers.WhitespaceSplit()]
    )
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<unk>"
    )


@dataclass(frozen=True)
class QwenSpec:
    """Shape of a tiny Qwen-VL: `family` "qwen2_vl" or "qwen2_5_vl"; pixel budget in merged tokens."""

    family: str = "qwen2_vl"
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    hidden_size: int = 64
    vision_hidden_size: int = 32
    min_tokens: int = 4
    max_tokens: int = 64

    @property
    def mrope_section(self) -> list[int]:
        pairs = self.hidden_size // self.num_heads // 2
        return [pairs - 2 * (pairs // 3), pairs // 3, pairs // 3]


QWEN2_VL = QwenSpec()
QWEN2_5_VL = QwenSpec(family="qwen2_5_vl", num_heads=8, num_kv_heads=2)


def tiny_config(spec: QwenSpec = QWEN2_VL):
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    vocab = tiny_vocab()
    text = dict(
        vocab_size=len(vocab),
        hidden_size=spec.hidden_size,
        intermediate_size=2 * spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=1024,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": spec.mrope_section},
        bos_token_id=None,
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    ids = dict(
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
    )
    if spec.family == "qwen2_vl":
        vision = dict(
            depth=2,
            embed_dim=spec.vision_hidden_size,
            hidden_size=spec.hidden_size,
            num_heads=2,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        )
        return Qwen2VLConfig(vision_config=vision, text_config=text, **ids)
    vision = dict(
        depth=2,
        hidden_size=spec.vision_hidden_size,
        intermediate_size=2 * spec.vision_hidden_size,
        out_hidden_size=spec.hidden_size,
        num_heads=2,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=56,
        fullatt_block_indexes=[1],
    )
    return Qwen2_5_VLConfig(vision_config=vision, text_config=text, **ids)


def tiny_processor(spec: QwenSpec = QWEN2_VL):
    """A `Qwen2VLProcessor` / `Qwen2_5_VLProcessor` with the tiny tokenizer and a budget of min..max tokens."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    budget = dict(min_pixels=spec.min_tokens * 28 * 28, max_pixels=spec.max_tokens * 28 * 28)
    images = Qwen2VLImageProcessor(**budget, patch_size=14, merge_size=2)
    processor_class = Qwen2VLProcessor if spec.family == "qwen2_vl" else Qwen2_5_VLProcessor
    return processor_class(
        image_processor=images, tokenizer=tiny_tokenizer(), video_processor=Qwen2VLVideoProcessor(**budget)
    )


def tiny_qwen(spec: QwenSpec = QWEN2_VL, seed: int = 0):
    """A float32 model in eval mode with SDPA attention and peaked random weights (std 0.2, as tiny_llava)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

    config = tiny_config(spec)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model_class = Qwen2VLForConditionalGeneration if spec.family == "qwen2_vl" else Qwen2_5_VLForConditionalGeneration
    model = model_class(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def tiny_qwen_engine(spec: QwenSpec = QWEN2_VL, seed: int = 0, **kwargs):
    from annotator.lvlm.engine import LvlmEngine

    return LvlmEngine(tiny_qwen(spec, seed), tiny_processor(spec), **kwargs)


def eager_qwen_attention(model, prompt, pixel_inputs: dict, grid_hw: tuple[int, int]) -> np.ndarray:
    """The reference path: the whole model's own forward (its own M-RoPE positions from `input_ids`), eager
    attention, `output_attentions=True`; the last token's attention over the image tokens, `[L, H, h, w]` float32.
    Switches `model`'s attention to eager; pass a copy."""
    import torch

    ids = torch.tensor([prompt.ids])
    token_types = (ids == model.config.image_token_id).int()
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(input_ids=ids, mm_token_type_ids=token_types, output_attentions=True, **pixel_inputs)
    start, count = prompt.prefix.image_start, prompt.prefix.num_image_tokens
    rows = [a[0, :, -1, start : start + count].float() for a in out.attentions]
    return torch.stack(rows).reshape(len(rows), -1, *grid_hw).numpy()
