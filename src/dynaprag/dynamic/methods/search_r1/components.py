"""Model-issued search (Search-R1 and its protocol family) on the one decoding loop.

The model decides when and what to search by writing tags; the four axes map onto the
protocol (:mod:`.protocol`) as follows:

* **when** -- :class:`ModelSearchTrigger` (``model-search``): a turn ends at its first closing
  tag, at end of turn, or at the protocol's per-turn token budget. A search fires a retrieval
  that keeps every token (``keep`` = the draft's length: nothing is rolled back); a turn with no
  valid action fires one that appends the protocol's invalid-action message (Search-R1) or ends
  the answer (protocols without one); the answer tag ends it; after ``max_turns`` observations
  the final turn gets none (``generation.py:278-310``). It judges at end of turn, so it declares
  ``judges_look_ahead``.
* **what** -- :class:`TagQuery` (``search-tag``): the query the trigger read between the tags
  (its :class:`~.protocol.Action` travels in ``Decision.observation``); under another trigger,
  the question.
* **which** -- :class:`TurnSelector` (``search-turns``): the protocol's top-k for the new turn,
  each filed as a :class:`~.builder.TurnPassage` with the answer index the turn ended at, after
  the earlier turns' (``accumulates``: the slot is every turn's passages so far; with a plain
  injector they are ordinary passages in the knowledge slot).
* **how** -- :class:`InformationBlockInjector` (``information-block``): in context, inline:
  its ``prompt_builder`` (:class:`~.builder.ProtocolPromptBuilder`) writes the protocol's prompt
  and puts each observation after its turn. ``checkpoint`` names the trained model the preset
  expects; binding to another model fails at once with one line.

The protocol is named on the trigger, the selector and the injector (presets set all three).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Sequence

from dynaprag.corpus import Passage
from dynaprag.dynamic.component import CapabilityError
from dynaprag.dynamic.draft import Decision, Draft, FinalAnswer
from dynaprag.dynamic.methods.search_r1.builder import ProtocolPromptBuilder, TurnPassage
from dynaprag.dynamic.methods.search_r1.protocol import (
    ANSWER, INVALID, PROTOCOLS, SEARCH, Action, SearchProtocol, cut_response, final_answer, parse_action, turn_end,
)
from dynaprag.dynamic.queries import FORMULATORS, QueryFormulator
from dynaprag.dynamic.selectors import SELECTORS, Selector
from dynaprag.dynamic.triggers import TRIGGERS, Trigger
from dynaprag.inject import INJECTORS, Injection, Injector
from dynaprag.retrieval.base import Hit

_PROTOCOL_HELP = {"help": "the tag protocol: search-r1, r1-searcher or research", "choices": tuple(PROTOCOLS.names())}


def turn_text(draft: Draft) -> tuple[int, str]:
    """``(start, text)`` of the turn in progress: the answer since the last observation."""
    start = draft.last_retrieval_at if draft.retrievals else 0
    return start, "".join(draft.pieces[start:])


def turns_of(text_pieces: Sequence[str], ends: Sequence[int], protocol: SearchProtocol) -> list[str]:
    """Every turn's text as the reference keeps it, given the answer pieces and the turn ends."""
    out, start = [], 0
    for end in [*ends, len(text_pieces)]:
        if end < start:
            continue
        out.append(cut_response(protocol, "".join(text_pieces[start:end])))
        start = end
    return out


