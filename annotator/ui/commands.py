"""Undo and redo: a QUndoStack whose commands are the project store's own history steps.

Every change the annotator makes to the store (accept, reject, edit, delete, category change, point refinement,
marking an image done) runs at once through the store's API, which commits it and records its inverse; the
command remembers how many store history steps the change took. Undo calls `store.undo()` that many times, redo
calls `store.redo()`; since every store change of the app goes through this stack, the two histories stay in
step. State that lives only in the app (the refinement points of an annotation) is restored by the command's
`ui_undo` / `ui_redo` callbacks.

The store may refuse a step: another instance of the app (or a pre-label run) on the same folder has since used
a category this step would remove, or deleted an annotation it would restore. QUndoStack moves its index whatever
the command does, so the window undoes through `undo_in_step` / `redo_in_step`: the command's store steps run
first, all or none in one transaction, and the stack moves only when the store took them. A refused step raises
`HistoryRefused` and leaves both histories where they were.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtGui import QUndoCommand, QUndoStack

from annotator.errors import ProjectStoreError
from annotator.project.store import ProjectStore


class HistoryRefused(Exception):
    """The store refused an undo or redo step; nothing changed. The message says which step and why."""


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
        self._pushed = False  # QUndoStack.push calls redo() once: the action has run on the store already
        self._store_stepped = False

    def step_store(self, undo: bool) -> None:
        """Undo (or redo) this action's store steps, all or none; `HistoryRefused` if the store refuses any."""
        verb, step = ("undo", self.store.undo) if undo else ("redo", self.store.redo)
        try:
            with self.store.transaction():
                for _ in range(self.steps):
                    if step() is None:
                        raise ProjectStoreError(f"project store {self.store.path} has no {verb} step left for it")
        except (ProjectStoreError, KeyError) as err:
            raise HistoryRefused(f"Cannot {verb} “{self.text()}”: {_refusal_reason(err)}") from None
        self._store_stepped = True

    def redo(self) -> None:
        self._run(undo=False)

    def undo(self) -> None:
        self._run(undo=True)

    def _run(self, undo: bool) -> None:
        if not self._pushed:
            self._pushed = True
            return
        if not self._store_stepped:
            self.step_store(undo)
        self._store_stepped = False
        ui = self._ui_undo if undo else self._ui_redo
        if ui is not None:
            ui()
        self._after(self.image_id)


def undo_in_step(stack: QUndoStack) -> None:
    """Undo the stack's latest command, its store steps first: the stack moves only when the store took them."""
    command = stack.command(stack.index() - 1)
    if isinstance(command, StoreCommand):
        command.step_store(undo=True)
    stack.undo()


def redo_in_step(stack: QUndoStack) -> None:
    """Redo the stack's next command, its store steps first: the stack moves only when the store took them."""
    command = stack.command(stack.index())
    if isinstance(command, StoreCommand):
        command.step_store(undo=False)
    stack.redo()


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
