"""Bad model folders, bad heads files and bad calibration or evaluation files: one clear line, never a traceback.

Through the real CLI entry point where it is a CLI behaviour (exit code 2, one stderr line naming the file or
folder and what is wrong), through `annotator.models.loading` where the app and the Ray actors meet it too.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from annotator.cli import main
from annotator.errors import ModelUnavailable
from annotator.models import loading
from annotator.grounding.heads import HeadsFile
from annotator.lvlm.engine import LvlmEngine
from annotator.synthetic.planted import PLANTED_MODEL_DIR
from tests.test_cli_errors import assert_one_line_error
from tests.test_eval import write_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def images(tmp_path) -> Path:
    """A folder with one small image, for `prelabel`."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (24, 16), "red").save(folder / "a.png")
    return folder


@pytest.fixture
def weights_never_load(monkeypatch):
    """Fail the test if any model weights start loading."""

    def refuse(*args, **kwargs):
        pytest.fail("the weights were loaded although the input was refused")

    monkeypatch.setattr(LvlmEngine, "load", refuse)


def planted_copy(tmp_path: Path, name: str = "planted-copy") -> Path:
    """A copy of the planted demo model (6 text layers of 8 heads) in a folder called `name`."""
    return Path(shutil.copytree(PLANTED_MODEL_DIR, tmp_path / name))


def random_bytes(count: int) -> bytes:
    return random.Random(0).randbytes(count)


def prelabel(images: Path, model: Path | str, *extra: str) -> list[str]:
    return ["prelabel", str(images), "--expression", "the red one", "--model", str(model), "--device", "cpu", *extra]


