"""What the views show of a session, as plain values: one `ReviewItem` per annotation on the current image (the
canvas draws them, the panel lists them) and the line that describes the annotation under review."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from annotator.project.geometry import Rle
from annotator.review.pending import BoxXyxy
from annotator.review.points import PromptPoint, points_from_json

if TYPE_CHECKING:
    from annotator.review.session import ReviewSession


@dataclass(frozen=True)
class ReviewItem:
    """One annotation as the views show it. `pending`: drawn as not yet accepted (a proposal, or a pre-label in
    the store). A stored mask comes as `rle`, a pending one as `mask` (with the view's `outline` when known)."""

    key: Hashable
    box_xyxy: BoxXyxy
    category: str
    label: str
    row_text: str
    tooltip: str
    pending: bool
    points: tuple[PromptPoint, ...] = ()
    rle: Rle | None = field(default=None, compare=False)
    mask: np.ndarray | None = field(default=None, compare=False)
    outline: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class ReviewState:
    """The line above the Accept / Reject buttons: `text` (None: nothing under review), whether Accept and
    Reject apply, and the category to show in the picker."""

    text: str | None
    can_act: bool
    category: str | None = None


def review_items(session: ReviewSession) -> list[ReviewItem]:
    """The current image's annotations: the stored ones (rejected left out), then the session's proposals."""
    names = category_names(session)
    items: list[ReviewItem] = []
    for annotation in session.stored_annotations():
        name = names.get(annotation.category_id, "?")
        pending = annotation.status == "pending"
        score = f" {annotation.score:.2f}" if annotation.score is not None else ""
        label = f"{name}{score}" if pending and annotation.score is not None else name
        mask = "mask" if annotation.rle is not None else "box only"
        items.append(
            ReviewItem(
                key=annotation.id,
                box_xyxy=annotation.box_xyxy,
                category=name,
                label=label + (" ?" if pending else ""),
                row_text=f"{name} — {annotation.status}{score}",
                tooltip=f"“{annotation.expression}” · {annotation.source} · {mask}",
                pending=pending,
                points=session.points_in_flight.get(annotation.id, points_from_json(annotation.extra.get("points"))),
                rle=annotation.rle,
            )
        )
    for pending in session.pending.values():
        score = f" {pending.score:.2f}" if pending.score is not None else ""
        items.append(
            ReviewItem(
                key=pending.key,
                box_xyxy=pending.box_xyxy,
                category=pending.category,
                label=pending.category + score,
                row_text=f"{pending.category} — proposal{score}",
                tooltip=f"“{pending.expression}”" if pending.expression else "drawn by hand",
                pending=True,
                points=session.points_of(pending.key),
                mask=pending.mask,
                outline=pending.outline,
            )
        )
    return items


_MASK_WORDS = {"sam": " · SAM mask", "coarse": " · coarse mask (no SAM)", "edited": " · mask edited by hand"}


def review_state(session: ReviewSession) -> ReviewState:
    """What the panel says about the annotation Enter and Esc act on (else the active one)."""
    key = session.target_key()
    shown = key if key is not None else session.active
    if shown is None or not session.exists(shown):
        return ReviewState(None, False)
    if isinstance(shown, str):
        pending = session.pending[shown]
        text = f"“{pending.expression}”" if pending.expression else "Box drawn by hand"
        if pending.score is not None:
            text += f" · score {pending.score:.2f}"
        text += _MASK_WORDS.get(pending.mask_kind, " · box only")
        if pending.points:
            text += f" · {len(pending.points)} point(s)"
        others = len(session.pending) - 1
        if others:
            text += f" · {others} more pending"
        return ReviewState(text, True, pending.category)
    store = session.store
    assert store is not None
    annotation = store.annotation(int(shown))
    name = category_names(session).get(annotation.category_id, "?")
    text = f"{name}: {annotation.status}, {annotation.source}"
    if annotation.expression:
        text += f" · “{annotation.expression}”"
    if annotation.score is not None:
        text += f" · score {annotation.score:.2f}"
    return ReviewState(text, annotation.status == "pending", name)


def category_names(session: ReviewSession) -> dict[int, str]:
    """Category names by id."""
    return {c.id: c.name for c in session.store.categories()} if session.store is not None else {}
