"""``dynaprag eval --ray``: the single-process run folder, written by a driver from 2 Ray workers.

Everything runs on the test run's local Ray cluster (``tests/ray_fixture.py``, 2 CPUs: 2 workers
of one thread) with the real default model and the demo corpus, a few questions and a few tokens:

* a Ray run records what one process records (greedy, float32, batch 1), and a finished run
  comes back without starting a worker;
* a worker killed with SIGKILL while it answers costs only its shard, which a live worker
  answers again: nothing lost, nothing twice;
* a driver killed with SIGKILL (``dynaprag eval --ray --ray-address`` in a child process) resumes
  from its folder when the command runs again, with another worker count;
* a question that raises is recorded as an error and its shard goes on, and so is one that kills
  every worker it is handed to;
* ``reproduce --ray`` fills a table's run folders from one queue.
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

from dynaprag.eval.runner import CONFIG, RECORDS, SUMMARY, read_records

pytestmark = pytest.mark.slow
FAST = ["max_new_tokens=6", "prompt.shots=1", "dtype=float32"]
N = 4  # demo questions compared with the single-process run


def _resolve(method: str = "sr-rag", limit: int = N, **kwargs):
    from dynaprag.eval.experiment import resolve

    return resolve("demo", method=method, limit=limit, overrides=FAST, **kwargs)


def _comparable(value):
    """A record without its wall-clock fields, floats to float32 tolerance (another process sums
    in its own order; tokens, texts and decisions must be equal)."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k not in ("seconds", "peak_rss_mb", "batch_size")}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-4, abs=1e-5)
    return value


@pytest.fixture(scope="module")
def single(lm, tmp_path_factory) -> list[dict]:
    """The records of the first N demo questions answered in this process (the reference)."""
    from dynaprag.eval.experiment import run

    out = tmp_path_factory.mktemp("single") / "run"
    run(*_resolve(), out, lm=lm, progress=False)
    return read_records(out / RECORDS)


def _ray_run(out: Path, *, method: str = "sr-rag", limit: int = N, workers: int = 2, shard_size: int = 1,
             questions: str | None = None, **kwargs) -> tuple[dict, list[dict], list[str]]:
    from dynaprag.eval.distributed import RayEvalConfig, cell, evaluate_on_ray

    events: list[dict] = []
    lines: list[str] = []
    run_cfg, pipe_cfg = _resolve(method, limit, questions=questions)
    summary, = evaluate_on_ray([cell(run_cfg, pipe_cfg, out)], RayEvalConfig(workers=workers, shard_size=shard_size),
                               progress=False, log=lines.append,
                               on_event=lambda e: (events.append(e), kwargs.get("on_event", bool)(e)))
    return summary, events, lines


def test_a_ray_run_records_what_one_process_records(single, ray_cluster, tmp_path):
    out = tmp_path / "run"
    summary, events, _ = _ray_run(out)
    records = read_records(out / RECORDS)
    assert [r["id"] for r in records] == [r["id"] for r in single]
    assert [_comparable(r) for r in records] == [_comparable(r) for r in single]
    pids = {e["pid"] for e in events if e["event"] == "ready"}
    assert len(pids) == 2 and os.getpid() not in pids  # two actors answered, not this process
    assert {e["pid"] for e in events if e["event"] == "dispatched"} == pids
    config = json.loads((out / CONFIG).read_text(encoding="utf-8"))
    assert config["ray"] == {"address": "local", "workers": 2, "threads_per_worker": 1, "gpus_per_worker": 0.0,
                             "shard_size": 1}
    assert summary["questions"] == N and summary["questions_per_hour_over"] == N and "errors" not in summary
    assert json.loads((out / SUMMARY).read_text(encoding="utf-8")) == summary

    again, events, _ = _ray_run(out)  # finished: summarised without a single worker
    assert events == [] and read_records(out / RECORDS) == records
    assert again["questions"] == N and json.loads((out / CONFIG).read_text(encoding="utf-8"))["ray"] == config["ray"]


