"""The image list: every image of the project with its status and counts, a filter box, a status filter, a sort
order for reviewing (least confident pending first), and the files the scan skipped with their reasons.

The model holds the store's `ImageRecord`s (one row each, nothing decoded), so 10,000 images list at once;
the view uses uniform row heights so only visible rows are measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
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

from annotator.project.images import SkippedFile
from annotator.project.store import ImageRecord

STATUS_TEXT = {"todo": "to do", "in_progress": "in progress", "done": "done", "error": "cannot be read"}
STATUS_COLOUR = {"todo": "#9ca3af", "in_progress": "#f59e0b", "done": "#22c55e", "error": "#ef4444"}
FILTERS = (
    ("all", "All images"),
    ("todo", "To do"),
    ("in_progress", "In progress"),
    ("done", "Done"),
    ("pending", "With pending proposals"),
)
ORDERS = (("natural", "Folder order"), ("least_confident", "Least confident pending first"))
RecordRole = Qt.ItemDataRole.UserRole + 1
ReviewKeyRole = Qt.ItemDataRole.UserRole + 2
"""Sort key of the review order: an image's lowest pending score, then pending without score, then the rest."""


def record_status(record: ImageRecord) -> str:
    """"todo", "in_progress", "done", or "error" for an image whose header cannot be read."""
    return "error" if record.error else record.status


