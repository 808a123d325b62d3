"""Image + expression -> proposals with masks: the one core that the app, the CLI and the Ray pre-labeller call.

`Proposer` runs the `Grounder` (the paper's box from the localization heads) and, when a `Segmenter` is given,
prompts SAM with each attention box (docs/method.md, part 1, "From the box to a mask"). A usable SAM mask replaces the
final box with the mask's tight box (`Proposal.with_mask`); the attention box stays on the proposal. A mask that
SAM returns empty, or that spills far outside its prompt box, is not applied: the proposal stays box-only with its
coarse mask, and `mask_note` says why.
"""

from __future__ import annotations

import dataclasses
from typing import Hashable

import numpy as np

from annotator.grounding.grounder import Grounder, Proposal, RegionProposal
from annotator.segmentation.segment import MaskResult, Segmenter


class Proposer:
    """The grounding core: `propose` for proposals, `prefetch` to prepare an image ahead of the annotator.

    Not thread-safe (the engine is not): call it from one thread, e.g. the app's inference worker.
    """

    def __init__(self, grounder: Grounder, segmenter: Segmenter | None = None) -> None:
        self.grounder = grounder
        self.segmenter = segmenter

    @property
    def has_masks(self) -> bool:
        """Whether proposals get SAM masks (otherwise only the coarse pseudo-mask of the heads' region)."""
        return self.segmenter is not None

    def propose(
        self, image_id: Hashable, image: np.ndarray, expression: str, all_instances: bool = False
    ) -> list[Proposal]:
        """Proposals for `expression` in the image (RGB uint8 H x W x 3), the largest region first.

        One proposal, or with `all_instances` one per region of the combined head map (each with its own box and
        score). Each gets a SAM mask when this proposer has a segmenter.
        """
        proposal = self.grounder.propose(image, expression, image_id=image_id, all_instances=all_instances)
        proposals = [proposal]
        if all_instances and len(proposal.regions) > 1:
            proposals = [_for_region(proposal, region) for region in proposal.regions]
        if self.segmenter is None:
            return proposals
        return [self._with_sam_mask(image_id, image, p) for p in proposals]

    def refine(
        self,
        image_id: Hashable,
        image: np.ndarray,
        box_xyxy: tuple[float, float, float, float],
        points_xy: np.ndarray,
        labels: np.ndarray,
        previous: MaskResult | None = None,
    ) -> MaskResult:
        """A SAM mask from a box plus positive (1) / negative (0) points, continuing from `previous`."""
        if self.segmenter is None:
            raise RuntimeError("refining a mask with points needs a segmentation model")
        return self.segmenter.refine(image_id, image, box_xyxy, points_xy, labels, previous=previous)

    def prefetch(self, image_id: Hashable, image: np.ndarray) -> None:
        """Prepare an image before it is asked about: its LVLM prefix now, its SAM embedding in the background."""
        if self.segmenter is not None:
            self.segmenter.prefetch(image_id, image)
        self.grounder.engine.prepare(image, image_id, self.grounder.heads)

    def forget(self, image_id: Hashable) -> None:
        """Drop a pending SAM prefetch for an image the annotator moved away from."""
        if self.segmenter is not None:
            self.segmenter.cancel_prefetch(image_id)

    def close(self) -> None:
        """Stop the segmenter's background work."""
        if self.segmenter is not None:
            self.segmenter.close()

    def _with_sam_mask(self, image_id: Hashable, image: np.ndarray, proposal: Proposal) -> Proposal:
        result = self.segmenter.segment_box(image_id, image, proposal.attention_box_xyxy)
        if result.empty:
            return dataclasses.replace(proposal, mask_note="SAM returned an empty mask; the box is kept")
        if result.spills:
            return dataclasses.replace(proposal, mask_note="SAM's mask spills far outside the box; the box is kept")
        return proposal.with_mask(result.mask, result.score)


def _for_region(proposal: Proposal, region: RegionProposal) -> Proposal:
    """The proposal narrowed to one of its regions: that region's box, score and coarse mask."""
    return dataclasses.replace(
        proposal, box_xyxy=region.box_xyxy, attention_box_xyxy=region.box_xyxy, score=region.score, regions=(region,)
    )
