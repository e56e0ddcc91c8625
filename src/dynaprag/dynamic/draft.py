"""What every component of a method sees: the answer drafted so far, as plain data.

The loop owns one :class:`Draft` per question and keeps it in step with the decoder: the kept
answer tokens with the signals of the forward passes that produced them, the attention rows the
generator captured (re-indexed to answer and question positions, so they survive a change of
the knowledge slot), and sentence bookkeeping. Components only read it. Model access that a
component needs beyond these signals (sampling, side prompts) goes through the explicit
:class:`~dynaprag.dynamic.probe.Probe`, given only to components that declare ``needs_probe``.

A trigger answers with a :class:`Decision`: whether to retrieve, how much of the draft to
keep, why, and its per-token scores (which the trace shows).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from dynaprag.dynamic.text import is_sentence_end
from dynaprag.lm.generator import StepOutput


@dataclass(frozen=True)
class Decision:
    """A trigger's verdict on the draft at one step.

    ``retrieve`` says whether to retrieve now; then the first ``keep`` answer tokens are kept
    and the rest is discarded and regenerated with the new knowledge. ``span`` is the draft
    text the trigger judged (a sentence, a window), ``at`` the token that fired (DRAGIN's QFS
    reads its attention); a formulator may use both to build the query. ``token_scores``
    (answer index -> score) are recorded in the trace whether or not retrieval fires.
    """

    retrieve: bool
    reason: str = ""
    keep: int = 0
    span: tuple[int, int] = (0, 0)
    at: int | None = None
    scores: Mapping[str, float] = field(default_factory=dict)  # shown with the retrieval event
    token_scores: Mapping[int, float] = field(default_factory=dict)
    accept_next_sentence: bool = False  # FLARE-style: the regenerated sentence is not re-checked
    context_for_sentence: bool = False  # DRAGIN: the passages serve the accepted text only, then leave
    accept_tokens: int = 0  # TokenRAG: accept this many regenerated tokens (its whole look-ahead), not one sentence
    end_if_skipped: bool = False  # SeaKR: no retrieval (empty/repeated query, no new hit) ends the answer at keep
    details: Mapping[str, Any] = field(default_factory=dict)  # what the trigger saw, for a formulator that reads it
    notes: tuple[str, ...] = ()

    @classmethod
    def fire(cls, reason: str, keep: int, **kwargs) -> "Decision":
        return cls(retrieve=True, reason=reason, keep=keep, **kwargs)

    @classmethod
    def hold(cls, **kwargs) -> "Decision":
        """Judged, no retrieval (the scores still go to the trace)."""
        return cls(retrieve=False, **kwargs)


@dataclass(frozen=True)
class FinalAnswer:
    """A trigger's own final answer, replacing the one read from the draft (SeaKR's reasoning
    integration): the answer text (ending in "So the answer is X."), X, and notes for the trace."""

    text: str
    short: str
    notes: tuple[str, ...] = ()


@dataclass
class Draft:
    """The answer so far, as components see it (indices are answer token indices)."""

    question: str
    question_pieces: list[str] = field(default_factory=list)  # question-slot tokens' text ("" = template)
    steps: list[StepOutput] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)  # each kept token's text
    rows: dict[int, torch.Tensor] = field(default_factory=dict)  # i -> token i's attention over answer[0..i]
    question_rows: dict[int, torch.Tensor] = field(default_factory=dict)  # i -> its attention over the question
    prev_rows: dict[int, torch.Tensor] = field(default_factory=dict)  # i -> attention of the step that chose i
    prev_question_rows: dict[int, torch.Tensor] = field(default_factory=dict)
    checked: int = 0  # tokens before this index were already judged; not re-checked
    sentence_start: int = 0
    last_retrieval_at: int = 0
    retrievals: int = 0
    at_start: bool = True  # no token generated yet for this question
    sentence_end: bool = False  # the last token ended a sentence
    ended: bool = False  # the draft cannot grow (end of sequence or budget): judge what is left
    end_step: StepOutput | None = None  # the end-of-sequence step, when that is why it ended
    retrieving_at: int | None = None  # while hits are selected: the answer index the draft will be cut at
    passages: list = field(default_factory=list)  # the knowledge slot now (Passage objects)
    queries: list[str] = field(default_factory=list)  # the queries of the retrievals so far

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

    # -- updates (the loop's only) ---------------------------------------------------------
    def append(self, step: StepOutput, piece: str) -> None:
        self.steps.append(step)
        self.pieces.append(piece)
        self.at_start = False
        self.sentence_end = is_sentence_end(self.text)

    def retext(self, length: int) -> None:
        """Shorten the last pieces so the draft's text is its first ``length`` characters.

        Used when decoding the answer with one more token changes text already decoded (a
        character split over byte tokens decodes as U+FFFD until its last byte arrives); the
        new token's piece then carries the corrected text.
        """
        excess = len(self.text) - length
        for i in range(len(self.pieces) - 1, -1, -1):
            if excess <= 0:
                break
            cut = min(len(self.pieces[i]), excess)
            self.pieces[i] = self.pieces[i][: len(self.pieces[i]) - cut]
            excess -= cut

    def truncate(self, keep: int) -> None:
        """Drop answer tokens from ``keep`` on and recompute where the current sentence starts."""
        del self.steps[keep:]
        del self.pieces[keep:]
        for mapping in (self.rows, self.question_rows, self.prev_rows, self.prev_question_rows):
            for i in [i for i in mapping if i >= keep]:
                del mapping[i]
        self.checked = min(self.checked, keep)
        self.sentence_start = 0
        for i in range(keep, 0, -1):
            if is_sentence_end("".join(self.pieces[:i])):
                self.sentence_start = i
                break
        self.sentence_end = False
