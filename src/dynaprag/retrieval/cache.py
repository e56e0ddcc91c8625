"""A retrieval cache: (query, k, backend fingerprint) -> hits, so a repeated query costs nothing.

Dynamic RAG methods re-issue the same queries across steps, questions and runs (every FLARE
or DRAGIN sweep over thresholds repeats most of them). :class:`CachedRetriever` wraps any
retriever: an in-memory LRU, optionally backed by a SQLite file that persists across runs.
The backend's ``fingerprint`` is part of the key, so a rebuilt index or changed BM25
parameters never serve stale hits.

>>> from dynaprag.retrieval import RetrieverConfig, build_retriever
>>> r = build_retriever(RetrieverConfig(cache=True))        # doctest: +SKIP
>>> r.search(["Who directed Jaws?"], 3); r.stats             # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path

from dynaprag.corpus import Passage
from dynaprag.retrieval.base import Hit, Retriever, check_k


def _encode(hits: list[Hit]) -> str:
    return json.dumps([{"id": h.passage.id, "title": h.passage.title, "text": h.passage.text,
                        "extra": h.passage.extra, "score": h.score} for h in hits], ensure_ascii=False)


def _decode(raw: str) -> list[Hit]:
    return [Hit(Passage(d["id"], d["title"], d["text"], d.get("extra") or {}), float(d["score"]))
            for d in json.loads(raw)]


class CachedRetriever(Retriever):
    """Memoises ``inner.search`` per (query, k); misses of a batch go to ``inner`` as one batch."""

    def __init__(self, inner: Retriever, *, max_entries: int = 10000, path: str | Path | None = None):
        self.inner = inner
        self.name = f"cached-{inner.name}"
        self.max_entries = max_entries
        self._lru: OrderedDict[str, list[Hit]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self._db: sqlite3.Connection | None = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False)
            self._db.execute("CREATE TABLE IF NOT EXISTS hits (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.commit()

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    @property
    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "entries": len(self._lru)}

    def _key(self, query: str, k: int) -> str:
        return hashlib.sha256(json.dumps([self.inner.fingerprint, k, query]).encode("utf-8")).hexdigest()

    def _get(self, key: str) -> list[Hit] | None:
        if key in self._lru:
            self._lru.move_to_end(key)
            return self._lru[key]
        if self._db is not None:
            row = self._db.execute("SELECT value FROM hits WHERE key = ?", (key,)).fetchone()
            if row is not None:
                hits = _decode(row[0])
                self._put(key, hits, persist=False)
                return hits
        return None

    def _put(self, key: str, hits: list[Hit], persist: bool = True) -> None:
        self._lru[key] = hits
        self._lru.move_to_end(key)
        while len(self._lru) > self.max_entries:
            self._lru.popitem(last=False)
        if persist and self._db is not None:
            self._db.execute("INSERT OR REPLACE INTO hits (key, value) VALUES (?, ?)", (key, _encode(hits)))

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        k = check_k(k)
        keys = [self._key(q, k) for q in queries]
        out: list[list[Hit] | None] = []
        with self._lock:
            for key in keys:
                out.append(self._get(key))
        missing = sorted({q for q, hits in zip(queries, out) if hits is None})
        self.hits += sum(hits is not None for hits in out)
        self.misses += len(missing)
        if missing:
            fresh = dict(zip(missing, self.inner.search(missing, k)))
            with self._lock:
                for query in missing:
                    self._put(self._key(query, k), fresh[query])
                if self._db is not None:
                    self._db.commit()
            out = [hits if hits is not None else fresh[q] for q, hits in zip(queries, out)]
        return [list(hits) for hits in out]  # type: ignore[arg-type]

    def clear(self) -> None:
        """Forget every cached entry (memory and file)."""
        with self._lock:
            self._lru.clear()
            if self._db is not None:
                self._db.execute("DELETE FROM hits")
                self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __getattr__(self, attr: str):
        # Only reached for attributes the wrapper lacks (e.g. ``store``, ``index_dir``).
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)
