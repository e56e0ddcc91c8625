"""Adaptive-RAG's complexity labels and how the paper makes them: pure rules on answers and datasets.

Reference: starsuzi/Adaptive-RAG @ ``0c88670af8707667eb5c1163151bb5ce61b14acb``; file:line below.

* **The three labels** (``classifier/run_classifier.py:89-99``, ``option_to_label``): ``A`` no
  retrieval (the ``nor_qa`` system), ``B`` single-step (``oner_qa``), ``C`` multi-step
  (``ircot_qa``); ``classifier/postprocess/postprocess_utils.py:28-42`` maps a predicted label to
  that system's answer (C -> the multi-step file, B -> one retrieval step, A -> zero).
* **Silver labels** (``classifier/preprocess/preprocess_utils.py:129-166``, ``label_complexity``):
  each strategy's predictions are scored, and a question is *correct* for a strategy when its
  normalised prediction equals a normalised gold answer (``evaluate.py:653-659``, SQuAD's
  ``normalize_answer``: exact match, not F1). The label is the simplest strategy that was correct:
  the assignments run C, then B, then A, each overwriting the last (:152-160); a question no
  strategy answered is left out (:145-146).
* **Inductive-bias labels** (``preprocess_utils.py:49-127`` and
  ``classifier/preprocess/preprocess_binary_train.py``): questions of a single-hop dataset (NQ,
  TriviaQA, SQuAD) are labelled ``B``, of a multi-hop one (MuSiQue, HotpotQA, 2Wiki) ``C``; the
  first 400 of each dataset's training set (:44) join the silver ones, minus any whose id is
  already silver-labelled (``concat_and_save_binary_silver``, ``preprocess_utils.py:36-47``,
  run by ``concat_binary_silver_train.py:12-16``).

Here, :func:`silver_label` and :func:`combine` are those rules; :func:`inductive_label` the
dataset rule. One deviation in how the unlabelled questions are used: the reference's
inductive-bias questions come from each dataset's *training* set, disjoint from its silver (dev)
questions; we have one question file per dataset, so ``dynaprag adaptive-rag train`` labels the
training-split questions no strategy answered with their dataset's inductive label (they are not
evaluated either: see :mod:`dynaprag.eval.silver_labels`).

>>> silver_label({"A": False, "B": True, "C": True})
'B'
>>> silver_label({"A": False, "B": False, "C": False}) is None
True
>>> inductive_label("hotpotqa"), inductive_label("nq")
('C', 'B')
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

LABELS = ("A", "B", "C")
"""The classifier's classes, simplest first (``run_classifier.py:89-99``)."""

STRATEGIES = {"A": "no retrieval (nor_qa)", "B": "single-step retrieval (oner_qa)",
              "C": "multi-step retrieval (ircot_qa)"}

MULTI_HOP = frozenset({"musique", "hotpotqa", "2wikimultihopqa", "iirc", "strategyqa", "cwq"})
"""Datasets whose questions the reference labels ``C`` by inductive bias (``preprocess_utils.py:49-127``:
MuSiQue, HotpotQA, 2Wiki; IIRC, StrategyQA and CWQ are multi-hop benchmarks in the same sense)."""
SINGLE_HOP = frozenset({"nq", "trivia", "triviaqa", "squad", "popqa", "webquestions", "webq"})
"""Datasets labelled ``B`` (``save_inductive_bias_single_data``, :66-89: NQ, TriviaQA, SQuAD; PopQA
and WebQuestions are single-hop benchmarks too)."""

BINARY_PER_DATASET = 400
"""Inductive-bias questions taken per dataset (``preprocess_binary_train.py:44``)."""


def silver_label(correct: Mapping[str, bool]) -> str | None:
    """The simplest strategy that answered correctly (``label_complexity``, :145-160), or ``None``.

    ``correct`` maps a label to whether that strategy's answer was right; a label it lacks
    counts as wrong (the reference reads only questions present in a strategy's file of correct
    answers).
    """
    for label in LABELS:  # A before B before C: the reference's last overwrite wins
        if correct.get(label):
            return label
    return None


def inductive_label(dataset: str) -> str:
    """``C`` for a multi-hop dataset, ``B`` for a single-hop one (``preprocess_utils.py:49-127``)."""
    name = dataset.lower()
    if name in MULTI_HOP:
        return "C"
    if name in SINGLE_HOP:
        return "B"
    raise ValueError(f"dataset {dataset!r} has no inductive-bias label: multi-hop ones are "
                     f"{', '.join(sorted(MULTI_HOP))}; single-hop ones {', '.join(sorted(SINGLE_HOP))}")


def combine(inductive: Sequence[Mapping], silver: Sequence[Mapping]) -> list[dict]:
    """The training set: inductive-bias records whose id is not silver-labelled, then the silver
    ones (``concat_and_save_binary_silver``, ``preprocess_utils.py:36-47``; ``min_len`` is unset there
    for the training file)."""
    silver_ids = {r["id"] for r in silver}
    return [dict(r) for r in inductive if r["id"] not in silver_ids] + [dict(r) for r in silver]


def label_counts(records: Iterable[Mapping]) -> dict[str, int]:
    """How many records carry each label (every label listed, zeros included)."""
    counts = dict.fromkeys(LABELS, 0)
    for r in records:
        counts[r["label"]] += 1
    return counts