@dataclass
class ModelSearchTrigger(Trigger):
    """Turn boundaries of a search protocol; see the module docstring."""

    protocol: str = field(default="search-r1", metadata=_PROTOCOL_HELP)
    max_turns: int = field(default=0, metadata={
        "help": "observations before the final turn (0: the protocol's; Search-R1's evaluation: 4)", "min": 0,
        "max": 64})
    turn_tokens: int = field(default=0, metadata={
        "help": "a turn's token budget (0: the protocol's; Search-R1: max_response_length 500)", "min": 0,
        "max": 8192})
    judges_look_ahead: ClassVar[bool] = True

    @property
    def spec(self) -> SearchProtocol:
        return PROTOCOLS.get(self.protocol)

    @property
    def turn_limit(self) -> int:
        return self.max_turns or self.spec.max_turns

    @property
    def token_limit(self) -> int:
        return self.turn_tokens or self.spec.turn_tokens

    def action(self, draft: Draft) -> Action | None:
        """The finished turn's action, or ``None`` while the turn goes on (end of turn or its
        token budget with no closing tag is an invalid action)."""
        start, text = turn_text(draft)
        if turn_end(self.spec, text) is not None:
            return parse_action(self.spec, cut_response(self.spec, text))
        over = len(draft.steps) - start >= self.token_limit
        if over or (draft.ended and draft.end_step is not None):
            return Action(INVALID, "")
        return None

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        if draft.at_start:
            return None
        action = self.action(draft)
        if action is None:
            return None if not draft.ended else Decision.hold(notes=("the turn ends at the budget",))
        start, end = turn_text(draft)[0], len(draft.steps)
        turn = draft.retrievals + 1
        if action.kind == ANSWER:
            return Decision.hold(notes=(f"turn {turn}: answer tag",))
        if draft.retrievals >= self.turn_limit:
            return Decision.hold(notes=(f"turn {turn}: the final turn after {self.turn_limit} observations "
                                        f"({action.kind}); the answer ends",))
        if action.kind == SEARCH:
            return Decision.fire(f"turn {turn}: the model searched {action.content!r}", keep=end, span=(start, end),
                                 observation=action)
        if self.spec.invalid is None or end == start:
            return Decision.hold(notes=(f"turn {turn}: no search or answer tag; the answer ends",))
        return Decision.fire(f"turn {turn}: no search or answer tag (the protocol's invalid-action message)",
                             keep=end, span=(start, end), observation=action)

    def finished(self, draft: Draft) -> bool:
        action = self.action(draft)
        if action is None:
            return False
        if action.kind == ANSWER or draft.retrievals >= self.turn_limit:
            return True
        return action.kind == INVALID and (self.spec.invalid is None or turn_text(draft)[0] == len(draft.steps))

    def integrate(self, draft: Draft, probe=None) -> FinalAnswer:
        """The turns as the reference keeps them; the short answer by the protocol's rule
        (empty when there is none: the reference scores that answer wrong)."""
        ends = {p.at for p in draft.passages if isinstance(p, TurnPassage)}  # none under e.g. a parametric injector
        ends = sorted(ends | ({draft.last_retrieval_at} if draft.retrievals else set()))
        text = "".join(turns_of(draft.pieces, ends, self.spec))
        short = final_answer(self.spec, text)
        note = "no answer tag: the short answer is empty" if short is None else f"answer tag: {short!r}"
        return FinalAnswer(text=text.strip(), short=short or "", notes=(note,), by_protocol=True)


@dataclass
class TagQuery(QueryFormulator):
    """The query the model wrote between the search tags (``""`` for an invalid turn, which then
    retrieves nothing); the question when another trigger fired."""

    retrieves_empty_query: ClassVar[bool] = True

    def __call__(self, draft: Draft, decision: Decision, probe=None) -> str:
        if isinstance(decision.observation, Action):
            return decision.observation.content if decision.observation.kind == SEARCH else ""
        return draft.question


