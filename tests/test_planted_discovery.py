"""The method on the planted model (issue 8): discovery from real forward passes recovers exactly the planted heads,
each discovery rule is needed, and the planted heads ground held-out targets while decoys do not."""

import numpy as np
import pytest

from annotator.grounding.grounder import Grounder
from annotator.grounding.heads import select_localization_heads
from annotator.lvlm.engine import LvlmEngine
from annotator.synthetic.planted import PLANTED_HEADS, PLANTED_MODEL_DIR
from annotator.synthetic.scenes import SceneConfig, box_iou, generate_scenes

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DISCOVERY_SEED, DISCOVERY_SCENES = 1, 300
HELD_OUT_SEED, HELD_OUT_SCENES, MIN_TARGET_CELLS = 2, 200, 9.0
HELD_OUT_CONFIG = SceneConfig(aspect=(0.5, 2.0), target_width=(0.38, 0.75))
LOCALIZERS = set(PLANTED_HEADS.localization)



@pytest.fixture(scope="module")
def engine():
    return LvlmEngine.load(PLANTED_MODEL_DIR)


@pytest.fixture(scope="module")
def samples(engine):
    """Last-token image attention of every head, `[L, H, 24, 24]`, for 300 synthetic scenes (33 MB in all)."""
    return [engine.image_attention(s.image, s.expression) for s in generate_scenes(DISCOVERY_SEED, DISCOVERY_SCENES)]


@pytest.fixture(scope="module")
def discovery(samples):
    return select_localization_heads(samples)


@pytest.fixture(scope="module")
def held_out_ious(engine, discovery):
    """Box IoU of the planted heads and of the three most voted decoys on 200 held-out scenes (targets >= 9 cells)."""
    decoys = [head for head in discovery.votes if head not in LOCALIZERS][:3]
    planted = Grounder(engine, PLANTED_HEADS.localization)
    decoy = Grounder(engine, decoys)
    ious = {"planted": [], "decoys": []}
    for index, scene in enumerate(generate_scenes(HELD_OUT_SEED, 10 * HELD_OUT_SCENES, HELD_OUT_CONFIG)):
        if scene.target.width_cells(engine.frame_for(scene.width, scene.height)) < MIN_TARGET_CELLS:
            continue
        for name, grounder in (("planted", planted), ("decoys", decoy)):
            proposal = grounder.propose(scene.image, scene.expression, image_id=index)
            ious[name].append(box_iou(proposal.box_xyxy, scene.target.box_xyxy))
        if len(ious["planted"]) == HELD_OUT_SCENES:
            break
    return {name: np.array(values) for name, values in ious.items()}


def test_discovery_over_300_scenes_returns_exactly_the_planted_heads(discovery):
    assert discovery.num_samples == DISCOVERY_SCENES
    assert set(discovery.heads) == LOCALIZERS
    assert all(discovery.votes[head] == DISCOVERY_SCENES for head in LOCALIZERS)


def test_tau_sits_at_the_top_of_the_low_cluster_with_many_candidates_above(discovery):
    sums = discovery.mean_sums
    high = [PLANTED_HEADS.localization, PLANTED_HEADS.early_decoys, PLANTED_HEADS.scattered_decoys]
    assert max(sums[h] for h in PLANTED_HEADS.low_sum_decoys) < discovery.tau
    assert all(sums[h] > 2 * discovery.tau for group in high for h in group)
    assert len(discovery.candidates) > 15


def test_without_the_layer_rule_the_early_decoy_ties_with_the_planted_heads_and_is_picked(samples):
    selection = select_localization_heads(samples, skip_layers=0)
    (early,) = PLANTED_HEADS.early_decoys
    assert early in selection.heads
    assert selection.votes[early] == DISCOVERY_SCENES


def test_without_tau_the_low_sum_decoys_tie_with_the_planted_heads_and_are_picked(samples):
    selection = select_localization_heads(samples, use_threshold=False)
    assert set(selection.heads) & set(PLANTED_HEADS.low_sum_decoys)
    assert all(selection.votes[head] == DISCOVERY_SCENES for head in PLANTED_HEADS.low_sum_decoys)


def test_without_the_entropy_vote_scattered_decoys_are_picked(samples):
    selection = select_localization_heads(samples, use_entropy=False)
    assert set(selection.heads) <= set(PLANTED_HEADS.scattered_decoys)


def test_planted_heads_ground_held_out_targets_at_least_9_cells_wide(held_out_ious):
    ious = held_out_ious["planted"]
    assert len(ious) == HELD_OUT_SCENES
    assert (ious >= 0.5).mean() >= 0.95
    assert ious.mean() >= 0.75


def test_three_decoy_heads_instead_ground_below_30_percent(held_out_ious):
    assert (held_out_ious["decoys"] >= 0.5).mean() < 0.3
