"""A compressed FAISS index for millions of vectors: IVF-PQ, built in bounded memory, resumably, opened memory-mapped.

Why: an exact ``IndexFlatIP`` keeps every float32 vector in RAM, 1,536 bytes per 384-d
passage, 32 GB for the 21M DPR passages; FlashRAG users report the same wall. IVF-PQ
(Jégou et al. 2011) stores a product-quantised code of ``m`` bytes per vector (48 for the
default: 32x smaller) in inverted lists that a query visits ``nprobe`` of; the cost is recall,
which :mod:`bench/scale_dense.py` states against exact search.

How: the vectors are read by row range (``read_rows(start, stop)``, e.g. a memory-mapped
``.npy`` of encoded passages or :mod:`dynaprag.retrieval.synthetic_vectors`), never all at
once. The coarse quantiser and the PQ codebooks are trained on a sample spread over the whole
range, saved (``trained.faiss``), then each shard of rows is encoded into its own file
(``shard-NNNNN.faiss``), so a killed build resumes at the first missing shard; the shards are
merged into ``index.faiss`` (codes only: ``m + 8`` bytes per vector in RAM while merging).
:func:`open_ivfpq` reads it with ``faiss.IO_FLAG_MMAP``: the inverted lists stay in the file
and the page cache (shared by every process on the machine); only the centroids and codebooks
are resident. Inner product on L2-normalised vectors, i.e. cosine, as :mod:`dynaprag.retrieval.dense`.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from dynaprag.files import atomic_write_json

INDEX_FILE = "index.faiss"
TRAINED_FILE = "trained.faiss"
META_FILE = "ivfpq.json"


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError("the compressed dense index needs faiss: pip install 'dynaprag[dense]'") from None
    return faiss


def default_nlist(n: int) -> int:
    """Inverted lists for ``n`` vectors: about sqrt(n), a power of two, 64 to 8,192.

    FAISS's guideline is 4-16 sqrt(n); fewer, longer lists cost a little more per query but
    train in minutes on 2 cores (k-means time grows with lists x training sample).
    """
    return int(min(8_192, max(64, 2 ** round(np.log2(np.sqrt(max(n, 1)))))))


def training_rows(total: int, size: int, blocks: int = 32) -> list[tuple[int, int]]:
    """Row ranges for the training sample: ``blocks`` runs spread evenly over ``[0, total)``."""
    size = min(size, total)
    per = max(1, size // blocks)
    starts = np.linspace(0, max(0, total - per), num=min(blocks, max(1, size // per)), dtype=np.int64)
    return [(int(s), int(min(total, s + per))) for s in starts]


def _write(index, path: Path) -> None:
    faiss = _faiss()
    tmp = path.with_name(f".{path.name}.dynaprag-tmp-{os.getpid()}")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)


def build_ivfpq(read_rows: Callable[[int, int], np.ndarray], total: int, folder: str | Path, *, dim: int,
                nlist: int | None = None, m: int = 48, nbits: int = 8, train_size: int | None = None,
                shard_size: int = 1_000_000, chunk_size: int = 100_000, progress: bool = True) -> dict:
    """Train, encode shard by shard (resumable) and merge an IVF-PQ index of ``total`` vectors into ``folder``."""
    from tqdm.auto import tqdm

    faiss = _faiss()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nlist = nlist or default_nlist(total)
    train_size = train_size or min(total, max(40 * nlist, 20_000))  # FAISS asks for >= 39 points a list
    settings = {"dim": dim, "nlist": nlist, "m": m, "nbits": nbits, "total": total, "train_size": train_size}
    meta_path = folder / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"settings": settings, "seconds": {}}
    if meta["settings"] != settings:
        raise ValueError(f"{folder} holds an IVF-PQ build with other settings {meta['settings']}; use another folder")
    if (folder / INDEX_FILE).is_file() and "bytes" in meta:
        return meta
    trained = folder / TRAINED_FILE
    if not trained.is_file():
        start = time.perf_counter()
        sample = np.concatenate([read_rows(a, b) for a, b in training_rows(total, train_size)])
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        _write(index, trained)
        meta["seconds"]["train"] = round(time.perf_counter() - start, 1)
        atomic_write_json(meta_path, meta)
    shards = [(s, min(total, s + shard_size)) for s in range(0, total, shard_size)]
    bar = tqdm(total=total, unit=" vectors", unit_scale=True, desc="ivfpq: encode", disable=not progress)
    for number, (a, b) in enumerate(shards):
        path = folder / f"shard-{number:05d}.faiss"
        if path.is_file():
            bar.update(b - a)
            continue
        start = time.perf_counter()
        index = faiss.read_index(str(trained))
        for c in range(a, b, chunk_size):
            rows = np.ascontiguousarray(read_rows(c, min(b, c + chunk_size)), dtype=np.float32)
            index.add_with_ids(rows, np.arange(c, c + len(rows), dtype=np.int64))
            bar.update(len(rows))
        _write(index, path)
        meta["seconds"]["add"] = round(meta["seconds"].get("add", 0) + time.perf_counter() - start, 1)
        atomic_write_json(meta_path, meta)
    bar.close()
    start = time.perf_counter()
    merged = faiss.read_index(str(trained))
    for number in range(len(shards)):
        path = folder / f"shard-{number:05d}.faiss"
        merged.merge_from(faiss.read_index(str(path)), 0)
    _write(merged, folder / INDEX_FILE)
    for number in range(len(shards)):
        (folder / f"shard-{number:05d}.faiss").unlink()
    meta["seconds"]["merge"] = round(time.perf_counter() - start, 1)
    meta["bytes"] = (folder / INDEX_FILE).stat().st_size
    meta["vectors"] = int(merged.ntotal)
    atomic_write_json(meta_path, meta)
    return meta


def open_ivfpq(folder: str | Path, nprobe: int = 32):
    """The finished index of ``folder``, memory-mapped (``IO_FLAG_MMAP``), searching ``nprobe`` lists."""
    faiss = _faiss()
    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no finished IVF-PQ index ({INDEX_FILE}); build it first")
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
    index.nprobe = int(nprobe)
    return index


def exact_top_k(read_rows: Callable[[int, int], np.ndarray], total: int, queries: np.ndarray, k: int = 10,
                chunk_size: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top ``k`` of ``queries`` over all rows, one chunk in memory at a time."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_rows = np.full((len(queries), k), -1, dtype=np.int64)
    for c in range(0, total, chunk_size):
        rows = np.asarray(read_rows(c, min(total, c + chunk_size)), dtype=np.float32)
        scores = queries @ rows.T
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        cand_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        cand_rows = np.concatenate([best_rows, top + c], axis=1)
        order = np.argsort(-cand_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(cand_scores, order, axis=1)
        best_rows = np.take_along_axis(cand_rows, order, axis=1)
    return best_scores, best_rows


def refine(candidates: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-score each query's IVF-PQ candidates exactly on the stored vectors and keep the best ``k``.

    Why: product quantisation ranks by approximate distances, so close neighbours swap places
    and the exact top 10 is partly lost; asking the index for more candidates (100, say) and
    re-scoring them on the vectors recovers it. ``vectors`` is any row-indexable matrix, e.g. the
    memory-mapped float16 matrix of :mod:`dynaprag.retrieval.dense_encode`: only the candidates'
    rows are read (from the page cache or disk), never the whole matrix.
    """
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    rows = np.full((len(queries), k), -1, dtype=np.int64)
    for i, (query, found) in enumerate(zip(queries, candidates)):
        found = np.unique(found[found >= 0])  # sorted: the reads go forward through the file
        exact = np.asarray(vectors[found], dtype=np.float32) @ np.asarray(query, dtype=np.float32)
        best = np.argsort(-exact, kind="stable")[:k]
        scores[i, :len(best)], rows[i, :len(best)] = exact[best], found[best]
    return scores, rows


def recall_at_k(found: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    """Mean share of the exact top ``k`` that the approximate top ``k`` contains."""
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, exact)]))
