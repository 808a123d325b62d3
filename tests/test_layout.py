"""Token layouts: which cell of which grid each image token is, and how a grid maps to original pixels.

The oracle tests give each family a vision tower that passes every patch's mean colour through unchanged (the
real patch order, merging and window reordering of the real classes, only the learned maps replaced), paint each
model-grid cell of an image in a colour that spells its (row, column), and read back what the text decoder
receives at each image position: the layout must name that cell for every image token.
"""

import numpy as np
import pytest
import torch

from annotator.grounding.frame import ImageFrame
from annotator.lvlm.layout import GridPlacement, TokenLayout
from annotator.lvlm.qwen2_vl import qwen_layout
from tests.tiny_llava import SPEC_FINE, tiny_llava, tiny_processor
from tests.tiny_qwen import QWEN2_5_VL, QWEN2_VL, tiny_processor as tiny_qwen_processor, tiny_qwen

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])
STEP = 9  # colour levels per row / column index


class PatchColour(torch.nn.Module):
    """Qwen's patch embedding replaced: each flattened patch `[3 * 2 * 14 * 14]` -> its mean colour, in 0-255."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.gain = torch.nn.Parameter(torch.ones(()))  # the tower's dtype is read from its parameters

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        normalized = patches.view(patches.shape[0], 3, -1).mean(-1)
        colour = normalized * torch.tensor(CLIP_STD, dtype=patches.dtype) + torch.tensor(CLIP_MEAN, dtype=patches.dtype)
        out = torch.zeros(patches.shape[0], self.width, dtype=patches.dtype)
        out[:, :3] = colour * 255 * self.gain
        return out


class MergeMean(torch.nn.Module):
    """Qwen's patch merger replaced: the mean of each run of 4 patches (the real merger's grouping)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.width, self.hidden = width, hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = x.view(-1, 4, self.width).mean(1)
        out = torch.zeros(merged.shape[0], self.hidden, dtype=x.dtype)
        out[:, :3] = merged[:, :3]
        return out


def colour_qwen_engine(spec):
    from annotator.lvlm.engine import LvlmEngine

    model = tiny_qwen(spec)
    visual = model.model.visual
    width = visual.patch_embed.embed_dim if hasattr(visual.patch_embed, "embed_dim") else spec.vision_hidden_size
    visual.patch_embed = PatchColour(width)
    visual.blocks = torch.nn.ModuleList()
    visual.merger = MergeMean(width, spec.hidden_size)
    return LvlmEngine(model, tiny_qwen_processor(spec))


