"""The planted Qwen2-VL (synthetic/planted_qwen.py): the shipped folder against a fresh build, the processor's grid
and pixels, what the vision side writes, the behaviour planted in each kind of head, and the method on it: discovery
recovers exactly the planted heads, each discovery rule is needed, the planted heads ground held-out targets."""

import math

import numpy as np
import pytest
import torch

from annotator.grounding.grounder import Grounder
from annotator.grounding.heads import find_heads_file, image_attention_sums, select_localization_heads
from annotator.lvlm.engine import LvlmEngine
from annotator.lvlm.qwen2_vl import QwenPromptBuilder
from annotator.synthetic.planted_decoder import FEATURE_SCALE, RESIDUAL, normalized_colour
from annotator.synthetic.planted_qwen import (
    NUM_HEADS,
    NUM_LAYERS,
    PLANTED_QWEN_DIR,
    PLANTED_QWEN_HEADS,
    build_config,
    build_planted_qwen,
)
from annotator.synthetic.scenes import (
    PALETTE,
    SHAPE_WORDS,
    TEMPLATE_WORDS,
    SceneConfig,
    box_iou,
    generate_scene,
    generate_scenes,
)
from tests.qwen_tokenizer import CHAT_TEMPLATE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOCALIZERS = list(PLANTED_QWEN_HEADS.localization)
DISCOVERY_SEED, DISCOVERY_SCENES = 1, 200
HELD_OUT_SEED, HELD_OUT_SCENES, MIN_TARGET_CELLS = 2, 100, 6.0
HELD_OUT_CONFIG = SceneConfig(long_side=(448, 672), aspect=(1 / 3, 2.0), target_width=(0.3, 0.6))


@pytest.fixture(scope="module")
def engine():
    return LvlmEngine.load(PLANTED_QWEN_DIR)


@pytest.fixture(scope="module")
def fresh():
    return build_planted_qwen()


