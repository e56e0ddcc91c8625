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
contract with :class:`~dynaprag.dynamic.loop.DynamicLoop` (what is kept after a retrieval is each
trigger's ``after_retrieval`` policy). It is engine, not a family's: DRAGIN's trigger
(:mod:`dynaprag.dynamic.methods.dragin`) and the two confidence triggers
(:mod:`dynaprag.dynamic.methods.confidence`) both build on it, and families never import each
other.

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

from dynaprag.dynamic.draft import Decision, Draft
from dynaprag.dynamic.triggers import Trigger
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
