"""The image list's Qt models: `ImageListModel` holds the store's `ImageRecord`s (one row each, nothing decoded);
`ImageFilterModel` shows a filtered, ordered selection of its rows.

The filter model is not a `QSortFilterProxyModel`: that one asks every row through Python and announces each
removed or inserted stretch, which blocks the GUI thread for hundreds of milliseconds at 10,000 images. Here the
rows shown are computed in one pass over precomputed columns (`ImageColumns`) and announced with one model reset.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap

from annotator.project.image_filter import ImageColumns, ImageFilter, record_status
from annotator.project.records import ImageRecord

STATUS_TEXT = {"todo": "to do", "in_progress": "in progress", "done": "done", "error": "cannot be read"}
STATUS_COLOUR = {"todo": "#9ca3af", "in_progress": "#f59e0b", "done": "#22c55e", "error": "#ef4444"}
RecordRole = Qt.ItemDataRole.UserRole + 1
ReviewKeyRole = Qt.ItemDataRole.UserRole + 2
"""Sort key of the review order: an image's lowest pending score, then pending without score, then the rest."""
AnyIndex = QModelIndex | QPersistentModelIndex


class ImageListModel(QAbstractListModel):
    """The project's images as list rows (display: file name and counts; icon: status)."""

    def __init__(self) -> None:
        super().__init__()
        self._records: list[ImageRecord] = []
        self._rows: dict[int, int] = {}
        self._min_pending_score: dict[int, float] = {}
        self.columns = ImageColumns()
        self._icons = {status: _status_icon(colour) for status, colour in STATUS_COLOUR.items()}

    def set_records(self, records: Sequence[ImageRecord]) -> None:
        self.beginResetModel()
        self._records = list(records)
        self._rows = {record.id: row for row, record in enumerate(self._records)}
        self.columns.set_records(self._records)
        self.endResetModel()

    def update_record(self, record: ImageRecord) -> None:
        row = self._rows.get(record.id)
        if row is None:
            return
        self._records[row] = record
        self.columns.update(row, record)
        index = self.index(row)
        self.dataChanged.emit(index, index)

    def set_pending_scores(self, scores: dict[int, float]) -> None:
        """Per image, the lowest score among its pending annotations (for the review order)."""
        self._min_pending_score = dict(scores)
        if self._records:
            self.dataChanged.emit(self.index(0), self.index(len(self._records) - 1))

    def pending_score(self, image_id: int) -> float | None:
        return self._min_pending_score.get(image_id)

    def pending_scores(self) -> dict[int, float]:
        return self._min_pending_score

    def row_of(self, image_id: int) -> int | None:
        return self._rows.get(image_id)

    def record_at(self, row: int) -> ImageRecord:
        return self._records[row]

    def records(self) -> list[ImageRecord]:
        return list(self._records)

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._records)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        return self.row_data(index.row(), role) if index.isValid() else None

    def row_data(self, row: int, role: int) -> object:
        """What `data` answers for `row`."""
        record = self._records[row]
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
            return self.columns.review_key(row, self._min_pending_score)
        return None


class ImageFilterModel(QAbstractListModel):
    """The source's rows that an `ImageFilter` shows, in its order (folder order, or least confident first).

    The selection is computed when the filter or the source's records change and when `set_order` is called (the
    review order's scores come with the source's `set_pending_scores`, after which the owner calls `set_order`);
    an edited record stays listed until then, like a non-dynamic `QSortFilterProxyModel`.
    """

    def __init__(self, source: ImageListModel) -> None:
        super().__init__()
        self._images = source
        self._filter = ImageFilter()
        self._rows: list[int] = []
        self._positions: dict[int, int] | None = None
        self._select()
        source.modelAboutToBeReset.connect(self.beginResetModel)
        source.modelReset.connect(self._source_reset)
        source.dataChanged.connect(self._source_changed)

    @property
    def filter(self) -> ImageFilter:
        return self._filter

    def set_filter(self, wanted: ImageFilter) -> None:
        """Show what `wanted` selects (one reset, even when the text, status and order all change)."""
        self._filter = wanted
        self.beginResetModel()
        self._select()
        self.endResetModel()

    def set_text(self, text: str) -> None:
        self.set_filter(ImageFilter.of(text, self._filter.status, self._filter.order))

    def set_status(self, status: str) -> None:
        self.set_filter(ImageFilter.of(self._filter.text, status, self._filter.order))

    def set_order(self, order: str) -> None:
        self.set_filter(ImageFilter.of(self._filter.text, self._filter.status, order))

    def source_row(self, row: int) -> int:
        return self._rows[row]

    def row_of_source(self, source_row: int) -> int | None:
        """Where a source row is listed, None when it is filtered out."""
        if self._positions is None:
            self._positions = {source: row for row, source in enumerate(self._rows)}
        return self._positions.get(source_row)

    def mapFromSource(self, index: AnyIndex) -> QModelIndex:
        row = self.row_of_source(index.row()) if index.isValid() else None
        return self.index(row) if row is not None else QModelIndex()

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        return self._images.row_data(self._rows[index.row()], role) if index.isValid() else None

    def _select(self) -> None:
        self._rows = self._images.columns.select(self._filter, self._images.pending_scores())
        self._positions = None

    def _source_reset(self) -> None:
        self._select()
        self.endResetModel()

    def _source_changed(self, top: QModelIndex, bottom: QModelIndex, roles: Sequence[int] = ()) -> None:
        if not self._rows:
            return
        if top.row() == 0 and bottom.row() >= self._images.rowCount() - 1:
            first, last = 0, len(self._rows) - 1
        else:
            shown = [self.row_of_source(row) for row in range(top.row(), bottom.row() + 1)]
            listed = [row for row in shown if row is not None]
            if not listed:
                return
            first, last = min(listed), max(listed)
        self.dataChanged.emit(self.index(first), self.index(last), list(roles))


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
