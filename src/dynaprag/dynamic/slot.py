"""The knowledge slot of one question: the passages in its prompt and the weights applied for them.

The prompt has a fixed order, ``[instructions + exemplars] [knowledge slot] [question] [answer
so far]``, so a retrieval changes the sequence only from the slot onward. :class:`KnowledgeSlot`
owns what that takes: rebuilding the prompt around the kept answer, re-prefilling only the part
after the cached prefix when the weights stay, and starting a fresh sequence when an injection
changes the weights (a weight change invalidates every cached key and value, the prefix's too).
The weights an injection applies stay applied until the slot is refilled, emptied or closed,
so a question that ends or fails never leaves them on the model.

>>> slot = KnowledgeSlot(gen, builder, question, start)              # doctest: +SKIP
>>> state = slot.fill(state, injection, answer_ids)                  # doctest: +SKIP
>>> state = slot.empty(state, answer_ids)                            # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Callable, Sequence

from dynaprag.corpus import Passage
from dynaprag.inject import Injection
from dynaprag.lm.decoding import DecodeState


class KnowledgeSlot:
    """Passages and applied weights of one question; see the module docstring.

    ``start(ids)`` makes a new decode state for a prompt (the run's, which reuses the prefix
    cache unless :attr:`weighted`); :meth:`fill` and :meth:`empty` return the state to decode
    from next, which is the same state re-prefilled from the slot on, or a new one.
    """

    def __init__(self, generator, builder, question: str, start: Callable[[list[int]], DecodeState]):
        self.gen, self.builder, self.question = generator, builder, question
        # the run owns this slot: a bound method held strongly would make a cycle that keeps every
        # finished question's cache alive until a rare gen-2 collection (tests/test_memory.py)
        self._start = weakref.WeakMethod(start) if hasattr(start, "__self__") else (lambda: start)
        self.passages: list[Passage] = []
        self.weighted = False
        self._weights = contextlib.ExitStack()

    @property
    def start(self) -> Callable[[list[int]], DecodeState]:
        """The run's state maker (held weakly: see ``__init__``)."""
        return self._start()

    def fill(self, state: DecodeState, injection: Injection, answer: Sequence[int]) -> DecodeState:
        """Put ``injection``'s passages (and weights) in the slot, with ``answer`` after the question."""
        self.passages = list(injection.context)
        ids = self.builder.build(self.question, self.passages, list(answer))
        if injection.changes_weights or self.weighted:
            self._weights.close()
            if injection.changes_weights:
                self._weights.enter_context(injection.apply())
            self.weighted = injection.changes_weights
            return self.start(ids)
        return self._reprefill(state, ids)

    def empty(self, state: DecodeState, answer: Sequence[int]) -> DecodeState:
        """Take the passages (and weights) out again, keeping ``answer``."""
        ids = self.builder.build(self.question, (), list(answer))
        self.passages = []
        if self.weighted:
            self.close()
            return self.start(ids)
        return self._reprefill(state, ids)

    def close(self) -> None:
        """Remove the applied weights, if any (the passages stay as they are)."""
        self._weights.close()
        self.weighted = False

    def _reprefill(self, state: DecodeState, ids: list[int]) -> DecodeState:
        """Keep the cached prefix and queue everything after it for the next forward pass."""
        plen = len(self.builder.prefix_ids)
        self.gen.truncate(state, plen)
        self.gen.extend(state, ids[plen:])
        return state
