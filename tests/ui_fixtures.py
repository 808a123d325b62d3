"""Fixtures for the app's tests: settings in a temporary INI file (the user's are never touched), folders of
generated scenes with known objects, the planted model, and a shown main window.

Import the fixtures into a test module with `from tests.ui_fixtures import *`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt

from annotator.synthetic.scenes import Scene, SceneConfig, box_iou, generate_scene
from annotator.paths import MODELS_DIR
from annotator.project.store import Annotation, ProjectStore
from annotator.ui.main_window import MainWindow
from annotator.ui.model_loading import LoadedModels, ModelsInfo
from annotator.ui.settings import AppSettings, ModelSettings

SHIPPED_PLANTED_MODEL = MODELS_DIR / "planted-llava"
WIDE_OBJECTS = SceneConfig(
    long_side=(336, 336),
    aspect=(1.0, 1.0),
    num_objects=(2, 3),
    target_width=(0.42, 0.5),
    other_width=(0.18, 0.24),
    object_aspect=(0.85, 1.15),
    noise_sigma=(3.0, 6.0),
)
"""Square scenes whose target is 10-12 cells wide on a 24 x 24 grid (the method widens boxes ~2 cells a side)."""
MODEL_TIMEOUT_MS = 120_000
STEP_TIMEOUT_MS = 30_000


@pytest.fixture(scope="session")
def planted_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped planted model folder, or a fresh build of it when the repository does not hold it yet."""
    if (SHIPPED_PLANTED_MODEL / "heads.json").is_file():
        return SHIPPED_PLANTED_MODEL
    from annotator.synthetic.planted import save_planted_model

    return save_planted_model(tmp_path_factory.mktemp("planted") / "planted-llava")


