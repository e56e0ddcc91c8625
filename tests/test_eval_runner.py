"""The evaluation harness end to end with the real default model, plus kill-and-resume.

A fixture dataset (questions + corpus, written here) is evaluated with ``wo-rag`` and
``sr-rag`` through the real :class:`Pipeline`; the run folders feed the report test. The
kill-and-resume test starts ``dynaprag eval`` as a subprocess, kills it once a record is on
disk, reruns it and checks that every question is recorded exactly once.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dynaprag.config import ConfigError
from dynaprag.eval.datasets import load_examples
from dynaprag.eval.runner import CONFIG, RECORDS, SUMMARY, RunError, read_records
from dynaprag.lm.prompts import extract_answer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

CORPUS = [
    {"id": "p1", "title": "Lake Varn", "text": "Lake Varn is a lake in the town of Ostrel. Its water is cold all year."},
    {"id": "p2", "title": "Ostrel", "text": "Ostrel is a town founded in 1820 by the engineer Mara Lind."},
    {"id": "p3", "title": "Mara Lind", "text": "Mara Lind was an engineer born in the city of Kellby in 1791."},
    {"id": "p4", "title": "Kellby", "text": "Kellby is a port city on the river Sune."},
    {"id": "p5", "title": "River Sune", "text": "The river Sune is 140 kilometres long and flows into the sea."},
    {"id": "p6", "title": "Ice", "text": "Ice is frozen water and is colder than liquid water."},
]
QUESTIONS = [
    {"id": "f1", "question": "Who founded the town where Lake Varn is?", "answers": ["Mara Lind"],
     "supporting_doc_ids": ["p1", "p2"], "gold_facts": ["secret oracle text"]},
    {"id": "f2", "question": "In which city was the founder of Ostrel born?", "answers": ["Kellby"],
     "supporting_doc_ids": ["p2", "p3"]},
    {"id": "f3", "question": "Which river flows through Kellby?", "answers": ["the Sune", "Sune"],
     "supporting_doc_ids": ["p4"]},
    {"id": "f4", "question": "Is ice colder than liquid water?", "answers": ["yes"], "supporting_doc_ids": ["p6"]},
]
MAX_NEW_TOKENS = 16
FAST = [f"max_new_tokens={MAX_NEW_TOKENS}", "prompt.shots=1", "dtype=float32"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fixture_data")
    (root / "questions").mkdir()
    (root / "corpus").mkdir()
    (root / "questions" / "hotpotqa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (root / "corpus" / "wiki_paragraphs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in CORPUS))
    return root


def _resolve(data_dir: Path, method: str, *extra: str):
    from dynaprag.eval.experiment import resolve

    return resolve("hotpotqa", data_dir=str(data_dir), method=method, overrides=[*FAST, *extra])


@pytest.fixture(scope="module")
def runs(lm, data_dir, tmp_path_factory) -> dict[str, Path]:
    """wo-rag and sr-rag evaluated on the fixture through the real pipeline and model."""
    from dynaprag.eval.experiment import run

    out = tmp_path_factory.mktemp("runs")
    folders = {}
    for method in ("wo-rag", "sr-rag"):
        run_cfg, pipe_cfg = _resolve(data_dir, method)
        folders[method] = out / method
        run(run_cfg, pipe_cfg, folders[method], lm=lm, progress=False)
    return folders


def test_records_summary_and_config(runs, data_dir):
    for method, folder in runs.items():
        records = read_records(folder / RECORDS)
        assert [r["id"] for r in records] == [q["id"] for q in QUESTIONS]
        config = json.loads((folder / CONFIG).read_text())
        assert config["pipeline"]["method"] == method and config["dataset"] == "hotpotqa"
        assert config["pipeline"]["prompt"]["exemplars"] == "hotpotqa"  # the dataset's default set
        assert config["pipeline"]["max_new_tokens"] == MAX_NEW_TOKENS
        assert config["pipeline"]["retrieval"]["corpus"] == str(data_dir / "corpus" / "wiki_paragraphs.jsonl")
        for record, question in zip(records, QUESTIONS):
            assert record["gold"] == question["answers"] and record["gold_ids"] == question["supporting_doc_ids"]
            assert 0.0 <= record["scores"]["f1"] <= 1.0 and record["scores"]["em"] in (0.0, 1.0)
            assert record["generated_tokens"] > 0 and record["forward_passes"] > 0 and record["prompt_tokens"] > 0
            assert record["seconds"] > 0 and record["peak_rss_mb"] > 100
            assert record["trace"]["method"] and record["text"]
            extraction = record["trace"]["extraction"]  # one answer extraction for every method
            assert record["forced_answer"] == extraction["forced"]
            assert record["raw_prediction"] == extract_answer(record["text"])
            assert record["prediction"] == extract_answer(extraction["text"])
            if extraction["forced"]:  # its cost is the method's cost
                assert extraction["generated_tokens"] > 0 and record["generated_tokens"] > extraction["generated_tokens"]
        summary = json.loads((folder / SUMMARY).read_text())
        assert summary["forced_answer_share"] == pytest.approx(sum(r["forced_answer"] for r in records) / 4)
        assert summary["questions"] == 4 and summary["method"] == method
        assert summary["f1"] == pytest.approx(sum(r["scores"]["f1"] for r in records) / 4)
        assert summary["generated_tokens_per_question"] > 0 and summary["s_per_question"] > 0
    wo = read_records(runs["wo-rag"] / RECORDS)
    sr = read_records(runs["sr-rag"] / RECORDS)
    assert all(r["retrievals"] == 0 and r["retrieved_ids"] == [] for r in wo)
    assert "recall" not in json.loads((runs["wo-rag"] / SUMMARY).read_text())
    for record in sr:
        assert record["retrievals"] == 1
        event = record["trace"]["retrievals"][0]
        assert event["position"] == 0 and event["query"] == next(q["question"] for q in QUESTIONS
                                                                  if q["id"] == record["id"])
        assert event["hit_ids"] and set(event["hit_ids"]) <= {p["id"] for p in CORPUS}
        gold = set(record["gold_ids"])
        assert record["scores"]["recall"] == pytest.approx(len(gold & set(event["hit_ids"])) / len(gold))
    # BM25 finds the passage that names the question's entity
    assert json.loads((runs["sr-rag"] / SUMMARY).read_text())["recall"] > 0.5


def test_method_sees_only_the_question(lm, data_dir, tmp_path):
    from dynaprag.eval.experiment import load_run_examples
    from dynaprag.eval.runner import evaluate
    from dynaprag.pipeline import Pipeline

    run_cfg, pipe_cfg = _resolve(data_dir, "wo-rag", "limit=2", "max_new_tokens=4")
    pipeline = Pipeline.from_config(pipe_cfg, lm=lm)
    seen = []

    def answer_many(*args, **kwargs):
        seen.append((args, kwargs))
        return pipeline.answer_many(*args, **kwargs)

    examples = load_run_examples(run_cfg)
    assert examples[0].oracle["gold_facts"] == ["secret oracle text"]
    evaluate(examples, answer_many, tmp_path / "run", config={"dataset": "hotpotqa"}, progress=False)
    assert seen == [(([QUESTIONS[0]["question"], QUESTIONS[1]["question"]],), {})]


def test_report_table_and_plots(runs, tmp_path):
    from typer.testing import CliRunner

    from dynaprag.cli import app

    result = CliRunner().invoke(app, ["report", str(runs["wo-rag"]), str(runs["sr-rag"]), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "report.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| hotpotqa")]
    assert len(lines) == 2 and "| sr-rag | 4 |" in table and "| wo-rag | 4 |" in table
    assert "| hotpotqa | sr-rag | 4 |" in result.output
    sr_summary = json.loads((runs["sr-rag"] / SUMMARY).read_text())
    assert f"{sr_summary['f1']:.3f}" in lines[0] and f"{sr_summary['retrievals_per_question']:.3f}" in lines[0]
    for name in ("f1_per_method.png", "f1_vs_seconds.png", "retrieval_positions.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_resume_refuses_other_settings(runs, data_dir, lm):
    from dynaprag.eval.experiment import run

    run_cfg, pipe_cfg = _resolve(data_dir, "sr-rag", "k=5")
    with pytest.raises(RunError, match="k differ"):
        run(run_cfg, pipe_cfg, runs["sr-rag"], lm=lm, progress=False)


def test_config_errors_name_the_key(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="prompt.shots"):
        _resolve(data_dir, "sr-rag", "prompt.shots=many")
    with pytest.raises(ConfigError, match="retrieval.bogus"):
        _resolve(data_dir, "sr-rag", "retrieval.bogus=1")
    with pytest.raises(ConfigError, match="limit"):
        _resolve(data_dir, "sr-rag", "limit=ten")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("limit: 3\nk: 2\nretrieval:\n  k1: 0.9\nprompt:\n  shots: 2\n")
    from dynaprag.eval.experiment import resolve

    run_cfg, pipe_cfg = resolve("hotpotqa", data_dir=str(data_dir), method="sr-rag", config_file=str(cfg),
                                overrides=["prompt.shots=4"])
    assert (run_cfg.limit, pipe_cfg.k, pipe_cfg.retrieval.k1, pipe_cfg.prompt.shots) == (3, 2, 0.9, 4)
    assert pipe_cfg.retrieval.corpus.endswith("wiki_paragraphs.jsonl")  # the dataset's corpus survives the file
    cfg.write_text("retrieval:\n  k_one: 0.9\n")
    with pytest.raises(ConfigError, match="retrieval.k_one"):
        resolve("hotpotqa", data_dir=str(data_dir), config_file=str(cfg))


def test_torn_last_line_is_dropped_and_repaired(tmp_path):
    path = tmp_path / RECORDS
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}\n{"id": "c", "pred')
    assert [r["id"] for r in read_records(path)] == ["a", "b"]
    assert path.read_bytes().endswith(b'"pred')  # reading alone does not modify
    assert [r["id"] for r in read_records(path, repair=True)] == ["a", "b"]
    assert path.read_bytes() == b'{"id": "a"}\n{"id": "b"}\n'
    path.write_bytes(b'{"id": "a"}\nnot json\n{"id": "c"}\n')
    with pytest.raises(RunError, match="corrupt record"):
        read_records(path)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_kill_and_resume_loses_and_duplicates_nothing(data_dir, tmp_path, batch_size):
    """At batch 3 the kill lands while answers that finished early may be held in memory: they are
    lost (answered again on resume), never written twice or out of order."""
    out = tmp_path / "killed"
    command = [str(Path(sys.executable).parent / "dynaprag"), "eval", "--dataset", "hotpotqa", "--data-dir", str(data_dir),
               "--method", "sr-rag", "--out", str(out), "--no-progress", "--batch-size", str(batch_size), *FAST]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    records = out / RECORDS
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if records.exists() and records.read_bytes().count(b"\n") >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stdout.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = read_records(records)
    assert 1 <= len(first) < len(QUESTIONS)
    # simulate a kill in the middle of a write as well: a torn last line must be dropped
    with open(records, "ab") as handle:
        handle.write(b'{"id": "f9", "prediction": "torn')
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    final = read_records(records)
    ids = [r["id"] for r in final]
    assert ids == [q["id"] for q in QUESTIONS]  # each once, in question-file order
    assert final[:len(first)] == first  # the records written before the kill are kept as they were
    assert records.read_bytes().endswith(b"\n")
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["questions"] == len(QUESTIONS)
    assert summary["f1"] == pytest.approx(sum(r["scores"]["f1"] for r in final) / len(final))


def _without_timings(value):
    """A record with its wall-clock fields (and the batch size it was run at) left out, and floats
    compared to 1e-4: a batched float32 pass sums in another order, so per-token log-probs and
    entropies move in the 6th digit while tokens, texts and decisions stay the same."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items()
                if k not in ("seconds", "peak_rss_mb", "batch_size")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-4, abs=1e-5)
    return value


