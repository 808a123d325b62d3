"""The captured last-token attention equals the eager `output_attentions=True` reference, head for head."""

import copy

import numpy as np
import pytest
import torch

from tests.tiny_llava import (
    SPEC_FINE,
    SPEC_GQA,
    SPEC_PLAIN,
    eager_image_attention,
    random_image,
    tiny_llava,
    tiny_processor,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXPRESSION = "the red cup on the left"


def reference_maps(model, engine, image, expression=EXPRESSION):
    """The paper's path on a copy of the model: eager attention, all layers, the LM head."""
    pixels, frame = engine.pixel_values(image)
    prompt = engine.prompt(expression)
    return eager_image_attention(
        copy.deepcopy(model), torch.tensor([prompt.ids]), pixels, prompt.prefix.image_start, frame.grid_hw
    )


def engine_and_model(spec):
    from annotator.lvlm.engine import LvlmEngine

    model = tiny_llava(spec)
    reference_model = copy.deepcopy(model)
    return LvlmEngine(model, tiny_processor(spec)), reference_model


SPECS = {"mha-4x4-grid": SPEC_PLAIN, "gqa-4x4-grid": SPEC_GQA, "gqa-8x8-grid": SPEC_FINE}


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
@pytest.mark.parametrize("height, width", [(40, 40), (30, 70)], ids=["square", "wide"])
def test_every_layer_and_head_matches_eager_attention(spec, height, width):
    engine, reference_model = engine_and_model(spec)
    image = random_image(height, width, seed=height)
    ours = engine.image_attention(image, EXPRESSION)
    expected = reference_maps(reference_model, engine, image)
    assert ours.shape == (spec.num_layers, spec.num_heads, spec.grid_size, spec.grid_size)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


def test_the_reference_maps_are_far_from_uniform_so_the_comparison_means_something():
    engine, reference_model = engine_and_model(SPEC_GQA)
    expected = reference_maps(reference_model, engine, random_image(30, 70))
    per_head = expected.reshape(*expected.shape[:2], -1)
    assert (per_head.max(axis=-1) > 4 * per_head.mean(axis=-1)).mean() > 0.5


def test_listed_heads_come_back_in_the_order_asked():
    engine, _ = engine_and_model(SPEC_GQA)
    image = random_image(30, 70)
    every = engine.image_attention(image, EXPRESSION)
    listed = engine.image_attention(image, EXPRESSION, heads=[(2, 3), (0, 1), (2, 3), (1, 0)])
    assert listed.shape == (4, 4, 4)
    np.testing.assert_allclose(listed, every[[2, 0, 2, 1], [3, 1, 3, 0]], rtol=0, atol=1e-6)


def test_the_capture_path_materialises_no_attention_matrix():
    engine, _ = engine_and_model(SPEC_PLAIN)
    returned_weights = []
    hooks = [
        layer.self_attn.register_forward_hook(lambda module, args, output: returned_weights.append(output[1]))
        for layer in engine.model.model.language_model.layers
    ]
    engine.image_attention(random_image(30, 70), EXPRESSION)
    for hook in hooks:
        hook.remove()
    assert returned_weights == [None] * SPEC_PLAIN.num_layers
    assert engine.model.config.text_config._attn_implementation == "annotator_last_token"


def test_unknown_heads_are_refused_with_the_model_size():
    engine, _ = engine_and_model(SPEC_PLAIN)
    with pytest.raises(ValueError, match="4 text layers"):
        engine.image_attention(random_image(8, 8), EXPRESSION, heads=[(4, 0)])
