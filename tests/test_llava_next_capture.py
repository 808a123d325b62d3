"""LLaVA-NeXT and LLaVA-OneVision through the engine: the captured last-token attention equals the model's own eager
forward head for head (fresh and from a cached prefix, all heads or a few, on the stitched or the base grid), the
layout counts the image tokens the processor expands, and checkpoints whose tiles are no grids are refused."""

import copy
import itertools

import numpy as np
import pytest
import torch

from tests.tiny_llava import random_image
from tests.tiny_llava_next import NEXT, ONEVISION, eager_anyres_attention, tiny_anyres, tiny_processor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPECS = {"llava-next": NEXT, "llava-onevision": ONEVISION}
SIZES = {"wide": (50, 130), "tall": (170, 60)}  # (height, width)
EXPRESSIONS = ("the red cup on the left", "a dog", "the small cat with the big man")


@pytest.fixture(scope="module", params=SPECS.values(), ids=SPECS.keys())
def built(request):
    """(engine, reference model): the engine's model and a copy of it for the eager reference."""
    from annotator.lvlm.engine import LvlmEngine

    with torch.inference_mode(False):
        model = tiny_anyres(request.param)
        reference = copy.deepcopy(model)
    return LvlmEngine(model, tiny_processor(request.param)), reference


def reference_rows(built, image, expression):
    """The eager forward's last-token attention over all image tokens, `[L, H, num_image_tokens]`."""
    engine, reference = built
    inputs, _ = engine.pixel_values(image)
    prompt = engine.prompt(expression, (image.shape[1], image.shape[0]))
    return eager_anyres_attention(copy.deepcopy(reference), prompt, inputs)


def reference_maps(built, image, expression):
    engine, _ = built
    return engine.layout_for(image.shape[1], image.shape[0]).grid_map(reference_rows(built, image, expression))


@pytest.mark.parametrize("height, width", SIZES.values(), ids=SIZES.keys())
def test_every_layer_and_head_matches_the_eager_forward_on_the_stitched_grid(built, height, width):
    engine, _ = built
    image = random_image(height, width, seed=height + width)
    layout = engine.layout_for(width, height)
    ours = engine.image_attention(image, EXPRESSIONS[0])
    assert ours.shape == (engine.num_layers, engine.num_heads, *layout.grids[1].frame.grid_hw)
    assert layout.grid_hw[1] > layout.grid_hw[0] if width > height else layout.grid_hw[0] > layout.grid_hw[1]
    np.testing.assert_allclose(ours, reference_maps(built, image, EXPRESSIONS[0]), rtol=0, atol=1e-5)


def test_the_base_grid_option_reads_the_base_tokens_of_the_same_forward(built, monkeypatch):
    engine, _ = built
    image = random_image(50, 130, seed=2)
    monkeypatch.setattr(engine.family, "anyres_grid", "base")
    ours = engine.image_attention(image, EXPRESSIONS[1])
    n = engine.family.geometry.n
    expected = reference_rows(built, image, EXPRESSIONS[1])[..., : n * n].reshape(*ours.shape[:2], n, n)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


def test_expressions_against_a_cached_prefix_match_the_eager_forward_in_every_order(built):
    engine, _ = built
    image = random_image(170, 60, seed=9)
    expected = {expression: reference_maps(built, image, expression) for expression in EXPRESSIONS[:2]}
    for order, expressions in enumerate(itertools.permutations(EXPRESSIONS[:2])):
        for i, expression in enumerate(expressions):
            result = engine.head_attention(image, expression, image_id=("orders", order))
            assert result.timing.prefix_cached == (i > 0)
            ours = result.maps.reshape(expected[expression].shape)
            np.testing.assert_allclose(ours, expected[expression], rtol=0, atol=1e-5)


def test_a_head_subset_from_a_cached_prefix_matches_the_same_heads_of_the_eager_forward(built):
    engine, _ = built
    image = random_image(50, 130, seed=3)
    heads = [(engine.num_layers - 1, 1), (1, 0), (0, engine.num_heads - 1)]
    expected = reference_maps(built, image, EXPRESSIONS[2])
    engine.prepare(image, "subset", heads=[(1, 0)])
    ours = engine.image_attention(image, EXPRESSIONS[2], heads=heads, image_id="subset")
    np.testing.assert_allclose(ours, np.stack([expected[l, h] for l, h in heads]), rtol=0, atol=1e-5)


def test_the_reference_maps_are_far_from_uniform_so_the_comparison_means_something(built):
    expected = reference_maps(built, random_image(50, 130, seed=11), EXPRESSIONS[1])
    per_head = expected.reshape(*expected.shape[:2], -1)
    assert (per_head.max(axis=-1) > 2 * per_head.mean(axis=-1)).mean() > 0.5


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_the_layout_counts_the_image_tokens_the_real_processor_expands(spec):
    processor = tiny_processor(spec)
    family = _family(spec)
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}])
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    for width, height in [(130, 50), (60, 170), (160, 150), (40, 40), (500, 90), (90, 700), (333, 331), (61, 59)]:
        ids = processor(images=random_image(height, width), text=text, return_tensors="pt")["input_ids"]
        assert family.layout_for(width, height).num_tokens == int((ids == image_id).sum()), (width, height)


def _family(spec, **engine_kwargs):
    from annotator.lvlm.engine import LvlmEngine

    return LvlmEngine(tiny_anyres(spec), tiny_processor(spec), **engine_kwargs).family


def test_the_anyres_grid_option_is_checked_and_chooses_the_grid_maps_are_read_from():
    family = _family(NEXT)
    assert family.layout_for(130, 50).map_grid == 1
    family.anyres_grid = "base"
    assert family.layout_for(130, 50).grid_hw == (4, 4)
    with pytest.raises(ValueError, match="anyres_grid must be one of"):
        family.anyres_grid = "tiles"


def test_the_engine_takes_the_anyres_grid_option_and_other_families_refuse_it():
    from annotator.lvlm.engine import LvlmEngine
    from tests.tiny_llava import tiny_llava
    from tests.tiny_llava import tiny_processor as llava_processor

    engine = LvlmEngine(tiny_anyres(NEXT), tiny_processor(NEXT), anyres_grid="base")
    assert engine.layout_for(130, 50).grid_hw == (4, 4)
    with pytest.raises(ValueError, match="anyres_grid applies to LLaVA-NeXT and LLaVA-OneVision only"):
        LvlmEngine(tiny_llava(), llava_processor(), anyres_grid="base")


@pytest.mark.parametrize("spec, strategy", [(NEXT, "full"), (ONEVISION, "default")], ids=["llava-next", "onevision"])
def test_a_feature_strategy_that_breaks_the_tile_grids_is_refused_in_one_line(spec, strategy):
    from annotator.errors import ModelUnavailable
    from annotator.lvlm.engine import LvlmEngine

    model = tiny_anyres(spec)
    model.config.vision_feature_select_strategy = strategy
    with pytest.raises(ModelUnavailable, match=f"vision_feature_select_strategy '{strategy}'"):
        LvlmEngine(model, tiny_processor(spec))


def test_a_processor_of_other_canvases_is_refused_in_one_line():
    from annotator.errors import ModelUnavailable
    from annotator.lvlm.engine import LvlmEngine

    processor = tiny_processor(NEXT)
    processor.image_processor.image_grid_pinpoints = [[56, 56]]
    with pytest.raises(ModelUnavailable, match="the processor belongs to another checkpoint"):
        LvlmEngine(tiny_anyres(NEXT), processor)
