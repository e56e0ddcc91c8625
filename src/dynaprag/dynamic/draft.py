"""What a trigger or query formulator sees: the answer drafted so far and the decision it returns.

The loop owns a :class:`Draft` per question and keeps it in step with the decoder: the kept
answer tokens with their signals, where the current sentence starts, the attention rows the
generator captured (re-indexed to answer and question positions, so they survive a change of
the knowledge slot), and callbacks for methods that must sample (SeaKR) or read the next-token
distribution (Self-RAG). A trigger answers with a :class:`Decision`: retrieve now, keeping the
first ``keep`` answer tokens, because ``reason``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from dynaprag.corpus import Passage
from dynaprag.lm.generator import Generation, StepOutput

_SENTENCE_END = re.compile(r"(?<![A-Z])[.!?][\"')\]]*\s*$|\n\s*$")

# A compact English function-word list (ours), for DRAGIN's s_i and QFS's word filter.
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not now of off on once only or other our ours ourselves out over own same she should
so some such than that the their theirs them themselves then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you
your yours yourself yourselves also answer question thus therefore hence
""".split())


def is_sentence_end(text_so_far: str) -> bool:
    """True when ``text_so_far`` ends a sentence (., ! or ? not after a capital initial; or newline)."""
    return bool(text_so_far.strip()) and bool(_SENTENCE_END.search(text_so_far))


def word_groups(pieces: Sequence[str]) -> list[list[int]]:
    """Group token pieces into words: a new word starts at whitespace or punctuation."""
    groups: list[list[int]] = []
    for i, piece in enumerate(pieces):
        starts = not groups or piece[:1].isspace() or not piece.strip() or not piece.strip()[0].isalnum() \
            or not "".join(pieces[j] for j in groups[-1]).strip()[-1:].isalnum()
        if starts:
            groups.append([i])
        else:
            groups[-1].append(i)
    return groups


def content_flags(pieces: Sequence[str]) -> list[float]:
    """DRAGIN's ``s_i``: 1.0 for tokens of content words, 0.0 for stop words and punctuation."""
    flags = [0.0] * len(pieces)
    for group in word_groups(pieces):
        word = "".join(pieces[i] for i in group).strip().lower().strip(".,;:!?\"'()[]")
        if word and any(c.isalnum() for c in word) and word not in STOP_WORDS:
            for i in group:
                flags[i] = 1.0
    return flags


@dataclass
class Decision:
    """A trigger's "retrieve now": what to keep, why, and which tokens the query should use."""

    reason: str
    keep: int  # answer tokens to keep (the rest is discarded and regenerated)
    scores: dict[str, float] = field(default_factory=dict)  # token text -> score that fired
    span: tuple[int, int] = (0, 0)  # draft tokens the query is built from (start, end)
    masked: frozenset[int] = frozenset()  # draft indices left out of a masked query
    focus: int | None = None  # the triggering token (DRAGIN's QFS reads its attention)
    accept_next_sentence: bool = False  # FLARE-style: the regenerated sentence is not re-checked


@dataclass
class Draft:
    """The answer so far, as triggers and formulators see it (indices are answer token indices)."""

    question: str
    steps: list[StepOutput] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)  # each kept token's text
    rows: dict[int, torch.Tensor] = field(default_factory=dict)  # i -> token i's attention over answer[0..i]
    question_rows: dict[int, torch.Tensor] = field(default_factory=dict)  # i -> token i's attention over the question
    prev_rows: dict[int, torch.Tensor] = field(default_factory=dict)  # i -> attention of the step that chose i (answer cols)
    prev_question_rows: dict[int, torch.Tensor] = field(default_factory=dict)
    question_pieces: list[str] = field(default_factory=list)
    scores: dict[int, float] = field(default_factory=dict)  # trigger score per kept token
    checked: int = 0  # tokens before this index were already judged; not re-checked
    sentence_start: int = 0
    last_retrieval_at: int = 0
    retrievals: int = 0
    at_start: bool = True  # no token generated yet for this question
    sentence_end: bool = False  # the last token ended a sentence
    passages: list[Passage] = field(default_factory=list)
    sample: Callable[..., list[Generation]] | None = None  # sample(k, max_tokens, passages=None)
    next_logprobs: Callable[[], torch.Tensor] | None = None  # distribution of the next token
    ask: Callable[[str], torch.Tensor] | None = None  # next-token log-probs after a side prompt
    ask_with: Callable[[Sequence[Passage]], torch.Tensor] | None = None  # next-token log-probs with these passages
    token_id: Callable[[str], int | None] | None = None  # vocabulary lookup (reflection tokens)
    middle_layer: int = 0  # hidden_states index of the model's middle layer (SeaKR)
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def span_text(self, start: int, end: int, masked: frozenset[int] = frozenset()) -> str:
        return "".join(p for i, p in enumerate(self.pieces[start:end], start) if i not in masked).strip()

    def probs(self, start: int, end: int) -> list[float]:
        return [s.prob for s in self.steps[start:end]]

    def last_sentence(self) -> tuple[int, int]:
        """(start, end) of the most recently finished sentence (the current one if none finished)."""
        if self.sentence_end:
            return self.sentence_start, len(self.steps)
        start = self.sentence_start
        prev = 0
        for i in range(start - 1, 0, -1):
            if is_sentence_end("".join(self.pieces[: i])):
                prev = i
                break
        return (prev, start) if start > 0 else (0, len(self.steps))

    def truncate(self, keep: int) -> None:
        """Drop answer tokens from ``keep`` on and recompute where the current sentence starts."""
        del self.steps[keep:]
        del self.pieces[keep:]
        for mapping in (self.rows, self.question_rows, self.prev_rows, self.prev_question_rows, self.scores):
            for i in [i for i in mapping if i >= keep]:
                del mapping[i]
        self.checked = min(self.checked, keep)
        self.sentence_start = 0
        for i in range(keep, 0, -1):
            if is_sentence_end("".join(self.pieces[:i])):
                self.sentence_start = i
                break
        self.sentence_end = False
