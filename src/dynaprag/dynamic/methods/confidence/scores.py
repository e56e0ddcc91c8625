"""Token-confidence triggers as their reference code computes them: TokenRAG, FLARE, EntityRAG.

* **TokenRAG** -- the "FLARE" baseline of the DRAGIN repository (every ``FLARE.json`` config runs
  ``method: token``): oneal2000/DRAGIN @4d71efc ``src/generate.py`` ``TokenRAG.modifier``.
  Per spaCy sentence the mean of ``1 - p`` over its tokens; fire when it exceeds θ = 0.08
  (i.e. mean p < 0.92) and mask the tokens with ``1 - p > θ``.
* **FLARE** -- jzbjyb/FLARE @ec4b06b ``src/templates.py`` ``ApiReturn.use_as_query`` with the
  released ``configs/2wikihop_flare_config.json`` (θ = 0.8, β = 0.4, ``simple`` masking).
* **EntityRAG** -- DRAGIN ``generate.py`` ``EntityRAG.modifier``: an entity's score is a solver
  over its tokens' *log-probs*, then ``1 - exp``; a sentence solver over the entities decides;
  every entity above θ is masked.

All three take what a decoding loop has: the decoded text, the tokens as decoded strings
(``tokenizer.decode([id])``, as the reference ``BasicGenerator.generate`` builds them) and
their natural-log probabilities. Sentences and entities come from spaCy (:mod:`dynaprag.nlp`).
Parity with the reference outputs is tested in ``tests/comparison/`` on
``../shared/parity/{tokenrag,flare,entityrag}.json``.

>>> flare_query([" Raoul", " Walsh", " was", " born", " in", " 18", "87", "."],
...             [0.99, 0.99, 0.99, 0.99, 0.99, 0.9, 0.3, 0.99])
'Raoul Walsh was born in 18 .'
>>> check = token_rag_check(" Walsh was born in 1887.", [" Walsh", " was", " born", " in", " 18", "87", "."],
...                         [-0.01, -0.01, -0.01, -0.01, -0.01, -2.0, -0.01])
>>> check.fired, check.masked, direct_query(check.masked)
(True, 'Walsh was born in 18[xxx].', 'Walsh was born in 18.')
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple, Sequence

import numpy as np

from dynaprag import nlp

MASK = "[xxx]"
"""The reference's placeholder for a masked token or entity (removed by the "direct" query)."""

_SENTENCE_SOLVERS = {"avg": np.mean, "max": np.max, "min": np.min}
_ENTITY_SOLVERS = {**_SENTENCE_SOLVERS, "first": lambda x: x[0] if len(x) > 0 else 0.0}


class SentenceConfidence(NamedTuple):
    """One sentence as scored: token span ``[start, end]`` scored (TokenRAG; ``None`` for
    EntityRAG), the per-item ``1 - p`` values and the solver's result."""

    index: int
    sentence: str
    start: int | None
    end: int | None
    scores: list[float]
    score: float


class ConfidenceCheck(NamedTuple):
    """What ``modifier`` returns, plus its per-sentence trace.

    ``kept_text`` -- the sentences before the firing one joined by spaces (``""`` for the
    first), or the whole text when nothing fired (the reference's first return value);
    ``masked`` -- the firing sentence with :data:`MASK` in place of the uncertain items.
    """

    fired: bool
    sentence_index: int | None
    kept_text: str
    masked: str | None
    sentences: list[SentenceConfidence]


class EntityCheck(NamedTuple):
    """:class:`ConfidenceCheck` for EntityRAG, with its entities, their token intervals
    ``[first, last]`` and their aggregated log-probs, per sentence."""

    fired: bool
    sentence_index: int | None
    kept_text: str
    masked: str | None
    sentences: list[SentenceConfidence]
    entities: list[list[str]]
    intervals: list[list[tuple[int, int]]]
    entity_logprobs: list[list[float]]


def _solve(values: Sequence[float], solver: str, table: dict) -> float:
    if solver not in table:
        raise ValueError(f"unknown solver {solver!r}; expected one of {sorted(table)}")
    if len(values) == 0 and solver != "first":
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(table[solver](np.array(values, dtype=np.float64)))


