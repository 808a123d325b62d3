"""The planted Qwen2-VL: a tiny Qwen2-VL whose localization heads are known because they were set by hand.

Real transformers classes (`Qwen2VLForConditionalGeneration`: Qwen2-VL's vision transformer with its 2 x 2 patch
merger and Qwen2-VL's text model; `Qwen2VLProcessor`: `Qwen2VLImageProcessor` at native resolution between
MIN_PIXELS and MAX_PIXELS, and a word-level tokenizer with Qwen's special tokens and chat template), saved with
`save_pretrained` and loaded like any local checkpoint. Every weight is set by construction (`build_planted_qwen`):

- Vision. The processor resizes the image to multiples of 28 px (smart resize) and flattens it into 14 px patches of
  `3 x 2 x 14 x 14` values (channel, the 2 copies of the frame, rows, columns; CLIP-normalized), grouped by 2 x 2
  merge blocks. The patch embedding (Conv3d over 2 x 14 x 14) takes each patch's mean colour per channel and four
  zero-sum +-1 texture filters (planted.py's), every channel stored mirrored (v, -v). The block adds only a constant
  pair (+K, -K) (zero `proj` and `fc2` weights, the `fc2` bias), so the merger's LayerNorm `ln_q` sees mean 0 and a
  variance dominated by K: it is linear. The merger's MLP (linear over the 2 x 2 merged patches, GELU, linear)
  writes the merged token's mean colour x, a piecewise-linear x^2 per channel (steep GELU hinges) and two texture
  "tents" per filter (of the merged block's summed response), exactly as planted.py's projector does per patch.
- Text (planted_decoder.py, shared with the planted LLaVA): the same head roles, here in 8 layers of 8 heads with 2
  key/value heads; q/k/v biases are zero. The attention sink is `<|im_start|>` (twice in every prompt: system and
  user turn). M-RoPE rotates dimension pairs by temporal, height and width positions (`mrope_section`); linear
  scaling by 1e8, which Qwen2-VL's rotary embedding applies before splitting the pairs into sections, leaves every
  pair under 1e-8 rad per position, so no logit depends on where a token is.

A merged token covers 28 x 28 px of the resized image: a scene of 448-672 px a side gives 16-24 tokens a side.
`python -m annotator.synthetic.planted_qwen --out resources/models/planted-qwen2-vl` rebuilds the shipped folder.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from annotator.grounding.heads import HeadsFile
from annotator.paths import MODELS_DIR
from annotator.synthetic.planted import save_planted, texture_filters
from annotator.synthetic.planted_decoder import (
    CLIP_MEAN,
    CLIP_STD,
    CONST,
    FEATURE_SCALE,
    RESIDUAL,
    DecoderPlan,
    PlantedHeads,
    decoder_weights,
)
from annotator.synthetic.scenes import EXPRESSION_WORDS, PALETTE

if TYPE_CHECKING:
    from transformers import Qwen2VLForConditionalGeneration, Qwen2VLProcessor

PLANTED_QWEN_DIR = MODELS_DIR / "planted-qwen2-vl"
MODEL_NAME = "planted-qwen2-vl"

PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
TOKEN_PX = PATCH_SIZE * MERGE_SIZE
MIN_PIXELS = (16 * TOKEN_PX) ** 2  # at least ~256 image tokens: small scenes are enlarged
MAX_PIXELS = (24 * TOKEN_PX) ** 2  # at most 576 image tokens

VISION_EMBED = 32
TEXT_HIDDEN = 128
NUM_LAYERS = 8
NUM_HEADS = 8
NUM_KV_HEADS = 2
HEAD_DIM = TEXT_HIDDEN // NUM_HEADS
INTERMEDIATE = 16
ROPE_SCALING = 1e8
MROPE_SECTION = (2, 3, 3)  # temporal, height, width rotation pairs of the 8 in a head

PLANTED_QWEN_HEADS = PlantedHeads(
    localization=((3, 2), (5, 7), (6, 4)),
    early_decoys=((1, 6),),
    low_sum_decoys=((2, 3), (4, 1)),
    scattered_decoys=(
        (0, 0), (0, 7), (1, 1), (1, 4),
        (2, 0), (2, 2), (2, 5), (2, 6),
        (3, 0), (3, 4), (3, 5), (3, 7),
        (4, 0), (4, 3), (4, 4), (4, 6),
        (5, 1), (5, 2), (5, 5),
        (6, 0), (6, 2), (6, 6), (6, 7),
        (7, 1), (7, 3), (7, 4), (7, 6),
    ),
    gather=(0, 5),
    num_layers=NUM_LAYERS,
    num_heads=NUM_HEADS,
)  # fmt: skip

# Each localizer's (and localizer decoy's) logit on each of the prompt's two `<|im_start|>` tokens.
LOCALIZER_SINK = {(3, 2): 2.4, (5, 7): 2.8, (6, 4): 2.0, (1, 6): 2.4, (2, 3): 7.0, (4, 1): 7.4}
DECODER_PLAN = DecoderPlan(
    hidden=TEXT_HIDDEN,
    num_kv_heads=NUM_KV_HEADS,
    head_dim=HEAD_DIM,
    heads=PLANTED_QWEN_HEADS,
    localizer_sink=LOCALIZER_SINK,
    image_tokens=300,
    text_tokens=25,
    sink_tokens=2,
    scattered_sink=(0.0, 2.5),
    seed=2409,
)
TEXTURE_FILTER_GAIN = 8.0
TEXTURE_BAND = (1.0, 2.0, 3.0)  # tent: rises from the first value to the second, back to 0 at the third

# Vision channels (VISION_EMBED dims per patch), each value v stored as the pair (v, -v).
_V_CONST = 0
_V_COLOUR = (2, 4, 6)
_V_TEXTURE = (8, 10, 12, 14)
_V_CONST_VALUE = 4096.0
_STEEP = 100.0
_KNOT_STEP = 0.3
_NUM_KNOTS = 7

SYSTEM_TEXT = "You are a helpful assistant."
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<unk>",
)
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)
"""Qwen2-VL-Instruct's chat template."""


