"""Which hits to keep, and in what order: the selection axis of every method.

A :class:`Selector` receives the retriever's hits for one query and returns the ones to inject,
best first. ``top-k`` keeps them as retrieved; SeaKR's self-aware re-ranking and Self-RAG's
critique ranking (in :mod:`dynaprag.dynamic.seakr` and :mod:`dynaprag.dynamic.selfrag`) ask the
model about each hit through the probe, so they compose with any trigger (DRAGIN's timing with
SeaKR's document choice is ``trigger=rind selector=seakr-uncertainty``).
"""
from __future__ import annotations

from dataclasses import dataclass

from dynaprag.dynamic.component import Component
from dynaprag.dynamic.draft import Draft
from dynaprag.registry import Registry


@dataclass
class Selector(Component):
    """Base selector: keep the hits as retrieved (``top-k``)."""

    def __call__(self, hits: list, draft: Draft, probe=None) -> list:
        return list(hits)


@dataclass
class TopKSelector(Selector):
    """The retriever's top-k, in its order (every method without a re-ranker)."""


SELECTORS: Registry[type[Selector]] = Registry("selector")
SELECTORS.register("top-k", TopKSelector)
