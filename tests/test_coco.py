"""COCO / RefCOCO export and COCO import: readable by pycocotools and torchvision, atomic, safe (issue 5)."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import annotator.project.coco as coco_module
from annotator.errors import CocoFormatError
from annotator.project.coco import export_coco, export_refcoco, import_coco
from annotator.project.geometry import Rle
from annotator.project.images import load_image
from annotator.project.store import ProjectStore
from tests.coco_fixtures import (  # noqa: F401 (folder and store are fixtures)
    coco_annotation,
    folder,
    mask_iou,
    quiet,
    store,
    write_coco_file,
)


def _export(store, path, **options) -> dict:
    export_coco(store, path, **options)
    return json.loads(path.read_text())


def _self_ap(path: Path, kind: str) -> float:
    truth = quiet(lambda: COCO(str(path)))
    detections = []
    for ann in truth.loadAnns(truth.getAnnIds()):
        detection = {"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"], "score": 1.0}
        if kind == "segm":
            detection["segmentation"] = truth.annToRLE(ann)
        detections.append(detection)
    evaluation = COCOeval(truth, quiet(lambda: truth.loadRes(detections)), kind)
    quiet(lambda: (evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()))
    return float(evaluation.stats[0])


# ----- export --------------------------------------------------------------------------------------------------


def test_the_export_loads_in_pycocotools_with_ids_from_one(store, tmp_path):
    path = tmp_path / "out.json"
    export_coco(store, path)
    coco = quiet(lambda: COCO(str(path)))
    assert sorted(coco.getImgIds()) == [1, 2, 3]  # a, b and the done c; d is still to do
    assert sorted(coco.getCatIds()) == [1, 2]
    assert sorted(coco.getAnnIds()) == [1, 2, 3, 4]  # the pending annotation 5 is left out
    assert coco.loadImgs(1)[0] == {"id": 1, "file_name": "a.png", "width": 80, "height": 60}


@pytest.mark.parametrize("segmentation", ["polygon", "rle"])
@pytest.mark.parametrize("kind", ["bbox", "segm"])
def test_cocoeval_of_the_export_against_itself_gives_ap_one(store, tmp_path, segmentation, kind):
    path = tmp_path / "out.json"
    export_coco(store, path, segmentation=segmentation)
    assert _self_ap(path, kind) == pytest.approx(1.0)


def test_torchvision_coco_detection_reads_the_export(store, folder, tmp_path):
    from torchvision.datasets import CocoDetection

    path = tmp_path / "out.json"
    export_coco(store, path)
    dataset = CocoDetection(str(folder), str(path))
    image, target = quiet(lambda: dataset[0])
    assert len(dataset) == 3 and image.size == (80, 60)
    assert sorted(t["id"] for t in target) == [1, 2, 3]


def test_polygons_are_written_where_faithful_and_rle_for_holes(store, tmp_path):
    annotations = {a["id"]: a for a in _export(store, tmp_path / "out.json")["annotations"]}
    assert isinstance(annotations[1]["segmentation"], list)  # the disc
    assert set(annotations[2]["segmentation"]) == {"size", "counts"}  # the ring keeps its hole as RLE
    assert annotations[3]["segmentation"] == [[5.0, 40.0, 30.0, 40.0, 30.0, 58.0, 5.0, 58.0]]
    assert annotations[3]["box_only"] and not annotations[1]["box_only"]
    assert len(annotations[4]["segmentation"]) == 2  # two parts


def test_rle_export_writes_every_segmentation_as_compressed_rle(store, tmp_path):
    for ann in _export(store, tmp_path / "out.json", segmentation="rle")["annotations"]:
        assert isinstance(ann["segmentation"]["counts"], str) and ann["iscrowd"] == 0


def test_area_is_the_rasterised_area_and_bbox_the_store_box(store, tmp_path):
    path = tmp_path / "out.json"
    export_coco(store, path)
    coco = quiet(lambda: COCO(str(path)))
    for ann in coco.loadAnns(coco.getAnnIds()):
        assert ann["area"] == int(coco.annToMask(ann).sum())
        x0, y0, x1, y1 = store.annotation(ann["id"]).box_xyxy
        assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
    assert coco.anns[3]["area"] == 25 * 18  # the box-only rectangle


def test_expression_score_source_and_status_are_kept(store, tmp_path):
    ann = _export(store, tmp_path / "out.json")["annotations"][0]
    kept = (ann["expression"], ann["score"], ann["source"], ann["status"])
    assert kept == ("the round cup", 0.9, "manual", "accepted")


def test_an_unscored_annotation_has_no_score_key_and_no_field_is_null(store, tmp_path):
    drawn = store.add_annotation(store.image_by_path("d.png").id, 1, (2, 2, 12, 12), expression="drawn by hand")
    store.accept(drawn.id)
    annotations = {a["id"]: a for a in _export(store, tmp_path / "out.json")["annotations"]}
    assert "score" not in annotations[drawn.id] and annotations[1]["score"] == 0.9
    assert [key for ann in annotations.values() for key, value in ann.items() if value is None] == []


def test_ids_are_stable_across_exports(store, tmp_path):
    first = _export(store, tmp_path / "one.json")
    store.add_annotation(store.image_by_path("d.png").id, 1, (0, 0, 4, 4))
    second = _export(store, tmp_path / "two.json")
    assert first["annotations"] == second["annotations"] and first["images"] == second["images"]


def test_other_statuses_are_exported_on_request(store, tmp_path):
    exported = _export(store, tmp_path / "out.json", statuses=("pending", "accepted"))
    assert sorted(a["id"] for a in exported["annotations"]) == [1, 2, 3, 4, 5]


_KILLED_EXPORT = """
import os, sys
import annotator.project.atomic_file as atomic_file
from annotator.project.coco import export_coco
from annotator.project.store import ProjectStore

