"""Downloads of a Hub model's grounding files through the real huggingface_hub code, against a stand-in Hub on
127.0.0.1 (tests/fake_hub.py) serving the planted model saved in shards: progress, the grounding folder, a
connection cut half-way, a cancel resumed by the next download, a corrupted shard refused, a whole-model download
found by its id alone, and removal of the partial files."""

from __future__ import annotations

import hashlib

import pytest

from annotator.errors import ModelUnavailable
from annotator.models import hub
from tests.fake_hub import COMMIT, FakeHub, biggest_shard
from tests.test_hub import sharded_planted  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = "testorg/planted-llava"


@pytest.fixture
def fake_hub(sharded_planted, tmp_path, monkeypatch):
    """The stand-in Hub serving the sharded planted model as REPO; empty caches under tmp_path; only 127.0.0.1."""
    served = FakeHub(REPO, sharded_planted)
    served.serve_to_huggingface_hub(monkeypatch, tmp_path / "hf" / "hub")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    yield served
    served.close()


def blob_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_grounding_download_reports_the_plans_bytes_and_loads_from_only_its_files(fake_hub):
    from annotator.lvlm.engine import LvlmEngine

    plan = fake_hub.plan(3)
    assert plan.skipped, "the planted model's upper layers should fill shards of their own"
    seen: list[tuple[int, int | None]] = []
    folder = hub.download(plan, lambda done, total: seen.append((done, total)))
    assert folder == hub.grounding_folder(REPO, 3)
    assert seen[-1] == (plan.bytes_needed, plan.bytes_needed)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert {p.name for p in folder.iterdir()} == {f.name for f in plan.files}
    assert {name for name, _ in fake_hub.gets}.isdisjoint({f.name for f in plan.skipped})
    shard = biggest_shard(plan)
    assert (folder / shard).resolve().name == blob_of(fake_hub.files[shard])
    assert LvlmEngine.load(folder, truncate_after_layer=3).num_layers == 4


def test_a_connection_cut_half_way_through_a_shard_is_resumed_with_a_range_request(fake_hub):
    plan = fake_hub.plan(3)
    shard = biggest_shard(plan)
    fake_hub.cuts[shard] = 1
    folder = hub.download(plan)
    half = len(fake_hub.files[shard]) // 2
    assert fake_hub.gets_of(shard) == [None, f"bytes={half}-"]
    assert hashlib.sha256((folder / shard).read_bytes()).hexdigest() == blob_of(fake_hub.files[shard])


class Cancelled(Exception):
    pass


def cancel_half_way_through_a_shard(served: FakeHub, plan: hub.DownloadPlan) -> str:
    """Download `plan`, cutting its biggest shard half-way and cancelling there; returns the shard's name."""
    shard = biggest_shard(plan)
    served.cuts[shard] = 1

    def cancel_in_the_shard(done: int, total: int | None) -> None:
        if served.gets_of(shard):
            raise Cancelled

    with pytest.raises(Cancelled):
        hub.download(plan, cancel_in_the_shard)
    return shard


def test_a_cancelled_shard_keeps_its_partial_file_and_the_next_download_fetches_only_the_rest(fake_hub):
    plan = fake_hub.plan(3)
    shard = cancel_half_way_through_a_shard(fake_hub, plan)
    data = fake_hub.files[shard]
    blobs = hub.repo_cache_folder(REPO) / "blobs"
    part = blobs / f"{blob_of(data)}.part"
    assert part.stat().st_size == len(data) // 2
    assert not (blobs / blob_of(data)).exists()
    assert hub.find_cached(REPO, 3) is None

    folder = hub.download(plan)
    assert fake_hub.gets_of(shard) == [None, f"bytes={len(data) // 2}-"]
    assert (folder / shard).read_bytes() == data and not part.exists()
    assert hub.find_cached(REPO, 3).path == folder


def test_a_corrupted_shard_is_refused_and_leaves_neither_blob_nor_snapshot_file(fake_hub):
    plan = fake_hub.plan(3)
    shard = biggest_shard(plan)
    fake_hub.corrupt.add(shard)
    with pytest.raises(ModelUnavailable, match=f"has SHA-256 .*expected {blob_of(fake_hub.files[shard])}"):
        hub.download(plan)
    repo = hub.repo_cache_folder(REPO)
    assert not any(p.name.startswith(blob_of(fake_hub.files[shard])) for p in (repo / "blobs").iterdir())
    assert not (repo / "snapshots" / COMMIT / shard).exists()
    assert hub.find_cached(REPO, 3) is None


def test_a_whole_model_download_for_main_is_found_offline_by_its_id_alone(fake_hub, monkeypatch):
    from huggingface_hub import constants

    plan = fake_hub.plan(None, ref="main")
    snapshot = hub.download(plan)
    assert snapshot == hub.repo_cache_folder(REPO) / "snapshots" / COMMIT
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    found = hub.find_cached(REPO)
    assert found is not None and found.path == snapshot and found.truncate_after_layer is None


def test_remove_deletes_partial_shards_too(fake_hub):
    shard = cancel_half_way_through_a_shard(fake_hub, fake_hub.plan(3))
    assert hub.remove(REPO) >= len(fake_hub.files[shard]) // 2
    assert not list((hub.repo_cache_folder(REPO) / "blobs").glob("*.part"))
