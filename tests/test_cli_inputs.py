"""Issue 27 item 7: bad CLI input gets one line naming the file, line or field, and exit code 2.

``encode --limit 0`` and ``--limit -1`` each encoded one passage; ``prompt.shots=-1`` (and
``prompt.shots=1000``, or any count without an upper bound) was accepted; a lone surrogate
(``\\ud800``) or a non-UTF-8 question printed a long traceback; a duplicate question id named no
line; a TSV quote error was reported one line late; a JSON error read "at at column". None of
these load the model: they fail before it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dynaprag.cli import app
from dynaprag.config import ConfigError


def flat(output: str) -> str:
    """CLI output with the terminal's line wrapping undone."""
    return " ".join(output.split())


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and flat(result.output).count("error:") == 1
    return flat(result.output)


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def eval_with(questions: Path, out: Path, *overrides: str):
    return CliRunner().invoke(app, ["eval", "--dataset", "demo", "--questions", str(questions), "--method",
                                    "wo-rag", "--out", str(out), "--no-progress", *overrides])


GOOD = '{"id": "a", "question": "What is two plus two?", "answers": ["4"]}\n'


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_encode_limit_below_one_is_refused(tmp_path, limit):
    corpus = write(tmp_path / "c.jsonl", '{"id": "p1", "title": "T", "text": "Some text."}\n')
    said = one_line_error(CliRunner().invoke(app, ["encode", "--corpus", str(corpus), "--limit", limit,
                                                   "--store", str(tmp_path / "store")]))
    assert f"--limit: must be at least 1, got {limit}" in said
    assert not (tmp_path / "store").exists()


def test_negative_counts_are_refused_naming_the_key(tmp_path):
    from dynaprag.eval.experiment import resolve

    questions = write(tmp_path / "q.jsonl", GOOD)
    said = one_line_error(eval_with(questions, tmp_path / "out", "prompt.shots=-1"))
    assert "prompt.shots: must be >= 0, got -1" in said
    for knob in ("retrieval.k1=-1", "max_new_tokens=-5"):
        with pytest.raises(ConfigError, match=knob.split("=")[0]):
            resolve("demo", questions=str(questions), method="dragin", overrides=[knob])
    # a knob whose paper default is negative keeps its sign (SeaKR's eigen-score threshold)
    _, cfg = resolve("demo", questions=str(questions), method="seakr", overrides=["trigger.theta=-7"])
    assert cfg.trigger["theta"] == -7


@pytest.mark.parametrize("override, said", [
    ("prompt.shots=1000", "prompt.shots: must be <= 4 (the exemplar set 'default' has 4), got 1000"),
    ("prompt.exemplars=nope", "prompt.exemplars: unknown exemplar set 'nope'"),
    ("k=1000", "k: must be <= 100, got 1000"),
    ("max_new_tokens=100000", "max_new_tokens: must be <= 32768, got 100000"),
    ("max_retrievals=5000", "max_retrievals: must be <= 1024, got 5000"),
    ("batch_size=100000", "batch_size: must be <= 256, got 100000"),
])
def test_knobs_that_multiply_work_have_upper_bounds(tmp_path, override, said):
    """Issue 27: every knob has an upper bound on the command line, as in a request; one line, exit 2,
    before anything is written."""
    questions = write(tmp_path / "q.jsonl", GOOD)
    assert said in one_line_error(eval_with(questions, tmp_path / "out", override))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, said", [
    (["search", "jaws", "-k", "5000"], "-k: must be <= 1000, got 5000"),
    (["report", "RUN", "--resamples", "100000000"], "--resamples: must be <= 1000000, got 100000000"),
    (["serve", "--batch-size", "1000"], "--batch-size: must be <= 256, got 1000"),
    (["serve", "--max-request-tokens", "1000000"], "--max-request-tokens: must be <= 32768, got 1000000"),
    (["index", "build", "--workers", "1000", "--index-dir", "OUT"], "--workers: must be <= 64, got 1000"),
    (["reproduce", "dragin-table2", "--out", "OUT", "--resamples", "10000000"], "--resamples: must be <= 1000000"),
    (["encode", "--corpus", "CORPUS", "--store", "OUT", "--workers", "500"], "--workers: must be <= 64, got 500"),
    (["encode", "--corpus", "CORPUS", "--store", "OUT", "--set", "rank=100000"], "rank: must be <= 1024"),
    (["encode", "--corpus", "CORPUS", "--store", "OUT", "--set", "augment.batch_docs=1000"],
     "augment.batch_docs: must be <= 256, got 1000"),
])
def test_command_line_numbers_have_upper_bounds(tmp_path, args, said):
    corpus = write(tmp_path / "c.jsonl", '{"id": "p1", "title": "T", "text": "Some text."}\n')
    (tmp_path / "RUN").mkdir()
    args = [{"RUN": str(tmp_path / "RUN"), "OUT": str(tmp_path / "out"), "CORPUS": str(corpus)}.get(a, a)
            for a in args]
    assert said in one_line_error(CliRunner().invoke(app, args))
    assert not (tmp_path / "out").exists()


def test_config_dataclass_rule_is_explicit_about_signed_knobs():
    from dataclasses import dataclass, field

    from dynaprag.config import apply_overrides

    @dataclass
    class Knobs:
        count: int = field(default=3, metadata={"help": "a count"})
        offset: float = field(default=0.5, metadata={"help": "a signed shift", "signed": True})
        floor: int = field(default=2, metadata={"help": "bounded", "min": -4})

    assert apply_overrides(Knobs(), ["offset=-2", "floor=-4"]) == Knobs(3, -2.0, -4)
    with pytest.raises(ConfigError, match="count: must be >= 0, got -1"):
        apply_overrides(Knobs(), ["count=-1"])


