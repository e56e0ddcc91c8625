"""One question's decoding state machine: the draft, the decode state, retrievals and the knowledge slot.

:meth:`QuestionRun.decode` reads top to bottom in the phases of every answer: **act** on the
trigger's last decision (formulate, search, select, inject, cut, re-prefill, or note why not),
**stop** at a budget, **step** (yield the decode state, receive the next token), **take** the
token into the answer and the draft, **judge** it. What happens after a retrieval is the
trigger's declared :class:`~dynaprag.dynamic.draft.AfterRetrieval` policy (accept the
regenerated text unchecked or judge it again, how long the passages stay, what a retrieval
that does not happen means); the passages and applied weights are the
:class:`~dynaprag.dynamic.slot.KnowledgeSlot`'s; a cut of the draft is one routine. So no
method's name appears here, and a new method adds a policy, not a branch.
"""
from __future__ import annotations

import dataclasses
import os
import re
import time
import typing
from dataclasses import dataclass
from typing import Callable

from dynaprag.dynamic.draft import Decision, Draft
from dynaprag.dynamic.probe import LoopProbe
from dynaprag.dynamic.slot import KnowledgeSlot
from dynaprag.dynamic.text import is_sentence_end
from dynaprag.lm.decoding import DecodeState, StepOutput
from dynaprag.lm.prompts import ANSWER_MARKER, extract_answer
from dynaprag.lm.signals import Layout
from dynaprag.trace import Answer, RetrievalEvent, TokenRecord, Trace

EventSink = Callable[[dict], None]
STOP_STRINGS = ("\nQuestion:", "\n\n", "Question:")


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


@dataclass(frozen=True)
class Stop:
    """Why decoding cannot go on; ``resumable``: a retrieval that cuts the draft makes room again."""

    note: str
    resumable: bool = True


@dataclass
class Accepting:
    """Regenerated text accepted unchecked: up to answer index ``until`` (``None``: to the sentence's
    end); ``empty_slot``: the passages leave once it is accepted."""

    until: int | None = None
    empty_slot: bool = False


