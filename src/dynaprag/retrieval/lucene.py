"""Lucene: BM25 search of a Lucene index by path, e.g. a pyserini Wikipedia index a user already has.

Why: Lucene is the engine under Elasticsearch, and pyserini ships prebuilt Wikipedia indexes
(``wikipedia-dpr-100w``: the 21M DPR passages) that users already keep on disk. This backend
opens such a folder (``index_dir``) and searches it with Lucene's own BM25, so nothing is
re-indexed; :func:`build_lucene_index` indexes any corpus :mod:`dynaprag.retrieval.readers`
reads the same way, for a like-for-like comparison with our BM25.

How: the Java classes pyserini's ``LuceneSearcher`` and ``LuceneIndexer`` wrap
(``io.anserini.search.SimpleSearcher``, ``io.anserini.index.SimpleIndexer``), from the Anserini
jar pyserini bundles, called through pyjnius. ``pyserini.search`` itself is not imported: in
pyserini 0.25 it loads torch and onnxruntime and creates an OpenAI client at import time, which
fails without ``OPENAI_API_KEY`` under the openai release our lock pins. pyserini 0.25 is the
last release whose Anserini runs on Java 11+ (Debian 12's JDK is 17; pyserini 0.35+ needs 21).

Analyzer (:data:`DEFAULT_ANALYZER`): Anserini's ``DefaultEnglishAnalyzer``, which is Lucene's
``EnglishAnalyzer`` and Elasticsearch's ``english``: Unicode word breaks (UAX #29), English
possessive filter, lower-case, Lucene's 33 English stop words, Porter stemmer (``krovetz`` and
``none`` also exist; ``stopwords="none"`` keeps them). The query analyzer must be the index's:
an index this module builds records its analyzer in ``meta.json`` and is refused under another
one; for any other index the config's settings are used as given (pyserini's indexes use the
default). Similarity: Lucene's BM25 with k1=1.2, b=0.75 by default, Elasticsearch's and the
papers' values (Anserini's own default, 0.9/0.4, is tuned for MS MARCO).

Hits carry the stored document: pyserini's ``raw`` JSON (``{"id", "contents"}`` with contents
``title\\ntext``, or ``{"id", "title", "text"}``), else the stored ``contents`` field; an index
that stores neither is refused when opened.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Iterable

from dynaprag.corpus import Passage
from dynaprag.retrieval.base import Hit, Retriever, check_k
from dynaprag.retrieval.config import BACKENDS, RetrieverConfig
from dynaprag.retrieval.index_dir import build_lock, building, is_built, passage_text, read_meta, write_meta

log = logging.getLogger(__name__)
STEMMERS = ("porter", "krovetz", "none")
STOPWORDS = ("lucene", "none")
DEFAULT_ANALYZER = {"analyzer": "DefaultEnglishAnalyzer", "stemmer": "porter", "stopwords": "lucene"}
INSTALL_HINT = ("the lucene backend needs a JDK (11+) and the 'lucene' extra: `make lucene`, or "
                "`apt-get install openjdk-17-jdk-headless` and `pip install 'dynaprag[lucene]'`")
_BATCH = 10_000  # documents handed to the indexer per call


def java_classes():
    """pyjnius's ``autoclass`` with pyserini's Anserini jar on the classpath (starts the JVM once)."""
    try:
        from pyserini.pyclass import autoclass
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from None
    except Exception as exc:  # jnius raises when no JVM can be found or started
        raise ImportError(f"{INSTALL_HINT}; the JVM did not start: {exc}") from None
    return autoclass


def analyzer_settings(stemmer: str = "porter", stopwords: str = "lucene") -> dict:
    """The analyzer as recorded in ``meta.json`` and fingerprints; a ValueError names a bad value."""
    if stemmer not in STEMMERS:
        raise ValueError(f"lucene_stemmer must be one of {', '.join(STEMMERS)}, got {stemmer!r}")
    if stopwords not in STOPWORDS:
        raise ValueError(f"lucene_stopwords must be one of {', '.join(STOPWORDS)}, got {stopwords!r}")
    return {**DEFAULT_ANALYZER, "stemmer": stemmer, "stopwords": stopwords}


def is_lucene_index(folder: str | Path) -> bool:
    """True when ``folder`` holds a committed Lucene index (a ``segments_N`` file)."""
    folder = Path(folder)
    return folder.is_dir() and any(f.name.startswith("segments_") for f in folder.iterdir())


def document_passage(docid: str, raw: str | None, contents: str | None) -> Passage:
    """The passage of a stored Lucene document: pyserini's ``raw`` JSON, else its ``contents``."""
    record: dict = {}
    if raw:
        try:
            parsed = json.loads(raw)
            record = parsed if isinstance(parsed, dict) else {}
        except ValueError:
            contents = contents or raw
    if "text" in record:
        return Passage(id=docid, title=str(record.get("title") or ""), text=str(record["text"]))
    body = str(record.get("contents", contents or ""))
    title, sep, text = body.partition("\n")
    return Passage(id=docid, title=title, text=text) if sep else Passage(id=docid, title="", text=body)


