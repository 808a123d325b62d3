"""Colours: one per category (stable across sessions; by its place in the project's label set when it has one), a
distinct one for pending proposals."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtGui import QColor

from annotator.labels.colours import CATEGORY_COLOURS, PENDING_COLOUR, category_colour_hex

__all__ = ["CATEGORY_COLOURS", "PENDING_COLOUR", "category_colour", "pending_colour"]


def category_colour(name: str, label_set: Sequence[str] | None = None) -> QColor:
    """The colour of a category: its place in `label_set` when it is in it, else a hash of its name."""
    return QColor(category_colour_hex(name, label_set))


def pending_colour() -> QColor:
    return QColor(PENDING_COLOUR)
