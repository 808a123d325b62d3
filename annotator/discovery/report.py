"""What `annotator find-heads` leaves behind: the heads file, two figures like the paper's, a printed table.

- `write_heads_file`: the `HeadsFile` JSON (heads, tau, votes, model id, date) plus the vote frequencies and the
  `[L, H]` mean attention sums, written atomically; `HeadsFile.load` reads it (it ignores the extra keys).
- `discovery_table`: the top heads by votes as a Markdown table.
- `plot_attention_sums`: every head's mean image-attention sum, sorted ascending, with tau (the elbow) marked
  and the chosen localization heads highlighted.
- `plot_selection_frequency`: the top heads by selection frequency (votes / samples), chosen heads highlighted.
Drawn with matplotlib's object API on the Agg canvas: no pyplot state, no display needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from annotator.grounding.heads import HeadSelection, HeadsFile, elbow_index, head_label
from annotator.project.atomic_file import atomic_text_file

_CHOSEN = "#d62728"
_OTHER = "#1f77b4"
_DPI = 120
_NUMBER_LIST = re.compile(r"\[\s*([-+0-9.eE,\s]+?)\s*\]")
"""A JSON list of numbers only; written on one line so the heads file stays readable."""


def ranked_heads(selection: HeadSelection) -> list[tuple[tuple[int, int], float]]:
    """(head, selection frequency) of every voted head in the selection's own order: votes, then mean entropy."""
    frequencies = selection.frequencies()
    order = sorted(frequencies, key=lambda h: (-selection.votes[h], float(selection.mean_entropy[h]), h))
    return [(head, frequencies[head]) for head in order]


def plot_attention_sums(selection: HeadSelection, path: str | Path, title: str = "") -> Path:
    """Ascending mean attention sums of all heads, tau marked, the chosen heads in red; written as PNG."""
    sums = np.asarray(selection.mean_sums, dtype=np.float64)
    num_heads = sums.shape[1]
    order = np.argsort(sums.ravel(), kind="stable")
    values = sums.ravel()[order]
    figure = Figure(figsize=(7.5, 4.5), dpi=_DPI)
    axes = figure.add_subplot()
    axes.plot(np.arange(values.size), values, color=_OTHER, linewidth=1.5, label="mean attention sum per head")
    knee = elbow_index(values)
    axes.axhline(selection.tau, color="grey", linestyle="--", linewidth=1.0)
    axes.plot(
        [knee],
        [values[knee]],
        "o",
        markersize=9,
        markerfacecolor="none",
        markeredgecolor="black",
        label=f"elbow: tau = {selection.tau:.3f}",
    )
    rank_of = {int(flat): rank for rank, flat in enumerate(order)}
    for head in selection.heads:
        rank = rank_of[head[0] * num_heads + head[1]]
        axes.plot([rank], [values[rank]], "*", color=_CHOSEN, markersize=12)
        axes.annotate(
            head_label(head),
            (rank, values[rank]),
            textcoords="offset points",
            xytext=(-8, 8),
            ha="right",
            fontsize=8,
            color=_CHOSEN,
        )
    axes.plot([], [], "*", color=_CHOSEN, markersize=12, label="localization heads")
    above = int((values > selection.tau).sum())
    axes.set_xlabel(f"heads sorted by mean image-attention sum ({values.size} heads, {above} above tau)")
    axes.set_ylabel("mean attention sum over image tokens")
    axes.set_title(title or f"Image-attention sums over {selection.num_samples} samples")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=9)
    return _save(figure, path)


def plot_selection_frequency(selection: HeadSelection, path: str | Path, top: int = 20, title: str = "") -> Path:
    """Bar chart of the `top` heads by selection frequency, the chosen heads in red; written as PNG."""
    ranked = ranked_heads(selection)[:top]
    figure = Figure(figsize=(7.5, 4.5), dpi=_DPI)
    axes = figure.add_subplot()
    if ranked:
        labels = [head_label(head) for head, _ in ranked]
        heights = [frequency for _, frequency in ranked]
        colours = [_CHOSEN if head in selection.heads else _OTHER for head, _ in ranked]
        axes.bar(np.arange(len(ranked)), heights, color=colours)
        axes.set_xticks(np.arange(len(ranked)), labels, rotation=60, ha="right", fontsize=8)
    axes.set_ylim(0.0, 1.05)
    axes.set_ylabel("selection frequency (votes / samples)")
    axes.set_xlabel(f"top {len(ranked)} heads by votes (red: the {len(selection.heads)} localization heads)")
    axes.set_title(title or f"Selection frequency over {selection.num_samples} samples")
    axes.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    figure.tight_layout()
    FigureCanvasAgg(figure).print_png(str(path))
    return path


def write_heads_file(selection: HeadSelection, path: str | Path, model: str, source: str) -> HeadsFile:
    """Write the discovered heads as a heads file (atomically) and return it."""
    heads_file = HeadsFile.from_selection(selection, model=model, source=source)
    data = heads_file.to_json()
    data["vote_frequencies"] = [[l, h, round(f, 6)] for (l, h), f in selection.frequencies().items()]
    data["mean_sums"] = np.round(np.asarray(selection.mean_sums, dtype=np.float64), 6).tolist()
    text = _NUMBER_LIST.sub(lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", json.dumps(data, indent=2))
    with atomic_text_file(path) as handle:
        handle.write(text + "\n")
    return heads_file


def discovery_table(selection: HeadSelection, heads_file: HeadsFile, top: int = 10) -> str:
    """The `top` heads by votes with their frequency, mean attention sum and mean entropy, as Markdown."""
    sums = np.asarray(selection.mean_sums)
    lines = [
        f"{heads_file.model}: {selection.num_samples} samples, tau = {selection.tau:.4f}, "
        f"{len(selection.candidates)} of {sums.size} heads are candidates "
        "(mean sum above tau, outside the skipped layers)",
        "",
        "| rank | head | votes | frequency | mean attention sum | mean entropy | |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for rank, (head, frequency) in enumerate(ranked_heads(selection)[:top], start=1):
        chosen = "localization head" if head in selection.heads else ""
        lines.append(
            f"| {rank} | {head_label(head)} | {selection.votes[head]} | {frequency:.3f} | "
            f"{sums[head]:.4f} | {selection.mean_entropy[head]:.3f} | {chosen} |"
        )
    return "\n".join(lines)