class ColourTower(torch.nn.Module):
    """LLaVA's CLIP tower replaced: hidden states whose CLS is 0 and whose patch tokens are their mean colour, in
    the conv + flatten order of CLIP's patch embedding; the projector then copies them."""

    def __init__(self, patch: int, hidden: int) -> None:
        super().__init__()
        self.patch, self.hidden = patch, hidden
        self.dtype = torch.float32

    def forward(self, pixels: torch.Tensor, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        mean = torch.nn.functional.avg_pool2d(pixels, self.patch)  # [1, 3, gh, gw]
        colour = mean * torch.tensor(CLIP_STD).view(1, 3, 1, 1) + torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        tokens = colour.float().flatten(2).transpose(1, 2) * 255
        states = torch.zeros(1, 1 + tokens.shape[1], self.hidden)
        states[:, 1:, :3] = tokens
        return BaseModelOutputWithPooling(last_hidden_state=states, hidden_states=(states,) * 4)


def colour_llava_engine(spec):
    from annotator.lvlm.engine import LvlmEngine

    model = tiny_llava(spec)
    model.model.vision_tower = ColourTower(spec.patch_size, spec.hidden_size)
    model.model.multi_modal_projector = torch.nn.Identity()
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


def cell_painted_image(frame: ImageFrame) -> np.ndarray:
    """An image whose pixels are coloured by the grid cell their centre lies in: (STEP*row, STEP*col, 200)."""
    ys, xs = np.mgrid[0 : frame.height, 0 : frame.width] + 0.5
    grid = frame.to_grid(np.stack([xs, ys], axis=-1))
    rows, cols = np.floor(grid[..., 1]).astype(int), np.floor(grid[..., 0]).astype(int)
    return np.stack([rows * STEP, cols * STEP, np.full_like(rows, 200)], axis=-1).astype(np.uint8)


QWEN_SIZES = {"2to1": (224, 112), "1to3": (84, 252), "square": (168, 168)}


@pytest.mark.parametrize("spec", [QWEN2_VL, QWEN2_5_VL], ids=["qwen2-vl", "qwen2.5-vl"])
@pytest.mark.parametrize("width, height", QWEN_SIZES.values(), ids=QWEN_SIZES.keys())
def test_the_qwen_layout_names_the_cell_every_image_token_carries(spec, width, height):
    engine = colour_qwen_engine(spec)
    layout = engine.layout_for(width, height)
    received = decoder_input_at_image_tokens(engine, cell_painted_image(layout.frame))
    cells = layout.cells()
    assert received.shape[0] == layout.num_tokens == layout.frame.grid_h * layout.frame.grid_w
    np.testing.assert_allclose(received[:, 0], STEP * cells[:, 1], atol=0.5)
    np.testing.assert_allclose(received[:, 1], STEP * cells[:, 2], atol=0.5)


@pytest.mark.parametrize("width, height", [(64, 32), (16, 48)], ids=["2to1", "1to3"])
def test_the_llava_layout_names_the_cell_every_image_token_carries_and_padding_is_padding(width, height):
    engine = colour_llava_engine(SPEC_FINE)
    layout = engine.layout_for(width, height)
    received = decoder_input_at_image_tokens(engine, cell_painted_image(layout.frame))
    cells = layout.cells()
    low, _ = layout.frame.to_pixels(np.stack([cells[:, 2], cells[:, 1]], axis=-1).astype(float))
    high, _ = layout.frame.to_pixels(np.stack([cells[:, 2] + 1, cells[:, 1] + 1], axis=-1).astype(float))
    inside = (low >= -1e-9).all(1) & (high[:, 0] <= width + 1e-9) & (high[:, 1] <= height + 1e-9)
    padding = (high[:, 0] <= 0) | (low[:, 0] >= width) | (high[:, 1] <= 0) | (low[:, 1] >= height)
    assert inside.sum() >= 8 and padding.sum() >= 8
    # the processor resizes the padded square with bicubic filtering: colours blur a little across cell edges
    assert (np.rint(received[inside, :2] / STEP) == cells[inside, 1:]).all()
    np.testing.assert_allclose(received[padding], np.broadcast_to(np.floor(255 * CLIP_MEAN), (padding.sum(), 3)), atol=1.5)


@pytest.mark.parametrize("width, height", [(300, 150), (150, 450)], ids=["2to1", "1to3"])
def test_a_marker_in_each_corner_lights_the_corner_cells(width, height):
    engine = colour_qwen_engine(QWEN2_VL)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for y, x in [(0, 0), (0, width - 30), (height - 30, 0), (height - 30, width - 30)]:
        image[y : y + 30, x : x + 30] = 255
    layout = engine.layout_for(width, height)
    brightness = layout.grid_map(decoder_input_at_image_tokens(engine, image)[:, 0])
    gh, gw = layout.grid_hw
    lit = {(int(r), int(c)) for r, c in zip(*np.nonzero(brightness > 128))}
    assert lit == {(0, 0), (0, gw - 1), (gh - 1, 0), (gh - 1, gw - 1)}


def test_a_qwen_grid_box_maps_back_to_the_pixels_computed_by_hand():
    layout = qwen_layout(1000, 750)  # smart resize: 1008 x 756 px, 36 x 27 tokens of 28 px
    assert (layout.grid_hw, layout.num_tokens) == ((27, 36), 972)
    # a cell is 1000 / 36 = 27.78 px wide and 750 / 27 = 27.78 px high: columns 9-18, rows 3-6
    x0, y0, x1, y1 = layout.frame.box_to_pixels((9.0, 3.0, 18.0, 6.0))
    assert (x0, x1) == pytest.approx((250.0, 500.0))
    assert (y0, y1) == pytest.approx((750 * 3 / 27, 750 * 6 / 27))


def test_qwen_cells_are_not_square_in_original_pixels_on_a_resized_image():
    frame = qwen_layout(300, 150).frame  # smart resize: 308 x 140 px, 11 x 5 tokens
    assert frame.grid_hw == (5, 11)
    assert frame.cells_per_pixel == pytest.approx((11 / 300, 5 / 150))
    assert frame.box_to_pixels((0, 0, 11, 5)) == pytest.approx((0, 0, 300, 150))


def test_a_picture_at_the_default_budget_gets_the_documented_token_counts():
    assert qwen_layout(1000, 750).num_tokens == 36 * 27
    assert qwen_layout(1600, 1200).grid_hw == (30, 41)  # 1,230 tokens: shrunk to max_pixels = 1280 tokens
    assert qwen_layout(1600, 1200, max_pixels=28 * 28 * 16384).grid_hw == (43, 57)


def test_an_image_over_200_times_longer_than_wide_is_refused_in_one_line():
    with pytest.raises(ValueError, match="more than 200 times longer than wide"):
        qwen_layout(20100, 100)


def test_newline_tokens_between_rows_are_no_cell_and_are_skipped_by_the_maps():
    frame = ImageFrame.for_image(30, 20, (2, 3), 30, fit="stretch")
    layout = TokenLayout(grids=(GridPlacement(frame, start=1, row_stride=4),), num_tokens=9)
    cells = layout.cells()
    assert cells[:, 1:].tolist() == [[-1, -1], [0, 0], [0, 1], [0, 2], [-1, -1], [1, 0], [1, 1], [1, 2], [-1, -1]]
    assert layout.grid_map(np.arange(9.0)).tolist() == [[1, 2, 3], [5, 6, 7]]


def test_two_grids_give_two_maps_and_the_map_grid_is_the_one_read():
    base = ImageFrame.for_image(20, 20, (2, 2), 20, fit="stretch")
    tile = ImageFrame.for_image(20, 20, (1, 3), 20, fit="stretch")
    layout = TokenLayout(grids=(GridPlacement(base, 0, 2), GridPlacement(tile, 4, 3)), num_tokens=7, map_grid=1)
    maps = layout.grid_maps(np.arange(7.0))
    assert [m.tolist() for m in maps] == [[[0, 1], [2, 3]], [[4, 5, 6]]]
    assert layout.grid_map(np.arange(7.0)).tolist() == [[4, 5, 6]] and layout.frame == tile


def test_overlapping_grids_are_refused():
    frame = ImageFrame.for_image(20, 20, (2, 2), 20, fit="stretch")
    with pytest.raises(ValueError, match="overlap"):
        TokenLayout(grids=(GridPlacement(frame, 0, 2), GridPlacement(frame, 3, 2)), num_tokens=8)
