"""What a mask model back end gives `Segmenter`: an image embedding once per image, then candidates per prompt.

A back end knows its model only (segment-anything SAM, SAM 2.1 or SAM-HQ through transformers), never the app:
`embed` runs the image encoder, `decode` runs the prompt encoder and mask decoder on a cached embedding and
returns the candidate masks already upscaled to the original image. Choosing the best candidate, the tight box
and the spill/empty rules are `Segmenter`'s, the same for every back end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class ImageEmbedding:
    """An image encoder's output: `features` on the model's device (float32, in the back end's own order), the
    original image size and the size the image was resized to before padding, both (h, w) in pixels."""

    features: tuple[torch.Tensor, ...]
    original_size: tuple[int, int]
    input_size: tuple[int, int]


@dataclass(frozen=True)
class Prompt:
    """One prompt in original-image pixels: a box `[4]` (x0, y0, x1, y1), points `[N, 2]` (x, y) with labels `[N]`
    (1 positive, 0 negative), a previous mask's low-res logits `[1, h, w]`; `multimask` asks for the model's three
    candidates instead of its single-mask output."""

    box: np.ndarray | None
    points: np.ndarray | None
    labels: np.ndarray | None
    mask_input: np.ndarray | None
    multimask: bool


@dataclass(frozen=True)
class Candidates:
    """A decode's masks: bool `[N, H, W]` at the image's size, predicted IoUs `[N]`, low-res logits `[N, h, w]`."""

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray


class MaskBackend(Protocol):
    """A mask model behind `Segmenter`. `embed` and `decode` may run on several threads at once (the model is only
    read); `label` names the model in the user's words ("SAM 2.1 tiny")."""

    label: str

    @property
    def device(self) -> torch.device: ...

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """Run the image encoder on an RGB uint8 `[H, W, 3]` image."""
        ...

    def decode(self, embedding: ImageEmbedding, prompt: Prompt) -> Candidates:
        """Run only the prompt encoder and mask decoder on a cached embedding."""
        ...


def to_input_frame(coords: np.ndarray, embedding: ImageEmbedding) -> np.ndarray:
    """Pixel coordinates `[..., 2]` (x, y) of the original image scaled into the resized model input."""
    (height, width), (input_height, input_width) = embedding.original_size, embedding.input_size
    scale = np.array([input_width / width, input_height / height])
    return np.asarray(coords, dtype=np.float64) * scale
