"""Issue 15, items 5 and 8 for evaluation runs: no leftovers, valid limits, consistent summaries.

* A killed eval once left ``.summary.json.tmpPID`` files for good: the next run in the folder
  sweeps dynaprag's temporary files of dead writers and keeps a live writer's.
* ``--limit 0`` and ``--limit -1`` each evaluated one question; an empty question file gave
  null metrics with exit code 0.
* After rerunning a 12-record folder with ``--limit 5`` the config said 5 and the summary and
  report said 12: a folder's summary now covers exactly the questions of its config.

The runs go through the real pipeline and the real default model (``wo-rag``, 4 new tokens).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dynaprag.config import ConfigError
from dynaprag.eval.datasets import DatasetError, load_examples
from dynaprag.eval.runner import CONFIG, RECORDS, RUN_MARKER, SUMMARY, read_records

pytestmark = pytest.mark.slow
QUESTIONS = [{"id": f"q{i:02d}", "question": f"What is {i} plus {i}?", "answers": [str(2 * i)]}
             for i in range(12)]
FAST = ["max_new_tokens=4", "prompt.shots=1", "dtype=float32"]


@pytest.fixture(scope="module")
def question_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("questions") / "twelve.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")
    return path


def _resolve(questions: Path, **kwargs):
    from dynaprag.eval.experiment import resolve

    return resolve("demo", questions=str(questions), method="wo-rag", overrides=FAST, **kwargs)


def _run(lm, questions: Path, out: Path, limit: int | None = None) -> dict:
    from dynaprag.eval.experiment import run

    run_cfg, pipe_cfg = _resolve(questions, limit=limit)
    return run(run_cfg, pipe_cfg, out, lm=lm, progress=False)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("how", ["flag", "override", "file"])
@pytest.mark.parametrize("limit", [0, -1])
def test_limit_below_one_is_refused_naming_limit(question_file, tmp_path, how, limit):
    from dynaprag.eval.experiment import resolve

    with pytest.raises(ConfigError, match=r"^limit: .*(at least 1|>= ?1)"):
        if how == "flag":
            _resolve(question_file, limit=limit)
        elif how == "override":
            resolve("demo", questions=str(question_file), overrides=[f"limit={limit}"])
        else:
            cfg = tmp_path / "c.yaml"
            cfg.write_text(f"limit: {limit}\n")
            resolve("demo", questions=str(question_file), config_file=str(cfg))


def test_load_examples_limit(question_file):
    assert [e.id for e in load_examples(question_file, limit=1)] == ["q00"]
    for bad in (0, -1):
        with pytest.raises(ConfigError, match="limit"):
            load_examples(question_file, limit=bad)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_question_file_is_an_error_naming_the_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=f"{path}: .*no questions"):
        load_examples(path)
    listed = tmp_path / "empty.json"
    listed.write_text("[]", encoding="utf-8")
    with pytest.raises(DatasetError, match=f"{listed}: .*no questions"):
        load_examples(listed)


def test_empty_question_file_stops_the_run_before_the_folder_is_written(lm, tmp_path):
    from dynaprag.eval.experiment import run

    path = tmp_path / "empty.jsonl"
    path.write_text("", encoding="utf-8")
    run_cfg, pipe_cfg = _resolve(path)
    with pytest.raises(DatasetError, match="no questions"):
        run(run_cfg, pipe_cfg, tmp_path / "out", lm=lm, progress=False)
    assert not (tmp_path / "out" / SUMMARY).exists()


def test_summary_and_report_follow_the_limit(lm, question_file, tmp_path):
    from dynaprag.eval.report import load_run, report_table

    out = tmp_path / "run"
    full = _run(lm, question_file, out)
    assert full["questions"] == 12 and "records_beyond_limit" not in full
    all_records = read_records(out / RECORDS)
    assert [r["id"] for r in all_records] == [q["id"] for q in QUESTIONS]

    short = _run(lm, question_file, out, limit=5)
    assert json.loads((out / CONFIG).read_text())["limit"] == 5
    on_disk = json.loads((out / SUMMARY).read_text())
    assert short == on_disk
    assert on_disk["questions"] == 5 and on_disk["records_beyond_limit"] == 7
    first5 = all_records[:5]
    assert on_disk["f1"] == pytest.approx(sum(r["scores"]["f1"] for r in first5) / 5)
    assert on_disk["total_seconds"] == pytest.approx(sum(r["seconds"] for r in first5))
    assert read_records(out / RECORDS) == all_records  # kept on disk, not re-run
    loaded = load_run(out)
    assert loaded.summary == on_disk and [r["id"] for r in loaded.records] == [q["id"] for q in QUESTIONS[:5]]
    assert "| demo | wo-rag | 5 |" in report_table([loaded])

    again = _run(lm, question_file, out, limit=12)
    assert again["questions"] == 12 and "records_beyond_limit" not in again
    assert read_records(out / RECORDS) == all_records  # nothing duplicated


def test_run_sweeps_temporary_files_of_dead_writers(lm, question_file, tmp_path):
    """Today's ``.summary.json.dynaprag-tmp-<pid>`` and an earlier version's names of the run's
    own files; the user-like look-alikes are the business of ``test_no_data_loss.py``."""
    out = tmp_path / "run"
    _run(lm, question_file, out, limit=1)
    dead = _dead_pid()
    stale = [out / f".summary.json.dynaprag-tmp-{dead}", out / f"summary.json.tmp-{dead}",
             out / f".summary.json.tmp{dead}", out / f".config.json.tmp{dead}"]
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    live = [out / f".summary.json.dynaprag-tmp-{writer.pid}", out / f"summary.json.tmp-{writer.pid}",
            out / f".summary.json.tmp{writer.pid}"]
    for path in stale + live:
        path.write_text("{half a summ", encoding="utf-8")
    try:
        _run(lm, question_file, out, limit=2)
    finally:
        writer.kill()
        writer.wait()
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in live)  # a live process may still be writing them
    for path in live:
        path.unlink()
    leftovers = sorted(p.name for p in out.iterdir())
    assert leftovers == sorted([".lock", RUN_MARKER, CONFIG, RECORDS, SUMMARY])


def test_question_too_long_for_the_model_stops_the_run_naming_it(lm, tmp_path):
    """Item 7 in an eval: the run stops with a RunError naming the question; earlier records stay."""
    from dynaprag.eval.runner import RunError

    path = tmp_path / "long.jsonl"
    long = {"id": "huge", "question": " ".join(["word"] * 10_000) + " Why?", "answers": ["x"]}
    path.write_text(json.dumps(QUESTIONS[0]) + "\n" + json.dumps(long) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    with pytest.raises(RunError, match=r"question 'huge'.*tokens exceeds the context of 8192.*shorter question"):
        _run(lm, path, out)
    assert [r["id"] for r in read_records(out / RECORDS)] == ["q00"]
