"""Dataset loaders (generic JSONL and official formats), exemplar sets, and checksummed downloads."""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from dynaprag.eval.datasets import (DATASETS, DatasetError, Example, detect_format, link_gold_facts,
                                    load_examples)
from dynaprag.eval.download import RELEASES, ChecksumError, download
from dynaprag.lm.prompts import extract_answer, load_exemplars


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_generic_jsonl(tmp_path):
    path = _jsonl(tmp_path / "q.jsonl", [
        {"id": 1, "question": " Is ice cold? ", "answers": True, "gold_facts": ["Ice is frozen water."]},
        {"id": "b", "question": "Capital of Peru?", "answer": "Lima", "supporting_doc_ids": ["p1"], "type": "x"},
        {"id": "c", "question": "Two names?", "answers": ["A", "B"]},
    ])
    ex = load_examples(path, dataset="mine")
    assert [e.id for e in ex] == ["1", "b", "c"]
    assert ex[0].question == "Is ice cold?" and ex[0].answers == ("yes",) and ex[0].yes_no
    assert ex[0].oracle == {"gold_facts": ["Ice is frozen water."]}
    assert ex[1].answers == ("Lima",) and ex[1].gold_ids == ("p1",) and ex[1].type == "x" and not ex[1].yes_no
    assert ex[2].answers == ("A", "B") and ex[2].dataset == "mine"
    assert len(load_examples(path, limit=2)) == 2


@pytest.mark.parametrize("rows, message", [
    ([{"id": "a", "question": "q?"}], "q.jsonl:1: missing field 'answers'"),
    ([{"id": "a", "question": "q?", "answers": ["x"]}, "{not json"], "q.jsonl:2:"),
    ([{"question": "q?", "answers": ["x"]}], "q.jsonl:1: missing field 'id'"),
    ([{"id": "a", "question": "q?", "answers": []}], "q.jsonl:1: 'answers' must hold"),
    ([{"id": "a", "question": "q?", "answers": ["x"]}, {"id": "a", "question": "r?", "answers": ["y"]}],
     "duplicate question id 'a'"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, rows, message):
    path = _jsonl(tmp_path / "q.jsonl", rows)
    with pytest.raises(DatasetError, match=message.replace("?", r"\?")):
        load_examples(path)


def _official_files(tmp: Path) -> dict[str, Path]:
    files = {}
    files["hotpotqa"] = tmp / "hotpot_dev.json"
    files["hotpotqa"].write_text(json.dumps([{
        "_id": "h1", "question": "Which came first?", "answer": "Alpha", "type": "comparison", "level": "hard",
        "supporting_facts": [["Alpha", 0], ["Beta", 1], ["Alpha", 2]],
        "context": [["Alpha", ["Alpha was made in 1900."]], ["Beta", ["Beta was made in 1950."]]]}]))
    files["2wikimultihopqa"] = tmp / "2wiki_dev.json"
    files["2wikimultihopqa"].write_text(json.dumps([{
        "_id": "w1", "type": "compositional", "question": "Who is the father of X?", "answer": "Y",
        "supporting_facts": [["X", 0]], "context": [["X", ["X is the son of Y."]]],
        "evidences": [["X", "father", "Y"]]}]))
    files["strategyqa"] = tmp / "strategyqa_train.json"
    files["strategyqa"].write_text(json.dumps([{
        "qid": "s1", "term": "Ice", "description": "frozen water", "question": "Is ice hot?", "answer": False,
        "facts": ["Ice is frozen water.", "Frozen things are cold."], "decomposition": ["Is ice cold?"]}]))
    files["iirc"] = tmp / "iirc_dev.json"
    files["iirc"].write_text(json.dumps([{
        "title": "Main Town", "text": "Main Town ...", "links": [],
        "questions": [
            {"qid": "i1", "question": "Which rivers?", "context": [{"passage": "main", "text": "t"},
                                                                 {"passage": "River A", "text": "t"}],
             "answer": {"type": "span", "answer_spans": [{"text": "River A "}, {"text": "River B"}]}},
            {"qid": "i2", "question": "How far?", "context": [],
             "answer": {"type": "value", "answer_value": "12", "answer_unit": "km"}},
            {"qid": "i3", "question": "Is it old?", "context": [], "answer": {"type": "binary", "answer_value": "Yes"}},
            {"qid": "i4", "question": "Unanswerable?", "context": [], "answer": {"type": "none"}},
        ]}]))
    files["popqa"] = tmp / "popQA.tsv"
    files["popqa"].write_text("id\tsubj\tprop\tobj\ts_wiki_title\tquestion\tpossible_answers\n"
                              '7\tGeorge Rankin\toccupation\tpolitician\tGeorge Rankin\tWhat is George Rankin\'s '
                              'occupation?\t["politician", "political leader"]\n')
    files["cwq"] = tmp / "ComplexWebQuestions_dev.json"
    files["cwq"].write_text(json.dumps([{
        "ID": "c1", "question": "What language is spoken where X?", "compositionality_type": "composition",
        "answers": [{"answer": "Spanish", "answer_id": "m.1", "aliases": ["Spanish language", "Castilian"]}],
        "sparql": "SELECT ..."}]))
    return files


def test_official_formats(tmp_path):
    files = _official_files(tmp_path)
    for fmt, path in files.items():
        assert detect_format(path) == fmt
    hp = load_examples(files["hotpotqa"])[0]
    assert (hp.id, hp.answers, hp.gold_titles, hp.dataset) == ("h1", ("Alpha",), ("Alpha", "Beta"), "hotpotqa")
    assert "context" in hp.oracle and "supporting_facts" in hp.oracle
    wiki = load_examples(files["2wikimultihopqa"])[0]
    assert wiki.answers == ("Y",) and wiki.oracle["evidences"] == [["X", "father", "Y"]]
    sq = load_examples(files["strategyqa"])[0]
    assert sq.answers == ("no",) and sq.yes_no and sq.oracle["gold_facts"][0] == "Ice is frozen water."
    iirc = load_examples(files["iirc"])
    assert [(e.id, e.answers) for e in iirc] == [("i1", ("River A, River B",)), ("i2", ("12 km", "12")),
                                                 ("i3", ("yes",))]
    assert iirc[0].gold_titles == ("Main Town", "River A")
    pop = load_examples(files["popqa"])[0]
    assert pop.answers == ("politician", "political leader") and pop.gold_titles == ("George Rankin",)
    cwq = load_examples(files["cwq"])[0]
    assert cwq.answers == ("Spanish", "Spanish language", "Castilian") and not cwq.gold_titles


def test_official_format_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"_id": "x", "question": "q", "supporting_facts": []}]))
    with pytest.raises(DatasetError, match="record 0: missing field 'answer'"):
        load_examples(bad)
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps([{"foo": 1}]))
    with pytest.raises(DatasetError, match="cannot tell the dataset format"):
        load_examples(odd)
    with pytest.raises(DatasetError, match="not found"):
        load_examples(tmp_path / "missing.jsonl")


