"""The REFER distribution on disk (issue 18): refs pickles read by a restricted unpickler, their JSON conversion,
expressions, boxes and masks from instances.json, the images folder; and the table beside the paper's figures."""

import json
import os
import pickle
import shlex
from collections import OrderedDict

import numpy as np
import pytest

from annotator.errors import CocoFormatError, ImageLoadError
from annotator.evaluation import SplitMetrics
from annotator.evaluation_files import refer_ground_truth
from annotator.project.geometry import Rle
from annotator.project.refer import SPLITS, images_folder, load_plain_pickle, load_refer
from annotator.reproduction import Reproduction, format_reproduction, paper_figures
from tests.refer_data import SPLIT_IMAGES, uncompressed_counts, write_refer_dataset


@pytest.fixture(scope="module")
def refer(tmp_path_factory):
    return write_refer_dataset(tmp_path_factory.mktemp("refer"))


class RunsAShellCommand:
    """Pickles as a call of os.system: loading it with pickle.loads runs the command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_refs_pickle_of_plain_dicts_loads(tmp_path):
    refs = [{"ref_id": 0, "ann_id": 7, "split": "val", "sentences": [{"sent": "the man", "sent_id": 3}], "w": 1.5}]
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps(refs, protocol=2))
    assert load_plain_pickle(path) == refs


def test_a_python_2_refs_pickle_of_byte_strings_loads_as_text(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(b"(lp0\n(dp1\nS'sent'\np2\nS'caf\\xc3\\xa9 on the left'\np3\nsS'ref_id'\np4\nI12\nsa.")
    assert load_plain_pickle(path) == [{"sent": "café on the left", "ref_id": 12}]


def test_a_pickle_that_calls_os_system_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran.txt"
    payload = pickle.dumps([{"ref_id": 0, "sentences": RunsAShellCommand(f"echo ran > {shlex.quote(str(marker))}")}])
    path = tmp_path / "refs(unc).p"
    path.write_bytes(payload)
    with pytest.raises(CocoFormatError) as refused:
        load_plain_pickle(path)
    assert str(path) in str(refused.value) and "system" in str(refused.value) and "\n" not in str(refused.value)
    assert not marker.exists()
    pickle.loads(payload)  # the same bytes through the standard unpickler do run the command
    assert marker.exists()


def test_a_pickle_naming_any_class_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([OrderedDict(ref_id=1)]))
    with pytest.raises(CocoFormatError, match=r"refs\(unc\)\.p: refused: it names collections\.OrderedDict"):
        load_plain_pickle(path)


def test_a_file_that_is_not_a_pickle_is_one_error_naming_it(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(b"\x80\x04not a pickle at all")
    with pytest.raises(CocoFormatError, match="not a readable pickle"):
        load_plain_pickle(path)


def test_all_five_splits_are_read_with_their_refs(refer):
    dataset = load_refer(refer.data_dir, "refcoco")
    assert dataset.split_by == "unc" and dataset.splits() == list(SPLITS)
    assert {split: len(dataset.split_refs(split)) for split in SPLITS} == SPLIT_IMAGES


def test_the_expressions_are_each_refs_sentences(refer):
    dataset = load_refer(refer.data_dir, "refcoco")
    truths = refer_ground_truth(dataset, dataset.split_refs("val"))
    written = [s["sent"] for ref in refer.refs if ref["split"] == "val" for s in ref["sentences"]]
    assert [t.expression for t in truths] == written
    assert all(t.split == "val" and t.image.startswith("COCO_train2014_") for t in truths)


def test_the_json_conversion_of_the_refs_reads_like_the_pickle(refer, tmp_path):
    converted = write_refer_dataset(tmp_path, refs_name="refs(unc).json")
    from_json = load_refer(converted.data_dir, "refcoco")
    from_pickle = load_refer(refer.data_dir, "refcoco")
    assert from_json.refs_path.name == "refs(unc).json" and from_json.refs == from_pickle.refs


def test_boxes_and_masks_come_from_instances_as_polygons_and_rle(refer):
    dataset = load_refer(refer.data_dir, "refcoco")
    instances = json.loads(dataset.instances_path.read_text(encoding="utf-8"))
    kinds = {a["id"]: type(a["segmentation"]).__name__ for a in instances["annotations"]}
    checked = set()
    for ref in dataset.refs:
        (truth, *_) = refer_ground_truth(dataset, [ref])
        target = refer.scenes[ref.image_id].target
        x0, y0, x1, y1 = target.box_xyxy
        mask = Rle.from_coco(truth.segmentation).to_mask()
        overlap = (mask & target.mask).sum() / (mask | target.mask).sum()
        assert truth.box_xywh == (x0, y0, x1 - x0, y1 - y0)
        assert overlap == 1.0 if kinds[ref.ann_id] == "dict" else overlap > 0.9
        checked.add(kinds[ref.ann_id])
    assert checked == {"list", "dict"}


def test_uncompressed_counts_decode_to_their_mask():
    mask = np.zeros((5, 4), dtype=bool)
    mask[0, 0] = mask[2:4, 1:3] = True
    from pycocotools import mask as coco_mask

    rle = coco_mask.frPyObjects({"size": [5, 4], "counts": uncompressed_counts(mask)}, 5, 4)
    assert (coco_mask.decode(rle).astype(bool) == mask).all()


@pytest.mark.parametrize("layout", ["images/train2014", "train2014", "images/mscoco/images/train2014"])
def test_the_images_folder_is_found_where_people_keep_it(tmp_path, layout):
    (tmp_path / layout).mkdir(parents=True)
    assert images_folder(tmp_path) == tmp_path / layout


def test_images_given_with_images_win_over_data_dir(tmp_path):
    (tmp_path / "train2014").mkdir()
    (tmp_path / "elsewhere").mkdir()
    assert images_folder(tmp_path, tmp_path / "elsewhere") == tmp_path / "elsewhere"


def test_no_images_folder_says_where_it_looked(tmp_path):
    with pytest.raises(ImageLoadError, match="images/train2014.*train2014.*--images DIR"):
        images_folder(tmp_path)


def test_a_split_the_refs_do_not_have_lists_those_they_have(refer, tmp_path):
    small = write_refer_dataset(tmp_path, splits={"train": 1, "val": 1})
    dataset = load_refer(small.data_dir, "refcoco")
    with pytest.raises(CocoFormatError, match="refcoco \\(unc\\) has no split 'testA'; it has train, val"):
        dataset.split_refs("testA")


def test_a_missing_refs_file_names_the_folder_and_the_refs_there(refer):
    expected = r"no refs\(google\)\.p .*it has refs\(unc\)\.p \(choose with --split-by\)"
    with pytest.raises(CocoFormatError, match=expected):
        load_refer(refer.data_dir, "refcoco", "google")


def test_a_missing_dataset_folder_says_which_datasets_are_there(refer):
    with pytest.raises(CocoFormatError, match="no refcoco\\+/ folder \\(it holds refcoco\\)"):
        load_refer(refer.data_dir, "refcoco+")


def test_a_ref_whose_annotation_is_not_in_instances_is_named(tmp_path):
    written = write_refer_dataset(tmp_path, splits={"val": 1})
    refs = written.refs
    refs[0]["ann_id"] = 99999
    (tmp_path / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    with pytest.raises(CocoFormatError, match="ref 0: its ann_id 99999 is not in instances.json"):
        load_refer(tmp_path, "refcoco")


def metrics(accuracy: float, ciou: float | None) -> SplitMetrics:
    return SplitMetrics("all", 10, 0, accuracy, 0.8, 10 if ciou is not None else 0, ciou, ciou)


def reproduction(model: str, split: str = "val", masks: str | None = "sam") -> Reproduction:
    return Reproduction(
        model=model,
        dataset="refcoco",
        split_by="unc",
        split=split,
        images=4,
        metrics=metrics(0.87, 0.75),
        images_per_second=3.5,
        heads=((14, 24), (14, 13), (14, 26)),
        tau=0.24,
        masks=masks,
        paper=paper_figures(model, "refcoco", "unc", split),
    )


def test_the_7b_row_on_refcoco_val_sits_beside_the_papers_86_5_and_74_2_with_the_differences():
    table = format_reproduction(reproduction("llava-1.5-7b"))
    assert "| REC Acc@0.5 | 87.00 | 86.5 | +0.50 |" in table
    assert "| RES cIoU | 75.00 | 74.2 | +0.80 |" in table
    assert "| REC mean IoU | 80.00 | - | - |" in table
    assert "| heads | L14 H24, L14 H13, L14 H26 | - | - |" in table
    assert "Kang et al., CVPR 2025" in table


def test_where_the_paper_gives_no_res_figure_the_paper_column_is_a_dash():
    table = format_reproduction(reproduction("llava-hf/llava-1.5-7b-hf", split="testB"))
    assert "| REC Acc@0.5 | 87.00 | 80.2 | +6.80 |" in table
    assert "| RES cIoU | 75.00 | - | - |" in table


def test_a_model_the_paper_did_not_run_gets_dashes_in_the_paper_column(tmp_path):
    table = format_reproduction(reproduction(str(tmp_path / "planted-llava")))
    assert "| REC Acc@0.5 | 87.00 | - | - |" in table and "paper: no figures for this run" in table


def test_the_papers_figures_are_found_by_preset_name_hub_id_or_a_folder_named_like_one():
    figures = [
        paper_figures(model, "refcoco", "unc", "val")
        for model in ("llava-1.5-13b", "llava-hf/llava-1.5-13b-hf", "/models/llava-1.5-13b-hf/")
    ]
    assert {(f.rec_accuracy, f.res_ciou) for f in figures} == {(87.2, 76.1)}


def test_the_table_json_holds_ours_the_papers_and_the_differences():
    data = reproduction("llava-1.5-7b").to_json()
    assert data["ours"]["rec_accuracy"] == 87.0 and data["paper"] == {"rec_accuracy": 86.5, "res_ciou": 74.2}
    assert data["difference"] == {"rec_accuracy": 0.5, "res_ciou": 0.8}
    assert data["heads"] == [[14, 24], [14, 13], [14, 26]] and data["tau"] == 0.24


def test_a_boxes_only_run_shows_no_res_figures_and_says_how_to_get_them():
    table = format_reproduction(reproduction("llava-1.5-7b", masks=None))
    assert "| RES cIoU | - | 74.2 | - |" in table and "--masks sam" in table