def test_a_killed_worker_costs_only_its_shard(single, ray_cluster, tmp_path):
    killed: dict = {}
    dispatched: list[dict] = []

    def kill_one_busy_worker(event: dict) -> None:
        if event["event"] == "dispatched":
            dispatched.append(event)
        if event["event"] == "record" and not killed:  # the driver has just handed this worker its next shard
            killed.update(dispatched[-1])
            os.kill(killed["pid"], signal.SIGKILL)

    out = tmp_path / "run"
    summary, events, lines = _ray_run(out, on_event=kill_one_busy_worker)
    records = read_records(out / RECORDS)
    assert [_comparable(r) for r in records] == [_comparable(r) for r in single]  # none lost, none twice
    lost = [e for e in events if e["event"] == "lost"]
    assert [(e["pid"], e["ids"], e["given_up"]) for e in lost] == [(killed["pid"], killed["ids"], False)]
    again = [e for e in events if e["event"] == "dispatched" and e["ids"] == killed["ids"]][1:]
    assert again and again[0]["pid"] != killed["pid"] and again[0]["attempts"] == 1
    assert any(f"pid {killed['pid']}" in line and "died answering demo sr-rag" in line for line in lines)
    assert summary["questions"] == N and "errors" not in summary


def test_a_question_that_keeps_killing_its_worker_is_recorded_as_an_error(ray_cluster, tmp_path):
    """Every worker handed the second question is killed: after its tries the question is given up
    (an error record), the other questions are answered, and the run ends."""
    from dynaprag.eval.experiment import load_run_examples

    ids = [ex.id for ex in load_run_examples(_resolve("wo-rag", 3)[0])]

    def kill_whoever_gets_the_poison(event: dict) -> None:
        if event["event"] == "dispatched" and event["ids"] == [ids[1]]:
            os.kill(event["pid"], signal.SIGKILL)

    out = tmp_path / "run"
    summary, events, lines = _ray_run(out, method="wo-rag", limit=3, on_event=kill_whoever_gets_the_poison)
    records = read_records(out / RECORDS)
    assert [r["id"] for r in records] == ids
    assert "error" not in records[0] and "error" not in records[2]
    assert records[1]["error"].startswith("WorkerLost: ") and records[1]["prediction"] == ""
    assert [e["given_up"] for e in events if e["event"] == "lost"] == [False, True]
    assert summary["errors"] == 1 and any("recorded as an error" in line for line in lines)


