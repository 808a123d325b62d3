"""The export flow: the export runs on a worker thread with progress up to the total, Cancel and stop() leave the
previous file byte for byte with no temporary file, a bad destination fails in one line, a second start is
refused, and the GUI thread keeps ticking while a large export runs."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtWidgets import QPushButton, QWidget

import annotator.ui.export_flow as export_flow
from annotator.project.coco import ExportReport, RefcocoExport
from annotator.project.folder_export import FolderExportReport
from annotator.project.geometry import Rle
from annotator.project.store import NewAnnotation, ProjectStore
from annotator.project.voc import export_voc
from annotator.ui.export_dialog import ExportChoice, ExportDialog
from annotator.ui.export_flow import BUSY, ExportFlow, summary_line, summary_text
from tests.stall_meter import GapMeter

IMAGES, PER_IMAGE = 300, 10
TIMEOUT_MS = 60_000
OLD = b'{"an earlier export": true}\n'


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The store of 300 small images with 10 accepted disc masks each (3000 annotations); its folder."""
    root = tmp_path_factory.mktemp("export_flow") / "images"
    root.mkdir()
    width, height = 48, 40
    yy, xx = np.mgrid[:height, :width]
    for index in range(IMAGES):
        Image.new("RGB", (width, height), (index % 256, 40, 90)).save(root / f"img_{index:04d}.png")
    with ProjectStore.for_folder(root, synchronous="NORMAL") as store:
        store.sync_folder()
        thing = store.add_category("thing")
        items = []
        for record in store.images():
            for k in range(PER_IMAGE):
                cx, cy, r = 6 + (4 * k) % (width - 12), 6 + (3 * k + record.id) % (height - 12), 3 + k % 4
                mask = Rle.from_mask((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r)
                items.append(NewAnnotation(record.id, thing.id, rle=mask, expression=f"thing {k}", status="accepted"))
        store.add_annotations(items, undoable=False)
    return root


@pytest.fixture
def flow(qtbot, project):
    parent = QWidget()
    qtbot.addWidget(parent)
    flow = ExportFlow(parent, project / ".annotator" / "project.sqlite", project, tolerance_px=1.0)
    yield flow
    flow.stop()


@pytest.fixture
def held_at_first_step(monkeypatch):
    """The worker, once it has reported its first step, waits for Cancel (or stop) before going on: a cancel
    from the first `progressed` then lands mid-way whatever the machine's speed."""
    report = export_flow.ExportWorker._progress

    def held(worker, done, total):
        report(worker, done, total)
        if done == 0:
            assert worker.cancel_requested.wait(TIMEOUT_MS / 1000)

    monkeypatch.setattr(export_flow.ExportWorker, "_progress", held)


def coco_choice(path: Path, kind: str = "coco", **options) -> ExportChoice:
    return ExportChoice(kind=kind, segmentation="polygon", path=path, include_pending=False, **options)


def test_the_export_runs_on_the_worker_with_progress_up_to_the_total_and_a_summary(qtbot, flow, tmp_path):
    steps, lines = [], []
    flow.progressed.connect(lambda done, total: steps.append((done, total)))
    flow.summarised.connect(lines.append)
    with qtbot.waitSignal(flow.finished, timeout=TIMEOUT_MS) as finished:
        flow.start(coco_choice(tmp_path / "out.json"))
        assert flow.running and flow.worker.thread() is flow.thread
    report = finished.args[0]
    assert (report.images, report.annotations, report.polygon_segmentations) == (IMAGES, IMAGES * PER_IMAGE, 3000)
    assert steps[0] == (0, IMAGES) and steps[-1] == (IMAGES, IMAGES)
    assert [done for done, _ in steps] == sorted({done for done, _ in steps})
    assert len(json.loads((tmp_path / "out.json").read_text())["annotations"]) == 3000
    assert not flow.running and flow.progress is None
    assert flow.summary_box.text() == summary_text(report)
    assert lines == [f"Wrote {tmp_path / 'out.json'}: 300 images, 3000 annotations (3000 polygons, 0 RLE, 0 box only), "
                     "1 categories."]  # fmt: skip


def test_a_folder_export_reports_its_steps_and_its_report(qtbot, flow, tmp_path):
    steps = []
    flow.progressed.connect(lambda done, total: steps.append((done, total)))
    with qtbot.waitSignal(flow.finished, timeout=TIMEOUT_MS) as finished:
        flow.start(coco_choice(tmp_path / "yolo", "yolo", images="none"))
    report = finished.args[0]
    assert (report.format, report.images, report.annotations, report.image_files) == ("yolo", 300, 3000, 0)
    assert steps[-1] == (IMAGES, IMAGES)
    assert len(list((tmp_path / "yolo" / "labels" / "train").iterdir())) == IMAGES


def test_a_coco_folder_with_image_files_counts_two_steps_per_image_and_refcoco_one(qtbot, flow, tmp_path):
    steps = []
    flow.progressed.connect(lambda done, total: steps.append((done, total)))
    with qtbot.waitSignal(flow.finished, timeout=TIMEOUT_MS) as finished:
        flow.start(coco_choice(tmp_path / "coco", "coco-folder", images="link"))
    assert (finished.args[0].image_files, steps[-1]) == (IMAGES, (2 * IMAGES, 2 * IMAGES))
    steps.clear()
    with qtbot.waitSignal(flow.finished, timeout=TIMEOUT_MS) as finished:
        flow.start(coco_choice(tmp_path / "refcoco", "refcoco"))
    assert (finished.args[0].refs, steps[-1]) == (IMAGES * PER_IMAGE, (IMAGES, IMAGES))


def test_the_dialog_starts_the_export(qtbot, flow, tmp_path):
    flow.choose()
    assert isinstance(flow.dialog, ExportDialog)
    flow.dialog.path.setText(str(tmp_path / "chosen.json"))
    with qtbot.waitSignal(flow.finished, timeout=TIMEOUT_MS) as finished:
        flow.dialog.accept()
    assert finished.args[0].path == tmp_path / "chosen.json"


@pytest.mark.usefixtures("held_at_first_step")
def test_cancel_from_the_first_progress_leaves_the_previous_file_and_no_temporary_file(qtbot, flow, tmp_path):
    out = tmp_path / "out.json"
    out.write_bytes(OLD)
    finished = []
    flow.finished.connect(finished.append)
    flow.progressed.connect(lambda done, total: flow.cancel())
    with qtbot.waitSignal(flow.cancelled, timeout=TIMEOUT_MS):
        flow.start(coco_choice(out))
    assert out.read_bytes() == OLD
    assert list(tmp_path.iterdir()) == [out]
    assert not flow.running and finished == []


@pytest.mark.usefixtures("held_at_first_step")
def test_the_cancel_button_of_a_folder_export_leaves_the_previous_folder(qtbot, flow, project, tmp_path):
    with ProjectStore.for_folder(project) as store:
        export_voc(store, tmp_path / "voc", images="none")
    before = {p: p.read_bytes() for p in (tmp_path / "voc").rglob("*") if p.is_file()}
    flow.progressed.connect(lambda done, total: flow.progress.findChild(QPushButton, "").click())
    with qtbot.waitSignal(flow.cancelled, timeout=TIMEOUT_MS):
        flow.start(coco_choice(tmp_path / "voc", "voc", images="none"))
    assert {p: p.read_bytes() for p in (tmp_path / "voc").rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["voc"]


def test_a_destination_that_cannot_be_written_fails_in_one_line(qtbot, flow, tmp_path):
    with qtbot.waitSignal(flow.failed, timeout=TIMEOUT_MS) as failed:
        flow.start(coco_choice(tmp_path / "missing" / "out.json"))
    [message] = failed.args
    assert message.startswith("Export failed: cannot write COCO file") and "does not exist" in message
    assert "\n" not in message and not flow.running
    (tmp_path / "a file").write_text("mine")
    with qtbot.waitSignal(flow.failed, timeout=TIMEOUT_MS) as failed:
        flow.start(coco_choice(tmp_path / "a file", "yolo"))
    assert "it is a file" in failed.args[0] and "\n" not in failed.args[0]
    assert (tmp_path / "a file").read_text() == "mine"


@pytest.mark.usefixtures("held_at_first_step")
def test_a_second_start_while_running_is_refused_not_queued(qtbot, flow, tmp_path):
    refusals = []
    flow.refused.connect(refusals.append)
    with qtbot.waitSignal(flow.cancelled, timeout=TIMEOUT_MS):
        flow.start(coco_choice(tmp_path / "first.json"))
        flow.start(coco_choice(tmp_path / "second.json"))
        flow.choose()
        assert refusals == [BUSY, BUSY]
        flow.cancel()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("held_at_first_step")
def test_stop_during_a_run_returns_with_the_thread_finished_and_the_file_intact(qtbot, flow, tmp_path):
    out = tmp_path / "out.json"
    out.write_bytes(OLD)
    with qtbot.waitSignal(flow.progressed, timeout=TIMEOUT_MS):
        flow.start(coco_choice(out))
    assert (flow.progress.maximum(), flow.progress.value()) == (IMAGES, 0)
    thread = flow.thread
    flow.stop()
    assert thread.isFinished() and not flow.running
    assert out.read_bytes() == OLD
    assert list(tmp_path.iterdir()) == [out]


def test_the_gui_thread_keeps_ticking_while_a_large_export_runs(qtbot, flow, tmp_path, record_property):
    with GapMeter() as meter:
        with qtbot.waitSignal(flow.finished, timeout=TIMEOUT_MS):
            flow.start(coco_choice(tmp_path / "out.json"))
    gaps = meter.gaps
    record_property("largest_gap_ms", round(gaps.largest_ms, 1))
    print(
        f"10 ms timer during a 3000-annotation COCO export: largest gap {gaps.largest_ms:.1f} ms, "
        f"p99 {gaps.p99_ms:.1f} ms, {gaps.ticks} ticks in {gaps.elapsed_ms:.0f} ms"
    )
    assert gaps.largest_ms < 1000


def test_summary_texts_name_what_was_written():
    coco = ExportReport(Path("/x/a.json"), 3, 5, 2, 3, 1, 1, ("gone.png",))
    assert summary_text(coco) == (
        "Wrote /x/a.json\n\n3 images, 5 annotations (3 polygons, 1 RLE, 1 box only), 2 categories.\n"
        "1 images left out (missing or unreadable)."
    )
    assert summary_line(summary_text(coco)) == (
        "Wrote /x/a.json: 3 images, 5 annotations (3 polygons, 1 RLE, 1 box only), 2 categories. "
        "1 images left out (missing or unreadable)."
    )
    refcoco = RefcocoExport(Path("/x/i.json"), Path("/x/r.json"), 4, {"train": 2, "val": 1, "test": 0})
    assert summary_text(refcoco) == (
        "Wrote /x/i.json and /x/r.json\n\n4 referring expressions; images per split: 2 train, 1 val, 0 test."
    )
    folder = FolderExportReport(Path("/x/yolo"), "yolo", 2, 3, 1, 2, 2, ())
    assert summary_text(folder) == (
        "Wrote /x/yolo\n\n2 images (2 image files), 3 annotations (2 with masks), 1 categories."
    )


def test_cancel_and_stop_without_a_run_do_nothing(flow):
    flow.cancel()
    flow.stop()
    assert not flow.running and flow.progress is None
