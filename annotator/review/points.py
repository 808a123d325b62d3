"""SAM refinement points as the session, the store and the canvas share them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PromptPoint:
    """A SAM refinement point in original pixels; `positive` False marks background."""

    x: float
    y: float
    positive: bool


def points_to_json(points: Iterable[PromptPoint]) -> list[list[float]]:
    """Points as the store keeps them in an annotation's `extra["points"]`: `[[x, y, 1 | 0], ...]`."""
    return [[float(p.x), float(p.y), int(p.positive)] for p in points]


def points_from_json(value: object) -> tuple[PromptPoint, ...]:
    """The inverse of `points_to_json`; anything malformed gives no points rather than an error."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        return ()
    points: list[PromptPoint] = []
    for item in value:
        if not isinstance(item, Sequence) or isinstance(item, str) or len(item) != 3:
            return ()
        x, y, positive = item
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y, positive)):
            return ()
        points.append(PromptPoint(float(x), float(y), bool(positive)))
    return tuple(points)