def direct_query(masked: str) -> str:
    """The ``direct`` query of ``TokenRAG.inference``: the masked sentence without the masks."""
    return masked.replace(MASK, "")


def mask_spans(sentence: str, spans: Sequence[str], scores: Sequence[float], threshold: float) -> str:
    """Replace, left to right, each span whose score is ``> threshold`` by :data:`MASK`.

    The masking loop of ``TokenRAG.modifier`` / ``EntityRAG.modifier``: each span is searched
    from the end of the previous one. Quirk kept: a span that is not found gives
    ``find() == -1``, so the mask lands at ``pos - 1`` (at the start, ``curr[:-1]``: the
    sentence is garbled, e.g. ``"... Florida[xxx] Wales Medical ..."``).
    """
    curr = sentence
    pos = 0
    for score, span in zip(scores, spans):
        at = curr[pos:].find(span) + pos
        if score > threshold:
            curr = curr[:at] + MASK + curr[at + len(span):]
            pos = at + len(MASK)
        else:
            pos = at + len(span)
    return curr


def token_rag_check(text: str, tokens: Sequence[str], logprobs: Sequence[float], threshold: float = 0.08,
                    solver: str = "avg", *, strip_token_spaces: bool = True) -> ConfidenceCheck:
    """TokenRAG's sentence check (DRAGIN ``generate.py`` ``TokenRAG.modifier``).

    For each spaCy sentence of ``text``: its tokens are found by string search, ``1 - p`` is
    computed for them, the ``solver`` (``avg`` in every released config) aggregates; the first
    sentence whose score is ``> threshold`` fires and its tokens with ``1 - p > threshold`` are
    masked. θ = 0.08 (HotpotQA ``FLARE.json``) fires when the mean token probability < 0.92.

    Reference quirks kept: the search position drifts (``pos = apr + len(tok)`` is relative to
    ``sent[pos:]``, so the sentence ends at the first token not found *anywhere* near its
    start); the scored slice is ``logprobs[start:end + 1]`` (one token of the next sentence)
    and the next sentence starts at ``end + 1`` (that token is never scored again).

    Deviation (the intended behaviour), ``strip_token_spaces=True``: tokens are searched
    without their leading spaces. The reference was written for Llama-2, whose single-token
    decode drops the leading space; with byte-level BPE tokens (``" Paris"``) the search
    fails on the first token of every stripped sentence, each sentence is scored on one token
    and the mask is inserted at index -1. ``strip_token_spaces=False`` reproduces that.
    """
    sentences = nlp.sentences(text)
    toks = [t.lstrip(" ") for t in tokens] if strip_token_spaces else list(tokens)
    trace: list[SentenceConfidence] = []
    start = 0
    for index, sent in enumerate(sentences):
        pos, end = 0, start
        while end < len(toks):
            found = sent[pos:].find(toks[end])
            if found == -1:
                break
            pos = found + len(toks[end])
            end += 1
        scores = [1 - math.exp(v) for v in logprobs[start:end + 1]]
        score = _solve(scores, solver, _SENTENCE_SOLVERS)
        trace.append(SentenceConfidence(index, sent, start, end, scores, score))
        if score > threshold:
            kept = "" if index == 0 else " ".join(sentences[:index])
            masked = mask_spans(sent, toks[start:end + 1], scores, threshold)
            return ConfidenceCheck(True, index, kept, masked, trace)
        start = end + 1
    return ConfidenceCheck(False, None, text, None, trace)


def flare_query(tokens: Sequence[str], probs: Sequence[float], low_prob: float = 0.8,
                mask_prob: float = 0.4) -> str:
    """FLARE's masked look-ahead query; ``""`` means no retrieval.

    jzbjyb/FLARE ``templates.py`` ``ApiReturn.use_as_query`` (``mask_method="simple"``), FLARE
    §3.2: retrieval is triggered if any token has ``p <= low_prob`` (θ = 0.8); the query is the
    look-ahead with every token of ``p <= mask_prob`` (β = 0.4) replaced by a space, stripped.
    No token below θ returns ``""`` (no retrieval), and so does a fully masked look-ahead: the
    reference loop issues only non-empty queries. ``probs`` are compared as Python floats,
    as the reference receives them from the API (a float32 0.8 would not be ``<= 0.8``).
    With both thresholds falsy the look-ahead itself is the query, as in the reference.
    """
    if not low_prob and not mask_prob:
        return "".join(tokens)
    p = [float(v) for v in probs]
    if low_prob and not any(v <= low_prob for v in p):
        return ""
    if not mask_prob:
        return "".join(tokens)
    return "".join(t if v > mask_prob else " " for t, v in zip(tokens, p)).strip()


