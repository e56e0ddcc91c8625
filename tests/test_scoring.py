"""Pure scoring functions of the dynamic methods against hand-computed values on small arrays."""
from __future__ import annotations

import math

import pytest
import torch

from dynaprag.dynamic import scoring
from dynaprag.dynamic.methods.dragin import rind
from dynaprag.dynamic.methods.selfrag import scores as selfrag_scores
from dynaprag.dynamic.methods.seakr import eigen
from dynaprag.dynamic.loop import finished
from dynaprag.dynamic.text import content_flags, is_sentence_end, word_groups
from floats import approx32


def test_max_attention_received_uses_only_later_tokens():
    att = torch.tensor([[1.0, 0.0, 0.0],
                        [0.6, 0.4, 0.0],
                        [0.2, 0.5, 0.3]])
    assert rind.max_attention_received(att).tolist() == approx32([0.6, 0.5, 0.0])


def test_rind_paper_equation():
    s = rind.rind_scores(torch.tensor([2.0, 1.0, 3.0]), torch.tensor([0.6, 0.5, 0.0]), torch.tensor([1.0, 0.0, 1.0]))
    assert s.tolist() == approx32([1.2, 0.0, 0.0])


def test_low_probability_strict_and_inclusive():
    assert scoring.low_probability([0.9, 0.85, 0.81], 0.8, inclusive=True) == [False, False, False]
    assert scoring.low_probability([0.9, 0.8], 0.8, inclusive=True) == [False, True]  # FLARE: p <= theta fires
    assert scoring.low_probability([0.9, 0.8, 0.7], 0.8) == [False, False, True]  # TokenRAG: p < theta
    assert scoring.low_probability([0.5, 0.4, 0.3], 0.4, inclusive=True) == [False, True, True]


def test_eigen_score_hand_values():
    same = torch.tensor([[1.0, -1.0], [2.0, 0.0]])  # identical after centring: rank one
    expected = (math.log(4.001) + math.log(0.001)) / 2
    assert eigen.eigen_score(same, alpha=1e-3) == pytest.approx(expected, rel=1e-4)  # float32, as SeaKR
    diverse = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])  # Gram [[2,-1],[-1,2]]
    assert eigen.eigen_score(diverse, alpha=1e-3) == pytest.approx((math.log(1.001) + math.log(3.001)) / 2, rel=1e-4)
    assert eigen.eigen_score(diverse) > eigen.eigen_score(same)


def test_selfrag_segment_score_paper_weights():
    score = selfrag_scores.selfrag_segment_score(math.log(0.5), [0.6, 0.2], [0.5, 0.3, 0.2], [0, 0, 0, 0.5, 0.5])
    assert score == pytest.approx(0.5 + 0.75 + 0.65 + 0.5 * 0.75)
    lp = torch.log(torch.tensor([0.1, 0.3, 0.6]))
    assert selfrag_scores.normalised_probability(lp, [1], [2]) == approx32(1 / 3)


def test_top_n_in_order_keeps_original_order():
    assert scoring.top_n_in_order([0.1, 0.9, 0.5, 0.7], 2) == [1, 3]
    assert scoring.top_n_in_order([0.3, 0.3, 0.3], 2) == [0, 1]


def test_text_helpers():
    assert is_sentence_end("He was born in 1946.")
    assert not is_sentence_end("He lived in the U.")
    assert not is_sentence_end("He was born in")
    assert word_groups([" Steven", " Spiel", "berg", ".", " He"]) == [[0], [1, 2], [3], [4]]
    assert content_flags([" the", " direct", "or", " of", " Jaws", "."]) == [0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    assert finished("X. So the answer is 1946.")
    assert not finished("So the answer is 19")
    assert finished("Paris\n\nQuestion: next")
