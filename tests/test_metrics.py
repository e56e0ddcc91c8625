"""Metrics against hand-computed cases (HotpotQA/SQuAD semantics)."""
from __future__ import annotations

import pytest

from dynaprag.eval.metrics import (accuracy, cover_exact_match, exact_match, f1, f1_precision_recall, normalize_answer,
                                   recall_at_k, score_answer, yes_no)


@pytest.mark.parametrize("raw, expected", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  A  man, a plan; an  ISLAND ", "man plan island"),
    ("theatre anatomy", "theatre anatomy"),  # articles only as whole words
    ("3,677 seated", "3677 seated"),  # punctuation removed, not replaced by a space
    ("U.S.A.", "usa"),
    ("", ""),
])
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_exact_match_max_over_golds():
    assert exact_match("the Seine.", ["Seine"]) == 1.0
    assert exact_match("Seine river", ["Seine"]) == 0.0
    assert exact_match("Paris", ["London", "paris"]) == 1.0
    assert exact_match("Paris", "Paris") == 1.0
    assert exact_match("", ["x"]) == 0.0


def test_f1_hand_computed():
    # pred tokens: river seine in paris (4); gold: seine (1); overlap 1 -> P=1/4, R=1 -> F1=0.4
    assert f1("river Seine in Paris", ["the Seine"]) == pytest.approx(0.4)
    # pred: 20 march (2); gold: 20 march 851 (3) -> P=1, R=2/3 -> F1=0.8
    assert f1("20 March", ["20 March 851"]) == pytest.approx(0.8)
    # multiset overlap: "b b c" vs "b c c d" shares b once and c once -> P=2/3, R=2/4
    f, p, r = f1_precision_recall("b b c", "b c c d")
    assert (p, r) == (pytest.approx(2 / 3), pytest.approx(0.5))
    assert f == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert f1("completely different", ["answer"]) == 0.0
    assert f1("", ["answer"]) == 0.0
    assert f1("x y", ["nothing", "x y z w"]) == pytest.approx(2 * 1 * 0.5 / 1.5)


def test_f1_yes_no_handling_as_hotpotqa():
    assert f1("no way", ["no"]) == 0.0  # SQuAD would give 0.67; HotpotQA zeroes it
    assert f1("yes", ["yes indeed"]) == 0.0
    assert f1("noanswer", ["no answer"]) == 0.0
    assert f1("Yes.", ["yes"]) == 1.0
    assert f1("No", ["yes"]) == 0.0


@pytest.mark.parametrize("pred, verdict", [
    ("Yes", "yes"), ("no.", "no"), ("Yes, because it floats", "yes"),
    ("It is no", "no"), ("yes and no", "yes"), ("maybe yes maybe no", None), ("unknown", None), ("", None),
])
def test_yes_no(pred, verdict):
    assert yes_no(pred) == verdict


def test_accuracy():
    assert accuracy("Yes.", ["yes"]) == 1.0
    assert accuracy("no", ["yes"]) == 0.0
    assert accuracy("perhaps", ["no"]) == 0.0


def test_recall_at_k():
    assert recall_at_k(["a", "b", "c"], ["b", "d"]) == 0.5
    assert recall_at_k(["a", "b", "c"], ["c"], k=2) == 0.0
    assert recall_at_k(["a", "a", "b"], ["a", "b"]) == 1.0
    assert recall_at_k(["a"], []) is None
    assert recall_at_k([], ["a"]) == 0.0


def test_score_answer():
    assert score_answer("Seine", ["the Seine"]) == {"em": 1.0, "f1": 1.0, "cover_em": 1.0}
    assert score_answer("yes it is", ["yes"], yes_no_task=True) == {"em": 0.0, "f1": 0.0, "cover_em": 1.0, "acc": 1.0}


@pytest.mark.parametrize("text, short", [
    ("Paris is in France. So the answer is the Seine.", "the Seine"),
    ("The answer is no. The police cannot arrest.", "no"),  # without "So", as small models write it
    ("so the answer is 2.", "2"),
    ("So the answer is: 32.\nQuestion: next", "32"),
    ("It is A. So the answer is B. So the answer is C.", "C"),  # the last marker wins
    ("So the answer is 2001: A Space Odyssey.", "2001: A Space Odyssey"),
    ("Warsaw is the capital.\nMore text", "Warsaw is the capital"),  # no marker: the first line
])
def test_extract_answer(text, short):
    from dynaprag.lm.prompts import extract_answer

    assert extract_answer(text) == short


@pytest.mark.parametrize("prediction, golds, expected", [
    ("Based on the context provided, the director of Jaws was Steven Spielberg.", ["Steven Spielberg"], 1.0),
    ("The Seine", ["the Seine", "Seine River"], 1.0),
    ("Spielbergian cinema", ["Spielberg"], 0.0),  # whole words only
    ("Steven", ["Steven Spielberg"], 0.0),  # the whole gold must be there
    ("anything", [""], 0.0),  # an empty gold covers nothing
])
def test_cover_exact_match(prediction, golds, expected):
    assert cover_exact_match(prediction, golds) == expected
