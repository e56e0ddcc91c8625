"""The protocol's prompt with its observations interleaved: ``[prompt][turn 1][block 1][turn 2]...``.

The engine's prompt puts the knowledge slot before the question; a search protocol writes each
turn's passages *into the answer*, right after the turn's closing tag. The loop's knowledge slot
holds :class:`TurnPassage` records (each passage filed with the answer index its turn ended at),
and :class:`ProtocolPromptBuilder`, the ``prompt_builder`` of the protocol's injector, lays them
out: the prompt, then for each turn its text as the reference keeps it (cut at the closing tag,
decoded and re-tokenised, as ``generation.py`` re-tokenises its responses) and its observation's
tokens (cut to the protocol's ``observation_tokens``), then the tokens of the turn in progress.
So the engine never changes: a retrieval rebuilds the sequence from the cached prefix on, as for
any method.

The reusable prefix is the longest run of leading tokens two prompts with different questions
share, less one token (as :class:`~dynaprag.parametric.encode.PragPromptBuilder` finds it; the
probes are real questions, so the boundary tokenises as a question would): the
prompt is tokenised in one piece, as the reference does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from dynaprag.corpus import Passage
from dynaprag.dynamic.methods.search_r1.protocol import (
    ANSWER, SEARCH, Action, SearchProtocol, cut_response, observation,
)


@dataclass(frozen=True)
class TurnPassage(Passage):
    """A passage of the knowledge slot filed with the turn it answers: the answer index the turn
    ended at (its observation goes right after it), what the turn did (``kind``, ``query``).
    A turn that found no passage (an invalid action, an empty search) is one ``marker``."""

    at: int = 0
    kind: str = SEARCH
    query: str = ""
    marker: bool = False


@dataclass(frozen=True)
class Observation:
    """One finished turn's observation: where it goes, the action it answers, its passages."""

    at: int
    kind: str
    query: str
    passages: tuple[Passage, ...]


def observations(passages: Sequence[Passage]) -> list[Observation]:
    """The slot's passages as observations in answer order; plain passages (another selector's, a
    probe's) are one search block before the first turn."""
    turns: dict[int, list[Passage]] = {}
    heads: dict[int, TurnPassage] = {}
    for p in passages:
        at = p.at if isinstance(p, TurnPassage) else 0
        heads.setdefault(at, p if isinstance(p, TurnPassage) else TurnPassage(p.id, p.title, p.text))
        bucket = turns.setdefault(at, [])
        if not (isinstance(p, TurnPassage) and p.marker):
            bucket.append(p)
    return [Observation(at, heads[at].kind, heads[at].query, tuple(turns[at])) for at in sorted(turns)]


#: the ``-prompted`` variant's demonstration (ours, not the reference's): one worked trajectory
DEMONSTRATION_QUESTION = "Where was the director of Titanic born?"
DEMONSTRATION_TURNS = (
    ("I need to find the director of Titanic.", "Titanic director",
     Passage("demo-1", "Titanic (1997 film)", "Titanic is a 1997 film written and directed by James Cameron.")),
    ("The director is James Cameron. I need his birthplace.", "James Cameron birthplace",
     Passage("demo-2", "James Cameron", "James Cameron was born in Kapuskasing, Ontario, Canada.")),
)
DEMONSTRATION_ANSWER = ("James Cameron was born in Kapuskasing.", "Kapuskasing")


def demonstration(protocol: SearchProtocol) -> str:
    """The demonstration's assistant turn in ``protocol``'s tags and block format."""
    s_open, s_close = protocol.search_tags
    a_open, a_close = protocol.answer_tags
    out = ""
    for thought, query, passage in DEMONSTRATION_TURNS:
        out += f"<think> {thought} </think>\n{s_open} {query} {s_close}"
        out += observation(protocol, Action(SEARCH, query), [passage])
    thought, answer = DEMONSTRATION_ANSWER
    return out + f"<think> {thought} </think>\n{a_open} {answer} {a_close}"


class ProtocolPromptBuilder:
    """:class:`~dynaprag.lm.prompts.PromptBuilder`'s interface for a search protocol; see the module docstring."""

    def __init__(self, tokenizer, chat: bool, protocol: SearchProtocol, demonstrate: bool = False):
        self.tokenizer, self.protocol, self.demonstrate = tokenizer, protocol, demonstrate
        self.chat = bool(chat and protocol.chat != "none" and getattr(tokenizer, "chat_template", None))
        probes = [self.encode(self.prompt_text(q)) for q in ("Who was Alpha?", "What is Beta?")]
        n = 0
        while n < min(map(len, probes)) and probes[0][n] == probes[1][n]:
            n += 1
        self.prefix_ids = probes[0][: max(0, n - 1)]
        self.prefix_text = tokenizer.decode(self.prefix_ids)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def prompt_text(self, question: str) -> str:
        """The prompt for ``question``: the protocol's messages in the chat template (the
        demonstration first, as an earlier exchange, when asked for), else its raw text."""
        p = self.protocol
        if not self.chat:
            demo = f"{p.raw_text(DEMONSTRATION_QUESTION)}{demonstration(p)}\n\n" if self.demonstrate else ""
            return demo + p.raw_text(question)
        messages = p.messages(question)
        if self.demonstrate:
            messages = [*p.messages(DEMONSTRATION_QUESTION), {"role": "assistant", "content": demonstration(p)},
                        *[m for m in messages if m["role"] != "system"]]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def question_ids(self, question: str) -> list[int]:
        """The prompt's tokens after the cached prefix."""
        return self.encode(self.prompt_text(question))[len(self.prefix_ids):]

    def observation_ids(self, obs: Observation) -> list[int]:
        """The tokens appended after ``obs``'s turn, cut to the protocol's ``observation_tokens``."""
        ids = self.encode(observation(self.protocol, Action(obs.kind, obs.query), obs.passages))
        cap = self.protocol.observation_tokens
        return ids if cap is None else ids[:cap]

    def build(self, question: str, passages: Sequence[Passage] = (), answer_ids: Sequence[int] = ()) -> list[int]:
        """The sequence for ``question`` with the finished turns, their observations and the turn in progress."""
        ids = self.encode(self.prompt_text(question))
        answer, start = list(answer_ids), 0
        for obs in observations(passages):
            turn = self.decode(answer[start:obs.at])
            ids += self.encode(cut_response(self.protocol, turn)) if obs.kind != ANSWER else self.encode(turn)
            ids += self.observation_ids(obs)
            start = obs.at
        return ids + answer[start:]
