"""The app's mask models: Settings offers SAM, SAM 2.1 and SAM-HQ, and loading the models builds the chosen one from
the Hugging Face cache, or leaves a note saying how to download it."""

from __future__ import annotations

import numpy as np

from annotator.segmentation.catalog import MASK_MODELS
from annotator.ui.model_loading import load_models
from annotator.ui.settings import ModelSettings
from annotator.ui.settings_dialog import SettingsDialog
from tests.tiny_sam2 import build_tiny_sam2, cache_tiny_sam2, hub_cache  # noqa: F401 (fixture)
from tests.ui_fixtures import (  # noqa: F401 (fixtures)
    MODEL_TIMEOUT_MS,
    app_settings,
    isolated_qsettings,
    make_window,
    planted_model_path,
)


def test_settings_offer_every_mask_model_and_keep_the_chosen_one(qtbot, app_settings):
    dialog = SettingsDialog(app_settings)
    qtbot.addWidget(dialog)
    assert [dialog.sam_type.itemText(i) for i in range(dialog.sam_type.count())] == ["auto", *MASK_MODELS, "none"]
    dialog.sam_type.setCurrentText("sam2.1-tiny")
    assert dialog.apply()
    assert app_settings.model_settings().sam_type == "sam2.1-tiny"


def test_loading_with_sam2_tiny_builds_it_from_the_hugging_face_cache(hub_cache, planted_model_path):
    cache_tiny_sam2(hub_cache, build_tiny_sam2())
    messages = []
    models = ModelSettings(model=str(planted_model_path), sam_type="sam2.1-tiny", device="cpu")
    loaded = load_models(models, messages.append)
    with loaded.segmenter as segmenter:
        mask = segmenter.segment_box(0, np.zeros((40, 60, 3), dtype=np.uint8), (5.0, 5.0, 30.0, 30.0)).mask
    assert "Loading SAM 2.1 tiny…" in messages
    assert loaded.info.sam_type == "sam2.1-tiny" and loaded.info.sam_note == ""
    assert mask.shape == (40, 60)


def test_the_auto_mask_model_loads_sam2_tiny_on_the_cpu(hub_cache, planted_model_path):
    cache_tiny_sam2(hub_cache, build_tiny_sam2())
    messages = []
    loaded = load_models(ModelSettings(model=str(planted_model_path), sam_type="auto", device="cpu"), messages.append)
    loaded.segmenter.close()
    assert "Loading SAM 2.1 tiny…" in messages
    assert loaded.segmenter.label == "SAM 2.1 tiny"
    assert (loaded.info.sam_type, loaded.info.sam_device) == ("sam2.1-tiny", "cpu")


def test_the_status_bar_says_which_mask_model_runs_on_which_device(qtbot, make_window, app_settings, hub_cache):
    import dataclasses

    cache_tiny_sam2(hub_cache, build_tiny_sam2())
    chosen = dataclasses.replace(app_settings.model_settings(), sam_type="auto", device="cpu")
    app_settings.set_model_settings(chosen)
    window = make_window(app_settings)
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS) as loaded:
        window.start_models()
    assert loaded.args[0] is not None
    assert window.model_label.text().endswith("· SAM 2.1 tiny on cpu")


def test_a_sam_hq_model_not_downloaded_leaves_coarse_masks_and_a_note_saying_how_to_get_it(
    hub_cache, planted_model_path
):
    models = ModelSettings(model=str(planted_model_path), sam_type="sam-hq-vit_b", device="cpu")
    loaded = load_models(models, lambda message: None)
    assert loaded.segmenter is None and loaded.info.sam_type is None
    assert loaded.info.sam_note.startswith("SAM-HQ ViT-B could not be loaded (no SAM-HQ ViT-B checkpoint")
    assert "annotator models download sam-hq-vit_b" in loaded.info.sam_note
