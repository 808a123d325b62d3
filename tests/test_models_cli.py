"""`annotator models list | download NAME [--full] | verify NAME | remove NAME`, in-process, against a Hugging Face
cache and a user cache laid out under tmp_path, offline, with SAM served by a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from annotator.cli import main
from annotator.segmentation import segment
from annotator.synthetic.planted import PLANTED_MODEL_DIR
from annotator.segmentation.segment import CheckpointSpec
from tests.network import allow_only_loopback
from tests.test_download import PAYLOAD, PAYLOAD_SHA256, FileServer

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
QWEN = [
    "Qwen2-VL-2B-Instruct",
    "Qwen2-VL-7B-Instruct",
    "Qwen2.5-VL-3B-Instruct",
    "Qwen2.5-VL-7B-Instruct",
    "Qwen3-VL-2B-Instruct",
    "Qwen3-VL-4B-Instruct",
    "Qwen3-VL-8B-Instruct",
]
OTHER_FAMILIES = [
    "llava-v1.6-mistral-7b",
    "llava-v1.6-vicuna-7b",
    "llava-onevision-qwen2-0.5b-ov",
    "deepseek-vl-1.3b-chat",
    "deepseek-vl-7b-chat",
    "InternVL3-1B-hf",
    "InternVL3-8B-hf",
]
UNKNOWN_HEADS = QWEN + OTHER_FAMILIES


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty caches under tmp_path, offline (only 127.0.0.1 can be reached); returns the Hub cache folder."""
    from huggingface_hub import constants

    hub_cache = tmp_path / "hf" / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    allow_only_loopback(monkeypatch)
    return hub_cache


