"""An in-memory retriever for unit tests: passages ranked by the words they share with the query."""
from __future__ import annotations

import re
from typing import Sequence

from dynaprag.corpus import Passage
from dynaprag.retrieval.base import Hit, Retriever, check_k

_WORD = re.compile(r"\w+")


class InMemoryRetriever(Retriever):
    """Ranks ``passages`` by the number of distinct query words in title + text (ties: list order).

    Records every query it was asked (``queries``), so a test can check what a formulator sent.
    """

    name = "in-memory"

    def __init__(self, passages: Sequence[Passage]):
        self.passages = list(passages)
        self._words = [set(_WORD.findall(f"{p.title} {p.text}".lower())) for p in self.passages]
        self.queries: list[str] = []

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        k = check_k(k)
        out = []
        for query in queries:
            self.queries.append(query)
            words = set(_WORD.findall(query.lower()))
            scored = sorted(((len(words & w), -i) for i, w in enumerate(self._words)), reverse=True)
            out.append([Hit(self.passages[-neg], float(score)) for score, neg in scored[:k]])
        return out
