"""SeaKR's query: the "sure" words of the step that was judged uncertain, POS-filtered.

THU-KEG/SeaKR @d75fe70 ``SEAKR/reasoner.py``:

- ``_restruct_tokens`` (lines 120-172) aligns the step's spaCy words with its generated tokens,
  both stripped of every character but ``[a-zA-Z0-9]``; a word's last token-less entry is dropped;
- ``_build_query`` (176-195) keeps a word when ``max(1 - p)`` over its tokens is ``<=
  prob_threshold`` (0.1), or when the word occurs (as a substring) in the question or in the
  previous step; ``sure_words`` is reset per spaCy sentence, so only the *last* sentence of the
  step counts (a quirk kept here);
- ``_filter_words`` (197-203) re-parses that string with spaCy and keeps the tokens tagged
  NOUN, ADJ, VERB, PROPN, NUM or ADV, minus "thus", "answer", "is", "so";
- ``_retrieve`` (205-222): an empty query falls back to the filtered question (whose "." are
  spaces, line 22); a query searched before aborts the retrieval (and, in the reference, the
  reasoning: here the formulator returns "" and the SeaKR trigger's decision ends the answer).

Pure functions first (tested on hand-made tokens), then the ``sure-words`` formulator.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Sequence

from dynaprag import nlp
from dynaprag.dynamic.draft import Decision, Draft
from dynaprag.dynamic.queries import FORMULATORS, QueryFormulator
from dynaprag.dynamic.text import is_sentence_end

QUERY_POS = frozenset({"NOUN", "ADJ", "VERB", "PROPN", "NUM", "ADV"})
EXCLUDED = ("thus", "answer", "is", "so")
_NOT_ALNUM = re.compile(r"[^a-zA-Z0-9]")


def _clean(text: str) -> str:
    return _NOT_ALNUM.sub("", text)


def word_tokens(step: str, tokens: Sequence[str], logprobs: Sequence[float]) -> list[list[tuple[str, list[float]]]]:
    """Per spaCy sentence of ``step``, its words with the log-probs of the tokens that spell them.

    ``_restruct_tokens``: tokens and words are compared after removing non-alphanumerics; a token
    longer than the word absorbs the next spaCy word; a token that matches neither is skipped.
    """
    cleaned = [(_clean(t), lp) for t, lp in zip(tokens, logprobs) if _clean(t)]
    out: list[list[tuple[str, list[float]]]] = []
    t = 0
    for sentence in (s.text.strip() for s in nlp.parse(step).sents):
        doc = nlp.parse(sentence)
        words: list[tuple[str, list[float]]] = []
        i = 0
        while i < len(doc):
            if not _clean(doc[i].text):
                i += 1
                continue
            full, rest, lps = doc[i].text, _clean(doc[i].text), []
            while rest and t < len(cleaned):
                piece, lp = cleaned[t]
                if rest.startswith(piece):
                    lps.append(lp)
                    rest = rest[len(piece):]
                elif piece.startswith(rest) and i + 1 < len(doc):
                    i += 1
                    full += doc[i].text
                    rest += _clean(doc[i].text)
                    continue
                t += 1
            words.append((full, lps))
            i += 1
        out.append(words)
    if out and out[-1] and not out[-1][-1][1]:
        out[-1] = out[-1][:-1]
    return out


def sure_words(step: str, tokens: Sequence[str], logprobs: Sequence[float], question: str,
               previous_step: str | None, prob_threshold: float = 0.1) -> str:
    """``_build_query``: the words of the step's last sentence the model was sure of, joined by spaces."""
    kept: list[str] = []
    for sentence in word_tokens(step, tokens, logprobs):
        kept = []
        for word, lps in sentence:
            if not lps:
                continue
            doubt = max(1 - math.exp(lp) for lp in lps)
            if word in question or (previous_step is not None and word in previous_step) or doubt <= prob_threshold:
                kept.append(word)
    return " ".join(kept)


def filter_words(text: str) -> str:
    """``_filter_words``: spaCy tokens of ``text`` tagged NOUN/ADJ/VERB/PROPN/NUM/ADV, minus thus/answer/is/so."""
    return " ".join(tok.text for tok in nlp.parse(text.strip()) if tok.pos_ in QUERY_POS and tok.text not in EXCLUDED)


def seakr_query(step: str, tokens: Sequence[str], logprobs: Sequence[float], question: str,
                previous_step: str | None, prob_threshold: float = 0.1) -> str:
    """The query ``_retrieve`` sends: filtered sure words, else the filtered question ("." -> " ")."""
    question = question.replace(".", " ")
    query = sure_words(step, tokens, logprobs, question, previous_step, prob_threshold) if step.strip() else ""
    query = filter_words(query)
    return query if query.strip() else filter_words(question)


def previous_step(draft: Draft, start: int) -> str | None:
    """The text of the last non-blank step that ends before answer index ``start`` (None: there is none)."""
    end = start
    for i in range(start - 1, -1, -1):
        if i == 0 or is_sentence_end("".join(draft.pieces[:i])):
            text = draft.span_text(i, end)
            if text:
                return text
            end = i
    return None


@dataclass
class SureWordsQuery(QueryFormulator):
    """SeaKR's query from the uncertain step (module docstring); a query of an earlier retrieval
    (``draft.queries``) returns "" (no retrieval)."""

    prob_threshold: float = field(default=0.1, metadata={
        "help": "keep a word when max(1-p) over its tokens <= this (SeaKR prob_threshold)", "min": 0.0, "max": 1.0})

    def __call__(self, draft: Draft, decision: Decision, probe=None) -> str:
        start, end = decision.span if decision.span[1] > decision.span[0] else draft.last_sentence()
        query = seakr_query("".join(draft.pieces[start:end]).strip(), draft.pieces[start:end],
                            [s.logprob for s in draft.steps[start:end]], draft.question,
                            previous_step(draft, start), self.prob_threshold)
        return "" if query in draft.queries else query


FORMULATORS.register("sure-words", SureWordsQuery)
