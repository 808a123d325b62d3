"""The grounding engine of every model family: last-token attention, early exit, prefix reuse.

`LvlmEngine` holds a built model and processor of any supported family (`families`); the family's adapter
(`family.Family`: `llava`, `qwen2_vl`) says what the text decoder is, what the prompt and the image inputs are,
where the image tokens sit (`layout.TokenLayout`) and which position ids a sequence has. Everything else is the
engine's and knows no family: `image_attention(image, expression)` returns the last input token's attention over
the image grid for every layer and head (or for the heads asked for), computed by the attention function of
`capture` (never `output_attentions=True`). A forward stops right after the deepest layer asked for: the layers
above it, the final norm and the LM head never run. With an `image_id`, the prompt prefix (system text + image
tokens) is run once and its KV cache kept (bounded LRU); each further expression on that image runs only its own
tokens against a copy of it, with the positions a full forward would give them.

Reading the checkpoint (config, processor, the model class, the weights and what can be wrong with them) lives in
`checkpoint`; `LvlmEngine.load` puts it together.

transformers is imported inside functions only: importing its LLaVA classes takes seconds, and the CLI's help and
the app's first paint must not wait for it.

An engine is not thread-safe: give each worker thread its own.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from time import perf_counter
from typing import Hashable, Sequence

import numpy as np
import torch

from annotator.lvlm.capture import (
    CAPTURE_ATTENTION,
    CAPTURE_KWARG,
    LastTokenCapture,
    register_capture_attention,
    stop_after,
)
from annotator.errors import ModelUnavailable
from annotator.grounding.frame import ImageFrame
from annotator.lvlm.checkpoint import (
    four_bit_config,
    grounding_model_class,
    load_config_and_processor,
    load_weights,
)
from annotator.lvlm.families import adapter_class, family_info, unsupported_reason
from annotator.lvlm.family import Family, FamilyOptions
from annotator.lvlm.layout import TokenLayout
from annotator.lvlm.model_input import WhitespaceTokens
from annotator.lvlm.prompt import Prompt

DEFAULT_MODEL_ID = "llava-hf/llava-1.5-7b-hf"
Head = tuple[int, int]


@dataclass(frozen=True)
class GroundingTiming:
    """Wall-clock milliseconds of one grounding call.

    `prefix_ms`: image preprocessing, vision tower and (with an image id) the system text + image prefix; 0 when
    `prefix_cached`. `expression_ms`: the text-model forward that ends on the expression's last token (without an
    image id it runs the whole sequence). `total_ms`: the whole call, by whoever reports it (the engine, or the
    grounder including its post-processing).
    """

    prefix_ms: float
    expression_ms: float
    total_ms: float
    prefix_cached: bool


@dataclass(frozen=True, eq=False)
class HeadAttention:
    """Last-token attention of some heads for one image and expression.

    `maps`: float32 `[len(heads), grid_h, grid_w]` over the grid maps are read from (`layout.frame`), each the
    softmax probability of an image position (a head's map sums to its share of attention on that grid, at most 1).
    `heads`: the (layer, head) of each map, 0-based.
    """

    maps: np.ndarray
    heads: tuple[Head, ...]
    frame: ImageFrame
    timing: GroundingTiming
    layout: TokenLayout | None = None


@dataclass(frozen=True)
class _CachedPrefix:
    """KV cache of the prompt prefix for one image, for layers 0..`depth - 1`."""

    kv: object
    depth: int
    layout: TokenLayout


class LvlmEngine:
    """A model and processor of any supported family, ready to return last-token image attention.

    Takes over the model's text attention implementation (sets it to the capture function); the vision tower keeps
    SDPA. `prefix_cache_size`: how many images keep their prefix KV cache (0: none; about 150 MB each for
    LLaVA-1.5-7B in bf16 truncated after layer 14). `max_expression_tokens`: longer expressions are truncated.
    `whitespace_tokens`: LLaVA's prompt tokenization, `"official"` or `"keep"` (see `model_input`).
    `min_pixels` / `max_pixels`: the native-resolution families' pixel budget (Qwen2-VL: 784 px per token; default:
    the processor's); `max_image_tokens`: the same budget in tokens, whatever a token's pixels (it sets
    `max_pixels`); fixed grids ignore both. `anyres_grid`: LLaVA-NeXT / OneVision, the grid maps are read from:
    "stitched" (default: the high-resolution tiles, un-padded) or "base" (the whole image stretched to one tile).
    """

    def __init__(
        self,
        model,
        processor,
        *,
        prefix_cache_size: int = 8,
        max_expression_tokens: int = 64,
        model_id: str | None = None,
        whitespace_tokens: WhitespaceTokens = "official",
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        max_image_tokens: int | None = None,
        anyres_grid: str | None = None,
    ) -> None:
        if prefix_cache_size < 0:
            raise ValueError(f"prefix_cache_size must be >= 0, got {prefix_cache_size}")
        self.model_id = model_id or getattr(model.config, "_name_or_path", "") or type(model).__name__
        info = family_info(getattr(model.config, "model_type", ""))
        if info is None:
            raise ModelUnavailable(f"{self.model_id}: {unsupported_reason(getattr(model.config, 'model_type', ''))}")
        register_capture_attention()
        model.eval()
        options = FamilyOptions(max_expression_tokens, whitespace_tokens, min_pixels, max_pixels, self.model_id)
        self.family: Family = adapter_class(info)(model, processor, options)
        if max_image_tokens is not None:
            self.family.limit_image_tokens(max_image_tokens)
        if anyres_grid is not None:
            if not hasattr(self.family, "anyres_grid"):
                raise ValueError(f"{self.model_id}: anyres_grid applies to LLaVA-NeXT and LLaVA-OneVision only")
            self.family.anyres_grid = anyres_grid
        model.set_attn_implementation(self.family.attn_implementation(CAPTURE_ATTENTION))
        self.model = model
        self.processor = processor
        self.prefix_cache_size = prefix_cache_size
        self._text_model = self.family.text_model
        self._prefixes: OrderedDict[Hashable, _CachedPrefix] = OrderedDict()

    @classmethod
    def load(
        cls,
        model_id_or_path: str | os.PathLike = DEFAULT_MODEL_ID,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        truncate_after_layer: int | None = None,
        load_in_4bit: bool = False,
        *,
        prefix_cache_size: int = 8,
        model_id: str | None = None,
        whitespace_tokens: WhitespaceTokens = "official",
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        max_image_tokens: int | None = None,
        anyres_grid: str | None = None,
    ) -> "LvlmEngine":
        """Load a checkpoint of a supported family (hub id or local folder) with its class's `from_pretrained`.

        `device`: default CUDA when present, else CPU. `dtype`: default bf16 (fp16 where bf16 is unsupported) on
        GPU, float32 on CPU. `truncate_after_layer=n`: only text layers 0..n are built and loaded (the layers above
        and the LM head are never materialised), so only heads in layers <= n can be asked for.
        `load_in_4bit`: 4-bit weights through bitsandbytes (CUDA only). `model_id`: the name messages use (default:
        the id or path given). The other options: as for the constructor. Missing or offline weights, or a folder
        that is no checkpoint of a supported family, raise `ModelUnavailable`.
        """
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = torch.float32 if device.type == "cpu" else _gpu_dtype()
        name = str(model_id_or_path)
        config, processor = load_config_and_processor(name)
        model_class, config = grounding_model_class(config, truncate_after_layer, name)
        kwargs: dict = {"config": config, "dtype": dtype}
        if load_in_4bit:
            kwargs["quantization_config"] = four_bit_config(name, device, dtype, config.model_type)
        if device.type != "cpu":
            kwargs["device_map"] = str(device)
        model = load_weights(model_class, name, **kwargs)
        return cls(
            model,
            processor,
            prefix_cache_size=prefix_cache_size,
            model_id=model_id or name,
            whitespace_tokens=whitespace_tokens,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            max_image_tokens=max_image_tokens,
            anyres_grid=anyres_grid,
        )

    @property
    def num_layers(self) -> int:
        """Text layers built (all of them, or up to the truncation layer)."""
        return len(self._text_model.layers)

    @property
    def num_heads(self) -> int:
        return int(self.family.text_config.num_attention_heads)

    @property
    def device(self) -> torch.device:
        return self._text_model.embed_tokens.weight.device

    @property
    def cached_image_ids(self) -> tuple[Hashable, ...]:
        """Image ids whose prefix is cached, least recently used first."""
        return tuple(self._prefixes)

    def layout_for(self, width: int, height: int) -> TokenLayout:
        """Where the image tokens of a `width` x `height` image sit, and how their grids map to its pixels."""
        return self.family.layout_for(int(width), int(height))

    def frame_for(self, width: int, height: int) -> ImageFrame:
        """How an image of `width` x `height` pixels sits in the grid maps are read from."""
        return self.layout_for(width, height).frame

    def prompt(self, expression: str, image_size: tuple[int, int] | None = None) -> Prompt:
        """The token ids the model reads for `expression` on an image of `image_size` = (width, height) pixels
        (ValueError if empty; truncated with a warning if long). Families whose image tokens depend on the image's
        size (Qwen2-VL) need `image_size`."""
        if image_size is None:
            if self.family.image_size_matters:
                raise ValueError(f"{self.model_id}: the prompt depends on the image's size; give image_size")
            image_size = (1, 1)
        return self.family.prompt(expression, self.layout_for(*image_size))

    def pixel_values(self, image_rgb_uint8: np.ndarray) -> tuple[object, ImageFrame]:
        """The family's vision inputs for the image (LLaVA: the pixel tensor `[1, 3, side, side]`; Qwen: a dict of
        `pixel_values` and `image_grid_thw`) and its frame."""
        image = _check_image(image_rgb_uint8)
        layout = self.layout_for(image.shape[1], image.shape[0])
        return self.family.pixel_values(image, layout, self.device), layout.frame

    def image_attention(
        self,
        image_rgb_uint8: np.ndarray,
        expression: str,
        heads: Sequence[Head] | None = None,
        image_id: Hashable | None = None,
    ) -> np.ndarray:
        """Last-token attention over the image grid: float32 `[L, H, h, w]` for all heads, `[len(heads), h, w]`
        for a list of 0-based (layer, head). `image_id` keys the prefix cache (None: no caching)."""
        result = self.head_attention(image_rgb_uint8, expression, heads, image_id)
        if heads is None:
            return result.maps.reshape(self.num_layers, self.num_heads, *result.frame.grid_hw)
        return result.maps

    def head_attention(
        self,
        image_rgb_uint8: np.ndarray,
        expression: str,
        heads: Sequence[Head] | None = None,
        image_id: Hashable | None = None,
    ) -> HeadAttention:
        """`image_attention` with the heads, the image's frame and layout, and the timing."""
        start = perf_counter()
        head_list = self._check_heads(heads)
        image = _check_image(image_rgb_uint8)
        layout = self.layout_for(image.shape[1], image.shape[0])
        heads_by_layer: dict[int, list[int]] = {}
        for layer, head in head_list:
            heads_by_layer.setdefault(layer, []).append(head)
        depth = max(heads_by_layer) + 1
        prompt = self.family.prompt(expression, layout)
        capture = LastTokenCapture(
            heads_by_layer={layer: sorted(set(h)) for layer, h in heads_by_layer.items()},
            key_positions=prompt.prefix.image_positions,
        )
        use_cache = image_id is not None and self.prefix_cache_size > 0
        with torch.inference_mode():
            if use_cache:
                ran = self._run_with_prefix(image, layout, prompt, image_id, depth, capture)
            else:
                ran = self._run_whole(image, layout, prompt, depth, capture)
        prefix_ms, expression_ms, cached = ran
        rows = {layer: row.cpu().numpy() for layer, row in capture.rows.items()}
        maps = np.empty((len(head_list), *layout.grid_hw), dtype=np.float32)
        for i, (layer, head) in enumerate(head_list):
            maps[i] = layout.grid_map(rows[layer][capture.heads_by_layer[layer].index(head)])
        total_ms = (perf_counter() - start) * 1000.0
        timing = GroundingTiming(prefix_ms, expression_ms, total_ms, cached)
        return HeadAttention(maps=maps, heads=tuple(head_list), frame=layout.frame, timing=timing, layout=layout)

    def prepare(self, image_rgb_uint8: np.ndarray, image_id: Hashable, heads: Sequence[Head] | None = None) -> bool:
        """Compute and cache the image's prefix (system text + image tokens) deep enough for `heads`, ahead of
        its first expression. Returns whether it was already cached; does nothing when caching is off."""
        if self.prefix_cache_size <= 0:
            return False
        depth = max(layer for layer, _ in self._check_heads(heads)) + 1
        image = _check_image(image_rgb_uint8)
        layout = self.layout_for(image.shape[1], image.shape[0])
        with torch.inference_mode():
            _, cached = self._cached_prefix(image, layout, image_id, depth)
        return cached

    def _check_heads(self, heads: Sequence[Head] | None) -> list[Head]:
        if heads is None:
            return [(layer, head) for layer in range(self.num_layers) for head in range(self.num_heads)]
        head_list = [(int(layer), int(head)) for layer, head in heads]
        if not head_list:
            raise ValueError("no heads asked for")
        for layer, head in head_list:
            if not 0 <= layer < self.num_layers or not 0 <= head < self.num_heads:
                raise ValueError(
                    f"head ({layer}, {head}) is outside {self.model_id}: {self.num_layers} text layers are loaded, "
                    f"{self.num_heads} heads each"
                )
        return head_list

    def _run_whole(
        self, image: np.ndarray, layout: TokenLayout, prompt: Prompt, depth: int, capture: LastTokenCapture
    ) -> tuple[float, float, bool]:
        """One forward over the whole prompt, no cache kept."""
        start = perf_counter()
        features = self.family.image_features(image, layout, self.device)
        prefix_ms = self._elapsed_ms(start)
        start = perf_counter()
        embeds = self._embed(prompt.ids, features.embeds, prompt.prefix.image_start)
        positions = self.family.position_ids(prompt, layout, self.device)
        extra = self.family.text_kwargs(features, prompt.prefix.image_positions, len(prompt.ids))
        self._run_text(embeds, positions, None, depth, capture, extra)
        return prefix_ms, self._elapsed_ms(start), False

    def _run_with_prefix(
        self,
        image: np.ndarray,
        layout: TokenLayout,
        prompt: Prompt,
        image_id: Hashable,
        depth: int,
        capture: LastTokenCapture,
    ) -> tuple[float, float, bool]:
        """The expression's tokens against a copy of the image's cached prefix (computed first if missing)."""
        from transformers import DynamicCache

        start = perf_counter()
        entry, cached = self._cached_prefix(image, layout, image_id, depth)
        prefix_ms = 0.0 if cached else self._elapsed_ms(start)
        start = perf_counter()
        kv = DynamicCache(ddp_cache_data=iter(entry.kv), config=self._text_model.config)
        embeds = self._text_model.embed_tokens(torch.tensor([prompt.expression_ids], device=self.device))
        positions = self.family.position_ids(prompt, layout, self.device)
        if positions is not None:
            positions = positions[..., len(prompt.prefix.ids) :]
        self._run_text(embeds, positions, kv, depth, capture)
        return prefix_ms, self._elapsed_ms(start), cached

    def _cached_prefix(
        self, image: np.ndarray, layout: TokenLayout, image_id: Hashable, depth: int
    ) -> tuple[_CachedPrefix, bool]:
        """The image's prefix entry (computed and stored when missing or too shallow) and whether it was cached."""
        entry = self._prefixes.get(image_id)
        cached = entry is not None and entry.depth >= depth and entry.layout == layout
        if not cached:
            entry = self._compute_prefix(image, layout, depth)
            self._prefixes[image_id] = entry
        self._prefixes.move_to_end(image_id)
        while len(self._prefixes) > self.prefix_cache_size:
            self._prefixes.popitem(last=False)
        return entry, cached

    def _compute_prefix(self, image: np.ndarray, layout: TokenLayout, depth: int) -> _CachedPrefix:
        from transformers import DynamicCache

        prefix = self.family.prompt_prefix(layout)
        features = self.family.image_features(image, layout, self.device)
        embeds = self._embed(prefix.ids, features.embeds, prefix.image_start)
        positions = self.family.position_ids(Prompt(prefix, (), ""), layout, self.device)
        extra = self.family.text_kwargs(features, prefix.image_positions, len(prefix.ids))
        kv = DynamicCache(config=self._text_model.config)
        self._run_text(embeds, positions, kv, depth, None, extra)
        return _CachedPrefix(kv=kv, depth=depth, layout=layout)

    def _embed(self, ids: Sequence[int], features: torch.Tensor, image_start: int) -> torch.Tensor:
        embeds = self._text_model.embed_tokens(torch.tensor([ids], device=self.device))
        embeds[0, image_start : image_start + features.shape[0]] = features.to(embeds.dtype)
        return embeds

    def _run_text(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor | None,
        kv: object | None,
        depth: int,
        capture: LastTokenCapture | None,
        extra: dict | None = None,
    ) -> None:
        """Run the text model on `embeds` (after `kv`, which grows) and stop right after layer `depth - 1`; `extra`:
        the family's further arguments (`Family.text_kwargs`)."""
        kwargs = dict(extra or {})
        if positions is not None:
            kwargs["position_ids"] = positions
        with stop_after(self._text_model.layers[depth - 1]):
            self._text_model(
                inputs_embeds=embeds, cache=kv, use_cache=kv is not None, **kwargs, **{CAPTURE_KWARG: capture}
            )

    def _elapsed_ms(self, start: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return (perf_counter() - start) * 1000.0


def _check_image(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image of shape (H, W, 3), got {array.dtype} {array.shape}")
    return array


def _gpu_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
