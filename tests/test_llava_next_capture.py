"""LLaVA-NeXT and LLaVA-OneVision through the engine: the captured last-token attention equals the model's own eager
forward head for head (fresh and from a cached prefix), the anyres layout names the cell of every image token
(base grid, stitched grid, newline tokens, un-padding, OneVision's unread tile strips and pooling), grid boxes map
back to pixels computed by hand, truncated loads never build the layers above, and the prompt on the real Qwen
vocabulary is the processor's chat-template sequence cut after the expression."""

import copy
import itertools

import numpy as np
import pytest
import torch

from annotator.lvlm.anyres import AnyresGeometry
from tests.test_official_tokens import EXPRESSIONS as OFFICIAL_EXPRESSIONS
from tests.test_official_tokens import llama_tokenizer  # noqa: F401 (a fixture, found by name)
from tests.tiny_llava import random_image
from tests.tiny_llava_next import NEXT, ONEVISION, eager_anyres_attention, tiny_anyres, tiny_processor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPECS = {"llava-next": NEXT, "llava-onevision": ONEVISION}
SIZES = {"wide": (50, 130), "tall": (170, 60)}  # (height, width)
EXPRESSIONS = ("the red cup on the left", "a dog", "the small cat with the big man")
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])
STEP = 9  # colour levels per row / column index
NEWLINE = -7.0  # what the colour models' newline embedding holds


@pytest.fixture(scope="module", params=SPECS.values(), ids=SPECS.keys())
def built(request):
    """(engine, reference model): the engine's model and a copy of it for the eager reference."""
    from annotator.lvlm.engine import LvlmEngine

    with torch.inference_mode(False):
        model = tiny_anyres(request.param)
        reference = copy.deepcopy(model)
    return LvlmEngine(model, tiny_processor(request.param)), reference


def reference_rows(built, image, expression):
    """The eager forward's last-token attention over all image tokens, `[L, H, num_image_tokens]`."""
    engine, reference = built
    inputs, _ = engine.pixel_values(image)
    prompt = engine.prompt(expression, (image.shape[1], image.shape[0]))
    return eager_anyres_attention(copy.deepcopy(reference), prompt, inputs)


def reference_maps(built, image, expression):
    engine, _ = built
    return engine.layout_for(image.shape[1], image.shape[0]).grid_map(reference_rows(built, image, expression))


@pytest.mark.parametrize("height, width", SIZES.values(), ids=SIZES.keys())
def test_every_layer_and_head_matches_the_eager_forward_on_the_stitched_grid(built, height, width):
    engine, _ = built
    image = random_image(height, width, seed=height + width)
    layout = engine.layout_for(width, height)
    ours = engine.image_attention(image, EXPRESSIONS[0])
    assert ours.shape == (engine.num_layers, engine.num_heads, *layout.grids[1].frame.grid_hw)
    assert layout.grid_hw[1] > layout.grid_hw[0] if width > height else layout.grid_hw[0] > layout.grid_hw[1]
    np.testing.assert_allclose(ours, reference_maps(built, image, EXPRESSIONS[0]), rtol=0, atol=1e-5)


def test_the_base_grid_option_reads_the_base_tokens_of_the_same_forward(built, monkeypatch):
    engine, _ = built
    image = random_image(50, 130, seed=2)
    monkeypatch.setattr(engine.family, "anyres_grid", "base")
    ours = engine.image_attention(image, EXPRESSIONS[1])
    n = engine.family.geometry.n
    expected = reference_rows(built, image, EXPRESSIONS[1])[..., : n * n].reshape(*ours.shape[:2], n, n)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


def test_expressions_against_a_cached_prefix_match_the_eager_forward_in_every_order(built):
    engine, _ = built
    image = random_image(170, 60, seed=9)
    expected = {expression: reference_maps(built, image, expression) for expression in EXPRESSIONS[:2]}
    for order, expressions in enumerate(itertools.permutations(EXPRESSIONS[:2])):
        for i, expression in enumerate(expressions):
            result = engine.head_attention(image, expression, image_id=("orders", order))
            assert result.timing.prefix_cached == (i > 0)
            ours = result.maps.reshape(expected[expression].shape)
            np.testing.assert_allclose(ours, expected[expression], rtol=0, atol=1e-5)


