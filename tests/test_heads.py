"""Head discovery (docs/method.md, part 1): spatial entropy, the elbow threshold, votes, streaming."""

import math
import tracemalloc

import numpy as np
import pytest

from annotator.grounding.heads import (
    elbow_index,
    elbow_threshold,
    select_localization_heads,
    spatial_entropies,
    spatial_entropy,
)


def test_entropy_of_one_blob_is_zero():
    m = np.zeros((8, 8))
    m[2:4, 3:6] = 1.0
    assert spatial_entropy(m) == 0.0


def test_entropy_of_two_blobs_is_the_area_entropy():
    m = np.zeros((8, 8))
    m[1, 1:4] = 1.0  # area 3
    m[6, 6] = 1.0  # area 1
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert spatial_entropy(m) == pytest.approx(expected, abs=1e-12)


def test_entropy_ignores_the_height_of_the_blobs_in_the_paper_definition():
    m = np.zeros((8, 8))
    m[1, 1:4] = 1.0
    m[6, 6] = 50.0
    # mean = 53 / 64 < 1, so all four cells stay above the mean: areas 3 and 1 as before.
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert spatial_entropy(m) == pytest.approx(expected, abs=1e-12)


def test_diagonal_neighbours_join_one_component():
    m = np.zeros((6, 6))
    m[1, 1] = m[2, 2] = m[3, 3] = 1.0
    assert spatial_entropy(m) == 0.0


def test_entropy_of_a_constant_map_is_infinite():
    assert spatial_entropy(np.full((5, 7), 0.3)) == math.inf


def test_reference_variant_weights_components_by_attention_mass():
    m = np.zeros((8, 8))
    m[1, 1:4] = 1.0
    m[6, 6] = 5.0
    mean = 8.0 / 64.0
    mass_a = 3 * (1.0 - mean)
    mass_b = 5.0 - mean
    p = np.array([mass_a, mass_b]) / (mass_a + mass_b)
    expected = -(p * np.log(p)).sum()
    assert spatial_entropy(m, weighting="mass") == pytest.approx(expected, abs=1e-12)


def test_reference_variant_scores_an_empty_map_as_zero():
    assert spatial_entropy(np.full((4, 4), 1.0), weighting="mass") == 0.0


def test_elbow_of_a_curve_with_an_obvious_knee_is_the_top_of_the_low_cluster():
    low = [0.10, 0.11, 0.12, 0.13, 0.14, 0.15, 0.16, 0.17]
    values = np.array(low + [0.90, 1.00])
    rng = np.random.default_rng(0)
    assert elbow_threshold(rng.permutation(values)) == pytest.approx(0.17)


def _farthest_from_chord(x: np.ndarray, y: np.ndarray) -> int:
    """Brute-force perpendicular distance to the chord in raw coordinates."""
    (x0, y0), (x1, y1) = (x[0], y[0]), (x[-1], y[-1])
    distance = np.abs((y1 - y0) * x - (x1 - x0) * y + x1 * y0 - y1 * x0) / np.hypot(y1 - y0, x1 - x0)
    return int(np.argmax(distance))


@pytest.mark.parametrize("x_scale, y_scale", [(1.0, 1.0), (37.0, 1.0), (1.0, 0.001), (0.01, 250.0)])
def test_elbow_does_not_move_when_either_axis_is_scaled(x_scale, y_scale):
    values = np.sort(np.random.default_rng(1).gamma(0.6, 0.2, size=200))
    x = np.arange(values.size) * x_scale
    assert elbow_index(values * y_scale) == elbow_index(values) == _farthest_from_chord(x, values * y_scale)


def _synthetic_sample(rng: np.random.Generator, layers: int, heads: int, grid: tuple[int, int]) -> np.ndarray:
    """One [L, H, h, w] sample: 3 planted compact heads, decoys of each kind, noise elsewhere."""
    h, w = grid
    sample = np.zeros((layers, heads, h, w), dtype=np.float32)

    def blob(mass: float) -> np.ndarray:
        m = np.zeros((h, w), dtype=np.float32)
        r, c = rng.integers(0, h - 3), rng.integers(0, w - 4)
        m[r : r + 3, c : c + 4] = 1.0
        return m * (mass / m.sum())

    def scattered(mass: float) -> np.ndarray:
        m = (rng.random((h, w)) < 0.3).astype(np.float32) * rng.random((h, w)).astype(np.float32)
        return m * (mass / max(m.sum(), 1e-9))

    for layer in range(layers):
        for head in range(heads):
            sample[layer, head] = rng.random((h, w)) * (0.04 / (h * w) * 2)
    for layer, head in PLANTED:
        sample[layer, head] = blob(0.6)
    for layer, head in EARLY_LOCALIZING:
        sample[layer, head] = blob(0.7)
    for layer, head in LOW_SUM_LOCALIZING:
        sample[layer, head] = blob(0.05)
    for layer, head in SCATTERED:
        sample[layer, head] = scattered(0.65)
    return sample


