"""The planted model: a tiny LLaVA-1.5 whose localization heads are known because they were set by hand.

Real transformers classes (`LlavaForConditionalGeneration`: CLIP vision tower, projector, Llama language model;
`LlavaProcessor`: a 336 px `CLIPImageProcessor` and a word-level tokenizer that adds BOS like Llama's), LLaVA-1.5's
24 x 24 grid of 14 px patches, saved with `save_pretrained` and loaded like any local checkpoint. Every weight is
set by construction (`build_planted_model`, deterministic):

- Vision: the patch convolution takes each patch's mean colour per channel and four zero-sum +-1 "texture"
  filters (zero on a flat patch, noise-like on a noisy one). Every channel is stored mirrored (v, -v) next to a
  constant pair (+K, -K), so CLIP's pre-LayerNorm sees mean 0 and a variance dominated by K: it is linear to
  about 1e-4. The encoder layers are identities (zero `out_proj` and `fc2`).
- Projector (linear, GELU, linear): GELU(a v) - GELU(-a v) = a v exactly passes the colour through; steep GELU
  hinges at 0.3 spacing make a piecewise-linear square of each channel; each texture response becomes two "tent"
  features (its positive and negative part, rising from 1 to 2 and back to 0 at 3, so strong object edges give
  nothing). An image token carries: a constant, an image flag, x (colour), ~x^2 per channel, 8 texture features.
- Language model (`planted_decoder.py`, shared with the planted Qwen2-VL): a large constant channel keeps RMSNorm
  a fixed scale; the MLPs and every `o_proj` except the gather head's are zero, so attention reads but never writes
  after layer 0. RoPE is on and made harmless by linear scaling by 1e8 (at most 1e-8 rad per position, under 1e-5
  rad across a prompt). Grouped-query attention: 4 key/value heads for 8 query heads; each key/value head has its
  own key layout, and each query head reads its own. BOS is the attention sink.
- Head roles (`PLANTED_HEADS`). Layer 0: a gather head copies the expression's colour word (its colour c and
  |c|^2) into every later token, so the last token knows the colour whatever the last word is. Three
  localization heads in layers >= 2 give image patch x the logit -BETA |x - c|^2, text tokens -30 and BOS a few:
  they attend to the patches of the named colour. Decoys: the same localizer in layer 1 (only the layer rule
  removes it); the same localizer with a strong pull to BOS, so a small image-attention sum (only tau removes
  it); high-sum heads drawn to one texture feature, whose maps are salt-and-pepper and change with the image
  noise (only the entropy vote removes them); and uninformative heads that look only at BOS and text, whose
  image maps are exactly flat and whose sums form the low cluster below the elbow.

`python -m annotator.synthetic.planted --out resources/models/planted-llava` rebuilds the shipped folder.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from annotator.grounding.heads import HeadsFile
from annotator.lvlm.model_input import SYSTEM_PROMPT
from annotator.synthetic.planted_decoder import (
    CLIP_MEAN,
    CLIP_STD,
    CONST,
    FEATURE_SCALE,
    NUM_TEXTURE_FILTERS,
    RESIDUAL,
    DecoderPlan,
    PlantedHeads,
    decoder_weights,
)
from annotator.synthetic.scenes import EXPRESSION_WORDS, PALETTE
from annotator.paths import MODELS_DIR

if TYPE_CHECKING:
    import torch
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

PLANTED_MODEL_DIR = MODELS_DIR / "planted-llava"
MODEL_NAME = "planted-llava"

IMAGE_SIZE = 336
PATCH_SIZE = 14
GRID = IMAGE_SIZE // PATCH_SIZE

VISION_HIDDEN = 32
TEXT_HIDDEN = 96
NUM_LAYERS = 6
NUM_HEADS = 8
NUM_KV_HEADS = 4
HEAD_DIM = 16
INTERMEDIATE = 16
ROPE_SCALING = 1e8

PLANTED_HEADS = PlantedHeads(
    localization=((3, 5), (4, 2), (5, 6)),
    early_decoys=((1, 5),),
    low_sum_decoys=((2, 1), (3, 0)),
    scattered_decoys=(
        (0, 6), (1, 2),
        (2, 0), (2, 3), (2, 4), (2, 7),
        (3, 2), (3, 3), (3, 6), (3, 7),
        (4, 0), (4, 4), (4, 5), (4, 7),
        (5, 1), (5, 2), (5, 4), (5, 7),
    ),
    gather=(0, 3),
    num_layers=NUM_LAYERS,
    num_heads=NUM_HEADS,
)  # fmt: skip

# Each localizer's (and localizer decoy's) BOS logit; the text decoder's shape and heads.
LOCALIZER_BOS = {(3, 5): 3.0, (4, 2): 3.4, (5, 6): 2.6, (1, 5): 3.0, (2, 1): 7.6, (3, 0): 8.0}
DECODER_PLAN = DecoderPlan(
    hidden=TEXT_HIDDEN,
    num_kv_heads=NUM_KV_HEADS,
    head_dim=HEAD_DIM,
    heads=PLANTED_HEADS,
    localizer_sink=LOCALIZER_BOS,
    image_tokens=GRID * GRID,
    text_tokens=35,
)
TEXTURE_FILTER_GAIN = 8.0
TEXTURE_BAND = (1.0, 2.0, 3.0)  # tent: rises from the first value to the second, back to 0 at the third
_SEED = 1505

# Vision tower channels (VISION_HIDDEN dims), each value v stored as the pair (v, -v).
_V_CONST = 0
_V_COLOUR = (2, 4, 6)
_V_TEXTURE = (8, 10, 12, 14)
_V_CONST_VALUE = 4096.0

# Projector: GELU steepness and the hinge knots of the squares.
_STEEP = 100.0
_KNOT_STEP = 0.3
_NUM_KNOTS = 7


SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")


def vocabulary() -> list[str]:
    """The tokenizer's tokens: specials, then the system prompt's, colour, shape and template words (sorted)."""
    from tokenizers.pre_tokenizers import Whitespace

    words = {word for word, _ in Whitespace().pre_tokenize_str(SYSTEM_PROMPT.lower())}
    words |= EXPRESSION_WORDS
    return list(SPECIAL_TOKENS) + sorted(words)


def build_tokenizer():
    """A `PreTrainedTokenizerFast` over a word-level `tokenizers` model; lower-cases and adds BOS like Llama's."""
    from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(vocabulary())}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=4096,
    )