def test_a_killed_driver_resumes_from_its_folder(single, ray_cluster, tmp_path):
    """The driver is ``dynaprag eval --ray`` in a child process joining this run's cluster."""
    out = tmp_path / "run"
    address = ray_cluster.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "dynaprag.cli", "eval", "--dataset", "demo", "--method", "sr-rag",
               "--limit", str(N + 2), *FAST, "--ray", "--ray-address", address, "--shard-size", "1",
               "--no-progress", "--out", str(out)]
    driver = subprocess.Popen([*command, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while not read_records(out / RECORDS) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    _, stderr = driver.communicate(timeout=60)
    written = read_records(out / RECORDS)
    assert 0 < len(written) < N + 2, stderr.decode()[-2000:]

    rerun = subprocess.run([*command, "--workers", "1"], capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    records = read_records(out / RECORDS)
    assert records[:len(written)] == written  # kept as they were, then the rest appended once
    assert [r["id"] for r in records] == [r["id"] for r in single] + [r["id"] for r in records[N:]]
    assert len({r["id"] for r in records}) == N + 2
    assert [_comparable(r) for r in records[:N]] == [_comparable(r) for r in single]
    assert json.loads((out / CONFIG).read_text(encoding="utf-8"))["ray"]["workers"] == 1  # resources may change
    assert json.loads(rerun.stdout[:rerun.stdout.rindex("}") + 1])["questions"] == N + 2


def test_a_question_that_raises_is_recorded_and_its_shard_goes_on(ray_cluster, tmp_path):
    path = tmp_path / "questions.jsonl"
    rows = [{"id": "a", "question": "Who wrote Hamlet?", "answers": ["Shakespeare"]},
            {"id": "huge", "question": " ".join(["word"] * 10_000) + " Why?", "answers": ["x"]},
            {"id": "b", "question": "What is the capital of France?", "answers": ["Paris"]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "run"
    summary, events, lines = _ray_run(out, method="wo-rag", limit=None, shard_size=3, questions=str(path))
    records = read_records(out / RECORDS)
    assert [r["id"] for r in records] == ["a", "huge", "b"]
    assert "error" not in records[0] and "error" not in records[2] and records[2]["generated_tokens"] > 0
    assert records[1]["error"].startswith("PromptTooLong: ") and "exceeds the context" in records[1]["error"]
    assert records[1]["prediction"] == "" and records[1]["scores"]["em"] == 0.0
    assert summary["errors"] == 1 and summary["questions"] == 3
    assert [e["id"] for e in events if e["event"] == "error"] == ["huge"]
    assert any("'huge'" in line and "recorded as an error" in line for line in lines)


def test_reproduce_on_ray_fills_every_run_folder(shared_data, ray_cluster, tmp_path):
    import dataclasses

    from dynaprag.eval.distributed import RayEvalConfig
    from dynaprag.eval.reproduce import BASELINE, get_table, reproduce

    data = tmp_path / "data"
    (data / "questions").mkdir(parents=True)
    (data / "corpus").mkdir()
    with open(shared_data / "questions" / "hotpotqa.jsonl", encoding="utf-8") as src:
        (data / "questions" / "hotpotqa.jsonl").write_text("".join(next(src) for _ in range(2)), encoding="utf-8")
    with open(shared_data / "corpus" / "wiki_paragraphs.jsonl", encoding="utf-8") as src:
        (data / "corpus" / "wiki_paragraphs.jsonl").write_text("".join(next(src) for _ in range(300)),
                                                                encoding="utf-8")
    full = get_table("dragin-table2")
    table = dataclasses.replace(full, methods=tuple(m for m in full.methods if m.ours in ("wo-rag", BASELINE)))
    result = reproduce(table, model="smollm2-135m", dtype="float32", data_dir=data, out=tmp_path / "out", limit=2,
                       datasets=["hotpotqa"], overrides=["max_new_tokens=6"], progress=False, plots=False,
                       resamples=200, ray=RayEvalConfig(workers=2, shard_size=1))
    for method in ("wo-rag", BASELINE):
        folder = tmp_path / "out" / "hotpotqa" / method
        assert len(read_records(folder / RECORDS)) == 2
        assert json.loads((folder / CONFIG).read_text(encoding="utf-8"))["ray"]["workers"] == 2
    assert {r["method"] for r in result.rows} == {"wo-rag", BASELINE} and all(r["n"] == 2 for r in result.rows)


def test_ray_sizing_flags_without_ray_are_refused(tmp_path):
    from typer.testing import CliRunner

    from dynaprag.cli import app

    result = CliRunner().invoke(app, ["eval", "--dataset", "demo", "--workers", "2", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--workers needs --ray" in result.output
    assert not (tmp_path / "r").exists()


def test_a_model_a_worker_cannot_load_stops_the_run_with_one_line(ray_cluster, tmp_path):
    from typer.testing import CliRunner

    from dynaprag.cli import app

    result = CliRunner().invoke(app, ["eval", "--dataset", "demo", "--method", "wo-rag", "--limit", "1",
                                      "model=no-such-model-anywhere", "--ray", "--workers", "1",
                                      "--no-progress", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "a Ray worker could not load the runs' model or index" in message and "no-such-model-anywhere" in message
    assert read_records(tmp_path / "run" / RECORDS) == []
