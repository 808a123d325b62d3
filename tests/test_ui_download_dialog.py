"""The first-run models dialog (pytest-qt) with a fake download source the test steps chunk by chunk: Download,
Cancel, Use demo, Choose local folder, a failure, and a GUI timer that keeps firing while the worker is busy."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QFileDialog

from annotator.errors import ModelUnavailable
from annotator.segmentation import segment
from annotator.download import Progress
from annotator.synthetic.planted import PLANTED_MODEL_DIR
from annotator.ui.download_dialog import DownloadDialog, DownloadItem, format_duration, missing_downloads
from annotator.ui.settings import ModelSettings
from tests.test_hub import sharded_planted  # noqa: F401
from tests.ui_fixtures import MODEL_TIMEOUT_MS, isolated_qsettings, make_window  # noqa: F401

TIMEOUT_MS = 5000
CHUNK = 250_000_000


class SteppedSource:
    """A download of `chunks` x 250 MB that reports one chunk each time the test calls `step()`."""

    def __init__(self, chunks: int, path: Path, error: Exception | None = None) -> None:
        self.chunks = chunks
        self.path = path
        self.error = error
        self.steps = threading.Semaphore(0)
        self.reported: list[int] = []
        self.stopped_by: BaseException | None = None

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.steps.release()

    def fetch(self, progress: Progress) -> Path:
        total = self.chunks * CHUNK
        try:
            for chunk in range(1, self.chunks + 1):
                self.steps.acquire()
                if self.error is not None:
                    raise self.error
                progress(chunk * CHUNK, total)
                self.reported.append(chunk * CHUNK)
        except BaseException as exc:
            self.stopped_by = exc
            raise
        return self.path


def make_dialog(qtbot, *sources: tuple[str, SteppedSource, int | None]) -> DownloadDialog:
    items = [
        DownloadItem(name, f"{name} weights", size, f"/cache/{name}", source.fetch) for name, source, size in sources
    ]
    dialog = DownloadDialog(items)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def test_the_dialog_lists_each_missing_model_with_its_size_and_destination(qtbot, tmp_path):
    sam, llava = SteppedSource(2, tmp_path / "sam.pth"), SteppedSource(2, tmp_path / "llava")
    dialog = make_dialog(qtbot, ("sam-vit_b", sam, 375_042_383), ("llava-1.5-7b", llava, None))
    rows = [[dialog.table.topLevelItem(i).text(c) for c in range(3)] for i in range(2)]
    assert rows == [
        ["sam-vit_b", "375.04 MB", "/cache/sam-vit_b"],
        ["llava-1.5-7b", "from the Hub", "/cache/llava-1.5-7b"],
    ]
    assert dialog.summary.text().startswith("2 model(s) are not on this machine: 375.04 MB plus the Hub model's shards")


def test_download_fetches_every_item_on_a_worker_and_closes_with_their_paths(qtbot, tmp_path):
    sam, llava = SteppedSource(2, tmp_path / "sam.pth"), SteppedSource(3, tmp_path / "llava")
    dialog = make_dialog(qtbot, ("sam-vit_b", sam, 2 * CHUNK), ("llava-1.5-7b", llava, None))
    qtbot.mouseClick(dialog.download_button, Qt.LeftButton)
    assert dialog.downloading and not dialog.download_button.isEnabled() and dialog.cancel_button.isEnabled()
    sam.step(2)
    llava.step(3)
    with qtbot.waitSignal(dialog.accepted, timeout=TIMEOUT_MS):
        pass
    assert dialog.choice == "download"
    assert dialog.paths == {"sam-vit_b": tmp_path / "sam.pth", "llava-1.5-7b": tmp_path / "llava"}
    assert dialog.table.topLevelItem(1).text(1) == "750.00 MB"


def test_progress_shows_bytes_speed_and_time_left(qtbot, tmp_path):
    source = SteppedSource(4, tmp_path / "sam.pth")
    dialog = make_dialog(qtbot, ("sam-vit_b", source, 4 * CHUNK))
    dialog.start_download()
    source.step()
    qtbot.waitUntil(lambda: "250.00 MB of 1.00 GB" in dialog.status.text(), timeout=TIMEOUT_MS)
    source.step()
    qtbot.waitUntil(lambda: "500.00 MB of 1.00 GB" in dialog.status.text(), timeout=TIMEOUT_MS)
    assert dialog.progress_bar.value() == 500
    text = dialog.status.text()
    assert text.startswith("sam-vit_b: 500.00 MB of 1.00 GB · ") and "/s · " in text and text.endswith(" left")
    source.step(2)
    qtbot.waitSignal(dialog.accepted, timeout=TIMEOUT_MS).wait()


def test_the_gui_keeps_running_its_timers_while_the_worker_waits_for_bytes(qtbot, tmp_path):
    source = SteppedSource(1, tmp_path / "sam.pth")
    dialog = make_dialog(qtbot, ("sam-vit_b", source, CHUNK))
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(10)
    dialog.start_download()
    qtbot.waitUntil(lambda: len(ticks) >= 20, timeout=TIMEOUT_MS)
    assert dialog.downloading
    timer.stop()
    source.step()
    qtbot.waitSignal(dialog.accepted, timeout=TIMEOUT_MS).wait()


def test_cancel_stops_at_the_next_chunk_and_keeps_the_dialog_open_to_resume(qtbot, tmp_path):
    source = SteppedSource(4, tmp_path / "sam.pth")
    dialog = make_dialog(qtbot, ("sam-vit_b", source, 4 * CHUNK))
    dialog.start_download()
    source.step()
    qtbot.waitUntil(lambda: "250.00 MB" in dialog.status.text(), timeout=TIMEOUT_MS)
    qtbot.mouseClick(dialog.cancel_button, Qt.LeftButton)
    source.step()
    qtbot.waitUntil(lambda: dialog.status.text().startswith("Cancelled."), timeout=TIMEOUT_MS)
    assert type(source.stopped_by).__name__ == "DownloadCancelled"
    assert source.reported == [CHUNK]
    assert dialog.isVisible() and dialog.choice is None
    assert dialog.download_button.isEnabled() and not dialog.cancel_button.isEnabled()


def test_use_demo_closes_with_the_demo_choice_and_downloads_nothing(qtbot, tmp_path):
    source = SteppedSource(1, tmp_path / "sam.pth")
    dialog = make_dialog(qtbot, ("sam-vit_b", source, CHUNK))
    with qtbot.waitSignal(dialog.accepted, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dialog.demo_button, Qt.LeftButton)
    assert dialog.choice == "demo" and dialog.paths == {} and not dialog.downloading


def test_choose_local_folder_closes_with_the_folder(qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args: str(tmp_path))
    dialog = make_dialog(qtbot, ("llava-1.5-7b", SteppedSource(1, tmp_path / "x"), None))
    with qtbot.waitSignal(dialog.accepted, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dialog.local_button, Qt.LeftButton)
    assert dialog.choice == "local" and dialog.local_folder == tmp_path


def test_a_failed_download_shows_the_reason_and_offers_the_buttons_again(qtbot, tmp_path):
    source = SteppedSource(1, tmp_path / "sam.pth", ModelUnavailable("not enough disk space in /cache: needs 2 GB"))
    dialog = make_dialog(qtbot, ("sam-vit_b", source, CHUNK))
    dialog.start_download()
    source.step()
    qtbot.waitUntil(lambda: dialog.status.text().startswith("Download failed"), timeout=TIMEOUT_MS)
    assert dialog.status.text() == "Download failed: not enough disk space in /cache: needs 2 GB"
    assert dialog.download_button.isEnabled() and dialog.demo_button.isEnabled()


def test_missing_downloads_lists_the_configured_llava_and_sam_when_neither_is_cached(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    items = missing_downloads(ModelSettings(model="llava-hf/llava-1.5-7b-hf", sam_type="vit_b"))
    assert [(i.name, i.size_bytes) for i in items] == [
        ("llava-1.5-7b", None),
        ("sam-vit_b", segment.SAM_CHECKPOINTS["vit_b"].size_bytes),
    ]
    assert items[1].destination == str(tmp_path / "cache" / "annotator" / "sam")


def test_a_hub_models_size_is_asked_of_the_hub_as_the_dialog_opens_with_the_bytes_left_out(qtbot, tmp_path):
    from annotator.ui.download_dialog import ItemSize

    llava = SteppedSource(1, tmp_path / "llava")
    item = DownloadItem("llava-1.5-7b", "weights", None, "/cache", llava.fetch, lambda: ItemSize(9_950_000_000, 4_181))
    dialog = DownloadDialog([item])
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.table.topLevelItem(0).text(1) == "9.95 GB", timeout=TIMEOUT_MS)
    assert dialog.summary.text().startswith(
        "1 model(s) are not on this machine: 9.95 GB. Only the shards grounding reads: 4.18 kB of later layers"
    )


def test_a_hub_model_that_cannot_be_sized_says_why(qtbot, tmp_path):
    def offline():
        raise ModelUnavailable("cannot download llava-hf/llava-1.5-7b-hf: this machine is offline")

    item = DownloadItem("llava-1.5-7b", "weights", None, "/cache", SteppedSource(1, tmp_path).fetch, offline)
    dialog = DownloadDialog([item])
    qtbot.addWidget(dialog)
    assert dialog.table.topLevelItem(0).text(1) in ("asking the Hub…", "unknown")
    qtbot.waitUntil(lambda: dialog.table.topLevelItem(0).text(1) == "unknown", timeout=TIMEOUT_MS)
    assert "this machine is offline" in dialog.table.topLevelItem(0).toolTip(1)
    assert "shards (cannot download llava-hf/llava-1.5-7b-hf: this machine is offline)" in dialog.summary.text()


def test_the_hub_source_asks_the_hub_for_its_plan_once_for_size_and_download(monkeypatch, tmp_path):
    from annotator.models import hub
    from annotator.models.presets import load_presets
    from annotator.ui.download_dialog import HubSource, ItemSize

    preset = load_presets().get("llava-1.5-7b")
    plan = hub.DownloadPlan(preset.hub_id, "c" * 40, 14, (hub.RepoFile("a", 7),), (hub.RepoFile("b", 3),))
    asked: list[tuple[str, int]] = []
    monkeypatch.setattr(hub, "plan_download", lambda repo, layer: asked.append((repo, layer)) or plan)
    monkeypatch.setattr(hub, "download", lambda given, progress: tmp_path if given is plan else None)
    source = HubSource(preset)
    assert source.measure() == ItemSize(7, 3)
    assert source.fetch(lambda done, total: None) == tmp_path
    assert asked == [("llava-hf/llava-1.5-7b-hf", 14)]


@pytest.mark.parametrize(("seconds", "text"), [(44.6, "45 s"), (185, "3 min 05 s"), (7830, "2 h 10 min")])
def test_time_left_is_written_in_seconds_minutes_or_hours(seconds, text):
    assert format_duration(seconds) == text


def test_on_first_run_the_window_offers_the_dialog_and_a_chosen_folder_loads_without_a_restart(
    qtbot, tmp_path, monkeypatch, make_window
):
    from huggingface_hub import constants

    from annotator.ui.settings import AppSettings

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    window = make_window(AppSettings.at(tmp_path / "settings.ini"))
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS):
        window.start_models()
    dialog = window.download_dialog
    assert dialog is not None and dialog.isVisible() and not dialog.isModal()
    from annotator.segmentation.segment import resolve_mask_model

    default_mask_model = resolve_mask_model("auto")  # SAM 2.1 tiny on this CPU
    assert [dialog.table.topLevelItem(i).text(0) for i in range(2)] == ["llava-1.5-7b", default_mask_model]
    qtbot.waitUntil(lambda: window.models_info is not None, timeout=MODEL_TIMEOUT_MS)
    assert window.models_info.is_demo and "Download…" in window.message_bar.button_texts()

    qtbot.mouseClick(window.message_bar.button("Download…"), Qt.LeftButton)
    assert window.download_dialog is dialog and window.findChildren(DownloadDialog) == [dialog]
    qtbot.mouseClick(dialog.download_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dialog.status.text().startswith("Download failed"), timeout=TIMEOUT_MS)
    assert "offline" in dialog.status.text()

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args: str(PLANTED_MODEL_DIR))
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS) as loaded:
        qtbot.mouseClick(dialog.local_button, Qt.LeftButton)
    assert loaded.args[0].model == str(PLANTED_MODEL_DIR)


def hub_7b_settings(tmp_path: Path) -> ModelSettings:
    """The 7B preset's hub id with the planted model's heads (the test lays the planted model out under that id)."""
    return ModelSettings(
        model="llava-hf/llava-1.5-7b-hf", heads_file=str(PLANTED_MODEL_DIR / "heads.json"), sam_type="none"
    )


@pytest.fixture
def empty_caches(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache and user cache under tmp_path, offline; returns the Hub cache folder."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "hub"


def test_a_configured_preset_gone_from_the_cache_opens_the_dialog_and_its_download_loads_without_a_restart(
    qtbot, tmp_path, monkeypatch, make_window, empty_caches
):
    """The Hub is replaced by a copy of the planted model into the cache's layout, reported in two halves."""
    from annotator.models import hub
    from annotator.ui.settings import AppSettings
    from tests.test_hub import lay_out_hub_cache

    settings = AppSettings.at(tmp_path / "settings.ini")
    settings.set_model_settings(hub_7b_settings(tmp_path))
    window = make_window(settings)
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS) as failed:
        window.start_models()
    assert failed.args[0] is None
    assert "llava-hf/llava-1.5-7b-hf is not downloaded" in window.message_bar.text
    assert "Download…" in window.message_bar.button_texts()
    dialog = window.download_dialog
    assert dialog is not None and dialog.isVisible()
    assert [dialog.table.topLevelItem(i).text(0) for i in range(dialog.table.topLevelItemCount())] == ["llava-1.5-7b"]

    plan = hub.DownloadPlan("llava-hf/llava-1.5-7b-hf", None, 5, (hub.RepoFile("model.safetensors", 1000),), ())
    monkeypatch.setattr(hub, "plan_download", lambda repo_id, layer: plan)

    def fake_download(given, progress):
        progress(500, 1000)
        snapshot = lay_out_hub_cache(empty_caches, given.repo_id, PLANTED_MODEL_DIR)
        progress(1000, 1000)
        return snapshot

    monkeypatch.setattr(hub, "download", fake_download)
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS) as loaded:
        qtbot.mouseClick(dialog.download_button, Qt.LeftButton)
    assert loaded.args[0] is not None and loaded.args[0].model == "llava-hf/llava-1.5-7b-hf"
    assert not loaded.args[0].is_demo and not dialog.isVisible()
    assert window.settings.model_settings() == hub_7b_settings(tmp_path)


