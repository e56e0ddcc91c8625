"""Prompts with a fixed token order: ``[prefix][knowledge slot][question][answer so far]``.

The prefix (instructions + few-shot exemplars, wrapped in the model's chat template when it
has one) never changes within a run, so its KV cache is computed once and reused for every
question and every retrieval step. Segments are tokenised separately and concatenated, so a
segment boundary never re-tokenises differently between calls.

Exemplars are ours, in ``dynaprag/data/exemplars.yaml``: chain-of-thought answers ending in
"So the answer is ...", the form the DRAGIN/FLARE line of work prompts for.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Sequence

import yaml

from dynaprag.corpus import Passage

ANSWER_MARKER = "So the answer is"
ANSWER_PATTERN = re.compile(r"\bthe answer is\b", re.IGNORECASE)  # what extract_answer looks for
_SYS, _USER = "\x00SYSTEM\x00", "\x00USER\x00"


@dataclass(frozen=True)
class Exemplar:
    question: str
    answer: str  # chain of thought ending in "So the answer is X."


@dataclass
class PromptConfig:
    """How questions are posed to the model."""

    exemplars: str = field(default="default", metadata={"help": "exemplar set name in data/exemplars.yaml"})
    shots: int = field(default=3, metadata={"help": "how many exemplars to show (0 = zero-shot)"})
    style: str = field(default="cot", metadata={"help": "cot (reason, then 'So the answer is') or direct"})


@lru_cache(maxsize=None)
def exemplar_sets() -> dict[str, dict]:
    text = resources.files("dynaprag").joinpath("data/exemplars.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def load_exemplars(name: str) -> tuple[str, list[Exemplar]]:
    """(instructions, exemplars) of a named set; unknown names list the known ones."""
    sets = exemplar_sets()
    if name not in sets:
        raise KeyError(f"unknown exemplar set {name!r}; choose one of: {', '.join(sorted(sets))}")
    data = sets[name]
    return data["instructions"].strip(), [Exemplar(e["question"], e["answer"]) for e in data["exemplars"]]


def format_passages(passages: Sequence[Passage]) -> str:
    if not passages:
        return ""
    lines = [f"[{i + 1}] {p.as_context()}" for i, p in enumerate(passages)]
    return "Context:\n" + "\n".join(lines) + "\n\n"


def extract_answer(text: str) -> str:
    """The short answer in a generation: what follows the last "So the answer is", else the first line.

    One function for every method, so methods are scored the same way. "The answer is X" without
    the "So" counts too (small models often open with it), matched case-insensitively.
    """
    matches = list(ANSWER_PATTERN.finditer(text))
    if matches:
        tail = text[matches[-1].end():].lstrip(" :")
        tail = tail.split("\n")[0]
        tail = re.split(r"(?<=[^A-Z0-9])\.(\s|$)", tail)[0]
        return tail.strip().rstrip(".").strip()
    first = text.strip().split("\n")[0]
    return first.strip().rstrip(".").strip()


class PromptBuilder:
    """Token ids for ``[prefix][knowledge][question][answer so far]`` on one model's tokenizer."""

    def __init__(self, tokenizer, chat: bool, config: PromptConfig | None = None):
        self.tokenizer = tokenizer
        self.config = config or PromptConfig()
        instructions, exemplars = load_exemplars(self.config.exemplars)
        shots = exemplars[: self.config.shots]
        if self.config.style == "direct":
            instructions += " Answer with only the answer, no explanation."
            shots = [Exemplar(e.question, extract_answer(e.answer) + ".") for e in shots]
        blocks = [instructions] + [f"Question: {e.question}\nAnswer: {e.answer}" for e in shots]
        system = "\n\n".join(blocks)
        if chat and getattr(tokenizer, "chat_template", None):
            rendered = tokenizer.apply_chat_template(
                [{"role": "system", "content": _SYS}, {"role": "user", "content": _USER}],
                tokenize=False, add_generation_prompt=True)
            head, rest = rendered.split(_SYS, 1)
            between, tail = rest.split(_USER, 1)
            self.prefix_text = head + system + between
            self.question_template = "Question: {question}" + tail
        else:
            self.prefix_text = system + "\n\n"
            self.question_template = "Question: {question}\nAnswer:"
        self.prefix_ids = self.encode(self.prefix_text)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def knowledge_ids(self, passages: Sequence[Passage]) -> list[int]:
        return self.encode(format_passages(passages))

    def question_ids(self, question: str) -> list[int]:
        return self.encode(self.question_template.format(question=question.strip()))

    def build(self, question: str, passages: Sequence[Passage] = (), answer_ids: Sequence[int] = ()) -> list[int]:
        return self.prefix_ids + self.knowledge_ids(passages) + self.question_ids(question) + list(answer_ids)
