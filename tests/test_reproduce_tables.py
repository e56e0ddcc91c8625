"""The tutorial toolkit's and FlashRAG's published tables, and the open-domain QA loaders they need (issue 33)."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dynaprag.cli import app
from dynaprag.eval.datasets import DATASETS, DatasetError, detect_format, load_examples
from dynaprag.eval.release_formats import parse_target_value
from dynaprag.eval.reproduce import ReproduceError, TableError, load_tables, missing_data, reproduce, table_names

FIXTURES = Path(__file__).parent / "fixtures" / "open_qa"
NEW_TABLES = ("dynamic-toolkit", "flashrag-benchmark")
runner = CliRunner()


def flat(output: str) -> str:
    return " ".join(output.split())


@pytest.mark.parametrize("name", NEW_TABLES)
def test_new_table_loads_with_its_commit_and_every_cell_filled(name):
    from dynaprag.pipeline import method_names

    table = load_tables()[name]
    assert name in table_names() and not table.unavailable
    assert len(table.source["commit"]) == 40 and table.source["file_lines"].startswith("README.md:")
    assert table.source["commit"][:7] in table.citation
    assert {m.ours for m in table.methods} <= set(method_names())
    assert all(d in DATASETS for d in table.metrics)
    for backbone in table.backbones:  # a full table: every (dataset, method, metric) cell has its number
        for dataset, metrics in table.metrics.items():
            for method in table.methods:
                for metric in metrics:
                    number = table.value(backbone, dataset, method.ours, metric)
                    assert number is not None and 0 <= number <= 1, (backbone, dataset, method.ours, metric)


def test_transcribed_cells_match_the_sources():
    """A few cells read again from the sources (tutorial README.md:111-122, FlashRAG README.md:593-609)."""
    tables = load_tables()
    toolkit, flashrag = tables["dynamic-toolkit"], tables["flashrag-benchmark"]
    assert toolkit.value("qwen2.5-1.5b-instruct", "2wikimultihopqa", "dragin", "f1") == 0.3508
    assert toolkit.value("llama3.2-1b-instruct", "hotpotqa", "fs-rag", "em") == 0.18
    assert toolkit.value("llama3.2-1b-instruct", "strategyqa", "sr-rag", "acc") == 0.62
    assert toolkit.paper_name("token-rag") == "flare"  # the toolkit's FLARE.json runs `method: token`
    assert flashrag.value("llama3-8b-instruct", "hotpotqa", "ircot", "f1") == 0.415
    assert flashrag.value("llama3-8b-instruct", "webquestions", "sr-rag", "em") == 0.157
    assert flashrag.paper_name("flare-flashrag") == "FLARE"
    assert flashrag.overrides("nq") == ["k=5", "max_new_tokens=32"]


def test_reproduce_list_shows_the_new_tables():
    result = runner.invoke(app, ["reproduce", "--list"])
    assert result.exit_code == 0, result.output
    said = flat(result.output)
    assert all(name in said for name in NEW_TABLES)
    assert "flare-flashrag=FLARE" in said and "token-rag=flare" in said


def test_a_commit_that_is_not_a_full_id_is_refused(tmp_path):
    text = """
t:
  title: x
  source: {paper: P, venue: V, table: T, url: "https://example.org", read_from: here, commit: abc123}
  methods: [{ours: sr-rag, paper: RAG}]
  datasets: [nq]
  metrics: {nq: [em]}
  backbones: [m]
  published: {m: {nq: {sr-rag: {em: 0.5}}}}
