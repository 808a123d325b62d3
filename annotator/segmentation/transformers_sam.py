"""What the transformers mask models (SAM 2.1, SAM-HQ) share: their Hub checkpoints, loading a checkpoint folder
with a one-line refusal of the wrong family, and the embed-once / decode-per-prompt round trip.

The image goes through the checkpoint's own image processor (resize, normalise, pad) once; prompts are scaled into
the resized input by `to_input_frame` and only the model's prompt encoder and mask decoder run on the cached
features (`model(image_embeddings=...)`); the processor's `post_process_masks` brings the low-res logits back to the
original image's pixels.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import try_to_load_from_cache

from annotator.errors import ModelUnavailable
from annotator.segmentation.backend import Candidates, ImageEmbedding, Prompt, to_input_frame
from annotator.segmentation.catalog import HubMaskModel

WEIGHTS_FILE = "model.safetensors"


def cached_folder(model: HubMaskModel) -> Path:
    """The checkpoint's snapshot folder in the Hugging Face cache (config and weights present); never the network."""
    found = [try_to_load_from_cache(model.hub_id, name) for name in ("config.json", WEIGHTS_FILE)]
    if not all(isinstance(path, str) for path in found):
        raise ModelUnavailable(
            f"no {model.label} checkpoint ({model.hub_id}) in the Hugging Face cache; download it first: "
            f"annotator models download {model.name}"
        )
    return Path(found[0]).parent


def checked_folder(folder: str | os.PathLike[str], model: HubMaskModel) -> Path:
    """`folder` when its config.json declares one of `model.families`; else `ModelUnavailable` in one line."""
    folder = Path(folder)
    config = folder / "config.json"
    try:
        family = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelUnavailable(f"{model.label} checkpoint {folder} has no readable config.json ({exc})") from None
    if family not in model.families:
        raise ModelUnavailable(
            f"{folder} holds a {family!r} checkpoint, not {model.label} ({' or '.join(map(repr, model.families))}); "
            f"choose the mask model that matches it"
        )
    if not (folder / WEIGHTS_FILE).is_file():
        raise ModelUnavailable(f"{model.label} checkpoint {folder} has no {WEIGHTS_FILE}; download it again")
    return folder


def from_pretrained(loader: Any, folder: Path, model: HubMaskModel, **kwargs: Any) -> Any:
    """`loader.from_pretrained(folder, **kwargs)` with any failure as one line naming the folder."""
    try:
        return loader.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        text = str(exc).strip().splitlines()
        reason = text[0] if text else type(exc).__name__
        raise ModelUnavailable(f"{model.label} checkpoint {folder} cannot be loaded: {reason}") from exc


def load_weights(model_class: Any, folder: Path, model: HubMaskModel) -> torch.nn.Module:
    """`model_class` with the folder's weights; a checkpoint that leaves any weight of it unset is refused (from
    that weight on the model would be random)."""
    loaded, info = from_pretrained(model_class, folder, model, output_loading_info=True)
    missing = sorted(info["missing_keys"])
    if missing:
        raise ModelUnavailable(
            f"{model.label} checkpoint {folder} does not fit: {len(missing)} weights missing (first: "
            f"{', '.join(missing[:3])}); download it again"
        )
    return loaded


class TransformersSamBackend(ABC):
    """A transformers SAM-style model and its image processor as a `MaskBackend`; subclasses say how their
    encoder's outputs are kept and passed back, and how low-res logits return to the image."""

    def __init__(self, model: torch.nn.Module, image_processor: Any, label: str) -> None:
        self.model = model.eval()
        self.image_processor = image_processor
        self.label = label

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        inputs = self.image_processor(images=image, return_tensors="pt")
        with torch.no_grad():
            features = self._encode(inputs["pixel_values"].to(self.device))
        return ImageEmbedding(
            features=tuple(f.float() for f in features),
            original_size=tuple(int(v) for v in image.shape[:2]),
            input_size=self._input_size(inputs),
        )

    def decode(self, embedding: ImageEmbedding, prompt: Prompt) -> Candidates:
        inputs: dict[str, torch.Tensor] = {}
        if prompt.points is not None:
            points = to_input_frame(prompt.points, embedding)
            inputs["input_points"] = self._tensor(points, torch.float32).reshape(1, 1, -1, 2)
            inputs["input_labels"] = self._tensor(prompt.labels, torch.int64).reshape(1, 1, -1)
        if prompt.box is not None:
            box = to_input_frame(np.asarray(prompt.box).reshape(2, 2), embedding)
            inputs["input_boxes"] = self._tensor(box, torch.float32).reshape(1, 1, 4)
        if prompt.mask_input is not None:
            mask_input = np.asarray(prompt.mask_input)
            inputs["input_masks"] = self._tensor(mask_input, torch.float32).reshape(1, 1, *mask_input.shape[-2:])
        with torch.no_grad():
            outputs = self.model(**self._decoder_inputs(embedding), **inputs, multimask_output=prompt.multimask)
            low_res = outputs.pred_masks[0].float()  # [1, N, h, w]
            masks = self._upscale(low_res, embedding)  # [1, N, H, W] logits
        return Candidates(
            masks=(masks[0] > 0).cpu().numpy(),
            scores=outputs.iou_scores[0, 0].float().cpu().numpy(),
            low_res_logits=low_res[0].cpu().numpy(),
        )

    def _tensor(self, values: Any, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values), dtype=dtype, device=self.device)

    @abstractmethod
    def _encode(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The image encoder's outputs for `pixel_values` `[1, 3, S, S]`, as the decoder will need them."""

    @abstractmethod
    def _input_size(self, inputs: Any) -> tuple[int, int]:
        """The size (h, w) the image was resized to, from the image processor's outputs."""

    @abstractmethod
    def _decoder_inputs(self, embedding: ImageEmbedding) -> dict[str, Any]:
        """The cached features as the model's forward takes them instead of `pixel_values`."""

    @abstractmethod
    def _upscale(self, low_res: torch.Tensor, embedding: ImageEmbedding) -> torch.Tensor:
        """Low-res logits `[1, N, h, w]` as logits `[1, N, H, W]` at the original image size."""
