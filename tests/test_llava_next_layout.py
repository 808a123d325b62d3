"""The anyres token layout of LLaVA-NeXT and LLaVA-OneVision: with the vision tower replaced by a mean-colour
pass-through (the real tiles, patch order, stitching, un-padding and pooling), each cell painted by its (row, col)
comes back at the image token the layout names, on the base and on the stitched grid; newline tokens are no cell;
corner markers light the corner cells; grid boxes map back to pixels computed by hand (the un-padding, the 6 px of
each 384 px tile SigLIP never reads, OneVision's pooling); the released geometries count the tokens their
processors expand; `TiledFrame` agrees with `ImageFrame` where both can express a grid."""

import numpy as np
import pytest
import torch

from annotator.lvlm.anyres import AnyresGeometry
from tests.tiny_llava import random_image
from tests.tiny_llava_next import NEXT, ONEVISION, tiny_anyres, tiny_processor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPECS = {"llava-next": NEXT, "llava-onevision": ONEVISION}
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])
STEP = 9  # colour levels per row / column index
NEWLINE = -7.0  # what the colour models' newline embedding holds


class ColourTower(torch.nn.Module):
    """The vision tower replaced: every patch (of each tile, in the convolution's order, the unread strip of a
    tile not read) becomes its mean colour in 0-255, after a zero CLS for CLIP; the projector then copies it."""

    def __init__(self, patch: int, hidden: int, cls: bool) -> None:
        super().__init__()
        self.patch, self.hidden, self.cls = patch, hidden, cls
        self.dtype = torch.float32

    def forward(self, pixels: torch.Tensor, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        mean = torch.nn.functional.avg_pool2d(pixels, self.patch)  # [tiles, 3, n, n]: the first n * patch px
        colour = mean * torch.tensor(CLIP_STD).view(1, 3, 1, 1) + torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        tokens = colour.float().flatten(2).transpose(1, 2) * 255
        states = torch.zeros(pixels.shape[0], int(self.cls) + tokens.shape[1], self.hidden)
        states[:, int(self.cls) :, :3] = tokens
        return BaseModelOutputWithPooling(last_hidden_state=states, hidden_states=(states,) * 4)


def colour_engine(spec):
    from annotator.lvlm.engine import LvlmEngine

    model = tiny_anyres(spec)
    model.model.vision_tower = ColourTower(spec.patch_size, spec.hidden_size, cls=spec.family == "llava_next")
    model.model.multi_modal_projector = torch.nn.Identity()
    with torch.no_grad():
        model.model.image_newline.fill_(NEWLINE)
    return LvlmEngine(model, tiny_processor(spec))


def decoder_input_at_image_tokens(engine, image: np.ndarray, expression: str = "a dog") -> np.ndarray:
    """The first three channels of what layer 0 of the text model receives at each image token."""
    seen = []
    layer = engine.family.text_model.layers[0]
    hook = layer.register_forward_pre_hook(lambda module, args, kwargs: seen.append(args[0]), with_kwargs=True)
    try:
        engine.image_attention(image, expression, heads=[(0, 0)])
    finally:
        hook.remove()
    prompt = engine.prompt(expression, (image.shape[1], image.shape[0]))
    return seen[0][0, prompt.prefix.image_positions, :3].numpy()


def cell_painted_image(frame) -> np.ndarray:
    """An image whose pixels are coloured by the grid cell their centre lies in: (STEP*row, STEP*col, 200)."""
    ys, xs = np.mgrid[0 : frame.height, 0 : frame.width] + 0.5
    grid = frame.to_grid(np.stack([xs, ys], axis=-1))
    rows, cols = np.floor(grid[..., 1]).astype(int), np.floor(grid[..., 0]).astype(int)
    return np.stack([rows * STEP, cols * STEP, np.full_like(rows, 200)], axis=-1).clip(0, 255).astype(np.uint8)


def inside_fraction(frame) -> np.ndarray:
    """For each cell, the share of it that is picture (the rest: padding), `[grid_h, grid_w]`."""
    share = np.empty(frame.grid_hw)
    for r, c in np.ndindex(*frame.grid_hw):
        x0, y0, x1, y1 = frame.box_to_pixels((c, r, c + 1, r + 1), clip=False)
        inside_x = min(x1, frame.width) - max(x0, 0)
        inside_y = min(y1, frame.height) - max(y0, 0)
        share[r, c] = max(inside_x, 0) * max(inside_y, 0) / ((x1 - x0) * (y1 - y0))
    return share


LAYOUT_SIZES = {"wide-padded": (130, 50), "tall-padded": (60, 170), "square-ish": (160, 150), "pooled": (300, 290)}


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
@pytest.mark.parametrize("grid", [0, 1], ids=["base", "stitched"])
@pytest.mark.parametrize("width, height", LAYOUT_SIZES.values(), ids=LAYOUT_SIZES.keys())
def test_the_anyres_layout_names_the_cell_every_image_token_carries(spec, grid, width, height):
    engine = colour_engine(spec)
    layout = engine.layout_for(width, height)
    frame = layout.grids[grid].frame
    received = decoder_input_at_image_tokens(engine, cell_painted_image(frame))
    cells = layout.cells()
    mine = cells[:, 0] == grid
    share = inside_fraction(frame)[cells[mine, 1], cells[mine, 2]]
    # the blue channel is the share of the cell that is picture (padding is black), to the resampling's blur
    np.testing.assert_allclose(received[mine, 2] / 200, share, atol=0.06)
    seen = share > 0.3
    assert seen.sum() >= 8
    # the processor resizes with bicubic filtering (and OneVision pools bilinearly): colours blur across cell edges
    spelled = received[mine][seen, :2] / (received[mine][seen, 2:] / 200)
    assert (np.rint(spelled / STEP) == cells[mine][seen, 1:]).all()


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_the_newline_tokens_are_no_cell_and_carry_the_newline_embedding(spec):
    engine = colour_engine(spec)
    layout = engine.layout_for(130, 50)
    received = decoder_input_at_image_tokens(engine, random_image(50, 130))
    no_cell = layout.cells()[:, 0] == -1
    stitched = layout.grids[1]
    assert no_cell.sum() == stitched.frame.grid_h
    ends = [stitched.start + r * stitched.row_stride + stitched.frame.grid_w for r in range(stitched.frame.grid_h)]
    assert np.flatnonzero(no_cell).tolist() == ends
    np.testing.assert_array_equal(received[no_cell], NEWLINE)
    assert (received[~no_cell] >= 0).all()


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
@pytest.mark.parametrize("width, height", [(260, 100), (100, 260)], ids=["wide", "tall"])
def test_a_marker_in_each_corner_lights_the_corner_cells_of_the_stitched_grid(spec, width, height):
    engine = colour_engine(spec)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for y, x in [(0, 0), (0, width - 30), (height - 30, 0), (height - 30, width - 30)]:
        image[y : y + 30, x : x + 30] = 255
    layout = engine.layout_for(width, height)
    brightness = layout.grid_map(decoder_input_at_image_tokens(engine, image)[:, 0])
    gh, gw = layout.grid_hw
    lit = {(int(r), int(c)) for r, c in zip(*np.nonzero(brightness > 128))}
    assert lit == {(0, 0), (0, gw - 1), (gh - 1, 0), (gh - 1, gw - 1)}


LLAVA_NEXT_MISTRAL = AnyresGeometry(
    image_size=336,
    patch_size=14,
    base_hw=(336, 336),
    pinpoints=((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)),
)
ONEVISION_QWEN2 = AnyresGeometry(
    image_size=384,
    patch_size=14,
    base_hw=(384, 384),
    pinpoints=tuple((384 * i, 384 * j) for i in range(1, 7) for j in range(1, 7)),
    max_tiles=9,
)


def test_a_llava_next_stitched_box_maps_back_to_the_pixels_computed_by_hand():
    layout = LLAVA_NEXT_MISTRAL.layout(1000, 750, map_grid=1)
    # canvas 672 x 672: the picture resized to 672 px wide and ceil(750 * (672 / 1000)) px high, which is 505, not
    # 504 (the product is 504.00000000000006 in floating point), pasted (672 - 505) // 2 = 83 px down; 48 x 48
    # patches of 14 px, of which unpad_image keeps int(round(750 * 48 / 1000)) = 36 rows, (48 - 36) // 2 = 6 cut
    # above and below
    assert layout.grid_hw == (36, 48) and layout.num_tokens == 24 * 24 + 36 * 49
    # column c starts at canvas x 14 c, picture x 14 c * 1000 / 672; row r at canvas y 14 (r + 6), picture y
    # (14 (r + 6) - 83) * 750 / 505
    row_y = lambda r: (14 * (r + 6) - 83) * 750 / 505  # noqa: E731
    assert layout.frame.box_to_pixels((12.0, 6.0, 24.0, 18.0)) == pytest.approx((250.0, row_y(6), 500.0, row_y(18)))
    assert layout.frame.box_to_pixels((0.0, 0.0, 48.0, 36.0)) == pytest.approx((0.0, row_y(0), 1000.0, 750.0))
    # the base grid is the picture stretched to 336 x 336: 24 x 24 cells of 1000 / 24 x 750 / 24 px
    assert layout.grids[0].frame.box_to_pixels((6.0, 12.0, 12.0, 24.0)) == pytest.approx((250.0, 375.0, 500.0, 750.0))


def test_a_onevision_box_skips_the_six_pixels_of_each_tile_siglip_never_reads():
    layout = ONEVISION_QWEN2.layout(768, 384, map_grid=1)
    # canvas 384 x 768 (the picture itself): two tiles of 27 x 27 patches of 14 px; each reads 378 of its 384 px
    assert layout.grid_hw == (27, 54) and layout.num_tokens == 27 * 27 + 27 * 55
    # columns 26 (picture x 364-378) and 27 (the second tile's first, x 384-398)
    assert layout.frame.box_to_pixels((26.0, 0.0, 28.0, 13.0)) == pytest.approx((364.0, 0.0, 398.0, 182.0))
    assert layout.frame.to_grid(np.array([[380.0, 381.0]])).tolist() == [[27.0, 27.0]]  # unread: no cell's inside
    # the base grid: 27 patches of 14 px of the 384 px square, the picture stretched to it (2 px a square px across)
    assert layout.grids[0].frame.box_to_pixels((0.0, 0.0, 27.0, 27.0)) == pytest.approx((0.0, 0.0, 756.0, 378.0))


def test_a_large_onevision_picture_is_pooled_to_at_most_nine_tiles_of_tokens():
    layout = ONEVISION_QWEN2.layout(2000, 1500, map_grid=1)
    # canvas 1536 x 2304 (h x w): the picture resized to 2048 x 1536, pasted 128 px right; 108 x 162 patches, of
    # which unpad_image keeps int(round(2000 * 108 / 1500)) = 144 columns, (162 - 144) // 2 = 9 cut each side;
    # sqrt(108 * 144 / (9 * 729)) = 1.54 > 1.1, so pooled to int(108 // 1.54) x int(144 // 1.54) = 70 x 93
    assert layout.grid_hw == (70, 93) and layout.num_tokens == 27 * 27 + 70 * 94
    # the kept columns run from canvas x 9 * 14 = 126 (2 px left of the picture) to 5 * 384 + 18 * 14 = 2172
    # (4 canvas px, 4 * 2000 / 2048 picture px, short of its right edge); the last row ends where the fourth tile
    # row's 27th patch does, 3 * 384 + 378 = 1530 canvas px down
    assert layout.frame.box_to_pixels((0.0, 0.0, 93.0, 70.0), clip=False) == pytest.approx(
        (-2 * 2000 / 2048, 0.0, 2000 - 4 * 2000 / 2048, 1530 * 1500 / 1536)
    )


def test_a_tiled_frame_that_is_one_affine_map_gives_what_the_stretch_image_frame_gives():
    from annotator.grounding.frame import ImageFrame

    tiled = LLAVA_NEXT_MISTRAL.base_frame(301, 157)
    stretch = ImageFrame.for_image(301, 157, 24, 336, fit="stretch")
    grid_map = np.random.default_rng(0).random((24, 24))
    polygon = np.array([[2.3, 1.1], [20.5, 3.7], [17.2, 22.9], [4.4, 15.0]])
    np.testing.assert_allclose(tiled.grid_map_to_pixels(grid_map), stretch.grid_map_to_pixels(grid_map), atol=1e-5)
    np.testing.assert_array_equal(tiled.convex_polygon_mask(polygon), stretch.convex_polygon_mask(polygon))
    assert tiled.box_to_pixels((3.0, 4.5, 11.0, 30.0)) == pytest.approx(stretch.box_to_pixels((3.0, 4.5, 11.0, 30.0)))
    assert tiled.cells_per_pixel == pytest.approx(stretch.cells_per_pixel)
    assert tiled.resized(602, 314).box_to_grid((0, 0, 301, 157)) == pytest.approx((0, 0, 12, 12))


@pytest.mark.parametrize("family", ["llava_next", "llava_onevision"])
def test_the_released_geometries_count_the_image_tokens_the_released_processors_expand(family):
    from transformers import LlavaNextImageProcessor, LlavaNextProcessor, LlavaOnevisionImageProcessor
    from transformers import LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    from tests.tiny_llava_next import tiny_tokenizer

    spec = NEXT if family == "llava_next" else ONEVISION
    if family == "llava_next":  # llava-v1.6's preprocessor_config.json: 336 px, the class's pinpoints
        images = LlavaNextImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
        processor = LlavaNextProcessor(
            image_processor=images,
            tokenizer=tiny_tokenizer(spec),
            patch_size=14,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
        )
        geometry = LLAVA_NEXT_MISTRAL
    else:  # llava-onevision's: 384 px, the class's pinpoints, 729 tokens a tile, anyres_max_9
        processor = LlavaOnevisionProcessor(
            image_processor=LlavaOnevisionImageProcessor(),
            tokenizer=tiny_tokenizer(spec),
            video_processor=LlavaOnevisionVideoProcessor(),
            num_image_tokens=729,
            vision_feature_select_strategy="full",
        )
        geometry = ONEVISION_QWEN2
    assert [tuple(p) for p in processor.image_processor.image_grid_pinpoints] == list(geometry.pinpoints)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    for width, height in [(1000, 750), (640, 480), (2000, 1500), (3000, 250), (250, 3000), (333, 1001), (97, 101)]:
        ids = processor(images=random_image(height, width), text="<image>", return_tensors="pt")["input_ids"]
        assert geometry.layout(width, height, map_grid=1).num_tokens == int((ids == image_id).sum()), (width, height)
