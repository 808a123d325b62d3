"""Image folders: scan without decoding, read sizes from headers, load pixels safely with EXIF orientation applied.

- `scan_folder(root) -> ScanResult`: a recursive walk that reads directory entries only (one `stat` per file for
  its byte size; no file is opened). Images are files whose suffix is one of `IMAGE_SUFFIXES` (any case), listed
  as '/'-separated paths relative to `root` in natural sort order ("img2" before "img10"). Hidden files and
  folders (name starting with ".") are ignored; the project store lives in one. Zero-byte files, files of other
  types, broken symlinks, symlink loops, symlinks that lead out of `root` and names that are not valid UTF-8
  (COCO file names are UTF-8 text) are listed in `skipped` with the reason (a non-UTF-8 byte shown as `\xe9`);
  image types Pillow knows but the project does not list say so (`is_unsupported_image`); symlinks
  that stay inside `root` are followed, after every real folder, into folders not listed yet (so a folder
  reached both directly and through a link is listed once, under its real path, and cycles end). Whether a
  listed file really is a readable image is found out lazily by `image_size` / `load_image`.
- `image_size(path)`: (width, height) in the EXIF-applied frame, from the file's header only.
- `load_image(path)`: H x W x 3 RGB uint8 in the EXIF-applied frame, so what the annotator sees is what is
  annotated and exported. Alpha (LA, RGBA, PA, a tRNS transparency in L, RGB or P) is composited on white;
  16-bit grey (I;16) is scaled by 1/257 (the format's full range); 32-bit integer and float grey are stretched
  from their min..max; CMYK, bilevel and other modes go through Pillow's RGB conversion; multi-frame files give
  their first frame.
- `content_fingerprint(path)`: what the store uses to re-attach moved or renamed files.

Every failure (missing, not an image, truncated, corrupt, over `max_pixels`) raises `ImageLoadError` naming the
file and the reason. The pixel limit is checked from the header before any decoding; Pillow's own
decompression-bomb warning is replaced by that check: it is filtered by a filter added once (not by
`warnings.catch_warnings` per call, which makes Python show every once-only warning of the process again, and is
not thread-safe). Pillow refuses outright images above twice its
`Image.MAX_IMAGE_PIXELS` (about 179 Mpx) even for header reads, so `max_pixels` above that has no effect.

Training pipelines that read the exported COCO files must apply the EXIF orientation too (Pillow's
`ImageOps.exif_transpose`, torchvision's `decode_image(..., apply_exif_orientation=True)`): the exported width,
height and coordinates are in the oriented frame.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from annotator.errors import ImageLoadError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
DEFAULT_MAX_PIXELS = 100_000_000
"""Images with more pixels than this (width x height) are refused before decoding (about 300 MB as RGB)."""

FINGERPRINT_CHUNK_BYTES = 64 * 1024

_ORIENTATION_TAG = 0x0112
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})
_WHITE = (255, 255, 255)
_SYMLINK_LOOP = "symlink loop (following the link never reaches a file)"
_DIGIT_RUNS = re.compile(r"(\d+)")
_BOMB_WARNING_FILTER = ("ignore", None, Image.DecompressionBombWarning, None, 0)


@dataclass(frozen=True)
class SkippedFile:
    """A file under the scanned root that is not listed as an image: `path` relative to the root, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class ScanResult:
    """Images under `root` as '/'-separated relative paths in natural order, and the files that were skipped."""

    root: Path
    images: tuple[str, ...]
    skipped: tuple[SkippedFile, ...]


def natural_key(relative_path: str) -> tuple:
    """Sort key that orders digit runs by value, folder by folder ('/' sorts first), case-insensitively."""
    parts: list = _DIGIT_RUNS.split(relative_path.replace("/", "\0").casefold())
    parts[1::2] = map(int, parts[1::2])
    return parts, relative_path


