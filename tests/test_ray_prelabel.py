"""`annotator prelabel --ray` on a local Ray instance (2 CPUs, no GPU) with the planted model and 40 generated
scenes plus a corrupt image: the same proposals as the local run, a stop after some shards and a rerun through the
CLI with each image's proposals once, and the corrupt image reported as skipped.

One local run and one interrupted-then-resumed Ray run serve every test (the model runs on each image once per
run): a Ray run starts its actors and loads the model, which is what takes the time here.
"""

import contextlib
import io
import json
import threading

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from annotator.cli import main  # noqa: E402
from annotator.distributed.ray_prelabel import ProposerSpec, RayPrelabeller  # noqa: E402
from annotator.grounding.heads import find_heads_file  # noqa: E402
from annotator.synthetic.planted import PLANTED_MODEL_DIR  # noqa: E402
from annotator.synthetic.scenes import SceneConfig  # noqa: E402
from annotator.prelabel import expression_plan  # noqa: E402
from annotator.project.store import ProjectStore  # noqa: E402
from annotator.synthetic.scene_folder import write_scene_folder  # noqa: E402

pytestmark = pytest.mark.ray

IMAGES = 40
SEED = 11
SHARD_SIZE = 8
STOP_AFTER_SHARDS = 2
SCENES = SceneConfig(long_side=(320, 384), aspect=(0.9, 1.1), target_width=(0.42, 0.55), other_width=(0.12, 0.3))
"""As in test_cli_prelabel: targets 10-13 cells of the 24 x 24 grid, so the boxes hit them."""


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """40 scenes, a PNG cut in half (its header reads, its pixels do not decode) and per-image expressions."""
    root = tmp_path_factory.mktemp("ray-prelabel")
    folder = root / "scenes"
    ground_truth = write_scene_folder(folder, IMAGES, SEED, SCENES)
    whole = (folder / "scene_00001.png").read_bytes()
    (folder / "corrupt.png").write_bytes(whole[: len(whole) // 2])
    expressions = root / "expressions.jsonl"
    corrupt_line = json.dumps({"image": "corrupt.png", "expression": "the red one"})
    expressions.write_text(ground_truth.read_text(encoding="utf-8") + corrupt_line + "\n", encoding="utf-8")
    return root, folder, expressions


def prelabel_command(root, folder, expressions, name):
    return ["prelabel", str(folder), "--expressions", str(expressions), "--model", str(PLANTED_MODEL_DIR),
            "--device", "cpu", "--masks", "coarse", "--store", str(root / f"{name}.sqlite"),
            "--out", str(root / f"{name}.json")]  # fmt: skip


def stored_proposals(root, folder, name):
    """(path, expression) -> every stored annotation of that pair, read back from a run's store."""
    with ProjectStore.open(root / f"{name}.sqlite", image_root=folder) as store:
        paths = {record.id: record.path for record in store.images()}
        found = {}
        for annotation in store.annotations():
            found.setdefault((paths[annotation.image_id], annotation.expression), []).append(annotation)
    return found


@pytest.fixture(scope="module")
def local_run(scenes):
    """The local `annotator prelabel`, in this process with one torch thread, as each Ray actor runs here."""
    root, folder, expressions = scenes
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-CPU machine, two spinning torch threads are many times slower than one
    try:
        assert main(prelabel_command(root, folder, expressions, "local")) == 0
    finally:
        torch.set_num_threads(threads)
    return stored_proposals(root, folder, "local")


@pytest.fixture(scope="module")
def ray_runs(local_ray, scenes):
    """A Ray run stopped once two shards are merged, then the same work through `annotator prelabel --ray`."""
    root, folder, expressions = scenes
    shards_dir = root / "shards"
    heads = find_heads_file(str(PLANTED_MODEL_DIR))
    spec = ProposerSpec(str(PLANTED_MODEL_DIR), tuple(map(tuple, heads.heads)), device="cpu", masks="coarse")
    stop = threading.Event()
    calls = []

    def progress(done, already_done, total):
        calls.append(done)  # once at the start, then once per merged shard
        if len(calls) > STOP_AFTER_SHARDS:
            stop.set()

    with ProjectStore.open(root / "ray.sqlite", image_root=folder) as store:
        first = RayPrelabeller(spec, store, shards_dir, shard_size=SHARD_SIZE).run(
            expression_plan(path=expressions), stop=stop, progress=progress
        )
    after_first = {
        "shard_lines": [json.loads(line) for path in shards_dir.glob("shard-*.jsonl") for line in path.open()],
        "shard_files": len(list(shards_dir.glob("shard-*.jsonl"))),
        "stored": stored_proposals(root, folder, "ray"),
    }
    command = [*prelabel_command(root, folder, expressions, "ray"), "--ray", "--ray-shards", str(shards_dir),
               "--ray-shard-size", str(SHARD_SIZE)]  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(command)
    return {
        "first": first,
        "after_first": after_first,
        "second": (code, out.getvalue(), err.getvalue()),
        "stored": stored_proposals(root, folder, "ray"),
        "shard_lines": [json.loads(line) for path in shards_dir.glob("shard-*.jsonl") for line in path.open()],
        "export": json.loads((root / "ray.json").read_text(encoding="utf-8")),
    }


def test_the_stopped_run_writes_and_merges_only_whole_shards(ray_runs):
    first, after = ray_runs["first"], ray_runs["after_first"]
    assert first.interrupted and first.images_left > 0
    assert first.shards_written >= STOP_AFTER_SHARDS and after["shard_files"] == first.shards_written
    assert len(after["shard_lines"]) == IMAGES + 1 - first.images_left
    labelled = [line["path"] for line in after["shard_lines"] if line["skipped"] is None]
    assert sorted(labelled) == sorted(path for path, _ in after["stored"])
    assert len(labelled) == first.images_done


def test_the_rerun_finishes_with_each_images_proposals_once(ray_runs):
    code, out, err = ray_runs["second"]
    assert code == 0, err
    assert f"{IMAGES - ray_runs['first'].images_done} image(s) labelled now" in out
    stored = ray_runs["stored"]
    assert len(stored) == IMAGES and all(len(annotations) == 1 for annotations in stored.values())
    labelled = [line["image_id"] for line in ray_runs["shard_lines"] if line["skipped"] is None]
    assert len(labelled) == len(set(labelled)) == IMAGES


def test_ray_proposals_equal_the_local_run(local_run, ray_runs):
    stored = ray_runs["stored"]
    assert stored.keys() == local_run.keys()
    for key, (ours,) in stored.items():
        (local,) = local_run[key]
        assert np.allclose(ours.box_xyxy, local.box_xyxy, rtol=0, atol=1e-6), key
        assert ours.score == pytest.approx(local.score, abs=1e-6)
        assert (ours.heads, ours.status, ours.source) == (local.heads, "pending", "proposal")
        assert (ours.rle is None) == (local.rle is None)


def test_a_corrupt_image_is_reported_skipped_and_the_rest_complete(ray_runs):
    code, out, err = ray_runs["second"]
    tail = out[out.index("skipped"):]
    assert "corrupt.png" in tail and "scene_" not in tail
    assert not any(path == "corrupt.png" for path, _ in ray_runs["stored"])
    assert len(ray_runs["stored"]) == IMAGES


def test_the_export_holds_every_proposal_as_pending(ray_runs):
    annotations = ray_runs["export"]["annotations"]
    assert len(annotations) == IMAGES
    assert all(a["status"] == "pending" and a["source"] == "proposal" and a["expression"] for a in annotations)
