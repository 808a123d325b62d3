"""A grounding prompt as token ids: the prefix shared by every expression on an image, then the expression's own
tokens, the last of which is the query token whose attention the method reads (docs/method.md, part 1)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class PromptPrefix:
    """The part of the prompt shared by every expression: token ids with the image placeholder expanded.

    `image_start`: index of the first image token; `num_image_tokens`: how many there are (the token layout's).
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


def stripped_expression(expression: str) -> str:
    """The expression without surrounding whitespace; ValueError if nothing is left."""
    text = expression.strip() if isinstance(expression, str) else ""
    if not text:
        raise ValueError(f"the referring expression is empty: {expression!r}")
    return text


def expression_room(max_expression_tokens: int, max_positions: int, prefix_length: int) -> int:
    """How many expression tokens fit after a prefix of `prefix_length` (ValueError if none)."""
    room = min(max_expression_tokens, max_positions - prefix_length)
    if room < 1:
        raise ValueError(
            f"no room for an expression: the prompt prefix takes {prefix_length} of {max_positions} positions, and "
            f"max_expression_tokens is {max_expression_tokens}"
        )
    return room


def truncated(tail: list[int], room: int, max_positions: int, prefix_length: int) -> list[int]:
    """The expression's first `room` tokens, with a warning when that cuts it."""
    if len(tail) > room:
        warnings.warn(
            f"the expression is {len(tail)} tokens long; only its first {room} are used: referring expressions are "
            f"a few words, every further token costs model time, and the model reads at most {max_positions} "
            f"positions, {prefix_length} of them taken by the prompt prefix",
            stacklevel=4,
        )
        return tail[:room]
    return tail
