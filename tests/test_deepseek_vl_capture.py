"""DeepSeek-VL and its hybrid through the engine: the captured last-token attention equals the model's own eager
forward head for head, fresh and from a cached prefix; each image token carries the cell its layout names; the
truncated load; the prompt; and the CLI and the app on a saved tiny model."""

import copy
import json

import numpy as np
import pytest
import torch

from annotator.cli import main
from annotator.evaluation_files import read_predictions
from annotator.lvlm.deepseek_vl import SYSTEM_TEXT, padded_square_frame
from annotator.synthetic.scene_folder import write_scene_folder
from annotator.synthetic.scenes import SceneConfig
from annotator.ui.settings import AppSettings, ModelSettings
from tests.test_layout import CLIP_MEAN, CLIP_STD, STEP, cell_painted_image
from tests.tiny_deepseek_vl import (
    DEEPSEEK_VL,
    DEEPSEEK_VL_HYBRID,
    eager_deepseek_attention,
    tiny_deepseek_vl,
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

SPECS = {"deepseek-vl": DEEPSEEK_VL, "deepseek-vl-hybrid": DEEPSEEK_VL_HYBRID}
SIZES = {"wide-2to1": (60, 120), "tall-1to3": (150, 50)}
EXPRESSIONS = ("the red cup on the left", "a dog", "the small cat with the big man")


@pytest.fixture(scope="module", params=SPECS.values(), ids=SPECS.keys())
def built(request):
    """(engine, reference model): the engine's model and a copy of it for the eager reference."""
    from annotator.lvlm.engine import LvlmEngine

    with torch.inference_mode(False):
        model = tiny_deepseek_vl(request.param)
        reference = copy.deepcopy(model)
    return LvlmEngine(model, tiny_processor(request.param)), reference


def reference_maps(built, image, expression):
    engine, reference = built
    inputs, frame = engine.pixel_values(image)
    prompt = engine.prompt(expression)
    return eager_deepseek_attention(copy.deepcopy(reference), prompt, inputs, frame.grid_hw)


@pytest.mark.parametrize("height, width", SIZES.values(), ids=SIZES.keys())
def test_every_layer_and_head_matches_the_eager_forward(built, height, width):
    engine, _ = built
    image = random_image(height, width, seed=height + width)
    ours = engine.image_attention(image, EXPRESSIONS[0])
    expected = reference_maps(built, image, EXPRESSIONS[0])
    assert ours.shape == (engine.num_layers, engine.num_heads, 6, 6)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


def test_expressions_against_a_cached_prefix_match_the_eager_forward(built):
    engine, _ = built
    image = random_image(60, 120, seed=7)
    for i, expression in enumerate(EXPRESSIONS):
        result = engine.head_attention(image, expression, image_id="cached")
        assert result.timing.prefix_cached == (i > 0)
        expected = reference_maps(built, image, expression)
        np.testing.assert_allclose(result.maps.reshape(expected.shape), expected, rtol=0, atol=1e-5)


def test_a_head_subset_from_a_cached_prefix_matches_the_same_heads_of_the_eager_forward(built):
    engine, _ = built
    image = random_image(150, 50, seed=3)
    heads = [(engine.num_layers - 1, 1), (1, 0), (2, engine.num_heads - 1)]
    expected = reference_maps(built, image, EXPRESSIONS[2])
    engine.prepare(image, "subset", heads=[(1, 0)])
    ours = engine.image_attention(image, EXPRESSIONS[2], heads=heads, image_id="subset")
    np.testing.assert_allclose(ours, np.stack([expected[l, h] for l, h in heads]), rtol=0, atol=1e-5)


def test_the_reference_maps_are_far_from_uniform_so_the_comparison_means_something(built):
    expected = reference_maps(built, random_image(60, 120, seed=11), EXPRESSIONS[1])
    per_head = expected.reshape(*expected.shape[:2], -1)
    assert (per_head.max(axis=-1) > 2 * per_head.mean(axis=-1)).mean() > 0.5


class PatchColour(torch.nn.Module):
    """A vision tower replaced: hidden states that are each patch's mean colour (0-255) in the first three channels,
    in the conv + flatten order of the real patch embedding; `channels_first`: SAM's `[1, C, h, w]` instead."""

    def __init__(self, patch: int, hidden: int, channels_first: bool = False) -> None:
        super().__init__()
        self.patch, self.hidden, self.channels_first = patch, hidden, channels_first
        self.dtype = torch.float32

    def forward(self, pixel_values: torch.Tensor, **kwargs):
        from transformers.modeling_outputs import BaseModelOutput

        mean = torch.nn.functional.avg_pool2d(pixel_values, self.patch)
        colour = (mean * torch.tensor(CLIP_STD).view(1, 3, 1, 1) + torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) * 255
        states = torch.zeros(1, self.hidden, *colour.shape[-2:])
        states[:, :3] = colour.float()
        if not self.channels_first:
            states = states.flatten(2).transpose(1, 2)
        return BaseModelOutput(last_hidden_state=states, hidden_states=(states,) * 4)


class FirstChannels(torch.nn.Module):
    """The aligner replaced: the first three channels of SigLIP's features (`which=1`: of SAM's), the rest zero."""

    def __init__(self, hidden: int, which: int = 0) -> None:
        super().__init__()
        self.hidden, self.which = hidden, which

    def forward(self, *encodings: torch.Tensor) -> torch.Tensor:
        x = encodings[self.which]
        out = torch.zeros(*x.shape[:-1], self.hidden)
        out[..., :3] = x[..., :3]
        return out


class CellMean(torch.nn.Module):
    """SAM's projection replaced: the mean of the patches each grid cell covers (the real one resizes them and
    strides two convolutions over them, which blurs across cells); its output order is the real one's."""

    def __init__(self, grid: int) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(features, self.grid)


def colour_engine(spec, branch: str = "siglip"):
    """An engine whose image tokens are the mean colours of SigLIP's patches (`branch="sam"`: of SAM's)."""
    from annotator.lvlm.engine import LvlmEngine

    model = tiny_deepseek_vl(spec)
    inner = model.model
    inner.vision_model = PatchColour(spec.patch_size, spec.vision_hidden_size)
    if branch == "sam":
        inner.high_res_vision_model = PatchColour(16, spec.hidden_size, channels_first=True)
        inner.high_res_vision_neck = torch.nn.Identity()
        inner.high_res_vision_proj = CellMean(spec.grid_size)
        inner.high_res_vision_alpha.data.zero_()
    inner.aligner = FirstChannels(spec.hidden_size, which=1 if branch == "sam" else 0)
    return LvlmEngine(model, tiny_processor(spec))


def decoder_input_at_image_tokens(engine, image: np.ndarray) -> np.ndarray:
    seen = []
    layer = engine.family.text_model.layers[0]
    hook = layer.register_forward_pre_hook(lambda module, args, kwargs: seen.append(args[0]), with_kwargs=True)
    try:
        engine.image_attention(image, "a dog", heads=[(0, 0)])
    finally:
        hook.remove()
    return seen[0][0, engine.prompt("a dog").prefix.image_positions, :3].numpy()


ORACLES = {"deepseek-vl": (DEEPSEEK_VL, "siglip"), "hybrid-siglip": (DEEPSEEK_VL_HYBRID, "siglip")}
ORACLES["hybrid-sam"] = (DEEPSEEK_VL_HYBRID, "sam")


@pytest.mark.parametrize("spec, branch", ORACLES.values(), ids=ORACLES.keys())
@pytest.mark.parametrize("width, height", [(120, 60), (50, 150), (200, 90)], ids=["2to1", "1to3", "rounded"])
def test_every_image_token_carries_the_cell_its_layout_names_and_padding_is_the_mean_colour(
    spec, branch, width, height
):
    engine = colour_engine(spec, branch)
    layout = engine.layout_for(width, height)
    received = decoder_input_at_image_tokens(engine, cell_painted_image(layout.frame))
    cells = layout.cells()
    assert received.shape[0] == layout.num_tokens == 36
    low, _ = layout.frame.to_pixels(np.stack([cells[:, 2], cells[:, 1]], axis=-1).astype(float))
    high, _ = layout.frame.to_pixels(np.stack([cells[:, 2] + 1, cells[:, 1] + 1], axis=-1).astype(float))
    inside = (low >= -1e-9).all(1) & (high[:, 0] <= width + 1e-9) & (high[:, 1] <= height + 1e-9)
    padding = (high[:, 0] <= 0) | (low[:, 0] >= width) | (high[:, 1] <= 0) | (low[:, 1] >= height)
    assert inside.sum() >= 6 and padding.sum() >= 6
    # bicubic resizing blurs colours a little across cell edges
    assert (np.rint(received[inside, :2] / STEP) == cells[inside, 1:]).all()
    mean_colour = np.broadcast_to(np.floor(255 * CLIP_MEAN), (padding.sum(), 3))
    np.testing.assert_allclose(received[padding], mean_colour, atol=1.5)


@pytest.mark.parametrize("width, height", [(240, 80), (80, 240)], ids=["3to1", "1to3"])
def test_a_marker_in_each_corner_lights_the_corner_cells_of_the_image(width, height):
    engine = colour_engine(DEEPSEEK_VL)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    side = 40  # one cell: the 240 px square is cut into 6 x 6; the image fills 2 of its rows (or columns) exactly
    for y, x in [(0, 0), (0, width - side), (height - side, 0), (height - side, width - side)]:
        image[y : y + side, x : x + side] = 255
    layout = engine.layout_for(width, height)
    brightness = layout.grid_map(decoder_input_at_image_tokens(engine, image)[:, 0])
    lit = {(int(r), int(c)) for r, c in zip(*np.nonzero(brightness > 128))}
    rows, cols = ((2, 3), (0, 5)) if width > height else ((0, 5), (2, 3))
    assert lit == {(r, c) for r in rows for c in cols}


def test_a_grid_box_maps_back_to_the_pixels_computed_by_hand():
    frame = padded_square_frame(640, 427, 24, 384)
    # resized to 384 x round(427 * 0.6) = 256 px, centred with (384 - 256) // 2 = 64 px above: a cell is 16 px of
    # the canvas, 16 / 0.6 = 26.67 px of the image across and 16 * 427 / 256 = 26.69 px down, rows start 64 px up
    x0, y0, x1, y1 = frame.box_to_pixels((3.0, 6.0, 12.0, 10.0))
    assert (x0, x1) == pytest.approx((3 * 16 / 0.6, 12 * 16 / 0.6))
    assert (y0, y1) == pytest.approx(((6 * 16 - 64) * 427 / 256, (10 * 16 - 64) * 427 / 256))
    assert frame.box_to_pixels((0, 0, 24, 24)) == pytest.approx((0, 0, 640, 427))


def test_the_hybrid_places_the_image_on_sams_1024_px_square():
    frame = padded_square_frame(640, 427, 24, 1024)  # 1024 x round(683.2) = 683 px, 170 px above
    assert frame.to_grid(np.array([0.0, 0.0]))[1] == pytest.approx(170 * 24 / 1024)


def test_a_truncated_load_never_materialises_the_layers_above_nor_the_lm_head():
    """DeepSeek-VL-1.3B-chat's config: SigLIP-L/16 at 384 px (24 layers, hidden 1024, MLP 4096, attention-pool head),
    a 1024 -> 2048 -> 2048 aligner, a Llama of 24 layers, hidden 2048, MLP 5632, 16 heads, vocab 102400, an LM head
    of its own: 1,975,235,584 parameters."""
    from transformers import DeepseekVLConfig

    from annotator.lvlm.checkpoint import grounding_model_class

    config = DeepseekVLConfig(
        text_config=dict(
            model_type="llama", vocab_size=102400, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
            num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=16384,
        ),
        vision_config=dict(
            model_type="siglip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
            num_attention_heads=16, image_size=384, patch_size=16,
        ),
        tie_word_embeddings=False,
    )  # fmt: skip
    model_class, config = grounding_model_class(config, truncate_after_layer=9)
    with torch.device("meta"):
        model = model_class(config)
    per_layer = 4 * 2048 * 2048 + 3 * 2048 * 5632 + 2 * 2048  # 51,384,320
    vision = 316_283_904 + 6_295_552  # SigLIP-L incl. its head; the aligner 1024*2048+2048 + 2048*2048+2048
    sizes = {name: p.numel() * 2 for name, p in model.named_parameters()}  # bytes in bf16
    assert len(model.model.language_model.layers) == 10 and not hasattr(model, "lm_head")
    assert not [name for name in sizes if ".layers.10." in name and "language_model" in name]
    assert sum(sizes.values()) == 2 * (vision + 102400 * 2048 + 10 * per_layer + 2048) == 2_092_279_808


def test_the_prompt_is_the_chat_template_up_to_the_expressions_last_token(built):
    engine, _ = built
    tokenizer = engine.processor.tokenizer
    prompt = engine.prompt("the red cup")
    head = [tokenizer.bos_token] + SYSTEM_TEXT.split() + ["\n", "\n", "User:"] + ["<image_placeholder>"] * 36
    assert tokenizer.convert_ids_to_tokens(list(prompt.ids)) == head + ["the", "red", "cup"]
    assert prompt.prefix.image_start == len(head) - 36


def test_a_processor_without_a_chat_template_gets_the_released_templates_prompt(built):
    from annotator.lvlm.engine import LvlmEngine

    engine, reference = built
    spec = DEEPSEEK_VL_HYBRID if engine.family.hybrid else DEEPSEEK_VL
    bare = LvlmEngine(copy.deepcopy(reference), tiny_processor(spec, chat_template=None))
    assert bare.processor.chat_template is None
    assert bare.prompt("the red cup").ids == engine.prompt("the red cup").ids


def test_the_prompt_follows_the_processors_own_chat_template():
    from annotator.lvlm.engine import LvlmEngine

    template = "You are a helpful assistant.{% for m in messages %}{% for c in m['content'] %}"
    template += "{{ c.get('text', ' User: <image_placeholder>') }}{% endfor %}{% endfor %}"
    engine = LvlmEngine(tiny_deepseek_vl(), tiny_processor(chat_template=template))
    tokens = engine.processor.tokenizer.convert_ids_to_tokens(list(engine.prompt("a dog").ids))
    assert tokens == ["<｜begin▁of▁sentence｜>", "You", "are", "a", "helpful", "assistant.", "User:"] + [
        "<image_placeholder>"
    ] * 36 + ["a", "dog"]


def test_a_chat_template_that_puts_the_text_before_the_image_is_refused_in_one_line():
    from annotator.errors import ModelUnavailable
    from annotator.lvlm.engine import LvlmEngine

    template = "{% for m in messages %}{% for c in m['content']|reverse %}{{ c.get('text', '<image_placeholder>') }}"
    template += "{% endfor %}{% endfor %}"
    with pytest.raises(ModelUnavailable, match="does not put one image and then the text in a turn"):
        LvlmEngine(tiny_deepseek_vl(), tiny_processor(chat_template=template), model_id="tiny")


@pytest.fixture(scope="module")
def saved_deepseek(tmp_path_factory):
    """A tiny DeepSeek-VL saved with `save_pretrained`, with a heads file written by hand."""
    folder = tmp_path_factory.mktemp("tiny-deepseek-vl")
    tiny_deepseek_vl(DEEPSEEK_VL).save_pretrained(folder)
    tiny_processor(DEEPSEEK_VL).save_pretrained(folder)
    (folder / "heads.json").write_text(json.dumps({"model": str(folder), "heads": [[1, 0], [2, 3]]}))
    return folder


def test_a_saved_model_loaded_truncated_gives_the_whole_models_maps_without_the_layers_above(saved_deepseek):
    from annotator.lvlm.engine import LvlmEngine

    whole = LvlmEngine.load(saved_deepseek, device="cpu")
    truncated = LvlmEngine.load(saved_deepseek, device="cpu", truncate_after_layer=1)
    names = [name for name, _ in truncated.model.named_parameters()]
    assert truncated.num_layers == 2 and not hasattr(truncated.model, "lm_head")
    assert not [name for name in names if "language_model.layers.2." in name or "language_model.layers.3." in name]
    assert "model.language_model.layers.1.mlp.up_proj.weight" in names
    image, heads = random_image(*(60, 120), seed=5), [(1, 0), (0, 3)]
    np.testing.assert_array_equal(
        truncated.image_attention(image, "a dog", heads=heads), whole.image_attention(image, "a dog", heads=heads)
    )


def test_prelabel_then_eval_run_on_a_saved_deepseek_vl(saved_deepseek, tmp_path, capsys):
    scenes = SceneConfig(long_side=(160, 200), aspect=(0.5, 2.0), target_width=(0.3, 0.5), other_width=(0.1, 0.2))
    ground_truth = write_scene_folder(tmp_path / "scenes", 3, 5, scenes)
    out = tmp_path / "deepseek.json"
    command = ["prelabel", str(tmp_path / "scenes"), "--expressions", str(ground_truth), "--model", str(saved_deepseek)]
    command += ["--heads", str(saved_deepseek / "heads.json"), "--out", str(out), "--device", "cpu"]
    command += ["--masks", "coarse"]
    assert main(command) == 0, capsys.readouterr().err
    assert len(read_predictions(out)) == 3
    assert main(["eval", "--gt", str(ground_truth), "--pred", str(out)]) == 0, capsys.readouterr().err


def test_the_app_loads_a_saved_deepseek_vl_and_proposes_a_box(saved_deepseek, qtbot, make_window, tmp_path):
    settings = AppSettings.at(tmp_path / "settings.ini")
    settings.set_model_settings(ModelSettings(model=str(saved_deepseek), sam_type="none"))
    window = make_window(settings)
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS) as loaded:
        window.start_models()
    assert loaded.args[0] is not None, window.message_bar.text
    assert list(loaded.args[0].heads) == [(1, 0), (2, 3)]
    scenes = write_scenes(tmp_path / "images", [7])
    open_folder(qtbot, window, tmp_path / "images")
    assert propose(qtbot, window, next(iter(scenes.values())).expression) == 1
