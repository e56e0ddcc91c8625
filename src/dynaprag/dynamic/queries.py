"""What to retrieve: query formulators turn the question, the draft and a trigger's decision into a query.

Each formulator is a small dataclass (knobs with the paper's default, masking included) plus
one registry line. The trigger says *where* it fired (``decision.span``, ``decision.at``); the
formulator alone decides what text is searched. All fall back to the question when the draft
gives them nothing to work with (e.g. a retrieval before the first token).

Here are the engine's generic formulators; a paper's formulators live in its method folder
(:mod:`dynaprag.dynamic.methods`) and register into :data:`FORMULATORS` from there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from dynaprag.dynamic.component import Component
from dynaprag.dynamic.draft import Decision, Draft
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
FORMULATORS.register("confident-tokens", ConfidentTokensQuery)
