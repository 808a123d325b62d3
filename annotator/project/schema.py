"""The project store's SQLite schema: the tables, indexes and count triggers, the forward migrations, and the
column lists the store reads and writes (`PRAGMA user_version` is the schema version)."""

from __future__ import annotations

import sqlite3

_SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    position INTEGER NOT NULL DEFAULT 0,
    present INTEGER NOT NULL DEFAULT 1,
    width INTEGER,
    height INTEGER,
    file_bytes INTEGER,
    mtime_ns INTEGER,
    fingerprint TEXT,
    error TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    n_pending INTEGER NOT NULL DEFAULT 0,
    n_accepted INTEGER NOT NULL DEFAULT 0,
    n_rejected INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX images_listing ON images (present, position);
CREATE INDEX images_fingerprint ON images (fingerprint);
CREATE TABLE categories (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    supercategory TEXT NOT NULL DEFAULT ''
);
CREATE TABLE annotations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id INTEGER NOT NULL REFERENCES images (id),
    category_id INTEGER NOT NULL REFERENCES categories (id),
    x0 REAL NOT NULL,
    y0 REAL NOT NULL,
    x1 REAL NOT NULL,
    y1 REAL NOT NULL,
    mask_height INTEGER,
    mask_width INTEGER,
    mask_counts TEXT,
    expression TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL CHECK (source IN ('proposal', 'manual', 'edited', 'imported')),
    score REAL,
    heads TEXT NOT NULL DEFAULT '[]',
    status TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'rejected')),
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}',
    CHECK (x0 < x1 AND y0 < y1),
    CHECK ((mask_counts IS NULL) = (mask_height IS NULL) AND (mask_counts IS NULL) = (mask_width IS NULL))
);
CREATE INDEX annotations_by_image ON annotations (image_id, status);
CREATE INDEX annotations_by_category ON annotations (category_id);
CREATE TRIGGER annotations_count_insert AFTER INSERT ON annotations BEGIN
    UPDATE images SET n_pending = n_pending + (NEW.status = 'pending'),
                      n_accepted = n_accepted + (NEW.status = 'accepted'),
                      n_rejected = n_rejected + (NEW.status = 'rejected')
    WHERE id = NEW.image_id;
END;
CREATE TRIGGER annotations_count_delete AFTER DELETE ON annotations BEGIN
    UPDATE images SET n_pending = n_pending - (OLD.status = 'pending'),
                      n_accepted = n_accepted - (OLD.status = 'accepted'),
                      n_rejected = n_rejected - (OLD.status = 'rejected')
    WHERE id = OLD.image_id;
END;
CREATE TRIGGER annotations_count_update AFTER UPDATE OF status, image_id ON annotations BEGIN
    UPDATE images SET n_pending = n_pending - (OLD.status = 'pending'),
                      n_accepted = n_accepted - (OLD.status = 'accepted'),
                      n_rejected = n_rejected - (OLD.status = 'rejected')
    WHERE id = OLD.image_id;
    UPDATE images SET n_pending = n_pending + (NEW.status = 'pending'),
                      n_accepted = n_accepted + (NEW.status = 'accepted'),
                      n_rejected = n_rejected + (NEW.status = 'rejected')
    WHERE id = NEW.image_id;
END;
CREATE TABLE history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    label TEXT NOT NULL,
    undo_ops TEXT NOT NULL,
    redo_ops TEXT NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE INDEX history_by_session ON history (session, undone, id);
"""

MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1,)
"""`MIGRATIONS[v]` takes a store from schema version v to v + 1 (version 0 is an empty file)."""
SCHEMA_VERSION = len(MIGRATIONS)

ANNOTATION_COLUMNS = (
    "id", "image_id", "category_id", "x0", "y0", "x1", "y1", "mask_height", "mask_width", "mask_counts",
    "expression", "source", "score", "heads", "status", "created_at", "updated_at", "extra",
)  # fmt: skip
UNDOABLE_COLUMNS = {
    "annotations": frozenset(ANNOTATION_COLUMNS),
    "categories": frozenset({"id", "name", "supercategory"}),
    "images": frozenset({"done"}),
}
IMAGE_COLUMNS = "id, path, width, height, present, done, n_pending, n_accepted, n_rejected, error"


def statements(script: str) -> list[str]:
    """Split a schema script into statements (trigger bodies contain ';', so split on complete statements)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements
