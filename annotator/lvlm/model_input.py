"""The image and the text exactly as LLaVA-1.5 sees them for grounding (docs/method.md, parts 1-3).

Text: the reference template with no assistant turn, so the last input token is the expression's own last token:
`SYSTEM_PROMPT + "<image>" + "\\n" + expression` (the expression stripped). Two ways to tokenize it
(`PromptBuilder(whitespace_tokens=...)`):

- `"official"` (the default): as the official LocalizationHeads code, whose ids the paper's numbers were produced
  with. The text is tokenized in chunks around `<image>` (each chunk with BOS, the BOS of later chunks dropped, the
  image id put between them), then EVERY lone whitespace token is removed (the "▁" piece, Llama id 29871), wherever
  it is. Llama's legacy sentencepiece tokenizer prepends "▁" to every chunk, which leaves a lone "▁" before the
  newline after `<image>`, and it writes a space before a digit as a lone "▁" ("guy in 2nd row" is `▁in`, `▁`,
  `2`, `nd`, `▁row`): the official code drops both.
- `"keep"`: the sequence this project used before: the whole text tokenized at once and only the lone "▁" right
  after `<image>` dropped; other lone "▁" tokens (before a digit, or before a character with no "▁" form in the
  vocabulary, such as most CJK characters) stay. Kept to reproduce runs made before the official sequence became
  the default.

A lone whitespace token is recognised by its token string, so a tokenizer without one (word-level) is unaffected.
The token sequence splits into a prefix that is the same for every expression (BOS, system text, the image tokens,
the newline) and the expression's tokens, so the prefix can be computed once per image.

Image: padded to a centred square with the processor's mean colour (as LLaVA-1.5 was trained), so the processor's
resize + centre crop keeps the whole image. Very large images are first reduced (area averaging) and placed on a
smaller square with the exact affine map of `ImageFrame`, so a 20000 x 100 image never becomes a 20000 x 20000
array.
"""

from __future__ import annotations

from typing import Literal, get_args

import cv2
import numpy as np

from annotator.grounding.frame import ImageFrame
from annotator.lvlm.prompt import Prompt, PromptPrefix, expression_room, stripped_expression, truncated

SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language.\n"
)
WHITESPACE_TOKEN = "\u2581"
WhitespaceTokens = Literal["official", "keep"]
WHITESPACE_TOKEN_RECIPES: tuple[WhitespaceTokens, ...] = get_args(WhitespaceTokens)


