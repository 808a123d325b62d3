"""COCO dataset folder, YOLO and Pascal VOC exports, read back by readers written here from each format's
layout, and `annotator export` (issue 21, items 2 and 3)."""

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

import annotator.project.folder_export as folder_export
from annotator import cli
from annotator.errors import ExportError
from annotator.project.coco_folder import export_coco_folder
from annotator.project.store import ProjectStore
from annotator.project.voc import export_voc
from annotator.project.yolo import export_yolo
from annotator.ui.export_dialog import ExportDialog, default_export_path
from tests.coco_fixtures import (  # noqa: F401 (folder and store are fixtures)
    folder,
    mask_iou,
    quiet,
    store,
)
from tests.ui_fixtures import (  # noqa: F401 (fixtures are found by name)
    STEP_TIMEOUT_MS,
    app_settings,
    isolated_qsettings,
    make_window,
    open_folder,
    planted_model_path,
    seed_store,
    write_scenes,
)

_HOLE_FREE = (1, 4)  # the disc and the two-part mask of the `store` fixture; 2 is a ring, 3 box only


def _accepted(store) -> dict[int, object]:
    return {ann.id: ann for ann in store.annotations(statuses=("accepted",))}


def _rasterise(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Polygons in pixels to a mask, as COCO readers rasterise them (pycocotools)."""
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))).astype(bool)


# ----- a reader of each format ------------------------------------------------------------------------------------


def _read_yolo(root: Path) -> tuple[dict, dict[str, list[tuple[int, list[float]]]]]:
    """data.yaml and, per label file (relative to labels/<split>/, without .txt), (class, values) per line."""
    data = yaml.safe_load((root / "data.yaml").read_text())
    split = Path(data["train"]).name
    labels = {}
    for path in sorted((root / "labels" / split).rglob("*.txt")):
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        stem = path.relative_to(root / "labels" / split).with_suffix("").as_posix()
        labels[stem] = [(int(row[0]), [float(v) for v in row[1:]]) for row in rows]
    return data, labels


def _read_voc(root: Path, stem: str) -> tuple[tuple[int, int], list[tuple[str, tuple[int, int, int, int]]]]:
    """(width, height) and (name, (xmin, ymin, xmax, ymax)) per object of Annotations/<stem>.xml."""
    tree = ET.parse(root / "Annotations" / f"{stem}.xml").getroot()
    size = (int(tree.findtext("size/width")), int(tree.findtext("size/height")))
    objects = []
    for obj in tree.findall("object"):
        box = obj.find("bndbox")
        corners = tuple(int(box.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax"))
        objects.append((obj.findtext("name"), corners))
    return size, objects


def _labelmap_names(root: Path) -> list[str]:
    lines = [line for line in (root / "labelmap.txt").read_text().splitlines() if not line.startswith("#")]
    return [line.split(":")[0] for line in lines]


# ----- COCO dataset folder ----------------------------------------------------------------------------------------


def test_a_coco_folder_has_the_datumaro_layout_and_loads_in_pycocotools(store, tmp_path):
    root = tmp_path / "dataset"
    report = export_coco_folder(store, root)
    coco = quiet(lambda: COCO(str(root / "annotations" / "instances_default.json")))
    for image in coco.loadImgs(coco.getImgIds()):
        with Image.open(root / "images" / "default" / image["file_name"]) as pil:
            assert pil.size == (image["width"], image["height"])
    assert sorted(coco.getAnnIds()) == [1, 2, 3, 4] and report.image_files == 3


def test_a_coco_folder_links_the_images_by_default_and_copies_on_request(store, folder, tmp_path):
    export_coco_folder(store, tmp_path / "linked")
    export_coco_folder(store, tmp_path / "copied", images="copy")
    source = os.stat(folder / "a.png")
    assert os.stat(tmp_path / "linked" / "images" / "default" / "a.png").st_ino == source.st_ino
    copied = tmp_path / "copied" / "images" / "default" / "a.png"
    assert copied.stat().st_ino != source.st_ino and copied.read_bytes() == (folder / "a.png").read_bytes()


def test_a_coco_folder_without_images_has_only_the_annotations(store, tmp_path):
    export_coco_folder(store, tmp_path / "dataset", images="none", subset="train")
    assert sorted(p.name for p in (tmp_path / "dataset").iterdir()) == [".annotator-export", "annotations"]
    assert (tmp_path / "dataset" / "annotations" / "instances_train.json").is_file()


def test_a_folder_export_that_fails_midway_leaves_the_earlier_export_and_no_temporary_folder(
    store, tmp_path, monkeypatch
):
    root = tmp_path / "dataset"
    export_coco_folder(store, root)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    written = (root / "annotations" / "instances_default.json").read_bytes()
    calls = []

    def full_disk(source, destination, mode):
        calls.append(destination)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return folder_export.place_image(source, destination, mode)

    monkeypatch.setattr("annotator.project.coco_folder.place_image", full_disk)
    store.add_annotation(store.image_by_path("d.png").id, 1, (0, 0, 4, 4), status="accepted")
    with pytest.raises(ExportError, match=r"cannot write COCO dataset folder .*dataset: No space left.*safe in"):
        export_coco_folder(store, root)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert (root / "annotations" / "instances_default.json").read_bytes() == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset", "images"]


def test_a_folder_export_refuses_to_replace_a_folder_of_other_files(store, tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an annotator export; choose a new or empty folder"):
        export_yolo(store, root)
    assert [p.name for p in root.iterdir()] == ["notes.txt"]


def test_a_folder_export_under_a_file_says_the_file_is_not_a_folder(store, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match=r"notes.txt is not a folder"):
        export_voc(store, tmp_path / "notes.txt" / "voc")


# ----- YOLO -------------------------------------------------------------------------------------------------------


def test_yolo_data_yaml_names_the_categories_by_id_in_the_store_order(store, tmp_path):
    store.add_category("apple")  # made last: last class, though first by name
    data, _ = _read_yolo(_yolo(store, tmp_path))
    assert data["names"] == {0: "cup", 1: "plate", 2: "apple"}
    assert Path(data["path"]) == (tmp_path / "yolo").resolve()
    assert (data["train"], data["val"]) == ("images/train", "images/train")


def _yolo(store, tmp_path, **options) -> Path:
    export_yolo(store, tmp_path / "yolo", **options)
    return tmp_path / "yolo"


def test_yolo_detection_labels_give_back_the_boxes_within_a_pixel(store, tmp_path):
    _, labels = _read_yolo(_yolo(store, tmp_path))
    sizes = {"a": (80, 60), "b": (64, 48)}
    annotations = _accepted(store)
    expected = {"a": [annotations[i] for i in (1, 2, 3)], "b": [annotations[4]]}
    for stem, anns in expected.items():
        width, height = sizes[stem]
        for (cls, (cx, cy, w, h)), ann in zip(labels[stem], anns):
            box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            assert cls == ann.category_id - 1
            assert np.allclose(box, ann.box_xyxy, atol=1.0)
    assert labels["c"] == []  # a done image without objects: a negative


def test_yolo_segmentation_labels_give_back_the_masks(store, tmp_path):
    _, labels = _read_yolo(_yolo(store, tmp_path, task="segment"))
    annotations = _accepted(store)
    disc = _rasterise([[v * s for v, s in zip(labels["a"][0][1], [80, 60] * 999)]], 60, 80)
    parts = [[v * s for v, s in zip(values, [64, 48] * 999)] for _, values in labels["b"]]
    assert mask_iou(disc, annotations[1].rle.to_mask()) >= 0.99
    assert len(parts) == 2 and mask_iou(_rasterise(parts, 48, 64), annotations[4].rle.to_mask()) >= 0.99


def test_yolo_images_lie_where_ultralytics_looks_for_them_beside_their_labels(store, tmp_path):
    root = _yolo(store, tmp_path)
    images = sorted(p.stem for p in (root / "images" / "train").iterdir())
    labels = sorted(p.stem for p in (root / "labels" / "train").iterdir())
    assert images == labels == ["a", "b", "c"]


def test_two_images_with_one_stem_get_two_label_files(folder, tmp_path):
    Image.new("RGB", (10, 10)).save(folder / "a.jpg")
    with ProjectStore.open(tmp_path / "other.sqlite", image_root=folder) as other:
        other.sync_folder()
        cup = other.add_category("cup")
        for name in ("a.png", "a.jpg"):
            other.add_annotation(other.image_by_path(name).id, cup.id, (1, 1, 5, 5), status="accepted")
        export_yolo(other, tmp_path / "yolo")
    labels = sorted(p.stem for p in (tmp_path / "yolo" / "labels" / "train").iterdir())
    images = sorted(p.stem for p in (tmp_path / "yolo" / "images" / "train").iterdir())
    assert labels == images and len(labels) == 2 and "a" in labels


# ----- Pascal VOC -------------------------------------------------------------------------------------------------


def test_voc_boxes_are_one_based_pixel_integers_within_a_pixel_of_the_store(store, tmp_path):
    export_voc(store, tmp_path / "voc")
    annotations = _accepted(store)
    size, objects = _read_voc(tmp_path / "voc", "a")
    assert size == (80, 60)
    for (name, (xmin, ymin, xmax, ymax)), ann in zip(objects, [annotations[i] for i in (1, 2, 3)]):
        assert name == store.category(ann.category_id).name
        assert np.allclose((xmin - 1, ymin - 1, xmax, ymax), ann.box_xyxy, atol=1.0)


def test_voc_object_and_class_pngs_give_back_the_masks(store, tmp_path):
    root = tmp_path / "voc"
    export_voc(store, root)
    annotations = _accepted(store)
    names = _labelmap_names(root)
    for stem, ids in (("a", (1, 2)), ("b", (4,))):
        objects = np.array(Image.open(root / "SegmentationObject" / f"{stem}.png"))
        classes = np.array(Image.open(root / "SegmentationClass" / f"{stem}.png"))
        for instance, ann_id in enumerate(ids, start=1):
            mask = annotations[ann_id].rle.to_mask()
            assert mask_iou(objects == instance, mask) >= 0.99
            assert names[int(np.median(classes[mask]))] == store.category(annotations[ann_id].category_id).name
    assert Image.open(root / "SegmentationObject" / "a.png").mode == "P"


def test_voc_image_sets_list_every_image_and_the_segmented_ones(store, tmp_path):
    root = tmp_path / "voc"
    export_voc(store, root)
    assert (root / "ImageSets/Main/default.txt").read_text().split() == ["a", "b", "c"]
    assert (root / "ImageSets/Segmentation/default.txt").read_text().split() == ["a", "b"]
    assert _labelmap_names(root) == ["background", "cup", "plate"]
    assert not (root / "SegmentationObject" / "c.png").exists() and (root / "JPEGImages" / "c.png").is_file()


# ----- annotator export ---------------------------------------------------------------------------------------------


@pytest.fixture
def command():
    """`annotator export` dispatched by the CLI as every other command."""
    return cli.main


def test_annotator_export_writes_coco_to_the_given_file_by_default(command, store, folder, tmp_path, capsys):
    assert command(["export", str(folder), "--out", str(tmp_path / "out.json")]) == 0
    exported = json.loads((tmp_path / "out.json").read_text())
    assert len(exported["annotations"]) == 4 and "4 annotation(s) on 3 image(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "export_format, marker", [("coco-folder", "annotations"), ("yolo", "data.yaml"), ("voc", "labelmap.txt")]
)
def test_annotator_export_writes_each_folder_format(command, store, folder, tmp_path, export_format, marker):
    assert command(["export", str(folder), "--format", export_format, "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / marker).exists()


def test_annotator_export_reads_the_statuses_asked_for(command, store, folder, tmp_path):
    args = ["export", str(folder), "--out", str(tmp_path / "out.json"), "--statuses", "accepted,pending"]
    assert command(args) == 0
    assert len(json.loads((tmp_path / "out.json").read_text())["annotations"]) == 5


def test_annotator_export_reads_the_store_given_with_store(command, store, folder, tmp_path):
    with ProjectStore.open(tmp_path / "other.sqlite", image_root=folder) as other:
        other.sync_folder()
        lid = other.add_category("lid")
        other.add_annotation(other.image_by_path("d.png").id, lid.id, (1, 1, 9, 9), status="accepted")
    args = ["export", str(folder), "--store", str(tmp_path / "other.sqlite"), "--out", str(tmp_path / "out.json")]
    assert command(args) == 0
    exported = json.loads((tmp_path / "out.json").read_text())
    assert [c["name"] for c in exported["categories"]] == ["lid"] and len(exported["annotations"]) == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--statuses", "done"], "unknown status 'done'; the statuses are pending, accepted, rejected"),
        (["--format", "csv"], "invalid choice: 'csv'"),
    ],
)
def test_annotator_export_refuses_bad_options_in_one_line(command, store, folder, tmp_path, capsys, extra, message):
    assert command(["export", str(folder), "--out", str(tmp_path / "x"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_annotator_export_into_a_folder_of_other_files_is_one_line(command, store, folder, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert command(["export", str(folder), "--format", "voc", "--out", str(tmp_path / "mine")]) == 2
    err = capsys.readouterr().err
    assert "not an annotator export" in err and "safe in the project store" in err and len(err.splitlines()) == 1


# ----- the app's export dialog --------------------------------------------------------------------------------------


def test_choosing_yolo_in_the_export_dialog_proposes_a_folder_and_asks_boxes_or_outlines(qtbot):
    dialog = ExportDialog("street")
    qtbot.addWidget(dialog)
    dialog.kind.setCurrentIndex(dialog.kind.findData("yolo"))
    dialog.task.setCurrentIndex(dialog.task.findData("segment"))
    choice = dialog.choice()
    assert (choice.kind, choice.task, choice.images) == ("yolo", "segment", "link")
    assert choice.path == default_export_path("yolo", "street") and choice.path.name == "street-yolo"


@pytest.mark.parametrize(
    "kind, label",
    [("coco-folder", "annotations/instances_default.json"), ("yolo", "data.yaml"), ("voc", "labelmap.txt")],
)
def test_the_app_exports_each_folder_format_chosen_in_its_dialog(
    qtbot, make_window, app_settings, tmp_path, kind, label
):
    images = tmp_path / "scenes"
    images.mkdir()
    write_scenes(images, [1])
    seed_store(images)
    window = make_window(app_settings)
    open_folder(qtbot, window, images)
    with qtbot.waitSignal(window.exported, timeout=STEP_TIMEOUT_MS) as exported:
        window.choose_export()
        dialog = window.export_flow.dialog
        dialog.kind.setCurrentIndex(dialog.kind.findData(kind))
        dialog.path.setText(str(tmp_path / "out"))
        dialog.accept()
    report = exported.args[0]
    assert (report.format, report.annotations, report.image_files) == (kind, 1, 1)
    assert (tmp_path / "out" / label).is_file()
