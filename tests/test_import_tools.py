"""Import from the tools annotators already use (issue 21): `annotator import` and its summary, the shapes of the
COCO files CVAT, Datumaro, X-AnyLabeling, labelme2coco and Label Studio write, files that are not instances,
EXIF sizes, and labelme JSON. Each file is written here in the shape of the tool's own output."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from annotator import cli
from annotator.errors import CocoFormatError
from annotator.project.coco import export_coco, import_coco
from annotator.project.geometry import Rle
from annotator.project.imports import import_annotations
from annotator.project.store import ProjectStore
from tests.coco_fixtures import (  # noqa: F401 (folder and store are fixtures)
    coco_annotation,
    disc_mask,
    folder,
    mask_iou,
    store,
    write_coco_file,
)
from tests.test_cli_errors import assert_one_line_error
from tests.ui_fixtures import (  # noqa: F401 (fixtures)
    STEP_TIMEOUT_MS,
    app_settings,
    isolated_qsettings,
    make_window,
    open_folder,
    planted_model_path,
)

IMAGE_A = {"id": 1, "file_name": "a.png", "width": 80, "height": 60}
CVAT_INFO = {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""}


def _run_import(capsys, monkeypatch, *argv):
    """`annotator import ...` through the CLI's dispatch."""
    code = cli.main(["import", *map(str, argv)])
    return code, capsys.readouterr()


def _import(folder, path, **options):
    with ProjectStore.for_folder(folder) as store:
        report = import_coco(store, path, **options)
        return report, store.annotations(), store.categories()


def _uncompressed(mask: np.ndarray) -> dict:
    """A mask as CVAT writes it: uncompressed (column-major) RLE counts starting with the background run."""
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"size": list(mask.shape), "counts": np.diff(np.concatenate([[0], changes])).tolist()}


def _cvat_file(path, masks):
    """A COCO file in the shape CVAT 2.x exports: info and licenses stubs, attributes, brush masks as crowd RLE."""
    annotations = [
        {
            "id": index + 1,
            "image_id": 1,
            "category_id": 1,
            "segmentation": _uncompressed(mask),
            "area": float(mask.sum()),
            "bbox": [float(v) for v in coco_mask.toBbox(Rle.from_mask(mask)._pycoco())],
            "iscrowd": 1,
            "attributes": {"occluded": False},
        }
        for index, mask in enumerate(masks)
    ]
    data = {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": CVAT_INFO,
        "categories": [{"id": 1, "name": "cup", "supercategory": ""}],
        "images": [{**IMAGE_A, "license": 0, "flickr_url": "", "coco_url": "", "date_captured": 0}],
        "annotations": annotations,
    }
    path.write_text(json.dumps(data))
    return path


# ----- annotator import ------------------------------------------------------------------------------------------


def test_annotator_import_prints_the_counts_and_the_first_reasons_for_what_it_skipped(
    folder, tmp_path, capsys, monkeypatch
):
    annotations = [coco_annotation(1, 1)] + [coco_annotation(10 + i, 99) for i in range(8)]
    path = write_coco_file(tmp_path / "in.json", [IMAGE_A], annotations)
    code, out = _run_import(capsys, monkeypatch, path, "--folder", folder)
    lines = out.out.splitlines()
    assert code == 0
    assert lines[0].startswith("Imported 1 annotation(s) from in.json") and "skipped 8 annotation(s)" in lines[0]
    assert sum("image 99 is unknown" in line for line in lines) == 5 and "... and 3 more" in lines[-1]


def test_annotator_import_verbose_lists_every_skipped_entry(folder, tmp_path, capsys, monkeypatch):
    path = write_coco_file(tmp_path / "in.json", [IMAGE_A], [coco_annotation(10 + i, 99) for i in range(8)])
    code, out = _run_import(capsys, monkeypatch, path, "--folder", folder, "--verbose")
    assert code == 0 and sum("image 99 is unknown" in line for line in out.out.splitlines()) == 8


def test_annotator_import_status_pending_and_store_put_the_annotations_there_for_review(
    folder, tmp_path, capsys, monkeypatch
):
    path = write_coco_file(tmp_path / "in.json", [IMAGE_A], [coco_annotation(1, 1)])
    store_path = tmp_path / "s.sqlite"
    code, _ = _run_import(capsys, monkeypatch, path, "--folder", folder, "--store", store_path, "--status", "pending")
    with ProjectStore.open(store_path, image_root=folder) as store:
        assert code == 0 and [a.status for a in store.annotations()] == ["pending"]


