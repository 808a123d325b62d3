"""A model whose localization heads nobody found yet, in the app: the window says so and offers "Find heads on this
folder", which runs discovery on the folder's annotations with an expression in a worker thread, writes a heads file
in `annotator find-heads`' format beside the folder's project and loads the model with it. The planted LLaVA plays
that model: a copy of its folder without its heads.json has no known heads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtWidgets import QPushButton

from annotator.discovery.folder_heads import MIN_PAIRS, find_heads_on_pairs, folder_pairs, heads_path
from annotator.grounding.heads import HeadsFile
from annotator.project.store import ProjectStore
from annotator.synthetic.planted import PLANTED_HEADS
from annotator.ui.find_heads_dialog import FIND_BUTTON
from annotator.ui.settings import AppSettings, ModelSettings
from tests.ui_fixtures import (  # noqa: F401 (fixtures are found by name)
    MODEL_TIMEOUT_MS,
    STEP_TIMEOUT_MS,
    isolated_qsettings,
    make_window,
    open_folder,
    planted_model_path,
    write_scenes,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODEL_NAME = "unknown-heads-llava"


@pytest.fixture(scope="module")
def headless_model(tmp_path_factory, planted_model_path: Path) -> Path:
    """The planted LLaVA copied without its heads.json: a model nobody knows the heads of."""
    folder = tmp_path_factory.mktemp("models") / MODEL_NAME
    shutil.copytree(planted_model_path, folder, ignore=shutil.ignore_patterns("heads.json"))
    return folder


def annotated_folder(folder: Path, count: int) -> Path:
    """`count` generated scenes, each with one accepted annotation carrying the scene's expression."""
    scenes = write_scenes(folder, list(range(100, 100 + count)))
    with ProjectStore.for_folder(folder) as store:
        store.sync_folder()
        category = store.ensure_category("shape")
        for name, scene in scenes.items():
            image = store.image_by_path(name)
            store.add_annotation(
                image.id, category.id, tuple(map(float, scene.target.box_xyxy)), expression=scene.expression,
                status="accepted",
            )
    return folder


@pytest.fixture
def headless_window(qtbot, make_window, tmp_path, headless_model):
    """A shown window whose configured model has no known heads, after its load failed."""
    settings = AppSettings.at(tmp_path / "settings.ini")
    settings.set_model_settings(ModelSettings(model=str(headless_model), sam_type="none"))
    window = make_window(settings)
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS) as loaded:
        window.start_models()
    assert loaded.args[0] is None
    return window


def test_a_model_without_known_heads_is_named_with_an_offer_to_find_them_on_the_folder(headless_window):
    message = headless_window.message_bar.message("model")
    assert message is not None and message.level == "warning"
    assert message.text.startswith(
        f"No localization heads are known for {MODEL_NAME} yet: find them on this folder first."
    )
    assert headless_window.message_bar.button_texts()[0] == FIND_BUTTON


def test_finding_heads_on_the_folder_writes_a_heads_file_and_loads_the_model_with_those_heads(
    qtbot, headless_window, tmp_path
):
    folder = annotated_folder(tmp_path / "images", MIN_PAIRS)
    open_folder(qtbot, headless_window, folder)
    with qtbot.waitSignal(headless_window.models_changed, timeout=MODEL_TIMEOUT_MS) as loaded:
        headless_window.message_bar.button(FIND_BUTTON).click()
    info = loaded.args[0]
    saved = folder / ".annotator" / f"{MODEL_NAME}-heads.json"
    assert info is not None and set(info.heads) == set(PLANTED_HEADS.localization)
    assert HeadsFile.load(saved).num_samples == MIN_PAIRS
    assert headless_window.settings.model_settings().heads_file == str(saved)


def test_expressions_typed_on_the_folders_images_are_pairs_for_discovery(qtbot, headless_window, tmp_path):
    folder = tmp_path / "typed"
    scenes = write_scenes(folder, list(range(200, 200 + MIN_PAIRS)))
    open_folder(qtbot, headless_window, folder)
    for name, scene in scenes.items():
        headless_window.show_image(headless_window.store.image_by_path(name).id)
        headless_window.run_expression(scene.expression)
    assert len(headless_window.find_heads.typed()) == MIN_PAIRS
    with qtbot.waitSignal(headless_window.models_changed, timeout=MODEL_TIMEOUT_MS) as loaded:
        headless_window.message_bar.button(FIND_BUTTON).click()
    assert loaded.args[0] is not None and set(loaded.args[0].heads) == set(PLANTED_HEADS.localization)
    assert HeadsFile.load(folder / ".annotator" / f"{MODEL_NAME}-heads.json").num_samples == MIN_PAIRS


def test_expressions_typed_on_another_folder_do_not_count_for_this_one(qtbot, headless_window, tmp_path):
    first = tmp_path / "first"
    scenes = write_scenes(first, [300, 301])
    open_folder(qtbot, headless_window, first)
    headless_window.run_expression(next(iter(scenes.values())).expression)
    assert len(headless_window.find_heads.typed()) == 1
    open_folder(qtbot, headless_window, annotated_folder(tmp_path / "second", 3))
    assert headless_window.find_heads.typed() == []


