"""BM25 with bm25s: the embedded default retriever (no server, memory-mapped index).

Scoring is Lucene's BM25 as written in Kamphuis et al. (ECIR 2020, "Which BM25 do you
mean?", Table 1): ``sum_t ln(1 + (N - df_t + 0.5) / (df_t + 0.5)) * tf / (tf + k1 (1 - b +
b |d| / avgdl))``, with k1=1.2 and b=0.75 explicit in :class:`RetrieverConfig` (Robertson &
Zaragoza 2009's recommended range; bm25s's own default k1 is 1.5). Text is lower-cased,
split on ``\\w\\w+``, English stop-words are removed and words are Snowball-stemmed
(PyStemmer). Each passage is indexed as
``title + text`` so a hop that names an entity finds that entity's page. bm25s precomputes
every (term, document) score at index time, so a query is a sparse column sum.

Like Lucene, documents that match no query term (score 0) are not returned.

Two index layouts, the same scores (bit for bit):

- ``memory`` (corpora up to :data:`DISK_LAYOUT_BYTES`): bm25s's ``index()`` in RAM; the folder
  holds bm25s's arrays (``*.index.npy``, loaded with ``mmap=True``), the tokenizer vocabulary
  (``vocab.tokenizer.json``), the passage store (JSONL + offsets) and ``meta.json``.
- ``disk`` (larger corpora, e.g. DPR's 21M passages): built out of core in resumable chunks and
  searched fully memory-mapped, vocabulary included (:mod:`dynaprag.retrieval.bm25_disk`);
  ties are ordered by passage row, as Lucene orders them.
"""
from __future__ import annotations

import logging
import time
from array import array
from pathlib import Path
from typing import Iterable

from dynaprag.corpus import Passage
from dynaprag.retrieval.base import Hit, Retriever, check_k
from dynaprag.retrieval.config import BACKENDS, RetrieverConfig
from dynaprag.retrieval.index_dir import (build_lock, building, check_settings, is_built, passage_text,
                                          read_meta, write_meta)
from dynaprag.retrieval.store import PassageStore

log = logging.getLogger(__name__)
_TOKENIZE_CHUNK = 10_000


def _tokenizer(stemmer: str, stopwords: str):
    """bm25s's Tokenizer for the config's stemmer and stop-word list (names as in :mod:`.analysis`)."""
    import bm25s.tokenization

    from dynaprag.retrieval.analysis import stemmer_function, stopword_list

    return bm25s.tokenization.Tokenizer(lower=True, stopwords=list(stopword_list(stopwords)) or None,
                                        stemmer=stemmer_function(stemmer))


class BM25Retriever(Retriever):
    """bm25s over a memory-mapped index; hits carry the stored passage (id, title, text)."""

    name = "bm25"

    def __init__(self, index_dir: str | Path, *, mmap: bool = True):
        self.index_dir = Path(index_dir)
        self.meta = read_meta(self.index_dir)
        settings = self.meta["settings"]
        self.store = PassageStore(self.index_dir)
        if self.meta.get("layout") == "disk":  # out-of-core build: memory-mapped vocabulary too
            from dynaprag.retrieval.bm25_disk import DiskBM25

            self.disk: DiskBM25 | None = DiskBM25(self.index_dir)
            return
        self.disk = None
        import bm25s

        self.model = bm25s.BM25.load(str(self.index_dir), mmap=mmap, load_corpus=False)
        self.tokenizer = _tokenizer(settings["stemmer"], settings["stopwords"])
        self.tokenizer.load_vocab(str(self.index_dir))

    @classmethod
    def build(cls, passages: Iterable[Passage], index_dir: str | Path, *, k1: float = 1.2,
              b: float = 0.75, method: str = "lucene", stemmer: str = "english", stopwords: str = "en",
              progress: bool = True, source: dict | None = None, read_stats=None,
              layout: str = "memory", chunk_size: int | None = None) -> "BM25Retriever":
        """Stream ``passages`` once: store them and tokenise them, then index with bm25s.

        ``read_stats`` (a :class:`~dynaprag.corpora.ReadStats` the reader fills) is recorded
        in ``meta.json`` with ``source`` once the corpus has been read. ``layout="disk"``
        builds out of core in resumable chunks (:mod:`dynaprag.retrieval.bm25_disk`): the
        same scores, bounded memory, for corpora that bm25s cannot index in RAM.
        """
        index_dir = Path(index_dir)
        if layout == "disk":
            from dynaprag.retrieval.bm25_disk import DEFAULT_CHUNK_SIZE, bm25_settings, build_disk_index

            build_disk_index(passages, index_dir, settings=bm25_settings(k1, b, method, stemmer, stopwords),
                             chunk_size=chunk_size or DEFAULT_CHUNK_SIZE, progress=progress, source=source,
                             read_stats=read_stats)
            return cls(index_dir)
        if layout != "memory":
            raise ValueError(f"unknown BM25 index layout {layout!r}; use memory or disk")
        with build_lock(index_dir):
            cls._build_into(passages, index_dir, k1=k1, b=b, method=method, stemmer=stemmer,
                            stopwords=stopwords, progress=progress, source=source, read_stats=read_stats)
        return cls(index_dir)

    @staticmethod
    def _build_into(passages: Iterable[Passage], index_dir: Path, *, k1: float, b: float, method: str,
                    stemmer: str, stopwords: str, progress: bool, source: dict | None, read_stats) -> None:
        """:meth:`build` for a caller that holds the folder's :func:`build_lock`."""
        import bm25s
        from tqdm.auto import tqdm

        with building(index_dir) as tmp:
            tokenizer = _tokenizer(stemmer, stopwords)
            start = time.perf_counter()
            token_ids: list[array] = []  # compact int32 arrays: ~4 bytes per token, not ~36
            chunk: list[str] = []
            bar = tqdm(PassageStore.write(passages, tmp), desc="bm25: read + tokenise", unit=" passages",
                       disable=not progress, unit_scale=True)
            for p in bar:
                chunk.append(passage_text(p))
                if len(chunk) >= _TOKENIZE_CHUNK:
                    token_ids.extend(array("i", ids) for ids in tokenizer.streaming_tokenize(chunk, update_vocab=True))
                    chunk = []
            token_ids.extend(array("i", ids) for ids in tokenizer.streaming_tokenize(chunk, update_vocab=True))
            if not token_ids:
                raise ValueError("cannot build a BM25 index from an empty corpus")
            model = bm25s.BM25(k1=k1, b=b, method=method)
            model.index((token_ids, tokenizer.get_vocab_dict()), show_progress=progress)
            del token_ids
            model.save(str(tmp), show_progress=False)
            tokenizer.save_vocab(str(tmp))
            seconds = time.perf_counter() - start
            n = model.scores["num_docs"]
            source = dict(source or {})
            if read_stats is not None:
                source.update(read=read_stats.summary(), skipped_lines=read_stats.skipped)
            write_meta(tmp, {"backend": "bm25", "num_passages": int(n), "build_seconds": round(seconds, 3),
                             "passages_per_s": round(n / max(seconds, 1e-9), 1),
                             "settings": {"k1": k1, "b": b, "method": method, "stemmer": stemmer,
                                          "stopwords": stopwords},
                             "bm25s_version": bm25s.__version__, "source": source})
        log.info("bm25 index: %d passages in %.1f s (%.0f passages/s) -> %s", n, seconds,
                 n / max(seconds, 1e-9), index_dir)

    @property
    def fingerprint(self) -> str:
        src = self.meta.get("source", {}).get("fingerprint", str(self.index_dir))
        s = self.meta["settings"]
        return (f"bm25s:{src}:n={self.meta['num_passages']}:k1={s['k1']}:b={s['b']}:{s['method']}:"
                f"{s['stemmer']}:{s['stopwords']}")

    def __len__(self) -> int:
        return len(self.store)

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        check_k(k)
        if not queries:
            return []
        k_eff = min(k, len(self.store))
        if k_eff <= 0:
            return [[] for _ in queries]
        if self.disk is not None:
            found = [self.disk.top_k(q, k_eff) for q in queries]
            return [[Hit(self.store[int(r)], float(s)) for r, s in zip(rows, scores)] for rows, scores in found]
        ids = self.tokenizer.tokenize(list(queries), update_vocab=False, return_as="ids",
                                      show_progress=False)
        rows, scores = self.model.retrieve(ids, k=k_eff, show_progress=False, n_threads=1)
        out = []
        for row_ids, row_scores in zip(rows, scores):
            out.append([Hit(self.store[int(r)], float(s)) for r, s in zip(row_ids, row_scores) if s > 0])
        return out


