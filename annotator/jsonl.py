"""Reading JSON and JSON Lines files whose errors say where: the file, and for JSONL the line number; and the
checks of COCO / RefCOCO-style entries that the calibration and evaluation readers share.

Failures raise `CocoFormatError` (the domain of COCO / RefCOCO-style files, which is what these files are).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from annotator.errors import CocoFormatError


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a line that is not a JSON object raises with its number."""
    try:
        handle = path.open("r", encoding="utf-8")
    except OSError as exc:
        raise CocoFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    with handle:
        try:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                row = _parsed(line, path, line_no)
                if not isinstance(row, dict):
                    raise CocoFormatError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
                yield line_no, row
        except UnicodeDecodeError as exc:
            raise CocoFormatError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def read_json(path: Path) -> Any:
    """The parsed content of a JSON file."""
    try:
        with path.open("r", encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise CocoFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise CocoFormatError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    return _parsed(text, path)


def _parsed(text: str, path: Path, line_no: int | None = None) -> Any:
    """`text` parsed; JSON that is invalid, nested deeper than the parser recurses or holds an integer longer than
    Python converts (`sys.get_int_max_str_digits`) raises `CocoFormatError` naming the file and, for JSONL, the
    line (`line_no`)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CocoFormatError(f"{path}:{line_no or exc.lineno}: not valid JSON ({exc.msg})") from exc
    except RecursionError:
        problem = "nested too deeply to read"
    except ValueError as exc:
        problem = f"holds a number too long to read ({str(exc).split(';')[0]})"
    where = str(path) if line_no is None else f"{path}:{line_no}"
    raise CocoFormatError(f"{where}: {problem}")


def is_jsonl(path: Path) -> bool:
    """Whether the file name says JSON Lines (.jsonl or .ndjson)."""
    return path.suffix.lower() in (".jsonl", ".ndjson")


def listed(data: dict, key: str, path: Path) -> list:
    """`data[key]`, which must be a JSON list; `CocoFormatError` naming the file and the key if not."""
    if not isinstance(data[key], list):
        raise CocoFormatError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
    return data[key]


def matchable_id(value: Any) -> int | str | None:
    """An id usable as a dict key; a list or object as an id matches nothing (None)."""
    return value if isinstance(value, (int, str)) else None


def checked_texts(texts: Any, where: str) -> list[str]:
    """`texts`, which must be a non-empty list of non-blank strings (an entry's expressions)."""
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise CocoFormatError(f"{where}: needs 'expression' (a non-empty string) or 'expressions' (a list of them)")
    return list(texts)


def sentence_texts(sentences: Any, where: str) -> list[Any]:
    """The texts of a RefCOCO ref's `sentences` (each `{'sent': text}`, `{'raw': text}` or a text), not yet checked."""
    if not isinstance(sentences, list):
        raise CocoFormatError(f"{where}: 'sentences' must be a list of {{'sent': text}} or texts")
    return [s.get("sent", s.get("raw")) if isinstance(s, dict) else s for s in sentences]
