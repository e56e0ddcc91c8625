"""Hand-computed values for the reference-faithful functions, one quirk per test.

The parity tests compare whole fixtures; these pin, on arrays small enough to check by hand,
the reference behaviours our docstrings promise (including the odd ones).
"""
from __future__ import annotations

import math

import pytest
import torch

from dynaprag.dynamic.methods.confidence import scores as confidence
from dynaprag.dynamic.methods.dragin import rind


def test_attention_received_takes_max_over_queries_with_diagonal_then_head_mean():
    head0 = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.4, 0.0], [0.2, 0.5, 0.3]])
    head1 = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.1, 0.1, 0.8]])
    got = rind.attention_received(torch.stack([head0, head1]))
    assert got.tolist() == pytest.approx([1.0, (0.5 + 0.1) / 2, (0.3 + 0.8) / 2])


def test_token_entropies_in_nats_with_the_reference_epsilon():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [1.0, 1e-30, 1e-30]]))
    got = rind.token_entropies(logits).tolist()
    assert got[0] == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(4), rel=1e-6)
    assert got[1] == pytest.approx(0.0, abs=1e-6)


def test_word_ranges_split_on_marker_newline_and_after_llama_eos():
    pieces = ["ĠAl", "ad", "in", "Ċ", "Question", "</s>", "x", "Ġy"]
    ids = [1, 2, 3, 198, 5, 6, 7, 8]
    assert rind.word_ranges(pieces, ids, space_marker="Ġ", newline_id=198) == [(0, 2), (3, 5), (6, 6), (7, 7)]
    assert rind.word_ranges(pieces, ids, space_marker="Ġ", newline_id=198, boundary_after=None) == \
        [(0, 2), (3, 6), (7, 7)]


def test_word_signals_sum_attention_average_entropy_keep_newline_in_word():
    pieces, ids = ["ĠAl", "ad", "Ċ", "Q", "Ġis"], [1, 2, 198, 4, 5]
    words = rind.word_signals(pieces, ids, [1.0, 0.2, 0.3, 0.1, 0.4], [2.0, 0.0, 1.0, 3.0, 0.5],
                              space_marker="Ġ", newline_id=198)
    assert words.words == ["Alad", "ĊQ", "is"]
    assert words.attention == pytest.approx([1.2, 0.4, 0.4])
    assert words.entropy == pytest.approx([1.0, 2.0, 0.5])


def test_llama_eos_first_piece_renormalises_attention():
    words = rind.word_signals(["</s>", "▁a", "▁b"], [2, 3, 4], [1.0, 0.5, 1.5], [1.0, 1.0, 1.0],
                              space_marker="▁", newline_id=13)
    assert words.attention == pytest.approx([0.5, 0.25, 0.75])


def test_sentence_rind_is_normalised_attention_times_entropy_times_length():
    assert rind.sentence_rind([0.5, 0.25, 0.25], [1.0, 2.0, 4.0]) == pytest.approx([1.5, 1.5, 3.0])
    assert rind.sentence_rind([], []) == []
    assert all(math.isnan(v) for v in rind.sentence_rind([0.0, 0.0], [1.0, 1.0]))


def test_last_sentence_runs_to_the_end_and_search_stops_before_the_last_word():
    words = ["A", "b.", "C", "d."]
    assert rind.sentence_spans(["A b.", "C d."], words) == [(0, 2), (2, 4)]
    # "C d." would need words[2:4], but the search for a non-last sentence stops at j < len(words)
    assert rind.sentence_spans(["A b.", "C d.", "E."], words) == [(0, 2), (2, 2), (2, 4)]


def test_decision_fires_even_when_real_words_filter_clears_every_hit():
    decision = rind.rind_decision(" The cat sat.", ["The", "cat", "sat."], [10.0, 0.1, 0.1], [1.0, 1.0, 1.0],
                                  threshold=1.0)
    assert decision.fired and decision.sentence_index == 0 and decision.prev_text == ""
    assert decision.sentences[0].values[0] > 1.0 and decision.hits == [0, 0, 0]
    unfiltered = rind.rind_decision(" The cat sat.", ["The", "cat", "sat."], [10.0, 0.1, 0.1], [1.0, 1.0, 1.0],
                                    threshold=1.0, check_real_words=False)
    assert unfiltered.hits == [1, 0, 0]


def test_real_words_query_text_keeps_the_separating_spaces():
    assert rind.real_words_query_text("Q?", "", "", ["A", "b."]) == "Q?   A b."


def test_real_words_query_with_no_hit_keeps_text_order():
    """No hit left: the mean of zero rows is NaN, the sort is a no-op, the first top-k real words win."""
    pieces = ["Paris", "Ġis", "Ġa", "Ġbig", "Ġcity", "Ġnear", "ĠLyon", "."]
    ids = list(range(10, 18))
    attention = torch.tril(torch.ones(2, 8, 8))
    attention = attention / attention.sum(dim=-1, keepdim=True)
    result = rind.real_words_query("Paris is a big city near Lyon.", pieces, ids, attention, [0], 2,
                                   space_marker="Ġ", newline_id=198)
    assert result.curr_start == 6 and all(math.isnan(v) for v in result.forward_attention)
    assert result.query == " ".join(w for _, w, _ in result.real_pairs[:2])
    assert result.query.split()[0] == "Paris"


def test_mask_not_found_lands_at_index_minus_one():
    assert confidence.mask_spans("abc def", ["xyz"], [1.0], 0.5) == "abc de[xxx]c def"
    assert confidence.mask_spans("abc def", ["abc", "def"], [1.0, 0.0], 0.5) == "[xxx] def"


def test_token_rag_unknown_solver_is_an_error():
    with pytest.raises(ValueError, match="solver"):
        confidence.token_rag_check(" A b.", [" A", " b", "."], [-1.0, -1.0, -1.0], solver="mean")


def test_flare_boundaries_are_inclusive():
    assert confidence.flare_query(["a", " b"], [0.8, 0.9]) == "a b"
    assert confidence.flare_query(["a", " b"], [0.81, 0.9]) == ""
    assert confidence.flare_query(["a", " b", " c"], [0.4, 0.5, 0.9]) == "b c"


def test_entity_solvers_over_log_probs():
    lp = [-0.1, -2.0, -0.5]
    assert confidence.entity_logprob(lp, (0, 2), "avg") == pytest.approx(-2.6 / 3)
    assert confidence.entity_logprob(lp, (0, 2), "max") == pytest.approx(-0.1)
    assert confidence.entity_logprob(lp, (0, 2), "min") == pytest.approx(-2.0)
    assert confidence.entity_logprob(lp, (1, 2), "first") == pytest.approx(-2.0)
    assert confidence.entity_logprob(lp, (2, 1), "first") == 0.0
    assert math.isnan(confidence.entity_logprob(lp, (2, 1), "avg"))