def test_annotator_import_of_a_file_that_is_not_json_exits_2_with_one_line(folder, tmp_path, capsys, monkeypatch):
    path = tmp_path / "in.json"
    path.write_text("{not json")
    code, out = _run_import(capsys, monkeypatch, path, "--folder", folder)
    assert_one_line_error(code, out.err, "in.json is not valid JSON")


# ----- what other tools write ------------------------------------------------------------------------------------


def test_a_list_of_one_empty_polygon_as_other_tools_write_for_boxes_imports_a_box_only_annotation(folder, tmp_path):
    path = write_coco_file(tmp_path / "in.json", [IMAGE_A], [coco_annotation(1, 1, segmentation=[[]], area=100.0)])
    report, stored, _ = _import(folder, path)
    assert report.issues == () and [(a.box_xyxy, a.rle) for a in stored] == [((1.0, 2.0, 11.0, 12.0), None)]


def test_an_absolute_file_name_inside_the_image_folder_is_matched_to_its_image(folder, tmp_path):
    image = {**IMAGE_A, "file_name": str(folder / "a.png")}
    report, stored, _ = _import(folder, write_coco_file(tmp_path / "in.json", [image], [coco_annotation(1, 1)]))
    assert report.issues == () and report.images_added == 1 and len(stored) == 1


def test_an_absolute_file_name_outside_the_image_folder_is_still_refused(folder, tmp_path):
    Image.new("RGB", (80, 60)).save(tmp_path / "a.png")
    image = {**IMAGE_A, "file_name": str(tmp_path / "a.png")}
    report, stored, _ = _import(folder, write_coco_file(tmp_path / "in.json", [image], [coco_annotation(1, 1)]))
    assert "not inside the image folder" in report.issues[0].reason and stored == []


def test_integral_float_width_and_height_are_taken_as_integers(folder, tmp_path):
    image = {**IMAGE_A, "width": 80.0, "height": 60.0}
    report, stored, _ = _import(folder, write_coco_file(tmp_path / "in.json", [image], [coco_annotation(1, 1)]))
    assert report.issues == () and len(stored) == 1


def test_a_compressed_rle_with_a_zero_run_that_pycocotools_decodes_is_imported_as_its_mask(folder, tmp_path):
    square = np.zeros((60, 80), dtype=bool)
    square[10:20, 30:50] = True
    runs = _uncompressed(square)["counts"]
    split = [runs[0], 5, 0, runs[1] - 5, *runs[2:]]  # one run written as two, with an empty run between
    counts = coco_mask.frPyObjects({"size": [60, 80], "counts": split}, 60, 80)["counts"].decode("ascii")
    assert counts != Rle.from_mask(square).counts
    annotation = coco_annotation(1, 1, segmentation={"size": [60, 80], "counts": counts})
    report, stored, _ = _import(folder, write_coco_file(tmp_path / "in.json", [IMAGE_A], [annotation]))
    assert report.issues == () and np.array_equal(stored[0].rle.to_mask(), square)


def _x_anylabeling_file(path, file_name):
    """The shape of X-AnyLabeling's coco_detection.json: file names without extension, 0-based ids, [] masks."""
    data = {
        "info": {"year": 2024, "version": "2.4.0", "description": "COCO Label Conversion", "contributor": "CVHub"},
        "licenses": [{"id": 1, "url": "https://www.gnu.org/licenses/gpl-3.0.html", "name": "GPL-3.0"}],
        "categories": [{"id": 0, "name": "cup", "supercategory": ""}],
        "images": [{"id": 0, "file_name": file_name, "width": 80, "height": 60, "license": 0, "date_captured": ""}],
        "annotations": [
            {"id": 0, "image_id": 0, "category_id": 0, "bbox": [1.0, 2.0, 10.0, 10.0], "area": 100.0,
             "iscrowd": 0, "segmentation": []}
        ],
    }  # fmt: skip
    path.write_text(json.dumps(data))
    return path


