"""Which hits to keep, and in what order: the selection axis of every method.

A :class:`Selector` receives the retriever's hits for one query and returns the ones to inject,
best first. ``top-k`` keeps them as retrieved; SeaKR's self-aware re-ranking and Self-RAG's
critique ranking (in :mod:`dynaprag.dynamic.methods.seakr` and :mod:`dynaprag.dynamic.methods.selfrag`) ask the
model about each hit through the probe, so they compose with any trigger (DRAGIN's timing with
SeaKR's document choice is ``trigger=rind selector=seakr-uncertainty``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from dynaprag.dynamic.component import Component
from dynaprag.dynamic.draft import Draft
from dynaprag.registry import Registry


@dataclass
class Selector(Component):
    """Base selector: keep the hits as retrieved (``top-k``).

    ``accumulates``: the selector returns the whole knowledge slot (the passages chosen at
    earlier retrievals plus the new ones), all to be injected, so the loop's k bounds only the
    search (SeaKR keeps up to 5 documents, one per retrieval).
    """

    accumulates: ClassVar[bool] = False

    def __call__(self, hits: list, draft: Draft, probe=None) -> list:
        return list(hits)


@dataclass
class TopKSelector(Selector):
    """The retriever's top-k, in its order (every method without a re-ranker); ``k`` keeps fewer
    than the run's k (FLARE's released 2Wiki config retrieves 2)."""

    k: int = field(default=0, metadata={"help": "hits kept per retrieval; 0 = the run's k", "min": 0})

    def __call__(self, hits: list, draft: Draft, probe=None) -> list:
        return list(hits)[: self.k or None]


SELECTORS: Registry[type[Selector]] = Registry("selector")
SELECTORS.register("top-k", TopKSelector)
