"""Proposer: the core the app and the CLI share (grounder boxes, SAM masks, all instances, prefetch)."""

from concurrent.futures import Future

import numpy as np
import pytest

from annotator.grounding.frame import ImageFrame
from annotator.grounding.grounder import Grounder
from annotator.lvlm.engine import GroundingTiming, HeadAttention
from annotator.proposer import Proposer
from annotator.segmentation.segment import MaskResult, Segmenter
from tests.tiny_llava import random_image, tiny_engine
from tests.tiny_sam import build_tiny_sam

GRID = 12


class MapEngine:
    """An engine whose heads see two blobs: a large one (rows 2-7, cols 1-6) and a small one (rows 9-10, 9-10)."""

    num_layers, num_heads, model_id = 3, 2, "map-engine"

    def __init__(self) -> None:
        self.prepared: list[object] = []

    def head_attention(self, image, expression, heads=None, image_id=None) -> HeadAttention:
        grid = np.zeros((GRID, GRID), dtype=np.float32)
        grid[2:8, 1:7] = 1.0
        grid[9:11, 9:11] = 1.0
        frame = ImageFrame.for_image(image.shape[1], image.shape[0], GRID, 336)
        return HeadAttention(
            maps=np.stack([grid] * len(heads)), heads=tuple(heads), frame=frame, timing=GroundingTiming(1.0, 1.0, 2.0, False)
        )

    def prepare(self, image, image_id, heads=None) -> bool:
        self.prepared.append(image_id)
        return False


class BoxSegmenter:
    """A segmenter whose mask is a fixed rectangle (or nothing), recording its prompts."""

    def __init__(self, rect: tuple[int, int, int, int] | None) -> None:
        self.rect = rect
        self.prompts: list[tuple[object, tuple[float, ...]]] = []
        self.prefetched: list[object] = []

    def segment_box(self, image_id, image, box_xyxy) -> MaskResult:
        self.prompts.append((image_id, tuple(box_xyxy)))
        mask = np.zeros(image.shape[:2], dtype=bool)
        if self.rect is not None:
            x0, y0, x1, y1 = self.rect
            mask[y0:y1, x0:x1] = True
        return MaskResult.from_mask(mask, 0.9, np.zeros((1, 4, 4), np.float32), box_xyxy)

    def prefetch(self, image_id, image) -> Future:
        self.prefetched.append(image_id)
        done: Future = Future()
        done.set_result(None)
        return done


def _image() -> np.ndarray:
    return np.zeros((120, 120, 3), dtype=np.uint8)  # 10 px per grid cell, no padding


def _raw_grid_box_pixels() -> tuple[float, float, float, float]:
    grounder = Grounder(MapEngine(), [(1, 0), (2, 1)])
    return grounder.propose(_image(), "the thing").box_xyxy


def test_without_a_segmenter_a_proposal_is_the_papers_box_with_a_coarse_mask():
    proposer = Proposer(Grounder(MapEngine(), [(1, 0), (2, 1)]))
    (proposal,) = proposer.propose("img", _image(), "the thing")
    assert proposal.mask is None and not proposer.has_masks
    assert proposal.box_xyxy == proposal.attention_box_xyxy == _raw_grid_box_pixels()
    assert proposal.coarse_mask.shape == (120, 120) and proposal.coarse_mask.any()


def test_a_sam_mask_replaces_the_box_with_its_tight_box_and_keeps_the_attention_box():
    segmenter = BoxSegmenter(rect=(20, 30, 50, 70))
    proposer = Proposer(Grounder(MapEngine(), [(1, 0)]), segmenter)
    (proposal,) = proposer.propose("img", _image(), "the thing")
    assert proposal.box_xyxy == (20.0, 30.0, 50.0, 70.0)
    assert proposal.attention_box_xyxy == _raw_grid_box_pixels()
    assert segmenter.prompts == [("img", proposal.attention_box_xyxy)]
    assert proposal.mask_score == pytest.approx(0.9) and proposal.mask_note is None


