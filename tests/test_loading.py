"""The one loading path of the app, the CLI and the Ray actors: model references (folder, hub id, preset name),
this machine's copy found offline (whole snapshot or truncated grounding folder), a download of only the grounding
files when asked, and the 4-bit choice reaching the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from annotator.errors import ModelUnavailable
from annotator.models import hub, loading
from annotator.synthetic.planted import PLANTED_MODEL_DIR
from tests.test_hub import hf_cache, lay_out_hub_cache, sharded_planted  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PLANTED_HEADS = ((3, 5), (4, 2), (5, 6))


@pytest.mark.parametrize(
    ("model", "hub_id"),
    [
        ("llava-1.5-7b", "llava-hf/llava-1.5-7b-hf"),
        ("llava-1.5-13b", "llava-hf/llava-1.5-13b-hf"),
        ("llava-hf/llava-1.5-7b-hf", "llava-hf/llava-1.5-7b-hf"),
        ("someone/llava-finetune", "someone/llava-finetune"),
        (str(PLANTED_MODEL_DIR), None),
        ("./models/llava", None),
        ("~/llava", None),
        ("/abs/path/llava", None),
        ("a/b/c", None),
        ("C:\\models\\llava", None),
    ],
)
def test_a_reference_names_a_hub_model_by_id_or_preset_name_else_a_folder(model, hub_id):
    assert loading.hub_id_of(model) == hub_id


def test_a_local_folder_is_loaded_as_it_is(hf_cache):
    assert loading.model_folder(str(PLANTED_MODEL_DIR), 3) == str(PLANTED_MODEL_DIR)


def test_a_missing_folder_is_one_clear_message(hf_cache, tmp_path):
    with pytest.raises(ModelUnavailable, match=r"no LLaVA-1.5 folder at .*no-such-folder; give a folder saved"):
        loading.model_folder(str(tmp_path / "no-such-folder"), 3)


def test_a_preset_not_downloaded_names_the_cache_and_its_download_command_without_the_network(hf_cache):
    cache, attempts = hf_cache
    message = loading.missing_model_message("llava-1.5-7b", 14)
    assert message is not None
    assert "llava-hf/llava-1.5-7b-hf is not downloaded" in message and str(cache) in message
    assert "annotator models download llava-1.5-7b" in message
    assert attempts == []


def test_a_cached_config_without_its_weights_counts_as_missing(hf_cache, tmp_path):
    cache, _ = hf_cache
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    (config_only / "config.json").write_text((PLANTED_MODEL_DIR / "config.json").read_text())
    lay_out_hub_cache(cache, "testorg/planted-llava", config_only)
    assert "testorg/planted-llava is not downloaded" in loading.missing_model_message("testorg/planted-llava", 5)


def test_a_whole_cached_snapshot_is_the_folder_to_load(hf_cache):
    cache, attempts = hf_cache
    snapshot = lay_out_hub_cache(cache, "testorg/planted-llava", PLANTED_MODEL_DIR)
    assert loading.model_folder("testorg/planted-llava", 5) == str(snapshot)
    assert loading.missing_model_message("testorg/planted-llava", 5) is None
    assert attempts == []


def test_a_truncated_download_is_loaded_from_its_grounding_folder_and_not_from_the_hub(sharded_planted, hf_cache):
    cache, attempts = hf_cache
    snapshot = lay_out_hub_cache(cache, "testorg/planted-llava", sharded_planted)
    listing = {p.name: p.stat().st_size for p in snapshot.iterdir()}
    weight_map = json.loads((snapshot / hub.INDEX_FILE).read_text())["weight_map"]
    plan = hub.plan_files("testorg/planted-llava", listing, weight_map, 3)
    assert plan.skipped
    for skipped in plan.skipped:
        (snapshot / skipped.name).unlink()
    folder = hub.build_grounding_folder(snapshot, "testorg/planted-llava", 3)
    assert loading.model_folder("testorg/planted-llava", 3) == str(folder)
    grounder = loading.load_grounder("testorg/planted-llava", [(3, 5), (2, 0)])
    assert grounder.engine.num_layers == 4 and grounder.engine.model_id == "testorg/planted-llava"
    assert attempts == []


def test_fetch_downloads_only_the_grounding_plan_and_reports_progress(hf_cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    plan = hub.DownloadPlan("testorg/planted-llava", "c" * 40, 5, (hub.RepoFile("config.json", 10),), ())
    asked: list[tuple[str, int | None]] = []
    monkeypatch.setattr(hub, "plan_download", lambda repo, layer: asked.append((repo, layer)) or plan)

    def fake_download(given, progress):
        assert given is plan
        progress(10, 10)
        return PLANTED_MODEL_DIR

    monkeypatch.setattr(hub, "download", fake_download)
    seen: list[tuple[int, int | None]] = []
    folder = loading.model_folder("testorg/planted-llava", 5, fetch=True, progress=lambda d, t: seen.append((d, t)))
    assert folder == str(PLANTED_MODEL_DIR)
    assert asked == [("testorg/planted-llava", 5)] and seen == [(10, 10)]


def test_fetch_on_an_offline_machine_refuses_with_the_cache_message(hf_cache, monkeypatch):
    monkeypatch.setattr(hub, "plan_download", lambda *a: pytest.fail("the Hub was asked while offline"))
    with pytest.raises(ModelUnavailable, match="is not downloaded .*offline"):
        loading.model_folder("llava-1.5-13b", 16, fetch=True)


def test_heads_outside_the_model_are_one_clear_message(hf_cache):
    with pytest.raises(ModelUnavailable, match=r"the heads \[\(3, 5\), \(5, 40\)\] do not fit"):
        loading.load_grounder(str(PLANTED_MODEL_DIR), [(3, 5), (5, 40)])


def test_no_heads_is_refused(hf_cache):
    with pytest.raises(ModelUnavailable, match="no localization heads"):
        loading.load_grounder(str(PLANTED_MODEL_DIR), [])


def test_4bit_reaches_the_engine_and_is_refused_on_a_cpu(hf_cache):
    with pytest.raises(ModelUnavailable, match="4-bit loading of .* needs a CUDA GPU; this run is on cpu"):
        loading.load_grounder(str(PLANTED_MODEL_DIR), PLANTED_HEADS, device="cpu", load_in_4bit=True)


def test_the_grounder_truncates_after_the_deepest_head(hf_cache):
    grounder = loading.load_grounder(str(PLANTED_MODEL_DIR), [(3, 5), (2, 0)], prefix_cache_size=2)
    assert grounder.engine.num_layers == 4
    assert Path(grounder.engine.model_id) == PLANTED_MODEL_DIR
