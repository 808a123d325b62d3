"""Qwen2-VL and Qwen2.5-VL through the engine: the captured last-token attention equals the model's own eager
forward (`output_attentions=True`, its own M-RoPE positions) head for head, fresh and from a cached prefix."""

import copy
import itertools

import numpy as np
import pytest
import torch

from tests.tiny_llava import random_image
from tests.tiny_qwen import QWEN2_5_VL, QWEN2_VL, eager_qwen_attention, tiny_processor, tiny_qwen

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPECS = {"qwen2-vl": QWEN2_VL, "qwen2.5-vl": QWEN2_5_VL}
SIZES = {"square": (112, 112), "wide-2to1": (112, 224), "tall-1to3": (252, 84)}
EXPRESSIONS = ("the red cup on the left", "a dog", "the small cat with the big man")


@pytest.fixture(scope="module", params=SPECS.values(), ids=SPECS.keys())
def built(request):
    """(engine, reference model): the engine's model and a copy of it for the eager reference."""
    from annotator.lvlm.engine import LvlmEngine

    with torch.inference_mode(False):
        model = tiny_qwen(request.param)
        reference = copy.deepcopy(model)
    return LvlmEngine(model, tiny_processor(request.param)), reference


def reference_maps(built, image, expression):
    engine, reference = built
    inputs, frame = engine.pixel_values(image)
    prompt = engine.prompt(expression, (image.shape[1], image.shape[0]))
    return eager_qwen_attention(copy.deepcopy(reference), prompt, inputs, frame.grid_hw)


@pytest.mark.parametrize("height, width", SIZES.values(), ids=SIZES.keys())
def test_every_layer_and_head_matches_the_eager_forward(built, height, width):
    engine, _ = built
    image = random_image(height, width, seed=height + width)
    ours = engine.image_attention(image, EXPRESSIONS[0])
    expected = reference_maps(built, image, EXPRESSIONS[0])
    assert ours.shape == (engine.num_layers, engine.num_heads, height // 28, width // 28)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("height, width", SIZES.values(), ids=SIZES.keys())
def test_expressions_against_a_cached_prefix_match_the_eager_forward_in_every_order(built, height, width):
    engine, _ = built
    image = random_image(height, width, seed=7 * height + width)
    expected = {expression: reference_maps(built, image, expression) for expression in EXPRESSIONS}
    for order, expressions in enumerate(itertools.permutations(EXPRESSIONS)):
        image_id = ("orders", height, width, order)
        for i, expression in enumerate(expressions):
            result = engine.head_attention(image, expression, image_id=image_id)
            assert result.timing.prefix_cached == (i > 0)
            ours = result.maps.reshape(expected[expression].shape)
            np.testing.assert_allclose(ours, expected[expression], rtol=0, atol=1e-5)


def test_a_head_subset_from_a_cached_prefix_matches_the_same_heads_of_the_eager_forward(built):
    engine, _ = built
    image = random_image(112, 224, seed=3)
    heads = [(engine.num_layers - 1, 1), (1, 0), (2, engine.num_heads - 1)]
    expected = reference_maps(built, image, EXPRESSIONS[2])
    engine.prepare(image, "subset", heads=[(1, 0)])
    ours = engine.image_attention(image, EXPRESSIONS[2], heads=heads, image_id="subset")
    np.testing.assert_allclose(ours, np.stack([expected[l, h] for l, h in heads]), rtol=0, atol=1e-5)


def test_without_m_rope_positions_the_maps_differ_so_the_comparison_tests_them(built, monkeypatch):
    engine, _ = built
    image = random_image(112, 224, seed=5)
    expected = reference_maps(built, image, EXPRESSIONS[0])
    monkeypatch.setattr(engine.family, "position_ids", lambda prompt, layout, device: None)
    plain = engine.image_attention(image, EXPRESSIONS[0], image_id="plain positions")
    assert np.abs(plain - expected).max() > 1e-3


def test_the_reference_maps_are_far_from_uniform_so_the_comparison_means_something(built):
    expected = reference_maps(built, random_image(112, 224, seed=11), EXPRESSIONS[1])
    per_head = expected.reshape(*expected.shape[:2], -1)
    assert (per_head.max(axis=-1) > 2 * per_head.mean(axis=-1)).mean() > 0.5


def test_early_exit_never_runs_the_layers_above_the_deepest_head(built):
    engine, _ = built
    ran = []
    hooks = [
        layer.register_forward_hook(lambda module, args, output, i=i: ran.append(i))
        for i, layer in enumerate(engine.family.text_model.layers)
    ]
    try:
        engine.image_attention(random_image(112, 112, seed=1), "a dog", heads=[(1, 0)])
    finally:
        for hook in hooks:
            hook.remove()
    assert ran == [0, 1]


def test_another_image_size_gets_its_own_prefix_and_positions(built):
    engine, _ = built
    square, wide = random_image(112, 112, seed=21), random_image(112, 224, seed=21)
    engine.image_attention(square, "a dog", image_id="resized")
    ours = engine.head_attention(wide, "a dog", image_id="resized")
    assert not ours.timing.prefix_cached
    np.testing.assert_allclose(
        ours.maps.reshape(engine.num_layers, engine.num_heads, 4, 8), reference_maps(built, wide, "a dog"), atol=1e-5
    )


def test_a_budget_in_tokens_caps_the_grid_whatever_a_tokens_pixels():
    from annotator.lvlm.engine import LvlmEngine

    engine = LvlmEngine(tiny_qwen(QWEN2_VL), tiny_processor(QWEN2_VL), max_image_tokens=8)
    layout = engine.layout_for(224, 224)  # 8 x 8 tokens natively; the tiny processor allows 64
    assert layout.num_tokens <= 8 and layout.grid_hw == (2, 2)
    assert engine.family.max_pixels == 8 * 28 * 28
