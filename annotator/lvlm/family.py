"""What a model family tells the engine: its text decoder, its prompt, its image inputs and their token layout,
and the position ids of a sequence. The engine (`engine.LvlmEngine`) owns everything else: capture, early exit,
the prefix cache. One subclass per family (`llava.LlavaFamily`, `qwen2_vl.QwenVLFamily`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from annotator.lvlm.layout import TokenLayout
from annotator.lvlm.model_input import WhitespaceTokens
from annotator.lvlm.prompt import Prompt, PromptPrefix


@dataclass(frozen=True)
class FamilyOptions:
    """The engine's settings an adapter reads: `max_expression_tokens` (longer expressions are truncated),
    `whitespace_tokens` (LLaVA-1.5's tokenization recipe), `min_pixels` / `max_pixels` (the native-resolution
    families' budget; None: the checkpoint's), `model_id` (the name messages use)."""

    max_expression_tokens: int
    whitespace_tokens: WhitespaceTokens
    min_pixels: int | None
    max_pixels: int | None
    model_id: str


@dataclass(frozen=True, eq=False)
class VisionFeatures:
    """What the vision side gives the text model for one image: `embeds`, `[num_tokens, hidden]`, put at the image
    tokens; `extra`, family-specific tensors a forward over the image tokens also needs (e.g. Qwen3-VL's DeepStack
    features), turned into text-model arguments by `Family.text_kwargs`."""

    embeds: torch.Tensor
    extra: tuple[torch.Tensor, ...] = field(default=())


class Family(ABC):
    """A built model and processor of one family, as the engine reads them.

    `image_size_matters`: whether the token layout (so the prompt) depends on the image's size.
    """

    name: ClassVar[str]
    image_size_matters: ClassVar[bool]

    def __init__(self, model, processor, options: FamilyOptions) -> None:
        self.model = model
        self.processor = processor
        self.options = options
        self.model_id = options.model_id

    @property
    @abstractmethod
    def text_model(self) -> torch.nn.Module:
        """The text decoder: `embed_tokens`, `layers`, called with `inputs_embeds`, `position_ids`, a cache."""

    @property
    def text_config(self):
        return self.model.config.text_config

    def attn_implementation(self, capture: str) -> dict[str, str]:
        """The attention implementation per sub-config: the capture function for the text model, SDPA elsewhere."""
        return {"text_config": capture, "vision_config": "sdpa"}

    @abstractmethod
    def layout_for(self, width: int, height: int) -> TokenLayout:
        """The image tokens of a `width` x `height` image (cheap: no pixels are read)."""

    @abstractmethod
    def prompt(self, expression: str, layout: TokenLayout) -> Prompt:
        """The token ids for `expression` on an image of `layout` (ValueError if empty; truncated if long)."""

    @abstractmethod
    def prompt_prefix(self, layout: TokenLayout) -> PromptPrefix:
        """The part of every prompt on an image of `layout` that comes before the expression."""

    @abstractmethod
    def pixel_values(self, image: np.ndarray, layout: TokenLayout, device: torch.device) -> object:
        """What the vision tower reads for the image (its processor's output, on `device`)."""

    @abstractmethod
    def image_features(self, image: np.ndarray, layout: TokenLayout, device: torch.device) -> VisionFeatures:
        """What the text model receives for the image tokens (`embeds`: `[layout.num_tokens, hidden]`)."""

    def limit_image_tokens(self, tokens: int) -> None:
        """At most `tokens` image tokens per image, for families that read images at their own resolution; fixed
        grids ignore it."""

    def text_kwargs(self, features: VisionFeatures, image_positions: slice, length: int) -> dict:
        """Further text-model arguments for a forward of `length` tokens holding the image tokens at
        `image_positions` (none for most families)."""
        return {}

    def position_ids(self, prompt: Prompt, layout: TokenLayout, device: torch.device) -> torch.Tensor | None:
        """The position ids of the whole prompt (`[..., 1, len(prompt.ids)]`), or None for plain 0, 1, 2, ..."""
        return None
