"""SAM 2.1 through transformers (`Sam2Model`, `Sam2ImageProcessor`): image embedding once, prompts on the decoder.

SAM 2.1's image processor resizes every image to a 1024 x 1024 square (no padding), so prompts scale by width and
height separately and the low-res logits are resized straight back to the image. The encoder's three feature maps
(two high-resolution levels already projected for the decoder, and the image embedding) are cached together.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import Sam2ImageProcessor, Sam2Model

from annotator.segmentation.backend import ImageEmbedding
from annotator.segmentation.catalog import SAM2_MODELS
from annotator.segmentation.transformers_sam import (
    TransformersSamBackend,
    cached_folder,
    checked_folder,
    from_pretrained,
    load_weights,
)

class Sam2Backend(TransformersSamBackend):
    """A `Sam2Model` with its image processor as a `MaskBackend`."""

    def _encode(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.get_image_embeddings(pixel_values))

    def _input_size(self, inputs: Any) -> tuple[int, int]:
        return tuple(int(v) for v in inputs["pixel_values"].shape[-2:])

    def _decoder_inputs(self, embedding: ImageEmbedding) -> dict[str, Any]:
        return {"image_embeddings": list(embedding.features)}

    def _upscale(self, low_res: torch.Tensor, embedding: ImageEmbedding) -> torch.Tensor:
        return self.image_processor.post_process_masks([low_res], [embedding.original_size], binarize=False)[0]


def load_sam2(name: str, folder: str | os.PathLike[str] | None, device: torch.device) -> Sam2Backend:
    """SAM 2.1 `name` (a key of `SAM2_MODELS`) from `folder`, by default its snapshot in the Hugging Face cache."""
    model = SAM2_MODELS[name]
    path = checked_folder(cached_folder(model) if folder is None else folder, model)
    sam2 = load_weights(Sam2Model, path, model)
    processor = from_pretrained(Sam2ImageProcessor, path, model)
    return Sam2Backend(sam2.to(device), processor, model.label)
