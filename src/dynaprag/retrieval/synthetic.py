"""Deterministic synthetic corpora in DPR's TSV layout, with statistics fitted on a real corpus.

Why: the 21M-passage DPR dump cannot be downloaded here, yet building and searching at that
scale must be measured. :func:`fit_statistics` fits, on a real corpus (by default
``../shared/data/corpus/wiki_paragraphs.jsonl``): the Zipf exponent of word frequencies
(least squares on log-frequency against log-rank, ranks 10 to 5,000), Heaps' law of vocabulary
growth ``V(n) = K n^beta`` (n = words read), the empirical distribution of passage lengths in
words, and the real words by frequency. :func:`write_synthetic_tsv` then draws, for N passages,
lengths from that distribution and words i.i.d. from :class:`WordModel`: the fitted Zipf law
for the frequent words and a tail of exponent 1/beta, so the vocabulary grows by Heaps' law at
every size (the rank where the tail starts is fitted so that the expected vocabulary of a
sample as large as the real corpus is the one observed). The most frequent ranks are the real
words (stop words, common content words: the analyser's stop-word removal and stemming see
realistic text and real questions find matches); the rarer ranks are made-up words (syllables
spelling the rank).

Everything is seeded: the same (N, seed, statistics) gives the same file, chunk by chunk, and
a killed generation resumes from its last complete chunk. Files go under the cache folder,
never the repository.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dynaprag.files import atomic_write_json

_WORD = re.compile(r"\w+")
_SYLLABLES = [c + v for c in "bdfgklmnprtvz" for v in "aeiou"]
GENERATION_CHUNK = 100_000
MAX_WORD_BYTES = 20


@dataclass
class CorpusStatistics:
    """What :func:`fit_statistics` measured on the real corpus."""

    source: str
    passages: int
    words: int
    distinct_words: int
    zipf_s: float
    heaps_k: float
    heaps_beta: float
    lengths: list[int]  # words per passage, one entry per real passage
    vocabulary: list[str]  # real words, most frequent first (those over MAX_WORD_BYTES are not drawn)

    def vocabulary_size(self, words: float) -> int:
        """Heaps' law: distinct words expected after reading ``words`` words."""
        return int(round(self.heaps_k * words ** self.heaps_beta))

    def summary(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("lengths", "vocabulary")}
        out["mean_words_per_passage"] = round(float(np.mean(self.lengths)), 2)
        return out


