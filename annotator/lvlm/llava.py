"""LLaVA-1.5 (`LlavaForConditionalGeneration`: CLIP vision tower, projector, Llama): a fixed square grid of
`image_size / patch_size` patches a side (24 x 24 for 336 px and 14 px patches), the image padded to a square
with the processor's mean colour first, and the reference prompt of `model_input`."""

from __future__ import annotations

import numpy as np
import torch

from annotator.grounding.frame import ImageFrame
from annotator.lvlm.family import Family, FamilyOptions, VisionFeatures
from annotator.lvlm.layout import TokenLayout
from annotator.lvlm.model_input import PromptBuilder, mean_colour, square_image
from annotator.lvlm.prompt import Prompt, PromptPrefix


class LlavaFamily(Family):
    """LLaVA-1.5's text model, prompt and padded-square image (its grid is fixed: `min_pixels` / `max_pixels`, the
    native-resolution families' budget, are ignored)."""

    name = "llava-1.5"
    image_size_matters = False

    def __init__(self, model, processor, options: FamilyOptions) -> None:
        super().__init__(model, processor, options)
        config = model.config
        vision = config.vision_config
        self.input_size = int(vision.image_size)
        self.grid_size = self.input_size // int(vision.patch_size)
        if config.vision_feature_select_strategy != "default":
            raise ValueError(
                f"{self.model_id}: vision_feature_select_strategy {config.vision_feature_select_strategy!r} keeps the "
                f"CLS feature, so the image tokens are not a {self.grid_size} x {self.grid_size} grid"
            )
        self._fill = mean_colour(processor.image_processor.image_mean)
        self._prompts = PromptBuilder(
            processor.tokenizer,
            processor.image_token,
            num_image_tokens=self.grid_size * self.grid_size,
            max_expression_tokens=options.max_expression_tokens,
            max_positions=int(config.text_config.max_position_embeddings),
            whitespace_tokens=options.whitespace_tokens,
        )

    @property
    def text_model(self) -> torch.nn.Module:
        return self.model.model.language_model

    def frame_for(self, width: int, height: int) -> ImageFrame:
        return ImageFrame.for_image(width, height, self.grid_size, self.input_size)

    def layout_for(self, width: int, height: int) -> TokenLayout:
        return TokenLayout.single(self.frame_for(width, height))

    def prompt(self, expression: str, layout: TokenLayout | None = None) -> Prompt:
        return self._prompts.build(expression)

    def prompt_prefix(self, layout: TokenLayout | None = None) -> PromptPrefix:
        return self._prompts.prefix

    def pixel_values(self, image: np.ndarray, layout: TokenLayout, device: torch.device) -> torch.Tensor:
        """The processor's pixel tensor `[1, 3, input_size, input_size]` for the image padded to a square."""
        frame = layout.frame
        square = square_image(image, frame, self._fill, max_side=4 * self.input_size)
        pixels = self.processor.image_processor(images=square, return_tensors="pt", input_data_format="channels_last")[
            "pixel_values"
        ]
        if tuple(pixels.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(
                f"{self.model_id}: the processor makes {tuple(pixels.shape[-2:])} images, the vision tower reads "
                f"{self.input_size} x {self.input_size}"
            )
        return pixels.to(device=device, dtype=self.model.model.vision_tower.dtype)

    def image_features(self, image: np.ndarray, layout: TokenLayout, device: torch.device) -> VisionFeatures:
        pixels = self.pixel_values(image, layout, device)
        features = self.model.model.get_image_features(pixel_values=pixels, return_dict=True)
        return VisionFeatures(features.pooler_output[0])
