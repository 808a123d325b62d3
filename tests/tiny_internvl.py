"""Tiny InternVL3 models and processors built in-process, for the engine's tests.

The real transformers classes (`InternVLForConditionalGeneration`: InternViT, pixel shuffle, MLP projector, a Qwen2
LLM) with random weights (std 0.2), a few layers and grouped-query attention; InternViT reads 112 px tiles of 14 px
patches (8 x 8, pixel-shuffled to 4 x 4 = 16 tokens a tile) and the real `GotOcr2ImageProcessor` cuts an image into
at most `max_tiles` tiles plus a thumbnail; an in-memory word-level tokenizer with InternVL's and Qwen's special
tokens; and InternVL3's real tokenizer: Qwen2.5-VL's (the committed Qwen2-VL vocabulary, Qwen2.5's 8 added tokens)
plus InternVL's 9 added tokens, exactly as transformers' conversion script builds it.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass

import numpy as np

from tests.tiny_qwen import EXPRESSION_WORDS

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>", "<unk>")
IMAGE_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
# the chat template of the released -hf checkpoints (transformers' InternVL conversion script)
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\n' }}{% elif content['type'] == 'video' %}{{ '<video>\n' }}{% elif content['type'] == "
    "'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)
# Qwen2.5-VL's added tokens after Qwen2-VL's (ids 151657-151664), then InternVL's (151665-151673)
QWEN2_5_ADDED = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
INTERNVL_ADDED = ("<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>")


@dataclass(frozen=True)
class InternVLSpec:
    """Shape of a tiny InternVL3: `tile` px tiles, at most `max_tiles` of them (plus the thumbnail)."""

    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    hidden_size: int = 64
    vision_hidden_size: int = 32
    tile: int = 112
    patch_size: int = 14
    max_tiles: int = 6

    @property
    def tile_grid(self) -> int:
        """Tokens a tile side: patches a side, halved by the pixel shuffle."""
        return self.tile // self.patch_size // 2


INTERNVL3 = InternVLSpec()


def tiny_vocab() -> dict[str, int]:
    words = list(SPECIAL_TOKENS) + ["\n", "system", "user"] + EXPRESSION_WORDS
    return {word: i for i, word in enumerate(dict.fromkeys(words))}


def tiny_tokenizer():
    """A `PreTrainedTokenizerFast`: words split on spaces, newlines kept as tokens, no BOS, InternVL's specials."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(WordLevel(vocab=tiny_vocab(), unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex("\n"), behavior="isolated"), pre_tokenizers.Split(Regex(" +"), behavior="removed")]
    )
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        extra_special_tokens=IMAGE_TOKENS,
    )


@functools.lru_cache(maxsize=1)
def _internvl_tokenizer_folder() -> tempfile.TemporaryDirectory:
    """Qwen2-VL's tokenizer with Qwen2.5's and InternVL's added tokens, saved once per process; removed at exit."""
    from transformers import Qwen2Tokenizer

    from tests.qwen_tokenizer import real_qwen_tokenizer

    tokenizer: Qwen2Tokenizer = real_qwen_tokenizer()
    tokenizer.add_tokens(list(QWEN2_5_ADDED + INTERNVL_ADDED), special_tokens=True)
    folder = tempfile.TemporaryDirectory(prefix="internvl3_tokenizer_")
    tokenizer.save_pretrained(folder.name)
    return folder


def real_internvl_tokenizer():
    """InternVL3-hf's tokenizer: Qwen2.5-VL's, InternVL's 9 added tokens (`<img>` 151665, `</img>` 151666,
    `<IMG_CONTEXT>` 151667, ... `</box>` 151673) and the processor's named image tokens."""
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer.from_pretrained(_internvl_tokenizer_folder().name, extra_special_tokens=IMAGE_TOKENS)


def tiny_config(spec: InternVLSpec = INTERNVL3, vocab_size: int | None = None, image_token_id: int | None = None):
    from transformers import InternVLConfig

    vocab = tiny_vocab()
    text = dict(
        model_type="qwen2",
        vocab_size=vocab_size or len(vocab),
        hidden_size=spec.hidden_size,
        intermediate_size=2 * spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=4096,
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    vision = dict(
        hidden_size=spec.vision_hidden_size,
        intermediate_size=2 * spec.vision_hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=[spec.tile, spec.tile],
        patch_size=[spec.patch_size, spec.patch_size],
        use_absolute_position_embeddings=True,
    )
    return InternVLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=vocab["<IMG_CONTEXT>"] if image_token_id is None else image_token_id,
        image_seq_length=spec.tile_grid**2,
    )


def tiny_processor(spec: InternVLSpec = INTERNVL3, tokenizer=None, chat_template: str | None = CHAT_TEMPLATE):
    """An `InternVLProcessor` with the real `GotOcr2ImageProcessor` at the tiny tile size and the released chat
    template."""
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    images = GotOcr2ImageProcessor(
        size={"height": spec.tile, "width": spec.tile},
        crop_to_patches=True,
        min_patches=1,
        max_patches=spec.max_tiles,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    return InternVLProcessor(
        image_processor=images,
        tokenizer=tokenizer if tokenizer is not None else tiny_tokenizer(),
        video_processor=InternVLVideoProcessor(),
        image_seq_length=spec.tile_grid**2,
        chat_template=chat_template,
    )


def tiny_internvl(spec: InternVLSpec = INTERNVL3, seed: int = 0):
    """A float32 model in eval mode with SDPA attention and peaked random weights (std 0.2, as tiny_llava)."""
    import torch
    from transformers import InternVLForConditionalGeneration

    config = tiny_config(spec)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def eager_internvl_attention(model, prompt, pixel_values) -> np.ndarray:
    """The reference path: the whole model's own forward from `input_ids` and the processor's tiles, eager attention,
    `output_attentions=True`; the last token's attention over the image tokens, `[L, H, num_image_tokens]` float32.
    Switches `model`'s attention to eager; pass a copy."""
    import torch

    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt.ids]), pixel_values=pixel_values, output_attentions=True)
    start, count = prompt.prefix.image_start, prompt.prefix.num_image_tokens
    return torch.stack([a[0, :, -1, start : start + count].float() for a in out.attentions]).numpy()
