"""Image records of the project store: folder sync, registering files, paths and header info (see `store`).

`ProjectStore` inherits these from `StoreImages`. `sync_folder` brings the images table in line with the image
root (a moved or renamed file keeps its record when its content fingerprint matches exactly one vanished file);
sizes and fingerprints are read from headers lazily and cached with the file's byte size and mtime.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path, PureWindowsPath

from annotator.errors import ImageLoadError, ProjectStoreError
from annotator.project.images import (
    IMAGE_SUFFIXES,
    ScanResult,
    SkippedFile,
    content_fingerprint,
    image_size,
    printable_path,
    scan_folder,
)
from annotator.project.records import ImageRecord, ImageStatus, SyncReport, image_record
from annotator.project.schema import IMAGE_COLUMNS
from annotator.project.store_history import StoreHistory, update_op

_INFO_BATCH = 500
_INFO_UPDATE = (
    "UPDATE images SET width = ?, height = ?, file_bytes = ?, mtime_ns = ?, fingerprint = ?, error = ? WHERE id = ?"
)


class StoreImages(StoreHistory):
    """The images of a `ProjectStore` (a mixin: the store sets the attributes)."""

    _image_root: Path
    _max_pixels: int

    def sync_folder(self, scan: ScanResult | None = None) -> SyncReport:
        """Bring the images table in line with the image root (names only; no image is opened)."""
        scan = scan if scan is not None else scan_folder(self._image_root)
        found = scan.images
        found_set = set(found)
        known = {
            path: (image_id, bool(present), fingerprint, file_bytes, position)
            for image_id, path, present, fingerprint, file_bytes, position in self._db.execute(
                "SELECT id, path, present, fingerprint, file_bytes, position FROM images"
            )
        }
        new = [p for p in found if p not in known]
        vanished = {path: info for path, info in known.items() if info[1] and path not in found_set}
        moves = self._find_moves(new, vanished)
        moved_to = {new_path: known[old_path][0] for old_path, new_path in moves.items()}
        inserts, updates = [], []
        for position, path in enumerate(found):
            if path in moved_to:
                updates.append((path, position, moved_to[path]))
            elif path not in known:
                inserts.append((path, position))
            elif not known[path][1] or known[path][4] != position:
                updates.append((path, position, known[path][0]))
        gone = [(path,) for path in vanished if path not in moves]
        if inserts or updates or gone:
            with self._transaction():
                self._db.executemany("UPDATE images SET present = 0 WHERE path = ?", gone)
                self._db.executemany("UPDATE images SET path = ?, position = ?, present = 1 WHERE id = ?", updates)
                self._db.executemany("INSERT INTO images (path, position) VALUES (?, ?)", inserts)
        return SyncReport(
            added=len(new) - len(moves),
            reattached=len(moves),
            missing=len(vanished) - len(moves),
            listed=len(found),
            skipped=scan.skipped,
        )

    def _find_moves(self, new: list[str], vanished: dict[str, tuple]) -> dict[str, str]:
        """Vanished path -> new path, where a fingerprint matches exactly one vanished and one new file."""
        by_size: dict[int, list[tuple[str, str]]] = {}
        for path, (_, _, fingerprint, file_bytes, _) in vanished.items():
            if fingerprint is not None and file_bytes is not None:
                by_size.setdefault(file_bytes, []).append((path, fingerprint))
        if not by_size:
            return {}
        old_by_print: dict[str, list[str]] = {}
        for candidates in by_size.values():
            for path, fingerprint in candidates:
                old_by_print.setdefault(fingerprint, []).append(path)
        new_by_print: dict[str, list[str]] = {}
        for path in new:
            absolute = self._image_root / path
            try:
                if absolute.stat().st_size not in by_size:
                    continue
                fingerprint = content_fingerprint(absolute)
            except (OSError, ImageLoadError):
                continue
            new_by_print.setdefault(fingerprint, []).append(path)
        return {
            old[0]: new_by_print[fingerprint][0]
            for fingerprint, old in old_by_print.items()
            if len(old) == 1 and len(new_by_print.get(fingerprint, ())) == 1
        }

    def add_images(self, relative_paths: Sequence[str]) -> tuple[list[ImageRecord], list[SkippedFile]]:
        """Register image files under the root by relative path (used by imports), in one transaction, and read
        their headers; records (also of paths already known) in the given order, and the paths refused, why."""
        records: list[ImageRecord] = []
        refused: list[SkippedFile] = []
        accepted: list[str] = []
        for relative in relative_paths:
            try:
                absolute = self.resolve_image_path(relative)
            except ProjectStoreError as err:
                refused.append(SkippedFile(relative, str(err)))
                continue
            try:
                is_image_file = absolute.suffix.lower() in IMAGE_SUFFIXES and absolute.is_file()
            except OSError as err:
                refused.append(SkippedFile(relative, f"image path {relative[:200]!r}: {err.strerror or err}"))
                continue
            if not is_image_file:
                refused.append(SkippedFile(relative, f"no image file {relative} under {self._image_root}"))
                continue
            accepted.append(relative)
        known = {path for path in accepted if self.image_by_path(path) is not None}
        with self._transaction():
            position = self._db.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM images").fetchone()[0]
            self._db.executemany(
                "INSERT INTO images (path, position) VALUES (?, ?)",
                ((path, position + i) for i, path in enumerate(p for p in dict.fromkeys(accepted) if p not in known)),
            )
        ids = [self.image_by_path(path).id for path in accepted]
        self.fill_image_info(ids)
        records = [self.image(image_id) for image_id in ids]
        return records, refused

    def resolve_image_path(self, relative_path: str) -> Path:
        """The absolute path of an image path relative to the root; ProjectStoreError if it leads outside."""
        if "\0" in relative_path or printable_path(relative_path) != relative_path:
            raise ProjectStoreError(f"image path {printable_path(relative_path)[:200]!r} is not a usable file name")
        candidate = Path(relative_path)
        windows = PureWindowsPath(relative_path)
        if candidate.is_absolute() or windows.anchor or ".." in candidate.parts or ".." in windows.parts:
            raise ProjectStoreError(f"image path {relative_path!r} is not inside the image folder")
        absolute = self._image_root / candidate
        try:
            inside = absolute.resolve().is_relative_to(self._image_root.resolve())
        except RuntimeError:  # Python 3.11's resolve() on a symlink loop
            raise ProjectStoreError(f"image path {relative_path!r} is a symlink loop") from None
        if not inside:
            raise ProjectStoreError(f"image path {relative_path!r} leads out of the image folder {self._image_root}")
        return absolute

    def image_path(self, image_id: int) -> Path:
        """Absolute path of an image (to pass to `images.load_image`)."""
        return self._image_root / self.image(image_id).path

    def ensure_image_info(self, image_id: int) -> ImageRecord:
        """Read the image's size and fingerprint from its header unless cached for the file as it is now."""
        self.image(image_id)
        self.fill_image_info([image_id])
        return self.image(image_id)

    def fill_image_info(
        self, image_ids: Sequence[int] | None = None, *, progress: Callable[[int, int], None] | None = None
    ) -> int:
        """Read image headers; how many were read. With `image_ids`: those images whose cached size does not
        match the file as it is now (byte size and mtime); without: every listed image never read.

        Commits every 500 images; `progress(done, total)` is called after each commit.
        """
        if image_ids is None:
            todo = [
                (image_id, path, None, None, None)
                for image_id, path in self._db.execute(
                    "SELECT id, path FROM images "
                    "WHERE present = 1 AND width IS NULL AND error IS NULL ORDER BY position"
                )
            ]
        else:
            query = "SELECT id, path, width, file_bytes, mtime_ns FROM images WHERE id = ?"
            todo = [row for image_id in image_ids if (row := self._db.execute(query, (image_id,)).fetchone())]
        read = 0
        for start in range(0, len(todo), _INFO_BATCH):
            batch = todo[start : start + _INFO_BATCH]
            updates = [
                (*update, image_id)
                for image_id, path, width, file_bytes, mtime_ns in batch
                if (update := self._read_info(path, width, file_bytes, mtime_ns)) is not None
            ]
            if updates:
                with self._transaction():
                    self._db.executemany(_INFO_UPDATE, updates)
            read += len(updates)
            if progress is not None:
                progress(start + len(batch), len(todo))
        return read

    def _read_info(self, path: str, width: int | None, file_bytes: int | None, mtime_ns: int | None) -> tuple | None:
        """(width, height, file_bytes, mtime_ns, fingerprint, error) from the file, or None if the cache holds."""
        absolute = self._image_root / path
        try:
            stat = absolute.stat()
        except OSError as err:
            return None, None, None, None, None, f"file cannot be read: {err.strerror or err}"
        if width is not None and (file_bytes, mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            return None
        try:
            size = image_size(absolute, self._max_pixels)
            fingerprint = content_fingerprint(absolute)
        except ImageLoadError as err:
            return None, None, stat.st_size, stat.st_mtime_ns, None, str(err)
        return size[0], size[1], stat.st_size, stat.st_mtime_ns, fingerprint, None

    def image(self, image_id: int) -> ImageRecord:
        row = self._db.execute(f"SELECT {IMAGE_COLUMNS} FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise KeyError(f"no image {image_id} in {self._path}")
        return image_record(row)

    def image_by_path(self, relative_path: str) -> ImageRecord | None:
        row = self._db.execute(f"SELECT {IMAGE_COLUMNS} FROM images WHERE path = ?", (relative_path,)).fetchone()
        return None if row is None else image_record(row)

    def images(self, *, include_missing: bool = False) -> list[ImageRecord]:
        """The image list in natural order, with per-image status and annotation counts."""
        where = "" if include_missing else "WHERE present = 1"
        rows = self._db.execute(f"SELECT {IMAGE_COLUMNS} FROM images {where} ORDER BY present DESC, position, id")
        return [image_record(row) for row in rows]

    def status_counts(self) -> dict[ImageStatus, int]:
        """How many listed images are to do, in progress and done."""
        todo, in_progress, done = self._db.execute(
            "SELECT COALESCE(SUM(done = 0 AND n_pending + n_accepted + n_rejected = 0), 0), "
            "COALESCE(SUM(done = 0 AND n_pending + n_accepted + n_rejected > 0), 0), "
            "COALESCE(SUM(done = 1), 0) FROM images WHERE present = 1"
        ).fetchone()
        return {"todo": todo, "in_progress": in_progress, "done": done}

    def set_image_done(self, image_id: int, done: bool = True) -> ImageRecord:
        """Mark an image done (or not); undoable."""
        self.image(image_id)
        self._mutate("mark done" if done else "mark not done", [update_op("images", image_id, {"done": int(done)})])
        return self.image(image_id)
