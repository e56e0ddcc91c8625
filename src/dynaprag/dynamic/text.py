"""Text units the dynamic methods reason about: sentence ends, words, stop words, entities.

Pure functions over token pieces (each token's decoded text), shared by triggers and query
formulators so that both sides of a method cut the draft the same way.
"""
from __future__ import annotations

import re
from typing import Sequence

_SENTENCE_END = re.compile(r"(?<![A-Z])[.!?][\"')\]]*\s*$|\n\s*$")

# A compact English function-word list (ours), for DRAGIN's s_i and QFS's word filter.
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not now of off on once only or other our ours ourselves out over own same she should
so some such than that the their theirs them themselves then there these they this that those through to
too under until up very was we were what when where which while who whom why will with would you
your yours yourself yourselves also answer question thus therefore hence
""".split())


def is_sentence_end(text_so_far: str) -> bool:
    """True when ``text_so_far`` ends a sentence (., ! or ? not after a capital initial; or newline)."""
    return bool(text_so_far.strip()) and bool(_SENTENCE_END.search(text_so_far))


def word_groups(pieces: Sequence[str]) -> list[list[int]]:
    """Group token pieces into words: a new word starts at whitespace or punctuation."""
    groups: list[list[int]] = []
    for i, piece in enumerate(pieces):
        starts = not groups or piece[:1].isspace() or not piece.strip() or not piece.strip()[0].isalnum() \
            or not "".join(pieces[j] for j in groups[-1]).strip()[-1:].isalnum()
        if starts:
            groups.append([i])
        else:
            groups[-1].append(i)
    return groups


def is_content_word(word: str) -> bool:
    """A word that is not a stop word or punctuation."""
    w = word.strip().lower().strip(".,;:!?\"'()[]")
    return bool(w) and any(c.isalnum() for c in w) and w not in STOP_WORDS


def content_flags(pieces: Sequence[str]) -> list[float]:
    """DRAGIN's ``s_i``: 1.0 for tokens of content words, 0.0 for stop words and punctuation."""
    flags = [0.0] * len(pieces)
    for group in word_groups(pieces):
        if is_content_word("".join(pieces[i] for i in group)):
            for i in group:
                flags[i] = 1.0
    return flags