def test_a_head_subset_from_a_cached_prefix_matches_the_same_heads_of_the_eager_forward(built):
    engine, _ = built
    image = random_image(50, 130, seed=3)
    heads = [(engine.num_layers - 1, 1), (1, 0), (0, engine.num_heads - 1)]
    expected = reference_maps(built, image, EXPRESSIONS[2])
    engine.prepare(image, "subset", heads=[(1, 0)])
    ours = engine.image_attention(image, EXPRESSIONS[2], heads=heads, image_id="subset")
    np.testing.assert_allclose(ours, np.stack([expected[l, h] for l, h in heads]), rtol=0, atol=1e-5)


def test_the_reference_maps_are_far_from_uniform_so_the_comparison_means_something(built):
    expected = reference_maps(built, random_image(50, 130, seed=11), EXPRESSIONS[1])
    per_head = expected.reshape(*expected.shape[:2], -1)
    assert (per_head.max(axis=-1) > 2 * per_head.mean(axis=-1)).mean() > 0.5


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_the_layout_counts_the_image_tokens_the_real_processor_expands(spec):
    processor = tiny_processor(spec)
    family = _family(spec)
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}])
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    for width, height in [(130, 50), (60, 170), (160, 150), (40, 40), (500, 90), (90, 700), (333, 331), (61, 59)]:
        ids = processor(images=random_image(height, width), text=text, return_tensors="pt")["input_ids"]
        assert family.layout_for(width, height).num_tokens == int((ids == image_id).sum()), (width, height)


def _family(spec, **engine_kwargs):
    from annotator.lvlm.engine import LvlmEngine

    return LvlmEngine(tiny_anyres(spec), tiny_processor(spec), **engine_kwargs).family


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


def test_the_anyres_grid_option_is_checked_and_chooses_the_grid_maps_are_read_from():
    family = _family(NEXT)
    assert family.layout_for(130, 50).map_grid == 1
    family.anyres_grid = "base"
    assert family.layout_for(130, 50).grid_hw == (4, 4)
    with pytest.raises(ValueError, match="anyres_grid must be one of"):
        family.anyres_grid = "tiles"


def onevision_0_5b_config():
    """llava-hf/llava-onevision-qwen2-0.5b-ov-hf's config.json, the numbers that size the model."""
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    text = Qwen2Config(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=152000,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    )
    vision = SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=26,
        num_attention_heads=16,
        image_size=384,
        patch_size=14,
        vision_use_head=False,
    )
    return LlavaOnevisionConfig(text_config=text, vision_config=vision, image_token_index=151646)


# Qwen2-0.5B: a layer is q (896 x 896 + 896), k and v (896 x 128 + 128 each: 2 key-value heads of 64), o (896 x 896),
# the MLP (3 x 896 x 4864) and two norms (2 x 896); the embedding 152,000 x 896; the final norm 896
QWEN2_0_5B_LAYER = 896 * 896 + 896 + 2 * (896 * 128 + 128) + 896 * 896 + 3 * 896 * 4864 + 2 * 896
QWEN2_0_5B_EMBEDDING = 152000 * 896
# SigLIP so400m (26 layers of 1152): the patch convolution (3 x 14 x 14 x 1152 + 1152), 729 positions x 1152, per
# layer 4 x (1152 x 1152 + 1152) attention, 1152 x 4304 + 4304 and 4304 x 1152 + 1152 MLP, 2 norms (2 x 2 x 1152);
# the post-norm 2 x 1152; the projector 1152 x 896 + 896 and 896 x 896 + 896; the newline embedding 896
SIGLIP_LAYER = 4 * (1152 * 1152 + 1152) + (1152 * 4304 + 4304) + (4304 * 1152 + 1152) + 4 * 1152
VISION_AND_PROJECTOR = (
    3 * 14 * 14 * 1152 + 1152 + 729 * 1152 + 26 * SIGLIP_LAYER + 2 * 1152 + 1152 * 896 + 896 + 896 * 896 + 896 + 896
)


