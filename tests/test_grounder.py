"""From head maps to a Proposal: the box in original pixels, score, regions, masks, and the real engine path."""

import numpy as np
import pytest

from annotator.grounding.frame import ImageFrame
from annotator.grounding.grounder import Grounder
from annotator.lvlm.engine import GroundingTiming, HeadAttention
from tests.tiny_llava import SPEC_GQA, random_image, tiny_engine

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FixedMapsEngine:
    """An engine double whose heads all see the same hand-made grid map (6 x 6 grid, 60 px model input)."""

    num_layers, num_heads, model_id = 4, 4, "fixed-maps"

    def __init__(self, grid_map):
        self.grid_map = np.asarray(grid_map, dtype=np.float32)

    def head_attention(self, image, expression, heads=None, image_id=None):
        frame = ImageFrame.for_image(image.shape[1], image.shape[0], 6, 60)
        maps = np.repeat(self.grid_map[None], len(heads), axis=0)
        return HeadAttention(maps=maps, heads=tuple(heads), frame=frame, timing=GroundingTiming(1.0, 2.0, 3.0, False))


def block_map(*blocks, background=0.0):
    grid = np.full((6, 6), background)
    for r0, r1, c0, c1 in blocks:
        grid[r0:r1, c0:c1] = 1.0
    return grid


def propose(grid_map, width=300, height=150, **kwargs):
    grounder = Grounder(FixedMapsEngine(grid_map), heads=[(2, 1), (3, 0)], sigma=0.0)
    return grounder.propose(np.zeros((height, width, 3), dtype=np.uint8), " the cup ", **kwargs)


def test_a_grid_box_maps_back_to_the_right_pixels_of_a_wide_image():
    # 300 x 150 on a 300 square: 50 px per cell, the image starts 75 px down. Cells rows 2-3, columns 1-2.
    proposal = propose(block_map((2, 4, 1, 3)))
    assert proposal.box_xyxy == (50.0, 25.0, 150.0, 125.0)
    assert proposal.attention_box_xyxy == proposal.box_xyxy


def test_the_padding_is_cut_from_the_box():
    # Rows 1-2 cover 50..150 px of the square, i.e. -25..75 px of the image.
    proposal = propose(block_map((1, 3, 4, 6)))
    assert proposal.box_xyxy == (200.0, 0.0, 300.0, 75.0)


def test_a_larger_region_wholly_in_the_padding_is_passed_over():
    # Row 0 covers -75..-25 px of the 150 px tall image: a 6-cell region there names nothing in the image.
    proposal = propose(block_map((0, 1, 0, 6), (2, 4, 1, 3)), all_instances=True)
    assert proposal.box_xyxy == (50.0, 25.0, 150.0, 125.0)
    assert len(proposal.regions) == 1


def test_the_score_is_the_share_of_the_map_on_the_chosen_region():
    proposal = propose(block_map((2, 4, 1, 3), background=0.01))
    assert proposal.score == pytest.approx(2 * 4 / (2 * 4 + 2 * 32 * 0.01))


def test_the_largest_hull_is_chosen_and_all_instances_lists_every_region():
    grid = block_map((0, 2, 0, 2), (3, 6, 3, 6))
    one = propose(grid, width=300, height=300)
    every = propose(grid, width=300, height=300, all_instances=True)
    assert one.box_xyxy == (150.0, 150.0, 300.0, 300.0)
    assert [r.box_xyxy for r in one.regions] == [(150.0, 150.0, 300.0, 300.0)]
    assert [r.box_xyxy for r in every.regions] == [(150.0, 150.0, 300.0, 300.0), (0.0, 0.0, 100.0, 100.0)]
    assert every.regions[1].score == pytest.approx(4 / 13)


def test_the_coarse_mask_is_the_hull_in_original_pixels():
    proposal = propose(block_map((2, 4, 1, 3)))
    expected = np.zeros((150, 300), dtype=bool)
    expected[25:125, 50:150] = True
    np.testing.assert_array_equal(proposal.coarse_mask, expected)


def test_the_heatmap_is_computed_on_first_use_at_the_image_size():
    proposal = propose(block_map((2, 4, 1, 3)))
    assert "heatmap" not in proposal.__dict__
    heatmap = proposal.heatmap
    assert heatmap.shape == (150, 300) and heatmap.dtype == np.float32
    assert heatmap[75, 100] == pytest.approx(2.0) and heatmap[5, 280] == pytest.approx(0.0)


def test_a_flat_map_proposes_the_whole_image_with_score_zero():
    proposal = propose(np.ones((6, 6)))
    assert proposal.box_xyxy == (0.0, 0.0, 300.0, 150.0)
    assert proposal.score == 0.0 and proposal.regions == ()
    assert not proposal.coarse_mask.any()


def test_with_mask_takes_the_masks_tight_box_and_keeps_the_attention_box():
    proposal = propose(block_map((2, 4, 1, 3)))
    mask = np.zeros((150, 300), dtype=bool)
    mask[30:40, 60:90] = True
    masked = proposal.with_mask(mask, 0.9)
    assert masked.box_xyxy == (60.0, 30.0, 90.0, 40.0)
    assert masked.attention_box_xyxy == (50.0, 25.0, 150.0, 125.0)
    assert masked.mask_score == 0.9 and masked.mask is not None
    assert proposal.mask is None and proposal.box_xyxy == (50.0, 25.0, 150.0, 125.0)


def test_an_empty_mask_leaves_the_box_alone():
    proposal = propose(block_map((2, 4, 1, 3)))
    masked = proposal.with_mask(np.zeros((150, 300), dtype=bool), 0.1)
    assert masked.box_xyxy == proposal.box_xyxy and not masked.mask.any()


def test_a_mask_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="mask is"):
        propose(block_map((2, 4, 1, 3))).with_mask(np.zeros((10, 10), dtype=bool), 0.5)


def test_the_proposal_carries_heads_expression_and_timing():
    proposal = propose(block_map((2, 4, 1, 3)), image_id="img-7")
    assert proposal.heads == ((2, 1), (3, 0))
    assert proposal.expression == "the cup" and proposal.image_id == "img-7"
    assert proposal.head_maps.shape == (2, 6, 6) and proposal.grid_map.shape == (6, 6)
    assert proposal.timing.prefix_ms == 1.0 and proposal.timing.expression_ms == 2.0
    assert proposal.timing.total_ms > 0 and proposal.mask is None and proposal.mask_score is None


def test_a_head_outside_the_model_is_refused_when_the_grounder_is_built():
    with pytest.raises(ValueError, match=r"head \(4, 0\) is outside fixed-maps"):
        Grounder(FixedMapsEngine(np.zeros((6, 6))), heads=[(4, 0)])


def test_the_real_engine_proposes_from_its_head_maps_with_a_cached_prefix():
    engine = tiny_engine(SPEC_GQA)
    grounder = Grounder(engine, heads=[(1, 0), (2, 3)])
    image = random_image(40, 90)
    first = grounder.propose(image, "the red cup", image_id="img")
    second = grounder.propose(image, "a small dog", image_id="img")
    np.testing.assert_allclose(
        second.head_maps, engine.image_attention(image, "a small dog", heads=[(1, 0), (2, 3)]), rtol=0, atol=1e-5
    )
    assert not first.timing.prefix_cached and second.timing.prefix_cached
    x0, y0, x1, y1 = second.box_xyxy
    assert 0 <= x0 < x1 <= 90 and 0 <= y0 < y1 <= 40
    assert second.heatmap.shape == (40, 90) and second.coarse_mask.shape == (40, 90)
