"""`annotator prelabel` on generated folders with the planted model: accuracy through `eval`, Ctrl-C and resume,
skipped images, and a heads file written by `find-heads`."""

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from annotator.cli import main
from annotator.evaluation import evaluate
from annotator.evaluation_files import read_ground_truth, read_predictions
from annotator.grounding.frame import ImageFrame
from annotator.synthetic.planted import PLANTED_HEADS, PLANTED_MODEL_DIR
from annotator.synthetic.scenes import SceneConfig, generate_scenes
from annotator.synthetic.scene_folder import write_scene_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IMAGES = 24
SEED = 11
GRID, INPUT = 24, 336
SCENES = SceneConfig(long_side=(320, 384), aspect=(0.9, 1.1), target_width=(0.42, 0.55), other_width=(0.12, 0.3))
"""Targets are 0.42-0.55 of the longer side: 10-13 cells of LLaVA-1.5's 24 x 24 grid (the method needs 9+)."""


def prelabel_command(folder: Path, ground_truth: Path, out: Path) -> list[str]:
    return [
        "prelabel", str(folder), "--expressions", str(ground_truth), "--model", str(PLANTED_MODEL_DIR),
        "--out", str(out), "--device", "cpu", "--masks", "coarse",
    ]  # fmt: skip


def labelled_images(store_path: Path) -> int:
    """Images with at least one annotation, read from the store file like a second process would."""
    if not store_path.exists():
        return 0
    with sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=5) as db:
        try:
            return db.execute("SELECT COUNT(DISTINCT image_id) FROM annotations").fetchone()[0]
        except sqlite3.OperationalError:  # the schema is not written yet
            return 0



INTERRUPT_HALF_WAY = (
    "import os, signal, sys\n"
    "import annotator.prelabel as prelabel\n"
    "commit = prelabel.store_annotations\n"
    "committed = []\n"
    "def commit_then_interrupt(*args, **kwargs):\n"
    "    commit(*args, **kwargs)\n"
    "    committed.append(args[2])\n"
    f"    if len(committed) == {IMAGES // 2}:\n"
    "        os.kill(os.getpid(), signal.SIGINT)\n"
    "prelabel.store_annotations = commit_then_interrupt\n"
    "from annotator.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
"""`annotator prelabel` that sends itself a real SIGINT right after its 12th image is committed: the interruption
lands half-way on any machine, however fast (polling the store from outside raced a fast run to its end)."""


@pytest.fixture(scope="module")
def interrupted_then_resumed(tmp_path_factory):
    """A real `annotator prelabel` process stopped with SIGINT half-way, then the same command run again."""
    root = tmp_path_factory.mktemp("prelabel-resume")
    folder = root / "scenes"
    ground_truth = write_scene_folder(folder, IMAGES, SEED, SCENES)
    out = root / "export.json"
    arguments = prelabel_command(folder, ground_truth, out)
    store_path = folder / ".annotator" / "project.sqlite"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the test machine is shared; one thread each is the frugal choice
    first = subprocess.run(
        [sys.executable, "-c", INTERRUPT_HALF_WAY, *arguments], capture_output=True, text=True, timeout=300, env=env
    )
    labelled_after_first = labelled_images(store_path)
    command = [sys.executable, "-m", "annotator.cli", *arguments]
    second = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    return {
        "folder": folder,
        "ground_truth": ground_truth,
        "out": out,
        "store": store_path,
        "first": (first.returncode, first.stdout, first.stderr),
        "labelled_after_first": labelled_after_first,
        "second": (second.returncode, second.stdout, second.stderr),
    }


def test_generated_targets_are_at_least_nine_grid_cells_wide():
    widths = [
        scene.target.width_cells(ImageFrame.for_image(scene.width, scene.height, GRID, INPUT))
        for scene in generate_scenes(SEED, IMAGES, SCENES)
    ]
    assert min(widths) >= 9


def test_sigint_half_way_stops_after_a_committed_image_with_exit_130(interrupted_then_resumed):
    code, _, err = interrupted_then_resumed["first"]
    assert code == 130, err
    assert "run the same command again to resume" in err
    assert interrupted_then_resumed["labelled_after_first"] == IMAGES // 2


def test_the_rerun_finishes_with_each_images_proposal_once(interrupted_then_resumed):
    code, out, err = interrupted_then_resumed["second"]
    assert code == 0, err
    assert f"{IMAGES - interrupted_then_resumed['labelled_after_first']} image(s) labelled now" in out
    with sqlite3.connect(f"file:{interrupted_then_resumed['store']}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT image_id, expression, COUNT(*) FROM annotations GROUP BY image_id, expression"
        ).fetchall()
    assert len(rows) == IMAGES
    assert {count for _, _, count in rows} == {1}


def test_prelabel_then_eval_against_the_ground_truth_hits_at_least_95_percent(interrupted_then_resumed, capsys):
    truths = read_ground_truth(interrupted_then_resumed["ground_truth"])
    predictions = read_predictions(interrupted_then_resumed["out"])
    assert len(predictions) == IMAGES
    assert evaluate(truths, predictions).overall.accuracy >= 0.95
    code = main(
        ["eval", "--gt", str(interrupted_then_resumed["ground_truth"]), "--pred", str(interrupted_then_resumed["out"])]
    )
    assert code == 0 and f"| synthetic | {IMAGES} | 0 |" in capsys.readouterr().out


def test_the_export_carries_scores_expressions_and_pending_status(interrupted_then_resumed):
    data = json.loads(interrupted_then_resumed["out"].read_text(encoding="utf-8"))
    annotations = data["annotations"]
    assert all(0.0 <= a["score"] <= 1.0 and a["expression"] and a["status"] == "pending" for a in annotations)
    assert all(a["source"] == "proposal" and a["heads"] for a in annotations)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """An in-process run on three scenes, a corrupt PNG, an empty JPEG and a README, with a discovered heads file."""
    root = tmp_path_factory.mktemp("prelabel-small")
    folder = root / "images"
    write_scene_folder(folder, 3, seed=5, config=SCENES)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "README.txt").write_text("not an image")
    heads = root / "discovered.json"
    discovered = {
        "model": str(PLANTED_MODEL_DIR),
        "heads": [list(h) for h in reversed(PLANTED_HEADS.localization)],
        "source": "find-heads",
    }
    heads.write_text(json.dumps(discovered), encoding="utf-8")
    out = root / "small.json"
    command = [
        "prelabel",
        str(folder),
        "--expression",
        "the red one",
        "--model",
        str(PLANTED_MODEL_DIR),
        "--heads",
        str(heads),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--prefetch",
        "0",
    ]
    return folder, out, command


