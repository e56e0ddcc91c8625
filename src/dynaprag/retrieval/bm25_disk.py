"""BM25 at Wikipedia scale: built out of core, resumable, searched memory-mapped.

:func:`build_disk_index` streams the corpus once in chunks (:mod:`~dynaprag.retrieval.bm25_chunks`)
and merges them into bm25s's CSC score matrix on disk (:mod:`~dynaprag.retrieval.bm25_merge`),
all in the resumable folder ``.NAME.dynaprag-building`` under the index's build lock; a run
killed at any point (``kill -9`` included) continues where it stopped when started again with
the same settings. The finished folder is published whole, as every index is.

:class:`DiskBM25` opens it without reading it: the score arrays, the sorted vocabulary and
the passage offsets are memory-mapped (pages are read on demand and shared by every process
on the machine), so opening costs milliseconds and a few megabytes whatever the corpus size.
Scores are bit-for-bit bm25s's (the same float32 additions in the same order); among equal
scores the lower row comes first, where bm25s's ``argpartition`` leaves ties in no set order.

>>> import tempfile, pathlib
>>> from dynaprag.corpus import Passage
>>> folder = pathlib.Path(tempfile.mkdtemp()) / "bm25"
>>> meta = build_disk_index([Passage("a", "Lake Baikal", "the deepest lake"),
...                          Passage("b", "Mount Elbrus", "the highest mountain")], folder, progress=False)
>>> index = DiskBM25(folder)
>>> [int(r) for r in index.top_k("deepest lake", 2)[0]]
[0]
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from dynaprag.corpus import Passage
from dynaprag.files import TEMP_MARKER, remove_temp_dir
from dynaprag.retrieval.analysis import Analyzer
from dynaprag.retrieval.bm25_chunks import MANIFEST, BuildManifest, PassageDigest, build_chunks
from dynaprag.retrieval.bm25_merge import (COLMAX, DATA, INDICES, INDPTR, NONOCCURRENCE, PARAMS, VOCAB_BYTES,
                                           VOCAB_OFFSETS, merge)
from dynaprag.retrieval.bm25_topk import dense_top_k, maxscore_top_k
from dynaprag.retrieval.index_dir import build_lock, building_dir, publish_dir, write_meta

log = logging.getLogger(__name__)
LAYOUT = "disk"
DEFAULT_CHUNK_SIZE = 100_000


def bm25_settings(k1: float = 1.2, b: float = 0.75, method: str = "lucene", stemmer: str = "english",
                  stopwords: str = "en", delta: float = 0.5) -> dict:
    """The settings an index is built with (``meta.json``'s ``settings``); delta is bm25s's default."""
    return {"k1": k1, "b": b, "method": method, "stemmer": stemmer, "stopwords": stopwords, "delta": delta}


def _fresh(folder: Path) -> None:
    """Empty a resumable build folder whose manifest is for other settings (or absent)."""
    for entry in folder.iterdir():
        if entry.name != TEMP_MARKER:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def build_disk_index(passages: Iterable[Passage], index_dir: str | Path, *, settings: dict | None = None,
                     chunk_size: int = DEFAULT_CHUNK_SIZE, slab_postings: int = 32_000_000,
                     progress: bool = True, total: int | None = None, source: dict | None = None,
                     read_stats=None, workers: int = 1, hold_lock: bool = True) -> dict:
    """Build (or resume building) the BM25 index of ``passages`` in ``index_dir``; returns its meta.

    ``total`` (the expected passage count, e.g. from :func:`dynaprag.retrieval.readers.count_passages`)
    gives the progress bar its ETA. ``hold_lock=False`` is for a caller already holding the
    folder's :func:`~dynaprag.retrieval.index_dir.build_lock`. ``workers`` processes analyse
    chunks in parallel (the merge runs in this one).
    """
    index_dir = Path(index_dir)
    if hold_lock:
        with build_lock(index_dir):
            return build_disk_index(passages, index_dir, settings=settings, chunk_size=chunk_size,
                                    slab_postings=slab_postings, progress=progress, total=total, source=source,
                                    read_stats=read_stats, workers=workers, hold_lock=False)
    from tqdm.auto import tqdm

    settings = settings or bm25_settings()
    start = time.perf_counter()
    tmp = building_dir(index_dir, resume=True)
    manifest = BuildManifest.load_or_new(tmp, settings, chunk_size)
    if not (tmp / MANIFEST).is_file() or not manifest.chunks:
        _fresh(tmp)
        manifest.save(tmp)
    resumed_from = manifest.passages
    manifest.runs += 1
    if resumed_from:
        log.info("resuming the BM25 build in %s after %d passages", tmp, resumed_from)
    analyzer = Analyzer(settings["stemmer"], settings["stopwords"])
    digest = PassageDigest()
    bar = tqdm(total=total, initial=resumed_from, desc="bm25: index chunks", unit=" passages", unit_scale=True,
               disable=not progress, smoothing=0.1)

    def on_chunk(index: int, done: int) -> None:
        bar.update(done - bar.n)

    build_chunks(passages, tmp, manifest, analyzer, digest, on_chunk=on_chunk, workers=workers)
    bar.close()
    if not manifest.chunks:
        remove_temp_dir(tmp)
        raise ValueError("cannot build a BM25 index from an empty corpus")
    merge_bar = tqdm(desc="bm25: merge", unit=" slabs", disable=not progress)

    def on_slab(done: int, total_slabs: int) -> None:
        merge_bar.total = total_slabs
        merge_bar.update(done - merge_bar.n)

    stats = merge(tmp, manifest, slab_postings=slab_postings, on_slab=on_slab)
    merge_bar.close()
    import bm25s

    seconds = time.perf_counter() - start
    source = dict(source or {})
    if read_stats is not None:
        source.update(read=read_stats.summary(), skipped_lines=read_stats.skipped)
    source.update(passages=stats["num_passages"], checksum=f"sha256:{manifest.digest}")
    manifest.save(tmp)
    meta = {"backend": "bm25", "layout": LAYOUT, **stats, "build_seconds": round(manifest.seconds, 3),
            "passages_per_s": round(stats["num_passages"] / max(manifest.seconds, 1e-9), 1),
            "build_runs": manifest.runs, "last_run_seconds": round(seconds, 3),
            "resumed_from_passages": resumed_from, "chunk_size": chunk_size, "workers": workers,
            "settings": settings,
            "bm25s_version": bm25s.__version__, "source": source}
    write_meta(tmp, meta)
    publish_dir(tmp, index_dir)
    (index_dir / MANIFEST).unlink(missing_ok=True)  # after publishing: a kill before it loses no work
    log.info("bm25 index: %d passages in %.1f s -> %s", stats["num_passages"], seconds, index_dir)
    return meta


class DiskBM25:
    """Top-k BM25 over an index folder written by :func:`build_disk_index`, fully memory-mapped."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        self.folder = folder
        params = json.loads((folder / PARAMS).read_text())
        self.num_docs = int(params["num_docs"])
        # plain ndarray views of the memory maps: slicing them skips np.memmap's per-slice bookkeeping
        self.data = np.asarray(np.load(folder / DATA, mmap_mode="r"))
        self.indices = np.asarray(np.load(folder / INDICES, mmap_mode="r"))
        self.indptr = np.asarray(np.load(folder / INDPTR, mmap_mode="r"))
        self._vocab = np.asarray(np.load(folder / VOCAB_BYTES, mmap_mode="r"))
        self._vocab_offsets = np.asarray(np.load(folder / VOCAB_OFFSETS, mmap_mode="r"))
        nonocc = folder / NONOCCURRENCE
        self.nonoccurrence = np.load(nonocc) if nonocc.is_file() else None
        self.colmax = np.asarray(np.load(folder / COLMAX, mmap_mode="r")) if (folder / COLMAX).is_file() else None
        self._local = threading.local()  # a passage-sized score buffer per thread, reused
        meta = json.loads((folder / "meta.json").read_text())
        self.analyzer = Analyzer(meta["settings"]["stemmer"], meta["settings"]["stopwords"])
        self._empty = self.column("")

    @property
    def num_terms(self) -> int:
        return len(self._vocab_offsets) - 1

    def term(self, column: int) -> str:
        start, end = int(self._vocab_offsets[column]), int(self._vocab_offsets[column + 1])
        return self._vocab[start:end].tobytes().decode("utf-8")

    def column(self, term: str) -> int:
        """The column of ``term`` (binary search over the sorted vocabulary), or -1."""
        target, lo, hi = term.encode("utf-8"), 0, self.num_terms
        offsets, vocab = self._vocab_offsets, self._vocab
        while lo < hi:
            mid = (lo + hi) // 2
            value = vocab[int(offsets[mid]):int(offsets[mid + 1])].tobytes()
            if value < target:
                lo = mid + 1
            else:
                hi = mid
        if lo < self.num_terms and vocab[int(offsets[lo]):int(offsets[lo + 1])].tobytes() == target:
            return lo
        return -1

    def query_columns(self, query: str) -> list[int]:
        """The query's columns as bm25s sees them: known terms (repeats kept), else the empty term."""
        columns = [c for c in map(self.column, self.analyzer.terms(query)) if c >= 0]
        if not columns and self._empty >= 0:
            columns = [self._empty]
        return columns

    def scores(self, columns: list[int]) -> np.ndarray:
        """Every passage's score (float32), summed column by column as bm25s does."""
        scores = np.zeros(self.num_docs, dtype=np.float32)
        for c in columns:
            start, end = int(self.indptr[c]), int(self.indptr[c + 1])
            scores[self.indices[start:end]] += self.data[start:end]
        if self.nonoccurrence is not None and columns:
            scores += self.nonoccurrence[columns].sum()
        return scores

    def _buffers(self) -> tuple[np.ndarray, np.ndarray]:
        """This thread's passage-sized score and mark arrays (zeros between queries), made once."""
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = (np.zeros(self.num_docs, dtype=np.float32),
                                              np.zeros(self.num_docs, dtype=np.int32))
        return buffers

    def top_k(self, query: str, k: int, *, prune: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of the ``k`` best passages with a positive score, best first.

        Exact either way; ``prune`` (MaxScore, :mod:`~dynaprag.retrieval.bm25_topk`) reads fewer
        postings when the index keeps each term's highest score and the variant allows it.
        """
        columns = self.query_columns(query)
        if not columns:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if prune and self.colmax is not None and self.nonoccurrence is None and len(set(columns)) > 1:
            return maxscore_top_k(self, columns, k, *self._buffers())
        return dense_top_k(self, columns, k, *self._buffers())
