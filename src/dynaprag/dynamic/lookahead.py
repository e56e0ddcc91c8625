"""Triggers that judge a whole look-ahead continuation, as the DRAGIN repository's methods do.

``AttnWeightRAG`` (DRAGIN), ``TokenRAG`` and ``EntityRAG`` in oneal2000/DRAGIN @4d71efc
``src/generate.py`` generate ``generate_max_length`` tokens, judge them sentence by sentence,
and on the first sentence that fires discard it and everything after it, retrieve, and
regenerate with the passages. What is kept from that regeneration differs:

- DRAGIN keeps **one sentence** (``get_top_sentence``, ``generate.py:688``), accepted unchecked;
  the passages leave and the next look-ahead is judged again.
- TokenRAG keeps the **whole continuation** of ``generate_max_length`` tokens, unchecked
  (``TokenRAG.inference``, ``generate.py:381-392``: no ``get_top_sentence``); EntityRAG
  inherits it (``:477-478``). Only then do the passages leave; the answer usually ends there
  (``"the answer is"`` or the length limit, ``:394-397``).

Both stop at ``"the answer is"`` or the length limit. :class:`LookAheadTrigger` is that loop's
contract with :class:`~dynaprag.dynamic.loop.DynamicLoop` (``Decision.accept_tokens`` asks for
the whole continuation); the two confidence triggers here score with
:mod:`dynaprag.dynamic.confidence` (parity-tested against the reference outputs).

Deviations: the kept tokens' KV cache is reused instead of regenerating the prompt each
iteration; DRAGIN's regenerated sentence ends at the loop's sentence end instead of spaCy's
first sentence of a full continuation; tokens are ``tokenizer.decode([id])`` as in the
reference, the end-of-sequence token left out; the run's answer budget (``max_new_tokens``,
128 in the bench) can end a continuation the reference would let grow past it (its limit is
checked only after each whole continuation, ``:394-397``); ``max_retrievals`` (5) and the
decoding budget are ours too (docs/dynamic.md, "Budgets the reference does not have"); the answer
ends at end-of-turn, where the reference has no end-of-sequence stop and re-prompts past the
decoded ``<|im_end|>``; the query is searched whole, where the reference's BM25 wrapper keeps its
last 64 tokens (``retriever.py:50-66``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from dynaprag import nlp
from dynaprag.dynamic import confidence
from dynaprag.dynamic.draft import Decision, Draft
from dynaprag.dynamic.triggers import TRIGGERS, Trigger
from dynaprag.lm.generator import StepOutput


@dataclass
class LookAheadTrigger(Trigger):
    """Base: wait for ``look_ahead`` new tokens (or the end of the draft), then judge them at once."""

    look_ahead: int = field(default=100, metadata={
        "help": "generate_max_length: tokens per look-ahead and the answer's length limit (100 HotpotQA, 64 2Wiki)",
        "min": 1, "max": 1024})
    needs_probe: ClassVar[bool] = True
    rolls_back: ClassVar[bool] = True
    judges_look_ahead: ClassVar[bool] = True

    def finished(self, draft: Draft) -> bool:
        """The reference's stop rule: ``"the answer is"`` in the text (case-sensitive), or the length limit."""
        return "the answer is" in draft.text or len(draft.steps) >= self.look_ahead

    def pending(self, draft: Draft, with_end: bool = False) -> tuple[int, list[StepOutput]] | None:
        """``(start, steps)`` of the look-ahead to judge now, or None while it is still growing."""
        start = draft.checked
        steps = draft.steps[start:]
        if with_end and draft.ended and draft.end_step is not None:
            steps = steps + [draft.end_step]
        if not steps or (len(draft.steps) - start < self.look_ahead and not draft.ended):
            return None
        return start, steps

    def tokens_to_judge(self, draft: Draft, probe) -> tuple[int, list[StepOutput], list[str], str] | None:
        """``(start, steps, token texts, text)`` of the pending look-ahead, tokens as the DRAGIN
        repository lists them (``tokenizer.decode([id])``), or None while it is still growing."""
        pending = self.pending(draft)
        if pending is None:
            return None
        start, steps = pending
        return start, steps, probe.token_texts([s.token_id for s in steps]), "".join(draft.pieces[start:])


def sentence_start_token(draft: Draft, start: int, sentences: list[str], index: int) -> int:
    """The answer index of the token where spaCy sentence ``index`` of the look-ahead begins."""
    text = "".join(draft.pieces[start:])
    pos = 0
    for sent in sentences[:index]:
        at = text.find(sent, pos)
        pos = at + len(sent) if at >= 0 else pos
    at = text.find(sentences[index], pos)
    at = pos if at < 0 else at
    offset = 0
    for i, piece in enumerate(draft.pieces[start:], start):
        if offset + len(piece) > at:
            return i
        offset += len(piece)
    return len(draft.steps)