def test_a_file_name_without_extension_is_matched_when_one_image_has_that_stem(folder, tmp_path):
    report, stored, _ = _import(folder, _x_anylabeling_file(tmp_path / "coco_detection.json", "a"))
    assert report.issues == () and len(stored) == 1


def test_a_file_name_without_extension_that_two_images_share_is_reported(folder, tmp_path):
    Image.new("RGB", (80, 60)).save(folder / "a.jpg")
    report, stored, _ = _import(folder, _x_anylabeling_file(tmp_path / "coco_detection.json", "a"))
    assert "has no extension and matches 2 images: ['a.jpg', 'a.png']" in report.issues[0].reason and stored == []


# ----- CVAT's crowd masks ----------------------------------------------------------------------------------------


def test_the_crowd_rle_masks_of_a_cvat_file_are_imported_as_instances_and_the_summary_says_so(folder, tmp_path):
    masks = [disc_mask(20, 20, 10), disc_mask(60, 40, 8)]
    report, stored, _ = _import(folder, _cvat_file(tmp_path / "instances_default.json", masks))
    assert report.issues == () and [a.rle.to_mask().sum() for a in stored] == [m.sum() for m in masks]
    assert any("CVAT" in note for note in report.notes) and any("2 crowd" in note for note in report.notes)


def test_crowd_as_instances_imports_the_crowd_masks_of_a_plain_coco_file(folder, tmp_path):
    mask = disc_mask(20, 20, 10)
    annotation = coco_annotation(1, 1, iscrowd=1, segmentation=Rle.from_mask(mask).to_coco())
    path = write_coco_file(tmp_path / "in.json", [IMAGE_A], [annotation])
    report, stored, _ = _import(folder, path, crowd_as_instances=True)
    assert report.issues == () and np.array_equal(stored[0].rle.to_mask(), mask)


def test_the_crowd_regions_of_a_plain_coco_file_are_reported_with_the_flag_that_imports_them(folder, tmp_path):
    annotation = coco_annotation(1, 1, iscrowd=1, segmentation=Rle.from_mask(disc_mask(20, 20, 10)).to_coco())
    report, stored, _ = _import(folder, write_coco_file(tmp_path / "in.json", [IMAGE_A], [annotation]))
    assert "--crowd-as-instances" in report.issues[0].reason and stored == []


def test_a_crowd_polygon_is_reported_as_no_rle_mask_even_with_crowd_as_instances(folder, tmp_path):
    annotation = coco_annotation(1, 1, iscrowd=1, segmentation=[[30, 10, 50, 10, 50, 20, 30, 20]])
    path = write_coco_file(tmp_path / "in.json", [IMAGE_A], [annotation])
    report, stored, _ = _import(folder, path, crowd_as_instances=True)
    assert "without an RLE mask" in report.issues[0].reason and stored == []


def test_a_cvat_file_round_trips_its_masks_through_export_at_iou_0999(folder, tmp_path):
    masks = [disc_mask(20, 20, 10), disc_mask(60, 40, 8) & ~disc_mask(60, 40, 3)]
    with ProjectStore.for_folder(folder) as store:
        import_coco(store, _cvat_file(tmp_path / "instances_default.json", masks))
        export_coco(store, tmp_path / "out.json", segmentation="polygon")
    exported = json.loads((tmp_path / "out.json").read_text())["annotations"]
    for mask, annotation in zip(masks, exported, strict=True):
        segmentation = annotation["segmentation"]  # polygons, or RLE for the ring (a hole)
        if isinstance(segmentation, list):
            segmentation = coco_mask.merge(coco_mask.frPyObjects(segmentation, 60, 80))
        truth = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert coco_mask.iou([segmentation], [truth], [0])[0][0] >= 0.999


# ----- files that are not instances, and what instances carry ----------------------------------------------------


