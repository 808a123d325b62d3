"""Tiny Qwen3-VL models and processors built in-process, for the engine's tests; Qwen3-VL's real tokenizer offline.

The real transformers classes (`Qwen3VLForConditionalGeneration`, `Qwen3VLProcessor`) with random weights: a text
decoder of 4 layers, 4 query heads sharing 2 key-value heads (GQA), QK-norm and interleaved M-RoPE; a vision tower
of 2 blocks whose both outputs are DeepStack features (added after text layers 0 and 1); Qwen3-VL's image processor
settings (16 px patches merged 2 x 2, mean and std 0.5) with a small pixel budget, so an image is a grid of a few
to a few dozen tokens; and the word-level tokenizer of `tiny_qwen`. The eager reference is `tiny_qwen`'s
`eager_qwen_attention` (the whole model's own forward, `output_attentions=True`).
"""

from __future__ import annotations

from tests.tiny_qwen import eager_qwen_attention, tiny_tokenizer, tiny_vocab

__all__ = ["eager_qwen_attention", "real_qwen3_processor", "tiny_config", "tiny_processor", "tiny_qwen3_vl"]

PATCH = 16
TOKEN_PX = 32  # one LLM token: 2 x 2 patches of 16 px
MIN_TOKENS, MAX_TOKENS = 4, 64
NUM_LAYERS, NUM_HEADS, NUM_KV_HEADS, HEAD_DIM = 4, 4, 2, 16
MROPE_SECTION = [4, 2, 2]  # HEAD_DIM / 2 = 8 rotary pairs: 4 temporal, 2 row, 2 column, interleaved

# Qwen3-VL-Instruct's preprocessor_config.json: 64 to 16,384 tokens of 32 x 32 px, mean and std 0.5
RELEASED_MIN_PIXELS = 64 * TOKEN_PX * TOKEN_PX
RELEASED_MAX_PIXELS = 16384 * TOKEN_PX * TOKEN_PX
HALF = [0.5, 0.5, 0.5]
# The tokens Qwen3's tokenizer adds after Qwen2-VL's 151,643-151,656, ids 151,657-151,668 (not special)
QWEN3_ADDED_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
# Qwen3-VL-Instruct's chat template (chat_template.json) for messages without tools, assistant or tool turns (the
# prompt has none): a system turn only when the messages start with one
CHAT_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\n' }}"
    "{%- if messages[0].content is string %}{{- messages[0].content }}{%- else %}"
    "{%- for content in messages[0].content %}{%- if 'text' in content %}{{- content.text }}{%- endif %}{%- endfor %}"
    "{%- endif %}{{- '<|im_end|>\n' }}{%- endif %}"
    "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
    "{%- for message in messages %}{%- if message.role == \"user\" %}{{- '<|im_start|>' + message.role + '\n' }}"
    "{%- if message.content is string %}{{- message.content }}{%- else %}{%- for content in message.content %}"
    "{%- if content.type == 'image' or 'image' in content or 'image_url' in content %}"
    "{%- set image_count.value = image_count.value + 1 %}"
    "{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif content.type == 'video' or 'video' in content %}{%- set video_count.value = video_count.value + 1 %}"
    "{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in content %}{{- content.text }}{%- endif %}{%- endfor %}{%- endif %}{{- '<|im_end|>\n' }}"
    "{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


def tiny_config():
    from transformers import Qwen3VLConfig

    vocab = tiny_vocab()
    text = dict(
        vocab_size=len(vocab),
        hidden_size=NUM_HEADS * HEAD_DIM,
        intermediate_size=2 * NUM_HEADS * HEAD_DIM,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        head_dim=HEAD_DIM,
        max_position_embeddings=1024,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": MROPE_SECTION,
            "mrope_interleaved": True,
        },
        pad_token_id=vocab["<|endoftext|>"],
    )
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=NUM_HEADS * HEAD_DIM,
        patch_size=PATCH,
        spatial_merge_size=2,
        temporal_patch_size=2,
        num_position_embeddings=64,
        deepstack_visual_indexes=[0, 1],
    )
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
    )


def _processor(tokenizer, min_pixels: int, max_pixels: int, chat_template: str | None = None):
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    images = Qwen2VLImageProcessor(
        min_pixels=min_pixels, max_pixels=max_pixels, patch_size=PATCH, merge_size=2, image_mean=HALF, image_std=HALF
    )
    videos = Qwen3VLVideoProcessor(patch_size=PATCH, merge_size=2, image_mean=HALF, image_std=HALF)
    return Qwen3VLProcessor(
        image_processor=images, tokenizer=tokenizer, video_processor=videos, chat_template=chat_template
    )


def tiny_processor():
    """A `Qwen3VLProcessor` with the tiny tokenizer and a budget of `MIN_TOKENS`..`MAX_TOKENS` tokens."""
    return _processor(tiny_tokenizer(), MIN_TOKENS * TOKEN_PX**2, MAX_TOKENS * TOKEN_PX**2)


def tiny_qwen3_vl(seed: int = 0):
    """A float32 model in eval mode with SDPA attention and peaked random weights (std 0.2, as tiny_llava)."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    config = tiny_config()
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def real_qwen3_tokenizer():
    """Qwen3-VL's tokenizer: Qwen2-VL-Instruct's (tests/qwen_tokenizer.py) plus Qwen3's 12 added tokens."""
    from tests.qwen_tokenizer import real_qwen_tokenizer

    tokenizer = real_qwen_tokenizer()
    tokenizer.add_tokens(list(QWEN3_ADDED_TOKENS))
    return tokenizer


def real_qwen3_processor(min_pixels: int = RELEASED_MIN_PIXELS, max_pixels: int = RELEASED_MAX_PIXELS):
    """Qwen3-VL-Instruct's `Qwen3VLProcessor` (its tokenizer, image settings and chat template)."""
    return _processor(real_qwen3_tokenizer(), min_pixels, max_pixels, CHAT_TEMPLATE)