class PromptBuilder:
    """Tokenizes grounding prompts with a model's own tokenizer (any `PreTrainedTokenizerBase`).

    `image_token`: the processor's image placeholder; `num_image_tokens`: features per image. An expression keeps
    at most `max_expression_tokens` tokens, and never more than the `max_positions` the model reads minus the
    prefix; longer ones keep their first tokens, with a warning. `whitespace_tokens`: `"official"` (every lone "▁"
    token removed, as the official code) or `"keep"` (only the one after the image token); see the module docstring.
    """

    def __init__(
        self,
        tokenizer,
        image_token: str,
        num_image_tokens: int,
        max_expression_tokens: int,
        max_positions: int,
        *,
        whitespace_tokens: WhitespaceTokens = "official",
    ) -> None:
        if whitespace_tokens not in WHITESPACE_TOKEN_RECIPES:
            raise ValueError(f"whitespace_tokens must be one of {WHITESPACE_TOKEN_RECIPES}, got {whitespace_tokens!r}")
        self._tokenizer = tokenizer
        self._image_token = image_token
        self.whitespace_tokens = whitespace_tokens
        image_id = tokenizer.convert_tokens_to_ids(image_token)
        self._image_id = image_id
        head = self._ids("\n")
        if image_id is None or image_id == tokenizer.unk_token_id or head.count(image_id) != 1:
            raise ValueError(f"the tokenizer does not keep {image_token!r} as one token")
        start = head.index(image_id)
        self._head = head
        self.prefix = PromptPrefix(
            ids=tuple(head[:start] + [image_id] * num_image_tokens + head[start + 1 :]),
            image_start=start,
            num_image_tokens=num_image_tokens,
        )
        self.max_positions = max_positions
        self.max_expression_tokens = expression_room(max_expression_tokens, max_positions, len(self.prefix.ids))

    def build(self, expression: str) -> Prompt:
        """The prompt for `expression` (stripped). Empty expressions raise ValueError; long ones are truncated."""
        text = stripped_expression(expression)
        full = self._ids("\n" + text)
        if full[: len(self._head)] != self._head:
            raise ValueError(f"the tokenizer merges the expression {text!r} into the prompt before it")
        tail = full[len(self._head) :]
        if self.whitespace_tokens == "keep" and tail and self._is_whitespace(tail[0]):
            tail = tail[1:]
        if not tail:
            raise ValueError(f"the referring expression {text!r} has no tokens")
        tail = truncated(tail, self.max_expression_tokens, self.max_positions, len(self.prefix.ids))
        return Prompt(prefix=self.prefix, expression_ids=tuple(tail), expression=text)

    def _ids(self, after_image: str) -> list[int]:
        """Token ids of `SYSTEM_PROMPT + image_token + after_image` by the whitespace recipe: one BOS, no EOS."""
        if self.whitespace_tokens == "official":
            ids = self._chunk(SYSTEM_PROMPT, first=True) + [self._image_id] + self._chunk(after_image, first=False)
            return [i for i in ids if not self._is_whitespace(i)]
        ids = self._chunk(SYSTEM_PROMPT + self._image_token + after_image, first=True)
        for i in range(len(ids) - 1):
            if ids[i] == self._image_id and self._is_whitespace(ids[i + 1]):
                del ids[i + 1]
                break
        return ids

    def _chunk(self, text: str, first: bool) -> list[int]:
        """Token ids of `text` on its own: the BOS kept only on the `first` chunk, a trailing EOS dropped."""
        ids = list(self._tokenizer(text, add_special_tokens=True)["input_ids"])
        eos = self._tokenizer.eos_token_id
        if eos is not None and ids and ids[-1] == eos:
            ids.pop()
        if not first and ids and ids[0] == self._tokenizer.bos_token_id:
            ids.pop(0)
        return ids

    def _is_whitespace(self, token_id: int) -> bool:
        """Whether `token_id` is the lone "▁" piece (Llama's 29871)."""
        return self._tokenizer.convert_ids_to_tokens(token_id) == WHITESPACE_TOKEN


def mean_colour(image_mean: tuple[float, float, float] | list[float]) -> tuple[int, int, int]:
    """Padding colour from the processor's mean: `int(255 * mean)` per channel, as LLaVA-1.5's `expand2square`."""
    r, g, b = (int(255 * m) for m in image_mean)
    return r, g, b


def square_image(image: np.ndarray, frame: ImageFrame, fill: tuple[int, int, int], max_side: int) -> np.ndarray:
    """The image centred on a square of colour `fill` (`frame.pad`), at most `max_side` pixels a side.

    A larger image is reduced with area averaging, then placed on the `max_side` square through the frame's exact
    affine map (its pixel (x, y) covers [(x + offset_x) s, (x + 1 + offset_x) s) with s = max_side / side).
    """
    if frame.side <= max_side:
        return frame.pad(image, fill)
    scale = max_side / frame.side
    reduced_w = max(1, round(frame.width * scale))
    reduced_h = max(1, round(frame.height * scale))
    reduced = cv2.resize(image, (reduced_w, reduced_h), interpolation=cv2.INTER_AREA).reshape(reduced_h, reduced_w, -1)
    per_reduced_x, per_reduced_y = frame.width / reduced_w, frame.height / reduced_h
    affine = np.array(
        [
            [per_reduced_x * scale, 0.0, (0.5 * per_reduced_x + frame.offset_x) * scale - 0.5],
            [0.0, per_reduced_y * scale, (0.5 * per_reduced_y + frame.offset_y) * scale - 0.5],
        ]
    )
    square = cv2.warpAffine(
        reduced,
        affine,
        (max_side, max_side),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=tuple(float(c) for c in fill),
    )
    return square.reshape(max_side, max_side, image.shape[2])