@pytest.fixture(autouse=True)
def isolated_qsettings(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Any QSettings made with the default constructor lands in a temporary folder, never the user's."""
    folder = tmp_path_factory.mktemp("qsettings")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    for scope in (QSettings.Scope.UserScope, QSettings.Scope.SystemScope):
        QSettings.setPath(QSettings.Format.IniFormat, scope, str(folder))


@pytest.fixture
def app_settings(tmp_path: Path, planted_model_path: Path) -> AppSettings:
    """Settings in a temporary INI file, with the planted model chosen and no SAM."""
    settings = AppSettings.at(tmp_path / "settings.ini")
    settings.set_model_settings(ModelSettings(model=str(planted_model_path), sam_type="none"))
    return settings


def write_scenes(folder: Path, seeds: list[int], config: SceneConfig = WIDE_OBJECTS) -> dict[str, Scene]:
    """Write one PNG per seed (`scene_<seed>.png`) into `folder`; the scenes by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    scenes = {}
    for seed in seeds:
        scene = generate_scene(np.random.default_rng(seed), config)
        name = f"scene_{seed:03d}.png"
        cv2.imwrite(str(folder / name), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        scenes[name] = scene
    return scenes


@pytest.fixture
def scene_folder(tmp_path: Path) -> tuple[Path, dict[str, Scene]]:
    """Three generated scenes with wide, distinctly coloured targets."""
    folder = tmp_path / "images"
    return folder, write_scenes(folder, [11, 12, 13])


def tiny_mask_backend(kind: str = "sam"):
    """A tiny mask back end with random weights: segment-anything SAM ("sam") or SAM 2.1 through transformers."""
    if kind == "sam2.1":
        from tests.tiny_sam2 import build_tiny_sam2

        return build_tiny_sam2()
    from tests.tiny_sam import build_tiny_sam

    return build_tiny_sam()


@pytest.fixture(params=["sam", "sam2.1"])
def mask_kind(request) -> str:
    """Each mask back end in turn, so the editing tests run against every one."""
    return request.param


def planted_models_with_tiny_sam(planted_model_path: Path, kind: str = "sam") -> LoadedModels:
    """The planted LLaVA with its heads and a tiny random-weight SAM (tests/tiny_sam.py), ready for `use_models`."""
    from annotator.grounding.grounder import Grounder
    from annotator.grounding.heads import find_heads_file
    from annotator.lvlm.engine import LvlmEngine
    from annotator.proposer import Proposer
    from annotator.segmentation.segment import Segmenter
    heads = find_heads_file(str(planted_model_path))
    grounder = Grounder(LvlmEngine.load(planted_model_path), heads.heads)
    segmenter = Segmenter(tiny_mask_backend(kind), cache_size=4)
    info = ModelsInfo(
        model=str(planted_model_path),
        heads=tuple(grounder.heads),
        heads_source=heads.source,
        sam_type="tiny",
        sam_note="",
        is_demo=False,
        device="cpu",
        load_seconds=0.0,
    )
    return LoadedModels(proposer=Proposer(grounder, segmenter), segmenter=segmenter, info=info)


@pytest.fixture
def sam_window(qtbot, make_window, app_settings: AppSettings, planted_model_path: Path, mask_kind: str) -> MainWindow:
    """A shown main window with the planted model and a tiny SAM, so points and boxes re-prompt a real Segmenter."""
    window = make_window(app_settings)
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS):
        window.use_models(planted_models_with_tiny_sam(planted_model_path, mask_kind))
    return window


@pytest.fixture
def make_window(qtbot) -> Iterator[Callable[[AppSettings], MainWindow]]:
    """Makes shown, active main windows; keeps them alive for the whole test and closes them after it (a window
    closed by its owner stops its worker threads; one merely garbage-collected would not)."""
    made: list[MainWindow] = []

    def make(settings: AppSettings) -> MainWindow:
        window = MainWindow(settings)
        made.append(window)
        qtbot.addWidget(window)
        window.resize(1280, 800)
        window.show()
        qtbot.waitExposed(window)
        window.activateWindow()
        qtbot.waitUntil(window.isActiveWindow)
        return window

    yield make
    for window in made:
        window.close()


@pytest.fixture
def window(qtbot, make_window, app_settings: AppSettings) -> MainWindow:
    """A shown main window with the planted model loaded."""
    window = make_window(app_settings)
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS) as loaded:
        window.start_models()
    assert loaded.args[0] is not None, window.message_bar.text
    return window


def open_folder(qtbot, window: MainWindow, folder: Path) -> None:
    """Open `folder` and wait until its first image is on the canvas."""
    with qtbot.waitSignal(window.image_shown, timeout=STEP_TIMEOUT_MS):
        window.open_folder(folder)


def show_image_named(qtbot, window: MainWindow, name: str) -> int:
    """Make the image called `name` current and wait until it is shown; its image id."""
    assert window.store is not None
    record = window.store.image_by_path(name)
    assert record is not None
    if window.current_image_id != record.id:
        with qtbot.waitSignal(window.image_shown, timeout=STEP_TIMEOUT_MS):
            window.show_image(record.id)
    return record.id


def propose(qtbot, window: MainWindow, expression: str) -> int:
    """Type `expression` and press Enter; wait for the proposals; how many there are."""
    box = window.panel.expression
    box.setFocus()
    box.clear()
    qtbot.keyClicks(box, expression)
    with qtbot.waitSignal(window.proposals_shown, timeout=MODEL_TIMEOUT_MS) as shown:
        qtbot.keyClick(box, Qt.Key.Key_Return)
    return int(shown.args[0])


def reopen_store(folder: Path) -> ProjectStore:
    return ProjectStore.for_folder(folder)


BOX = (60.0, 80.0, 180.0, 200.0)


def seed_store(folder: Path, **annotation) -> int:
    """Add one annotation (category "disc") to the folder's project before the app opens it; its id."""
    with ProjectStore.for_folder(folder) as store:
        store.sync_folder()
        category = store.ensure_category("disc")
        image = store.images()[0]
        values = {"box_xyxy": BOX, "source": "manual", "status": "accepted", **annotation}
        return store.add_annotation(image.id, category.id, **values).id


def stored(window, annotation_id: int) -> Annotation | None:
    try:
        return window.store.annotation(annotation_id)
    except KeyError:
        return None


def undo(qtbot, window) -> None:
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        qtbot.keyClick(window.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)


def redo(qtbot, window) -> None:
    with qtbot.waitSignal(window.annotations_changed, timeout=STEP_TIMEOUT_MS):
        modifiers = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
        qtbot.keyClick(window.canvas, Qt.Key.Key_Z, modifiers)


__all__ = [
    "BOX",
    "MODEL_TIMEOUT_MS",
    "STEP_TIMEOUT_MS",
    "WIDE_OBJECTS",
    "app_settings",
    "box_iou",
    "isolated_qsettings",
    "make_window",
    "open_folder",
    "planted_model_path",
    "mask_kind",
    "tiny_mask_backend",
    "planted_models_with_tiny_sam",
    "sam_window",
    "propose",
    "redo",
    "reopen_store",
    "scene_folder",
    "seed_store",
    "show_image_named",
    "stored",
    "undo",
    "window",
    "write_scenes",
]