def test_a_truncated_onevision_0_5b_builds_no_parameter_above_the_deepest_head_nor_the_lm_head():
    from annotator.lvlm.checkpoint import grounding_model_class

    full_class, full_config = grounding_model_class(onevision_0_5b_config())
    truncated_class, config = grounding_model_class(onevision_0_5b_config(), truncate_after_layer=11)
    with torch.device("meta"):
        full, truncated = full_class(full_config), truncated_class(config)
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    # 893,675,552 parameters (1.79 GB in bf16, the size of its model.safetensors): the LM head is tied
    assert count(full) == VISION_AND_PROJECTOR + QWEN2_0_5B_EMBEDDING + 24 * QWEN2_0_5B_LAYER + 896 == 893_675_552
    assert count(truncated) == VISION_AND_PROJECTOR + QWEN2_0_5B_EMBEDDING + 12 * QWEN2_0_5B_LAYER + 896
    assert len(truncated.model.language_model.layers) == 12 and not hasattr(truncated, "lm_head")


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_a_truncated_load_of_a_saved_checkpoint_gives_the_whole_models_maps(spec, tmp_path):
    from annotator.lvlm.engine import LvlmEngine

    tiny_anyres(spec).save_pretrained(tmp_path)
    tiny_processor(spec).save_pretrained(tmp_path)
    whole = LvlmEngine.load(tmp_path)
    truncated = LvlmEngine.load(tmp_path, truncate_after_layer=1)
    image = random_image(50, 130, seed=4)
    heads = [(1, 0), (0, 3)]
    assert truncated.num_layers == 2 and not hasattr(truncated.model, "lm_head")
    np.testing.assert_allclose(
        truncated.image_attention(image, "a red cup", heads=heads),
        whole.image_attention(image, "a red cup", heads=heads),
        rtol=0,
        atol=1e-6,
    )


ONEVISION_ADDED_TOKENS = ["<image>", "<video>"]


def real_onevision_processor():
    """LlavaOnevisionProcessor with the real Qwen2 vocabulary (tests/qwen_tokenizer.py) plus OneVision's own added
    tokens `<image>` and `<video>`, the released chat template and image processor."""
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    from tests.qwen_tokenizer import real_qwen_tokenizer
    from tests.tiny_llava_next import ONEVISION_TEMPLATE

    tokenizer = real_qwen_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ONEVISION_ADDED_TOKENS})
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=729,
        vision_feature_select_strategy="full",
        chat_template=ONEVISION_TEMPLATE,
    )


REAL_EXPRESSIONS = ("the man in the 2nd row", "  a red cup ", "猫", "left-most ZEBRA!", "dog\non the sofa")


def test_the_onevision_prompt_on_the_real_tokenizer_is_the_processors_sequence_cut_after_the_expression():
    from annotator.lvlm.llava_next import ChatPromptBuilder

    processor = real_onevision_processor()
    builder = ChatPromptBuilder(processor, max_expression_tokens=64, max_positions=32768, model_id="onevision")
    image = random_image(300, 500)
    for expression in REAL_EXPRESSIONS:
        text = expression.strip()
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        rendered = processor.apply_chat_template(conversation)
        assert rendered.endswith(text + "<|im_end|>\n")
        ids = processor(images=image, text=rendered, return_tensors="pt")["input_ids"][0].tolist()
        expected = ids[: len(ids) - len(processor.tokenizer("<|im_end|>\n")["input_ids"])]
        prompt = builder.build(expression, expected.count(processor.image_token_id))
        assert list(prompt.ids) == expected
        assert processor.tokenizer.decode(prompt.expression_ids) == text
        assert processor.tokenizer.decode(prompt.prefix.ids[: prompt.prefix.image_start]) == "<|im_start|>user "


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