def test_use_demo_in_the_first_run_dialog_keeps_the_demo_already_loaded(
    qtbot, tmp_path, make_window, empty_caches, monkeypatch
):
    from annotator.ui.settings import AppSettings

    settings = AppSettings.at(tmp_path / "settings.ini")
    window = make_window(settings)
    window.start_models()
    qtbot.waitUntil(lambda: window.models_info is not None, timeout=MODEL_TIMEOUT_MS)
    assert window.models_info.is_demo and not settings.has_model_choice()
    reloads: list[ModelSettings] = []
    monkeypatch.setattr(window.inference, "load_models", reloads.append)  # a reload would ask for it at once
    qtbot.mouseClick(window.download_dialog.demo_button, Qt.LeftButton)
    assert settings.has_model_choice() and settings.model_settings().is_demo
    assert reloads == [] and not window.message_bar.isVisible()


def test_a_model_that_is_there_but_broken_opens_no_dialog(qtbot, tmp_path, make_window, empty_caches):
    from annotator.ui.settings import AppSettings

    broken = tmp_path / "broken-llava"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    settings = AppSettings.at(tmp_path / "settings.ini")
    settings.set_model_settings(ModelSettings(model=str(broken), heads_file=str(PLANTED_MODEL_DIR / "heads.json")))
    window = make_window(settings)
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS) as failed:
        window.start_models()
    assert failed.args[0] is None and window.download_dialog is None
    assert "Download…" not in window.message_bar.button_texts()


