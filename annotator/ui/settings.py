"""The app's persistent settings, over QSettings (organisation "annotator", application "annotator").

`AppSettings.user()` is the user's own settings (platform location); `AppSettings.at(path)` keeps them in one INI
file, which is what tests use so they never touch the user's settings. Model choices travel to the worker thread
as a frozen `ModelSettings` value, never as the QSettings object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from annotator.paths import MODELS_DIR

ORGANIZATION = "annotator"
APPLICATION = "annotator"
DEFAULT_MODEL = "llava-hf/llava-1.5-7b-hf"
DEMO_MODEL_PATH = MODELS_DIR / "planted-llava"
DEFAULT_POLYGON_TOLERANCE_PX = 0.4
MAX_RECENT_FOLDERS = 10
MAX_EXPRESSION_HISTORY = 200


@dataclass(frozen=True)
class ModelSettings:
    """What the worker loads: the vision-language model (hub id or folder), its heads file and the mask model.

    `heads_file` "" means the model folder's `heads.json`, else the known heads for the model id. `sam_type`: the
    mask model (`annotator.segmentation.catalog`): "auto" (the default: SAM 2.1 tiny on a CPU, SAM 2.1 large on a
    GPU), a SAM size ("vit_h"...), "sam2.1-tiny"..., "sam-hq-vit_b"..., or "none" (masks are the heads' coarse
    regions); `sam_checkpoint` "" means the user cache's official checkpoint (SAM) or the Hugging Face cache. `device` and `dtype` "auto" let the engine choose; `load_in_4bit` loads
    the text layers in 4-bit through bitsandbytes (CUDA only; for GPUs with little memory). `max_image_tokens`: the
    native-resolution families' budget in image tokens (Qwen2-VL: one per 28 x 28 px, Qwen3-VL: 32 x 32; 0 = the
    checkpoint's own, 16,384 for the Qwen releases; fixed grids ignore it). Cache sizes count images.
    """

    model: str = DEFAULT_MODEL
    heads_file: str = ""
    sam_type: str = "auto"
    sam_checkpoint: str = ""
    device: str = "auto"
    dtype: str = "auto"
    load_in_4bit: bool = False
    prefix_cache_images: int = 8
    sam_cache_images: int = 8
    max_image_tokens: int = 0

    @property
    def is_demo(self) -> bool:
        """True when the model is the shipped planted demo model."""
        path = Path(self.model)
        return path.exists() and path.resolve() == DEMO_MODEL_PATH.resolve()

    def with_demo_model(self) -> "ModelSettings":
        """The same settings with the planted demo model, no SAM and no 4-bit (the demo runs offline on any CPU)."""
        return ModelSettings(
            model=str(DEMO_MODEL_PATH),
            heads_file="",
            sam_type="none",
            sam_checkpoint="",
            device=self.device,
            dtype=self.dtype,
            prefix_cache_images=self.prefix_cache_images,
            sam_cache_images=self.sam_cache_images,
            max_image_tokens=self.max_image_tokens,
        )


class AppSettings:
    """Typed access to the app's QSettings."""

    def __init__(self, qsettings: QSettings) -> None:
        self._q = qsettings

    @classmethod
    def user(cls) -> "AppSettings":
        return cls(QSettings(ORGANIZATION, APPLICATION))

    @classmethod
    def at(cls, path: str | Path) -> "AppSettings":
        """Settings kept in the INI file `path`."""
        return cls(QSettings(str(path), QSettings.Format.IniFormat))

    @property
    def file_name(self) -> str:
        return self._q.fileName()

    def sync(self) -> None:
        self._q.sync()

    # Models -----------------------------------------------------------------------------------------------------
    def has_model_choice(self) -> bool:
        """True once a model was chosen (in the settings dialog or by accepting the demo)."""
        return self._q.contains("models/model")

    def model_settings(self) -> ModelSettings:
        default = ModelSettings()
        q = self._q
        return ModelSettings(
            model=str(q.value("models/model", default.model)),
            heads_file=str(q.value("models/heads_file", default.heads_file)),
            sam_type=str(q.value("models/sam_type", default.sam_type)),
            sam_checkpoint=str(q.value("models/sam_checkpoint", default.sam_checkpoint)),
            device=str(q.value("models/device", default.device)),
            dtype=str(q.value("models/dtype", default.dtype)),
            load_in_4bit=str(q.value("models/load_in_4bit", default.load_in_4bit)).lower() == "true",
            prefix_cache_images=int(q.value("models/prefix_cache_images", default.prefix_cache_images)),
            sam_cache_images=int(q.value("models/sam_cache_images", default.sam_cache_images)),
            max_image_tokens=int(q.value("models/max_image_tokens", default.max_image_tokens)),
        )

    def set_model_settings(self, models: ModelSettings) -> None:
        q = self._q
        q.setValue("models/model", models.model)
        q.setValue("models/heads_file", models.heads_file)
        q.setValue("models/sam_type", models.sam_type)
        q.setValue("models/sam_checkpoint", models.sam_checkpoint)
        q.setValue("models/device", models.device)
        q.setValue("models/dtype", models.dtype)
        q.setValue("models/load_in_4bit", bool(models.load_in_4bit))
        q.setValue("models/prefix_cache_images", int(models.prefix_cache_images))
        q.setValue("models/sam_cache_images", int(models.sam_cache_images))
        q.setValue("models/max_image_tokens", int(models.max_image_tokens))

    # Export -----------------------------------------------------------------------------------------------------
    @property
    def polygon_tolerance_px(self) -> float:
        return float(self._q.value("export/polygon_tolerance_px", DEFAULT_POLYGON_TOLERANCE_PX))

    @polygon_tolerance_px.setter
    def polygon_tolerance_px(self, value: float) -> None:
        self._q.setValue("export/polygon_tolerance_px", float(value))

    @property
    def image_cache_images(self) -> int:
        """Decoded images kept in memory (current, previous and the prefetched next ones)."""
        return int(self._q.value("cache/image_cache_images", 4))

    @image_cache_images.setter
    def image_cache_images(self, value: int) -> None:
        self._q.setValue("cache/image_cache_images", int(value))

    # Folders and history ----------------------------------------------------------------------------------------
    def recent_folders(self) -> list[str]:
        return self._string_list("recent/folders")

    def add_recent_folder(self, folder: str | Path) -> None:
        path = str(Path(folder).resolve())
        folders = [path] + [f for f in self.recent_folders() if f != path]
        self._q.setValue("recent/folders", folders[:MAX_RECENT_FOLDERS])

    def expression_history(self) -> list[str]:
        """Past expressions, oldest first."""
        return self._string_list("recent/expressions")

    def add_expression(self, expression: str) -> None:
        history = [e for e in self.expression_history() if e != expression] + [expression]
        self._q.setValue("recent/expressions", history[-MAX_EXPRESSION_HISTORY:])

    @property
    def last_category(self) -> str:
        return str(self._q.value("recent/last_category", ""))

    @last_category.setter
    def last_category(self, name: str) -> None:
        self._q.setValue("recent/last_category", name)

    # View -------------------------------------------------------------------------------------------------------
    @property
    def heatmap_opacity_percent(self) -> int:
        return int(self._q.value("view/heatmap_opacity_percent", 55))

    @heatmap_opacity_percent.setter
    def heatmap_opacity_percent(self, value: int) -> None:
        self._q.setValue("view/heatmap_opacity_percent", int(value))

    def window_state(self) -> tuple[QByteArray | None, QByteArray | None]:
        """The main window's saved (geometry, dock/toolbar state), None where never saved."""
        geometry = self._q.value("window/geometry")
        state = self._q.value("window/state")
        geometry = geometry if isinstance(geometry, QByteArray) else None
        return geometry, state if isinstance(state, QByteArray) else None

    def set_window_state(self, geometry: QByteArray, state: QByteArray) -> None:
        self._q.setValue("window/geometry", geometry)
        self._q.setValue("window/state", state)

    # Shortcuts --------------------------------------------------------------------------------------------------
    def shortcut_overrides(self) -> dict[str, tuple[str, ...]]:
        """Actions whose keys the user changed: action id -> key sequences (portable text)."""
        q = self._q
        q.beginGroup("shortcuts")
        try:
            return {action: _split_keys(str(q.value(action, ""))) for action in q.childKeys()}
        finally:
            q.endGroup()

    def set_shortcut_overrides(self, overrides: dict[str, tuple[str, ...]]) -> None:
        q = self._q
        q.remove("shortcuts")
        for action, keys in overrides.items():
            q.setValue(f"shortcuts/{action}", "; ".join(keys))

    def _string_list(self, key: str) -> list[str]:
        value = self._q.value(key, [])
        if value is None:
            return []
        if isinstance(value, str):
            return [value] if value else []
        return [str(v) for v in value]


def _split_keys(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(";") if part.strip())
