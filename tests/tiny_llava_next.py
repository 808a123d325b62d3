"""Tiny LLaVA-NeXT and LLaVA-OneVision models and processors built in-process, for the engine's tests.

Real transformers classes with random weights (std 0.2): `LlavaNextForConditionalGeneration` (CLIP tower whose
56 px tiles are 4 x 4 patches of 14 px, CLS dropped; Mistral text model with grouped-query attention) and
`LlavaOnevisionForConditionalGeneration` (SigLIP tower whose 60 px tiles are 4 x 4 patches of 14 px, so the last
4 px of every tile are never read, as SigLIP-384's 27 patches of 14 px leave 6 px; Qwen2 text model with GQA; the
stitched grid pooled above 2 tiles' worth, `anyres_max_2`). Their processors are the real
`LlavaNextProcessor` / `LlavaOnevisionProcessor` with canvases scaled down from the released ones and a word-level
tokenizer holding the chat templates' words; the chat templates are those of llava-v1.6-mistral-7b-hf and
llava-onevision-qwen2-0.5b-ov-hf, as their chat_template.json writes them (the parts a user turn uses).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXPRESSION_WORDS = "the a red green blue cup dog cat man left right on of in with big small top bottom 2nd".split()
NEXT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ ' ' + content['text'] }}"
    "{% endfor %}{{ '</s>' }}{% endif %}{% endfor %}"
)
ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{{'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class AnyresSpec:
    """Shape of a tiny anyres model: `family` "llava_next" or "llava_onevision"; a tile is `image_size` px."""

    family: str
    image_size: int
    pinpoints: tuple[tuple[int, int], ...]
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    hidden_size: int = 64
    vision_hidden_size: int = 32
    patch_size: int = 14
    vision_aspect_ratio: str = "anyres_max_2"

    @property
    def specials(self) -> tuple[str, ...]:
        if self.family == "llava_next":
            return ("<unk>", "<s>", "</s>", "<image>", "<pad>")
        return ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>", "<unk>")

    @property
    def template(self) -> str:
        return NEXT_TEMPLATE if self.family == "llava_next" else ONEVISION_TEMPLATE


NEXT = AnyresSpec(
    family="llava_next", image_size=56, pinpoints=((56, 112), (112, 56), (112, 112), (168, 56), (56, 168))
)
ONEVISION = AnyresSpec(
    family="llava_onevision", image_size=60, pinpoints=tuple((60 * i, 60 * j) for i in (1, 2, 3) for j in (1, 2, 3))
)


def tiny_vocab(spec: AnyresSpec) -> dict[str, int]:
    words = list(spec.specials) + ["\n", "[INST]", "[/INST]", "user", "assistant"] + EXPRESSION_WORDS
    return {word: i for i, word in enumerate(dict.fromkeys(words))}


def tiny_tokenizer(spec: AnyresSpec):
    """A word-level `PreTrainedTokenizerFast`: words split on spaces, newlines kept; LLaVA-NeXT's adds BOS `<s>`."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = tiny_vocab(spec)
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex("\n"), behavior="isolated"), pre_tokenizers.WhitespaceSplit()]
    )
    backend.add_special_tokens(list(spec.specials))
    if spec.family == "llava_next":
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
        )
        names = dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    else:
        names = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", extra_special_tokens={"image_token": "<image>"}, **names
    )


def tiny_processor(spec: AnyresSpec = NEXT, tokenizer=None):
    """The family's real processor over the tiny canvases (or `tokenizer`), with the checkpoint's chat template."""
    from transformers import (
        LlavaNextImageProcessor,
        LlavaNextProcessor,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    tokenizer = tokenizer or tiny_tokenizer(spec)
    pinpoints = [list(p) for p in spec.pinpoints]
    side = spec.image_size
    if spec.family == "llava_next":
        images = LlavaNextImageProcessor(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}, image_grid_pinpoints=pinpoints
        )
        return LlavaNextProcessor(
            image_processor=images,
            tokenizer=tokenizer,
            patch_size=spec.patch_size,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=spec.template,
        )
    images = LlavaOnevisionImageProcessor(size={"height": side, "width": side}, image_grid_pinpoints=pinpoints)
    return LlavaOnevisionProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=(side // spec.patch_size) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio=spec.vision_aspect_ratio,
        chat_template=spec.template,
    )


def tiny_config(spec: AnyresSpec = NEXT):
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaOnevisionConfig, MistralConfig, Qwen2Config
    from transformers import SiglipVisionConfig

    vocab = tiny_vocab(spec)
    text = dict(
        vocab_size=len(vocab),
        hidden_size=spec.hidden_size,
        intermediate_size=2 * spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=1024,
    )
    vision = dict(
        hidden_size=spec.vision_hidden_size,
        intermediate_size=2 * spec.vision_hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
    )
    pinpoints = [list(p) for p in spec.pinpoints]
    if spec.family == "llava_next":
        return LlavaNextConfig(
            vision_config=CLIPVisionConfig(projection_dim=spec.vision_hidden_size, **vision),
            text_config=MistralConfig(
                bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"], pad_token_id=vocab["<pad>"], **text
            ),
            image_token_index=vocab["<image>"],
            image_grid_pinpoints=pinpoints,
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
        )
    return LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**vision),
        text_config=Qwen2Config(eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<|endoftext|>"], **text),
        image_token_index=vocab["<image>"],
        video_token_index=vocab["<video>"],
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio=spec.vision_aspect_ratio,
    )


def tiny_anyres(spec: AnyresSpec = NEXT, seed: int = 0):
    """A float32 model in eval mode with SDPA attention and peaked random weights (std 0.2, as tiny_llava)."""
    import torch
    from transformers import LlavaNextForConditionalGeneration, LlavaOnevisionForConditionalGeneration

    config = tiny_config(spec)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model_class = (
        LlavaNextForConditionalGeneration if spec.family == "llava_next" else LlavaOnevisionForConditionalGeneration
    )
    model = model_class(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def eager_anyres_attention(model, prompt, pixel_inputs: dict) -> np.ndarray:
    """The reference path: the whole model's own forward (its own feature packing), eager attention,
    `output_attentions=True`; the last token's attention over every image token, `[L, H, num_image_tokens]` float32.
    Switches `model`'s attention to eager; pass a copy."""
    import torch

    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt.ids]), output_attentions=True, **pixel_inputs)
    image = prompt.prefix.image_positions
    return torch.stack([a[0, :, -1, image].float() for a in out.attentions]).numpy()
