"""Mask geometry: mask <-> RLE <-> polygons in COCO's pixel convention (issue 9, item 4)."""

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from annotator.project.geometry import (
    Rle,
    box_polygon,
    coco_polygons,
    coco_segmentation,
    mask_to_polygons,
    polygons_to_mask,
    segmentation_to_rle,
)

H, W = 120, 160
YY, XX = np.mgrid[:H, :W]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _round_trip(mask: np.ndarray) -> np.ndarray:
    return polygons_to_mask(mask_to_polygons(mask), *mask.shape)


def _disc(cx: float, cy: float, r: float) -> np.ndarray:
    return (XX - cx) ** 2 + (YY - cy) ** 2 <= r**2


def test_a_disc_survives_mask_to_polygon_to_mask():
    disc = _disc(80, 60, 30)
    assert _iou(_round_trip(disc), disc) >= 0.95


def test_a_ring_keeps_its_hole_through_polygons():
    ring = _disc(80, 60, 40) & ~_disc(80, 60, 20)
    shape = mask_to_polygons(ring)
    assert len(shape.geoms) == 1 and len(shape.geoms[0].interiors) == 1
    back = polygons_to_mask(shape, H, W)
    assert not back[60, 80]  # the centre is in the hole
    assert _iou(back, ring) >= 0.95


def test_two_separate_parts_stay_two_polygons():
    parts = _disc(30, 30, 15) | _disc(120, 85, 20)
    shape = mask_to_polygons(parts)
    assert len(shape.geoms) == 2
    assert _iou(polygons_to_mask(shape, H, W), parts) >= 0.95


def test_a_thin_diagonal_bar_survives_polygons():
    angle = np.deg2rad(30)
    across = np.abs((XX - 80) * np.sin(angle) - (YY - 60) * np.cos(angle))
    along = np.abs((XX - 80) * np.cos(angle) + (YY - 60) * np.sin(angle))
    bar = (across <= 1.0) & (along <= 50)  # about two pixels wide
    assert _iou(_round_trip(bar), bar) >= 0.95


def test_a_shape_touching_the_image_border_survives_polygons():
    corner = np.zeros((H, W), dtype=bool)
    corner[:50, 100:] = True
    corner |= _disc(0, 119, 25)
    assert _iou(_round_trip(corner), corner) >= 0.95


def test_one_pixel_thin_tails_and_walls_survive_polygons():
    mask = np.zeros((H, W), dtype=bool)
    mask[10:20, 10:20] = True
    mask[15, 20:40] = True  # a tail one pixel thin
    mask[40:60, 60:80] = True
    mask[41:59, 61:79] = False  # a frame one pixel thin around a hole
    assert np.array_equal(_round_trip(mask), mask)


def test_a_square_outline_runs_along_the_pixel_edges():
    square = np.zeros((H, W), dtype=bool)
    square[10:20, 30:45] = True  # rows 10..19, columns 30..44
    shape = mask_to_polygons(square)
    assert shape.bounds == pytest.approx((30.0, 10.0, 45.0, 20.0))
    assert shape.area == pytest.approx(15 * 10)


def test_specks_below_the_minimum_area_are_dropped():
    mask = np.zeros((H, W), dtype=bool)
    mask[40:60, 40:60] = True
    mask[5, 5] = mask[5, 6] = True  # a 2-pixel speck
    shape = mask_to_polygons(mask, min_area_px=4.0)
    assert len(shape.geoms) == 1
    assert not polygons_to_mask(shape, H, W)[5, 5]


def test_pinholes_below_the_minimum_area_are_filled():
    mask = np.zeros((H, W), dtype=bool)
    mask[40:60, 40:60] = True
    mask[50, 50] = False
    shape = mask_to_polygons(mask, min_area_px=4.0)
    assert len(shape.geoms[0].interiors) == 0


def test_a_larger_tolerance_gives_fewer_vertices():
    disc = _disc(80, 60, 50)
    fine = mask_to_polygons(disc, tolerance_px=0.0)
    coarse = mask_to_polygons(disc, tolerance_px=2.0)
    assert len(coarse.geoms[0].exterior.coords) < len(fine.geoms[0].exterior.coords)


def test_polygons_of_a_ragged_mask_are_valid():
    rng = np.random.default_rng(0)
    ragged = _disc(80, 60, 12) & (rng.random((H, W)) < 0.7)
    shape = mask_to_polygons(ragged, min_area_px=0.0, tolerance_px=1.0)
    assert shape.is_valid and sum(len(p.interiors) for p in shape.geoms) > 10


def test_rle_round_trip_is_exact():
    rng = np.random.default_rng(1)
    mask = rng.random((H, W)) < 0.3
    assert np.array_equal(Rle.from_mask(mask).to_mask(), mask)


def test_area_and_bbox_are_pycocotools_area_and_tobbox():
    mask = np.zeros((H, W), dtype=bool)
    mask[3:8, 2:10] = True  # rows 3..7, columns 2..9: 5 x 8 pixels
    rle = Rle.from_mask(mask)
    coco = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle.area_px == 40 == int(coco_mask.area(coco))
    assert rle.bbox_xywh == (2.0, 3.0, 8.0, 5.0) == tuple(coco_mask.toBbox(coco).tolist())
    assert rle.box_xyxy == (2.0, 3.0, 10.0, 8.0)


def test_an_empty_mask_has_no_tight_box():
    assert Rle.from_mask(np.zeros((4, 5), dtype=bool)).box_xyxy is None