def fit_statistics(path: str | Path) -> CorpusStatistics:
    """Fit Zipf, Heaps and the length distribution on a JSONL corpus (``text`` fields)."""
    counts: Counter[str] = Counter()
    lengths, growth, seen, words = [], [], set(), 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            tokens = _WORD.findall(json.loads(line)["text"].lower())
            lengths.append(len(tokens))
            counts.update(tokens)
            seen.update(tokens)
            words += len(tokens)
            growth.append((words, len(seen)))
    freq = np.array(sorted(counts.values(), reverse=True), dtype=np.float64)
    ranks = np.arange(1, len(freq) + 1)
    fit = (ranks >= 10) & (ranks <= 5000)
    zipf_s = -float(np.polyfit(np.log(ranks[fit]), np.log(freq[fit]), 1)[0])
    points = np.array(growth[len(growth) // 100:], dtype=np.float64)  # past the first 1 %
    beta, log_k = np.polyfit(np.log(points[:, 0]), np.log(points[:, 1]), 1)
    return CorpusStatistics(source=str(path), passages=len(lengths), words=words, distinct_words=len(counts),
                            zipf_s=round(zipf_s, 4), heaps_k=round(float(np.exp(log_k)), 4),
                            heaps_beta=round(float(beta), 4), lengths=lengths,
                            vocabulary=[w for w, _ in counts.most_common()])


@dataclass
class WordModel:
    """Word ranks drawn i.i.d. from a Zipf law with a heavier tail: p(r) ~ r^-s below ``head``,
    ~ r^-(1/beta) above it (unbounded, continuous at ``head``).

    Why two regimes: i.i.d. draws from one Zipf law of exponent s grow a vocabulary as n^(1/s),
    so the fitted head exponent (~1.0) would give beta ~ 1, not the measured ~0.68; a tail of
    exponent 1/beta gives Heaps' growth at every size, not only at the one a finite vocabulary
    was solved for. ``head`` is fitted so the expected distinct words match the real sample.
    """

    s_head: float
    s_tail: float
    head: int

    def __post_init__(self) -> None:
        weights = np.arange(1, self.head + 1, dtype=np.float64) ** -self.s_head
        tail = self.head ** (1 - self.s_head) / (self.s_tail - 1)  # integral of the tail density
        self._total = weights.sum() + tail
        self._head_mass = weights.sum() / self._total
        self._head_cdf = np.cumsum(weights) / weights.sum()

    def expected_distinct(self, draws: float) -> float:
        """Expected distinct words after ``draws`` draws (head summed, tail integrated)."""
        p = np.arange(1, self.head + 1, dtype=np.float64) ** -self.s_head / self._total
        head = float(np.sum(-np.expm1(-draws * p)))
        scale = self.head ** (self.s_tail - self.s_head) / self._total
        t_max = np.log((draws * scale * 1e12) ** (1 / self.s_tail) / self.head)
        t = np.linspace(0.0, max(t_max, 1.0), 20001)
        r = self.head * np.exp(t)
        integrand = -np.expm1(-draws * scale * r ** -self.s_tail) * r
        return head + float(np.sum((integrand[1:] + integrand[:-1]) * np.diff(t)) / 2)

    def draw(self, rng: np.random.Generator, n: int, min_rank: int = 1) -> np.ndarray:
        """``n`` ranks (1-based, int64); ``min_rank`` > 1 draws from the head only."""
        min_rank = min(min_rank, self.head)
        if min_rank > 1:
            u = rng.uniform(self._head_cdf[min_rank - 2], 1.0, n)
            return np.searchsorted(self._head_cdf, u).astype(np.int64) + 1
        u = rng.random(n)
        ranks = np.searchsorted(self._head_cdf, u / self._head_mass).astype(np.int64) + 1
        tail = u >= self._head_mass
        v = (u[tail] - self._head_mass) / (1 - self._head_mass)
        ranks[tail] = self.head + 1 + np.floor(
            np.minimum(self.head * (1 - v) ** (-1 / (self.s_tail - 1)), _MAX_RANK)).astype(np.int64)
        return np.minimum(ranks, _MAX_RANK)


_MAX_RANK = len(_SYLLABLES) ** 9 - 1  # the longest made-up word stays within MAX_WORD_BYTES


def fit_word_model(stats: CorpusStatistics) -> WordModel:
    """The :class:`WordModel` whose expected vocabulary on the real sample is the one observed."""
    lo, hi = 10, 5_000_000
    while hi - lo > max(1, lo // 500):
        mid = int(np.sqrt(lo * hi))
        model = WordModel(stats.zipf_s, 1 / stats.heaps_beta, mid)
        lo, hi = (mid, hi) if model.expected_distinct(stats.words) < stats.distinct_words else (lo, mid)
    return WordModel(stats.zipf_s, 1 / stats.heaps_beta, hi)


def made_up_words(ranks: np.ndarray) -> np.ndarray:
    """Words spelling their rank in syllables (``xba``, ``xbe``...), as fixed-width bytes."""
    ranks = np.array(ranks, dtype=np.int64)
    words = np.full(len(ranks), "x", dtype=f"U{MAX_WORD_BYTES}")
    syllables = np.array(_SYLLABLES)
    active = np.ones(len(ranks), dtype=bool)
    while active.any():
        words = np.where(active, np.char.add(words, syllables[ranks % len(_SYLLABLES)]), words)
        ranks //= len(_SYLLABLES)
        active = ranks > 0
    return words.astype(f"S{MAX_WORD_BYTES}")


def word_table(stats: CorpusStatistics, size: int) -> np.ndarray:
    """The ``size`` words of the synthetic vocabulary by rank: real ones first, then made up."""
    real = [b for w in stats.vocabulary if len(b := w.encode("utf-8")) <= MAX_WORD_BYTES][:size]
    table = np.empty(size, dtype=f"S{MAX_WORD_BYTES}")
    table[:len(real)] = real
    if size > len(real):
        table[len(real):] = made_up_words(np.arange(len(real), size))
    return table


def _words(table: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The words of 1-based ``ranks``: the table's for the head, made up for the tail."""
    words = np.empty(len(ranks), dtype=table.dtype)
    head = ranks <= len(table)
    words[head] = table[ranks[head] - 1]
    words[~head] = made_up_words(ranks[~head] - 1)
    return words


def write_synthetic_tsv(path: str | Path, passages: int, stats: CorpusStatistics, *, seed: int = 0,
                        progress: bool = True) -> dict:
    """Write ``passages`` synthetic passages to ``path`` (DPR TSV); resumable; returns its description."""
    from tqdm.auto import tqdm

    path = Path(path)
    model = fit_word_model(stats)
    words_total = passages * float(np.mean(stats.lengths))
    describe = {"passages": passages, "seed": seed, "fitted_on": stats.summary(),
                "word_model": {"s_head": model.s_head, "s_tail": round(model.s_tail, 4), "head": model.head},
                "expected_vocabulary": int(model.expected_distinct(words_total)),
                "heaps_vocabulary": stats.vocabulary_size(words_total)}
    sidecar = path.with_name(path.name + ".json")
    if path.is_file() and sidecar.is_file() and json.loads(sidecar.read_text()).get("complete") == describe:
        return describe
    partial, state_path = path.with_name(path.name + ".partial"), path.with_name(path.name + ".partial.json")
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if state.get("describe") != describe:
        state = {"describe": describe, "chunks": 0, "bytes": 0}
    path.parent.mkdir(parents=True, exist_ok=True)
    table = word_table(stats, max(model.head, len(stats.vocabulary)))
    lengths = np.asarray(stats.lengths, dtype=np.int64)
    n_chunks = -(-passages // GENERATION_CHUNK)
    bar = tqdm(total=passages, initial=min(passages, state["chunks"] * GENERATION_CHUNK), unit=" passages",
               unit_scale=True, desc=f"synthetic {path.name}", disable=not progress)
    with open(partial, "ab") as handle:
        handle.truncate(state["bytes"])
        if state["chunks"] == 0:
            handle.write(b"id\ttext\ttitle\n")
        for c in range(state["chunks"], n_chunks):
            rng = np.random.default_rng([seed, c])
            first, n = c * GENERATION_CHUNK, min(GENERATION_CHUNK, passages - c * GENERATION_CHUNK)
            lens = np.maximum(1, rng.choice(lengths, size=n))
            words = _words(table, model.draw(rng, int(lens.sum())))
            title_lens = rng.integers(1, 4, size=n)
            titles = table[model.draw(rng, int(title_lens.sum()), min_rank=50) - 1]
            ends, title_ends = np.cumsum(lens), np.cumsum(title_lens)
            lines = []
            for i in range(n):
                text = b" ".join(words[ends[i] - lens[i]:ends[i]].tolist())
                title = b" ".join(titles[title_ends[i] - title_lens[i]:title_ends[i]].tolist())
                lines.append(b"%d\t\"%s\"\t%s\n" % (first + i + 1, text, title))
            handle.write(b"".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
            state.update(chunks=c + 1, bytes=handle.tell())
            atomic_write_json(state_path, state)
            bar.update(n)
    bar.close()
    os.replace(partial, path)
    atomic_write_json(sidecar, {"complete": describe})
    state_path.unlink(missing_ok=True)
    return describe
