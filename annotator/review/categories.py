"""Which category a new annotation gets, and which names the annotator may use: the project's label set when it
has one (`annotator FOLDER --labels`), else any name, with the expression's head noun as the default."""

from __future__ import annotations

from pathlib import Path

from annotator.labels.errors import LabelsFileError
from annotator.labels.head_noun import default_category
from annotator.labels.label_set import LabelSet
from annotator.project.store import ProjectStore

DEFAULT_CATEGORY = "object"
"""The category when nothing else names one (no label set, no head noun, nothing used before)."""


class CategoryChooser:
    """The category logic of one session: the label set, the last category used, the head-noun guess."""

    def __init__(self, last_used: str = "") -> None:
        self.last_used = last_used
        self.store: ProjectStore | None = None
        self.label_set: LabelSet | None = None
        self.problem = ""
        self._folder: Path | None = None

    def use_store(self, store: ProjectStore | None, folder: Path | None = None) -> None:
        """Follow `store`'s label set; `folder` (the image folder) may hold the project's own synonym table.
        A malformed table is left out and `problem` says why."""
        self.store = store
        self._folder = folder
        self._load()

    def _load(self) -> None:
        names = self.store.label_set() if self.store is not None else None
        self.problem = ""
        if names is None:
            self.label_set = None
            return
        try:
            self.label_set = LabelSet.for_project(names, self._folder)
        except LabelsFileError as err:
            self.problem = f"{err}; the shipped synonyms are used instead"
            self.label_set = LabelSet.for_project(names)

    def set_label_set(self, names: list[str] | None) -> None:
        """Fix the project's categories to `names` (None: any name); the store keeps it."""
        if self.store is None:
            return
        self.store.set_label_set(names)
        self._load()

    def add_label(self, name: str) -> None:
        """Add `name` to the label set (the annotator agreed to a name outside it)."""
        if self.label_set is not None and self.label_set.match(name) is None:
            self.set_label_set([*self.label_set.names, name.strip()])

    def names(self) -> list[str]:
        """The names the picker offers: the label set in its order, else the store's categories."""
        if self.label_set is not None:
            return list(self.label_set.names)
        return [c.name for c in self.store.categories()] if self.store is not None else []

    def guess(self, expression: str) -> str:
        """The category to preselect for a proposal made from `expression`."""
        if self.label_set is not None:
            return self.label_set.guess(expression, self.last_used)
        return default_category(expression, self.names(), self.last_used) or DEFAULT_CATEGORY

    def for_drawn_box(self) -> str:
        """The category of a box drawn by hand: the last one used, else the first known one."""
        names = self.names()
        if self.last_used and (self.label_set is None or self.last_used in self.label_set.names):
            return self.last_used
        return names[0] if names else DEFAULT_CATEGORY

    def resolve(self, name: str) -> str:
        """The category `name` stands for: the label it matches (case, plural), else `name` itself."""
        name = name.strip()
        if self.label_set is not None:
            return self.label_set.match(name) or name
        return name

    def ensure_steps(self, name: str) -> int:
        """Make sure category `name` exists (one undoable store step when it had to be added); the steps taken."""
        store = self.store
        assert store is not None
        if store.category_by_name(name) is not None:
            return 0
        store.add_category(name)
        return 1
