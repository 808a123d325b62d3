"""LLaVA-NeXT (`LlavaNextForConditionalGeneration`: llava-v1.6-mistral-7b, llava-v1.6-vicuna-7b; CLIP ViT-L/14-336)
and LLaVA-OneVision (`LlavaOnevisionForConditionalGeneration`: llava-onevision-qwen2-*; SigLIP so400m/14-384, Qwen2):
"anyres" images.

Image: the checkpoint's own image processor (`LlavaNextImageProcessor` / `LlavaOnevisionImageProcessor`) makes a
base image (the picture stretched to the tower's square) and high-resolution tiles of the best of its
`image_grid_pinpoints` canvases (the picture resized into it keeping its aspect ratio, centred on padding); the
model's own `get_image_features` reads them and packs the features (`pack_image_features`: tiles stitched, padding
cropped by `unpad_image`, OneVision's `anyres_max_N` pooling, a learned newline embedding after every stitched row).

Token layout (`anyres`): the base grid (`n x n`, 24 x 24 for CLIP-336, 27 x 27 for SigLIP-384), then the stitched
grid, its rows `cols + 1` tokens apart (the newline tokens are no cell). Maps are read from the stitched grid
(`anyres_grid="stitched"`, the default: the un-padded picture at tile resolution) or from the base grid
(`anyres_grid="base"`: the whole picture stretched to a square); the attribute `anyres_grid` of the family chooses.

Text: the processor's own chat template for one user turn holding the image then the expression, cut right after
the expression: no end-of-turn token and no assistant turn, so the sequence ends on the expression's own last token
(the query token of the method). For llava-v1.6-mistral that is `[INST] <image>\\nEXPRESSION`; for OneVision
`<|im_start|>user <image>\\nEXPRESSION`. `<image>` stands for all the image tokens; a prompt starting with the BOS
token is tokenized without another one (as the processor's `apply_chat_template` does).

Positions: plain 0, 1, 2, ... (1-D RoPE of Mistral, Llama and Qwen2).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch

from annotator.errors import ModelUnavailable
from annotator.lvlm.anyres import AnyresGeometry
from annotator.lvlm.family import Family, FamilyOptions, VisionFeatures
from annotator.lvlm.layout import TokenLayout
from annotator.lvlm.prompt import Prompt, PromptPrefix, TemplatePromptBuilder, chat_head_text

AnyresGrid = Literal["stitched", "base"]
ANYRES_GRIDS: tuple[AnyresGrid, ...] = get_args(AnyresGrid)


def chat_prompt_builder(processor, *, max_expression_tokens: int, max_positions: int, model_id: str):
    """The grounding prompts of the processor's own chat template (see the module docstring)."""
    return TemplatePromptBuilder(
        processor.tokenizer,
        chat_head_text(processor, None, model_id),
        processor.image_token,
        max_expression_tokens=max_expression_tokens,
        max_positions=max_positions,
    )


def _side(size, key: str) -> int | None:
    """One entry of a processor's size (a `SizeDict` or a dict), or None."""
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


