"""Hybrid retrieval: reciprocal-rank fusion (RRF) of BM25 and dense rankings.

RRF (Cormack, Clarke & Buettcher, SIGIR 2009, eq. 1) scores a document by

    RRFscore(d) = sum over rankings r of 1 / (k + r(d)),   k = 60,

where r(d) is the 1-based rank of d in ranking r (absent documents contribute nothing). It
needs no score calibration between a lexical and a dense ranker. The paper fused the top
1000 of each run; we fuse the top ``rrf_depth`` (default 100, at least the requested k) to
keep dense search and passage loading cheap; documents below that depth contribute < 1/160.
"""
from __future__ import annotations

from typing import Sequence

from dynaprag.retrieval.base import Hit, Retriever, check_k
from dynaprag.retrieval.config import BACKENDS, RetrieverConfig


def rrf(rankings: Sequence[Sequence[str]], k: int = 60) -> list[tuple[str, float]]:
    """Fuse ranked id lists (best first) by RRF; returns (id, score) best first.

    Ties are broken by first appearance (earlier ranking, then earlier rank), so the result
    is deterministic.

    >>> rrf([["a", "b"], ["b", "c"]], k=60)[0][0]
    'b'
    """
    if k < 0:
        raise ValueError(f"RRF k must be >= 0, got {k}")
    scores: dict[str, float] = {}
    order: dict[str, int] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
            order.setdefault(doc, len(order))
    return sorted(scores.items(), key=lambda item: (-item[1], order[item[0]]))


class HybridRetriever(Retriever):
    """RRF over several retrievers (BM25 + dense by default); hits carry the fused score."""

    name = "hybrid"

    def __init__(self, retrievers: Sequence[Retriever], *, rrf_k: int = 60, depth: int = 100):
        if not retrievers:
            raise ValueError("a hybrid retriever needs at least one retriever to fuse")
        self.retrievers = list(retrievers)
        self.rrf_k = rrf_k
        self.depth = depth

    @property
    def fingerprint(self) -> str:
        parts = "|".join(r.fingerprint for r in self.retrievers)
        return f"rrf(k={self.rrf_k},depth={self.depth})[{parts}]"

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        check_k(k)
        if not queries:
            return []
        depth = max(k, self.depth)
        per_backend = [r.search(list(queries), depth) for r in self.retrievers]
        out = []
        for qi in range(len(queries)):
            passages = {}
            rankings = []
            for results in per_backend:
                rankings.append([h.id for h in results[qi]])
                for h in results[qi]:
                    passages.setdefault(h.id, h.passage)
            out.append([Hit(passages[doc], score) for doc, score in rrf(rankings, self.rrf_k)[:k]])
        return out


def build(config: RetrieverConfig, progress: bool = True) -> HybridRetriever:
    """BM25 and dense over the same corpus (each built on first use), fused by RRF."""
    from dynaprag.retrieval import bm25, dense

    return HybridRetriever([bm25.build_or_load(config, progress), dense.build_or_load(config, progress)],
                           rrf_k=config.rrf_k, depth=config.rrf_depth)


BACKENDS.register("hybrid", build)
