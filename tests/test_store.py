"""Project store: SQLite settings, schema versions, images, annotations, undo/redo, concurrency (issue 5, item 2)."""

import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import annotator.project.store as store_module
import annotator.project.store_history as store_history
import annotator.project.store_images as store_images
from annotator.errors import ProjectStoreError
from annotator.project.geometry import Rle
from annotator.project.store import SCHEMA_VERSION, ProjectStore


def _image(path: Path, width: int = 40, height: int = 30, colour=(10, 20, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), colour).save(path)


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "images"
    _image(root / "a.png", colour=(1, 2, 3))
    _image(root / "b.png", colour=(4, 5, 6))
    return root


@pytest.fixture
def store(folder):
    with ProjectStore.for_folder(folder) as opened:
        opened.sync_folder()
        yield opened


def _square_mask(x0: int, y0: int, x1: int, y1: int, width: int = 40, height: int = 30) -> Rle:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return Rle.from_mask(mask)


# ----- opening -------------------------------------------------------------------------------------------------


def test_the_default_store_lives_in_a_hidden_folder_inside_the_image_folder(folder):
    with ProjectStore.for_folder(folder) as store:
        assert store.path == folder / ".annotator" / "project.sqlite"
        assert store.image_root == folder.resolve()


def test_the_store_runs_wal_with_full_sync_foreign_keys_and_a_busy_timeout(store):
    assert store.connection_settings() == {
        "journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 5000
    }  # fmt: skip


def test_a_store_elsewhere_remembers_its_image_folder(tmp_path, folder):
    path = tmp_path / "projects" / "p.sqlite"
    ProjectStore.open(path, image_root=folder).close()
    with ProjectStore.open(path) as reopened:
        assert reopened.image_root == folder.resolve()


def test_a_new_store_without_an_image_folder_is_refused(tmp_path):
    with pytest.raises(ProjectStoreError, match="no image folder"):
        ProjectStore.open(tmp_path / "p.sqlite")


def test_a_new_store_is_migrated_to_the_current_schema_version(tmp_path, folder):
    path = tmp_path / "p.sqlite"
    ProjectStore.open(path, image_root=folder).close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "images", "categories", "annotations", "history"} <= tables


def test_reopening_a_current_store_keeps_its_data(store, folder):
    store.add_category("cup")
    store.close()
    with ProjectStore.for_folder(folder) as reopened:
        assert [c.name for c in reopened.categories()] == ["cup"]


def test_a_store_from_a_newer_version_is_refused(tmp_path, folder):
    path = tmp_path / "p.sqlite"
    ProjectStore.open(path, image_root=folder).close()
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ProjectStoreError, match="newer|update annotator"):
        ProjectStore.open(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path, folder):
    path = tmp_path / "p.sqlite"
    path.write_bytes(b"definitely not SQLite" * 100)
    with pytest.raises(ProjectStoreError, match="p.sqlite"):
        ProjectStore.open(path, image_root=folder)


# ----- images --------------------------------------------------------------------------------------------------


def test_sync_lists_images_in_natural_order_without_reading_them(tmp_path):
    root = tmp_path / "images"
    for name in ("img10.png", "img2.png", "img1.png"):
        _image(root / name)
    with ProjectStore.for_folder(root) as store:
        report = store.sync_folder()
        records = store.images()
    assert (report.added, report.listed) == (3, 3)
    assert [r.path for r in records] == ["img1.png", "img2.png", "img10.png"]
    assert all(r.width is None and r.status == "todo" for r in records)


def test_image_info_is_read_from_the_header_once_and_cached(store, folder, monkeypatch):
    image_id = store.image_by_path("a.png").id
    assert (store.ensure_image_info(image_id).width, store.image(image_id).height) == (40, 30)
    store.close()

    def no_header_reads(*args, **kwargs):
        raise AssertionError("the header was read again")

    monkeypatch.setattr(store_images, "image_size", no_header_reads)
    with ProjectStore.for_folder(folder) as reopened:
        assert reopened.ensure_image_info(image_id).width == 40


def test_a_changed_file_is_read_again(store, folder):
    image_id = store.image_by_path("a.png").id
    store.ensure_image_info(image_id)
    _image(folder / "a.png", width=50, height=20)
    record = store.ensure_image_info(image_id)
    assert (record.width, record.height) == (50, 20)


