"""Phase 2 of the out-of-core BM25 build: merge the chunks into bm25s's CSC score matrix on disk.

bm25s precomputes one float32 score per (term, passage) pair and keeps them as a CSC matrix
with terms as columns: ``data`` (scores), ``indices`` (passage rows, ascending within a
column) and ``indptr`` (column starts). ``bm25s.BM25.index`` builds it in memory, about
25 bytes per posting at its peak (~35 GB for the DPR dump). Here the same arrays are written
straight to ``.npy`` files, one slab of columns at a time:

1. **vocabulary**: the sorted union of the chunks' terms. A term's column is its rank, so
   each chunk's sorted terms map to increasing columns and a slab of columns is one
   contiguous range of every chunk's postings. Written as ``vocab.bytes.npy`` +
   ``vocab.offsets.npy`` (binary-searched, memory-mapped, at query time) and as bm25s's
   ``vocab.index.json``.
2. **statistics**: document frequencies, passage lengths, their mean, the idf of every term,
   with bm25s's own scoring functions (so every score is bit-for-bit bm25s's).
3. **slabs**: for a range of columns, each chunk's postings in order (passage rows ascend
   across chunks), scored and written at their final offset with ``pwrite``. Memory is one
   slab (``slab_postings``); the manifest records every slab written, so a killed merge
   resumes at the next one.

The result loads with ``bm25s.BM25.load(folder, mmap=True)`` as well as with
:class:`~dynaprag.retrieval.bm25_disk.DiskBM25`.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from dynaprag.retrieval.bm25_chunks import CHUNKS, BuildManifest, chunk_dir, read_chunk_terms

DATA, INDICES, INDPTR = "data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy"
VOCAB_BYTES, VOCAB_OFFSETS = "vocab.bytes.npy", "vocab.offsets.npy"
NONOCCURRENCE = "nonoccurrence_array.index.npy"
COLMAX = "colmax.npy"  # each term's highest score: the bounds of MaxScore (:mod:`.bm25_topk`)
PARAMS, BM25S_VOCAB = "params.index.json", "vocab.index.json"
OFFSETS = "passages.offsets.npy"
#: bm25s variants that add a per-term score for absent terms
NONOCCURRENCE_METHODS = ("bm25l", "bm25+")


def write_vocabulary(folder: Path, n_chunks: int) -> int:
    """Step 1: the sorted vocabulary and every chunk's term -> column map (``gids.npy``)."""
    terms: set[str] = set()
    for i in range(n_chunks):
        terms.update(read_chunk_terms(folder, i))
    vocab = sorted(terms)
    del terms
    column = {t: i for i, t in enumerate(vocab)}
    for i in range(n_chunks):
        local = read_chunk_terms(folder, i)
        gids = np.fromiter((column[t] for t in local), dtype=np.int32, count=len(local))
        np.save(chunk_dir(folder, i) / "gids.npy", gids, allow_pickle=False)
    encoded = [t.encode("utf-8") for t in vocab]
    offsets = np.zeros(len(vocab) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    np.save(folder / VOCAB_BYTES, np.frombuffer(b"".join(encoded), dtype=np.uint8), allow_pickle=False)
    np.save(folder / VOCAB_OFFSETS, offsets, allow_pickle=False)
    del encoded
    with open(folder / BM25S_VOCAB, "w", encoding="utf-8") as handle:
        json.dump(column, handle, ensure_ascii=False)
    return len(vocab)


def corpus_statistics(folder: Path, n_chunks: int, n_terms: int):
    """Step 2: (document frequencies, passage lengths, average length) over all chunks."""
    df = np.zeros(n_terms, dtype=np.int64)
    lens = []
    for i in range(n_chunks):
        c = chunk_dir(folder, i)
        gids = np.load(c / "gids.npy")
        df[gids] += np.diff(np.load(c / "term_ptr.npy"))
        lens.append(np.load(c / "doc_lens.npy"))
    doc_lens = np.concatenate(lens) if lens else np.zeros(0, dtype=np.int32)
    return df, doc_lens, doc_lens.mean()


def term_weights(df: np.ndarray, n_docs: int, avg_len: float, settings: dict):
    """bm25s's idf array and (for bm25l/bm25+) non-occurrence array, from its own functions."""
    from bm25s.scoring import _select_idf_scorer, _select_tfc_scorer

    idf_fn = _select_idf_scorer(settings["method"])
    idf = np.zeros(len(df), dtype=np.float32)
    nonocc = np.zeros(len(df), dtype=np.float32) if settings["method"] in NONOCCURRENCE_METHODS else None
    tfc_fn = _select_tfc_scorer(settings["method"])
    for term, count in enumerate(df.tolist()):
        if count:
            value = idf_fn(count, N=n_docs)
            idf[term] = value
            if nonocc is not None:
                nonocc[term] = value * tfc_fn(tf_array=0, l_d=avg_len, l_avg=avg_len, k1=settings["k1"],
                                              b=settings["b"], delta=settings["delta"])
    return idf, nonocc


def slab_bounds(indptr: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Column ranges of about ``budget`` postings each (a bigger column is a slab of its own)."""
    bounds, start, n_cols = [], 0, len(indptr) - 1
    while start < n_cols:
        end = int(np.searchsorted(indptr, indptr[start] + budget, side="right")) - 1
        end = min(max(end, start + 1), n_cols)
        bounds.append((start, end))
        start = end
    return bounds


def _create_npy(path: Path, dtype, n: int) -> int:
    """A ``.npy`` file of ``n`` items (sparse until written); returns its header's length."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n,))
    offset = mm.offset
    del mm
    return offset


def score_slab(folder: Path, n_chunks: int, starts: np.ndarray, g0: int, g1: int, indptr: np.ndarray,
               idf: np.ndarray, nonocc, doc_lens: np.ndarray, avg_len: float, settings: dict):
    """(data, indices) of columns [g0, g1): every chunk's postings of those columns, scored."""
    from bm25s.scoring import _select_tfc_scorer

    tfc_fn = _select_tfc_scorer(settings["method"])
    base = int(indptr[g0])
    data = np.empty(int(indptr[g1]) - base, dtype=np.float32)
    rows = np.empty(len(data), dtype=np.int32)
    fill = indptr[g0:g1].astype(np.int64) - base
    for i in range(n_chunks):
        c = chunk_dir(folder, i)
        gids = np.load(c / "gids.npy", mmap_mode="r")
        l0, l1 = np.searchsorted(gids, [g0, g1])
        if l0 == l1:
            continue
        term_ptr = np.load(c / "term_ptr.npy", mmap_mode="r")[l0:l1 + 1].astype(np.int64)
        p0, p1 = int(term_ptr[0]), int(term_ptr[-1])
        docs = np.load(c / "docs.npy", mmap_mode="r")[p0:p1].astype(np.int64) + starts[i]
        tfs = np.array(np.load(c / "tfs.npy", mmap_mode="r")[p0:p1], dtype=np.float32)
        counts = np.diff(term_ptr)
        cols = np.repeat(np.asarray(gids[l0:l1], dtype=np.int64) - g0, counts)
        within = np.arange(p1 - p0, dtype=np.int64) - np.repeat(term_ptr[:-1] - p0, counts)
        pos = fill[cols] + within
        fill[np.asarray(gids[l0:l1], dtype=np.int64) - g0] += counts
        tfc = tfc_fn(tf_array=tfs, l_d=doc_lens[docs], l_avg=avg_len, k1=settings["k1"], b=settings["b"],
                     delta=settings["delta"])
        scores = idf[cols + g0] * tfc
        if nonocc is not None:
            scores -= nonocc[cols + g0]
        data[pos] = scores
        rows[pos] = docs
    return data, rows


def merge(folder: Path, manifest: BuildManifest, *, slab_postings: int = 32_000_000,
          on_slab: Callable[[int, int], None] | None = None) -> dict:
    """Phase 2 in ``folder`` (resumable); returns the index's statistics for ``meta.json``."""
    folder = Path(folder)
    n_chunks, settings, state = len(manifest.chunks), manifest.settings, manifest.merge
    if state.get("done"):
        return state["done"]
    if "terms" not in state:
        state["terms"] = write_vocabulary(folder, n_chunks)
        manifest.save(folder)
    df, doc_lens, avg_len = corpus_statistics(folder, n_chunks, state["terms"])
    n_docs = len(doc_lens)
    idf, nonocc = term_weights(df, n_docs, avg_len, settings)
    indptr = np.zeros(len(df) + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    nnz = int(indptr[-1])
    starts = np.cumsum([0] + [c["passages"] for c in manifest.chunks])
    bounds = slab_bounds(indptr, slab_postings)
    if not state.get("slabs_done"):
        state["data_offset"] = _create_npy(folder / DATA, np.float32, nnz)
        state["indices_offset"] = _create_npy(folder / INDICES, np.int32, nnz)
        state["colmax_offset"] = _create_npy(folder / COLMAX, np.float32, len(df))
        state["slabs_done"] = 0
        manifest.save(folder)
    fd_data = os.open(folder / DATA, os.O_WRONLY)
    fd_rows = os.open(folder / INDICES, os.O_WRONLY)
    fd_max = os.open(folder / COLMAX, os.O_WRONLY)
    try:
        for s in range(state["slabs_done"], len(bounds)):
            g0, g1 = bounds[s]
            data, rows = score_slab(folder, n_chunks, starts, g0, g1, indptr, idf, nonocc, doc_lens, avg_len,
                                    settings)
            os.pwrite(fd_data, data.tobytes(), state["data_offset"] + 4 * int(indptr[g0]))
            os.pwrite(fd_rows, rows.tobytes(), state["indices_offset"] + 4 * int(indptr[g0]))
            colmax = np.maximum.reduceat(data, indptr[g0:g1] - indptr[g0])  # every column has a posting
            os.pwrite(fd_max, colmax.tobytes(), state["colmax_offset"] + 4 * g0)
            for fd in (fd_data, fd_rows, fd_max):
                os.fsync(fd)
            state["slabs_done"] = s + 1
            manifest.save(folder)
            if on_slab is not None:
                on_slab(s + 1, len(bounds))
    finally:
        for fd in (fd_data, fd_rows, fd_max):
            os.close(fd)
    np.save(folder / INDPTR, indptr, allow_pickle=False)
    if nonocc is not None:
        np.save(folder / NONOCCURRENCE, nonocc, allow_pickle=False)
    store_lens = [np.load(chunk_dir(folder, i) / "store_lens.npy") for i in range(n_chunks)]
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    if store_lens:
        np.cumsum(np.concatenate(store_lens), out=offsets[1:])
    np.save(folder / OFFSETS, offsets, allow_pickle=False)
    import bm25s

    params = {"k1": settings["k1"], "b": settings["b"], "delta": settings["delta"], "method": settings["method"],
              "idf_method": settings["method"], "dtype": "float32", "int_dtype": "int32", "num_docs": n_docs,
              "version": bm25s.__version__, "backend": "numpy"}
    (folder / PARAMS).write_text(json.dumps(params, indent=4))
    state["done"] = {"num_passages": n_docs, "num_terms": int(len(df)), "num_postings": nnz,
                     "avg_len": float(avg_len)}
    manifest.save(folder)
    shutil.rmtree(folder / CHUNKS, ignore_errors=True)
    return state["done"]