def _pre_tokenizer():
    """Words and punctuation runs as tokens, each newline a token of its own (as Qwen has), other spaces dropped."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[^\S\n]+"), "removed"),
            pre_tokenizers.Split(Regex(r"\n|\w+|[^\w\s]+"), "isolated"),
        ]
    )


def vocabulary() -> list[str]:
    """The tokenizer's tokens: Qwen's specials, then the chat template's words, colour, shape and template words."""
    chat = f"system\n{SYSTEM_TEXT}\nuser\nassistant\n".lower()
    words = {word for word, _ in _pre_tokenizer().pre_tokenize_str(chat)}
    words |= EXPRESSION_WORDS
    return list(SPECIAL_TOKENS) + sorted(words)


def build_tokenizer():
    """A `PreTrainedTokenizerFast` over a word-level `tokenizers` model; lower-cases, adds no BOS (as Qwen's)."""
    from tokenizers import AddedToken, Tokenizer, normalizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(vocabulary())}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = _pre_tokenizer()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        model_max_length=32768,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor() -> "Qwen2VLProcessor":
    """Qwen2-VL's processor: native resolution between MIN_PIXELS and MAX_PIXELS, CLIP normalisation."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    shared = dict(
        patch_size=PATCH_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        merge_size=MERGE_SIZE,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    image_processor = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, **shared)
    video_processor = Qwen2VLVideoProcessor(
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}, **shared
    )
    return Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(),
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def build_config(tokenizer):
    """The Qwen2VLConfig: one vision block of 32 dims with the 2 x 2 merger, 8 text layers with GQA and M-RoPE."""
    from transformers import Qwen2VLConfig

    vision = dict(
        depth=1,
        embed_dim=VISION_EMBED,
        hidden_size=TEXT_HIDDEN,
        num_heads=2,
        mlp_ratio=1,
        patch_size=PATCH_SIZE,
        spatial_merge_size=MERGE_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
    )
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_parameters={
            "rope_type": "linear",
            "factor": ROPE_SCALING,
            "rope_theta": 1000000.0,
            "mrope_section": list(MROPE_SECTION),
        },
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    ids = tokenizer.convert_tokens_to_ids
    return Qwen2VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )


def build_planted_qwen() -> tuple["Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"]:
    """The planted Qwen2-VL (float32, eval mode) and its processor, built deterministically."""
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    processor = build_processor()
    tokenizer = processor.tokenizer
    config = build_config(tokenizer)
    with torch.device("cpu"):
        model = Qwen2VLForConditionalGeneration(config)
    state = {name: torch.zeros_like(t) for name, t in model.state_dict().items()}
    for name, tensor in state.items():
        if name.endswith(("norm.weight", "layernorm.weight", "norm1.weight", "norm2.weight")):
            tensor.fill_(1.0)
    weights = {**_vision_weights(), **_merger_weights()}
    weights.update(decoder_weights(DECODER_PLAN, tokenizer, tokenizer.convert_tokens_to_ids("<|im_start|>"), PALETTE))
    for name, value in weights.items():
        state[name] = torch.as_tensor(value, dtype=torch.float32)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, processor


def _vision_weights() -> dict[str, np.ndarray]:
    """Patch embedding (mean colour, texture filters, mirrored), the block's constant pair, `ln_q`'s scale."""
    area = TEMPORAL_PATCH_SIZE * PATCH_SIZE * PATCH_SIZE
    conv = np.zeros((VISION_EMBED, 3, TEMPORAL_PATCH_SIZE, PATCH_SIZE, PATCH_SIZE))
    for c, channel in enumerate(_V_COLOUR):
        conv[channel, c] = 1.0 / area
        conv[channel + 1, c] = -1.0 / area
    patterns, mixes = texture_filters()
    for f, channel in enumerate(_V_TEXTURE):
        # Both copies of the frame are read at half weight: a still image gives planted.py's per-patch response.
        kernel = TEXTURE_FILTER_GAIN * mixes[f][:, None, None] * patterns[f][None] / PATCH_SIZE / TEMPORAL_PATCH_SIZE
        conv[channel] = kernel[:, None]
        conv[channel + 1] = -kernel[:, None]
    constant = np.zeros(VISION_EMBED)
    constant[_V_CONST], constant[_V_CONST + 1] = _V_CONST_VALUE, -_V_CONST_VALUE
    # With every channel mirrored the LayerNorm mean is 0 and its std is ~ K sqrt(2 / D): scale it back.
    nominal_std = _V_CONST_VALUE * math.sqrt(2.0 / VISION_EMBED)
    prefix = "model.visual."
    return {
        prefix + "patch_embed.proj.weight": conv,
        prefix + "blocks.0.mlp.fc2.bias": constant,
        prefix + "merger.ln_q.weight": np.full(VISION_EMBED, nominal_std),
    }


def _merger_weights() -> dict[str, np.ndarray]:
    """mlp.0 -> GELU -> mlp.2 over the 4 merged patches: mean colour x, its square and texture tents, as residual."""
    merged = MERGE_SIZE * MERGE_SIZE
    units = merged * VISION_EMBED
    w1 = np.zeros((units, units))
    b1 = np.zeros(units)
    w2 = np.zeros((TEXT_HIDDEN, units))
    b2 = np.zeros(TEXT_HIDDEN)
    b2[RESIDUAL.const] = CONST
    b2[RESIDUAL.image] = FEATURE_SCALE
    unit = 0

    def hinge(channel: int, sign: int, knot: float, weight: float) -> int:
        """A unit that is ReLU(sign * v - knot) (times _STEEP), v the merged patches' values at `channel` each
        times `weight`, summed."""
        nonlocal unit
        source = channel if sign > 0 else channel + 1
        w1[unit, [j * VISION_EMBED + source for j in range(merged)]] = _STEEP * weight
        b1[unit] = -_STEEP * knot
        unit += 1
        return unit - 1

    scale = FEATURE_SCALE / _STEEP
    mean = 1.0 / merged
    for c, channel in enumerate(_V_COLOUR):
        plus, minus = hinge(channel, 1, 0.0, mean), hinge(channel, -1, 0.0, mean)
        w2[RESIDUAL.x[c], plus], w2[RESIDUAL.x[c], minus] = scale, -scale
        # x^2 interpolated at the knots k * step: slope (2k + 1) * step between knots k and k + 1.
        w2[RESIDUAL.x_sq[c], plus] = w2[RESIDUAL.x_sq[c], minus] = _KNOT_STEP * scale
        for k in range(1, _NUM_KNOTS + 1):
            for sign in (1, -1):
                w2[RESIDUAL.x_sq[c], hinge(channel, sign, k * _KNOT_STEP, mean)] = 2 * _KNOT_STEP * scale
    low, peak, high = TEXTURE_BAND
    # The merged block's response: the 4 patches' responses summed, halved (the same spread on independent noise).
    block = 1.0 / math.sqrt(merged)
    for f, channel in enumerate(_V_TEXTURE):
        for s, sign in enumerate((1, -1)):
            target = RESIDUAL.texture[2 * f + s]
            w2[target, hinge(channel, sign, low, block)] = scale
            w2[target, hinge(channel, sign, peak, block)] = -2.0 * scale
            w2[target, hinge(channel, sign, high, block)] = scale
    prefix = "model.visual.merger.mlp."
    return {prefix + "0.weight": w1, prefix + "0.bias": b1, prefix + "2.weight": w2, prefix + "2.bias": b2}


def planted_qwen_heads_file() -> HeadsFile:
    """The heads file shipped with the planted Qwen2-VL: its three localization heads, by construction."""
    return HeadsFile(
        model=MODEL_NAME,
        heads=list(PLANTED_QWEN_HEADS.localization),
        source="planted by construction (annotator/synthetic/planted_qwen.py); discovery on synthetic scenes recovers "
        "them",
        num_layers=NUM_LAYERS,
        num_heads=NUM_HEADS,
    )


def save_planted_qwen(folder: str | Path = PLANTED_QWEN_DIR) -> Path:
    """Build the planted Qwen2-VL and write it, its processor and `heads.json` into `folder`."""
    return save_planted(folder, *build_planted_qwen(), planted_qwen_heads_file())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the planted Qwen2-VL model and save it.")
    parser.add_argument("--out", type=Path, default=PLANTED_QWEN_DIR, help="folder to write")
    args = parser.parse_args(argv)
    print(save_planted_qwen(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