def token_owners(text: str, tokens: Sequence[str]) -> list[int]:
    """For each character of ``text``, the index of the token it belongs to (``-1``: none).

    ``EntityRAG.modifier``'s ``belonging``: tokens are searched left to right in ``text``.
    """
    owner = [-1] * len(text)
    pos = 0
    for index, tok in enumerate(tokens):
        at = text[pos:].find(tok) + pos
        for j in range(pos, at + len(tok)):
            owner[j] = index
        pos = at + len(tok)
    return owner


def entity_intervals(text: str, tokens: Sequence[str], sentences: Sequence[str],
                     entities: Sequence[Sequence[str]]) -> list[list[tuple[int, int]]]:
    """Inclusive token intervals of each sentence's entities (``EntityRAG.modifier``).

    Each sentence is located with ``text.find(sentence)`` (its first occurrence) and its
    entities are searched left to right from there; the interval runs from the token owning
    the entity's first character to the one owning its last.
    """
    owner = token_owners(text, tokens)
    out = []
    for sent, ents in zip(sentences, entities):
        pos = text.find(sent)
        spans = []
        for ent in ents:
            at = text[pos:].find(ent) + pos
            spans.append((owner[at], owner[at + len(ent) - 1]))
            pos = at + len(ent)
        out.append(spans)
    return out


def entity_logprob(logprobs: Sequence[float], interval: tuple[int, int], solver: str = "avg") -> float:
    """An entity's log-prob: ``solver`` over its tokens' log-probs (avg, max, min, first).

    ``avg`` is the log of the geometric mean probability; ``max`` picks the most confident
    token, ``min`` the least. An empty interval scores NaN with ``avg`` (as numpy does in the
    reference) and 0 with ``first`` (the reference's default); with ``max``/``min`` it scores
    NaN where the reference would raise.
    """
    first, last = interval
    return _solve(list(logprobs[first:last + 1]), solver, _ENTITY_SOLVERS)


def entity_rag_check(text: str, tokens: Sequence[str], logprobs: Sequence[float], threshold: float,
                     entity_solver: str = "avg", sentence_solver: str = "avg") -> EntityCheck:
    """EntityRAG's sentence check (DRAGIN ``generate.py`` ``EntityRAG.modifier``).

    Entities are spaCy NER on each sentence parsed *alone*; an entity's uncertainty is
    ``1 - exp(entity_logprob)``; the first sentence whose ``sentence_solver`` over its entities
    is ``> threshold`` fires, and every entity above θ is masked. Sentences without entities
    are skipped. The DRAGIN repository ships no EntityRAG config, so neither θ nor
    ``entity_solver`` has a reference default.
    """
    sentences = nlp.sentences(text)
    entities = [[e.text for e in nlp.entities(sent)] for sent in sentences]
    intervals = entity_intervals(text, tokens, sentences, entities)
    ent_logprobs = [[entity_logprob(logprobs, itv, entity_solver) for itv in spans] for spans in intervals]
    trace: list[SentenceConfidence] = []
    for index, sent in enumerate(sentences):
        if not ent_logprobs[index]:
            continue
        scores = [1 - math.exp(v) for v in ent_logprobs[index]]
        score = _solve(scores, sentence_solver, _SENTENCE_SOLVERS)
        trace.append(SentenceConfidence(index, sent, None, None, scores, score))
        if score > threshold:
            kept = "" if index == 0 else " ".join(sentences[:index])
            masked = mask_spans(sent, entities[index], scores, threshold)
            return EntityCheck(True, index, kept, masked, trace, entities, intervals, ent_logprobs)
    return EntityCheck(False, None, text, None, trace, entities, intervals, ent_logprobs)
