"""COCO import and export under bad input and faults (issue 16): a broken file is one clear error naming it, a bad
entry is reported by its id while the rest is imported, an import is all-or-nothing, and an export that cannot be
written says where, why and that the annotations are safe, leaving the previous files (both of a RefCOCO pair)
as they were and no temporary file behind."""

import errno
import json

import pytest
from PIL import Image
from pycocotools import mask as coco_mask

import annotator.project.atomic_file as atomic_file
import annotator.project.coco as coco_module
from annotator.errors import CocoFormatError, ExportError, ProjectStoreError
from annotator.project.coco import check_export_destination, export_coco, export_refcoco, import_coco
from annotator.project.imports import import_annotations
from annotator.project.store import ProjectStore
from tests.coco_fixtures import (  # noqa: F401 (folder and store are fixtures)
    coco_annotation,
    folder,
    store,
    write_coco_file,
)

HUGE = 10**400
IMAGE_A = {"id": 1, "file_name": "a.png", "width": 80, "height": 60}
IMAGE_B = {"id": 2, "file_name": "b.png", "width": 64, "height": 48}
CATEGORY = {"id": 7, "name": "cup", "supercategory": "kitchen"}


def _import(folder, tmp_path, images, annotations, categories=None):
    """Import a COCO file made of these sections into the folder's store: the report and what the store holds."""
    with ProjectStore.for_folder(folder) as store:
        report = import_coco(store, write_coco_file(tmp_path / "in.json", images, annotations, categories))
        return report, store.annotations(), store.categories()


def _issues(report) -> dict[tuple[str, object], str]:
    return {(issue.kind, issue.coco_id): issue.reason for issue in report.issues}


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _temporary_files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ----- import: the file ------------------------------------------------------------------------------------------


def test_a_file_nested_100000_deep_is_refused_in_one_line_naming_it(folder, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with ProjectStore.for_folder(folder) as store, pytest.raises(CocoFormatError, match="nested too deeply") as err:
        import_coco(store, path)
    assert str(path) in str(err.value)


def test_an_integer_of_5000_digits_is_refused_in_one_line_naming_it(folder, tmp_path):
    path = tmp_path / "long.json"
    path.write_text('{"images": [], "annotations": [{"id": ' + "9" * 5000 + "}]}")
    with ProjectStore.for_folder(folder) as store, pytest.raises(CocoFormatError, match="number too long") as err:
        import_coco(store, path)
    assert str(path) in str(err.value)


# ----- import: one bad entry -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image_b, annotation, bad, reason",
    [
        ({}, {"bbox": [HUGE, 2, 10, 10]}, ("annotation", 1), "finite number"),
        ({}, {"score": HUGE}, ("annotation", 1), "score"),
        ({}, {"segmentation": [[HUGE, 0, 10, 0, 10, 10]]}, ("annotation", 1), "finite number"),
        ({}, {"segmentation": {"size": [48, 64], "counts": [HUGE, 0]}}, ("annotation", 1), "RLE counts"),
        ({}, {"heads": [[HUGE, 1]]}, ("annotation", 1), "heads"),
        ({"width": HUGE}, {}, ("image", 2), "width and height"),
        ({"height": HUGE}, {}, ("image", 2), "width and height"),
    ],
    ids=["bbox", "score", "polygon", "rle-counts", "heads", "width", "height"],
)
def test_a_400_digit_number_makes_its_entry_bad_and_the_rest_is_imported(
    folder, tmp_path, image_b, annotation, bad, reason
):
    images = [IMAGE_A, {**IMAGE_B, **image_b}]
    report, stored, _ = _import(folder, tmp_path, images, [coco_annotation(1, 2, **annotation), coco_annotation(2, 1)])
    assert reason in _issues(report)[bad]
    assert [a.image_id for a in stored] == [1] and report.annotations_imported == 1


