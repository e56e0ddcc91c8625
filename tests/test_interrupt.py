"""Every method checks for cancellation before every forward pass (issue 27, item 3).

A server sets :attr:`Generator.interrupt` to raise once the client has gone; the check is a
forward pre-hook on the model, so it covers decoding steps, prefills, SeaKR's sample batches,
DRAGIN's attention passes and Self-RAG's side prompts alike. Here the interrupt raises at the
third pass of each method on the real model, and no fourth pass may run.
"""
from __future__ import annotations

import pytest

#: methods the real tiny model runs without an adapter store, a translator or Self-RAG's tokens
METHODS = ["wo-rag", "sr-rag", "fl-rag", "fs-rag", "token-rag", "entity-rag", "flare", "flare-flashrag", "dragin",
           "dragin-inline", "dragin-paper", "seakr", "self-rag-prompted"]


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def pipeline(lm):
    from dynaprag.pipeline import Pipeline, PipelineConfig

    return Pipeline.from_config(PipelineConfig(dtype="float32", max_new_tokens=24), lm=lm)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_an_interrupt_stops_every_method_before_its_next_forward_pass(pipeline, method):
    gen = pipeline.generator
    passes = {"n": 0}
    hook = gen.model.register_forward_pre_hook(lambda _m, _a: passes.__setitem__("n", passes["n"] + 1))

    def interrupt() -> None:
        if passes["n"] >= 3:
            raise Stop(f"stopped after {passes['n']} passes")

    gen.interrupt = interrupt
    try:
        with pytest.raises(Stop):
            pipeline.answer("Who directed the film Jaws, and when was he born?", method=method)
    finally:
        gen.interrupt = None
        hook.remove()
    assert passes["n"] == 3, "a forward pass ran after the interrupt said stop"
    assert pipeline.answer("Who directed Jaws?", method="wo-rag", max_new_tokens=2).text is not None, \
        "the generator still answers after an interrupted question"
