"""Every benchmark number the docs quote is read from ``bench/results/*.json``.

How to quote a benchmark number in README.md or docs/*.md (for contributors):

* Put a marker right after the number (and its unit), naming the results file, the row and the key::

      DRAGIN costs 2.71x<!-- bench dynamic.json method=dragin,dataset=hotpotqa ratio_to_sr_rag --> sr-rag

  ``key=value`` pairs (comma-separated, no spaces) pick exactly one row of ``rows``; ``-`` picks
  the file's top level instead. An optional last word scales the value before comparing:
  ``*100`` for a share quoted as a percentage, ``/1024`` for MB quoted as GB, ``*-1`` for a
  difference quoted the other way round. The quoted number
  must equal the value rounded to the decimals it shows (``2.7x`` matches 2.71, ``980`` matches 980.4).
  Markers are HTML comments: they do not show on a rendered page.
* A table copied from a results file gets one marker on the line above it::

      <!-- bench-table parametric.qwen2.5-coder-0.5b.json part=quality dataset=dataset method=case -->

  ``key=value`` pairs without a column name filter the rows; ``column=key`` pairs match a table
  column (by its header) to a row key (the cell's first word). Every other number in a body row
  must equal, at its shown precision, some number of the matched rows.
* A number that looks like a measurement (``x``, ``×``, ``%``, ``ms``, ``GB``, ``MB``, ``tok/s``,
  ``q/h``, ``answers/h``, ``s/question``) but is not one (a setting, a target, arithmetic) gets
  ``<!-- not-bench -->`` after it; unmarked ones fail this test ("95 %", the confidence level of
  the intervals, is known). Numbers without such a unit (F1 scores, seconds) are not caught when
  unmarked, nor are numbers in code (fenced blocks, inline ``code``: commands, example output):
  mark every number you take from a results file.

``python tests/test_docs_numbers.py`` prints every marker with the value it points at: run it
after a benchmark rewrites its results, then update the quoted numbers (never the JSON).
"""
from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

MARKER = re.compile(r"<!--\s*bench\s+(\S+)\s+(\S+)\s+(\S+)(?:\s+([*/]-?[\d.]+))?\s*-->")
TABLE = re.compile(r"<!--\s*bench-table\s+(\S+)((?:\s+[^\s=]+=[^\s=]+)*)\s*-->")
NOT_BENCH = "<!-- not-bench -->"
NUMBER = r"[−+-]?\d[\d,]*(?:\.\d+)?"
# the number right before a marker: only unit-ish characters (no digits) between it and the marker
BEFORE = re.compile(rf"({NUMBER})[^\d<>|]{{0,14}}$")
UNIT = re.compile(rf"(?<![\w.\[])({NUMBER})\s?(x\b|×|%|ms\b|GB\b|MB\b|tok/s|q/h|answers/h|s/question|s per question)")


@dataclass
class Quote:
    doc: str
    line: int
    quoted: str
    file: str
    where: str
    key: str
    scale: str | None


def _number(text: str) -> float:
    return float(text.replace("−", "-").replace(",", ""))


def _decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


def _matches(quoted: str, value: float) -> bool:
    """``quoted`` is ``value`` rounded to the decimals it shows."""
    return math.isfinite(value) and abs(_number(quoted) - value) <= 0.5 * 10 ** -_decimals(quoted) + 1e-9


def _results(file: str) -> dict:
    path = RESULTS / file
    if not path.is_file():
        raise AssertionError(f"no results file bench/results/{file}")
    return json.loads(path.read_text())


def _pick(file: str, where: str) -> dict:
    data = _results(file)
    if where == "-":
        return data
    wanted = {k: v.replace("%20", " ").replace("%2C", ",") for k, v in (pair.split("=", 1) for pair in where.split(","))}
    rows = [r for r in data["rows"] if all(str(r.get(k)) == v for k, v in wanted.items())]
    if len(rows) != 1:
        raise AssertionError(f"{file} [{where}] selects {len(rows)} rows, not one")
    return rows[0]


def _value(q: Quote) -> float:
    row = _pick(q.file, q.where)
    if q.key not in row:
        raise AssertionError(f"{q.file} [{q.where}] has no key {q.key!r}")
    value = float(row[q.key])
    if q.scale:
        factor = float(q.scale[1:])
        value = value * factor if q.scale[0] == "*" else value / factor
    return value


def _lines(doc: Path):
    """(line number, text) outside fenced code blocks."""
    fenced = False
    for i, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield i, line


def quotes() -> list[Quote]:
    out = []
    for doc in DOCS:
        for i, line in _lines(doc):
            malformed = len(re.findall(r"<!--\s*bench\s", line)) - len(MARKER.findall(line))
            if malformed:
                raise AssertionError(f"{doc.relative_to(ROOT)}:{i}: a bench marker that does not parse")
            for m in MARKER.finditer(line):
                before = BEFORE.search(line[: m.start()])
                out.append(Quote(f"{doc.relative_to(ROOT)}", i, before.group(1) if before else "",
                                 *m.group(1, 2, 3, 4)))
    return out