@pytest.mark.parametrize("method", ["wo-rag", "sr-rag"])
def test_batched_run_writes_the_records_of_batch_1(runs, data_dir, lm, tmp_path, method):
    """batch_size=3 on 4 questions (3 decode together, the 4th joins when one leaves): same records,
    in question order, as the batch-1 run (float32), forced extractions included (3 of wo-rag's 4
    answers need one); the summary adds questions_per_hour."""
    from dynaprag.eval.experiment import run

    run_cfg, pipe_cfg = _resolve(data_dir, method, "batch_size=3")
    summary = run(run_cfg, pipe_cfg, tmp_path / "b3", lm=lm, progress=False)
    single = read_records(runs[method] / RECORDS)
    batched = read_records(tmp_path / "b3" / RECORDS)
    assert [r["id"] for r in batched] == [q["id"] for q in QUESTIONS]
    assert [r["batch_size"] for r in batched] == [3] * 4
    assert [_without_timings(r) for r in batched] == [_without_timings(r) for r in single]
    assert json.loads((tmp_path / "b3" / CONFIG).read_text())["batch_size"] == 3
    assert summary["questions_per_hour_over"] == 4 and summary["questions_per_hour"] > 0
    assert summary["f1"] == json.loads((runs[method] / SUMMARY).read_text())["f1"]