def stuck(fd):
    print("written, not yet renamed", flush=True)
    sys.stdin.read()

atomic_file.os.fsync = stuck
export_coco(ProjectStore.for_folder(sys.argv[1]), sys.argv[2], statuses=("pending", "accepted"))
"""


def test_an_export_killed_mid_write_leaves_the_previous_file_intact(store, folder, tmp_path):
    path = tmp_path / "out.json"
    export_coco(store, path)
    before = path.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_EXPORT, str(folder), str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout.readline().strip() == "written, not yet renamed"
    assert any(tmp_path.glob(".out.json.*.tmp"))  # the new export exists only under its temporary name
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdin.close()
    child.stdout.close()
    assert path.read_bytes() == before
    assert len(json.loads(before)["annotations"]) == 4


def test_exif_rotated_images_export_their_rotated_size_and_boxes(tmp_path):
    root = tmp_path / "exif"
    root.mkdir()
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[...] = (0, 0, 255)
    pixels[:16, :16] = (255, 0, 0)  # red in the stored top-left corner
    for orientation in (6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(pixels).save(root / f"o{orientation}.jpg", quality=95, subsampling=0, exif=exif.tobytes())
    with ProjectStore.for_folder(root) as store:
        store.sync_folder()
        category = store.add_category("red")
        for record in store.images():
            rgb = load_image(store.image_path(record.id))
            red = (rgb[..., 0] > 128) & (rgb[..., 2] < 128)
            store.add_annotation(record.id, category.id, rle=Rle.from_mask(red), status="accepted")
        exported = _export(store, tmp_path / "out.json")
    sizes = [(i["file_name"], i["width"], i["height"]) for i in exported["images"]]
    assert sizes == [("o6.jpg", 32, 64), ("o8.jpg", 32, 64)]
    # Orientation 6 shows the stored top-left corner at the top right, 8 at the bottom left.
    assert [a["bbox"] for a in exported["annotations"]] == [[16.0, 0.0, 16.0, 16.0], [0.0, 48.0, 16.0, 16.0]]


# ----- RefCOCO-style export ------------------------------------------------------------------------------------


def test_every_ref_points_at_an_exported_annotation_and_splits_are_disjoint_by_image(store, tmp_path):
    result = export_refcoco(store, tmp_path / "refcoco", split_fractions=(0.5, 0.25, 0.25))
    instances = json.loads(result.instances_path.read_text())
    refs = json.loads(result.refs_path.read_text())
    annotations = {a["id"]: a for a in instances["annotations"]}
    assert len(refs) == result.refs == 4
    for ref in refs:
        ann = annotations[ref["ann_id"]]
        assert (ref["image_id"], ref["category_id"]) == (ann["image_id"], ann["category_id"])
        assert ref["sentences"][0]["sent"] == ann["expression"]
    split_of_image = {}
    for ref in refs:
        assert split_of_image.setdefault(ref["image_id"], ref["split"]) == ref["split"]


def test_refs_carry_lower_cased_tokens_and_are_deterministic(store, tmp_path):
    first = export_refcoco(store, tmp_path / "one")
    second = export_refcoco(store, tmp_path / "two")
    refs = json.loads(first.refs_path.read_text())
    assert refs == json.loads(second.refs_path.read_text())
    assert refs[0]["sentences"][0]["tokens"] == ["the", "round", "cup"]


# ----- import --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("segmentation", ["polygon", "rle"])
def test_import_of_an_export_reproduces_the_annotations(store, folder, tmp_path, segmentation):
    path = tmp_path / "out.json"
    export_coco(store, path, segmentation=segmentation)
    with ProjectStore.open(tmp_path / "fresh.sqlite", image_root=folder) as fresh:
        report = import_coco(fresh, path)
        assert report.issues == () and report.annotations_imported == 4
        names = {c.id: c.name for c in store.categories()}
        fresh_names = {c.id: c.name for c in fresh.categories()}
        paths = {i.id: i.path for i in store.images()}
        fresh_paths = {i.id: i.path for i in fresh.images()}
        originals = store.annotations(statuses=("accepted",))
        imported = fresh.annotations()
    assert len(imported) == len(originals)
    for original, copy in zip(originals, imported):
        assert copy.box_xyxy == original.box_xyxy
        assert fresh_paths[copy.image_id] == paths[original.image_id]
        assert fresh_names[copy.category_id] == names[original.category_id]
        assert (copy.expression, copy.score, copy.status) == (original.expression, original.score, "accepted")
        assert copy.source == "imported"
        if original.rle is None:
            assert copy.rle is None
        else:
            assert mask_iou(copy.rle.to_mask(), original.rle.to_mask()) >= 0.99


def test_import_rejects_file_names_that_escape_the_folder_and_imports_the_rest(folder, tmp_path):
    path = write_coco_file(
        tmp_path / "in.json",
        images=[
            {"id": 1, "file_name": "../../etc/passwd", "width": 10, "height": 10},
            {"id": 2, "file_name": "/etc/passwd", "width": 10, "height": 10},
            {"id": 3, "file_name": "C:\\Windows\\win.ini", "width": 10, "height": 10},
            {"id": 4, "file_name": "a.png", "width": 80, "height": 60},
        ],
        annotations=[coco_annotation(10, 1), coco_annotation(11, 2), coco_annotation(12, 4)],
    )
    with ProjectStore.for_folder(folder) as store:
        report = import_coco(store, path)
        assert [a.box_xyxy for a in store.annotations()] == [(1.0, 2.0, 11.0, 12.0)]
    rejected = {(i.kind, i.coco_id) for i in report.issues}
    assert {("image", 1), ("image", 2), ("image", 3), ("annotation", 10), ("annotation", 11)} == rejected
    assert report.annotations_imported == 1 and report.images_added == 1


def test_a_symlink_out_of_the_folder_is_rejected_on_import(folder, tmp_path):
    Image.new("RGB", (10, 10)).save(tmp_path / "outside.png")
    (folder / "link.png").symlink_to(tmp_path / "outside.png")
    path = write_coco_file(tmp_path / "in.json", [{"id": 1, "file_name": "link.png", "width": 10, "height": 10}], [])
    with ProjectStore.for_folder(folder) as store:
        report = import_coco(store, path)
    assert [(i.kind, i.coco_id) for i in report.issues] == [("image", 1)]
    assert "out of the image folder" in report.issues[0].reason


def test_malformed_annotations_are_reported_by_id(folder, tmp_path):
    image = [{"id": 1, "file_name": "a.png", "width": 80, "height": 60}]
    annotations = [
        coco_annotation(1, 1),
        coco_annotation(2, 1, bbox=[1, 2, "x", 4]),
        coco_annotation(3, 1, segmentation=[[1, 2, 3]]),
        coco_annotation(4, 99),
        coco_annotation(5, 1, category_id=8),
        coco_annotation(6, 1, iscrowd=1),
        coco_annotation(7, 1, segmentation={"size": [60, 80], "counts": "garbage!"}),
        coco_annotation(1, 1),
    ]
    with ProjectStore.for_folder(folder) as store:
        report = import_coco(store, write_coco_file(tmp_path / "in.json", image, annotations))
    reasons = {i.coco_id: i.reason for i in report.issues}
    assert report.annotations_imported == 1
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7]  # 1 is the duplicate
    assert "duplicate" in reasons[1] and "finite number" in reasons[2] and "even number" in reasons[3]
    assert "image 99" in reasons[4] and "category 8" in reasons[5] and "crowd" in reasons[6]


def test_import_reads_polygons_rle_string_rle_list_and_box_only(folder, tmp_path):
    square = np.zeros((60, 80), dtype=bool)
    square[10:20, 30:50] = True  # rows 10..19, columns 30..49
    string_rle = Rle.from_mask(square).to_coco()
    # Column-major runs of the same square: 30 empty columns, then per column 10 off, 10 on, 40 off.
    list_rle = {"size": [60, 80], "counts": [30 * 60 + 10] + [10, 50] * 19 + [10, 40 + 30 * 60]}
    annotations = [
        coco_annotation(1, 1, segmentation=[[30, 10, 50, 10, 50, 20, 30, 20]]),
        coco_annotation(2, 1, segmentation=string_rle),
        coco_annotation(3, 1, segmentation=list_rle),
        coco_annotation(4, 1),
    ]
    image = [{"id": 1, "file_name": "a.png", "width": 80, "height": 60}]
    with ProjectStore.for_folder(folder) as store:
        report = import_coco(store, write_coco_file(tmp_path / "in.json", image, annotations))
        masks = [None if a.rle is None else a.rle.to_mask() for a in store.annotations()]
    assert report.issues == ()
    assert all(np.array_equal(mask, square) for mask in masks[:3]) and masks[3] is None


def test_an_image_whose_size_differs_from_the_file_is_rejected(folder, tmp_path):
    image = [{"id": 1, "file_name": "a.png", "width": 60, "height": 80}]
    with ProjectStore.for_folder(folder) as store:
        report = import_coco(store, write_coco_file(tmp_path / "in.json", image, [coco_annotation(1, 1)]))
    assert [i.kind for i in report.issues] == ["image", "annotation"]
    assert "60x80 in the file but 80x60 on disk" in report.issues[0].reason


def test_an_image_that_is_not_in_the_folder_is_reported_by_id(folder, tmp_path):
    image = [{"id": 5, "file_name": "nowhere.png", "width": 8, "height": 8}]
    with ProjectStore.for_folder(folder) as store:
        report = import_coco(store, write_coco_file(tmp_path / "in.json", image, []))
    assert [(i.kind, i.coco_id) for i in report.issues] == [("image", 5)]


@pytest.mark.parametrize(
    "content, reason",
    [("{not json", "not valid JSON"), ("[]", "JSON object"), ('{"annotations": []}', "no 'images' list")],
)
def test_a_broken_file_raises_coco_format_error(folder, tmp_path, content, reason):
    path = tmp_path / "in.json"
    path.write_text(content)
    with ProjectStore.for_folder(folder) as store, pytest.raises(CocoFormatError, match=reason):
        import_coco(store, path)


def test_the_file_is_parsed_once(store, folder, tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    export_coco(store, path)
    calls = []
    real_load = json.load
    monkeypatch.setattr(coco_module.json, "load", lambda f: calls.append(1) or real_load(f))
    with ProjectStore.open(tmp_path / "fresh.sqlite", image_root=folder) as fresh:
        import_coco(fresh, path)
    assert calls == [1]
