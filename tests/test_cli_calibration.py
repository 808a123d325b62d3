"""Calibration files for `annotator find-heads`: JSONL, COCO and RefCOCO-style refs; errors name the line."""

import json

import numpy as np
import pytest
from PIL import Image

from annotator.errors import CocoFormatError
from annotator.discovery.calibration import CalibrationPair, choose_pairs, load_pairs, read_calibration


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_jsonl_pairs_resolve_images_against_the_file_folder(tmp_path):
    write_jsonl(
        tmp_path / "cal.jsonl",
        [{"image": "img/a.png", "expression": "the cat"}, {"image": "b.png", "expressions": ["a dog", "the dog"]}],
    )
    pairs = read_calibration(tmp_path / "cal.jsonl")
    assert [(p.image_path, p.expression) for p in pairs] == [
        (tmp_path / "img/a.png", "the cat"),
        (tmp_path / "b.png", "a dog"),
        (tmp_path / "b.png", "the dog"),
    ]


def test_a_jsonl_line_without_an_expression_is_reported_with_its_line_number(tmp_path):
    write_jsonl(tmp_path / "cal.jsonl", [{"image": "a.png", "expression": "x"}, {"image": "b.png"}])
    with pytest.raises(CocoFormatError, match=r"cal.jsonl:2: needs 'expression'"):
        read_calibration(tmp_path / "cal.jsonl")


def test_coco_annotations_with_expressions_become_pairs_and_the_rest_are_ignored(tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
        "annotations": [
            {"id": 1, "image_id": 1, "expression": "the cat"},
            {"id": 2, "image_id": 2},
            {"id": 3, "image_id": 2, "sentences": [{"sent": "left dog"}]},
        ],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    pairs = read_calibration(tmp_path / "coco.json", image_root=tmp_path / "images")
    assert [(p.image_path, p.expression) for p in pairs] == [
        (tmp_path / "images/a.png", "the cat"),
        (tmp_path / "images/b.png", "left dog"),
    ]


def test_refcoco_refs_take_their_file_names_from_the_instances_beside_them(tmp_path):
    (tmp_path / "instances.json").write_text(
        json.dumps({"images": [{"id": 5, "file_name": "x.jpg"}], "annotations": []})
    )
    refs = [{"ref_id": 1, "image_id": 5, "sentences": [{"sent": "man on the left"}, {"sent": "left man"}]}]
    (tmp_path / "refs.json").write_text(json.dumps(refs))
    pairs = read_calibration(tmp_path / "refs.json")
    assert [(p.image_path.name, p.expression) for p in pairs] == [("x.jpg", "man on the left"), ("x.jpg", "left man")]


def test_choosing_pairs_is_seeded_without_repeats_and_keeps_file_order(tmp_path):
    pairs = [CalibrationPair(tmp_path / f"{i}.png", "x", f"line {i}") for i in range(50)]
    chosen = choose_pairs(pairs, 10, seed=3)
    indices = [int(p.image_path.stem) for p in chosen]
    assert indices == sorted(set(indices)) and len(indices) == 10
    assert chosen == choose_pairs(pairs, 10, seed=3)
    assert choose_pairs(pairs, 100, seed=3) == pairs


def test_unreadable_images_are_skipped_and_listed(tmp_path):
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_text("not an image")
    pairs = [CalibrationPair(tmp_path / "good.png", "x", "cal:1"), CalibrationPair(tmp_path / "bad.png", "y", "cal:2")]
    skipped: list[str] = []
    loaded = list(load_pairs(pairs, skipped))
    assert [s.where for s in loaded] == ["cal:1"]
    assert len(skipped) == 1 and skipped[0].startswith("cal:2: ")
