"""The text decoder shared by the planted models (`planted.py`: LLaVA-1.5, `planted_qwen.py`: Qwen2-VL): the residual
stream every token carries and the attention weights that give each head its role.

- Residual stream (`RESIDUAL`): a large constant channel keeps RMSNorm a fixed scale; every other feature is stored
  at FEATURE_SCALE. Text tokens carry a text flag, the sink token (LLaVA's BOS, Qwen's `<|im_start|>`) a sink flag,
  colour words their colour c (in the image processor's CLIP-normalized units) and |c|^2. Image tokens, written by
  each model's vision side, carry an image flag, the token's mean colour x, ~x^2 per channel and 8 texture features.
- The MLPs and every `o_proj` except the gather head's are zero, so attention reads but never writes after layer 0.
  Each key/value head has its own key layout (`key_layouts`), and each query head reads its own kv head's layout.
- Head roles (`PlantedHeads`). The gather head copies the expression's colour word (c and |c|^2) into every later
  token, so the last token knows the colour whatever the last word is. Localizers give image token x the logit
  -BETA |x - c|^2 = BETA (2 c.x - x^2 - |c|^2) (a dot product of the query's (2c, -1, -|c|^2) with the key's
  (x, x^2, 1)), text tokens -30 and the sink a few: they attend to the tokens of the named colour. Decoys: the same
  localizer in layer 1 (only the layer rule removes it); the same localizer with a strong pull to the sink, so a
  small image-attention sum (only tau removes it); high-sum heads drawn to one texture feature, whose maps are
  salt-and-pepper and change with the image noise (only the entropy vote removes them); and uninformative heads that
  look only at the sink and text, whose image maps are exactly flat and whose sums form the low cluster.
- RoPE must not move these logits: both models scale it linearly by 1e8 (at most 1e-8 rad per position), and the
  sink and text flags share one rotation pair (dims 0 and head_dim / 2), which is exactly zero on image tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from annotator.grounding.heads import Head

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Localizer sharpness (logit -BETA |x - c|^2, x and c in CLIP-normalized units).
BETA = 6.0
TEXT_PENALTY = 30.0
GATHER_SCORE = 25.0
SCATTERED_GAIN = (4.0, 7.0)  # range of a scattered head's logit per unit of its texture feature
NUM_TEXTURE_FILTERS = 4
CONST = 1.0
FEATURE_SCALE = 0.001  # every non-constant residual feature is stored at this scale, so RMSNorm stays fixed


@dataclass(frozen=True)
class ResidualLayout:
    """Which residual dims hold which feature. `texture`: filter f's positive-part tent at 2f, negative at 2f + 1."""

    const: int = 0
    text: int = 1
    sink: int = 2
    colour_word: int = 3
    colour: tuple[int, int, int] = (4, 5, 6)  # the colour word's colour, CLIP-normalized
    colour_sq: int = 7
    gathered: tuple[int, int, int] = (8, 9, 10)  # the gathered colour word's colour (written by the gather head)
    gathered_sq: int = 11
    image: int = 12
    x: tuple[int, int, int] = (13, 14, 15)  # image token mean colour
    x_sq: tuple[int, int, int] = (16, 17, 18)  # its piecewise-linear square, per channel
    texture: tuple[int, ...] = tuple(range(19, 27))


RESIDUAL = ResidualLayout()

# Key features of a key/value head. Dims 0 and head_dim / 2 (one RoPE pair) hold the sink and text flags, which are
# exactly zero on image tokens; the other 14 dims hold these features in a per-key/value-head order.
_KEY_FEATURES = ("image", "colour_word", "x0", "x1", "x2", "sq0", "sq1", "sq2", "t0", "t1", "t2", "t3", "t4", "t5")