def test_polygon_segmentation_of_a_disc_is_a_polygon_list():
    segmentation = coco_segmentation(Rle.from_mask(_disc(80, 60, 30)), "polygon")
    assert isinstance(segmentation, list) and len(segmentation) == 1 and len(segmentation[0]) % 2 == 0


def test_polygon_segmentation_of_a_mask_with_a_hole_falls_back_to_exact_rle():
    ring = _disc(80, 60, 40) & ~_disc(80, 60, 20)
    rle = Rle.from_mask(ring)
    segmentation = coco_segmentation(rle, "polygon")
    assert segmentation == rle.to_coco()
    assert np.array_equal(segmentation_to_rle(segmentation, H, W).to_mask(), ring)


def test_coco_polygons_refuse_a_shape_with_a_hole():
    ring = _disc(80, 60, 40) & ~_disc(80, 60, 20)
    with pytest.raises(ValueError, match="holes"):
        coco_polygons(mask_to_polygons(ring))


def test_rle_segmentation_is_the_compressed_rle():
    rle = Rle.from_mask(_disc(80, 60, 30))
    assert coco_segmentation(rle, "rle") == {"size": [H, W], "counts": rle.counts}


def test_polygons_uncompressed_and_compressed_rle_decode_to_the_same_mask():
    # A 2 x 3 box at x 1..2, y 1..3 in a 5 x 4 (height x width) image.
    # Column-major runs: 6 off, 3 on, 2 off, 3 on, 6 off.
    polygon = [[1.0, 1.0, 3.0, 1.0, 3.0, 4.0, 1.0, 4.0]]
    uncompressed = {"size": [5, 4], "counts": [6, 3, 2, 3, 6]}
    expected = np.zeros((5, 4), dtype=bool)
    expected[1:4, 1:3] = True
    compressed = Rle.from_mask(expected).to_coco()
    for segmentation in (polygon, uncompressed, compressed):
        assert np.array_equal(segmentation_to_rle(segmentation, 5, 4).to_mask(), expected)


@pytest.mark.parametrize(
    "segmentation, reason",
    [
        ([[1.0, 2.0, 3.0, 4.0, 5.0]], "even number"),
        ([[1.0, 2.0, 3.0, 4.0]], "even number"),
        ([[0, 0, 3, 0, float("nan"), 3]], "finite"),
        ({"size": [4, 4], "counts": [6, 3, 2, 3, 6]}, "not the image's"),
        ({"size": [5, 4], "counts": [6, 3, 2]}, "summing"),
        ({"size": [5, 4], "counts": "zz~~"}, "do not describe"),
        ({"size": [5, 4], "counts": ""}, "do not describe"),
        ("counts", "neither"),
    ],
)
def test_malformed_segmentations_are_refused_with_the_reason(segmentation, reason):
    with pytest.raises(ValueError, match=reason):
        segmentation_to_rle(segmentation, 5, 4)


def test_a_box_polygon_rasterises_to_the_box_pixels():
    rle = segmentation_to_rle(box_polygon((2, 3, 6, 8)), 10, 10)
    assert rle.area_px == 4 * 5
    assert rle.box_xyxy == (2.0, 3.0, 6.0, 8.0)


def test_run_lengths_are_the_column_major_runs_zeros_first():
    # column 0 is (0, 1), column 1 is (1, 1): flattened by columns 0 1 1 1 -> one 0, three 1s
    assert Rle.from_mask(np.array([[0, 1], [1, 1]], dtype=bool)).run_lengths().tolist() == [1, 3]
    # starting with a 1 gives an empty first run of 0s
    assert Rle.from_mask(np.array([[1, 0], [1, 0]], dtype=bool)).run_lengths().tolist() == [0, 2, 2]
    big = np.zeros((300, 200), dtype=bool)
    big[10:290, 5:195] = True  # runs longer than one character of the compressed form holds
    runs = Rle.from_mask(big).run_lengths()
    assert runs.sum() == 300 * 200 and runs[0] == 5 * 300 + 10 and runs[1] == 280


def test_replacing_columns_of_an_rle_equals_encoding_the_new_mask():
    rng = np.random.default_rng(7)
    for trial in range(300):
        height, width = (int(v) for v in rng.integers(1, 25, size=2))
        density = (0.5, 0.05, 0.95)[trial % 3]
        mask = rng.random((height, width)) < density
        x0 = int(rng.integers(0, width))
        x1 = int(rng.integers(x0 + 1, width + 1))
        edited = mask.copy()
        edited[:, x0:x1] = rng.random((height, x1 - x0)) < rng.random()
        assert Rle.from_mask(mask).with_columns(x0, x1, edited[:, x0:x1]) == Rle.from_mask(edited), trial


def test_replacing_columns_that_do_not_fit_says_so():
    rle = Rle.from_mask(np.zeros((4, 6), dtype=bool))
    with pytest.raises(ValueError, match="do not fit a 6x4 mask"):
        rle.with_columns(2, 4, np.zeros((4, 3), dtype=bool))
    with pytest.raises(ValueError, match="do not fit"):
        rle.with_columns(5, 7, np.zeros((4, 2), dtype=bool))


def test_a_decoded_mask_is_row_major_bool_and_equal_to_the_encoded_one():
    rng = np.random.default_rng(3)
    for height, width in ((1, 1), (1, 7), (7, 1), (3, 5), (64, 48)):
        mask = rng.random((height, width)) < 0.5
        decoded = Rle.from_mask(mask).to_mask()
        assert decoded.dtype == bool and decoded.flags["C_CONTIGUOUS"] and decoded.shape == (height, width)
        assert np.array_equal(decoded, mask)