VICUNA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}"
    "{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
"""llava-v1.6-vicuna-7b-hf's chat template, as its chat_template.json writes it."""


def test_the_vicuna_prompt_on_the_real_llama_tokenizer_is_the_processors_sequence_cut_after_the_expression(
    llama_tokenizer,
):
    from transformers import LlavaNextImageProcessor, LlavaNextProcessor

    from annotator.lvlm.llava_next import ChatPromptBuilder

    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
        tokenizer=llama_tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VICUNA_TEMPLATE,
    )
    builder = ChatPromptBuilder(processor, max_expression_tokens=64, max_positions=4096, model_id="vicuna")
    image = random_image(300, 500)
    for expression in OFFICIAL_EXPRESSIONS:
        text = expression.strip()
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        ids = processor(images=image, text=processor.apply_chat_template(conversation), return_tensors="pt")
        ids = ids["input_ids"][0].tolist()
        prompt = builder.build(expression, ids.count(32000))
        assert list(prompt.ids) == ids[: len(prompt.ids)], expression
        assert llama_tokenizer.decode(ids[len(prompt.ids) :]).strip() == ""  # the template's trailing space
        assert llama_tokenizer.decode(prompt.expression_ids).strip() == text
        assert prompt.ids[:6] == (1, 3148, 1001, 29901, 29871, 32000)  # <s> USER: <image>


@pytest.mark.parametrize("spec, strategy", [(NEXT, "full"), (ONEVISION, "default")], ids=["llava-next", "onevision"])
def test_a_feature_strategy_that_breaks_the_tile_grids_is_refused_in_one_line(spec, strategy):
    from annotator.errors import ModelUnavailable
    from annotator.lvlm.engine import LvlmEngine

    model = tiny_anyres(spec)
    model.config.vision_feature_select_strategy = strategy
    with pytest.raises(ModelUnavailable, match=f"vision_feature_select_strategy '{strategy}'"):
        LvlmEngine(model, tiny_processor(spec))


def test_a_processor_of_other_canvases_is_refused_in_one_line():
    from annotator.errors import ModelUnavailable
    from annotator.lvlm.engine import LvlmEngine

    processor = tiny_processor(NEXT)
    processor.image_processor.image_grid_pinpoints = [[56, 56]]
    with pytest.raises(ModelUnavailable, match="the processor belongs to another checkpoint"):
        LvlmEngine(tiny_anyres(NEXT), processor)


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


def hub_original_keys(folder) -> None:
    """Rename the saved weights to the names the llava-hf checkpoints were uploaded with (`language_model.model.*`,
    `language_model.lm_head`, `vision_tower`, `multi_modal_projector`, `image_newline` at the top)."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    renamed = {}
    for key, tensor in load_file(str(path)).items():
        if key.startswith("model.language_model."):
            key = "language_model.model." + key.removeprefix("model.language_model.")
        elif key.startswith("lm_head."):
            key = "language_model." + key
        else:
            key = key.removeprefix("model.")
        renamed[key] = tensor
    assert any(k.startswith("language_model.model.layers.2.") for k in renamed)
    save_file(renamed, str(path), metadata={"format": "pt"})


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_a_truncated_load_of_a_checkpoint_in_the_hubs_original_key_names_gives_the_whole_models_maps(spec, tmp_path):
    from annotator.lvlm.engine import LvlmEngine

    model = tiny_anyres(spec)
    model.save_pretrained(tmp_path)
    tiny_processor(spec).save_pretrained(tmp_path)
    hub_original_keys(tmp_path)
    truncated = LvlmEngine.load(tmp_path, truncate_after_layer=1)
    original = LvlmEngine(model, tiny_processor(spec))
    image = random_image(170, 60, seed=6)
    heads = [(1, 2), (0, 0)]
    np.testing.assert_allclose(
        truncated.image_attention(image, "a dog", heads=heads),
        original.image_attention(image, "a dog", heads=heads),
        rtol=0,
        atol=1e-6,
    )
