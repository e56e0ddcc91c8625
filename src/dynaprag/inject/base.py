"""How retrieved knowledge enters the model: the fourth axis of every method.

An :class:`Injector` turns passages into an :class:`Injection`: text for the prompt's knowledge
slot and/or a weight change (LoRA adapters) applied before prefill.

An injector that cannot use every passage (PRAG: a passage whose augmentation never parsed has
no adapter) declares ``extra_candidates``: the loop then retrieves that many hits beyond k and
asks for at most k (``use``); the injector walks the candidates in order, reports which it
used and which it skipped, and the trace records both. The decoding loop treats
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
    used: Sequence[Passage] = ()  # the passages the answer uses (weights or context), in order
    skipped: Sequence[Passage] = ()  # candidates left out as unusable (PRAG: augmentation never parsed)

    @property
    def changes_weights(self) -> bool:
        return self.weights is not None

    def apply(self) -> AbstractContextManager:
        return self.weights if self.weights is not None else nullcontext()

    def used_of(self, offered: Sequence[Passage], use: int | None = None) -> list[Passage]:
        """The passages of ``offered`` the answer uses: ``used`` as reported, or, when the injector
        reported neither used nor skipped passages (it has no notion of unusable ones), the first
        ``use`` offered (all for None), which is what :meth:`Injector.inject` promises to take."""
        if self.used or self.skipped:
            return list(self.used)
        return list(offered)[:use]


class Injector(ABC):
    """Turns retrieved passages into an :class:`Injection` for the question being answered."""

    name = "injector"
    #: whether an injection may change the model's weights (PRAG, DyPRAG); a batch of questions
    #: shares the weights, so such a method's questions are decoded one at a time
    may_change_weights: ClassVar[bool] = False
    #: candidates to retrieve beyond k, for an injector that may find some passages unusable and
    #: then takes the next retrieved one instead (PRAG retrieves top-k + 10); 0 = exactly top-k
    extra_candidates: ClassVar[int] = 0

    def bind(self, generator) -> None:  # noqa: B027 - optional hook
        """Called once with the :class:`~dynaprag.lm.Generator` before first use."""

    @abstractmethod
    def inject(self, passages: Sequence[Passage], question: str, *, use: int | None = None) -> Injection:
        """Make ``passages`` available to the model for ``question``.

        ``use``: use at most this many usable passages, the first ones in order (None = all);
        the rest are spare candidates (see ``extra_candidates``), neither prepared nor used. An
        injector that leaves a passage out reports ``Injection.used`` and ``Injection.skipped``.
        """


class InContextInjector(Injector):
    """Standard RAG: passages go into the prompt's knowledge slot."""

    name = "in-context"

    def inject(self, passages: Sequence[Passage], question: str, *, use: int | None = None) -> Injection:
        used = list(passages)[:use]
        return Injection(context=used, kind="in-context", used=used)


INJECTORS: Registry[type[Injector]] = Registry("injector")
INJECTORS.register("in-context", InContextInjector)
