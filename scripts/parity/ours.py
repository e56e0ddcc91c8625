"""Run dynaprag's presets through dynaprag's loop and record the same steps the reference fixtures hold.

A step is one judgement of a look-ahead continuation: the answer before it, the look-ahead's
token ids, the trigger's per-token scores, the decision and where it cuts, the query and the
hit ids of the retrieval it caused, and the text regenerated with the passages. The trigger is
wrapped by :class:`RecordingTrigger` (it records, it changes nothing); queries and hits come
from the loop's own retrieval events; the answer text from :class:`~dynaprag.trace.Answer`.

The same recorder serves the parity tests (``tests/comparison/test_preset_loops.py``) and the
timing in ``scripts/parity/run_loops.py``, so both run exactly what a user runs:
``Pipeline.loop`` (batch 1) or ``BatchLoop`` (batch 8) on the preset.
"""
from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

PARITY_LOOP = {"max_new_tokens": 2000, "max_retrievals": 1000}
"""Our loop's budgets lifted so that only the reference's own stop rules end an answer
(the retrieval cap and the answer budget have no counterpart in the reference loops)."""


@dataclass
class OurStep:
    start: int
    text_before: str
    look_ahead_ids: list[int]
    look_ahead: str
    fired: bool
    keep: int | None = None
    kept_text: str | None = None
    token_scores: dict[int, float] = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    query: str | None = None
    hit_ids: list[str] | None = None
    regenerated: str | None = None
    prefix_ids: list[int] = field(default_factory=list)  # the answer's token ids before the look-ahead


def _observed(decision) -> dict:
    """What the trigger saw, as plain data: the sentence that fired and its typed observation's fields."""
    seen = {"sentence": decision.sentence} if decision.sentence else {}
    if dataclasses.is_dataclass(decision.observation):
        seen.update(dataclasses.asdict(decision.observation))
    return {k: v for k, v in seen.items() if isinstance(v, (str, list, int, float))}


Until = Callable[[Any, list[OurStep]], bool]
"""``until(draft, steps)``: whether a question's answer may end here (``steps``: its steps recorded so far)."""


class RecordingTrigger:
    """A trigger that records each decision it returns (per question) and delegates the rest.

    With ``until``, the answer ends at the first point the method lets the loop stop (a sentence
    end, everything judged) where ``until`` holds, and the method's final integration is skipped:
    a test that compares only an answer's first steps decodes no more than those steps.
    """

    def __init__(self, inner, log: dict[str, list[OurStep]], until: Until | None = None):
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_log", log)
        object.__setattr__(self, "_until", until)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def finished(self, draft) -> bool | None:
        own = self._inner.finished(draft)
        if self._until is not None and not own and self._until(draft, self._log.get(draft.question, [])):
            return True
        return own

    def integrate(self, draft, probe=None):
        return None if self._until is not None else self._inner.integrate(draft, probe)

    def __call__(self, draft, probe=None):
        decision = self._inner(draft, probe)
        if decision is None:
            return None
        start = draft.checked
        ids = [s.token_id for s in draft.steps[start:]]
        if draft.ended and draft.end_step is not None:
            ids.append(draft.end_step.token_id)
        step = OurStep(start=start, text_before="".join(draft.pieces[:start]), look_ahead_ids=ids,
                       look_ahead="".join(draft.pieces[start:]), fired=bool(decision.retrieve),
                       token_scores={i - start: float(v) for i, v in decision.token_scores.items()},
                       details=_observed(decision), prefix_ids=[s.token_id for s in draft.steps[:start]])
        if decision.retrieve:
            step.keep = decision.keep - start
            step.kept_text = "".join(draft.pieces[start:decision.keep])
        self._log.setdefault(draft.question, []).append(step)
        return decision


@contextmanager
def eager(model):
    """The whole model on eager attention (as the reference fixtures ran) for the block."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def pipeline(lm, retriever, method: str, dataset: str | None = None):
    from dynaprag.pipeline import Pipeline, PipelineConfig

    cfg = PipelineConfig(method=method, dtype="float32", dataset=dataset, **PARITY_LOOP)
    return Pipeline.from_config(cfg, lm=lm, retriever=retriever)


def run(pipe, questions: Sequence[str], batch_size: int = 1, until: Until | None = None) -> dict[str, dict[str, Any]]:
    """Answer ``questions`` with the pipeline's preset; per question its steps, answer and seconds.

    ``batch_size`` 1 runs :meth:`DynamicLoop.run` per question; more runs them through
    :class:`~dynaprag.dynamic.batch.BatchLoop` together (seconds are then the batch's wall time
    divided by the number of questions). ``until``: end each answer early (:class:`RecordingTrigger`).
    """
    from dynaprag.dynamic.batch import BatchLoop

    loop = pipe.loop()
    log: dict[str, list[OurStep]] = {}
    object.__setattr__(loop.method, "trigger", RecordingTrigger(loop.method.trigger, log, until))
    events: dict[str, list[dict]] = {q: [] for q in questions}
    out: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        if batch_size == 1:
            for q in questions:
                t0 = time.perf_counter()
                answer = loop.run(q, on_event=events[q].append)
                out[q] = {"answer": answer, "seconds": time.perf_counter() - t0}
        else:
            t0 = time.perf_counter()
            results = BatchLoop(loop, batch_size=batch_size).answers(
                questions, on_event=lambda i, e: events[questions[i]].append(e))
            for i, answer in results:
                if isinstance(answer, BaseException):
                    raise answer
                out[questions[i]] = {"answer": answer}
            per = (time.perf_counter() - t0) / max(len(questions), 1)
            for q in questions:
                out[q]["seconds"] = per
    for q in questions:
        out[q]["steps"] = _attach(log.get(q, []), out[q]["answer"])
    return out


def _attach(steps: list[OurStep], answer) -> list[OurStep]:
    """Queries, hits and regenerated text per fired step, from the trace (retrievals in order)."""
    retrievals = list(answer.trace.retrievals)
    final = "".join(t.text for t in answer.trace.tokens)
    pointer = 0
    for step in steps:  # a fired step whose query was skipped (empty, repeated) has no retrieval event
        if step.fired and pointer < len(retrievals) and retrievals[pointer].position == step.start + step.keep:
            step.query, step.hit_ids = retrievals[pointer].query, list(retrievals[pointer].hit_ids)
            pointer += 1
    for i, step in enumerate(steps):
        if not step.fired:
            continue
        kept = step.text_before + step.kept_text
        nxt = steps[i + 1].text_before if i + 1 < len(steps) else final
        step.regenerated = nxt[len(kept):] if nxt.startswith(kept) else None
    return steps
