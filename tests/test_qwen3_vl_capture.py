"""Qwen3-VL through the engine: the captured last-token attention equals the model's own eager forward
(`output_attentions=True`, its own interleaved M-RoPE positions, DeepStack) head for head, fresh and from a cached
prefix; the token layout against a mean-colour vision tower; the truncated load of the real 2B config; the prompt on
the real tokenizer; and the wiring through `annotator prelabel` + `annotator eval` and the app."""

import copy
import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from annotator.cli import main
from annotator.evaluation_files import read_predictions
from annotator.lvlm.qwen2_vl import qwen_layout
from annotator.lvlm.qwen2_vl import QwenPromptBuilder
from annotator.synthetic.scene_folder import write_scene_folder
from annotator.synthetic.scenes import SceneConfig
from annotator.ui.settings import AppSettings, ModelSettings
from tests.test_layout import STEP, MergeMean, cell_painted_image, decoder_input_at_image_tokens
from tests.tiny_llava import random_image
from tests.tiny_qwen3_vl import (
    HALF,
    PATCH,
    QWEN3_ADDED_TOKENS,
    RELEASED_MAX_PIXELS,
    RELEASED_MIN_PIXELS,
    eager_qwen_attention,
    real_qwen3_processor,
    tiny_processor,
    tiny_qwen3_vl,
)
from tests.ui_fixtures import (  # noqa: F401 (fixtures are found by name)
    MODEL_TIMEOUT_MS,
    isolated_qsettings,
    make_window,
    open_folder,
    propose,
    write_scenes,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZES = {"square": (128, 128), "wide-2to1": (128, 256), "tall-3to1": (288, 96)}  # (height, width): 4x4, 4x8, 9x3
EXPRESSIONS = ("the red cup on the left", "a dog", "the small cat with the big man")
IMAGE_PAD, IM_END, NEWLINE = 151655, 151645, 198


@pytest.fixture(scope="module")
def built():
    """(engine, reference model): the engine's model and a copy of it for the eager reference."""
    from annotator.lvlm.engine import LvlmEngine

    with torch.inference_mode(False):
        model = tiny_qwen3_vl()
        reference = copy.deepcopy(model)
    return LvlmEngine(model, tiny_processor()), reference


def reference_maps(built, image, expression):
    engine, reference = built
    inputs, frame = engine.pixel_values(image)
    prompt = engine.prompt(expression, (image.shape[1], image.shape[0]))
    return eager_qwen_attention(copy.deepcopy(reference), prompt, inputs, frame.grid_hw)


@pytest.mark.parametrize("height, width", SIZES.values(), ids=SIZES.keys())
def test_every_layer_and_head_matches_the_eager_forward(built, height, width):
    engine, _ = built
    image = random_image(height, width, seed=height + width)
    ours = engine.image_attention(image, EXPRESSIONS[0])
    expected = reference_maps(built, image, EXPRESSIONS[0])
    assert ours.shape == (engine.num_layers, engine.num_heads, height // 32, width // 32)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("height, width", SIZES.values(), ids=SIZES.keys())
def test_expressions_against_a_cached_prefix_match_the_eager_forward_in_every_order(built, height, width):
    engine, _ = built
    image = random_image(height, width, seed=7 * height + width)
    expected = {expression: reference_maps(built, image, expression) for expression in EXPRESSIONS}
    for order, expressions in enumerate(itertools.permutations(EXPRESSIONS)):
        image_id = ("orders", height, width, order)
        for i, expression in enumerate(expressions):
            result = engine.head_attention(image, expression, image_id=image_id)
            assert result.timing.prefix_cached == (i > 0)
            ours = result.maps.reshape(expected[expression].shape)
            np.testing.assert_allclose(ours, expected[expression], rtol=0, atol=1e-5)


def test_a_head_subset_from_a_cached_prefix_matches_the_same_heads_of_the_eager_forward(built):
    engine, _ = built
    image = random_image(128, 256, seed=3)
    heads = [(engine.num_layers - 1, 1), (1, 0), (2, engine.num_heads - 1)]
    expected = reference_maps(built, image, EXPRESSIONS[2])
    engine.prepare(image, "subset", heads=[(1, 0)])
    ours = engine.image_attention(image, EXPRESSIONS[2], heads=heads, image_id="subset")
    np.testing.assert_allclose(ours, np.stack([expected[l, h] for l, h in heads]), rtol=0, atol=1e-5)


def test_without_deepstack_the_layers_after_the_first_differ_so_the_comparison_tests_it(built, monkeypatch):
    engine, _ = built
    image = random_image(128, 256, seed=5)
    expected = reference_maps(built, image, EXPRESSIONS[0])
    monkeypatch.setattr(engine.family, "text_kwargs", lambda features, image_positions, length: {})
    plain = engine.image_attention(image, EXPRESSIONS[0])
    np.testing.assert_allclose(plain[0], expected[0], rtol=0, atol=1e-5)
    assert np.abs(plain[1:] - expected[1:]).max() > 1e-3


def test_without_m_rope_positions_the_maps_differ_so_the_comparison_tests_them(built, monkeypatch):
    engine, _ = built
    image = random_image(128, 256, seed=5)
    expected = reference_maps(built, image, EXPRESSIONS[0])
    monkeypatch.setattr(engine.family, "position_ids", lambda prompt, layout, device: None)
    plain = engine.image_attention(image, EXPRESSIONS[0], image_id="plain positions")
    assert np.abs(plain - expected).max() > 1e-3


def test_the_reference_maps_are_far_from_uniform_so_the_comparison_means_something(built):
    expected = reference_maps(built, random_image(128, 256, seed=11), EXPRESSIONS[1])
    per_head = expected.reshape(*expected.shape[:2], -1)
    assert (per_head.max(axis=-1) > 2 * per_head.mean(axis=-1)).mean() > 0.5


def test_deepstack_gets_one_feature_per_vision_index_and_the_mask_of_the_image_tokens(built):
    engine, _ = built
    image = random_image(128, 256, seed=2)
    layout = engine.layout_for(256, 128)
    prompt = engine.prompt("a dog", (256, 128))
    features = engine.family.image_features(image, layout, engine.device)
    kwargs = engine.family.text_kwargs(features, prompt.prefix.image_positions, len(prompt.ids))
    assert [tuple(f.shape) for f in kwargs["deepstack_visual_embeds"]] == [(32, 64), (32, 64)]
    assert kwargs["visual_pos_masks"][0].nonzero().ravel().tolist() == list(range(len(prompt.ids)))[
        prompt.prefix.image_positions
    ]


class PatchColour(torch.nn.Module):
    """Qwen3-VL's patch embedding replaced: each flattened patch `[3 * 2 * 16 * 16]` -> its mean colour, 0-255."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.gain = torch.nn.Parameter(torch.ones(()))  # the tower's dtype is read from its parameters

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        normalized = patches.view(patches.shape[0], 3, -1).mean(-1)
        out = torch.zeros(patches.shape[0], self.width, dtype=patches.dtype)
        out[:, :3] = (normalized * HALF[0] + HALF[0]) * 255 * self.gain
        return out


def colour_engine():
    """The tiny Qwen3-VL whose vision tower passes each token's mean colour through (learned maps removed)."""
    from annotator.lvlm.engine import LvlmEngine

    model = tiny_qwen3_vl()
    visual = model.model.visual
    width = visual.config.hidden_size
    visual.patch_embed = PatchColour(width)
    with torch.no_grad():
        visual.pos_embed.weight.zero_()
    visual.blocks = torch.nn.ModuleList()
    visual.merger = MergeMean(width, model.config.text_config.hidden_size)
    return LvlmEngine(model, tiny_processor())


@pytest.mark.parametrize("width, height", [(256, 128), (96, 288), (192, 192)], ids=["2to1", "1to3", "square"])
def test_the_layout_names_the_cell_every_image_token_carries_and_no_token_is_a_newline(width, height):
    engine = colour_engine()
    layout = engine.layout_for(width, height)
    received = decoder_input_at_image_tokens(engine, cell_painted_image(layout.frame))
    cells = layout.cells()
    assert received.shape[0] == layout.num_tokens == layout.frame.grid_h * layout.frame.grid_w
    assert (cells >= 0).all()
    np.testing.assert_allclose(received[:, 0], STEP * cells[:, 1], atol=0.5)
    np.testing.assert_allclose(received[:, 1], STEP * cells[:, 2], atol=0.5)


@pytest.mark.parametrize("width, height", [(300, 150), (150, 450)], ids=["2to1", "1to3"])
def test_a_marker_in_each_corner_lights_the_corner_cells(width, height):
    engine = colour_engine()
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for y, x in [(0, 0), (0, width - 30), (height - 30, 0), (height - 30, width - 30)]:
        image[y : y + 30, x : x + 30] = 255
    layout = engine.layout_for(width, height)
    brightness = layout.grid_map(decoder_input_at_image_tokens(engine, image)[:, 0])
    gh, gw = layout.grid_hw
    lit = {(int(r), int(c)) for r, c in zip(*np.nonzero(brightness > 128))}
    assert lit == {(0, 0), (0, gw - 1), (gh - 1, 0), (gh - 1, gw - 1)}


def test_a_grid_box_maps_back_to_the_pixels_computed_by_hand():
    layout = qwen_layout(1000, 750, patch_size=PATCH, min_pixels=RELEASED_MIN_PIXELS, max_pixels=RELEASED_MAX_PIXELS)
    assert (layout.grid_hw, layout.num_tokens) == ((23, 31), 713)  # smart resize: 992 x 736 px, tokens of 32 px
    # a cell is 1000 / 31 = 32.26 px wide and 750 / 23 = 32.61 px high: columns 10-20, rows 4-8
    x0, y0, x1, y1 = layout.frame.box_to_pixels((10.0, 4.0, 20.0, 8.0))
    assert (x0, x1) == pytest.approx((10 * 1000 / 31, 20 * 1000 / 31))
    assert (y0, y1) == pytest.approx((4 * 750 / 23, 8 * 750 / 23))


# Qwen/Qwen3-VL-2B-Instruct's config.json (the smallest Qwen3-VL), its shapes only
QWEN3_VL_2B_TEXT = dict(
    vocab_size=151936,
    hidden_size=2048,
    intermediate_size=6144,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=262144,
    rope_parameters={
        "rope_type": "default",
        "rope_theta": 5000000.0,
        "mrope_section": [24, 20, 20],
        "mrope_interleaved": True,
    },
)
QWEN3_VL_2B_VISION = dict(
    depth=24,
    hidden_size=1024,
    intermediate_size=4096,
    num_heads=16,
    out_hidden_size=2048,
    patch_size=16,
    spatial_merge_size=2,
    temporal_patch_size=2,
    num_position_embeddings=2304,
    deepstack_visual_indexes=[5, 11, 17],
)
# Its parameters, by hand: a text layer is q 2048 x 2048 + k, v 2048 x 1024 each + o 2048 x 2048 (12,582,912),
# gate, up, down 3 x 2048 x 6144 (37,748,736), q/k norms 2 x 128, the two layer norms 2 x 2048: 50,336,000.
TEXT_LAYER = 50_336_000
EMBED = 151936 * 2048  # 311,164,928; the LM head is tied to it
# Vision: patch conv 3 x 2 x 16 x 16 x 1024 + 1024 (1,573,888), positions 2304 x 1024 (2,359,296), 24 blocks of
# 12,596,224 (2 norms 4,096; qkv 1024 x 3072 + 3072; proj 1024 x 1024 + 1024; MLP 1024 x 4096 + 4096 + 4096 x 1024
# + 1024), the merger 25,174,016 (norm 2,048; 4096 x 4096 + 4096; 4096 x 2048 + 2048) and 3 DeepStack mergers of
# 25,180,160 (their norm is over the 4,096 merged channels: 8,192): 406,957,056.
VISION = 1_573_888 + 2_359_296 + 24 * 12_596_224 + 25_174_016 + 3 * 25_180_160


def qwen3_vl_2b_config():
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(
        text_config=dict(QWEN3_VL_2B_TEXT), vision_config=dict(QWEN3_VL_2B_VISION), tie_word_embeddings=True
    )


def test_a_truncated_load_of_the_2b_config_never_builds_the_layers_above_nor_the_lm_head():
    from annotator.lvlm.checkpoint import grounding_model_class

    def built_on_meta(truncate_after_layer):
        config = qwen3_vl_2b_config()
        model_class, config = grounding_model_class(config, truncate_after_layer)
        with torch.device("meta"):
            return model_class(config)

    whole, truncated = built_on_meta(None), built_on_meta(13)
    assert sum(p.numel() for p in whole.parameters()) == VISION + EMBED + 28 * TEXT_LAYER + 2048  # 2,127,532,032
    names = [name for name, _ in truncated.named_parameters()]
    assert sum(p.numel() * p.element_size() for p in truncated.parameters()) == 4 * (
        VISION + EMBED + 14 * TEXT_LAYER + 2048
    )  # float32 on the meta device: 5,104,431,360 bytes; 2,552,215,680 in bf16
    assert not [n for n in names if "lm_head" in n or "language_model.layers.14." in n]


def test_the_skipped_keys_of_a_truncated_load_are_the_hubs_text_layers_above_and_the_lm_head():
    import re

    from annotator.lvlm.checkpoint import grounding_model_class

    config = qwen3_vl_2b_config()
    model_class, _ = grounding_model_class(config, truncate_after_layer=13)
    skipped = model_class._keys_to_ignore_on_load_unexpected
    hub_keys = {  # names in the released checkpoints' model.safetensors
        "model.language_model.layers.14.mlp.down_proj.weight": True,
        "model.language_model.layers.27.self_attn.q_norm.weight": True,
        "lm_head.weight": True,
        "model.language_model.layers.13.mlp.down_proj.weight": False,
        "model.language_model.layers.1.input_layernorm.weight": False,
        "model.visual.blocks.20.attn.qkv.weight": False,
        "model.visual.deepstack_merger_list.2.linear_fc2.weight": False,
    }
    assert {key: any(re.search(p, key) for p in skipped) for key in hub_keys} == hub_keys


EXPRESSIONS_REAL = ["guy in 2nd row", "the man's left arm", "  red cup  ", "café table", "猫", "emoji 🍌 banana"]


@pytest.fixture(scope="module")
def real_processor():
    return real_qwen3_processor()


def processed(processor, expression: str, width: int, height: int):
    """The processor's input ids for one user turn (image, then the expression) and its `image_grid_thw`."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": expression}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    image = Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8))
    out = processor(text=[text], images=[image], return_tensors="np")
    return tuple(out["input_ids"][0].tolist()), tuple(out["image_grid_thw"][0].tolist())


def test_the_real_tokenizer_keeps_qwen3s_added_tokens_at_their_ids(real_processor):
    ids = real_processor.tokenizer.convert_tokens_to_ids(list(QWEN3_ADDED_TOKENS))
    assert ids == list(range(151657, 151669))


@pytest.mark.parametrize("expression", EXPRESSIONS_REAL)
def test_the_prompt_is_the_chat_templates_sequence_cut_after_the_expression(real_processor, expression):
    ids, _ = processed(real_processor, expression.strip(), 640, 480)
    assert ids[-2:] == (IM_END, NEWLINE)
    builder = QwenPromptBuilder(
        real_processor.tokenizer, max_expression_tokens=64, max_positions=262144, system_turn=""
    )
    prompt = builder.build(expression, num_image_tokens=ids.count(IMAGE_PAD))
    assert prompt.ids == ids[:-2]
    assert real_processor.tokenizer.decode(list(prompt.expression_ids)) == expression.strip()


@pytest.mark.parametrize("width, height", [(1000, 750), (1200, 400), (300, 900), (100, 60), (5000, 3000)])
def test_the_processor_expands_the_image_into_the_layouts_grid(real_processor, width, height):
    ids, (t, h, w) = processed(real_processor, "dog", width, height)
    layout = qwen_layout(
        width, height, patch_size=PATCH, min_pixels=RELEASED_MIN_PIXELS, max_pixels=RELEASED_MAX_PIXELS
    )
    assert (t, h // 2, w // 2) == (1, *layout.grid_hw)
    assert ids.count(IMAGE_PAD) == layout.num_tokens


SCENES = SceneConfig(long_side=(256, 320), aspect=(0.5, 2.0), target_width=(0.35, 0.5), other_width=(0.12, 0.25))


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """The tiny Qwen3-VL and its processor saved with `save_pretrained`, with a heads file written by hand."""
    folder = tmp_path_factory.mktemp("tiny-qwen3-vl")
    tiny_qwen3_vl().save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    heads = folder.parent / "qwen3-heads.json"
    heads.write_text(json.dumps({"model": str(folder), "heads": [[1, 0], [2, 3]]}), encoding="utf-8")
    return folder, heads


def test_a_truncated_load_of_a_saved_model_gives_the_whole_models_maps(saved_model):
    from annotator.lvlm.engine import LvlmEngine

    folder, _ = saved_model
    whole, truncated = LvlmEngine.load(folder), LvlmEngine.load(folder, truncate_after_layer=2)
    assert truncated.num_layers == 3 and not hasattr(truncated.model, "lm_head")
    image, heads = random_image(128, 256, seed=4), [(1, 0), (2, 3)]
    np.testing.assert_array_equal(
        truncated.image_attention(image, "a dog", heads=heads), whole.image_attention(image, "a dog", heads=heads)
    )


def test_prelabel_then_eval_run_on_a_saved_tiny_qwen3_vl(saved_model, tmp_path, capsys):
    folder, heads = saved_model
    images = tmp_path / "scenes"
    ground_truth = write_scene_folder(images, 3, 5, SCENES)
    out = tmp_path / "qwen3.json"
    command = ["prelabel", str(images), "--expressions", str(ground_truth), "--model", str(folder)]
    assert main([*command, "--heads", str(heads), "--out", str(out), "--device", "cpu", "--masks", "coarse"]) == 0
    predictions = read_predictions(out)
    assert len(predictions) == 3
    capsys.readouterr()
    assert main(["eval", "--gt", str(ground_truth), "--pred", str(out)]) == 0
    assert "| synthetic | 3 | 0 |" in capsys.readouterr().out


def test_the_app_loads_the_saved_tiny_qwen3_vl_with_its_heads_and_proposes(saved_model, qtbot, make_window, tmp_path):
    folder, heads = saved_model
    settings = AppSettings.at(tmp_path / "settings.ini")
    settings.set_model_settings(ModelSettings(model=str(folder), heads_file=str(heads), sam_type="none"))
    window = make_window(settings)
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS) as loaded:
        window.start_models()
    assert loaded.args[0] is not None, window.message_bar.text
    assert [tuple(head) for head in loaded.args[0].heads] == [(1, 0), (2, 3)]
    write_scenes(tmp_path / "images", [31], SCENES)
    open_folder(qtbot, window, tmp_path / "images")
    assert propose(qtbot, window, "the red cup") == 1
