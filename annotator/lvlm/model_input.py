"""The image and the text exactly as LLaVA-1.5 sees them for grounding (design.md sections 2 and 3).

Text: the reference template with no assistant turn, so the last input token is the expression's own last token:
`SYSTEM_PROMPT + "<image>" + "\\n" + expression`. Llama's legacy sentencepiece tokenizer prepends "▁" to every text
segment between special tokens, which leaves a lone "▁" token right after `<image>` (before the newline); the
official code drops it, and so do we, recognising it by its token string. The token sequence splits into a prefix
that is the same for every expression (BOS, system text, the image tokens, the newline) and the expression's
tokens, so the prefix can be computed once per image.

Image: padded to a centred square with the processor's mean colour (as LLaVA-1.5 was trained), so the processor's
resize + centre crop keeps the whole image. Very large images are first reduced (area averaging) and placed on a
smaller square with the exact affine map of `ImageFrame`, so a 20000 x 100 image never becomes a 20000 x 20000
array.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from annotator.grounding.frame import ImageFrame

SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language.\n"
)
STRAY_SPACE_TOKEN = "\u2581"


@dataclass(frozen=True)
class PromptPrefix:
    """The part of the prompt shared by every expression: token ids with the image placeholder expanded.

    `image_start`: index of the first image token; `num_image_tokens`: how many there are (grid_h * grid_w).
    """

    ids: tuple[int, ...]
    image_start: int
    num_image_tokens: int

    @property
    def image_positions(self) -> slice:
        return slice(self.image_start, self.image_start + self.num_image_tokens)


@dataclass(frozen=True)
class Prompt:
    """A full grounding prompt: the shared `prefix` followed by `expression_ids` (the last id is the query token)."""

    prefix: PromptPrefix
    expression_ids: tuple[int, ...]
    expression: str

    @property
    def ids(self) -> tuple[int, ...]:
        return self.prefix.ids + self.expression_ids


class PromptBuilder:
    """Tokenizes grounding prompts with a model's own tokenizer (any `PreTrainedTokenizerBase`).

    `image_token`: the processor's image placeholder; `num_image_tokens`: features per image. An expression keeps
    at most `max_expression_tokens` tokens, and never more than the `max_positions` the model reads minus the
    prefix; longer ones keep their first tokens, with a warning.
    """

    def __init__(
        self, tokenizer, image_token: str, num_image_tokens: int, max_expression_tokens: int, max_positions: int
    ) -> None:
        self._tokenizer = tokenizer
        self._image_token = image_token
        self._head_text = SYSTEM_PROMPT + image_token + "\n"
        head = self._ids(self._head_text)
        image_id = tokenizer.convert_tokens_to_ids(image_token)
        if head.count(image_id) != 1:
            raise ValueError(f"the tokenizer does not keep {image_token!r} as one token")
        start = head.index(image_id)
        self._head = head
        self.prefix = PromptPrefix(
            ids=tuple(head[:start] + [image_id] * num_image_tokens + head[start + 1 :]),
            image_start=start,
            num_image_tokens=num_image_tokens,
        )
        self.max_positions = max_positions
        self.max_expression_tokens = min(max_expression_tokens, max_positions - len(self.prefix.ids))
        if self.max_expression_tokens < 1:
            raise ValueError(
                f"no room for an expression: the prompt prefix takes {len(self.prefix.ids)} of {max_positions} "
                f"positions, and max_expression_tokens is {max_expression_tokens}"
            )

    def build(self, expression: str) -> Prompt:
        """The prompt for `expression` (stripped). Empty expressions raise ValueError; long ones are truncated."""
        text = expression.strip() if isinstance(expression, str) else ""
        if not text:
            raise ValueError(f"the referring expression is empty: {expression!r}")
        full = self._ids(self._head_text + text)
        if full[: len(self._head)] != self._head:
            raise ValueError(f"the tokenizer merges the expression {text!r} into the prompt before it")
        tail = full[len(self._head) :]
        if tail and self._tokenizer.convert_ids_to_tokens(tail[0]) == STRAY_SPACE_TOKEN:
            tail = tail[1:]
        if not tail:
            raise ValueError(f"the referring expression {text!r} has no tokens")
        if len(tail) > self.max_expression_tokens:
            warnings.warn(
                f"the expression is {len(tail)} tokens long; only its first {self.max_expression_tokens} are used: "
                f"referring expressions are a few words, every further token costs model time, and the model reads "
                f"at most {self.max_positions} positions, {len(self.prefix.ids)} of them taken by the prompt prefix",
                stacklevel=3,
            )
            tail = tail[: self.max_expression_tokens]
        return Prompt(prefix=self.prefix, expression_ids=tuple(tail), expression=text)

    def _ids(self, text: str) -> list[int]:
        """Token ids of `text` with BOS, without a trailing EOS, without the stray "▁" after the image token."""
        ids = list(self._tokenizer(text, add_special_tokens=True)["input_ids"])
        eos = self._tokenizer.eos_token_id
        if eos is not None and ids and ids[-1] == eos:
            ids.pop()
        tokens = self._tokenizer.convert_ids_to_tokens(ids)
        for i, token in enumerate(tokens[:-1]):
            if token == self._image_token and tokens[i + 1] == STRAY_SPACE_TOKEN:
                del ids[i + 1]
                break
        return ids


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
