"""One answer extraction for every method: a short forced continuation after "So the answer is".

Methods are scored on the short answer after "So the answer is". Small models often end without
that sentence once passages are in context (on qwen2.5-coder-0.5b only 16-32 % of sr-rag's
answers kept it), and scoring their first line instead measures format, not knowledge. The
DRAGIN repository fixes this at scoring time for every method alike (``src/eval.py``,
``regenerate_answer``, lines 26-60 @4d71efc): cut the answer at ``Question:``/``Note:``; if it
lacks "the answer is", append " So the answer is " and let the model continue greedily for 20
tokens from the few-shot prompt + question + answer, *without* retrieved passages.

:func:`force_answer` does the same with our prompt: the exemplar prefix (its KV cache reused),
no knowledge, the question, the method's answer, then ``" So the answer is"``. Because it never
sees passages or adapters, it is the same judge for every method; its tokens and seconds are
returned so callers count them in the method's cost.

Deviations from the reference, and why: the marker test is our :data:`ANSWER_PATTERN`
(case-insensitive "the answer is", the one :func:`extract_answer` reads) instead of a
case-sensitive substring, so an answer is forced exactly when extraction would otherwise fall
back to its first line; the appended marker has no trailing space (a trailing space makes BPE
tokenizers predict a space-less word piece next); the continuation stops at a newline, where
the reference cut its 20 tokens at ``Question:`` afterwards.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from dynaprag.lm.prompts import ANSWER_MARKER, ANSWER_PATTERN, extract_answer

__all__ = ["FORCE_TOKENS", "SPLIT_WORDS", "ForcedAnswer", "cut_answer", "force_answer", "has_marker"]

FORCE_TOKENS = 20  # the reference's max_new_tokens for the forced continuation
SPLIT_WORDS = ("Question:", "#10000000", "Note:")  # the reference cuts an answer at these


@dataclass(frozen=True)
class ForcedAnswer:
    """The short answer a method is scored on, and what reading it cost.

    ``forced`` is False when the answer already stated its answer (nothing was generated);
    ``text`` is the answer the short answer was read from (with the forced continuation).
    """

    short: str
    raw_short: str  # what extract_answer reads from the method's own text
    text: str
    forced: bool
    continuation: str = ""
    generated_tokens: int = 0
    prompt_tokens: int = 0
    forward_passes: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cut_answer(text: str) -> str:
    """``text`` up to the first split word that is not at its very start (as the reference)."""
    for word in SPLIT_WORDS:
        pos = text.find(word)
        if pos > 0:
            text = text[:pos]
    return text


def has_marker(text: str) -> bool:
    """True when the (cut) answer already says "the answer is" and needs no forcing."""
    return ANSWER_PATTERN.search(cut_answer(text)) is not None


def force_answer(generator: Any, builder: Any, question: str, text: str, *, prefix: Any = None,
                 max_new_tokens: int = FORCE_TOKENS) -> ForcedAnswer:
    """The short answer of ``text`` for ``question``, forcing "So the answer is" when it is missing.

    ``generator`` is a :class:`~dynaprag.lm.generator.Generator` on base weights, ``builder`` the
    exemplar :class:`~dynaprag.lm.prompts.PromptBuilder`, ``prefix`` its cached prefix (optional).

    >>> force_answer(None, None, "Who?", " He was born in Paris. So the answer is Paris.").short
    'Paris'
    """
    raw_short = extract_answer(text)
    cot = cut_answer(text)
    if has_marker(cot):
        return ForcedAnswer(short=extract_answer(cot), raw_short=raw_short, text=cot, forced=False)
    from dynaprag.lm.generator import GenerationConfig  # here, so importing this module does not load torch

    start = time.perf_counter()
    body = cot.strip()
    lead = text[: len(text) - len(text.lstrip())] or (" " if builder.question_template.endswith(":") else "")
    forced_text = f"{lead}{body} {ANSWER_MARKER}" if body else f"{lead}{ANSWER_MARKER}"
    ids = builder.build(question, (), generator.encode(forced_text))
    state = generator.start(ids, prefix)
    gen = generator.generate(state, GenerationConfig(max_new_tokens=max_new_tokens, stop=("\n",) + SPLIT_WORDS))
    full = forced_text + gen.text
    counters = state.counters
    return ForcedAnswer(short=extract_answer(full), raw_short=raw_short, text=full, forced=True,
                        continuation=gen.text, generated_tokens=len(gen.steps),
                        prompt_tokens=counters.prompt_tokens, forward_passes=counters.forward_passes,
                        seconds=time.perf_counter() - start)
