"""How long the GUI thread stalls during an operation: a 10 ms `QTimer` ticks on it, and the gaps between ticks
(and from the start to the first tick, and from the last tick to the end) are what the event loop could not serve.

Used by tests/test_ui_responsiveness.py and benchmarks/ui_responsiveness.py:

    with GapMeter() as meter:
        start_the_operation()
        qtbot.waitSignal(...)   # or anything that runs the event loop until the operation is over
    meter.gaps.largest_ms, meter.gaps.p99_ms

or, without pytest-qt, `GapMeter().measure(start_the_operation, is_it_over)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter

import numpy as np
from PySide6.QtCore import QEventLoop, Qt, QTimer

from annotator.project.records import ImageRecord

STATUSES = ("todo", "in_progress", "done")


@dataclass(frozen=True)
class Gaps:
    """The measured gaps of one operation, in milliseconds."""

    largest_ms: float
    p99_ms: float
    ticks: int
    elapsed_ms: float


class GapMeter:
    """A precise `interval_ms` timer on the calling (GUI) thread that records when each tick arrives."""

    def __init__(self, interval_ms: int = 10) -> None:
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self.times: list[float] = []
        self.gaps = Gaps(0.0, 0.0, 0, 0.0)

    def _tick(self) -> None:
        self.times.append(perf_counter())

    @property
    def ticks(self) -> int:
        """Ticks so far, minus the start mark (for waiting until the event loop has run a while)."""
        return len(self.times) - 1

    def start(self) -> None:
        self.times = [perf_counter()]
        self._timer.start()

    def stop(self) -> Gaps:
        self._timer.stop()
        self.times.append(perf_counter())
        self.gaps = gaps_of(self.times)
        return self.gaps

    def measure(
        self, start: Callable[[], None], done: Callable[[], bool] | None = None, timeout_s: float = 120.0
    ) -> Gaps:
        """Start the timer, call `start`, run the event loop until `done()` (default: five ticks later, so what
        `start` left for the event loop, such as repainting, is measured too), stop the timer."""
        self.start()
        try:
            start()
            finished = spin_until(done or (lambda: self.ticks >= 5), timeout_s)
        finally:
            gaps = self.stop()
        if not finished:
            raise TimeoutError(f"the operation did not finish within {timeout_s:.0f} s")
        return gaps

    def __enter__(self) -> GapMeter:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def gaps_of(*runs: list[float]) -> Gaps:
    """Largest and 99th-percentile gap between consecutive times (seconds) of each run, pooled, in milliseconds."""
    gaps = np.concatenate([np.diff(np.asarray(run, dtype=np.float64)) for run in runs if len(run) > 1] or [[]])
    if gaps.size == 0:
        return Gaps(0.0, 0.0, 0, 0.0)
    return Gaps(
        largest_ms=float(gaps.max() * 1000.0),
        p99_ms=float(np.percentile(gaps, 99) * 1000.0),
        ticks=sum(max(0, len(run) - 2) for run in runs),
        elapsed_ms=float(gaps.sum() * 1000.0),
    )


def many_image_records(count: int) -> list[ImageRecord]:
    """`count` listed images as a large shoot names them ("batch_07/IMG_20240101_000123.jpg"), 500 a folder, with
    a mix of statuses and pending proposals."""
    return [
        ImageRecord(
            id=index + 1,
            path=f"batch_{index // 500:02d}/IMG_20240101_{index:06d}.jpg",
            width=6000,
            height=4000,
            present=True,
            status=STATUSES[index % 3],
            n_pending=index % 4,
            n_accepted=index % 5,
            n_rejected=0,
            error=None,
        )
        for index in range(count)
    ]


def pending_scores(records: list[ImageRecord]) -> dict[int, float]:
    """A lowest pending score for every image with pending proposals (spread over 0..1 by id)."""
    return {record.id: (record.id * 37 % 100) / 100.0 for record in records if record.n_pending}


def spin_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Run the event loop until `condition()` holds (checked every 5 ms) or `timeout_s` passes; whether it held."""
    if condition():
        return True
    loop = QEventLoop()
    poll = QTimer()
    poll.setInterval(5)
    deadline = perf_counter() + timeout_s

    def check() -> None:
        if condition() or perf_counter() > deadline:
            loop.quit()

    poll.timeout.connect(check)
    poll.start()
    loop.exec()
    poll.stop()
    return condition()