@pytest.mark.parametrize("field", ["id", "image_id", "category_id", "area"])
def test_a_400_digit_id_or_area_is_taken_as_it_is(folder, tmp_path, field):
    annotation = {"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 2, 10, 10], "area": 100, field: HUGE}
    images = [{**IMAGE_A, "id": annotation["image_id"]}]
    categories = [{"id": annotation["category_id"], "name": "cup"}]
    report, stored, _ = _import(folder, tmp_path, images, [annotation], categories)
    assert report.issues == () and len(stored) == 1


@pytest.mark.parametrize("coordinate", [1e9, -1e9, 1e300])
def test_a_polygon_point_far_outside_the_image_is_reported_instead_of_crashing_pycocotools(
    folder, tmp_path, coordinate
):
    annotation = coco_annotation(1, 1, segmentation=[[coordinate, 0, 10, 0, 10, 10]])
    report, stored, _ = _import(folder, tmp_path, [IMAGE_A], [annotation, coco_annotation(2, 1)])
    assert "far outside the 80x60 image" in _issues(report)[("annotation", 1)]
    assert len(stored) == 1


@pytest.mark.parametrize(
    "file_name, reason",
    [("a\0.png", "not a usable file name"), ("\ud800.png", "not valid text"), ("x" * 5000 + ".png", "too long")],
    ids=["nul", "lone-surrogate", "5000-characters"],
)
def test_a_file_name_with_a_nul_a_lone_surrogate_or_5000_characters_is_reported_by_image_id(
    folder, tmp_path, file_name, reason
):
    images = [IMAGE_A, {"id": 3, "file_name": file_name, "width": 10, "height": 10}]
    report, stored, _ = _import(folder, tmp_path, images, [coco_annotation(1, 1)])
    assert [(issue.kind, issue.coco_id) for issue in report.issues] == [("image", 3)]
    assert reason in report.issues[0].reason and len(report.issues[0].reason) < 400
    assert len(stored) == 1


@pytest.mark.parametrize(
    "category, annotation, bad",
    [
        ({"name": "\ud800"}, {}, ("category", 8)),
        ({"supercategory": "\udfff"}, {}, ("category", 8)),
        ({}, {"expression": "the \ud800 cup"}, ("annotation", 1)),
        ({}, {"extra": {"note": ["fine", "\ud800"]}}, ("annotation", 1)),
    ],
    ids=["category-name", "supercategory", "expression", "extra"],
)
def test_a_lone_surrogate_in_a_name_an_expression_or_extra_is_reported_and_the_rest_is_imported(
    folder, tmp_path, category, annotation, bad
):
    categories = [CATEGORY, {"id": 8, "name": "plate", **category}]
    report, stored, stored_categories = _import(
        folder,
        tmp_path,
        [IMAGE_A],
        [coco_annotation(1, 1, category_id=8, **annotation), coco_annotation(2, 1)],
        categories,
    )
    assert "valid text" in _issues(report)[bad]
    assert len(stored) == 1 and "cup" in [c.name for c in stored_categories]


def test_entries_that_are_not_objects_are_reported_and_the_rest_is_imported(folder, tmp_path):
    report, stored, _ = _import(
        folder, tmp_path, [IMAGE_A, 1, "a.png", None, [1]], [coco_annotation(1, 1), 2, "x", None], [CATEGORY, 3, "cup"]
    )
    assert [issue.kind for issue in report.issues] == ["category"] * 2 + ["image"] * 4 + ["annotation"] * 3
    assert {issue.coco_id for issue in report.issues} == {None}
    assert len(stored) == 1


def test_unicode_file_names_category_names_and_expressions_are_imported(folder, tmp_path):
    (folder / "küche").mkdir()
    Image.new("RGB", (20, 10)).save(folder / "küche" / "茶碗 ☕.png")
    images = [{"id": 1, "file_name": "küche/茶碗 ☕.png", "width": 20, "height": 10}]
    annotation = coco_annotation(1, 1, bbox=[1, 1, 5, 5], expression="die große Tasse")
    report, stored, categories = _import(folder, tmp_path, images, [annotation], [{"id": 7, "name": "čaj ☕"}])
    assert report.issues == () and report.images_added == 1
    assert [c.name for c in categories] == ["čaj ☕"] and stored[0].expression == "die große Tasse"


@pytest.mark.parametrize(
    "field, value",
    [
        ("bbox", ["1", "2", "3", "4"]),
        ("bbox", [[1], [2], [3], [4]]),
        ("bbox", "1,2,3,4"),
        ("segmentation", [["a", "b", "c", "d", "e", "f"]]),
        ("segmentation", [[[1, 2], [3, 4], [5, 6]]]),
        ("segmentation", [1, 2, 3, 4, 5, 6]),
        ("segmentation", {"size": [60, 80]}),
        ("segmentation", {"size": [60, 80], "counts": {"a": 1}}),
        ("segmentation", "garbage"),
    ],
)
def test_garbage_in_a_bbox_or_a_segmentation_is_reported_by_id(folder, tmp_path, field, value):
    annotations = [coco_annotation(1, 1, **{field: value}), coco_annotation(2, 1)]
    report, stored, _ = _import(folder, tmp_path, [IMAGE_A], annotations)
    assert [(issue.kind, issue.coco_id) for issue in report.issues] == [("annotation", 1)]
    assert len(stored) == 1


# ----- import: all or nothing ------------------------------------------------------------------------------------


def test_an_import_that_fails_at_the_annotations_leaves_no_category_and_no_image(folder, tmp_path, monkeypatch):
    path = write_coco_file(tmp_path / "in.json", [IMAGE_A, IMAGE_B], [coco_annotation(1, 1), coco_annotation(2, 2)])
    with ProjectStore.for_folder(folder) as store:

        def disk_full(*args, **kwargs):
            raise ProjectStoreError(f"project store {store.path}: database or disk is full")

        monkeypatch.setattr(store, "add_annotations", disk_full)
        with pytest.raises(ProjectStoreError, match="disk is full"):
            import_coco(store, path)
        assert store.categories() == [] and store.images(include_missing=True) == []


# ----- export ----------------------------------------------------------------------------------------------------


def test_a_full_disk_at_the_fsync_names_the_file_and_the_store_and_keeps_the_previous_file(
    store, tmp_path, monkeypatch
):
    path = tmp_path / "out.json"
    export_coco(store, path)
    before = path.read_bytes()
    monkeypatch.setattr(atomic_file.os, "fsync", _no_space)
    with pytest.raises(ExportError) as err:
        export_coco(store, path, statuses=("pending", "accepted"))
    assert str(err.value) == (
        f"cannot write COCO file {path}: No space left on device; the annotations are safe in the project store "
        f"{store.path}; free some space and export again"
    )
    assert path.read_bytes() == before and _temporary_files(tmp_path) == []


def test_a_write_that_fails_mid_file_names_the_file_and_leaves_no_temporary_file(store, tmp_path, monkeypatch):
    path = tmp_path / "out.json"

    def half_written(document, handle, **options):
        handle.write("{")
        _no_space()

    monkeypatch.setattr(coco_module.json, "dump", half_written)
    with pytest.raises(ExportError, match=f"cannot write COCO file {path}: No space left on device; the annot"):
        export_coco(store, path)
    assert not path.exists() and _temporary_files(tmp_path) == []


def test_exporting_to_an_existing_folder_says_it_is_a_folder_and_names_no_temporary_file(store, tmp_path):
    out = tmp_path / "exports"
    out.mkdir()
    with pytest.raises(ExportError, match=f"cannot write COCO file {out}: it is a folder") as err:
        export_coco(store, out)
    assert ".tmp" not in str(err.value) and str(store.path) in str(err.value)
    assert list(out.iterdir()) == [] and _temporary_files(tmp_path) == []


def test_exporting_below_a_file_says_that_the_file_is_not_a_folder(store, tmp_path):
    (tmp_path / "notes.txt").write_text("not a folder")
    with pytest.raises(ExportError, match=f"{tmp_path / 'notes.txt'} is not a folder"):
        export_coco(store, tmp_path / "notes.txt" / "out.json")


def test_check_export_destination_refuses_a_folder_and_a_missing_folder_and_writes_nothing(tmp_path):
    with pytest.raises(ExportError, match="it is a folder"):
        check_export_destination(tmp_path)
    with pytest.raises(ExportError, match=f"the folder {tmp_path / 'missing'} does not exist"):
        check_export_destination(tmp_path / "missing" / "out.json")
    check_export_destination(tmp_path / "out.json")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def previous_pair(store, tmp_path):
    """A RefCOCO export on disk, then one more accepted annotation in the store (the next export differs)."""
    folder = tmp_path / "refcoco"
    export_refcoco(store, folder)
    before = {name: (folder / name).read_bytes() for name in ("instances.json", "refs.json")}
    (pending,) = store.annotations(statuses=("pending",))
    store.accept(pending.id)
    return folder, before


def test_a_refcoco_export_whose_second_file_hits_a_full_disk_keeps_the_previous_pair(
    store, previous_pair, monkeypatch
):
    folder, before = previous_pair
    real_fsync, calls = atomic_file.os.fsync, []

    def second_fails(fd):
        calls.append(fd)
        if len(calls) == 2:
            _no_space()
        real_fsync(fd)

    monkeypatch.setattr(atomic_file.os, "fsync", second_fails)
    with pytest.raises(ExportError, match=f"cannot write RefCOCO file {folder / 'refs.json'}: No space left"):
        export_refcoco(store, folder)
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert _temporary_files(folder) == []


def test_a_refcoco_export_whose_second_rename_fails_puts_the_first_file_back(store, previous_pair, monkeypatch):
    folder, before = previous_pair
    real_replace, calls = atomic_file.os.replace, []

    def second_fails(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        real_replace(source, target)

    monkeypatch.setattr(atomic_file.os, "replace", second_fails)
    with pytest.raises(ExportError, match="Input/output error; the annotations are safe in the project store"):
        export_refcoco(store, folder)
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert _temporary_files(folder) == []


def test_a_refcoco_export_into_a_file_says_it_is_not_a_folder(store, tmp_path):
    (tmp_path / "refcoco").write_text("a file")
    with pytest.raises(ExportError, match=f"into {tmp_path / 'refcoco'}: it is a file, not a folder"):
        export_refcoco(store, tmp_path / "refcoco")


# ----- import: labelme files -------------------------------------------------------------------------------------


def _labelme(folder, path, **fields):
    """Import one labelme file with one rectangle on a.png, these fields replacing the file's own."""
    data = {
        "version": "5.4.1", "flags": {}, "imagePath": "a.png", "imageData": None, "imageHeight": 60, "imageWidth": 80,
        "shapes": [{"label": "cup", "points": [[1, 2], [11, 12]], "shape_type": "rectangle", "flags": {}}],
        **fields,
    }  # fmt: skip
    path.write_text(json.dumps(data))
    with ProjectStore.for_folder(folder) as store:
        return import_annotations(store, path), store.annotations()


def test_a_labelme_file_without_image_path_is_reported_by_its_file_name(folder):
    report, stored = _labelme(folder, folder / "a.json", imagePath=None)
    expected = [("image", "a.json", "no imagePath: the file names no image")]
    assert [(i.kind, i.coco_id, i.reason) for i in report.issues] == expected
    assert stored == []


def test_a_labelme_image_path_that_leaves_the_image_folder_is_refused(folder, tmp_path):
    Image.new("RGB", (80, 60)).save(tmp_path / "outside.png")
    report, stored = _labelme(folder, folder / "a.json", imagePath="../outside.png")
    assert "not inside the image folder" in report.issues[0].reason and stored == []


def test_a_labelme_point_of_1e400_is_reported_by_file_and_shape(folder):
    shapes = [{"label": "cup", "points": [[1, 2], [1e400, 12]], "shape_type": "rectangle"}]
    report, stored = _labelme(folder, folder / "a.json", shapes=shapes)
    assert report.issues[0].coco_id == "a.json shape 0" and "finite numbers" in report.issues[0].reason
    assert stored == []


def test_a_non_canonical_rle_whose_size_is_the_image_size_swapped_is_refused(folder, tmp_path):
    runs = [5, 0, 10, 60 * 80 - 15]  # a zero run (not canonical); 4800 pixels, as many as the image has
    counts = coco_mask.frPyObjects({"size": [60, 80], "counts": runs}, 60, 80)["counts"].decode("ascii")
    annotation = coco_annotation(1, 1, segmentation={"size": [80, 60], "counts": counts})
    report, stored, _ = _import(folder, tmp_path, [IMAGE_A], [annotation])
    assert "is not the image's" in _issues(report)[("annotation", 1)] and stored == []