def test_link_gold_facts():
    ex = [Example("s1", "q?", ("no",), oracle={"gold_facts": ["Fact one.", "Fact two.", "Unknown."]}),
          Example("s2", "r?", ("yes",))]
    linked = link_gold_facts(ex, {"Fact one.": "sf1", "Fact two.": "sf2"})
    assert linked[0].gold_ids == ("sf1", "sf2") and linked[1].gold_ids == ()


def test_every_dataset_has_exemplars_and_loader():
    from dynaprag.eval.datasets import FORMATS

    for name in DATASETS:
        spec = DATASETS.get(name)
        load_exemplars(spec.exemplars)
        FORMATS.get(spec.official_format)


@pytest.mark.parametrize("name", ["default", "hotpotqa", "2wikimultihopqa", "strategyqa", "popqa", "iirc", "cwq"])
def test_exemplar_sets(name):
    instructions, exemplars = load_exemplars(name)
    assert instructions and len(exemplars) >= 4
    for ex in exemplars:
        assert ex.answer.rstrip().endswith(".") and "So the answer is" in ex.answer
        short = extract_answer(ex.answer)
        assert short and "answer is" not in short
        if name == "strategyqa":
            assert short in ("yes", "no")


def test_exemplars_are_not_evaluation_questions(shared_data):
    from dynaprag.eval.metrics import normalize_answer
    from dynaprag.lm.prompts import exemplar_sets

    ours = {normalize_answer(e["question"]) for s in exemplar_sets().values() for e in s["exemplars"]}
    for path in (shared_data / "questions").glob("*.jsonl"):
        theirs = {normalize_answer(e.question) for e in load_examples(path)}
        assert not ours & theirs, path