@pytest.mark.parametrize("content, expected", [
    ('{"id": "a", "question": "What is \\ud800?", "answers": ["x"]}\n', r"q.jsonl:2: 'question': holds the lone "
                                                                       r"surrogate \ud800"),
    (b'{"id": "a", "question": "Caf\xe9?", "answers": ["x"]}\n', "q.jsonl:2: not valid UTF-8 (byte 0xe9)"),
    ('{"id": "a", "question": "Who?", "answers": ["\\udc80"]}\n', r"q.jsonl:2: 'answers': holds the lone surrogate"),
    ('{"id": "a", "question": "Who\x01?", "answers": ["x"]}\n', "q.jsonl:2: not valid JSON (Invalid control "
                                                               "character at column 29)"),
])
def test_bad_question_lines_are_one_line_naming_file_and_line(tmp_path, content, expected):
    line = content if isinstance(content, bytes) else content.encode()
    questions = write(tmp_path / "q.jsonl", GOOD.encode() + line)
    said = one_line_error(eval_with(questions, tmp_path / "out"))
    assert expected in said and "at at" not in said


def test_duplicate_question_id_names_both_lines(tmp_path):
    questions = write(tmp_path / "q.jsonl", GOOD + "\n" + GOOD.replace("two plus two", "three"))
    said = one_line_error(eval_with(questions, tmp_path / "out"))
    assert "q.jsonl:3: duplicate question id 'a' (first on line 1)" in said


def test_official_json_duplicate_and_surrogate_name_the_record(tmp_path):
    from dynaprag.eval.datasets import DatasetError, load_examples

    rec = {"_id": "h1", "question": "Which?", "answer": "A", "supporting_facts": [["A", 0]], "context": []}
    path = write(tmp_path / "hotpot.json", json.dumps([rec, {**rec, "question": "Other?"}]))
    with pytest.raises(DatasetError, match=r"hotpot.json: record 1: duplicate question id 'h1' \(first on record 0\)"):
        load_examples(path)
    write(path, json.dumps([{**rec, "question": "Which \ud800?"}]))
    with pytest.raises(DatasetError, match=r"record 0: 'question': holds the lone surrogate"):
        load_examples(path)


def test_tsv_error_names_the_line_its_row_starts_on(tmp_path):
    from dynaprag.eval.datasets import DatasetError, load_examples

    # row 1 has a quoted question over two lines (2-3); row 2 (line 4) lacks its answers
    path = write(tmp_path / "popQA.tsv", 'id\tquestion\tpossible_answers\n'
                                         '1\t"What is\nthis?"\t["a"]\n'
                                         '2\tWho is it?\n'
                                         '3\tWhere?\t["c"]\n')
    with pytest.raises(DatasetError, match=r"popQA.tsv:4: bad PopQA row: expected 3 tab-separated fields, got 2"):
        load_examples(path)
    write(path, 'id\tquestion\tpossible_answers\n1\tWhat?\t["a"]\n2\tWho?\t["b", 3]\n')
    with pytest.raises(DatasetError, match=r"popQA.tsv:3: .*'possible_answers': expected a JSON list of strings"):
        load_examples(path)


def test_corpus_json_error_says_at_once(tmp_path):
    from dynaprag.corpora import CorpusError, read_passages

    path = write(tmp_path / "c.jsonl", '{"id": "p1", "text": "a\x01b"}\n')
    with pytest.raises(CorpusError) as err:
        list(read_passages(path))
    assert str(err.value).endswith("c.jsonl:1: bad JSON (Invalid control character at column 24)")


def test_config_file_errors_are_one_line_with_file_and_line(tmp_path):
    questions = write(tmp_path / "q.jsonl", GOOD)
    bad_yaml = write(tmp_path / "c.yaml", "pipeline:\n  k: [1\n")
    said = one_line_error(CliRunner().invoke(app, ["eval", "--dataset", "demo", "--questions", str(questions),
                                                   "--config", str(bad_yaml), "--out", str(tmp_path / "o")]))
    assert "c.yaml:3: not valid YAML (" in said
    bad_json = write(tmp_path / "c.json", '{"k": 1,}')
    said = one_line_error(CliRunner().invoke(app, ["eval", "--dataset", "demo", "--questions", str(questions),
                                                   "--config", str(bad_json), "--out", str(tmp_path / "o")]))
    assert "c.json:1: not valid JSON (" in said and "at column 9" in said


def test_ask_refuses_a_question_that_is_not_utf8_before_loading_the_model():
    said = one_line_error(CliRunner().invoke(app, ["ask", "What is caf\udce9?", "--method", "wo-rag"]))
    assert r"'question': holds the lone surrogate \udce9" in said


def test_corpus_lone_surrogate_is_a_bad_line_and_a_real_pair_is_fine(tmp_path):
    from dynaprag.corpora import CorpusError, ReadStats, read_passages

    path = write(tmp_path / "c.jsonl", '{"id": "p1", "text": "a smile \\ud83d\\ude00"}\n'
                                       '{"id": "p2", "title": "Half \\ud83d", "text": "b"}\n')
    with pytest.raises(CorpusError, match=r"c.jsonl:2: field 'title': holds the lone surrogate \\ud83d"):
        list(read_passages(path))
    stats = ReadStats()
    kept = list(read_passages(path, skip_bad_lines=True, stats=stats))
    assert [p.text for p in kept] == ["a smile \U0001F600"] and stats.skipped == 1
    assert kept[0].content_hash  # hashable: no surrogate reached it
