"""The project store: one SQLite file holding a folder's images, categories, annotations and undo history.

Opening
    `ProjectStore.for_folder(folder)` uses `<folder>/.annotator/project.sqlite` (hidden, so scans skip it; moving
    the folder moves its project). `ProjectStore.open(path, image_root=folder)` puts the file anywhere; the image
    root is remembered in the file (relative to the store's folder when it can be), so later opens need only
    the path. Image paths in the store are '/'-separated and relative to the image root.

Durability and concurrency
    WAL journal, `synchronous=FULL` by default (a committed change survives a crash of the process and of the
    machine; `NORMAL` survives a crash of the process only), foreign keys on. Every mutating call is one
    `BEGIN IMMEDIATE ... COMMIT` transaction: when the call returns, the change is on disk (autosave). A second
    process (or a second store object) may read at any time; a second writer waits up to `busy_timeout_s` and
    then gets a `ProjectStoreError` saying the store is busy. SQLite's locking keeps the file consistent.

Threads
    The connection is opened with `check_same_thread=True` (sqlite3's default): a store object belongs to the
    thread that opened it - the app's GUI thread, or the CLI's one thread. A worker thread that needs the store
    (for example to read image headers in the background) opens its own `ProjectStore` on the same file.

Images
    `sync_folder()` lists the image root (names only, see `images.scan_folder`), adds new files, marks vanished
    ones missing (their annotations are kept) and re-attaches a moved or renamed file to its old record when its
    content fingerprint matches exactly one vanished file. Sizes (EXIF-applied) and fingerprints are read from
    headers lazily (`ensure_image_info`, `fill_image_info`) and cached with the file's byte size and mtime, so
    reopening never re-reads a header of an unchanged file. Per-image annotation counts are kept by triggers, so
    the image list with statuses (`images()`, `status_counts()`) is one table scan, also for 100,000 images.

Undo
    Every mutating call on categories, annotations and an image's done flag records, in the same transaction,
    the row operations that undo and redo it. `undo()` / `redo()` apply them (the app's QUndoStack calls these).
    History is per store object (a session): one session never undoes another's changes, a new change drops the
    session's redo steps, and the oldest entries beyond `HISTORY_LIMIT` are pruned. Folder syncs, header reads
    and calls with `undoable=False` (imports, the pre-labeller's bulk adds) are not recorded.

API (records are frozen dataclasses of `records`: `ImageRecord`, `Category`, `Annotation`; `NewAnnotation` to add)
    images: `sync_folder`, `images`, `image`, `image_by_path`, `image_path`, `ensure_image_info`,
    `fill_image_info`, `add_images`, `status_counts`, `set_image_done`;
    categories: `categories`, `category`, `category_by_name`, `add_category`, `ensure_category`;
    annotations: `annotations`, `annotation`, `add_annotation`, `add_annotations`, `accept`, `reject`,
    `set_status`, `update_box`, `update_mask`, `update_category`, `delete_annotation`;
    history: `undo`, `redo`, `can_undo`, `can_redo`; file: `path`, `image_root`, `max_pixels`,
    `connection_settings`, `integrity_check`, `close` (also a context manager).
    Caller mistakes (a box outside the image, a mask of the wrong size, an unknown category) raise ValueError;
    an unknown id raises KeyError; the file itself (busy, unwritable, corrupt, too new) raises ProjectStoreError.

Schema
    `PRAGMA user_version` is the schema version. Opening applies the forward migrations from the file's version
    to `SCHEMA_VERSION` in one transaction (taking the write lock only then); a file written by a newer version
    is refused.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PureWindowsPath
from typing import Any, Literal, get_args

from annotator.errors import ImageLoadError, ProjectStoreError
from annotator.project.geometry import Rle
from annotator.project.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ScanResult,
    SkippedFile,
    content_fingerprint,
    image_size,
    printable_path,
    scan_folder,
)
from annotator.project.records import (
    Annotation,
    Category,
    ImageRecord,
    ImageStatus,
    NewAnnotation,
    Source,
    Status,
    SyncReport,
    annotation_from_row,
    image_record,
)
from annotator.project.schema import (
    ANNOTATION_COLUMNS,
    IMAGE_COLUMNS,
    MIGRATIONS,
    SCHEMA_VERSION,
    UNDOABLE_COLUMNS,
    statements,
)

Synchronous = Literal["NORMAL", "FULL"]

STORE_FOLDER = ".annotator"
STORE_FILE = "project.sqlite"
HISTORY_LIMIT = 1000
_INFO_BATCH = 500

class ProjectStore:
    """A project: images under `image_root`, categories, annotations and history, in one SQLite file."""

    def __init__(self, connection: sqlite3.Connection, path: Path, image_root: Path, max_pixels: int) -> None:
        """Use `open` or `for_folder`."""
        self._db = connection
        self._path = path
        self._image_root = image_root
        self._max_pixels = max_pixels
        self._session = uuid.uuid4().hex
        self._savepoints = 0

    # ----- opening ---------------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        image_root: str | os.PathLike | None = None,
        *,
        busy_timeout_s: float = 5.0,
        synchronous: Synchronous = "FULL",
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> "ProjectStore":
        """Open or create the store at `path`; `image_root` is required the first time, remembered after."""
        if synchronous not in get_args(Synchronous):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=True)
        except (OSError, sqlite3.Error) as err:
            raise ProjectStoreError(f"cannot open project store {path}: {err}") from None
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise ProjectStoreError(f"project store {path}: the file system does not allow WAL mode ({mode})")
            db.execute(f"PRAGMA synchronous={synchronous}")
            db.execute("PRAGMA foreign_keys=ON")
            store = cls(db, path, Path(), max_pixels)
            store._check_pages()
            store._migrate()
            store._image_root = store._settle_image_root(image_root)
        except sqlite3.Error as err:
            db.close()
            if _is_damage(err):
                raise ProjectStoreError(damaged_store_message(path, str(err))) from None
            raise ProjectStoreError(f"cannot open project store {path}: {_sqlite_reason(err)}") from None
        except ProjectStoreError:
            db.close()
            raise
        return store

    @classmethod
    def for_folder(cls, folder: str | os.PathLike, **options: Any) -> "ProjectStore":
        """The default store of an image folder: `<folder>/.annotator/project.sqlite`."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ProjectStoreError(f"image folder {folder} does not exist")
        return cls.open(folder / STORE_FOLDER / STORE_FILE, folder, **options)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ProjectStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._path

    @property
    def image_root(self) -> Path:
        """The folder the image paths are relative to."""
        return self._image_root

    @property
    def max_pixels(self) -> int:
        """Pixel limit for reading images of this project (see `images.load_image`)."""
        return self._max_pixels

    def _check_pages(self) -> None:
        """`PRAGMA quick_check` (every page and row readable; cheap: see benchmarks/store_scale.py); a damaged file
        is refused with what to do, and never written to."""
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise ProjectStoreError(damaged_store_message(self._path, "; ".join(problems)))

    def _migrate(self) -> None:
        """Check the schema version; take the write lock only when a migration is due."""
        if self._schema_version() == SCHEMA_VERSION:
            return
        with self._transaction():
            version = self._schema_version()
            for step in range(version, SCHEMA_VERSION):
                for statement in statements(MIGRATIONS[step]):
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _schema_version(self) -> int:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ProjectStoreError(
                f"project store {self._path} has schema version {version}; "
                f"this version of annotator reads up to {SCHEMA_VERSION}: update annotator"
            )
        return version

    def _settle_image_root(self, image_root: str | os.PathLike | None) -> Path:
        stored = self._db.execute("SELECT value FROM meta WHERE key = 'image_root'").fetchone()
        if image_root is None:
            if stored is None:
                raise ProjectStoreError(f"project store {self._path} has no image folder; give image_root")
            return (self._path.parent / stored[0]).resolve()
        root = Path(image_root).resolve()
        try:
            recorded = os.path.relpath(root, self._path.parent.resolve())
        except ValueError:
            recorded = str(root)
        if stored is None or stored[0] != recorded:
            with self._transaction():
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('image_root', ?)", (recorded,))
        return root

    # ----- transactions and history ----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several mutating calls into one all-or-nothing transaction (for imports and bulk changes).

        Inside it, each call still runs in a savepoint of its own, so a call that fails (a ValueError for one bad
        entry, say) leaves the others; an exception that leaves the block rolls everything back. Nestable.
        """
        with self._transaction():
            yield

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One `BEGIN IMMEDIATE ... COMMIT`; inside an open transaction, a savepoint that fails on its own."""
        nested = self._db.in_transaction
        if nested:
            self._savepoints += 1
            savepoint = f"step{self._savepoints}"
            self._db.execute(f"SAVEPOINT {savepoint}")
        else:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as err:
                reason = _sqlite_reason(err)
                raise ProjectStoreError(f"project store {self._path} is busy or unwritable: {reason}") from None
        try:
            yield
            self._db.execute(f"RELEASE {savepoint}" if nested else "COMMIT")
        except BaseException as err:
            if nested:
                self._db.execute(f"ROLLBACK TO {savepoint}")
                self._db.execute(f"RELEASE {savepoint}")
            elif self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if _is_damage(err):
                raise ProjectStoreError(damaged_store_message(self._path, str(err))) from None
            if isinstance(err, (sqlite3.OperationalError, sqlite3.IntegrityError)):
                raise ProjectStoreError(f"project store {self._path}: {_sqlite_reason(err)}") from None
            raise

    def _mutate(self, label: str, ops: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply row operations in one transaction and record how to undo and redo them; the applied ops."""
        with self._transaction():
            applied, inverses = self._apply_all(ops)
            self._db.execute("DELETE FROM history WHERE session = ? AND undone = 1", (self._session,))
            self._db.execute(
                "INSERT INTO history (session, label, undo_ops, redo_ops, created_at) VALUES (?, ?, ?, ?, ?)",
                (self._session, label, json.dumps(inverses[::-1]), json.dumps(applied), time.time()),
            )
            self._db.execute(
                "DELETE FROM history WHERE id <= (SELECT MAX(id) FROM history) - ?", (HISTORY_LIMIT,)
            )
        return applied

    def _apply_all(self, ops: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        applied, inverses = [], []
        for op in ops:
            done, inverse = self._apply(op)
            applied.append(done)
            inverses.append(inverse)
        return applied, inverses

    def _apply(self, op: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Apply one row operation; return it as applied (ids filled in) and its inverse."""
        table = op["table"]
        allowed = UNDOABLE_COLUMNS[table]
        if op["op"] == "insert":
            rows = []
            for row in op["rows"]:
                if not set(row) <= allowed:
                    raise ValueError(f"unknown columns for {table}: {sorted(set(row) - allowed)}")
                columns = list(row)
                cursor = self._db.execute(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                    [row[c] for c in columns],
                )
                rows.append({**row, "id": cursor.lastrowid})
            return {"op": "insert", "table": table, "rows": rows}, {
                "op": "delete", "table": table, "ids": [r["id"] for r in rows]}  # fmt: skip
        if op["op"] == "delete":
            rows = []
            for row_id in op["ids"]:
                row = self._row(table, row_id, sorted(allowed))
                self._db.execute(f"DELETE FROM {table} WHERE id = ?", (row_id,))
                rows.append(row)
            return op, {"op": "insert", "table": table, "rows": rows}
        if op["op"] == "update":
            values = op["values"]
            if not set(values) <= allowed - {"id"}:
                raise ValueError(f"unknown columns for {table}: {sorted(set(values) - allowed)}")
            old = self._row(table, op["id"], list(values))
            assignments = ", ".join(f"{c} = ?" for c in values)
            self._db.execute(f"UPDATE {table} SET {assignments} WHERE id = ?", [*values.values(), op["id"]])
            return op, {"op": "update", "table": table, "id": op["id"], "values": old}
        raise ValueError(f"unknown row operation {op['op']!r}")

    def _row(self, table: str, row_id: int, columns: Sequence[str]) -> dict[str, Any]:
        found = self._db.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE id = ?", (row_id,)).fetchone()
        if found is None:
            raise KeyError(f"no row {row_id} in {table}")
        return dict(zip(columns, found))

    def undo(self) -> str | None:
        """Undo this session's latest change; its label, or None when there is nothing to undo."""
        return self._step(undone=0, order="DESC", ops_column="undo_ops", mark=1)

    def redo(self) -> str | None:
        """Redo this session's most recently undone change; its label, or None when there is nothing to redo."""
        return self._step(undone=1, order="ASC", ops_column="redo_ops", mark=0)

    def _step(self, *, undone: int, order: str, ops_column: str, mark: int) -> str | None:
        with self._transaction():
            entry = self._db.execute(
                f"SELECT id, label, {ops_column} FROM history WHERE session = ? AND undone = ? "
                f"ORDER BY id {order} LIMIT 1",
                (self._session, undone),
            ).fetchone()
            if entry is None:
                return None
            self._apply_all(json.loads(entry[2]))
            self._db.execute("UPDATE history SET undone = ? WHERE id = ?", (mark, entry[0]))
        return entry[1]

    @property
    def can_undo(self) -> bool:
        return self._has_history(0)

    @property
    def can_redo(self) -> bool:
        return self._has_history(1)

    def _has_history(self, undone: int) -> bool:
        query = "SELECT 1 FROM history WHERE session = ? AND undone = ? LIMIT 1"
        return self._db.execute(query, (self._session, undone)).fetchone() is not None

    # ----- images ----------------------------------------------------------------------------------------------

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
        self._mutate("mark done" if done else "mark not done", [_update("images", image_id, {"done": int(done)})])
        return self.image(image_id)

    # ----- categories ------------------------------------------------------------------------------------------

    def categories(self) -> list[Category]:
        rows = self._db.execute("SELECT id, name, supercategory FROM categories ORDER BY id")
        return [Category(*row) for row in rows]

    def category(self, category_id: int) -> Category:
        row = self._db.execute("SELECT id, name, supercategory FROM categories WHERE id = ?", (category_id,)).fetchone()
        if row is None:
            raise KeyError(f"no category {category_id} in {self._path}")
        return Category(*row)

    def category_by_name(self, name: str) -> Category | None:
        row = self._db.execute("SELECT id, name, supercategory FROM categories WHERE name = ?", (name,)).fetchone()
        return None if row is None else Category(*row)

    def add_category(self, name: str, supercategory: str = "", *, undoable: bool = True) -> Category:
        """Add a category (one undo step unless `undoable=False`); ValueError if the name is empty or taken."""
        if not name.strip():
            raise ValueError("a category needs a name")
        if self.category_by_name(name) is not None:
            raise ValueError(f"category {name!r} already exists")
        row = {"name": name, "supercategory": supercategory}
        if undoable:
            category_id = self._mutate(f"add category {name}", [_insert("categories", row)])[0]["rows"][0]["id"]
        else:
            with self._transaction():
                category_id = self._db.execute(
                    "INSERT INTO categories (name, supercategory) VALUES (?, ?)", (name, supercategory)
                ).lastrowid
        return self.category(category_id)

    def ensure_category(self, name: str, supercategory: str = "") -> Category:
        """The category with this name, added (undoably) if there is none."""
        return self.category_by_name(name) or self.add_category(name, supercategory)

    def label_set(self) -> list[str] | None:
        """The project's fixed category list in its order (`annotator FOLDER --labels`), None when it has none."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'label_set'").fetchone()
        return None if row is None else list(json.loads(row[0]))

    def set_label_set(self, names: Sequence[str] | None) -> list[str] | None:
        """Fix the project's categories to `names` (duplicates and blanks dropped, order kept), adding a category
        for each name not yet in the store; None lifts the restriction. Not an undo step: it is a project
        setting, like the image root. Categories already used stay, in or out of the set."""
        if names is None:
            with self._transaction():
                self._db.execute("DELETE FROM meta WHERE key = 'label_set'")
            return None
        kept = list(dict.fromkeys(name.strip() for name in names if name.strip()))
        if not kept:
            raise ValueError("a label set needs at least one name")
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('label_set', ?)", (json.dumps(kept),)
            )
            for name in kept:
                if self.category_by_name(name) is None:
                    self._db.execute("INSERT INTO categories (name, supercategory) VALUES (?, '')", (name,))
        return kept

    # ----- annotations -----------------------------------------------------------------------------------------

    def annotation(self, annotation_id: int) -> Annotation:
        row = self._db.execute(
            f"SELECT {', '.join(ANNOTATION_COLUMNS)} FROM annotations WHERE id = ?", (annotation_id,)
        ).fetchone()
        if row is None:
            raise KeyError(f"no annotation {annotation_id} in {self._path}")
        return annotation_from_row(row)

    def annotations(
        self, image_id: int | None = None, statuses: Sequence[Status] | None = None
    ) -> list[Annotation]:
        """Annotations of one image (or all), optionally only those with the given statuses, by id."""
        clauses, params = [], []
        if image_id is not None:
            clauses.append("image_id = ?")
            params.append(image_id)
        if statuses is not None:
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT {', '.join(ANNOTATION_COLUMNS)} FROM annotations {where} ORDER BY id"
        return [annotation_from_row(row) for row in self._db.execute(query, params)]

    def add_annotation(
        self,
        image_id: int,
        category_id: int,
        box_xyxy: tuple[float, float, float, float] | None = None,
        *,
        rle: Rle | None = None,
        expression: str = "",
        source: Source = "manual",
        score: float | None = None,
        heads: Sequence[tuple[int, int]] = (),
        status: Status = "pending",
        extra: Mapping[str, Any] | None = None,
    ) -> Annotation:
        """Add one annotation (one undoable step). `box_xyxy` None: the tight box of `rle`."""
        new = NewAnnotation(
            image_id, category_id, box_xyxy, rle, expression, source, score, tuple(map(tuple, heads)), status,
            dict(extra or {}),
        )  # fmt: skip
        return self.annotation(self.add_annotations([new], label="add annotation")[0])

    def add_annotations(
        self, items: Sequence[NewAnnotation], *, undoable: bool = True, label: str = "add annotations"
    ) -> list[int]:
        """Add many annotations in one transaction (one undo step, or none with `undoable=False`); their ids."""
        sizes: dict[int, tuple[int, int]] = {}
        category_ids = {category.id for category in self.categories()}
        rows = [self._new_row(item, sizes, category_ids) for item in items]
        if not rows:
            return []
        if undoable:
            applied = self._mutate(label, [_insert("annotations", *rows)])
            return [row["id"] for row in applied[0]["rows"]]
        columns = list(rows[0])
        with self._transaction():
            cursor = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM annotations")
            first = cursor.fetchone()[0] + 1
            self._db.executemany(
                f"INSERT INTO annotations ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                ([row[c] for c in columns] for row in rows),
            )
            ids = [r[0] for r in self._db.execute("SELECT id FROM annotations WHERE id >= ? ORDER BY id", (first,))]
        return ids

    def _new_row(
        self, item: NewAnnotation, sizes: dict[int, tuple[int, int]], category_ids: set[int]
    ) -> dict[str, Any]:
        if item.category_id not in category_ids:
            raise ValueError(f"no category {item.category_id} in {self._path}")
        if item.image_id not in sizes:
            sizes[item.image_id] = self._known_size(item.image_id)
        width, height = sizes[item.image_id]
        if item.rle is not None and (item.rle.height, item.rle.width) != (height, width):
            raise ValueError(
                f"mask is {item.rle.width}x{item.rle.height}, image {item.image_id} is {width}x{height}"
            )
        box = item.box_xyxy
        if box is None:
            if item.rle is None or item.rle.box_xyxy is None:
                raise ValueError("an annotation needs a box or a non-empty mask")
            box = item.rle.box_xyxy
        _check_choice(item.source, Source, "source")
        _check_choice(item.status, Status, "status")
        now = time.time()
        return {
            "image_id": item.image_id,
            "category_id": item.category_id,
            **_box_columns(box, width, height),
            **_mask_columns(item.rle),
            "expression": item.expression,
            "source": item.source,
            "score": None if item.score is None else float(item.score),
            "heads": json.dumps([[int(layer), int(head)] for layer, head in item.heads]),
            "status": item.status,
            "created_at": now,
            "updated_at": now,
            "extra": json.dumps(dict(item.extra)),
        }

    def _known_size(self, image_id: int) -> tuple[int, int]:
        record = self.image(image_id)
        if record.width is None:
            record = self.ensure_image_info(image_id)
        if record.width is None or record.height is None:
            raise ProjectStoreError(f"image {record.path} cannot be annotated: {record.error}")
        return record.width, record.height

    def accept(self, annotation_id: int) -> Annotation:
        return self.set_status(annotation_id, "accepted")

    def reject(self, annotation_id: int) -> Annotation:
        return self.set_status(annotation_id, "rejected")

    def set_status(self, annotation_id: int, status: Status) -> Annotation:
        """Set pending / accepted / rejected (one undoable step)."""
        _check_choice(status, Status, "status")
        self.annotation(annotation_id)
        values = {"status": status, "updated_at": time.time()}
        self._mutate(f"mark {status}", [_update("annotations", annotation_id, values)])
        return self.annotation(annotation_id)

    def update_box(self, annotation_id: int, box_xyxy: tuple[float, float, float, float]) -> Annotation:
        """Move or resize the box (one undoable step); a proposal or import becomes `edited`."""
        current = self.annotation(annotation_id)
        width, height = self._known_size(current.image_id)
        return self._edit(annotation_id, "edit box", _box_columns(box_xyxy, width, height))

    def update_mask(
        self, annotation_id: int, rle: Rle | None, *, points: Sequence[Sequence[float]] | None = None
    ) -> Annotation:
        """Replace the mask (None: box-only); a non-empty mask also sets the box to its tight box. `points`, when
        given, become the annotation's SAM refinement points (`extra["points"]`, `[[x, y, 1 | 0], ...]`; an empty
        list removes them) in the same undo step, so refining after reopening the folder goes on from them."""
        current = self.annotation(annotation_id)
        width, height = self._known_size(current.image_id)
        values = _mask_columns(rle)
        if rle is not None:
            if (rle.height, rle.width) != (height, width):
                raise ValueError(f"mask is {rle.width}x{rle.height}, image is {width}x{height}")
            if rle.box_xyxy is None:
                raise ValueError("the mask is empty; use None for a box-only annotation")
            values.update(_box_columns(rle.box_xyxy, width, height))
        if points is not None:
            extra = {key: value for key, value in current.extra.items() if key != "points"}
            if points:
                extra["points"] = [[float(v) for v in point] for point in points]
            values["extra"] = json.dumps(extra)
        return self._edit(annotation_id, "edit mask", values)

    def update_category(self, annotation_id: int, category_id: int) -> Annotation:
        self.category(category_id)
        return self._edit(annotation_id, "change category", {"category_id": category_id})

    def _edit(self, annotation_id: int, label: str, values: dict[str, Any]) -> Annotation:
        current = self.annotation(annotation_id)
        source = "edited" if current.source in ("proposal", "imported") else current.source
        values = {**values, "source": source, "updated_at": time.time()}
        self._mutate(label, [_update("annotations", annotation_id, values)])
        return self.annotation(annotation_id)

    def delete_annotation(self, annotation_id: int) -> None:
        """Delete an annotation (one undoable step)."""
        self.annotation(annotation_id)
        self._mutate("delete annotation", [{"op": "delete", "table": "annotations", "ids": [annotation_id]}])

    def connection_settings(self) -> dict[str, Any]:
        """SQLite settings in force: journal_mode, synchronous (1 NORMAL, 2 FULL), foreign_keys, busy_timeout (ms)."""
        names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        return {name: self._db.execute(f"PRAGMA {name}").fetchone()[0] for name in names}

    def integrity_check(self) -> str:
        """SQLite's `PRAGMA integrity_check` ("ok" when the file is sound)."""
        return "\n".join(row[0] for row in self._db.execute("PRAGMA integrity_check"))


