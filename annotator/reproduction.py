"""A run's figures beside the paper's, for `annotator eval refcoco`: one table of ours, the paper's and the
difference, printed as Markdown and written as JSON.

The paper's figures are data, `resources/paper_results.json`, with their source (Kang et al., CVPR 2025, Tables
1-2): REC Acc@0.5 and RES cIoU per model, dataset, split_by and split, in percent. Where the paper gives no figure
(another model, dataset or split; mean IoU, mIoU, speed) the paper and difference columns read '-'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotator.evaluation import SplitMetrics
from annotator.jsonl import read_json
from annotator.paths import RESOURCES

PAPER_RESULTS_FILE = RESOURCES / "paper_results.json"
NO_FIGURE = "-"


@dataclass(frozen=True)
class PaperFigures:
    """The paper's figures for one model, dataset and split, in percent (None where it gives none)."""

    model: str
    rec_accuracy: float | None
    res_ciou: float | None
    source: str


def paper_figures(
    model: str, dataset: str, split_by: str, split: str, path: str | Path = PAPER_RESULTS_FILE
) -> PaperFigures | None:
    """The paper's figures for `model` (hub id, alias, or a local folder named like one) on that split, or None."""
    data = read_json(Path(path))
    for entry in data["models"]:
        if not _names(entry, model):
            continue
        for row in entry["results"]:
            if (row["dataset"], row["split_by"], row["split"]) == (dataset, split_by, split):
                return PaperFigures(entry["model"], row.get("rec_accuracy"), row.get("res_ciou"), data["source"])
    return None


def _names(entry: dict, model: str) -> bool:
    def normal(name: str) -> str:
        return str(name).strip().rstrip("/\\").lower()

    known = {normal(name) for name in (entry["model"], *entry.get("aliases", ()))}
    wanted = normal(model)
    return wanted in known or Path(wanted).name in {Path(name).name for name in known}


@dataclass(frozen=True)
class TableRow:
    """One line of the table: ours (a number in its unit, a text, or None), the paper's figure and the difference."""

    label: str
    key: str
    ours: float | str | None
    paper: float | None = None

    @property
    def difference(self) -> float | None:
        if self.paper is None or not isinstance(self.ours, float):
            return None
        return self.ours - self.paper


@dataclass(frozen=True)
class Reproduction:
    """A scored run on one split: the overall `metrics` (fractions), its speed, the heads and tau it used, its mask
    kind (None: boxes only, so no RES figures), and the paper's figures where it gives them."""

    model: str
    dataset: str
    split_by: str
    split: str
    images: int
    metrics: SplitMetrics
    images_per_second: float | None
    heads: tuple[tuple[int, int], ...]
    tau: float | None
    masks: str | None
    paper: PaperFigures | None

    def rows(self) -> list[TableRow]:
        """The table's lines, percentages in percent."""
        paper = self.paper
        with_masks = self.masks is not None and self.metrics.ciou is not None
        return [
            TableRow("REC Acc@0.5", "rec_accuracy", 100 * self.metrics.accuracy, paper and paper.rec_accuracy),
            TableRow("REC mean IoU", "rec_mean_iou", 100 * self.metrics.mean_box_iou),
            TableRow("RES cIoU", "res_ciou", 100 * self.metrics.ciou if with_masks else None, paper and paper.res_ciou),
            TableRow("RES mIoU", "res_miou", 100 * self.metrics.miou if with_masks else None),
            TableRow("images/s", "images_per_second", self.images_per_second),
            TableRow("heads", "heads", ", ".join(f"L{layer} H{head}" for layer, head in self.heads)),
            TableRow("tau", "tau", None if self.tau is None else float(self.tau)),
        ]

    def to_json(self) -> dict[str, Any]:
        """The table as JSON: the run, ours, the paper's figures and the differences (None where there are none)."""
        rows = [row for row in self.rows() if row.key not in ("heads", "tau")]
        return {
            "model": self.model,
            "dataset": self.dataset,
            "split_by": self.split_by,
            "split": self.split,
            "images": self.images,
            "expressions": self.metrics.count,
            "no_prediction": self.metrics.missing,
            "masks": self.masks,
            "heads": [list(head) for head in self.heads],
            "tau": self.tau,
            "ours": {row.key: _rounded(row.ours) for row in rows},
            "paper": {row.key: row.paper for row in rows if row.paper is not None},
            "difference": {row.key: _rounded(row.difference) for row in rows if row.difference is not None},
            "paper_model": None if self.paper is None else self.paper.model,
            "paper_source": None if self.paper is None else self.paper.source,
        }


def format_reproduction(table: Reproduction) -> str:
    """The Markdown table `annotator eval refcoco` prints, with a heading line and the paper's source."""
    masks = "boxes only" if table.masks is None else f"{table.masks} masks"
    lines = [
        f"{table.dataset} ({table.split_by}) {table.split}: {table.metrics.count} expressions on {table.images} "
        f"images, {table.model}, {masks}",
        "",
        "| | ours | paper | ours - paper |",
        "|---|---:|---:|---:|",
    ]
    for row in table.rows():
        ours = row.ours if isinstance(row.ours, str) else _shown(row.ours, 3 if row.key == "tau" else 2)
        difference = NO_FIGURE if row.difference is None else f"{row.difference:+.2f}"
        lines.append(f"| {row.label} | {ours} | {_shown(row.paper, 1)} | {difference} |")
    if table.masks is None:
        lines.append("\nRES: run with --masks sam for the mask figures.")
    lines.append(f"\npaper: {table.paper.source}" if table.paper is not None else "\npaper: no figures for this run")
    return "\n".join(lines)


def _shown(value: float | None, decimals: int) -> str:
    return NO_FIGURE if value is None else f"{value:.{decimals}f}"


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value