@pytest.mark.parametrize(
    "annotations, kind",
    [
        ([{"id": 1, "image_id": 1, "caption": "A red square."}], "captions file"),
        ([{"id": 1, "image_id": 1, "category_id": 7}], "image-labels file"),
        (
            [{"image_id": 1, "file_name": "a.png", "segments_info": [{"id": 5, "category_id": 7, "iscrowd": 0,
              "bbox": [0, 0, 4, 4], "area": 16}]}],
            "panoptic file",
        ),
    ],
    ids=["captions", "image-labels", "panoptic"],
)  # fmt: skip
def test_a_file_that_holds_no_instances_is_named_by_its_kind_in_one_line(folder, tmp_path, annotations, kind):
    path = write_coco_file(tmp_path / "in.json", [IMAGE_A], annotations)
    with pytest.raises(CocoFormatError, match=kind) as err:
        _import(folder, path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_keypoints_and_cvat_attributes_are_kept_in_extra(folder, tmp_path):
    annotation = coco_annotation(1, 1, keypoints=[5, 6, 2, 0, 0, 0], num_keypoints=1, attributes={"occluded": True})
    report, stored, _ = _import(folder, write_coco_file(tmp_path / "in.json", [IMAGE_A], [annotation]))
    expected = {"keypoints": [5, 6, 2, 0, 0, 0], "num_keypoints": 1, "attributes": {"occluded": True}}
    assert report.issues == () and dict(stored[0].extra) == expected


def test_only_the_categories_an_imported_annotation_uses_are_added(folder, tmp_path):
    categories = [{"id": 7, "name": "cup"}, {"id": 8, "name": "plate"}, {"id": 9, "name": "fork"}]
    annotations = [coco_annotation(1, 1), coco_annotation(2, 99, category_id=9)]
    path = write_coco_file(tmp_path / "in.json", [IMAGE_A], annotations, categories)
    report, _, stored = _import(folder, path)
    assert [c.name for c in stored] == ["cup"] and report.categories_added == 1


# ----- EXIF ------------------------------------------------------------------------------------------------------


def test_an_exif_rotated_image_listed_at_its_stored_size_is_imported_in_the_displayed_frame(tmp_path):
    root = tmp_path / "exif"
    root.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 80 x 60, displayed 60 x 80
    Image.new("RGB", (80, 60)).save(root / "o6.jpg", exif=exif.tobytes())
    image = {"id": 1, "file_name": "o6.jpg", "width": 80, "height": 60}  # what CVAT's Datumaro writes
    annotation = coco_annotation(1, 1, bbox=[10, 50, 20, 25])  # below y=60: only inside the displayed 60 x 80 frame
    report, stored, _ = _import(root, write_coco_file(tmp_path / "in.json", [image], [annotation]))
    assert report.issues == () and stored[0].box_xyxy == (10.0, 50.0, 30.0, 75.0)
    assert any("EXIF" in note for note in report.notes)


# ----- labelme / X-AnyLabeling -----------------------------------------------------------------------------------


def _labelme_file(path, image_path, shapes, flags=None, size=(80, 60)):
    """A labelme 5 file (X-AnyLabeling writes the same keys): shapes, imagePath relative to the file, sizes, flags."""
    data = {
        "version": "5.4.1",
        "flags": flags or {},
        "shapes": [
            {"label": label, "points": points, "group_id": None, "description": "", "shape_type": kind,
             "flags": shape_flags, "mask": None}
            for label, kind, points, shape_flags in shapes
        ],
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": size[1],
        "imageWidth": size[0],
    }  # fmt: skip
    path.write_text(json.dumps(data))
    return path


def _import_any(folder, path):
    with ProjectStore.for_folder(folder) as store:
        report = import_annotations(store, path)
        return report, store.annotations(), store.categories()


def test_a_labelme_file_beside_its_image_imports_polygons_rectangles_and_circles(folder):
    shapes = [
        ("cup", "polygon", [[30, 10], [50, 10], [50, 20], [30, 20]], {}),
        ("plate", "rectangle", [[1, 2], [11, 12]], {}),
        ("cup", "circle", [[20, 20], [30, 20]], {}),
    ]
    report, stored, categories = _import_any(folder, _labelme_file(folder / "a.json", "a.png", shapes))
    square = np.zeros((60, 80), dtype=bool)
    square[10:20, 30:50] = True
    assert report.issues == () and [c.name for c in categories] == ["cup", "plate"]
    assert np.array_equal(stored[0].rle.to_mask(), square)
    assert stored[1].rle is None and stored[1].box_xyxy == (1.0, 2.0, 11.0, 12.0)
    assert mask_iou(stored[2].rle.to_mask(), disc_mask(19.5, 19.5, 10)) > 0.95


def test_a_folder_of_labelme_files_imports_each_into_its_image_keeping_the_flags(folder, tmp_path):
    work = tmp_path / "labels"
    work.mkdir()
    _labelme_file(work / "a.json", "../images/a.png", [("cup", "rectangle", [[1, 2], [11, 12]], {"hidden": True})])
    shapes = [("cup", "rectangle", [[1, 2], [5, 6]], {})]
    _labelme_file(work / "b.json", "../images/b.png", shapes, flags={"blurry": True}, size=(64, 48))
    report, stored, _ = _import_any(folder, work)
    assert report.issues == () and report.annotations_imported == 2
    assert [dict(a.extra) for a in stored] == [{"flags": {"hidden": True}}, {"image_flags": {"blurry": True}}]


def test_an_x_anylabeling_file_from_windows_imports_its_four_point_rectangle_score_and_difficult(folder, tmp_path):
    work = tmp_path / "labels"
    work.mkdir()
    data = {
        "version": "2.4.4", "flags": {}, "imagePath": "..\\images\\a.png", "imageData": None,
        "imageHeight": 60, "imageWidth": 80,
        "shapes": [
            {"kie_linking": [], "label": "cup", "score": 0.87, "points": [[1, 2], [11, 2], [11, 12], [1, 12]],
             "group_id": None, "description": "", "difficult": True, "shape_type": "rectangle", "flags": {},
             "attributes": {}}
        ],
    }  # fmt: skip
    (work / "a.json").write_text(json.dumps(data))
    report, stored, _ = _import_any(folder, work / "a.json")
    assert report.issues == () and stored[0].box_xyxy == (1.0, 2.0, 11.0, 12.0)
    assert stored[0].score == 0.87 and dict(stored[0].extra) == {"difficult": True}


def test_labelme_points_and_lines_are_reported_by_file_and_shape_not_dropped_silently(folder):
    shapes = [("cup", "point", [[5, 5]], {}), ("cup", "linestrip", [[1, 1], [9, 9], [9, 1]], {})]
    report, stored, _ = _import_any(folder, _labelme_file(folder / "a.json", "a.png", shapes))
    assert [i.coco_id for i in report.issues] == ["a.json shape 0", "a.json shape 1"] and stored == []
    assert "'point' with 1 point(s) is not a region" in report.issues[0].reason


def test_annotator_import_of_a_folder_without_labelme_files_exits_2_with_one_line(
    folder, tmp_path, capsys, monkeypatch
):
    (tmp_path / "empty").mkdir()
    code, out = _run_import(capsys, monkeypatch, tmp_path / "empty", "--folder", folder)
    assert_one_line_error(code, out.err, "holds no labelme JSON file")


# ----- the app ---------------------------------------------------------------------------------------------------


def test_file_import_imports_a_cvat_file_on_a_worker_and_shows_the_summary(
    qtbot, make_window, app_settings, folder, tmp_path
):
    window = make_window(app_settings)
    open_folder(qtbot, window, folder)
    window.choose_import()
    dialog = window.import_flow.dialog
    dialog.path.setText(str(_cvat_file(tmp_path / "instances_default.json", [disc_mask(20, 20, 10)])))
    with qtbot.waitSignal(window.folder_opened, timeout=STEP_TIMEOUT_MS):
        with qtbot.waitSignal(window.import_flow.finished, timeout=STEP_TIMEOUT_MS) as done:
            dialog.accept()
    assert done.args[0].annotations_imported == 1 and "crowd" in window.import_flow.summary.text()
    assert [a.source for a in window.store.annotations()] == ["imported"]


def test_file_import_of_a_captions_file_shows_one_line_in_the_message_bar(
    qtbot, make_window, app_settings, folder, tmp_path
):
    window = make_window(app_settings)
    open_folder(qtbot, window, folder)
    window.choose_import()
    captions = [{"id": 1, "image_id": 1, "caption": "A red square."}]
    path = write_coco_file(tmp_path / "captions.json", [IMAGE_A], captions)
    window.import_flow.dialog.path.setText(str(path))
    with qtbot.waitSignal(window.import_flow.finished, timeout=STEP_TIMEOUT_MS) as done:
        window.import_flow.dialog.accept()
    assert done.args[0] is None and "captions file" in window.message_bar.text
