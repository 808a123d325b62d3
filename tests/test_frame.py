"""ImageFrame: exact pixels <-> grid mapping for pad-to-square, resize, g x g grid (docs/method.md, part 3)."""

import math

import numpy as np
import pytest

from annotator.grounding.frame import ImageFrame


def _frame(width: int, height: int) -> ImageFrame:
    return ImageFrame.for_image(width, height, grid_size=24, input_size=336)


def test_a_wide_image_is_centred_vertically_in_the_square():
    frame = _frame(640, 480)
    assert (frame.side, frame.offset_x, frame.offset_y) == (640, 0, 80)
    grid = frame.to_grid(np.array([[0.0, 0.0], [640.0, 480.0]]))
    # 80 px of padding above is 80 * 24 / 640 = 3 cells; the image ends 3 cells above the bottom.
    assert grid == pytest.approx(np.array([[0.0, 3.0], [24.0, 21.0]]))


def test_a_tall_image_is_centred_horizontally_with_integer_offsets():
    frame = _frame(301, 900)
    assert (frame.side, frame.offset_x, frame.offset_y) == (900, 299, 0)  # (900 - 301) // 2


def test_pad_places_the_image_where_the_frame_says():
    frame = _frame(5, 3)
    image = np.full((3, 5, 3), 200, dtype=np.uint8)
    padded = frame.pad(image, (1, 2, 3))
    assert padded.shape == (5, 5, 3)
    assert (padded[1:4, :] == 200).all()
    assert (padded[0] == [1, 2, 3]).all() and (padded[4] == [1, 2, 3]).all()


@pytest.mark.parametrize("size", [(640, 480), (300, 900), (1, 1000)])
def test_a_box_survives_pixels_to_grid_to_pixels(size):
    width, height = size
    frame = _frame(width, height)
    box = (0.1 * width, 0.25 * height, 0.8 * width, 0.9 * height)
    assert frame.box_to_pixels(frame.box_to_grid(box)) == pytest.approx(box, abs=1e-9)
    # Snapped outward to whole cells, the box grows by less than one cell on each side.
    gx0, gy0, gx1, gy1 = frame.box_to_grid(box)
    snapped = frame.box_to_pixels((math.floor(gx0), math.floor(gy0), math.ceil(gx1), math.ceil(gy1)))
    cell = frame.side / 24
    assert snapped[0] <= box[0] and snapped[1] <= box[1] and snapped[2] >= box[2] and snapped[3] >= box[3]
    assert max(box[0] - snapped[0], box[1] - snapped[1], snapped[2] - box[2], snapped[3] - box[3]) < cell


def test_a_point_in_the_padding_maps_outside_the_image_and_says_so():
    frame = _frame(640, 480)
    pixels, inside = frame.to_pixels(np.array([[12.0, 0.5], [12.0, 12.0]]))
    assert pixels[0] == pytest.approx([320.0, 0.5 * 640 / 24 - 80])
    assert pixels[0, 1] < 0
    assert inside.tolist() == [False, True]


def test_a_box_reaching_into_the_padding_is_clipped_to_the_image():
    frame = _frame(640, 480)
    assert frame.box_to_pixels((0.0, 0.0, 24.0, 24.0)) == (0.0, 0.0, 640.0, 480.0)
    assert frame.box_to_pixels((0.0, 0.0, 24.0, 24.0), clip=False) == pytest.approx((0.0, -80.0, 640.0, 560.0))


def test_a_hot_cell_upsamples_onto_exactly_its_pixels():
    frame = _frame(640, 480)
    grid_map = np.zeros((24, 24), dtype=np.float32)
    grid_map[3, 0] = 1.0  # first image row of cells: covers x in [0, 26.67), y in [0, 26.67)
    upsampled = frame.grid_map_to_pixels(grid_map, interpolation="nearest")
    assert upsampled.shape == (480, 640)
    rows, cols = np.nonzero(upsampled)
    # Pixel centres 0.5 .. 26.5 lie inside [0, 26.67): 27 pixels each way.
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (0, 26, 0, 26)


def test_linear_upsampling_keeps_a_smooth_ramp_monotone_and_in_range():
    frame = _frame(300, 900)
    ramp = np.tile(np.arange(24, dtype=np.float32), (24, 1))
    upsampled = frame.grid_map_to_pixels(ramp)
    assert upsampled.shape == (900, 300)
    assert np.all(np.diff(upsampled[0]) >= 0)
    assert ramp.min() <= upsampled.min() and upsampled.max() <= ramp.max()


def test_an_extremely_wide_image_upsamples_without_the_padded_square():
    frame = _frame(20000, 100)
    upsampled = frame.grid_map_to_pixels(np.ones((24, 24), dtype=np.float32))
    assert upsampled.shape == (100, 20000)
    assert float(upsampled.min()) == 1.0


def test_a_grid_polygon_fills_the_pixels_it_covers():
    frame = _frame(640, 480)
    square = np.array([[0.0, 3.0], [3.0, 3.0], [3.0, 6.0], [0.0, 6.0]])  # cells (3..5, 0..2) -> x, y in [0, 80)
    mask = frame.convex_polygon_mask(square)
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (0, 79, 0, 79)
    assert mask.sum() == 80 * 80


def test_a_grid_triangle_marks_the_pixel_centres_inside_it():
    frame = ImageFrame.for_image(24, 24, grid_size=24, input_size=336)  # one pixel per cell
    triangle = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    mask = frame.convex_polygon_mask(triangle)
    ys, xs = np.mgrid[0:24, 0:24] + 0.5
    assert (mask == (xs + ys < 10)).all()