def build_processor():
    """LLaVA-1.5's processor set-up: 336 px CLIP image processor, 14 px patches, one CLS token dropped."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def build_config(tokenizer):
    """The LlavaConfig: CLIP vision (336 px, 14 px patches, 2 layers), Llama text model with GQA and linear RoPE."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=VISION_HIDDEN,
        intermediate_size=VISION_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=VISION_HIDDEN,
        hidden_act="quick_gelu",
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        head_dim=HEAD_DIM,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "linear", "factor": ROPE_SCALING, "rope_theta": 10000.0},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=GRID * GRID,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )


def build_planted_model() -> tuple["LlavaForConditionalGeneration", "LlavaProcessor"]:
    """The planted model (float32, eval mode) and its processor, built deterministically (a fraction of a second
    once transformers is imported)."""
    import torch
    from transformers import LlavaForConditionalGeneration

    processor = build_processor()
    config = build_config(processor.tokenizer)
    with torch.device("cpu"):
        model = LlavaForConditionalGeneration(config)
    state = {name: torch.zeros_like(t) for name, t in model.state_dict().items()}
    _set_norms(state)
    for name, value in _planted_weights(processor.tokenizer).items():
        state[name] = torch.as_tensor(value, dtype=torch.float32)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, processor


def _set_norms(state: dict[str, "torch.Tensor"]) -> None:
    """LayerNorm and RMSNorm weights of one (their biases stay zero)."""
    for name, tensor in state.items():
        if name.endswith(("norm.weight", "norm1.weight", "norm2.weight")):
            tensor.fill_(1.0)


def _planted_weights(tokenizer) -> dict[str, np.ndarray]:
    """Every non-zero weight of the planted model, by state-dict name."""
    weights: dict[str, np.ndarray] = {}
    weights.update(_vision_weights())
    weights.update(_projector_weights())
    weights.update(decoder_weights(DECODER_PLAN, tokenizer, tokenizer.bos_token_id, PALETTE))
    return weights


def texture_filters() -> tuple[np.ndarray, np.ndarray]:
    """Zero-sum +-1 patterns `[F, 14, 14]` (balanced, seeded) and unit channel mixes `[F, 3]`."""
    rng = np.random.default_rng([_SEED, 1])
    half = PATCH_SIZE * PATCH_SIZE // 2
    patterns = np.stack([rng.permutation(np.r_[np.ones(half), -np.ones(half)]) for _ in range(NUM_TEXTURE_FILTERS)])
    mixes = rng.uniform(0.3, 1.0, size=(NUM_TEXTURE_FILTERS, 3))
    mixes /= np.linalg.norm(mixes, axis=1, keepdims=True)
    return patterns.reshape(-1, PATCH_SIZE, PATCH_SIZE), mixes