def write_heads(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# Damaged weights ---------------------------------------------------------------------------------------------


def test_random_bytes_as_model_safetensors_are_refused_in_one_line(tmp_path, images, capsys):
    model = planted_copy(tmp_path)
    (model / "model.safetensors").write_bytes(random_bytes(200_000))
    code = main(prelabel(images, model))
    assert_one_line_error(
        code, capsys.readouterr().err, f"model.safetensors in {model}", "damaged or incomplete", "download it again"
    )


def test_a_model_safetensors_truncated_to_half_is_refused_in_one_line(tmp_path, capsys):
    model = planted_copy(tmp_path)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code = main(["find-heads", "--model", str(model), "--synthetic", "2", "--device", "cpu"])
    assert_one_line_error(
        code, capsys.readouterr().err, f"model.safetensors in {model}", "damaged or incomplete", "download it again"
    )


def test_a_sam_checkpoint_of_random_bytes_is_said_to_be_damaged_without_torchs_weights_only_advice(
    tmp_path, images, capsys
):
    checkpoint = tmp_path / "sam_vit_b.pth"
    checkpoint.write_bytes(random_bytes(50_000))
    sam = ["--masks", "--sam-type", "vit_b", "--sam-checkpoint", str(checkpoint)]
    code = main(prelabel(images, PLANTED_MODEL_DIR, *sam))
    err = capsys.readouterr().err
    assert_one_line_error(code, err, str(checkpoint), "truncated or not a PyTorch checkpoint", "download it again")
    assert "weights_only" not in err


def test_weights_of_another_shape_than_config_json_are_refused_in_one_line(tmp_path, images, capsys):
    from tests.tiny_llava import tiny_llava

    model = planted_copy(tmp_path)
    (model / "model.safetensors").unlink()
    tiny_llava().save_pretrained(model)
    (model / "config.json").write_text((PLANTED_MODEL_DIR / "config.json").read_text())
    capsys.readouterr()
    code = main(prelabel(images, model))
    err = "".join(line for line in capsys.readouterr().err.splitlines(True) if "Loading weights" not in line)
    assert_one_line_error(code, err, f"the weights in {model} do not fit its config.json", "other shapes")
    assert "MISMATCH" not in err


def test_a_damaged_pytorch_model_bin_is_refused_in_one_line(tmp_path, images, capsys):
    model = planted_copy(tmp_path)
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(random_bytes(5_000))
    code = main(prelabel(images, model))
    assert_one_line_error(code, capsys.readouterr().err, f"pytorch_model.bin in {model}", "damaged or incomplete")


def test_a_weights_index_naming_shards_that_are_not_there_says_which(tmp_path, images, capsys):
    model = planted_copy(tmp_path)
    (model / "model.safetensors").rename(model / "model-00001-of-00002.safetensors")
    shards = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": shards}))
    code = main(prelabel(images, model))
    assert_one_line_error(code, capsys.readouterr().err, f"{model} lacks 1 of the 2", shards["b"])


# Folders that are not models ---------------------------------------------------------------------------------


def test_an_empty_model_folder_is_said_not_to_be_a_model_folder(tmp_path, images, capsys):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    code = main(prelabel(images, empty))
    assert_one_line_error(code, capsys.readouterr().err, f"{empty} is not a model folder (no config.json)")


def test_a_folder_with_only_weights_is_said_not_to_be_a_model_folder(tmp_path, capsys):
    weights_only = tmp_path / "weights-only"
    weights_only.mkdir()
    shutil.copy(PLANTED_MODEL_DIR / "model.safetensors", weights_only)
    code = main(["find-heads", "--model", str(weights_only), "--synthetic", "2", "--device", "cpu"])
    assert_one_line_error(code, capsys.readouterr().err, f"{weights_only} is not a model folder (no config.json)")


def test_a_model_folder_without_its_processor_files_says_so(tmp_path, images, capsys):
    model = planted_copy(tmp_path)
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        (model / name).unlink()
    code = main(prelabel(images, model))
    assert_one_line_error(code, capsys.readouterr().err, f"{model} has no processor files")


def test_the_app_and_ray_loading_path_says_an_empty_folder_is_not_a_model_folder(tmp_path):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    assert "is not a model folder (no config.json)" in (loading.missing_model_message(str(empty), None) or "")


# Heads files -------------------------------------------------------------------------------------------------


def test_a_json_list_as_heads_file_is_refused_in_one_line(tmp_path, images, capsys):
    heads = write_heads(tmp_path / "heads.json", [[3, 5], [4, 2]])
    code = main(prelabel(images, PLANTED_MODEL_DIR, "--heads", str(heads)))
    assert_one_line_error(code, capsys.readouterr().err, str(heads), "a JSON object", "got a list")


def test_a_heads_file_without_model_says_that_key_is_missing(tmp_path, images, capsys):
    heads = write_heads(tmp_path / "heads.json", {"heads": [[3, 5]]})
    code = main(prelabel(images, PLANTED_MODEL_DIR, "--heads", str(heads)))
    assert_one_line_error(code, capsys.readouterr().err, str(heads), "'model' is missing")


def test_a_heads_file_with_a_negative_layer_is_refused_naming_the_entry(tmp_path, images, capsys):
    heads = write_heads(tmp_path / "heads.json", {"model": "planted", "heads": [[3, 5], [-1, 2]]})
    code = main(prelabel(images, PLANTED_MODEL_DIR, "--heads", str(heads)))
    assert_one_line_error(code, capsys.readouterr().err, str(heads), "'heads'", "[-1, 2]", "non-negative")


def test_a_heads_file_that_is_not_utf8_is_refused_naming_it(tmp_path, images, capsys):
    heads = tmp_path / "heads.json"
    heads.write_bytes(b'{"model": "caf\xe9", "heads": [[3, 5]]}')
    code = main(prelabel(images, PLANTED_MODEL_DIR, "--heads", str(heads)))
    assert_one_line_error(code, capsys.readouterr().err, str(heads), "not UTF-8")


def test_a_heads_file_nested_too_deep_to_parse_is_refused_naming_it(tmp_path, images, capsys):
    heads = tmp_path / "heads.json"
    heads.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    code = main(prelabel(images, PLANTED_MODEL_DIR, "--heads", str(heads)))
    assert_one_line_error(code, capsys.readouterr().err, str(heads), "cannot read heads file")


def test_heads_deeper_than_the_model_are_refused_before_the_weights_load(
    tmp_path, images, capsys, weights_never_load
):
    heads = write_heads(tmp_path / "heads.json", {"model": "llava-hf/llava-1.5-7b-hf", "heads": [[14, 5], [3, 5]]})
    code = main(prelabel(images, PLANTED_MODEL_DIR, "--heads", str(heads)))
    assert_one_line_error(
        code, capsys.readouterr().err, "L14 H5 needs 15 text layers", f"{PLANTED_MODEL_DIR} has 6", "find-heads"
    )


def test_a_small_model_in_a_folder_named_like_a_shipped_one_is_refused_before_the_weights_load(
    tmp_path, images, capsys, weights_never_load
):
    model = planted_copy(tmp_path, "llava-1.5-7b-hf")
    code = main(prelabel(images, model))
    assert_one_line_error(
        code, capsys.readouterr().err, "L14 H24, L14 H13, L14 H26 need 15 text layers", f"{model} has 6", "find-heads"
    )


def test_the_app_and_ray_loading_path_refuses_heads_beyond_the_heads_per_layer_before_the_weights_load(
    weights_never_load,
):
    with pytest.raises(ModelUnavailable, match=r"L5 H40 needs 41 heads per layer; .*planted-llava has 8"):
        loading.load_grounder(str(PLANTED_MODEL_DIR), [(3, 5), (5, 40)])


def test_the_app_and_ray_loading_path_refuses_a_negative_head(weights_never_load):
    with pytest.raises(ModelUnavailable, match=r"L3 H-1 is not a head"):
        loading.load_grounder(str(PLANTED_MODEL_DIR), [(3, -1)])


# find-heads --data and --k ----------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "\n  \n\n"], ids=["empty", "blank-lines"])
def test_find_heads_on_a_data_file_without_pairs_says_so_before_the_model_loads(
    tmp_path, capsys, weights_never_load, content
):
    data = tmp_path / "calibration.jsonl"
    data.write_text(content, encoding="utf-8")
    code = main(["find-heads", "--model", str(PLANTED_MODEL_DIR), "--data", str(data), "--device", "cpu"])
    assert_one_line_error(code, capsys.readouterr().err, f"{data}: no image/expression pairs")


def test_find_heads_on_refs_that_list_nothing_says_there_are_no_pairs(tmp_path, capsys, weights_never_load):
    data = tmp_path / "refs.json"
    data.write_text("[]", encoding="utf-8")
    (tmp_path / "instances.json").write_text(json.dumps({"images": [], "annotations": []}), encoding="utf-8")
    code = main(["find-heads", "--model", str(PLANTED_MODEL_DIR), "--data", str(data), "--device", "cpu"])
    assert_one_line_error(code, capsys.readouterr().err, f"{data}: no image/expression pairs")


@pytest.mark.parametrize(
    "coco",
    [{"images": 5, "annotations": []}, {"images": [], "annotations": 5}],
    ids=["images-not-a-list", "annotations-not-a-list"],
)
def test_find_heads_on_a_coco_file_whose_lists_are_not_lists_names_the_key(tmp_path, capsys, coco):
    data = tmp_path / "calibration.json"
    data.write_text(json.dumps(coco), encoding="utf-8")
    code = main(["find-heads", "--model", str(PLANTED_MODEL_DIR), "--data", str(data), "--device", "cpu"])
    key = "images" if coco["images"] == 5 else "annotations"
    assert_one_line_error(code, capsys.readouterr().err, str(data), f"'{key}' must be a list")


def test_find_heads_on_refs_whose_sentences_are_not_a_list_names_the_ref(tmp_path, capsys):
    data = tmp_path / "refs.json"
    data.write_text(json.dumps([{"ref_id": 7, "image_id": 1, "sentences": 5}]), encoding="utf-8")
    (tmp_path / "instances.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}]}))
    code = main(["find-heads", "--model", str(PLANTED_MODEL_DIR), "--data", str(data), "--device", "cpu"])
    assert_one_line_error(code, capsys.readouterr().err, f"{data}: ref 7", "'sentences'")


def test_find_heads_k_beyond_the_heads_outside_the_skipped_layers_is_refused_before_the_weights_load(
    tmp_path, capsys, weights_never_load
):
    code = main(["find-heads", "--model", str(PLANTED_MODEL_DIR), "--synthetic", "2", "--k", "500", "--device", "cpu"])
    assert_one_line_error(
        code, capsys.readouterr().err, "--k 500", "32 heads outside its first 2 layers", "6 layers of 8 heads"
    )


def test_find_heads_skipping_every_layer_is_refused_before_the_weights_load(tmp_path, capsys, weights_never_load):
    model = ["--model", str(PLANTED_MODEL_DIR), "--synthetic", "2", "--skip-layers", "6", "--device", "cpu"]
    code = main(["find-heads", *model])
    assert_one_line_error(code, capsys.readouterr().err, "--skip-layers 6", "6 text layers")


def test_find_heads_keeping_fewer_heads_than_k_says_how_many_and_why(tmp_path, capsys):
    out = tmp_path / "heads.json"
    args = ["--model", str(PLANTED_MODEL_DIR), "--synthetic", "3", "--k", "30", "--out", str(out), "--device", "cpu"]
    code = main(["find-heads", *args])
    kept = len(HeadsFile.load(out).heads)
    notice = [line for line in capsys.readouterr().err.splitlines() if "--k 30" in line]
    assert code == 0 and kept < 30
    assert len(notice) == 1 and f"kept {kept}" in notice[0] and "above tau" in notice[0]


# eval --------------------------------------------------------------------------------------------------------


def test_eval_on_files_that_share_no_image_is_refused_naming_both_and_an_image_of_each(tmp_path, capsys):
    gt, pred = tmp_path / "gt.jsonl", tmp_path / "pred.jsonl"
    write_jsonl(gt, [{"image": "val/cat.png", "expression": "the cat", "bbox": [0, 0, 10, 10]}])
    write_jsonl(pred, [{"image": "train/dog.png", "expression": "the cat", "bbox": [0, 0, 10, 10]}])
    code = main(["eval", "--gt", str(gt), "--pred", str(pred)])
    out, err = capsys.readouterr()
    assert_one_line_error(code, err, str(gt), str(pred), "share no image", "val/cat.png", "train/dog.png")
    assert "|" not in out


def test_eval_on_an_empty_ground_truth_file_is_refused(tmp_path, capsys):
    gt, pred = tmp_path / "gt.jsonl", tmp_path / "pred.jsonl"
    gt.write_text("", encoding="utf-8")
    write_jsonl(pred, [{"image": "a.png", "expression": "the cat", "bbox": [0, 0, 10, 10]}])
    code = main(["eval", "--gt", str(gt), "--pred", str(pred)])
    assert_one_line_error(code, capsys.readouterr().err, f"{gt}: no ground-truth expressions")


def test_eval_on_an_empty_predictions_file_is_refused(tmp_path, capsys):
    gt, pred = tmp_path / "gt.jsonl", tmp_path / "pred.jsonl"
    write_jsonl(gt, [{"image": "a.png", "expression": "the cat", "bbox": [0, 0, 10, 10]}])
    pred.write_text("", encoding="utf-8")
    code = main(["eval", "--gt", str(gt), "--pred", str(pred)])
    assert_one_line_error(code, capsys.readouterr().err, f"{pred}: no predictions")


@pytest.mark.parametrize(
    ("field", "value"),
    [("score", "high"), ("latency_ms", "fast"), ("latency_ms", [1])],
    ids=["score-text", "latency-text", "latency-list"],
)
def test_eval_on_a_prediction_with_a_field_that_is_not_a_number_names_the_line(tmp_path, capsys, field, value):
    gt, pred = tmp_path / "gt.jsonl", tmp_path / "pred.jsonl"
    write_jsonl(gt, [{"image": "a.png", "expression": "the cat", "bbox": [0, 0, 10, 10]}])
    write_jsonl(pred, [{"image": "a.png", "expression": "the cat", "bbox": [0, 0, 10, 10], field: value}])
    code = main(["eval", "--gt", str(gt), "--pred", str(pred)])
    assert_one_line_error(code, capsys.readouterr().err, f"{pred}:1", f"'{field}' must be a number")


def test_eval_on_a_ground_truth_width_that_is_not_a_number_names_the_line(tmp_path, capsys):
    gt, pred = tmp_path / "gt.jsonl", tmp_path / "pred.jsonl"
    polygon = [[0, 0, 5, 0, 5, 5]]
    row = {"image": "a.png", "expression": "x", "bbox": [0, 0, 5, 5], "width": "wide", "height": 9}
    write_jsonl(gt, [{**row, "segmentation": polygon}])
    write_jsonl(pred, [{"image": "a.png", "expression": "x", "bbox": [0, 0, 5, 5]}])
    code = main(["eval", "--gt", str(gt), "--pred", str(pred)])
    assert_one_line_error(code, capsys.readouterr().err, f"{gt}:1", "'width' and 'height'")


@pytest.mark.parametrize(
    "segmentation",
    [{"size": [5, 5], "counts": 5}, {"size": [-5, 5], "counts": [25]}],
    ids=["counts-a-number", "negative-size"],
)
def test_eval_on_an_rle_that_cannot_be_decoded_names_the_line(tmp_path, capsys, segmentation):
    gt, pred = tmp_path / "gt.jsonl", tmp_path / "pred.jsonl"
    write_jsonl(gt, [{"image": "a.png", "expression": "x", "bbox": [0, 0, 5, 5], "segmentation": segmentation}])
    write_jsonl(pred, [{"image": "a.png", "expression": "x", "bbox": [0, 0, 5, 5]}])
    code = main(["eval", "--gt", str(gt), "--pred", str(pred)])
    assert_one_line_error(code, capsys.readouterr().err, f"{gt}:1", "unreadable 'segmentation'")


@pytest.mark.parametrize(
    "coco",
    [{"images": 5, "annotations": []}, {"images": [], "annotations": 5}],
    ids=["images-not-a-list", "annotations-not-a-list"],
)
def test_eval_on_a_coco_prediction_file_whose_lists_are_not_lists_names_the_key(tmp_path, capsys, coco):
    gt, pred = tmp_path / "gt.jsonl", tmp_path / "pred.json"
    write_jsonl(gt, [{"image": "a.png", "expression": "x", "bbox": [0, 0, 5, 5]}])
    pred.write_text(json.dumps(coco), encoding="utf-8")
    code = main(["eval", "--gt", str(gt), "--pred", str(pred)])
    key = "images" if coco["images"] == 5 else "annotations"
    assert_one_line_error(code, capsys.readouterr().err, str(pred), f"'{key}' must be a list")



def test_eval_on_refs_whose_sentences_are_not_a_list_names_the_ref(tmp_path, capsys):
    gt, pred = tmp_path / "refs.json", tmp_path / "pred.jsonl"
    gt.write_text(json.dumps([{"ref_id": 7, "ann_id": 1, "sentences": 5}]), encoding="utf-8")
    annotation = {"id": 1, "image_id": 1, "bbox": [0, 0, 5, 5]}
    instances = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [annotation]}
    (tmp_path / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    write_jsonl(pred, [{"image": "a.png", "expression": "x", "bbox": [0, 0, 5, 5]}])
    code = main(["eval", "--gt", str(gt), "--pred", str(pred)])
    assert_one_line_error(code, capsys.readouterr().err, f"{gt}: ref 7", "'sentences' must be a list")


def test_eval_on_a_ground_truth_polygon_with_a_coordinate_of_1e300_is_refused_in_one_line(tmp_path, capsys):
    gt, pred = tmp_path / "gt.jsonl", tmp_path / "pred.jsonl"
    row = {"image": "a.png", "expression": "x", "bbox": [0, 0, 5, 5], "width": 10, "height": 10}
    write_jsonl(gt, [{**row, "segmentation": [[0, 0, 1e300, 0, 5, 5]]}])
    write_jsonl(pred, [{"image": "a.png", "expression": "x", "bbox": [0, 0, 5, 5]}])
    code = main(["eval", "--gt", str(gt), "--pred", str(pred)])
    assert_one_line_error(code, capsys.readouterr().err, f"{gt}:1", "unreadable 'segmentation'", "far outside")


@pytest.mark.parametrize("counts", [[100], "T3"], ids=["run-lengths", "compressed"])
def test_eval_on_an_rle_whose_counts_do_not_cover_its_size_is_refused_in_one_line(tmp_path, capsys, counts):
    gt, pred = tmp_path / "gt.jsonl", tmp_path / "pred.jsonl"
    row = {"image": "a.png", "expression": "x", "bbox": [0, 0, 5, 5]}
    write_jsonl(gt, [{**row, "segmentation": {"size": [5, 5], "counts": counts}}])
    write_jsonl(pred, [{**row, "segmentation": {"size": [5, 5], "counts": [0, 25]}}])
    code = main(["eval", "--gt", str(gt), "--pred", str(pred)])
    assert_one_line_error(code, capsys.readouterr().err, f"{gt}:1", "unreadable 'segmentation'", "5 x 5")

# JSON too deep or a number too long to read ------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000
LONG_NUMBER = "9" * 5_000


def test_find_heads_on_a_data_line_nested_too_deep_is_refused_naming_the_line(tmp_path, capsys, weights_never_load):
    data = tmp_path / "calibration.jsonl"
    data.write_text('{"image": "a.png", "expression": "x"}\n{"image": ' + DEEP + "}\n", encoding="utf-8")
    code = main(["find-heads", "--model", str(PLANTED_MODEL_DIR), "--data", str(data), "--device", "cpu"])
    assert_one_line_error(code, capsys.readouterr().err, f"{data}:2", "nested too deeply")


def test_prelabel_expressions_with_a_number_too_long_to_read_are_refused_naming_the_line(
    tmp_path, images, capsys, weights_never_load
):
    expressions = tmp_path / "queries.jsonl"
    expressions.write_text('{"image": "a.png", "expression": "x", "id": ' + LONG_NUMBER + "}\n", encoding="utf-8")
    args = ["--expressions", str(expressions), "--model", str(PLANTED_MODEL_DIR), "--device", "cpu"]
    code = main(["prelabel", str(images), *args])
    assert_one_line_error(code, capsys.readouterr().err, f"{expressions}:1", "number too long")


def test_eval_on_a_refs_file_nested_too_deep_is_refused_naming_it(tmp_path, capsys):
    gt, pred = tmp_path / "refs.json", tmp_path / "pred.jsonl"
    gt.write_text(DEEP, encoding="utf-8")
    write_jsonl(pred, [{"image": "a.png", "expression": "x", "bbox": [0, 0, 5, 5]}])
    code = main(["eval", "--gt", str(gt), "--pred", str(pred)])
    assert_one_line_error(code, capsys.readouterr().err, str(gt), "nested too deeply")


def test_eval_on_a_coco_prediction_file_with_a_number_too_long_to_read_is_refused_naming_it(tmp_path, capsys):
    gt, pred = tmp_path / "gt.jsonl", tmp_path / "pred.json"
    write_jsonl(gt, [{"image": "a.png", "expression": "x", "bbox": [0, 0, 5, 5]}])
    pred.write_text('{"images": [], "annotations": [{"id": ' + LONG_NUMBER + "}]}", encoding="utf-8")
    code = main(["eval", "--gt", str(gt), "--pred", str(pred)])
    assert_one_line_error(code, capsys.readouterr().err, str(pred), "number too long")


def test_a_mask_size_claimed_beyond_a_billion_pixels_is_refused_not_allocated():
    from annotator.project.geometry import segmentation_to_rle

    with pytest.raises(ValueError, match="beyond the 1,000,000,000 pixels"):
        segmentation_to_rle([[10, 10, 20, 10, 20, 20]], 100_000_000, 100_000_000)
