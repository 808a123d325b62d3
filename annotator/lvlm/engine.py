"""LLaVA-1.5 as a grounding engine: loading, prompt and image, last-token attention, early exit, prefix reuse.

Reading the checkpoint (config, processor, the model class, the weights and what can be wrong with them) lives in
`checkpoint`; `LvlmEngine.load` puts it together.

`LvlmEngine` holds a `LlavaForConditionalGeneration` and its processor. `image_attention(image, expression)`
returns the last input token's attention over the image grid for every layer and head (or for the heads asked
for), computed by the attention function of `attention_capture` (never `output_attentions=True`). A forward stops
right after the deepest layer asked for: the layers above it, the final norm and the LM head never run. With an
`image_id`, the system text + image tokens are run once and their KV cache kept (bounded LRU); each further
expression on that image runs only its own tokens against a copy of it.

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
from annotator.lvlm.checkpoint import (
    four_bit_config,
    grounding_model_class,
    load_config_and_processor,
    load_weights,
)
from annotator.grounding.frame import ImageFrame
from annotator.lvlm.model_input import (
    Prompt,
    PromptBuilder,
    PromptPrefix,
    WhitespaceTokens,
    mean_colour,
    square_image,
)

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

    `maps`: float32 `[len(heads), grid_h, grid_w]`, each the softmax probability of an image position (a head's map
    sums to its share of attention on the image, at most 1). `heads`: the (layer, head) of each map, 0-based.
    """

    maps: np.ndarray
    heads: tuple[Head, ...]
    frame: ImageFrame
    timing: GroundingTiming


@dataclass(frozen=True)
class _CachedPrefix:
    """KV cache of the prompt prefix for one image, for layers 0..`depth - 1`."""

    kv: object
    depth: int
    frame: ImageFrame