@dataclass
class TurnSelector(Selector):
    """The observations so far plus the new turn's: its hits (top-k of the protocol) filed after
    the turn's last token, with the action it answers."""

    protocol: str = field(default="search-r1", metadata=_PROTOCOL_HELP)
    k: int = field(default=0, metadata={"help": "passages per search (0: the protocol's top-k; Search-R1: 3)",
                                        "min": 0, "max": 100})
    accumulates: ClassVar[bool] = True

    @property
    def search_k(self) -> int:
        return self.k or PROTOCOLS.get(self.protocol).top_k

    def __call__(self, hits: list, draft: Draft, probe=None) -> list:
        at = draft.retrieving_at if draft.retrieving_at is not None else len(draft.steps)
        spec = PROTOCOLS.get(self.protocol)
        start = draft.last_retrieval_at if draft.retrievals else 0
        action = parse_action(spec, cut_response(spec, "".join(draft.pieces[start:at])))
        if action.kind == ANSWER or not draft.pieces[start:at]:
            action = Action(SEARCH, draft.question)  # another trigger's retrieval: a block of passages
        kept = [Hit(p, 0.0) for p in draft.passages if isinstance(p, TurnPassage)]
        new = [TurnPassage(h.passage.id, h.passage.title, h.passage.text, at=at, kind=action.kind,
                           query=action.content) for h in hits[: self.search_k]]
        if not new:  # nothing to show: the turn is still filed, so its observation is written
            new = [TurnPassage(f"turn-{len({p.at for p in draft.passages}) + 1}", "", "", at=at, kind=action.kind,
                               query=action.content, marker=True)]
        return [*kept, *(Hit(p, 0.0) for p in new)]


@dataclass
class InformationBlockInjector(Injector):
    """Observations inline, in the protocol's block format (see :mod:`.builder`)."""

    protocol: str = field(default="search-r1", metadata=_PROTOCOL_HELP)
    demonstrate: bool = field(default=False, metadata={
        "help": "show one worked trajectory before the question (the -prompted variant; not the reference's)"})
    checkpoint: str = field(default="", metadata={
        "help": "the trained checkpoint this method expects (Hugging Face id); '' accepts any model"})
    name: ClassVar[str] = "information-block"

    def bind(self, generator) -> None:
        """Refuse a model other than ``checkpoint`` before any question (one line, no download)."""
        if self.checkpoint and not _is_checkpoint(generator, self.checkpoint):
            raise CapabilityError(
                f"method needs the {self.protocol} checkpoint {self.checkpoint!r} (model={self.checkpoint} or its "
                f"local folder; a GPU is advised), not {getattr(generator.lm, 'name', '?')!r}; for another model set "
                f"injector.checkpoint='' or use 'search-r1-prompted'")

    def prompt_builder(self, tokenizer, chat: bool) -> ProtocolPromptBuilder:
        return ProtocolPromptBuilder(tokenizer, chat, PROTOCOLS.get(self.protocol), self.demonstrate)

    def inject(self, passages: Sequence[Passage], question: str, *, use: int | None = None) -> Injection:
        filed = [p for p in passages if isinstance(p, TurnPassage)]
        plain = [p for p in passages if not isinstance(p, TurnPassage)][:use]  # another selector's: at 0
        context = [*filed, *(TurnPassage(p.id, p.title, p.text) for p in plain)]
        last = max((p.at for p in context), default=0)
        turn = [p for p in context if p.at == last]
        used: list[Passage] = [p for p in turn if not p.marker]
        if turn and not used:  # nothing found, or no search: the trace shows what was appended
            spec = PROTOCOLS.get(self.protocol)
            shown = ("(no search: the invalid-action message)", spec.invalid or "") if turn[0].kind == INVALID \
                else ("(nothing found)", spec.no_documents)
            used = [Passage(turn[0].id, *shown)]
        return Injection(context=context, kind="in-context", used=used)


def _is_checkpoint(generator, checkpoint: str) -> bool:
    """The loaded model is ``checkpoint``: the same Hugging Face id, a folder of that name, or a
    model whose config records it as its origin."""
    lm = getattr(generator, "lm", None)
    names = {str(getattr(lm, "name", ""))}
    config = getattr(getattr(lm, "model", None), "config", None)
    names.add(str(getattr(config, "_name_or_path", "") or ""))
    wanted = checkpoint.rstrip("/").split("/")[-1].lower()
    return any(n == checkpoint or (n and Path(n.rstrip("/")).name.lower() == wanted) for n in names)


TRIGGERS.register("model-search", ModelSearchTrigger)
FORMULATORS.register("search-tag", TagQuery)
SELECTORS.register("search-turns", TurnSelector)
INJECTORS.register("information-block", InformationBlockInjector)
