"""What to retrieve: query formulators turn the question, the draft and a trigger's decision into a query.

Each formulator is a small dataclass (knobs with the paper's default) plus one registry line.
All fall back to the question when the draft gives them nothing to work with (e.g. a
retrieval before the first token).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from dynaprag.dynamic.draft import STOP_WORDS, Decision, Draft, word_groups
from dynaprag.dynamic.scoring import top_n_in_order
from dynaprag.registry import Registry


@dataclass
class QueryFormulator:
    """Base formulator: the question itself (sr-rag, and every method's first retrieval)."""

    def __call__(self, draft: Draft, decision: Decision) -> str:
        return draft.question


@dataclass
class QuestionQuery(QueryFormulator):
    """The user's question (single-round RAG)."""


@dataclass
class SpanQuery(QueryFormulator):
    """The previous output: the draft span the trigger names (FL-RAG's last n tokens, FS-RAG's
    last sentence), optionally prefixed with the question."""

    with_question: bool = field(default=False, metadata={"help": "prepend the question to the span"})

    def __call__(self, draft: Draft, decision: Decision) -> str:
        text = draft.span_text(*decision.span)
        if not text:
            return draft.question
        return f"{draft.question} {text}" if self.with_question else text


@dataclass
class MaskedSpanQuery(QueryFormulator):
    """FLARE's implicit query (Jiang et al. 2023, §3.2.1): the look-ahead sentence with its
    low-confidence tokens removed, so wrong guesses do not steer retrieval."""

    with_question: bool = field(default=False, metadata={"help": "prepend the question to the masked span"})

    def __call__(self, draft: Draft, decision: Decision) -> str:
        text = draft.span_text(*decision.span, masked=decision.masked)
        if len(text.split()) < 2:
            return draft.question if not text else f"{draft.question} {text}"
        return f"{draft.question} {text}" if self.with_question else text


def _is_content(word: str) -> bool:
    w = word.strip().lower().strip(".,;:!?\"'()[]")
    return bool(w) and any(c.isalnum() for c in w) and w not in STOP_WORDS


@dataclass
class AttentionQuery(QueryFormulator):
    """DRAGIN's QFS (Su et al. 2024, §3.2): the ``n`` context words the triggering token attends
    to most (last layer, head-averaged), stop words removed, kept in their original order.

    The context is the question and the answer before the triggering token; the attention row
    is the triggering token's own (captured by the next step's forward pass), or the row of the
    pass that chose it when the token ended the sentence. ``n = 35`` is the HotpotQA setting
    of the paper's code (25 in the paper's text for 2Wiki; 40 in its 2Wiki config).
    ``filter="pos"`` keeps nouns, verbs, adjectives, proper nouns and numbers with spaCy as
    the reference code does; without spaCy it falls back to the stop-word filter (noted).
    """

    n: int = field(default=35, metadata={"help": "words kept in the query (DRAGIN: 25-40)"})
    filter: str = field(default="stopwords", metadata={"help": "stopwords (paper) | pos (reference code, spaCy)"})

    def __call__(self, draft: Draft, decision: Decision) -> str:
        i = decision.focus if decision.focus is not None else max(0, len(draft.steps) - 1)
        answer_row = draft.rows.get(i, draft.prev_rows.get(i))
        question_row = draft.question_rows.get(i, draft.prev_question_rows.get(i))
        pieces = list(draft.question_pieces) + draft.pieces[:i]
        weights = ([] if question_row is None else question_row.tolist())[: len(draft.question_pieces)]
        weights += [0.0] * (len(draft.question_pieces) - len(weights))
        answer_w = [] if answer_row is None else answer_row.tolist()[:i]
        weights += answer_w + [0.0] * (i - len(answer_w))
        groups = word_groups(pieces)
        keep_word = self._filter(pieces, groups, draft)
        words, word_w = [], []
        for group, ok in zip(groups, keep_word):
            if ok:
                words.append("".join(pieces[j] for j in group).strip())
                word_w.append(max(weights[j] for j in group))
        if not words:
            return draft.question
        return " ".join(words[j] for j in top_n_in_order(word_w, self.n))

    def _filter(self, pieces: list[str], groups: list[list[int]], draft: Draft) -> list[bool]:
        words = ["".join(pieces[j] for j in g) for g in groups]
        if self.filter == "pos":
            try:
                import spacy

                from dynaprag.dynamic.triggers import _spacy_model

                nlp = _spacy_model(spacy)
                keep_pos = {"NOUN", "ADJ", "VERB", "PROPN", "NUM"}
                real = {t.text for t in nlp("".join(pieces)) if t.pos_ in keep_pos}
                return [w.strip().strip(".,;:!?\"'()[]") in real for w in words]
            except (ImportError, OSError):
                if "qfs: spaCy unavailable, POS filter fell back to stop words" not in draft.notes:
                    draft.notes.append("qfs: spaCy unavailable, POS filter fell back to stop words")
        elif self.filter != "stopwords":
            raise ValueError(f"qfs filter must be 'stopwords' or 'pos', not {self.filter!r}")
        return [_is_content(w) for w in words]


@dataclass
class ConfidentTokensQuery(QueryFormulator):
    """SeaKR-style query: the question plus the confidently generated words of the last sentence
    (tokens with ``p ≥ min_prob``), so the search is not steered by the model's guesses."""

    min_prob: float = field(default=0.5, metadata={"help": "keep answer tokens with p >= min_prob"})

    def __call__(self, draft: Draft, decision: Decision) -> str:
        start, end = draft.last_sentence() if draft.steps else (0, 0)
        keep = [draft.pieces[i] for i in range(start, end) if draft.steps[i].prob >= self.min_prob]
        text = "".join(keep).strip()
        return f"{draft.question} {text}".strip()


FORMULATORS: Registry[type[QueryFormulator]] = Registry("query formulator")
FORMULATORS.register("question", QuestionQuery)
FORMULATORS.register("previous-output", SpanQuery)
FORMULATORS.register("masked-sentence", MaskedSpanQuery)
FORMULATORS.register("qfs", AttentionQuery)
FORMULATORS.register("confident-tokens", ConfidentTokensQuery)