def test_cancel_in_the_dialog_keeps_the_partial_shard_and_download_resumes_it_then_the_model_loads(
    qtbot, tmp_path, monkeypatch, make_window, sharded_planted
):
    """Through the real huggingface_hub code against the stand-in Hub on 127.0.0.1 serving the sharded planted
    model as the 7B preset (the Hub's listing API is not part of the stand-in: the plan is made from its files)."""
    import threading

    from annotator.models import hub
    from annotator.ui.settings import AppSettings
    from tests.fake_hub import FakeHub, biggest_shard

    repo_id = "llava-hf/llava-1.5-7b-hf"
    served = FakeHub(repo_id, sharded_planted)
    served.serve_to_huggingface_hub(monkeypatch, tmp_path / "hub")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    plan = served.plan(5, ref="main")
    monkeypatch.setattr(hub, "plan_download", lambda repo, layer: plan)
    shard = biggest_shard(plan)
    served.cuts[shard] = 1
    served.hold_cut = threading.Event()

    settings = AppSettings.at(tmp_path / "settings.ini")
    settings.set_model_settings(hub_7b_settings(tmp_path))
    window = make_window(settings)
    try:
        with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS):
            window.start_models()
        dialog = window.download_dialog
        qtbot.waitUntil(lambda: dialog.table.topLevelItem(0).text(1) == hub.format_bytes(plan.bytes_needed))
        qtbot.mouseClick(dialog.download_button, Qt.LeftButton)
        qtbot.waitUntil(served.cut_sent.is_set, timeout=TIMEOUT_MS)
        qtbot.mouseClick(dialog.cancel_button, Qt.LeftButton)
        served.hold_cut.set()
        qtbot.waitUntil(lambda: dialog.status.text().startswith("Cancelled."), timeout=TIMEOUT_MS)
        assert dialog.isVisible() and dialog.download_button.isEnabled()
        parts = list((tmp_path / "hub" / "models--llava-hf--llava-1.5-7b-hf" / "blobs").glob("*.part"))
        assert [p.stat().st_size for p in parts] == [len(served.files[shard]) // 2]

        with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS) as loaded:
            qtbot.mouseClick(dialog.download_button, Qt.LeftButton)
        assert served.gets_of(shard) == [None, f"bytes={len(served.files[shard]) // 2}-"]
        assert loaded.args[0] is not None and loaded.args[0].model == repo_id and not loaded.args[0].is_demo
    finally:
        served.hold_cut.set()
        served.close()