# ---- downloads against local file:// URLs (the registry's URLs need internet) ----

def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies_checksum(tmp_path):
    src = _official_files(tmp_path)["hotpotqa"]
    dest = tmp_path / "dl"
    path = download("hotpotqa", dest, url=src.as_uri(), sha256=_sha(src), log=lambda m: None)
    assert path == dest / "hotpot_dev_distractor_v1.json" and path.read_bytes() == src.read_bytes()
    assert load_examples(path)[0].id == "h1"
    # the recorded official checksum applies to a mirror too: different bytes are refused
    assert RELEASES.get("hotpotqa").sha256
    with pytest.raises(ChecksumError, match="expected 4e9ecb5c"):
        download("hotpotqa", tmp_path / "dl2", url=src.as_uri(), log=lambda m: None)
    assert not any((tmp_path / "dl2").iterdir())


def test_download_unpacks_archive(tmp_path):
    inner = _official_files(tmp_path)["strategyqa"]
    archive = tmp_path / "strategyqa_dataset.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(inner, "strategyqa_train.json")
    path = download("strategyqa", tmp_path / "dl", url=archive.as_uri(), sha256=_sha(archive), log=lambda m: None)
    assert path.name == "strategyqa_train.json" and load_examples(path)[0].answers == ("no",)
    again = download("strategyqa", tmp_path / "dl", url=archive.as_uri(), sha256=_sha(archive), log=print)
    assert again == path


def test_download_refuses_escaping_archive(tmp_path):
    archive = tmp_path / "strategyqa_dataset.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.json", "[]")
    with pytest.raises(ValueError, match="outside"):
        download("strategyqa", tmp_path / "dl", url=archive.as_uri(), sha256=_sha(archive), log=lambda m: None)
    assert not (tmp_path / "evil.json").exists()


def test_download_without_checksum_needs_consent(tmp_path):
    src = _official_files(tmp_path)["popqa"]
    assert RELEASES.get("popqa").sha256 is None
    with pytest.raises(ChecksumError, match="no checksum is recorded"):
        download("popqa", tmp_path / "dl", url=src.as_uri(), log=lambda m: None)
    seen = []
    path = download("popqa", tmp_path / "dl", url=src.as_uri(), allow_unverified=True, log=seen.append)
    assert _sha(src) in seen[-1] and load_examples(path)[0].id == "7"


def test_download_cli(tmp_path):
    from typer.testing import CliRunner

    from dynaprag.cli import app

    src = _official_files(tmp_path)["hotpotqa"]
    result = CliRunner().invoke(app, ["data", "download", "hotpotqa", "--dest", str(tmp_path / "raw"),
                                      "--url", src.as_uri(), "--sha256", _sha(src)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "raw" / "hotpotqa" / "hotpot_dev_distractor_v1.json").exists()
    bad = CliRunner().invoke(app, ["data", "download", "hotpotqa", "--dest", str(tmp_path / "raw2"),
                                   "--url", src.as_uri(), "--sha256", "0" * 64])
    assert bad.exit_code == 2 and "0" * 64 in bad.output.replace("\n", "")


def test_download_leaves_nothing_behind(tmp_path):
    """Issue 15 item 5: a failed download or unpack removes its temporary files, and a rerun
    sweeps those a killed download (a dead PID) left."""
    import subprocess
    import sys

    archive = tmp_path / "strategyqa_dataset.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.json", "[]")
    dest = tmp_path / "dl"
    with pytest.raises(ValueError, match="outside"):
        download("strategyqa", dest, url=archive.as_uri(), sha256=_sha(archive), log=lambda m: None)
    assert sorted(p.name for p in dest.iterdir()) == [".dynaprag-downloads.json", "strategyqa_dataset.zip"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = dest / f".hotpot_dev_distractor_v1.json.dynaprag-partial-{dead.pid}"
    stale.write_bytes(b"half a download")
    src = _official_files(tmp_path)["hotpotqa"]
    download("hotpotqa", dest, url=src.as_uri(), sha256=_sha(src), log=lambda m: None)
    assert not stale.exists()
    assert sorted(p.name for p in dest.iterdir()) == [".dynaprag-downloads.json", "hotpot_dev_distractor_v1.json",
                                                      "strategyqa_dataset.zip"]
