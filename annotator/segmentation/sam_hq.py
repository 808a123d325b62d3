"""SAM-HQ through transformers (`SamHQModel`, `SamImageProcessor`): image embedding once, prompts on the decoder.

SAM-HQ keeps SAM's geometry: the longest side is resized to 1024 and the rest padded, so prompts scale by one
factor and the low-res logits are cropped to the resized image before going back to the original size. Its
decoder reads the first ViT block's output beside the image embedding (the HQ features), so both are cached; the
masks are SAM's plus the HQ token's (`hq_token_only=False`, as the released predictor does).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import SamHQModel, SamImageProcessor

from annotator.segmentation.backend import ImageEmbedding
from annotator.segmentation.catalog import SAM_HQ_MODELS
from annotator.segmentation.transformers_sam import (
    TransformersSamBackend,
    cached_folder,
    checked_folder,
    from_pretrained,
    load_weights,
)

class SamHQBackend(TransformersSamBackend):
    """A `SamHQModel` with its image processor as a `MaskBackend`."""

    def _encode(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image_embeddings, intermediate_embeddings = self.model.get_image_embeddings(pixel_values)
        return (image_embeddings, *intermediate_embeddings)

    def _input_size(self, inputs: Any) -> tuple[int, int]:
        return tuple(int(v) for v in inputs["reshaped_input_sizes"][0])

    def _decoder_inputs(self, embedding: ImageEmbedding) -> dict[str, Any]:
        return {
            "image_embeddings": embedding.features[0],
            "intermediate_embeddings": list(embedding.features[1:]),
            "hq_token_only": False,
        }

    def _upscale(self, low_res: torch.Tensor, embedding: ImageEmbedding) -> torch.Tensor:
        return self.image_processor.post_process_masks(
            [low_res], [embedding.original_size], [embedding.input_size], binarize=False
        )[0]


def load_sam_hq(name: str, folder: str | os.PathLike[str] | None, device: torch.device) -> SamHQBackend:
    """SAM-HQ `name` (a key of `SAM_HQ_MODELS`) from `folder`, by default its snapshot in the Hugging Face cache."""
    model = SAM_HQ_MODELS[name]
    path = checked_folder(cached_folder(model) if folder is None else folder, model)
    sam_hq = load_weights(SamHQModel, path, model)
    processor = from_pretrained(SamImageProcessor, path, model)
    return SamHQBackend(sam_hq.to(device), processor, model.label)
