"""Plain callbacks for the session's events: the Qt window connects to them like to signals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Event:
    """A list of callbacks, each called with the event's arguments, in connection order."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[..., Any]] = []

    def connect(self, callback: Callable[..., Any]) -> None:
        self._callbacks.append(callback)

    def emit(self, *args: Any) -> None:
        for callback in list(self._callbacks):
            callback(*args)


class SessionEvents:
    """What a view of the session listens to.

    - `changed(image_id)`: the store changed on that image (an action, an undo or a redo);
    - `pending_changed()`: proposals, selection, points in flight or work in flight changed (nothing in the store);
    - `status(text)`: a one-line message for the status bar;
    - `error(text, topic)`: an error the annotator must see, grouped by topic (e.g. "edit", "history", "sam");
    - `cleared(topic, ...)`: the errors of those topics are no longer true;
    - `history_changed()`: what undo and redo can do changed;
    - `outline_known(rle, outline)`: an outline the view made for a mask that is now stored as `rle`;
    - `category_used(name)`: the annotator chose or accepted this category (the next default).
    """

    def __init__(self) -> None:
        self.changed = Event()
        self.pending_changed = Event()
        self.status = Event()
        self.error = Event()
        self.cleared = Event()
        self.history_changed = Event()
        self.outline_known = Event()
        self.category_used = Event()