def colour_board(width: int, height: int, columns: int):
    """A grey image with one 56 x 56 px block of each palette colour on a 112 px pitch, and each block's box."""
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    boxes = {}
    for i, (name, rgb) in enumerate(PALETTE.items()):
        x0, y0 = 28 + (i % columns) * 112, 28 + (i // columns) * 112
        image[y0 : y0 + 56, x0 : x0 + 56] = rgb
        boxes[name] = (x0, y0, x0 + 56, y0 + 56)
    return image, boxes


@pytest.fixture(scope="module")
def samples(engine):
    """Last-token image attention of every head for 200 synthetic scenes of aspect 1:3 to 3:1."""
    return [engine.image_attention(s.image, s.expression) for s in generate_scenes(DISCOVERY_SEED, DISCOVERY_SCENES)]


@pytest.fixture(scope="module")
def discovery(samples):
    return select_localization_heads(samples)


def test_the_shipped_folder_loads_with_plain_transformers_classes():
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    model = Qwen2VLForConditionalGeneration.from_pretrained(PLANTED_QWEN_DIR)
    processor = AutoProcessor.from_pretrained(PLANTED_QWEN_DIR)
    assert isinstance(processor, Qwen2VLProcessor)
    assert type(processor.image_processor).__name__.startswith("Qwen2VLImageProcessor")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "the red disc"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=np.zeros((336, 672, 3), np.uint8), text=text, return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [[1, 24, 48]]
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 12 * 24
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape


def test_the_shipped_weights_equal_a_fresh_build(fresh):
    from transformers import Qwen2VLForConditionalGeneration

    shipped = Qwen2VLForConditionalGeneration.from_pretrained(PLANTED_QWEN_DIR).state_dict()
    built = fresh[0].state_dict()
    assert shipped.keys() == built.keys()
    for name, tensor in built.items():
        assert torch.equal(shipped[name], tensor), name


def test_the_shipped_config_processor_and_heads_file_equal_a_fresh_build(fresh):
    from transformers import AutoProcessor, Qwen2VLConfig

    written_on_save = ("architectures", "dtype", "transformers_version")
    shipped_config = Qwen2VLConfig.from_pretrained(PLANTED_QWEN_DIR).to_dict()
    built_config = build_config(fresh[1].tokenizer).to_dict()
    assert {k: v for k, v in shipped_config.items() if k not in written_on_save} == {
        k: v for k, v in built_config.items() if k not in written_on_save
    }
    shipped = AutoProcessor.from_pretrained(PLANTED_QWEN_DIR)
    assert shipped.tokenizer.get_vocab() == fresh[1].tokenizer.get_vocab()
    assert shipped.image_processor.to_dict() == fresh[1].image_processor.to_dict()
    assert shipped.chat_template == fresh[1].chat_template
    heads_file = find_heads_file(str(PLANTED_QWEN_DIR))
    assert heads_file is not None and heads_file.heads == LOCALIZERS
    assert (heads_file.num_layers, heads_file.num_heads) == (NUM_LAYERS, NUM_HEADS)


def test_the_shipped_folder_is_under_3_mb():
    assert sum(f.stat().st_size for f in PLANTED_QWEN_DIR.iterdir()) < 3_000_000


def test_the_chat_template_is_qwen2_vl_instructs_and_the_config_names_the_tokenizers_vision_tokens(fresh):
    model, processor = fresh
    tokenizer = processor.tokenizer
    assert processor.chat_template == CHAT_TEMPLATE
    ids = tokenizer.convert_tokens_to_ids
    config = model.config
    assert (config.image_token_id, config.vision_start_token_id, config.vision_end_token_id) == (
        ids("<|image_pad|>"),
        ids("<|vision_start|>"),
        ids("<|vision_end|>"),
    )
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.bos_token is None


def test_the_grounding_prompt_and_every_scene_word_are_known_words(fresh):
    tokenizer = fresh[1].tokenizer
    words = set(PALETTE) | set(TEMPLATE_WORDS) | {w for synonyms in SHAPE_WORDS.values() for w in synonyms}
    prompt = QwenPromptBuilder(tokenizer).build(" ".join(sorted(words)), num_image_tokens=4)
    assert tokenizer.unk_token_id not in prompt.ids
    tokens = tokenizer.convert_ids_to_tokens(list(prompt.ids))
    assert tokens[:3] == ["<|im_start|>", "system", "\n"] and tokens.count("<|im_start|>") == 2
    assert len(prompt.expression_ids) == len(words)


@pytest.mark.parametrize(
    "width, height, grid_hw",
    [(448, 448, (16, 16)), (672, 672, (24, 24)), (560, 420, (15, 20)), (672, 336, (12, 24)), (224, 672, (28, 10))],
)
def test_scenes_of_448_to_672_px_give_grids_of_16_to_24_tokens_a_side_and_small_ones_are_enlarged(
    fresh, engine, width, height, grid_hw
):
    inputs = fresh[1].image_processor(images=np.zeros((height, width, 3), np.uint8), return_tensors="pt")
    merge = fresh[1].image_processor.merge_size
    assert inputs["image_grid_thw"].tolist() == [[1, grid_hw[0] * merge, grid_hw[1] * merge]]
    layout = engine.layout_for(width, height)
    assert layout.frame.grid_hw == grid_hw and layout.num_tokens == grid_hw[0] * grid_hw[1]


def test_pixel_values_are_flattened_2_x_14_x_14_patches_normalised_with_clips_mean_and_std(fresh):
    image = np.empty((448, 448, 3), np.uint8)
    image[...] = PALETTE["orange"]
    inputs = fresh[1].image_processor(images=image, return_tensors="pt")
    patches = inputs["pixel_values"].numpy()
    assert patches.shape == (32 * 32, 3 * 2 * 14 * 14)
    per_channel = patches.reshape(-1, 3, 2 * 14 * 14)
    expected = np.broadcast_to(normalized_colour(PALETTE["orange"])[None, :, None], per_channel.shape)
    np.testing.assert_allclose(per_channel, expected, atol=1e-5)


def test_each_merged_token_carries_the_mean_colour_of_its_four_patches_and_its_square(fresh):
    model, processor = fresh
    rng = np.random.default_rng(0)
    colours = np.array(list(PALETTE.values()), dtype=np.uint8)
    patches = colours[rng.integers(len(colours), size=(32, 32))]
    image = np.repeat(np.repeat(patches, 14, axis=0), 14, axis=1)
    inputs = processor.image_processor(images=image, return_tensors="pt")
    with torch.no_grad():
        tokens = model.model.get_image_features(**inputs, return_dict=True).pooler_output[0].numpy()
    normalized = normalized_colour(patches.reshape(-1, 3)).reshape(16, 2, 16, 2, 3)
    mean = normalized.mean(axis=(1, 3)).reshape(-1, 3)
    np.testing.assert_allclose(tokens[:, list(RESIDUAL.x)] / FEATURE_SCALE, mean, atol=1e-3)
    np.testing.assert_allclose(tokens[:, list(RESIDUAL.x_sq)] / FEATURE_SCALE, mean**2, atol=0.03)
    assert np.all(tokens[:, RESIDUAL.image] == np.float32(FEATURE_SCALE))


def test_m_rope_turns_under_1e5_rad_across_a_prompt(fresh):
    text_config = fresh[0].config.text_config
    rotary = fresh[0].model.language_model.rotary_emb
    assert text_config.rope_parameters["rope_type"] == "linear"
    assert sum(rotary.mrope_section) == rotary.inv_freq.numel()
    assert float(rotary.inv_freq.max()) * (576 + 100) < 1e-5


@pytest.mark.parametrize("width, height, columns", [(672, 336, 5), (224, 672, 2)])
def test_each_colour_word_draws_the_localization_heads_to_its_tokens_on_wide_and_tall_images(
    engine, width, height, columns
):
    image, boxes = colour_board(width, height, columns)
    frame = engine.frame_for(width, height)
    for colour, box in boxes.items():
        maps = engine.image_attention(image, f"the {colour} one", heads=LOCALIZERS, image_id=(width, height))
        x0, y0, x1, y1 = frame.box_to_grid(box)
        cells = np.s_[math.floor(y0) : math.ceil(y1), math.floor(x0) : math.ceil(x1)]  # every cell the block touches
        for m in maps:
            assert m[cells].sum() / m.sum() > 0.95, colour


def test_whatever_the_last_word_the_localization_maps_are_the_same(engine):
    image, _ = colour_board(672, 336, 5)
    phrasings = ["red", "the red one on the left", "the disc that is red in the image", "find the red circle"]
    maps = [engine.image_attention(image, text, heads=LOCALIZERS, image_id="board") for text in phrasings]
    for other in maps[1:]:
        np.testing.assert_allclose(other, maps[0], atol=1e-3 * maps[0].max())


def test_uninformative_heads_have_exactly_flat_image_maps_and_small_sums(engine):
    scene = generate_scene(np.random.default_rng(11), SceneConfig(aspect=(2.0, 2.0)))
    sample = engine.image_attention(scene.image, scene.expression)
    sums = image_attention_sums(sample)
    for layer, head in PLANTED_QWEN_HEADS.with_role("uninformative"):
        flat = sample[layer, head]
        assert flat.max() == flat.min()
        assert sums[layer, head] < 0.2


def test_decoy_localizers_have_the_localizers_map_with_their_own_sum(engine):
    scene = generate_scene(np.random.default_rng(12), SceneConfig(aspect=(1 / 3, 1 / 3)))
    sample = engine.image_attention(scene.image, scene.expression)
    sums = image_attention_sums(sample)
    reference = sample[LOCALIZERS[0]] / sums[LOCALIZERS[0]]
    for head in PLANTED_QWEN_HEADS.early_decoys + PLANTED_QWEN_HEADS.low_sum_decoys:
        np.testing.assert_allclose(sample[head] / sums[head], reference, atol=1e-3 * reference.max())
    assert all(head[0] < 2 for head in PLANTED_QWEN_HEADS.early_decoys)
    assert all(sums[h] > 0.2 for h in LOCALIZERS + list(PLANTED_QWEN_HEADS.early_decoys))
    assert all(sums[h] < 0.05 for h in PLANTED_QWEN_HEADS.low_sum_decoys)


def test_scattered_decoys_follow_the_image_noise_and_localizers_do_not(engine):
    config = SceneConfig(long_side=(448, 448), aspect=(1.0, 1.0), num_objects=(2, 2), noise_sigma=(10.0, 10.0))
    scene = generate_scene(np.random.default_rng(13), config)
    renoised = np.clip(
        scene.image.astype(np.int16) + np.random.default_rng(0).integers(-12, 13, size=scene.image.shape), 0, 255
    ).astype(np.uint8)
    first = engine.image_attention(scene.image, scene.expression)
    second = engine.image_attention(renoised, scene.expression)
    for head in PLANTED_QWEN_HEADS.scattered_decoys:
        assert np.corrcoef(first[head].ravel(), second[head].ravel())[0, 1] < 0.5, head
        assert image_attention_sums(first)[head] > 0.8
    for head in LOCALIZERS:
        assert np.corrcoef(first[head].ravel(), second[head].ravel())[0, 1] > 0.95


def test_discovery_over_200_scenes_returns_exactly_the_planted_heads(discovery):
    assert discovery.num_samples == DISCOVERY_SCENES
    assert set(discovery.heads) == set(LOCALIZERS)
    assert all(discovery.votes[head] == DISCOVERY_SCENES for head in LOCALIZERS)


def test_tau_sits_at_the_top_of_the_low_cluster_with_many_candidates_above(discovery):
    sums = discovery.mean_sums
    heads = PLANTED_QWEN_HEADS
    high = [heads.localization, heads.early_decoys, heads.scattered_decoys]
    assert max(sums[h] for h in heads.low_sum_decoys) < discovery.tau
    assert all(sums[h] > 2 * discovery.tau for group in high for h in group)
    assert len(discovery.candidates) > 20


def test_without_the_layer_rule_the_early_decoy_ties_with_the_planted_heads_and_is_picked(samples):
    selection = select_localization_heads(samples, skip_layers=0)
    (early,) = PLANTED_QWEN_HEADS.early_decoys
    assert early in selection.heads
    assert selection.votes[early] == DISCOVERY_SCENES


def test_without_tau_the_low_sum_decoys_tie_with_the_planted_heads_and_are_picked(samples):
    selection = select_localization_heads(samples, use_threshold=False)
    assert set(selection.heads) & set(PLANTED_QWEN_HEADS.low_sum_decoys)
    assert all(selection.votes[head] == DISCOVERY_SCENES for head in PLANTED_QWEN_HEADS.low_sum_decoys)


def test_without_the_entropy_vote_scattered_decoys_are_picked(samples):
    selection = select_localization_heads(samples, use_entropy=False)
    assert set(selection.heads) <= set(PLANTED_QWEN_HEADS.scattered_decoys)


@pytest.fixture(scope="module")
def held_out_ious(engine, discovery):
    """Box IoU of the planted heads and of the three most voted decoys on 100 held-out scenes of aspect 1:3 to 2:1
    whose target is at least 6 cells wide and high."""
    decoys = [head for head in discovery.votes if head not in LOCALIZERS][:3]
    grounders = {"planted": Grounder(engine, LOCALIZERS), "decoys": Grounder(engine, decoys)}
    ious = {"planted": [], "decoys": []}
    for index, scene in enumerate(generate_scenes(HELD_OUT_SEED, 10 * HELD_OUT_SCENES, HELD_OUT_CONFIG)):
        frame = engine.frame_for(scene.width, scene.height)
        if min(scene.target.width_cells(frame), scene.target.height_cells(frame)) < MIN_TARGET_CELLS:
            continue
        for name, grounder in grounders.items():
            proposal = grounder.propose(scene.image, scene.expression, image_id=index)
            ious[name].append(box_iou(proposal.box_xyxy, scene.target.box_xyxy))
        if len(ious["planted"]) == HELD_OUT_SCENES:
            break
    return {name: np.array(values) for name, values in ious.items()}


def test_planted_heads_ground_held_out_targets_at_least_6_cells_wide_and_high(held_out_ious):
    ious = held_out_ious["planted"]
    assert len(ious) == HELD_OUT_SCENES
    assert (ious >= 0.5).mean() >= 0.95
    assert ious.mean() >= 0.75


def test_three_decoy_heads_instead_ground_below_30_percent(held_out_ious):
    assert (held_out_ious["decoys"] >= 0.5).mean() < 0.3
