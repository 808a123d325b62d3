"""Tiny DeepSeek-VL and DeepSeek-VL hybrid models and processors built in-process, for the engine's tests.

Real transformers classes (`DeepseekVLForConditionalGeneration`: SigLIP + aligner + Llama;
`DeepseekVLHybridForConditionalGeneration`: the same plus the SAM high-resolution branch) with random weights
(std 0.2), a few layers, grouped-query attention, a 96 px SigLIP of 16 px patches (a 6 x 6 grid) and, for the
hybrid, a 192 px SAM branch; the real image processors at those sizes; and an in-memory word-level tokenizer with a
BOS, DeepSeek-VL's `<image_placeholder>`, the chat template's words and a few expression words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tests.tiny_qwen import EXPRESSION_WORDS

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
IMAGE_TOKEN = "<image_placeholder>"
SPECIAL_TOKENS = (BOS, EOS, IMAGE_TOKEN, "<unk>")
# the chat template of the released checkpoints (as transformers' DeepSeek-VL processor tests write it)
CHAT_TEMPLATE = (
    "{% set seps = ['\n\n', '<\uff5cend\u2581of\u2581sentence\uff5c>'] %}{% set i = 0 %}You are a helpful language "
    "and vision assistant. You are able to understand the visual content that the user provides, and assist the user "
    "with a variety of tasks using natural language.\n\n{% for message in messages %}{% if message['role']|lower == "
    "'user' %}User: {% elif message['role']|lower == 'assistant' %}Assistant:{% if not (loop.last and not "
    "add_generation_prompt and message['content'][0]['type']=='text' and message['content'][0]['text']=='') %} "
    "{% endif %}{% else %}{{ message['role'].capitalize() }}: {% endif %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image_placeholder>{% elif content['type'] == 'text' %}{% set text = "
    "content['text'] %}{% if loop.first %}{% set text = text.lstrip() %}{% endif %}{% if loop.last %}{% set text = "
    "text.rstrip() %}{% endif %}{% if not loop.first and message['content'][loop.index0-1]['type'] == 'text' %}"
    "{{ ' ' + text }}{% else %}{{ text }}{% endif %}{% endif %}{% endfor %}{% if not loop.last or "
    "add_generation_prompt %}{% if message['role']|lower == 'user' %}{{ seps[0] }}{% else %}{{ seps[1] }}{% endif %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
PROMPT_WORDS = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language. User:"
).split()


@dataclass(frozen=True)
class DeepseekSpec:
    """Shape of a tiny DeepSeek-VL: `hybrid` adds the SAM branch reading `high_res_size` px."""

    hybrid: bool = False
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    hidden_size: int = 64
    vision_hidden_size: int = 32
    image_size: int = 96
    patch_size: int = 16
    high_res_size: int = 192

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


DEEPSEEK_VL = DeepseekSpec()
DEEPSEEK_VL_HYBRID = DeepseekSpec(hybrid=True, num_heads=8)


def tiny_vocab() -> dict[str, int]:
    words = list(SPECIAL_TOKENS) + ["\n"] + PROMPT_WORDS + EXPRESSION_WORDS
    return {word: i for i, word in enumerate(dict.fromkeys(words))}


def tiny_tokenizer():
    """A `PreTrainedTokenizerFast`: words split on spaces, newlines kept as tokens, a BOS first, DeepSeek's specials."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = tiny_vocab()
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex("\n"), behavior="isolated"), pre_tokenizers.Split(Regex(" +"), behavior="removed")]
    )
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    backend.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token="<unk>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )


def tiny_config(spec: DeepseekSpec = DEEPSEEK_VL):
    from transformers import DeepseekVLConfig, DeepseekVLHybridConfig

    vocab = tiny_vocab()
    text = dict(
        model_type="llama",
        vocab_size=len(vocab),
        hidden_size=spec.hidden_size,
        intermediate_size=2 * spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=1024,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[EOS],
    )
    vision = dict(
        model_type="siglip_vision_model",
        hidden_size=spec.vision_hidden_size,
        intermediate_size=2 * spec.vision_hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
    )
    if not spec.hybrid:
        return DeepseekVLConfig(text_config=text, vision_config=vision, image_token_id=vocab[IMAGE_TOKEN])
    high_res = dict(
        model_type="sam_vision_model",
        hidden_size=16,
        output_channels=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=spec.high_res_size,
        patch_size=16,
        window_size=4,
        global_attn_indexes=[1],
        mlp_dim=32,
    )
    return DeepseekVLHybridConfig(
        text_config=text, vision_config=vision, high_res_vision_config=high_res, image_token_id=vocab[IMAGE_TOKEN]
    )


def tiny_processor(spec: DeepseekSpec = DEEPSEEK_VL, chat_template: str | None = CHAT_TEMPLATE):
    """The family's real processor at the tiny sizes, with the tiny tokenizer and the released chat template."""
    from transformers import (
        DeepseekVLHybridImageProcessor,
        DeepseekVLHybridProcessor,
        DeepseekVLImageProcessor,
        DeepseekVLProcessor,
    )

    size = {"height": spec.image_size, "width": spec.image_size}
    tokens = spec.grid_size * spec.grid_size
    if not spec.hybrid:
        images = DeepseekVLImageProcessor(size=size)
        return DeepseekVLProcessor(images, tiny_tokenizer(), chat_template=chat_template, num_image_tokens=tokens)
    high_res = {"height": spec.high_res_size, "width": spec.high_res_size}
    images = DeepseekVLHybridImageProcessor(size=size, high_res_size=high_res)
    return DeepseekVLHybridProcessor(images, tiny_tokenizer(), chat_template=chat_template, num_image_tokens=tokens)


def tiny_deepseek_vl(spec: DeepseekSpec = DEEPSEEK_VL, seed: int = 0):
    """A float32 model in eval mode with SDPA attention and peaked random weights (std 0.2, as tiny_llava)."""
    import torch
    from transformers import DeepseekVLForConditionalGeneration, DeepseekVLHybridForConditionalGeneration

    config = tiny_config(spec)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model_class = DeepseekVLHybridForConditionalGeneration if spec.hybrid else DeepseekVLForConditionalGeneration
    model = model_class(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
        if spec.hybrid:
            model.model.high_res_vision_alpha.fill_(0.5)  # zero in a fresh model: the SAM neck would be unused
    return model.eval()


def eager_deepseek_attention(model, prompt, pixel_inputs: dict, grid_hw: tuple[int, int]) -> np.ndarray:
    """The reference path: the whole model's own forward from `input_ids` and the processor's pixels, eager
    attention, `output_attentions=True`; the last token's attention over the image tokens, `[L, H, h, w]` float32.
    Switches `model`'s attention to eager; pass a copy."""
    import torch

    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt.ids]), output_attentions=True, **pixel_inputs)
    start, count = prompt.prefix.image_start, prompt.prefix.num_image_tokens
    rows = [a[0, :, -1, start : start + count].float() for a in out.attentions]
    return torch.stack(rows).reshape(len(rows), -1, *grid_hw).numpy()
