"""InternVL3 through the engine: the captured last-token attention equals the model's own eager forward head for
head over the tiles and the thumbnail, fresh and from a cached prefix; each image token carries the cell its layout
names; the truncated load; the prompt with InternVL3's real tokenizer; and the CLI and the app on a saved tiny model."""

import copy
import json

import numpy as np
import pytest
import torch

from annotator.cli import main
from annotator.evaluation_files import read_predictions
from annotator.lvlm.internvl import internvl_layout
from annotator.synthetic.scene_folder import write_scene_folder
from annotator.synthetic.scenes import SceneConfig
from annotator.ui.settings import AppSettings, ModelSettings
from tests.test_layout import STEP, cell_painted_image
from tests.tiny_internvl import (
    INTERNVL3,
    eager_internvl_attention,
    real_internvl_tokenizer,
    tiny_config,
    tiny_internvl,
    tiny_processor,
)
from tests.tiny_llava import random_image
from tests.ui_fixtures import (  # noqa: F401 (fixtures are found by name)
    MODEL_TIMEOUT_MS,
    isolated_qsettings,
    make_window,
    open_folder,
    propose,
    write_scenes,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZES = {"wide-2to1": (60, 120), "tall-1to3": (150, 50), "one-tile": (100, 100)}
EXPRESSIONS = ("the red cup on the left", "a dog", "the small cat with the big man")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def built():
    """(engine, reference model): the engine's model and a copy of it for the eager reference."""
    from annotator.lvlm.engine import LvlmEngine

    with torch.inference_mode(False):
        model = tiny_internvl()
        reference = copy.deepcopy(model)
    return LvlmEngine(model, tiny_processor()), reference


def reference_rows(built, image, expression) -> np.ndarray:
    """The eager forward's last-token attention over every image token, `[L, H, num_image_tokens]`."""
    engine, reference = built
    pixels, _ = engine.pixel_values(image)
    prompt = engine.prompt(expression, (image.shape[1], image.shape[0]))
    return eager_internvl_attention(copy.deepcopy(reference), prompt, pixels)


@pytest.fixture
def read_maps_from(built):
    """Set the engine's map grid for one test, and put it back."""
    family = built[0].family
    yield lambda source: setattr(family, "read_maps_from", source)
    family.read_maps_from = "tiles"


@pytest.mark.parametrize("source", ["tiles", "thumbnail"])
@pytest.mark.parametrize("height, width", SIZES.values(), ids=SIZES.keys())
def test_every_layer_and_head_matches_the_eager_forward_on_the_tiles_and_the_thumbnail(
    built, read_maps_from, source, height, width
):
    engine, _ = built
    read_maps_from(source)
    image = random_image(height, width, seed=height + width)
    layout = engine.layout_for(width, height)
    ours = engine.image_attention(image, EXPRESSIONS[0])
    expected = layout.grid_map(reference_rows(built, image, EXPRESSIONS[0]))
    assert ours.shape == (engine.num_layers, engine.num_heads, *layout.grid_hw)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


def test_expressions_against_a_cached_prefix_match_the_eager_forward(built):
    engine, _ = built
    image = random_image(150, 50, seed=7)
    layout = engine.layout_for(50, 150)
    for i, expression in enumerate(EXPRESSIONS):
        result = engine.head_attention(image, expression, image_id="cached")
        assert result.timing.prefix_cached == (i > 0)
        expected = layout.grid_map(reference_rows(built, image, expression))
        np.testing.assert_allclose(result.maps.reshape(expected.shape), expected, rtol=0, atol=1e-5)


def test_a_head_subset_from_a_cached_prefix_matches_the_same_heads_of_the_eager_forward(built):
    engine, _ = built
    image = random_image(60, 120, seed=3)
    heads = [(engine.num_layers - 1, 1), (1, 0), (2, engine.num_heads - 1)]
    expected = engine.layout_for(120, 60).grid_map(reference_rows(built, image, EXPRESSIONS[2]))
    engine.prepare(image, "subset", heads=[(1, 0)])
    ours = engine.image_attention(image, EXPRESSIONS[2], heads=heads, image_id="subset")
    np.testing.assert_allclose(ours, np.stack([expected[l, h] for l, h in heads]), rtol=0, atol=1e-5)


def test_the_reference_maps_are_far_from_uniform_so_the_comparison_means_something(built):
    rows = reference_rows(built, random_image(60, 120, seed=11), EXPRESSIONS[1])
    assert (rows.max(axis=-1) > 2 * rows.mean(axis=-1)).mean() > 0.5


class PatchColour(torch.nn.Module):
    """InternViT replaced: a zero CLS, then each 14 px patch's mean colour (0-255) in the first three channels, in
    the conv + flatten order of its real patch embedding."""

    def __init__(self, patch: int, hidden: int) -> None:
        super().__init__()
        self.patch, self.hidden = patch, hidden
        self.dtype = torch.float32

    def forward(self, pixel_values: torch.Tensor, **kwargs):
        from transformers.modeling_outputs import BaseModelOutput

        mean = torch.nn.functional.avg_pool2d(pixel_values, self.patch)
        std, centre = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        colour = ((mean * std + centre) * 255).float().flatten(2).transpose(1, 2)
        states = torch.zeros(pixel_values.shape[0], 1 + colour.shape[1], self.hidden)
        states[:, 1:, :3] = colour
        return BaseModelOutput(last_hidden_state=states, hidden_states=(states,) * 4)


class MeanOfShuffled(torch.nn.Module):
    """The projector replaced: the mean colour of the 2 x 2 patches the real pixel shuffle put in each token."""

    def __init__(self, vision_hidden: int, hidden: int) -> None:
        super().__init__()
        self.vision_hidden, self.hidden = vision_hidden, hidden

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        colours = features.view(*features.shape[:-1], 4, self.vision_hidden)[..., :3].mean(-2)
        out = torch.zeros(*features.shape[:-1], self.hidden)
        out[..., :3] = colours
        return out


def colour_engine():
    from annotator.lvlm.engine import LvlmEngine

    model = tiny_internvl()
    model.model.vision_tower = PatchColour(INTERNVL3.patch_size, INTERNVL3.vision_hidden_size)
    model.model.multi_modal_projector = MeanOfShuffled(INTERNVL3.vision_hidden_size, INTERNVL3.hidden_size)
    return LvlmEngine(model, tiny_processor())


def decoder_input_at_image_tokens(engine, image: np.ndarray) -> np.ndarray:
    seen = []
    layer = engine.family.text_model.layers[0]
    hook = layer.register_forward_pre_hook(lambda module, args, kwargs: seen.append(args[0]), with_kwargs=True)
    try:
        engine.image_attention(image, "a dog", heads=[(0, 0)])
    finally:
        hook.remove()
    prompt = engine.prompt("a dog", (image.shape[1], image.shape[0]))
    return seen[0][0, prompt.prefix.image_positions, :3].numpy()


@pytest.mark.parametrize("grid", [0, 1], ids=["tiles", "thumbnail"])
@pytest.mark.parametrize("width, height", [(224, 112), (112, 336), (300, 180)], ids=["2to1", "1to3", "5to3"])
def test_every_image_token_carries_the_cell_its_layout_names(grid, width, height):
    engine = colour_engine()
    layout = engine.layout_for(width, height)
    assert len(layout.grids) == 2
    received = decoder_input_at_image_tokens(engine, cell_painted_image(layout.grids[grid].frame))
    cells = layout.cells()
    ours = cells[:, 0] == grid
    assert ours.sum() == np.prod(layout.grids[grid].frame.grid_hw) and (cells[:, 0] >= 0).all()
    # bicubic resizing blurs colours a little across cell edges
    assert (np.rint(received[ours, :2] / STEP) == cells[ours, 1:]).all()


@pytest.mark.parametrize("width, height", [(448, 224), (224, 672)], ids=["2to1", "1to3"])
def test_a_marker_in_each_corner_lights_the_corner_cells_of_the_stitched_tiles(width, height):
    engine = colour_engine()
    image = np.zeros((height, width, 3), dtype=np.uint8)
    side = 56  # one cell: the tiles are the image itself at 112 px, each cut into 4 x 4 cells of 28 px
    for y, x in [(0, 0), (0, width - side), (height - side, 0), (height - side, width - side)]:
        image[y : y + side, x : x + side] = 255
    layout = engine.layout_for(width, height)
    brightness = layout.grid_map(decoder_input_at_image_tokens(engine, image)[:, 0])
    gh, gw = layout.grid_hw
    lit = {(int(r), int(c)) for r, c in zip(*np.nonzero(brightness > 128))}
    assert (gh, gw) == (height // 28 // 2, width // 28 // 2)
    assert lit == {(0, 0), (0, gw - 1), (gh - 1, 0), (gh - 1, gw - 1)}


def test_a_grid_box_on_the_stitched_tiles_maps_back_to_the_pixels_computed_by_hand():
    layout = internvl_layout(1000, 750)  # 4 x 3 tiles of 448 px (aspect 4:3 exactly) and the thumbnail
    assert [grid.frame.grid_hw for grid in layout.grids] == [(48, 64), (16, 16)]
    assert layout.num_tokens == 13 * 256 and layout.grids[1].start == 12 * 256
    # a cell is 1000 / 64 = 15.625 px wide and 750 / 48 = 15.625 px high
    x0, y0, x1, y1 = layout.frame.box_to_pixels((16.0, 12.0, 32.0, 24.0))
    assert (x0, y0, x1, y1) == pytest.approx((250.0, 187.5, 500.0, 375.0))
    assert internvl_layout(1000, 750, read_maps_from="thumbnail").frame.cells_per_pixel == (16 / 1000, 16 / 750)


def test_the_stitched_grid_reads_tile_after_tile():
    layout = internvl_layout(896, 448, tile_grid=2)  # 2 x 1 tiles of 2 x 2 cells, then the thumbnail
    assert layout.grid_map(np.arange(12.0)).tolist() == [[0, 1, 4, 5], [2, 3, 6, 7]]
    assert layout.grid_maps(np.arange(12.0))[1].tolist() == [[8, 9], [10, 11]]


@pytest.mark.parametrize("budget, tiles", [(64, 3), (47, 1), (10, 1)])
def test_an_image_token_budget_bounds_the_tiles_beside_the_thumbnail(budget, tiles):
    from annotator.lvlm.engine import LvlmEngine

    engine = LvlmEngine(tiny_internvl(), tiny_processor(), max_image_tokens=budget)
    layout = engine.layout_for(600, 100)  # 6 x 1 tiles and the thumbnail unbounded
    assert layout.num_tokens == (tiles + (tiles > 1)) * 16
    assert engine.pixel_values(random_image(100, 600))[0].shape[0] == tiles + (tiles > 1)


def test_a_truncated_load_never_materialises_the_layers_above_nor_the_lm_head():
    """InternVL3-1B-hf's config: InternViT-300M (24 layers, hidden 1024, MLP 4096, 448 px, 14 px patches), the
    projector LayerNorm(4096) -> 4096 x 896 -> 896 x 896, Qwen2.5-0.5B (24 layers, hidden 896, MLP 4864, 14 heads,
    2 KV heads, vocab 151674), an LM head of its own: 938,193,024 parameters."""
    from transformers import InternVLConfig

    from annotator.lvlm.checkpoint import grounding_model_class

    config = InternVLConfig(
        text_config=dict(
            model_type="qwen2", vocab_size=151674, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
            num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
        ),
        vision_config=dict(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
            image_size=[448, 448], patch_size=[14, 14], use_absolute_position_embeddings=True, attention_bias=True,
        ),
        tie_word_embeddings=False,
    )  # fmt: skip
    model_class, config = grounding_model_class(config, truncate_after_layer=9)
    with torch.device("meta"):
        model = model_class(config)
    per_layer = (896 * 896 + 896) + 2 * (896 * 128 + 128) + 896 * 896 + 3 * 896 * 4864 + 2 * 896  # 14,912,384
    vision = 304_012_288 + 4_482_816  # InternViT-300M; the projector 2*4096 + 4096*896+896 + 896*896+896
    sizes = {name: p.numel() * 2 for name, p in model.named_parameters()}  # bytes in bf16
    assert len(model.model.language_model.layers) == 10 and not hasattr(model, "lm_head")
    assert sum(sizes.values()) == 2 * (vision + 151674 * 896 + 10 * per_layer + 896) == 1_187_039_488


def test_the_prompt_with_internvl3s_real_tokenizer_ends_on_the_expressions_last_token():
    from transformers import InternVLForConditionalGeneration

    from annotator.lvlm.engine import LvlmEngine

    tokenizer = real_internvl_tokenizer()
    config = tiny_config(vocab_size=len(tokenizer), image_token_id=tokenizer.context_image_token_id)
    engine = LvlmEngine(InternVLForConditionalGeneration(config), tiny_processor(tokenizer=tokenizer))
    prompt = engine.prompt("the dog on the left", (224, 112))
    assert prompt.prefix.num_image_tokens == 3 * 16 and prompt.prefix.image_start == 4
    tokens = tokenizer.convert_ids_to_tokens(list(prompt.ids))
    assert tokens[:4] == ["<|im_start|>", "user", "Ċ", "<img>"] and set(tokens[4:52]) == {"<IMG_CONTEXT>"}
    assert tokens[52:] == ["</img>", "Ċ", "the", "Ġdog", "Ġon", "Ġthe", "Ġleft"]
    assert prompt.ids[3:5] == (151665, 151667) and prompt.ids[52] == 151666


def test_a_processor_without_a_chat_template_gets_the_released_templates_prompt(built):
    from annotator.lvlm.engine import LvlmEngine

    engine, reference = built
    bare = LvlmEngine(copy.deepcopy(reference), tiny_processor(chat_template=None))
    assert bare.processor.chat_template is None
    assert bare.prompt("the red cup", (224, 112)).ids == engine.prompt("the red cup", (224, 112)).ids


def test_the_prompt_follows_the_processors_own_chat_template(built):
    from annotator.lvlm.engine import LvlmEngine
    from tests.tiny_internvl import CHAT_TEMPLATE

    engine, reference = built
    template = "<|im_start|>system\nthe big man<|im_end|>\n" + CHAT_TEMPLATE
    ours = LvlmEngine(copy.deepcopy(reference), tiny_processor(chat_template=template))
    tokens = ours.processor.tokenizer.convert_ids_to_tokens(list(ours.prompt("a dog", (100, 100)).ids))
    head = ["<|im_start|>", "system", "\n", "the", "big", "man", "<|im_end|>", "\n", "<|im_start|>", "user", "\n"]
    assert tokens == head + ["<img>"] + ["<IMG_CONTEXT>"] * 16 + ["</img>", "\n", "a", "dog"]


@pytest.fixture(scope="module")
def saved_internvl(tmp_path_factory):
    """A tiny InternVL3 saved with `save_pretrained`, with a heads file written by hand."""
    folder = tmp_path_factory.mktemp("tiny-internvl")
    tiny_internvl().save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    (folder / "heads.json").write_text(json.dumps({"model": str(folder), "heads": [[1, 0], [2, 3]]}))
    return folder


def test_a_saved_model_loaded_truncated_gives_the_whole_models_maps_without_the_layers_above(saved_internvl):
    from safetensors import safe_open

    from annotator.lvlm.engine import LvlmEngine

    with safe_open(str(saved_internvl / "model.safetensors"), framework="pt") as weights:
        assert "language_model.model.layers.3.mlp.up_proj.weight" in weights.keys()  # the hub's key names
    whole = LvlmEngine.load(saved_internvl, device="cpu")
    truncated = LvlmEngine.load(saved_internvl, device="cpu", truncate_after_layer=1)
    names = [name for name, _ in truncated.model.named_parameters()]
    assert truncated.num_layers == 2 and not hasattr(truncated.model, "lm_head")
    assert not [name for name in names if "language_model.layers.2." in name or "language_model.layers.3." in name]
    assert "model.language_model.layers.1.mlp.up_proj.weight" in names
    image, heads = random_image(*(60, 120), seed=5), [(1, 0), (0, 3)]
    np.testing.assert_array_equal(
        truncated.image_attention(image, "a dog", heads=heads), whole.image_attention(image, "a dog", heads=heads)
    )


def test_prelabel_then_eval_run_on_a_saved_internvl(saved_internvl, tmp_path, capsys):
    scenes = SceneConfig(long_side=(160, 200), aspect=(0.5, 2.0), target_width=(0.3, 0.5), other_width=(0.1, 0.2))
    ground_truth = write_scene_folder(tmp_path / "scenes", 3, 5, scenes)
    out = tmp_path / "internvl.json"
    command = ["prelabel", str(tmp_path / "scenes"), "--expressions", str(ground_truth), "--model", str(saved_internvl)]
    command += ["--heads", str(saved_internvl / "heads.json"), "--out", str(out), "--device", "cpu"]
    command += ["--masks", "coarse"]
    assert main(command) == 0, capsys.readouterr().err
    assert len(read_predictions(out)) == 3
    assert main(["eval", "--gt", str(ground_truth), "--pred", str(out)]) == 0, capsys.readouterr().err


def test_the_app_loads_a_saved_internvl_and_proposes_a_box(saved_internvl, qtbot, make_window, tmp_path):
    settings = AppSettings.at(tmp_path / "settings.ini")
    settings.set_model_settings(ModelSettings(model=str(saved_internvl), sam_type="none"))
    window = make_window(settings)
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS) as loaded:
        window.start_models()
    assert loaded.args[0] is not None, window.message_bar.text
    assert list(loaded.args[0].heads) == [(1, 0), (2, 3)]
    scenes = write_scenes(tmp_path / "images", [7])
    open_folder(qtbot, window, tmp_path / "images")
    assert propose(qtbot, window, next(iter(scenes.values())).expression) == 1
