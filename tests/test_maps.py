"""From head maps to regions and the grid box (docs/method.md, part 1, "From the heads to a box")."""

import math

import numpy as np
import pytest

from annotator.grounding.maps import combine_head_maps, find_regions, grid_box


def _gaussian_kernel_1d(size: int = 7, sigma: float = 1.0) -> np.ndarray:
    offsets = np.arange(size) - size // 2
    k = np.exp(-(offsets**2) / (2 * sigma**2))
    return k / k.sum()


def test_gaussian_of_an_impulse_is_the_normalised_7x7_kernel():
    m = np.zeros((1, 9, 9))
    m[0, 4, 4] = 1.0
    smoothed = combine_head_maps(m)
    z = 1 + 2 * (math.exp(-0.5) + math.exp(-2.0) + math.exp(-4.5))
    assert smoothed[4, 4] == pytest.approx((1 / z) ** 2, rel=1e-6)
    assert smoothed[4, 5] == pytest.approx((1 / z) * (math.exp(-0.5) / z), rel=1e-6)
    assert smoothed[4, 8] == 0.0  # outside the 7x7 support
    assert smoothed.sum() == pytest.approx(1.0)


def test_maps_are_smoothed_then_summed():
    a = np.zeros((9, 9))
    a[2, 2] = 1.0
    b = np.zeros((9, 9))
    b[6, 6] = 2.0
    combined = combine_head_maps(np.stack([a, b]))
    assert combined == pytest.approx(combine_head_maps(a[None]) + combine_head_maps(b[None]))


def test_sigma_zero_means_no_smoothing():
    maps = np.random.default_rng(0).random((3, 5, 6))
    assert combine_head_maps(maps, sigma=0) == pytest.approx(maps.sum(axis=0))


def test_grid_box_of_a_planted_blob_is_its_cells():
    combined = np.zeros((12, 10))
    combined[2:5, 3:7] = 1.0  # rows 2-4, columns 3-6
    assert grid_box(combined) == (3.0, 2.0, 7.0, 5.0)


def test_smoothing_keeps_a_single_clean_blob_one_region_widened_by_one_cell():
    m = np.zeros((24, 24))
    m[9:15, 9:15] = 1.0  # a 6x6 blob, mean 36/576 = 0.0625
    g = np.convolve(m[12], _gaussian_kernel_1d(), mode="same")  # separable: the map is g(r) * g(c)
    above = np.nonzero(np.outer(g, g).max(axis=0) > 0.0625)[0]
    assert (above.min(), above.max()) == (8, 15)  # cells 8..15: one cell wider on each side
    combined = combine_head_maps(m[None])
    regions = find_regions(combined)
    assert len(regions) == 1
    assert grid_box(combined) == (8.0, 8.0, 16.0, 16.0)


def test_the_larger_of_two_blobs_wins():
    combined = np.zeros((16, 16))
    combined[1:3, 1:3] = 5.0  # small but hot
    combined[8:14, 6:12] = 1.0  # large
    regions = find_regions(combined)
    assert [r.box for r in regions] == [(6.0, 8.0, 12.0, 14.0), (1.0, 1.0, 3.0, 3.0)]
    assert grid_box(combined) == (6.0, 8.0, 12.0, 14.0)


def test_the_hull_of_an_l_shape_is_larger_than_its_cells():
    combined = np.zeros((8, 8))
    combined[1:5, 1] = 1.0
    combined[4, 1:5] = 1.0  # an L of 7 cells
    (region,) = find_regions(combined)
    # Corners of the cells' hull: (1,1), (2,1), (5,4), (5,5), (1,5): area = 7 cells + the triangle of 4.5 + ...
    hull_area_by_shoelace = 0.5 * abs(
        sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(
            [(1, 1), (2, 1), (5, 4), (5, 5), (1, 5)], [(2, 1), (5, 4), (5, 5), (1, 5), (1, 1)]
        ))
    )
    assert region.hull_area == pytest.approx(hull_area_by_shoelace)
    assert region.hull_area > 7
    assert region.box == (1.0, 1.0, 5.0, 5.0)


def test_region_mass_fraction_is_its_share_of_the_map():
    combined = np.zeros((6, 6))
    combined[0, 0] = 3.0
    combined[4:6, 4:6] = 0.5
    regions = find_regions(combined)
    assert [r.mass_fraction for r in regions] == pytest.approx([2.0 / 5.0, 3.0 / 5.0])


def test_a_flat_map_has_no_region_and_its_box_is_the_whole_grid():
    combined = np.full((5, 7), 0.1)
    assert find_regions(combined) == []
    assert grid_box(combined) == (0.0, 0.0, 7.0, 5.0)
