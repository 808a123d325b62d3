"""Shards of a distributed pre-labelling run, the actor sizing, and `--ray` without Ray: no Ray process is started
here (the pipeline itself is in test_ray_prelabel.py)."""

import sqlite3
import sys

import pytest

from annotator.distributed.ray_prelabel import (
    ProposerSpec,
    RayPrelabeller,
    RayUnavailable,
    import_ray,
    plan_actors,
)
from annotator.distributed.shards import ImageResult, ShardAssembler, plan_shards, read_shard, write_shard
from annotator.synthetic.planted import PLANTED_HEADS
from annotator.prelabel import expression_plan
from annotator.project.geometry import Rle
from annotator.project.store import NewAnnotation, ProjectStore
from annotator.synthetic.scene_folder import write_scene_folder

SETTINGS = {"model": "m", "masks": None}


def annotation(image_id: int, expression: str = "the red one", with_mask: bool = False) -> NewAnnotation:
    mask = None
    if with_mask:
        import numpy as np

        pixels = np.zeros((6, 9), dtype=bool)
        pixels[1:4, 2:7] = True
        mask = Rle.from_mask(pixels)
    return NewAnnotation(
        image_id=image_id,
        category_id=1,
        box_xyxy=(1.0 / 3.0, 2.0, 7.125, 4.0 + 1e-9),
        rle=mask,
        expression=expression,
        source="proposal",
        score=0.123456789012345,
        heads=((2, 1), (3, 5)),
        status="pending",
        extra={"latency_ms": 12.5, "attention_box_xyxy": [0.0, 1.0, 2.0, 3.0]},
    )


def test_shards_are_blocks_of_image_ids_in_id_order():
    todo = [(9, "c.png", ("x",)), (3, "a.png", ("x",)), (4, "b.png", ("x", "y")), (8, "d.png", ("x",))]
    shards = plan_shards(todo, shard_size=4, settings=SETTINGS)
    assert [shard.index for shard in shards] == [0, 1, 2]  # ids 3 | 4 | 8, 9 (n // 4)
    assert [shard.image_ids for shard in shards] == [(3,), (4,), (8, 9)]
    assert shards[1].items[0].expressions == ("x", "y")


def test_a_shard_keeps_its_key_when_its_items_and_settings_do_not_change():
    todo = [(1, "a.png", ("x",)), (2, "b.png", ("x",))]
    first = plan_shards(todo, 4, SETTINGS)
    assert plan_shards(list(reversed(todo)), 4, dict(SETTINGS)) == first
    assert plan_shards(todo, 4, {**SETTINGS, "masks": "coarse"})[0].key != first[0].key
    assert plan_shards([(1, "a.png", ("x",)), (2, "b.png", ("y",))], 4, SETTINGS)[0].key != first[0].key
    assert plan_shards(todo[:1], 4, SETTINGS)[0].key != first[0].key


def test_a_written_shard_reads_back_exactly(tmp_path):
    shard = plan_shards([(1, "a.png", ("the red one",)), (2, "b.png", ("the red one",))], 4, SETTINGS)[0]
    results = [
        ImageResult(2, "b.png", skipped="b.png: cannot decode"),
        ImageResult(1, "a.png", (annotation(1), annotation(1, with_mask=True)), None, 3.25),
    ]
    path = write_shard(tmp_path, shard, results)
    assert path.name == shard.file_name and path.name.startswith("shard-000000-")
    assert read_shard(tmp_path, shard) == (results[1], results[0])


def test_a_shard_is_written_through_a_temporary_file_renamed_into_place(tmp_path, monkeypatch):
    shard = plan_shards([(1, "a.png", ("x",))], 4, SETTINGS)[0]
    renames = []
    real_replace = __import__("os").replace

    def record(source, target):
        renames.append((str(source), str(target)))
        real_replace(source, target)

    monkeypatch.setattr("annotator.project.atomic_file.os.replace", record)
    write_shard(tmp_path, shard, [ImageResult(1, "a.png", (annotation(1),))])
    ((source, target),) = renames
    assert target == str(tmp_path / shard.file_name) and source != target
    assert [p.name for p in tmp_path.iterdir()] == [shard.file_name]


def test_a_half_written_or_foreign_file_is_not_a_finished_shard(tmp_path):
    shard = plan_shards([(1, "a.png", ("x",)), (2, "b.png", ("x",))], 4, SETTINGS)[0]
    assert read_shard(tmp_path, shard) is None
    one_line = ImageResult(1, "a.png", (annotation(1),)).to_json()
    (tmp_path / f".{shard.file_name}.abc123.tmp").write_text(one_line + "\n")  # a killed writer's leftover
    assert read_shard(tmp_path, shard) is None
    (tmp_path / shard.file_name).write_text(one_line + "\n")  # one image of two
    assert read_shard(tmp_path, shard) is None
    (tmp_path / shard.file_name).write_text(one_line + "\n" + one_line[:25])  # cut mid-line
    assert read_shard(tmp_path, shard) is None


