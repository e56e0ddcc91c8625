"""Self-RAG's retrieval decision and critique ranking (Asai et al. 2024), and a prompted variant.

``self-rag`` is for models trained with reflection tokens: before generating, retrieval fires
when ``p([Retrieval]) / (p([Retrieval]) + p([No Retrieval])) > θ`` (the short-form inference's
adaptive threshold, 0.2), read from the same forward pass that would produce the first answer
token. The ``selfrag-critique`` selector then scores each passage with the paper's critique
weights (``w_rel=1, w_sup=1``, and ``w_use=1.0``, the released ``run_short_form.py``'s
effective default where the paper prints 0.5; :func:`~dynaprag.dynamic.scoring.selfrag_segment_score`)
from the reflection-token distribution the model gives with that passage in context, best
first. Deviation: the released code scores one generated segment per passage; here the
critique tokens are read at the first answer position with the passage in the knowledge slot
(no segment is generated), so the sequence term is the log-prob of the model's first token.

``self-rag-prompted`` is a *variant* for instruct models without reflection tokens: the model
itself is asked whether it needs to look something up, and ``p(Yes)/(p(Yes)+p(No))`` is
thresholded (0.5: retrieve when "Yes" is the likelier answer). It is not the paper's method.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from dynaprag.dynamic import scoring
from dynaprag.dynamic.draft import Decision, Draft
from dynaprag.dynamic.selectors import SELECTORS, Selector
from dynaprag.dynamic.triggers import TRIGGERS, Trigger

RETRIEVE, NO_RETRIEVE = "[Retrieval]", "[No Retrieval]"
RELEVANCE = ("[Relevant]", "[Irrelevant]")
SUPPORT = ("[Fully supported]", "[Partially supported]", "[No support / Contradictory]")
UTILITY = tuple(f"[Utility:{i}]" for i in range(1, 6))
_HINT = "It needs a model trained with Self-RAG reflection tokens; use method 'self-rag-prompted' for instruct models."


@dataclass
class SelfRagTrigger(Trigger):
    """Self-RAG short-form: retrieve if the normalised p([Retrieval]) exceeds θ."""

    theta: float = field(default=0.2, metadata={"help": "retrieve if p([Retrieval]) normalised > theta",
                                                "min": 0.0, "max": 1.0})
    needs_probe: ClassVar[bool] = True
    required_tokens: ClassVar[tuple[str, ...]] = (RETRIEVE, NO_RETRIEVE)
    missing_token_hint: ClassVar[str] = _HINT

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        if not draft.at_start:
            return None
        yes, no = (probe.token_id(t) for t in (RETRIEVE, NO_RETRIEVE))
        p = scoring.normalised_probability(probe.next_logprobs(), [yes], [no])
        if p > self.theta:
            return Decision.fire(f"p([Retrieval]) = {p:.3g} > {self.theta:g}", keep=0, scores={RETRIEVE: p})
        return Decision.hold()


@dataclass
class SelfRagCritiqueSelector(Selector):
    """Self-RAG's critique ranking of the hits (relevance, support, utility), best first."""

    w_rel: float = field(default=1.0, metadata={"help": "weight of the relevance critique"})
    w_sup: float = field(default=1.0, metadata={"help": "weight of the support critique"})
    w_use: float = field(default=1.0, metadata={"help": "weight of the utility critique (released code's default)"})
    needs_probe: ClassVar[bool] = True
    required_tokens: ClassVar[tuple[str, ...]] = RELEVANCE + SUPPORT + UTILITY
    missing_token_hint: ClassVar[str] = _HINT

    def __call__(self, hits: list, draft: Draft, probe=None) -> list:
        rel, sup, use = ([probe.token_id(t) for t in group] for group in (RELEVANCE, SUPPORT, UTILITY))
        scored = []
        for i, hit in enumerate(hits):
            lp = probe.ask_with([hit.passage])
            p = lp.exp()
            score = scoring.selfrag_segment_score(
                float(lp.max()), [float(p[j]) for j in rel], [float(p[j]) for j in sup],
                [float(p[j]) for j in use], self.w_rel, self.w_sup, self.w_use)
            scored.append((-score, i, hit))
        scored.sort(key=lambda t: (t[0], t[1]))
        return [h for _, _, h in scored]


_QUESTION = ("Question: {question}\nTo answer this question correctly, do you need to look up facts in an "
             "encyclopedia? Reply with Yes or No.")


@dataclass
class SelfRagPromptedTrigger(Trigger):
    """Variant (not the paper's): ask the instruct model whether it needs retrieval, once, up front."""

    theta: float = field(default=0.5, metadata={"help": "retrieve if p(Yes)/(p(Yes)+p(No)) > theta",
                                                "min": 0.0, "max": 1.0})
    needs_probe: ClassVar[bool] = True

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        if not draft.at_start:
            return None
        lp = probe.ask(_QUESTION.format(question=draft.question))
        yes = [i for i in (probe.token_id(t) for t in ("Yes", "ĠYes", "▁Yes", "yes", "Ġyes")) if i is not None]
        no = [i for i in (probe.token_id(t) for t in ("No", "ĠNo", "▁No", "no", "Ġno")) if i is not None]
        p = scoring.normalised_probability(lp, yes, no)
        note = (f"self-rag-prompted: p(Yes) = {p:.3f}",)
        if p > self.theta:
            return Decision.fire(f"the model says it needs retrieval: p(Yes) = {p:.3g} > {self.theta:g}",
                                 keep=0, scores={"Yes": p}, notes=note)
        return Decision.hold(notes=note)


TRIGGERS.register("self-rag", SelfRagTrigger)
TRIGGERS.register("self-rag-prompted", SelfRagPromptedTrigger)
SELECTORS.register("selfrag-critique", SelfRagCritiqueSelector)
