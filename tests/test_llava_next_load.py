"""LLaVA-NeXT and LLaVA-OneVision checkpoints: a truncated build of the real llava-onevision-qwen2-0.5b config holds
no parameter above the deepest head and no LM head (counted by hand), truncated loads of saved checkpoints (in
transformers' key names and the hub's original ones) give the whole model's maps, and the prompts on the real
Qwen2 and Llama-2 vocabularies are the processors' chat-template sequences cut after the expression."""

import numpy as np
import pytest
import torch

from tests.test_official_tokens import EXPRESSIONS as OFFICIAL_EXPRESSIONS
from tests.test_official_tokens import llama_tokenizer  # noqa: F401 (a fixture, found by name)
from tests.tiny_llava import random_image
from tests.tiny_llava_next import NEXT, ONEVISION, tiny_anyres, tiny_processor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPECS = {"llava-next": NEXT, "llava-onevision": ONEVISION}


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
    from annotator.lvlm.llava_next import chat_prompt_builder

    processor = real_onevision_processor()
    builder = chat_prompt_builder(processor, max_expression_tokens=64, max_positions=32768, model_id="onevision")
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

    from annotator.lvlm.llava_next import chat_prompt_builder

    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
        tokenizer=llama_tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VICUNA_TEMPLATE,
    )
    builder = chat_prompt_builder(processor, max_expression_tokens=64, max_positions=4096, model_id="vicuna")
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
