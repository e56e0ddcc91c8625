"""Retriever settings and the factory that turns them into a ready :class:`Retriever`.

``build_retriever(RetrieverConfig())`` gives BM25 over the packaged demo corpus; the index is
built on first use (with a progress bar) under ``$DYNAPRAG_CACHE/indexes`` and reloaded,
memory-mapped, afterwards.

>>> from dynaprag.retrieval import RetrieverConfig, build_retriever
>>> retriever = build_retriever(RetrieverConfig())                      # doctest: +SKIP
>>> retriever.search_one("Who directed Jaws?", k=1)[0].title            # doctest: +SKIP
'Jaws (film)'
"""
from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

from dynaprag.files import cache_dir
from dynaprag.registry import Registry
from dynaprag.retrieval.base import Retriever

#: backend name -> ``builder(config, progress) -> Retriever``; each backend module registers itself.
BACKENDS: Registry[Callable[["RetrieverConfig", bool], Retriever]] = Registry("retrieval backend")
_BACKEND_MODULES = ("bm25", "dense", "hybrid", "milvus", "elastic", "lucene")


def demo_corpus_path() -> Path:
    """The packaged demo corpus: 50 short passages with multi-hop chains and distractors."""
    return Path(str(resources.files("dynaprag") / "data" / "demo_corpus.jsonl"))


def demo_questions_path() -> Path:
    """Questions answerable from the demo corpus (``id, question, answers, supporting_doc_ids``)."""
    return Path(str(resources.files("dynaprag") / "data" / "demo_questions.jsonl"))


