"""The prompt and the image exactly as the model reads them."""

import numpy as np
import pytest

from annotator.grounding.frame import ImageFrame
from annotator.lvlm.model_input import SYSTEM_PROMPT, PromptBuilder, mean_colour, square_image
from tests.tiny_llava import (
    SPEC_FINE,
    SPEC_PLAIN,
    random_image,
    tiny_engine,
    tiny_processor,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def engine():
    return tiny_engine(SPEC_FINE)


def image_rgb(pixel_values):
    """Processor output `[1, 3, s, s]` back to RGB values in 0..255, `[s, s, 3]`."""
    pixels = pixel_values[0].permute(1, 2, 0).float().numpy()
    return (pixels * np.array(CLIP_STD) + np.array(CLIP_MEAN)) * 255.0


def test_the_prompt_is_the_processor_prompt_without_the_stray_space_token(engine):
    processor = tiny_processor(SPEC_FINE)
    text = SYSTEM_PROMPT + "<image>\n" + "the red cup"
    square = np.zeros((SPEC_FINE.image_size, SPEC_FINE.image_size, 3), dtype=np.uint8)
    reference = processor(images=square, text=text)["input_ids"][0]
    tokens = processor.tokenizer.convert_ids_to_tokens(reference)
    after_image = len(tokens) - tokens[::-1].index("<image>")
    assert tokens[after_image] == "\u2581"
    expected = reference[:after_image] + reference[after_image + 1 :]
    assert list(engine.prompt("the red cup").ids) == expected


def test_the_last_token_is_the_expressions_own_last_token(engine):
    prompt = engine.prompt("  the red cup  ")
    tokens = engine.processor.tokenizer.convert_ids_to_tokens(list(prompt.ids))
    assert tokens[-4:] == ["\n", "the", "\u2581red", "\u2581cup"]
    assert prompt.expression == "the red cup"


def test_the_image_tokens_fill_the_grid_after_the_system_text(engine):
    prompt = engine.prompt("a dog")
    tokens = engine.processor.tokenizer.convert_ids_to_tokens(list(prompt.ids))
    image = prompt.prefix.image_positions
    assert tokens[image] == ["<image>"] * 64
    assert tokens[image.start - 1] == "\n" and tokens[0] == "<s>"
    assert tokens.count("<image>") == 64


def test_a_lone_space_token_inside_the_expression_is_dropped_as_the_official_code_does(engine):
    tokens = engine.processor.tokenizer.convert_ids_to_tokens(list(engine.prompt("the  red cup").ids))
    assert tokens[-4:] == ["\n", "the", "\u2581red", "\u2581cup"]


def test_an_engine_asked_to_keep_whitespace_tokens_keeps_the_one_inside_the_expression(engine):
    from annotator.lvlm.engine import LvlmEngine

    keeping = LvlmEngine(engine.model, engine.processor, whitespace_tokens="keep")
    tokens = keeping.processor.tokenizer.convert_ids_to_tokens(list(keeping.prompt("the  red cup").ids))
    assert tokens[-5:] == ["\n", "the", "\u2581", "\u2581red", "\u2581cup"]


def test_an_unknown_whitespace_recipe_is_refused(engine):
    with pytest.raises(ValueError, match="whitespace_tokens must be one of"):
        PromptBuilder(engine.processor.tokenizer, "<image>", 4, 8, 100, whitespace_tokens="drop")


class NewlineSpaceTokenizer:
    """A tokenizer double that puts a lone "▁" between "<image>\n" and the expression, and appends an EOS."""

    bos_token_id, eos_token_id, unk_token_id = 0, 1, None

    def __init__(self):
        self.vocab = {"<s>": 0, "</s>": 1, "<image>": 2, "\n": 3, "\u2581": 4}

    def __call__(self, text, add_special_tokens=True):
        head, _, expression = text.partition("<image>\n")
        tail = ["\u2581", *expression.split()] if expression else []
        tokens = ["<s>", *head.split(), "<image>", "\n", *tail, "</s>"]
        return {"input_ids": [self.convert_tokens_to_ids(t) for t in tokens]}

    def convert_tokens_to_ids(self, token):
        return self.vocab.setdefault(token, len(self.vocab))

    def convert_ids_to_tokens(self, ids):
        names = {i: t for t, i in self.vocab.items()}
        return names[ids] if isinstance(ids, int) else [names[i] for i in ids]


def test_a_lone_space_token_after_the_newline_and_a_trailing_eos_are_dropped():
    tokenizer = NewlineSpaceTokenizer()
    builder = PromptBuilder(
        tokenizer, "<image>", num_image_tokens=3, max_expression_tokens=8, max_positions=100, whitespace_tokens="keep"
    )
    tokens = tokenizer.convert_ids_to_tokens(list(builder.build("red cup").ids))
    assert tokens == ["<s>", *SYSTEM_PROMPT.split(), "<image>", "<image>", "<image>", "\n", "red", "cup"]


@pytest.mark.parametrize("expression", ["", "   ", " \n\t "])
def test_an_empty_expression_is_refused(engine, expression):
    with pytest.raises(ValueError, match="empty"):
        engine.image_attention(random_image(8, 8), expression)


def test_a_very_long_expression_keeps_its_first_tokens_with_a_warning():
    engine = tiny_engine(SPEC_PLAIN)
    long_expression = " ".join(["red"] * 100)
    with pytest.warns(UserWarning, match="100 tokens long; only its first 64 are used"):
        prompt = engine.prompt(long_expression)
    assert len(prompt.expression_ids) == 64


def test_the_expression_limit_leaves_room_in_the_models_positions():
    engine = tiny_engine(SPEC_PLAIN)
    room = engine.model.config.text_config.max_position_embeddings - len(engine.prompt("a").prefix.ids)
    from annotator.lvlm.engine import LvlmEngine

    roomy = LvlmEngine(engine.model, engine.processor, max_expression_tokens=10_000)
    with pytest.warns(UserWarning, match=f"only its first {room} are used"):
        prompt = roomy.prompt(" ".join(["red"] * (room + 5)))
    assert len(prompt.ids) == engine.model.config.text_config.max_position_embeddings


def test_the_padding_colour_is_the_processors_mean_as_llava_pads():
    assert mean_colour(CLIP_MEAN) == (122, 116, 104)


def test_a_marker_in_each_corner_of_a_wide_image_reaches_the_corner_cells_of_its_band(engine):
    # 240 x 60 in a 240 square: 30 px per cell of the 8 x 8 grid, the image covers grid rows 3 and 4.
    image = np.full((60, 240, 3), 128, dtype=np.uint8)
    image[:30, :30] = (255, 0, 0)
    image[30:, 210:] = (0, 0, 255)
    pixels, frame = engine.pixel_values(image)
    rgb = image_rgb(pixels.cpu())
    cells = rgb.reshape(8, 8, 8, 8, 3).mean(axis=(1, 3))
    redness = cells[..., 0] - cells[..., 2]
    assert np.unravel_index(np.argmax(redness), redness.shape) == (3, 0)
    assert np.unravel_index(np.argmin(redness), redness.shape) == (4, 7)
    np.testing.assert_array_equal(frame.to_grid(np.array([[15, 15], [225, 45]])) // 1, [[0, 3], [7, 4]])


def test_the_padding_cells_show_the_mean_colour(engine):
    pixels, _ = engine.pixel_values(np.full((60, 240, 3), 255, dtype=np.uint8))
    rgb = image_rgb(pixels.cpu())
    np.testing.assert_allclose(rgb[:16].reshape(-1, 3).mean(axis=0), (122, 116, 104), atol=0.5)
    np.testing.assert_allclose(rgb[-16:].reshape(-1, 3).mean(axis=0), (122, 116, 104), atol=0.5)


@pytest.mark.parametrize("height, width", [(1, 1), (100, 20000), (20000, 3)])
def test_degenerate_and_huge_images_give_finite_maps(engine, height, width):
    maps = engine.image_attention(random_image(height, width), "the red cup", heads=[(1, 0)])
    assert maps.shape == (1, 8, 8) and np.isfinite(maps).all()


def test_a_large_image_is_reduced_onto_the_same_square_as_padding_would_give():
    image = np.zeros((100, 400, 3), dtype=np.uint8)
    image[40:60, 300:340] = 255
    frame = ImageFrame.for_image(400, 100, 8, 64)
    square = square_image(image, frame, (0, 0, 0), max_side=100)
    assert square.shape == (100, 100, 3)
    ys, xs = np.nonzero(square[..., 0] > 127)
    # The block's centre (320, 50) sits at (320, 50 + 150) in the 400 square, i.e. (80, 50) at a quarter scale.
    assert abs(xs.mean() + 0.5 - 80.0) < 0.3 and abs(ys.mean() + 0.5 - 50.0) < 0.3


def test_an_image_that_is_not_rgb_uint8_is_refused(engine):
    with pytest.raises(ValueError, match="RGB uint8"):
        engine.image_attention(np.zeros((10, 10), dtype=np.uint8), "a dog")