class LuceneRetriever(Retriever):
    """Lucene BM25 over an index folder, with the given analyzer and (k1, b)."""

    name = "lucene"

    def __init__(self, index_dir: str | Path, *, k1: float = 1.2, b: float = 0.75, stemmer: str = "porter",
                 stopwords: str = "lucene", threads: int = 1):
        self.index_dir = Path(index_dir)
        self.analyzer = analyzer_settings(stemmer, stopwords)
        self.k1, self.b, self.threads = float(k1), float(b), max(1, int(threads))
        if not is_lucene_index(self.index_dir):
            raise FileNotFoundError(f"{self.index_dir} is not a Lucene index (no segments_N file)")
        self.meta = read_meta(self.index_dir) if is_built(self.index_dir) else {}
        recorded = self.meta.get("settings", {}).get("analyzer")
        if recorded and recorded != self.analyzer:
            raise ValueError(f"Lucene index {self.index_dir} was built with analyzer {recorded} but the config asks "
                             f"for {self.analyzer}; set lucene_stemmer/lucene_stopwords to match")
        autoclass = java_classes()
        self._analyzer_class = autoclass("io.anserini.analysis.DefaultEnglishAnalyzer")
        self._list = autoclass("java.util.ArrayList")
        self._searcher = autoclass("io.anserini.search.SimpleSearcher")(
            str(self.index_dir), self._java_analyzer())
        self._searcher.set_bm25(self.k1, self.b)
        self.num_docs = int(self._searcher.get_total_num_docs())
        if self.num_docs and not (self._searcher.doc_raw(0) or self._searcher.doc_contents(0)):
            raise ValueError(f"Lucene index {self.index_dir} stores no document text (built without "
                             "-storeRaw or -storeContents); hits would have no passage")

    def _java_analyzer(self):
        return self._analyzer_class.fromArguments(self.analyzer["stemmer"], self.analyzer["stopwords"] == "none", None)

    @property
    def fingerprint(self) -> str:
        return (f"lucene:{self.index_dir.resolve()}:{self.num_docs}:k1={self.k1}:b={self.b}:"
                f"{self.analyzer['stemmer']}:{self.analyzer['stopwords']}")

    def _hits(self, scored) -> list[Hit]:
        out = []
        for doc in scored:
            stored = doc.lucene_document
            raw = stored.get("raw") if stored is not None else None
            contents = stored.get("contents") if stored is not None else None
            out.append(Hit(document_passage(str(doc.docid), raw, contents), float(doc.score)))
        return out

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        check_k(k)
        queries = list(queries)
        if self.threads == 1 or len(queries) == 1:
            return [self._hits(self._searcher.search(q, k)) for q in queries]
        texts, ids = self._list(), self._list()
        for i, q in enumerate(queries):
            texts.add(q)
            ids.add(str(i))
        found = self._searcher.batch_search(texts, ids, k, self.threads)
        return [self._hits(found.get(str(i)) or []) for i in range(len(queries))]

    def close(self) -> None:
        self._searcher.close()


