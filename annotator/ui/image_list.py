"""The image list: every image of the project with its status and counts, a filter box, a status filter, a sort
order for reviewing (least confident pending first), and the files the scan skipped with their reasons.

The models (annotator/ui/image_models.py) hold the store's `ImageRecord`s, nothing decoded, and filter 10,000
images in one pass; the view uses uniform row heights and batched layout so only visible rows are measured.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QModelIndex, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

from annotator.project.image_filter import ImageFilter, record_status
from annotator.project.images import SkippedFile
from annotator.project.records import ImageRecord
from annotator.ui.image_models import (
    STATUS_COLOUR,
    STATUS_TEXT,
    ImageFilterModel,
    ImageListModel,
    RecordRole,
    ReviewKeyRole,
)

__all__ = [
    "FILTERS",
    "ORDERS",
    "STATUS_COLOUR",
    "STATUS_TEXT",
    "ImageFilterModel",
    "ImageListModel",
    "ImageListPanel",
    "RecordRole",
    "ReviewKeyRole",
    "record_status",
]

FILTERS = (
    ("all", "All images"),
    ("todo", "To do"),
    ("in_progress", "In progress"),
    ("done", "Done"),
    ("pending", "With pending proposals"),
)
ORDERS = (("natural", "Folder order"), ("least_confident", "Least confident pending first"))


class ImageListPanel(QWidget):
    """Filter box, status filter, order, the list, and the skipped files.

    The view always shows the filter model; a keystroke in the filter box, a status or an order re-selects the
    rows in one pass and one reset, and the image last made current is made current again when it is listed.
    """

    image_chosen = Signal(int)  # image id
    order_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = ImageListModel()
        self.proxy = ImageFilterModel(self.model)
        self.filter_box = QLineEdit()
        self.filter_box.setPlaceholderText("Filter by name…")
        self.filter_box.setClearButtonEnabled(True)
        self.status_filter = QComboBox()
        for key, text in FILTERS:
            self.status_filter.addItem(text, key)
        self.order = QComboBox()
        for key, text in ORDERS:
            self.order.addItem(text, key)
        self.view = QListView()
        self.view.setUniformItemSizes(True)
        self.view.setLayoutMode(QListView.LayoutMode.Batched)
        self.view.setBatchSize(1000)
        self.view.setEditTriggers(QListView.EditTrigger.NoEditTriggers)
        self.view.setSelectionMode(QListView.SelectionMode.SingleSelection)
        self.view.setModel(self.proxy)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.skipped_label = QLabel()
        self.skipped = QListWidget()
        self.skipped.setMaximumHeight(110)

        filters = QHBoxLayout()
        filters.setContentsMargins(0, 0, 0, 0)
        filters.addWidget(self.status_filter, 1)
        filters.addWidget(self.order, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.filter_box)
        layout.addLayout(filters)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.summary)
        layout.addWidget(self.skipped_label)
        layout.addWidget(self.skipped)
        self.set_skipped([])
        self._chosen: int | None = None
        self._restoring = False

        self.view.selectionModel().currentChanged.connect(self._current_changed)
        self.proxy.modelReset.connect(self._restore_current)
        self.filter_box.textChanged.connect(self._filters_changed)
        self.status_filter.currentIndexChanged.connect(self._filters_changed)
        self.order.currentIndexChanged.connect(self._order_changed)

    @property
    def filtering(self) -> bool:
        """Whether a filter or the review order is on (rather than every image in folder order)."""
        return self.proxy.filter.active

    def visible_count(self) -> int:
        """Images listed in the view (after the filter)."""
        return self.proxy.rowCount()

    def set_records(self, records: Sequence[ImageRecord]) -> None:
        """List a project's images (nothing current until the owner selects one)."""
        self._chosen = None
        self.model.set_records(records)

    def set_skipped(self, skipped: Sequence[SkippedFile]) -> None:
        self.skipped.clear()
        for entry in skipped:
            item = QListWidgetItem(f"{entry.path}: {entry.reason}")
            item.setToolTip(f"{entry.path}\n{entry.reason}")
            self.skipped.addItem(item)
        self.skipped_label.setText(f"Skipped files ({len(skipped)})")
        self.skipped_label.setVisible(bool(skipped))
        self.skipped.setVisible(bool(skipped))

    def set_summary(self, counts: dict[str, int]) -> None:
        total = sum(counts.values())
        self.summary.setText(
            f"{total} images: {counts.get('done', 0)} done, {counts.get('in_progress', 0)} in progress, "
            f"{counts.get('todo', 0)} to do"
        )

    @property
    def review_order(self) -> str:
        return str(self.order.currentData())

    def current_image_id(self) -> int | None:
        index = self.view.currentIndex()
        return self.proxy.data(index, RecordRole).id if index.isValid() else None

    def position_of(self, image_id: int) -> int | None:
        """The image's row in the view (0-based), None when filtered out."""
        index = self._view_index(image_id)
        return index.row() if index.isValid() else None

    def select_image(self, image_id: int) -> bool:
        """Make an image current in the view; False if it is filtered out (it becomes current again when a later
        filter lists it)."""
        self._chosen = image_id
        index = self._view_index(image_id)
        if not index.isValid():
            return False
        if self.view.currentIndex() != index:
            self.view.setCurrentIndex(index)
        self.view.scrollTo(index)
        return True

    def neighbour(self, image_id: int | None, step: int) -> int | None:
        """The image `step` rows away in the list as filtered and sorted; the first one when `image_id` is not
        shown; None past either end."""
        count = self.proxy.rowCount()
        if count == 0:
            return None
        index = self._view_index(image_id) if image_id is not None else QModelIndex()
        target = index.row() + step if index.isValid() else (0 if step > 0 else count - 1)
        if not 0 <= target < count:
            return None
        return self.model.record_at(self.proxy.source_row(target)).id

    def _view_index(self, image_id: int) -> QModelIndex:
        row = self.model.row_of(image_id)
        return self.proxy.mapFromSource(self.model.index(row)) if row is not None else QModelIndex()

    def _filters_changed(self) -> None:
        wanted = ImageFilter.of(self.filter_box.text(), str(self.status_filter.currentData()), self.review_order)
        if wanted != self.proxy.filter:
            self.proxy.set_filter(wanted)

    def _restore_current(self) -> None:
        """After the rows were re-selected, make the chosen image current again if it is listed (quietly: it is
        the image already shown)."""
        if self._chosen is None:
            return
        self._restoring = True
        try:
            self.select_image(self._chosen)
        finally:
            self._restoring = False

    def _current_changed(self, current: QModelIndex, previous: QModelIndex) -> None:
        if current.isValid():
            self._chosen = self.proxy.data(current, RecordRole).id
            if not self._restoring:
                self.image_chosen.emit(self._chosen)

    def _order_changed(self) -> None:
        self._filters_changed()
        self.order_changed.emit(self.review_order)
