"""The one retrieval interface every method uses: batched ``search(queries, k)``."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from dynaprag.corpus import Passage


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
        """Ranked hits (best first) for each query, at most ``k`` per query."""

    @property
    def fingerprint(self) -> str:
        return self.name

    def search_one(self, query: str, k: int) -> list[Hit]:
        return self.search([query], k)[0]