def test_every_marked_number_equals_its_results_file():
    found = quotes()
    assert len(found) > 20, "the docs quote benchmark numbers through markers"
    wrong = []
    for q in found:
        where = f"{q.doc}:{q.line}"
        if not q.quoted:
            wrong.append(f"{where}: no number right before the marker for {q.file} {q.where} {q.key}")
            continue
        try:
            value = _value(q)
        except AssertionError as exc:
            wrong.append(f"{where}: {exc}")
            continue
        if not _matches(q.quoted, value):
            wrong.append(f"{where}: quotes {q.quoted}, {q.file} [{q.where}] {q.key} {q.scale or ''} is {value:.4g}")
    assert not wrong, "docs disagree with bench/results:\n" + "\n".join(wrong)


def _table_rows(lines: list[tuple[int, str]], start: int):
    """The header cells and the (line, cells) body rows of the markdown table after index ``start``."""
    body = []
    j = start + 1
    while j < len(lines) and not lines[j][1].lstrip().startswith("|"):
        j += 1
    header = [c.strip() for c in lines[j][1].strip().strip("|").split("|")]
    for number, text in lines[j + 2:]:
        if not text.lstrip().startswith("|"):
            break
        body.append((number, [c.strip() for c in text.strip().strip("|").split("|")]))
    return header, body


def test_every_number_of_a_marked_table_is_in_its_row():
    checked, wrong = 0, []
    for doc in DOCS:
        lines = list(_lines(doc))
        for index, (_, text) in enumerate(lines):
            m = TABLE.search(text)
            if not m:
                continue
            pairs = [p.split("=", 1) for p in m.group(2).split()]
            header, body = _table_rows(lines, index)
            columns = {col: key for col, key in pairs if col in header}
            filters = {k: v for k, v in pairs if k not in header}
            rows = [r for r in _results(m.group(1))["rows"] if all(str(r.get(k)) == v for k, v in filters.items())]
            for number, cells in body:
                where = f"{doc.relative_to(ROOT)}:{number}"
                cell = dict(zip(header, cells))
                # a key cell matches by its first word ("dense (MiniLM)" is backend dense); a table row may
                # gather several result rows (one per dataset, say): its numbers are checked against all of them
                match = [r for r in rows if all(str(r.get(key)) == (cell.get(col) or "-").split()[0]
                                                for col, key in columns.items())]
                if not match:
                    wrong.append(f"{where}: no row of {m.group(1)} matches {cells[:2]}")
                    continue
                values = [float(v) for r in match for v in r.values() if isinstance(v, (int, float))]
                for col, content in cell.items():
                    if col in columns:
                        continue
                    for quoted in re.findall(rf"(?<![\w.]){NUMBER}", content):  # not the 50 of "p50"
                        checked += 1
                        if not any(_matches(quoted, v) for v in values):
                            wrong.append(f"{where}: {col} {quoted} is no number of its row in {m.group(1)}")
    assert checked > 50, "the docs' benchmark tables are marked"
    assert not wrong, "tables disagree with bench/results:\n" + "\n".join(wrong)


def test_no_unmarked_number_looks_like_a_measurement():
    loose = []
    for doc in DOCS:
        lines = list(_lines(doc))
        in_table = False
        for index, (number, text) in enumerate(lines):
            if TABLE.search(text):
                in_table = True
                continue
            if in_table and (text.lstrip().startswith("|") or not text.strip()):
                continue
            in_table = False
            text = re.sub(r"<!--.*?-->", "<!---->", text)  # a marker's own text is no quote
            text = re.sub(r"`[^`]*`", "``", text)  # inline code: commands and example output
            for m in UNIT.finditer(text):
                if m.group(0).replace(" ", "") == "95%":  # the confidence level of an interval
                    continue
                rest = text[m.end():].lstrip("*) ")
                if rest.startswith("<!--"):
                    continue
                loose.append(f"{doc.relative_to(ROOT)}:{number}: {m.group(0)!r} in {text.strip()[:90]!r}")
    assert not loose, ("numbers that look like measurements carry no bench marker (or <!-- not-bench -->);"
                       " see this test's docstring:\n" + "\n".join(loose))


def test_a_stale_number_fails():
    """The check itself: a quote one unit off in its last shown digit does not match."""
    assert _matches("2.71", 2.7149) and _matches("2.7", 2.71) and _matches("980", 980.4)
    assert not _matches("2.7", 2.76) and not _matches("3.1", 2.71) and not _matches("9.6", 2.58)
    assert _matches("−0.055", -0.0551)
    with pytest.raises(AssertionError, match="selects 0 rows"):
        _pick("dynamic.json", "method=no-such-method")


if __name__ == "__main__":  # print what every marker points at
    for q in quotes():
        try:
            value = f"{_value(q):.4g}"
        except AssertionError as exc:
            value = f"ERROR {exc}"
        ok = "ok " if value[0] != "E" and q.quoted and _matches(q.quoted, float(value)) else "BAD"
        print(f"{ok} {q.doc}:{q.line}: {q.quoted!r} <- {q.file} [{q.where}] {q.key} {q.scale or ''} = {value}",
              file=sys.stdout)
