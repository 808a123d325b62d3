"""Brush latency per stroke step on a large image: the mask update alone, and the canvas's whole path.

Rows: `paint_segment` alone (radius 12 and 100 original pixels, a 200-step drag of 6 pixels a step), and the
canvas path for a 200-step drag (mouse-move event -> paint of the working mask -> update of the dirty rect ->
a processed repaint of the view), with the view fitted to the window and at 1:1; and committing a finished stroke
to the project store (`ReviewSession.edit_mask`: the new RLE, one undoable store step), re-encoding only the
stroke's columns as the app does, beside re-encoding the whole mask. Each step is timed alone; the
table gives the median, 99th percentile and maximum in milliseconds. The window is 1000 x 750 on the offscreen
platform unless a display is given.

Run: `.venv/bin/python benchmarks/brush_latency.py [--width 8000 --height 6000]`.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from machine import cpu_name  # benchmarks/machine.py: the script's folder is on sys.path

from annotator.editing.brush import paint_segment

STEPS = 200
SCENE_STEP_PX = 6.0
VIEW_STEP_PX = 3.0
WINDOW = (1000, 750)


def _stats(what: str, seconds: list[float]) -> tuple[str, float, float, float]:
    ms = np.asarray(seconds) * 1000.0
    return what, float(np.median(ms)), float(np.percentile(ms, 99)), float(ms.max())


def _paint_row(width: int, height: int, radius: int) -> tuple[str, float, float, float]:
    mask = np.zeros((height, width), dtype=bool)
    x, y = width / 2 - STEPS * SCENE_STEP_PX / 2, height / 2
    times = []
    for step in range(STEPS):
        nx, ny = x + SCENE_STEP_PX, height / 2 + 40 * np.sin(step / 15)
        start = time.perf_counter()
        paint_segment(mask, (x, y), (nx, ny), radius, True)
        times.append(time.perf_counter() - start)
        x, y = nx, ny
    return _stats(f"`paint_segment`, radius {radius}", times)


def _canvas_rows(width: int, height: int, radius: int) -> list[tuple[str, float, float, float]]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    from annotator.ui.canvas import Canvas
    from annotator.ui.image_pyramid import build_pyramid

    app = QApplication.instance() or QApplication([])
    canvas = Canvas()
    canvas.resize(*WINDOW)
    canvas.show()
    rgb = np.full((height, width, 3), 110, dtype=np.uint8)
    canvas.set_image(build_pyramid(rgb))
    del rgb
    app.processEvents()
    rows = []
    for zoom_name in ("fitted", "1:1"):
        canvas.fit()
        if zoom_name == "1:1":
            canvas.zoom_by(1.0 / canvas.zoom)
        canvas.begin_edit("brush", "bench", np.zeros((height, width), dtype=bool))
        canvas.brush_radius = radius
        app.processEvents()
        viewport = canvas.viewport()
        centre = QPointF(viewport.rect().center())
        start_view = QPointF(centre.x() - STEPS * VIEW_STEP_PX / 2, centre.y())

        def send(kind: QEvent.Type, pos: QPointF, button: Qt.MouseButton, buttons: Qt.MouseButton) -> None:
            event = QMouseEvent(kind, pos, viewport.mapToGlobal(pos), button, buttons, Qt.KeyboardModifier.NoModifier)
            QApplication.sendEvent(viewport, event)

        left = Qt.MouseButton.LeftButton
        send(QEvent.Type.MouseButtonPress, start_view, left, left)
        app.processEvents()
        times = []
        for step in range(1, STEPS + 1):
            pos = QPointF(start_view.x() + step * VIEW_STEP_PX, centre.y() + 20 * np.sin(step / 15))
            start = time.perf_counter()
            send(QEvent.Type.MouseMove, pos, Qt.MouseButton.NoButton, left)
            app.processEvents()
            times.append(time.perf_counter() - start)
        send(QEvent.Type.MouseButtonRelease, pos, left, Qt.MouseButton.NoButton)
        canvas.end_edit()
        rows.append(_stats(f"canvas step (paint + dirty-rect update + repaint), radius {radius}, {zoom_name}", times))
    canvas.close()
    return rows


class _NoBackend:
    """The session's backend when nothing is proposed or segmented."""

    def propose(self, image_id: int, expression: str, all_instances: bool) -> int:
        return 0

    def segment(self, request: object) -> int:
        return 0

    def move_on(self) -> None:
        pass


def _commit_rows(width: int, height: int, strokes: int = 10) -> list[tuple[str, float, float, float]]:
    """A stroke's commit to the store on a `width` x `height` annotation: only its columns, or the whole mask."""
    import tempfile
    from pathlib import Path

    from PIL import Image

    from annotator.project.geometry import Rle
    from annotator.project.store import ProjectStore
    from annotator.review.session import ReviewSession

    with tempfile.TemporaryDirectory(prefix="brush-commit-") as scratch:
        folder = Path(scratch)
        Image.new("L", (width, height), 128).save(folder / "large.png")
        store = ProjectStore.for_folder(folder)
        store.sync_folder()
        image = store.images()[0]
        store.ensure_image_info(image.id)
        mask = np.zeros((height, width), dtype=bool)
        mask[height // 6 : height * 2 // 3, width // 4 : width * 3 // 4] = True
        category = store.ensure_category("object")
        annotation = store.add_annotation(image.id, category.id, (0, 0, 1, 1), rle=Rle.from_mask(mask))
        session = ReviewSession(_NoBackend())
        session.open(store, folder)
        session.set_image(image.id)
        rows = []
        for name, by_columns in (("the stroke's columns", True), ("the whole mask", False)):
            times = []
            for stroke in range(strokes):
                x = width * 3 // 4 - 50 + 7 * stroke
                rect = paint_segment(mask, (x, height / 3), (x + 60, height / 3 + 30), 12, stroke % 2 == 0)
                assert rect is not None
                start = time.perf_counter()
                session.edit_mask(annotation.id, mask, "Brush", (rect[0], rect[2]) if by_columns else None)
                times.append(time.perf_counter() - start)
            rows.append(_stats(f"commit a stroke to the store, re-encoding {name}", times))
        session.close()
        store.close()
    return rows


def brush_stroke_rows(width: int = 8000, height: int = 6000) -> list[tuple[str, float, float, float]]:
    """(what, median ms, p99 ms, max ms) per stroke step, and per stroke commit, on a `width` x `height` image."""
    rows = [_paint_row(width, height, 12), _paint_row(width, height, 100)]
    rows.extend(_canvas_rows(width, height, 12))
    rows.extend(_canvas_rows(width, height, 100))
    rows.extend(_commit_rows(width, height))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=8000)
    parser.add_argument("--height", type=int, default=6000)
    args = parser.parse_args(argv)
    rows = brush_stroke_rows(args.width, args.height)
    print("## Brush latency per stroke step (`benchmarks/brush_latency.py`)\n")
    print(f"- machine: {cpu_name()}, {os.cpu_count()} logical CPUs; Qt platform {os.environ['QT_QPA_PLATFORM']}")
    print(f"- image {args.width} x {args.height}, window {WINDOW[0]} x {WINDOW[1]}, {STEPS} steps per row\n")
    print("| step | median ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|")
    for what, median, p99, largest in rows:
        print(f"| {what} | {median:.2f} | {p99:.2f} | {largest:.2f} |")


if __name__ == "__main__":
    main()