def test_fill_image_info_reads_every_unread_header(store):
    assert store.fill_image_info() == 2
    assert [(r.width, r.height) for r in store.images()] == [(40, 30), (40, 30)]


def test_an_unreadable_image_records_the_reason(store, folder):
    (folder / "c.png").write_text("not a png")
    store.sync_folder()
    record = store.ensure_image_info(store.image_by_path("c.png").id)
    assert record.width is None and "not an image" in record.error


def test_a_renamed_file_is_reattached_to_its_record(store, folder):
    image_id = store.image_by_path("a.png").id
    category = store.add_category("cup")
    store.add_annotation(image_id, category.id, (1, 1, 5, 5))
    (folder / "moved").mkdir()
    (folder / "a.png").rename(folder / "moved" / "renamed.png")
    report = store.sync_folder()
    assert (report.reattached, report.added, report.missing) == (1, 0, 0)
    assert store.image(image_id).path == "moved/renamed.png"
    assert len(store.annotations(image_id)) == 1


def test_a_vanished_file_keeps_its_annotations_and_comes_back(store, folder):
    image_id = store.image_by_path("a.png").id
    store.add_annotation(image_id, store.add_category("cup").id, (1, 1, 5, 5))
    data = (folder / "a.png").read_bytes()
    (folder / "a.png").unlink()
    assert store.sync_folder().missing == 1
    assert [r.path for r in store.images()] == ["b.png"]
    (folder / "a.png").write_bytes(data)
    store.sync_folder()
    assert [r.path for r in store.images()] == ["a.png", "b.png"]
    assert len(store.annotations(image_id)) == 1


def test_add_images_registers_files_and_refuses_paths_out_of_the_folder(store, folder, tmp_path):
    _image(tmp_path / "outside.png")
    _image(folder / "new" / "c.png", width=12, height=8)
    (folder / "link.png").symlink_to(tmp_path / "outside.png")
    escapes = ["../outside.png", "/etc/passwd", "C:\\Windows\\win.ini", "link.png"]
    records, refused = store.add_images(["new/c.png", "a.png", *escapes, "absent.png"])
    assert [(r.path, r.width, r.height) for r in records] == [("new/c.png", 12, 8), ("a.png", 40, 30)]
    assert [s.path for s in refused] == [*escapes, "absent.png"]
    assert all("image folder" in s.reason for s in refused[:4]) and "no image file" in refused[4].reason


# ----- annotations ---------------------------------------------------------------------------------------------


def test_an_added_annotation_comes_back_with_every_field(store):
    image_id = store.image_by_path("a.png").id
    category = store.add_category("cup", "kitchen")
    added = store.add_annotation(
        image_id, category.id, (1.5, 2.0, 10.0, 12.25), rle=_square_mask(2, 2, 10, 12), expression="the cup",
        source="proposal", score=0.75, heads=[(14, 24), (14, 13)], extra={"attention_box": [0, 0, 12, 14]},
    )  # fmt: skip
    again = store.annotation(added.id)
    assert again == added
    assert (again.box_xyxy, again.expression, again.source) == ((1.5, 2.0, 10.0, 12.25), "the cup", "proposal")
    assert again.score == 0.75
    assert again.heads == ((14, 24), (14, 13)) and again.status == "pending"
    assert again.rle == _square_mask(2, 2, 10, 12) and dict(again.extra) == {"attention_box": [0, 0, 12, 14]}


def test_an_annotation_without_a_box_takes_its_mask_tight_box(store):
    image_id, category = store.image_by_path("a.png").id, store.add_category("cup")
    added = store.add_annotation(image_id, category.id, rle=_square_mask(3, 4, 9, 7))
    assert added.box_xyxy == (3.0, 4.0, 9.0, 7.0)


@pytest.mark.parametrize("box", [(0, 0, 41, 10), (5, 5, 5, 9), (-1, 0, 3, 3), (0, 0, float("nan"), 3)])
def test_a_box_that_is_empty_or_outside_the_image_is_refused(store, box):
    with pytest.raises(ValueError, match="box"):
        store.add_annotation(store.image_by_path("a.png").id, store.add_category("cup").id, box)


def test_a_mask_of_another_size_is_refused(store):
    wrong = Rle.from_mask(np.ones((10, 10), dtype=bool))
    with pytest.raises(ValueError, match="mask is 10x10"):
        store.add_annotation(store.image_by_path("a.png").id, store.add_category("cup").id, rle=wrong)


