"""The confidence family's components: TokenRAG's, EntityRAG's and FLARE's triggers and queries.

TokenRAG and EntityRAG judge a whole look-ahead (:class:`~dynaprag.dynamic.lookahead.LookAheadTrigger`,
whose docstring gives what they keep after a retrieval and their deviations); FLARE judges each
sentence as it ends. All score with :mod:`dynaprag.dynamic.methods.confidence.scores`, the
reference math the parity tests pin; their queries mask the tokens or entities they doubt.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from dynaprag import nlp
from dynaprag.dynamic.draft import AfterRetrieval, Decision, Draft
from dynaprag.dynamic.lookahead import LookAheadTrigger, sentence_start_token
from dynaprag.dynamic.methods.confidence import scores as confidence
from dynaprag.dynamic.queries import FORMULATORS, QueryFormulator
from dynaprag.dynamic.triggers import TRIGGERS, TokenProbTrigger


@dataclass(frozen=True)
class DoubtedSpans:
    """What a confidence trigger saw in the sentence that fired (``Decision.sentence``): its tokens or
    entities and the uncertainty of each, which the reference's masked query removes above θ."""

    spans: list[str]
    scores: list[float]


@dataclass
class WholeLookAheadTrigger(LookAheadTrigger):
    """A look-ahead trigger after whose retrieval the whole regenerated continuation is kept unchecked
    and only then do the passages leave (TokenRAG.inference, generate.py:381-392; EntityRAG inherits it)."""

    @property
    def after_retrieval(self) -> AfterRetrieval:
        return AfterRetrieval(recheck=False, accept_tokens=self.look_ahead, passages="accepted")


@dataclass
class TokenConfidenceTrigger(WholeLookAheadTrigger):
    """TokenRAG as the reference computes it (``TokenRAG.modifier``): per spaCy sentence of the
    look-ahead, the mean of ``1 - p`` over its tokens; the first sentence above θ fires.

    θ from the DRAGIN repository's Llama2-7b ``FLARE.json`` configs (``method: token``): 0.08 on
    HotpotQA and IIRC (a sentence fires when its mean token probability is below 0.92), 0.1 on
    2Wiki and StrategyQA (the ``token-rag`` preset sets it per dataset). The masked query is the
    ``masked-tokens`` formulator's; after a retrieval the whole regenerated look-ahead is kept
    (:mod:`dynaprag.dynamic.lookahead`). Tokens are searched without their leading space (the
    intended behaviour; the reference's search breaks on byte-level BPE tokens, see
    :func:`~dynaprag.dynamic.methods.confidence.scores.token_rag_check`).
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
            sentence=fired.sentence, scores={"mean 1-p": fired.score},
            observation=DoubtedSpans(toks[fired.start:fired.end + 1], list(fired.scores)))


@dataclass
class EntityConfidenceTrigger(WholeLookAheadTrigger):
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
            sentence=fired.sentence, scores=dict(zip(check.entities[check.sentence_index], fired.scores)),
            observation=DoubtedSpans(list(check.entities[check.sentence_index]), list(fired.scores)))


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
class MaskedSpanQuery(QueryFormulator):
    """FLARE's implicit query (Jiang et al. 2023, §3.2.1; jzbjyb/FLARE ``use_as_query``, ``simple``
    masking): the judged sentence with every token of ``p ≤ β`` replaced by a space, stripped,
    so wrong guesses do not steer retrieval. A fully masked sentence gives ``""``: no retrieval,
    as the reference loop issues only non-empty queries."""

    beta: float = field(default=0.4, metadata={"help": "mask tokens with p <= beta (FLARE: 0.4)", "min": 0.0})
    with_question: bool = field(default=False, metadata={"help": "prepend the question to the masked span"})

    def __call__(self, draft: Draft, decision: Decision, probe=None) -> str:
        start, end = decision.span
        text = confidence.flare_query(draft.pieces[start:end], draft.probs(start, end), low_prob=0.0,
                                      mask_prob=self.beta) if end > start else ""
        if not text:
            return draft.question if end <= start else ""
        return f"{draft.question} {text}" if self.with_question else text


@dataclass
class _ReferenceMaskQuery(QueryFormulator):
    """The DRAGIN repository's masking (``mask_spans``) and its ``direct`` query formulation.

    Reads the sentence, its spans (tokens or entities) and their uncertainties from the
    decision when the matching trigger gave them; otherwise takes the judged span's tokens
    with ``1 - p``. An empty query still retrieves, as the reference's ``TokenRAG.inference``
    does (``generate.py:373-381``; BM25 finds nothing and the sentence is regenerated).
    """

    retrieves_empty_query: ClassVar[bool] = True
    theta: float = field(default=0.08, metadata={"help": "mask spans whose uncertainty > theta", "min": 0.0})
    with_question: bool = field(default=False, metadata={"help": "prepend the question"})

    def __call__(self, draft: Draft, decision: Decision, probe=None) -> str:
        if isinstance(decision.observation, DoubtedSpans):
            sentence, spans, scores = decision.sentence, decision.observation.spans, decision.observation.scores
        else:
            start, end = decision.span
            sentence = draft.span_text(start, end)
            spans = [p.strip() for p in draft.pieces[start:end]]
            scores = [1 - p for p in draft.probs(start, end)]
        if not sentence:
            return draft.question
        # the reference's string as it is, spaces around the removed masks included (generate.py:374)
        text = confidence.direct_query(confidence.mask_spans(sentence, spans, scores, self.theta))
        return f"{draft.question} {text.strip()}" if self.with_question and text.strip() else text


@dataclass
class MaskedTokensQuery(_ReferenceMaskQuery):
    """TokenRAG's query (``TokenRAG.modifier`` + ``direct``): the sentence without its tokens of ``1 - p > θ``."""


@dataclass
class MaskedEntitiesQuery(_ReferenceMaskQuery):
    """EntityRAG's query (``EntityRAG.modifier`` + ``direct``): the sentence without its entities above θ."""

    theta: float = field(default=0.4, metadata={"help": "mask entities whose uncertainty > theta", "min": 0.0})


TRIGGERS.register("token-confidence", TokenConfidenceTrigger)
TRIGGERS.register("entity", EntityConfidenceTrigger)
TRIGGERS.register("flare", FlareTrigger)
FORMULATORS.register("masked-sentence", MaskedSpanQuery)
FORMULATORS.register("masked-tokens", MaskedTokensQuery)
FORMULATORS.register("masked-entities", MaskedEntitiesQuery)