def build_lucene_index(passages: Iterable[Passage], folder: str | Path, *, stemmer: str = "porter",
                       stopwords: str = "lucene", threads: int = 2, progress: bool = True, total: int | None = None,
                       source: dict | None = None, hold_lock: bool = True) -> dict:
    """Index ``passages`` into a Lucene index at ``folder`` as pyserini does (``raw`` stored), return its meta.

    Each passage is the JSON document ``{"id", "contents": title + "\\n" + text}`` (one field,
    as our BM25 indexes title and text). Built into a temporary folder and published whole;
    a killed build starts again (Lucene's writer is not resumable here). ``hold_lock=False``:
    the caller already holds :func:`~dynaprag.retrieval.index_dir.build_lock` of ``folder``.
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    analyzer = analyzer_settings(stemmer, stopwords)
    autoclass = java_classes()
    start, count = time.perf_counter(), 0
    with (build_lock(folder) if hold_lock else contextlib.nullcontext()), building(folder) as tmp:
        args = ["-index", str(tmp), "-input", "", "-collection", "JsonCollection", "-threads", str(int(threads)),
                "-storeRaw", "-stemmer", stemmer]
        if stopwords == "none":
            args.append("-keepStopwords")
        indexer = autoclass("io.anserini.index.SimpleIndexer")(args)
        bar = tqdm(total=total, unit=" passages", unit_scale=True, desc="lucene: index", disable=not progress)
        batch: list[str] = []
        for p in passages:
            batch.append(json.dumps({"id": p.id, "contents": passage_text(p)}, ensure_ascii=False))
            if len(batch) == _BATCH:
                count += _add(indexer, batch, bar)
        count += _add(indexer, batch, bar)
        indexer.close()
        bar.close()
        seconds = time.perf_counter() - start
        meta = {"backend": "lucene", "settings": {"analyzer": analyzer}, "num_passages": count,
                "build_seconds": round(seconds, 2), "passages_per_s": round(count / max(seconds, 1e-9), 1),
                "threads": int(threads), "engine": "Anserini SimpleIndexer (pyserini)", "source": source or {}}
        write_meta(tmp, meta)
    return meta


def _add(indexer, batch: list[str], bar) -> int:
    if not batch:
        return 0
    added = int(indexer.addRawDocuments(batch))
    if added != len(batch):
        raise RuntimeError(f"Lucene indexer accepted {added} of {len(batch)} documents")
    bar.update(len(batch))
    n = len(batch)
    batch.clear()
    return n


def build_or_open(config: RetrieverConfig, progress: bool = True) -> LuceneRetriever:
    """Open ``index_dir`` when it is a Lucene index; else index ``corpus`` there (or in the cache) first."""
    settings = {"k1": config.k1, "b": config.b, "stemmer": config.lucene_stemmer,
                "stopwords": config.lucene_stopwords, "threads": config.lucene_threads}
    if config.index_dir and is_lucene_index(config.index_dir):
        return LuceneRetriever(config.index_dir, **settings)
    if config.index_dir and not config.corpus:
        raise FileNotFoundError(f"{config.index_dir} is not a Lucene index (no segments_N file); to build one "
                                "there, name the corpus to index (--corpus)")
    folder = config.resolved_index_dir("lucene")
    if not is_built(folder):
        from dynaprag.corpora import corpus_fingerprint
        from dynaprag.retrieval.readers import count_passages, read_corpus

        with build_lock(folder):
            if not is_built(folder):
                corpus = config.corpus_path()
                build_lucene_index(
                    read_corpus(corpus, skip_bad_lines=config.skip_bad_lines, check_duplicates=config.check_duplicates),
                    folder, stemmer=config.lucene_stemmer, stopwords=config.lucene_stopwords, progress=progress,
                    total=count_passages(corpus) if progress else None, hold_lock=False,
                    source={"corpus": str(corpus), "fingerprint": corpus_fingerprint(corpus)})
    return LuceneRetriever(folder, **settings)


BACKENDS.register("lucene", build_or_open)
