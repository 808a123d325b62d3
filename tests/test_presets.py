"""Model presets read from resources/models.json, what of them is on this machine, and a SAM preset's download
from a local HTTP server on 127.0.0.1 (the byte-level cases of download.py are tested in test_download.py)."""

from __future__ import annotations

import json
from collections import namedtuple

import pytest

from annotator.errors import ModelUnavailable
from annotator.models import hub_download, presets
from annotator.segmentation import segment
from annotator.download import file_sha256, partial_path
from annotator.synthetic.planted import PLANTED_MODEL_DIR
from annotator.models.presets import DemoPreset, LvlmPreset, SamPreset, download_sam, load_presets, local_copy
from annotator.segmentation.segment import CheckpointSpec
from tests.test_download import HALF, PAYLOAD, PAYLOAD_SHA256, FileServer


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


@pytest.fixture
def served_vit_b(server, tmp_path, monkeypatch) -> SamPreset:
    """The vit_b preset with its checkpoint served by the local server, and the user cache under tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(segment.SAM_CHECKPOINTS, "vit_b", CheckpointSpec(server.url, len(PAYLOAD), PAYLOAD_SHA256))
    preset = load_presets().get("sam-vit_b")
    assert isinstance(preset, SamPreset)
    return preset


def test_the_presets_offer_llava_and_qwen_checkpoints_three_sam_sizes_and_two_demos():
    loaded = load_presets()
    assert [p.hub_id for p in loaded.lvlm] == [
        "llava-hf/llava-1.5-7b-hf",
        "llava-hf/llava-1.5-13b-hf",
        "Qwen/Qwen2-VL-2B-Instruct",
        "Qwen/Qwen2-VL-7B-Instruct",
        "Qwen/Qwen2.5-VL-3B-Instruct",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "Qwen/Qwen3-VL-2B-Instruct",
        "Qwen/Qwen3-VL-4B-Instruct",
        "Qwen/Qwen3-VL-8B-Instruct",
        "llava-hf/llava-v1.6-mistral-7b-hf",
        "llava-hf/llava-v1.6-vicuna-7b-hf",
        "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
        "deepseek-community/deepseek-vl-1.3b-chat",
        "deepseek-community/deepseek-vl-7b-chat",
        "OpenGVLab/InternVL3-1B-hf",
        "OpenGVLab/InternVL3-8B-hf",
    ]
    assert [p.family for p in loaded.lvlm] == (
        ["llava-1.5"] * 2 + ["qwen2-vl"] * 2 + ["qwen2.5-vl"] * 2 + ["qwen3-vl"] * 3 + ["llava-next"] * 2
        + ["llava-onevision", "deepseek-vl", "deepseek-vl-hybrid"] + ["internvl"] * 2
    )
    assert [p.model_type for p in loaded.sam] == [
        "vit_h",
        "vit_l",
        "vit_b",
        "sam2.1-tiny",
        "sam2.1-small",
        "sam2.1-base-plus",
        "sam2.1-large",
        "sam-hq-vit_b",
        "sam-hq-vit_l",
        "sam-hq-vit_h",
    ]
    assert [d.name for d in loaded.demos] == ["planted-llava", "planted-qwen2-vl"]
    assert loaded.demo.name == "planted-llava"


def test_no_qwen_preset_ships_heads_so_none_is_truncated_and_its_download_is_whole():
    qwen = [preset for preset in load_presets().lvlm if preset.family.startswith("qwen")]
    assert len(qwen) == 7
    for preset in qwen:
        assert preset.heads_file is None and not preset.heads_known
        assert preset.deepest_head_layer is None
        assert preset.gpu_memory.truncated_gb is None and preset.gpu_memory.truncated_4bit_gb is None
        assert preset.gpu_memory.full_gb == pytest.approx(2 * preset.parameters / 1e9, abs=0.05)
        assert preset.size_on_disk_gb == pytest.approx(2 * preset.parameters / 1e9, abs=0.005)


def test_the_qwen2_vl_7b_parameter_count_is_its_configs_arithmetic():
    hidden, mlp, kv_dim, vocab = 3584, 18944, 4 * 128, 152064
    layer = 2 * hidden * hidden + hidden + 2 * (hidden * kv_dim + kv_dim) + 3 * hidden * mlp + 2 * hidden
    vision = 675_759_104
    preset = load_presets().get("Qwen2-VL-7B-Instruct")
    assert preset.num_layers == 28
    assert preset.parameters == vision + 2 * vocab * hidden + 28 * layer + hidden


def test_each_llava_preset_truncates_after_the_deepest_layer_of_its_shipped_heads():
    loaded = load_presets()
    assert loaded.get("llava-1.5-7b").deepest_head_layer == 14  # heads (14, 24), (14, 13), (14, 26)
    assert loaded.get("llava-1.5-13b").deepest_head_layer == 16  # heads (15, 39), (16, 30), (7, 2)


def test_gpu_memory_estimates_of_presets_with_heads_shrink_from_full_to_truncated_to_4bit():
    for preset in (p for p in load_presets().lvlm if p.heads_known):
        memory = preset.gpu_memory
        assert preset.supports_4bit and preset.default_dtype == "bfloat16"
        assert memory.full_gb > memory.truncated_gb > memory.truncated_4bit_gb > 0


def test_the_7b_truncated_estimate_is_its_parameter_count_at_two_bytes():
    vision_and_projector = 0.304e9 + 1024 * 4096 + 4096 * 4096
    embeddings = 32064 * 4096
    layer = 4 * 4096 * 4096 + 3 * 4096 * 11008
    assert load_presets().get("llava-1.5-7b").gpu_memory.truncated_gb == pytest.approx(
        2 * (vision_and_projector + embeddings + 15 * layer) / 1e9, abs=0.05
    )


def test_sam_presets_take_url_size_and_sha256_from_segment_not_a_second_copy():
    for preset in load_presets().sam:
        if preset.hub_id is None:
            assert preset.checkpoint is segment.SAM_CHECKPOINTS[preset.model_type]
    assert "sha256" not in json.dumps(json.loads(presets.PRESETS_FILE.read_text())["sam"])


def test_the_demo_preset_is_the_shipped_planted_model_folder():
    demo = load_presets().demo
    assert isinstance(demo, DemoPreset) and demo.folder == PLANTED_MODEL_DIR
    copy = local_copy(demo)
    assert copy is not None and copy.complete and copy.path == PLANTED_MODEL_DIR


def test_the_shipped_planted_qwen2_vl_is_a_demo_preset_with_its_own_heads():
    from annotator.synthetic.planted_qwen import PLANTED_QWEN_DIR

    demo = load_presets().get("planted-qwen2-vl")
    assert isinstance(demo, DemoPreset) and demo.folder == PLANTED_QWEN_DIR and demo.heads_known
    assert local_copy(demo).complete


def test_a_llava_preset_is_also_found_by_its_hub_id():
    assert load_presets().get("llava-hf/llava-1.5-13b-hf").name == "llava-1.5-13b"


def test_an_unknown_preset_name_lists_the_known_ones():
    listed = r"no model preset 'llava-2'; the presets are llava-1\.5-7b, llava-1\.5-13b, Qwen2-VL-2B-Instruct, "
    with pytest.raises(ModelUnavailable, match=listed):
        load_presets().get("llava-2")


def test_a_presets_file_without_its_sam_section_is_reported_with_its_path(tmp_path):
    broken = tmp_path / "models.json"
    data = json.loads(presets.PRESETS_FILE.read_text())
    del data["sam"]
    broken.write_text(json.dumps(data))
    with pytest.raises(ModelUnavailable, match=rf"the model presets {broken} are malformed: KeyError 'sam'"):
        load_presets(broken)


def test_a_preset_without_heads_but_with_a_truncated_estimate_is_refused_naming_it(tmp_path):
    broken = tmp_path / "models.json"
    data = json.loads(presets.PRESETS_FILE.read_text())
    data["lvlm"][3]["gpu_memory_gb"]["truncated"] = 5.0
    broken.write_text(json.dumps(data))
    with pytest.raises(ModelUnavailable, match=r"Qwen2-VL-7B-Instruct has no heads_file, so its truncated estimates"):
        load_presets(broken)


def test_the_qwen_demo_preset_is_the_planted_qwen2_vl_folder_and_counts_its_own_heads(tmp_path, monkeypatch):
    monkeypatch.setattr(presets, "MODELS_DIR", tmp_path)
    demo = load_presets().get("planted-qwen2-vl")
    assert isinstance(demo, DemoPreset) and demo.folder == tmp_path / "planted-qwen2-vl"
    assert demo.family == "qwen2-vl" and not demo.heads_known
    demo.folder.mkdir()
    (demo.folder / "heads.json").write_text("{}")
    assert demo.heads_known


def test_a_llava_preset_not_in_the_cache_has_no_local_copy(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    preset = load_presets().get("llava-1.5-7b")
    assert isinstance(preset, LvlmPreset) and local_copy(preset) is None


def test_a_sam_preset_downloads_from_the_server_with_progress_and_its_checksum(served_vit_b):
    calls: list[tuple[int, int | None]] = []
    path = download_sam(served_vit_b, lambda done, total: calls.append((done, total)))
    assert path == segment.checkpoint_path("vit_b") and path.read_bytes() == PAYLOAD
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert local_copy(served_vit_b).complete


def test_a_sam_download_dropped_half_way_resumes_to_the_right_sha256(served_vit_b, server):
    server.drops_left = 1
    path = download_sam(served_vit_b)
    assert server.range_headers == [None, f"bytes={HALF}-"]
    assert file_sha256(path) == PAYLOAD_SHA256


def test_a_sam_download_with_the_wrong_checksum_is_refused_and_leaves_no_file(server, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(segment.SAM_CHECKPOINTS, "vit_b", CheckpointSpec(server.url, len(PAYLOAD), "0" * 64))
    with pytest.raises(ModelUnavailable, match="SHA-256"):
        download_sam(load_presets().get("sam-vit_b"))
    path = segment.checkpoint_path("vit_b")
    assert not path.exists() and not partial_path(path).exists()


def test_a_cancelled_sam_download_keeps_a_partial_that_the_next_download_finishes(served_vit_b, server):
    class Cancelled(Exception):
        """Not an OSError: download.py takes those for a dropped connection and resumes."""

    def cancel(done: int, total: int | None) -> None:
        raise Cancelled

    server.drops_left = 1
    with pytest.raises(Cancelled):
        download_sam(served_vit_b, cancel)
    path = segment.checkpoint_path("vit_b")
    assert not path.exists() and partial_path(path).stat().st_size == HALF
    assert local_copy(served_vit_b).complete is False
    assert download_sam(served_vit_b).read_bytes() == PAYLOAD
    assert server.range_headers[-1] == f"bytes={HALF}-"


def test_a_sam_download_on_a_full_disk_fails_before_any_request(served_vit_b, server, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(hub_download.shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(ModelUnavailable, match=r"not enough disk space .* needs 1\.05 MB and 1\.00 kB are free"):
        download_sam(served_vit_b)
    assert server.range_headers == []
    assert local_copy(served_vit_b) is None
