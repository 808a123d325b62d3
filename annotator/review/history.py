"""Undo and redo over the project store's own history.

Every change the session makes to the store (accept, reject, edit, delete, category change, mask refinement and
editing, marking an image done) runs at once through the store's API, which commits it and records its inverse;
a `HistoryEntry` remembers how many store history steps the change took. Undo calls `store.undo()` that many
times, redo `store.redo()`; since every store change of the session goes through this history, the two stay in
step.

The store may refuse a step: another instance of the app (or a pre-label run) on the same folder has since used a
category this step would remove, or deleted an annotation it would restore. The entry's store steps then run all
or none in one transaction, and the history moves only when the store took them: a refused step raises
`HistoryRefused` and leaves both histories where they were.
"""

from __future__ import annotations

from dataclasses import dataclass

from annotator.errors import ProjectStoreError
from annotator.project.store import ProjectStore


class HistoryRefused(Exception):
    """The store refused an undo or redo step; nothing changed. The message says which step and why."""


@dataclass(frozen=True)
class HistoryEntry:
    """One annotator action that ran on the store: `steps` store history entries, on image `image_id`."""

    text: str
    steps: int
    image_id: int


class History:
    """A linear undo/redo history of `HistoryEntry`s over one store (`index` entries are done)."""

    def __init__(self, store: ProjectStore) -> None:
        self.store = store
        self._entries: list[HistoryEntry] = []
        self._index = 0

    def push(self, entry: HistoryEntry) -> None:
        """Record an action that already ran on the store; anything undone beyond it is forgotten."""
        del self._entries[self._index :]
        self._entries.append(entry)
        self._index = len(self._entries)

    def count(self) -> int:
        return len(self._entries)

    def index(self) -> int:
        """How many entries are done (the next undo undoes entry `index - 1`)."""
        return self._index

    def can_undo(self) -> bool:
        return self._index > 0

    def can_redo(self) -> bool:
        return self._index < len(self._entries)

    def undo_text(self) -> str:
        return self._entries[self._index - 1].text if self.can_undo() else ""

    def undo(self) -> HistoryEntry | None:
        """Undo the latest entry's store steps (None if there is none); `HistoryRefused` if the store refuses."""
        if not self.can_undo():
            return None
        entry = self._entries[self._index - 1]
        self._step_store(entry, undo=True)
        self._index -= 1
        return entry

    def redo(self) -> HistoryEntry | None:
        """Redo the next entry's store steps (None if there is none); `HistoryRefused` if the store refuses."""
        if not self.can_redo():
            return None
        entry = self._entries[self._index]
        self._step_store(entry, undo=False)
        self._index += 1
        return entry

    def clear(self) -> None:
        self._entries.clear()
        self._index = 0

    def _step_store(self, entry: HistoryEntry, undo: bool) -> None:
        verb, step = ("undo", self.store.undo) if undo else ("redo", self.store.redo)
        try:
            with self.store.transaction():
                for _ in range(entry.steps):
                    if step() is None:
                        raise ProjectStoreError(f"project store {self.store.path} has no {verb} step left for it")
        except (ProjectStoreError, KeyError) as err:
            raise HistoryRefused(f"Cannot {verb} “{entry.text}”: {_refusal_reason(err)}") from None


def _refusal_reason(err: ProjectStoreError | KeyError) -> str:
    """Why the store refused a step, in the annotator's words: a row gone or still in use means another
    instance changed the project since."""
    reason = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    if isinstance(err, KeyError) or "constraint" in reason:
        reason = (
            "another annotator window or a pre-label run on this folder has changed what this step touches "
            f"since ({reason})"
        )
    return f"{reason}. Nothing was changed; the step stays in the history."