@dataclass(frozen=True)
class PlantedHeads:
    """The role of each (layer, head) of a planted model, 0-based. Heads not listed are uninformative.

    `localization`: the three planted heads. `early_decoys`: the localizer in a layer below 2. `low_sum_decoys`: the
    localizer with a small image-attention sum. `scattered_decoys`: high-sum heads with salt-and-pepper maps.
    `gather`: the layer-0 head that moves the colour word into the last token. `num_layers` x `num_heads`: the model.
    """

    localization: tuple[Head, ...]
    early_decoys: tuple[Head, ...]
    low_sum_decoys: tuple[Head, ...]
    scattered_decoys: tuple[Head, ...]
    gather: Head
    num_layers: int
    num_heads: int

    def role(self, head: Head) -> str:
        """'localization', 'early decoy', 'low-sum decoy', 'scattered decoy', 'gather' or 'uninformative'."""
        roles = {
            "localization": self.localization,
            "early decoy": self.early_decoys,
            "low-sum decoy": self.low_sum_decoys,
            "scattered decoy": self.scattered_decoys,
            "gather": (self.gather,),
        }
        for name, heads in roles.items():
            if tuple(head) in heads:
                return name
        return "uninformative"

    def with_role(self, role: str) -> tuple[Head, ...]:
        """Every head of the model with `role`, in (layer, head) order."""
        return tuple(
            (l, h) for l in range(self.num_layers) for h in range(self.num_heads) if self.role((l, h)) == role
        )


@dataclass(frozen=True)
class DecoderPlan:
    """A planted text decoder: its shape, its heads and the prompts it is set for.

    `localizer_sink`: each localizer's (and localizer decoy's) sink logit. `image_tokens`, `text_tokens`: a typical
    prompt's counts, for which the uninformative heads' sums are set. `sink_tokens`: how many sink tokens a prompt
    has. `scattered_sink`: the range of a scattered head's sink logit.
    """

    hidden: int
    num_kv_heads: int
    head_dim: int
    heads: PlantedHeads
    localizer_sink: dict[Head, float]
    image_tokens: int
    text_tokens: int
    sink_tokens: int = 1
    scattered_sink: tuple[float, float] = (0.5, 4.0)
    seed: int = 1505

    @property
    def num_layers(self) -> int:
        return self.heads.num_layers

    @property
    def num_heads(self) -> int:
        return self.heads.num_heads


def normalized_colour(rgb: Sequence[int]) -> np.ndarray:
    """An sRGB colour (0-255) in the CLIP image processor's normalized units."""
    return (np.asarray(rgb, dtype=np.float64) / 255.0 - np.asarray(CLIP_MEAN)) / np.asarray(CLIP_STD)


def decoder_weights(
    plan: DecoderPlan, tokenizer, sink_token_id: int, palette: dict[str, tuple[int, int, int]]
) -> dict[str, np.ndarray]:
    """Token embeddings, `lm_head` and every non-zero attention weight of the text decoder, by state-dict name."""
    weights = _embedding_weights(plan, tokenizer, sink_token_id, palette)
    weights.update(_attention_weights(plan))
    return weights


def _embedding_weights(plan: DecoderPlan, tokenizer, sink_token_id: int, palette) -> dict[str, np.ndarray]:
    """Token embeddings: constant and text flag for all, the sink flag, and the colour words' colour and square."""
    r = RESIDUAL
    embed = np.zeros((len(tokenizer), plan.hidden))
    embed[:, r.const] = CONST
    embed[:, r.text] = FEATURE_SCALE
    embed[sink_token_id, r.sink] = FEATURE_SCALE
    for colour, rgb in palette.items():
        token = tokenizer.convert_tokens_to_ids(colour)
        c = normalized_colour(rgb)
        embed[token, r.colour_word] = FEATURE_SCALE
        embed[token, list(r.colour)] = FEATURE_SCALE * c
        embed[token, r.colour_sq] = FEATURE_SCALE * float(c @ c)
    return {"model.language_model.embed_tokens.weight": embed, "lm_head.weight": embed.copy()}


def norm_gain(hidden: int) -> float:
    """RMSNorm's nominal gain: the residual is dominated by the constant channel."""
    return 1.0 / math.sqrt(CONST**2 / hidden + 1e-6)


