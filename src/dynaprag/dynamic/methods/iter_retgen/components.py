"""Iter-RetGen (Shao et al., Findings of EMNLP 2023): T rounds of retrieve-then-generate, each
round's query the question plus the previous round's whole answer.

The paper's authors released no code. The reference here is FlashRAG's implementation,
RUC-NLPIR/FlashRAG @ ``1ee524901aa3daf009f97b7a31e7a1b58eee8206``,
``flashrag/pipeline/active_pipeline.py:13-57`` (``IterativePipeline``), run by
``examples/methods/run_exp.py:412-437`` (``iterretgen``):

1. ``iter_num`` = **3** rounds (``run_exp.py:422``; the class default is 3 too, :14).
2. Round 1 searches with the question; round t > 1 with ``f"{question} {previous generation}"``
   (:30-34), the whole previous output.
3. Each round's passages *replace* the previous ones (``retrieval_result_iter_t``; nothing
   accumulates) and the answer is generated from scratch with them (:42-48).
4. The answer is the last round's generation (:54); retrieval top-k is the config's
   ``retrieval_topk`` (5 in ``flashrag/config/basic_config.yaml:60``).

Here the loop runs it as rollbacks: :class:`IterRetGenTrigger` retrieves before the first token
(round 1) and, when a round's answer is complete (the loop's answer rule, end of turn, or a
budget), retrieves again with ``keep=0``: the whole answer is discarded and regenerated with the
new passages, until T rounds have run. It declares ``judges_look_ahead`` because it judges a
whole answer at once, so the loop also asks it when the draft ends (end of turn, a budget)
rather than only after a token; and ``rolls_back`` (a stream must hold the text back).
:class:`RoundQuery` forms the query. A round whose answer equals the previous round's would
retrieve the same passages and, greedy, generate the same answer again: it is not re-run
(the trace notes it).

Deviations: (a) the prompt is ours (chain-of-thought exemplars ending in "So the answer is",
chat template), FlashRAG's is its short-answer template with ``max_tokens`` 32, so each round
here ends at the loop's answer rule or end of turn; (b) top-k is the run's k (3 by default;
FlashRAG's config: 5); (c) the run's budgets apply: ``max_retrievals`` (5 >= T) and the decoding
budget (``max_decoded_factor`` x ``max_new_tokens``), which bounds T rounds together, and the
token budget ends a round (the next round still runs, as the reference's ``max_tokens`` ends a
generation).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from dynaprag.dynamic.draft import Decision, Draft
from dynaprag.dynamic.queries import FORMULATORS, QueryFormulator
from dynaprag.dynamic.run import finished
from dynaprag.dynamic.triggers import TRIGGERS, Trigger


def round_query(question: str, answer: str) -> str:
    """The query of the round after ``answer``: ``f"{question} {answer}"`` (``active_pipeline.py:34``)."""
    return f"{question} {answer}" if answer else question


def round_text(draft: Draft) -> str:
    """The round's whole generation as the next query uses it (stripped)."""
    return draft.span_text(0, len(draft.steps))


def round_done(draft: Draft) -> bool:
    """The round's answer is complete: the draft ended, or the loop's answer rule holds."""
    return draft.ended or (bool(draft.steps) and finished(draft.text))


@dataclass
class IterRetGenTrigger(Trigger):
    """Round 1 retrieves with the question; each complete answer starts the next round (keep=0)."""

    rounds: int = field(default=3, metadata={"help": "T, retrieve-generate rounds (FlashRAG iter_num: 3)",
                                             "min": 1, "max": 20})
    rolls_back: ClassVar[bool] = True
    judges_look_ahead: ClassVar[bool] = True

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        if draft.at_start:
            return Decision.fire(f"Iter-RetGen round 1 of {self.rounds}: retrieve with the question", keep=0)
        if not round_done(draft):
            return None
        if draft.retrievals >= self.rounds:
            return Decision.hold(notes=(f"Iter-RetGen: {self.rounds} rounds done",))
        if self._same_as_before(draft):
            return Decision.hold(notes=(f"Iter-RetGen: round {draft.retrievals} repeats the previous answer; "
                                        f"a further round would too (greedy), so it ends here",))
        end = len(draft.steps)
        return Decision.fire(f"Iter-RetGen round {draft.retrievals + 1} of {self.rounds}: retrieve with the "
                             f"question and round {draft.retrievals}'s answer", keep=0, span=(0, end))

    def finished(self, draft: Draft) -> bool:
        return round_done(draft) and (draft.retrievals >= self.rounds or self._same_as_before(draft))

    @staticmethod
    def _same_as_before(draft: Draft) -> bool:
        return len(draft.queries) >= 2 and draft.queries[-1] == round_query(draft.question, round_text(draft))


@dataclass
class RoundQuery(QueryFormulator):
    """The question, then the question and the previous round's whole answer."""

    def __call__(self, draft: Draft, decision: Decision, probe=None) -> str:
        return round_query(draft.question, round_text(draft))


TRIGGERS.register("iter-retgen", IterRetGenTrigger)
FORMULATORS.register("question-and-answer", RoundQuery)