def test_an_empty_sam_mask_leaves_a_box_only_proposal_that_says_why():
    proposer = Proposer(Grounder(MapEngine(), [(1, 0)]), BoxSegmenter(rect=None))
    (proposal,) = proposer.propose("img", _image(), "the thing")
    assert proposal.mask is None
    assert proposal.box_xyxy == proposal.attention_box_xyxy
    assert "empty" in proposal.mask_note


def test_a_mask_spilling_far_outside_its_box_is_not_applied():
    proposer = Proposer(Grounder(MapEngine(), [(1, 0)]), BoxSegmenter(rect=(0, 0, 120, 120)))
    (proposal,) = proposer.propose("img", _image(), "the thing")
    assert proposal.mask is None and "spills" in proposal.mask_note


def test_all_instances_gives_one_proposal_per_region_each_with_its_own_box_and_mask_prompt():
    segmenter = BoxSegmenter(rect=(20, 30, 50, 70))
    proposer = Proposer(Grounder(MapEngine(), [(1, 0)], sigma=0), segmenter)
    proposals = proposer.propose("img", _image(), "all the things", all_instances=True)
    # sigma 0: the regions are the blobs themselves, 10 px per cell.
    assert [p.attention_box_xyxy for p in proposals] == [(10.0, 20.0, 70.0, 80.0), (90.0, 90.0, 110.0, 110.0)]
    assert [box for _, box in segmenter.prompts] == [p.attention_box_xyxy for p in proposals]
    assert proposals[0].score == pytest.approx(36 / 40) and proposals[1].score == pytest.approx(4 / 40)
    assert all(len(p.regions) == 1 for p in proposals)


def test_prefetch_prepares_the_lvlm_prefix_and_the_sam_embedding():
    engine, segmenter = MapEngine(), BoxSegmenter(rect=None)
    Proposer(Grounder(engine, [(1, 0)]), segmenter).prefetch("next", _image())
    assert engine.prepared == ["next"] and segmenter.prefetched == ["next"]


def test_a_prefetched_image_runs_its_first_expression_from_the_cached_prefix():
    engine = tiny_engine()
    proposer = Proposer(Grounder(engine, [(2, 1), (3, 0)]))
    image = random_image(40, 70, seed=3)
    proposer.prefetch("img", image)
    (first,) = proposer.propose("img", image, "the red one")
    assert first.timing.prefix_cached
    (uncached,) = Proposer(Grounder(tiny_engine(), [(2, 1), (3, 0)])).propose(None, image, "the red one")
    assert np.allclose(first.head_maps, uncached.head_maps, atol=1e-4)


def test_the_real_tiny_sam_gives_a_mask_of_the_image_size_or_a_reason():
    with Segmenter(build_tiny_sam()) as segmenter:
        proposer = Proposer(Grounder(tiny_engine(), [(3, 1)]), segmenter)
        (proposal,) = proposer.propose("img", random_image(48, 80, seed=1), "the blue square")
    assert (proposal.mask is not None and proposal.mask.shape == (48, 80)) or proposal.mask_note


class PaddingEngine(MapEngine):
    """Heads that see a large blob in the padding above a wide image and a small one inside the image."""

    def head_attention(self, image, expression, heads=None, image_id=None) -> HeadAttention:
        grid = np.zeros((GRID, GRID), dtype=np.float32)
        grid[0:2, 0:8] = 1.0  # rows 0-1: above the image (a 120 x 60 image fills rows 3-8 of the 12-cell grid)
        grid[5:7, 9:11] = 1.0
        frame = ImageFrame.for_image(image.shape[1], image.shape[0], GRID, 336)
        return HeadAttention(
            maps=np.stack([grid] * len(heads)), heads=tuple(heads), frame=frame, timing=GroundingTiming(1.0, 1.0, 2.0, False)
        )


def test_a_region_wholly_in_the_padding_is_passed_over_for_one_inside_the_image():
    wide = np.zeros((60, 120, 3), dtype=np.uint8)  # offset_y = 30 px = 3 cells
    (proposal,) = Proposer(Grounder(PaddingEngine(), [(1, 0)], sigma=0)).propose("img", wide, "the thing")
    assert proposal.box_xyxy == (90.0, 20.0, 110.0, 40.0)  # cells rows 5-6, cols 9-10, 10 px each, minus 30 px
    assert proposal.score == pytest.approx(4 / 20)