@dataclass
class TokenConfidenceTrigger(LookAheadTrigger):
    """TokenRAG as the reference computes it (``TokenRAG.modifier``): per spaCy sentence of the
    look-ahead, the mean of ``1 - p`` over its tokens; the first sentence above θ fires.

    θ from the DRAGIN repository's Llama2-7b ``FLARE.json`` configs (``method: token``): 0.08 on
    HotpotQA and IIRC (a sentence fires when its mean token probability is below 0.92), 0.1 on
    2Wiki and StrategyQA (the ``token-rag`` preset sets it per dataset). The masked query is the
    ``masked-tokens`` formulator's; after a retrieval the whole regenerated look-ahead is kept
    (module docstring). Tokens are searched without their leading space (the
    intended behaviour; the reference's search breaks on byte-level BPE tokens, see
    :func:`~dynaprag.dynamic.confidence.token_rag_check`).
    """

    theta: float = field(default=0.08, metadata={"help": "fire when a sentence's mean 1-p > theta", "min": 0.0})
    solver: str = field(default="avg", metadata={"help": "sentence solver over 1-p", "choices": ("avg", "max", "min")})

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        look = self.tokens_to_judge(draft, probe)
        if look is None:
            return None
        start, steps, tokens, text = look
        check = confidence.token_rag_check(text, tokens, [s.logprob for s in steps], self.theta, self.solver)
        token_scores = {start + t: s.score for s in check.sentences
                        for t in range(s.start, min(s.end + 1, len(steps)))}
        if not check.fired:
            return Decision.hold(token_scores=token_scores)
        fired = check.sentences[-1]
        keep = sentence_start_token(draft, start, nlp.sentences("".join(draft.pieces[start:])), check.sentence_index)
        toks = [t.lstrip(" ") for t in tokens]
        return Decision.fire(
            f"mean 1-p {fired.score:.3g} > θ={self.theta:g} in sentence {check.sentence_index + 1}: "
            f"{fired.sentence[:80]!r}", keep=keep, span=(keep, len(draft.steps)), token_scores=token_scores,
            accept_next_sentence=True, context_for_sentence=True, accept_tokens=self.look_ahead,
            scores={"mean 1-p": fired.score},
            details={"sentence": fired.sentence, "spans": toks[fired.start:fired.end + 1], "scores": fired.scores})


@dataclass
class EntityConfidenceTrigger(LookAheadTrigger):
    """EntityRAG as the reference computes it (``EntityRAG.modifier``): spaCy entities of each
    sentence; an entity's uncertainty is ``1 - exp(solver over its tokens' log-probs)``; the
    first sentence whose solver over its entities exceeds θ fires.

    The DRAGIN repository ships no EntityRAG config, so θ and the solvers have no reference
    default: θ = 0.4 with mean solvers (as the DRAD example) is ours.
    """

    theta: float = field(default=0.4, metadata={"help": "fire when a sentence's entity uncertainty > theta",
                                                "min": 0.0})
    entity_solver: str = field(default="avg", metadata={"help": "solver over an entity's token log-probs",
                                                        "choices": ("avg", "max", "min", "first")})
    sentence_solver: str = field(default="avg", metadata={"help": "solver over a sentence's entities",
                                                          "choices": ("avg", "max", "min")})

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        look = self.tokens_to_judge(draft, probe)
        if look is None:
            return None
        start, steps, tokens, text = look
        check = confidence.entity_rag_check(text, tokens, [s.logprob for s in steps], self.theta,
                                            self.entity_solver, self.sentence_solver)
        token_scores = {}
        for s in check.sentences:
            for (a, b), score in zip(check.intervals[s.index], s.scores):
                for t in range(max(a, 0), min(b + 1, len(steps))):
                    token_scores[start + t] = score
        if not check.fired:
            return Decision.hold(token_scores=token_scores)
        fired = check.sentences[-1]
        keep = sentence_start_token(draft, start, nlp.sentences(text), check.sentence_index)
        return Decision.fire(
            f"entity uncertainty {fired.score:.3g} > θ={self.theta:g} in sentence {check.sentence_index + 1}: "
            f"{fired.sentence[:80]!r}", keep=keep, span=(keep, len(draft.steps)), token_scores=token_scores,
            accept_next_sentence=True, context_for_sentence=True, accept_tokens=self.look_ahead,
            scores=dict(zip(check.entities[check.sentence_index], fired.scores)),
            details={"sentence": fired.sentence, "spans": check.entities[check.sentence_index],
                     "scores": fired.scores})


TRIGGERS.register("token-confidence", TokenConfidenceTrigger)
TRIGGERS.register("entity", EntityConfidenceTrigger)
