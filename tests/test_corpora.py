"""Corpus readers: JSONL and DPR TSV layouts, streaming, and clear errors on bad input."""
from __future__ import annotations

import gzip
import json
import types

import pytest

from dynaprag.corpora import (CorpusError, ReadStats, corpus_fingerprint, read_passages,
                              write_jsonl)
from dynaprag.retrieval import demo_corpus_path, demo_questions_path


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_fields_and_extra(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [
        json.dumps({"id": 7, "title": "Ulm", "text": "Ulm is on the Danube.", "sources": ["x"]}),
        "",
        json.dumps({"id": "b", "text": "No title here."}),
    ])
    passages = list(read_passages(path))
    assert [p.id for p in passages] == ["7", "b"]
    assert passages[0].extra == {"sources": ["x"]}
    assert passages[1].title == ""


def test_reader_is_a_lazy_stream(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"id": "a", "title": "", "text": "fine"}),
                                              "{not json"])
    stream = read_passages(path)
    assert isinstance(stream, types.GeneratorType)
    assert next(stream).id == "a"  # the bad second line is not read yet
    with pytest.raises(CorpusError):
        next(stream)


def test_dpr_tsv_layout(tmp_path):
    path = tmp_path / "psgs_w100.tsv"
    path.write_text('id\ttext\ttitle\n'
                    '1\t"Aaron ( or ; ""Aharon"") is a prophet."\tAaron\n'
                    '2\tPlain text with no quotes.\tSecond\n', encoding="utf-8")
    passages = list(read_passages(path))
    assert [(p.id, p.title) for p in passages] == [("1", "Aaron"), ("2", "Second")]
    assert passages[0].text == 'Aaron ( or ; "Aharon") is a prophet.'


def test_gzip_jsonl(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "a", "title": "T", "text": "gz text"}) + "\n")
    assert next(iter(read_passages(path))).text == "gz text"


@pytest.mark.parametrize("line, message", [
    ("{bad json", "bad JSON"),
    (json.dumps({"title": "t", "text": "x"}), "missing field 'id'"),
    (json.dumps({"id": "x", "title": "t"}), "missing field 'text'"),
    (json.dumps({"id": "x", "title": "t", "text": "   "}), "empty text"),
    (json.dumps(["a", "b"]), "must be an object"),
    (json.dumps({"id": "a", "title": "t", "text": "dup"}), "duplicate passage id 'a'"),
])
def test_bad_jsonl_names_file_and_line(tmp_path, line, message):
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps({"id": "a", "title": "t", "text": "ok"}), line])
    with pytest.raises(CorpusError) as info:
        list(read_passages(path))
    assert info.value.line == 2
    assert str(info.value).startswith(f"{path}:2:")
    assert message in str(info.value)


def test_bad_tsv_rows(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("id\ttext\ttitle\n1\tgood\tT\n2\tonly two fields\n3\t\tEmpty\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"p\.tsv:3: expected 3 tab-separated fields"):
        list(read_passages(path))
    stats = ReadStats()
    kept = list(read_passages(path, skip_bad_lines=True, stats=stats))
    assert [p.id for p in kept] == ["1"]
    assert stats.skipped == 2 and stats.passages == 1
    assert "2 bad lines skipped" in stats.summary() and "p.tsv:3" in stats.summary()


def test_tsv_header_must_name_columns(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("a\tb\tc\n1\tx\ty\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"p\.tsv:1: .*lacks column 'id'"):
        list(read_passages(path))


def test_skip_bad_lines_counts_every_kind(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [
        json.dumps({"id": "a", "title": "", "text": "one"}), "{oops",
        json.dumps({"id": "a", "title": "", "text": "again"}), json.dumps({"id": "b", "text": ""}),
        json.dumps({"id": "c", "title": "", "text": "three"})])
    stats = ReadStats()
    assert [p.id for p in read_passages(path, skip_bad_lines=True, stats=stats)] == ["a", "c"]
    assert stats.skipped == 3 and len(stats.first_errors) == 3


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus format"):
        list(read_passages(tmp_path / "c.csv"))
    with pytest.raises(FileNotFoundError, match="corpus file not found"):
        list(read_passages(tmp_path / "missing.jsonl"))


def test_fingerprint_and_roundtrip(tmp_path):
    src = list(read_passages(demo_corpus_path()))
    out = tmp_path / "copy.jsonl"
    assert write_jsonl(src, out) == len(src)
    assert list(read_passages(out)) == src
    fp = corpus_fingerprint(out)
    write_jsonl(src[:-1], out)
    assert corpus_fingerprint(out) != fp


def test_demo_corpus_and_questions_are_consistent():
    passages = list(read_passages(demo_corpus_path()))
    assert 40 <= len(passages) <= 60
    ids = {p.id for p in passages}
    questions = [json.loads(line) for line in demo_questions_path().read_text().splitlines()]
    assert len(questions) >= 10
    assert sum(len(q["supporting_doc_ids"]) >= 2 for q in questions) >= 5  # multi-hop
    for q in questions:
        assert set(q["supporting_doc_ids"]) <= ids and q["answers"]
        support = " ".join(p.title + " " + p.text for p in passages if p.id in q["supporting_doc_ids"])
        assert any(a.lower() in support.lower() for a in q["answers"]), q["id"]


def test_write_jsonl_failure_leaves_nothing_behind(tmp_path):
    """A writer that fails half-way keeps the old file and leaves no temporary file (issue 15 item 5)."""
    out = tmp_path / "c.jsonl"
    src = list(read_passages(demo_corpus_path()))
    write_jsonl(src[:2], out)
    before = out.read_bytes()

    def broken():
        yield src[0]
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError, match="source failed"):
        write_jsonl(broken(), out)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.jsonl"]
