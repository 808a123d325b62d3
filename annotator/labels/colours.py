"""Category colours as data (no Qt): with a label set, a label's colour is its place in the set, so the first
twelve labels get twelve distinct colours in the same order in every session; without one (or for a name outside
the set), a hash of the name picks it, which also never changes between sessions."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from annotator.labels.head_noun import category_key

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


def colour_index(name: str, label_set: Sequence[str] | None = None) -> int:
    """The index into `CATEGORY_COLOURS` of a category: its place in `label_set` (matched exactly, else up to case
    and plural) when it is there, else a hash of its name."""
    if label_set:
        labels = list(label_set)
        if name in labels:
            return labels.index(name) % len(CATEGORY_COLOURS)
        keys = [category_key(label) for label in labels]
        key = category_key(name)
        if key in keys:
            return keys.index(key) % len(CATEGORY_COLOURS)
    return zlib.crc32(name.encode("utf-8")) % len(CATEGORY_COLOURS)


def category_colour_hex(name: str, label_set: Sequence[str] | None = None) -> str:
    """A category's colour as "#rrggbb" (`colour_index`)."""
    return CATEGORY_COLOURS[colour_index(name, label_set)]
