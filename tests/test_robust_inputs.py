"""Issue 15, item 10: damaged corpus and question files fail with the file and line, or are skipped.

A non-UTF-8 corpus line used to fail with a bare ``UnicodeDecodeError`` (no file, no line) that
``skip_bad_lines=True`` did not skip, and ``"text": 123`` was reported as "empty text". Question
files had the same decoding hole and accepted wrong types (an answers mapping became its keys).
"""
from __future__ import annotations

import gzip
import json

import pytest

from dynaprag.corpora import CorpusError, ReadStats, read_passages
from dynaprag.eval.datasets import DatasetError, load_examples

GOOD_A = json.dumps({"id": "a", "title": "A", "text": "first passage"}).encode()
GOOD_C = json.dumps({"id": "c", "title": "C", "text": "third passage"}).encode()
LATIN1 = '{"id": "b", "title": "Caf\xe9", "text": "cr\xe8me br\xfbl\xe9e"}'.encode("latin-1")


def _write(path, lines: list[bytes]):
    data = b"\n".join(lines) + b"\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz"])
def test_non_utf8_jsonl_line_names_file_and_line_and_can_be_skipped(tmp_path, name):
    path = _write(tmp_path / name, [GOOD_A, LATIN1, GOOD_C])
    with pytest.raises(CorpusError) as info:
        list(read_passages(path))
    assert info.value.line == 2 and str(info.value).startswith(f"{path}:2: ")
    assert "not valid UTF-8" in str(info.value) and "skip_bad_lines" in str(info.value)
    stats = ReadStats()
    assert [p.id for p in read_passages(path, skip_bad_lines=True, stats=stats)] == ["a", "c"]
    assert stats.skipped == 1 and f"{path}:2" in stats.summary()


def test_non_utf8_tsv_row_names_file_and_line_and_can_be_skipped(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_bytes(b"id\ttext\ttitle\n1\tgood text\tOne\n2\tcr\xe8me\tTwo\n3\tmore text\tThree\n")
    with pytest.raises(CorpusError, match=r"p\.tsv:3: not valid UTF-8 \(byte 0xe8"):
        list(read_passages(path))
    stats = ReadStats()
    assert [p.id for p in read_passages(path, skip_bad_lines=True, stats=stats)] == ["1", "3"]
    assert stats.skipped == 1


@pytest.mark.parametrize("record, message", [
    ({"id": "b", "title": "T", "text": 123}, "field 'text': expected a string, got int"),
    ({"id": "b", "title": "T", "text": ["a", "list"]}, "field 'text': expected a string, got list"),
    ({"id": "b", "title": 5, "text": "fine"}, "field 'title': expected a string, got int"),
    ({"id": "b", "title": "T", "text": "  "}, "empty text for passage 'b'"),
])
def test_wrong_types_say_what_was_expected(tmp_path, record, message):
    path = _write(tmp_path / "c.jsonl", [GOOD_A, json.dumps(record).encode()])
    with pytest.raises(CorpusError) as info:
        list(read_passages(path))
    assert str(info.value) == f"{path}:2: {message}"


QUESTION = {"id": "q1", "question": "Is ice cold?", "answers": ["yes"]}


def test_non_utf8_question_line_names_file_and_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(json.dumps(QUESTION).encode() + b"\n"
                     + '{"id": "q2", "question": "Caf\xe9?", "answers": ["x"]}\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match=r"q\.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        load_examples(path)


def test_non_utf8_official_files_name_file_and_line(tmp_path):
    path = tmp_path / "hotpot.json"
    record = {"_id": "h1", "question": "Caf\xe9?", "answer": "x", "supporting_facts": [], "context": []}
    path.write_bytes(b"[\n" + json.dumps(record, ensure_ascii=False).encode("latin-1") + b"\n]")
    with pytest.raises(DatasetError, match=r"hotpot\.json:2: not valid UTF-8"):
        load_examples(path, format="hotpotqa")
    with pytest.raises(DatasetError, match=r"hotpot\.json:2: not valid UTF-8"):
        load_examples(path)  # format detection reads the file too
    tsv = tmp_path / "popQA.tsv"
    tsv.write_bytes(b"id\tquestion\tpossible_answers\n1\tWho?\t[\"A\"]\n2\tCaf\xe9?\t[\"B\"]\n")
    with pytest.raises(DatasetError, match=r"popQA\.tsv:3: not valid UTF-8"):
        load_examples(tsv)


@pytest.mark.parametrize("change, message", [
    ({"question": 123}, "'question': expected a string, got int"),
    ({"answers": {"a": 1}}, "'answers': expected a string or a list of strings, got dict"),
    ({"answers": ["ok", None]}, "'answers': expected a string or a list of strings, got None in the list"),
    ({"id": {"x": 1}}, "'id': expected a string or an integer, got dict"),
    ({"supporting_doc_ids": "p1"}, "'supporting_doc_ids': expected a list, got str"),
    ({"supporting_titles": [1, 2]}, "'supporting_titles': expected a list of strings"),
])
def test_question_fields_of_the_wrong_type_name_file_line_and_field(tmp_path, change, message):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(QUESTION) + "\n" + json.dumps({**QUESTION, "id": "q2", **change}) + "\n",
                    encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        load_examples(path)
    assert str(info.value).startswith(f"{path}:2: ") and message in str(info.value)


def test_official_record_of_the_wrong_type_names_the_record(tmp_path):
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps([{"_id": "h1", "question": 7, "answer": "x", "supporting_facts": [],
                                 "context": []}]), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"hotpot\.json: record 0: 'question': expected a string, got int"):
        load_examples(path, format="hotpotqa")
