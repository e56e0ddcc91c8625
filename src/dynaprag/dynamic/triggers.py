"""When to retrieve: small callables that read the draft's signals and answer "retrieve now?".

A :class:`Trigger` is called once before the first token (``draft.at_start``) and after every
generated token. It returns ``None`` when it has nothing to judge at this step (most triggers
judge only at sentence ends), else a :class:`~dynaprag.dynamic.draft.Decision`: retrieve or
not, how much of the draft to keep, why, and its per-token scores. It decides *when*, never
*what*: the query is the formulator's job, the choice of hits the selector's. Knobs are
dataclass fields with the paper's defaults; the scoring itself lives in pure functions
(:mod:`dynaprag.dynamic.scoring`, and each family's own math in its folder).

Here are the engine's generic triggers; a paper's triggers live in its method folder
(:mod:`dynaprag.dynamic.methods`) and register into :data:`TRIGGERS` from there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from dynaprag.dynamic import scoring
from dynaprag.dynamic.component import Component
from dynaprag.dynamic.draft import AfterRetrieval, Decision, Draft, FinalAnswer
from dynaprag.registry import Registry


@dataclass
class Trigger(Component):
    """Base trigger: never retrieves. Subclasses override :meth:`__call__`."""

    rolls_back: ClassVar[bool] = False
    calibratable: ClassVar[bool] = False  # retrieves when a score exceeds ``theta`` (see ``dynaprag calibrate``)
    judges_look_ahead: ClassVar[bool] = False  # judges a whole continuation at once (DRAGIN's reference)
    #: what a retrieval means for the text after it (default: regenerate and judge again)
    after_retrieval: ClassVar[AfterRetrieval] = AfterRetrieval()

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        return None

    def finished(self, draft: Draft) -> bool | None:
        """The method's own stop rule, or None for the loop's (the "So the answer is X." sentence)."""
        return None

    def integrate(self, draft: Draft, probe=None) -> FinalAnswer | None:
        """The method's own final answer from the finished draft (SeaKR's reasoning integration,
        which also reads ``draft.passages``), or None to read the answer from the draft."""
        return None


@dataclass
class NeverTrigger(Trigger):
    """wo-rag: the model answers from its parameters alone."""


@dataclass
class OnceTrigger(Trigger):
    """sr-rag: retrieve once with the question before generating (standard single-round RAG)."""

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        if draft.at_start:
            return Decision.fire("single retrieval before generation", keep=0)
        return None


@dataclass
class EveryNTokensTrigger(Trigger):
    """FL-RAG: retrieve every ``n`` generated tokens, plus once before generating.

    Khandelwal et al. 2020 / Ram et al. 2023 (In-Context RALM, stride s). The DRAGIN repository's
    ``FixLengthRAG`` (``generate.py:263-303``) retrieves with the question, then with each chunk
    of ``fix_length`` tokens: 32 in its Llama2 FL-RAG configs (HotpotQA, IIRC, StrategyQA), 16
    on 2Wiki, until commit 6108a97 deleted the key (the ``fl-rag`` preset sets them per dataset).
    The judged span, and the query, is the window of the last ``n`` tokens. The reference has no
    retrieval cap; the loop's ``max_retrievals`` (5) binds after 64 tokens at n = 16.
    """

    n: int = field(default=32, metadata={"help": "retrieval stride in tokens (DRAGIN's FL-RAG: 32, 16 on 2Wiki)",
                                         "min": 1})
    initial: bool = field(default=True, metadata={"help": "retrieve with the question before generating"})

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        if draft.at_start:
            return Decision.fire("retrieval before generation", keep=0) if self.initial else None
        done = len(draft.steps) - draft.last_retrieval_at
        if done >= self.n:
            end = len(draft.steps)
            return Decision.fire(f"{done} tokens since the last retrieval (every {self.n})", keep=end,
                                 span=(max(0, end - self.n), end))
        return None


@dataclass
class EverySentenceTrigger(Trigger):
    """FS-RAG (Trivedi et al. 2023, IRCoT-style): retrieve after every generated sentence."""

    initial: bool = field(default=True, metadata={"help": "retrieve with the question before generating"})

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        if draft.at_start:
            return Decision.fire("retrieval before generation", keep=0) if self.initial else None
        if draft.sentence_end:
            start, end = draft.sentence_start, len(draft.steps)
            return Decision.fire("sentence finished", keep=end, span=(start, end))
        return None


@dataclass
class TokenProbTrigger(Trigger):
    """TokenRAG (the DRAGIN paper's token-level baseline): retrieve when a token's ``p < θ``.

    Checked at each sentence end over that sentence's new tokens; the sentence is discarded
    and regenerated with the passages (the regenerated sentence is accepted unchecked).
    θ = 0.08 is the threshold of the DRAGIN repository's token-probability configs.
    """

    theta: float = field(default=0.08, metadata={"help": "retrieve when any token has p < theta", "min": 0.0})
    inclusive: ClassVar[bool] = False
    rolls_back: ClassVar[bool] = True
    #: FLARE: the regenerated sentence is accepted without being judged again
    after_retrieval: ClassVar[AfterRetrieval] = AfterRetrieval(recheck=False)
    label: ClassVar[str] = "token"

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        if not draft.sentence_end:
            return None
        start, end = max(draft.sentence_start, draft.checked), len(draft.steps)
        probs = draft.probs(start, end)
        token_scores = {i: 1.0 - p for i, p in zip(range(start, end), probs)}
        low = [start + i for i, hit in enumerate(scoring.low_probability(probs, self.theta, self.inclusive)) if hit]
        if not low:
            return Decision.hold(token_scores=token_scores)
        return Decision.fire(
            f"{len(low)} {self.label}(s) with p {'≤' if self.inclusive else '<'} {self.theta:g}",
            keep=draft.sentence_start, span=(draft.sentence_start, end), token_scores=token_scores,
            scores={draft.pieces[i]: draft.steps[i].prob for i in low})


TRIGGERS: Registry[type[Trigger]] = Registry("trigger")
TRIGGERS.register("never", NeverTrigger)
TRIGGERS.register("once", OnceTrigger)
TRIGGERS.register("every-n-tokens", EveryNTokensTrigger)
TRIGGERS.register("every-sentence", EverySentenceTrigger)
TRIGGERS.register("token-prob", TokenProbTrigger)
