"""DRAGIN as its reference code runs it (oneal2000/DRAGIN @4d71efc, ``AttnWeightRAG.inference``).

The reference procedure, step by step, and how the one loop reproduces it:

1. Generate a look-ahead continuation of ``generate_max_length`` tokens (100 HotpotQA, 64
   2Wiki) with no stop strings. Here the loop decodes the look-ahead token by token from the
   answer's KV cache and the trigger judges it once it is complete (or ends early).
2. Score it as a whole (:mod:`dynaprag.dynamic.methods.dragin.rind`): last-layer attention of a forward pass
   over the look-ahead tokens alone (:meth:`~dynaprag.dynamic.probe.Probe.attention_of`), per
   head the max over query rows including the diagonal, then the head mean; tokens merged into
   words at the tokenizer's space marker; per spaCy sentence ``a_w/Σa · H_w · n_words``; the
   first sentence with a value above θ fires. No stop-word gate enters the decision.
3. On a hit the whole sentence and everything after it is discarded; the query comes from the
   reference's real-words pass (:class:`RealWordsQuery`, a second forward pass over question
   + text + kept sentences + the discarded sentence's words, POS-filtered, top-k 35 HotpotQA /
   25 2Wiki); one sentence is regenerated with the passages (it is not re-checked) and the
   passages are dropped again (the trigger's ``after_retrieval`` policy).
4. Stop when the answer contains ``"the answer is"`` (case-sensitive, as the reference) or
   has ``generate_max_length`` tokens; there is no retrieval cap in the reference (the
   pipeline's ``max_retrievals`` still applies; set it high to match).

The cut is where the fired sentence's text begins, so an earlier sentence whose word span came
out empty (one containing a newline; the next sentence absorbs its words) is kept, as the
reference's ``prev`` keeps it (``generate.py:520``). An empty real-words query is searched as it
is (``retrieves_empty_query``; the reference retrieves with ``""``, ``:665-674``, and BM25 finds
nothing). A regenerated sentence that ends at end-of-sequence is accepted and ends the answer
(the reference keeps the decoded end-of-turn token in its text; the answer is read up to it).

Deviations, with reasons: (a) the look-ahead is not regenerated from scratch after each
retrieval; the kept tokens' KV cache is reused, so the reference's decisions come at a fraction
of its cost; (b) the regenerated sentence ends at the loop's sentence end (``.``/``!``/``?``
or a newline) instead of spaCy's first sentence of a 100-token continuation; (c) the
reference joins text pieces with ``strip()`` and single spaces, here the kept tokens are the
text; (d) entropies come from the decoder's log-softmax (the reference's numpy softmax with
``+1e-10`` differs in the 4th digit on near-deterministic steps); (e) the prompt is ours
(exemplars, chat template), with the same order (exemplars, context, question, answer);
(f) budgets the reference does not have: ``max_retrievals`` (5) and the decoding budget
(``max_decoded_factor`` × ``max_new_tokens``); on small models, where the reference θ fires at
the first sentence of nearly every look-ahead, they end the retrievals early, and an answer
budget below ``look_ahead`` + the kept text cuts a look-ahead short; (g) the answer ends at
end-of-turn: the reference has no end-of-sequence stop, so on a chat prompt it appends the
decoded ``<|im_end|>`` to its text and re-prompts past it (a look-ahead of only ``<|im_end|>``
is still judged and can fire), where ours ends the answer (found by the loop-level parity
harness, ``scripts/parity/``, DRAGIN q03/q07; those steps are outside the comparison); (h) the
query is searched whole, where the reference's BM25 wrapper keeps its last 64 tokens
(``retriever.py:50-66``; no query of the parity fixtures reaches 64 tokens).

``equation="paper"`` gives ``dragin-paper``: the printed Eq. (4) per token,
``H_i · a_max(i) · s_i`` with ``a_max`` over strictly later tokens of the same look-ahead
attention and ``s_i`` 0 for stop words, cut *at* the first token above θ. Where the paper is
silent (the attention pass, the look-ahead, what happens after retrieval) it follows the
reference code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from dynaprag.dynamic.draft import AfterRetrieval, Decision, Draft
from dynaprag.dynamic.lookahead import LookAheadTrigger, sentence_start_token
from dynaprag.dynamic.methods.dragin import rind
from dynaprag.dynamic.queries import FORMULATORS, QueryFormulator
from dynaprag.dynamic.text import content_flags
from dynaprag.dynamic.triggers import TRIGGERS


@dataclass(frozen=True)
class FiredWords:
    """What DRAGIN's trigger saw in the sentence that fired, for :class:`RealWordsQuery`: the
    sentence's words, which of them are hits, the look-ahead's text before it and the answer before
    the look-ahead (the reference's ``curr_st``/``curr_hit``, ``prev`` and ``text``)."""

    curr_words: list[str]
    hits: list[int]
    prev_text: str
    text_before: str


@dataclass
class DraginTrigger(LookAheadTrigger):
    """DRAGIN's RIND over a look-ahead continuation (see the module docstring)."""

    theta: float = field(default=0.8, metadata={"help": "retrieve when a word's RIND value > theta "
                                                        "(reference: 0.8 HotpotQA, 1.0 2Wiki, Llama-2-7B)"})
    equation: str = field(default="reference", metadata={
        "help": "reference (sentence-normalised word RIND, whole sentence discarded) | paper (Eq. 4 per token)",
        "choices": ("reference", "paper")})
    check_real_words: bool = field(default=True, metadata={
        "help": "zero non-content hits after the decision (reference default; the query uses the hits)"})
    calibratable: ClassVar[bool] = True
    #: one regenerated sentence, unchecked, then the passages leave (``get_top_sentence``, generate.py:688)
    after_retrieval: ClassVar[AfterRetrieval] = AfterRetrieval(recheck=False, passages="accepted")

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        pending = self.pending(draft, with_end=True)
        if pending is None:
            return None
        start, steps = pending
        ids = [s.token_id for s in steps]
        pieces = probe.pieces(ids)
        heads = probe.attention_of(ids)
        entropy = [s.entropy for s in steps]
        if self.equation == "paper":
            return self._paper(draft, start, pieces, heads, entropy)
        words = rind.word_signals(pieces, ids, rind.attention_received(heads), entropy,
                                  space_marker=probe.space_marker, newline_id=probe.newline_id)
        text = draft.span_text(start, len(draft.steps))
        decision = rind.rind_decision(text, words.words, words.attention, words.entropy, self.theta,
                                      self.check_real_words)
        token_scores = {}
        for sentence in decision.sentences:
            for w, value in zip(range(sentence.start, sentence.end), sentence.values):
                a, b = words.ranges[w]
                for t in range(a, min(b + 1, len(draft.steps) - start)):
                    token_scores[start + t] = value
        if not decision.fired:
            return Decision.hold(token_scores=token_scores)
        fired = decision.sentences[decision.sentence_index]
        # the reference keeps the text of every earlier sentence (``prev``, generate.py:520), even one
        # whose word span came out empty (a sentence with a newline): cut where the sentence's text starts
        keep = sentence_start_token(draft, start, [s.sentence for s in decision.sentences], decision.sentence_index)
        top = max((v for v in fired.values if v == v), default=float("nan"))
        return Decision.fire(
            f"RIND {top:.3g} > θ={self.theta:g} in sentence {decision.sentence_index + 1} of the look-ahead: "
            f"{fired.sentence[:80]!r}", keep=keep, span=(keep, len(draft.steps)), at=keep,
            token_scores=token_scores,
            scores=self._shown_scores(probe.token_texts(ids), words.ranges, fired, decision.hits),
            observation=FiredWords(curr_words=list(decision.curr_words), hits=list(decision.hits),
                                   prev_text=decision.prev_text, text_before=draft.span_text(0, start)))

    @staticmethod
    def _shown_scores(texts: list[str], ranges, fired, hits) -> dict[str, float]:
        """The firing sentence's hit words with their RIND, as a user reads them: each word decoded
        from its tokens (``texts``: each id decoded alone, special tokens dropped), not the
        reference's vocabulary pieces (``"1975.<|im_end|>"``, ``"ĊThe"``)."""
        out = {}
        for offset, (value, hit) in enumerate(zip(fired.values, hits)):
            a, b = ranges[fired.start + offset]
            word = "".join(texts[a:b + 1]).strip()
            if hit and word:
                out[word] = value
        return out

    def _paper(self, draft: Draft, start: int, pieces, heads: torch.Tensor, entropy) -> Decision:
        """Eq. (4) per token: ``H_i · a_max(i) · s_i`` with ``a_max`` over strictly later tokens."""
        n = len(entropy)
        texts = draft.pieces[start:start + n] + [""] * (n - len(draft.pieces[start:]))
        a_max = rind.max_attention_received(heads.float().mean(dim=0))
        scores = rind.rind_scores(torch.tensor(entropy), a_max, torch.tensor(content_flags(texts)))
        kept = len(draft.steps) - start
        token_scores = {start + i: float(scores[i]) for i in range(kept)}
        for i in range(kept):
            if scores[i] > self.theta:
                word = texts[i].strip()
                return Decision.fire(f"RIND {float(scores[i]):.3g} > θ={self.theta:g} at {texts[i]!r}",
                                     keep=start + i, span=(start + i, len(draft.steps)), at=start + i,
                                     token_scores=token_scores, scores={word: float(scores[i])},
                                     observation=FiredWords(curr_words=[word], hits=[1], prev_text="",
                                                            text_before=draft.span_text(0, start + i)))
        return Decision.hold(token_scores=token_scores)


@dataclass
class RealWordsQuery(QueryFormulator):
    """DRAGIN's query as the reference builds it (``AttnWeightRAG.keep_real_words``).

    A forward pass over ``question + text + kept sentences + the fired sentence's words``; the
    hit words' attention over the earlier words, averaged; words with a spaCy NOUN, ADJ, VERB,
    PROPN or NUM token that are not hits; the ``top_k`` highest in text order
    (:func:`dynaprag.dynamic.methods.dragin.rind.real_words_query`). With a trigger other than DRAGIN's, the
    judged span's words are the sentence and all of them are hits.

    Deviation: the query's words are decoded text (each word's tokens decoded), where the
    reference joins vocabulary pieces with only the space marker removed: with a byte-level BPE
    tokenizer a newline reached the retriever (and the trace) as ``"Ċ"`` and a word after it as
    ``"ĊThe"``. The words chosen are the reference's; a word that decodes to nothing is dropped.
    """

    top_k: int = field(default=35, metadata={"help": "words kept (reference: 35 HotpotQA, 25 2Wiki)", "min": 1,
                                                   "max": 1000})
    needs_probe: ClassVar[bool] = True
    retrieves_empty_query: ClassVar[bool] = True  # the reference retrieves with "" too (generate.py:665-674)

    def __call__(self, draft: Draft, decision: Decision, probe=None) -> str:
        seen = decision.observation if isinstance(decision.observation, FiredWords) else None
        curr = list((seen.curr_words if seen else None) or draft.span_text(*decision.span).split())
        if not curr:
            return draft.question
        hits = list((seen.hits if seen else None) or [1] * len(curr))
        text_before = seen.text_before if seen else draft.span_text(0, decision.span[0])
        all_text = rind.real_words_query_text(draft.question, text_before, seen.prev_text if seen else "", curr)
        ids = probe.encode(all_text)
        pieces, marks = probe.pieces(ids), {"space_marker": probe.space_marker, "newline_id": probe.newline_id}
        rows = rind.real_words_rows(pieces, ids, hits, **marks)  # only the rows it reads: memory ~ rows · n
        result = rind.real_words_query(all_text, pieces, ids, probe.attention_of(ids, rows), hits, self.top_k,
                                       rows=rows, **marks)
        texts = probe.token_texts(ids)
        words = ("".join(texts[a:b + 1]).strip() for a, b in (result.ranges[i] for i in result.chosen))
        return " ".join(w for w in words if w)


TRIGGERS.register("rind", DraginTrigger)
FORMULATORS.register("real-words", RealWordsQuery)
