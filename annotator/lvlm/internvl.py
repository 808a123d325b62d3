"""InternVL3 (`InternVLForConditionalGeneration`, the `-hf` checkpoints: InternViT-300M/6B, pixel shuffle, an MLP
projector, a Qwen2.5 LLM): dynamic 448 px tiles plus a thumbnail, the chat template's user turn.

Image: the processor (`GotOcr2ImageProcessor`, `crop_to_patches` as `InternVLProcessor` sets it) picks the tile
arrangement `cols x rows` (1 <= cols * rows <= `max_patches`, 12 for the released checkpoints) whose aspect ratio
is closest to the image's (transformers' own `get_optimal_tiled_canvas`), stretches the image to `cols * 448` x
`rows * 448` px and cuts it into tiles, row after row; when there is more than one tile it appends a thumbnail, the
whole image stretched to 448 x 448. InternViT reads each tile as 32 x 32 patches of 14 px; the pixel shuffle merges
2 x 2 patches into one LLM token, so a tile is a 16 x 16 grid of 28 px cells, 256 tokens in row-major order (the
shuffle's reshapes keep it), and the tiles' tokens follow one another, the thumbnail's last. A 1000 x 750 photo gets
4 x 3 tiles and the thumbnail: 13 * 256 = 3,328 image tokens.

Layout: two grids. The tiles stitched into one `rows * 16` x `cols * 16` grid over the stretched image
(`TiledGridPlacement`: cell (r, c) is token `t * 256 + (r % 16) * 16 + c % 16` of tile `t = (r // 16) * cols +
c // 16`), and the thumbnail's 16 x 16 grid after them. Maps are read from the stitched tiles by default: they are
what the LLM reads at full resolution, `cols x rows` times finer than the thumbnail (up to 64 x 48 cells against
16 x 16), and they cover the whole image, so a box on them is as exact as the method can be; `read_maps_from =
"thumbnail"` reads the thumbnail instead (a single-tile image has no thumbnail: both read its one grid). Both grids
stretch the image (`ImageFrame(fit="stretch")`), no padding.

Text: the processor's own chat template for one user turn holding the image then the expression, cut right before
the expression, its `<IMG_CONTEXT>` written as the processor expands it (`prompt.chat_head_text`; a processor
saved without a template gets the released `-hf` one's text, which writes no system turn): no `<|im_end|>` and no
assistant turn, so the sequence ends on the expression's own last token:

    <|im_start|>user\\n<img><IMG_CONTEXT> x tokens </img>\\nEXPRESSION

Positions: plain 0, 1, 2, ... (the Qwen2 LLM's 1-D RoPE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

from annotator.grounding.frame import ImageFrame
from annotator.lvlm.family import Family, FamilyOptions, VisionFeatures
from annotator.lvlm.layout import GridPlacement, TokenLayout
from annotator.lvlm.prompt import Prompt, PromptPrefix, TemplatePromptBuilder, chat_head_text

USER_TURN = "<|im_start|>user\n"
MapSource = Literal["tiles", "thumbnail"]


@dataclass(frozen=True)
class TiledGridPlacement(GridPlacement):
    """A grid stitched from `tile` x `tile` tiles whose tokens follow one another, tile after tile in row-major
    order, each tile's cells row-major (`row_stride` is the grid's width, so `end` is one past the last tile)."""

    tile: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.frame.grid_h % self.tile or self.frame.grid_w % self.tile or self.row_stride != self.frame.grid_w:
            raise ValueError(
                f"a {self.frame.grid_h} x {self.frame.grid_w} grid is no stitching of {self.tile} x {self.tile} tiles"
            )

    def positions(self) -> np.ndarray:
        rows, cols = np.indices(self.frame.grid_hw, dtype=np.int64)
        tile_index = (rows // self.tile) * (self.frame.grid_w // self.tile) + cols // self.tile
        return self.start + tile_index * self.tile * self.tile + (rows % self.tile) * self.tile + cols % self.tile


def internvl_layout(
    width: int,
    height: int,
    *,
    tile_size: int = 448,
    tile_grid: int = 16,
    min_tiles: int = 1,
    max_tiles: int = 12,
    read_maps_from: MapSource = "tiles",
) -> TokenLayout:
    """The image tokens of a `width` x `height` image: its tiles stitched, then the thumbnail (see the module docs)."""
    from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas

    if read_maps_from not in get_args(MapSource):
        raise ValueError(f"read_maps_from must be one of {get_args(MapSource)}, got {read_maps_from!r}")
    cols, rows = (1, 1)
    if max_tiles > 1:
        cols, rows = get_optimal_tiled_canvas((int(height), int(width)), (tile_size, tile_size), min_tiles, max_tiles)
    tiles = ImageFrame.for_image(
        width, height, (rows * tile_grid, cols * tile_grid), max(rows, cols) * tile_size, fit="stretch"
    )
    stitched = TiledGridPlacement(tiles, 0, tiles.grid_w, tile=tile_grid)
    if cols * rows == 1:
        return TokenLayout(grids=(stitched,), num_tokens=stitched.end)
    thumbnail = ImageFrame.for_image(width, height, tile_grid, tile_size, fit="stretch")
    grids = (stitched, GridPlacement(thumbnail, stitched.end, tile_grid))
    return TokenLayout(grids=grids, num_tokens=grids[1].end, map_grid=0 if read_maps_from == "tiles" else 1)


class InternVLFamily(Family):
    """InternVL3: tiles and a thumbnail, the chat prompt, plain positions. `read_maps_from`: "tiles" (default) or
    "thumbnail" (see the module docstring). The tiling is the processor's (`min_pixels` / `max_pixels`, the
    native-resolution families' budget, are ignored; its `max_patches` bounds the tiles)."""

    name = "internvl"
    image_size_matters = True

    def __init__(self, model, processor, options: FamilyOptions) -> None:
        super().__init__(model, processor, options)
        config = model.config
        vision = config.vision_config
        self.read_maps_from: MapSource = "tiles"
        self.tile_size = int(vision.image_size[0])
        patches = self.tile_size // int(vision.patch_size[0])
        self.tile_grid = int(patches * config.downsample_ratio)
        if config.vision_feature_select_strategy != "default":
            raise ValueError(
                f"{self.model_id}: vision_feature_select_strategy {config.vision_feature_select_strategy!r} keeps the "
                f"CLS feature, so a tile's tokens are not a {self.tile_grid} x {self.tile_grid} grid"
            )
        images = processor.image_processor
        if not hasattr(images, "crop_image_to_patches"):
            raise ValueError(f"{self.model_id}: the processor ({type(images).__name__}) does not cut images into tiles")
        size = images.size
        if (int(size["height"]), int(size["width"])) != (self.tile_size, self.tile_size):
            raise ValueError(
                f"{self.model_id}: the processor makes {size['width']} x {size['height']} tiles, InternViT reads "
                f"{self.tile_size} x {self.tile_size}"
            )
        if int(processor.image_seq_length) != self.tile_grid**2:
            raise ValueError(
                f"{self.model_id}: the processor puts {processor.image_seq_length} tokens per tile in the prompt, the "
                f"model makes {self.tile_grid} x {self.tile_grid}"
            )
        self.min_tiles, self.max_tiles = int(images.min_patches), int(images.max_patches)
        image_text = processor.start_image_token + processor.image_token + processor.end_image_token
        self._prompts = TemplatePromptBuilder(
            processor.tokenizer,
            chat_head_text(processor, USER_TURN + image_text + "\n", options.model_id, image_text),
            processor.image_token,
            max_expression_tokens=options.max_expression_tokens,
            max_positions=int(config.text_config.max_position_embeddings),
        )

    @property
    def text_model(self) -> torch.nn.Module:
        return self.model.model.language_model

    def limit_image_tokens(self, tokens: int) -> None:
        """At most `tokens` image tokens: as many tiles as fit beside the thumbnail (one tile, no thumbnail, when
        fewer than three tiles' tokens fit; a tile is the least an image gets)."""
        per_tile = self.tile_grid * self.tile_grid
        fit = int(tokens) // per_tile
        self.max_tiles = min(self.max_tiles, fit - 1 if fit >= 3 else 1)
        self.min_tiles = min(self.min_tiles, self.max_tiles)

    def layout_for(self, width: int, height: int) -> TokenLayout:
        return internvl_layout(
            width,
            height,
            tile_size=self.tile_size,
            tile_grid=self.tile_grid,
            min_tiles=self.min_tiles,
            max_tiles=self.max_tiles,
            read_maps_from=self.read_maps_from,
        )

    def prompt(self, expression: str, layout: TokenLayout) -> Prompt:
        return self._prompts.build(expression, layout.num_tokens)

    def prompt_prefix(self, layout: TokenLayout) -> PromptPrefix:
        return self._prompts.prefix(layout.num_tokens)

    def pixel_values(self, image: np.ndarray, layout: TokenLayout, device: torch.device) -> torch.Tensor:
        """The processor's tiles and thumbnail, `[tiles, 3, tile, tile]`, checked against `layout`."""
        pixels = self.processor.image_processor(
            images=image,
            crop_to_patches=True,
            min_patches=self.min_tiles,
            max_patches=self.max_tiles,
            return_tensors="pt",
            input_data_format="channels_last",
        )["pixel_values"]
        tiles = layout.num_tokens // (self.tile_grid * self.tile_grid)
        if tuple(pixels.shape) != (tiles, 3, self.tile_size, self.tile_size):
            raise ValueError(f"{self.model_id}: the processor makes {tuple(pixels.shape)} tiles, the layout {tiles}")
        return pixels.to(device=device, dtype=self.model.model.vision_tower.dtype)

    def image_features(self, image: np.ndarray, layout: TokenLayout, device: torch.device) -> VisionFeatures:
        pixels = self.pixel_values(image, layout, device)
        features = self.model.model.get_image_features(pixel_values=pixels, return_dict=True).pooler_output
        return VisionFeatures(features.reshape(-1, features.shape[-1]))
