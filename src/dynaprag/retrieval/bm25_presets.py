"""Named BM25 configurations: the retrieval settings a paper's index used, as config overrides.

``elastic-english`` is the index DRAGIN, PRAG, DyPRAG and SeaKR search: their ``prep_elastic.py``
(after BEIR's ``ElasticSearch`` helper, ``language="english"``) maps the ``title`` and ``txt``
fields of ``psgs_w100.tsv`` with Elasticsearch's built-in ``english`` analyzer and the default
similarity, BM25 with k1=1.2 and b=0.75; queries are ``multi_match`` ``best_fields`` with
``tie_breaker`` 0.5 (our ``elastic`` backend sends the same query to such a server). The
analyzer is: standard tokenizer, English possessive filter, lower-case, the ``_english_`` stop
words (Lucene's 33), Porter stemmer. The preset reproduces the similarity (Lucene's BM25 idf
and tf saturation, k1, b), the stop words and the stemmer; it differs, and results can differ
a little, in:

- **one field, not two**: title and text are indexed together as one field; Elasticsearch
  scores ``title`` and ``txt`` apart (each with its own statistics) and adds half the weaker
  field's score to the stronger's;
- **tokenizer**: ``\\w\\w+`` (bm25s's) instead of Unicode word breaks (UAX #29): one-letter words
  are dropped, ``don't``/``3.14`` split at the punctuation, and possessive ``'s`` becomes a
  separate one-letter token (dropped) rather than being stripped;
- **document length**: exact, where Lucene stores it in one byte (a lossy norm), which moves
  scores in the third or fourth significant digit.

``bm25s-lucene`` is this project's default (bm25s's English stop words, Snowball stemming).

>>> from dynaprag.retrieval import RetrieverConfig
>>> RetrieverConfig(**bm25_preset("elastic-english")).stemmer
'porter'
"""
from __future__ import annotations

BM25_PRESETS: dict[str, dict] = {
    "bm25s-lucene": {"k1": 1.2, "b": 0.75, "bm25_method": "lucene", "stemmer": "english", "stopwords": "en"},
    "elastic-english": {"k1": 1.2, "b": 0.75, "bm25_method": "lucene", "stemmer": "porter", "stopwords": "lucene"},
}


def bm25_preset(name: str) -> dict:
    """The :class:`~dynaprag.retrieval.RetrieverConfig` overrides of a named BM25 configuration."""
    try:
        return dict(BM25_PRESETS[name])
    except KeyError:
        raise ValueError(f"unknown BM25 preset {name!r}; choose one of {', '.join(BM25_PRESETS)}") from None
