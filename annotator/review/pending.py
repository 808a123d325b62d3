"""The session's value types: pending annotations, new proposals, and the mask requests and answers it trades
with whatever computes masks (the app's SAM worker, or a test's fake)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from annotator.project.geometry import Rle
from annotator.review.points import PromptPoint

BoxXyxy = tuple[float, float, float, float]


@dataclass(frozen=True)
class PendingAnnotation:
    """A proposal (or a hand-drawn box) on the current image, not in the store until accepted.

    `box_xyxy`: what the annotator sees and what gets stored (the mask's tight box when SAM made the mask);
    `prompt_box_xyxy`: the box that prompts SAM (the heads' attention box, or the drawn / edited box).
    `mask_kind`: "sam", "coarse" (the heads' region, when there is no SAM), "edited" (brush or polygon) or "none".
    `outline` and `shown` are the view's own objects (its drawing of the mask, its drawing of where the model
    looked); the session only carries them.
    """

    key: str
    image_id: int
    box_xyxy: BoxXyxy
    prompt_box_xyxy: BoxXyxy
    mask: np.ndarray | None
    score: float | None
    expression: str
    source: str
    heads: tuple[tuple[int, int], ...]
    category: str
    mask_kind: str = "none"
    points: tuple[PromptPoint, ...] = ()
    outline: Any = field(default=None, compare=False)
    shown: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class NewProposal:
    """One region the model proposed for an expression, as the session receives it."""

    box_xyxy: BoxXyxy
    attention_box_xyxy: BoxXyxy
    mask: np.ndarray | None
    score: float
    heads: tuple[tuple[int, int], ...]
    mask_kind: str = "none"
    outline: Any = field(default=None, compare=False)
    shown: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class SegmentRequest:
    """Ask for a mask of annotation `key` on image `image_id`.

    `purpose`: "points" (refine with `points`), "box" (the box moved: follow it), "drawn" (a box drawn by hand).
    `previous_box_xyxy` / `previous_mask`: without SAM, a box edit moves the previous mask with the box.
    `droppable`: the request may be dropped when the annotator moves to another image (pending work only).
    """

    image_id: int
    key: Hashable
    purpose: str
    box_xyxy: BoxXyxy
    points: tuple[PromptPoint, ...] = ()
    previous_box_xyxy: BoxXyxy | None = None
    previous_mask: np.ndarray | None = field(default=None, compare=False)
    droppable: bool = True


@dataclass(frozen=True)
class MaskAnswer:
    """The answer to a `SegmentRequest` (`seq` as the backend numbered it); `mask` None: nothing found."""

    seq: int
    key: Hashable
    image_id: int
    purpose: str
    mask: np.ndarray | None
    box_xyxy: BoxXyxy
    points: tuple[PromptPoint, ...] = ()
    elapsed_ms: float = 0.0
    outline: Any = field(default=None, compare=False)


class ReviewBackend(Protocol):
    """What computes for the session: proposals for an expression and masks for a request. Both answer later,
    through `ReviewSession.proposals_arrived` / `mask_arrived`, tagged with the number returned here."""

    def propose(self, image_id: int, expression: str, all_instances: bool) -> int: ...

    def segment(self, request: SegmentRequest) -> int: ...

    def move_on(self) -> None:
        """Drop queued work for the image the annotator left."""


def mask_rle(mask: np.ndarray | None) -> Rle | None:
    """The stored form of a mask; None for no mask or an empty one."""
    if mask is None or not mask.any():
        return None
    return Rle.from_mask(mask)