class QuestionRun:
    """One question through the loop; see the module docstring.

    :meth:`decode` is a generator that yields the :class:`DecodeState` whenever it needs the
    next token and receives the :class:`StepOutput`; everything else (triggers, probes,
    retrieval, rollback, re-prefill) happens inside it, at batch 1. A driver chooses how the
    tokens are produced: one :meth:`Generator.step` (:meth:`DynamicLoop.run`) or a batched
    step shared with other questions (:class:`~dynaprag.dynamic.batch.BatchLoop`). The
    attributes the probe reads (``gen``, ``builder``, ``state``, ``draft``, ``answer``,
    ``states``, ``gcfg``, ``start``) are this question's.
    """

    def __init__(self, loop, question: str, on_event: EventSink | None = None):
        self.loop, self.question = loop, question
        self.gen, self.builder, self.retriever = loop.gen, loop.builder, loop.retriever
        self.method, self.config, self.prefix = loop.method, loop.config, loop.prefix
        self.look_ahead, self.gcfg = loop.look_ahead, loop.gcfg
        self.policy = self.method.trigger.after_retrieval
        self.emit = on_event or (lambda _e: None)
        self.states: list[DecodeState] = []
        self.extra_passes = 0  # look-ahead attention passes asked for through the probe
        self.slot = KnowledgeSlot(self.gen, self.builder, question, self.start)
        self.answer: list[int] = []
        self.accepting: Accepting | None = None
        self.scores: dict[int, float] = {}
        self.trace = Trace(method=self.method.name)
        self.done = False

    @property
    def weighted(self) -> bool:
        """Whether an injection's weights are applied for this question now."""
        return self.slot.weighted

    def start(self, ids: list[int]) -> DecodeState:
        """A new decode state for ``ids`` (reusing the prefix cache unless weights changed)."""
        state = self.gen.start(ids) if self.weighted else self.gen.start(ids, prefix=self.prefix())
        self.states.append(state)
        return state

    # -- the loop -------------------------------------------------------------------------
    def decode(self) -> typing.Generator[DecodeState, StepOutput, Answer]:
        """Answer the question; yields the decode state for each token, returns the :class:`Answer`."""
        t0 = time.perf_counter()
        self.method.reset()
        q_ids = self.builder.question_ids(self.question)
        self.q_len = len(q_ids)
        self.draft = draft = Draft(question=self.question, question_pieces=self._question_pieces(q_ids))
        self.probe = LoopProbe(self, self.question, self.config.seed)
        self.state = self.start(self.builder.build(self.question, (), ()))
        decoded, budget = 0, int(self.config.max_new_tokens * self.config.max_decoded_factor)
        try:
            decision = self._judge()
            while True:
                if decision is not None and self._act(decision) == "end":
                    break
                stop = self._stop(decoded, budget)
                if stop is not None:
                    self._accepted()  # what was accepted unchecked stays unchecked
                    decision = self._end_of_draft()
                    if decision is not None and stop.resumable:
                        continue
                    self.trace.notes.append(stop.note)
                    break
                step = yield self.state
                decoded += 1
                if step.token_id in self.gen.eos_ids:
                    if self.accepting is not None:  # the text after an end of turn is not the answer's
                        self._accepted()
                        break
                    decision = self._end_of_draft(end_step=step)
                    if decision is not None:
                        continue
                    break
                self._take(step)
                decision = self._judge_step()
                if decision is None and self._finished():
                    break
            final = self.method.trigger.integrate(draft, self._probe_for(self.method.trigger))
        finally:
            self.slot.close()
        return self._answer(final, t0)

    # -- act: a decision to retrieve ----------------------------------------------------------
    def _act(self, decision: Decision) -> str | None:
        """Retrieve for ``decision`` if the budget allows; "end" when the answer ends here."""
        draft = self.draft
        if draft.retrievals >= self.config.max_retrievals:
            return None
        formulator = self.method.formulator
        query = formulator(draft, decision, self._probe_for(formulator))
        skip = self._skip_reason(decision, query)
        regenerates = decision.keep < len(draft.steps)  # text is discarded and written again
        if skip is None:
            skip = self._retrieve(decision, query)
        if skip is None:
            if regenerates and not self.policy.recheck:
                until = decision.keep + self.policy.accept_tokens if self.policy.accept_tokens else None
                self.accepting = Accepting(until, empty_slot=self.policy.passages == "accepted")
            return None
        if self.policy.on_skip == "end":
            self.trace.notes.append(f"no retrieval at token {decision.keep}: {skip}; the answer ends there")
            self._cut(decision.keep)
            return "end"
        self.trace.notes.append(f"no retrieval at token {decision.keep}: {skip}; the text is kept")
        if self.look_ahead:
            draft.checked = len(draft.steps)
        else:  # the judged sentence stays: accept it rather than judge it again
            self.accepting = Accepting()
        return None

    def _skip_reason(self, decision: Decision, query: str | None) -> str | None:
        """Why this retrieval would be pointless, or ``None``.

        A repeat of the previous retrieval (same cut, same query) brings back the same passages
        and the same draft, so the loop keeps the text instead of spending its retrieval budget
        re-running it (a deviation from reference code that loops until its budget is spent).
        """
        if not (query or "").strip() and not getattr(self.method.formulator, "retrieves_empty_query", False):
            return "its query came out empty (everything masked)"
        last = self.trace.retrievals[-1] if self.trace.retrievals else None
        if last is not None and last.position == decision.keep and last.query == query:
            return f"it would repeat the previous one (same query {query!r})"
        return None

    def _retrieve(self, decision: Decision, query: str) -> str | None:
        """Search, select, inject, cut the draft and refill the slot; ``None``, or why nothing was done.

        The retriever returns top-k (k: the selector's ``search_k`` when it declares one, else the
        run's) plus the injector's ``extra_candidates`` (a parametric injector replaces a passage
        it cannot use by the next retrieved one); the selector sees all of them, and the injector
        uses at most k, in order. The event's hits are the
        passages it used, its ``skipped_ids`` those it passed over. A selector that
        ``accumulates`` returns the whole knowledge slot, the documents chosen before plus the
        new one: all of them are used, k bounds only the search.
        """
        t0 = time.perf_counter()
        method, draft, k, keep = self.method, self.draft, self.config.k, decision.keep
        search = int(getattr(method.selector, "search_k", 0) or k)  # a selector may search its own number of hits
        # an empty query (a formulator that still retrieves with it) finds nothing, as a BM25 index would
        hits = self.retriever.search_one(query, search + int(getattr(method.injector, "extra_candidates", 0))) \
            if query.strip() else []
        draft.retrieving_at = keep
        try:
            selected = method.selector(hits, draft, self._probe_for(method.selector))
        finally:
            draft.retrieving_at = None
        accumulates = bool(getattr(method.selector, "accumulates", False))
        if not selected and (hits or accumulates):  # an empty slot from an accumulating selector: nothing new
            return "the selector kept none of the hits"
        offered = [h.passage for h in selected]
        use = None if accumulates else k
        injection = method.injector.inject(offered, self.question, use=use)
        used = injection.used_of(offered, use)
        discarded, fired = self._discarded(decision)
        self._cut(keep)
        event = RetrievalEvent(position=keep, reason=decision.reason, query=query,
                               hit_ids=[p.id for p in used], hit_titles=[p.title for p in used],
                               hit_texts=[p.text for p in used], scores=dict(decision.scores),
                               injection=injection.kind, skipped_ids=[p.id for p in injection.skipped],
                               discarded=discarded, fired=fired)
        draft.passages = list(injection.context)
        draft.queries.append(query)
        self.state = self.slot.fill(self.state, injection, self.answer)
        self.trace.notes.extend(injection.notes)
        draft.retrievals += 1
        draft.last_retrieval_at = keep
        draft.checked = keep
        event.seconds = time.perf_counter() - t0
        self.trace.retrievals.append(event)
        self.emit({"type": "retrieval", **dataclasses.asdict(event)})
        return None

    def _cut(self, keep: int) -> None:
        """Discard the answer from token ``keep`` on: draft, answer ids and recorded scores."""
        if keep < len(self.draft.steps):
            self.emit({"type": "rollback", "keep_tokens": keep})
        self.draft.truncate(keep)
        del self.answer[keep:]
        for i in [i for i in self.scores if i >= keep]:
            del self.scores[i]

    def _discarded(self, decision: Decision) -> tuple[list[TokenRecord], list[int]]:
        """The draft tokens a retrieval cuts away, with the trigger's score of each, and ``[start,
        end)`` among them of the sentence that fired: the one the trigger names
        (``decision.sentence``), else the text from the cut to its first sentence end."""
        keep, draft = decision.keep, self.draft
        pieces = draft.pieces[keep:]
        tokens = [TokenRecord(text=p, logprob=s.logprob, entropy=s.entropy, score=decision.token_scores.get(keep + i))
                  for i, (p, s) in enumerate(zip(pieces, draft.steps[keep:]))]
        if not tokens:
            return [], []
        sentence = " ".join(decision.sentence.split())
        text, end = "", len(tokens)
        for i, piece in enumerate(pieces):
            text += piece
            if (len(" ".join(text.split())) >= len(sentence)) if sentence else is_sentence_end(text):
                end = i + 1
                break
        return tokens, [0, end]

    # -- stop ---------------------------------------------------------------------------------
    def _stop(self, decoded: int, budget: int) -> Stop | None:
        if decoded >= budget:
            return Stop("stopped at the decoding budget (max_decoded_factor × max_new_tokens)", resumable=False)
        if len(self.answer) >= self.config.max_new_tokens:
            return Stop("stopped at the token budget")
        room = self.gen.room(self.state)
        if room is not None and room <= 0:
            return Stop("stopped at the model's context")
        return None

    def _finished(self) -> bool:
        """The method's stop rule once everything generated was judged, else the answer sentence."""
        draft = self.draft
        own = self.method.trigger.finished(draft)
        if own is None:
            return finished(draft.text)
        return draft.checked >= len(draft.steps) and own

    # -- take: the new token into the answer and the draft ------------------------------------
    def _take(self, step: StepOutput) -> None:
        """Append ``step`` to the answer and the draft, filing its signals against the answer."""
        draft, i = self.draft, len(self.answer)
        answer_start = len(self.state.ids) - 1 - i  # the answer is the prompt's tail
        layout = Layout(question=answer_start - self.q_len, answer=answer_start)
        filed = {s.key: s.file(step.signals[s.key], layout, i)
                 for s in self.loop.reads if step.signals.get(s.key) is not None}
        self.answer.append(step.token_id)
        text = self.gen.decode(self.answer)
        if not text.startswith(draft.text):  # detokenisation is not prefix-stable (e.g. split UTF-8)
            draft.retext(len(os.path.commonprefix([text, draft.text])))
        piece = text[len(draft.text):]
        draft.append(step, piece, filed)
        self.emit({"type": "token", "text": piece, "logprob": step.logprob, "entropy": step.entropy, "score": None})

    # -- judge ----------------------------------------------------------------------------------
    def _judge_step(self) -> Decision | None:
        """After a new token: close an accepted stretch that is complete, else ask the trigger."""
        draft, decision = self.draft, None
        if self.accepting is not None:
            until = self.accepting.until
            if draft.sentence_end if until is None else len(draft.steps) >= until:
                empty = self.accepting.empty_slot
                self._accepted()
                if empty:
                    self.draft.passages = []
                    self.state = self.slot.empty(self.state, self.answer)
        elif draft.retrievals < self.config.max_retrievals:
            decision = self._judge()
        elif self.look_ahead:
            draft.checked = len(draft.steps)  # no retrieval budget left: nothing to judge
        if draft.sentence_end and decision is None and not self.look_ahead:
            draft.checked = len(draft.steps)
            draft.sentence_start = len(draft.steps)
        return decision

    def _accepted(self) -> None:
        """End an accepted stretch: what it generated counts as judged."""
        if self.accepting is not None:
            self.accepting = None
            self.draft.checked = len(self.draft.steps)

    def _judge(self) -> Decision | None:
        """Ask the trigger; record its token scores and notes; return a decision to retrieve, or None."""
        trigger, draft = self.method.trigger, self.draft
        decision = trigger(draft, self._probe_for(trigger))
        if decision is None:
            return None
        self.scores.update(decision.token_scores)
        self.trace.notes.extend(decision.notes)
        if not decision.retrieve and self.look_ahead:
            draft.checked = len(draft.steps)  # the whole continuation was judged and kept
        return decision if decision.retrieve else None

    def _end_of_draft(self, end_step=None) -> Decision | None:
        """The draft cannot grow (end of sequence, budget): a look-ahead trigger judges what is pending."""
        draft = self.draft
        if not self.look_ahead or draft.checked >= len(draft.steps) or draft.retrievals >= self.config.max_retrievals:
            return None
        draft.ended, draft.end_step = True, end_step
        try:
            return self._judge()
        finally:
            draft.ended, draft.end_step = False, None

    def _probe_for(self, component) -> LoopProbe | None:
        return self.probe if getattr(component, "needs_probe", False) else None

    # -- the answer ---------------------------------------------------------------------------
    def _question_pieces(self, q_ids: list[int]) -> list[str]:
        """Per-token text of the question slot, blanked outside the question itself (template words)."""
        pieces = [self.gen.decode([t]) for t in q_ids]
        text, question = "".join(pieces), self.question.strip()
        lo = text.find(question[:20])
        hi = lo + len(question) if lo >= 0 else len(text)
        out, pos = [], 0
        for p in pieces:
            out.append(p if lo >= 0 and pos >= lo and pos + len(p) <= hi + 1 else "")
            pos += len(p)
        return out

    def _answer(self, final, t0: float) -> Answer:
        draft, trace = self.draft, self.trace
        text = clean(draft.text) if final is None else final.text
        trace.tokens = [TokenRecord(text=p, logprob=s.logprob, entropy=s.entropy, score=self.scores.get(i))
                        for i, (p, s) in enumerate(zip(draft.pieces, draft.steps))]
        for st in self.states:
            trace.forward_passes += st.counters.forward_passes
            trace.prompt_tokens += st.counters.prompt_tokens
            trace.generated_tokens += st.counters.generated_tokens
        trace.forward_passes += self.extra_passes
        trace.seconds = time.perf_counter() - t0
        if final is not None:
            trace.notes.extend(final.notes)
            if final.by_protocol:  # scored as given (FinalAnswer.by_protocol)
                trace.extraction = {"short": final.short, "raw_short": final.short, "text": text,
                                    "forced": False, "by_protocol": True}
        self.done = True
        return Answer(text=text, short=extract_answer(text) if final is None else final.short, trace=trace)
