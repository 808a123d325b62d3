"""Export progress: every exporter reports (done, total) from (0, total) up to (total, total) once, and an
ExportCancelled raised from the callback, even at the very last call, leaves the previous export byte for byte
and no temporary file."""

import hashlib
import json
from pathlib import Path

import pytest

from annotator.errors import ExportCancelled
from annotator.project.coco import export_coco, export_refcoco
from annotator.project.coco_folder import export_coco_folder
from annotator.project.voc import export_voc
from annotator.project.store import ProjectStore
from annotator.project.yolo import export_yolo
from tests import coco_fixtures

folder, store = coco_fixtures.folder, coco_fixtures.store  # the fixtures of the COCO tests

# The fixture store exports three images: a and b carry accepted annotations, c is marked done.
EXPORTS = {
    "coco": (lambda s, out, **kw: export_coco(s, out / "instances.json", **kw), "instances.json", 3),
    "refcoco": (lambda s, out, **kw: export_refcoco(s, out / "refcoco", **kw), "refcoco", 3),
    "coco-folder": (lambda s, out, **kw: export_coco_folder(s, out / "coco", **kw), "coco", 6),
    "coco-folder-no-images": (
        lambda s, out, **kw: export_coco_folder(s, out / "coco", images="none", **kw), "coco", 3
    ),
    "yolo": (lambda s, out, **kw: export_yolo(s, out / "yolo", **kw), "yolo", 3),
    "voc": (lambda s, out, **kw: export_voc(s, out / "voc", **kw), "voc", 3),
}


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (its relative path) and a digest of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


class CancelAt:
    """A progress callback that records its calls and raises ExportCancelled at the call numbered `at`."""

    def __init__(self, at: int | None = None) -> None:
        self.at, self.calls = at, []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))
        if self.at is not None and (self.at == len(self.calls) - 1 or self.at == -1 and done == total):
            raise ExportCancelled("export cancelled")


@pytest.mark.parametrize("kind", EXPORTS)
def test_progress_counts_every_step_from_zero_to_total_once(store, tmp_path, kind):
    export, _, total = EXPORTS[kind]
    progress = CancelAt()
    export(store, tmp_path, progress=progress)
    assert progress.calls == [(done, total) for done in range(total + 1)]


def test_an_export_with_progress_writes_the_same_file_as_one_without(store, tmp_path):
    export_coco(store, tmp_path / "plain.json")
    export_coco(store, tmp_path / "watched.json", progress=CancelAt())
    plain, watched = (json.loads((tmp_path / name).read_text()) for name in ("plain.json", "watched.json"))
    plain["info"].pop("date_created"), watched["info"].pop("date_created")
    assert plain == watched


def test_a_store_with_nothing_to_export_reports_zero_of_zero(folder, tmp_path):
    with ProjectStore.for_folder(folder) as empty:
        empty.sync_folder()
        progress = CancelAt()
        report = export_coco(empty, tmp_path / "empty.json", progress=progress)
    assert (report.images, progress.calls) == (0, [(0, 0)])


@pytest.mark.parametrize("at", [0, 1, -1], ids=["first-call", "mid-way", "last-call"])
@pytest.mark.parametrize("kind", EXPORTS)
def test_cancelling_leaves_the_previous_export_byte_for_byte_and_no_temporary_file(store, tmp_path, kind, at):
    export, name, _ = EXPORTS[kind]
    out = tmp_path / "out"
    out.mkdir()
    export(store, out)
    store.set_image_done(store.image_by_path("d.png").id)  # the next export would differ
    before = snapshot(out)
    assert before
    progress = CancelAt(at)
    with pytest.raises(ExportCancelled):
        export(store, out, progress=progress)
    assert snapshot(out) == before
    assert sorted(path.name for path in out.iterdir()) == [name]
    assert progress.calls[-1][0] == (progress.calls[-1][1] if at == -1 else at)


def test_cancelling_a_first_export_leaves_no_file_at_all(store, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ExportCancelled):
        export_yolo(store, out / "yolo", progress=CancelAt(-1))
    with pytest.raises(ExportCancelled):
        export_coco(store, out / "instances.json", progress=CancelAt(-1))
    assert list(out.iterdir()) == []