PLANTED = [(2, 3), (3, 5), (4, 1)]
EARLY_LOCALIZING = [(0, 2), (1, 4)]
LOW_SUM_LOCALIZING = [(4, 3), (3, 6)]
SCATTERED = [(2, 0), (2, 1), (2, 6), (3, 0), (3, 1), (3, 2), (3, 4), (4, 0), (4, 2), (4, 4), (4, 5), (4, 6)]


def _stream(n: int, seed: int = 0, grid: tuple[int, int] = (6, 9)):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield _synthetic_sample(rng, 5, 7, grid)


def test_discovery_finds_exactly_the_planted_heads():
    selection = select_localization_heads(_stream(60), k=3, top_n=10, skip_layers=2)
    assert sorted(selection.heads) == sorted(PLANTED)
    assert all(selection.votes[h] == 60 for h in PLANTED)
    assert selection.num_samples == 60
    assert selection.mean_sums.shape == (5, 7)
    low_cluster_top = max(selection.mean_sums[l, h] for l, h in LOW_SUM_LOCALIZING)
    assert selection.tau == pytest.approx(low_cluster_top)
    assert len(selection.candidates) == len(PLANTED) + len(SCATTERED)


def test_each_rule_of_discovery_is_needed():
    without_layer_rule = select_localization_heads(_stream(40), skip_layers=0)
    assert set(without_layer_rule.heads) & set(EARLY_LOCALIZING)
    without_tau = select_localization_heads(_stream(40), k=7, use_threshold=False)
    assert set(without_tau.heads) & set(LOW_SUM_LOCALIZING)
    without_entropy = select_localization_heads(_stream(40), use_entropy=False)
    assert set(without_entropy.heads) & set(SCATTERED)


def test_votes_go_to_the_top_n_lowest_entropy_candidates_per_sample():
    selection = select_localization_heads(_stream(30), top_n=4)
    # The three planted heads (entropy 0) always vote; the fourth vote goes to one scattered head per sample.
    assert sum(selection.votes.values()) == 4 * 30
    assert all(selection.votes[h] == 30 for h in PLANTED)


def test_frequencies_are_votes_over_samples_most_voted_first():
    selection = select_localization_heads(_stream(20))
    frequencies = selection.frequencies()
    assert list(frequencies)[:3] == sorted(PLANTED, key=lambda h: (-selection.votes[h], h))
    assert frequencies[PLANTED[0]] == 1.0


def test_discovery_streams_a_thousand_samples_without_holding_them():
    grid = (24, 24)
    one_sample_bytes = 5 * 7 * grid[0] * grid[1] * 4
    tracemalloc.start()
    selection = select_localization_heads(_stream(1000, seed=3, grid=grid))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sorted(selection.heads) == sorted(PLANTED)
    # Holding the samples would take 1000 x one_sample_bytes (80 MB); the stream keeps a few samples' worth.
    assert peak < 20 * one_sample_bytes


def test_discovery_of_no_samples_is_an_error():
    with pytest.raises(ValueError, match="at least one sample"):
        select_localization_heads(iter([]))


def test_entropies_of_a_stack_are_each_maps_own():
    one_blob = np.zeros((8, 8))
    one_blob[1:3, 1:4] = 1.0
    two_blobs = np.zeros((8, 8))
    two_blobs[1, 1:4] = 1.0  # overlaps the first map's blob position: slices must not join
    two_blobs[6, 6] = 1.0
    flat = np.full((8, 8), 2.0)
    expected_two = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    result = spatial_entropies(np.stack([one_blob, two_blobs, flat]))
    assert result[0] == 0.0
    assert result[1] == pytest.approx(expected_two, abs=1e-12)
    assert result[2] == math.inf
