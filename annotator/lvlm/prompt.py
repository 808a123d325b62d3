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


EXPRESSION_MARK = "ANNOTATOR-EXPRESSION-MARK"


def chat_head_text(processor, default: str | None, model_id: str, image_text: str | None = None) -> str:
    """The text before the expression in one user turn holding the image then the expression: the processor's chat
    template rendered so (no generation prompt) and cut right before the expression, its image placeholder replaced
    by `image_text` (what the processor expands it to, when that is more than the image tokens). `default` when the
    processor has no template; with no `default`, a processor without one raises `ModelUnavailable`."""
    from annotator.errors import ModelUnavailable

    if not getattr(processor, "chat_template", None):
        if default is None:
            raise ModelUnavailable(
                f"{model_id}: its processor has no chat template; save the checkpoint's processor with it again"
            )
        return default
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": EXPRESSION_MARK}]}]
    text = processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=False)
    image = processor.image_token
    if text.count(EXPRESSION_MARK) != 1 or text.count(image) != 1 or text.index(image) > text.index(EXPRESSION_MARK):
        raise ModelUnavailable(f"{model_id}: its chat template does not put one image and then the text in a turn")
    head = text[: text.index(EXPRESSION_MARK)]
    return head if image_text is None else head.replace(image, image_text)


class TemplatePromptBuilder:
    """Tokenizes prompts `head_text + expression` with the model's own tokenizer, `head_text` holding one
    `image_token` that stands for the image's run of image tokens; the sequence ends on the expression's last token.

    The tokenizer is called as the model's processor calls it: its special tokens added (its BOS, where it has one)
    unless `head_text` already starts with the BOS, and a trailing EOS dropped.
    """

    def __init__(self, tokenizer, head_text: str, image_token: str, *, max_expression_tokens: int, max_positions: int):
        self._tokenizer = tokenizer
        self._head_text = head_text
        image_id = tokenizer.convert_tokens_to_ids(image_token)
        self._head = self._ids(head_text)
        if image_id is None or image_id == tokenizer.unk_token_id or self._head.count(image_id) != 1:
            raise ValueError(f"the tokenizer does not keep {image_token!r} as one token")
        self._image_id = image_id
        self._image_start = self._head.index(image_id)
        self.max_expression_tokens = max_expression_tokens
        self.max_positions = max_positions

    def prefix(self, num_image_tokens: int) -> PromptPrefix:
        head, start = self._head, self._image_start
        ids = head[:start] + [self._image_id] * num_image_tokens + head[start + 1 :]
        return PromptPrefix(ids=tuple(ids), image_start=start, num_image_tokens=num_image_tokens)

    def build(self, expression: str, num_image_tokens: int) -> Prompt:
        """The prompt for `expression` (stripped) on an image of `num_image_tokens` tokens."""
        text = stripped_expression(expression)
        prefix = self.prefix(num_image_tokens)
        room = expression_room(self.max_expression_tokens, self.max_positions, len(prefix.ids))
        full = self._ids(self._head_text + text)
        if full[: len(self._head)] != self._head:
            raise ValueError(f"the tokenizer merges the expression {text!r} into the prompt before it")
        tail = full[len(self._head) :]
        if not tail:
            raise ValueError(f"the referring expression {text!r} has no tokens")
        tail = truncated(tail, room, self.max_positions, len(prefix.ids))
        return Prompt(prefix=prefix, expression_ids=tuple(tail), expression=text)

    def _ids(self, text: str) -> list[int]:
        bos = self._tokenizer.bos_token
        add = not (bos is not None and text.startswith(bos))
        ids = list(self._tokenizer(text, add_special_tokens=add)["input_ids"])
        eos = self._tokenizer.eos_token_id
        if eos is not None and ids and ids[-1] == eos:
            ids.pop()
        return ids
