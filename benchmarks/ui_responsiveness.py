"""How long the GUI thread stalls during the app's long operations: the largest and the 99th-percentile gap
between ticks of a 10 ms timer on it (tests/stall_meter.py) while each operation runs, as one Markdown table.

Rows: a proposal with the planted demo model on a demo image; opening a demo image with the tiny test SAM
(random weights, tests/tiny_sam.py: no SAM checkpoint is needed offline) until its embedding is cached; a COCO
export of `--annotations` masks through the export flow's worker; filtering a list of `--images` images (one
row per step: a character typed, a status, the review order); brush strokes on an 8000 x 6000 image from
benchmarks/brush_latency.py (each step runs on the GUI thread and is timed alone, so its time is its stall).
"time ms" is the operation's duration (for the list, the filter call itself; the view lays the rows out
afterwards in batches, which the gaps include). The goal: no gap over 50 ms.

Run: .venv/bin/python benchmarks/ui_responsiveness.py [--images N] [--annotations M] [--proposals P]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from PySide6 import __version__ as pyside_version  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402

from machine import cpu_name  # noqa: E402 (benchmarks/machine.py: the script's folder is on sys.path)
from tests.stall_meter import GapMeter, Gaps, gaps_of, many_image_records, pending_scores, spin_until  # noqa: E402

TIMEOUT_S = 300.0
TABLE_HEADER = "| operation | size | time ms | largest gap ms | p99 gap ms | note |"


@dataclass(frozen=True)
class Row:
    """One line of the table; `gaps` None for a row that was skipped or failed (`note` says why)."""

    operation: str
    size: str
    time_ms: float | None
    gaps: Gaps | None
    note: str = ""

    def markdown(self) -> str:
        def number(value: float | None) -> str:
            return "–" if value is None else f"{value:.1f}"

        largest = self.gaps.largest_ms if self.gaps else None
        p99 = self.gaps.p99_ms if self.gaps else None
        return (
            f"| {self.operation} | {self.size} | {number(self.time_ms)} | {number(largest)} | {number(p99)} "
            f"| {self.note} |"
        )


def fired(signal) -> Callable[[], bool]:
    """A condition that holds once `signal` has been emitted."""
    seen: list[tuple] = []
    signal.connect(lambda *args: seen.append(args))
    return lambda: bool(seen)


def waited(condition: Callable[[], bool], what: str) -> None:
    if not spin_until(condition, TIMEOUT_S):
        raise TimeoutError(f"{what} did not happen within {TIMEOUT_S:.0f} s")


def planted_model(work: Path) -> Path:
    from annotator.paths import MODELS_DIR

    shipped = MODELS_DIR / "planted-llava"
    if (shipped / "heads.json").is_file():
        return shipped
    from annotator.synthetic.planted import save_planted_model

    return save_planted_model(work / "planted-llava")


def demo_folder(work: Path, name: str) -> Path:
    """A fresh copy of the demo images (a new project each time)."""
    from annotator.paths import DEMO_DIR
    from annotator.synthetic.demo_scenes import write_demo

    folder = work / name
    if any(DEMO_DIR.glob("*.png")):
        shutil.copytree(DEMO_DIR, folder, ignore=shutil.ignore_patterns(".*"))
    else:
        write_demo(folder)
    return folder


def shown_window(work: Path, model: Path):
    """A shown main window with settings in a temporary INI file (the planted model, no SAM)."""
    from annotator.ui.main_window import MainWindow
    from annotator.ui.settings import AppSettings, ModelSettings

    settings = AppSettings.at(work / "settings.ini")
    settings.set_model_settings(ModelSettings(model=str(model), sam_type="none"))
    window = MainWindow(settings)
    window.resize(1280, 800)
    window.show()
    QTest.qWaitForWindowExposed(window)
    return window


def open_folder(window, folder: Path) -> None:
    shown = fired(window.image_shown)
    window.open_folder(folder)
    waited(shown, f"showing the first image of {folder}")


def inference_row(work: Path, model: Path, proposals: int) -> Row:
    window = shown_window(work, model)
    try:
        loaded = fired(window.models_changed)
        window.start_models()
        waited(loaded, "loading the planted model")
        folder = demo_folder(work, "demo-inference")
        open_folder(window, folder)
        record = window.store.image(window.current_image_id)
        truth = {json.loads(line)["image"]: json.loads(line) for line in (folder / "ground_truth.jsonl").open()}
        objects = truth[record.path]["objects"]
        expressions = [o["expression"] for o in objects] + [f"the {o['colour']} {o['shape']}" for o in objects]
        runs, durations = [], []
        for index in range(proposals):
            meter = GapMeter()
            shown = fired(window.proposals_shown)
            start = time.perf_counter()
            meter.measure(lambda: window.run_expression(expressions[index % len(expressions)]), shown, TIMEOUT_S)
            durations.append((time.perf_counter() - start) * 1000.0)
            runs.append(meter.times)
        gaps = gaps_of(*runs)
        return Row(
            "proposal, planted demo model", f"{record.path} {record.width} x {record.height}",
            statistics.median(durations), gaps, f"median of {proposals} proposals, gaps pooled",
        )  # fmt: skip
    finally:
        window.close()


def sam_row(work: Path, model: Path) -> Row:
    from tests.ui_fixtures import planted_models_with_tiny_sam

    window = shown_window(work, model)
    try:
        models = planted_models_with_tiny_sam(model, "sam")
        loaded = fired(window.models_changed)
        window.use_models(models)
        waited(loaded, "using the tiny SAM")
        folder = demo_folder(work, "demo-sam")
        meter = GapMeter()
        start = time.perf_counter()
        gaps = meter.measure(
            lambda: window.open_folder(folder), lambda: len(models.segmenter.cached_ids()) >= 1, TIMEOUT_S
        )
        record = window.store.image(window.current_image_id)
        return Row(
            "open an image, SAM embedding", f"{record.path} {record.width} x {record.height}",
            (time.perf_counter() - start) * 1000.0, gaps,
            "tiny test SAM (random weights; no SAM checkpoint offline); time: open to embedding cached",
        )  # fmt: skip
    finally:
        window.close()


def export_row(work: Path, annotations: int) -> Row:
    try:
        from annotator.ui.export_flow import ExportFlow
    except ImportError:
        return Row("COCO export", f"{annotations} annotations", None, None, "skipped: export flow missing")
    from annotator.project.records import NewAnnotation
    from annotator.project.store import ProjectStore
    from annotator.ui.export_dialog import ExportChoice

    folder = work / "export-project"
    images = max(1, annotations // 10)
    write_small_images(folder, images)
    with ProjectStore.for_folder(folder) as store:
        store.sync_folder()
        category = store.ensure_category("square")
        records = store.images()
        items = [
            NewAnnotation(
                image_id=records[index % len(records)].id, category_id=category.id,
                rle=square_mask(index), source="manual", status="accepted", expression="the square",
            )
            for index in range(annotations)
        ]  # fmt: skip
        store.add_annotations(items, undoable=False)
        store_path = store.path
    parent = QWidget()
    flow = ExportFlow(parent, store_path, folder, 1.0)
    finished = fired(flow.finished)
    failed: list[str] = []
    flow.failed.connect(failed.append)
    choice = ExportChoice("coco", "polygon", work / "export.json", include_pending=False)
    meter = GapMeter()
    start = time.perf_counter()
    gaps = meter.measure(lambda: flow.start(choice), lambda: finished() or bool(failed), TIMEOUT_S)
    elapsed = (time.perf_counter() - start) * 1000.0
    if flow.summary_box is not None:
        flow.summary_box.close()
    parent.close()
    if failed:
        return Row("COCO export", f"{annotations} annotations", None, None, f"failed: {failed[0]}")
    return Row(
        "COCO export (polygons), export flow", f"{annotations} annotations on {images} images 64 x 48", elapsed, gaps
    )


def write_small_images(folder: Path, count: int) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        cv2.imwrite(str(folder / f"img{index:05d}.png"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))


def square_mask(index: int):
    from annotator.project.geometry import Rle

    mask = np.zeros((48, 64), dtype=bool)
    x, y = index % 40, index % 28
    mask[y : y + 12 + index % 5, x : x + 16] = True
    return Rle.from_mask(mask)


def filter_rows(count: int) -> list[Row]:
    from annotator.ui.image_list import ImageListPanel

    panel = ImageListPanel()
    panel.resize(320, 900)
    panel.show()
    QTest.qWaitForWindowExposed(panel)
    records = many_image_records(count)
    panel.set_records(records)
    panel.model.set_pending_scores(pending_scores(records))
    panel.select_image(records[count // 2].id)

    def choose(combo, key: str) -> Callable[[], None]:
        return lambda: combo.setCurrentIndex(combo.findData(key))

    steps = (
        ("type a character ('7')", lambda: QTest.keyClicks(panel.filter_box, "7")),
        ("type a second character ('.')", lambda: QTest.keyClicks(panel.filter_box, ".")),
        ("clear the filter box", panel.filter_box.clear),
        ("status: to do", choose(panel.status_filter, "todo")),
        ("status: with pending proposals", choose(panel.status_filter, "pending")),
        ("review order: least confident first", choose(panel.order, "least_confident")),
        ("status: all, review order kept", choose(panel.status_filter, "all")),
        ("folder order", choose(panel.order, "natural")),
    )
    rows = []
    for name, step in steps:
        took: list[float] = []

        def timed_step() -> None:
            start = time.perf_counter()
            step()
            took.append((time.perf_counter() - start) * 1000.0)

        gaps = GapMeter().measure(timed_step)
        rows.append(Row(f"list filter: {name}", f"{count} images, {panel.visible_count()} listed", took[0], gaps))
    panel.close()
    return rows


def brush_rows() -> list[Row]:
    """benchmarks/brush_latency.py's steps: each runs on the GUI thread, so its time is the stall it causes."""
    try:
        from brush_latency import brush_stroke_rows  # benchmarks/brush_latency.py
    except ImportError:
        return [Row("brush stroke", "8000 x 6000", None, None, "skipped: benchmarks/brush_latency.py missing")]
    note = "per stroke step: time the median, gaps the step's max and p99 (brush_latency.py)"
    return [
        Row(f"brush: {what}", "8000 x 6000", median, Gaps(largest, p99, 0, 0.0), note)
        for what, median, p99, largest in brush_stroke_rows(8000, 6000)
    ]