def test_too_few_annotated_expressions_say_how_many_more_discovery_needs(qtbot, headless_window, tmp_path):
    folder = annotated_folder(tmp_path / "images", 3)
    open_folder(qtbot, headless_window, folder)
    with qtbot.waitSignal(headless_window.find_heads.finished, timeout=STEP_TIMEOUT_MS) as done:
        headless_window.message_bar.button(FIND_BUTTON).click()
    assert done.args[0] is None and not headless_window.find_heads.running
    text = headless_window.message_bar.message("find_heads").text
    assert f"needs at least {MIN_PAIRS} image/expression pairs; this folder has 3" in text
    assert "expressions typed on its images" in text
    assert f"{MIN_PAIRS - 3} more are needed" in text


def test_the_too_few_pairs_message_goes_when_another_folder_opens(qtbot, headless_window, tmp_path):
    open_folder(qtbot, headless_window, annotated_folder(tmp_path / "few", 3))
    with qtbot.waitSignal(headless_window.find_heads.finished, timeout=STEP_TIMEOUT_MS):
        headless_window.message_bar.button(FIND_BUTTON).click()
    open_folder(qtbot, headless_window, annotated_folder(tmp_path / "more", MIN_PAIRS))
    assert headless_window.message_bar.message("find_heads") is None


def test_finding_heads_with_no_folder_open_asks_for_one_first(qtbot, headless_window):
    with qtbot.waitSignal(headless_window.find_heads.finished, timeout=STEP_TIMEOUT_MS) as done:
        headless_window.message_bar.button(FIND_BUTTON).click()
    assert done.args[0] is None
    assert headless_window.message_bar.message("find_heads").text.startswith("Open a folder of images first")


def test_a_cancelled_discovery_writes_no_heads_file_and_keeps_the_settings(qtbot, headless_window, tmp_path):
    folder = annotated_folder(tmp_path / "images", MIN_PAIRS)
    open_folder(qtbot, headless_window, folder)
    with qtbot.waitSignal(headless_window.find_heads.finished, timeout=MODEL_TIMEOUT_MS) as done:
        headless_window.message_bar.button(FIND_BUTTON).click()
        headless_window.find_heads.progress.findChild(QPushButton).click()
    assert done.args[0] is None
    assert not (folder / ".annotator" / f"{MODEL_NAME}-heads.json").exists()
    assert headless_window.settings.model_settings().heads_file == ""
    assert "cancelled" in headless_window.statusBar().currentMessage()


def test_closing_the_window_during_discovery_stops_its_thread(qtbot, headless_window, tmp_path):
    folder = annotated_folder(tmp_path / "images", MIN_PAIRS)
    open_folder(qtbot, headless_window, folder)
    headless_window.message_bar.button(FIND_BUTTON).click()
    flow = headless_window.find_heads
    assert flow.running
    headless_window.close()
    assert not flow.running and flow.worker.cancel_requested.is_set()


def test_folder_pairs_are_the_distinct_expressions_of_annotations_on_present_images(tmp_path):
    folder = annotated_folder(tmp_path / "images", 3)
    with ProjectStore.for_folder(folder) as store:
        first, second = store.images()[:2]
        category = store.ensure_category("shape")
        repeated = store.annotations(first.id)[0].expression
        store.add_annotation(first.id, category.id, (1.0, 1.0, 9.0, 9.0), expression=f"  {repeated} ")
        store.add_annotation(second.id, category.id, (1.0, 1.0, 9.0, 9.0), expression="")
        pairs = folder_pairs(store)
    assert [(p.image_path.name, p.expression) for p in pairs] == [
        ("scene_100.png", repeated),
        ("scene_101.png", pairs[1].expression),
        ("scene_102.png", pairs[2].expression),
    ]
    assert all(p.image_path.parent == folder for p in pairs)


def test_heads_found_on_pairs_are_written_in_the_find_heads_format(tmp_path, headless_model):
    folder = annotated_folder(tmp_path / "images", MIN_PAIRS)
    calls: list[tuple[int, int]] = []
    with ProjectStore.for_folder(folder) as store:
        pairs, out = folder_pairs(store), heads_path(store, MODEL_NAME)
    found = find_heads_on_pairs(
        str(headless_model), pairs, out, source="test pairs", progress=lambda d, t: calls.append((d, t))
    )
    data = json.loads(out.read_text())
    assert found.path == out and set(found.heads_file.heads) == set(PLANTED_HEADS.localization)
    assert {"model", "heads", "tau", "votes", "vote_frequencies", "mean_sums"} <= set(data)
    assert data["model"] == str(headless_model) and data["source"] == "test pairs"
    assert calls[0] == (0, MIN_PAIRS) and calls[-1] == (MIN_PAIRS, MIN_PAIRS)


def test_heads_found_on_a_folder_for_the_planted_qwen2_vl_without_its_heads_are_its_planted_heads(tmp_path):
    from annotator.synthetic.planted_qwen import PLANTED_QWEN_DIR, PLANTED_QWEN_HEADS

    model = tmp_path / "qwen-without-heads"
    shutil.copytree(PLANTED_QWEN_DIR, model, ignore=shutil.ignore_patterns("heads.json"))
    folder = annotated_folder(tmp_path / "images", MIN_PAIRS)
    with ProjectStore.for_folder(folder) as store:
        pairs, out = folder_pairs(store), heads_path(store, model.name)
    found = find_heads_on_pairs(str(model), pairs, out, source="test pairs")
    assert set(found.heads_file.heads) == set(PLANTED_QWEN_HEADS.localization)
    assert HeadsFile.load(out).num_layers == 8
