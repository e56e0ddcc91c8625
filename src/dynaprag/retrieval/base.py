"""The one retrieval interface every method uses: batched ``search(queries, k)``."""
from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass

from dynaprag.corpus import Passage


def check_k(k: object) -> int:
    """``k`` (hits per query) as a positive int; a ValueError naming ``k`` otherwise.

    Why: ``k=0`` or ``k=-1`` used to return nothing (or, through a backend's own slicing,
    something) with exit code 0, which hides a typo in a sweep of settings.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k (hits per query) must be a positive integer, got {k!r}")
    return int(k)


@dataclass(frozen=True)
class Hit:
    """A ranked search result: the passage and its backend score (higher is better)."""

    passage: Passage
    score: float

    @property
    def id(self) -> str:
        return self.passage.id

    @property
    def title(self) -> str:
        return self.passage.title

    @property
    def text(self) -> str:
        return self.passage.text


class Retriever(ABC):
    """Batched top-k search. ``fingerprint`` identifies backend + index + settings for caches."""

    name: str = "retriever"

    @abstractmethod
    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Ranked hits (best first) for each query, at most ``k`` per query.

        Implementations start with :func:`check_k`, so ``k < 1`` fails the same everywhere.
        """

    @property
    def fingerprint(self) -> str:
        return self.name

    def search_one(self, query: str, k: int) -> list[Hit]:
        return self.search([query], check_k(k))[0]
