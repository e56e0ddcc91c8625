"""Every dynamic preset does exactly what it did when its traces were recorded.

``tests/fixtures/preset_traces.json`` holds, per preset and demo question, the answer, the
retrieval positions, reasons, queries and hits of the 135M model in float32 (written by
``scripts/record_preset_traces.py``, before the dynamic core was refactored). This test replays
the first questions of every preset (all of them with ``DYNAPRAG_ALL_TRACES=1``, or run the
script with ``--check``). A preset whose behaviour changes on purpose is re-recorded in the
same commit, with the reason in the commit message.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import record_preset_traces as rec  # noqa: E402

FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "preset_traces.json").read_text(encoding="utf-8"))
QUESTIONS_PER_PRESET = None if os.environ.get("DYNAPRAG_ALL_TRACES") else 2
CASES = [(preset, qid) for preset, by_q in FIXTURE["traces"].items()
         for qid in list(by_q)[: QUESTIONS_PER_PRESET if preset != "seakr" else 1]]
XDIST_PER_TEST = True  # no module state: under `pytest -n`, workers share out the tests (conftest.py)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")  # as recorded: float32 sums may depend on the thread count
@pytest.mark.parametrize("preset, qid", CASES)
def test_preset_trace_is_unchanged(demo_pipeline, preset, qid):
    question = next(q for q in rec.demo_questions(100) if q["id"] == qid)["question"]
    got = rec.summarise(demo_pipeline(preset).answer(question, max_new_tokens=FIXTURE["max_new_tokens"]))
    assert got == FIXTURE["traces"][preset][qid]