#: corpus files above this size are indexed out of core (:mod:`dynaprag.retrieval.bm25_disk`):
#: bm25s's in-memory ``index()`` peaks at ~25 bytes per posting, ~8 GB for a 1 GB corpus
DISK_LAYOUT_BYTES = 256 * 2**20


def build_or_load(config: RetrieverConfig, progress: bool = True, *, layout: str = "auto",
                  chunk_size: int | None = None, workers: int = 1) -> BM25Retriever:
    """Load the BM25 index for ``config`` or build it from ``config.corpus`` on first use.

    Builders of the same folder take turns (:func:`build_lock`); one that waited finds the
    index built and loads it. With ``layout="auto"`` a corpus file over :data:`DISK_LAYOUT_BYTES`
    is indexed out of core (``disk``), in chunks of ``chunk_size`` passages analysed by
    ``workers`` processes, resumably (the same scores as bm25s in memory). Any format of
    :mod:`dynaprag.retrieval.readers` is read.
    """
    if layout not in ("auto", "memory", "disk"):
        raise ValueError(f"unknown BM25 index layout {layout!r}; use auto, memory or disk")
    from dynaprag.corpora import ReadStats, corpus_fingerprint
    from dynaprag.retrieval.readers import read_corpus

    folder = config.resolved_index_dir("bm25")
    if not is_built(folder):
        with build_lock(folder):
            if not is_built(folder):
                corpus = config.corpus_path()
                stats = ReadStats()
                passages = read_corpus(corpus, skip_bad_lines=config.skip_bad_lines, stats=stats,
                                       check_duplicates=config.check_duplicates)
                source = {"corpus": str(corpus), "fingerprint": corpus_fingerprint(corpus)}
                if layout == "disk" or (layout == "auto" and corpus.stat().st_size > DISK_LAYOUT_BYTES):
                    from dynaprag.retrieval.bm25_disk import DEFAULT_CHUNK_SIZE, bm25_settings, build_disk_index
                    from dynaprag.retrieval.readers import count_passages

                    build_disk_index(passages, folder, settings=bm25_settings(
                        config.k1, config.b, config.bm25_method, config.stemmer, config.stopwords),
                        chunk_size=chunk_size or DEFAULT_CHUNK_SIZE, progress=progress,
                        total=count_passages(corpus) if progress else None, source=source, read_stats=stats,
                        workers=workers, hold_lock=False)
                else:
                    BM25Retriever._build_into(
                        passages, folder, k1=config.k1, b=config.b, method=config.bm25_method,
                        stemmer=config.stemmer, stopwords=config.stopwords, progress=progress, source=source,
                        read_stats=stats)
                if stats.skipped:
                    log.warning("%s: %s", corpus, stats.summary())
    check_settings(folder, config.index_settings("bm25"))
    return BM25Retriever(folder)


BACKENDS.register("bm25", build_or_load)
