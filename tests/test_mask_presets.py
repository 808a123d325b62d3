"""SAM 2.1 and SAM-HQ as presets and on the command line: `models download/list/verify/remove` through the Hub code
(a stand-in Hub on 127.0.0.1), `Segmenter.load` from the Hugging Face cache, `prelabel --mask-model NAME` and
`--sam-type` kept as the SAM alias."""

from __future__ import annotations

import json

import numpy as np
import pytest

from annotator.cli import main
from annotator.commands.prelabel_command import build_parser
from annotator.models import hub, presets
from annotator.paths import RESOURCES
from annotator.segmentation.segment import Segmenter, resolve_mask_model
from annotator.synthetic.planted import PLANTED_MODEL_DIR
from annotator.synthetic.scene_folder import write_scene_folder
from tests.fake_hub import COMMIT, FakeHub
from tests.tiny_sam2 import SAM2_TINY, build_tiny_sam2, cache_tiny_sam2, hub_cache  # noqa: F401 (fixture)

MASK_PRESETS = [
    {"name": "sam2.1-tiny", "model_type": "sam2.1-tiny", "description": "SAM 2.1 tiny"},
    {"name": "sam-hq-vit_b", "model_type": "sam-hq-vit_b", "description": "SAM-HQ ViT-B"},
]


@pytest.fixture
def mask_presets(tmp_path, monkeypatch):
    """The shipped presets with SAM 2.1 tiny and SAM-HQ ViT-B among their mask models."""
    data = json.loads((RESOURCES / "models.json").read_text(encoding="utf-8"))
    listed = {entry["name"] for entry in data["sam"]}
    data["sam"] += [entry for entry in MASK_PRESETS if entry["name"] not in listed]
    path = tmp_path / "models.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    load = presets.load_presets
    monkeypatch.setattr(presets, "load_presets", lambda path=path: load(path))
    return path


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(90, 160, 3), dtype=np.uint8)


def test_mask_model_takes_every_mask_model_and_sam_type_stays_the_sam_alias(tmp_path):
    parse = build_parser().parse_args
    base = [str(tmp_path), "--expression", "the dog"]
    assert parse(base).sam_type == "auto"
    assert parse([*base, "--mask-model", "sam2.1-tiny"]).sam_type == "sam2.1-tiny"
    assert parse([*base, "--mask-model", "sam-hq-vit_l"]).sam_type == "sam-hq-vit_l"
    assert parse([*base, "--mask-model", "sam-vit_b"]).sam_type == "vit_b"
    assert parse([*base, "--sam-type", "vit_l"]).sam_type == "vit_l"


def test_an_unknown_mask_model_is_one_line_listing_the_mask_models(tmp_path, capsys):
    code = main(["prelabel", str(tmp_path), "--expression", "the dog", "--mask-model", "sam3"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "unknown mask model 'sam3'; use one of vit_h, vit_l, vit_b, sam2.1-tiny," in err


def test_auto_is_sam2_tiny_on_a_cpu_and_sam2_large_on_a_gpu():
    assert resolve_mask_model("auto", "cpu") == "sam2.1-tiny"
    assert resolve_mask_model("auto", "cuda:0") == "sam2.1-large"
    assert resolve_mask_model("sam-hq-vit_b", "cpu") == "sam-hq-vit_b"


def test_a_mask_model_the_presets_file_does_not_list_is_still_handled_by_its_name(hub_cache, capsys):
    assert main(["models", "verify", "sam2.1-small"]) == 2
    assert "sam2.1-small is not downloaded; run 'annotator models download sam2.1-small'" in capsys.readouterr().err


def test_a_sam2_preset_downloads_through_the_hub_code_and_then_loads_from_the_cache(
    mask_presets, hub_cache, tmp_path, monkeypatch, capsys
):
    backend = build_tiny_sam2()
    served = tmp_path / "served"
    backend.model.save_pretrained(served)
    backend.image_processor.save_pretrained(served)
    fake = FakeHub(SAM2_TINY, served)
    try:
        fake.serve_to_huggingface_hub(monkeypatch, hub_cache)
        listing = {name: len(data) for name, data in fake.files.items()}
        plan = hub.plan_files(SAM2_TINY, listing, None, None, revision=COMMIT, ref="main")
        monkeypatch.setattr(hub, "plan_download", lambda repo_id, layer: plan)
        assert main(["models", "download", "sam2.1-tiny"]) == 0
    finally:
        fake.close()
    assert "sam2.1-tiny: ready in " in capsys.readouterr().out
    with Segmenter(backend) as reference, Segmenter.load("sam2.1-tiny", device="cpu") as loaded:
        box = (10.0, 20.0, 90.0, 70.0)
        assert np.array_equal(loaded.segment_box(0, _image(1), box).mask, reference.segment_box(0, _image(1), box).mask)


def test_a_cached_sam2_preset_is_listed_verified_and_removed_like_a_hub_model(mask_presets, hub_cache, capsys):
    cache_tiny_sam2(hub_cache, build_tiny_sam2())
    assert main(["models", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.partition("\n\n")[0].splitlines()[1:]}
    assert rows["sam2.1-tiny"].split()[1:3] == ["whole", "model"]
    assert rows["sam-hq-vit_b"].split()[1] == "no"
    assert main(["models", "verify", "sam2.1-tiny"]) == 0
    assert "sam2.1-tiny: complete" in capsys.readouterr().out
    assert main(["models", "remove", "sam2.1-tiny"]) == 0
    assert "sam2.1-tiny: removed" in capsys.readouterr().out
    assert hub.find_cached(SAM2_TINY) is None


def test_verifying_a_sam_hq_preset_not_downloaded_says_how_to_get_it(mask_presets, hub_cache, capsys):
    assert main(["models", "verify", "sam-hq-vit_b"]) == 2
    assert "sam-hq-vit_b is not downloaded; run 'annotator models download sam-hq-vit_b'" in capsys.readouterr().err


def test_prelabel_with_mask_model_sam2_tiny_stores_sam_masks(hub_cache, tmp_path):
    from annotator.project.store import ProjectStore

    cache_tiny_sam2(hub_cache, build_tiny_sam2())
    folder = tmp_path / "images"
    ground_truth = write_scene_folder(folder, 2, seed=3)
    command = [
        "prelabel", str(folder), "--expressions", str(ground_truth), "--model", str(PLANTED_MODEL_DIR),
        "--device", "cpu", "--masks", "--mask-model", "sam2.1-tiny", "--out", str(tmp_path / "out.json"),
    ]  # fmt: skip
    assert main(command) == 0
    with ProjectStore.for_folder(folder) as store:
        annotations = store.annotations()
    assert len(annotations) == 2
    for annotation in annotations:
        if annotation.rle is not None:
            assert annotation.extra["mask_kind"] == "sam" and annotation.box_xyxy == annotation.rle.box_xyxy
        else:
            assert annotation.extra["mask_note"]


def test_prelabel_by_default_runs_sam2_tiny_on_the_cpu_and_says_so(hub_cache, tmp_path, capsys):
    cache_tiny_sam2(hub_cache, build_tiny_sam2())
    folder = tmp_path / "images"
    ground_truth = write_scene_folder(folder, 1, seed=4)
    command = [
        "prelabel", str(folder), "--expressions", str(ground_truth), "--model", str(PLANTED_MODEL_DIR),
        "--device", "cpu", "--masks", "--out", str(tmp_path / "out.json"),
    ]  # fmt: skip
    assert main(command) == 0
    assert "masks: SAM 2.1 tiny on cpu" in capsys.readouterr().err
