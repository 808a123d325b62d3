"""LLaVA-1.5 as a grounding engine: loading, prompt and image, last-token attention, early exit, prefix reuse.

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

import logging
import os
import pickle
import re
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Hashable, Iterator, Sequence

import numpy as np
import torch

from annotator.errors import ModelUnavailable
from annotator.grounding.attention_capture import (
    CAPTURE_ATTENTION,
    CAPTURE_KWARG,
    LastTokenCapture,
    register_capture_attention,
    stop_after,
)
from annotator.grounding.frame import ImageFrame
from annotator.grounding.model_input import Prompt, PromptBuilder, PromptPrefix, mean_colour, square_image

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
    """

    def __init__(
        self,
        model,
        processor,
        *,
        prefix_cache_size: int = 8,
        max_expression_tokens: int = 64,
        model_id: str | None = None,
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
    ) -> "LvlmEngine":
        """Load a LLaVA-1.5 checkpoint (hub id or local folder) with `LlavaForConditionalGeneration.from_pretrained`.

        `device`: default CUDA when present, else CPU. `dtype`: default bf16 (fp16 where bf16 is unsupported) on
        GPU, float32 on CPU. `truncate_after_layer=n`: only text layers 0..n are built and loaded (the layers above
        and the LM head are never materialised), so only heads in layers <= n can be asked for.
        `load_in_4bit`: 4-bit weights through bitsandbytes (CUDA only). `model_id`: the name messages use (default:
        the id or path given). Missing or offline weights, or a folder that is not a LLaVA checkpoint, raise
        `ModelUnavailable`.
        """
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = torch.float32 if device.type == "cpu" else _gpu_dtype()
        name = str(model_id_or_path)
        config, processor = _load_config_and_processor(name)
        model_class, config = grounding_model_class(config, truncate_after_layer, name)
        kwargs: dict = {"config": config, "dtype": dtype}
        if load_in_4bit:
            kwargs["quantization_config"] = _four_bit_config(name, device, dtype)
        if device.type != "cpu":
            kwargs["device_map"] = str(device)
        from safetensors import SafetensorError

        try:
            with _load_report_held_back() as report:
                model = model_class.from_pretrained(name, **kwargs)
        except (SafetensorError, pickle.UnpicklingError, EOFError) as exc:
            raise ModelUnavailable(_damaged_weights_message(name, exc)) from exc
        except RuntimeError as exc:
            if "ignore_mismatched_sizes" in str(exc) or "size mismatch" in str(exc):
                raise ModelUnavailable(_mismatch_message(name, report)) from exc
            if isinstance(exc, torch.OutOfMemoryError) or not _pickled_weights(name):
                raise
            raise ModelUnavailable(_damaged_weights_message(name, exc)) from exc
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(_unavailable_message(name, exc)) from exc
        except Exception as exc:  # the unpickler of a damaged .bin fails with any error type (IndexError, KeyError...)
            if not _pickled_weights(name):
                raise
            raise ModelUnavailable(_damaged_weights_message(name, exc)) from exc
        return cls(model, processor, prefix_cache_size=prefix_cache_size, model_id=model_id or name)

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


def load_config(name: str):
    """The checkpoint's `LlavaConfig` (config.json only, no weights), or `ModelUnavailable` saying what is wrong."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(_unavailable_message(name, exc)) from exc
    if config.model_type != "llava":
        raise ModelUnavailable(
            f"{name} is a {config.model_type!r} checkpoint; the grounding engine reads LLaVA-1.5 ('llava') ones"
        )
    return config


def text_layout(name: str) -> tuple[int, int]:
    """(text layers, attention heads per layer) of a LLaVA checkpoint, read from its config."""
    text = load_config(name).text_config
    return int(text.num_hidden_layers), int(text.num_attention_heads)


def _load_config_and_processor(name: str):
    """The checkpoint's `LlavaConfig` and processor, or `ModelUnavailable` saying what is missing and where."""
    from transformers import AutoProcessor

    config = load_config(name)
    try:
        processor = AutoProcessor.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(_unavailable_message(name, exc)) from exc
    return config, processor


@contextmanager
def _load_report_held_back() -> Iterator[list[logging.LogRecord]]:
    """Hold back the load report transformers logs during `from_pretrained` (a table of every odd tensor): it is
    logged as usual when the load succeeds; when the load fails, the one-line error says what it found."""
    logger = logging.getLogger("transformers.modeling_utils")
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            held.append(record)
            return False
        return True

    logger.addFilter(hold)
    try:
        yield held
    finally:
        logger.removeFilter(hold)
    for record in held:
        logger.handle(record)


