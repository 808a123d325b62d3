"""A project's fixed category list (a label set) and the labels file it is read from.

The labels file is labelme's `labels.txt`: one label a line, UTF-8 with or without a byte-order mark, blank lines
skipped, labelme's `__ignore__` and `_background_` lines skipped, surrounding spaces stripped, a repeated label
kept once at its first place. The order of the file is the order of the set (and of the label colours).

`LabelSet.guess` maps a referring expression onto the set: the longest ending of its first noun phrase that names
a label (ignoring case and plural), else one that a synonym maps to a label ("the man in red" -> "person", "the
small kitten" -> "cat"; `annotator.labels.synonyms`), else the last used label, else the first label.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from annotator.labels.errors import LabelsFileError
from annotator.labels.head_noun import category_key, noun_phrase
from annotator.labels.synonyms import load_synonyms, project_synonyms_path

SKIPPED_LINES = frozenset({"__ignore__", "_background_"})
"""labelme's labels.txt lines that name no label."""


def parse_labels(lines: Iterable[str]) -> list[str]:
    """The labels of labels.txt lines: stripped, blanks and labelme's special lines skipped, first copies kept."""
    stripped = (line.strip() for line in lines)
    return list(dict.fromkeys(line for line in stripped if line and line not in SKIPPED_LINES))


def read_labels_file(path: str | Path) -> list[str]:
    """The labels of a labelme `labels.txt`, in order; `LabelsFileError` naming the file (and line) otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LabelsFileError(f"{path}: no such labels file") from None
    except IsADirectoryError:
        raise LabelsFileError(f"{path}: is a folder, not a labels file") from None
    except OSError as exc:
        raise LabelsFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LabelsFileError(f"{path}, line {line}: not UTF-8 text") from None
    labels = parse_labels(text.splitlines())
    if not labels:
        raise LabelsFileError(f"{path}: no labels (expected one label a line, as labelme's labels.txt)")
    return labels


@dataclass(frozen=True)
class LabelSet:
    """A fixed, ordered list of category names and a synonym table (word -> label) to map expressions onto it."""

    names: tuple[str, ...]
    synonyms: Mapping[str, str] = field(default_factory=dict, hash=False)
    _labels_by_key: dict[str, str] = field(init=False, repr=False, compare=False)
    _synonyms_by_key: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(self.names)
        if not names or not all(isinstance(name, str) and name.strip() for name in names):
            raise ValueError("a label set needs at least one name, and no blank one")
        labels_by_key: dict[str, str] = {}
        for name in names:
            labels_by_key.setdefault(category_key(name), name)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "_labels_by_key", labels_by_key)
        object.__setattr__(self, "_synonyms_by_key", {category_key(w): label for w, label in self.synonyms.items()})

    @classmethod
    def for_project(cls, names: Sequence[str], folder: str | Path | None = None) -> LabelSet:
        """The set of `names` (as `parse_labels` keeps them) with the shipped synonyms, merged with the project's
        own `<folder>/.annotator/synonyms.json` when there is one."""
        override = None if folder is None else project_synonyms_path(folder)
        return cls(tuple(parse_labels(names)), load_synonyms(override))

    def match(self, name: str) -> str | None:
        """The label `name` names, ignoring case and plural ("Persons" -> "person"); None when none does."""
        return self._labels_by_key.get(category_key(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.match(name) is not None

    def index(self, name: str) -> int | None:
        """The position of the label `name` names in the set; None when it names none."""
        label = self.match(name)
        return None if label is None else self.names.index(label)

    def guess(self, expression: str, last_used: str) -> str:
        """The label for a new annotation of `expression`: named by it, else through a synonym, else `last_used`
        when it is in the set, else the first label."""
        phrase = noun_phrase(expression)
        for start in range(len(phrase)):
            words = " ".join(phrase[start:])
            label = self.match(words) or self._through_synonym(words)
            if label is not None:
                return label
        return self.match(last_used) or self.names[0]

    def _through_synonym(self, words: str) -> str | None:
        target = self._synonyms_by_key.get(category_key(words))
        return None if target is None else self.match(target)
