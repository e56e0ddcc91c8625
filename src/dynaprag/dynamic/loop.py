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
what the chosen components declare (:mod:`dynaprag.dynamic.component`): attention rows only if
one of them reads attention, hidden states only of the layers they name; components that
declare ``needs_probe`` get a :class:`~dynaprag.dynamic.probe.LoopProbe`, the others none.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from dataclasses import dataclass, field
import typing
from typing import Callable, Sequence

from dynaprag.corpus import Passage
from dynaprag.dynamic.draft import Decision, Draft
from dynaprag.dynamic.methods import Method
from dynaprag.dynamic.probe import LoopProbe
from dynaprag.dynamic.text import is_sentence_end
from dynaprag.inject import Injection
from dynaprag.lm.generator import DecodeState, GenerationConfig, Generator, PrefixCache, StepOutput
from dynaprag.lm.prompts import ANSWER_MARKER, PromptBuilder, extract_answer
from dynaprag.trace import Answer, RetrievalEvent, TokenRecord, Trace

EventSink = Callable[[dict], None]
STOP_STRINGS = ("\nQuestion:", "\n\n", "Question:")


@dataclass
class LoopConfig:
    """Budgets of one answer."""

    k: int = field(default=3, metadata={"help": "passages per retrieval", "min": 1})
    max_new_tokens: int = field(default=128, metadata={"help": "answer length budget in kept tokens", "min": 1})
    max_retrievals: int = field(default=5, metadata={"help": "retrieval budget per question", "min": 0})
    max_decoded_factor: float = field(default=4.0, metadata={
        "help": "stop after decoding this many times max_new_tokens (kept + discarded tokens)", "min": 1.0})
    seed: int = field(default=0, metadata={"help": "seed for methods that sample (SeaKR)"})


def finished(text: str) -> bool:
    """The answer is complete: a sentence after "So the answer is" has ended, or a stop string appeared."""
    if any(s in text for s in STOP_STRINGS):
        return True
    m = list(re.finditer(re.escape(ANSWER_MARKER), text, flags=re.IGNORECASE))
    if not m:
        return False
    tail = text[m[-1].end():]
    return bool(tail.strip()) and is_sentence_end(tail)


def clean(text: str) -> str:
    """The answer text cut before any stop string."""
    cut = min((text.index(s) for s in STOP_STRINGS if s in text), default=len(text))
    return text[:cut].strip()


