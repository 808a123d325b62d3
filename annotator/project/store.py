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
    images (`store_images`): `sync_folder`, `images`, `image`, `image_by_path`, `image_path`,
    `resolve_image_path`, `ensure_image_info`, `fill_image_info`, `add_images`, `status_counts`, `set_image_done`;
    categories (here): `categories`, `category`, `category_by_name`, `add_category`, `ensure_category`,
    `label_set`, `set_label_set`;
    annotations (`store_annotations`): `annotations`, `annotation`, `add_annotation`, `add_annotations`, `accept`,
    `reject`, `set_status`, `update_box`, `update_mask`, `update_category`, `delete_annotation`;
    history (`store_history`): `undo`, `redo`, `can_undo`, `can_redo`, `transaction`; file (here): `path`,
    `image_root`, `max_pixels`, `connection_settings`, `integrity_check`, `close` (also a context manager).
    Caller mistakes (a box outside the image, a mask of the wrong size, an unknown category) raise ValueError;
    an unknown id raises KeyError; the file itself (busy, unwritable, corrupt, too new) raises ProjectStoreError.

Schema
    `PRAGMA user_version` is the schema version. Opening applies the forward migrations from the file's version
    to `SCHEMA_VERSION` in one transaction (taking the write lock only then); a file written by a newer version
    is refused.

Parts
    `ProjectStore` is one class built in layers, each a module: `store_history.StoreHistory` (transactions, row
    operations, undo and redo, the history table, SQLite errors as ProjectStoreError), `store_images.StoreImages`
    (folder sync, image records, paths, header info), `store_annotations.StoreAnnotations` (adding and editing
    annotations), and this module (opening, migrations, categories and the label set, the file's settings).
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from annotator.errors import ProjectStoreError
from annotator.project.images import DEFAULT_MAX_PIXELS
from annotator.project.records import (
    Annotation,
    Category,
    ImageRecord,
    ImageStatus,
    NewAnnotation,
    Source,
    Status,
    SyncReport,
)
from annotator.project.schema import MIGRATIONS, SCHEMA_VERSION, statements
from annotator.project.store_annotations import StoreAnnotations
from annotator.project.store_history import HISTORY_LIMIT, damaged_store_message, insert_op, is_damage, sqlite_reason

__all__ = [
    "HISTORY_LIMIT",
    "SCHEMA_VERSION",
    "STORE_FILE",
    "STORE_FOLDER",
    "Annotation",
    "Category",
    "ImageRecord",
    "ImageStatus",
    "NewAnnotation",
    "ProjectStore",
    "Source",
    "Status",
    "Synchronous",
    "SyncReport",
    "damaged_store_message",
]

Synchronous = Literal["NORMAL", "FULL"]

STORE_FOLDER = ".annotator"
STORE_FILE = "project.sqlite"


class ProjectStore(StoreAnnotations):
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
            if is_damage(err):
                raise ProjectStoreError(damaged_store_message(path, str(err))) from None
            raise ProjectStoreError(f"cannot open project store {path}: {sqlite_reason(err)}") from None
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
            category_id = self._mutate(f"add category {name}", [insert_op("categories", row)])[0]["rows"][0]["id"]
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

    # ----- the file --------------------------------------------------------------------------------------------

    def connection_settings(self) -> dict[str, Any]:
        """SQLite settings in force: journal_mode, synchronous (1 NORMAL, 2 FULL), foreign_keys, busy_timeout (ms)."""
        names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        return {name: self._db.execute(f"PRAGMA {name}").fetchone()[0] for name in names}

    def integrity_check(self) -> str:
        """SQLite's `PRAGMA integrity_check` ("ok" when the file is sound)."""
        return "\n".join(row[0] for row in self._db.execute("PRAGMA integrity_check"))

