"""Append-only JSON-lines logs that a killed writer cannot corrupt: one record per line.

Why: evaluation runs and benchmarks record each finished answer as it comes, so a kill loses
at most the answer being written. A kill can tear only the *last* line; appending after a torn
line would glue the next record onto it and lose both, and silently skipping unparsable lines
would hide real corruption. So a reader drops a torn last line (optionally cutting it off the
file before appending again, ``repair=True``), and refuses a bad line anywhere else, naming the
file and the line.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "answers.jsonl"
>>> with path.open("ab") as log:
...     append_jsonl(log, {"id": "q1", "f1": 1.0})
>>> _ = path.open("ab").write(b'{"id": "q2", "f')  # a kill in the middle of a write
>>> read_jsonl(path, repair=True)
[{'id': 'q1', 'f1': 1.0}]
>>> path.read_bytes()
b'{"id": "q1", "f1": 1.0}\\n'
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Sequence

__all__ = ["CorruptLogError", "append_jsonl", "read_jsonl"]


class CorruptLogError(ValueError):
    """A log line other than the last is not a JSON object: corruption, not a kill. Names ``file:line``."""


def read_jsonl(path: str | Path, *, repair: bool = False, require: Sequence[str] = ()) -> list[dict]:
    """The records of the log at ``path`` (``[]`` if there is none), a torn last line dropped.

    A line is bad when it is not a JSON object or lacks a key of ``require``; a bad last line
    (or one without a newline, or followed only by blank lines) is torn, any other is corruption.
    With ``repair`` the file is truncated after its last whole record, so appends go on cleanly;
    without it the file is not modified.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    records: list[dict] = []
    start = good_end = 0
    line_number = 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end == -1:
            break  # unterminated: torn by a kill
        line_number += 1
        line = data[start:end]
        if line.strip():
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                missing = [key for key in require if key not in record]
                if missing:
                    raise ValueError(f"no {missing[0]!r}")
            except ValueError as exc:
                if data[end + 1:].strip():
                    what = exc.msg if isinstance(exc, json.JSONDecodeError) else exc
                    raise CorruptLogError(f"{path}:{line_number}: not a record ({what}), and records follow it "
                                          f"(corruption, not a kill): delete the line to redo its work") from None
                break
            records.append(record)
        good_end = start = end + 1
    if repair and good_end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(good_end)
            handle.flush()
            os.fsync(handle.fileno())
    return records


def append_jsonl(handle: BinaryIO, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one line to a log opened with ``open(path, "ab")``, on disk before returning.

    Read the log with ``repair=True`` before opening it for appending, so that the first new
    record does not land on a torn line.
    """
    handle.write((json.dumps(dict(record), ensure_ascii=False) + "\n").encode("utf-8"))
    handle.flush()
    os.fsync(handle.fileno())
