""""Where the model looked": the heatmap toggle and opacity, and each localization head's map side by side.

Each head's map is shown on the model's token grid (one square per image token, the padded square the model
saw), with the image's own area outlined, and labelled with its (layer, head). When the maps agree on one spot
the proposal can be trusted; when they scatter, it deserves a second look.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QCheckBox, QGridLayout, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from annotator.grounding.frame import ImageFrame

MAP_SIDE_PX = 120


class HeadsPanel(QWidget):
    """Heatmap controls and the per-head maps of the current proposal."""

    heatmap_toggled = Signal(bool)
    opacity_changed = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.show_heatmap = QCheckBox("Show heatmap on the image (H)")
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(5, 100)
        self.opacity.setValue(55)
        self.opacity.setToolTip("Heatmap opacity")
        self.caption = QLabel("No proposal yet.")
        self.caption.setWordWrap(True)
        self.caption.setMinimumHeight(self.caption.fontMetrics().lineSpacing() * 3)
        self._maps = QGridLayout()
        self._maps.setContentsMargins(0, 0, 0, 0)
        self._map_labels: list[QLabel] = []
        self._name_labels: list[QLabel] = []

        opacity_row = QHBoxLayout()
        opacity_row.addWidget(QLabel("Opacity"))
        opacity_row.addWidget(self.opacity, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.show_heatmap)
        layout.addLayout(opacity_row)
        layout.addWidget(self.caption)
        layout.addLayout(self._maps)
        layout.addStretch(1)

        self.show_heatmap.toggled.connect(self.heatmap_toggled)
        self.opacity.valueChanged.connect(lambda value: self.opacity_changed.emit(value / 100.0))

    @property
    def map_labels(self) -> list[QLabel]:
        """The pictures of the heads' maps, in the order of the heads."""
        return list(self._map_labels)

    @property
    def head_names(self) -> list[str]:
        """The labels under the shown maps ("L14 H24"...)."""
        return [label.text() for label in self._name_labels]

    def set_heads(
        self,
        heads: Sequence[tuple[int, int]],
        images: Sequence[QImage],
        frame: ImageFrame | None,
        box_grid: tuple[float, float, float, float] | None,
    ) -> None:
        """Show each head's grid map (with the image area and the proposal's box outlined), or clear."""
        for label in self._map_labels + self._name_labels:
            self._maps.removeWidget(label)
            label.deleteLater()
        self._map_labels, self._name_labels = [], []
        if not heads:
            self.caption.setText("No proposal yet.")
            return
        self.caption.setText(
            "Each localization head's attention from the expression's last word over the image tokens "
            "(white: the image, dashed: the box)."
        )
        for column, (head, image) in enumerate(zip(heads, images)):
            picture = QLabel()
            picture.setPixmap(_map_pixmap(image, frame, box_grid))
            picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
            name = QLabel(f"L{head[0]} H{head[1]}")
            name.setAlignment(Qt.AlignmentFlag.AlignCenter)
            name.setToolTip(f"layer {head[0]}, head {head[1]} (0-based)")
            self._maps.addWidget(picture, 0, column)
            self._maps.addWidget(name, 1, column)
            self._map_labels.append(picture)
            self._name_labels.append(name)


def _map_pixmap(
    image: QImage, frame: ImageFrame | None, box_grid: tuple[float, float, float, float] | None
) -> QPixmap:
    """The grid map scaled up with visible cells, the image area outlined in white, the box dashed."""
    scaled = image.scaled(
        MAP_SIDE_PX, MAP_SIDE_PX, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation
    )
    pixmap = QPixmap.fromImage(scaled)
    if frame is None:
        return pixmap
    sx = pixmap.width() / frame.grid_w
    sy = pixmap.height() / frame.grid_h
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    (x0, y0, x1, y1) = frame.box_to_grid((0.0, 0.0, float(frame.width), float(frame.height)))
    painter.setPen(QPen(QColor("white"), 1.5))
    painter.drawRect(QRectF(x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy))
    if box_grid is not None:
        bx0, by0, bx1, by1 = box_grid
        painter.setPen(QPen(QColor("#ff00ff"), 2.0, Qt.PenStyle.DashLine))
        painter.drawRect(QRectF(bx0 * sx, by0 * sy, (bx1 - bx0) * sx, (by1 - by0) * sy))
    painter.end()
    return pixmap
