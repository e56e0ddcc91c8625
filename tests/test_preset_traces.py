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
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import record_preset_traces as rec  # noqa: E402

FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "preset_traces.json").read_text(encoding="utf-8"))
QUESTIONS_PER_PRESET = None if os.environ.get("DYNAPRAG_ALL_TRACES") else 2
CASES = [(preset, qid) for preset, by_q in FIXTURE["traces"].items()
         for qid in list(by_q)[: QUESTIONS_PER_PRESET if preset != "seakr" else 1]]


@pytest.fixture(scope="module")
def pipelines(lm):
    from dynaprag.pipeline import Pipeline, PipelineConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as recorded: float32 sums may depend on the thread count
    cache: dict = {}

    def get(method: str):
        if method not in cache:
            cfg = PipelineConfig(method=method, dtype="float32", max_new_tokens=FIXTURE["max_new_tokens"])
            retriever = next(iter(cache.values())).retriever if cache else None
            cache[method] = Pipeline.from_config(cfg, lm=lm, retriever=retriever)
        return cache[method]
    yield get
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("preset, qid", CASES)
def test_preset_trace_is_unchanged(pipelines, preset, qid):
    question = next(q for q in rec.demo_questions(100) if q["id"] == qid)["question"]
    got = rec.summarise(pipelines(preset).answer(question))
    assert got == FIXTURE["traces"][preset][qid]