def guarded(operation: str, make: Callable[[], Row | list[Row]]) -> list[Row]:
    """The rows `make` measures, or one row saying how it failed (the other rows still run)."""
    try:
        made = make()
    except Exception as err:  # a benchmark row's boundary: report it in the table
        traceback.print_exc(file=sys.stderr)
        return [Row(operation, "", None, None, f"failed: {type(err).__name__}: {err}")]
    return made if isinstance(made, list) else [made]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="images in the filtered list (default 10000)")
    parser.add_argument("--annotations", type=int, default=5_000, help="annotations exported (default 5000)")
    parser.add_argument("--proposals", type=int, default=5, help="proposals measured (default 5)")
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory(prefix="ui-responsiveness-") as scratch:
        work = Path(scratch)
        QSettings.setDefaultFormat(QSettings.Format.IniFormat)
        for scope in (QSettings.Scope.UserScope, QSettings.Scope.SystemScope):
            QSettings.setPath(QSettings.Format.IniFormat, scope, str(work / "qsettings"))
        model = planted_model(work)
        rows = [
            *guarded("proposal, planted demo model", lambda: inference_row(work, model, args.proposals)),
            *guarded("open an image, SAM embedding", lambda: sam_row(work, model)),
            *guarded("COCO export", lambda: export_row(work, args.annotations)),
            *guarded("list filter", lambda: filter_rows(args.images)),
            *guarded("brush stroke", brush_rows),
        ]
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print("# annotator UI responsiveness: gaps of a 10 ms timer on the GUI thread\n")
    print(
        f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, load average {load}; {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, PySide6 {pyside_version}, Qt platform "
        f"{app.platformName()}\n"
    )
    print(TABLE_HEADER)
    print("|---|---|---:|---:|---:|---|")
    for row in rows:
        print(row.markdown())


if __name__ == "__main__":
    main()
