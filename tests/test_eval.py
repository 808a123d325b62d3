"""Known-answer tests of the REC/RES metrics behind `annotator eval`."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from annotator.cli import main
from annotator.errors import CocoFormatError
from annotator.evaluation import (
    GroundTruth,
    Prediction,
    box_iou,
    evaluate,
    format_report,
    summarise_latency,
)
from annotator.evaluation_files import read_ground_truth, read_predictions


def rle_of(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def rectangle_mask(height: int, width: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_a_perfect_box_has_iou_one():
    assert box_iou([10, 20, 30, 40], [10, 20, 30, 40]) == 1.0


def test_half_a_box_has_iou_exactly_one_half():
    # ground truth 10 x 10 = 100 px; prediction its top half: intersection 50, union 100
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 5]) == 0.5


def test_iou_exactly_one_half_counts_as_a_hit():
    truth = [GroundTruth("a.png", "the cat", (0, 0, 10, 10))]
    report = evaluate(truth, [Prediction("a.png", "the cat", (0, 0, 10, 5))])
    assert report.overall.accuracy == 1.0


def test_iou_just_below_one_half_is_a_miss():
    # intersection 49.9, union 100 -> 0.499
    truth = [GroundTruth("a.png", "the cat", (0, 0, 10, 10))]
    report = evaluate(truth, [Prediction("a.png", "the cat", (0, 0, 10, 4.99))])
    assert report.overall.accuracy == 0.0


def test_accuracy_and_mean_iou_over_a_hit_a_half_and_a_miss():
    truths = [
        GroundTruth("a.png", "perfect", (0, 0, 10, 10)),
        GroundTruth("a.png", "half", (0, 0, 10, 10)),
        GroundTruth("a.png", "miss", (0, 0, 10, 10)),
    ]
    predictions = [
        Prediction("a.png", "perfect", (0, 0, 10, 10)),
        Prediction("a.png", "half", (0, 0, 10, 5)),
        Prediction("a.png", "miss", (20, 20, 5, 5)),
    ]
    overall = evaluate(truths, predictions).overall
    # hits: IoU 1 and IoU 0.5; mean IoU (1 + 0.5 + 0) / 3
    assert overall.accuracy == pytest.approx(2 / 3)
    assert overall.mean_box_iou == pytest.approx(0.5)


def test_ciou_is_total_intersection_over_total_union_and_miou_the_mean_of_ious():
    h, w = 40, 40
    gt_a = rectangle_mask(h, w, 0, 0, 10, 10)  # 100 px
    gt_b = rectangle_mask(h, w, 0, 0, 10, 10)  # 100 px
    pred_b = rectangle_mask(h, w, 0, 0, 30, 10)  # 300 px, contains gt_b
    truths = [
        GroundTruth("a.png", "exact", (0, 0, 10, 10), rle_of(gt_a)),
        GroundTruth("b.png", "three times too wide", (0, 0, 10, 10), rle_of(gt_b)),
    ]
    predictions = [
        Prediction("a.png", "exact", (0, 0, 10, 10), rle_of(gt_a)),
        Prediction("b.png", "three times too wide", (0, 0, 30, 10), rle_of(pred_b)),
    ]
    overall = evaluate(truths, predictions).overall
    # per sample: 100/100 = 1 and 100/300 = 1/3 -> mIoU 2/3; summed: (100 + 100) / (100 + 300) = 1/2
    assert overall.miou == pytest.approx(2 / 3)
    assert overall.ciou == pytest.approx(0.5)


def test_a_missing_prediction_is_a_miss_with_zero_iou():
    truths = [GroundTruth("a.png", "the cat", (0, 0, 10, 10)), GroundTruth("b.png", "the dog", (0, 0, 10, 10))]
    overall = evaluate(truths, [Prediction("a.png", "the cat", (0, 0, 10, 10))]).overall
    assert (overall.missing, overall.accuracy, overall.mean_box_iou) == (1, 0.5, 0.5)


def test_a_missing_mask_counts_its_ground_truth_area_in_the_union():
    gt = rectangle_mask(20, 20, 0, 0, 10, 10)
    truths = [GroundTruth("a.png", "the cat", (0, 0, 10, 10), rle_of(gt))]
    overall = evaluate(truths, [Prediction("a.png", "the cat", (0, 0, 10, 10))]).overall
    assert (overall.ciou, overall.miou) == (0.0, 0.0)


def test_the_highest_scored_of_several_instances_is_the_prediction():
    truths = [GroundTruth("a.png", "the cat", (0, 0, 10, 10))]
    predictions = [
        Prediction("a.png", "the cat", (50, 50, 10, 10), score=0.2),
        Prediction("a.png", "the cat", (0, 0, 10, 10), score=0.9),
    ]
    assert evaluate(truths, predictions).overall.accuracy == 1.0


def test_expressions_match_across_case_and_spacing_and_images_by_unique_file_name():
    truths = [GroundTruth("images/a.png", "The  red cat", (0, 0, 10, 10))]
    report = evaluate(truths, [Prediction("a.png", "the red cat ", (0, 0, 10, 10))])
    assert (report.overall.accuracy, report.unmatched_predictions) == (1.0, 0)


def test_each_split_gets_its_row_and_the_overall_row_comes_last():
    truths = [
        GroundTruth("a.png", "x", (0, 0, 10, 10), split="val"),
        GroundTruth("b.png", "x", (0, 0, 10, 10), split="testA"),
    ]
    report = evaluate(truths, [Prediction("a.png", "x", (0, 0, 10, 10))])
    assert [(r.split, r.accuracy) for r in report.splits] == [("testA", 0.0), ("val", 1.0), ("all", 0.5)]


def test_the_table_prints_percentages():
    report = evaluate([GroundTruth("a.png", "x", (0, 0, 10, 10))], [Prediction("a.png", "x", (0, 0, 10, 5))])
    assert "| all | 1 | 0 | 100.00 | 50.00 | 0 | - | - |" in format_report(report)


def test_latency_summary_counts_images_per_second_over_the_recorded_time():
    predictions = [
        Prediction("a.png", "x", (0, 0, 1, 1), latency_ms=100.0),
        Prediction("a.png", "y", (0, 0, 1, 1), latency_ms=100.0),
        Prediction("b.png", "x", (0, 0, 1, 1), latency_ms=300.0),
    ]
    summary = summarise_latency(predictions)
    # 2 images in 0.5 s
    assert (summary.images, summary.images_per_second, summary.p50_ms, summary.max_ms) == (2, 4.0, 100.0, 300.0)


def test_ground_truth_jsonl_with_a_polygon_and_a_size_reads_as_rle(tmp_path):
    path = tmp_path / "gt.jsonl"
    row = {
        "image": "a.png",
        "expression": "the cat",
        "bbox": [0, 0, 10, 10],
        "width": 20,
        "height": 20,
        "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]],
        "split": "val",
    }
    path.write_text(json.dumps(row) + "\n\n", encoding="utf-8")
    (truth,) = read_ground_truth(path)
    assert (truth.split, truth.box_xywh, int(mask_utils.area(truth.segmentation))) == ("val", (0, 0, 10, 10), 100)


def test_a_malformed_ground_truth_line_is_reported_with_its_line_number(tmp_path):
    path = tmp_path / "gt.jsonl"
    good = json.dumps({"image": "a.png", "expression": "x", "bbox": [0, 0, 1, 1]})
    path.write_text(f"{good}\n{good}\n{{not json\n", encoding="utf-8")
    with pytest.raises(CocoFormatError, match=r"gt.jsonl:3:"):
        read_ground_truth(path)


def test_a_ground_truth_line_without_a_box_is_reported_with_its_line_number(tmp_path):
    path = tmp_path / "gt.jsonl"
    path.write_text(json.dumps({"image": "a.png", "expression": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(CocoFormatError, match=r"gt.jsonl:1: 'bbox'"):
        read_ground_truth(path)


def test_coco_predictions_are_read_with_their_image_file_names(tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "sub/a.png", "width": 20, "height": 20}],
        "categories": [{"id": 1, "name": "object"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 10, 10],
                "area": 100,
                "iscrowd": 0,
                "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]],
                "expression": "the cat",
                "score": 0.7,
            }
        ],
    }
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(coco), encoding="utf-8")
    (prediction,) = read_predictions(path)
    assert (prediction.image, prediction.expression, prediction.score) == ("sub/a.png", "the cat", 0.7)
    assert int(mask_utils.area(prediction.segmentation)) == 100


def test_refs_export_with_instances_beside_it_reads_as_ground_truth(tmp_path):
    instances = {
        "images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 20}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "segmentation": []}],
        "categories": [{"id": 1, "name": "object"}],
    }
    refs = [
        {
            "ref_id": 1,
            "ann_id": 7,
            "image_id": 1,
            "category_id": 1,
            "split": "val",
            "sentences": [{"sent": "the cat", "tokens": ["the", "cat"]}, {"sent": "a cat", "tokens": ["a", "cat"]}],
        }
    ]
    (tmp_path / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    (tmp_path / "refs.json").write_text(json.dumps(refs), encoding="utf-8")
    truths = read_ground_truth(tmp_path / "refs.json")
    assert [(t.image, t.expression, t.box_xywh, t.split) for t in truths] == [
        ("a.png", "the cat", (1, 2, 3, 4), "val"),
        ("a.png", "a cat", (1, 2, 3, 4), "val"),
    ]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_eval_command_prints_the_table_and_exits_zero(tmp_path, capsys):
    write_jsonl(tmp_path / "gt.jsonl", [{"image": "a.png", "expression": "x", "bbox": [0, 0, 10, 10]}])
    write_jsonl(
        tmp_path / "pred.jsonl", [{"image": "a.png", "expression": "x", "bbox": [0, 0, 10, 5], "latency_ms": 50}]
    )
    code = main(["eval", "--gt", str(tmp_path / "gt.jsonl"), "--pred", str(tmp_path / "pred.jsonl"), "--benchmark"])
    out = capsys.readouterr().out
    assert code == 0
    assert "| all | 1 | 0 | 100.00 | 50.00 |" in out
    assert "| 1 | 1 | 20.00 | 50.0 |" in out


def test_eval_command_reports_a_malformed_line_in_one_line_and_exits_two(tmp_path, capsys):
    (tmp_path / "gt.jsonl").write_text('{"image": "a.png", "expression": "x", "bbox": [0, 0, 1, 1]}\n[1, 2]\n')
    write_jsonl(tmp_path / "pred.jsonl", [])
    code = main(["eval", "--gt", str(tmp_path / "gt.jsonl"), "--pred", str(tmp_path / "pred.jsonl")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "gt.jsonl:2: expected a JSON object" in err


def test_a_polygon_without_a_size_takes_the_size_from_the_image_header(tmp_path):
    from PIL import Image

    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    row = {"image": "a.png", "expression": "x", "bbox": [0, 0, 10, 10], "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]}
    write_jsonl(tmp_path / "gt.jsonl", [row])
    (truth,) = read_ground_truth(tmp_path / "gt.jsonl")
    assert truth.segmentation["size"] == [20, 30]


def test_a_box_only_coco_prediction_has_no_mask_and_its_latency_comes_from_extra(tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 20}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 10, 10],
                "box_only": True,
                "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]],
                "expression": "x",
                "score": 0.5,
                "extra": {"latency_ms": 12.5},
            }
        ],
        "categories": [{"id": 1, "name": "object"}],
    }
    (tmp_path / "pred.json").write_text(json.dumps(coco), encoding="utf-8")
    (prediction,) = read_predictions(tmp_path / "pred.json")
    assert (prediction.segmentation, prediction.latency_ms) == (None, 12.5)
