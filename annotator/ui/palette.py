"""Colours: one per category (stable across sessions), a distinct one for pending proposals."""

from __future__ import annotations

import zlib

from PySide6.QtGui import QColor

CATEGORY_COLOURS: tuple[str, ...] = (
    "#1f77b4",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#17becf",
    "#bcbd22",
    "#e377c2",
    "#7f7f7f",
    "#ff7f0e",
    "#393b79",
    "#637939",
)
PENDING_COLOUR = "#ff00ff"
"""Pending proposals are drawn dashed in magenta, a colour no category uses."""


def category_colour(name: str) -> QColor:
    """The colour of a category, chosen by a hash of its name so it never changes between sessions."""
    return QColor(CATEGORY_COLOURS[zlib.crc32(name.encode("utf-8")) % len(CATEGORY_COLOURS)])


def pending_colour() -> QColor:
    return QColor(PENDING_COLOUR)
