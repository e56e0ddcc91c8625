"""Exact top-k over bm25s's CSC score matrix: every posting summed, or MaxScore pruning.

bm25s scores a query by adding, column after column, every posting of its terms into a
passage-sized array: at the DPR scale a question's common words ("film", "american") bring
millions of postings, ~20 ns each. :func:`maxscore_top_k` returns the same k best passages
with the same float32 scores after reading a fraction of them (Turtle & Flood 1995,
"Query evaluation: strategies and optimizations", MaxScore, term at a time):

1. Terms are taken in decreasing order of their highest score in any passage (``colmax``,
   kept with the index); usually the rare ones first. Their postings are added into a buffer.
2. Once the terms left could add at most ``rest`` to a passage and ``rest`` is below the
   k-th best partial score ``theta``, a passage not seen yet can no longer reach the top k.
   From then on only the candidates seen so far are scored: each remaining posting list is
   binary-searched for them (its rows are sorted), and a candidate whose partial score plus
   ``rest`` falls below ``theta`` is dropped.
3. The survivors are scored again exactly as bm25s does (float32, in the query's term order,
   repeats included), so scores are bit-for-bit the dense ones; ties go to the lower row.

Bounds carry a relative margin of 1e-4, far above float32 rounding, so pruning never drops a
passage that could tie. :func:`dense_top_k` is the plain sum, used when there is nothing to
prune (one term, non-occurrence variants bm25l/bm25+, an index without ``colmax``).
"""
from __future__ import annotations

import numpy as np

_MARGIN = 1e-4


def select_top_k(rows: np.ndarray, values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (rows, values) with a positive value: value descending, then row ascending."""
    keep = values > 0
    rows, values = rows[keep], values[keep]
    if len(rows) > k:
        kth = values[np.argpartition(-values, k - 1)[k - 1]]
        keep = values >= kth
        rows, values = rows[keep], values[keep]
    order = np.lexsort((rows, -values))[:k]
    return rows[order], values[order]


def unique_rows(rows: np.ndarray, marks: np.ndarray) -> np.ndarray:
    """``rows`` without repeats, in O(len(rows)) with ``marks`` (zeros, passage-sized; left zeroed).

    Cheaper than ``np.unique`` (a sort or a hash) on the millions of rows a common word brings.
    """
    stamp = np.arange(1, len(rows) + 1, dtype=marks.dtype)
    marks[rows] = stamp  # the last write of a row wins
    out = rows[marks[rows] == stamp]
    marks[out] = 0
    return out


def dense_top_k(index, columns: list[int], k: int, buffer: np.ndarray,
                marks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every posting of ``columns`` summed into ``buffer`` (zeros, passage-sized; left zeroed)."""
    touched = []
    for c in columns:
        start, end = int(index.indptr[c]), int(index.indptr[c + 1])
        rows = np.asarray(index.indices[start:end])
        buffer[rows] += index.data[start:end]
        touched.append(rows)
    if index.nonoccurrence is not None:  # bm25l/bm25+: every passage scores, the untouched ones too
        values = buffer + index.nonoccurrence[columns].sum()
        buffer[:] = 0
        return select_top_k(np.arange(len(values)), values, k)
    everything = np.concatenate(touched)
    rows = unique_rows(everything, marks) if len(everything) < len(buffer) // 8 else np.flatnonzero(buffer)
    values = buffer[rows]
    buffer[rows] = 0
    return select_top_k(rows, values, k)


def _lookup(index, column: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask of ``rows`` that have a posting in ``column``, their scores there)."""
    start, end = int(index.indptr[column]), int(index.indptr[column + 1])
    posting_rows = index.indices[start:end]
    pos = np.searchsorted(posting_rows, rows)
    pos[pos == len(posting_rows)] = 0
    hit = np.asarray(posting_rows[pos]) == rows
    return hit, np.asarray(index.data[start:end][pos[hit]])


def _kth(values: np.ndarray, k: int) -> float:
    return float(values[np.argpartition(-values, k - 1)[k - 1]]) if len(values) >= k else 0.0


def maxscore_top_k(index, columns: list[int], k: int, buffer: np.ndarray,
                   marks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The dense top-k of ``columns`` (same rows, same float32 scores), reading fewer postings."""
    unique, repeats = np.unique(np.asarray(columns, dtype=np.int64), return_counts=True)
    bound = index.colmax[unique].astype(np.float64) * repeats
    order = np.argsort(-bound, kind="stable")
    rest, seen = float(bound.sum()), 0.0
    fresh, top_rows, theta = [], None, 0.0  # fresh: each touched row once, in the order first touched
    j = 0
    for j, t in enumerate(order):  # phase 1: every posting of the terms with the highest bounds
        c, times = int(unique[t]), int(repeats[t])
        start, end = int(index.indptr[c]), int(index.indptr[c + 1])
        rows = index.indices[start:end]  # int32, like every row array here (no int64 copies)
        scores = index.data[start:end]
        buffer[rows] += scores if times == 1 else scores * np.float32(times)
        new = rows[marks[rows] == 0]
        marks[new] = 1
        fresh.append(new)
        rest, seen = rest - float(bound[t]), seen + float(bound[t])
        if rest >= seen:  # theta <= any partial score <= seen: no switch yet, no need to know theta
            continue
        if top_rows is None:  # the k best partial scores so far; then only touched rows can change them
            pool = np.concatenate(fresh)
        else:
            pool = np.concatenate([top_rows, rows[~np.isin(rows, top_rows)]])  # each row once
        values = buffer[pool]
        if len(pool) > k:
            best = np.argpartition(-values, k - 1)[:k]
            pool, values = pool[best], values[best]
        top_rows, theta = pool, _kth(values, k)
        if rest < theta * (1 - _MARGIN):
            break
    else:
        j = len(order)
    candidates = np.concatenate(fresh)
    partial = buffer[candidates].astype(np.float64)
    buffer[candidates] = 0
    marks[candidates] = 0
    keep = partial + rest >= theta * (1 - _MARGIN)
    candidates, partial = candidates[keep], partial[keep]
    for t in order[j + 1:]:  # phase 2: the remaining terms, for the candidates only
        hit, scores = _lookup(index, int(unique[t]), candidates)
        partial[hit] += scores.astype(np.float64) * int(repeats[t])
        rest -= float(bound[t])
        theta = max(theta, _kth(partial, k))
        keep = partial + rest >= theta * (1 - _MARGIN)
        candidates, partial = candidates[keep], partial[keep]
    exact = np.zeros(len(candidates), dtype=np.float32)
    for c in columns:  # bm25s's float32 sums, in the query's order
        hit, scores = _lookup(index, int(c), candidates)
        exact[hit] += scores
    return select_top_k(candidates, exact, k)
