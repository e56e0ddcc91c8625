"""Milvus: the same pymilvus code against a local milvus-lite file or a Milvus cluster.

One collection per corpus holds ``id``, ``title``, ``content`` (title + newline + text, the
analysed field), a sparse vector filled server-side by Milvus's BM25 function from
``content`` (full-text search, no client-side tokenisation), and a dense vector from the
same sentence-transformers encoder as :mod:`dynaprag.retrieval.dense`. ``milvus_search``
picks ``bm25``, ``dense`` or ``hybrid`` (Milvus's RRF ranker, k=60, Cormack et al. 2009,
over the top ``rrf_depth`` of each, as in :mod:`dynaprag.retrieval.hybrid`).

BM25 uses k1/b from :class:`RetrieverConfig` (index params ``bm25_k1``/``bm25_b``) and the
standard tokenizer with lower-casing, bm25s's English stop-word list and an English stemmer
filter. Deviation: milvus-lite (the embedded file) implements only the tokenizer and the
stop-word filter, so lite does not stem; a Milvus cluster applies the stemmer too.

Point at a cluster with ``milvus_uri="http://host:19530"`` (token from ``milvus_token`` or
``$MILVUS_TOKEN``); by default a milvus-lite file ``milvus.db`` lives in the index folder.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterable

from dynaprag.corpus import Passage
from dynaprag.retrieval.base import Hit, Retriever, check_k
from dynaprag.retrieval.index_dir import build_lock, is_built, passage_text, read_meta, write_meta
from dynaprag.retrieval.config import BACKENDS, RetrieverConfig

SEARCH_MODES = ("bm25", "dense", "hybrid")
_BATCH = 512


def _client(uri: str, token: str | None):
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise ImportError("the Milvus backend needs the 'milvus' extra: pip install 'dynaprag[milvus]'") from None
    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    return MilvusClient(uri=uri, token=token or os.environ.get("MILVUS_TOKEN", ""))


def analyzer_params() -> dict:
    import bm25s.stopwords

    return {"tokenizer": "standard",
            "filter": ["lowercase", {"type": "stop", "stop_words": sorted(bm25s.stopwords.STOPWORDS_EN)},
                       {"type": "stemmer", "language": "english"}]}


def create_collection(client, name: str, dim: int, *, k1: float, b: float, dense_index: str = "FLAT") -> None:
    """The schema: id, title, analysed content -> BM25 sparse vector (server-side), dense vector."""
    from pymilvus import DataType, Function, FunctionType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("title", DataType.VARCHAR, max_length=2048)
    schema.add_field("content", DataType.VARCHAR, max_length=65535, enable_analyzer=True,
                     analyzer_params=analyzer_params())
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_function(Function(name="content_bm25", function_type=FunctionType.BM25,
                                 input_field_names=["content"], output_field_names=["sparse"]))
    index = client.prepare_index_params()
    index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                    params={"bm25_k1": k1, "bm25_b": b})
    index.add_index(field_name="dense", index_type=dense_index, metric_type="IP")
    client.create_collection(name, schema=schema, index_params=index)


class MilvusRetriever(Retriever):
    """BM25 (Milvus BM25 function), dense (IP on normalised vectors) or RRF hybrid in Milvus."""

    name = "milvus"

    def __init__(self, uri: str, collection: str, *, search: str = "bm25", token: str | None = None,
                 dense_model: str = "all-MiniLM-L6-v2", rrf_k: int = 60, rrf_depth: int = 100,
                 batch_size: int = 64, query_threads: int = 1):
        if search not in SEARCH_MODES:
            raise ValueError(f"milvus_search must be one of {SEARCH_MODES}, got {search!r}")
        self.uri, self.collection, self.mode = uri, collection, search
        self.dense_model, self.rrf_k, self.batch_size = dense_model, rrf_k, batch_size
        self.rrf_depth, self.query_threads = rrf_depth, query_threads
        self.client = _client(uri, token)
        if not self.client.has_collection(collection):
            raise FileNotFoundError(f"Milvus at {uri} has no collection {collection!r}; "
                                    "build it with: dynaprag index build --backend milvus")
        self.client.load_collection(collection)

    @staticmethod
    def build(passages: Iterable[Passage], uri: str, collection: str, *, token: str | None = None,
              dense_model: str = "all-MiniLM-L6-v2", k1: float = 1.2, b: float = 0.75,
              dense_index: str = "FLAT", batch_size: int = 64, progress: bool = True) -> dict:
        """(Re)create ``collection`` and insert ``passages`` with their dense vectors; returns stats.

        A build that fails drops its half-filled collection, so no partial index stays on disk
        (or in the cluster) and the next build starts clean.
        """
        from tqdm.auto import tqdm

        from dynaprag.retrieval.dense import encode, load_encoder

        client = _client(uri, token)
        encoder = load_encoder(dense_model)
        if client.has_collection(collection):
            client.drop_collection(collection)
        create_collection(client, collection, encoder.get_embedding_dimension(), k1=k1, b=b,
                          dense_index=dense_index)
        start, n, batch = time.perf_counter(), 0, []
        bar = tqdm(desc="milvus: encode + insert", unit=" passages", disable=not progress, unit_scale=True)

        def flush() -> None:
            vectors = encode(encoder, [passage_text(p) for p in batch], batch_size)
            client.insert(collection, [{"id": p.id, "title": p.title, "content": passage_text(p),
                                        "dense": v.tolist()} for p, v in zip(batch, vectors)])
            bar.update(len(batch))
            batch.clear()

        try:
            for p in passages:
                batch.append(p)
                n += 1
                if len(batch) >= _BATCH:
                    flush()
            if batch:
                flush()
            client.flush(collection)
        except BaseException:
            with contextlib.suppress(Exception):  # the build's own error is the one to report
                client.drop_collection(collection)
            raise
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        return {"num_passages": n, "build_seconds": round(seconds, 3),
                "passages_per_s": round(n / max(seconds, 1e-9), 1)}

    @property
    def fingerprint(self) -> str:
        return (f"milvus:{self.uri}:{self.collection}:{self.mode}:{self.dense_model}:"
                f"rrf{self.rrf_k}@{self.rrf_depth}")

    def _hit(self, row: dict, score: float) -> Hit:
        entity = row.get("entity", row)
        title, content = entity.get("title", ""), entity.get("content", "")
        text = content[len(title) + 1:] if title and content.startswith(title + "\n") else content
        return Hit(Passage(id=str(row.get("id", entity.get("id"))), title=title, text=text), score)

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        check_k(k)
        if not queries:
            return []
        fields = ["title", "content"]
        if self.mode == "bm25":
            results = self.client.search(self.collection, data=list(queries), anns_field="sparse", limit=k,
                                         output_fields=fields, search_params={"metric_type": "BM25"})
            # milvus-lite reports BM25 as a negated distance, a server as the score: use |distance|.
            return [[self._hit(r, abs(float(r["distance"]))) for r in rows if r["distance"] != 0]
                    for rows in results]
        from dynaprag.retrieval.dense import encode, load_encoder, torch_threads

        with torch_threads(self.query_threads):
            vectors = encode(load_encoder(self.dense_model), list(queries), self.batch_size).tolist()
        if self.mode == "dense":
            results = self.client.search(self.collection, data=vectors, anns_field="dense", limit=k,
                                         output_fields=fields, search_params={"metric_type": "IP"})
            return [[self._hit(r, float(r["distance"])) for r in rows] for rows in results]
        from pymilvus import AnnSearchRequest, RRFRanker

        out, depth = [], max(k, self.rrf_depth)
        for query, vector in zip(queries, vectors):
            reqs = [AnnSearchRequest(data=[query], anns_field="sparse", param={"metric_type": "BM25"}, limit=depth),
                    AnnSearchRequest(data=[vector], anns_field="dense", param={"metric_type": "IP"}, limit=depth)]
            rows = self.client.hybrid_search(self.collection, reqs, RRFRanker(self.rrf_k), limit=k,
                                             output_fields=fields)[0]
            out.append([self._hit(r, float(r["distance"])) for r in rows])
        return out


def build_or_load(config: RetrieverConfig, progress: bool = True) -> MilvusRetriever:
    """Connect to the configured Milvus; create and fill the collection on first use.

    Builders of the same index folder take turns (:func:`build_lock`); one that waited finds
    the collection built and connects to it.
    """
    from dynaprag.corpora import ReadStats, corpus_fingerprint, read_passages

    folder = config.resolved_index_dir("milvus")
    corpus = config.corpus_path()
    uri = config.milvus_uri or str(folder / "milvus.db")
    collection = config.milvus_collection or f"dynaprag_{corpus_fingerprint(corpus)}"
    token = config.milvus_token

    def built() -> bool:
        return (is_built(folder) and read_meta(folder).get("collection") == collection
                and _client(uri, token).has_collection(collection))

    if not built():
        with build_lock(folder):
            if not built():
                stats = ReadStats()
                passages = read_passages(corpus, skip_bad_lines=config.skip_bad_lines, stats=stats,
                                         check_duplicates=config.check_duplicates)
                info = MilvusRetriever.build(passages, uri, collection, token=token, dense_model=config.dense_model,
                                             k1=config.k1, b=config.b, dense_index=config.milvus_dense_index,
                                             batch_size=config.dense_batch_size, progress=progress)
                folder.mkdir(parents=True, exist_ok=True)
                write_meta(folder, {"backend": "milvus", "uri": uri if "://" not in uri else "(cluster)",
                                    "collection": collection, **info,
                                    "settings": config.index_settings("milvus"),
                                    "source": {"corpus": str(corpus), "fingerprint": corpus_fingerprint(corpus),
                                               "read": stats.summary(), "skipped_lines": stats.skipped}})
    retriever = MilvusRetriever(uri, collection, search=config.milvus_search, token=token,
                                dense_model=config.dense_model, rrf_k=config.rrf_k,
                                rrf_depth=config.rrf_depth, batch_size=config.dense_batch_size,
                                query_threads=config.dense_query_threads)
    retriever.meta = read_meta(folder) if is_built(folder) else {}
    return retriever


BACKENDS.register("milvus", build_or_load)