class DynamicLoop:
    """Runs one resolved :class:`~dynaprag.dynamic.methods.Method` for a question; see module docstring.

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
        self.gcfg = GenerationConfig(
            max_new_tokens=1, capture_attention=any(getattr(c, "needs_attention", False) for c in parts),
            hidden_layers=tuple(sorted({layer for c in parts for layer in getattr(c, "hidden_layers", ())})))

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


class QuestionRun:
    """One question's decoding state machine: draft, decode state, retrievals, knowledge slot.

    :meth:`decode` is a generator that yields the :class:`DecodeState` whenever it needs the
    next token and receives the :class:`StepOutput`; everything else (triggers, probes,
    retrieval, rollback, re-prefill) happens inside it, at batch 1. A driver chooses how the
    tokens are produced: one :meth:`Generator.step` (:meth:`DynamicLoop.run`) or a batched
    step shared with other questions (:class:`~dynaprag.dynamic.batch.BatchLoop`). The
    attributes the probe reads (``gen``, ``builder``, ``state``, ``draft``, ``answer``,
    ``states``, ``gcfg``, ``start``) are this question's.
    """

    def __init__(self, loop: DynamicLoop, question: str, on_event: EventSink | None = None):
        self.loop, self.question = loop, question
        self.gen, self.builder, self.retriever = loop.gen, loop.builder, loop.retriever
        self.method, self.config, self.prefix = loop.method, loop.config, loop.prefix
        self.look_ahead, self.gcfg = loop.look_ahead, loop.gcfg
        self.emit = on_event or (lambda _e: None)
        self.states: list[DecodeState] = []
        self.extra_passes = 0  # look-ahead attention passes asked for through the probe
        self.weighted = False
        self.answer: list[int] = []
        self.done = False

    # -- state the probe reads ---------------------------------------------------------------
    def start(self, ids: list[int]) -> DecodeState:
        """A new decode state for ``ids`` (reusing the prefix cache unless weights changed)."""
        state = self.gen.start(ids) if self.weighted else self.gen.start(ids, prefix=self.prefix())
        self.states.append(state)
        return state

    def _question_pieces(self, q_ids: list[int], question: str) -> list[str]:
        """Per-token text of the question slot, blanked outside the question itself (template words)."""
        pieces = [self.gen.decode([t]) for t in q_ids]
        text = "".join(pieces)
        lo = text.find(question.strip()[:20])
        hi = lo + len(question.strip()) if lo >= 0 else len(text)
        out, pos = [], 0
        for p in pieces:
            out.append(p if lo >= 0 and pos >= lo and pos + len(p) <= hi + 1 else "")
            pos += len(p)
        return out

    def _probe_for(self, component) -> LoopProbe | None:
        return self.probe if getattr(component, "needs_probe", False) else None

    def _judge(self, trace: Trace, scores: dict[int, float]) -> Decision | None:
        """Ask the trigger; record its token scores and notes; return a decision to retrieve, or None."""
        trigger, draft = self.method.trigger, self.draft
        decision = trigger(draft, self._probe_for(trigger))
        if decision is None:
            return None
        scores.update(decision.token_scores)
        trace.notes.extend(decision.notes)
        if not decision.retrieve and self.look_ahead:
            draft.checked = len(draft.steps)  # the whole continuation was judged and kept
        return decision if decision.retrieve else None

    def _end_of_draft(self, trace: Trace, scores: dict[int, float], end_step=None) -> Decision | None:
        """The draft cannot grow (end of sequence, budget): a look-ahead trigger judges what is pending."""
        draft = self.draft
        if not self.look_ahead or draft.checked >= len(draft.steps) or draft.retrievals >= self.config.max_retrievals:
            return None
        draft.ended, draft.end_step = True, end_step
        try:
            return self._judge(trace, scores)
        finally:
            draft.ended, draft.end_step = False, None

    def _stop_reason(self, decoded: int, budget: int) -> str | None:
        if decoded >= budget:
            return "stopped at the decoding budget (max_decoded_factor × max_new_tokens)"
        if len(self.answer) >= self.config.max_new_tokens:
            return "stopped at the token budget"
        room = self.gen.room(self.state)
        if room is not None and room <= 0:
            return "stopped at the model's context"
        return None

    def _finished(self) -> bool:
        """The method's stop rule once everything generated was judged, else the answer sentence."""
        draft = self.draft
        own = self.method.trigger.finished(draft)
        if own is None:
            return finished(draft.text)
        return draft.checked >= len(draft.steps) and own

    def _drop_context(self, question: str, weights: contextlib.ExitStack) -> None:
        """Take the passages out again (DRAGIN uses them for one sentence, TokenRAG for one look-ahead):
        re-prefill without them."""
        ids = self.builder.build(question, (), self.answer)
        self.draft.passages = []
        if self.weighted:
            weights.close()
            self.weighted = False
            self.state = self.start(ids)
        else:
            plen = len(self.builder.prefix_ids)
            self.gen.truncate(self.state, plen)
            self.gen.extend(self.state, ids[plen:])

    # -- the loop -------------------------------------------------------------------------
    def decode(self) -> typing.Generator[DecodeState, StepOutput, Answer]:
        """Answer the question; yields the decode state for each token, returns the :class:`Answer`."""
        t0 = time.perf_counter()
        question, emit = self.question, self.emit
        method, cfg = self.method, self.config
        method.reset()
        trace = Trace(method=method.name)
        scores: dict[int, float] = {}
        q_ids = self.builder.question_ids(question)
        self.draft = draft = Draft(question=question, question_pieces=self._question_pieces(q_ids, question))
        self.probe = LoopProbe(self, question, cfg.seed)
        weights = contextlib.ExitStack()
        self.state = self.start(self.builder.build(question, (), ()))
        layout = {"ans": len(self.state.ids), "q": len(self.state.ids) - len(q_ids)}
        decoded, accepting, transient = 0, False, False
        accept_until: int | None = None  # accept regenerated tokens up to this index (TokenRAG), else one sentence
        budget = int(cfg.max_new_tokens * cfg.max_decoded_factor)
        try:
            decision = self._judge(trace, scores)
            while True:
                if decision is not None and draft.retrievals >= cfg.max_retrievals:
                    decision = None
                formulator = method.formulator
                query = None if decision is None else formulator(draft, decision, self._probe_for(formulator))
                skip = None if decision is None else (
                    "its query came out empty (everything masked)"
                    if not (query or "").strip() and not getattr(formulator, "retrieves_empty_query", False) else
                    f"it would repeat the previous one (same query {query!r})" if self._repeats(decision, query, trace)
                    else None)
                if decision is not None and skip is None:
                    accepting = self._retrieve(decision, query, question, weights, trace, emit)
                    if accepting is None:
                        skip, accepting = "the selector kept none of the hits", False
                    else:
                        transient = decision.context_for_sentence
                        accept_until = decision.keep + decision.accept_tokens if decision.accept_tokens else None
                        for i in [i for i in scores if i >= decision.keep]:
                            del scores[i]
                        del self.answer[decision.keep:]
                        n = len(self.state.ids) - len(self.answer)
                        layout = {"ans": n, "q": n - len(q_ids)}
                if skip is not None:
                    if decision.end_if_skipped:  # SeaKR: the judged span goes, the answer ends before it
                        trace.notes.append(f"no retrieval at token {decision.keep}: {skip}; the answer ends there")
                        if decision.keep < len(draft.steps):
                            emit({"type": "rollback", "keep_tokens": decision.keep})
                        draft.truncate(decision.keep)
                        del self.answer[decision.keep:]
                        for i in [i for i in scores if i >= decision.keep]:
                            del scores[i]
                        break
                    trace.notes.append(f"no retrieval at token {decision.keep}: {skip}; the text is kept")
                    if self.look_ahead:
                        draft.checked = len(draft.steps)
                    else:
                        accepting = True
                decision = None
                stop = self._stop_reason(decoded, budget)
                if stop is not None:
                    if accepting:  # what was accepted unchecked stays unchecked
                        accepting, draft.checked = False, len(draft.steps)
                    decision = self._end_of_draft(trace, scores)
                    if decision is not None and not stop.startswith("stopped at the decoding budget"):
                        continue
                    trace.notes.append(stop)
                    break
                step = yield self.state
                decoded += 1
                if step.token_id in self.gen.eos_ids:
                    if accepting:  # accepted unchecked; the reference's text after its end of turn is cut off
                        accepting, draft.checked = False, len(draft.steps)
                        break
                    decision = self._end_of_draft(trace, scores, end_step=step)
                    if decision is not None:
                        continue
                    break
                self._record_attention(step, layout, len(self.answer))
                self.answer.append(step.token_id)
                text = self.gen.decode(self.answer)
                if not text.startswith(draft.text):  # detokenisation is not prefix-stable (e.g. split UTF-8)
                    draft.retext(len(os.path.commonprefix([text, draft.text])))
                piece = text[len(draft.text):]
                draft.append(step, piece)
                emit({"type": "token", "text": piece, "logprob": step.logprob, "entropy": step.entropy,
                      "score": None})
                if accepting:
                    if draft.sentence_end if accept_until is None else len(draft.steps) >= accept_until:
                        accepting = False
                        draft.checked = len(draft.steps)
                        if transient:
                            self._drop_context(question, weights)
                            transient = False
                            n = len(self.state.ids) - len(self.answer)
                            layout = {"ans": n, "q": n - len(q_ids)}
                elif draft.retrievals < cfg.max_retrievals:
                    decision = self._judge(trace, scores)
                elif self.look_ahead:
                    draft.checked = len(draft.steps)  # no retrieval budget left: nothing to judge
                if draft.sentence_end and decision is None and not self.look_ahead:
                    draft.checked = len(draft.steps)
                    draft.sentence_start = len(draft.steps)
                if decision is None and self._finished():
                    break
            final = method.trigger.integrate(draft, self._probe_for(method.trigger))
        finally:
            weights.close()
        text = clean(draft.text) if final is None else final.text
        trace.tokens = [TokenRecord(text=p, logprob=s.logprob, entropy=s.entropy, score=scores.get(i))
                        for i, (p, s) in enumerate(zip(draft.pieces, draft.steps))]
        for st in self.states:
            trace.forward_passes += st.counters.forward_passes
            trace.prompt_tokens += st.counters.prompt_tokens
            trace.generated_tokens += st.counters.generated_tokens
        trace.forward_passes += self.extra_passes
        trace.seconds = time.perf_counter() - t0
        if final is not None:
            trace.notes.extend(final.notes)
        self.done = True
        return Answer(text=text, short=extract_answer(text) if final is None else final.short, trace=trace)

    def _record_attention(self, step, layout: dict, i: int) -> None:
        """File the step's attention row (of the position before the new token ``i``) by answer index."""
        row = step.attention
        if row is None:
            return
        a, q = layout["ans"], layout["q"]
        draft = self.draft
        draft.prev_rows[i] = row[a: a + i].clone()
        draft.prev_question_rows[i] = row[q: a].clone()
        if i > 0:
            draft.rows[i - 1] = row[a: a + i].clone()
            draft.question_rows[i - 1] = row[q: a].clone()

    @staticmethod
    def _repeats(decision: Decision, query: str | None, trace: Trace) -> bool:
        """Would this retrieval exactly repeat the previous one (same cut, same query)?

        Then it brings back the same passages and the same draft, so the loop accepts the sentence
        instead of spending its retrieval budget re-running it (a deviation from the reference
        code, which loops until its budget is spent).
        """
        last = trace.retrievals[-1] if trace.retrievals else None
        return last is not None and last.position == decision.keep and last.query == query

    @staticmethod
    def _discarded(decision: Decision, draft: Draft) -> tuple[list[TokenRecord], list[int]]:
        """The draft tokens a retrieval cuts away, with the trigger's score of each, and ``[start,
        end)`` among them of the sentence that fired: the one the trigger names
        (``details["sentence"]``), else the text from the cut to its first sentence end."""
        keep = decision.keep
        pieces = draft.pieces[keep:]
        tokens = [TokenRecord(text=p, logprob=s.logprob, entropy=s.entropy, score=decision.token_scores.get(keep + i))
                  for i, (p, s) in enumerate(zip(pieces, draft.steps[keep:]))]
        if not tokens:
            return [], []
        sentence = " ".join(str(decision.details.get("sentence") or "").split())
        text, end = "", len(tokens)
        for i, piece in enumerate(pieces):
            text += piece
            if (len(" ".join(text.split())) >= len(sentence)) if sentence else is_sentence_end(text):
                end = i + 1
                break
        return tokens, [0, end]

    def _retrieve(self, decision: Decision, query: str, question: str, weights: contextlib.ExitStack,
                  trace: Trace, emit: EventSink) -> bool | None:
        """Search, select, inject, cut the draft and re-prefill; return whether to accept the next sentence
        (None: the selector kept none of the hits, nothing was done).

        The retriever returns top-k plus the injector's ``extra_candidates`` (PRAG: top-k + 10,
        so a passage it cannot use is replaced by the next retrieved one); the selector sees all
        of them, and the injector uses at most k, in order. The event's hits are the passages it
        used, its ``skipped_ids`` those it passed over. With no extra candidates this is top-k.
        A selector that ``accumulates`` (SeaKR) returns the whole knowledge slot, the documents
        chosen before plus the new one: all of them are used, k bounds only the search.
        """
        t0 = time.perf_counter()
        method, draft, k = self.method, self.draft, self.config.k
        # an empty query (a formulator that still retrieves with it) finds nothing, as the reference's BM25
        search = int(getattr(method.selector, "search_k", 0) or k)  # a selector may search its own K (IRCoT)
        hits = self.retriever.search_one(query, search + int(getattr(method.injector, "extra_candidates", 0))) \
            if query.strip() else []
        draft.retrieving_at = decision.keep
        try:
            selected = method.selector(hits, draft, self._probe_for(method.selector))
        finally:
            draft.retrieving_at = None
        accumulates = bool(getattr(method.selector, "accumulates", False))
        if not selected and (hits or accumulates):  # an empty slot from an accumulating selector: nothing new
            return None
        offered = [h.passage for h in selected]
        use = None if accumulates else k
        injection: Injection = method.injector.inject(offered, question, use=use)
        used = injection.used_of(offered, use)
        keep = decision.keep
        if keep < len(draft.steps):
            emit({"type": "rollback", "keep_tokens": keep})
        discarded, fired = self._discarded(decision, draft)
        draft.truncate(keep)
        kept = self.answer[:keep]
        event = RetrievalEvent(position=keep, reason=decision.reason, query=query,
                               hit_ids=[p.id for p in used], hit_titles=[p.title for p in used],
                               hit_texts=[p.text for p in used], scores=dict(decision.scores),
                               injection=injection.kind, skipped_ids=[p.id for p in injection.skipped],
                               discarded=discarded, fired=fired)
        passages: Sequence[Passage] = list(injection.context)
        draft.passages = list(passages)
        draft.queries.append(query)
        ids = self.builder.build(question, passages, kept)
        if injection.changes_weights or self.weighted:
            weights.close()
            if injection.changes_weights:
                weights.enter_context(injection.apply())
            self.weighted = injection.changes_weights
            self.state = self.start(ids)
        else:
            plen = len(self.builder.prefix_ids)
            self.gen.truncate(self.state, plen)
            self.gen.extend(self.state, ids[plen:])
        trace.notes.extend(injection.notes)
        draft.retrievals += 1
        draft.last_retrieval_at = keep
        draft.checked = keep
        event.seconds = time.perf_counter() - t0
        trace.retrievals.append(event)
        emit({"type": "retrieval", **dataclasses.asdict(event)})
        return decision.accept_next_sentence
