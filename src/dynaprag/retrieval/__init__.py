"""Retrieval: one :class:`Retriever` interface over BM25, dense, hybrid, Milvus and Elasticsearch."""
from dynaprag.retrieval.base import Hit, Retriever

__all__ = ["Hit", "Retriever"]
