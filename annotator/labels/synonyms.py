"""The synonym table: the words annotators type for each label ("man", "girl", "player" for "person").

Format (`resources/category_synonyms.json`, and a project's own `<folder>/.annotator/synonyms.json`): one JSON
object, label -> list of words, e.g. `{"person": ["man", "woman", "kid"], "car": ["sedan", "taxi"]}`. A word may
be several words ("stuffed animal"); case and a plural ending do not matter. A project's table merges over the
shipped one: a label it lists gets its words instead of the shipped ones, and a word it lists maps to its label
even where the shipped table maps it to another. The result is a word -> label mapping; a synonym only counts
when its label is in the project's label set.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from annotator.labels.errors import LabelsFileError
from annotator.labels.head_noun import category_key
from annotator.paths import RESOURCES

SHIPPED_SYNONYMS = RESOURCES / "category_synonyms.json"
PROJECT_SYNONYMS = Path(".annotator") / "synonyms.json"
"""A project's own table, relative to its image folder (next to the project store)."""


def project_synonyms_path(folder: str | Path) -> Path:
    """Where an image folder's own synonym table is (it need not exist)."""
    return Path(folder) / PROJECT_SYNONYMS


def read_synonyms_file(path: str | Path) -> dict[str, list[str]]:
    """A synonym table file as label -> words; `LabelsFileError` naming the file (and line) when malformed."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise LabelsFileError(f"{path}: no such synonyms file") from None
    except UnicodeDecodeError:
        raise LabelsFileError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise LabelsFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        table = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelsFileError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(table, dict):
        raise LabelsFileError(f"{path}: expected a JSON object of label -> list of words")
    for label, words in table.items():
        if not label.strip() or not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise LabelsFileError(f"{path}: the words of “{label}” must be a list of strings")
    return table


@lru_cache(maxsize=1)
def _shipped() -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((label, tuple(words)) for label, words in read_synonyms_file(SHIPPED_SYNONYMS).items())


def load_synonyms(override: Path | None = None) -> dict[str, str]:
    """The word -> label table: the shipped one, with `override`'s entries merged over it (its entries win; a
    missing `override` file is no override)."""
    own = read_synonyms_file(override) if override is not None and Path(override).exists() else {}
    overridden = {category_key(label) for label in own}
    table: dict[str, str] = {}
    for label, words in _shipped():
        if category_key(label) not in overridden:
            table.update((category_key(word), label) for word in words if word.strip())
    for label, words in own.items():
        table.update((category_key(word), label) for word in words if word.strip())
    return table
