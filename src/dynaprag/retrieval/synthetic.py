"""Deterministic synthetic corpora in DPR's TSV layout, with statistics fitted on a real corpus.

Why: the 21M-passage DPR dump cannot be downloaded here, yet building and searching at that
scale must be measured. :func:`fit_statistics` fits, on a real corpus (by default
``../shared/data/corpus/wiki_paragraphs.jsonl``): the Zipf exponent of word frequencies
(least squares on log-frequency against log-rank, ranks 10 to 5,000), Heaps' law of vocabulary
growth ``V(n) = K n^beta`` (n = words read), the empirical distribution of passage lengths in
words, and the real words by frequency. :func:`write_synthetic_tsv` then draws, for N passages,
lengths from that distribution and words i.i.d. from a Zipf law over a vocabulary whose size is
solved so that the expected number of distinct words equals Heaps' prediction at the corpus's
size. The most frequent ranks are the real words (stop words, common content words, so the
analyser's stop-word removal and stemming see realistic text and real questions find
matches); the rarer ranks are made-up words (syllables spelling the rank).

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


def _zipf_weights(size: int, s: float) -> np.ndarray:
    w = np.arange(1, size + 1, dtype=np.float64) ** -s
    return w / w.sum()


def expected_distinct(size: int, s: float, draws: float) -> float:
    """Expected distinct words after ``draws`` i.i.d. draws from Zipf(``s``) over ``size`` words."""
    p = _zipf_weights(size, s)
    return float(np.sum(-np.expm1(draws * np.log1p(-p))))


def solve_vocabulary(target: int, s: float, draws: float) -> int:
    """The Zipf vocabulary size whose expected distinct words after ``draws`` is ``target``."""
    lo, hi = max(1, target), max(2, target) * 2
    while expected_distinct(hi, s, draws) < target and hi < 2**31:
        lo, hi = hi, hi * 2
    while hi - lo > max(1, lo // 1000):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if expected_distinct(mid, s, draws) < target else (lo, mid)
    return hi


def _made_up_words(start: int, stop: int) -> np.ndarray:
    """Words spelling their rank in syllables (``bada``, ``bade``...), as fixed-width bytes."""
    ranks = np.arange(start, stop, dtype=np.int64)
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
        table[len(real):] = _made_up_words(len(real), size)
    return table


def write_synthetic_tsv(path: str | Path, passages: int, stats: CorpusStatistics, *, seed: int = 0,
                        progress: bool = True) -> dict:
    """Write ``passages`` synthetic passages to ``path`` (DPR TSV); resumable; returns its description."""
    from tqdm.auto import tqdm

    path = Path(path)
    describe = {"passages": passages, "seed": seed, "fitted_on": stats.summary()}
    words_total = passages * float(np.mean(stats.lengths))
    describe["vocabulary_target"] = stats.vocabulary_size(words_total)
    size = solve_vocabulary(describe["vocabulary_target"], stats.zipf_s, words_total)
    describe["zipf_vocabulary"] = size
    sidecar = path.with_name(path.name + ".json")
    if path.is_file() and sidecar.is_file() and json.loads(sidecar.read_text()).get("complete") == describe:
        return describe
    partial, state_path = path.with_name(path.name + ".partial"), path.with_name(path.name + ".partial.json")
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if state.get("describe") != describe:
        state = {"describe": describe, "chunks": 0, "bytes": 0}
    path.parent.mkdir(parents=True, exist_ok=True)
    cdf = np.cumsum(_zipf_weights(size, stats.zipf_s))
    table = word_table(stats, size)
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
            words = table[np.minimum(np.searchsorted(cdf, rng.random(int(lens.sum()))), size - 1)]
            title_lens = rng.integers(1, 4, size=n)
            titles = table[np.minimum(np.searchsorted(cdf, rng.uniform(cdf[49], 1.0, int(title_lens.sum()))),
                                      size - 1)]
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
