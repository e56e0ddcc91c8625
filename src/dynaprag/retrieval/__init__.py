"""Retrieval: one :class:`Retriever` interface over BM25, dense, hybrid, Milvus and Elasticsearch.

>>> from dynaprag.retrieval import RetrieverConfig, build_retriever
>>> retriever = build_retriever(RetrieverConfig(backend="bm25"))        # doctest: +SKIP
>>> [h.title for h in retriever.search_one("Where was Einstein born?", k=2)]  # doctest: +SKIP
"""
from dynaprag.retrieval.base import Hit, Retriever
from dynaprag.retrieval.config import (
    BACKENDS,
    RetrieverConfig,
    build_retriever,
    demo_corpus_path,
    demo_questions_path,
)

__all__ = ["BACKENDS", "Hit", "Retriever", "RetrieverConfig", "build_retriever", "demo_corpus_path",
           "demo_questions_path"]