def _mismatch_message(name: str, report: list[logging.LogRecord]) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(record.getMessage() for record in report))
    rows = [line for line in text.splitlines() if "MISMATCH" in line and "ckpt:" in line]
    example = ""
    if rows:
        tensor = rows[0].split("|")[0].strip()
        shapes = re.search(r"ckpt: torch.Size\((\[[^]]*\])\) vs model: ?torch.Size\((\[[^]]*\])\)", rows[0])
        example = f" (e.g. {tensor}: {shapes[1]} in the file, {shapes[2]} by config.json)" if shapes else ""
    return (
        f"the weights in {name} do not fit its config.json: {len(rows) or 'some'} tensor(s) have other shapes"
        f"{example}; the folder mixes the files of two models, save or download the model again"
    )


def _pickled_weights(name: str) -> bool:
    """Whether the folder `name` keeps its weights in pickled .bin files only (no safetensors)."""
    folder = Path(name).expanduser()
    return folder.is_dir() and not any(folder.glob("*.safetensors")) and any(folder.glob("*.bin"))


def _damaged_weights_message(name: str, exc: Exception) -> str:
    """Which weights file of `name` is damaged (a safetensors header is read without loading a tensor) and what
    to do."""
    from safetensors import SafetensorError, safe_open

    reason = " ".join(str(exc).split())
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return f"a weights file of {name} is damaged or incomplete ({reason}); download it again"
    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt"):
                pass
        except (SafetensorError, OSError) as damaged:
            reason = " ".join(str(damaged).split())
            return f"the weights file {weights.name} in {folder} is damaged or incomplete ({reason}); download it again"
    pickled = sorted(path.name for path in folder.glob("*.bin"))
    which = f"the weights file {pickled[0]}" if len(pickled) == 1 else "a weights file"
    unpickler = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(\n\n|$)", str(exc), re.S)
    reason = " ".join(unpickler.group(1).split()) if unpickler else f"{type(exc).__name__}: {reason}"[:300]
    return f"{which} in {folder} is damaged or incomplete ({reason}); download it again"


def _unavailable_message(name: str, exc: Exception) -> str:
    from huggingface_hub import constants

    reason = " ".join(str(exc).split())
    path = Path(name).expanduser()
    if path.exists():
        return f"cannot load the LLaVA checkpoint in folder {name}: {reason}"
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name:
        return f"no model folder at {name} (and it is not a hub id of the form 'namespace/name')"
    return (
        f"cannot load model {name!r}: {reason} It is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) or "
        f"cannot be read from it. Download it while online with `hf download {name}` (a preset: `annotator "
        f"models download NAME`, only the files grounding needs), or pass a local folder "
        f"saved with save_pretrained."
    )


def grounding_model_class(config, truncate_after_layer: int | None = None, name: str = "the model"):
    """The model class to build for grounding, and its config: `LlavaForConditionalGeneration` as is, or for a
    truncated model a subclass without the LM head whose config builds text layers 0..`truncate_after_layer` only
    (a checkpoint's weights for the rest are skipped when loading). Changes `config` in place."""
    from transformers import LlavaForConditionalGeneration

    if truncate_after_layer is None:
        return LlavaForConditionalGeneration, config
    total = int(config.text_config.num_hidden_layers)
    if not 0 <= truncate_after_layer < total:
        raise ValueError(f"truncate_after_layer={truncate_after_layer}, but {name} has {total} text layers")
    config.text_config.num_hidden_layers = truncate_after_layer + 1
    dropped = "|".join(str(i) for i in range(truncate_after_layer + 1, total))
    skipped = [r"(^|\.)lm_head\."] + ([rf"language_model\.(model\.)?layers\.({dropped})\."] if dropped else [])

    class TruncatedLlava(LlavaForConditionalGeneration):
        """LLaVA without the LM head and the text layers above `truncate_after_layer`, for grounding only."""

        _tied_weights_keys: dict = {}
        _keys_to_ignore_on_load_unexpected = skipped

        def __init__(self, config) -> None:
            super().__init__(config)
            del self.lm_head

        def get_output_embeddings(self) -> None:
            return None

    return TruncatedLlava, config


def _four_bit_config(name: str, device: torch.device, dtype: torch.dtype):
    import importlib.util

    from transformers import BitsAndBytesConfig

    if device.type != "cuda":
        raise ModelUnavailable(f"4-bit loading of {name} needs a CUDA GPU; this run is on {device}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelUnavailable(f"4-bit loading of {name} needs bitsandbytes: pip install bitsandbytes")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_quant_type="nf4",
        llm_int8_skip_modules=["vision_tower", "multi_modal_projector", "lm_head"],
    )
