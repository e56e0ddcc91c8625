"""Typed answers and traces: what every method returns and what users inspect, plot and serve.

A :class:`Trace` records each retrieval decision (where in the answer it fired, the trigger's
scores for the tokens involved, the query, the hits), the generated tokens with their signals,
and the costs (forward passes, prompt and generated tokens, seconds). It serialises to plain
JSON so eval runs, the HTTP API and the viewer share one format.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TokenRecord:
    """One generated token as the trace shows it (kept tokens only, in answer order)."""

    text: str
    logprob: float
    entropy: float
    score: float | None = None  # the trigger's score for this token (RIND, 1-p, ...), if any


@dataclass
class RetrievalEvent:
    """One retrieval: where it fired, why, with what query and what came back.

    ``hit_*`` are the passages the answer used, so recall and the viewer see what it used: for
    PRAG, the first k usable of the top-k + 10 candidates, with the unusable ones it passed over
    in ``skipped_ids`` (spare candidates after the used ones are in neither). Traces written
    before ``skipped_ids`` existed load with it empty.

    ``discarded`` are the draft tokens the retrieval cut away (a look-ahead, a judged sentence),
    each with the trigger's score for it: what made the trigger fire, which the kept ``tokens``
    never show. ``fired`` is ``[start, end)`` in ``discarded``: the sentence that fired. Traces
    written before these existed load with them empty.
    """

    position: int  # number of answer tokens kept before the retrieval
    reason: str  # trigger's human-readable explanation
    query: str
    hit_ids: list[str]
    hit_titles: list[str] = field(default_factory=list)
    hit_texts: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)  # token text -> trigger score involved
    injection: str = "in-context"  # how the knowledge entered the model
    seconds: float = 0.0
    skipped_ids: list[str] = field(default_factory=list)  # candidates left out as unusable (PRAG)
    discarded: list[TokenRecord] = field(default_factory=list)  # draft tokens cut at this retrieval, scored
    fired: list[int] = field(default_factory=list)  # [start, end) in ``discarded``: the sentence that fired


@dataclass
class Trace:
    """Everything a method did to produce one answer."""

    method: str = ""
    retrievals: list[RetrievalEvent] = field(default_factory=list)
    tokens: list[TokenRecord] = field(default_factory=list)
    forward_passes: int = 0
    prompt_tokens: int = 0  # tokens prefilled (re-encoded context counts each time)
    generated_tokens: int = 0  # tokens decoded, including those later discarded
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    # how the scored short answer was read (dynaprag.lm.extraction.ForcedAnswer.to_dict); its
    # tokens and seconds are already included in the counts above when it was forced
    extraction: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Trace":
        data = dict(data)
        data["retrievals"] = [RetrievalEvent(**{**r, "discarded": [TokenRecord(**t) for t in r.get("discarded", [])]})
                              for r in data.get("retrievals", [])]
        data["tokens"] = [TokenRecord(**t) for t in data.get("tokens", [])]
        return cls(**data)


@dataclass
class Answer:
    """A method's final output: the full generated text, the extracted short answer, the trace."""

    text: str
    short: str
    trace: Trace

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "short": self.short, "trace": self.trace.to_dict()}