def test_an_unknown_category_is_refused(store):
    with pytest.raises(ValueError, match="no category 99"):
        store.add_annotation(store.image_by_path("a.png").id, 99, (0, 0, 5, 5))


def test_statuses_and_counts_follow_accept_reject_and_done(store):
    a, b = store.image_by_path("a.png").id, store.image_by_path("b.png").id
    category = store.add_category("cup")
    first = store.add_annotation(a, category.id, (0, 0, 5, 5))
    second = store.add_annotation(a, category.id, (5, 5, 9, 9))
    store.accept(first.id)
    store.reject(second.id)
    store.set_image_done(b)
    records = {r.id: r for r in store.images()}
    record = records[a]
    assert (record.status, record.n_accepted, record.n_rejected, record.n_pending) == ("in_progress", 1, 1, 0)
    assert records[b].status == "done"
    assert store.status_counts() == {"todo": 0, "in_progress": 1, "done": 1}


def test_editing_a_proposal_makes_it_edited_and_a_manual_one_stays_manual(store):
    image_id, category = store.image_by_path("a.png").id, store.add_category("cup")
    proposal = store.add_annotation(image_id, category.id, (0, 0, 5, 5), source="proposal")
    manual = store.add_annotation(image_id, category.id, (0, 0, 5, 5), source="manual")
    assert store.update_box(proposal.id, (1, 1, 6, 6)).source == "edited"
    assert store.update_box(manual.id, (1, 1, 6, 6)).source == "manual"


def test_a_new_mask_sets_the_box_to_its_tight_box(store):
    added = store.add_annotation(store.image_by_path("a.png").id, store.add_category("cup").id, (0, 0, 30, 20))
    assert store.update_mask(added.id, _square_mask(4, 5, 8, 9)).box_xyxy == (4.0, 5.0, 8.0, 9.0)


# ----- undo / redo ---------------------------------------------------------------------------------------------


def _mutations(store):
    image_id = store.image_by_path("a.png").id
    cup, bowl = store.add_category("cup"), store.add_category("bowl")
    target = store.add_annotation(image_id, cup.id, (0, 0, 10, 10), source="proposal")
    return {
        "add": lambda: store.add_annotation(image_id, cup.id, (2, 2, 4, 4)),
        "accept": lambda: store.accept(target.id),
        "reject": lambda: store.reject(target.id),
        "box": lambda: store.update_box(target.id, (1, 1, 9, 9)),
        "mask": lambda: store.update_mask(target.id, _square_mask(1, 2, 3, 4)),
        "category": lambda: store.update_category(target.id, bowl.id),
        "delete": lambda: store.delete_annotation(target.id),
        "done": lambda: store.set_image_done(image_id),
        "new category": lambda: store.add_category("plate"),
    }


def _snapshot(store):
    return store.annotations(), store.images(), store.categories()


@pytest.mark.parametrize(
    "name", ["add", "accept", "reject", "box", "mask", "category", "delete", "done", "new category"]
)
def test_undo_restores_and_redo_reapplies_every_change(store, name):
    change = _mutations(store)[name]
    before = _snapshot(store)
    change()
    after = _snapshot(store)
    assert after != before
    assert store.undo() is not None
    assert _snapshot(store) == before
    assert store.redo() is not None
    assert _snapshot(store) == after


def test_undo_and_redo_walk_several_steps_in_order(store):
    image_id, category = store.image_by_path("a.png").id, store.add_category("cup")
    added = store.add_annotation(image_id, category.id, (0, 0, 5, 5))
    store.accept(added.id)
    store.update_box(added.id, (1, 1, 6, 6))
    assert [store.undo(), store.undo(), store.undo()] == ["edit box", "mark accepted", "add annotation"]
    assert store.annotations() == []
    redone = [store.redo(), store.redo(), store.redo(), store.redo()]
    assert redone == ["add annotation", "mark accepted", "edit box", None]
    assert store.annotation(added.id).box_xyxy == (1.0, 1.0, 6.0, 6.0)


def test_a_new_change_after_undo_drops_the_redo_steps(store):
    image_id, category = store.image_by_path("a.png").id, store.add_category("cup")
    added = store.add_annotation(image_id, category.id, (0, 0, 5, 5))
    store.accept(added.id)
    store.undo()
    store.reject(added.id)
    assert not store.can_redo and store.redo() is None


