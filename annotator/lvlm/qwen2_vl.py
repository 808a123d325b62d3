"""Qwen2-VL and Qwen2.5-VL (`Qwen2VLForConditionalGeneration`, `Qwen2_5_VLForConditionalGeneration`): native
resolution, M-RoPE, the chat template's user turn.

Image: Qwen's smart resize makes each side a multiple of 28 px (patch 14 x merge 2) with the pixel count within
[`min_pixels`, `max_pixels`] and the aspect ratio kept as closely as that allows; the vision tower's 14 px patches
are merged 2 x 2 into one LLM token. The released checkpoints' processors allow 3,136 to 12,845,056 px (4 to 16,384
tokens); transformers' class default, and `qwen_layout`'s, is at most 1,003,520 px (1,280 tokens). A 1000 x 750
photo gives a 36 x 27 grid (972 tokens) under both; a 1600 x 1200 one 57 x 43 (2,451) under the first, 41 x 30
(1,230) under the second. No padding: the grid is the whole image (`ImageFrame(fit="stretch")`).

Text: the chat template's system turn and user turn, the image first, then the expression, and no `<|im_end|>`
and no assistant turn, so the sequence ends on the expression's own last token (the query token of the method):

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n<|vision_start|>
    <|image_pad|> x tokens <|vision_end|>EXPRESSION

Positions: M-RoPE gives the image tokens (temporal, row, column) positions and the text after them positions that
continue from the image's largest one; they come from the model's own `get_rope_index` over the whole sequence,
so a cached prefix and the expression after it get exactly the positions of a full forward.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from annotator.errors import ModelUnavailable
from annotator.grounding.frame import ImageFrame
from annotator.lvlm.family import Family, FamilyOptions, VisionFeatures
from annotator.lvlm.layout import TokenLayout
from annotator.lvlm.prompt import Prompt, PromptPrefix, TemplatePromptBuilder

SYSTEM_TURN = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
USER_START = "<|im_start|>user\n"
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 28 * 28 * 1280
MAX_ASPECT_RATIO = 200


def qwen_layout(
    width: int,
    height: int,
    *,
    patch_size: int = 14,
    merge_size: int = 2,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> TokenLayout:
    """The one grid of a `width` x `height` image after Qwen's smart resize (transformers' own `smart_resize`)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ValueError(
            f"a {width} x {height} image is more than {MAX_ASPECT_RATIO} times longer than wide, which Qwen's "
            f"vision tower cannot read; crop it"
        )
    factor = patch_size * merge_size
    resized_h, resized_w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    frame = ImageFrame.for_image(
        width, height, (resized_h // factor, resized_w // factor), max(resized_h, resized_w), fit="stretch"
    )
    return TokenLayout.single(frame)


class QwenPromptBuilder(TemplatePromptBuilder):
    """Tokenizes Qwen-VL grounding prompts (see the module docstring) with the model's own tokenizer;
    `system_turn`: the template's default system turn ("" for templates without one, as Qwen3-VL's)."""

    def __init__(
        self,
        tokenizer,
        *,
        image_token: str = "<|image_pad|>",
        vision_start: str = "<|vision_start|>",
        vision_end: str = "<|vision_end|>",
        max_expression_tokens: int = 64,
        max_positions: int = 32768,
        system_turn: str = SYSTEM_TURN,
    ) -> None:
        for token in (vision_start, vision_end):
            ids = tokenizer(token, add_special_tokens=False)["input_ids"]
            if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
                raise ValueError(f"the tokenizer does not keep {token!r} as one token")
        super().__init__(
            tokenizer,
            system_turn + USER_START + vision_start + image_token + vision_end,
            image_token,
            max_expression_tokens=max_expression_tokens,
            max_positions=max_positions,
        )


class QwenVLFamily(Family):
    """Qwen2-VL / Qwen2.5-VL: native-resolution grids, M-RoPE positions, the chat prompt.

    `min_pixels` / `max_pixels`: the smart-resize budget (default: the checkpoint's processor's); each LLM token
    costs 28 x 28 = 784 pixels of it.
    """

    name = "qwen2-vl"
    image_size_matters = True
    system_turn: ClassVar[str] = SYSTEM_TURN

    def __init__(self, model, processor, options: FamilyOptions) -> None:
        super().__init__(model, processor, options)
        config = model.config
        self.name = "qwen2.5-vl" if config.model_type == "qwen2_5_vl" else self.name
        images = processor.image_processor
        self.patch_size = int(images.patch_size)
        self.merge_size = int(images.merge_size)
        if self.merge_size != int(config.vision_config.spatial_merge_size):
            raise ValueError(
                f"{self.model_id}: the processor merges {self.merge_size} x {self.merge_size} patches, the model "
                f"{config.vision_config.spatial_merge_size} x {config.vision_config.spatial_merge_size}"
            )
        size = images.size
        self.min_pixels = int(options.min_pixels if options.min_pixels is not None else size["shortest_edge"])
        self.max_pixels = int(options.max_pixels if options.max_pixels is not None else size["longest_edge"])
        factor = self.patch_size * self.merge_size
        if not factor * factor <= self.min_pixels <= self.max_pixels:
            raise ModelUnavailable(
                f"{self.model_id}: min_pixels {self.min_pixels} and max_pixels {self.max_pixels} must satisfy "
                f"{factor * factor} <= min_pixels <= max_pixels (one token is {factor} x {factor} px)"
            )
        tokenizer = processor.tokenizer
        self._prompts = QwenPromptBuilder(
            tokenizer,
            image_token=tokenizer.convert_ids_to_tokens(int(config.image_token_id)),
            vision_start=tokenizer.convert_ids_to_tokens(int(config.vision_start_token_id)),
            vision_end=tokenizer.convert_ids_to_tokens(int(config.vision_end_token_id)),
            max_expression_tokens=options.max_expression_tokens,
            max_positions=int(config.text_config.max_position_embeddings),
            system_turn=self.system_turn,
        )

    @property
    def text_model(self) -> torch.nn.Module:
        return self.model.model.language_model

    def limit_image_tokens(self, tokens: int) -> None:
        """At most `tokens` image tokens per image (`max_pixels` = tokens x the pixels of one token)."""
        factor = self.patch_size * self.merge_size
        self.max_pixels = max(1, int(tokens)) * factor * factor
        self.min_pixels = min(self.min_pixels, self.max_pixels)

    def layout_for(self, width: int, height: int) -> TokenLayout:
        return qwen_layout(
            width,
            height,
            patch_size=self.patch_size,
            merge_size=self.merge_size,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
        )

    def prompt(self, expression: str, layout: TokenLayout) -> Prompt:
        return self._prompts.build(expression, layout.num_tokens)

    def prompt_prefix(self, layout: TokenLayout) -> PromptPrefix:
        return self._prompts.prefix(layout.num_tokens)

    def pixel_values(self, image: np.ndarray, layout: TokenLayout, device: torch.device) -> dict[str, torch.Tensor]:
        """The processor's flattened patches and `image_grid_thw` for the image, checked against `layout`."""
        inputs = self.processor.image_processor(
            images=image,
            size={"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            return_tensors="pt",
            input_data_format="channels_last",
        )
        grid_thw = inputs["image_grid_thw"]
        expected = [1, layout.frame.grid_h * self.merge_size, layout.frame.grid_w * self.merge_size]
        if grid_thw.tolist() != [expected]:
            raise ValueError(f"{self.model_id}: the processor makes a {grid_thw.tolist()} grid, the layout {expected}")
        return {
            "pixel_values": inputs["pixel_values"].to(device=device, dtype=self.model.model.visual.dtype),
            "image_grid_thw": grid_thw.to(device),
        }

    def image_features(self, image: np.ndarray, layout: TokenLayout, device: torch.device) -> VisionFeatures:
        inputs = self.pixel_values(image, layout, device)
        return VisionFeatures(self.model.model.get_image_features(**inputs, return_dict=True).pooler_output[0])

    def position_ids(self, prompt: Prompt, layout: TokenLayout, device: torch.device) -> torch.Tensor:
        """M-RoPE positions `[3, 1, len(prompt.ids)]` from the model's `get_rope_index`."""
        ids = torch.tensor([prompt.ids], device=device)
        image = prompt.prefix.image_positions
        token_types = torch.zeros_like(ids, dtype=torch.int32)
        token_types[0, image] = 1
        grid = [[1, layout.frame.grid_h * self.merge_size, layout.frame.grid_w * self.merge_size]]
        positions, _ = self.model.model.get_rope_index(
            ids, mm_token_type_ids=token_types, image_grid_thw=torch.tensor(grid, device=device)
        )
        return positions