def _vision_weights() -> dict[str, np.ndarray]:
    prefix = "model.vision_tower."
    conv = np.zeros((VISION_HIDDEN, 3, PATCH_SIZE, PATCH_SIZE))
    for c, channel in enumerate(_V_COLOUR):
        conv[channel, c] = 1.0 / (PATCH_SIZE * PATCH_SIZE)
        conv[channel + 1, c] = -1.0 / (PATCH_SIZE * PATCH_SIZE)
    patterns, mixes = texture_filters()
    for f, channel in enumerate(_V_TEXTURE):
        kernel = TEXTURE_FILTER_GAIN * mixes[f][:, None, None] * patterns[f][None] / PATCH_SIZE
        conv[channel] = kernel
        conv[channel + 1] = -kernel
    positions = np.zeros((GRID * GRID + 1, VISION_HIDDEN))
    positions[:, _V_CONST] = _V_CONST_VALUE
    positions[:, _V_CONST + 1] = -_V_CONST_VALUE
    # With every channel mirrored the LayerNorm mean is 0 and its std is ~ K sqrt(2 / D): scale it back.
    nominal_std = _V_CONST_VALUE * math.sqrt(2.0 / VISION_HIDDEN)
    return {
        prefix + "embeddings.patch_embedding.weight": conv,
        prefix + "embeddings.position_embedding.weight": positions,
        prefix + "pre_layrnorm.weight": np.full(VISION_HIDDEN, nominal_std),
    }


def _projector_weights() -> dict[str, np.ndarray]:
    """linear_1 -> GELU -> linear_2: colour x, its piecewise-linear square and texture tents, into the residual."""
    w1 = np.zeros((TEXT_HIDDEN, VISION_HIDDEN))
    b1 = np.zeros(TEXT_HIDDEN)
    w2 = np.zeros((TEXT_HIDDEN, TEXT_HIDDEN))
    b2 = np.zeros(TEXT_HIDDEN)
    b2[RESIDUAL.const] = CONST
    b2[RESIDUAL.image] = FEATURE_SCALE
    unit = 0

    def hinge(channel: int, sign: int, knot: float) -> int:
        """A unit that is ReLU(sign * v - knot) for vision value v at `channel` (times _STEEP)."""
        nonlocal unit
        w1[unit, channel if sign > 0 else channel + 1] = _STEEP
        b1[unit] = -_STEEP * knot
        unit += 1
        return unit - 1

    scale = FEATURE_SCALE / _STEEP
    for c, channel in enumerate(_V_COLOUR):
        plus, minus = hinge(channel, 1, 0.0), hinge(channel, -1, 0.0)
        w2[RESIDUAL.x[c], plus], w2[RESIDUAL.x[c], minus] = scale, -scale
        # x^2 interpolated at the knots k * step: slope (2k + 1) * step between knots k and k + 1.
        w2[RESIDUAL.x_sq[c], plus] = w2[RESIDUAL.x_sq[c], minus] = _KNOT_STEP * scale
        for k in range(1, _NUM_KNOTS + 1):
            for sign in (1, -1):
                w2[RESIDUAL.x_sq[c], hinge(channel, sign, k * _KNOT_STEP)] = 2 * _KNOT_STEP * scale
    low, peak, high = TEXTURE_BAND
    for f, channel in enumerate(_V_TEXTURE):
        for s, sign in enumerate((1, -1)):
            target = RESIDUAL.texture[2 * f + s]
            w2[target, hinge(channel, sign, low)] = scale
            w2[target, hinge(channel, sign, peak)] = -2.0 * scale
            w2[target, hinge(channel, sign, high)] = scale
    if unit > TEXT_HIDDEN:
        raise ValueError(f"the projector needs {unit} GELU units, the text hidden size is {TEXT_HIDDEN}")
    prefix = "model.multi_modal_projector."
    return {
        prefix + "linear_1.weight": w1,
        prefix + "linear_1.bias": b1,
        prefix + "linear_2.weight": w2,
        prefix + "linear_2.bias": b2,
    }


def planted_heads_file() -> HeadsFile:
    """The heads file shipped with the planted model: its three localization heads, by construction."""
    return HeadsFile(
        model=MODEL_NAME,
        heads=list(PLANTED_HEADS.localization),
        source="planted by construction (annotator/synthetic/planted.py); discovery on synthetic scenes recovers them",
        num_layers=NUM_LAYERS,
        num_heads=NUM_HEADS,
    )


def save_planted(folder: str | Path, model, processor, heads_file: HeadsFile) -> Path:
    """Write a planted model, its processor and its `heads.json` into `folder` with `save_pretrained`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    heads_file.save(folder / "heads.json")
    return folder


def save_planted_model(folder: str | Path = PLANTED_MODEL_DIR) -> Path:
    """Build the planted model and write it, its processor and `heads.json` into `folder`."""
    return save_planted(folder, *build_planted_model(), planted_heads_file())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the planted LLaVA model and save it.")
    parser.add_argument("--out", type=Path, default=PLANTED_MODEL_DIR, help="folder to write")
    args = parser.parse_args(argv)
    print(save_planted_model(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