"""
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TableError, match=r"t\.source\.commit: must be a full 40-hex"):
        load_tables(path)
    path.write_text(text.replace("abc123", "a" * 40))
    with pytest.raises(TableError, match=r"t\.source\.file_lines"):
        load_tables(path)


def test_flashrag_table_without_data_names_each_missing_dataset_and_where_to_get_it(tmp_path):
    (tmp_path / "questions").mkdir()
    lines = missing_data(load_tables()["flashrag-benchmark"].datasets, tmp_path)
    assert [line.split(":")[0] for line in lines] == ["nq", "triviaqa", "hotpotqa", "2wikimultihopqa", "popqa",
                                                      "webquestions"]
    assert "get NQ-open.efficientqa.test.1.1.jsonl" in lines[0] and "dynaprag data download nq" not in lines[0]
    assert "FlashRAG_datasets, web_questions/test.jsonl" in lines[5]
    assert "dynaprag data download hotpotqa" in lines[2]  # a dataset with a recorded release keeps the command
    with pytest.raises(ReproduceError, match=r"not present \(one line each\):\n  nq: "):
        reproduce("flashrag-benchmark", model="smollm2-135m", data_dir=tmp_path, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_reproduce_without_data_exits_2_naming_the_datasets(tmp_path):
    result = runner.invoke(app, ["reproduce", "flashrag-benchmark", "--data-dir", str(tmp_path), "--out",
                                 str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line.strip() for line in result.output.splitlines()]
    assert lines[0] == "error: table flashrag-benchmark needs datasets that are not present (one line each):"
    assert [line.split(":")[0] for line in lines[1:]] == ["nq", "triviaqa", "hotpotqa", "2wikimultihopqa", "popqa",
                                                          "webquestions"]


def test_a_question_file_present_but_no_corpus_is_named(tmp_path):
    questions = {"nq": str(FIXTURES / "handwritten-nq-flashrag-format.jsonl")}
    (line,) = missing_data(["nq"], tmp_path, questions)
    assert line.startswith("nq: no retrieval corpus") and "retrieval.corpus=FILE" in line
    assert missing_data(["nq"], tmp_path, questions, ["retrieval.corpus=wiki.tsv"]) == []


@pytest.mark.parametrize("file, fmt, ids, answers", [
    ("handwritten-nq-open-format.jsonl", "nq-open", ["0", "1", "2"], ("11", "eleven")),
    ("handwritten-nq-flashrag-format.jsonl", "jsonl", ["test_0", "test_1"], ("Canberra",)),
    ("handwritten-dpr-qa-format.csv", "dpr-qa", ["0", "1"], ("Mars", "the planet Mars")),
    ("handwritten-triviaqa-format.json", "triviaqa", ["tc_1", "tc_2"], ("Japan", "Nippon")),
    ("handwritten-webquestions-format.json", "webquestions", ["0", "1"], ("Japan",)),
    ("handwritten-popqa-flashrag-format.jsonl", "jsonl", ["test_0"], ("mathematician", "writer")),
])
def test_release_formats_load_from_the_fixtures(file, fmt, ids, answers):
    path = FIXTURES / file
    assert detect_format(path) == fmt
    examples = load_examples(path, dataset="nq")
    assert [ex.id for ex in examples] == ids
    assert examples[-1].answers == answers and all(ex.dataset == "nq" and ex.question for ex in examples)
    assert all(ex.gold_ids == () and ex.gold_titles == () for ex in examples)


def test_triviaqa_value_comes_first_and_aliases_are_deduplicated():
    (first, _) = load_examples(FIXTURES / "handwritten-triviaqa-format.json")
    assert first.answers == ("Iron", "Fe", "Ferrum") and first.question == "Which metal has the chemical symbol Fe?"


def test_webquestions_target_values_keep_quoted_and_bare_answers():
    assert parse_target_value('(list (description "Say \\"hi\\"") (description 1945))') == ('Say "hi"', "1945")
    assert parse_target_value("(list)") == ()


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name, text, fmt, said", [
    ("q.jsonl", '{"question": "q?", "answer": ["a"]}\n{"question": "r?", "answer": "b"}\n', "auto",
     "q.jsonl:2: 'answer': expected a list of strings"),
    ("q.jsonl", '{"question": "q?", "answer": ["a"]}\n{"answer": ["b"]}\n', "auto",
     "q.jsonl:2: missing field 'question'"),
    ("q.jsonl", '{"question": "q?", "answer": ["a"]}\n{not json\n', "auto", "q.jsonl:2: not valid JSON"),
    ("q.jsonl", '{"id": "a", "question": "q?", "golden_answers": []}\n', "auto", "q.jsonl:1: 'answers' must hold"),
    ("q.qa.csv", "who?\t['a']\nno tab here\n", "auto", "q.qa.csv:2: expected question<TAB>answers"),
    ("q.qa.csv", "who?\t['a'\n", "auto", "q.qa.csv:1: answers: expected a list literal"),
    ("q.qa.csv", "\t['a']\n", "auto", "q.qa.csv:1: 'question': expected a non-empty string"),
    ("t.json", '{"Data": [{"QuestionId": "a", "Question": "q?", "Answer": {"Value": "x"}}, '
               '{"QuestionId": "b", "Question": "r?"}]}', "triviaqa", "t.json: record 1: missing field 'Answer'"),
    ("t.json", '{"Data": [{"QuestionId": "a", "Question": "q?", "Answer": {"Aliases": "x"}}]}', "triviaqa",
     "t.json: record 0: 'Answer.Aliases': expected a list of strings"),
    ("w.json", '[{"utterance": "q?", "targetValue": "Japan"}]', "auto",
     "w.json: record 0: 'targetValue': expected '(list (description ...) ...)'"),
    ("w.json", '[{"utterance": "q?", "targetValue": "(list)"}]', "webquestions",
     "w.json: record 0: 'targetValue': holds no non-empty answer"),
    ("w.json", '[{"utterance": 3, "targetValue": "(list (description a))"}]', "webquestions",
     "w.json: record 0: 'utterance': expected a string"),
])
def test_malformed_release_files_name_file_line_and_field(tmp_path, name, text, fmt, said):
    path = _write(tmp_path / name, text)
    with pytest.raises(DatasetError) as err:
        load_examples(path, format=fmt)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and said in message, message


def test_cli_eval_on_a_malformed_release_is_one_line_and_exit_2(tmp_path):
    bad = _write(tmp_path / "webq.json", '[{"utterance": "q?", "targetValue": "(list)"}]')
    result = runner.invoke(app, ["eval", "--dataset", "webquestions", "--questions", str(bad), "--method", "wo-rag",
                                 "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    said = flat(result.output)
    assert said.count("error:") == 1 and "webq.json: record 0: 'targetValue': holds no non-empty answer" in said