class LlavaNextFamily(Family):
    """LLaVA-NeXT / LLaVA-OneVision: anyres grids (base and stitched), the chat prompt, plain positions
    (`min_pixels` / `max_pixels`, the image-token budget and `whitespace_tokens` are ignored: the canvases, so the
    token counts, are the checkpoint's)."""

    image_size_matters = True

    def __init__(self, model, processor, options: FamilyOptions) -> None:
        super().__init__(model, processor, options)
        config = model.config
        onevision = config.model_type == "llava_onevision"
        self.name = "llava-onevision" if onevision else "llava-next"
        self.geometry = _geometry(config, processor.image_processor, options.model_id, onevision)
        self._anyres_grid: AnyresGrid = "stitched"
        self._prompts = chat_prompt_builder(
            processor,
            max_expression_tokens=options.max_expression_tokens,
            max_positions=int(config.text_config.max_position_embeddings),
            model_id=options.model_id,
        )

    @property
    def anyres_grid(self) -> AnyresGrid:
        """The grid maps are read from: "stitched" (the high-resolution tiles, un-padded) or "base"."""
        return self._anyres_grid

    @anyres_grid.setter
    def anyres_grid(self, grid: AnyresGrid) -> None:
        if grid not in ANYRES_GRIDS:
            raise ValueError(f"anyres_grid must be one of {ANYRES_GRIDS}, got {grid!r}")
        self._anyres_grid = grid

    @property
    def text_model(self) -> torch.nn.Module:
        return self.model.model.language_model

    def layout_for(self, width: int, height: int) -> TokenLayout:
        return self.geometry.layout(width, height, map_grid=1 if self._anyres_grid == "stitched" else 0)

    def prompt(self, expression: str, layout: TokenLayout) -> Prompt:
        return self._prompts.build(expression, layout.num_tokens)

    def prompt_prefix(self, layout: TokenLayout) -> PromptPrefix:
        return self._prompts.prefix(layout.num_tokens)

    def pixel_values(self, image: np.ndarray, layout: TokenLayout, device: torch.device) -> dict[str, torch.Tensor]:
        """The processor's `pixel_values` `[1, 1 + tiles, 3, side, side]` and `image_sizes`, checked against the
        canvas the layout was made for."""
        inputs = self.processor.image_processor(images=image, return_tensors="pt", input_data_format="channels_last")
        canvas_h, canvas_w = self.geometry.canvas(image.shape[1], image.shape[0])
        tiles = (canvas_h // self.geometry.image_size) * (canvas_w // self.geometry.image_size)
        if inputs["pixel_values"].shape[1] != 1 + tiles:
            raise ValueError(
                f"{self.model_id}: the processor makes {inputs['pixel_values'].shape[1]} images, the layout a base "
                f"image and {tiles} tiles"
            )
        return {
            "pixel_values": inputs["pixel_values"].to(device=device, dtype=self.model.model.vision_tower.dtype),
            "image_sizes": inputs["image_sizes"].to(device),
        }

    def image_features(self, image: np.ndarray, layout: TokenLayout, device: torch.device) -> VisionFeatures:
        inputs = self.pixel_values(image, layout, device)
        embeds = self.model.model.get_image_features(**inputs, return_dict=True).pooler_output[0]
        if embeds.shape[0] != layout.num_tokens:
            raise ValueError(
                f"{self.model_id}: the model packs {embeds.shape[0]} image features, the layout {layout.num_tokens}"
            )
        return VisionFeatures(embeds)


def _geometry(config, images, model_id: str, onevision: bool) -> AnyresGeometry:
    """The tile and canvas sizes of the model and its processor, which must agree."""
    vision = config.vision_config
    strategy = "full" if onevision else "default"
    if config.vision_feature_select_strategy != strategy:
        raise ModelUnavailable(
            f"{model_id}: vision_feature_select_strategy {config.vision_feature_select_strategy!r}, where the "
            f"{'SigLIP' if onevision else 'CLIP'} tiles of this family are read with {strategy!r}: the tiles would "
            f"not be square grids of patches"
        )
    image_size, patch_size = int(vision.image_size), int(vision.patch_size)
    tile = _side(images.crop_size, "height") if getattr(images, "crop_size", None) else None
    base = (_side(images.size, "height"), _side(images.size, "width"))
    if base[0] is None:
        base = (_side(images.size, "shortest_edge"),) * 2
    tile = tile or base[0]
    pinpoints = tuple(tuple(int(v) for v in p) for p in config.image_grid_pinpoints)
    processor_pinpoints = tuple(tuple(int(v) for v in p) for p in images.image_grid_pinpoints)
    if tile != image_size or base != (image_size, image_size) or pinpoints != processor_pinpoints:
        raise ModelUnavailable(
            f"{model_id}: the processor cuts {tile} px tiles of a {base[1]} x {base[0]} base image over its own "
            f"canvases, the model reads {image_size} px squares over the canvases of its config.json; the "
            f"processor belongs to another checkpoint"
        )
    max_tiles = None
    if onevision:
        max_tiles = int(str(config.vision_aspect_ratio).removeprefix("anyres_max_"))
    return AnyresGeometry(image_size, patch_size, base, pinpoints, max_tiles)
