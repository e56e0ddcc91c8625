"""What to retrieve: query formulators turn the question, the draft and a trigger's decision into a query.

Each formulator is a small dataclass (knobs with the paper's default, masking included) plus
one registry line. The trigger says *where* it fired (``decision.span``, ``decision.at``); the
formulator alone decides what text is searched. All fall back to the question when the draft
gives them nothing to work with (e.g. a retrieval before the first token).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from dynaprag import nlp
from dynaprag.dynamic import confidence
from dynaprag.dynamic.component import Component
from dynaprag.dynamic.draft import Decision, Draft
from dynaprag.dynamic.scoring import top_n_in_order
from dynaprag.dynamic.text import is_content_word, word_groups
from dynaprag.registry import Registry


@dataclass
class QueryFormulator(Component):
    """Base formulator: the question itself (sr-rag, and every method's first retrieval).

    ``retrieves_empty_query``: an empty query still counts as a retrieval (the draft is cut and
    regenerated, with whatever the search finds: nothing); otherwise it means no retrieval.
    """

    retrieves_empty_query: ClassVar[bool] = False

    def __call__(self, draft: Draft, decision: Decision, probe=None) -> str:
        return draft.question


@dataclass
class QuestionQuery(QueryFormulator):
    """The user's question (single-round RAG)."""


@dataclass
class SpanQuery(QueryFormulator):
    """The previous output: the draft span the trigger judged (FL-RAG's last n tokens, FS-RAG's
    last sentence), optionally prefixed with the question."""

    with_question: bool = field(default=False, metadata={"help": "prepend the question to the span"})

    def __call__(self, draft: Draft, decision: Decision, probe=None) -> str:
        text = draft.span_text(*decision.span)
        if not text:
            return draft.question
        return f"{draft.question} {text}" if self.with_question else text


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
        details = decision.details
        if "sentence" in details:
            sentence, spans, scores = details["sentence"], details["spans"], details["scores"]
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


@dataclass
class AttentionQuery(QueryFormulator):
    """DRAGIN's QFS (Su et al. 2024, §3.2): the ``n`` context words the triggering token attends
    to most (last layer, head-averaged), stop words removed, kept in their original order.

    The context is the question and the answer before the triggering token; the attention row
    is the triggering token's own (captured by the next step's forward pass), or the row of the
    pass that chose it when the token ended the sentence. ``n = 35`` is the HotpotQA setting
    of the paper's code (25 in the paper's text for 2Wiki). ``filter="pos"`` keeps words with a
    spaCy noun, verb, adjective, proper noun or number, as the reference code's word filter.
    """

    n: int = field(default=35, metadata={"help": "words kept in the query (DRAGIN: 25-40)", "min": 1,
                                               "max": 1000})
    filter: str = field(default="stopwords", metadata={"help": "stopwords (paper) | pos (reference code, spaCy)",
                                                       "choices": ("stopwords", "pos")})
    needs_attention: ClassVar[bool] = True

    def __call__(self, draft: Draft, decision: Decision, probe=None) -> str:
        i = decision.at if decision.at is not None else max(0, len(draft.steps) - 1)
        answer_row = draft.rows.get(i, draft.prev_rows.get(i))
        question_row = draft.question_rows.get(i, draft.prev_question_rows.get(i))
        pieces = list(draft.question_pieces) + draft.pieces[:i]
        weights = ([] if question_row is None else question_row.tolist())[: len(draft.question_pieces)]
        weights += [0.0] * (len(draft.question_pieces) - len(weights))
        answer_w = [] if answer_row is None else answer_row.tolist()[:i]
        weights += answer_w + [0.0] * (i - len(answer_w))
        groups = word_groups(pieces)
        keep_word = self._filter(["".join(pieces[j] for j in g) for g in groups])
        words, word_w = [], []
        for group, ok in zip(groups, keep_word):
            if ok:
                words.append("".join(pieces[j] for j in group).strip())
                word_w.append(max(weights[j] for j in group))
        if not words:
            return draft.question
        return " ".join(words[j] for j in top_n_in_order(word_w, self.n))

    def _filter(self, words: list[str]) -> list[bool]:
        if self.filter == "pos":
            real = nlp.real_words("".join(words))
            return [bool(w.strip()) and nlp.contains_real_word(w.strip(), real) for w in words]
        return [is_content_word(w) for w in words]


@dataclass
class ConfidentTokensQuery(QueryFormulator):
    """SeaKR-style query: the question plus the confidently generated words of the last sentence
    (tokens with ``p ≥ min_prob``), so the search is not steered by the model's guesses."""

    min_prob: float = field(default=0.5, metadata={"help": "keep answer tokens with p >= min_prob", "min": 0.0})

    def __call__(self, draft: Draft, decision: Decision, probe=None) -> str:
        start, end = draft.last_sentence() if draft.steps else (0, 0)
        keep = [draft.pieces[i] for i in range(start, end) if draft.steps[i].prob >= self.min_prob]
        text = "".join(keep).strip()
        return f"{draft.question} {text}".strip()


FORMULATORS: Registry[type[QueryFormulator]] = Registry("query formulator")
FORMULATORS.register("question", QuestionQuery)
FORMULATORS.register("previous-output", SpanQuery)
FORMULATORS.register("masked-sentence", MaskedSpanQuery)
FORMULATORS.register("masked-tokens", MaskedTokensQuery)
FORMULATORS.register("masked-entities", MaskedEntitiesQuery)
FORMULATORS.register("qfs", AttentionQuery)
FORMULATORS.register("confident-tokens", ConfidentTokensQuery)