class ImageListModel(QAbstractListModel):
    """The project's images as list rows (display: file name and counts; icon: status)."""

    def __init__(self) -> None:
        super().__init__()
        self._records: list[ImageRecord] = []
        self._rows: dict[int, int] = {}
        self._min_pending_score: dict[int, float] = {}
        self._icons = {status: _status_icon(colour) for status, colour in STATUS_COLOUR.items()}

    def set_records(self, records: Sequence[ImageRecord]) -> None:
        self.beginResetModel()
        self._records = list(records)
        self._rows = {record.id: row for row, record in enumerate(self._records)}
        self.endResetModel()

    def update_record(self, record: ImageRecord) -> None:
        row = self._rows.get(record.id)
        if row is None:
            return
        self._records[row] = record
        index = self.index(row)
        self.dataChanged.emit(index, index)

    def set_pending_scores(self, scores: dict[int, float]) -> None:
        """Per image, the lowest score among its pending annotations (for the review order)."""
        self._min_pending_score = dict(scores)
        if self._records:
            self.dataChanged.emit(self.index(0), self.index(len(self._records) - 1))

    def pending_score(self, image_id: int) -> float | None:
        return self._min_pending_score.get(image_id)

    def row_of(self, image_id: int) -> int | None:
        return self._rows.get(image_id)

    def record_at(self, row: int) -> ImageRecord:
        return self._records[row]

    def records(self) -> list[ImageRecord]:
        return list(self._records)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._records)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid():
            return None
        record = self._records[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            name = PurePosixPath(record.path).name
            counts = []
            if record.n_accepted:
                counts.append(str(record.n_accepted))
            if record.n_pending:
                counts.append(f"{record.n_pending} pending")
            return f"{name}  ({', '.join(counts)})" if counts else name
        if role == Qt.ItemDataRole.DecorationRole:
            return self._icons[record_status(record)]
        if role == Qt.ItemDataRole.ToolTipRole:
            lines = [record.path, f"Status: {STATUS_TEXT[record_status(record)]}"]
            if record.width is not None:
                lines.append(f"{record.width} x {record.height} pixels")
            lines.append(
                f"{record.n_accepted} accepted, {record.n_pending} pending, {record.n_rejected} rejected annotations"
            )
            if record.error:
                lines.append(record.error)
            return "\n".join(lines)
        if role == RecordRole:
            return record
        if role == ReviewKeyRole:
            score = self._min_pending_score.get(record.id)
            if record.n_pending and score is not None:
                return float(score)
            return 2.0 if record.n_pending else 3.0
        return None


class ImageFilterModel(QSortFilterProxyModel):
    """Filters by a text (part of the path, any case) and a status; orders by folder order or review order.

    The review order sorts on `ReviewKeyRole` numbers, compared by Qt itself (a stable sort, so ties keep the
    folder order); the folder order does not sort at all. Both stay fast for 10,000 rows.
    """

    def __init__(self, source: ImageListModel) -> None:
        super().__init__()
        self._images = source
        self.setSourceModel(source)
        self.setSortRole(ReviewKeyRole)
        self.setDynamicSortFilter(False)
        self._text = ""
        self._status = "all"
        self._order = "natural"

    def set_text(self, text: str) -> None:
        self._text = text.strip().lower()
        self.invalidateFilter()

    def set_status(self, status: str) -> None:
        self._status = status
        self.invalidateFilter()

    def set_order(self, order: str) -> None:
        self._order = order
        self.sort(0 if order == "least_confident" else -1)

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        record = self._images.record_at(source_row)
        if self._text and self._text not in record.path.lower():
            return False
        if self._status == "pending":
            return record.n_pending > 0
        if self._status != "all":
            return record_status(record) == self._status
        return True


class ImageListPanel(QWidget):
    """Filter box, status filter, order, the list, and the skipped files.

    Without a filter and in folder order the view shows the model itself; the filtering proxy is attached only
    while a filter or the review order is on, so opening 10,000 images costs no per-row Python filtering.
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
        self._shown: ImageListModel | ImageFilterModel | None = None
        self._show(self.model)

        self.filter_box.textChanged.connect(self._filters_changed)
        self.status_filter.currentIndexChanged.connect(self._filters_changed)
        self.order.currentIndexChanged.connect(self._order_changed)

    @property
    def filtering(self) -> bool:
        """Whether the view shows the filtered / sorted proxy rather than every image in folder order."""
        return self._shown is self.proxy

    def visible_count(self) -> int:
        """Images listed in the view (after the filter)."""
        return self._shown.rowCount()

    def set_records(self, records: Sequence[ImageRecord]) -> None:
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
        return self._shown.data(index, RecordRole).id if index.isValid() else None

    def position_of(self, image_id: int) -> int | None:
        """The image's row in the view (0-based), None when filtered out."""
        index = self._view_index(image_id)
        return index.row() if index.isValid() else None

    def select_image(self, image_id: int) -> bool:
        """Make an image current in the view; False if it is filtered out."""
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
        count = self._shown.rowCount()
        if count == 0:
            return None
        index = self._view_index(image_id) if image_id is not None else QModelIndex()
        target = index.row() + step if index.isValid() else (0 if step > 0 else count - 1)
        if not 0 <= target < count:
            return None
        return self._shown.data(self._shown.index(target, 0), RecordRole).id

    def _view_index(self, image_id: int) -> QModelIndex:
        row = self.model.row_of(image_id)
        if row is None:
            return QModelIndex()
        index = self.model.index(row)
        return self.proxy.mapFromSource(index) if self.filtering else index

    def _show(self, model: ImageListModel | ImageFilterModel) -> None:
        """Put `model` in the view, keeping the current image current when it is still listed."""
        if model is self._shown:
            return
        current = self.current_image_id() if self._shown is not None else None
        if model is self.proxy:
            self.proxy.setSourceModel(self.model)
        self._shown = model
        self.view.setModel(model)
        self.view.selectionModel().currentChanged.connect(self._current_changed)
        if model is self.model:
            self.proxy.setSourceModel(None)
        if current is not None:
            self.select_image(current)

    def _filters_changed(self) -> None:
        wanted = bool(self.filter_box.text().strip()) or self.status_filter.currentData() != "all"
        wanted = wanted or self.review_order != "natural"
        if wanted:
            self.proxy.set_text(self.filter_box.text())
            self.proxy.set_status(str(self.status_filter.currentData()))
            self.proxy.set_order(self.review_order)
        self._show(self.proxy if wanted else self.model)

    def _current_changed(self, current: QModelIndex, previous: QModelIndex) -> None:
        if current.isValid():
            self.image_chosen.emit(self._shown.data(current, RecordRole).id)

    def _order_changed(self) -> None:
        self._filters_changed()
        self.order_changed.emit(self.review_order)


def _status_icon(colour: str) -> QIcon:
    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor(0, 0, 0, 0))
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(QColor(colour))
    painter.setPen(QColor(colour).darker(140))
    painter.drawEllipse(1, 1, 10, 10)
    painter.end()
    return QIcon(pixmap)
