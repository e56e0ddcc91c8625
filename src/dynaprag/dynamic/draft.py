"""What every component of a method sees: the answer drafted so far, as plain data.

The loop owns one :class:`Draft` per question and keeps it in step with the decoder: the kept
answer tokens with the signals of the forward passes that produced them (each filed by its
:meth:`~dynaprag.lm.signals.Signal.file`, e.g. attention rows re-indexed to answer and question
positions, so they survive a change of the knowledge slot), and sentence bookkeeping. Components only read it. Model access that a
component needs beyond these signals (sampling, side prompts) goes through the explicit
:class:`~dynaprag.dynamic.probe.Probe`, given only to components that declare ``needs_probe``.

A trigger answers with a :class:`Decision`: whether to retrieve, how much of the draft to
keep, why, and its per-token scores (which the trace shows).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from dynaprag.dynamic.text import is_sentence_end
from dynaprag.lm.decoding import StepOutput
from dynaprag.lm.signals import Signal


@dataclass(frozen=True)
class Decision:
    """A trigger's verdict on the draft at one step.

    ``retrieve`` says whether to retrieve now; then the first ``keep`` answer tokens are kept
    and the rest is discarded and regenerated with the new knowledge. ``span`` is the draft
    text the trigger judged (a sentence, a window), ``at`` the token that fired (DRAGIN's QFS
    reads its attention), ``sentence`` the text of the sentence that fired when the trigger
    names one (the trace marks it among the discarded tokens); a formulator may use them all
    to build the query. ``observation`` is the trigger's own typed record of what it saw, for
    the formulator of its family (e.g. the words and hits of DRAGIN's RIND). ``token_scores``
    (answer index -> score) are recorded in the trace whether or not retrieval fires.
    """

    retrieve: bool
    reason: str = ""
    keep: int = 0
    span: tuple[int, int] = (0, 0)
    at: int | None = None
    sentence: str = ""
    scores: Mapping[str, float] = field(default_factory=dict)  # shown with the retrieval event
    token_scores: Mapping[int, float] = field(default_factory=dict)
    observation: Any = None
    notes: tuple[str, ...] = ()

    @classmethod
    def fire(cls, reason: str, keep: int, **kwargs) -> "Decision":
        return cls(retrieve=True, reason=reason, keep=keep, **kwargs)

    @classmethod
    def hold(cls, **kwargs) -> "Decision":
        """Judged, no retrieval (the scores still go to the trace)."""
        return cls(retrieve=False, **kwargs)


@dataclass(frozen=True)
class AfterRetrieval:
    """What a trigger's retrieval means for the text after it: the trigger's declared policy.

    - ``recheck``: whether the text regenerated in place of discarded text is judged again
      (``False``: it is accepted unchecked, one sentence or ``accept_tokens`` tokens, as FLARE,
      DRAGIN and SeaKR do; a retrieval that discards nothing, e.g. before the first token,
      regenerates nothing, so what follows it is judged as usual);
    - ``accept_tokens``: accept this many regenerated tokens rather than one sentence (0);
    - ``passages``: how long the passages stay, ``"answer"`` (for the rest of the answer) or
      ``"accepted"`` (only while the accepted text is generated, then the slot is emptied);
    - ``on_skip``: what a retrieval that does not happen (empty or repeated query, no usable
      hit) means, ``"keep"`` (the judged text stays) or ``"end"`` (the answer ends at the cut).
    """

    recheck: bool = True
    accept_tokens: int = 0
    passages: str = "answer"
    on_skip: str = "keep"

    def __post_init__(self):
        if self.passages not in ("answer", "accepted") or self.on_skip not in ("keep", "end"):
            raise ValueError(f"bad AfterRetrieval policy {self}")


@dataclass(frozen=True)
class FinalAnswer:
    """A trigger's own final answer, replacing the one read from the draft (SeaKR's reasoning
    integration): the answer text (ending in "So the answer is X."), X, and notes for the trace.

    ``by_protocol``: X is what the method's protocol defines as its answer (Search-R1's answer tag),
    so it is scored as given: the one extraction (:meth:`dynaprag.pipeline.Pipeline.extract`)
    must not force "So the answer is" onto a text that has its answer in another form.
    """

    text: str
    short: str
    notes: tuple[str, ...] = ()
    by_protocol: bool = False


@dataclass
class Draft:
    """The answer so far, as components see it (indices are answer token indices)."""

    question: str
    question_pieces: list[str] = field(default_factory=list)  # question-slot tokens' text ("" = template)
    steps: list[StepOutput] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)  # each kept token's text
    signals: dict[str, dict[int, Any]] = field(default_factory=dict)  # key -> answer index -> filed value
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

    def filed(self, signal: Signal) -> Mapping[int, Any]:
        """What the draft keeps of ``signal``, by answer index (empty if no component reads it)."""
        return self.signals.get(signal.key, {})

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
    def append(self, step: StepOutput, piece: str, filed: Mapping[str, Any] = {}) -> None:
        """Add a token, its text and the filed values of its step's signals (by signal key)."""
        for key, value in filed.items():
            self.signals.setdefault(key, {})[len(self.steps)] = value
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
        for mapping in self.signals.values():
            for i in [i for i in mapping if i >= keep]:
                del mapping[i]
        self.checked = min(self.checked, keep)
        self.sentence_start = 0
        for i in range(keep, 0, -1):
            if is_sentence_end("".join(self.pieces[:i])):
                self.sentence_start = i
                break
        self.sentence_end = False
