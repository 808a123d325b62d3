"""DeepSeek-VL (`DeepseekVLForConditionalGeneration`: SigLIP-L 384 px, an MLP aligner, a Llama-style DeepSeek LLM)
and DeepSeek-VL hybrid (`DeepseekVLHybridForConditionalGeneration`, the 7B: the same plus a SAM-B branch reading
the image at 1024 px, whose features are concatenated to SigLIP's token for token).

Image: the processor resizes the image so its long side is the square's side `S` (each side `round(side * S /
long side)`, at least `min_size` px), then centres it on an `S` x `S` square of the mean colour (`int(255 * mean)`),
the start offset `(S - resized side) // 2`. DeepSeek-VL: `S` = 384, the square SigLIP reads. Hybrid: `S` = 1024, the
square SAM reads; SigLIP reads that same padded square resized to 384 x 384. Either way the image tokens are SigLIP's
fixed `24 x 24` grid of 16 px patches (SAM's 64 x 64 patches are resized to 96 x 96 and strided twice to the same
24 x 24), row after row, nothing between rows: 576 tokens whatever the image's size. The image is resized before it
is padded (LLaVA pads first), so the grid is placed by the resized size, not the original one: `PaddedSquareFrame`
is that exact placement (`ImageFrame`'s `"pad"` would be off by the rounding, up to half a pixel of `S`).

Text: the processor's own chat template for one user turn holding the image then the expression, cut right before
the expression (`chat_head_text`; a processor saved without a template gets the released one's text): the system
text and the user turn, the image, the expression, and no `\\n\\n` after it and no assistant turn, so the sequence
ends on the expression's own last token (the query token of the method):

    <｜begin▁of▁sentence｜>You are a helpful language and vision assistant. You are able to understand the visual
    content that the user provides, and assist the user with a variety of tasks using natural language.\\n\\nUser:
    <image_placeholder> x 576 EXPRESSION

Positions: plain 0, 1, 2, ... (1-D RoPE), so a cached prefix and the expression after it need nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from annotator.grounding.frame import ImageFrame
from annotator.lvlm.family import Family, FamilyOptions, VisionFeatures
from annotator.lvlm.layout import TokenLayout
from annotator.lvlm.prompt import Prompt, PromptPrefix, TemplatePromptBuilder, chat_head_text

SYSTEM_TEXT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language."
)
USER_TURN = "\n\nUser: "


@dataclass(frozen=True)
class PaddedSquareFrame(ImageFrame):
    """An image resized to `resized_w` x `resized_h` px and centred on a `square` x `square` canvas that is cut into
    the grid (DeepSeek-VL's processor). Cells are `square / grid` canvas px; in original pixels they are
    `width / resized_w` times that, which differs from `height / resized_h` by the rounding of the resize."""

    square: int = 1
    resized_w: int = 1
    resized_h: int = 1

    @property
    def offset_x(self) -> float:
        """The canvas's padding left of the image, in original pixels."""
        return (self.square - self.resized_w) // 2 * self.width / self.resized_w

    @property
    def offset_y(self) -> float:
        return (self.square - self.resized_h) // 2 * self.height / self.resized_h

    @property
    def cells_per_pixel(self) -> tuple[float, float]:
        return (
            self.grid_w * self.resized_w / (self.square * self.width),
            self.grid_h * self.resized_h / (self.square * self.height),
        )

    def pad(self, image: np.ndarray, fill) -> np.ndarray:
        raise ValueError("a DeepSeek-VL image is padded by its processor, after resizing")


def padded_square_frame(width: int, height: int, grid_size: int, square: int, min_size: int = 14) -> PaddedSquareFrame:
    """Where DeepSeek-VL's processor puts a `width` x `height` image on its `square` canvas (see the module docs)."""
    scale = square / max(width, height)
    resized_w, resized_h = max(round(width * scale), min_size), max(round(height * scale), min_size)
    return PaddedSquareFrame(
        int(width), int(height), grid_size, grid_size, square, "pad", square, int(resized_w), int(resized_h)
    )


class DeepseekVLFamily(Family):
    """DeepSeek-VL and its hybrid: a fixed grid on the padded square, the chat prompt, plain positions (the grid is
    fixed: `min_pixels` / `max_pixels`, the native-resolution families' budget, are ignored)."""

    image_size_matters = False

    def __init__(self, model, processor, options: FamilyOptions) -> None:
        super().__init__(model, processor, options)
        config = model.config
        self.hybrid = config.model_type == "deepseek_vl_hybrid"
        self.name = "deepseek-vl-hybrid" if self.hybrid else "deepseek-vl"
        vision = config.vision_config
        self.input_size = int(vision.image_size)
        self.grid_size = self.input_size // int(vision.patch_size)
        images = processor.image_processor
        self._check_side(images.size, self.input_size, "SigLIP")
        self.square = self.input_size
        if self.hybrid:
            self.square = int(config.high_res_vision_config.image_size)
            self._check_side(images.high_res_size, self.square, "SAM")
        self.min_size = int(images.min_size)
        tokens = self.grid_size * self.grid_size
        if int(processor.num_image_tokens) != tokens:
            raise ValueError(
                f"{self.model_id}: the processor puts {processor.num_image_tokens} image tokens in the prompt, the "
                f"vision tower makes a {self.grid_size} x {self.grid_size} grid ({tokens})"
            )
        self._prompts = TemplatePromptBuilder(
            processor.tokenizer,
            chat_head_text(processor, SYSTEM_TEXT + USER_TURN + processor.image_token, options.model_id),
            processor.image_token,
            max_expression_tokens=options.max_expression_tokens,
            max_positions=int(config.text_config.max_position_embeddings),
        )

    def _check_side(self, size: dict, side: int, tower: str) -> None:
        if (int(size["height"]), int(size["width"])) != (side, side):
            raise ValueError(
                f"{self.model_id}: the processor makes {size['width']} x {size['height']} images, {tower} reads "
                f"{side} x {side}"
            )

    @property
    def text_model(self) -> torch.nn.Module:
        return self.model.model.language_model

    def attn_implementation(self, capture: str) -> dict[str, str]:
        sides = {"text_config": capture, "vision_config": "sdpa"}
        if self.hybrid:
            sides["high_res_vision_config"] = "sdpa"
        return sides

    def frame_for(self, width: int, height: int) -> PaddedSquareFrame:
        return padded_square_frame(width, height, self.grid_size, self.square, self.min_size)

    def layout_for(self, width: int, height: int) -> TokenLayout:
        return TokenLayout.single(self.frame_for(width, height))

    def prompt(self, expression: str, layout: TokenLayout | None = None) -> Prompt:
        return self._prompts.build(expression, self.grid_size * self.grid_size)

    def prompt_prefix(self, layout: TokenLayout | None = None) -> PromptPrefix:
        return self._prompts.prefix(self.grid_size * self.grid_size)

    def pixel_values(self, image: np.ndarray, layout: TokenLayout, device: torch.device) -> dict[str, torch.Tensor]:
        """The processor's `pixel_values` (and the hybrid's `high_res_pixel_values`), checked against the towers."""
        inputs = self.processor.image_processor(images=image, return_tensors="pt", input_data_format="channels_last")
        sides = {"pixel_values": self.input_size, "high_res_pixel_values": self.square}
        dtype = self.model.model.vision_model.dtype
        out = {}
        for name in ("pixel_values", "high_res_pixel_values") if self.hybrid else ("pixel_values",):
            pixels = inputs[name]
            if tuple(pixels.shape[-2:]) != (sides[name], sides[name]):
                raise ValueError(
                    f"{self.model_id}: the processor makes {tuple(pixels.shape[-2:])} {name}, the vision tower reads "
                    f"{sides[name]} x {sides[name]}"
                )
            out[name] = pixels.to(device=device, dtype=dtype)
        return out

    def image_features(self, image: np.ndarray, layout: TokenLayout, device: torch.device) -> VisionFeatures:
        inputs = self.pixel_values(image, layout, device)
        return VisionFeatures(self.model.model.get_image_features(**inputs, return_dict=True).pooler_output[0])
