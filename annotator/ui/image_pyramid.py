"""Decoded images as QImages ready to paint, with halved levels so zoomed-out views of large images stay smooth.

Built off the GUI thread (QImage, unlike QPixmap, may be made in any thread): the canvas then paints the
smallest level that still has at least one image pixel per screen pixel, so an 8000 x 6000 photo fitted to the
window paints a ~1000-pixel level instead of resampling 48 million pixels on every repaint.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PySide6.QtGui import QImage

SMALLEST_LEVEL_SIDE = 512
"""Halving stops once a level's longer side is at most this many pixels."""


@dataclass(frozen=True)
class ImagePyramid:
    """`levels[0]` is the image at full size (`width` x `height` original pixels); each next level is half as big."""

    width: int
    height: int
    levels: tuple[QImage, ...]

    def level_for(self, pixels_per_image_pixel: float) -> QImage:
        """The smallest level with at least `pixels_per_image_pixel` of its pixels per original pixel."""
        chosen = self.levels[0]
        for level in self.levels:
            if level.width() / self.width >= pixels_per_image_pixel:
                chosen = level
            else:
                break
        return chosen


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """An H x W x 3 uint8 RGB array -> a QImage in the raster engine's fast format (RGB32), owning its pixels."""
    array = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = array.shape[:2]
    image = QImage(array.data, width, height, array.strides[0], QImage.Format.Format_RGB888)
    return image.convertToFormat(QImage.Format.Format_RGB32)


def rgba_to_qimage(rgba: np.ndarray) -> QImage:
    """An H x W x 4 uint8 RGBA array (straight alpha) -> a QImage owning its pixels."""
    array = np.ascontiguousarray(rgba, dtype=np.uint8)
    height, width = array.shape[:2]
    image = QImage(array.data, width, height, array.strides[0], QImage.Format.Format_RGBA8888)
    return image.copy()


def build_pyramid(rgb: np.ndarray) -> ImagePyramid:
    """The full-size image and its halvings (area-averaged, as OpenCV's INTER_AREA does) as QImages."""
    height, width = rgb.shape[:2]
    levels = [rgb_to_qimage(rgb)]
    level = rgb
    while max(level.shape[:2]) > SMALLEST_LEVEL_SIDE and min(level.shape[:2]) >= 2:
        h, w = level.shape[:2]
        level = cv2.resize(level, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
        levels.append(rgb_to_qimage(level))
    return ImagePyramid(width=width, height=height, levels=tuple(levels))
