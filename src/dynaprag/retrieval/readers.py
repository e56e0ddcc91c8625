"""Streamed readers for the corpora users already have: DPR TSV, FlashRAG JSONL, KILT JSONL, ours.

Every reader is a generator of :class:`~dynaprag.corpus.Passage` (a 21M-passage dump is never
held in memory) and reports a malformed record as a :class:`~dynaprag.corpora.CorpusError`
naming the file and line (or counts it with ``skip_bad_lines``).

| format | what a line holds | passages |
|---|---|---|
| ``dpr`` | DPR's ``psgs_w100.tsv``: header ``id<TAB>text<TAB>title`` | one per row |
| ``jsonl`` | ours: ``{"id", "title", "text", ...}`` | one per line |
| ``flashrag`` | FlashRAG's ``{"id", "contents"}``, contents = title, newline, text | one per line |
| ``kilt`` | a KILT page: ``{"wikipedia_id", "wikipedia_title", "text": [paragraphs]}`` | one per paragraph |

FlashRAG's loaders take the first line of ``contents`` as the title and the rest as the text;
its Wikipedia dumps quote the title (``"Aaron"``), so one pair of surrounding double quotes is
removed. A KILT passage's id is ``<wikipedia_id>_<paragraph index>``, the paragraph index KILT's
provenance (``start_paragraph_id``) uses; the title paragraph (index 0) and ``Section::::``
headings are not passages.

``format="auto"`` tells them apart by the suffix (``.tsv``) and, for JSON lines, by the keys of
the first record. :func:`count_passages` counts lines fast (for a progress bar's ETA).

>>> from dynaprag.retrieval import demo_corpus_path
>>> detect_format(demo_corpus_path())
'jsonl'
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterator

from dynaprag.corpora import CorpusError, ReadStats, corpus_format, read_passages
from dynaprag.corpus import Passage

FORMATS = ("auto", "dpr", "jsonl", "flashrag", "kilt")
_SECTION = "Section::::"


def _open(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def detect_format(path: str | Path) -> str:
    """``dpr``, ``jsonl``, ``flashrag`` or ``kilt`` for a corpus file (by suffix, then first record)."""
    path = Path(path)
    if corpus_format(path) == "tsv":
        return "dpr"
    with _open(path) as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as exc:
                raise CorpusError(path, line_no, f"bad JSON ({exc})") from None
            if not isinstance(record, dict):
                raise CorpusError(path, line_no, "a JSONL record must be an object")
            if "contents" in record and "text" not in record:
                return "flashrag"
            if "wikipedia_id" in record and isinstance(record.get("text"), list):
                return "kilt"
            return "jsonl"
    return "jsonl"


def read_corpus(path: str | Path, *, format: str = "auto", skip_bad_lines: bool = False,
                stats: ReadStats | None = None, check_duplicates: bool = True) -> Iterator[Passage]:
    """Stream the passages of a corpus file in any of :data:`FORMATS` (``.gz`` allowed)."""
    path = Path(path)
    if format not in FORMATS:
        raise ValueError(f"unknown corpus format {format!r}; choose one of {', '.join(FORMATS)}")
    fmt = detect_format(path) if format == "auto" else format
    if fmt in ("dpr", "jsonl"):
        yield from read_passages(path, skip_bad_lines=skip_bad_lines, stats=stats, check_duplicates=check_duplicates)
        return
    stats = stats if stats is not None else ReadStats()
    parse = _flashrag if fmt == "flashrag" else _kilt
    seen: set[str] | None = set() if check_duplicates else None
    with _open(path) as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = _record(path, line_no, raw)
                for p in parse(path, line_no, record):
                    if seen is not None:
                        if p.id in seen:
                            raise CorpusError(path, line_no, f"duplicate passage id {p.id!r}")
                        seen.add(p.id)
                    stats.passages += 1
                    yield p
            except CorpusError as exc:
                if not skip_bad_lines:
                    raise
                stats.record_skip(exc)


def _record(path: Path, line_no: int, raw: bytes) -> dict:
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CorpusError(path, line_no, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                                         f"{exc.start + 1})") from None
    except ValueError as exc:
        raise CorpusError(path, line_no, f"bad JSON ({exc})") from None
    if not isinstance(record, dict):
        raise CorpusError(path, line_no, "a JSONL record must be an object")
    return record


def _string(path: Path, line_no: int, record: dict, key: str) -> str:
    value = record.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and key.endswith("id"):
        return str(value)
    if not isinstance(value, str):
        raise CorpusError(path, line_no, f"field {key!r}: expected a string, got "
                                         f"{'nothing' if value is None else type(value).__name__}")
    return value


def _flashrag(path: Path, line_no: int, record: dict) -> Iterator[Passage]:
    pid = _string(path, line_no, record, "id")
    title, _, text = _string(path, line_no, record, "contents").partition("\n")
    if len(title) >= 2 and title[0] == title[-1] == '"':
        title = title[1:-1]
    if not text.strip():
        raise CorpusError(path, line_no, f"empty text for passage {pid!r} (contents = title, newline, text)")
    extra = {k: v for k, v in record.items() if k not in ("id", "contents")}
    yield Passage(id=pid, title=title, text=text, extra=extra)


def _kilt(path: Path, line_no: int, record: dict) -> Iterator[Passage]:
    page = _string(path, line_no, record, "wikipedia_id")
    title = _string(path, line_no, record, "wikipedia_title")
    paragraphs = record.get("text")
    if not isinstance(paragraphs, list) or not all(isinstance(t, str) for t in paragraphs):
        raise CorpusError(path, line_no, "field 'text': expected a list of paragraph strings")
    for index, paragraph in enumerate(paragraphs):
        text = paragraph.strip()
        if index == 0 or not text or text.startswith(_SECTION):
            continue
        yield Passage(id=f"{page}_{index}", title=title, text=text)


def count_passages(path: str | Path, format: str = "auto") -> int | None:
    """Records in a corpus file by counting lines (fast: 16 MB reads), for a progress bar's ETA.

    Exact for DPR TSV (minus its header) and one-record-per-line JSONL; None for KILT (pages,
    not passages) and for ``.gz`` files (reading them twice is not worth an ETA).
    """
    path = Path(path)
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "kilt" or path.name.endswith(".gz"):
        return None
    lines, last = 0, b"\n"
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            lines += block.count(b"\n")
            last = block[-1:]
    lines += last != b"\n"
    return max(0, lines - 1) if fmt == "dpr" else lines