_INFO_UPDATE = (
    "UPDATE images SET width = ?, height = ?, file_bytes = ?, mtime_ns = ?, fingerprint = ?, error = ? WHERE id = ?"
)


def _insert(table: str, *rows: dict[str, Any]) -> dict[str, Any]:
    return {"op": "insert", "table": table, "rows": list(rows)}


def _update(table: str, row_id: int, values: dict[str, Any]) -> dict[str, Any]:
    return {"op": "update", "table": table, "id": row_id, "values": values}


def _check_choice(value: str, choices: Any, name: str) -> None:
    if value not in get_args(choices):
        raise ValueError(f"{name} must be one of {get_args(choices)}, got {value!r}")


def _box_columns(box: Sequence[float], width: int, height: int) -> dict[str, float]:
    """Validated box columns: finite, non-empty, inside the width x height image."""
    if len(box) != 4:
        raise ValueError(f"a box is (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"box {box!r} has a non-finite coordinate")
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"box {box!r} is empty or outside the {width}x{height} image")
    return {"x0": x0, "y0": y0, "x1": x1, "y1": y1}


def _mask_columns(rle: Rle | None) -> dict[str, Any]:
    if rle is None:
        return {"mask_height": None, "mask_width": None, "mask_counts": None}
    return {"mask_height": rle.height, "mask_width": rle.width, "mask_counts": rle.counts}


def damaged_store_message(path: Path, detail: str) -> str:
    """What to tell the annotator about a store file SQLite finds damaged: what, where, and how to go on."""
    return (
        f"project store {path} is damaged (SQLite: {' '.join(detail.split())}); it was left as it is. It is a plain "
        f"SQLite file: recover what is readable with the sqlite3 tool (`sqlite3 {path} .recover | sqlite3 "
        f"recovered.sqlite`, then put recovered.sqlite in its place), or move it aside and open the folder again "
        f"to start a new store"
    )


def _is_damage(err: BaseException) -> bool:
    """SQLite's plain DatabaseError: a malformed file or "file is not a database" (not a lock or a misuse)."""
    return type(err) is sqlite3.DatabaseError


def _sqlite_reason(err: sqlite3.Error) -> str:
    text = str(err)
    if "locked" in text or "busy" in text:
        return f"{text} (another process is writing to it; try again when it has finished)"
    return text
