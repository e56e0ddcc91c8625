"""dynaprag.jsonl_log: what a kill can leave in an append-only log, and what it cannot hide.

Every resumable writer (the evaluation runner, bench/dynamic, bench/batch, bench/parametric)
reads its log through it, so these cases are the resume guarantee of all of them.
"""
from __future__ import annotations

import doctest
import json

import pytest

from dynaprag import jsonl_log
from dynaprag.jsonl_log import CorruptLogError, append_jsonl, read_jsonl


def _write(path, *records, tail: bytes = b"") -> None:
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + tail)


def test_a_missing_log_is_empty(tmp_path):
    assert read_jsonl(tmp_path / "none.jsonl") == []


@pytest.mark.parametrize("tail", [b'{"id": "c", "sc', b'{"id": "c", "sc\n', b'{"id": "c", "sc\n\n  \n', b"[1, 2]\n",
                                  b'{"other": 1}\n'])
def test_a_torn_last_line_is_dropped_and_repair_cuts_it_off(tmp_path, tail):
    path = tmp_path / "log.jsonl"
    _write(path, {"id": "a"}, {"id": "b"}, tail=tail)
    assert read_jsonl(path, require=("id",)) == [{"id": "a"}, {"id": "b"}]
    assert path.read_bytes().endswith(tail)  # reading alone does not modify
    assert read_jsonl(path, repair=True, require=("id",)) == [{"id": "a"}, {"id": "b"}]
    with path.open("ab") as handle:
        append_jsonl(handle, {"id": "c", "text": "é"})
    assert path.read_text(encoding="utf-8").splitlines() == ['{"id": "a"}', '{"id": "b"}', '{"id": "c", "text": "é"}']


@pytest.mark.parametrize("bad, why", [(b"not json", "Expecting value"), (b"[1, 2]", "not a JSON object"),
                                      (b'{"other": 1}', "no 'id'")])
def test_a_bad_line_before_the_last_is_corruption_named_by_file_and_line(tmp_path, bad, why):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"id": "a"}\n\n' + bad + b'\n{"id": "c"}\n')
    before = path.read_bytes()
    with pytest.raises(CorruptLogError, match=rf"log\.jsonl:3: not a record \({why}") as info:
        read_jsonl(path, repair=True, require=("id",))
    assert "\n" not in str(info.value)
    assert path.read_bytes() == before  # corruption is never "repaired" away


def test_blank_lines_are_skipped_and_counted_in_line_numbers(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'\n{"id": "a"}\n\n{"id": "b"}\n')
    assert read_jsonl(path, repair=True) == [{"id": "a"}, {"id": "b"}]
    assert path.read_bytes() == b'\n{"id": "a"}\n\n{"id": "b"}\n'


def test_module_example_runs():
    assert doctest.testmod(jsonl_log).failed == 0
