"""Editable rings and the brush, by known answers (pixel counts worked out by hand in each test)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from annotator.editing.brush import paint_segment
from annotator.editing.polygons import (
    Ring,
    apply_ring_edit,
    delete_vertex,
    insert_vertex,
    mask_from_polygons,
    move_vertex,
    polygons_from_mask,
    ring_cover,
)


def square_mask() -> np.ndarray:
    """A 10 x 10 square, pixels 5..14 on both axes, in a 30 x 30 mask."""
    mask = np.zeros((30, 30), dtype=bool)
    mask[5:15, 5:15] = True
    return mask


def frame_mask() -> np.ndarray:
    """A 24 x 16 rectangle (x 3..26, y 2..17) with a 10 x 6 rectangular hole (x 10..19, y 6..11)."""
    mask = np.zeros((20, 30), dtype=bool)
    mask[2:18, 3:27] = True
    mask[6:12, 10:20] = False
    return mask


def corner_index(ring: Ring, x: float, y: float) -> int:
    return int(np.flatnonzero((ring.points == (x, y)).all(axis=1))[0])


def test_a_rectangle_with_a_hole_round_trips_exactly_at_tolerance_zero():
    mask = frame_mask()
    polygons = polygons_from_mask(mask, 0)
    outer, hole = polygons.rings
    assert not outer.is_hole and outer.parent == -1
    assert hole.is_hole and hole.parent == 0
    # The outer ring has the 4 corner pixels' centres; the hole ring traces the mask pixels round the hole, which
    # (8-connected) cut its 4 corners: 8 vertices.
    assert sorted(map(tuple, outer.points)) == [(3.5, 2.5), (3.5, 17.5), (26.5, 2.5), (26.5, 17.5)]
    assert len(hole) == 8
    assert {(9.5, 6.5), (10.5, 5.5), (19.5, 5.5), (20.5, 6.5)} <= set(map(tuple, hole.points))
    assert np.array_equal(mask_from_polygons(polygons), mask)


def test_blobs_with_holes_and_islands_round_trip_exactly():
    yy, xx = np.mgrid[0:60, 0:80]
    mask = (xx - 40) ** 2 + (yy - 30) ** 2 <= 25**2
    mask &= (xx - 40) ** 2 + (yy - 30) ** 2 > 12**2
    mask |= (xx - 40) ** 2 + (yy - 30) ** 2 <= 4**2
    mask[5:9, 70:76] = True
    assert np.array_equal(mask_from_polygons(polygons_from_mask(mask, 0)), mask)


def test_moving_a_corner_out_adds_the_triangle_of_pixels_it_sweeps():
    mask = square_mask()
    ring = polygons_from_mask(mask, 0).rings[0]
    moved = move_vertex(ring, corner_index(ring, 14.5, 14.5), 19.7, 14.2)  # snaps to the pixel centre (19.5, 14.5)
    assert tuple(moved.points[corner_index(ring, 14.5, 14.5)]) == (19.5, 14.5)
    new_mask, rect = apply_ring_edit(mask, ring, moved)
    # The right edge now runs from (14.5, 5.5) to (19.5, 14.5): in row 5 + k it passes x = 14.5 + 5k/9, so row
    # 5 + k gains floor(5k/9) pixels right of x = 14: 0 0 1 1 2 2 3 3 4 5 = 21 pixels.
    added = new_mask & ~mask
    assert added.sum() == 21
    assert [int(added[5 + k].sum()) for k in range(10)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 5]
    assert np.array_equal(new_mask & mask, mask)
    assert rect == (15, 7, 20, 15)
    assert mask.sum() == 100  # the input is not modified


def test_inserting_a_vertex_at_an_edge_midpoint_changes_nothing():
    mask = square_mask()
    ring = polygons_from_mask(mask, 0).rings[0]
    top = corner_index(ring, 14.5, 5.5)
    following = ring.points[(top + 1) % len(ring)]
    midpoint = (ring.points[top] + following) / 2
    inserted = insert_vertex(ring, top, *midpoint)
    assert len(inserted) == 5
    new_mask, rect = apply_ring_edit(mask, ring, inserted)
    assert np.array_equal(new_mask, mask) and rect is None


def test_deleting_a_corner_of_the_square_leaves_a_right_triangle():
    mask = square_mask()
    ring = polygons_from_mask(mask, 0).rings[0]
    triangle = delete_vertex(ring, corner_index(ring, 14.5, 14.5))
    new_mask, rect = apply_ring_edit(mask, ring, triangle)
    # Vertices (5.5, 5.5), (14.5, 5.5), (5.5, 14.5): row 5 + k keeps pixels x = 5 .. 14 - k, 10 - k of them, so
    # 10 + 9 + ... + 1 = 55 pixels (Pick: area 40.5 + 27 boundary points / 2 + 1 = 55).
    assert new_mask.sum() == 55
    assert all(new_mask[5 + k, 5 : 15 - k].all() and not new_mask[5 + k, 15 - k :].any() for k in range(10))
    assert rect == (6, 6, 15, 15)


def test_a_ring_keeps_three_vertices():
    triangle = Ring(points=np.array([[0.5, 0.5], [5.5, 0.5], [0.5, 5.5]]))
    with pytest.raises(ValueError, match="at least 3 vertices"):
        delete_vertex(triangle, 0)


def test_moving_a_hole_vertex_grows_the_hole_and_leaves_the_outer_part_alone():
    mask = frame_mask()
    polygons = polygons_from_mask(mask, 0)
    hole = polygons.rings[1]
    grown = move_vertex(hole, corner_index(hole, 20.5, 11.5), 23.5, 11.5)
    new_mask, rect = apply_ring_edit(mask, hole, grown)
    # In pixel indices the hole's right side becomes (20, 6) -> (23, 11) -> (19, 12); strictly inside it, rows
    # 7..11 gain x < 20 + 0.6 (y - 6) (row 11 up to the vertex x = 23): 1, 2, 2, 3, 3 pixels.
    cleared = {(x, y) for y, x in zip(*np.nonzero(mask & ~new_mask))}
    expected = {(20, 7), (20, 8), (21, 8), (20, 9), (21, 9), (20, 10), (21, 10), (22, 10), (20, 11), (21, 11), (22, 11)}
    assert cleared == expected
    assert not (new_mask & ~mask).any()
    assert np.array_equal(new_mask[:, :20], mask[:, :20]) and np.array_equal(new_mask[13:], mask[13:])
    shrunk = move_vertex(hole, corner_index(hole, 19.5, 12.5), 15.5, 9.5)
    refilled, _ = apply_ring_edit(mask, hole, shrunk)
    assert not (mask & ~refilled).any() and (refilled & ~mask).sum() > 0


def test_an_edit_of_a_simplified_ring_leaves_the_rest_of_the_mask_bit_identical():
    yy, xx = np.mgrid[0:200, 0:200]
    mask = (xx - 100) ** 2 + (yy - 100) ** 2 <= 70**2
    mask[95:105, 95:105] = False
    polygons = polygons_from_mask(mask, 3.0)
    outer = polygons.rings[0]
    assert len(outer) < 40
    assert not np.array_equal(mask_from_polygons(polygons), mask)  # the shown rings are simplified
    top = int(np.argmin(outer.points[:, 1]))
    x, y = outer.points[top]
    new_mask, rect = apply_ring_edit(mask, outer, move_vertex(outer, top, x, y - 10))
    assert rect is not None
    x0, y0, x1, y1 = rect
    outside = np.ones_like(mask)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(new_mask[outside], mask[outside])
    assert not new_mask[95:105, 95:105].any()
    assert (new_mask & ~mask).sum() > 0


def test_the_cover_rule_is_exact_on_random_lattice_polygons_and_sub_rects():
    rng = np.random.default_rng(3)
    ys, xs = np.mgrid[0:40, 0:40]
    checked = 0
    for _ in range(400):
        points = rng.integers(-5, 45, (rng.integers(3, 9), 2)).astype(np.float64) + 0.5
        polygon = shapely.Polygon(points)
        (x0, x1), (y0, y1) = np.sort(rng.integers(0, 41, 2)), np.sort(rng.integers(0, 41, 2))
        if not polygon.is_valid or polygon.area == 0 or x1 == x0 or y1 == y0:
            continue
        checked += 1
        rect = (int(x0), int(y0), int(x1), int(y1))
        inside_or_on = shapely.intersects_xy(polygon, xs + 0.5, ys + 0.5)[y0:y1, x0:x1]
        strictly = shapely.contains_xy(polygon, xs + 0.5, ys + 0.5)[y0:y1, x0:x1]
        assert np.array_equal(ring_cover(Ring(points), rect), inside_or_on)
        assert np.array_equal(ring_cover(Ring(points, is_hole=True, parent=0), rect), strictly)
    assert checked > 50


def test_a_brush_dot_covers_the_disc_of_pixel_centres():
    mask = np.zeros((30, 30), dtype=bool)
    # Centres within 2 of a pixel centre: offsets (0,0), 4 at distance 1, 4 at sqrt 2, 4 at 2 = 13 pixels.
    assert paint_segment(mask, (10.5, 10.5), (10.5, 10.5), 2, True) == (8, 8, 13, 13)
    assert mask.sum() == 13
    mask[:] = False
    # Radius 3: 13 + 4 at sqrt 5 x 2 + 4 at sqrt 8 + 4 at 3 = 29 (the Gauss circle count N(3)).
    paint_segment(mask, (10.5, 10.5), (10.5, 10.5), 3, True)
    assert mask.sum() == 29
    mask[:] = False
    # Radius 1 at a pixel corner: the 4 centres at distance sqrt(0.5) only.
    assert paint_segment(mask, (10.0, 10.0), (10.0, 10.0), 1, True) == (9, 9, 11, 11)
    assert mask.sum() == 4


def test_a_stroke_covers_the_capsule_and_only_its_rect():
    mask = np.zeros((30, 40), dtype=bool)
    rect = paint_segment(mask, (10.5, 10.5), (20.5, 10.5), 2, True)
    # Row 10: x 8..22 (15); rows 9 and 11: the caps reach sqrt 3, x 9..21 (13 each); rows 8 and 12: x 10..20 (11
    # each): 15 + 26 + 22 = 63.
    assert mask.sum() == 63
    assert rect == (8, 8, 23, 13)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    assert (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1) == rect


def test_erasing_restores_and_pixels_outside_the_rect_stay():
    rng = np.random.default_rng(0)
    mask = rng.random((50, 60)) < 0.5
    before = mask.copy()
    rect = paint_segment(mask, (12.3, 40.1), (30.8, 20.6), 4.5, True)
    assert rect is not None
    x0, y0, x1, y1 = rect
    outside = np.ones_like(mask)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(mask[outside], before[outside])
    painted = mask & ~before
    paint_segment(mask, (12.3, 40.1), (30.8, 20.6), 4.5, False)
    paint_segment(mask, (12.3, 40.1), (30.8, 20.6), 4.5, False)
    assert not mask[y0:y1, x0:x1][painted[y0:y1, x0:x1]].any()
    blank = np.zeros((50, 60), dtype=bool)
    paint_segment(blank, (12.3, 40.1), (30.8, 20.6), 4.5, True)
    paint_segment(blank, (12.3, 40.1), (30.8, 20.6), 4.5, False)
    assert not blank.any()


def test_a_stroke_off_the_image_is_none_and_one_across_its_edge_is_clipped():
    mask = np.zeros((20, 20), dtype=bool)
    assert paint_segment(mask, (-30.0, -30.0), (-10.0, -12.0), 5, True) is None
    assert paint_segment(mask, (25.5, 5.5), (40.0, 5.5), 5, True) is None
    assert not mask.any()
    assert paint_segment(mask, (0.5, 0.5), (0.5, 0.5), 2, True) == (0, 0, 3, 3)
    # The quarter of the 13-pixel disc inside the image: (0,0), (1,0), (0,1), (1,1), (2,0), (0,2).
    assert mask.sum() == 6


def test_bad_input_says_what():
    with pytest.raises(ValueError, match="2-D"):
        polygons_from_mask(np.zeros((3, 3, 3), dtype=bool))
    with pytest.raises(ValueError, match="radius"):
        paint_segment(np.zeros((3, 3), dtype=bool), (1, 1), (1, 1), 0, True)
    with pytest.raises(IndexError, match="not in a ring"):
        move_vertex(Ring(np.zeros((3, 2))), 5, 0, 0)


def test_rings_smaller_than_the_minimum_area_are_left_out_with_their_holes_parents_renumbered():
    mask = np.zeros((30, 30), dtype=bool)
    mask[1, 1] = True  # a speck, traced first: area 0 between centres
    mask[5:15, 5:15] = True
    mask[7:11, 7:11] = False  # a 4 x 4 hole: its ring (round it, corners cut) encloses 5 x 5 - 4 / 2 = 23
    mask[12, 12] = False  # a one-pixel hole: its ring (4 diagonal steps) encloses 2
    every = polygons_from_mask(mask, 0)
    assert len(every.rings) == 4
    kept = polygons_from_mask(mask, 0, min_area_px=4.0)
    assert [(ring.is_hole, ring.parent, len(ring)) for ring in kept.rings] == [(False, -1, 4), (True, 0, 8)]
    assert np.array_equal(mask_from_polygons(every), mask)
