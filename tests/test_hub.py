"""Hub checkpoints: shard selection for a truncated load, loading from only those shards, the offline cache, and
the disk-space check before any byte."""

from __future__ import annotations

import json
import shutil
import socket
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from annotator.errors import ModelUnavailable
from annotator.models import hub, hub_download
from annotator.synthetic.planted import PLANTED_MODEL_DIR

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GB = 10**9
SHARDS = ("model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors")


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache and user cache under tmp_path, offline, with connections recorded."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    attempts: list = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: attempts.append(address))
    return cache, attempts


def llava_7b_shaped_index() -> dict[str, str]:
    """Tensor -> shard like llava-hf/llava-1.5-7b-hf: vision tower, projector, embeddings and layers 0-10 in the
    first shard, layer 11 split across the first two, 12-22 in the second, the rest, the norm and the LM head last."""
    weight_map = {"language_model.model.embed_tokens.weight": SHARDS[0]}
    for layer in range(24):
        weight_map[f"vision_tower.vision_model.encoder.layers.{layer}.mlp.fc1.weight"] = SHARDS[0]
    weight_map["vision_tower.vision_model.post_layernorm.weight"] = SHARDS[0]
    weight_map["multi_modal_projector.linear_1.weight"] = SHARDS[0]
    weight_map["multi_modal_projector.linear_2.weight"] = SHARDS[0]
    for layer in range(32):
        shard = SHARDS[0] if layer <= 10 else SHARDS[1] if layer <= 22 else SHARDS[2]
        for part in ("self_attn.q_proj", "self_attn.o_proj", "input_layernorm"):
            weight_map[f"language_model.model.layers.{layer}.{part}.weight"] = SHARDS[0] if layer == 11 else shard
        weight_map[f"language_model.model.layers.{layer}.mlp.down_proj.weight"] = shard
    weight_map["language_model.model.norm.weight"] = SHARDS[2]
    weight_map["language_model.lm_head.weight"] = SHARDS[2]
    return weight_map


REPO_7B = {
    "config.json": 950,
    "generation_config.json": 141,
    "preprocessor_config.json": 505,
    "tokenizer.json": 1_842_622,
    "tokenizer.model": 499_723,
    "tokenizer_config.json": 1_313,
    "special_tokens_map.json": 552,
    "chat_template.json": 701,
    "README.md": 4_000,
    ".gitattributes": 1_519,
    hub.INDEX_FILE: 70_000,
    SHARDS[0]: 4_978_265_800,
    SHARDS[1]: 4_970_422_232,
    SHARDS[2]: 4_180_800_360,
    "pytorch_model-00001-of-00003.bin": 4_978_286_000,
    "pytorch_model-00002-of-00003.bin": 4_970_440_000,
    "pytorch_model-00003-of-00003.bin": 4_180_815_000,
}


def test_a_7b_shaped_index_truncated_after_layer_14_needs_the_first_two_shards_only():
    plan = hub.plan_files("llava-hf/llava-1.5-7b-hf", REPO_7B, llava_7b_shaped_index(), truncate_after_layer=14)
    chosen = {f.name for f in plan.files}
    assert SHARDS[0] in chosen and SHARDS[1] in chosen
    assert [f.name for f in plan.skipped] == [SHARDS[2]]
    assert plan.bytes_saved == 4_180_800_360


def test_a_truncated_plan_keeps_config_tokenizer_and_processor_files_and_never_a_bin():
    plan = hub.plan_files("llava-hf/llava-1.5-7b-hf", REPO_7B, llava_7b_shaped_index(), truncate_after_layer=14)
    chosen = {f.name for f in plan.files}
    non_weights = {n for n in REPO_7B if not n.endswith((".safetensors", ".bin"))}
    assert chosen == non_weights | {SHARDS[0], SHARDS[1]}
    assert plan.bytes_needed == sum(REPO_7B[n] for n in chosen)


def test_layers_up_to_10_fit_in_the_first_shard_but_layer_11_is_split_across_two():
    weight_map = llava_7b_shaped_index()
    up_to_10 = hub.plan_files("r/m", REPO_7B, weight_map, truncate_after_layer=10)
    up_to_11 = hub.plan_files("r/m", REPO_7B, weight_map, truncate_after_layer=11)
    assert [f.name for f in up_to_10.skipped] == [SHARDS[1], SHARDS[2]]
    assert [f.name for f in up_to_11.skipped] == [SHARDS[2]]


