"""Image + referring expression -> `Proposal`: the paper's box from a few localization heads (docs/method.md, part 1).

The engine gives the k heads' last-token maps on the grid; `maps.combine_head_maps` smooths and sums them;
`maps.find_regions` ranks the foreground components' convex hulls by area; the largest hull's tight bounds are the
box, mapped to original pixels through the image's `ImageFrame` (padding cut away).

Memory: a proposal keeps only grid-sized arrays. Everything at the original image's resolution (`heatmap`,
`coarse_mask`, each region's `coarse_mask`) is computed on first access and then kept: an 8000 x 6000 heatmap is
192 MB of float32, which a batch run that only reads boxes never pays for.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from time import perf_counter
from typing import TYPE_CHECKING, Hashable, Sequence

import numpy as np

from annotator.grounding.frame import ImageFrame
from annotator.grounding.maps import Region, combine_head_maps, find_regions

if TYPE_CHECKING:
    from annotator.lvlm.engine import GroundingTiming, LvlmEngine

Head = tuple[int, int]
BoxXYXY = tuple[float, float, float, float]


@dataclass(frozen=True, eq=False)
class RegionProposal:
    """One foreground region of the combined map, in original pixels.

    `box_xyxy`: the tight bounds of its convex hull, in original-image pixels (x0, y0, x1, y1; pixel x covers
    [x, x + 1)), clipped to the image. `score`: the fraction of the combined map's mass on the region's cells.
    """

    region: Region = dataclasses.field(repr=False)
    frame: ImageFrame = dataclasses.field(repr=False)
    box_xyxy: BoxXYXY
    score: float

    @cached_property
    def coarse_mask(self) -> np.ndarray:
        """Boolean `height` x `width` mask of the pixels inside the region's convex hull (the paper's pseudo-mask)."""
        return self.frame.convex_polygon_mask(self.region.hull)


@dataclass(frozen=True, eq=False)
class Proposal:
    """What the localization heads propose for one image and expression.

    `box_xyxy`: the box the annotator sees, original-image pixels (x0, y0, x1, y1), float; the mask's tight box
    once a mask is set with `with_mask`, else `attention_box_xyxy`. `attention_box_xyxy`: the paper's box from the
    heads (the whole image when the combined map is flat and no region stands out). `grid_map`: the combined map
    `[grid_h, grid_w]` (sum of the smoothed head maps, float64). `head_maps`: the heads' raw maps `[k, grid_h,
    grid_w]` float32, in the order of `heads`. `score`: the fraction of the combined map's mass on the chosen
    region's cells, in [0, 1] (0 when there is no region). `regions`: the chosen region first, then (with
    `all_instances`) every other region by hull area. `mask` / `mask_score`: a segmentation mask (bool H x W) and
    its predicted quality, set later by `with_mask`; `mask_note`: why a segmentation mask was not applied (None
    when it was, or when none was asked for). `timing`: milliseconds of the call.
    """

    box_xyxy: BoxXYXY
    attention_box_xyxy: BoxXYXY
    grid_map: np.ndarray = dataclasses.field(repr=False)
    head_maps: np.ndarray = dataclasses.field(repr=False)
    score: float
    heads: tuple[Head, ...]
    regions: tuple[RegionProposal, ...] = dataclasses.field(repr=False)
    frame: ImageFrame
    image_id: Hashable | None
    expression: str
    timing: "GroundingTiming"
    mask: np.ndarray | None = dataclasses.field(default=None, repr=False)
    mask_score: float | None = None
    mask_note: str | None = None

    @cached_property
    def heatmap(self) -> np.ndarray:
        """The combined map in original-image pixels, float32 `height` x `width`, padding cut (computed lazily)."""
        return self.frame.grid_map_to_pixels(self.grid_map, "linear")

    @cached_property
    def coarse_mask(self) -> np.ndarray:
        """The chosen region's hull in original pixels (bool `height` x `width`; all False without a region).

        The paper's pseudo-mask, shown as a coarse mask when no segmentation model is installed.
        """
        if not self.regions:
            return np.zeros((self.frame.height, self.frame.width), dtype=bool)
        return self.regions[0].coarse_mask

    def with_mask(self, mask: np.ndarray, mask_score: float | None) -> "Proposal":
        """A copy with `mask` set and `box_xyxy` the mask's tight box; an empty mask leaves the box as it was."""
        m = np.asarray(mask, dtype=bool)
        if m.shape != (self.frame.height, self.frame.width):
            raise ValueError(f"mask is {m.shape}, image is {(self.frame.height, self.frame.width)}")
        box = self.box_xyxy
        if m.any():
            columns = np.flatnonzero(m.any(axis=0))
            rows = np.flatnonzero(m.any(axis=1))
            box = (float(columns[0]), float(rows[0]), float(columns[-1] + 1), float(rows[-1] + 1))
        return dataclasses.replace(self, mask=m, mask_score=mask_score, box_xyxy=box)


class Grounder:
    """Turns an engine's localization-head maps into a `Proposal` (the paper's inference recipe).

    A region that lies wholly in the padding around a non-square image names nothing in the image: it is passed
    over, and the largest region that covers image pixels is chosen.

    `heads`: the localization heads, 0-based (layer, head). `ksize`, `sigma`: the Gaussian smoothing of each map.
    """

    def __init__(self, engine: "LvlmEngine", heads: Sequence[Head], *, ksize: int = 7, sigma: float = 1.0) -> None:
        self.engine = engine
        self.heads = tuple((int(layer), int(head)) for layer, head in heads)
        if not self.heads:
            raise ValueError("a grounder needs at least one localization head")
        for layer, head in self.heads:
            if not 0 <= layer < engine.num_layers or not 0 <= head < engine.num_heads:
                raise ValueError(
                    f"localization head ({layer}, {head}) is outside {engine.model_id}: {engine.num_layers} text "
                    f"layers loaded, {engine.num_heads} heads each"
                )
        self.ksize = ksize
        self.sigma = sigma

    def propose(
        self,
        image_rgb_uint8: np.ndarray,
        expression: str,
        image_id: Hashable | None = None,
        all_instances: bool = False,
    ) -> Proposal:
        """Ground `expression` in the image (RGB uint8 H x W x 3). `image_id` reuses the image's cached prefix.

        `all_instances`: keep every region in `regions` (for labelling all instances), not only the chosen one.
        """
        start = perf_counter()
        attention = self.engine.head_attention(image_rgb_uint8, expression, heads=self.heads, image_id=image_id)
        frame = attention.frame
        combined = combine_head_maps(attention.maps, ksize=self.ksize, sigma=self.sigma)
        region_proposals = tuple(
            RegionProposal(region=r, frame=frame, box_xyxy=box, score=r.mass_fraction)
            for r in find_regions(combined)
            if _has_area(box := frame.box_to_pixels(r.box))
        )
        if not all_instances:
            region_proposals = region_proposals[:1]
        if region_proposals:
            box, score = region_proposals[0].box_xyxy, region_proposals[0].score
        else:
            box, score = (0.0, 0.0, float(frame.width), float(frame.height)), 0.0
        timing = dataclasses.replace(attention.timing, total_ms=(perf_counter() - start) * 1000.0)
        return Proposal(
            box_xyxy=box,
            attention_box_xyxy=box,
            grid_map=combined,
            head_maps=attention.maps,
            score=score,
            heads=self.heads,
            regions=region_proposals,
            frame=frame,
            image_id=image_id,
            expression=expression.strip(),
            timing=timing,
        )


def _has_area(box_xyxy: BoxXYXY) -> bool:
    """Whether a box clipped to the image still covers some of it (a region wholly in the padding does not)."""
    x0, y0, x1, y1 = box_xyxy
    return x1 > x0 and y1 > y0
