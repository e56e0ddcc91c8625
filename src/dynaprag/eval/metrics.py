"""Answer and retrieval metrics: EM, token F1, yes/no accuracy, recall of gold passages.

EM and F1 follow the official HotpotQA evaluation script (``hotpot_evaluate_v1.py``, Yang et
al., 2018), which itself extends SQuAD v1.1's (Rajpurkar et al., 2016):

* normalisation: lower-case, drop every ``string.punctuation`` character, drop the articles
  ``a``/``an``/``the`` as whole words, collapse whitespace (in that order);
* F1 over normalised whitespace tokens with multiset overlap (``Counter &``);
* yes/no handling: if either the normalised prediction or the normalised gold is one of
  ``yes``, ``no``, ``noanswer`` and the two differ, F1 is 0 (so "no way" against "no" scores 0,
  not 0.67).

Where a question has several gold answers (aliases), the score is the maximum over them, as
SQuAD's ``metric_max_over_ground_truths`` does. Every function is pure and unit-tested against
hand-computed values in ``tests/test_metrics.py``.

>>> exact_match("The Seine.", ["Seine"])
1.0
>>> round(f1("river Seine in Paris", ["the Seine"]), 3)
0.4
"""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable, Sequence

__all__ = [
    "normalize_answer", "exact_match", "cover_exact_match", "f1", "f1_precision_recall", "yes_no", "accuracy",
    "recall_at_k", "score_answer",
]

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SPECIAL = ("yes", "no", "noanswer")


def normalize_answer(text: str) -> str:
    """Lower-case, remove punctuation, remove articles, collapse whitespace (SQuAD/HotpotQA)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _as_list(golds: str | Sequence[str]) -> list[str]:
    return [golds] if isinstance(golds, str) else list(golds)


def exact_match(prediction: str, golds: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _as_list(golds)))


def cover_exact_match(prediction: str, golds: str | Sequence[str]) -> float:
    """1.0 if a normalised gold answer occurs in the normalised prediction as a run of whole words.

    The lenient "cover EM" (FlashRAG's ``acc``): it still credits an answer wrapped in a sentence
    ("Based on the context, the film is Jaws"), which F1 dilutes and EM rejects, so a model that
    ignores the answer format can be compared on what it knows.
    """
    pred = f" {normalize_answer(prediction)} "
    return float(any(g and f" {g} " in pred for g in map(normalize_answer, _as_list(golds))))


def f1_precision_recall(prediction: str, gold: str) -> tuple[float, float, float]:
    """(F1, precision, recall) of one prediction against one gold answer, as HotpotQA computes it.

    Returns zeros when a yes/no/noanswer answer on either side differs from the other side, and
    when no token is shared (which includes an empty prediction against a non-empty gold).
    """
    pred, gold = normalize_answer(prediction), normalize_answer(gold)
    if (pred in _SPECIAL or gold in _SPECIAL) and pred != gold:
        return 0.0, 0.0, 0.0
    pred_tokens, gold_tokens = pred.split(), gold.split()
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0, 0.0, 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall), precision, recall


def f1(prediction: str, golds: str | Sequence[str]) -> float:
    """Token F1 (HotpotQA semantics), the maximum over the gold answers."""
    return max((f1_precision_recall(prediction, g)[0] for g in _as_list(golds)), default=0.0)


def yes_no(prediction: str) -> str | None:
    """Read a yes/no verdict from a short answer: ``"yes"``, ``"no"`` or ``None`` (no verdict).

    The normalised answer's first word decides when it is yes/no ("Yes, because ..." -> yes);
    otherwise the answer counts only if exactly one of the two words occurs in it. Anything
    else (both, neither) is no verdict and scores as wrong: a model that hedges gets no credit.
    """
    tokens = normalize_answer(prediction).split()
    if not tokens:
        return None
    if tokens[0] in ("yes", "no"):
        return tokens[0]
    found = {t for t in tokens if t in ("yes", "no")}
    return found.pop() if len(found) == 1 else None


def accuracy(prediction: str, golds: str | Sequence[str]) -> float:
    """Yes/no accuracy (StrategyQA, Geva et al., 2021): 1.0 if the verdict matches the gold."""
    verdict = yes_no(prediction)
    return float(verdict is not None and any(verdict == normalize_answer(g) for g in _as_list(golds)))


def recall_at_k(retrieved_ids: Iterable[str], gold_ids: Iterable[str], k: int | None = None) -> float | None:
    """Fraction of the gold passage ids found among the first ``k`` retrieved ids (all if None).

    Duplicated retrieved ids count once. Returns ``None`` when there are no gold ids, so
    datasets without gold passages are left out of averages rather than scored 0.
    """
    gold = set(gold_ids)
    if not gold:
        return None
    retrieved = list(retrieved_ids)
    if k is not None:
        retrieved = retrieved[:k]
    return len(gold & set(retrieved)) / len(gold)


def score_answer(prediction: str, golds: Sequence[str], *, yes_no_task: bool = False) -> dict[str, float]:
    """All answer metrics of one prediction: ``em``, ``f1`` and ``cover_em``, plus ``acc`` on yes/no tasks."""
    scores = {"em": exact_match(prediction, golds), "f1": f1(prediction, golds),
              "cover_em": cover_exact_match(prediction, golds)}
    if yes_no_task:
        scores["acc"] = accuracy(prediction, golds)
    return scores
