"""Undo and redo: a QUndoStack whose commands are the project store's own history steps.

Every change the annotator makes to the store (accept, reject, edit, delete, category change, point refinement,
marking an image done) runs at once through the store's API, which commits it and records its inverse; the
command remembers how many store history steps the change took. Undo calls `store.undo()` that many times, redo
calls `store.redo()`; since every store change of the app goes through this stack, the two histories stay in
step. State that lives only in the app (the refinement points of an annotation) is restored by the command's
`ui_undo` / `ui_redo` callbacks.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtGui import QUndoCommand

from annotator.project.store import ProjectStore


class StoreCommand(QUndoCommand):
    """One annotator action that already ran on the store (`steps` store history entries).

    `after(image_id)` runs after every undo and redo so views can refresh the image the action touched.
    """

    def __init__(
        self,
        text: str,
        store: ProjectStore,
        steps: int,
        image_id: int,
        after: Callable[[int], None],
        ui_undo: Callable[[], None] | None = None,
        ui_redo: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(text)
        self.store = store
        self.steps = steps
        self.image_id = image_id
        self._after = after
        self._ui_undo = ui_undo
        self._ui_redo = ui_redo
        self._already_done = True

    def redo(self) -> None:
        if self._already_done:
            self._already_done = False
            return
        for _ in range(self.steps):
            self.store.redo()
        if self._ui_redo is not None:
            self._ui_redo()
        self._after(self.image_id)

    def undo(self) -> None:
        for _ in range(self.steps):
            self.store.undo()
        if self._ui_undo is not None:
            self._ui_undo()
        self._after(self.image_id)
