"""A finished question leaves nothing for the cyclic GC: its KV cache and per-step logits are freed at once.

A reference cycle (the run owning its probe, the probe pointing back at the run) once kept every
finished question's cache and logits alive until a rare gen-2 collection: a 100-question batched
eval on qwen2.5-coder-0.5b grew past 11 GB. Reference counting alone must free a question.
"""
from __future__ import annotations

import gc
from collections import Counter

import pytest

from dynaprag.pipeline import Pipeline, load_config

QUESTIONS = ["Who wrote Hamlet?", "What is the capital of France?", "When was Albert Einstein born?"]


def _cyclic_garbage(run) -> Counter:
    gc.collect()
    gc.disable()
    try:
        run()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found = Counter(type(o).__name__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    return found


@pytest.mark.parametrize("method", ["sr-rag", "flare", "dragin"])
def test_answers_leave_no_tensors_to_the_cyclic_gc(lm, method):
    pipe = Pipeline.from_config(load_config(None, [f"method={method}", "max_new_tokens=12", "dtype=float32"]), lm=lm)

    def batch_1():
        for q in QUESTIONS:
            pipe.extract(q, pipe.answer(q))

    def batch_3():
        for index, answer in pipe.answer_many(QUESTIONS, batch_size=3):
            pipe.extract(QUESTIONS[index], answer)

    for run in (batch_1, batch_3):
        garbage = _cyclic_garbage(run)
        held = {name: garbage[name] for name in ("Tensor", "DecodeState", "DynamicCache", "StepOutput", "QuestionRun")
                if garbage[name]}
        assert not held, f"{method} {run.__name__}: finished questions left cycles holding {held}"
