"""The shipped planted model (synthetic/planted.py): plain transformers loading, equality with a fresh build, and
the behaviour planted in each kind of head, read through the grounding engine."""

import json
import math

import cv2
import numpy as np
import pytest
import torch

from annotator.grounding.grounder import Grounder
from annotator.grounding.heads import find_heads_file, image_attention_sums
from annotator.lvlm.engine import LvlmEngine
from annotator.lvlm.model_input import SYSTEM_PROMPT
from annotator.synthetic.planted import (
    NUM_HEADS,
    NUM_LAYERS,
    PLANTED_HEADS,
    PLANTED_MODEL_DIR,
    build_config,
    build_planted_model,
)
from annotator.synthetic.scenes import PALETTE, SHAPE_WORDS, TEMPLATE_WORDS, SceneConfig, box_iou, generate_scene
from annotator.paths import DEMO_DIR

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOCALIZERS = list(PLANTED_HEADS.localization)



@pytest.fixture(scope="module")
def engine():
    return LvlmEngine.load(PLANTED_MODEL_DIR)


@pytest.fixture(scope="module")
def fresh():
    return build_planted_model()


@pytest.fixture(scope="module")
def colour_board():
    """A 420 x 168 grey image with one 42 x 42 px block of each palette colour, 5 per row, and each block's box."""
    image = np.full((168, 420, 3), 128, dtype=np.uint8)
    boxes = {}
    for i, (name, rgb) in enumerate(PALETTE.items()):
        x0, y0 = 21 + (i % 5) * 84, 21 + (i // 5) * 84
        image[y0 : y0 + 42, x0 : x0 + 42] = rgb
        boxes[name] = (x0, y0, x0 + 42, y0 + 42)
    return image, boxes


def test_the_shipped_folder_loads_with_plain_transformers_classes():
    from transformers import AutoProcessor, LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast

    model = LlavaForConditionalGeneration.from_pretrained(PLANTED_MODEL_DIR)
    processor = AutoProcessor.from_pretrained(PLANTED_MODEL_DIR)
    assert isinstance(processor, LlavaProcessor)
    assert isinstance(processor.tokenizer, PreTrainedTokenizerFast)
    assert type(processor.image_processor).__name__ == "CLIPImageProcessor"
    inputs = processor(images=np.zeros((336, 336, 3), np.uint8), text="<image>\nthe red disc", return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 576
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape


def test_the_shipped_config_equals_a_fresh_build(fresh):
    from transformers import LlavaConfig

    written_on_save = ("architectures", "dtype")
    shipped = LlavaConfig.from_pretrained(PLANTED_MODEL_DIR).to_dict()
    built = build_config(fresh[1].tokenizer).to_dict()
    assert {k: v for k, v in shipped.items() if k not in written_on_save} == {
        k: v for k, v in built.items() if k not in written_on_save
    }


def test_the_shipped_weights_equal_a_fresh_build(fresh):
    from transformers import LlavaForConditionalGeneration

    shipped = LlavaForConditionalGeneration.from_pretrained(PLANTED_MODEL_DIR).state_dict()
    built = fresh[0].state_dict()
    assert shipped.keys() == built.keys()
    for name, tensor in built.items():
        assert torch.equal(shipped[name], tensor), name


def test_the_shipped_processor_and_heads_file_equal_a_fresh_build(fresh):
    from transformers import AutoProcessor

    shipped = AutoProcessor.from_pretrained(PLANTED_MODEL_DIR)
    processor = fresh[1]
    assert shipped.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert shipped.image_processor.to_dict() == processor.image_processor.to_dict()
    assert (shipped.patch_size, shipped.num_additional_image_tokens, shipped.vision_feature_select_strategy) == (
        14,
        1,
        "default",
    )
    heads_file = find_heads_file(str(PLANTED_MODEL_DIR))
    assert heads_file is not None and heads_file.heads == LOCALIZERS


def test_the_shipped_folder_is_well_under_5_mb():
    assert sum(f.stat().st_size for f in PLANTED_MODEL_DIR.iterdir()) < 2_500_000


def test_the_config_is_llava_1_5s_grid_with_grouped_query_attention(fresh):
    config = fresh[0].config
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (336, 14)
    assert config.vision_feature_select_strategy == "default"
    text = config.text_config
    assert text.num_key_value_heads < text.num_attention_heads
    assert (text.num_hidden_layers, text.num_attention_heads) == (NUM_LAYERS, NUM_HEADS)


def test_rope_turns_under_1e5_rad_across_a_prompt(fresh):
    rotary = fresh[0].model.language_model.rotary_emb
    assert fresh[0].config.text_config.rope_parameters["rope_type"] == "linear"
    assert float(rotary.inv_freq.max()) * fresh[0].config.text_config.max_position_embeddings < 1e-4
    prompt_positions = 576 + 100
    assert float(rotary.inv_freq.max()) * prompt_positions < 1e-5


def test_the_tokenizer_adds_bos_and_knows_every_word_of_the_prompts(fresh):
    tokenizer = fresh[1].tokenizer
    words = set(PALETTE) | set(TEMPLATE_WORDS) | {w for synonyms in SHAPE_WORDS.values() for w in synonyms}
    text = SYSTEM_PROMPT + "<image>\n" + " ".join(sorted(words))
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.unk_token_id not in ids
    assert ids.count(tokenizer.convert_tokens_to_ids("<image>")) == 1


def test_each_colour_word_draws_the_localization_heads_to_its_patches(engine, colour_board):
    image, boxes = colour_board
    frame = engine.frame_for(image.shape[1], image.shape[0])
    for colour, box in boxes.items():
        maps = engine.image_attention(image, f"the {colour} one", heads=LOCALIZERS, image_id="board")
        x0, y0, x1, y1 = frame.box_to_grid(box)
        cells = np.s_[math.floor(y0) : math.ceil(y1), math.floor(x0) : math.ceil(x1)]  # every cell the block touches
        for m in maps:
            assert m[cells].sum() / m.sum() > 0.95, colour


def test_whatever_the_last_word_the_localization_maps_are_the_same(engine, colour_board):
    image, _ = colour_board
    phrasings = ["red", "the red one on the left", "the disc that is red in the image", "find the red circle"]
    maps = [engine.image_attention(image, text, heads=LOCALIZERS, image_id="board") for text in phrasings]
    for other in maps[1:]:
        np.testing.assert_allclose(other, maps[0], atol=1e-3 * maps[0].max())


def test_uninformative_heads_have_exactly_flat_image_maps_and_small_sums(engine):
    scene = generate_scene(np.random.default_rng(11))
    sample = engine.image_attention(scene.image, scene.expression)
    sums = image_attention_sums(sample)
    for layer, head in PLANTED_HEADS.with_role("uninformative"):
        flat = sample[layer, head]
        assert flat.max() == flat.min()
        assert sums[layer, head] < 0.2


def test_decoy_localizers_have_the_localizers_map_with_their_own_sum(engine):
    scene = generate_scene(np.random.default_rng(12))
    sample = engine.image_attention(scene.image, scene.expression)
    sums = image_attention_sums(sample)
    reference = sample[LOCALIZERS[0]] / sums[LOCALIZERS[0]]
    for head in PLANTED_HEADS.early_decoys + PLANTED_HEADS.low_sum_decoys:
        np.testing.assert_allclose(sample[head] / sums[head], reference, atol=1e-3 * reference.max())
    assert all(head[0] < 2 for head in PLANTED_HEADS.early_decoys)
    assert all(sums[h] > 0.2 for h in LOCALIZERS + list(PLANTED_HEADS.early_decoys))
    assert all(sums[h] < 0.05 for h in PLANTED_HEADS.low_sum_decoys)


def test_scattered_decoys_follow_the_image_noise_and_localizers_do_not(engine):
    config = SceneConfig(long_side=(336, 336), aspect=(1.0, 1.0), num_objects=(2, 2), noise_sigma=(10.0, 10.0))
    scene = generate_scene(np.random.default_rng(13), config)
    renoised = np.clip(
        scene.image.astype(np.int16) + np.random.default_rng(0).integers(-12, 13, size=scene.image.shape), 0, 255
    ).astype(np.uint8)
    first = engine.image_attention(scene.image, scene.expression)
    second = engine.image_attention(renoised, scene.expression)
    for head in PLANTED_HEADS.scattered_decoys:
        assert np.corrcoef(first[head].ravel(), second[head].ravel())[0, 1] < 0.5, head
        assert image_attention_sums(first)[head] > 0.8
    for head in LOCALIZERS:
        assert np.corrcoef(first[head].ravel(), second[head].ravel())[0, 1] > 0.95


def test_every_demo_expression_finds_its_object(engine):
    grounder = Grounder(engine, LOCALIZERS)
    for index, line in enumerate((DEMO_DIR / "ground_truth.jsonl").read_text(encoding="utf-8").splitlines()):
        truth = json.loads(line)
        image = cv2.cvtColor(cv2.imread(str(DEMO_DIR / truth["image"])), cv2.COLOR_BGR2RGB)
        for obj in truth["objects"]:
            proposal = grounder.propose(image, obj["expression"], image_id=("demo", index))
            assert box_iou(proposal.box_xyxy, obj["box_xyxy"]) >= 0.5, (truth["image"], obj["expression"])
