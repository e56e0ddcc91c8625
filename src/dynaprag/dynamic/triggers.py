"""When to retrieve: small callables that read the draft's signals and answer "retrieve now?".

A :class:`Trigger` is called once before the first token (``draft.at_start``) and after every
generated token. It returns ``None`` when it has nothing to judge at this step (most triggers
judge only at sentence ends), else a :class:`~dynaprag.dynamic.draft.Decision`: retrieve or
not, how much of the draft to keep, why, and its per-token scores. It decides *when*, never
*what*: the query is the formulator's job, the choice of hits the selector's. Knobs are
dataclass fields with the paper's defaults; the scoring itself lives in
:mod:`dynaprag.dynamic.scoring` as pure functions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from dynaprag.dynamic import scoring
from dynaprag.dynamic.component import Component
from dynaprag.dynamic.draft import Decision, Draft, FinalAnswer
from dynaprag.dynamic.text import content_flags
from dynaprag.registry import Registry


@dataclass
class Trigger(Component):
    """Base trigger: never retrieves. Subclasses override :meth:`__call__`."""

    rolls_back: ClassVar[bool] = False
    calibratable: ClassVar[bool] = False  # retrieves when a score exceeds ``theta`` (see ``dynaprag calibrate``)
    judges_look_ahead: ClassVar[bool] = False  # judges a whole continuation at once (DRAGIN's reference)

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
            scores={draft.pieces[i]: draft.steps[i].prob for i in low}, accept_next_sentence=True)


@dataclass
class FlareTrigger(TokenProbTrigger):
    """FLARE_direct (Jiang et al. 2023, §3.2; jzbjyb/FLARE ``ApiReturn.use_as_query``): retrieve with
    the question before the first look-ahead (the released configs' ``look_ahead_pre_retrieval:
    first``), then judge each look-ahead sentence: if any token has ``p ≤ θ`` retrieve with it
    (masked by the formulator, β) and regenerate it; the passages replace the previous ones.

    θ = 0.8 from the released 2WikiMultihopQA config; FlashRAG's variant uses 0.2
    (``flare-flashrag``). Probabilities compare as Python floats, as the reference receives them.

    The ``flare`` preset keeps that config's ``topk: 2`` on 2Wiki (the selector's ``k``; FLARE
    released no config for other datasets, which keep the run's k = 3). Deviations: the answer
    budget is the run's ``max_new_tokens`` (128 in the bench, one budget for every method;
    FLARE's run used ``max_generation_len`` 256, ``openai.sh``: set ``max_new_tokens=256`` to
    match); our prompt has 3 exemplars without retrieved context (FLARE: 8 with it,
    ``use_ctx_for_examplars: ret``); the shared retrieval cap. Found by the loop-level parity test
    (``tests/comparison/test_preset_loops.py``, FLARE's own ``QueryAgent.ret_prompt``): a sentence
    ends at our regex sentence end (``text.is_sentence_end``: ``.``, ``!``, ``?`` not after a
    capital, or a newline), where FLARE cuts its look-ahead at NLTK Punkt's first sentence of 5+
    characters (``templates.py`` ``truncate_at_boundary``), which a newline does not end (demo q05:
    ``"[1] Christopher Nolan\\n"`` is judged here, ``"…Nolan\\n[2] Christopher Nolan"`` there); the
    end-of-sequence token's probability is not judged (the completions API of the time could list
    ``<|endoftext|>`` among the tokens); a text is kept as the token ids generated, where FLARE
    re-encodes its accumulated text for every prompt.
    """

    theta: float = field(default=0.8, metadata={"help": "retrieve if any look-ahead token has p <= theta",
                                                "min": 0.0})
    initial: bool = field(default=True, metadata={"help": "retrieve with the question before generating"})
    inclusive: ClassVar[bool] = True

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        if draft.at_start:
            return Decision.fire("retrieval with the question before the first look-ahead", keep=0) \
                if self.initial else None
        return super().__call__(draft, probe)


@dataclass
class InlineRindTrigger(Trigger):
    """RIND inline (variant ``dragin-inline``): DRAGIN's Eq. 4, ``S(t_i) = H_i · a_max(i) · s_i > θ``,
    on the attention rows captured while generating (no extra forward pass, no look-ahead).

    ``H_i`` is the token's entropy, ``a_max(i)`` the largest last-layer (head-averaged)
    attention a later token of the answer pays to it (the full prompt in context), ``s_i`` 0
    for stop words. Evaluated at each sentence end over the sentence's new tokens; the last
    token of a sentence has no later token yet and scores 0. On a hit the draft is cut *at* the
    triggering token. It is the cheapest attention trigger, not the reference's procedure
    (that is ``rind``, :mod:`dynaprag.dynamic.dragin`): its scores live on another scale.
    """

    theta: float = field(default=1.2, metadata={"help": "retrieve when S_RIND > theta"})
    needs_attention: ClassVar[bool] = True
    rolls_back: ClassVar[bool] = True
    calibratable: ClassVar[bool] = True

    def scores(self, draft: Draft, start: int, end: int) -> torch.Tensor:
        m = end
        att = torch.zeros(m, m)
        for j in range(m):
            row = draft.rows.get(j)
            if row is not None:
                att[j, : min(m, row.numel())] = row[:m]
        a_max = scoring.max_attention_received(att)[start:end]
        ent = torch.tensor([s.entropy for s in draft.steps[start:end]])
        content = torch.tensor(content_flags(draft.pieces[start:end]))
        return scoring.rind_scores(ent, a_max, content)

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        if not draft.sentence_end:
            return None
        start, end = draft.sentence_start, len(draft.steps)
        s = self.scores(draft, start, end)
        token_scores = {i: float(s[i - start]) for i in range(start, end)}
        for i in range(max(start, draft.checked), end):
            if s[i - start] > self.theta:
                return Decision.fire(
                    f"RIND {float(s[i - start]):.3g} > θ={self.theta:g} at {draft.pieces[i]!r}",
                    keep=i, span=(0, i), at=i, token_scores=token_scores,
                    scores={draft.pieces[t]: float(s[t - start]) for t in range(start, end) if s[t - start] > 0})
        return Decision.hold(token_scores=token_scores)


TRIGGERS: Registry[type[Trigger]] = Registry("trigger")
TRIGGERS.register("never", NeverTrigger)
TRIGGERS.register("once", OnceTrigger)
TRIGGERS.register("every-n-tokens", EveryNTokensTrigger)
TRIGGERS.register("every-sentence", EverySentenceTrigger)
TRIGGERS.register("token-prob", TokenProbTrigger)
TRIGGERS.register("flare", FlareTrigger)
TRIGGERS.register("rind-inline", InlineRindTrigger)