@dataclass
class RetrieverConfig:
    """Every retrieval knob, with the published defaults (Lucene BM25 k1=1.2, b=0.75; RRF k=60)."""

    backend: str = field(default="bm25", metadata={"help": "bm25 | dense | hybrid | milvus | elastic | lucene"})
    corpus: str | None = field(default=None, metadata={
        "help": "passages file (.jsonl id/title/text or DPR .tsv); None = the packaged demo corpus"})
    index_dir: str | None = field(default=None, metadata={
        "help": "index folder; None = $DYNAPRAG_CACHE/indexes/<backend>-<corpus fingerprint>-<settings>"})
    k1: float = field(default=1.2, metadata={"help": "BM25 term-frequency saturation (Lucene default 1.2)"})
    b: float = field(default=0.75, metadata={"help": "BM25 length normalisation (Robertson & Zaragoza 0.75)"})
    bm25_method: str = field(default="lucene", metadata={
        "help": "bm25s scoring variant: lucene | robertson | atire | bm25l | bm25+"})
    stemmer: str = field(default="english", metadata={"help": "PyStemmer (Snowball) language, or 'none'"})
    stopwords: str = field(default="en", metadata={"help": "bm25s stop-word list ('en'), or 'none'"})
    dense_model: str = field(default="all-MiniLM-L6-v2", metadata={
        "help": "sentence-transformers model: the packaged all-MiniLM-L6-v2, a local folder or a hub id"})
    dense_batch_size: int = field(default=64, metadata={"help": "passages per encoding batch"})
    dense_query_threads: int = field(default=1, metadata={
        "help": "torch threads while encoding queries (0 = torch's setting); 1 avoids OpenMP "
                "spin-waits on a shared CPU: 60 ms vs 755 ms per query measured on 2 busy cores"})
    rrf_k: int = field(default=60, metadata={"help": "RRF constant k (Cormack et al. 2009, k=60)"})
    rrf_depth: int = field(default=100, metadata={
        "help": "hits taken from each ranking before fusion (at least the requested k)"})
    milvus_uri: str | None = field(default=None, metadata={
        "help": "Milvus URI: a cluster (http://host:19530) or a milvus-lite .db file; None = a "
                "milvus-lite file inside the index folder"})
    milvus_token: str | None = field(default=None, metadata={
        "help": "Milvus token (user:password); None reads $MILVUS_TOKEN"})
    milvus_collection: str | None = field(default=None, metadata={
        "help": "collection name; None = dynaprag_<corpus fingerprint>"})
    milvus_search: str = field(default="bm25", metadata={
        "help": "bm25 (Milvus BM25 function, full text) | dense | hybrid (Milvus RRF ranker)"})
    milvus_dense_index: str = field(default="FLAT", metadata={
        "help": "Milvus index type of the dense field: FLAT (exact, as FAISS IndexFlatIP) or e.g. HNSW"})
    es_url: str | None = field(default=None, metadata={
        "help": "Elasticsearch/OpenSearch URL, e.g. http://localhost:9200; None reads $DYNAPRAG_ES_URL"})
    es_index: str = field(default="wiki", metadata={"help": "index name (DRAGIN/PRAG build 'wiki')"})
    es_title_field: str = field(default="title", metadata={"help": "title field of the index"})
    es_text_field: str = field(default="txt", metadata={"help": "passage text field (DRAGIN/BEIR use 'txt')"})
    es_tie_breaker: float = field(default=0.5, metadata={
        "help": "multi_match best_fields tie_breaker (BEIR/DRAGIN use 0.5)"})
    es_transport: str = field(default="client", metadata={
        "help": "client (elasticsearch package, same major version as the server) | http (stdlib, "
                "ES 7-9 and OpenSearch)"})
    lucene_stemmer: str = field(default="porter", metadata={
        "help": "lucene: the index's stemmer in Anserini's English analyzer: porter | krovetz | none",
        "choices": ("porter", "krovetz", "none")})
    lucene_stopwords: str = field(default="lucene", metadata={
        "help": "lucene: lucene (drop Lucene's 33 English stop words, pyserini's default) | none (keep them)",
        "choices": ("lucene", "none")})
    lucene_threads: int = field(default=1, metadata={"help": "lucene: threads searching a batch of queries",
                                                     "min": 1, "max": 64})
    cache: bool = field(default=True, metadata={"help": "memoise (query, k) -> hits for this backend"})
    cache_size: int = field(default=10000, metadata={"help": "entries kept by the in-memory LRU cache"})
    cache_path: str | None = field(default=None, metadata={
        "help": "SQLite file persisting the retrieval cache across runs; None = in memory only"})
    skip_bad_lines: bool = field(default=False, metadata={
        "help": "skip malformed corpus records (and report how many) instead of failing"})
    check_duplicates: bool = field(default=True, metadata={
        "help": "fail on a repeated passage id (keeps the set of ids in memory while indexing)"})

    def corpus_path(self) -> Path:
        return Path(self.corpus) if self.corpus else demo_corpus_path()

    def index_settings(self, backend: str | None = None) -> dict:
        """The settings baked into a ``backend`` index (default: this config's backend)."""
        backend = backend or self.backend
        if backend == "bm25":
            return {"k1": self.k1, "b": self.b, "method": self.bm25_method,
                    "stemmer": self.stemmer, "stopwords": self.stopwords}
        if backend == "dense":
            return {"model": self.dense_model}
        if backend == "lucene":
            return {"stemmer": self.lucene_stemmer, "stopwords": self.lucene_stopwords}
        if backend == "milvus":
            return {"model": self.dense_model, "k1": self.k1, "b": self.b, "dense_index": self.milvus_dense_index}
        return {}

    def resolved_index_dir(self, backend: str | None = None) -> Path:
        """The index folder for ``backend`` (default: this config's backend).

        An explicit ``index_dir`` is used as is for the config's own backend; a composite
        backend (hybrid) keeps its parts in ``index_dir/<part>``.
        """
        backend = backend or self.backend
        if self.index_dir:
            return Path(self.index_dir) if backend == self.backend else Path(self.index_dir) / backend
        from dynaprag.corpora import corpus_fingerprint

        settings = json.dumps(self.index_settings(backend), sort_keys=True)
        tag = hashlib.sha256(settings.encode()).hexdigest()[:8]
        return cache_dir() / "indexes" / f"{backend}-{corpus_fingerprint(self.corpus_path())}-{tag}"


def load_backends() -> None:
    """Import every backend module so it registers itself (they import heavy deps lazily)."""
    for name in _BACKEND_MODULES:
        importlib.import_module(f"dynaprag.retrieval.{name}")


def build_retriever(config: RetrieverConfig | None = None, *, progress: bool = True) -> Retriever:
    """A ready retriever for ``config``: builds the index on first use, reloads it afterwards.

    With ``config.cache`` (default) the backend is wrapped in a :class:`CachedRetriever`, so a
    repeated (query, k) costs a dictionary lookup.
    """
    config = config or RetrieverConfig()
    load_backends()
    retriever = BACKENDS.get(config.backend)(config, progress)
    if config.cache:
        from dynaprag.retrieval.cache import CachedRetriever

        retriever = CachedRetriever(retriever, max_entries=config.cache_size, path=config.cache_path)
    return retriever