def test_a_missing_sam_checkpoint_offers_its_download_beside_the_loaded_model(
    qtbot, tmp_path, make_window, empty_caches
):
    from annotator.ui.settings import AppSettings

    import shutil

    model = shutil.copytree(PLANTED_MODEL_DIR, tmp_path / "llava")  # a real model here, not the demo
    settings = AppSettings.at(tmp_path / "settings.ini")
    settings.set_model_settings(ModelSettings(model=str(model), sam_type="vit_b"))
    window = make_window(settings)
    with qtbot.waitSignal(window.models_changed, timeout=MODEL_TIMEOUT_MS) as loaded:
        window.start_models()
    assert loaded.args[0] is not None and loaded.args[0].sam_type is None
    assert window.download_dialog is None and "Download…" in window.message_bar.button_texts()
    qtbot.mouseClick(window.message_bar.button("Download…"), Qt.LeftButton)
    dialog = window.download_dialog
    assert [dialog.table.topLevelItem(i).text(0) for i in range(dialog.table.topLevelItemCount())] == ["sam-vit_b"]


def test_with_every_model_present_the_models_dialog_is_not_opened(qtbot, tmp_path, make_window, empty_caches):
    from annotator.ui.settings import AppSettings

    settings = AppSettings.at(tmp_path / "settings.ini")
    settings.set_model_settings(ModelSettings(model=str(PLANTED_MODEL_DIR), sam_type="none"))
    window = make_window(settings)
    window.open_downloads()
    assert window.download_dialog is None
    assert window.statusBar().currentMessage() == "Every configured model is on this machine."


def test_closing_the_window_cancels_a_running_download(qtbot, tmp_path, make_window, empty_caches):
    from annotator.ui.settings import AppSettings

    source = SteppedSource(3, tmp_path / "llava")
    window = make_window(AppSettings.at(tmp_path / "settings.ini"))
    window.start_models()
    qtbot.waitUntil(lambda: window.download_dialog is not None, timeout=MODEL_TIMEOUT_MS)
    dialog = window.download_dialog
    dialog.items = [DownloadItem("llava-1.5-7b", "weights", 3 * CHUNK, "/cache", source.fetch)]
    dialog.start_download()
    source.step()
    qtbot.waitUntil(lambda: source.reported == [CHUNK], timeout=TIMEOUT_MS)
    window.close()
    source.step()
    qtbot.waitUntil(lambda: source.stopped_by is not None, timeout=TIMEOUT_MS)
    assert not dialog.isVisible() and dialog.choice is None
