"""The one decoding loop every method runs: trigger × query formulator × selector × injector.

Generate token by token with the white-box :class:`~dynaprag.lm.Generator`; after each token
(and once before the first) ask the trigger whether to retrieve. On a retrieval, the
formulator builds the query from the draft, the retriever searches top-k (plus the injector's
``extra_candidates``), the selector keeps and orders the hits, the injector turns the first k
usable ones into context and/or weights, the draft is cut where the trigger says, and only the
part from the knowledge slot onward is re-prefilled (the few-shot prefix's KV cache is computed
once per pipeline and reused). An injection that
changes the weights invalidates every cache, so then the whole prompt is re-prefilled under
the new weights. Decoding stops at the answer ("So the answer is X."), at end of turn, at the
token budget or the retrieval budget (after which generation continues without retrieving).

Signals come from the forward pass that produced each token. The loop captures the union of
the signals the chosen components declare they read (``reads``, :mod:`dynaprag.lm.signals`):
attention rows only if one of them reads attention, hidden states only of the layers they
name; components that declare ``needs_probe`` get a :class:`~dynaprag.dynamic.probe.LoopProbe`,
the others none. Each question is a :class:`~dynaprag.dynamic.run.QuestionRun`, the state
machine shared by batch 1 (:meth:`DynamicLoop.run`) and batch B
(:class:`~dynaprag.dynamic.batch.BatchLoop`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from dynaprag.dynamic.method import Method
from dynaprag.dynamic.run import STOP_STRINGS, EventSink, QuestionRun, clean, finished
from dynaprag.lm import signals
from dynaprag.lm.generator import GenerationConfig, Generator, PrefixCache
from dynaprag.lm.prompts import PromptBuilder
from dynaprag.trace import Answer

__all__ = ["STOP_STRINGS", "DynamicLoop", "EventSink", "LoopConfig", "QuestionRun", "clean", "finished"]


@dataclass
class LoopConfig:
    """Budgets of one answer."""

    k: int = field(default=3, metadata={"help": "passages per retrieval", "min": 1})
    max_new_tokens: int = field(default=128, metadata={"help": "answer length budget in kept tokens", "min": 1})
    max_retrievals: int = field(default=5, metadata={"help": "retrieval budget per question", "min": 0})
    max_decoded_factor: float = field(default=4.0, metadata={
        "help": "stop after decoding this many times max_new_tokens (kept + discarded tokens)", "min": 1.0})
    seed: int = field(default=0, metadata={"help": "seed for components that sample"})


class DynamicLoop:
    """Runs one resolved :class:`~dynaprag.dynamic.method.Method` for a question; see module docstring.

    The per-question state machine is :class:`QuestionRun`; this class holds what questions
    share (generator, prompt builder, retriever, method, budgets, the prefix cache) and drives
    one run at batch 1. :class:`~dynaprag.dynamic.batch.BatchLoop` drives many runs of the same
    machine together, so a question is answered by the same code at any batch size.
    """

    def __init__(self, generator: Generator, builder: PromptBuilder, retriever, method: Method,
                 config: LoopConfig, prefix: Callable[[], PrefixCache]):
        self.gen, self.builder, self.retriever = generator, builder, retriever
        self.method, self.config, self.prefix = method, config, prefix
        parts = [c for _, c in method.components()]
        self.look_ahead = bool(getattr(method.trigger, "judges_look_ahead", False))
        self.reads = signals.union([getattr(c, "reads", ()) for c in parts])
        self.gcfg = GenerationConfig(max_new_tokens=1, signals=self.reads)

    def begin(self, question: str, on_event: EventSink | None = None) -> "QuestionRun":
        """A run of ``question`` that has not started yet (its :meth:`QuestionRun.decode` drives it)."""
        return QuestionRun(self, question, on_event)

    def run(self, question: str, on_event: EventSink | None = None) -> Answer:
        """Answer ``question`` alone: every step the run asks for is one :meth:`Generator.step`."""
        run = self.begin(question, on_event)
        machine = run.decode()
        try:
            state = next(machine)
            while True:
                state = machine.send(self.gen.step(state, self.gcfg))
        except StopIteration as done:
            return done.value