def test_the_whole_model_plan_keeps_every_shard_and_saves_nothing():
    plan = hub.plan_files("r/m", REPO_7B, llava_7b_shaped_index(), truncate_after_layer=None)
    assert {SHARDS[0], SHARDS[1], SHARDS[2]} <= {f.name for f in plan.files}
    assert plan.bytes_saved == 0
    assert not [f for f in plan.files if f.name.endswith(".bin")]


def test_tensors_of_both_checkpoint_namings_are_classified_by_layer():
    assert hub.tensor_needed("model.language_model.layers.3.mlp.up_proj.weight", 3)
    assert not hub.tensor_needed("model.language_model.layers.4.mlp.up_proj.weight", 3)
    assert not hub.tensor_needed("lm_head.weight", 3)
    assert not hub.tensor_needed("model.language_model.norm.weight", 3)
    assert hub.tensor_needed("model.vision_tower.vision_model.encoder.layers.20.mlp.fc1.weight", 3)
    assert hub.tensor_needed("model.language_model.embed_tokens.weight", 3)


def test_qwen_hub_tensors_named_model_layers_are_classified_by_layer():
    assert hub.tensor_needed("model.layers.3.self_attn.q_proj.bias", 3)
    assert not hub.tensor_needed("model.layers.4.self_attn.q_proj.bias", 3)
    assert not hub.tensor_needed("model.norm.weight", 3)
    assert not hub.tensor_needed("lm_head.weight", 3)
    assert hub.tensor_needed("model.embed_tokens.weight", 3)
    assert hub.tensor_needed("visual.blocks.31.mlp.fc2.weight", 3)
    assert hub.tensor_needed("visual.merger.ln_q.weight", 3)