def scan_folder(root: str | os.PathLike) -> ScanResult:
    """List the images under `root` (recursively) without opening any file."""
    root_path = Path(root)
    try:
        real_root = root_path.resolve(strict=True)
    except RuntimeError:
        raise ImageLoadError(f"cannot open image folder {root_path}: {_SYMLINK_LOOP}") from None
    except OSError as err:
        raise ImageLoadError(f"cannot open image folder {root_path}: {err.strerror or err}") from None
    if not real_root.is_dir():
        raise ImageLoadError(f"{root_path} is not a folder")
    images: list[str] = []
    skipped: list[SkippedFile] = []
    visited: set[Path] = set()
    pending = [(real_root, "")]
    linked: list[tuple[Path, str]] = []
    while pending or linked:
        folder, prefix = pending.pop() if pending else linked.pop(0)
        real = folder.resolve()
        if real in visited:
            continue
        visited.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            skipped.append(SkippedFile(prefix.rstrip("/") or ".", f"folder cannot be read: {err.strerror or err}"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            relative = prefix + entry.name
            reason = _entry_problem(entry, real_root)
            if reason is not None:
                skipped.append(SkippedFile(printable_path(relative), reason))
            elif entry.is_dir():
                (linked if entry.is_symlink() else pending).append((Path(entry.path), relative + "/"))
            elif (suffix := os.path.splitext(entry.name)[1]).lower() not in IMAGE_SUFFIXES:
                kind = "image type not supported" if is_unsupported_image(entry.name) else "not an image type"
                skipped.append(SkippedFile(relative, f"{kind} ({suffix or 'no suffix'})"))
            elif entry.stat().st_size == 0:
                skipped.append(SkippedFile(relative, "empty file (0 bytes)"))
            else:
                images.append(relative)
    images.sort(key=natural_key)
    skipped.sort(key=lambda s: natural_key(s.path))
    return ScanResult(root_path, tuple(images), tuple(skipped))


def _entry_problem(entry: os.DirEntry, real_root: Path) -> str | None:
    """Why a directory entry cannot be listed (a name that is not UTF-8, a symlink out of the root or in a loop,
    broken, unreadable), or None."""
    if printable_path(entry.name) != entry.name:
        return "file name is not valid UTF-8; rename it (COCO and the project store keep names as UTF-8 text)"
    try:
        if entry.is_symlink():
            target = Path(entry.path).resolve(strict=True)
            if not target.is_relative_to(real_root):
                return "symlink leads out of the image folder"
        entry.stat()
        if not (entry.is_dir() or entry.is_file()):
            return "not a regular file"
    except RuntimeError:  # Python 3.11's resolve(strict=True) on a symlink loop
        return _SYMLINK_LOOP
    except OSError as err:
        return _SYMLINK_LOOP if err.errno == errno.ELOOP else f"cannot be read: {err.strerror or err}"
    return None


def printable_path(name: str) -> str:
    """A file name as text: the bytes that are not UTF-8 (kept by Python as lone surrogates) shown as `\\xe9`, and
    any other lone surrogate (as JSON can carry) as `\\ud800`."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def is_unsupported_image(name: str) -> bool:
    """Whether `name` has the suffix of an image type that Pillow reads but the project does not list (.ico, .psd,
    .jp2...): such files are reported, where other files (a README, the ground truth) are simply not images."""
    suffix = os.path.splitext(name)[1].lower()
    return suffix not in IMAGE_SUFFIXES and suffix in _pillow_suffixes()


@functools.cache
def _pillow_suffixes() -> frozenset[str]:
    return frozenset(suffix for suffix, kind in Image.registered_extensions().items() if kind in Image.OPEN)


def image_size(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) in pixels with the EXIF orientation applied, read from the header without decoding."""
    with _open(Path(path), max_pixels) as image:
        width, height = image.size
        return (height, width) if _orientation(image) in _SWAPS_AXES else (width, height)


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image as H x W x 3 RGB uint8 with its EXIF orientation applied."""
    path = Path(path)
    with _open(path, max_pixels) as image:
        orientation = _orientation(image)
        try:
            image.load()
            rgb = _to_rgb(image)
        except (OSError, ValueError, SyntaxError) as err:
            raise ImageLoadError(f"cannot decode image {path}: {_reason(err)}") from None
    if orientation in _TRANSPOSE_FOR_ORIENTATION:
        rgb = rgb.transpose(_TRANSPOSE_FOR_ORIENTATION[orientation])
    return np.asarray(rgb, dtype=np.uint8).copy()


def content_fingerprint(path: str | os.PathLike) -> str:
    """Hex digest of the file's byte size, first 64 KiB and last 64 KiB (the whole content below 128 KiB).

    Reads at most 128 KiB, so fingerprinting a large folder stays cheap; two different files collide only if they
    have the same size and the same first and last 64 KiB.
    """
    path = Path(path)
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            digest.update(size.to_bytes(8, "little"))
            digest.update(f.read(FINGERPRINT_CHUNK_BYTES))
            if size > FINGERPRINT_CHUNK_BYTES:
                f.seek(max(FINGERPRINT_CHUNK_BYTES, size - FINGERPRINT_CHUNK_BYTES))
                digest.update(f.read(FINGERPRINT_CHUNK_BYTES))
    except OSError as err:
        raise ImageLoadError(f"cannot read {path}: {err.strerror or err}") from None
    return digest.hexdigest()


def _open(path: Path, max_pixels: int) -> Image.Image:
    """Open the header (no decoding) and refuse images over `max_pixels` with a clear message."""
    if _BOMB_WARNING_FILTER not in warnings.filters:
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    try:
        image = Image.open(path)
    except FileNotFoundError:
        raise ImageLoadError(f"image file {path} does not exist") from None
    except Image.DecompressionBombError as err:
        raise ImageLoadError(f"image {path} is over the pixel limit: {err}") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path} is not an image file Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageLoadError(f"cannot read image {path}: {_reason(err)}") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageLoadError(
            f"image {path} is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} pixels"
        )
    return image


def _orientation(image: Image.Image) -> int:
    """EXIF orientation (1..8) from the header; PNG only from an eXIf chunk before the pixel data."""
    if image.format == "PNG":
        raw = image.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
    else:
        exif = image.getexif()
    value = exif.get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("LA", "RGBA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.round(values / 257.0).astype(np.uint8)).convert("RGB")
    if mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = np.zeros_like(values) if high <= low else (values - low) * (255.0 / (high - low))
        return Image.fromarray(np.round(scaled).astype(np.uint8)).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    return text or type(err).__name__
