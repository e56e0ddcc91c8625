"""The one decoding loop every dynamic RAG method runs: trigger × query formulator × injector.

Generate token by token with the white-box :class:`~dynaprag.lm.Generator`; after each token
(and once before the first) ask the trigger whether to retrieve. On a retrieval, build the
query from the draft, search top-k, hand the passages to the injector, cut the draft where the
trigger says, and re-prefill only from the knowledge slot onward (the few-shot prefix's KV cache
is computed once per pipeline and reused). An injection that changes the weights invalidates
every cache, so then the whole prompt is re-prefilled under the new weights. Decoding stops at
the answer ("So the answer is X."), at end of turn, at the token budget or the retrieval budget
(after which generation continues without retrieving).

Signals come from the forward pass that produced each token; the last layer's attention is
captured only for triggers that read it (DRAGIN), hidden states only for SeaKR's samples.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from dynaprag.corpus import Passage
from dynaprag.dynamic.draft import Decision, Draft, is_sentence_end
from dynaprag.dynamic.queries import QueryFormulator
from dynaprag.dynamic.triggers import Trigger
from dynaprag.inject import Injection, Injector
from dynaprag.lm.generator import DecodeState, Generation, GenerationConfig, Generator, PrefixCache
from dynaprag.lm.prompts import ANSWER_MARKER, PromptBuilder, extract_answer
from dynaprag.trace import Answer, RetrievalEvent, TokenRecord, Trace

EventSink = Callable[[dict], None]
_STOPS = ("\nQuestion:", "\n\n", "Question:")


@dataclass
class LoopConfig:
    """Budgets of one answer."""

    k: int = field(default=3, metadata={"help": "passages per retrieval"})
    max_new_tokens: int = field(default=128, metadata={"help": "answer length budget in kept tokens"})
    max_retrievals: int = field(default=5, metadata={"help": "retrieval budget per question"})
    max_decoded_factor: float = field(default=4.0, metadata={
        "help": "stop after decoding this many times max_new_tokens (kept + discarded tokens)"})
    seed: int = field(default=0, metadata={"help": "seed for methods that sample (SeaKR)"})


def finished(text: str) -> bool:
    """The answer is complete: a sentence after "So the answer is" has ended, or a stop string appeared."""
    if any(s in text for s in _STOPS):
        return True
    m = list(re.finditer(re.escape(ANSWER_MARKER), text, flags=re.IGNORECASE))
    if not m:
        return False
    tail = text[m[-1].end():]
    return bool(tail.strip()) and is_sentence_end(tail)


def clean(text: str) -> str:
    """The answer text cut before any stop string."""
    cut = min((text.index(s) for s in _STOPS if s in text), default=len(text))
    return text[:cut].strip()


class DynamicLoop:
    """Runs one method (a trigger, a formulator, an injector) for a question; see module docstring."""

    def __init__(self, generator: Generator, builder: PromptBuilder, retriever, trigger: Trigger,
                 formulator: QueryFormulator, injector: Injector, config: LoopConfig,
                 prefix: Callable[[], PrefixCache], method: str = ""):
        self.gen, self.builder, self.retriever = generator, builder, retriever
        self.trigger, self.formulator, self.injector = trigger, formulator, injector
        self.config, self.prefix, self.method = config, prefix, method
        self.gcfg = GenerationConfig(max_new_tokens=1, capture_attention=trigger.needs_attention,
                                     hidden_layers=tuple(trigger.hidden_layers))

    # -- state building -------------------------------------------------------------------
    def _start(self, ids: list[int], weighted: bool) -> DecodeState:
        state = self.gen.start(ids) if weighted else self.gen.start(ids, prefix=self.prefix())
        self._states.append(state)
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

    # -- the loop -------------------------------------------------------------------------
    def run(self, question: str, on_event: EventSink | None = None) -> Answer:
        t0 = time.perf_counter()
        emit = on_event or (lambda _e: None)
        self._states: list[DecodeState] = []
        self.trigger.reset()
        trace = Trace(method=self.method)
        q_ids = self.builder.question_ids(question)
        draft = Draft(question=question, question_pieces=self._question_pieces(q_ids, question))
        answer: list[int] = []
        weights = contextlib.ExitStack()
        weighted = False
        state = self._start(self.builder.build(question, (), ()), weighted)
        layout = {"ans": len(state.ids), "q": len(state.ids) - len(q_ids)}
        self._bind(draft, question, lambda: state, lambda: answer, lambda: weighted)
        decoded, accepting = 0, False
        budget = int(self.config.max_new_tokens * self.config.max_decoded_factor)
        try:
            decision = self.trigger(draft)
            while True:
                if decision is not None and draft.retrievals >= self.config.max_retrievals:
                    decision = None
                query = None if decision is None else self.formulator(draft, decision)
                if decision is not None and self._repeats(decision, query, trace):
                    draft.notes.append(f"retrieval at token {decision.keep} would repeat the previous one "
                                       f"(same query {query!r}); sentence accepted instead")
                    accepting, decision = True, None
                if decision is not None:
                    state, weighted, accepting = self._retrieve(
                        decision, query, draft, question, answer, state, weights, weighted, trace, emit)
                    del answer[decision.keep:]
                    layout = {"ans": len(state.ids) - len(answer), "q": len(state.ids) - len(answer) - len(q_ids)}
                    self._bind(draft, question, lambda: state, lambda: answer, lambda: weighted)
                decision = None
                if len(answer) >= self.config.max_new_tokens or decoded >= budget:
                    trace.notes.append("stopped at the token budget")
                    break
                step = self.gen.step(state, self.gcfg)
                decoded += 1
                if step.token_id in self.gen.eos_ids:
                    break
                self._record_attention(draft, step, layout, len(answer))
                answer.append(step.token_id)
                text = self.gen.decode(answer)
                piece = text[len(draft.text):] if text.startswith(draft.text) else text[len(draft.text):]
                draft.steps.append(step)
                draft.pieces.append(piece)
                draft.at_start = False
                draft.sentence_end = is_sentence_end(draft.text)
                emit({"type": "token", "text": piece, "logprob": step.logprob, "entropy": step.entropy,
                      "score": None})
                if accepting and not draft.sentence_end:
                    pass
                elif accepting:
                    accepting = False
                    draft.checked = len(draft.steps)
                elif draft.retrievals < self.config.max_retrievals:
                    decision = self.trigger(draft)
                if draft.sentence_end and decision is None:
                    draft.checked = len(draft.steps)
                    draft.sentence_start = len(draft.steps)
                if decision is None and finished(draft.text):
                    break
        finally:
            weights.close()
        text = clean(draft.text)
        trace.tokens = [TokenRecord(text=p, logprob=s.logprob, entropy=s.entropy, score=draft.scores.get(i))
                        for i, (p, s) in enumerate(zip(draft.pieces, draft.steps))]
        for st in self._states:
            trace.forward_passes += st.counters.forward_passes
            trace.prompt_tokens += st.counters.prompt_tokens
            trace.generated_tokens += st.counters.generated_tokens
        trace.notes.extend(draft.notes)
        trace.seconds = time.perf_counter() - t0
        return Answer(text=text, short=extract_answer(text), trace=trace)

    def _record_attention(self, draft: Draft, step, layout: dict, i: int) -> None:
        """File the step's attention row (of the position before the new token ``i``) by answer index."""
        row = step.attention
        if row is None:
            return
        a, q = layout["ans"], layout["q"]
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

    def _retrieve(self, decision: Decision, query: str, draft: Draft, question: str, answer: list[int],
                  state: DecodeState, weights: contextlib.ExitStack, weighted: bool, trace: Trace,
                  emit: EventSink):
        t0 = time.perf_counter()
        hits = self.retriever.search_one(query, self.config.k)
        hits = self.trigger.select(hits, draft)
        injection: Injection = self.injector.inject([h.passage for h in hits], question)
        keep = decision.keep
        if keep < len(draft.steps):
            emit({"type": "rollback", "keep_tokens": keep})
        draft.truncate(keep)
        kept = answer[:keep]
        event = RetrievalEvent(position=keep, reason=decision.reason, query=query,
                               hit_ids=[h.id for h in hits], hit_titles=[h.title for h in hits],
                               hit_texts=[h.text for h in hits], scores=dict(decision.scores),
                               injection=injection.kind)
        passages: Sequence[Passage] = list(injection.context)
        ids = self.builder.build(question, passages, kept)
        if injection.changes_weights or weighted:
            weights.close()
            if injection.changes_weights:
                weights.enter_context(injection.apply())
            weighted = injection.changes_weights
            state = self._start(ids, weighted)
        else:
            plen = len(self.builder.prefix_ids)
            self.gen.truncate(state, plen)
            self.gen.extend(state, ids[plen:])
        if injection.notes:
            draft.notes.extend(injection.notes)
        draft.retrievals += 1
        draft.last_retrieval_at = keep
        draft.checked = keep
        draft.passages = list(passages)
        event.seconds = time.perf_counter() - t0
        trace.retrievals.append(event)
        emit({"type": "retrieval", **dataclasses.asdict(event)})
        return state, weighted, decision.accept_next_sentence

    def _bind(self, draft: Draft, question: str, get_state, get_answer, get_weighted) -> None:
        """Give the draft the callbacks SeaKR (sampling) and Self-RAG (next-token log-probs) use."""
        def sample(k: int, max_tokens: int, passages: Sequence[Passage] | None = None,
                   hidden_layers: tuple[int, ...] = (), temperature: float = 1.0, top_p: float = 1.0,
                   stop: tuple[str, ...] = (".", "\n")) -> list[Generation]:
            cfg = GenerationConfig(max_new_tokens=max_tokens, do_sample=True, temperature=temperature,
                                   top_p=top_p, seed=self.config.seed + draft.retrievals + len(draft.steps),
                                   stop=stop, hidden_layers=hidden_layers)
            if passages is None:
                st = get_state()  # sample_batch copies the cache; the main state is only prefilled
            else:
                st = self._start(self.builder.build(question, passages, list(get_answer())), get_weighted())
            return self.gen.sample_batch(st, k, cfg)

        def next_logprobs() -> torch.Tensor:
            return self.gen.next_logprobs(get_state(), self.gcfg)

        def ask(message: str) -> torch.Tensor:
            tok = self.gen.tokenizer
            if self.gen.lm.chat_template and getattr(tok, "chat_template", None):
                message = tok.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                                  add_generation_prompt=True)
            else:
                message += "\nAnswer:"
            st = self.gen.start(self.gen.encode(message))
            self._states.append(st)
            return self.gen.next_logprobs(st)

        def ask_with(passages: Sequence[Passage]) -> torch.Tensor:
            st = self._start(self.builder.build(question, passages, list(get_answer())), get_weighted())
            return self.gen.next_logprobs(st)

        def token_id(token: str) -> int | None:
            tid = self.gen.tokenizer.convert_tokens_to_ids(token)
            return tid if isinstance(tid, int) and tid >= 0 and tid != self.gen.tokenizer.unk_token_id else None

        draft.sample, draft.next_logprobs, draft.ask, draft.token_id = sample, next_logprobs, ask, token_id
        draft.ask_with = ask_with
        draft.middle_layer = int(self.gen.model.config.num_hidden_layers) // 2