def qwen2_vl_7b_shaped_index() -> dict[str, str]:
    """Tensor -> shard like Qwen/Qwen2-VL-7B-Instruct: the vision tower, the embeddings and layers 0-3 in the first
    of five shards, seven layers a shard after that, the norm and the LM head in the last."""
    names = [f"model-0000{i}-of-00005.safetensors" for i in range(1, 6)]
    weight_map = {"model.embed_tokens.weight": names[0], "visual.merger.mlp.2.weight": names[0]}
    for block in range(32):
        weight_map[f"visual.blocks.{block}.attn.qkv.weight"] = names[0]
    for layer in range(28):
        for part in ("self_attn.q_proj.weight", "self_attn.q_proj.bias", "mlp.down_proj.weight"):
            weight_map[f"model.layers.{layer}.{part}"] = names[min(4, (layer + 3) // 7)]
    weight_map["model.norm.weight"] = names[4]
    weight_map["lm_head.weight"] = names[4]
    return weight_map


def test_a_qwen2_vl_index_truncated_after_layer_10_leaves_out_the_shards_of_later_layers():
    index = qwen2_vl_7b_shaped_index()
    repo = {name: 4 * GB for name in set(index.values())} | {"config.json": 1_000, hub.INDEX_FILE: 60_000}
    plan = hub.plan_files("Qwen/Qwen2-VL-7B-Instruct", repo, index, truncate_after_layer=10)
    shards = sorted(f.name for f in plan.files if f.name.endswith(".safetensors"))
    assert shards == ["model-00001-of-00005.safetensors", "model-00002-of-00005.safetensors"]
    assert plan.bytes_saved == 12 * GB


def test_a_preset_whose_heads_are_unknown_plans_every_shard():
    from annotator.models.presets import load_presets

    preset = load_presets().get("Qwen2-VL-7B-Instruct")
    index = qwen2_vl_7b_shaped_index()
    repo = {name: 4 * GB for name in set(index.values())} | {"config.json": 1_000}
    plan = hub.plan_files(preset.hub_id, repo, index, truncate_after_layer=preset.deepest_head_layer)
    assert len([f for f in plan.files if f.name.endswith(".safetensors")]) == 5
    assert plan.bytes_saved == 0


@pytest.fixture(scope="module")
def sharded_planted(tmp_path_factory) -> Path:
    """The planted model saved in shards of at most 200 kB, with its tokenizer and processor files."""
    from transformers import LlavaForConditionalGeneration

    folder = tmp_path_factory.mktemp("planted-sharded")
    model = LlavaForConditionalGeneration.from_pretrained(PLANTED_MODEL_DIR)
    model.save_pretrained(folder, max_shard_size="200kB")
    for source in PLANTED_MODEL_DIR.iterdir():
        if not source.name.endswith(".safetensors") and not (folder / source.name).exists():
            shutil.copy(source, folder / source.name)
    return folder


def test_the_planted_model_loaded_from_only_the_selected_shards_gives_the_full_models_maps(
    sharded_planted, hf_cache, tmp_path
):
    from annotator.lvlm.engine import LvlmEngine

    listing = {p.name: p.stat().st_size for p in sharded_planted.iterdir()}
    weight_map = json.loads((sharded_planted / hub.INDEX_FILE).read_text())["weight_map"]
    plan = hub.plan_files("testorg/planted-llava", listing, weight_map, truncate_after_layer=3)
    assert plan.skipped, "the planted model's upper layers should fill shards of their own"
    partial = tmp_path / "only-selected"
    partial.mkdir()
    for repo_file in plan.files:
        shutil.copy(sharded_planted / repo_file.name, partial / repo_file.name)
    folder = hub.build_grounding_folder(partial, "testorg/planted-llava", 3)

    truncated = LvlmEngine.load(folder, truncate_after_layer=3)
    full = LvlmEngine.load(PLANTED_MODEL_DIR)
    image = np.full((84, 126, 3), 128, dtype=np.uint8)
    image[20:60, 30:70] = (230, 30, 30)
    heads = [(3, 5), (2, 0)]
    np.testing.assert_allclose(
        truncated.image_attention(image, "the red square", heads),
        full.image_attention(image, "the red square", heads),
        rtol=0,
        atol=1e-6,
    )


def lay_out_hub_cache(cache: Path, repo_id: str, source: Path) -> Path:
    """The Hugging Face cache layout for `repo_id` at one commit, holding the files of `source`."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(source, snapshot)
    return snapshot


def test_a_hub_style_cache_laid_out_by_the_test_is_found_offline_and_loads(hf_cache):
    from annotator.lvlm.engine import LvlmEngine

    cache, attempts = hf_cache
    snapshot = lay_out_hub_cache(cache, "testorg/planted-llava", PLANTED_MODEL_DIR)
    found = hub.find_cached("testorg/planted-llava")
    assert found == hub.CachedModel(
        "testorg/planted-llava", snapshot, None, sum(p.stat().st_size for p in snapshot.iterdir())
    )
    engine = LvlmEngine.load("testorg/planted-llava")
    assert engine.num_layers == 6
    assert attempts == []


def test_a_truncated_download_is_found_offline_through_its_grounding_folder(sharded_planted, hf_cache):
    cache, attempts = hf_cache
    snapshot = lay_out_hub_cache(cache, "testorg/planted-llava", sharded_planted)
    listing = {p.name: p.stat().st_size for p in snapshot.iterdir()}
    weight_map = json.loads((snapshot / hub.INDEX_FILE).read_text())["weight_map"]
    for skipped in hub.plan_files("testorg/planted-llava", listing, weight_map, 3).skipped:
        (snapshot / skipped.name).unlink()
    assert hub.find_cached("testorg/planted-llava") is None
    folder = hub.build_grounding_folder(snapshot, "testorg/planted-llava", 3)
    found = hub.find_cached("testorg/planted-llava", truncate_after_layer=3)
    assert found is not None and found.path == folder and found.truncate_after_layer == 3
    assert attempts == []


def test_a_missing_model_offline_gives_a_message_naming_the_cache_and_the_download_command(hf_cache):
    cache, attempts = hf_cache
    with pytest.raises(ModelUnavailable) as error:
        hub.require_cached("testorg/absent-llava", 14, preset_name="absent-7b")
    message = str(error.value)
    assert "testorg/absent-llava is not downloaded" in message
    assert str(cache) in message and "offline" in message
    assert "annotator models download absent-7b" in message
    assert attempts == []


def test_a_disk_too_small_is_reported_before_any_byte_is_fetched(hf_cache, monkeypatch):
    import huggingface_hub

    cache, _ = hf_cache
    fetched: list[str] = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, **kw: fetched.append(name))
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(hub_download.shutil, "disk_usage", lambda path: Usage(100 * GB, 99 * GB, 1 * GB))
    plan = hub.plan_files("llava-hf/llava-1.5-7b-hf", REPO_7B, llava_7b_shaped_index(), truncate_after_layer=14)
    with pytest.raises(ModelUnavailable, match=r"not enough disk space in .*needs 9\.95 GB and 1\.00 GB are free"):
        hub.download(plan)
    assert fetched == []
    assert not cache.exists()


def test_the_disk_check_counts_the_bytes_already_in_a_partial_shard_as_downloaded(hf_cache, monkeypatch):
    cache, _ = hf_cache
    blobs = cache / "models--llava-hf--llava-1.5-7b-hf" / "blobs"
    blobs.mkdir(parents=True)
    with open(blobs / f"{'b' * 64}.part", "wb") as part:
        part.truncate(2 * GB)  # sparse: counts 2 GB, takes no disk
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(hub_download.shutil, "disk_usage", lambda path: Usage(100 * GB, 99 * GB, 1 * GB))
    plan = hub.plan_files("llava-hf/llava-1.5-7b-hf", REPO_7B, llava_7b_shaped_index(), truncate_after_layer=14)
    with pytest.raises(ModelUnavailable, match=r"needs 7\.95 GB and 1\.00 GB are free"):
        hub.download(plan)


def test_the_app_loads_a_hub_id_from_its_truncated_download_offline(sharded_planted, hf_cache, tmp_path):
    from annotator.ui.model_loading import load_models
    from annotator.ui.settings import ModelSettings

    cache, attempts = hf_cache
    snapshot = lay_out_hub_cache(cache, "testorg/planted-llava", sharded_planted)
    listing = {p.name: p.stat().st_size for p in snapshot.iterdir()}
    weight_map = json.loads((snapshot / hub.INDEX_FILE).read_text())["weight_map"]
    for repo_file in hub.plan_files("testorg/planted-llava", listing, weight_map, 3).skipped:
        (snapshot / repo_file.name).unlink()
    hub.build_grounding_folder(snapshot, "testorg/planted-llava", 3)
    heads = json.loads((PLANTED_MODEL_DIR / "heads.json").read_text()) | {"heads": [[3, 5], [2, 0]]}
    (tmp_path / "heads.json").write_text(json.dumps(heads))
    settings = ModelSettings(model="testorg/planted-llava", heads_file=str(tmp_path / "heads.json"), sam_type="none")
    loaded = load_models(settings, lambda message: None)
    assert loaded.info.model == "testorg/planted-llava" and loaded.info.heads == ((3, 5), (2, 0))
    assert attempts == []


def test_plan_download_asks_the_hub_for_sizes_and_the_shard_map_and_writes_nothing(hf_cache, monkeypatch):
    """HfApi answers from the 7B-shaped listing; the plan is the one for that listing at the answered commit."""
    from types import SimpleNamespace

    from huggingface_hub import HfApi, constants

    cache, _ = hf_cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    siblings = [SimpleNamespace(rfilename=name, size=size) for name, size in REPO_7B.items()]
    monkeypatch.setattr(HfApi, "model_info", lambda self, repo, **kw: SimpleNamespace(sha="c" * 40, siblings=siblings))
    monkeypatch.setattr(
        HfApi, "get_safetensors_metadata", lambda self, repo, **kw: SimpleNamespace(weight_map=llava_7b_shaped_index())
    )
    plan = hub.plan_download("llava-hf/llava-1.5-7b-hf", 14)
    assert plan == hub.plan_files(
        "llava-hf/llava-1.5-7b-hf", REPO_7B, llava_7b_shaped_index(), 14, revision="c" * 40, ref="main"
    )
    assert not cache.exists()


def test_plan_download_offline_says_so_without_a_connection(hf_cache):
    _, attempts = hf_cache
    with pytest.raises(ModelUnavailable, match=r"cannot download llava-hf/llava-1\.5-7b-hf: this machine is offline"):
        hub.plan_download("llava-hf/llava-1.5-7b-hf", 14)
    assert attempts == []
