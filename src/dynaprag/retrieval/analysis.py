"""Text analysis for BM25: text -> index terms, exactly as ``bm25s.tokenization.Tokenizer`` does it.

The out-of-core BM25 build (:mod:`dynaprag.retrieval.bm25_chunks`) and the memory-mapped
searcher (:mod:`dynaprag.retrieval.bm25_disk`) both need the terms of a text without bm25s's
three in-memory vocabulary dictionaries (``word_to_stem``, ``stem_to_sid``, ``word_to_id``),
which grow to gigabytes on the 21M-passage DPR dump. :class:`Analyzer` yields the same terms:
lower-case, split on ``(?u)\\b\\w\\w+\\b``, drop stop-words, stem each word with PyStemmer;
a text with no term left is the empty term ``""`` (bm25s's "empty token", which keeps an
all-stop-word passage indexable). Stems are cached per word, with a bounded cache.

Stop-word lists: any name bm25s knows (``en``, ``english``, ``de``, ...), ``none``, or
``lucene``: Lucene's ``EnglishAnalyzer.ENGLISH_STOP_WORDS_SET`` (the 33 words Elasticsearch's
``english`` analyzer removes), used by the ``elastic-english`` preset of :mod:`dynaprag.retrieval.bm25_presets`.

>>> Analyzer("english", "en").terms("The violins of Cremona")
['violin', 'cremona']
>>> Analyzer("english", "en").terms("of the")
['']
"""
from __future__ import annotations

import re
from typing import Iterable

#: Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET (Elasticsearch's ``_english_`` stop words).
LUCENE_ENGLISH_STOPWORDS = (
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no",
    "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this",
    "to", "was", "will", "with")
#: bm25s's default splitter: words of two or more word characters
SPLITTER = r"(?u)\b\w\w+\b"
_MISSING = object()
_BATCH = 5_000  # texts analysed per batch in analyze_chunk


def stopword_list(name: str | None) -> tuple[str, ...]:
    """The stop words called ``name``: ``lucene``, ``none``/empty, or any list bm25s knows."""
    if not name or name.lower() == "none":
        return ()
    if name.lower() == "lucene":
        return LUCENE_ENGLISH_STOPWORDS
    from bm25s.tokenization import _infer_stopwords

    return tuple(_infer_stopwords(name))


def stemmer_function(name: str | None):
    """PyStemmer's ``stemWord`` for a Snowball algorithm name (``english``, ``porter``, ...), or None."""
    if not name or name.lower() == "none":
        return None
    try:
        import Stemmer
    except ImportError:  # pragma: no cover - PyStemmer is a core dependency
        raise ImportError("stemming needs PyStemmer: pip install PyStemmer") from None
    try:
        return Stemmer.Stemmer(name).stemWord
    except KeyError:
        raise ValueError(f"unknown stemmer {name!r}; PyStemmer knows {', '.join(Stemmer.algorithms())}") from None


class Analyzer:
    """Text -> list of index terms (stems), the bm25s way; ``stemmer``/``stopwords`` as in the config."""

    def __init__(self, stemmer: str | None = "english", stopwords: str | None = "en", *,
                 lower: bool = True, cache_size: int = 2_000_000):
        self.stemmer_name, self.stopwords_name = stemmer, stopwords
        self.lower = lower
        self._split = re.compile(SPLITTER).findall
        self._stem = stemmer_function(stemmer)
        self._stopwords = frozenset(stopword_list(stopwords))
        self._cache: dict[str, str | None] = {}
        self._cache_size = cache_size
        self._word_ids: dict[str, int] = {}  # analyze_chunk's word -> term id (-1: stop word)
        self._term_ids: dict[str, int] = {}
        self._vocabulary: list[str] = []

    def _new_word(self, word: str) -> str | None:
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        term = None if word in self._stopwords else (self._stem(word) if self._stem else word)
        self._cache[word] = term
        return term

    def terms(self, text: str) -> list[str]:
        """The index terms of ``text`` in order (repeats kept); ``[""]`` when none is left."""
        get, out = self._cache.get, []
        for word in self._split(text.lower() if self.lower else text):
            term = get(word, _MISSING)
            if term is _MISSING:
                term = self._new_word(word)
            if term is not None:
                out.append(term)
        return out or [""]

    def terms_many(self, texts: Iterable[str]) -> list[list[str]]:
        return [self.terms(t) for t in texts]

    def analyze_chunk(self, texts: list[str]):
        """Many texts at once, for indexing: ``(term_ids, doc_lens, vocabulary)``.

        ``term_ids`` (int64, one per term occurrence, passage after passage) index
        ``vocabulary`` (a list of terms valid for this call); ``doc_lens`` is terms per text.
        The same terms as :meth:`terms`, found with one dictionary lookup per word in C
        (``map``) instead of a Python loop; word strings are held for one batch at a time.
        """
        import numpy as np

        if len(self._word_ids) > self._cache_size:  # term ids are valid within one call only
            self._word_ids.clear()
            self._vocabulary.clear()
            self._term_ids.clear()
        raw_lens = np.empty(len(texts), dtype=np.int64)
        parts = []
        for start in range(0, len(texts), _BATCH):  # bounded lists of word strings
            parts.append(self._word_term_ids(texts[start:start + _BATCH], raw_lens[start:start + _BATCH]))
        ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        keep = ids >= 0
        docs = np.repeat(np.arange(len(texts), dtype=np.int64), raw_lens)[keep]
        ids = ids[keep]
        doc_lens = np.bincount(docs, minlength=len(texts))
        empty = np.flatnonzero(doc_lens == 0)
        if len(empty):  # bm25s's empty token: a passage without terms still has one
            order = np.argsort(np.concatenate([docs, empty]), kind="stable")
            ids = np.concatenate([ids, np.full(len(empty), self._term_id(""), dtype=np.int64)])[order]
            doc_lens[empty] = 1
        return ids, doc_lens.astype(np.int32), self._vocabulary

    def _word_term_ids(self, texts: list[str], raw_lens: np.ndarray) -> np.ndarray:
        """Term id (-1: stop word) of every word of ``texts``; fills words per text in ``raw_lens``."""
        import numpy as np

        words: list[str] = []
        split = self._split
        for i, text in enumerate(texts):
            found = split(text.lower() if self.lower else text)
            raw_lens[i] = len(found)
            words.extend(found)
        ids_of = self._word_ids
        for word in set(words).difference(ids_of):
            term = self._new_word(word)
            ids_of[word] = -1 if term is None else self._term_id(term)
        return np.fromiter(map(ids_of.__getitem__, words), dtype=np.int64, count=len(words))

    def _term_id(self, term: str) -> int:
        tid = self._term_ids.get(term)
        if tid is None:
            tid = self._term_ids[term] = len(self._vocabulary)
            self._vocabulary.append(term)
        return tid
