"""Tiny LLaVA-1.5 models and processors built in-process, in milliseconds, for the engine's tests.

The models are real transformers classes (`LlavaForConditionalGeneration` with a CLIP vision tower and a Llama
text model) with random weights, a few layers and a few heads. The processor is a real `LlavaProcessor` whose
tokenizer is an in-memory word-level `tokenizers` model that reproduces Llama's legacy sentencepiece behaviour:
every text segment between special tokens gets a "▁" prepended, so "<image>\\nthe red cup" tokenizes as
`<image>`, `▁`, `\\n`, `the`, `▁red`, `▁cup` (the stray "▁" the engine must drop).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SYSTEM_TEXT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language.\n"
)
EXPRESSION_WORDS = (
    "the a an red green blue yellow white black cup dog cat man woman person car ball tree shirt left right "
    "on of in with big small top bottom middle near far second first who is holding"
).split()
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<image>", "<pad>")
SPACE_MARK = "\u2581"


def _pieces(text: str) -> list[str]:
    """Split text the way the tiny tokenizer's pre-tokenizer does (after the legacy normalizer)."""
    import re

    normalized = SPACE_MARK + text.replace(" ", SPACE_MARK)
    return re.findall(f"{SPACE_MARK}?[^{SPACE_MARK}\\n]+|{SPACE_MARK}|\\n", normalized)



def tiny_vocab() -> dict[str, int]:
    """Special tokens first, then every piece of the system text, then each expression word with and without "▁"."""
    words: list[str] = list(SPECIAL_TOKENS) + [SPACE_MARK, "\n"]
    words += _pieces(SYSTEM_TEXT)
    for word in EXPRESSION_WORDS:
        words += [word, SPACE_MARK + word]
    vocab: dict[str, int] = {}
    for word in words:
        vocab.setdefault(word, len(vocab))
    return vocab


def tiny_tokenizer():
    """A `PreTrainedTokenizerFast` over `tiny_vocab()` with BOS `<s>`, no EOS, and `<image>` as a special token."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = tiny_vocab()
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE_MARK), normalizers.Replace(" ", SPACE_MARK)])
    backend.pre_tokenizer = pre_tokenizers.Split(
        Regex(f"{SPACE_MARK}?[^{SPACE_MARK}\\n]+|{SPACE_MARK}|\\n"), behavior="isolated"
    )
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )


@dataclass(frozen=True)
class TinySpec:
    """Shape of a tiny LLaVA: vision input `image_size` px cut into `patch_size` px patches; a Llama text model."""

    image_size: int = 56
    patch_size: int = 14
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    hidden_size: int = 64
    vision_hidden_size: int = 32

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


SPEC_PLAIN = TinySpec()
SPEC_GQA = TinySpec(num_heads=4, num_kv_heads=2)
SPEC_FINE = TinySpec(image_size=64, patch_size=8, num_layers=3, num_heads=6, num_kv_heads=3, hidden_size=96)


def tiny_processor(spec: TinySpec = SPEC_PLAIN):
    """A `LlavaProcessor` (resize + centre crop to `image_size`, CLIP mean and std) with the tiny tokenizer."""
    from transformers import LlavaImageProcessor, LlavaProcessor

    image_processor = LlavaImageProcessor(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tiny_tokenizer(),
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def tiny_config(spec: TinySpec = SPEC_PLAIN):
    """The `LlavaConfig` of a tiny model (vision features from the second-last CLIP layer, CLS dropped)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vocab = tiny_vocab()
    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden_size,
        intermediate_size=2 * spec.vision_hidden_size,
        projection_dim=spec.vision_hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
    )
    text = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=spec.hidden_size,
        intermediate_size=2 * spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=512,
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        pad_token_id=vocab["<pad>"],
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=vocab["<image>"],
        image_seq_length=spec.grid_size**2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


def tiny_llava(spec: TinySpec = SPEC_PLAIN, seed: int = 0):
    """A float32 `LlavaForConditionalGeneration` in eval mode with SDPA attention and peaked random weights.

    Weights are drawn with std 0.2 (not the usual 0.02) so that attention rows are far from uniform, which makes
    comparisons between attention paths meaningful.
    """
    import torch
    from transformers import LlavaForConditionalGeneration

    config = tiny_config(spec)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def tiny_engine(spec: TinySpec = SPEC_PLAIN, seed: int = 0, prefix_cache_size: int = 8):
    """An `LvlmEngine` around a fresh tiny model and processor."""
    from annotator.lvlm.engine import LvlmEngine

    return LvlmEngine(tiny_llava(spec, seed), tiny_processor(spec), prefix_cache_size=prefix_cache_size)


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An `height` x `width` RGB uint8 image of uniform noise."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def eager_image_attention(model, input_ids, pixel_values, image_start: int, grid_hw: tuple[int, int]) -> np.ndarray:
    """The reference path: eager attention, `output_attentions=True`, full depth and LM head, as the paper's code.

    Returns the last token's attention over the image positions of every layer and head, `[L, H, h, w]` float32.
    Switches `model`'s attention to eager; pass a copy.
    """
    import torch

    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixel_values, output_attentions=True)
    h, w = grid_hw
    rows = [a[0, :, -1, image_start : image_start + h * w].float() for a in out.attentions]
    return torch.stack(rows).reshape(len(rows), -1, h, w).numpy()
