"""How retrieved knowledge enters the model: the fourth axis of every method.

An :class:`Injector` turns passages into an :class:`Injection`: text for the prompt's knowledge
slot and/or a weight change (LoRA adapters) applied before prefill. The decoding loop treats
both uniformly: a weight change invalidates every KV cache computed without it (including the
few-shot prefix), so the loop re-prefills from the start when ``changes_weights`` is true.

New injectors are a small class plus one line: ``INJECTORS.register("name", MyInjector)``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from dynaprag.corpus import Passage
from dynaprag.registry import Registry


@dataclass
class Injection:
    """Passages made usable by the model: prompt context, a weight change, or both."""

    context: Sequence[Passage] = ()  # passages for the knowledge slot
    weights: AbstractContextManager | None = None  # applies adapters on enter, removes them on exit
    kind: str = "in-context"  # in-context | parametric | combined (recorded in the trace)
    notes: list[str] = field(default_factory=list)  # e.g. "doc 12: no adapter, fell back to context"

    @property
    def changes_weights(self) -> bool:
        return self.weights is not None

    def apply(self) -> AbstractContextManager:
        return self.weights if self.weights is not None else nullcontext()


class Injector(ABC):
    """Turns retrieved passages into an :class:`Injection` for the question being answered."""

    name = "injector"
    #: whether an injection may change the model's weights (PRAG, DyPRAG); a batch of questions
    #: shares the weights, so such a method's questions are decoded one at a time
    may_change_weights: ClassVar[bool] = False

    def bind(self, generator) -> None:  # noqa: B027 - optional hook
        """Called once with the :class:`~dynaprag.lm.Generator` before first use."""

    @abstractmethod
    def inject(self, passages: Sequence[Passage], question: str) -> Injection:
        """Make ``passages`` available to the model for ``question``."""


class InContextInjector(Injector):
    """Standard RAG: passages go into the prompt's knowledge slot."""

    name = "in-context"

    def inject(self, passages: Sequence[Passage], question: str) -> Injection:
        return Injection(context=list(passages), kind="in-context")


INJECTORS: Registry[type[Injector]] = Registry("injector")
INJECTORS.register("in-context", InContextInjector)