def test_writing_a_shard_without_all_its_images_is_refused(tmp_path):
    shard = plan_shards([(1, "a.png", ("x",)), (2, "b.png", ("x",))], 4, SETTINGS)[0]
    with pytest.raises(ValueError, match="shard holds"):
        write_shard(tmp_path, shard, [ImageResult(1, "a.png")])
    assert list(tmp_path.iterdir()) == []


def test_the_assembler_hands_back_each_shard_once_all_its_images_are_in():
    shards = plan_shards([(1, "a", ("x",)), (2, "b", ("x",)), (5, "c", ("x",))], 4, SETTINGS)
    assembler = ShardAssembler(shards)
    assert assembler.add(ImageResult(2, "b")) is None
    assert assembler.add(ImageResult(5, "c")) == (shards[1], (ImageResult(5, "c"),))
    assert assembler.add(ImageResult(1, "a")) == (shards[0], (ImageResult(1, "a"), ImageResult(2, "b")))


def test_two_cpus_and_one_actor_leave_one_cpu_for_decoding():
    plan = plan_actors(cpus=2, gpus=0, nodes=1)
    assert (plan.actors, plan.cpus_per_actor, plan.decode_cpus, plan.gpus_per_actor) == (1, 1.0, 1.0, 0.0)
    assert plan.torch_threads == 1


def test_two_cpu_actors_on_two_cpus_ask_for_half_a_cpu_each():
    plan = plan_actors(cpus=2, gpus=0, nodes=1, actors=2)
    assert (plan.actors, plan.cpus_per_actor, plan.decode_cpus, plan.torch_threads) == (2, 0.5, 1.0, 1)


def test_cpu_actors_default_to_one_per_node_and_keep_a_cpu_per_node_for_decoding():
    plan = plan_actors(cpus=64, gpus=0, nodes=4)
    assert (plan.actors, plan.cpus_per_actor, plan.decode_cpus, plan.torch_threads) == (4, 15.0, 1.0, 15)


def test_gpu_actors_default_to_one_per_gpu():
    plan = plan_actors(cpus=32, gpus=4, nodes=2)
    assert (plan.actors, plan.gpus_per_actor, plan.cpus_per_actor, plan.decode_cpus) == (4, 1.0, 1.0, 1.0)
    assert plan.torch_threads is None


def test_more_actors_than_gpus_share_them_and_a_small_node_keeps_cpus_for_decoding():
    plan = plan_actors(cpus=2, gpus=1, nodes=1, actors=2)
    assert (plan.gpus_per_actor, plan.cpus_per_actor, plan.decode_cpus) == (0.5, 0.5, 1.0)


def test_without_ray_installed_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayUnavailable, match=r"pip install 'annotator\[ray\]'"):
        import_ray()


def test_shards_written_before_a_crash_are_merged_on_rerun_without_computing_them(tmp_path):
    folder = tmp_path / "images"
    write_scene_folder(folder, 3, seed=3)
    spec = ProposerSpec(str(tmp_path / "no-model-needed"), PLANTED_HEADS.localization, device="cpu")
    store_path = tmp_path / "store.sqlite"
    plan = expression_plan(["the red one"])
    with ProjectStore.open(store_path, image_root=folder) as store:
        store.sync_folder()
        prelabeller = RayPrelabeller(spec, store, tmp_path / "shards", shard_size=2)
        shards = plan_shards(
            [(r.id, r.path, ("the red one",)) for r in store.images()], prelabeller.shard_size, prelabeller.settings()
        )
        (tmp_path / "shards").mkdir()
        for shard in shards:  # what a crashed run left: its shards written, none merged
            results = [ImageResult(item.image_id, item.path, (annotation(item.image_id),)) for item in shard.items]
            write_shard(tmp_path / "shards", shard, results)
        report = prelabeller.run(plan)
    assert (report.shards_total, report.shards_reused, report.shards_written) == (len(shards), len(shards), 0)
    assert report.actors is None  # no Ray pipeline ran
    assert (report.images_done, report.proposals_added, report.interrupted) == (3, 3, False)
    with sqlite3.connect(store_path) as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT image_id) FROM annotations").fetchone() == (3, 3)


def test_an_actors_spec_carries_the_4bit_choice_to_the_shared_loader(tmp_path):
    from annotator.errors import ModelUnavailable
    from annotator.synthetic.planted import PLANTED_MODEL_DIR

    spec = ProposerSpec(str(PLANTED_MODEL_DIR), PLANTED_HEADS.localization, device="cpu", load_in_4bit=True)
    with pytest.raises(ModelUnavailable, match="4-bit loading of .* needs a CUDA GPU"):
        spec.load()
    assert ProposerSpec(str(PLANTED_MODEL_DIR), PLANTED_HEADS.localization).load().grounder.engine.num_layers == 6
