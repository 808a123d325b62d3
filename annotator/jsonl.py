"""Reading JSON and JSON Lines files whose errors say where: the file, and for JSONL the line number.

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
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CocoFormatError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from exc
                if not isinstance(row, dict):
                    raise CocoFormatError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
                yield line_no, row
        except UnicodeDecodeError as exc:
            raise CocoFormatError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def read_json(path: Path) -> Any:
    """The parsed content of a JSON file."""
    try:
        with path.open("r", encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise CocoFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise CocoFormatError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise CocoFormatError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc


def is_jsonl(path: Path) -> bool:
    """Whether the file name says JSON Lines (.jsonl or .ndjson)."""
    return path.suffix.lower() in (".jsonl", ".ndjson")
