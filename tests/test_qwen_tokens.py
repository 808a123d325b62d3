"""The Qwen2-VL prompt and token layout against the real Qwen2-VL processor (tests/qwen_tokenizer.py).

The reference is what the processor itself makes: its chat template's text for one user turn (the image, then the
expression), run through `processor(text=..., images=...)`, cut right before the turn's `<|im_end|>`. The prompt must
be exactly that sequence, so its last token is the expression's own last token, and the layout must count and place
the image tokens as the processor expands them.
"""

import functools

import numpy as np
import pytest
from PIL import Image

from annotator.lvlm.qwen2_vl import QwenPromptBuilder, qwen_layout
from tests.qwen_tokenizer import MAX_PIXELS, MIN_PIXELS, real_qwen_processor

IMAGE_PAD, IM_END, NEWLINE = 151655, 151645, 198
TRANSFORMERS_MAX_PIXELS = 28 * 28 * 1280  # Qwen2VLImageProcessor's own default, often set by users too
EXPRESSION_IMAGE_SIZE = (224, 168)  # 8 x 6 merged tokens

EXPRESSIONS = [
    "guy in 2nd row",
    "the 3 cups",
    "number 23 jersey",
    "50% hidden umbrella",
    "man, left",
    "dog!",
    "far right?",
    "the man's left arm",
    "a (blue) car",
    '"quoted" sign',
    "top-left corner; small",
    "mom & kid",
    "  red cup  ",
    "\tkid in white t-shirt\n",
    "café table",
    "猫",
    "Straße",
    "sign saying 日本語",
    "emoji 🍌 banana",
    # 37 tokens, within the builder's 64
    "the tall man in the dark blue jacket and grey trousers standing second from the left, just behind the small "
    "red car that is parked near the bus stop on the far side of the street",
]

# (width, height, min_pixels, max_pixels); None: the checkpoint's (3136, 12845056)
IMAGE_SIZES = {
    "1000x750": (1000, 750, None, None),
    "1600x1200": (1600, 1200, None, None),
    "1600x1200 at transformers' max_pixels": (1600, 1200, None, TRANSFORMERS_MAX_PIXELS),
    "2:1": (1200, 600, None, None),
    "1:3": (300, 900, None, None),
    "thin strip": (1000, 20, None, None),
    "tiny, below min_pixels": (30, 20, None, None),
    "small, below a raised min_pixels": (100, 80, 256 * 28 * 28, None),
    "huge, above max_pixels": (4600, 3100, None, None),
    "huge at transformers' max_pixels": (3000, 2000, None, TRANSFORMERS_MAX_PIXELS),
}


@functools.lru_cache(maxsize=None)
def processor(min_pixels: int | None, max_pixels: int | None):
    return real_qwen_processor(min_pixels=min_pixels, max_pixels=max_pixels)


@functools.lru_cache(maxsize=None)
def processed(expression: str, width: int, height: int, min_pixels: int | None, max_pixels: int | None):
    """The processor's input ids for one user turn (image, then the expression) and its `image_grid_thw`."""
    proc = processor(min_pixels, max_pixels)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": expression}]}]
    text = proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    image = Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8))
    out = proc(text=[text], images=[image], return_tensors="np")
    return tuple(out["input_ids"][0].tolist()), tuple(out["image_grid_thw"][0].tolist())


def processor_prompt_ids(expression: str, width: int, height: int, min_pixels=None, max_pixels=None) -> tuple:
    """The processor's ids cut right after the expression (the turn ends on `<|im_end|>`, newline)."""
    ids, _ = processed(expression, width, height, min_pixels, max_pixels)
    assert ids[-2:] == (IM_END, NEWLINE)
    return ids[:-2]


def builder() -> QwenPromptBuilder:
    return QwenPromptBuilder(processor(None, None).tokenizer, max_expression_tokens=64, max_positions=32768)


def layout(width, height, min_pixels, max_pixels):
    return qwen_layout(
        width,
        height,
        min_pixels=MIN_PIXELS if min_pixels is None else min_pixels,
        max_pixels=MAX_PIXELS if max_pixels is None else max_pixels,
    )


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_the_prompt_is_the_chat_templates_sequence_cut_after_the_expression(expression):
    expected = processor_prompt_ids(expression.strip(), *EXPRESSION_IMAGE_SIZE)

    prompt = builder().build(expression, num_image_tokens=expected.count(IMAGE_PAD))

    assert prompt.ids == expected


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_the_prompts_expression_tokens_decode_to_the_stripped_expression(expression):
    prompt = builder().build(expression, num_image_tokens=48)

    assert processor(None, None).tokenizer.decode(list(prompt.expression_ids)) == expression.strip()


@pytest.mark.parametrize("size", IMAGE_SIZES.values(), ids=IMAGE_SIZES.keys())
def test_the_processor_expands_the_image_into_as_many_tokens_as_the_layout_counts(size):
    ids, _ = processed("dog", *size)

    assert ids.count(IMAGE_PAD) == layout(*size).num_tokens


@pytest.mark.parametrize("size", IMAGE_SIZES.values(), ids=IMAGE_SIZES.keys())
def test_the_processors_patch_grid_halved_is_the_layouts_grid(size):
    _, (t, h, w) = processed("dog", *size)

    assert (t, h / 2, w / 2) == (1, *layout(*size).frame.grid_hw)


@pytest.mark.parametrize("size", IMAGE_SIZES.values(), ids=IMAGE_SIZES.keys())
def test_the_prompt_for_the_layouts_token_count_is_the_processors_sequence(size):
    expected = processor_prompt_ids("dog", *size)
    image_positions = [i for i, token in enumerate(expected) if token == IMAGE_PAD]

    prompt = builder().build("dog", num_image_tokens=layout(*size).num_tokens)

    assert prompt.ids == expected
    assert list(range(len(prompt.ids))[prompt.prefix.image_positions]) == image_positions
