"""Streaming corpus readers: JSONL (``id, title, text``) and DPR's ``psgs_w100.tsv`` layout.

Both readers are generators: a 21M-line Wikipedia dump is never held in memory as a list.
Every malformed record (bytes that are not UTF-8, bad JSON, missing field, a field of the wrong
type, empty text, duplicate id) raises a :class:`CorpusError` naming the file and line; with
``skip_bad_lines=True`` the record is skipped instead and counted in :class:`ReadStats`, which
the caller reports. Files are decoded line by line so that one damaged line is one bad record,
not the end of the read.

>>> from dynaprag.corpora import read_passages
>>> from dynaprag.retrieval import demo_corpus_path
>>> next(iter(read_passages(demo_corpus_path()))).title
'Jaws (film)'
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

from dynaprag.corpus import Passage
from dynaprag.files import sweep_stale_of, tmp_name

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
TSV_SUFFIXES = (".tsv",)
#: what undecodable bytes become under ``errors="surrogateescape"`` (byte b -> U+DC00 + b)
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
#: a ``\ud800``-style escape in JSON: valid JSON, but no character (it cannot be encoded or hashed)
_SURROGATE = re.compile("[\ud800-\udfff]")
_REENCODE = "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8) or pass skip_bad_lines=true"


class CorpusError(ValueError):
    """A malformed corpus record; the message names the file and the 1-based line."""

    def __init__(self, path: str | Path, line: int, message: str):
        self.path, self.line = str(path), line
        super().__init__(f"{path}:{line}: {message}")


@dataclass
class ReadStats:
    """What a read saw: records yielded, records skipped (``skip_bad_lines``) and why."""

    passages: int = 0
    skipped: int = 0
    first_errors: list[str] = field(default_factory=list)

    def record_skip(self, error: CorpusError) -> None:
        self.skipped += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(str(error))

    def summary(self) -> str:
        text = f"{self.passages} passages read"
        if self.skipped:
            text += f", {self.skipped} bad lines skipped (first: {self.first_errors[0]})"
        return text


def corpus_format(path: str | Path) -> str:
    """``"jsonl"`` or ``"tsv"`` from the file name (``.gz`` allowed), else an error."""
    name = Path(path).name.lower().removesuffix(".gz")
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(TSV_SUFFIXES):
        return "tsv"
    raise ValueError(f"{path}: unknown corpus format; use .jsonl (id, title, text) or DPR-style .tsv")


def _open_binary(path: Path) -> IO[bytes]:
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _not_utf8(path: Path, line: int, byte: int, where: str) -> CorpusError:
    return CorpusError(path, line, f"not valid UTF-8 (byte 0x{byte:02x} {where}); {_REENCODE}")


def json_problem(exc: json.JSONDecodeError) -> str:
    """``"Invalid control character at column 22"``: the decoder's message (some end in "at")
    and the column, without its "line 1 ... (char 21)" of a one-line document."""
    return f"{exc.msg.removesuffix(' at')} at column {exc.colno}"


def _escaped_byte(fields: list[str]) -> tuple[int, int] | None:
    """(column, byte) of the first non-UTF-8 byte in a row decoded with ``surrogateescape``."""
    for column, value in enumerate(fields):
        m = _ESCAPED_BYTE.search(value)
        if m:
            return column, ord(m.group()) - 0xDC00
    return None


def read_passages(path: str | Path, *, skip_bad_lines: bool = False,
                  stats: ReadStats | None = None, check_duplicates: bool = True) -> Iterator[Passage]:
    """Stream :class:`Passage` records from a JSONL or DPR TSV file (chosen by suffix).

    ``check_duplicates`` keeps the set of ids seen so far (about 70 bytes per passage; ~1.5 GB
    for the 21M-passage DPR dump); turn it off for a corpus whose ids are known unique.
    """
    path = Path(path)
    reader = _read_jsonl if corpus_format(path) == "jsonl" else _read_tsv
    stats = stats if stats is not None else ReadStats()
    seen: set[str] | None = set() if check_duplicates else None
    for line, item in reader(path):
        try:
            if isinstance(item, CorpusError):
                raise item
            if seen is not None:
                if item.id in seen:
                    raise CorpusError(path, line, f"duplicate passage id {item.id!r}")
                seen.add(item.id)
        except CorpusError as exc:
            if not skip_bad_lines:
                raise
            stats.record_skip(exc)
            continue
        stats.passages += 1
        yield item


def _passage(path: Path, line: int, record: dict, extra_keys: bool = True) -> Passage:
    for key in ("id", "text"):
        if key not in record or record[key] is None:
            raise CorpusError(path, line, f"missing field {key!r} (a passage needs id, title, text)")
    pid, title, text = record["id"], record.get("title") or "", record["text"]
    if not isinstance(pid, (str, int)) or isinstance(pid, bool) or str(pid).strip() == "":
        raise CorpusError(path, line, f"field 'id' must be a non-empty string or integer, got {pid!r}")
    for key, value in (("text", text), ("title", title), ("id", str(pid))):
        if not isinstance(value, str):
            raise CorpusError(path, line, f"field {key!r}: expected a string, got {type(value).__name__}")
        surrogate = _SURROGATE.search(value)
        if surrogate:
            raise CorpusError(path, line, f"field {key!r}: holds the lone surrogate \\u{ord(surrogate.group()):04x} "
                                          "(half of a UTF-16 pair, not a character); fix the escape in the file")
    if not text.strip():
        raise CorpusError(path, line, f"empty text for passage {pid!r}")
    extra = {k: v for k, v in record.items() if k not in ("id", "title", "text")} if extra_keys else {}
    return Passage(id=str(pid), title=title, text=text, extra=extra)


def _read_jsonl(path: Path) -> Iterator[tuple[int, Passage | CorpusError]]:
    with _open_binary(path) as handle:
        for line_no, data in enumerate(handle, start=1):
            try:
                raw = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield line_no, _not_utf8(path, line_no, data[exc.start], f"at column {exc.start + 1}")
                continue
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                yield line_no, CorpusError(path, line_no, f"bad JSON ({json_problem(exc)})")
                continue
            if not isinstance(record, dict):
                yield line_no, CorpusError(path, line_no, "a JSONL record must be an object")
                continue
            try:
                yield line_no, _passage(path, line_no, record)
            except CorpusError as exc:
                yield line_no, exc


def _read_tsv(path: Path) -> Iterator[tuple[int, Passage | CorpusError]]:
    """DPR's ``psgs_w100.tsv``: a header ``id, text, title`` then one quoted row per passage.

    Undecodable bytes are kept as escapes while parsing (a quoted field may span lines), then
    the row holding them is reported as not UTF-8.
    """
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with io.TextIOWrapper(_open_binary(path), encoding="utf-8", errors="surrogateescape", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        try:
            header = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CorpusError(path, 1, f"bad TSV header: {exc}") from None
        missing = [c for c in ("id", "text") if c not in header]
        if missing:
            raise CorpusError(path, 1, f"TSV header {header!r} lacks column {missing[0]!r}; "
                                       "expected DPR's 'id<TAB>text<TAB>title'")
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error as exc:
                yield rows.line_num, CorpusError(path, rows.line_num, f"bad TSV row: {exc}")
                continue
            line_no = rows.line_num
            if not row:
                continue
            bad = _escaped_byte(row)
            if bad is not None:
                column, byte = bad
                where = f"in column {header[column]!r}" if column < len(header) else f"in column {column + 1}"
                yield line_no, _not_utf8(path, line_no, byte, where)
                continue
            if len(row) != len(header):
                yield line_no, CorpusError(path, line_no, f"expected {len(header)} tab-separated "
                                                          f"fields ({', '.join(header)}), got {len(row)}")
                continue
            try:
                yield line_no, _passage(path, line_no, dict(zip(header, row)))
            except CorpusError as exc:
                yield line_no, exc


def corpus_fingerprint(path: str | Path) -> str:
    """A short stable id for a corpus file: content hash up to 64 MB, else path+size+mtime+edges.

    Names default index folders, so a changed corpus gets a fresh index.
    """
    path = Path(path).resolve()
    st = path.stat()
    digest = hashlib.sha256()
    if st.st_size <= 64 * 2**20:
        digest.update(path.read_bytes())
    else:
        digest.update(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(2**20))
            handle.seek(max(0, st.st_size - 2**20), os.SEEK_SET)
            digest.update(handle.read(2**20))
    return digest.hexdigest()[:16]


def write_jsonl(passages, path: str | Path) -> int:
    """Write passages as JSONL (``id, title, text`` + extra fields) atomically; returns the count.

    Streams into ``.NAME.dynaprag-tmp-<pid>`` (removed if the source fails) and renames it into
    place; such a file a killed writer left for ``path`` goes first (and nothing else near it).
    """
    path = Path(path)
    sweep_stale_of(path)
    tmp = tmp_name(path)
    count = 0
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            for p in passages:
                handle.write(json.dumps({"id": p.id, "title": p.title, "text": p.text, **p.extra},
                                        ensure_ascii=False) + "\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count
