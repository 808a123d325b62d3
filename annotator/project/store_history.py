"""Transactions, row operations and undo history of the project store (see `store` for the whole store).

`ProjectStore` inherits these from `StoreHistory`: every mutating call runs in `_transaction` (one
`BEGIN IMMEDIATE ... COMMIT`, or a savepoint inside an open one) and undoable changes go through `_mutate`, which
applies row operations (`insert_op`, `update_op`, deletes) and records their inverses in the history table, per
session. SQLite errors are turned into `ProjectStoreError`s saying what went wrong with which file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from annotator.errors import ProjectStoreError
from annotator.project.schema import UNDOABLE_COLUMNS

HISTORY_LIMIT = 1000


class StoreHistory:
    """Transactions and the undo history of a `ProjectStore` (a mixin: the store sets the attributes)."""

    _db: sqlite3.Connection
    _path: Path
    _session: str
    _savepoints: int

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
                reason = sqlite_reason(err)
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
            if is_damage(err):
                raise ProjectStoreError(damaged_store_message(self._path, str(err))) from None
            if isinstance(err, (sqlite3.OperationalError, sqlite3.IntegrityError)):
                raise ProjectStoreError(f"project store {self._path}: {sqlite_reason(err)}") from None
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


def insert_op(table: str, *rows: dict[str, Any]) -> dict[str, Any]:
    """A row operation inserting `rows` into `table`."""
    return {"op": "insert", "table": table, "rows": list(rows)}


def update_op(table: str, row_id: int, values: dict[str, Any]) -> dict[str, Any]:
    """A row operation setting `values` on row `row_id` of `table`."""
    return {"op": "update", "table": table, "id": row_id, "values": values}


def damaged_store_message(path: Path, detail: str) -> str:
    """What to tell the annotator about a store file SQLite finds damaged: what, where, and how to go on."""
    return (
        f"project store {path} is damaged (SQLite: {' '.join(detail.split())}); it was left as it is. It is a plain "
        f"SQLite file: recover what is readable with the sqlite3 tool (`sqlite3 {path} .recover | sqlite3 "
        f"recovered.sqlite`, then put recovered.sqlite in its place), or move it aside and open the folder again "
        f"to start a new store"
    )


def is_damage(err: BaseException) -> bool:
    """SQLite's plain DatabaseError: a malformed file or "file is not a database" (not a lock or a misuse)."""
    return type(err) is sqlite3.DatabaseError


def sqlite_reason(err: sqlite3.Error) -> str:
    """The error's text, with what to do when the store is locked by another writer."""
    text = str(err)
    if "locked" in text or "busy" in text:
        return f"{text} (another process is writing to it; try again when it has finished)"
    return text