def test_batch_size_may_change_when_a_run_resumes(runs, data_dir, lm, tmp_path):
    from dynaprag.eval.experiment import run

    out = tmp_path / "mixed"
    run(*_resolve(data_dir, "sr-rag", "batch_size=3", "limit=2"), out, lm=lm, progress=False)
    summary = run(*_resolve(data_dir, "sr-rag"), out, lm=lm, progress=False)
    records = read_records(out / RECORDS)
    assert [r["batch_size"] for r in records] == [3, 3, 1, 1]  # each record says how it was decoded
    assert [_without_timings(r) for r in records] == [_without_timings(r) for r in read_records(runs["sr-rag"] / RECORDS)]
    assert json.loads((out / CONFIG).read_text())["batch_size"] == 1 and "questions_per_hour" not in summary
    with pytest.raises(ConfigError, match="batch_size"):
        _resolve(data_dir, "sr-rag", "batch_size=0")


def test_batched_run_stops_at_a_question_too_long_after_the_ones_before_it(lm, tmp_path):
    """The too-long question fails at once, before the question ahead of it finishes: that one is
    still written, the later ones (answered meanwhile) are not, and the RunError names it."""
    from dynaprag.eval.experiment import resolve, run

    path = tmp_path / "long.jsonl"
    rows = [QUESTIONS[0], {"id": "huge", "question": " ".join(["word"] * 10_000) + " Why?", "answers": ["x"]},
            QUESTIONS[1]]
    path.write_text("".join(json.dumps(q) + "\n" for q in rows), encoding="utf-8")
    run_cfg, pipe_cfg = resolve("demo", questions=str(path), method="wo-rag",
                                overrides=["max_new_tokens=4", "prompt.shots=1", "dtype=float32", "batch_size=3"])
    with pytest.raises(RunError, match=r"question 'huge'.*tokens exceeds the context"):
        run(run_cfg, pipe_cfg, tmp_path / "run", lm=lm, progress=False)
    assert [r["id"] for r in read_records(tmp_path / "run" / RECORDS)] == ["f1"]


def test_fixture_questions_load(data_dir):
    assert [e.id for e in load_examples(data_dir / "questions" / "hotpotqa.jsonl")] == ["f1", "f2", "f3", "f4"]
