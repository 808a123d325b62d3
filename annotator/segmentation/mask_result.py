"""A mask model's answer to one prompt: the mask in original-image pixels, its tight box and the spill/empty rules.

Every back end's masks go through `MaskResult.from_mask`, so the box the user sees is the mask's tight box and
the same spill and empty rules apply to SAM, SAM 2.1 and SAM-HQ alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BoxXyxy = tuple[float, float, float, float]

DEFAULT_SPILL_RATIO = 0.5
"""A mask spills when its area outside the prompt box exceeds this fraction of the box's area."""


@dataclass(frozen=True, eq=False)
class MaskResult:
    """A mask model's best mask for one prompt, in original-image pixels.

    Pixel (x, y) covers [x, x+1) x [y, y+1), so boxes are continuous `(x0, y0, x1, y1)` with exclusive far edges.
    - `mask`: bool `[H, W]`, the image's size.
    - `score`: the model's predicted IoU of this mask (the best of its candidates).
    - `low_res_logits`: float32 `[1, 4g, 4g]` (g = the embedding grid; `[1, 256, 256]` for the released SAM,
      SAM 2.1 and SAM-HQ checkpoints), the mask's logits before upscaling, to pass back when refining.
    - `box_xyxy`: the mask's tight box in pixels, or None when the mask is empty.
    - `prompt_box_xyxy`: the box the model was prompted with, in pixels, or None for a points-only prompt.
    - `empty`: the mask has no pixel.
    - `spills`: the mask's area outside the prompt box exceeds `spill_ratio` times the box's area (the box
      clipped to the image; a pixel is inside when its centre is). Always False without a prompt box.
    Empty and spilling masks are reported, not dropped: the caller decides whether the box-only annotation stands.
    """

    mask: np.ndarray
    score: float
    low_res_logits: np.ndarray
    box_xyxy: BoxXyxy | None
    prompt_box_xyxy: BoxXyxy | None
    empty: bool
    spills: bool

    @classmethod
    def from_mask(
        cls,
        mask: np.ndarray,
        score: float,
        low_res_logits: np.ndarray,
        prompt_box_xyxy: Sequence[float] | None,
        spill_ratio: float = DEFAULT_SPILL_RATIO,
    ) -> "MaskResult":
        """Fill in the tight box and the `empty` / `spills` flags for `mask`."""
        mask = np.asarray(mask, dtype=bool)
        ys, xs = np.nonzero(mask)
        empty = xs.size == 0
        box = None if empty else (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        prompt = None if prompt_box_xyxy is None else tuple(float(v) for v in prompt_box_xyxy)
        spills = prompt is not None and _area_outside(mask, prompt) > spill_ratio * _clipped_area(prompt, mask.shape)
        return cls(
            mask=mask,
            score=float(score),
            low_res_logits=np.asarray(low_res_logits, dtype=np.float32),
            box_xyxy=box,
            prompt_box_xyxy=prompt,
            empty=empty,
            spills=bool(spills),
        )


def _area_outside(mask: np.ndarray, box: BoxXyxy) -> int:
    """Mask pixels whose centre lies outside `box`."""
    x0, y0, x1, y1 = box
    centres_x = np.arange(mask.shape[1]) + 0.5
    centres_y = np.arange(mask.shape[0]) + 0.5
    inside_x = (centres_x >= x0) & (centres_x < x1)
    inside_y = (centres_y >= y0) & (centres_y < y1)
    return int(mask.sum() - mask[np.ix_(inside_y, inside_x)].sum())


def _clipped_area(box: BoxXyxy, shape: tuple[int, int]) -> float:
    x0, y0, x1, y1 = box
    height, width = shape
    return max(0.0, min(x1, width) - max(x0, 0.0)) * max(0.0, min(y1, height) - max(y0, 0.0))
