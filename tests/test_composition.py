"""Every trigger × every formulator × {in-context, a weight-changing injector} runs through the real
loop, and every component receives exactly the signals it declared.

Runs on the scripted generator of :mod:`dynaprag.testing` (a unit test of the loop's
composition, not of the model): a component that declares it ``reads`` attention must find
attention rows in the draft, one that declares ``needs_probe`` must get a probe, the others
none. Before the axes declared their needs, ``trigger=token-prob formulator=qfs`` got no
attention rows and silently built its query from the first words.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import pytest

from dynaprag.dynamic.queries import FORMULATORS
from dynaprag.dynamic.selectors import SELECTORS
from dynaprag.dynamic.methods.selfrag.components import NO_RETRIEVE, RELEVANCE, RETRIEVE, SUPPORT, UTILITY
from dynaprag.dynamic.triggers import TRIGGERS
from dynaprag.inject import Injection, Injector
from dynaprag.lm.signals import ATTENTION
from dynaprag.testing import ScriptedStep, scripted_loop

QUESTION = "In what year was the director of Jaws born?"
SCRIPT = [ScriptedStep(piece, logprob=math.log(p), entropy=2.0, attend={0: 0.6, 4: 0.5})
          for piece, p in [(" Jaws", 0.9), (" was", 0.95), (" directed", 0.6), (" by", 0.97), (" Steven", 0.05),
                           (" Spielberg", 0.3), (".", 0.99), (" So", 0.9), (" the", 0.9), (" answer", 0.9),
                           (" is", 0.9), (" 1946", 0.5), (".", 0.9)]]
#: Knobs that make each trigger fire on SCRIPT.
FIRING = {"token-prob": {"theta": 0.1}, "rind-inline": {"theta": 0.1}, "rind": {"theta": 0.1, "look_ahead": 5},
          "token-confidence": {"theta": 0.05, "look_ahead": 7}, "entity": {"theta": 0.3, "look_ahead": 7},
          "seakr": {"theta": -1e9, "samples": 3},
          "every-n-tokens": {"n": 4}, "self-rag": {"theta": 0.1}, "self-rag-prompted": {"theta": 0.1},
          "adaptive-rag": {"route": "C"}}
#: dynaprag's own triggers (a test may register its own, e.g. tests/test_extending.py; FIRING does not script them)
OWN_TRIGGERS = [name for name in TRIGGERS.names() if TRIGGERS.get(name).__module__.startswith("dynaprag.")]
SPECIAL = (RETRIEVE, NO_RETRIEVE) + RELEVANCE + SUPPORT + UTILITY
LOGPROBS = {RETRIEVE: 0.0, NO_RETRIEVE: -3.0, "Yes": 0.0, "No": -3.0}


class WeightsDouble(Injector):
    """A weight-changing injection that records when its weights are applied and removed."""

    name = "weights-double"

    def __init__(self):
        self.entered = self.exited = 0

    def inject(self, passages, question, *, use=None) -> Injection:
        @contextmanager
        def applied():
            self.entered += 1
            try:
                yield
            finally:
                self.exited += 1
        return Injection(context=list(passages)[:1], weights=applied(), kind="combined")


def record_calls(axis: str, component, log: list) -> None:
    """Make ``component`` log, per call, whether it got a probe and whether the draft had attention rows.

    Triggers are called ``(draft, probe)``, formulators ``(draft, decision, probe)``.
    """
    original = type(component)

    def call(self, draft, *rest):
        log.append({"rows": bool(draft.filed(ATTENTION)), "steps": len(draft.steps), "probe": rest[-1]})
        return original.__call__(self, draft, *rest)

    component.__class__ = type(f"Recording{original.__name__}", (original,), {"__call__": call})


@pytest.mark.parametrize("injector", ["in-context", "weights"])
@pytest.mark.parametrize("formulator", FORMULATORS.names())
@pytest.mark.parametrize("trigger", OWN_TRIGGERS)
def test_every_composition_gets_the_signals_it_declared(trigger, formulator, injector):
    double = WeightsDouble() if injector == "weights" else None
    choices = {"trigger": {"name": trigger, **FIRING.get(trigger, {})}, "formulator": {"name": formulator},
               "selector": {"name": "top-k"}}
    loop = scripted_loop("sr-rag", SCRIPT, choices=choices, injector=double, special_tokens=SPECIAL,
                         next_token_logprobs=LOGPROBS)
    logs: dict[str, list] = {"trigger": [], "formulator": []}
    for axis in logs:
        record_calls(axis, getattr(loop.method, axis), logs[axis])
    answer = loop.run(QUESTION)
    if trigger != "never":
        assert answer.trace.retrievals, f"{trigger} should fire on the script"
    assert logs["formulator"] or trigger == "never"
    for axis, calls in logs.items():
        comp = getattr(loop.method, axis)
        for call in calls:
            assert (call["probe"] is not None) == comp.needs_probe, (axis, call)
            if ATTENTION in comp.reads and call["steps"]:
                assert call["rows"], f"{axis} {type(comp).__name__} declared attention but got no rows"
    if double is not None and answer.trace.retrievals:
        assert double.entered == double.exited >= 1


@pytest.mark.parametrize("selector", SELECTORS.names())
def test_every_selector_gets_a_probe_only_if_it_declares_one(selector):
    loop = scripted_loop("sr-rag", SCRIPT, choices={"selector": {"name": selector}}, special_tokens=SPECIAL,
                         next_token_logprobs=LOGPROBS, options={"selector.samples": 3} if "seakr" in selector else {})
    seen = []
    sel = loop.method.selector
    original = type(sel)

    def call(self, hits, draft, probe=None):
        seen.append(probe)
        return original.__call__(self, hits, draft, probe)

    sel.__class__ = type("Recording", (original,), {"__call__": call})
    answer = loop.run(QUESTION)
    assert answer.trace.retrievals and len(seen) == len(answer.trace.retrievals)
    assert all((p is not None) == sel.needs_probe for p in seen)
    retrieved = sorted(h.id for h in loop.retriever.search_one(QUESTION, getattr(sel, "search_k", 0) or 3))
    kept = answer.trace.retrievals[0].hit_ids
    if selector in ("seakr-uncertainty", "selfrag-critique"):  # each keeps its one best hit per retrieval
        assert len(kept) == 1 and kept[0] in retrieved
    else:
        assert sorted(kept) == retrieved
