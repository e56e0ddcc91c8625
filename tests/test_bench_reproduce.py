"""``bench/reproduce.py``: which committed calibrations it applies and which costs it reports."""
from __future__ import annotations

import json

from dynaprag.eval.reproduce import get_table

from bench_scripts import load_bench

bench = load_bench("reproduce")


def test_default_calibrations_are_the_committed_ones_of_this_model_only():
    table = get_table("dragin-table2")
    found = bench.default_calibrations(table, "qwen2.5-coder-0.5b", ["hotpotqa", "2wikimultihopqa"])
    assert sorted(p.name for p in found) == ["calibrate.dragin.2wikimultihopqa.qwen2.5-coder-0.5b.yaml",
                                             "calibrate.dragin.hotpotqa.qwen2.5-coder-0.5b.yaml"]
    assert bench.default_calibrations(table, "smollm2-135m", ["hotpotqa"]) == []


def test_cost_columns_read_the_run_summary(tmp_path):
    assert bench.cost_columns(tmp_path) == {}
    (tmp_path / "summary.json").write_text(json.dumps({"s_per_question": 2.5, "retrievals_per_question": 1.0,
                                                       "questions_per_hour": None, "f1": 0.3}))
    assert bench.cost_columns(tmp_path) == {"s_per_question": 2.5, "retrievals_per_question": 1.0}
