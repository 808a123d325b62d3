"""`annotator eval refcoco` and `annotator find-heads --data DATA_DIR` on a tiny REFER-format dataset with the
planted model (issue 18): the table beside the paper's column, the JSON beside the predictions, resume, the
checks made before a model loads, and discovery of the planted heads from the train split."""

import io
import json
from contextlib import redirect_stdout

import pytest

from annotator.cli import main
from annotator.grounding.heads import HeadsFile
from annotator.synthetic.planted import PLANTED_HEADS, PLANTED_MODEL_DIR
from tests.refer_data import write_refer_dataset
from tests.test_cli_errors import assert_one_line_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def refer(tmp_path_factory):
    return write_refer_dataset(tmp_path_factory.mktemp("refer"))


def eval_refcoco(data_dir, out, *extra: str) -> list[str]:
    return [
        "eval", "refcoco", str(data_dir), "--dataset", "refcoco", "--split", "val", "--model", str(PLANTED_MODEL_DIR),
        "--device", "cpu", "--masks", "coarse", "--prefetch", "0", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(refer, tmp_path_factory):
    """One `eval refcoco` run on the val split: (exit code, what it printed, the output folder)."""
    out = tmp_path_factory.mktemp("eval-refcoco") / "planted-val"
    printed = io.StringIO()
    with redirect_stdout(printed):
        code = main(eval_refcoco(refer.data_dir, out))
    return code, printed.getvalue(), out


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model load fails the test: what is checked must be checked before."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("annotator.models.loading.load_grounder", refuse)
    monkeypatch.setattr("annotator.lvlm.engine.LvlmEngine.load", refuse)


def val_expressions(refer) -> int:
    return sum(len({s["sent"] for s in ref["sentences"]}) for ref in refer.refs if ref["split"] == "val")


def test_eval_refcoco_on_the_planted_model_prints_ours_beside_a_paper_column_of_dashes(refer, evaluated):
    code, printed, _ = evaluated
    assert code == 0
    assert f"refcoco (unc) val: {val_expressions(refer)} expressions on 6 images" in printed
    assert "| | ours | paper | ours - paper |" in printed
    rows = {line.split(" | ")[0]: line for line in printed.splitlines() if line.startswith("| ") and "ours" not in line}
    assert set(rows) == {f"| {label}" for label in ("REC Acc@0.5", "REC mean IoU", "RES cIoU", "RES mIoU")} | {
        "| images/s", "| heads", "| tau"
    }
    assert all(line.endswith("| - | - |") for line in rows.values())


def test_the_planted_model_finds_the_val_targets(evaluated):
    _, _, out = evaluated
    ours = json.loads((out / "results.json").read_text(encoding="utf-8"))["ours"]
    assert ours["rec_accuracy"] >= 90.0 and ours["res_ciou"] > 50.0


def test_the_table_is_written_as_json_next_to_the_predictions(refer, evaluated):
    _, _, out = evaluated
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    predictions = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert results["expressions"] == val_expressions(refer) == len(predictions["annotations"])
    assert results["heads"] == [list(head) for head in PLANTED_HEADS.localization]
    assert results["paper"] == {} and results["paper_source"] is None
    assert {"rec_accuracy", "rec_mean_iou", "res_ciou", "res_miou", "images_per_second"} == set(results["ours"])


def test_a_finished_run_prints_its_table_again_without_loading_a_model(refer, evaluated, no_model_loads, capsys):
    _, first, out = evaluated
    assert main(eval_refcoco(refer.data_dir, out)) == 0
    again = capsys.readouterr().out
    table = [line for line in first.splitlines() if line.startswith("| REC")]
    assert table and all(line in again for line in table)


def test_a_rerun_with_other_masks_into_the_same_folder_is_refused_before_loading(
    refer, evaluated, no_model_loads, capsys
):
    _, _, out = evaluated
    command = [arg for arg in eval_refcoco(refer.data_dir, out) if arg not in ("--masks", "coarse")]
    code = main(command)
    assert_one_line_error(code, capsys.readouterr().err, str(out), 'masks "coarse", not none', "another --out")


def test_a_full_run_after_a_limited_one_proposes_only_the_images_left(refer, tmp_path, capsys):
    assert main(eval_refcoco(refer.data_dir, tmp_path / "out", "--limit", "2")) == 0
    assert "on 2 images" in capsys.readouterr().out
    assert main(eval_refcoco(refer.data_dir, tmp_path / "out")) == 0
    printed = capsys.readouterr().out
    assert "4 image(s) proposed now, 2 done earlier" in printed and "on 6 images" in printed


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--dataset", "refcocog"], "no refcocog/ folder (it holds refcoco)"),
        (["--split-by", "google"], "no refs(google).p or refs(google).json; it has refs(unc).p"),
        (["--images", "{empty}"], "6 of the 6 images of refcoco (unc) val are not in"),
        (["--out", "{file}"], "cannot write predictions file"),
    ],
    ids=["no such dataset", "no such split_by", "missing images", "output not writable"],
)
def test_what_eval_refcoco_checks_before_loading_is_one_line_and_exit_2(
    refer, tmp_path, no_model_loads, capsys, extra, fragment
):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("not a folder")
    extra = [arg.format(empty=tmp_path / "empty", file=tmp_path / "file") for arg in extra]
    code = main(eval_refcoco(refer.data_dir, tmp_path / "out", *extra))
    assert_one_line_error(code, capsys.readouterr().err, fragment)


def test_a_split_the_dataset_lacks_is_one_line_listing_the_splits_before_loading(tmp_path, no_model_loads, capsys):
    small = write_refer_dataset(tmp_path / "data", splits={"train": 1, "val": 1})
    command = eval_refcoco(small.data_dir, tmp_path / "out")
    code = main([*command[:6], "testB", *command[7:]])
    assert_one_line_error(code, capsys.readouterr().err, "has no split 'testB'; it has train, val")


def test_find_heads_on_the_train_split_finds_the_planted_heads(refer, tmp_path, capsys):
    out = tmp_path / "heads.json"
    command = ["find-heads", "--model", str(PLANTED_MODEL_DIR), "--data", str(refer.data_dir), "--dataset", "refcoco"]
    assert main([*command, "--split", "train", "--device", "cpu", "--out", str(out)]) == 0
    heads_file = HeadsFile.load(out)
    train_pairs = sum(len({s["sent"] for s in ref["sentences"]}) for ref in refer.refs if ref["split"] == "train")
    assert set(heads_file.heads) == set(PLANTED_HEADS.localization)
    assert heads_file.num_samples == train_pairs
    assert f"refcoco (unc) train: {train_pairs} of {train_pairs} pairs" in heads_file.source


def test_find_heads_with_the_train_images_missing_stops_before_loading(refer, tmp_path, no_model_loads, capsys):
    (tmp_path / "empty").mkdir()
    command = ["find-heads", "--model", str(PLANTED_MODEL_DIR), "--data", str(refer.data_dir), "--split", "train"]
    code = main([*command, "--images", str(tmp_path / "empty"), "--device", "cpu", "--out", str(tmp_path / "h.json")])
    assert_one_line_error(code, capsys.readouterr().err, "images of refcoco (unc) train are not in", "--images DIR")


def test_refer_options_with_a_calibration_file_are_refused_in_one_line(tmp_path, no_model_loads, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"image": "a.png", "expression": "the red one"}\n', encoding="utf-8")
    code = main(["find-heads", "--model", str(PLANTED_MODEL_DIR), "--data", str(data), "--split", "train"])
    assert_one_line_error(code, capsys.readouterr().err, "--split is for a REFER folder given as --data DATA_DIR")
