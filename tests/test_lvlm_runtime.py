"""Early exit after the deepest requested layer, and the per-image prefix cache."""

import itertools

import numpy as np
import pytest

from tests.tiny_llava import SPEC_GQA, random_image, tiny_engine

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXPRESSIONS = ("the red cup on the left", "a small dog", "the man who is holding the blue ball")
HEADS = [(1, 0), (1, 3), (0, 2)]


@pytest.fixture
def engine():
    return tiny_engine(SPEC_GQA)


def count_calls(engine):
    """Forward-call counters on every decoder layer, the final norm and the LM head."""
    text = engine.model.model.language_model
    modules = {f"layer {i}": layer for i, layer in enumerate(text.layers)}
    modules |= {"norm": text.norm, "lm_head": engine.model.lm_head}
    calls = dict.fromkeys(modules, 0)

    def counter(name):
        def hook(module, args, output):
            calls[name] += 1

        return hook

    for name, module in modules.items():
        module.register_forward_hook(counter(name))
    return calls


def test_no_layer_above_the_deepest_requested_one_runs(engine):
    calls = count_calls(engine)
    engine.image_attention(random_image(30, 70), EXPRESSIONS[0], heads=HEADS)
    assert calls == {"layer 0": 1, "layer 1": 1, "layer 2": 0, "layer 3": 0, "norm": 0, "lm_head": 0}


def test_a_cached_prefix_also_stops_at_the_deepest_requested_layer(engine):
    calls = count_calls(engine)
    image = random_image(30, 70)
    engine.image_attention(image, EXPRESSIONS[0], heads=HEADS, image_id="img")
    engine.image_attention(image, EXPRESSIONS[1], heads=HEADS, image_id="img")
    assert calls == {"layer 0": 3, "layer 1": 3, "layer 2": 0, "layer 3": 0, "norm": 0, "lm_head": 0}


def test_early_exit_gives_the_same_maps_as_the_full_forward(engine):
    image = random_image(30, 70)
    full = engine.image_attention(image, EXPRESSIONS[0])
    early = engine.image_attention(image, EXPRESSIONS[0], heads=HEADS)
    np.testing.assert_allclose(early, full[[1, 1, 0], [0, 3, 2]], rtol=0, atol=1e-6)


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_expressions_on_a_cached_image_match_full_forwards_in_any_order(engine, order):
    image = random_image(30, 70, seed=3)
    for position, index in enumerate(order):
        cached = engine.head_attention(image, EXPRESSIONS[index], image_id="img")
        full = engine.image_attention(image, EXPRESSIONS[index])
        assert cached.timing.prefix_cached == (position > 0)
        np.testing.assert_allclose(cached.maps.reshape(full.shape), full, rtol=0, atol=1e-4)


def test_the_same_expression_twice_on_a_cached_image_gives_the_same_maps(engine):
    image = random_image(30, 70)
    first = engine.image_attention(image, EXPRESSIONS[2], image_id="img")
    engine.image_attention(image, EXPRESSIONS[0], image_id="img")
    again = engine.image_attention(image, EXPRESSIONS[2], image_id="img")
    np.testing.assert_array_equal(first, again)


def test_the_prefix_cache_evicts_the_least_recently_used_image_at_its_bound():
    engine = tiny_engine(SPEC_GQA, prefix_cache_size=2)
    images = {name: random_image(20, 30, seed=i) for i, name in enumerate("abc")}
    for name in "abc":
        engine.head_attention(images[name], EXPRESSIONS[0], heads=HEADS, image_id=name)
    assert engine.cached_image_ids == ("b", "c")
    assert engine.head_attention(images["c"], EXPRESSIONS[1], heads=HEADS, image_id="c").timing.prefix_cached
    assert not engine.head_attention(images["a"], EXPRESSIONS[1], heads=HEADS, image_id="a").timing.prefix_cached
    assert engine.cached_image_ids == ("c", "a")


def test_a_deeper_request_recomputes_a_shallower_cached_prefix(engine):
    image = random_image(30, 70)
    engine.image_attention(image, EXPRESSIONS[0], heads=[(0, 1)], image_id="img")
    deeper = engine.head_attention(image, EXPRESSIONS[1], heads=[(3, 2)], image_id="img")
    full = engine.image_attention(image, EXPRESSIONS[1])
    assert not deeper.timing.prefix_cached
    np.testing.assert_allclose(deeper.maps[0], full[3, 2], rtol=0, atol=1e-4)


def test_a_different_image_under_a_cached_id_is_not_served_the_old_prefix(engine):
    engine.image_attention(random_image(30, 70), EXPRESSIONS[0], heads=HEADS, image_id="img")
    resized = random_image(40, 40, seed=5)
    result = engine.head_attention(resized, EXPRESSIONS[0], heads=HEADS, image_id="img")
    assert not result.timing.prefix_cached
    assert (result.frame.width, result.frame.height) == (40, 40)


def test_a_zero_sized_cache_keeps_nothing():
    engine = tiny_engine(SPEC_GQA, prefix_cache_size=0)
    image = random_image(30, 70)
    timings = [engine.head_attention(image, e, heads=HEADS, image_id="img").timing for e in EXPRESSIONS[:2]]
    assert [t.prefix_cached for t in timings] == [False, False]
    assert engine.cached_image_ids == ()


def test_timing_reports_the_prefix_and_the_expression_in_milliseconds(engine):
    image = random_image(30, 70)
    first, second = (engine.head_attention(image, e, heads=HEADS, image_id="img").timing for e in EXPRESSIONS[:2])
    assert first.prefix_ms > 0 and first.expression_ms > 0 and first.total_ms >= first.prefix_ms + first.expression_ms
    assert second.prefix_ms == 0 and second.prefix_cached



def test_prepare_caches_the_prefix_ahead_of_the_first_expression(engine):
    image = random_image(30, 70)
    assert engine.prepare(image, "img", heads=HEADS) is False
    assert engine.prepare(image, "img", heads=HEADS) is True
    first = engine.head_attention(image, EXPRESSIONS[0], heads=HEADS, image_id="img")
    full = engine.image_attention(image, EXPRESSIONS[0])
    assert first.timing.prefix_cached
    np.testing.assert_allclose(first.maps, full[[1, 1, 0], [0, 3, 2]], rtol=0, atol=1e-4)


def test_prepare_does_nothing_when_caching_is_off():
    engine = tiny_engine(SPEC_GQA, prefix_cache_size=0)
    assert engine.prepare(random_image(30, 70), "img", heads=HEADS) is False
    assert engine.cached_image_ids == ()