class LvlmEngine:
    """A LLaVA-1.5 model and processor, ready to return last-token image attention.

    Takes over the model's text attention implementation (sets it to the capture function); the vision tower keeps
    SDPA. `prefix_cache_size`: how many images keep their prefix KV cache (0: none; about 150 MB each for
    LLaVA-1.5-7B in bf16 truncated after layer 14). `max_expression_tokens`: longer expressions are truncated.
    `whitespace_tokens`: the prompt's tokenization, `"official"` or `"keep"` (see `model_input`).
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
    ) -> None:
        if prefix_cache_size < 0:
            raise ValueError(f"prefix_cache_size must be >= 0, got {prefix_cache_size}")
        register_capture_attention()
        model.eval()
        model.set_attn_implementation({"text_config": CAPTURE_ATTENTION, "vision_config": "sdpa"})
        self.model = model
        self.processor = processor
        self.model_id = model_id or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.prefix_cache_size = prefix_cache_size
        config = model.config
        vision = config.vision_config
        self.input_size = int(vision.image_size)
        self.grid_size = self.input_size // int(vision.patch_size)
        if config.vision_feature_select_strategy != "default":
            raise ValueError(
                f"{self.model_id}: vision_feature_select_strategy {config.vision_feature_select_strategy!r} keeps the "
                f"CLS feature, so the image tokens are not a {self.grid_size} x {self.grid_size} grid"
            )
        image_processor = processor.image_processor
        self._fill = mean_colour(image_processor.image_mean)
        self._text_model = model.model.language_model
        self._prompts = PromptBuilder(
            processor.tokenizer,
            processor.image_token,
            num_image_tokens=self.grid_size * self.grid_size,
            max_expression_tokens=max_expression_tokens,
            max_positions=int(config.text_config.max_position_embeddings),
            whitespace_tokens=whitespace_tokens,
        )
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
    ) -> "LvlmEngine":
        """Load a LLaVA-1.5 checkpoint (hub id or local folder) with `LlavaForConditionalGeneration.from_pretrained`.

        `device`: default CUDA when present, else CPU. `dtype`: default bf16 (fp16 where bf16 is unsupported) on
        GPU, float32 on CPU. `truncate_after_layer=n`: only text layers 0..n are built and loaded (the layers above
        and the LM head are never materialised), so only heads in layers <= n can be asked for.
        `load_in_4bit`: 4-bit weights through bitsandbytes (CUDA only). `model_id`: the name messages use (default:
        the id or path given). `whitespace_tokens`: as for the constructor. Missing or offline weights, or a folder
        that is not a LLaVA checkpoint, raise `ModelUnavailable`.
        """
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = torch.float32 if device.type == "cpu" else _gpu_dtype()
        name = str(model_id_or_path)
        config, processor = load_config_and_processor(name)
        model_class, config = grounding_model_class(config, truncate_after_layer, name)
        kwargs: dict = {"config": config, "dtype": dtype}
        if load_in_4bit:
            kwargs["quantization_config"] = four_bit_config(name, device, dtype)
        if device.type != "cpu":
            kwargs["device_map"] = str(device)
        model = load_weights(model_class, name, **kwargs)
        return cls(
            model,
            processor,
            prefix_cache_size=prefix_cache_size,
            model_id=model_id or name,
            whitespace_tokens=whitespace_tokens,
        )

    @property
    def num_layers(self) -> int:
        """Text layers built (all of them, or up to the truncation layer)."""
        return len(self._text_model.layers)

    @property
    def num_heads(self) -> int:
        return int(self.model.config.text_config.num_attention_heads)

    @property
    def device(self) -> torch.device:
        return self._text_model.embed_tokens.weight.device

    @property
    def cached_image_ids(self) -> tuple[Hashable, ...]:
        """Image ids whose prefix is cached, least recently used first."""
        return tuple(self._prefixes)

    def frame_for(self, width: int, height: int) -> ImageFrame:
        """How an image of `width` x `height` pixels sits in this model's token grid."""
        return ImageFrame.for_image(width, height, self.grid_size, self.input_size)

    def prompt(self, expression: str) -> Prompt:
        """The token ids the model reads for `expression` (ValueError if empty; truncated with a warning if long)."""
        return self._prompts.build(expression)

    def pixel_values(self, image_rgb_uint8: np.ndarray) -> tuple[torch.Tensor, ImageFrame]:
        """The processor's pixel tensor `[1, 3, input_size, input_size]` for an image padded to a square."""
        image = _check_image(image_rgb_uint8)
        frame = self.frame_for(image.shape[1], image.shape[0])
        square = square_image(image, frame, self._fill, max_side=4 * self.input_size)
        pixels = self.processor.image_processor(images=square, return_tensors="pt", input_data_format="channels_last")[
            "pixel_values"
        ]
        if tuple(pixels.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(
                f"{self.model_id}: the processor makes {tuple(pixels.shape[-2:])} images, the vision tower reads "
                f"{self.input_size} x {self.input_size}"
            )
        vision_dtype = self.model.model.vision_tower.dtype
        return pixels.to(device=self.device, dtype=vision_dtype), frame

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
            return result.maps.reshape(self.num_layers, self.num_heads, self.grid_size, self.grid_size)
        return result.maps

    def head_attention(
        self,
        image_rgb_uint8: np.ndarray,
        expression: str,
        heads: Sequence[Head] | None = None,
        image_id: Hashable | None = None,
    ) -> HeadAttention:
        """`image_attention` with the heads, the image's frame and the timing."""
        start = perf_counter()
        head_list = self._check_heads(heads)
        heads_by_layer: dict[int, list[int]] = {}
        for layer, head in head_list:
            heads_by_layer.setdefault(layer, []).append(head)
        depth = max(heads_by_layer) + 1
        prompt = self.prompt(expression)
        capture = LastTokenCapture(
            heads_by_layer={layer: sorted(set(h)) for layer, h in heads_by_layer.items()},
            key_positions=prompt.prefix.image_positions,
        )
        use_cache = image_id is not None and self.prefix_cache_size > 0
        with torch.inference_mode():
            if use_cache:
                prefix_ms, expression_ms, frame, cached = self._run_with_prefix(
                    image_rgb_uint8, prompt, image_id, depth, capture
                )
            else:
                prefix_ms, expression_ms, frame, cached = self._run_whole(image_rgb_uint8, prompt, depth, capture)
        maps = np.empty((len(head_list), self.grid_size, self.grid_size), dtype=np.float32)
        rows = {layer: row.cpu().numpy() for layer, row in capture.rows.items()}
        for i, (layer, head) in enumerate(head_list):
            row = rows[layer][capture.heads_by_layer[layer].index(head)]
            maps[i] = row.reshape(self.grid_size, self.grid_size)
        timing = GroundingTiming(prefix_ms, expression_ms, (perf_counter() - start) * 1000.0, cached)
        return HeadAttention(maps=maps, heads=tuple(head_list), frame=frame, timing=timing)

    def prepare(self, image_rgb_uint8: np.ndarray, image_id: Hashable, heads: Sequence[Head] | None = None) -> bool:
        """Compute and cache the image's prefix (system text + image tokens) deep enough for `heads`, ahead of
        its first expression. Returns whether it was already cached; does nothing when caching is off."""
        if self.prefix_cache_size <= 0:
            return False
        depth = max(layer for layer, _ in self._check_heads(heads)) + 1
        with torch.inference_mode():
            _, cached = self._cached_prefix(image_rgb_uint8, self._prompts.prefix, image_id, depth)
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
        self, image: np.ndarray, prompt: Prompt, depth: int, capture: LastTokenCapture
    ) -> tuple[float, float, ImageFrame, bool]:
        """One forward over the whole prompt, no cache kept."""
        start = perf_counter()
        pixels, frame = self.pixel_values(image)
        features = self._image_features(pixels)
        prefix_ms = self._elapsed_ms(start)
        start = perf_counter()
        embeds = self._embed(prompt.ids, features, prompt.prefix.image_start)
        self._run_text(embeds, None, depth, capture)
        return prefix_ms, self._elapsed_ms(start), frame, False

    def _run_with_prefix(
        self, image: np.ndarray, prompt: Prompt, image_id: Hashable, depth: int, capture: LastTokenCapture
    ) -> tuple[float, float, ImageFrame, bool]:
        """The expression's tokens against a copy of the image's cached prefix (computed first if missing)."""
        from transformers import DynamicCache

        start = perf_counter()
        entry, cached = self._cached_prefix(image, prompt.prefix, image_id, depth)
        prefix_ms = 0.0 if cached else self._elapsed_ms(start)
        start = perf_counter()
        kv = DynamicCache(ddp_cache_data=iter(entry.kv), config=self._text_model.config)
        embeds = self._text_model.embed_tokens(torch.tensor([prompt.expression_ids], device=self.device))
        self._run_text(embeds, kv, depth, capture)
        return prefix_ms, self._elapsed_ms(start), entry.frame, cached

    def _cached_prefix(
        self, image: np.ndarray, prefix: PromptPrefix, image_id: Hashable, depth: int
    ) -> tuple[_CachedPrefix, bool]:
        """The image's prefix entry (computed and stored when missing or too shallow) and whether it was cached."""
        image = _check_image(image)
        entry = self._prefixes.get(image_id)
        frame = self.frame_for(image.shape[1], image.shape[0])
        cached = entry is not None and entry.depth >= depth and entry.frame == frame
        if not cached:
            entry = self._compute_prefix(image, prefix, depth)
            self._prefixes[image_id] = entry
        self._prefixes.move_to_end(image_id)
        while len(self._prefixes) > self.prefix_cache_size:
            self._prefixes.popitem(last=False)
        return entry, cached

    def _compute_prefix(self, image: np.ndarray, prefix: PromptPrefix, depth: int) -> _CachedPrefix:
        from transformers import DynamicCache

        pixels, frame = self.pixel_values(image)
        features = self._image_features(pixels)
        embeds = self._embed(prefix.ids, features, prefix.image_start)
        kv = DynamicCache(config=self._text_model.config)
        self._run_text(embeds, kv, depth, None)
        return _CachedPrefix(kv=kv, depth=depth, frame=frame)

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected image features `[grid_h * grid_w, hidden]` (the processor's vision layer and strategy)."""
        return self.model.model.get_image_features(pixel_values=pixels, return_dict=True).pooler_output[0]

    def _embed(self, ids: Sequence[int], features: torch.Tensor, image_start: int) -> torch.Tensor:
        embeds = self._text_model.embed_tokens(torch.tensor([ids], device=self.device))
        embeds[0, image_start : image_start + features.shape[0]] = features.to(embeds.dtype)
        return embeds

    def _run_text(self, embeds: torch.Tensor, kv: object | None, depth: int, capture: LastTokenCapture | None) -> None:
        """Run the text model on `embeds` (after `kv`, which grows) and stop right after layer `depth - 1`."""
        with stop_after(self._text_model.layers[depth - 1]):
            self._text_model(
                inputs_embeds=embeds, past_key_values=kv, use_cache=kv is not None, **{CAPTURE_KWARG: capture}
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