def test_a_heads_file_from_find_heads_is_what_prelabel_uses(small_run, capsys):
    folder, out, command = small_run
    assert main(command) == 0
    capsys.readouterr()
    data = json.loads(out.read_text(encoding="utf-8"))
    assert {tuple(map(tuple, a["heads"])) for a in data["annotations"]} == {tuple(reversed(PLANTED_HEADS.localization))}


def test_unreadable_images_are_skipped_and_listed_at_the_end(small_run, capsys):
    folder, out, command = small_run
    fresh = ["--store", str(out.with_name("fresh.sqlite")), "--out", str(out.with_name("again.json"))]
    assert main([*command, *fresh]) == 0
    printed = capsys.readouterr().out
    tail = printed[printed.index("skipped") :]
    assert "broken.png" in tail and "empty.jpg" in tail and "README" not in tail
    assert "3 image(s) labelled now" in printed


def test_with_sam_each_proposal_keeps_its_mask_or_the_reason_it_has_none(tmp_path):
    from annotator.grounding.grounder import Grounder
    from annotator.grounding.heads import HeadsFile
    from annotator.lvlm.engine import LvlmEngine
    from annotator.proposer import Proposer
    from annotator.segmentation.segment import Segmenter
    from annotator.prelabel import Prelabeller, expression_plan
    from annotator.project.store import ProjectStore
    from tests.tiny_sam import build_tiny_sam

    folder = tmp_path / "images"
    ground_truth = write_scene_folder(folder, 3, seed=8, config=SCENES)
    heads = HeadsFile.load(PLANTED_MODEL_DIR / "heads.json").heads
    engine = LvlmEngine.load(PLANTED_MODEL_DIR, device="cpu", truncate_after_layer=max(l for l, _ in heads))
    proposer = Proposer(Grounder(engine, heads), Segmenter(build_tiny_sam()))
    with closing(proposer), ProjectStore.for_folder(folder) as store:
        report = Prelabeller(proposer, store, masks="sam").run(expression_plan(path=ground_truth))
        annotations = store.annotations()
    assert report.images_done == 3 and len(annotations) == 3
    for annotation in annotations:
        if annotation.rle is not None:
            assert annotation.extra["mask_kind"] == "sam" and "mask_score" in annotation.extra
            assert annotation.box_xyxy == annotation.rle.box_xyxy
        else:
            assert annotation.extra["mask_note"]
