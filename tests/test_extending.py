"""A new white-box signal and a trigger that reads it, added in this one file (docs/extending.md).

The engine (generator, batch stepper, loop, draft, scripted double) is not touched: the signal
is one :class:`~dynaprag.lm.signals.Signal` subclass (its hook, its read for batch 1 and batch
B), the trigger one small class that declares ``reads`` and its ``after_retrieval`` policy, and
one registry line makes it a name a config can choose. The count the docs promise is ≤ 3 files
(signal, trigger, registration); here all three sit in this test, so the engine's files are 0.

Both levels run: the scripted double of :mod:`dynaprag.testing` scripts the new signal by its key
(a unit test of the trigger), and the real SmolLM2-135M computes it through the real loop, at
batch 1 and batch 2, with the same values.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from dynaprag.dynamic.draft import AfterRetrieval, Decision, Draft
from dynaprag.dynamic.triggers import TRIGGERS, Trigger
from dynaprag.lm.signals import Signal
from dynaprag.testing import ScriptedStep, scripted_loop


# -- file 1: the signal ----------------------------------------------------------------------------
class FinalNorm(Signal):
    """The L2 norm of the final norm layer's output at the predicting position (a forward hook)."""

    key = "final-norm"

    def missing(self, generator):
        model = getattr(generator, "model", None)
        if model is not None and getattr(getattr(model, "model", None), "norm", None) is None:
            return "reads the final norm's output; this model has no model.norm"
        return None

    @contextlib.contextmanager
    def hook(self, generator):
        seen: dict = {}
        handle = generator.model.model.norm.register_forward_hook(lambda _m, _i, out: seen.__setitem__("out", out))
        try:
            yield seen
        finally:
            handle.remove()

    def read(self, out, hooked, row, start):
        return float(hooked["out"][row, -1].float().norm())


FINAL_NORM = FinalNorm()


# -- file 2: the trigger ---------------------------------------------------------------------------
@dataclass
class FinalNormTrigger(Trigger):
    """Retrieve at a sentence end when a token of the sentence was predicted with a final norm > θ."""

    theta: float = field(default=100.0, metadata={"help": "retrieve when a token's final norm > theta"})
    reads: ClassVar[tuple] = (FINAL_NORM,)
    rolls_back: ClassVar[bool] = True
    after_retrieval: ClassVar[AfterRetrieval] = AfterRetrieval(recheck=False)  # accept the regenerated sentence

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        if not draft.sentence_end:
            return None
        start, end = max(draft.sentence_start, draft.checked), len(draft.steps)
        norms = draft.filed(FINAL_NORM)
        scores = {i: norms[i] for i in range(start, end) if i in norms}
        high = [i for i, value in scores.items() if value > self.theta]
        if not high:
            return Decision.hold(token_scores=scores)
        return Decision.fire(f"final norm {scores[high[0]]:.4g} > θ={self.theta:g}", keep=draft.sentence_start,
                             span=(draft.sentence_start, end), token_scores=scores)


# -- file 3: the registration ------------------------------------------------------------------------
if "final-norm" not in TRIGGERS.names():
    TRIGGERS.register("final-norm", FinalNormTrigger)


# -- the scripted double scripts the new signal by its key ---------------------------------------------
def test_the_scripted_double_scripts_a_new_signal_and_the_trigger_reads_it():
    script = [ScriptedStep(" Jaws", signals={"final-norm": 50.0}), ScriptedStep(" was", signals={"final-norm": 50.0}),
              ScriptedStep(" made", signals={"final-norm": 180.0}), ScriptedStep(".", signals={"final-norm": 50.0}),
              ScriptedStep(" So the answer is Jaws.")]
    loop = scripted_loop("sr-rag", script, choices={"trigger": {"name": "final-norm", "theta": 100.0}})
    assert loop.gcfg.signals == (FINAL_NORM,)
    answer = loop.run("Which film did Spielberg direct in 1975?")
    assert len(answer.trace.retrievals) == 1  # the regenerated sentence is accepted unchecked (the policy)
    first = answer.trace.retrievals[0]
    assert first.position == 0 and "180" in first.reason
    assert [t.score for t in first.discarded] == [50.0, 50.0, 180.0, 50.0]
    assert answer.text.endswith("So the answer is Jaws.")


# -- the real model computes it, at batch 1 and batch 2 ----------------------------------------------
QUESTIONS = ["Who directed the film Jaws?", "In which country is the city of Ulm?"]


@pytest.fixture(scope="module")
def pipe(lm):
    from dynaprag.pipeline import Pipeline, PipelineConfig

    return Pipeline.from_config(PipelineConfig(method="sr-rag", dtype="float32", max_new_tokens=32,
                                               trigger={"name": "final-norm", "theta": 1e9}), lm=lm)


@pytest.fixture(scope="module")
def alone(pipe):
    """Each question answered at batch 1 with θ = 1e9 (never fires): the calm answer the first test
    reads the signal from and the batch-1 side of the second, decoded once for both."""
    return [pipe.answer(q) for q in QUESTIONS]


def test_a_new_signal_reaches_its_trigger_through_the_real_loop(pipe, alone):
    calm = alone[0]
    norms = [t.score for t in calm.trace.tokens]
    judged = [v for v in norms if v is not None]  # every token of a finished sentence
    assert judged and all(isinstance(v, float) and v > 0 for v in judged)
    assert not calm.trace.retrievals
    theta = sorted(judged)[len(judged) // 2]  # fires on the first sentence holding a token above the median
    fired = pipe.answer(QUESTIONS[0], options={"theta": theta})
    assert fired.trace.retrievals and f"θ={theta:g}" in fired.trace.retrievals[0].reason
    kept = fired.trace.retrievals[0].position
    assert [t.score for t in fired.trace.tokens[:kept]] == norms[:kept]  # the same values before the cut


def test_a_new_signal_is_read_the_same_at_batch_1_and_batch_2(pipe, alone):
    together = dict(pipe.answer_many(QUESTIONS, batch_size=2))
    for i, a in enumerate(alone):
        b = together[i]
        assert [t.text for t in a.trace.tokens] == [t.text for t in b.trace.tokens]
        sa, sb = [t.score for t in a.trace.tokens], [t.score for t in b.trace.tokens]
        assert [v is None for v in sa] == [v is None for v in sb]
        assert [v for v in sb if v is not None] == pytest.approx([v for v in sa if v is not None], rel=1e-4)