def test_one_session_cannot_undo_another_sessions_change(store, folder):
    store.add_category("cup")
    with ProjectStore.for_folder(folder) as other:
        assert not other.can_undo and other.undo() is None
    assert [c.name for c in store.categories()] == ["cup"]


def test_bulk_adds_without_undo_leave_no_history(store):
    image_id, category = store.image_by_path("a.png").id, store.add_category("cup", undoable=False)
    new = [store_module.NewAnnotation(image_id, category.id, (0, 0, i + 1, i + 1)) for i in range(3)]
    ids = store.add_annotations(new, undoable=False)
    assert [a.id for a in store.annotations()] == ids and len(ids) == 3
    assert not store.can_undo


def test_history_beyond_the_limit_is_pruned(store, monkeypatch):
    monkeypatch.setattr(store_history, "HISTORY_LIMIT", 3)
    for name in ("a", "b", "c", "d", "e"):
        store.add_category(name)
    assert [store.undo() for _ in range(4)] == ["add category e", "add category d", "add category c", None]


# ----- concurrency and crash safety ----------------------------------------------------------------------------


def test_a_second_writer_gets_a_clear_error_while_another_holds_the_write_lock(store):
    image_id, category = store.image_by_path("a.png").id, store.add_category("cup")
    raw = sqlite3.connect(store.path, isolation_level=None)
    raw.execute("BEGIN IMMEDIATE")
    try:
        with ProjectStore.open(store.path, busy_timeout_s=0.05) as second:
            with pytest.raises(ProjectStoreError, match="busy|locked"):
                second.add_annotation(image_id, category.id, (0, 0, 5, 5))
    finally:
        raw.execute("ROLLBACK")
        raw.close()


def test_two_store_objects_see_each_others_commits(store):
    image_id, category = store.image_by_path("a.png").id, store.add_category("cup")
    with ProjectStore.open(store.path) as second:
        added = second.add_annotation(image_id, category.id, (0, 0, 5, 5))
        assert store.annotation(added.id) == added


def test_a_store_belongs_to_the_thread_that_opened_it(store):
    errors = []
    worker = threading.Thread(target=lambda: errors.append(_catch(store.categories)))
    worker.start()
    worker.join()
    assert isinstance(errors[0], sqlite3.ProgrammingError)


def _catch(call):
    try:
        call()
    except Exception as err:  # noqa: BLE001 - the test inspects the error
        return err
    return None


_CHILD = """
import sys
from annotator.project.store import ProjectStore
store = ProjectStore.for_folder(sys.argv[1])
image, category = store.images()[0], store.categories()[0]
while True:
    added = store.add_annotation(image.id, category.id, (1, 1, 5, 5), status="accepted")
    print(added.id, flush=True)
"""


def test_a_writer_killed_mid_way_loses_no_committed_annotation(store, folder):
    store.add_category("cup")
    store.ensure_image_info(store.images()[0].id)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    committed = [int(child.stdout.readline()) for _ in range(30)]
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    with ProjectStore.for_folder(folder) as reopened:
        stored = {a.id for a in reopened.annotations()}
        assert set(committed) <= stored
        assert reopened.integrity_check() == "ok"
        assert reopened.images()[0].n_accepted == len(stored)


def test_a_transaction_commits_its_calls_together_or_not_at_all(store):
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.add_category("cat", undoable=False)
            store.add_category("dog", undoable=False)
            raise RuntimeError("the import failed half-way")
    assert store.categories() == []
    with store.transaction():
        store.add_category("cat", undoable=False)
        with pytest.raises(ValueError):
            store.add_category("cat", undoable=False)
        store.add_category("dog", undoable=False)
    assert [c.name for c in store.categories()] == ["cat", "dog"]


def test_a_failed_call_inside_a_transaction_undoes_only_its_own_rows(store):
    image = store.images()[0]
    cat = store.add_category("cat", undoable=False)
    with store.transaction():
        store.add_annotation(image.id, cat.id, (1, 1, 5, 5))
        with pytest.raises(ProjectStoreError):
            store._mutate("bad", [{"op": "insert", "table": "categories", "rows": [{"name": "cat"}]}])
    assert len(store.annotations()) == 1