def cache_7b_as_planted(hub_cache: Path) -> Path:
    """The planted model's files under llava-hf/llava-1.5-7b-hf in the Hub's layout: blobs named by SHA-256 for
    the weights, symlinks from the snapshot. Returns the snapshot folder."""
    repo = hub_cache / "models--llava-hf--llava-1.5-7b-hf"
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for source in PLANTED_MODEL_DIR.iterdir():
        data = source.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / source.name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["models", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_names_every_preset_and_only_the_demo_is_on_disk(caches, capsys):
    code, out, _ = run(capsys, "list")
    table, _, memory = out.partition("\n\n")
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert code == 0
    assert list(rows) == [
        "llava-1.5-7b",
        "llava-1.5-13b",
        *UNKNOWN_HEADS,
        "sam-vit_h",
        "sam-vit_l",
        "sam-vit_b",
        "sam2.1-tiny",
        "sam2.1-small",
        "sam2.1-base-plus",
        "sam2.1-large",
        "sam-hq-vit_b",
        "sam-hq-vit_l",
        "sam-hq-vit_h",
        "planted-llava",
        "planted-qwen2-vl",
    ]
    assert rows["llava-1.5-7b"].split()[1] == "no"
    assert rows["planted-llava"].endswith(str(PLANTED_MODEL_DIR))
    assert [" ".join(line.split()) for line in memory.splitlines()[1:3]] == [
        "llava-1.5-7b 14.1 GB / 7.0 GB / 2.4 GB (--4bit)",
        "llava-1.5-13b 26.7 GB / 11.8 GB / 3.7 GB (--4bit)",
    ]


def test_list_says_whose_heads_ship_and_whose_must_be_found_first(caches, capsys):
    _, out, _ = run(capsys, "list")
    table = out.partition("\n\n")[0].splitlines()
    heads = table[0].index("HEADS")
    column = {line.split()[0]: line[heads : heads + 16].strip() for line in table[1:]}
    assert column["llava-1.5-7b"] == column["llava-1.5-13b"] == "shipped"
    assert {column[name] for name in UNKNOWN_HEADS} == {"find-heads first"}
    assert column["planted-llava"] == column["planted-qwen2-vl"] == "own heads.json"
    assert column["sam-vit_h"] == "-"


def test_list_shows_no_truncated_memory_for_models_whose_heads_are_unknown(caches, capsys):
    _, out, _ = run(capsys, "list")
    memory = out.split("\n\n")[1].splitlines()
    assert [" ".join(line.split()) for line in memory[3:]] == [
        "Qwen2-VL-2B-Instruct 4.4 GB / - / -",
        "Qwen2-VL-7B-Instruct 16.6 GB / - / -",
        "Qwen2.5-VL-3B-Instruct 7.5 GB / - / -",
        "Qwen2.5-VL-7B-Instruct 16.6 GB / - / -",
        "Qwen3-VL-2B-Instruct 4.3 GB / - / -",
        "Qwen3-VL-4B-Instruct 8.9 GB / - / -",
        "Qwen3-VL-8B-Instruct 17.5 GB / - / -",
        "llava-v1.6-mistral-7b 15.1 GB / - / -",
        "llava-v1.6-vicuna-7b 14.1 GB / - / -",
        "llava-onevision-qwen2-0.5b-ov 1.8 GB / - / -",
        "deepseek-vl-1.3b-chat 4.0 GB / - / -",
        "deepseek-vl-7b-chat 14.7 GB / - / -",
        "InternVL3-1B-hf 1.9 GB / - / -",
        "InternVL3-8B-hf 15.9 GB / - / -",
    ]
    assert "find them once with 'annotator find-heads --model NAME --data FILE'" in out.split("\n\n")[2]


def test_list_shows_a_cached_llava_with_its_size_and_snapshot_path(caches, capsys):
    snapshot = cache_7b_as_planted(caches)
    _, out, _ = run(capsys, "list")
    row = next(line for line in out.splitlines() if line.startswith("llava-1.5-7b"))
    assert "whole model" in row and "1.32 MB" in row and row.endswith(str(snapshot))


def test_list_shows_a_llava_with_only_a_partial_shard_as_partial_and_it_is_still_offered_for_download(caches, capsys):
    from annotator.ui.download_dialog import missing_downloads
    from annotator.ui.settings import ModelSettings

    blobs = caches / "models--llava-hf--llava-1.5-7b-hf" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{'a' * 64}.part").write_bytes(b"x" * 1500)
    _, out, _ = run(capsys, "list")
    row = next(line for line in out.splitlines() if line.startswith("llava-1.5-7b"))
    assert "partial download" in row and "1.50 kB" in row
    items = missing_downloads(ModelSettings(model="llava-1.5-7b", sam_type="none"))
    assert [item.name for item in items] == ["llava-1.5-7b"]


def test_download_of_a_sam_preset_fetches_it_from_the_server(caches, monkeypatch, capsys):
    server = FileServer()
    try:
        monkeypatch.setitem(segment.SAM_CHECKPOINTS, "vit_b", CheckpointSpec(server.url, len(PAYLOAD), PAYLOAD_SHA256))
        code, out, err = run(capsys, "download", "sam-vit_b")
    finally:
        server.close()
    assert code == 0
    assert segment.checkpoint_path("vit_b").read_bytes() == PAYLOAD
    assert f"sam-vit_b: ready in {segment.checkpoint_path('vit_b')}" in out
    assert "1.05 MB of 1.05 MB (100%)" in err


def test_download_of_a_llava_preset_offline_is_one_line_saying_so(caches, capsys):
    code, _, err = run(capsys, "download", "llava-1.5-13b", "--full")
    assert code == 2
    assert err == (
        "annotator models: error: cannot download llava-hf/llava-1.5-13b-hf: this machine is offline "
        "(HF_HUB_OFFLINE is set)\n"
    )


def test_download_of_a_qwen_preset_says_every_shard_is_fetched_while_its_heads_are_unknown(caches, capsys):
    code, out, err = run(capsys, "download", "Qwen2-VL-7B-Instruct")
    assert code == 2
    assert out == "Qwen2-VL-7B-Instruct: no localization heads are known yet, so every shard is fetched\n"
    assert "cannot download Qwen/Qwen2-VL-7B-Instruct: this machine is offline" in err


def test_verify_of_an_intact_cached_llava_checks_its_weights(caches, capsys):
    cache_7b_as_planted(caches)
    code, out, _ = run(capsys, "verify", "llava-1.5-7b")
    assert code == 0 and "llava-1.5-7b: 1 weight file(s) match their SHA-256" in out


def test_verify_of_a_damaged_cached_llava_names_the_file(caches, capsys):
    snapshot = cache_7b_as_planted(caches)
    blob = (snapshot / "model.safetensors").resolve()
    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")
    code, _, err = run(capsys, "verify", "llava-1.5-7b")
    assert code == 2 and "llava-1.5-7b is damaged: model.safetensors has SHA-256" in err


def test_verify_of_a_sam_preset_not_downloaded_says_how_to_get_it(caches, capsys):
    code, _, err = run(capsys, "verify", "sam-vit_h")
    assert code == 2
    assert err == "annotator models: error: sam-vit_h is not downloaded; run 'annotator models download sam-vit_h'\n"


def test_remove_deletes_a_cached_llava_and_list_shows_it_gone(caches, capsys):
    cache_7b_as_planted(caches)
    code, out, _ = run(capsys, "remove", "llava-1.5-7b")
    assert code == 0 and "llava-1.5-7b: removed, 1.32 MB freed" in out
    assert not (caches / "models--llava-hf--llava-1.5-7b-hf").exists()


def test_remove_of_a_sam_checkpoint_deletes_the_file(caches, capsys):
    path = segment.checkpoint_path("vit_l")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * 2000)
    code, out, _ = run(capsys, "remove", "sam-vit_l")
    assert code == 0 and "sam-vit_l: removed, 2.00 kB freed" in out and not path.exists()


def test_the_demo_model_is_never_removed(caches, capsys):
    code, _, err = run(capsys, "remove", "planted-llava")
    assert code == 2 and "ships with the app" in err
    assert (PLANTED_MODEL_DIR / "model.safetensors").is_file()


def test_an_unknown_preset_is_one_line_listing_the_presets(caches, capsys):
    code, _, err = run(capsys, "download", "llava-9")
    assert code == 2 and err.count("\n") == 1 and "no model preset 'llava-9'; the presets are llava-1.5-7b" in err


def test_verify_says_so_when_copied_files_carry_no_sha256_to_check(caches, capsys):
    snapshot = cache_7b_as_planted(caches)
    for link in snapshot.iterdir():
        target = link.resolve()
        link.unlink()
        shutil.copy(target, link)
    code, out, _ = run(capsys, "verify", "llava-1.5-7b")
    assert code == 0 and "complete, but no weight file carries a known SHA-256 to check" in out
