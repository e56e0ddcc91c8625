"""What ``dynaprag report`` tells a reader about each run: a label that tells runs apart, the model
and dtype it ran in, and a cost that means the same thing for batched and unbatched runs."""
from __future__ import annotations

import json
from pathlib import Path

from dynaprag.eval.report import build_report, load_run, write_report


def _record(qid: str, em: float, seconds: float = 2.0) -> dict:
    return {"id": qid, "scores": {"em": em, "f1": em, "cover_em": em}, "retrievals": 1, "generated_tokens": 10,
            "prompt_tokens": 100, "forward_passes": 10, "seconds": seconds, "peak_rss_mb": 500.0,
            "trace": {"tokens": [], "retrievals": []}}


def _run(path: Path, method: str, *, theta: float | None = None, batch_size: int = 1, dtype: str | None = "bfloat16",
         summary: dict | None = None) -> Path:
    path.mkdir(parents=True)
    pipeline = {"method": method, "model": "smollm2-135m", "dtype": "auto",
                "trigger": {} if theta is None else {"theta": theta}}
    config = {"dataset": "hotpotqa", "limit": None, "batch_size": batch_size, "pipeline": pipeline,
              **({"resolved_dtype": dtype} if dtype else {})}
    (path / "config.json").write_text(json.dumps(config))
    (path / "records.jsonl").write_text("".join(json.dumps(_record(f"q{i}", float(i % 2))) + "\n" for i in range(6)))
    if summary:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_two_runs_of_one_method_are_labelled_by_the_knob_that_differs(tmp_path):
    base = _run(tmp_path / "sr", "sr-rag")
    preset = _run(tmp_path / "dragin", "dragin")
    calibrated = _run(tmp_path / "dragin-cal", "dragin", theta=4.7)
    table, _ = write_report([base, preset, calibrated], tmp_path / "out", plots=False, resamples=100)
    assert "| dragin (trigger.theta=default) |" in table and "| dragin (trigger.theta=4.7) |" in table
    comparisons = {line.split("|")[1].strip() for line in table.splitlines() if " vs sr-rag" in line}
    assert comparisons == {"dragin (trigger.theta=4.7) vs sr-rag", "dragin (trigger.theta=default) vs sr-rag"}


def test_runs_with_the_same_settings_and_folder_name_are_labelled_by_their_paths(tmp_path):
    a = _run(tmp_path / "a" / "dragin", "dragin")
    b = _run(tmp_path / "b" / "dragin", "dragin")
    runs = [load_run(a), load_run(b)]
    table, _ = write_report([a, b], tmp_path / "out", plots=False, resamples=100)
    assert "| dragin (a/dragin) |" in table and "| dragin (b/dragin) |" in table
    assert len({r.label for r in runs}) == 1  # load_run alone labels by method; write_report tells them apart


def test_report_names_model_and_dtype_and_costs_batched_runs_in_questions_per_hour(tmp_path):
    one = _run(tmp_path / "one", "sr-rag")
    batched = _run(tmp_path / "batched", "flare", batch_size=8,
                   summary={"questions_per_hour": 980.4, "questions_per_hour_over": 6})
    old = _run(tmp_path / "old", "dragin", dtype=None)  # a run folder from before the dtype was recorded
    report = build_report([load_run(one), load_run(batched), load_run(old)], resamples=100)
    text = report.markdown()
    rows = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| hotpotqa")}
    assert rows["sr-rag"].endswith("| 2.00 s/q | smollm2-135m, bfloat16 |")
    assert rows["flare"].endswith("| 980 q/h (batch 8) | smollm2-135m, bfloat16 |")
    assert rows["dragin"].endswith("| smollm2-135m, auto |")
    assert "questions per hour (q/h)" in text and "Model, dtype" in text
    runs = {r.label: r for r in report.runs}
    assert runs["flare"].seconds_per_question() == 3600 / 980.4  # the plots' cost axis: throughput
    assert runs["sr-rag"].seconds_per_question() == 2.0
    row = next(r for r in report.to_dict()["runs"] if r["method"] == "flare")
    assert row["questions_per_hour"] == 980.4 and row["batch_size"] == 8
