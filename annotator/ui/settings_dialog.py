"""File > Settings: models (LLaVA id or folder, heads file, SAM type and checkpoint, device, dtype, 4-bit), caches,
polygon tolerance, keyboard shortcuts and the open project's label set. Apply writes the settings to QSettings;
the window then reloads the models in the background when a model setting changed, and stores the label set in
the project when it changed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from annotator.models.presets import load_presets
from annotator.segmentation.catalog import AUTO, MASK_MODELS, hub_model, mask_model_label
from annotator.ui.label_set_page import LabelSetPage
from annotator.ui.settings import DEFAULT_MODEL, DEMO_MODEL_PATH, AppSettings, ModelSettings
from annotator.ui.shortcuts import SHORTCUTS, SHORTCUTS_BY_ACTION
from annotator.ui.shortcuts_dialog import display_text

SAM_TYPES = (AUTO, *MASK_MODELS, "none")
"""The mask models Settings offers: "auto" (the one that fits the device), SAM, SAM 2.1 and SAM-HQ
(`segmentation.catalog`), and "none" for the heads' coarse masks."""
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


class SettingsDialog(QDialog):
    """Edits `AppSettings`; emits `applied(models_changed)` after writing them, and `label_set_changed(names)`
    (a list, or None for no fixed set) when the project's label set was edited.

    `label_set`: the open project's set, [] when it has none, None when no project is open (the page is then
    disabled).
    """

    applied = Signal(bool)
    label_set_changed = Signal(object)

    def __init__(
        self, settings: AppSettings, parent: QWidget | None = None, label_set: Sequence[str] | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.settings = settings
        models = settings.model_settings()

        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.addItems([*(preset.hub_id for preset in load_presets().lvlm), str(DEMO_MODEL_PATH)])
        self.model.setEditText(models.model)
        self.model.setToolTip("A preset name, a Hugging Face hub id (llava-hf/..., Qwen/...) or a local model folder")
        self.heads_file = QLineEdit(models.heads_file)
        self.heads_file.setPlaceholderText("automatic: the model folder's heads.json or the known heads")
        self.sam_type = QComboBox()
        self.sam_type.addItems(list(SAM_TYPES))
        for index, name in enumerate(SAM_TYPES[:-1]):
            self.sam_type.setItemData(index, mask_model_label(name), Qt.ItemDataRole.ToolTipRole)
        self.sam_type.setCurrentText(models.sam_type)
        self.sam_checkpoint = QLineEdit(models.sam_checkpoint)
        self.sam_checkpoint.setPlaceholderText(
            "automatic: the downloaded checkpoint (SAM: a .pth file; SAM 2.1, SAM-HQ: a checkpoint folder)"
        )
        self.device = QComboBox()
        self.device.setEditable(True)
        self.device.addItems(list(DEVICES))
        self.device.setEditText(models.device)
        self.dtype = QComboBox()
        self.dtype.addItems(list(DTYPES))
        self.dtype.setCurrentText(models.dtype)
        self.load_in_4bit = QCheckBox("Load the text layers in 4-bit (needs a CUDA GPU and bitsandbytes)")
        self.load_in_4bit.setChecked(models.load_in_4bit)
        self.load_in_4bit.setToolTip(
            "The text layers take about a quarter of their bf16 memory ('annotator models list' gives the estimates); "
            "the maps, and so the boxes, can differ slightly from the paper's bf16 model"
        )
        self.max_image_tokens = _spin(0, 16384, models.max_image_tokens, " tokens")
        self.max_image_tokens.setSpecialValueText("the checkpoint's (Qwen releases: 16384)")
        self.max_image_tokens.setToolTip(
            "Qwen2-VL / Qwen2.5-VL read images at their own resolution, one token per 28 x 28 pixels, up to this many "
            "tokens: more find smaller objects and cost more time. Fixed grids (LLaVA-1.5, DeepSeek-VL) ignore it."
        )
        self.prefix_cache = _spin(0, 256, models.prefix_cache_images, " images")
        self.sam_cache = _spin(1, 256, models.sam_cache_images, " images")
        self.image_cache = _spin(1, 64, settings.image_cache_images, " images")
        self.tolerance = QDoubleSpinBox()
        self.tolerance.setRange(0.0, 10.0)
        self.tolerance.setSingleStep(0.1)
        self.tolerance.setDecimals(2)
        self.tolerance.setSuffix(" px")
        self.tolerance.setValue(settings.polygon_tolerance_px)

        models_page = QWidget()
        form = QFormLayout(models_page)
        form.addRow("Vision-language model", _with_browse(self.model, self._browse_model))
        form.addRow("Heads file", _with_browse(self.heads_file, self._browse_heads))
        form.addRow("Mask model", self.sam_type)
        form.addRow("Mask checkpoint", _with_browse(self.sam_checkpoint, self._browse_checkpoint))
        form.addRow("Device", self.device)
        form.addRow("Weights dtype", self.dtype)
        form.addRow("", self.load_in_4bit)
        form.addRow("Image tokens at most", self.max_image_tokens)
        form.addRow(_note("Applying a change here reloads the models in the background."))
        caches_page = QWidget()
        caches = QFormLayout(caches_page)
        caches.addRow("Image prefixes kept (model)", self.prefix_cache)
        caches.addRow("SAM image embeddings kept", self.sam_cache)
        caches.addRow("Decoded images kept", self.image_cache)
        caches.addRow("Polygon tolerance (export and outlines)", self.tolerance)

        self.shortcuts = QTableWidget(len(SHORTCUTS), 3)
        self.shortcuts.setHorizontalHeaderLabels(["Action", "Keys (separate several with ;)", "Default"])
        self.shortcuts.verticalHeader().hide()
        overrides = settings.shortcut_overrides()
        for row, shortcut in enumerate(SHORTCUTS):
            name = QTableWidgetItem(display_text(shortcut.text))
            name.setFlags(name.flags() & ~Qt.ItemFlag.ItemIsEditable)
            keys = QTableWidgetItem("; ".join(overrides.get(shortcut.action, shortcut.keys)))
            default = QTableWidgetItem("; ".join(shortcut.keys))
            default.setFlags(default.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.shortcuts.setItem(row, 0, name)
            self.shortcuts.setItem(row, 1, keys)
            self.shortcuts.setItem(row, 2, default)
        header = self.shortcuts.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        reset = QPushButton("Reset all to defaults")
        reset.clicked.connect(self._reset_shortcuts)
        self.shortcut_problem = QLabel()
        self.shortcut_problem.setStyleSheet("color: #b91c1c;")
        shortcuts_page = QWidget()
        shortcuts_layout = QVBoxLayout(shortcuts_page)
        shortcuts_layout.addWidget(self.shortcuts, 1)
        shortcuts_layout.addWidget(self.shortcut_problem)
        shortcuts_layout.addWidget(reset)

        self.tabs = QTabWidget()
        self.tabs.addTab(models_page, "Models")
        self.tabs.addTab(caches_page, "Caches and export")
        self.tabs.addTab(shortcuts_page, "Shortcuts")
        self.label_page = LabelSetPage(label_set)
        self.tabs.addTab(self.label_page, "Label set")
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok
            | QDialogButtonBox.StandardButton.Apply
            | QDialogButtonBox.StandardButton.Cancel
        )
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.buttons)
        self.resize(680, 420)

        self.buttons.accepted.connect(self._ok)
        self.buttons.rejected.connect(self.reject)
        self.buttons.button(QDialogButtonBox.StandardButton.Apply).clicked.connect(self.apply)

    def model_settings(self) -> ModelSettings:
        return ModelSettings(
            model=self.model.currentText().strip() or DEFAULT_MODEL,
            heads_file=self.heads_file.text().strip(),
            sam_type=self.sam_type.currentText(),
            sam_checkpoint=self.sam_checkpoint.text().strip(),
            device=self.device.currentText().strip() or "auto",
            dtype=self.dtype.currentText(),
            load_in_4bit=self.load_in_4bit.isChecked(),
            prefix_cache_images=self.prefix_cache.value(),
            sam_cache_images=self.sam_cache.value(),
            max_image_tokens=self.max_image_tokens.value(),
        )

    def shortcut_overrides(self) -> dict[str, tuple[str, ...]] | None:
        """The keys that differ from the table's defaults; None (and a message) when one cannot be read or is
        bound twice."""
        overrides: dict[str, tuple[str, ...]] = {}
        owners: dict[str, str] = {}
        for row, shortcut in enumerate(SHORTCUTS):
            text = self.shortcuts.item(row, 1).text()
            keys = tuple(k.strip() for k in text.split(";") if k.strip())
            for key in keys:
                sequence = QKeySequence(key)
                portable = sequence.toString(QKeySequence.SequenceFormat.PortableText)
                if sequence.isEmpty() or not portable:
                    self.shortcut_problem.setText(f"“{key}” is not a key sequence ({display_text(shortcut.text)}).")
                    return None
                if portable in owners and owners[portable] != shortcut.action:
                    other = display_text(SHORTCUTS_BY_ACTION[owners[portable]].text)
                    self.shortcut_problem.setText(f"{key} is bound to both {other} and {display_text(shortcut.text)}.")
                    return None
                owners[portable] = shortcut.action
            if keys != shortcut.keys:
                overrides[shortcut.action] = keys
        self.shortcut_problem.setText("")
        return overrides

    def apply(self) -> bool:
        """Write the settings; False (nothing written) when a shortcut is invalid."""
        overrides = self.shortcut_overrides()
        if overrides is None:
            self.tabs.setCurrentIndex(2)
            return False
        models = self.model_settings()
        models_changed = models != self.settings.model_settings() or not self.settings.has_model_choice()
        self.settings.set_model_settings(models)
        self.settings.image_cache_images = self.image_cache.value()
        self.settings.polygon_tolerance_px = self.tolerance.value()
        self.settings.set_shortcut_overrides(overrides)
        self.settings.sync()
        self.applied.emit(models_changed)
        if self.label_page.changed():
            self.label_page.mark_saved()
            self.label_set_changed.emit(self.label_page.names())
        return True

    def _ok(self) -> None:
        if self.apply():
            self.accept()

    def _reset_shortcuts(self) -> None:
        for row, shortcut in enumerate(SHORTCUTS):
            self.shortcuts.item(row, 1).setText("; ".join(shortcut.keys))

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder", self.model.currentText())
        if folder:
            self.model.setEditText(folder)

    def _browse_heads(self) -> None:
        chosen, _ = QFileDialog.getOpenFileName(self, "Heads file", self.heads_file.text(), "Heads files (*.json)")
        if chosen:
            self.heads_file.setText(chosen)

    def _browse_checkpoint(self) -> None:
        start = self.sam_checkpoint.text() or str(Path.home())
        label = mask_model_label(self.sam_type.currentText())
        if hub_model(self.sam_type.currentText()) is not None:
            chosen = QFileDialog.getExistingDirectory(self, f"{label} checkpoint folder", start)
        else:
            chosen, _ = QFileDialog.getOpenFileName(
                self, f"{label} checkpoint", start, "PyTorch checkpoints (*.pth *.pt)"
            )
        if chosen:
            self.sam_checkpoint.setText(chosen)


def _spin(low: int, high: int, value: int, suffix: str) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setSuffix(suffix)
    return spin


def _with_browse(field: QWidget, browse: Callable[[], None]) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(field, 1)
    button = QPushButton("Browse…")
    button.clicked.connect(browse)
    layout.addWidget(button)
    return row


def _note(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    return label