def key_layouts(plan: DecoderPlan) -> list[dict[str, int]]:
    """Per key/value head: key feature name -> dim within the head (sink at 0, text at head_dim / 2)."""
    rng = np.random.default_rng([plan.seed, 2])
    free = [d for d in range(plan.head_dim) if d not in (0, plan.head_dim // 2)]
    layouts = []
    for kv in range(plan.num_kv_heads):
        dims = free if kv == 0 else list(rng.permutation(free))
        layout = {"sink": 0, "text": plan.head_dim // 2}
        layout.update({name: int(d) for name, d in zip(_KEY_FEATURES, dims)})
        layouts.append(layout)
    return layouts


def _texture_sources(kv: int) -> list[int]:
    """The residual texture dims that key/value head `kv` reads into its six texture key dims (it skips filter kv)."""
    filters = [f for f in range(NUM_TEXTURE_FILTERS) if f != kv % NUM_TEXTURE_FILTERS][:3]
    return [RESIDUAL.texture[2 * f + s] for f in filters for s in (0, 1)]


def _attention_weights(plan: DecoderPlan) -> dict[str, np.ndarray]:
    """q/k/v/o projections of every text layer (k is the same in every layer; v and o only serve the gather head)."""
    layouts = key_layouts(plan)
    readers = _Readers(norm_gain(plan.hidden))
    k_proj = _key_projection(plan, layouts, readers)
    rng = np.random.default_rng([plan.seed, 3])
    scattered_count = 0
    weights = {}
    group = plan.num_heads // plan.num_kv_heads
    for layer in range(plan.num_layers):
        q_proj = np.zeros((plan.num_heads * plan.head_dim, plan.hidden))
        v_proj = np.zeros((plan.num_kv_heads * plan.head_dim, plan.hidden))
        o_proj = np.zeros((plan.hidden, plan.num_heads * plan.head_dim))
        for head in range(plan.num_heads):
            kv = head // group
            layout = layouts[kv]
            role = plan.heads.role((layer, head))
            if role == "gather":
                q = _gather_query(plan, layout, readers)
                _gather_values(plan, v_proj, o_proj, kv, head)
            elif role in ("localization", "early decoy", "low-sum decoy"):
                q = _localizer_query(plan, layout, readers, plan.localizer_sink[(layer, head)])
            elif role == "scattered decoy":
                q = _scattered_query(plan, layout, readers, f"t{scattered_count % 6}", rng)
                scattered_count += 1
            else:
                q = _uninformative_query(plan, layout, readers, rng)
            # The model divides q.k by sqrt(head_dim); the queries above are written as logits.
            q_proj[head * plan.head_dim : (head + 1) * plan.head_dim] = q * math.sqrt(plan.head_dim)
        prefix = f"model.language_model.layers.{layer}.self_attn."
        weights[prefix + "q_proj.weight"] = q_proj
        weights[prefix + "k_proj.weight"] = k_proj
        weights[prefix + "v_proj.weight"] = v_proj
        weights[prefix + "o_proj.weight"] = o_proj
    return weights


@dataclass(frozen=True)
class _Readers:
    """Weights that read a residual feature after RMSNorm of nominal `gain`."""

    gain: float

    @property
    def feature(self) -> float:
        """Reads a feature stored at FEATURE_SCALE as its value."""
        return 1.0 / (self.gain * FEATURE_SCALE)

    @property
    def const(self) -> float:
        """Reads the constant channel as 1."""
        return 1.0 / (self.gain * CONST)


def _key_projection(plan: DecoderPlan, layouts: list[dict[str, int]], readers: _Readers) -> np.ndarray:
    """k_proj: each key/value head reads flags, colour, squares and six texture features into its own layout."""
    r, unit = RESIDUAL, readers.feature
    k_proj = np.zeros((plan.num_kv_heads * plan.head_dim, plan.hidden))
    for kv, layout in enumerate(layouts):
        row = kv * plan.head_dim
        k_proj[row + layout["sink"], r.sink] = unit
        k_proj[row + layout["text"], r.text] = unit
        k_proj[row + layout["image"], r.image] = unit
        k_proj[row + layout["colour_word"], r.colour_word] = unit
        for c in range(3):
            k_proj[row + layout[f"x{c}"], r.x[c]] = unit
            k_proj[row + layout[f"sq{c}"], r.x_sq[c]] = unit
        for t, source in enumerate(_texture_sources(kv)):
            k_proj[row + layout[f"t{t}"], source] = unit
    return k_proj


def _gather_query(plan: DecoderPlan, layout: dict[str, int], readers: _Readers) -> np.ndarray:
    """Every token asks for colour words: logit GATHER_SCORE on them, 0 elsewhere."""
    q = np.zeros((plan.head_dim, plan.hidden))
    q[layout["colour_word"], RESIDUAL.const] = GATHER_SCORE * readers.const
    return q


def _gather_values(plan: DecoderPlan, v_proj: np.ndarray, o_proj: np.ndarray, kv: int, head: int) -> None:
    """The gather head's values carry the colour word's (c, |c|^2); its output writes them to the gathered dims."""
    r = RESIDUAL
    row = kv * plan.head_dim
    for i, (source, target) in enumerate(zip((*r.colour, r.colour_sq), (*r.gathered, r.gathered_sq))):
        v_proj[row + i, source] = 1.0 / norm_gain(plan.hidden)
        o_proj[target, head * plan.head_dim + i] = 1.0


def _localizer_query(plan: DecoderPlan, layout: dict[str, int], readers: _Readers, sink_logit: float) -> np.ndarray:
    """Image token x: -BETA |x - c|^2 = BETA (2 c.x - x^2 - |c|^2) for the gathered c; text -30; sink `sink_logit`."""
    r, unit, const = RESIDUAL, readers.feature, readers.const
    q = np.zeros((plan.head_dim, plan.hidden))
    for c in range(3):
        q[layout[f"x{c}"], r.gathered[c]] = 2.0 * BETA * unit
        q[layout[f"sq{c}"], r.const] = -BETA * const
    q[layout["image"], r.gathered_sq] = -BETA * unit
    q[layout["text"], r.const] = -TEXT_PENALTY * const
    q[layout["sink"], r.const] = (TEXT_PENALTY + sink_logit) * const  # the sink is a text token too
    return q


def _scattered_query(
    plan: DecoderPlan, layout: dict[str, int], readers: _Readers, texture: str, rng: np.random.Generator
) -> np.ndarray:
    """Image tokens by one texture feature (salt-and-pepper on noise); text -30; the sink a small logit."""
    const = readers.const
    q = np.zeros((plan.head_dim, plan.hidden))
    q[layout[texture], RESIDUAL.const] = rng.uniform(*SCATTERED_GAIN) * const
    q[layout["text"], RESIDUAL.const] = -TEXT_PENALTY * const
    q[layout["sink"], RESIDUAL.const] = (TEXT_PENALTY + rng.uniform(*plan.scattered_sink)) * const
    return q


def _uninformative_query(
    plan: DecoderPlan, layout: dict[str, int], readers: _Readers, rng: np.random.Generator
) -> np.ndarray:
    """Only sink and text dims: every image token gets logit exactly 0 (a flat map), with an image sum of a few %.

    For a wanted sum s: n_i / (n_i + n_t exp(t) + n_s exp(t + b)) = s with n_i image tokens, n_t text tokens of
    logit t and n_s sink tokens of logit t + b.
    """
    const = readers.const
    s = rng.uniform(0.002, 0.16)
    text_logit = rng.uniform(0.0, 3.5)
    sink_weight = plan.image_tokens * (1.0 - s) / s - plan.text_tokens * math.exp(text_logit)
    q = np.zeros((plan.head_dim, plan.hidden))
    q[layout["text"], RESIDUAL.const] = text_logit * const
    q[layout["sink"], RESIDUAL.const] = math.log(max(sink_weight / plan.sink_tokens, 1.0)) * const
    return q
